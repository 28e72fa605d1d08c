#!/usr/bin/env bash
# The one command that checks EddyDB on a fresh Debian 12 machine, as root
# or not, with no terminal (CI=true): installs what the tests need when it
# is missing (psql, pgbench, a JDK with pgjdbc, a Python venv with
# psycopg 3 and confluent-kafka, the tansu Kafka-protocol broker), then runs
# rustfmt, clippy, the Rust tests and the sqllogictest files.
# Exits non-zero if anything fails; prints each step as it goes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    SUDO=(sudo -n)
fi

# --- System packages -------------------------------------------------------

missing=()
psql --version >/dev/null 2>&1 || missing+=(postgresql-client)
# Debian ships pgbench with the server package; /usr/bin/pgbench alone is
# only postgresql-common's version dispatcher.
pgbench --version >/dev/null 2>&1 || missing+=(postgresql)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# The tests send SIGTERM with kill(1), which lives in procps.
[[ -x /usr/bin/kill || -x /bin/kill ]] || missing+=(procps)
# The JDBC client test compiles tests/java/Metadata.java against Debian's
# pgjdbc jar; default-jdk-headless brings javac and java.
javac -version >/dev/null 2>&1 || missing+=(default-jdk-headless)
[[ -f /usr/share/java/postgresql.jar ]] || missing+=(libpostgresql-jdbc-java)

if ((${#missing[@]})); then
    step "installing Debian packages: ${missing[*]}"
    # The tests start their own servers; no cluster is wanted from the
    # postgresql package.
    "${SUDO[@]}" mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' |
        "${SUDO[@]}" tee /etc/postgresql-common/createcluster.d/eddydb-tests.conf >/dev/null
    # Slim Debian images drop /usr/share/man, and the JDK's postinst fails
    # when it cannot link its man pages there.
    "${SUDO[@]}" mkdir -p /usr/share/man/man1
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    step "Debian packages present (psql, pgbench, python3-venv, kill, JDK, pgjdbc)"
fi
psql --version
pgbench --version
javac -version

# --- Python venv for the psycopg and confluent-kafka client tests -----------
# confluent-kafka's wheels bundle a current librdkafka; Debian's (2.0) cannot
# talk to tansu (shared/KAFKA.md). pip leaves what is already installed.

VENV=target/test-venv
PY_IMPORTS='import psycopg, confluent_kafka'
if [[ -z "${EDDYDB_TEST_PYTHON:-}" ]]; then
    export EDDYDB_TEST_PYTHON="$PWD/$VENV/bin/python"
fi
if "$EDDYDB_TEST_PYTHON" -c "$PY_IMPORTS" >/dev/null 2>&1; then
    step "psycopg and confluent-kafka present in $EDDYDB_TEST_PYTHON"
else
    step "installing psycopg[binary] and confluent-kafka into $VENV"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        'psycopg[binary]>=3.1,<4' 'confluent-kafka>=2.3,<3'
    export EDDYDB_TEST_PYTHON="$PWD/$VENV/bin/python"
fi
"$EDDYDB_TEST_PYTHON" -c "$PY_IMPORTS"'
print("psycopg", psycopg.__version__)
print("confluent-kafka", confluent_kafka.__version__, "librdkafka", confluent_kafka.libversion()[0])'

# --- tansu, the Kafka-protocol broker of the Kafka source tests -----------
# Built from crates.io into target/tools (a debug build, about 9 minutes on
# 2 cores, in cargo's own temporary target dir), so a reused checkout keeps
# it. Without both storage features tansu builds but refuses to start.
# EDDYDB_TANSU points the tests at another build.

TANSU_ROOT=target/tools
if [[ -z "${EDDYDB_TANSU:-}" ]]; then
    export EDDYDB_TANSU="$PWD/$TANSU_ROOT/bin/tansu"
fi
tansu_usable() {
    local help
    help=$("$EDDYDB_TANSU" --help 2>/dev/null) || return 1
    grep -q '^Storage engines:.*dynostore' <<<"$help" &&
        grep -q '^Storage engines:.*libsql' <<<"$help"
}
if tansu_usable; then
    step "tansu present at $EDDYDB_TANSU"
else
    step "building tansu into $TANSU_ROOT (debug, about 9 minutes)"
    # Pinned: shared/KAFKA.md's findings are for 0.6.0. Unsetting
    # CARGO_TARGET_DIR keeps the build out of a shared target dir.
    env -u CARGO_TARGET_DIR cargo install --root "$PWD/$TANSU_ROOT" --version 0.6.0 \
        --locked --debug --features dynostore,libsql tansu
    export EDDYDB_TANSU="$PWD/$TANSU_ROOT/bin/tansu"
    tansu_usable || {
        echo "$EDDYDB_TANSU --help does not list the dynostore and libsql storage engines" >&2
        exit 1
    }
fi
"$EDDYDB_TANSU" --version

# --- Rust checks -----------------------------------------------------------
# Every step runs even after one fails, so one run reports everything; the
# exit status is non-zero if any failed.

failed=()
run() {
    local name=$1
    shift
    step "$name"
    "$@" || failed+=("$name")
}

run "cargo fmt --check" cargo fmt --all --check
run "cargo clippy --all-targets -- -D warnings" cargo clippy --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
    run "cargo nextest run (all tests but the sqllogictest files)" \
        cargo nextest run --no-fail-fast -E 'not binary_id(eddydb::sqllogictest)'
    run "sqllogictest files" cargo test --test sqllogictest
else
    run "cargo test (cargo-nextest not installed)" cargo test --no-fail-fast --tests
fi

# On success nothing follows the runners, so their summary line closes the
# output.
if ((${#failed[@]})); then
    printf '\nFAILED steps:\n' >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
