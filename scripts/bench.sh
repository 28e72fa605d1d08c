#!/usr/bin/env bash
# Builds the release binaries and runs the EddyDB benchmarks with the
# parameters of docs/benchmarks.md, saving each run's output under
# target/bench/. Extra arguments go to every run (e.g. --work-dir /mnt/fast).
# Needs PostgreSQL 15's client and server binaries (Debian: postgresql-15).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --bins
mkdir -p target/bench
stamp=$(date -u +%Y%m%dT%H%M%SZ)

run() {
    local name=$1
    shift
    printf '\n==> eddydb-bench %s\n' "$*"
    target/release/eddydb-bench "$@" 2>&1 | tee "target/bench/${stamp}-${name}.txt"
}

run copy copy --rows 10000000 "$@"
run pgbench pgbench --rows 1000000 --clients 8 --seconds 30 "$@"
# Materialized views: read-your-writes latency at two table sizes (the p99
# should not depend on the size), COPY with a join view maintained, and
# incremental maintenance beside PostgreSQL's REFRESH.
run view-latency-1m view-latency --rows 1000000 --keys 10000 --samples 2000 "$@"
run view-latency-10m view-latency --rows 10000000 --keys 10000 --samples 2000 "$@"
run view-copy view-copy --rows 10000000 --customers 100000 --copies 1 "$@"
run view-refresh view-refresh --rows 1000000 --customers 100000 --batches 50 --batch-size 1000 "$@"
# Sources: datagen throughput (JSON and typed) and freshness, then Kafka
# against a bare consumer. The Kafka run needs a tansu broker binary
# (EDDYDB_TANSU, or target/tools/bin/tansu, which scripts/test.sh builds).
run source-ingest source-ingest --rows 5000000 --rate 100000 --seconds 20 "$@"
run kafka-ingest kafka-ingest --rows 1000000 "$@"
