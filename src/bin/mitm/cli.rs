//! The `mitm` command: a thin layer over the library. The command line, parsed by clap
//! (`args`), becomes a checked [`config::Command`] (`config`), which runs the proxy
//! (`proxy`) or a subcommand (`files`) until done, Ctrl-C (SIGINT) or SIGTERM; errors
//! print as one line.
//!
//! One command, two builds: the binary (`main.rs`) runs [`run`] with no [`Host`], and
//! the Python package's `mitm` command (the crate `mitm-python`, which includes this
//! file and the modules below with `#[path]`) runs it with a host that logs through
//! Python's `logging` and runs mitmproxy's addon scripts (`-s`). Nothing here depends on
//! Python: the modules refer to each other as `super::`, so that they sit under this
//! file in either crate.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;

pub(crate) mod args;
pub(crate) mod config;
pub(crate) mod files;
pub(crate) mod mitmdump;
pub(crate) mod proxy;
pub(crate) mod server_replay;
pub(crate) mod settings;

use config::Command;

/// How to get the build that runs addon scripts, for the binary's refusal of `-s`.
pub(crate) const SCRIPTS_HOWTO: &str = "mitmproxy's Python addon scripts run in the `mitm` \
     command of mitm's Python package: from a checkout of mitm, `pip install ./python` into \
     a virtual environment (with the packages your scripts import), then run that \
     environment's `mitm` (the same command, with -s); this binary has no Python in it";

/// What the command runs with beyond the library: the Python package's `mitm` logs
/// through Python and runs addon scripts; the binary has no host.
pub(crate) trait Host {
    /// Sets up the log at `level` (`error`, `warn`, `info`, `debug` or `trace`),
    /// instead of the binary's lines on stderr.
    fn init_logging(&self, level: &'static str);

    /// Runs first on every thread of the command's runtime.
    fn on_thread_start(&self) -> Option<fn()> {
        None
    }

    /// The hooks of the addon scripts `scripts` (paths as given, each an existing
    /// file), with `options`: the settings (`--set`, `config.yaml`) no option of the
    /// command takes, for the scripts to declare.
    fn scripts(&self, scripts: &[PathBuf], options: &[settings::Given]) -> anyhow::Result<Scripts>;
}

/// What addon scripts add to the proxy: hooks, and what to do once it stopped.
pub(crate) struct Scripts {
    /// Their connection hooks (with `mitm_started`, once per listener).
    pub(crate) middleware: Option<Arc<dyn mitm::Middleware>>,
    /// Their message hooks.
    pub(crate) handler: Option<Arc<dyn mitm::middleware::HttpHandler>>,
    /// Awaited once the proxy has stopped (the scripts' `done`).
    pub(crate) stopped: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripts").finish_non_exhaustive()
    }
}

/// Runs the command line `argv` (the program's name first) to its end, with `host`
/// (none for the binary); returns the exit code: 0, 1 for an error, 2 for a usage
/// error (as clap exits).
pub(crate) fn run(
    argv: impl IntoIterator<Item = std::ffi::OsString>,
    host: Option<&dyn Host>,
) -> u8 {
    let code = run_inner(argv, host);
    // Inside Python nothing flushes Rust's stdout at exit.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    code
}

fn run_inner(argv: impl IntoIterator<Item = std::ffi::OsString>, host: Option<&dyn Host>) -> u8 {
    let sources = settings::Sources::from_env();
    let args = match config::parse_with(argv, &sources) {
        Ok(args) => args,
        // Help, version and usage errors, as clap prints them (exit code 2 for errors).
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    let level = log_level(args.command.verbosity());
    match host {
        Some(host) => host.init_logging(level),
        None => init_tracing(level),
    }
    for warning in &args.warnings {
        tracing::warn!("{warning}");
    }
    if let Err(e) = args.command.check(host.is_some()) {
        eprintln!("mitm: error: {e:#}");
        return 1;
    }
    let mut runtime = match args.command.threads() {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    runtime.enable_all();
    if let Some(start) = host.and_then(Host::on_thread_start) {
        runtime.on_thread_start(start);
    }
    let runtime = match runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mitm: error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let scripts = Scripted {
        host,
        options: args.script_options,
    };
    match runtime.block_on(dispatch(args.command, &scripts)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mitm: error: {e:#}");
            1
        }
    }
}

/// The host that runs `-s`'s scripts, if any, and the settings left for them.
pub(crate) struct Scripted<'a> {
    pub(crate) host: Option<&'a dyn Host>,
    pub(crate) options: Vec<settings::Given>,
}

impl Scripted<'_> {
    /// The hooks of `scripts` (none given: none).
    pub(crate) fn load(&self, scripts: &[PathBuf]) -> anyhow::Result<Option<Scripts>> {
        if scripts.is_empty() {
            return Ok(None);
        }
        let Some(host) = self.host else {
            // `check` refused them already.
            anyhow::bail!("{SCRIPTS_HOWTO}");
        };
        host.scripts(scripts, &self.options).map(Some)
    }
}

async fn dispatch(command: Command, scripts: &Scripted<'_>) -> anyhow::Result<()> {
    match command {
        Command::Proxy(args) => proxy::run(&args, scripts).await,
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

/// The log level `-q`/`-v` ask for.
fn log_level(verbosity: &args::Verbosity) -> &'static str {
    match (verbosity.quiet, verbosity.verbose) {
        (q, _) if q >= 2 => "error",
        (1, _) => "warn",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    }
}

/// The binary's log: lines on stderr at `level` (`RUST_LOG` overrides).
fn init_tracing(level: &'static str) {
    use tracing_subscriber::EnvFilter;
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
        .try_init()
        .ok();
}
