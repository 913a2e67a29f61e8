//! The `mitm` command: a thin layer over the library. The command line, parsed by clap
//! (`args`), becomes a checked [`config::Command`] (`config`), which runs the proxy
//! (`proxy`) or a subcommand (`files`) until done, Ctrl-C (SIGINT) or SIGTERM; errors
//! print as one line.

use std::process::ExitCode;

use anyhow::Context as _;

mod args;
mod config;
mod files;
mod mitmdump;
mod proxy;
mod server_replay;
mod settings;
#[cfg(test)]
mod tests;

use config::Command;

fn main() -> ExitCode {
    let sources = settings::Sources::from_env();
    let args = match config::parse_with(std::env::args_os(), &sources) {
        Ok(args) => args,
        // Help, version and usage errors, as clap prints them (exit code 2 for errors).
        Err(e) => e.exit(),
    };
    init_tracing(args.command.verbosity());
    for warning in &args.warnings {
        tracing::warn!("{warning}");
    }
    if let Err(e) = args.command.check() {
        eprintln!("mitm: error: {e:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match args.command.threads() {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Runtime::new(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mitm: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mitm: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Proxy(args) => proxy::run(&args).await,
        Command::Ca(args) => files::print_ca(&args),
        Command::Read(args) => files::read(&args),
        Command::Convert(args) => files::convert(&args),
        Command::Replay(args) => files::replay(&args).await,
        Command::Web(args) => files::serve(&args).await,
    }
}

/// Writes `text` to stdout. A closed pipe (`mitm ca | head`) is not an error: the
/// reader has what it wanted.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// A future that completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed
/// when this returns, not when the future is first polled.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    })
}

/// A future that completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
}

fn init_tracing(verbosity: &args::Verbosity) {
    use tracing_subscriber::EnvFilter;
    let level = match (verbosity.quiet, verbosity.verbose) {
        (q, _) if q >= 2 => "error",
        (1, _) => "warn",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // Our crates at the chosen level; dependencies only when asked for trace.
        let deps = if level == "trace" { "debug" } else { "warn" };
        EnvFilter::new(format!("{deps},mitm={level}"))
    });
    // Colours only for a terminal, and never when NO_COLOR is set.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
