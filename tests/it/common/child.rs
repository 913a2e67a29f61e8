//! The `mitm` binary as a child process, for tests that judge the proxy's own
//! descriptors and memory.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::{origin_ca_file, PATIENCE};

/// The `mitm` child process; killed when dropped, also when the test panics.
pub struct ChildProxy {
    pub child: Child,
    pub pid: u32,
    /// The first listener's address.
    pub addr: SocketAddr,
    /// Every listener from the banner: its mode and address.
    pub listeners: Vec<(String, SocketAddr)>,
    pub ca_pem: PathBuf,
    /// The banner's lines up to the CA certificate's.
    pub banner: Vec<String>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for ChildProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildProxy {
    /// Starts `mitm` on a free port with a CA of its own (in a temporary directory),
    /// trusting the test origins' CA upstream, logging nothing, and waits for its
    /// banner.
    pub fn start() -> ChildProxy {
        Self::start_with(&[])
    }

    /// [`start`](Self::start) with more command-line arguments.
    pub fn start_with(args: &[&str]) -> ChildProxy {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = [OsStr::new("--ca-dir"), dir.path().as_os_str()];
        let args = args.iter().map(OsStr::new);
        let mut proxy = Self::start_env(ca_dir.into_iter().chain(args), &[]);
        proxy._dir = Some(dir);
        proxy
    }

    /// Starts `mitm` on a free port with `args` and no CA directory of its own (the
    /// command's defaults, from the environment), with `env` set in its environment,
    /// trusting the test origins' CA upstream, logging nothing; waits for its banner.
    pub fn start_env<'a>(
        args: impl IntoIterator<Item = &'a OsStr>,
        env: &[(&str, &OsStr)],
    ) -> ChildProxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mitm"));
        child
            .args(["--port", "0", "--log", "none", "-q"])
            .arg("--upstream-ca")
            .arg(origin_ca_file())
            .args(args);
        for (name, value) in env {
            child.env(name, value);
        }
        let mut child = child
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start mitm");
        let pid = child.id();
        // Both pipes are drained for as long as the child lives, so it never blocks on
        // a full one.
        let (lines_tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = lines_tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let kept = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                kept.lock().unwrap().push(line);
            }
        });
        // From here on the guard kills the child whatever happens.
        let mut proxy = ChildProxy {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: Vec::new(),
            ca_pem: PathBuf::new(),
            banner: Vec::new(),
            stderr,
            _dir: None,
        };
        let deadline = Instant::now() + PATIENCE;
        let (mut addr, mut ca) = (None, None);
        while addr.is_none() || ca.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "mitm printed no banner; stderr: {:?}",
                    proxy.stderr.lock().unwrap()
                )
            });
            proxy.banner.push(line.clone());
            if let Some((mode, a)) = banner_listener(&line) {
                addr.get_or_insert(a);
                proxy.listeners.push((mode, a));
            }
            if let Some(p) = line.strip_prefix("CA certificate: ") {
                ca = Some(PathBuf::from(p));
            }
        }
        proxy.addr = addr.unwrap();
        proxy.ca_pem = ca.unwrap();
        proxy
    }

    /// SIGINT, as Ctrl-C: the proxy writes what it has queued and exits; waits until
    /// it has, and fails the test unless it exited with code 0.
    pub fn interrupt(&mut self) {
        let sent = Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "mitm: {status}");
    }

    /// The child's open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .expect("the proxy's /proc entry is gone")
            .count()
    }

    /// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("the proxy's /proc entry is gone");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }

    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// Waits until the child has at most `most` descriptors open; fails if it never
    /// does. Returns the count reached.
    pub fn fds_down_to(&self, most: usize, what: &str) -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = self.fds();
            if now <= most {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the proxy still has {now} descriptors open, want at most {most}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A banner line `mitm listening on SCHEME://ADDR (MODE)`: the mode and the address.
pub fn banner_listener(line: &str) -> Option<(String, SocketAddr)> {
    let rest = line.strip_prefix("mitm listening on ")?;
    let (url, mode) = rest.split_once(' ').unwrap_or((rest, "(regular)"));
    let (_, addr) = url.split_once("://")?;
    let addr = addr.parse().expect("address in the banner");
    let mode = mode.trim_start_matches('(').trim_end_matches(')');
    Some((mode.to_string(), addr))
}
