//! EddyDB as a library: functions written in Rust by the embedding program
//! (`examples/embedded.rs`) work in ad-hoc queries and materialized views,
//! through the real protocol.

#[path = "../examples/embedded.rs"]
#[allow(dead_code)]
mod embedded;
#[path = "support/query.rs"]
mod query;

use anyhow::ensure;
use query::{rows, value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_of_the_embedding_program_work_in_views_and_queries() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("eddydb-embedded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = eddydb::config::Config::for_data_dir(&dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(eddydb::server::run_with(
        listener,
        config,
        embedded::extensions(),
        async move {
            let _ = stopped.await;
        },
    ));
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=eddy dbname=eddy"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);

    let oslo_paris = value(
        &client,
        "SELECT round(CAST(haversine_km(59.91, 10.75, 48.86, 2.35) AS numeric))",
    )
    .await?;
    ensure!(oslo_paris == "1341", "{oslo_paris}");
    client
        .batch_execute(
            "CREATE TABLE readings (id int PRIMARY KEY, sensor text, v double precision);
             INSERT INTO readings VALUES (1, 'a', 3), (2, 'a', 4), (3, 'b', 1), (4, 'b', NULL);
             CREATE MATERIALIZED VIEW levels AS
               SELECT sensor, rms(v) AS level, count(*) AS n FROM readings GROUP BY sensor;",
        )
        .await?;
    let levels = "SELECT sensor, round(CAST(level AS numeric), 4), n FROM levels";
    ensure!(rows(&client, levels).await? == ["a|3.5355|2", "b|1.0000|2"]);
    client
        .batch_execute("DELETE FROM readings WHERE id = 1; UPDATE readings SET v = 2 WHERE id = 4")
        .await?;
    ensure!(rows(&client, levels).await? == ["a|4.0000|1", "b|1.5811|2"]);
    let adhoc = "SELECT sensor, round(CAST(rms(v) AS numeric), 4) FROM readings GROUP BY sensor";
    ensure!(rows(&client, adhoc).await? == ["a|4.0000", "b|1.5811"]);
    // Built in for the users of this program: not theirs to replace.
    let replaced = client
        .simple_query("CREATE FUNCTION rms(x double precision) RETURNS double precision LANGUAGE sql AS $$ x $$")
        .await;
    ensure!(replaced.is_err(), "a user replaced an embedded function");

    let _ = stop.send(());
    server.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
