//! The `eddydb` binary: parse the command line, start logging, run the server.

use clap::Parser;
use eddydb::config::{Cli, Command};

/// The glibc tunable that backs malloc's heap with transparent huge pages.
const HUGE_PAGE_TUNABLE: &str = "glibc.malloc.hugetlb";
/// Set on the server's one re-execution of itself.
const REEXECUTED: &str = "EDDYDB_REEXECUTED";

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
/// a process starts, so the server executes itself again, same PID, file and
/// arguments, with `glibc.malloc.hugetlb=1` added to `GLIBC_TUNABLES` and
/// `EDDYDB_REEXECUTED` set. It does not when `EDDYDB_REEXECUTED` is already
/// set (so it never loops, even where glibc strips the tunables of a
/// privileged process), nor when `GLIBC_TUNABLES` already names the tunable
/// (how an operator opts out: `glibc.malloc.hugetlb=0`). Elsewhere, or if the
/// exec fails, it runs on as it is.
fn use_huge_page_heap() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || std::env::var_os(REEXECUTED).is_some()
    {
        return;
    }
    let mut tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    if tunables.to_string_lossy().contains(HUGE_PAGE_TUNABLE) {
        return;
    }
    if !tunables.is_empty() {
        tunables.push(":");
    }
    tunables.push(format!("{HUGE_PAGE_TUNABLE}=1"));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let mut args = std::env::args_os();
        let error = std::process::Command::new("/proc/self/exe")
            .arg0(args.next().unwrap_or_default())
            .args(args)
            .env("GLIBC_TUNABLES", tunables)
            .env(REEXECUTED, "1")
            .exec();
        // `exec` returns only when it failed.
        eprintln!("eddydb: running without huge pages for the heap: {error}");
    }
}
