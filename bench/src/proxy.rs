//! The proxy under test and what the bench reads about it: its address, CPU time, RSS
//! and open file descriptors.
//!
//! The preferred proxy is the release `mitm` binary as a child process: its CPU time and
//! memory are then its own (`/proc/PID/stat`, `/proc/PID/status`), not mixed with the
//! load client's and the origin's. A fresh child serves each measurement, so peak RSS
//! and CPU time cover that measurement only. Without the binary, the library runs in
//! this process on a runtime of its own (see [`Launcher::in_process`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use mitm::upstream::UpstreamTls;
use mitm::{CertificateAuthority, Mitm, MitmHandle};

/// Name of the proxy runtime's threads, by which their CPU time is found in-process.
const PROXY_THREAD: &str = "mitm-proxy";
/// The same for the second proxy of `upstream-ka` (the upstream mitm), whose CPU time
/// must not count as the proxy under test's.
const UPSTREAM_THREAD: &str = "mitm-upstream";
/// Longest wait for a child to say where it listens.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of a child's stderr kept for the report.
const STDERR_KEPT: usize = 20;

/// What a proxy is started as: `mitm --mode ...` for a child, the matching listener
/// for the library in-process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// An explicit HTTP proxy (the binary's default: no `--mode` is passed, so that
    /// builds from before `--mode` run too).
    Regular,
    /// An explicit HTTP proxy whose traffic leaves through the plain HTTP proxy at this
    /// address (`--mode upstream:http://ADDR`).
    Upstream(SocketAddr),
    /// A SOCKS5 proxy (`--mode socks5`).
    Socks5,
}

impl Mode {
    /// The `--mode` value for the binary; `None` for its default.
    fn arg(self) -> Option<String> {
        match self {
            Mode::Regular => None,
            Mode::Upstream(addr) => Some(format!("upstream:http://{addr}")),
            Mode::Socks5 => Some("socks5".into()),
        }
    }

    /// The in-process server's setup for this mode, on `builder`.
    fn configure(self, builder: mitm::MitmBuilder) -> Result<mitm::MitmBuilder> {
        Ok(match self {
            Mode::Regular => builder,
            Mode::Upstream(addr) => {
                let route: mitm::Route = format!("http://{addr}").parse()?;
                let http: Arc<dyn mitm::Protocol> = Arc::new(mitm::Http::new());
                builder.listener(mitm::Listener::new("upstream", vec![http]).route(route))
            }
            Mode::Socks5 => builder.protocols(vec![Arc::new(mitm::Socks5::new())]),
        })
    }
}

/// Which proxy of a scenario a start is for.
#[derive(Clone, Copy, Debug)]
enum Role {
    UnderTest,
    /// The upstream mitm of `upstream-ka`.
    Upstream,
}

/// Starts proxies, all alike.
pub enum Launcher {
    /// The `mitm` binary, as `mitm --port 0 --ca-dir DIR --upstream-ca FILE --log none -q`
    /// (and `--mode MODE` unless regular).
    Child {
        bin: PathBuf,
        ca_dir: PathBuf,
        upstream_ca: PathBuf,
    },
    /// The library on its own runtime in this process (the upstream mitm on another).
    InProcess {
        ca: Arc<CertificateAuthority>,
        upstream: Box<rustls::ClientConfig>,
        runtime: Option<tokio::runtime::Runtime>,
        upstream_runtime: Option<tokio::runtime::Runtime>,
    },
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // A runtime may not be dropped (blocking) inside another one's tasks.
        if let Launcher::InProcess {
            runtime,
            upstream_runtime,
            ..
        } = self
        {
            for rt in [runtime.take(), upstream_runtime.take()]
                .into_iter()
                .flatten()
            {
                rt.shutdown_background();
            }
        }
    }
}

impl Launcher {
    /// Runs the `mitm` binary at `bin`; its CA is (or will be) in `ca_dir`, and it trusts
    /// the origin's CA in `upstream_ca`.
    pub fn child(bin: PathBuf, ca_dir: PathBuf, upstream_ca: PathBuf) -> Self {
        Launcher::Child {
            bin,
            ca_dir,
            upstream_ca,
        }
    }

    /// Runs the library in this process with `ca`, trusting upstreams per `upstream`.
    ///
    /// The proxy gets a multi-thread tokio runtime of its own (as many workers as
    /// cores, as the `mitm` binary has) instead of sharing the bench's: its tasks then
    /// never wait behind the load client's or the origin's on a worker, as they would
    /// not in production, and its threads, named [`PROXY_THREAD`], let the bench count
    /// its CPU time apart. Memory cannot be told apart: RSS is the whole process's.
    /// The upstream mitm of `upstream-ka` gets a second runtime alike, its threads named
    /// [`UPSTREAM_THREAD`].
    pub fn in_process(
        ca: Arc<CertificateAuthority>,
        upstream: rustls::ClientConfig,
    ) -> Result<Self> {
        let runtime = |name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .thread_name(name)
                .enable_all()
                .build()
                .with_context(|| format!("cannot start the {name} runtime"))
        };
        Ok(Launcher::InProcess {
            ca,
            upstream: Box::new(upstream),
            runtime: Some(runtime(PROXY_THREAD)?),
            upstream_runtime: Some(runtime(UPSTREAM_THREAD)?),
        })
    }

    pub fn is_child(&self) -> bool {
        matches!(self, Launcher::Child { .. })
    }

    /// This launcher with another `mitm` binary (a build before a change, to pair
    /// with); `None` in-process.
    pub fn with_bin(&self, other: PathBuf) -> Option<Launcher> {
        match self {
            Launcher::Child {
                ca_dir,
                upstream_ca,
                ..
            } => Some(Launcher::Child {
                bin: other,
                ca_dir: ca_dir.clone(),
                upstream_ca: upstream_ca.clone(),
            }),
            Launcher::InProcess { .. } => None,
        }
    }

    /// Starts a fresh proxy under test in `mode` and waits until it listens.
    pub async fn start(&self, mode: Mode) -> Result<Proxy> {
        self.launch(mode, Role::UnderTest).await
    }

    /// Starts a fresh regular proxy for a proxy under test in upstream mode to send its
    /// traffic to (or to be measured alone, as the first hop of that chain). A child is
    /// the same binary as the proxy under test; in-process, it runs on a runtime of its
    /// own, so that CPU time stays apart.
    pub async fn start_upstream(&self) -> Result<Proxy> {
        self.launch(Mode::Regular, Role::Upstream).await
    }

    /// Starts a proxy in `mode`; in-process, on `role`'s runtime.
    async fn launch(&self, mode: Mode, role: Role) -> Result<Proxy> {
        self.launch_with(mode, role, Vec::new()).await
    }

    /// Starts a proxy under test in regular mode, a child given `args` beyond the
    /// usual ones (`--save FILE`, say). Child processes only: the arguments are the
    /// binary's.
    pub async fn start_child_with(&self, args: Vec<String>) -> Result<Proxy> {
        if !self.is_child() {
            bail!("this measurement needs the `mitm` binary (run `cargo build --release`)");
        }
        self.launch_with(Mode::Regular, Role::UnderTest, args).await
    }

    async fn launch_with(&self, mode: Mode, role: Role, args: Vec<String>) -> Result<Proxy> {
        match self {
            Launcher::Child {
                bin,
                ca_dir,
                upstream_ca,
            } => {
                let (bin, ca_dir, upstream_ca) = (bin.clone(), ca_dir.clone(), upstream_ca.clone());
                let start = move || ChildProxy::start(&bin, &ca_dir, &upstream_ca, mode, &args);
                let child = tokio::task::spawn_blocking(start).await??;
                Ok(Proxy::Child(child))
            }
            Launcher::InProcess {
                ca,
                upstream,
                runtime,
                upstream_runtime,
            } => {
                let (runtime, threads) = match role {
                    Role::UnderTest => (runtime, PROXY_THREAD),
                    Role::Upstream => (upstream_runtime, UPSTREAM_THREAD),
                };
                let rt = runtime
                    .as_ref()
                    .ok_or_else(|| anyhow!("proxy runtime gone"))?
                    .handle()
                    .clone();
                let builder = Mitm::builder()
                    .host("127.0.0.1")
                    .port(0)
                    .certificate_authority(ca.clone())
                    .middlewares(vec![])
                    .upstream_tls(UpstreamTls::from_config((**upstream).clone()))
                    .grace_period(Duration::from_millis(200));
                let builder = mode.configure(builder)?;
                // `spawn` runs the server on the runtime it is called from: the proxy's.
                let handle = rt
                    .spawn(async move { builder.bind().await.map(Mitm::spawn) })
                    .await??;
                Ok(Proxy::InProcess {
                    handle,
                    rt,
                    threads,
                })
            }
        }
    }
}

/// A running proxy.
pub enum Proxy {
    Child(ChildProxy),
    InProcess {
        handle: MitmHandle,
        rt: tokio::runtime::Handle,
        /// The name of its runtime's threads.
        threads: &'static str,
    },
}

impl Proxy {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Proxy::Child(c) => c.addr,
            Proxy::InProcess { handle, .. } => handle.local_addr(),
        }
    }

    /// CPU time (user + system) the proxy has used so far.
    pub fn cpu(&self) -> Option<Duration> {
        match self {
            Proxy::Child(c) => process_cpu(&format!("/proc/{}/stat", c.pid)),
            Proxy::InProcess { threads, .. } => threads_cpu(threads),
        }
    }

    /// CPU time (user + system) of a child proxy's threads named `name` so far (the
    /// capture's writer, `mitm-capture`); `None` in-process.
    pub fn threads_cpu(&self, name: &str) -> Option<Duration> {
        match self {
            Proxy::Child(c) => threads_cpu_in(&format!("/proc/{}/task", c.pid), name),
            Proxy::InProcess { .. } => None,
        }
    }

    /// Resident memory now (`VmRSS`), bytes.
    pub fn rss(&self) -> Option<u64> {
        status_field(&self.status_path(), "VmRSS")
    }

    /// Peak resident memory (`VmHWM`), bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        status_field(&self.status_path(), "VmHWM")
    }

    /// Open file descriptors of the proxy's process.
    pub fn open_fds(&self) -> Option<usize> {
        let dir = match self {
            Proxy::Child(c) => format!("/proc/{}/fd", c.pid),
            Proxy::InProcess { .. } => "/proc/self/fd".to_owned(),
        };
        Some(std::fs::read_dir(dir).ok()?.count())
    }

    /// File descriptors one client connection adds where the bench counts them: the
    /// proxy's accepted socket, plus the client's own socket when in-process.
    pub fn fds_per_client(&self) -> usize {
        match self {
            Proxy::Child(_) => 1,
            Proxy::InProcess { .. } => 2,
        }
    }

    /// Minor page faults of the proxy so far: pages of memory it touched for the
    /// first time (each one zeroed by the kernel).
    pub fn minor_faults(&self) -> Option<u64> {
        let path = match self {
            Proxy::Child(c) => format!("/proc/{}/stat", c.pid),
            Proxy::InProcess { .. } => return None,
        };
        let text = std::fs::read_to_string(path).ok()?;
        // Field 10 is minflt; fields after the command start at 3.
        let after = text.get(text.rfind(')')? + 1..)?;
        after.split_whitespace().nth(7)?.parse().ok()
    }

    /// Context switches of the proxy's threads so far (voluntary and not): how often
    /// it slept or was put aside.
    pub fn switches(&self) -> Option<u64> {
        let dir = match self {
            Proxy::Child(c) => format!("/proc/{}/task", c.pid),
            Proxy::InProcess { .. } => "/proc/self/task".to_owned(),
        };
        let mut n = 0;
        for task in std::fs::read_dir(dir).ok()?.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            for line in status.lines() {
                if let Some(v) = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    n += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
        Some(n)
    }

    fn status_path(&self) -> String {
        match self {
            Proxy::Child(c) => format!("/proc/{}/status", c.pid),
            Proxy::InProcess { .. } => "/proc/self/status".to_owned(),
        }
    }

    /// Stops the proxy; returns what it wrote on stderr (warnings and errors).
    pub async fn stop(self) -> Vec<String> {
        match self {
            Proxy::Child(child) => child.stop(),
            Proxy::InProcess { handle, rt, .. } => {
                let _ = rt.spawn(handle.shutdown()).await;
                Vec::new()
            }
        }
    }
}

/// The `mitm` binary running as a child; killed when dropped, whatever happens.
pub struct ChildProxy {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    stderr: Arc<Mutex<StderrLog>>,
    /// The web UI's URL (with its token), when started with `--web`.
    pub web: Option<String>,
}

/// The first lines of a child's stderr, and how many there were.
#[derive(Default)]
struct StderrLog {
    lines: Vec<String>,
    total: usize,
}

impl ChildProxy {
    fn start(
        bin: &Path,
        ca_dir: &Path,
        upstream_ca: &Path,
        mode: Mode,
        args: &[String],
    ) -> Result<Self> {
        let mut command = Command::new(bin);
        if let Some(mode) = mode.arg() {
            command.arg("--mode").arg(mode);
        }
        command.args(args);
        command
            .args(["--host", "127.0.0.1", "--port", "0", "--log", "none", "-q"])
            .arg("--ca-dir")
            .arg(ca_dir)
            .arg("--upstream-ca")
            .arg(upstream_ca)
            // -q decides what it logs, in plain text.
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        // With the web UI, its line comes after the proxy's.
        let wants_web = args.iter().any(|a| a == "--web");
        Self::spawn(command, &bin.display().to_string(), wants_web)
    }

    /// Runs `shell` with `sh -c` (replaced by the command it names, through `exec`, so
    /// that the process measured is the proxy's own), in `dir` as `MITM_BENCH_DIR`, and
    /// waits for its `mitm listening on http://ADDR` line on stdout.
    pub fn start_command(shell: &str, dir: &Path) -> Result<Self> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("exec {shell}"))
            .env("MITM_BENCH_DIR", dir);
        Self::spawn(command, shell, false)
    }

    /// Starts `command` (named `what` in errors) and waits for the address it listens
    /// on (and its web UI's line too, when `wants_web`).
    fn spawn(mut command: Command, what: &str, wants_web: bool) -> Result<Self> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {what}"))?;
        let pid = child.id();
        let stdout = child.stdout.take();
        let stderr_pipe = child.stderr.take();
        // From here on the guard kills the child on any error.
        let mut guard = ChildProxy {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr: Arc::default(),
            web: None,
        };
        if let Some(pipe) = stderr_pipe {
            let log = guard.stderr.clone();
            std::thread::spawn(move || collect_stderr(pipe, &log));
        }
        let stdout = stdout.ok_or_else(|| anyhow!("no stdout pipe"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Lines go to the bench until it stops listening; the rest are drained so
            // that the child never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let how = match guard.child.try_wait() {
                        Ok(Some(status)) => format!("exited ({status})"),
                        _ => format!("printed no address within {STARTUP_TIMEOUT:?}"),
                    };
                    let said = guard.stderr_lines().join(" / ");
                    let said = if said.is_empty() {
                        "nothing".into()
                    } else {
                        said
                    };
                    bail!("{what} {how}; its stderr: {said}");
                }
            };
            if let Some(addr) = listening_addr(&line) {
                guard.addr = addr.parse().context("proxy address")?;
                if !wants_web {
                    return Ok(guard);
                }
            }
            if let Some(url) = line.strip_prefix("web UI: ") {
                guard.web = Some(url.trim().to_owned());
                return Ok(guard);
            }
        }
    }

    fn stderr_lines(&self) -> Vec<String> {
        let log = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines = log.lines.clone();
        if log.total > log.lines.len() {
            lines.push(format!(
                "... and {} more lines",
                log.total - log.lines.len()
            ));
        }
        lines
    }

    /// Asks the child to stop (SIGTERM, as Ctrl-C would) and waits until it has
    /// exited: how long that took and the CPU time it had used in all (what it did
    /// after the signal included: a capture's writer finishing its queue), or an error
    /// when it had not exited after `patience` (it is then killed).
    pub fn terminate(mut self, patience: Duration) -> Result<Exit> {
        let began = std::time::Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("cannot run kill")?;
        if !sent.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        let stat = format!("/proc/{}/stat", self.pid);
        loop {
            // An exited child stays a zombie until it is waited for, its CPU times
            // still in its `stat`: read them first, then reap it.
            if zombie(&stat) {
                let cpu = process_cpu(&stat);
                self.child.wait()?;
                return Ok(Exit {
                    took: began.elapsed(),
                    cpu,
                });
            }
            if self.child.try_wait()?.is_some() {
                // Reaped between the two looks (not a zombie when read): no CPU time.
                return Ok(Exit {
                    took: began.elapsed(),
                    cpu: None,
                });
            }
            if began.elapsed() > patience {
                self.kill();
                bail!("the proxy had not exited {patience:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn stop(mut self) -> Vec<String> {
        self.kill();
        // Give the reader thread a moment to take the last lines.
        std::thread::sleep(Duration::from_millis(20));
        self.stderr_lines()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProxy {
    fn drop(&mut self) {
        self.kill();
    }
}

fn collect_stderr(pipe: std::process::ChildStderr, log: &Mutex<StderrLog>) {
    for line in BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        log.total += 1;
        if log.lines.len() < STDERR_KEPT {
            log.lines.push(line);
        }
    }
}

/// The address in a banner line, `mitm listening on SCHEME://ADDR (MODE)` (older builds
/// print `http://ADDR` alone); the scheme is `http` or `socks5`. The bench starts one
/// listener per proxy, so the first such line is the one.
fn listening_addr(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("mitm listening on ")?;
    let rest = rest
        .strip_prefix("http://")
        .or_else(|| rest.strip_prefix("socks5://"))?;
    rest.split_whitespace().next()
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// utime + stime of a `/proc/.../stat` file, and its `comm`.
fn read_stat(path: &str) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // Fields after the command: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// Whether the process of the `stat` file at `path` has exited and waits to be reaped
/// (state `Z`).
fn zombie(path: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    text.rfind(')')
        .and_then(|close| text.get(close + 1..))
        .and_then(|rest| rest.split_whitespace().next())
        == Some("Z")
}

/// How a child proxy ended ([`ChildProxy::terminate`]).
pub struct Exit {
    /// From SIGTERM to its exit.
    pub took: Duration,
    /// The CPU time (user + system) it used in all, when known.
    pub cpu: Option<Duration>,
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / clock_ticks())
}

fn process_cpu(stat: &str) -> Option<Duration> {
    read_stat(stat).map(|(_, ticks)| ticks_to_duration(ticks))
}

/// CPU time of this process's threads named `name`.
fn threads_cpu(name: &str) -> Option<Duration> {
    threads_cpu_in("/proc/self/task", name)
}

/// CPU time of the threads named `name` of the process whose task directory is `dir`.
fn threads_cpu_in(dir: &str, name: &str) -> Option<Duration> {
    let mut ticks = 0;
    for task in std::fs::read_dir(dir).ok()?.flatten() {
        let path = task.path().join("stat");
        if let Some((comm, t)) = path.to_str().and_then(read_stat) {
            if comm == name {
                ticks += t;
            }
        }
    }
    Some(ticks_to_duration(ticks))
}

/// A `kB` field of a `/proc/.../status` file, in bytes.
pub fn status_field(path: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_lines_give_the_address() {
        let at = |line| listening_addr(line);
        assert_eq!(
            at("mitm listening on http://127.0.0.1:4000 (regular)"),
            Some("127.0.0.1:4000")
        );
        assert_eq!(
            at("mitm listening on socks5://127.0.0.1:4001 (socks5)"),
            Some("127.0.0.1:4001")
        );
        assert_eq!(
            at("mitm listening on http://[::1]:4002"),
            Some("[::1]:4002")
        );
        assert_eq!(at("CA certificate: /tmp/ca.pem"), None);
        assert_eq!(at("mitm listening on ftp://127.0.0.1:1"), None);
    }
}
