//! The accept loop: opens the catalog, serves each connection on its own
//! task, enforces the connection limit, and shuts down cleanly.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::protocol::{serve_connection, Handler};

/// How long shutdown waits for connections to end before leaving anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the server on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> crate::Result<()> {
    run_with(
        listener,
        config,
        crate::function::Extensions::default(),
        shutdown,
    )
    .await
}

/// [`run`] with functions of the embedding program's own
/// (`examples/embedded.rs` shows how).
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    extensions: crate::function::Extensions,
    shutdown: impl Future<Output = ()>,
) -> crate::Result<()> {
    let catalog = Arc::new(Catalog::open(&config, extensions)?);
    let started = std::time::Instant::now();
    let restore_ctx =
        crate::query::QueryContext::new(Arc::clone(&catalog), config.worker_count(), "eddydb", 0)?;
    crate::sql::restore_views(&catalog, &restore_ctx).await?;
    catalog.engine().finish_recovery();
    catalog.start_restored_view_readers();
    catalog.start_clock();
    if !catalog.views().is_empty() {
        tracing::info!(
            views = catalog.views().len(),
            ms = started.elapsed().as_millis() as u64,
            "views restored"
        );
    }
    catalog.start_table_readers()?;
    let handler = Arc::new(Handler::new(Arc::clone(&catalog), config.worker_count()));
    let addr = listener
        .local_addr()
        .map_err(|e| crate::Error::Internal(format!("listener has no address: {e}")))?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), tables = catalog.table_names().len(), "eddydb ready");
    // Tests and scripts read the port from this line.
    println!("eddydb listening on {addr}");
    let (stop_tx, stop_rx) = watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let over_limit = open.fetch_add(1, Ordering::AcqRel) >= config.max_connections;
        let limits = crate::protocol::ConnectionLimits {
            max_message_bytes: config.max_message_bytes,
            over_limit,
        };
        let (handler, open, stop) = (Arc::clone(&handler), Arc::clone(&open), stop_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = serve_connection(tcp, handler, limits, stop).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
        while tasks.try_join_next().is_some() {}
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let stopping = Arc::clone(&catalog);
    let _ = tokio::task::spawn_blocking(move || {
        stopping.stop_all_readers();
        stopping.engine().checkpoint_and_wait();
    })
    .await;
    catalog.flush()?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
