//! Wire-protocol behaviour of a real `eddydb` process: SSLRequest, startup
//! and ParameterStatus, unknown databases, error positions, the extended
//! protocol with binary parameters and results for every column type,
//! misbehaving clients (disconnects, garbage, oversized messages), the
//! connection limit, query cancellation and session settings.
//!
//! tokio-postgres is the client wherever a driver can say it; the raw
//! frontend in `support/wire.rs` is used where no driver would.

#[path = "support/server.rs"]
mod server;
#[path = "support/wire.rs"]
mod wire;

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use server::{ServerOptions, TestServer};
use tokio_postgres::error::{ErrorPosition, SqlState};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::NoTls;
use wire::{data_rows, first_error, parameters, RawConn};

type BoxError = Box<dyn StdError + Sync + Send>;

/// `numeric` in Postgres's binary format, held as its decimal text
/// (e.g. `-12.500`); tokio-postgres has no numeric type of its own.
#[derive(Clone, Debug, PartialEq)]
struct Numeric(String);

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Numeric, BoxError> {
        let word = |i: usize| -> Result<u16, BoxError> {
            let bytes = raw.get(i * 2..i * 2 + 2).ok_or("numeric value too short")?;
            Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
        };
        let (ndigits, weight) = (usize::from(word(0)?), i32::from(word(1)? as i16));
        let (sign, dscale) = (word(2)?, usize::from(word(3)?));
        if sign == NUMERIC_NAN {
            return Ok(Numeric("NaN".to_string()));
        }
        let digits = (0..ndigits)
            .map(|i| word(4 + i))
            .collect::<Result<Vec<u16>, _>>()?;
        let group = |index: i32| {
            usize::try_from(index)
                .ok()
                .and_then(|i| digits.get(i).copied())
        };
        let mut text = String::new();
        if sign == NUMERIC_NEG {
            text.push('-');
        }
        if weight < 0 {
            text.push('0');
        }
        for index in 0..=weight {
            let g = group(index).unwrap_or(0);
            text.push_str(&if index == 0 {
                g.to_string()
            } else {
                format!("{g:04}")
            });
        }
        let mut fraction = String::new();
        let mut index = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", group(index).unwrap_or(0)));
            index += 1;
        }
        if dscale > 0 {
            text.push('.');
            text.push_str(&fraction[..dscale]);
        }
        Ok(Numeric(text))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

impl ToSql for Numeric {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let (negative, unsigned) = match self.0.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, self.0.as_str()),
        };
        let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(format!("not a decimal: {:?}", self.0).into());
        }
        let int = int.trim_start_matches('0');
        // Pad both parts to whole base-10000 groups around the decimal point.
        let int_pad = (4 - int.len() % 4) % 4;
        let frac_pad = (4 - frac.len() % 4) % 4;
        let all = format!("{}{int}{frac}{}", "0".repeat(int_pad), "0".repeat(frac_pad));
        let mut groups: Vec<u16> = all
            .as_bytes()
            .chunks(4)
            .map(|c| c.iter().fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0')))
            .collect();
        let mut weight = i16::try_from((int.len() + int_pad) / 4).map_err(|_| "too long")? - 1;
        while groups.first() == Some(&0) {
            groups.remove(0);
            weight -= 1;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        let ndigits = u16::try_from(groups.len()).map_err(|_| "too long")?;
        let dscale = u16::try_from(frac.len()).map_err(|_| "too long")?;
        let sign = if negative && !groups.is_empty() {
            NUMERIC_NEG
        } else {
            0
        };
        for word in [ndigits, weight as u16, sign, dscale]
            .into_iter()
            .chain(groups)
        {
            out.extend_from_slice(&word.to_be_bytes());
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

/// `interval` in Postgres's binary format.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Interval {
    months: i32,
    days: i32,
    micros: i64,
}

impl<'a> FromSql<'a> for Interval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Interval, BoxError> {
        let raw: [u8; 16] = raw.try_into().map_err(|_| "interval is not 16 bytes")?;
        let micros = i64::from_be_bytes(raw[0..8].try_into()?);
        let days = i32::from_be_bytes(raw[8..12].try_into()?);
        let months = i32::from_be_bytes(raw[12..16].try_into()?);
        Ok(Interval {
            months,
            days,
            micros,
        })
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

impl ToSql for Interval {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.extend_from_slice(&self.micros.to_be_bytes());
        out.extend_from_slice(&self.days.to_be_bytes());
        out.extend_from_slice(&self.months.to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }

    to_sql_checked!();
}

fn db_code(err: &tokio_postgres::Error) -> Option<&str> {
    err.code().map(SqlState::code)
}

/// On Linux with glibc the server re-executes itself with huge pages for
/// its heap: the process the test started (same PID) serves queries and
/// carries the tunable, unless the environment already chose one.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_server_runs_with_a_huge_page_heap_under_its_own_pid() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let pid = server.pid().context("server has no pid")?;
    let mut conn = RawConn::connect(server.addr())?;
    conn.send_startup(&[("user", "eddy"), ("database", "eddy")])?;
    conn.read_until_ready()?;
    let reply = conn.query("SELECT 40 + 2")?;
    assert_eq!(data_rows(&reply), vec![vec![Some("42".to_string())]]);
    let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
    let tunables: Vec<String> = environ
        .split(|b| *b == 0)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .filter_map(|v| v.strip_prefix("GLIBC_TUNABLES="))
        .map(str::to_string)
        .collect();
    let reexecuted = environ
        .split(|b| *b == 0)
        .any(|v| v == b"EDDYDB_REEXECUTED=1");
    let ours = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if ours.contains("glibc.malloc.hugetlb") {
        assert!(
            !reexecuted,
            "the environment already chose: no re-execution"
        );
    } else {
        assert!(reexecuted, "the server must re-execute itself once, marked");
        // glibc rewrites the variable in place as it parses it, so /proc
        // shows only its first tunable: the added one only when it is alone.
        if ours.is_empty() {
            assert_eq!(tunables, vec!["glibc.malloc.hugetlb=1".to_string()]);
        }
    }
    conn.send(b'X', &[])?;
    Ok(())
}

#[test]
fn ssl_request_is_declined_then_startup_works() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let mut conn = RawConn::connect(server.addr())?;
    assert_eq!(conn.ssl_request()?, b'N', "SSLRequest must be declined");
    conn.send_startup(&[("user", "eddy"), ("database", "eddy")])?;
    let startup = conn.read_until_ready()?;
    assert_eq!(startup[0].tag, b'R', "{startup:?}");
    assert_eq!(startup[0].body, 0i32.to_be_bytes(), "AuthenticationOk");
    assert!(startup.iter().any(|m| m.tag == b'K'), "no BackendKeyData");
    let reply = conn.query("SELECT 1 + 1")?;
    let tags: Vec<u8> = reply.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"TDCZ", "{reply:?}");
    assert_eq!(data_rows(&reply), vec![vec![Some("2".to_string())]]);
    assert_eq!(reply[2].body, b"SELECT 1\0");
    conn.send(b'X', &[])?;
    Ok(())
}

#[test]
fn startup_and_set_report_parameter_status() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let extra = [
        ("application_name", "raw probe"),
        ("client_encoding", "UTF8"),
    ];
    let (mut conn, startup) = RawConn::startup(server.addr(), &extra)?;
    let params = parameters(&startup);
    let get = |name: &str| params.get(name).cloned().unwrap_or_default();
    assert!(
        get("server_version").starts_with(|c: char| c.is_ascii_digit()),
        "server_version {:?}",
        get("server_version")
    );
    assert_eq!(get("client_encoding"), "UTF8");
    assert!(
        get("DateStyle").starts_with("ISO"),
        "DateStyle {:?}",
        get("DateStyle")
    );
    assert_eq!(get("integer_datetimes"), "on");
    assert_eq!(get("standard_conforming_strings"), "on");
    assert!(!get("TimeZone").is_empty(), "no TimeZone in {params:?}");
    assert_eq!(get("application_name"), "raw probe");

    // Drivers track these through the ParameterStatus sent after a SET.
    for (sql, name, value) in [
        (
            "SET application_name = 'renamed'",
            "application_name",
            "renamed",
        ),
        ("SET TimeZone = 'Europe/Paris'", "TimeZone", "Europe/Paris"),
        ("SET DateStyle = 'ISO, DMY'", "DateStyle", "ISO, DMY"),
    ] {
        let reply = conn.query(sql)?;
        assert_eq!(first_error(&reply).map(|e| e.fields()), None, "{sql}");
        let reported = parameters(&reply);
        assert_eq!(
            reported.get(name).map(String::as_str),
            Some(value),
            "{sql}: {reply:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_reads_parameters_and_settings() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let (client, connection) = server.pg_config().connect(NoTls).await?;
    for (name, expected) in [
        ("client_encoding", Some("UTF8")),
        ("integer_datetimes", Some("on")),
        ("standard_conforming_strings", Some("on")),
    ] {
        assert_eq!(connection.parameter(name), expected, "{name}");
    }
    assert!(connection.parameter("server_version").is_some());
    assert!(connection.parameter("TimeZone").is_some());
    tokio::spawn(connection);
    for (set, show, expected) in [
        (
            "SET client_encoding = 'UTF8'",
            "SHOW client_encoding",
            "UTF8",
        ),
        ("SET DateStyle = 'ISO, MDY'", "SHOW DateStyle", "ISO, MDY"),
        (
            "SET TimeZone = 'Europe/Berlin'",
            "SHOW TimeZone",
            "Europe/Berlin",
        ),
        (
            "SET application_name = 'proto test'",
            "SHOW application_name",
            "proto test",
        ),
    ] {
        client
            .batch_execute(set)
            .await
            .with_context(|| set.to_string())?;
        let row = client
            .query_one(show, &[])
            .await
            .with_context(|| show.to_string())?;
        assert_eq!(row.get::<_, String>(0), expected, "{show}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_is_3d000() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let mut config = server.pg_config();
    config.dbname("nope");
    let err = match config.connect(NoTls).await {
        Ok(_) => bail!("connecting to database \"nope\" succeeded"),
        Err(err) => err,
    };
    assert_eq!(db_code(&err), Some("3D000"), "{err}");
    let db = err.as_db_error().context("not a server error")?;
    assert_eq!(db.severity(), "FATAL");
    assert_eq!(db.message(), "database \"nope\" does not exist");
    // The server still accepts the right database.
    server.connect().await?.simple_query("SELECT 1").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syntax_errors_carry_a_position() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    for (sql, position) in [("SELEC 1", 1), ("SELECT 1 FROM FROM", 15)] {
        for extended in [false, true] {
            let err = if extended {
                client.prepare(sql).await.err()
            } else {
                client.simple_query(sql).await.err()
            }
            .with_context(|| format!("{sql:?} succeeded"))?;
            let db = err.as_db_error().with_context(|| format!("{err}"))?;
            assert_eq!(db.code(), &SqlState::SYNTAX_ERROR, "{sql}: {db}");
            assert_eq!(
                db.position(),
                Some(&ErrorPosition::Original(position)),
                "{sql} (extended: {extended}): {db}"
            );
        }
    }
    Ok(())
}

const TYPED_DDL: &str = "CREATE TABLE typed (id int PRIMARY KEY, i2 smallint, i4 int, \
    i8 bigint, f4 real, f8 double precision, b boolean, t text, v varchar(20), d date, \
    ts timestamp, tz timestamptz, n numeric(12,3), iv interval, j jsonb)";

/// The declared types of `typed`, in column order.
const TYPED_TYPES: [Type; 15] = [
    Type::INT4,
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::FLOAT4,
    Type::FLOAT8,
    Type::BOOL,
    Type::TEXT,
    Type::VARCHAR,
    Type::DATE,
    Type::TIMESTAMP,
    Type::TIMESTAMPTZ,
    Type::NUMERIC,
    Type::INTERVAL,
    Type::JSONB,
];

/// One row of `typed` as Rust values.
#[derive(Debug, PartialEq)]
struct Typed {
    i2: i16,
    i4: i32,
    i8: i64,
    f4: f32,
    f8: f64,
    b: bool,
    t: String,
    v: String,
    d: NaiveDate,
    ts: NaiveDateTime,
    tz: DateTime<Utc>,
    n: Numeric,
    iv: Interval,
    j: serde_json::Value,
}

fn sample_row() -> anyhow::Result<Typed> {
    let d = NaiveDate::from_ymd_opt(2024, 2, 29).context("date")?;
    let ts = d.and_hms_micro_opt(13, 45, 1, 123_456).context("time")?;
    let tz = NaiveDate::from_ymd_opt(1999, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .context("timestamptz")?
        .and_utc();
    Ok(Typed {
        i2: -12345,
        i4: 2_000_000_000,
        // Beyond f64's exact integers, so a detour through floats shows.
        i8: 9_007_199_254_740_993,
        f4: 1.25,
        f8: -2.5e-300,
        b: true,
        t: "héllo\tworld".to_string(),
        v: "varchar ✓".to_string(),
        d,
        ts,
        tz,
        n: Numeric("-12345678.125".to_string()),
        iv: Interval {
            months: 14,
            days: 3,
            micros: 4_005_006_007,
        },
        j: serde_json::json!({"a": [1, 2, {"b": null}], "c": "d"}),
    })
}

fn typed_params(row: &Typed) -> [&(dyn ToSql + Sync); 14] {
    [
        &row.i2, &row.i4, &row.i8, &row.f4, &row.f8, &row.b, &row.t, &row.v, &row.d, &row.ts,
        &row.tz, &row.n, &row.iv, &row.j,
    ]
}

fn typed_from_row(row: &tokio_postgres::Row, first: usize) -> anyhow::Result<Typed> {
    Ok(Typed {
        i2: row.try_get(first)?,
        i4: row.try_get(first + 1)?,
        i8: row.try_get(first + 2)?,
        f4: row.try_get(first + 3)?,
        f8: row.try_get(first + 4)?,
        b: row.try_get(first + 5)?,
        t: row.try_get(first + 6)?,
        v: row.try_get(first + 7)?,
        d: row.try_get(first + 8)?,
        ts: row.try_get(first + 9)?,
        tz: row.try_get(first + 10)?,
        n: row.try_get(first + 11)?,
        iv: row.try_get(first + 12)?,
        j: row.try_get(first + 13)?,
    })
}

/// For each value column of a `typed` row: whether it decoded as NULL.
fn typed_nulls(row: &tokio_postgres::Row) -> anyhow::Result<[bool; 14]> {
    Ok([
        row.try_get::<_, Option<i16>>(1)?.is_none(),
        row.try_get::<_, Option<i32>>(2)?.is_none(),
        row.try_get::<_, Option<i64>>(3)?.is_none(),
        row.try_get::<_, Option<f32>>(4)?.is_none(),
        row.try_get::<_, Option<f64>>(5)?.is_none(),
        row.try_get::<_, Option<bool>>(6)?.is_none(),
        row.try_get::<_, Option<String>>(7)?.is_none(),
        row.try_get::<_, Option<String>>(8)?.is_none(),
        row.try_get::<_, Option<NaiveDate>>(9)?.is_none(),
        row.try_get::<_, Option<NaiveDateTime>>(10)?.is_none(),
        row.try_get::<_, Option<DateTime<Utc>>>(11)?.is_none(),
        row.try_get::<_, Option<Numeric>>(12)?.is_none(),
        row.try_get::<_, Option<Interval>>(13)?.is_none(),
        row.try_get::<_, Option<serde_json::Value>>(14)?.is_none(),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_binary_round_trip() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client.batch_execute(TYPED_DDL).await?;
    let insert = client
        .prepare("INSERT INTO typed VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)")
        .await?;
    assert_eq!(
        insert.params(),
        TYPED_TYPES,
        "parameter types inferred from the columns"
    );
    let sample = sample_row()?;
    let id = 1i32;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id];
    params.extend(typed_params(&sample));
    assert_eq!(client.execute(&insert, &params).await?, 1);
    let nulls: [&(dyn ToSql + Sync); 15] = [
        &2i32,
        &None::<i16>,
        &None::<i32>,
        &None::<i64>,
        &None::<f32>,
        &None::<f64>,
        &None::<bool>,
        &None::<String>,
        &None::<String>,
        &None::<NaiveDate>,
        &None::<NaiveDateTime>,
        &None::<DateTime<Utc>>,
        &None::<Numeric>,
        &None::<Interval>,
        &None::<serde_json::Value>,
    ];
    assert_eq!(client.execute(&insert, &nulls).await?, 1);

    let select = client.prepare("SELECT * FROM typed WHERE id = $1").await?;
    let column_types: Vec<Type> = select.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(column_types, TYPED_TYPES);
    assert_eq!(select.params(), [Type::INT4]);
    let row = client.query_one(&select, &[&1i32]).await?;
    assert_eq!(typed_from_row(&row, 1)?, sample);

    let empty = client.query_one(&select, &[&2i32]).await?;
    assert_eq!(typed_nulls(&empty)?, [true; 14], "row of NULLs");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_parameters_with_casts() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    let sample = sample_row()?;
    let row = client
        .query_one(
            "SELECT $1::int2, $2::int4, $3::int8, $4::float4, $5::float8, $6::bool, $7::text, \
             $8::varchar, $9::date, $10::timestamp, $11::timestamptz, $12::numeric(20,3), \
             $13::interval, $14::jsonb",
            &typed_params(&sample),
        )
        .await?;
    // An unconstrained numeric has scale 10 in EddyDB (docs/sql.md), so the
    // sample's scale is stated.
    assert_eq!(typed_from_row(&row, 0)?, sample);

    // Decoding checked against the server's own text input and output.
    let row = client
        .query_one(
            "SELECT '0.5'::numeric(12,3), '-0.0001'::numeric(10,4), '10000'::numeric(10,0), \
             '1 year 2 mons 3 days 04:05:06.007'::interval, $1::numeric(20,4)::text",
            &[&Numeric("-1000.0500".to_string())],
        )
        .await?;
    assert_eq!(row.get::<_, Numeric>(0), Numeric("0.500".to_string()));
    assert_eq!(row.get::<_, Numeric>(1), Numeric("-0.0001".to_string()));
    assert_eq!(row.get::<_, Numeric>(2), Numeric("10000".to_string()));
    assert_eq!(
        row.get::<_, Interval>(3),
        Interval {
            months: 14,
            days: 3,
            micros: 14_706_007_000
        }
    );
    assert_eq!(row.get::<_, String>(4), "-1000.0500");
    Ok(())
}

/// Checks that an existing session and a new one both still work.
async fn assert_still_serving(
    server: &TestServer,
    existing: &tokio_postgres::Client,
) -> anyhow::Result<()> {
    let count: i64 = existing
        .query_one("SELECT count(*) FROM t", &[])
        .await?
        .get(0);
    assert_eq!(count, 3, "existing session");
    let fresh = server.connect().await?;
    let count: i64 = fresh.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
    assert_eq!(count, 3, "new session");
    Ok(())
}

async fn server_with_table(
    options: ServerOptions,
) -> anyhow::Result<(TestServer, tokio_postgres::Client)> {
    let server = TestServer::start_with(options)?;
    let client = server.connect().await?;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3)")
        .await?;
    Ok((server, client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_query_do_not_disturb_others() -> anyhow::Result<()> {
    let (server, client) = server_with_table(ServerOptions::default()).await?;
    let addr = server.addr();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        // Gone while its query runs.
        let (mut running, _) = RawConn::startup(addr, &[])?;
        running.send_query("SELECT count(*) FROM generate_series(1, 10000000)")?;
        running.abort();
        // Gone half way through sending a message.
        let (mut partial, _) = RawConn::startup(addr, &[])?;
        partial.send_raw(&[b'Q', 0, 0, 0, 100, b'S', b'E', b'L'])?;
        partial.abort();
        // Gone half way through the startup packet.
        let mut early = RawConn::connect(addr)?;
        early.send_raw(&[0, 0, 0, 40, 0, 3])?;
        early.abort();
        Ok(())
    })
    .await??;
    assert_still_serving(&server, &client).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_close_only_their_connection() -> anyhow::Result<()> {
    let (server, client) = server_with_table(ServerOptions::default()).await?;
    let addr = server.addr();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        // An unknown message type after startup.
        let (mut bad_type, _) = RawConn::startup(addr, &[])?;
        bad_type.send(b'?', b"garbage")?;
        expect_protocol_violation(bad_type.read_until_closed()?, "unknown message type")?;
        // A length that cannot be (less than the length field itself).
        let (mut bad_len, _) = RawConn::startup(addr, &[])?;
        bad_len.send_raw(&[b'Q', 0xff, 0xff, 0xff, 0xfe, 0, 0])?;
        expect_protocol_violation(bad_len.read_until_closed()?, "negative length")?;
        // Text that is not a startup packet at all.
        let mut http = RawConn::connect(addr)?;
        http.send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        http.read_until_closed()?;
        Ok(())
    })
    .await??;
    assert_still_serving(&server, &client).await
}

/// The server may say why before closing; if it does, it is 08P01.
fn expect_protocol_violation(reply: Vec<wire::Message>, what: &str) -> anyhow::Result<()> {
    if let Some(err) = first_error(&reply) {
        assert_eq!(
            err.sqlstate().as_deref(),
            Some("08P01"),
            "{what}: {:?}",
            err.fields()
        );
    }
    Ok(())
}

const MESSAGE_LIMIT: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_gets_54000_and_is_closed() -> anyhow::Result<()> {
    let options = ServerOptions {
        max_message_bytes: Some(MESSAGE_LIMIT),
        ..ServerOptions::default()
    };
    let (server, client) = server_with_table(options).await?;
    let addr = server.addr();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let (mut conn, _) = RawConn::startup(addr, &[])?;
        // Only the header: the server must refuse on the length alone.
        let len = u32::try_from(2 * MESSAGE_LIMIT + 4)?;
        let mut header = vec![b'Q'];
        header.extend_from_slice(&len.to_be_bytes());
        conn.send_raw(&header)?;
        let reply = conn.read_until_closed()?;
        let err = first_error(&reply).context("no ErrorResponse before the close")?;
        assert_eq!(
            err.sqlstate().as_deref(),
            Some("54000"),
            "{:?}",
            err.fields()
        );

        // A message just under the limit is fine.
        let (mut conn, _) = RawConn::startup(addr, &[])?;
        let literal = "x".repeat(900_000);
        let reply = conn.query(&format!("SELECT length('{literal}')"))?;
        assert_eq!(data_rows(&reply), vec![vec![Some("900000".to_string())]]);
        Ok(())
    })
    .await??;
    assert_still_serving(&server, &client).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_get_53300() -> anyhow::Result<()> {
    let options = ServerOptions {
        max_connections: Some(3),
        ..ServerOptions::default()
    };
    let (server, first) = server_with_table(options).await?;
    let mut sessions = vec![first, server.connect().await?, server.connect().await?];
    for _ in 0..2 {
        match server.pg_config().connect(NoTls).await {
            Ok(_) => bail!("a fourth connection was accepted with --max-connections 3"),
            Err(err) => assert_eq!(db_code(&err), Some("53300"), "{err}"),
        }
    }
    for session in &sessions {
        let count: i64 = session
            .query_one("SELECT count(*) FROM t", &[])
            .await?
            .get(0);
        assert_eq!(count, 3);
    }
    // A closed session frees its slot once the server sees the close, so
    // the next connect is retried only while it still says 53300.
    drop(sessions.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match server.pg_config().connect(NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client.simple_query("SELECT 1").await?;
                break;
            }
            Err(err) if db_code(&err) == Some("53300") && Instant::now() < deadline => {}
            Err(err) => bail!("slot of a closed session not freed: {err}"),
        }
    }
    Ok(())
}

/// Far more work than any test waits for; only a cancel ends it early.
const ENDLESS_QUERY: &str =
    "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_stops_a_long_query_with_57014() -> anyhow::Result<()> {
    let (_server, client) = server_with_table(ServerOptions::default()).await?;
    let token = client.cancel_token();
    let mut query = tokio::spawn(async move {
        let result = client.simple_query(ENDLESS_QUERY).await;
        (client, result)
    });
    // A cancel that arrives before the query starts has nothing to cancel,
    // so it is repeated until the query ends.
    let mut retry = tokio::time::interval(Duration::from_millis(200));
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(deadline);
    let (client, result) = loop {
        tokio::select! {
            done = &mut query => break done?,
            _ = retry.tick() => token
                .cancel_query(NoTls)
                .await
                .context("sending a CancelRequest (drivers report this error to the user)")?,
            _ = &mut deadline => bail!("the query was not cancelled within 60 s"),
        }
    };
    let err = match result {
        Ok(_) => bail!("the endless query completed"),
        Err(err) => err,
    };
    assert_eq!(db_code(&err), Some("57014"), "{err}");
    // The session outlives its cancelled query.
    let count: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await?
        .get(0);
    assert_eq!(count, 3);
    Ok(())
}

/// Result column types a typed driver (tokio-postgres `get::<i32>`, JDBC
/// metadata) relies on, as PostgreSQL reports them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_types_match_postgres() -> anyhow::Result<()> {
    let (_server, client) = server_with_table(ServerOptions::default()).await?;
    client
        .batch_execute("CREATE TABLE m (i2 smallint, i4 int, i8 bigint, f4 real, n numeric(6,2))")
        .await?;
    let mut mismatches = Vec::new();
    for (sql, expected) in [
        // Known differences, listed in docs/sql.md: integer literals are
        // bigint (so `SELECT 1`, `id * 2`, `i4 / 2` are int8), avg() is
        // double precision, sum(bigint) is bigint, real * 2 stays real.
        ("SELECT 3000000000", Type::INT8),
        ("SELECT 1.5", Type::NUMERIC),
        ("SELECT 'text'", Type::TEXT),
        ("SELECT true", Type::BOOL),
        ("SELECT count(*) FROM t", Type::INT8),
        ("SELECT id FROM t", Type::INT4),
        ("SELECT sum(id) FROM t", Type::INT8),
        ("SELECT max(id) FROM t", Type::INT4),
        ("SELECT i2 + i2 FROM m", Type::INT2),
        ("SELECT i2 + i4 FROM m", Type::INT4),
        ("SELECT i4 + i8 FROM m", Type::INT8),
        ("SELECT n * 2 FROM m", Type::NUMERIC),
        ("SELECT i4 / i4 FROM m", Type::INT4),
        ("SELECT 'a' || i4 FROM m", Type::TEXT),
        ("SELECT now()", Type::TIMESTAMPTZ),
        ("SELECT DATE '2024-01-01'", Type::DATE),
    ] {
        let stmt = client.prepare(sql).await.with_context(|| sql.to_string())?;
        let got: Vec<&Type> = stmt.columns().iter().map(|c| c.type_()).collect();
        if got != [&expected] {
            mismatches.push(format!("{sql}: {got:?}, PostgreSQL says {expected}"));
        }
    }
    // All of them at once: one run shows every type to fix.
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    Ok(())
}
