//! `mitm-bench`: how much the `mitm` proxy costs, measured on loopback against going
//! straight to the origin, in one command.
//!
//! ```text
//! cargo build --release && target/release/mitm-bench            # full run, a few minutes
//! cargo build --release && target/release/mitm-bench --quick    # smoke run, seconds
//! target/release/mitm-bench --only https-ka,idle --duration 5 --repeat 5 --json
//! ```
//!
//! `cargo build --release` matters: the proxy under test is the release `mitm` binary
//! next to this one, run as a child process so that its CPU time and memory are its
//! own. `cargo run --release --bin mitm-bench` builds only the bench; it then uses a
//! `mitm` binary built earlier (and warns if the library is newer), or, when there is
//! none, the library inside this process (`--in-process` asks for that), where memory
//! cannot be told apart from the client's and the origin's.
//!
//! Everything runs on 127.0.0.1, in this process except the proxy:
//! - an origin written here (tokio), HTTP/1.1 keep-alive, plain on one port and TLS on
//!   another with leaves of its own CA that the proxy trusts (`--upstream-ca`), never
//!   resuming TLS sessions; `/1k` is a 1 KiB body, `/big` 256 MiB streamed from one
//!   static buffer;
//! - a load client (tokio + rustls, one request in flight per connection, no
//!   pipelining, full TLS handshakes without resumption) that records every request's
//!   latency in a log-bucketed histogram. Through the proxy it sends absolute-form
//!   requests for HTTP, and `CONNECT name.localhost:PORT` then TLS trusting the proxy's
//!   CA for HTTPS (the proxy resolves `*.localhost` to loopback itself). To a SOCKS5
//!   proxy it makes the SOCKS5 handshake itself (no authentication, `CONNECT` to the
//!   origin's IPv4 address), then sends origin-form requests as if direct.
//!
//! Scenarios, each measured directly and through a fresh proxy with no middleware, in
//! the same run:
//! - `http-ka` / `https-ka`: 1 KiB responses on 32 keep-alive connections;
//! - `upstream-ka`: as `http-ka`, the proxy in upstream mode sending everything through
//!   a second, regular mitm (started alike) to the origin; a note gives that mitm alone
//!   against direct, so that the second hop's cost shows;
//! - `socks5-ka`: as `http-ka`, the proxy in SOCKS5 mode (`--mode socks5`), which
//!   serves the plain HTTP inside its tunnels through the exchange, as `http-ka`'s;
//! - `https-newconn`: a new connection, `CONNECT` and TLS handshake per request, 2 at a time;
//! - `https-resume`: as `https-newconn`, the client resuming its session (as browsers do)
//!   with an origin that resumes too;
//! - `http-bulk` / `https-bulk`: `/big` downloads on one connection, MiB/s;
//! - `hosts-cold`: 1000 connections (`CONNECT` + handshake + one request) to distinct
//!   names `h{i}.localhost`, each needing a new leaf, against 1000 to one cached name:
//!   the extra cost per new host;
//! - `idle`: 10 000 connections held open to the proxy without a byte sent: its RSS
//!   per connection;
//! - `http-ka-modify`: as `http-ka`, the proxy given three `--modify-headers` rules
//!   (child process only), each run paired with a plain proxy's; a note gives both.
//!
//! Each measurement runs for `--duration` seconds (10) after a short warm-up, and
//! `--repeat` times (3); the table shows medians: throughput, p50 and p99 latency, the
//! proxy's CPU time per 1000 requests (per GiB for bulk) from `/proc/PID/stat`, its
//! peak RSS (`VmHWM`), and the throughput ratio mitm/direct against its target.
//! `--quick` shortens everything (0.5 s windows, 1 repeat, 100 hosts, 1000 idle
//! connections, 16 MiB bulk) to check that the bench works, not to judge figures.
//!
//! `--proxy-cmd LABEL=COMMAND` (repeatable) measures other proxies beside ours instead
//! of the scenarios: `http-ka`'s load (or those `--only` names) direct, through the
//! `mitm` binary and through a fresh process of each command, paired in every round
//! (`external.rs`); `scripts/py-bench.sh` runs it for the Python package and the
//! original Python mitm, `scripts/hudsucker-bench.sh` for hudsucker.

mod capture;
mod client;
mod external;
mod load;
mod origin;
mod proxy;
mod report;
mod scenarios;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use mitm::CertificateAuthority;

use crate::proxy::Launcher;
use crate::scenarios::{Bench, Plan, Scenario, NAME};

/// Where in the work directory the origin's CA certificate is.
const ORIGIN_CA_FILE: &str = "origin-ca.pem";
/// Where in the work directory the proxy's CA is (as `mitm --ca-dir` reads it).
const PROXY_CA_DIR: &str = "proxy-ca";

/// Benchmarks the mitm proxy against direct connections on loopback: throughput,
/// latency, CPU and memory, with targets. Build with `cargo build --release` first so
/// that the `mitm` binary under test sits next to this one.
#[derive(Debug, Parser)]
#[command(name = "mitm-bench")]
struct Cli {
    /// Smoke run of a few seconds: 0.5 s windows, 1 repeat, 100 hosts, 1000 idle
    /// connections, 16 MiB bulk downloads. Checks that the bench works; the figures
    /// mean little.
    #[arg(long)]
    quick: bool,

    /// Run only these scenarios (comma-separated). With --proxy-cmd: the loads each
    /// proxy command is measured on (http-ka, https-ka, https-newconn, https-resume,
    /// http-bulk, https-bulk; http-ka when not given).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "SCENARIO")]
    only: Vec<Scenario>,

    /// Seconds each measurement (direct, then through mitm) counts. Default: 10, or 0.5
    /// with --quick.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,

    /// Runs of each measurement; the table shows medians. Default: 3, or 1 with --quick.
    #[arg(long, value_name = "N")]
    repeat: Option<u32>,

    /// Print the results as JSON (progress still goes to stderr).
    #[arg(long)]
    json: bool,

    /// The `mitm` binary to test. Default: `mitm` next to this program.
    #[arg(long, value_name = "PATH")]
    proxy_bin: Option<PathBuf>,

    /// Run the proxy library in this process instead of the `mitm` binary.
    #[arg(long, conflicts_with = "proxy_bin")]
    in_process: bool,

    /// Instead of the scenarios, measure saving flows: FLOWS requests of the `http-ka`
    /// load through the `mitm` binary without `--save`, then saving to each format
    /// (HAR, flow file, SQLite); `--repeat` runs each.
    #[arg(long, value_name = "FLOWS", conflicts_with_all = ["only", "in_process", "json", "web"])]
    capture: Option<u64>,

    /// With --capture: another `mitm` binary (the build before a change), its rows
    /// measured beside this one's in every round, each paired with its own plain proxy
    /// (repeat for several).
    #[arg(long, value_name = "LABEL=PATH", requires = "capture")]
    capture_bin: Vec<external::External>,

    /// Instead of the scenarios, measure the web UI: FLOWS requests of the `http-ka`
    /// load through the `mitm` binary, then with `--web` and a client on the UI's live
    /// socket; `--repeat` runs each.
    #[arg(long, value_name = "FLOWS", conflicts_with_all = ["only", "in_process", "json"])]
    web: Option<u64>,

    /// Instead of the scenarios, measure the `http-ka` load (or those of --only)
    /// directly, through the `mitm` binary and through the proxy COMMAND starts (repeat
    /// for several), paired in each round. COMMAND runs with `sh -c`, `MITM_BENCH_DIR`
    /// set to a directory of its own, holding `ca.pem` and `ca.key` (the CA the bench's
    /// clients trust through a proxy) and `upstream-ca.pem` (the origin's CA), and must
    /// print `mitm listening on http://ADDR` on stdout once it accepts connections.
    /// scripts/py-bench.sh uses this for the Python package, scripts/hudsucker-bench.sh
    /// for hudsucker.
    #[arg(
        long,
        value_name = "LABEL=COMMAND",
        conflicts_with_all = ["json", "capture", "web"]
    )]
    proxy_cmd: Vec<external::External>,

    /// With --proxy-cmd: path A must reach X times path B's throughput (`direct`,
    /// `mitm` or a LABEL), e.g. `python/original>=20`, in every scenario measured or in
    /// the one named first (`https-bulk:mitm/hudsucker>=1.2`); the run fails if it
    /// does not.
    #[arg(long, value_name = "[SCENARIO:]A/B>=X", requires = "proxy_cmd")]
    goal: Vec<external::Goal>,

    /// Where the origin's plain HTTP side listens. Default: 127.0.0.1, any free port.
    /// Port 80 lets a proxy that ignores the `Host` field's port (the original Python
    /// mitm sends every plain request to port 80) reach it; requests then name the
    /// origin without a port, as clients do.
    #[arg(long, value_name = "IP:PORT")]
    origin_addr: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mitm-bench: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Connections the origin still serves must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("mitm-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the selected scenarios and prints the results; false if any failed.
async fn run(cli: Cli) -> Result<bool> {
    let plan = plan(&cli)?;
    let selected: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| {
            cli.capture.is_none()
                && cli.web.is_none()
                && cli.proxy_cmd.is_empty()
                && (cli.only.is_empty() || cli.only.contains(s))
                // Rules are command-line options: not run in-process unless asked for.
                && (*s != Scenario::HttpKaModify
                    || !cli.only.is_empty()
                    || !(cli.in_process || proxy_bin(&cli).is_none()))
        })
        .collect();
    let machine = machine();
    if !cli.json {
        println!("{}", machine.line());
    }
    let work = WorkDir::create()?;
    let mut plan = plan;
    if selected.contains(&Scenario::Idle) {
        plan.idle = fit_idle_connections(plan.idle, cli.in_process || proxy_bin(&cli).is_none());
    }
    let mut bench = setup(&cli, plan, &selected, &work).await?;
    let measure = match (cli.capture, cli.web) {
        (Some(flows), _) => Some((capture::Measure::Capture, flows)),
        (_, Some(flows)) => Some((capture::Measure::Web, flows)),
        _ => None,
    };
    if let Some((measure, flows)) = measure {
        if !(1..=100_000_000).contains(&flows) {
            bail!("--capture and --web take a number of flows from 1 to 100000000");
        }
        let (launcher, origin, repeat) = (&bench.launcher, &bench.origin, bench.plan.repeat);
        let mut others = Vec::new();
        for build in &cli.capture_bin {
            let other = launcher
                .with_bin(build.command.clone().into())
                .context("--capture-bin needs the `mitm` binary, not --in-process")?;
            others.push((build.label.clone(), other));
        }
        return capture::run(
            measure, launcher, origin, flows, repeat, &work.path, &others,
        )
        .await;
    }
    if !cli.proxy_cmd.is_empty() {
        let scenarios = if cli.only.is_empty() {
            vec![Scenario::HttpKa]
        } else {
            cli.only.clone()
        };
        let ca_dir = work.path.join(PROXY_CA_DIR);
        let files = external::CaFiles {
            cert: ca_dir.join(mitm::tls::ca::CA_CERT_FILE),
            key: ca_dir.join(mitm::tls::ca::CA_KEY_FILE),
            upstream: work.path.join(ORIGIN_CA_FILE),
        };
        return external::run(
            &bench,
            &scenarios,
            &cli.proxy_cmd,
            &cli.goal,
            &files,
            &work.path,
        )
        .await;
    }
    let mode = match &bench.launcher {
        Launcher::Child { bin, .. } => format!("child process {}", bin.display()),
        Launcher::InProcess { .. } => "in-process library (no `mitm` binary used)".into(),
    };
    let settings = format!(
        "proxy: {mode}; {} s windows after {} s warm-up, {} run(s) each, medians shown",
        bench.plan.duration.as_secs_f64(),
        bench.plan.warmup.as_secs_f64(),
        bench.plan.repeat
    );
    if cli.json {
        eprintln!("{settings}");
    } else {
        println!("{settings}");
    }

    let mut results = Vec::new();
    for scenario in selected {
        let result = bench.run(scenario).await.map_err(|e| format!("{e:#}"));
        if let Err(e) = &result {
            eprintln!("{}: FAILED: {e}", scenario.name());
        }
        results.push((scenario, result));
    }
    for (scenario, result) in &results {
        if let Ok(scenarios::Outcome::Compare {
            direct,
            mitm,
            alone,
            ..
        }) = result
        {
            if !alone.is_empty() {
                let hops = report::two_hops(direct, alone, mitm);
                bench.notes.push(format!("{}: {hops}", scenario.name()));
            }
        }
    }
    let own_memory = bench.launcher.is_child();
    if cli.json {
        let notes = bench.notes.iter().map(|n| report::Json::Str(n.clone()));
        let doc = report::Json::Obj(vec![
            ("machine", machine.json()),
            ("settings", report::Json::Str(settings)),
            ("scenarios", report::json(&results, own_memory)),
            ("notes", report::Json::Arr(notes.collect())),
        ]);
        println!("{doc}");
    } else {
        println!();
        print!("{}", report::table(&results, own_memory));
        if !bench.notes.is_empty() {
            println!("\nNotes:");
            for note in &bench.notes {
                println!("- {note}");
            }
        }
    }
    Ok(results.iter().all(|(_, r)| r.is_ok()))
}

fn plan(cli: &Cli) -> Result<Plan> {
    let mut plan = if cli.quick {
        Plan {
            duration: Duration::from_millis(500),
            warmup: Duration::from_millis(100),
            repeat: 1,
            hosts: 100,
            idle: 1000,
            bulk_bytes: 16 << 20,
        }
    } else {
        Plan {
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            repeat: 3,
            hosts: 1000,
            idle: 10_000,
            bulk_bytes: 256 << 20,
        }
    };
    if let Some(secs) = cli.duration {
        if !(0.05..=3600.0).contains(&secs) {
            bail!("--duration must be between 0.05 and 3600 seconds");
        }
        plan.duration = Duration::from_secs_f64(secs);
        plan.warmup = (plan.duration / 5).min(Duration::from_secs(1));
    }
    if let Some(n) = cli.repeat {
        if !(1..=100).contains(&n) {
            bail!("--repeat must be between 1 and 100");
        }
        plan.repeat = n;
    }
    Ok(plan)
}

/// The CAs, the origin, the proxy launcher and the client configs.
async fn setup(cli: &Cli, plan: Plan, selected: &[Scenario], work: &WorkDir) -> Result<Bench> {
    // The origin's CA: its leaves are issued before any measurement (the names of every
    // `hosts-cold` run included), so that only the proxy signs on a measured path.
    let mut names = vec![NAME.to_owned()];
    if selected.contains(&Scenario::HostsCold) {
        names.extend((0..plan.repeat).flat_map(|run| plan.host_names(run)));
    }
    let origin_ca = CertificateAuthority::generate()?.with_cache_size(names.len() + 16);
    for name in &names {
        origin_ca.certified_key(name)?;
    }
    let origin_ca = Arc::new(origin_ca);
    let origin_ca_file = work.path.join(ORIGIN_CA_FILE);
    std::fs::write(&origin_ca_file, origin_ca.cert_pem())?;

    // The proxy's CA, made here and saved where the `mitm` binary loads it.
    let proxy_ca = Arc::new(CertificateAuthority::generate()?);
    let ca_dir = work.path.join(PROXY_CA_DIR);
    std::fs::create_dir_all(&ca_dir)?;
    proxy_ca.save(
        ca_dir.join(mitm::tls::ca::CA_CERT_FILE),
        ca_dir.join(mitm::tls::ca::CA_KEY_FILE),
    )?;

    let launcher = match proxy_bin(cli) {
        Some(bin) => {
            warn_if_stale(&bin);
            Launcher::child(bin, ca_dir, origin_ca_file)
        }
        None => {
            if !cli.in_process {
                eprintln!(
                    "mitm-bench: note: no `mitm` binary next to this one (run `cargo build \
                     --release` first); testing the library in-process instead, where the \
                     proxy's memory cannot be told apart from the bench's"
                );
            }
            let upstream = upstream_config(&origin_ca)?;
            Launcher::in_process(proxy_ca.clone(), upstream)?
        }
    };
    let plain = cli
        .origin_addr
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let origin = origin::start(origin_ca.clone(), plan.bulk_bytes, plain).await?;
    let to_origin = client::tls_config(origin_ca.cert_der())?;
    let to_proxy = client::tls_config(proxy_ca.cert_der())?;
    Ok(Bench::new(plan, origin, launcher, to_origin, to_proxy))
}

/// The in-process proxy's upstream TLS: trusts the origin's CA, resumes sessions as
/// the binary's default config does.
fn upstream_config(origin_ca: &CertificateAuthority) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(origin_ca.cert_der().clone())?;
    let provider = mitm::tls::crypto_provider();
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The `mitm` binary to run: `--proxy-bin`, else `mitm` next to this program; `None`
/// for in-process.
fn proxy_bin(cli: &Cli) -> Option<PathBuf> {
    if cli.in_process {
        return None;
    }
    if let Some(bin) = &cli.proxy_bin {
        return Some(bin.clone());
    }
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.join("mitm");
    bin.is_file().then_some(bin)
}

/// Warns when the library next to `bin` was built after it: `cargo run --bin
/// mitm-bench` rebuilds the library and the bench, not the `mitm` binary.
fn warn_if_stale(bin: &Path) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(dir) = bin.parent() else { return };
    let Some(bin_time) = modified(bin) else {
        return;
    };
    let mut libs = vec![dir.join("libmitm.rlib")];
    if let Ok(entries) = std::fs::read_dir(dir.join("deps")) {
        libs.extend(entries.flatten().map(|e| e.path()).filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("libmitm-") && name.ends_with(".rlib")
        }));
    }
    if libs
        .iter()
        .filter_map(|p| modified(p))
        .any(|t| t > bin_time)
    {
        eprintln!(
            "mitm-bench: warning: {} is older than the mitm library built next to it; run \
             `cargo build --release` to test the current code",
            bin.display()
        );
    }
}

/// How many idle connections fit the open-file limit (raised to the hard limit with
/// `prlimit` when needed): the bench holds one descriptor per connection, and so does
/// the proxy (both in this process when in-process). Says so when it lowers `want`.
fn fit_idle_connections(want: usize, in_process: bool) -> usize {
    const SPARE: usize = 256;
    let per = if in_process { 2 } else { 1 };
    let needed = want * per + SPARE;
    let Some((soft, hard)) = nofile_limits() else {
        return want;
    };
    if soft < needed && hard > soft {
        // No libc here (and no unsafe code): util-linux's prlimit can raise our own soft
        // limit up to the hard one. Children started afterwards inherit it.
        let _ = std::process::Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={}:{hard}", hard.min(needed)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    let soft = nofile_limits().map_or(soft, |(s, _)| s);
    if soft >= needed {
        return want;
    }
    let fits = soft.saturating_sub(SPARE) / per;
    eprintln!(
        "mitm-bench: note: the open-file limit is {soft}; idle holds {fits} connections \
         instead of {want} (raise it with `ulimit -n {needed}`)"
    );
    fits
}

/// The soft and hard `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
fn nofile_limits() -> Option<(usize, usize)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut figures = line["Max open files".len()..].split_whitespace();
    let parse = |s: Option<&str>| match s? {
        "unlimited" => Some(usize::MAX),
        n => n.parse().ok(),
    };
    Some((parse(figures.next())?, parse(figures.next())?))
}

/// What the figures were measured on.
struct Machine {
    cores: usize,
    kernel: String,
    cpu: String,
}

fn machine() -> Machine {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().to_owned());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("model name"))?;
            Some(line.split_once(':')?.1.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    Machine { cores, kernel, cpu }
}

impl Machine {
    fn line(&self) -> String {
        format!(
            "machine: {} cores, {}, Linux {}",
            self.cores, self.cpu, self.kernel
        )
    }

    fn json(&self) -> report::Json {
        report::Json::Obj(vec![
            ("cores", report::Json::Num(self.cores as f64)),
            ("cpu", report::Json::Str(self.cpu.clone())),
            ("kernel", report::Json::Str(self.kernel.clone())),
        ])
    }
}

/// A private temporary directory (the CAs, the proxy's key among them), removed when
/// dropped.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("mitm-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
