#!/usr/bin/env bash
# Scenario 2 of EddyDB: decorating a fast event stream with a large
# context table.
#
# A context table (customer, device type, device id, IP, connection; about
# 200 bytes a row) is loaded with COPY FROM STDIN, then joined with a
# stream of events (id, context id, time) two ways:
# - a regular join, which follows every change of the table: updating a
#   context row rewrites the joined rows of all its events, past ones too;
# - a lookup join (FOR SYSTEM_TIME AS OF PROCTIME()), which joins each
#   event with the table as it is when the event arrives, keeps no event,
#   and never rewrites what it emitted.
# Half of the events are a backlog, the other half arrive live. Halfway,
# the script retires one context in ten: the regular join's counts move at
# once for every event, the lookup join's only for the events after.
# At the end the regular join is checked against the batch answer (a table
# fed by the same generator, joined ad hoc).
#
# Run EddyDB first (`cargo run --release`), then: bash examples/context_decoration.sh
# EDDYDB_HOST / EDDYDB_PORT say where it listens (default 127.0.0.1:6690);
# CONTEXT_ROWS (default 1000000) and EVENTS (default 1000000) set the sizes,
# EVENT_RATE (default 100000) the events per second. The live half must
# outlast building the views; at scenario 2's size:
#   CONTEXT_ROWS=16000000 EVENTS=2000000 EVENT_RATE=20000 bash examples/context_decoration.sh
set -euo pipefail

host=${EDDYDB_HOST:-127.0.0.1}
port=${EDDYDB_PORT:-6690}
contexts=${CONTEXT_ROWS:-1000000}
events=${EVENTS:-1000000}
rate=${EVENT_RATE:-100000}
sql() { psql -h "$host" -p "$port" -U eddy -d eddy -X -q -v ON_ERROR_STOP=1 "$@"; }
value() { sql -At -c "$1"; }

sql <<SQL
DROP SOURCE IF EXISTS events CASCADE;
DROP TABLE IF EXISTS events_batch;
DROP TABLE IF EXISTS contexts CASCADE;
CREATE TABLE contexts (
  context_id bigint PRIMARY KEY,
  customer varchar,
  device_type varchar,
  device_id varchar,
  ip varchar,
  connection varchar,
  updated_at timestamptz
);
SQL

echo "loading $contexts context rows with COPY..."
started=$(date +%s.%N)
awk -v n="$contexts" 'BEGIN {
  split("phone tablet laptop desktop watch tv console car", kinds, " ");
  split("wifi 4g 5g fiber cable dsl", links, " ");
  for (i = 0; i < n; i++) {
    printf "%d,customer-%07d-with-a-longer-account-name,%s,device-%012d-%08x,10.%d.%d.%d,%s,2026-01-01 00:00:00+00\n",
      i, i % 2000000, kinds[i % 8 + 1], i, (i * 2654435761) % 4294967296,
      int(i / 65536) % 256, int(i / 256) % 256, i % 256, links[i % 6 + 1]
  }
}' | sql -c "COPY contexts FROM STDIN WITH (FORMAT csv)"
finished=$(date +%s.%N)
awk -v n="$contexts" -v a="$started" -v b="$finished" \
  'BEGIN { printf "loaded in %.1f s (%.0f rows/s)\n", b - a, n / (b - a) }'

# Half the events are already due (a backlog), the rest arrive live.
backlog_s=$((events / 2 / rate))
start=$(date -u -d "-${backlog_s} seconds" '+%Y-%m-%d %H:%M:%S+00')
stream="connector = 'datagen', datagen.rows = '$events', datagen.rows.per.second = '$rate',
        datagen.start.time = '$start', datagen.seed = '2',
        fields.id.kind = 'sequence', fields.context_id.kind = 'random',
        fields.context_id.min = '0', fields.context_id.max = '$((contexts - 1))'"

sql <<SQL
CREATE SOURCE events (id bigint, context_id bigint, ts timestamptz) WITH ($stream);
-- The batch answer's input: every event, stored.
CREATE TABLE events_batch (id bigint, context_id bigint, ts timestamptz) WITH ($stream);

-- Follows the table: a context change rewrites the counts of past events.
CREATE MATERIALIZED VIEW events_by_device AS
SELECT c.device_type, c.connection, count(*) AS events
FROM events e JOIN contexts c ON e.context_id = c.context_id
GROUP BY c.device_type, c.connection;

-- Each event as it was decorated when it arrived; the stream is not kept.
CREATE MATERIALIZED VIEW decorated_on_arrival AS
SELECT e.id, e.ts, c.customer, c.device_type, c.ip, c.connection
FROM events e LEFT JOIN contexts FOR SYSTEM_TIME AS OF PROCTIME() AS c
  ON e.context_id = c.context_id;
SQL

wait_until() {
  for _ in $(seq 1 1200); do
    [ "$(value "$1")" = t ] && return 0
    sleep 0.25
  done
  echo "timed out waiting for: $1" >&2
  exit 1
}

echo "waiting for the backlog of $((events / 2)) events..."
wait_until "SELECT count(*) >= $((events / 2)) FROM decorated_on_arrival"
sql -c "SELECT view, operator, pg_size_pretty(state_bytes) AS state
        FROM eddy_catalog.operators WHERE state_bytes > 0 ORDER BY view, node"

echo "retiring one context in ten, while events keep arriving..."
sql -c "UPDATE contexts SET device_type = 'retired' WHERE context_id % 10 = 0"
sql -c "SELECT sum(events) AS retired_in_regular_join FROM events_by_device WHERE device_type = 'retired'"
sql -c "SELECT count(*) AS retired_in_lookup_join FROM decorated_on_arrival WHERE device_type = 'retired'"

echo "waiting for all $events events..."
wait_until "SELECT (SELECT count(*) FROM events_batch) = $events
  AND (SELECT count(*) FROM decorated_on_arrival) = $events
  AND (SELECT sum(events) FROM events_by_device) = $events"

sql <<SQL
SELECT device_type, sum(events) AS events FROM events_by_device GROUP BY 1 ORDER BY 1;
SELECT count(*) FILTER (WHERE device_type = 'retired') AS decorated_as_retired,
       count(*) FILTER (WHERE device_type <> 'retired') AS decorated_otherwise
FROM decorated_on_arrival;
SQL

differ=$(value "SELECT count(*) FROM (
  (SELECT c.device_type, c.connection, count(*) FROM events_batch e
     JOIN contexts c ON e.context_id = c.context_id GROUP BY 1, 2
   EXCEPT SELECT * FROM events_by_device)
  UNION ALL
  (SELECT * FROM events_by_device
   EXCEPT SELECT c.device_type, c.connection, count(*) FROM events_batch e
     JOIN contexts c ON e.context_id = c.context_id GROUP BY 1, 2)) d")
echo "device counts that differ from the batch answer: $differ"
retired_late=$(value "SELECT count(*) FROM decorated_on_arrival WHERE device_type = 'retired'")
echo "events decorated as retired by the lookup join: $retired_late"
if [ "$retired_late" = 0 ]; then
  echo "no event arrived after the update: raise EVENTS or lower EVENT_RATE so that" \
       "the live half of the stream outlasts building the views" >&2
fi
[ "$differ" = 0 ] && [ "$retired_late" -gt 0 ]
