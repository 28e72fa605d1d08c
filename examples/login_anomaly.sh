#!/usr/bin/env bash
# Scenario 1 of EddyDB: login anomaly detection.
#
# Logins stream in (the built-in `logins` generator: each user has a home
# city, a home network and a usual device; about 1% of logins come from
# elsewhere). For every login, EddyDB reads the user's recent history as it
# was just before that login (OVER windows over the preceding rows), turns
# it into features, and scores it twice: with a SQL function and with the
# same model written in Python. Per-user profiles (counts, distinct cities
# and devices, the last city, the last five cities) are a view of their
# own. Both are queryable at once while logins arrive: the dashboard
# queries at the end are what a dashboard would run.
#
# Half of the logins are a backlog, the other half arrive live. At the end
# the profiles are checked against the batch answer (a table fed by the same
# generator, aggregated ad hoc), the SQL and Python scores against each
# other, and the scores against the generator's own anomalies.
#
# Run EddyDB first (`cargo run --release`), then: bash examples/login_anomaly.sh
# EDDYDB_HOST / EDDYDB_PORT say where it listens (default 127.0.0.1:6690);
# LOGINS (default 400000) sets how many, LOGIN_RATE (default 20000) the
# logins per second, USERS (default 10000) how many users.
set -euo pipefail

host=${EDDYDB_HOST:-127.0.0.1}
port=${EDDYDB_PORT:-6690}
logins=${LOGINS:-400000}
rate=${LOGIN_RATE:-20000}
users=${USERS:-10000}
sql() { psql -h "$host" -p "$port" -U eddy -d eddy -X -q -v ON_ERROR_STOP=1 "$@"; }
value() { sql -At -c "$1"; }

# Half the logins are already due (a backlog), the rest arrive live.
backlog_s=$((logins / 2 / rate))
start=$(date -u -d "-${backlog_s} seconds" '+%Y-%m-%d %H:%M:%S+00')
stream="connector = 'datagen', generator = 'logins', generator.users = '$users',
        datagen.rows = '$logins', datagen.rows.per.second = '$rate',
        datagen.start.time = '$start', datagen.seed = '1'"

sql <<SQL
DROP SOURCE IF EXISTS logins CASCADE;
DROP TABLE IF EXISTS logins_batch;
DROP FUNCTION IF EXISTS login_anomaly CASCADE;
DROP FUNCTION IF EXISTS anomaly_score CASCADE;

CREATE SOURCE logins (user_id varchar, city varchar, ip varchar, device varchar, ts timestamptz,
  WATERMARK FOR ts AS ts - INTERVAL '1 second')
WITH ($stream);
-- The batch answer's input: every login, stored.
CREATE TABLE logins_batch (user_id varchar, city varchar, ip varchar, device varchar, ts timestamptz)
WITH ($stream);

-- The model, in SQL: a city or device not among the user's last five
-- logins, a network outside the company's, and a burst of logins.
CREATE FUNCTION login_anomaly(new_city boolean, new_device boolean, outside boolean,
                              last_minute bigint) RETURNS double precision
LANGUAGE sql AS \$\$
  0.5 * CAST(new_city AS int) + 0.2 * CAST(new_device AS int) + 0.3 * CAST(outside AS int)
  + CAST(least(last_minute, 10) AS double precision) / 100
\$\$;

-- The same model, as the data team wrote it first.
CREATE FUNCTION anomaly_score(new_city boolean, new_device boolean, outside boolean,
                              last_minute bigint) RETURNS double precision
LANGUAGE python AS \$\$
def anomaly_score(new_city, new_device, outside, last_minute):
    score = 0.5 * new_city + 0.2 * new_device + 0.3 * outside
    return score + min(last_minute, 10) / 100
\$\$;

-- Each login with its user's history just before it (not materialized:
-- the two scoring views below each inline it).
CREATE VIEW login_features AS
SELECT user_id, ts, city, ip, device,
  coalesce(NOT array_has(array_agg(city) OVER recent, city), false) AS new_city,
  coalesce(NOT array_has(array_agg(device) OVER recent, device), false) AS new_device,
  NOT starts_with(ip, '10.') AS outside,
  count(*) OVER (PARTITION BY user_id ORDER BY ts
                 RANGE BETWEEN INTERVAL '1 minute' PRECEDING AND CURRENT ROW) AS last_minute,
  lag(ts) OVER (PARTITION BY user_id ORDER BY ts) AS previous_login
FROM logins
WINDOW recent AS (PARTITION BY user_id ORDER BY ts ROWS BETWEEN 5 PRECEDING AND 1 PRECEDING);

CREATE MATERIALIZED VIEW scored_logins AS
SELECT user_id, ts, city, ip, device, previous_login,
  login_anomaly(new_city, new_device, outside, last_minute) AS score
FROM login_features;

CREATE MATERIALIZED VIEW py_scored_logins AS
SELECT user_id, ts, anomaly_score(new_city, new_device, outside, last_minute) AS score
FROM login_features;

CREATE MATERIALIZED VIEW user_profiles AS
SELECT user_id,
  count(*) AS logins,
  count(DISTINCT city) AS cities,
  approx_distinct(device) AS devices,
  last_value(city ORDER BY ts) AS last_city,
  (array_agg(city ORDER BY ts DESC))[1:5] AS recent_cities,
  max(ts) AS last_login
FROM logins GROUP BY user_id;
SQL

wait_until() {
  for _ in $(seq 1 2400); do
    [ "$(value "$1")" = t ] && return 0
    sleep 0.25
  done
  echo "timed out waiting for: $1" >&2
  exit 1
}

echo "waiting for the backlog of $((logins / 2)) logins..."
wait_until "SELECT (SELECT count(*) FROM scored_logins) >= $((logins / 2))
  AND (SELECT sum(logins) FROM user_profiles) >= $((logins / 2))"

echo "while logins arrive: the top anomalies of the last 5 minutes"
sql <<'SQL'
SELECT user_id, ts, city, ip, device, round(CAST(score AS numeric), 2) AS score
FROM scored_logins
WHERE ts > now() - INTERVAL '5 minutes'
ORDER BY score DESC, ts DESC
LIMIT 5;
SQL
user=$(value "SELECT user_id FROM scored_logins ORDER BY score DESC, ts DESC LIMIT 1")
echo "and the profile of $user, by id:"
sql -c "SELECT * FROM user_profiles WHERE user_id = '$user'"

echo "waiting for all $logins logins..."
wait_until "SELECT (SELECT count(*) FROM logins_batch) = $logins
  AND (SELECT count(*) FROM scored_logins) = $logins
  AND (SELECT count(*) FROM py_scored_logins) = $logins
  AND (SELECT sum(logins) FROM user_profiles) = $logins"

profiles_differing=$(value "
  WITH batch AS (
    SELECT user_id, count(*) AS logins, count(DISTINCT city) AS cities,
      approx_distinct(device) AS devices, last_value(city ORDER BY ts) AS last_city,
      array_to_string((array_agg(city ORDER BY ts DESC))[1:5], ',') AS recent, max(ts) AS last_login
    FROM logins_batch GROUP BY user_id),
  live AS (
    SELECT user_id, logins, cities, devices, last_city,
      array_to_string(recent_cities, ',') AS recent, last_login FROM user_profiles)
  SELECT count(*) FROM ((SELECT * FROM batch EXCEPT SELECT * FROM live)
                        UNION ALL (SELECT * FROM live EXCEPT SELECT * FROM batch)) d")
scores_differing=$(value "
  SELECT count(*) FROM scored_logins s JOIN py_scored_logins p
    ON s.user_id = p.user_id AND s.ts = p.ts
  WHERE abs(s.score - p.score) > 1e-9 OR p.score IS NULL")
echo "profiles differing from the batch answer: $profiles_differing"
echo "logins scored differently by SQL and Python: $scores_differing"

sql <<'SQL'
SELECT count(*) FILTER (WHERE score >= 0.5 AND NOT starts_with(ip, '10.')) AS caught,
       count(*) FILTER (WHERE score < 0.5 AND NOT starts_with(ip, '10.')) AS missed,
       count(*) FILTER (WHERE score >= 0.5 AND starts_with(ip, '10.')) AS false_alarms,
       count(*) AS logins
FROM scored_logins WHERE previous_login IS NOT NULL;
SQL
[ "$profiles_differing" = 0 ] && [ "$scores_differing" = 0 ]
