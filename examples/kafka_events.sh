#!/usr/bin/env bash
# A Kafka topic into a view you watch from psql.
#
# A real Kafka client (Python confluent-kafka) produces JSON events into a
# 4-partition topic in rounds; after each round psql reads the view over
# the topic and shows it change. One round carries malformed messages: they
# land in eddy_catalog.source_errors while the source goes on reading.
#
# It needs a Kafka-protocol broker and a Python with confluent-kafka. The
# test command (scripts/test.sh) installs both into target/: the tansu
# broker (target/tools/bin/tansu) and a venv (target/test-venv). With
# KAFKA_BOOTSTRAP set, the script uses that broker instead of starting one.
#
# Run EddyDB first (`cargo run --release`), then: bash examples/kafka_events.sh
# EDDYDB_HOST / EDDYDB_PORT say where it listens (default 127.0.0.1:6690);
# TANSU and PYTHON override the broker binary and the Python.
set -euo pipefail
cd "$(dirname "$0")/.."

host=${EDDYDB_HOST:-127.0.0.1}
port=${EDDYDB_PORT:-6690}
python=${PYTHON:-target/test-venv/bin/python}
tansu=${TANSU:-target/tools/bin/tansu}
sql() { psql -h "$host" -p "$port" -U eddy -d eddy -X -q -v ON_ERROR_STOP=1 "$@"; }

"$python" -c 'import confluent_kafka' 2>/dev/null || {
    echo "no Python with confluent-kafka at $python: run scripts/test.sh once, or set PYTHON" >&2
    exit 1
}

broker_pid=
work=$(mktemp -d)
cleanup() {
    sql -c "DROP SOURCE IF EXISTS kafka_events CASCADE" >/dev/null 2>&1 || true
    [[ -n $broker_pid ]] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

if [[ -n ${KAFKA_BOOTSTRAP:-} ]]; then
    bootstrap=$KAFKA_BOOTSTRAP
else
    [[ -x $tansu ]] || {
        echo "no broker binary at $tansu: run scripts/test.sh once, or set TANSU or KAFKA_BOOTSTRAP" >&2
        exit 1
    }
    tansu=$(realpath "$tansu")
    # A free loopback port, and a broker on it over a sqlite file in $work.
    broker_port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    bootstrap=127.0.0.1:$broker_port
    (cd "$work" && NO_COLOR=1 exec "$tansu" broker \
        --listener-url "tcp://$bootstrap" --advertised-listener-url "tcp://$bootstrap" \
        --storage-engine sqlite://tansu.db >broker.log 2>&1) &
    broker_pid=$!
    echo "-- tansu broker on $bootstrap (pid $broker_pid)"
fi

# The Kafka client: creates the topic, then produces one round per call.
cat >"$work/produce.py" <<'PY'
import json, random, sys, time
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, command = sys.argv[1], sys.argv[2]
if command == "create":
    # log_level 0: no client log lines while the broker is still starting.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.time() + 30
    while True:
        try:
            admin.create_topics([NewTopic("events", 4, 1)])["events"].result()
            break
        except Exception as e:  # the broker may still be starting
            if time.time() > deadline:
                sys.exit(f"cannot create topic events on {bootstrap}: {e}")
            time.sleep(0.5)
    sys.exit(0)

round_no, count = int(sys.argv[3]), int(sys.argv[4])
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "log_level": 0})
rng = random.Random(round_no)
kinds = ["view", "click", "cart", "buy"]
for i in range(count):
    event = {"user_id": rng.randint(1, 1000), "event_type": rng.choice(kinds),
             "amount": round(rng.uniform(0, 100), 2),
             "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    producer.produce("events", json.dumps(event).encode(), partition=i % 4)
if command == "bad":
    producer.produce("events", b'{"user_id": 7, "event_type": "buy"', partition=0)
    producer.produce("events", b'{"user_id": "seven", "event_type": "buy", "amount": 1, "ts": "2026-01-01T00:00:00Z"}', partition=1)
if producer.flush(30) != 0:
    sys.exit("some messages were not delivered")
PY

produce() { "$python" "$work/produce.py" "$bootstrap" "$@"; }
produce create

sql <<SQL
DROP SOURCE IF EXISTS kafka_events CASCADE;
CREATE SOURCE kafka_events (user_id bigint, event_type varchar, amount numeric(10,2),
                            ts timestamptz)
  WITH (connector = 'kafka', topic = 'events',
        properties.bootstrap.server = '$bootstrap',
        scan.startup.mode = 'earliest')
  FORMAT PLAIN ENCODE JSON;
CREATE MATERIALIZED VIEW events_by_type AS
  SELECT event_type, count(*) AS events, sum(amount) AS amount
  FROM kafka_events GROUP BY event_type;
SQL

# Waits until the view has counted $1 events (the reader works on its own
# clock; this polls the view, as a dashboard would).
wait_for() {
    local want=$1 seen
    for _ in $(seq 1 300); do
        seen=$(sql -At -c "SELECT coalesce(sum(events), 0) FROM events_by_type")
        [[ $seen -ge $want ]] && return 0
        sleep 0.1
    done
    echo "the view counted $seen events, not $want, after 30 s" >&2
    exit 1
}

total=0
for round in 1 2 3; do
    kind=good
    [[ $round -eq 2 ]] && kind=bad
    produce "$kind" "$round" 1000
    total=$((total + 1000))
    wait_for "$total"
    echo "== after round $round ($total good events produced)"
    sql -c "SELECT * FROM events_by_type ORDER BY event_type"
done

echo "== the malformed messages of round 2, kept apart; the source still reads"
sql -c "SELECT partition, \"offset\", reason, payload FROM eddy_catalog.source_errors
        WHERE source = 'kafka_events' ORDER BY partition, \"offset\""
sql -c "SELECT partition, \"offset\", high_watermark, lag, rows, bad_records, status
        FROM eddy_catalog.source_partitions WHERE source = 'kafka_events' ORDER BY partition"
