//! The `eddydb` binary: parse the command line, start logging, run the server.

use clap::Parser;
use eddydb::config::{Cli, Command};

/// The glibc tunable that backs malloc's heap with transparent huge pages.
const HUGE_PAGE_TUNABLE: &str = "glibc.malloc.hugetlb";

fn main() -> anyhow::Result<()> {
    use_huge_page_heap();
    let cli = Cli::parse();
    let config = match cli.command {
        Some(Command::Serve(config)) => config,
        None => cli.serve,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("eddydb-io")
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let shutdown = eddydb::server::shutdown_signal();
        eddydb::server::run(listener, config, shutdown).await?;
        anyhow::Ok(())
    })?;
    Ok(())
}

/// Operator state is large hash tables probed at random (group tables,
/// arrangements, join sides, primary-key indexes); with 4 KiB pages nearly
/// every probe also misses the TLB. glibc reads its malloc tunables only when
/// a process starts, so unless `GLIBC_TUNABLES` already says something about
/// huge pages (which is how an operator opts out: `glibc.malloc.hugetlb=0`),
/// the server executes itself again, same PID and arguments, with
/// `glibc.malloc.hugetlb=1`. Elsewhere, or if that fails, it runs on as it is.
fn use_huge_page_heap() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if current.contains(HUGE_PAGE_TUNABLE) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let tunables = match current.as_str() {
        "" => format!("{HUGE_PAGE_TUNABLE}=1"),
        other => format!("{other}:{HUGE_PAGE_TUNABLE}=1"),
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("GLIBC_TUNABLES", tunables)
            .exec();
        // `exec` returns only when it failed.
        eprintln!("eddydb: running without huge pages for the heap: {error}");
    }
}
