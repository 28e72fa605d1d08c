#!/usr/bin/env bash
# Builds the release binaries and runs both EddyDB benchmarks with the
# parameters of docs/benchmarks.md, saving each run's output under
# target/bench/. Extra arguments go to both runs (e.g. --work-dir /mnt/fast).
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
