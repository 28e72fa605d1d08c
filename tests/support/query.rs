//! Small query helpers for protocol tests: rows as sorted text, single
//! values, waiting on a condition with a deadline, and error SQLSTATEs.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::SinkExt;
use tokio_postgres::{Client, SimpleQueryMessage};

/// How long a condition may take to hold before a test gives up.
pub const WAIT: Duration = Duration::from_secs(90);

/// Every row of a query as text (`|` between cells, NULL as `NULL`), sorted.
pub async fn rows(client: &Client, sql: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for message in client
        .simple_query(sql)
        .await
        .with_context(|| sql.to_string())?
    {
        if let SimpleQueryMessage::Row(row) = message {
            let cells: Vec<String> = (0..row.len())
                .map(|i| row.get(i).unwrap_or("NULL").to_string())
                .collect();
            out.push(cells.join("|"));
        }
    }
    out.sort();
    Ok(out)
}

/// The one row of a query, as text.
pub async fn value(client: &Client, sql: &str) -> anyhow::Result<String> {
    let mut all = rows(client, sql).await?;
    match all.len() {
        1 => Ok(all.remove(0)),
        n => bail!("{sql}: expected one row, got {n}"),
    }
}

/// Polls `sql` until its one row is `expected`, for at most [`WAIT`].
pub async fn wait_for(client: &Client, sql: &str, expected: &str) -> anyhow::Result<()> {
    wait_until(client, sql, |got| got == expected)
        .await
        .with_context(|| format!("expected {expected:?}"))?;
    Ok(())
}

/// Polls `sql` until `done` holds for its one row; returns that row.
pub async fn wait_until(
    client: &Client,
    sql: &str,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = value(client, sql).await?;
        if done(&got) {
            return Ok(got);
        }
        if Instant::now() > deadline {
            bail!("{sql}: still {got:?} after {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The SQLSTATE, message and hint of a statement that must fail.
pub async fn error_of(
    client: &Client,
    sql: &str,
) -> anyhow::Result<(String, String, Option<String>)> {
    match client.simple_query(sql).await {
        Ok(_) => bail!("{sql}: expected an error"),
        Err(e) => {
            let db = e.as_db_error().context("not a server error")?;
            Ok((
                db.code().code().to_string(),
                db.message().to_string(),
                db.hint().map(str::to_string),
            ))
        }
    }
}

/// Sends `data` through `COPY … FROM STDIN` (`statement`); the rows copied.
pub async fn copy_rows(client: &Client, statement: &str, data: Vec<u8>) -> anyhow::Result<u64> {
    let sink = client
        .copy_in::<_, std::io::Cursor<Vec<u8>>>(statement)
        .await?;
    futures::pin_mut!(sink);
    sink.send(std::io::Cursor::new(data)).await?;
    Ok(sink.finish().await?)
}
