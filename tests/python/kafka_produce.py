"""Produces records to a Kafka topic with confluent-kafka (run by tests/support/kafka.rs).

Usage: kafka_produce.py BOOTSTRAP TOPIC < records.jsonl

Each stdin line is one record, a JSON object:
    {"partition": 0 | null, "key": "hex" | null, "value": "hex" | null}
Keys and values are hex-encoded bytes so any payload (invalid UTF-8, invalid
JSON) can be sent; null sends no key or a null value (a tombstone). A null
partition leaves the choice to the producer's partitioner (by key hash).

Records are produced in input order with acks=all, then flushed. Prints
"produced N" and exits 0 only when every record was acknowledged; any
delivery error, bad input line or flush timeout exits non-zero with the
reason on stderr.
"""

import json
import sys

from confluent_kafka import KafkaException, Producer

# A delivery that takes longer than this fails instead of hanging the test.
MESSAGE_TIMEOUT_MS = 30_000
FLUSH_TIMEOUT_S = 60


def parse(line_number, line):
    record = json.loads(line)
    unknown = set(record) - {"partition", "key", "value"}
    if unknown:
        raise ValueError(f"line {line_number}: unknown fields {sorted(unknown)}")
    partition = record.get("partition")
    if partition is not None and (not isinstance(partition, int) or partition < 0):
        raise ValueError(f"line {line_number}: bad partition {partition!r}")
    key = record.get("key")
    value = record.get("value")
    return (
        partition,
        None if key is None else bytes.fromhex(key),
        None if value is None else bytes.fromhex(value),
    )


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: kafka_produce.py BOOTSTRAP TOPIC < records.jsonl")
    bootstrap, topic = sys.argv[1], sys.argv[2]
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": MESSAGE_TIMEOUT_MS,
    })
    sent = 0
    delivered = 0
    errors = []

    def on_delivery(err, _msg):
        nonlocal delivered
        if err is None:
            delivered += 1
        else:
            errors.append(str(err))

    for line_number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        partition, key, value = parse(line_number, line)
        kwargs = {"key": key, "value": value, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                # The local queue is full: serve delivery reports to drain it.
                producer.poll(0.1)
        sent += 1
        producer.poll(0)
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    if remaining:
        errors.append(f"{remaining} records still queued after {FLUSH_TIMEOUT_S} s")
    if errors or delivered != sent:
        print(f"produced {delivered} of {sent}", file=sys.stderr)
        for err in errors[:20]:
            print(f"delivery error: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"produced {delivered}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, KafkaException) as e:
        sys.exit(f"kafka_produce.py: {e}")
