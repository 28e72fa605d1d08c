//! Kafka sources end to end: a real Kafka-protocol broker (tansu, started
//! by the harness), records produced by a real client (Python
//! confluent-kafka), and EddyDB queried through the Postgres protocol.
//!
//! Covered: topic → source → view; bad records kept in
//! `eddy_catalog.source_errors` while the source runs on; a source that
//! stops at a bad record when told to; a Kafka-fed table resuming after
//! `kill -9` with no row lost or doubled; per-partition and source
//! watermarks with idle partitions; the broker stopped and restarted
//! mid-stream; an upsert table following a compacted topic; an unreachable
//! broker at CREATE; views over a topic that stay exact while the server is
//! killed with `kill -9` again and again as it consumes (checkpoints);
//! `ENCODE CSV` topics (quoting, NULLs, a delimiter, a header, bad records,
//! `max.message.bytes`) with exact per-partition status; `last_error`
//! showing bad records until broker trouble; `SHOW SOURCES` and
//! `DROP SOURCE`.

#[path = "support/kafka.rs"]
mod kafka;
#[path = "support/query.rs"]
mod query;
#[path = "support/server.rs"]
mod server;

use anyhow::ensure;
use kafka::{Broker, Record};
use query::{error_of, rows, value, wait_for, wait_until};
use server::{ServerOptions, TestServer};

/// A JSON event `{"id": id, "k": "k<id % 5>", "v": id, "ts": ...}`, its time
/// `id` seconds after 2026-01-01 00:00:00 UTC.
fn event(id: u64) -> Vec<u8> {
    let ts = chrono::DateTime::from_timestamp(1_767_225_600 + id as i64, 0)
        .expect("valid time")
        .to_rfc3339();
    format!(
        r#"{{"id": {id}, "k": "k{}", "v": {id}, "ts": "{ts}"}}"#,
        id % 5
    )
    .into_bytes()
}

fn events(ids: std::ops::Range<u64>, partitions: i32) -> Vec<Record> {
    ids.map(|id| Record::value(event(id)).in_partition((id % partitions as u64) as i32))
        .collect()
}

fn source_sql(name: &str, topic: &str, broker: &Broker, extra: &str) -> String {
    format!(
        "CREATE SOURCE {name} (id bigint, k varchar, v bigint, ts timestamptz, \
            WATERMARK FOR ts AS ts - INTERVAL '10 seconds') \
         INCLUDE partition AS part INCLUDE offset AS off \
         WITH (connector = 'kafka', topic = '{topic}', \
               properties.bootstrap.server = '{}'{extra}) \
         FORMAT PLAIN ENCODE JSON",
        broker.bootstrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_feeds_a_view_and_bad_records_are_kept_apart() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("events", 3)?;
    broker.produce("events", &events(0..900, 3))?;
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "{};
             CREATE MATERIALIZED VIEW per_k AS
                SELECT k, count(*) AS n, sum(v) AS s FROM events GROUP BY k;
             CREATE MATERIALIZED VIEW per_part AS
                SELECT part, count(*) AS n, max(off) AS last FROM events GROUP BY part;",
            source_sql("events", "events", &broker, "")
        ))
        .await?;
    wait_for(&client, "SELECT sum(n) FROM per_k", "900").await?;
    assert_eq!(
        value(&client, "SELECT sum(s) FROM per_k").await?,
        (0..900u64).sum::<u64>().to_string()
    );
    // 300 per partition, offsets 0..=299, read by the second view's own reader.
    wait_for(&client, "SELECT sum(n) FROM per_part", "900").await?;
    assert_eq!(
        rows(&client, "SELECT * FROM per_part").await?,
        vec!["0|300|299", "1|300|299", "2|300|299"]
    );

    // Bad records among good ones: the source keeps running.
    let bad: Vec<Record> = vec![
        Record::value(b"{not json".to_vec()).in_partition(0),
        Record::value(br#"{"id": 1, "k": "x", "ts": "2026-01-01T00:00:00Z"}"#.to_vec())
            .in_partition(1),
        Record::value(
            br#"{"id": "seven", "k": "x", "v": 1, "ts": "2026-01-01T00:00:00Z"}"#.to_vec(),
        )
        .in_partition(2),
    ];
    broker.produce("events", &bad)?;
    broker.produce("events", &events(900..1200, 3))?;
    wait_for(&client, "SELECT sum(n) FROM per_k", "1200").await?;
    let errors = rows(
        &client,
        "SELECT partition, \"offset\", payload FROM eddy_catalog.source_errors \
         WHERE feeds = 'per_k'",
    )
    .await?;
    assert_eq!(
        errors,
        vec![
            "0|300|{not json".to_string(),
            r#"1|300|{"id": 1, "k": "x", "ts": "2026-01-01T00:00:00Z"}"#.to_string(),
            r#"2|300|{"id": "seven", "k": "x", "v": 1, "ts": "2026-01-01T00:00:00Z"}"#.to_string(),
        ]
    );
    let reasons = rows(
        &client,
        "SELECT reason FROM eddy_catalog.source_errors WHERE feeds = 'per_k'",
    )
    .await?;
    ensure!(reasons.iter().any(|r| r.contains("\"v\"")), "{reasons:?}");
    ensure!(reasons.iter().any(|r| r.contains("\"id\"")), "{reasons:?}");
    // Status: every partition read to its end, one bad record each (the
    // high watermark is refreshed about once a second: wait for it).
    wait_for(
        &client,
        "SELECT string_agg(concat_ws('|', partition, \"offset\", high_watermark, lag, \
                bad_records, status), ',' ORDER BY partition) \
         FROM eddy_catalog.source_partitions WHERE feeds = 'per_k'",
        "0|401|401|0|1|running,1|401|401|0|1|running,2|401|401|0|1|running",
    )
    .await?;
    // SELECT straight from the source is refused with a hint.
    let (code, _, hint) = error_of(&client, "SELECT * FROM events").await?;
    assert_eq!(code, "42809");
    ensure!(hint.is_some());

    // With bad.record.action = 'stop' the reader stops at the first one.
    client
        .batch_execute(&format!(
            "{};
             CREATE MATERIALIZED VIEW strict_n AS SELECT count(*) AS n FROM strict;",
            source_sql("strict", "events", &broker, ", bad.record.action = 'stop'")
        ))
        .await?;
    let status = wait_until(
        &client,
        "SELECT min(status) FROM eddy_catalog.source_partitions WHERE feeds = 'strict_n'",
        |s| s.starts_with("stopped"),
    )
    .await?;
    ensure!(status.contains("bad record"), "{status}");
    Ok(())
}

/// The status of a view's reader, one partition per `;`-separated entry:
/// `partition|offset|high_watermark|lag|rows|bad_records|last_error|status`.
fn partitions_of(view: &str) -> String {
    format!(
        "SELECT string_agg(concat_ws('|', partition, \"offset\", high_watermark, lag, rows, \
                bad_records, coalesce(last_error, '-'), status), ';' ORDER BY partition) \
         FROM eddy_catalog.source_partitions WHERE feeds = '{view}'"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_topics_feed_views_with_bad_records_kept_apart() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("orders", 2)?;
    broker.create_topic("semi", 2)?;
    let at = |partition: i32, line: &str| {
        Record::value(line.as_bytes().to_vec()).in_partition(partition)
    };
    let oversized = format!("6,{},60", "x".repeat(70));
    broker.produce(
        "orders",
        &[
            at(0, r#"1,"Smith, John",10"#),
            at(0, "2,,20"),
            at(0, r#"3,"",30"#),
            at(0, "x,bad,1"),
            at(1, r#"4,"a ""quoted"", name",40"#),
            at(1, "5,five,50,extra"),
            at(1, &oversized),
            at(1, "7,\"two\nlines\",70"),
        ],
    )?;
    // With a header: the message at offset 0 of each partition is skipped,
    // whatever it holds (partition 1 has no header: its first row is lost).
    broker.produce(
        "semi",
        &[
            at(0, "id;name;qty"),
            at(0, r#"1;"Smith; John";10"#),
            at(0, "2;a,b;20"),
            at(1, "3;x;30"),
            at(1, "4;y;40"),
        ],
    )?;
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE SOURCE orders (id integer, name varchar, qty bigint) \
               INCLUDE partition AS part INCLUDE offset AS off \
               WITH (connector = 'kafka', topic = 'orders', \
                     properties.bootstrap.server = '{b}', max.message.bytes = '64') \
               FORMAT PLAIN ENCODE CSV;
             CREATE MATERIALIZED VIEW orders_v AS SELECT id, name, qty, part, off FROM orders;
             CREATE SOURCE semi (id integer, name varchar, qty bigint) \
               WITH (connector = 'kafka', topic = 'semi', properties.bootstrap.server = '{b}') \
               FORMAT PLAIN ENCODE CSV (delimiter = ';', without_header = 'false');
             CREATE MATERIALIZED VIEW semi_v AS SELECT * FROM semi;",
            b = broker.bootstrap()
        ))
        .await?;
    wait_for(&client, "SELECT count(*) FROM orders_v", "5").await?;
    wait_for(
        &client,
        "SELECT count(*) FROM eddy_catalog.source_errors WHERE feeds = 'orders_v'",
        "3",
    )
    .await?;
    // The source goes on after its bad records.
    broker.produce("orders", &[at(0, "8,after,80"), at(1, "9,after,90")])?;
    wait_for(&client, "SELECT count(*) FROM orders_v", "7").await?;
    assert_eq!(
        rows(&client, "SELECT * FROM orders_v").await?,
        vec![
            "1|Smith, John|10|0|0",
            "2|NULL|20|0|1",
            "3||30|0|2",
            "4|a \"quoted\", name|40|1|0",
            "7|two\nlines|70|1|3",
            "8|after|80|0|4",
            "9|after|90|1|4",
        ]
    );
    assert_eq!(
        rows(
            &client,
            "SELECT name IS NULL FROM orders_v WHERE id IN (2, 3)"
        )
        .await?,
        vec!["f", "t"]
    );
    let too_large = "message of 75 bytes exceeds the 64-byte limit";
    assert_eq!(
        rows(
            &client,
            "SELECT source, partition, \"offset\", reason, payload \
             FROM eddy_catalog.source_errors WHERE feeds = 'orders_v'",
        )
        .await?,
        vec![
            r#"orders|0|3|field "id": invalid input syntax for type integer: "x"|x,bad,1"#
                .to_string(),
            "orders|1|1|extra data after last expected column|5,five,50,extra".to_string(),
            format!("orders|1|2|{too_large}|{oversized}"),
        ]
    );
    // Positions, rows and bad records per partition are exact, the lag is 0
    // once the high watermark (refreshed about once a second) has caught up,
    // and the last error is the partition's latest bad record.
    wait_for(
        &client,
        &partitions_of("orders_v"),
        &format!(
            "0|5|5|0|4|1|bad record at offset 3: field \"id\": invalid input syntax for type \
             integer: \"x\"|running;\
             1|5|5|0|3|2|bad record at offset 2: {too_large}|running"
        ),
    )
    .await?;
    assert_eq!(
        value(
            &client,
            "SELECT count(events_per_second), min(events_per_second) >= 0 \
             FROM eddy_catalog.source_partitions WHERE feeds = 'orders_v'"
        )
        .await?,
        "2|t"
    );

    // The ';' source: quoted and unquoted fields, each partition's offset 0
    // skipped, no bad record.
    wait_for(&client, "SELECT count(*) FROM semi_v", "3").await?;
    assert_eq!(
        rows(&client, "SELECT * FROM semi_v").await?,
        vec!["1|Smith; John|10", "2|a,b|20", "4|y|40"]
    );
    wait_for(
        &client,
        &partitions_of("semi_v"),
        "0|3|3|0|2|0|-|running;1|2|2|0|1|0|-|running",
    )
    .await?;
    assert_eq!(
        value(
            &client,
            "SELECT count(*) FROM eddy_catalog.source_errors WHERE feeds = 'semi_v'"
        )
        .await?,
        "0"
    );
    Ok(())
}

/// `last_error` shows a partition's latest bad record until broker trouble
/// overrides it; once the broker is back it is clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_error_shows_bad_records_until_broker_trouble() -> anyhow::Result<()> {
    let mut broker = Broker::start()?;
    broker.create_topic("ev", 1)?;
    let mut records = events(0..3, 1);
    records.insert(1, Record::value(b"{not json".to_vec()).in_partition(0));
    broker.produce("ev", &records)?;
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "{};
             CREATE MATERIALIZED VIEW n AS SELECT count(*) AS n FROM ev;",
            source_sql("ev", "ev", &broker, "")
        ))
        .await?;
    wait_for(&client, "SELECT n FROM n", "3").await?;
    let last_error = "SELECT last_error FROM eddy_catalog.source_partitions WHERE feeds = 'n'";
    // The status is updated just after the rows are committed.
    let bad = wait_until(&client, last_error, |e| e.starts_with("bad record")).await?;
    let reason = value(
        &client,
        "SELECT reason FROM eddy_catalog.source_errors WHERE feeds = 'n'",
    )
    .await?;
    assert_eq!(bad, format!("bad record at offset 1: {reason}"));

    broker.stop()?;
    let trouble = wait_until(&client, last_error, |e| !e.starts_with("bad record")).await?;
    eprintln!("last_error while the broker is down: {trouble}");
    ensure!(
        trouble.contains("unreachable") || trouble.contains("retrying"),
        "{trouble}"
    );
    broker.restart()?;
    wait_for(
        &client,
        "SELECT concat_ws('|', coalesce(last_error, '-'), status) \
         FROM eddy_catalog.source_partitions WHERE feeds = 'n'",
        "-|running",
    )
    .await?;
    broker.produce("ev", &events(3..4, 1))?;
    wait_for(&client, "SELECT n FROM n", "4").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_sources_and_drop_source_of_a_kafka_source() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("events", 1)?;
    broker.produce("events", &events(0..10, 1))?;
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "{};
             CREATE SOURCE other (a int) WITH (connector = 'datagen', datagen.rows = '1');
             CREATE MATERIALIZED VIEW n AS SELECT count(*) AS n FROM events;",
            source_sql("events", "events", &broker, "")
        ))
        .await?;
    wait_for(&client, "SELECT n FROM n", "10").await?;
    assert_eq!(
        rows(&client, "SHOW SOURCES").await?,
        vec![
            "events|source|kafka|PLAIN JSON",
            "other|source|datagen|NULL"
        ]
    );

    // Refused while a view reads it, naming the view.
    let err = client
        .simple_query("DROP SOURCE events")
        .await
        .expect_err("DROP SOURCE with a dependent view");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "2BP01");
    assert_eq!(
        db.message(),
        "cannot drop source events because other objects depend on it"
    );
    assert_eq!(
        db.detail(),
        Some("materialized view n depends on source events")
    );
    ensure!(db.hint().is_some_and(|h| h.contains("CASCADE")));
    assert_eq!(value(&client, "SELECT n FROM n").await?, "10");
    ensure!(rows(&client, "SHOW SOURCES").await?.len() == 2);

    client
        .batch_execute("DROP MATERIALIZED VIEW n; DROP SOURCE events")
        .await?;
    assert_eq!(
        rows(&client, "SHOW SOURCES").await?,
        vec!["other|source|datagen|NULL"]
    );
    wait_for(
        &client,
        "SELECT count(*) FROM eddy_catalog.source_partitions WHERE source = 'events'",
        "0",
    )
    .await?;
    let (code, _, _) = error_of(&client, "DROP SOURCE events").await?;
    assert_eq!(code, "42P01");
    client.batch_execute("DROP SOURCE IF EXISTS events").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_table_resumes_after_kill_9_and_survives_a_broker_restart() -> anyhow::Result<()> {
    let mut broker = Broker::start()?;
    broker.create_topic("orders", 2)?;
    broker.produce("orders", &events(0..1000, 2))?;
    let mut server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE orders (id bigint, k varchar, v bigint, ts timestamptz) \
             WITH (connector = 'kafka', topic = 'orders', \
                   properties.bootstrap.server = '{}') \
             FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW order_count AS
                SELECT count(*) AS n, count(DISTINCT id) AS d FROM orders;",
            broker.bootstrap()
        ))
        .await?;
    wait_for(&client, "SELECT n, d FROM order_count", "1000|1000").await?;

    // kill -9 the server; more records arrive while it is down.
    drop(client);
    server.kill9()?;
    broker.produce("orders", &events(1000..1500, 2))?;
    server.restart()?;
    let client = server.connect().await?;
    wait_for(&client, "SELECT n, d FROM order_count", "1500|1500").await?;
    assert_eq!(
        value(
            &client,
            "SELECT count(*), count(DISTINCT id), max(id) FROM orders"
        )
        .await?,
        "1500|1500|1499"
    );

    // The broker goes away mid-stream: the status says so; nothing is lost.
    broker.stop()?;
    wait_until(
        &client,
        "SELECT max(status) FROM eddy_catalog.source_partitions WHERE feeds = 'orders'",
        |s| s.starts_with("retrying"),
    )
    .await?;
    assert_eq!(value(&client, "SELECT 1").await?, "1");
    broker.restart()?;
    broker.produce("orders", &events(1500..2000, 2))?;
    wait_for(&client, "SELECT n, d FROM order_count", "2000|2000").await?;
    wait_for(
        &client,
        "SELECT max(status) FROM eddy_catalog.source_partitions WHERE feeds = 'orders'",
        "running",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermarks_are_per_partition_and_idle_partitions_stop_holding_back() -> anyhow::Result<()>
{
    let broker = Broker::start()?;
    broker.create_topic("clicks", 2)?;
    // Partition 0 reaches event time 100 s, partition 1 only 40 s.
    let mut records: Vec<Record> = (0..=100)
        .map(|id| Record::value(event(id)).in_partition(0))
        .collect();
    records.extend((0..=40).map(|id| Record::value(event(id)).in_partition(1)));
    broker.produce("clicks", &records)?;
    let server = TestServer::start()?;
    let client = server.connect().await?;
    // Two sources over the topic: `clicks` lets a partition go idle after
    // 1.5 s of silence, `held` only after an hour, so its partitions stay
    // active for the whole test however slowly the machine runs it.
    client
        .batch_execute(&format!(
            "{};
             {};
             CREATE MATERIALIZED VIEW n AS SELECT count(*) AS n FROM clicks;
             CREATE MATERIALIZED VIEW held_n AS SELECT count(*) AS n FROM held;",
            source_sql(
                "clicks",
                "clicks",
                &broker,
                ", watermark.idle.timeout.ms = '1500'"
            ),
            source_sql(
                "held",
                "clicks",
                &broker,
                ", watermark.idle.timeout.ms = '3600000'"
            )
        ))
        .await?;
    wait_for(&client, "SELECT n FROM n", "142").await?;
    wait_for(&client, "SELECT n FROM held_n", "142").await?;
    // Watermark = largest ts - 10 s, per partition.
    assert_eq!(
        rows(
            &client,
            "SELECT source, partition, watermark FROM eddy_catalog.source_partitions \
             ORDER BY source, partition",
        )
        .await?,
        vec![
            "clicks|0|2026-01-01 00:01:30+00".to_string(),
            "clicks|1|2026-01-01 00:00:30+00".to_string(),
            "held|0|2026-01-01 00:01:30+00".to_string(),
            "held|1|2026-01-01 00:00:30+00".to_string()
        ]
    );
    // While both are active the source's watermark is the least.
    assert_eq!(
        value(
            &client,
            "SELECT DISTINCT source_watermark FROM eddy_catalog.source_partitions \
             WHERE source = 'held'"
        )
        .await?,
        "2026-01-01 00:00:30+00"
    );
    // Partition 0 goes on; partition 1 falls silent, and once it is idle it
    // no longer holds the source's watermark back.
    broker.produce(
        "clicks",
        &(101..=150)
            .map(|id| Record::value(event(id)).in_partition(0))
            .collect::<Vec<_>>(),
    )?;
    wait_for(&client, "SELECT n FROM n", "192").await?;
    wait_for(&client, "SELECT n FROM held_n", "192").await?;
    wait_for(
        &client,
        "SELECT DISTINCT source_watermark FROM eddy_catalog.source_partitions \
         WHERE source = 'clicks'",
        "2026-01-01 00:02:20+00",
    )
    .await?;
    assert_eq!(
        value(
            &client,
            "SELECT idle FROM eddy_catalog.source_partitions \
             WHERE source = 'clicks' AND partition = 1"
        )
        .await?,
        "t"
    );
    // Over the same data, `held`'s silent partition is not idle yet: it
    // still holds the watermark back.
    assert_eq!(
        rows(
            &client,
            "SELECT partition, idle, watermark, source_watermark \
             FROM eddy_catalog.source_partitions WHERE source = 'held' ORDER BY partition",
        )
        .await?,
        vec![
            "0|f|2026-01-01 00:02:20+00|2026-01-01 00:00:30+00".to_string(),
            "1|f|2026-01-01 00:00:30+00|2026-01-01 00:00:30+00".to_string()
        ]
    );
    // Both idle now: the watermark stays, it never goes back.
    wait_for(
        &client,
        "SELECT count(*) FILTER (WHERE idle) FROM eddy_catalog.source_partitions \
         WHERE source = 'clicks'",
        "2",
    )
    .await?;
    assert_eq!(
        value(
            &client,
            "SELECT DISTINCT source_watermark FROM eddy_catalog.source_partitions \
             WHERE source = 'clicks'"
        )
        .await?,
        "2026-01-01 00:02:20+00"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_table_follows_a_compacted_topic() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("users", 2)?;
    let user = |id: u64, city: &str| {
        Record::keyed(
            format!(r#"{{"id": {id}}}"#).into_bytes(),
            format!(r#"{{"id": {id}, "name": "u{id}", "city": "{city}"}}"#).into_bytes(),
        )
        .in_partition((id % 2) as i32)
    };
    broker.produce(
        "users",
        &[
            user(1, "Oslo"),
            user(2, "Lima"),
            user(3, "Pune"),
            user(4, "Kyiv"),
        ],
    )?;
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE users (id bigint PRIMARY KEY, name varchar, city varchar) \
             WITH (connector = 'kafka', topic = 'users', \
                   properties.bootstrap.server = '{}') \
             FORMAT UPSERT ENCODE JSON;
             CREATE MATERIALIZED VIEW per_city AS
                SELECT city, count(*) AS n FROM users GROUP BY city;",
            broker.bootstrap()
        ))
        .await?;
    wait_for(&client, "SELECT count(*) FROM users", "4").await?;
    // An update and a delete (tombstone) of existing keys.
    broker.produce(
        "users",
        &[
            user(2, "Oslo"),
            Record::tombstone(br#"{"id": 3}"#.to_vec()).in_partition(1),
            user(5, "Pune"),
        ],
    )?;
    wait_for(
        &client,
        "SELECT string_agg(id || ':' || city, ',' ORDER BY id) FROM users",
        "1:Oslo,2:Oslo,4:Kyiv,5:Pune",
    )
    .await?;
    assert_eq!(
        rows(&client, "SELECT * FROM per_city").await?,
        vec!["Kyiv|1", "Oslo|2", "Pune|1"]
    );
    // Served from the primary-key index like any table.
    assert_eq!(
        value(&client, "SELECT name FROM users WHERE id = 5").await?,
        "u5"
    );
    Ok(())
}

/// A context table kept by an upsert topic, joined with events from another
/// topic: the regular join follows every upsert and tombstone, past events
/// included; the lookup join decorates each event with the context as it
/// was when the event was read, and never rewrites it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_context_table_feeds_regular_and_lookup_joins() -> anyhow::Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("users", 2)?;
    broker.create_topic("clicks", 1)?;
    let user = |id: u64, city: &str| {
        Record::keyed(
            format!(r#"{{"id": {id}}}"#).into_bytes(),
            format!(r#"{{"id": {id}, "city": "{city}"}}"#).into_bytes(),
        )
        .in_partition((id % 2) as i32)
    };
    let click = |user: u64, n: u64| {
        Record::value(format!(r#"{{"user_id": {user}, "n": {n}}}"#).into_bytes())
    };
    broker.produce("users", &[user(1, "Oslo"), user(2, "Lima")])?;
    let server = TestServer::start()?;
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE users (id bigint PRIMARY KEY, city varchar) \
             WITH (connector = 'kafka', topic = 'users', properties.bootstrap.server = '{b}') \
             FORMAT UPSERT ENCODE JSON;
             CREATE SOURCE clicks (user_id bigint, n bigint) \
             WITH (connector = 'kafka', topic = 'clicks', properties.bootstrap.server = '{b}') \
             FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW joined AS SELECT c.n, u.city \
               FROM clicks c LEFT JOIN users u ON c.user_id = u.id;
             CREATE MATERIALIZED VIEW looked_up AS SELECT c.n, u.city \
               FROM clicks c LEFT JOIN users FOR SYSTEM_TIME AS OF PROCTIME() AS u \
               ON c.user_id = u.id;",
            b = broker.bootstrap()
        ))
        .await?;
    wait_for(&client, "SELECT count(*) FROM users", "2").await?;
    broker.produce("clicks", &[click(1, 1), click(2, 2), click(3, 3)])?;
    for view in ["joined", "looked_up"] {
        wait_for(&client, &format!("SELECT count(*) FROM {view}"), "3").await?;
        assert_eq!(
            rows(&client, &format!("SELECT * FROM {view}")).await?,
            vec!["1|Oslo", "2|Lima", "3|NULL"],
            "{view}"
        );
    }
    // An update, a tombstone and a new user.
    broker.produce(
        "users",
        &[
            user(2, "Kyiv"),
            Record::tombstone(br#"{"id": 1}"#.to_vec()).in_partition(1),
            user(3, "Pune"),
        ],
    )?;
    wait_for(
        &client,
        "SELECT string_agg(id || ':' || city, ',' ORDER BY id) FROM users",
        "2:Kyiv,3:Pune",
    )
    .await?;
    assert_eq!(
        rows(&client, "SELECT * FROM joined").await?,
        vec!["1|NULL", "2|Kyiv", "3|Pune"]
    );
    assert_eq!(
        rows(&client, "SELECT * FROM looked_up").await?,
        vec!["1|Oslo", "2|Lima", "3|NULL"]
    );
    // Later events see the new context in both.
    broker.produce("clicks", &[click(1, 4), click(2, 5), click(3, 6)])?;
    wait_for(&client, "SELECT count(*) FROM looked_up", "6").await?;
    assert_eq!(
        rows(&client, "SELECT * FROM looked_up WHERE n > 3").await?,
        vec!["4|NULL", "5|Kyiv", "6|Pune"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_fails_create_clearly() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let client = server.connect().await?;
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let sql = format!(
        "CREATE SOURCE nowhere (a int) WITH (connector = 'kafka', topic = 't', \
         properties.bootstrap.server = '127.0.0.1:{port}') FORMAT PLAIN ENCODE JSON"
    );
    let (code, message, hint) = error_of(&client, &sql).await?;
    assert_eq!(code, "08001", "{message}");
    ensure!(hint.is_some(), "{message}");
    assert!(rows(&client, "SHOW SOURCES").await?.is_empty());
    assert_eq!(value(&client, "SELECT 1").await?, "1");
    Ok(())
}

/// The crash test of checkpoints against a real broker: records are
/// produced in batches, and after each the server is killed with `kill -9`
/// at a random point of its progress (a seeded choice, printed), between
/// or during checkpoints, and restarted, once killed again while it
/// restores. Every view must then hold exactly what the produced records
/// give: nothing lost, nothing counted twice. (The expected rows are
/// computed here rather than by a second consumer: tansu 0.6 stops
/// answering new consumers after many clients died on it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_over_a_topic_are_exact_after_repeated_kill_9() -> anyhow::Result<()> {
    const BATCHES: u64 = 4;
    const PER_BATCH: u64 = 12_000;
    const TOTAL: u64 = BATCHES * PER_BATCH;
    let seed = match std::env::var("EDDYDB_CRASH_SEED") {
        Ok(seed) => seed.parse()?,
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos() as u64
                | 1
        }
    };
    eprintln!("kill points from EDDYDB_CRASH_SEED={seed}");
    let mut state = seed;
    let mut random = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };

    let broker = Broker::start()?;
    broker.create_topic("crash", 3)?;
    let mut server = TestServer::start_with(ServerOptions {
        checkpoint_interval: Some("200ms".into()),
        ..ServerOptions::default()
    })?;
    let client = server.connect().await?;
    // One view reads the topic; the others are views over it.
    client
        .batch_execute(&format!(
            "{};
             CREATE MATERIALIZED VIEW per_k AS
                SELECT k, part, count(*) AS n, sum(v) AS s, min(ts) AS first,
                       max(ts) AS last, max(off) AS off
                FROM ev GROUP BY k, part;
             CREATE MATERIALIZED VIEW total AS
                SELECT count(*) AS keys, sum(n) AS n, sum(s) AS s FROM per_k;
             CREATE MATERIALIZED VIEW top2 AS
                SELECT k, part, n FROM (SELECT k, part, n, row_number() OVER
                    (PARTITION BY k ORDER BY n DESC, part) AS rn FROM per_k) t
                WHERE rn <= 2;",
            source_sql("ev", "crash", &broker, "")
        ))
        .await?;
    drop(client);
    for b in 0..BATCHES {
        broker.produce("crash", &events(b * PER_BATCH..(b + 1) * PER_BATCH, 3))?;
        let at = b * PER_BATCH + 1 + random(PER_BATCH);
        let client = server.connect().await?;
        let reached = wait_until(&client, "SELECT n FROM total", |n| {
            n.parse::<u64>().is_ok_and(|n| n >= at)
        })
        .await;
        if let Err(e) = reached {
            let status = rows(&client, "SELECT * FROM eddy_catalog.source_partitions").await?;
            return Err(e.context(format!(
                "{status:#?}\n{}\n--- broker ---\n{}",
                server.log_tail(),
                broker.log_tail()
            )));
        }
        drop(client);
        server.kill9()?;
        server.restart()?;
        if b == 1 {
            server.kill9()?;
            server.restart()?;
        }
    }
    let client = server.connect().await?;
    wait_for(&client, "SELECT n FROM total", &TOTAL.to_string()).await?;
    for (view, expected) in expected_crash_views(TOTAL) {
        let mut got = rows(&client, &format!("SELECT * FROM {view}")).await?;
        got.sort();
        ensure!(
            got == expected,
            "{view} after kill -9 differs from the records produced:\n got {got:?}\n expected {expected:?}"
        );
    }
    ensure!(
        server.log_text().contains("recovered from checkpoint"),
        "no restart recovered from a checkpoint"
    );
    Ok(())
}

/// The rows of the crash test's views over events `0..total` (see
/// [`event`]), sorted: event `id` is in partition `id % 3` at offset
/// `id / 3`.
fn expected_crash_views(total: u64) -> Vec<(&'static str, Vec<String>)> {
    let time = |id: u64| {
        chrono::DateTime::from_timestamp(1_767_225_600 + id as i64, 0)
            .expect("valid time")
            .format("%Y-%m-%d %H:%M:%S+00")
            .to_string()
    };
    // (k, part) → (n, sum, first id, last id)
    let mut groups: std::collections::BTreeMap<(u64, u64), (u64, u64, u64, u64)> =
        std::collections::BTreeMap::new();
    for id in 0..total {
        let g = groups.entry((id % 5, id % 3)).or_insert((0, 0, id, id));
        g.0 += 1;
        g.1 += id;
        g.3 = id;
    }
    let mut per_k: Vec<String> = groups
        .iter()
        .map(|((k, part), (n, s, first, last))| {
            format!(
                "k{k}|{part}|{n}|{s}|{}|{}|{}",
                time(*first),
                time(*last),
                last / 3
            )
        })
        .collect();
    per_k.sort();
    let n: u64 = groups.values().map(|g| g.0).sum();
    let s: u64 = groups.values().map(|g| g.1).sum();
    let total_row = vec![format!("{}|{n}|{s}", groups.len())];
    let mut top2 = Vec::new();
    for k in 0..5 {
        let mut parts: Vec<(u64, u64)> = groups
            .iter()
            .filter(|((gk, _), _)| *gk == k)
            .map(|((_, part), g)| (g.0, *part))
            .collect();
        parts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        top2.extend(
            parts
                .iter()
                .take(2)
                .map(|(n, part)| format!("k{k}|{part}|{n}")),
        );
    }
    top2.sort();
    vec![("per_k", per_k), ("total", total_row), ("top2", top2)]
}
