#!/usr/bin/env bash
# Scenario 3 of EddyDB: minute totals that stay correct when data is late.
#
# Click counts per page per minute, rolled up to hours and days, over a
# stream in which 2% of the clicks arrive 30 minutes late (nodes that were
# offline delivering their buffers). The source allows 45 minutes of
# lateness, so every late click corrects its minute, its hour and its day.
# A second source over the same clicks allows only 10 minutes: there the
# late clicks are kept in eddy_catalog.late_events instead, none lost.
#
# The "batch system" is a table fed by the very same generator (a datagen
# stream is a pure function of its options): at the end the script checks
# that the hourly totals equal the batch answer exactly.
#
# Run EddyDB first (`cargo run --release`), then: bash examples/late_minute_totals.sh
# EDDYDB_HOST / EDDYDB_PORT say where it listens (default 127.0.0.1:6690).
set -euo pipefail

host=${EDDYDB_HOST:-127.0.0.1}
port=${EDDYDB_PORT:-6690}
sql() { psql -h "$host" -p "$port" -U eddy -d eddy -X -q -v ON_ERROR_STOP=1 "$@"; }
value() { sql -At -c "$1"; }

# Six hours of clicks, 50 a second, starting 2026-01-01 00:00 UTC.
rows=1080000
clicks="connector = 'datagen', generator = 'page_clicks', generator.pages = '20',
        datagen.rows = '$rows', datagen.rows.per.second = '50',
        datagen.start.time = '2026-01-01 00:00:00+00',
        late.fraction = '0.02', late.by = '30 minutes'"

sql <<SQL
DROP SOURCE IF EXISTS clicks CASCADE;
DROP SOURCE IF EXISTS clicks_strict CASCADE;
DROP TABLE IF EXISTS clicks_batch;

CREATE SOURCE clicks (user_id varchar, page varchar, ts timestamptz,
                      WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
WITH ($clicks, watermark.allowed.lateness = '45 minutes');

CREATE SOURCE clicks_strict (user_id varchar, page varchar, ts timestamptz,
                             WATERMARK FOR ts AS ts - INTERVAL '5 seconds')
WITH ($clicks, watermark.allowed.lateness = '10 minutes');

-- What a batch system would recompute hours later: every click, stored.
CREATE TABLE clicks_batch (user_id varchar, page varchar, ts timestamptz)
WITH ($clicks);

CREATE MATERIALIZED VIEW minute_totals AS
SELECT page, window_start AS minute, count(*) AS clicks
FROM TUMBLE(clicks, ts, INTERVAL '1 minute') GROUP BY page, window_start;

CREATE MATERIALIZED VIEW hourly_totals AS
SELECT page, date_bin(INTERVAL '1 hour', minute) AS hour, sum(clicks) AS clicks
FROM minute_totals GROUP BY 1, 2;

CREATE MATERIALIZED VIEW daily_totals AS
SELECT page, date_bin(INTERVAL '1 day', hour) AS day, sum(clicks) AS clicks
FROM hourly_totals GROUP BY 1, 2;

-- Final hourly rows only, once each hour can no longer change.
CREATE MATERIALIZED VIEW closed_hours AS
SELECT page, window_start AS hour, count(*) AS clicks
FROM TUMBLE(clicks, ts, INTERVAL '1 hour') GROUP BY page, window_start
EMIT ON WINDOW CLOSE;

CREATE MATERIALIZED VIEW strict_hourly AS
SELECT page, window_start AS hour, count(*) AS clicks
FROM TUMBLE(clicks_strict, ts, INTERVAL '1 hour') GROUP BY page, window_start;
SQL

echo "waiting for all $rows clicks..."
for _ in $(seq 1 600); do
  done_reading=$(value "SELECT (SELECT count(*) FROM clicks_batch) = $rows
    AND (SELECT sum(clicks) FROM daily_totals) = $rows
    AND (SELECT coalesce(sum(clicks), 0) FROM strict_hourly)
        + (SELECT count(*) FROM eddy_catalog.late_events WHERE feeds = 'strict_hourly') = $rows")
  [ "$done_reading" = t ] && break
  sleep 0.5
done
[ "$done_reading" = t ] || { echo "the views did not catch up" >&2; exit 1; }

echo
echo "hourly totals, corrected by the late clicks (first page):"
sql -c "SELECT * FROM hourly_totals WHERE page = '/page/0' ORDER BY hour"

differ=$(value "SELECT count(*) FROM (
  (SELECT page, window_start, count(*) FROM TUMBLE(clicks_batch, ts, INTERVAL '1 hour') GROUP BY 1, 2
   EXCEPT SELECT * FROM hourly_totals)
  UNION ALL
  (SELECT * FROM hourly_totals
   EXCEPT SELECT page, window_start, count(*) FROM TUMBLE(clicks_batch, ts, INTERVAL '1 hour') GROUP BY 1, 2)) d")
echo "hourly totals that differ from the batch answer: $differ"

echo
echo "with only 10 minutes of lateness, the late clicks are kept apart:"
sql -c "SELECT count(*) AS late_clicks, min(watermark - event_time) AS least_late,
               max(watermark - event_time) AS most_late
        FROM eddy_catalog.late_events WHERE feeds = 'strict_hourly'"
echo "hours closed and emitted once, final: $(value "SELECT count(DISTINCT hour) FROM closed_hours")"
[ "$differ" = 0 ]
