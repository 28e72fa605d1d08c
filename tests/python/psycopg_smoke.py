"""A psycopg 3 client session against EddyDB (run by tests/clients.rs).

Usage: psycopg_smoke.py PORT

Covers what a Python application does with a Postgres server: DDL,
executemany with parameters, server-side parameters of several types in text
and binary results, fetches, COPY in and out, an explicit transaction, errors
checked by SQLSTATE, and an information_schema lookup. Any failed check raises,
and the script goes on with the next section; it prints one line per section
and exits non-zero if any failed.
"""

import datetime as dt
import sys
from decimal import Decimal

import psycopg
from psycopg import errors
from psycopg.types.json import Jsonb

UTC = dt.timezone.utc

ROWS = [
    (1, "ann", 1.5, True, dt.date(2024, 2, 29),
     dt.datetime(2024, 2, 29, 13, 45, 1, 500000, tzinfo=UTC), Decimal("12.50"), {"a": [1, 2]}),
    (2, "bob", -0.25, False, dt.date(1999, 12, 31),
     dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), Decimal("-3.00"), {"b": None}),
    (3, "cid, \"quoted\"\ttab", 1e10, None, None, None, None, None),
]


def check(actual, expected, what):
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def create_and_fill(conn):
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE smoke (id int PRIMARY KEY, name text NOT NULL, score double precision,"
            " ok boolean, born date, seen timestamptz, amount numeric(10,2), doc jsonb)"
        )
        cur.executemany(
            "INSERT INTO smoke VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [r[:7] + (None if r[7] is None else Jsonb(r[7]),) for r in ROWS],
        )
        cur.execute("SELECT count(*) FROM smoke")
        check(cur.fetchone(), (len(ROWS),), "row count after executemany")


def fetch_back(conn, binary):
    """Reads the rows back, selected by parameters of each type."""
    with conn.cursor(binary=binary) as cur:
        cur.execute("SELECT * FROM smoke ORDER BY id")
        check(cur.fetchall(), [r[:7] + (r[7],) for r in ROWS], f"fetchall binary={binary}")
        one = ROWS[0]
        cur.execute(
            "SELECT id FROM smoke WHERE name = %s AND score = %s AND ok = %s AND born = %s"
            " AND seen = %s AND amount = %s",
            one[1:7],
        )
        check(cur.fetchall(), [(1,)], f"typed parameters in WHERE binary={binary}")
        cur.execute("SELECT name FROM smoke WHERE id > %s ORDER BY id", (1,))
        check(cur.fetchone(), (ROWS[1][1],), "fetchone")
        check(cur.fetchmany(5), [(ROWS[2][1],)], "fetchmany")
        check(cur.fetchone(), None, "fetchone past the end")


def parameters_round_trip(conn):
    """Values sent as parameters come back unchanged through a SELECT."""
    values = (
        42, -(2**40), "text ünïcode", 2.75, True, dt.date(2000, 1, 1),
        dt.datetime(2020, 5, 17, 8, 30, 0, 250000, tzinfo=UTC), Decimal("1234.56"), None,
    )
    for binary in (False, True):
        with conn.cursor(binary=binary) as cur:
            cur.execute(
                "SELECT %s::int, %s::bigint, %s::text, %s::float8, %s::bool, %s::date,"
                " %s::timestamptz, %s::numeric, %s::int",
                values,
            )
            check(cur.fetchone(), values, f"parameter round trip binary={binary}")


def copy_in_and_out(conn):
    with conn.cursor() as cur:
        with cur.copy("COPY smoke (id, name, score) FROM STDIN") as copy:
            for i in range(10, 110):
                copy.write_row((i, f"copied {i}", i / 4))
        cur.execute("SELECT count(*), sum(id), min(name) FROM smoke WHERE id >= 10")
        check(cur.fetchone(), (100, sum(range(10, 110)), "copied 10"), "rows after COPY FROM")
        data = bytearray()
        with cur.copy("COPY (SELECT id, name, score FROM smoke WHERE id < 13 ORDER BY id) TO STDOUT") as copy:
            for chunk in copy:
                data += chunk
        expected = "1\tann\t1.5\n2\tbob\t-0.25\n3\tcid, \"quoted\"\\ttab\t10000000000\n10\tcopied 10\t2.5\n11\tcopied 11\t2.75\n12\tcopied 12\t3\n"
        check(data.decode(), expected, "COPY TO STDOUT text")


def transaction(port):
    with psycopg.connect(dsn(port)) as conn:
        with conn.transaction():
            conn.execute("INSERT INTO smoke (id, name) VALUES (500, 'in tx')")
            conn.execute("UPDATE smoke SET score = 5 WHERE id = 500")
        conn.execute("INSERT INTO smoke (id, name) VALUES (501, 'commit()')")
        conn.commit()
    with psycopg.connect(dsn(port), autocommit=True) as other:
        got = other.execute("SELECT id, score FROM smoke WHERE id >= 500 ORDER BY id").fetchall()
        check(got, [(500, 5.0), (501, None)], "committed rows seen by another session")


def expect_error(conn, sql, params, sqlstate, cls):
    try:
        conn.execute(sql, params)
    except psycopg.Error as e:
        check(e.sqlstate, sqlstate, f"sqlstate of {sql!r}")
        if not isinstance(e, cls):
            raise AssertionError(f"{sql!r} raised {type(e).__name__}, expected {cls.__name__}")
        return
    raise AssertionError(f"{sql!r} succeeded, expected SQLSTATE {sqlstate}")


def errors_by_sqlstate(conn):
    expect_error(conn, "SELEC 1", None, "42601", errors.SyntaxError)
    expect_error(conn, "SELECT * FROM nope", None, "42P01", errors.UndefinedTable)
    expect_error(conn, "SELECT nope FROM smoke", None, "42703", errors.UndefinedColumn)
    expect_error(conn, "INSERT INTO smoke (id, name) VALUES (%s, %s)", (1, "dup"), "23505",
                 errors.UniqueViolation)
    expect_error(conn, "INSERT INTO smoke (id, name) VALUES (%s, %s)", (900, None), "23502",
                 errors.NotNullViolation)
    expect_error(conn, "INSERT INTO smoke (id, name) VALUES ('x', 'y')", None, "22P02",
                 errors.InvalidTextRepresentation)
    # The session is still usable after the errors.
    check(conn.execute("SELECT count(*) FROM smoke WHERE id = 900").fetchone(), (0,), "after errors")


def catalog(conn):
    got = conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_name = %s ORDER BY ordinal_position",
        ("smoke",),
    ).fetchall()
    check(got, [
        ("id", "integer", "NO"), ("name", "text", "NO"), ("score", "double precision", "YES"),
        ("ok", "boolean", "YES"), ("born", "date", "YES"),
        ("seen", "timestamp with time zone", "YES"), ("amount", "numeric", "YES"),
        ("doc", "jsonb", "YES"),
    ], "information_schema.columns")


def dsn(port):
    return f"host=127.0.0.1 port={port} user=eddy dbname=eddy connect_timeout=30"


def main():
    port = int(sys.argv[1])
    failures = []

    def section(name, fn, *args):
        # Sections run on after a failure so one run shows every problem.
        try:
            fn(*args)
            print(f"ok      {name}")
        except Exception as e:  # noqa: BLE001 - any failure is reported
            failures.append(name)
            print(f"FAILED  {name}: {type(e).__name__}: {e}")

    with psycopg.connect(dsn(port), autocommit=True) as conn:
        section("client_encoding", lambda: check(
            conn.info.parameter_status("client_encoding"), "UTF8", "client_encoding"))
        section("create table, executemany", create_and_fill, conn)
        section("fetch text results", fetch_back, conn, False)
        section("fetch binary results", fetch_back, conn, True)
        section("parameter round trip", parameters_round_trip, conn)
        section("COPY in and out", copy_in_and_out, conn)
        section("errors by SQLSTATE", errors_by_sqlstate, conn)
        section("information_schema.columns", catalog, conn)
    section("transaction", transaction, port)
    if failures:
        print(f"psycopg smoke: {len(failures)} sections failed")
        sys.exit(1)
    print("psycopg smoke: ok")


if __name__ == "__main__":
    main()
