//! `block_global` and `block_private` with real clients from real addresses: two
//! network namespaces of the test's own, linked by a veth pair, where the client has a
//! public address (`1.2.3.4`, global as Python's `ipaddress` sees it) and a private
//! one (`10.77.0.4`). Nothing leaves the two namespaces.
//!
//! ```text
//!  client ns                      proxy ns
//!  1.2.3.4     ──veth──  1.2.3.1   mitm on 0.0.0.0, origin on 127.0.0.1
//!  10.77.0.4             10.77.0.1
//! ```
//!
//! Linux only, as root, with `ip` and `curl`; a missing tool skips (or fails, under
//! `MITM_REQUIRE_TOOLS`), a kernel that refuses namespaces skips with a message.
#![cfg(target_os = "linux")]

use std::net::SocketAddr;
use std::process::Output;

use crate::common::{self, require_tool, PATIENCE};
use crate::transparent::{answers, client_namespace, in_ns, ip, must, run, InNamespace};
use mitm::{CertificateAuthority, Mitm, MitmBuilder};

const PROXY_PUBLIC: &str = "1.2.3.1";
const CLIENT_PUBLIC: &str = "1.2.3.4";
const PROXY_PRIVATE: &str = "10.77.0.1";
const CLIENT_PRIVATE: &str = "10.77.0.4";

/// The two namespaces; dropping it deletes them and their link.
struct Pair {
    client: String,
    proxy: String,
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.client, &self.proxy] {
            let _ = ip(&["netns", "del", ns]).output();
        }
    }
}

impl Pair {
    /// `None` (after saying why) when a tool is missing or the kernel refuses.
    fn build() -> Option<Pair> {
        for (present, what, install) in [
            (
                answers("ip", "-V"),
                "ip (iproute2)",
                "apt-get install iproute2",
            ),
            (answers("curl", "--version"), "curl", "apt-get install curl"),
        ] {
            if !require_tool(present, what, install) {
                return None;
            }
        }
        let (tag, client) = client_namespace('b', "the block test")?;
        let pair = Pair {
            client,
            proxy: format!("mitm-b{tag}-proxy"),
        };
        must(&mut ip(&["netns", "add", &pair.proxy]));
        let (c_if, p_if) = (format!("b{tag}c"), format!("b{tag}p"));
        must(&mut ip(&[
            "link",
            "add",
            &c_if,
            "netns",
            &pair.client,
            "type",
            "veth",
            "peer",
            "name",
            &p_if,
            "netns",
            &pair.proxy,
        ]));
        for (ns, dev, public, private) in [
            (&pair.client, &c_if, CLIENT_PUBLIC, CLIENT_PRIVATE),
            (&pair.proxy, &p_if, PROXY_PUBLIC, PROXY_PRIVATE),
        ] {
            must(&mut ip(&["-n", ns, "link", "set", "lo", "up"]));
            for addr in [public, private] {
                let addr = format!("{addr}/24");
                must(&mut ip(&["-n", ns, "addr", "add", &addr, "dev", dev]));
            }
            must(&mut ip(&["-n", ns, "link", "set", dev, "up"]));
        }
        Some(pair)
    }

    /// `curl ARGS…` from the client's namespace, from `source`, through the proxy at
    /// `proxy_port` (by its address on the same network as `source`), to `url`.
    fn curl(&self, source: &str, proxy_port: u16, url: &str, extra: &[&str]) -> Output {
        let proxy_ip = if source == CLIENT_PUBLIC {
            PROXY_PUBLIC
        } else {
            PROXY_PRIVATE
        };
        let proxy = format!("http://{proxy_ip}:{proxy_port}");
        let max_time = PATIENCE.as_secs().to_string();
        let mut args = vec![
            "-sS",
            "-i",
            "--max-time",
            &max_time,
            "--interface",
            source,
            "-x",
            &proxy,
        ];
        args.extend_from_slice(extra);
        args.push(url);
        run(&mut in_ns(&self.client, "curl", &args))
    }
}

/// An origin on the proxy namespace's loopback and a proxy on all its addresses,
/// configured by `configure`; dropping the guard stops both.
fn start(pair: &Pair, configure: fn(MitmBuilder) -> MitmBuilder) -> (InNamespace, (u16, u16)) {
    InNamespace::start(&pair.proxy, move || async move {
        let origin = common::start_origin_at(SocketAddr::from(([127, 0, 0, 1], 0)), None).await;
        let ca = std::sync::Arc::new(CertificateAuthority::generate().unwrap());
        let builder = Mitm::builder()
            .host("0.0.0.0")
            .port(0)
            .certificate_authority(ca)
            .middlewares(vec![]);
        let proxy = configure(builder).bind().await.unwrap();
        let ports = (origin.port(), proxy.local_addr().port());
        let handle = proxy.spawn();
        ((origin, handle), ports)
    })
}

/// The status code of curl's `-i` output, with the whole output for messages.
fn status(out: &Output) -> (u16, String) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let all = format!("{text}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    (code, all)
}

#[test]
fn a_public_client_is_refused_by_default_and_a_private_one_served() {
    let Some(pair) = Pair::build() else { return };
    let (_running, (origin, proxy)) = start(&pair, |b| b);
    let url = format!("http://127.0.0.1:{origin}/hello");

    let (code, text) = status(&pair.curl(CLIENT_PUBLIC, proxy, &url, &[]));
    assert_eq!(code, 403, "{text}");
    assert!(
        text.contains("block_global"),
        "the answer names the option: {text}"
    );

    let (code, text) = status(&pair.curl(CLIENT_PRIVATE, proxy, &url, &[]));
    assert_eq!(code, 200, "{text}");
}

#[test]
fn a_public_client_is_served_once_proxy_auth_is_on() {
    let Some(pair) = Pair::build() else { return };
    let (_running, (origin, proxy)) = start(&pair, |b| b.proxy_auth("user", "secret"));
    let url = format!("http://127.0.0.1:{origin}/hello");

    let (code, text) = status(&pair.curl(CLIENT_PUBLIC, proxy, &url, &["-U", "user:secret"]));
    assert_eq!(code, 200, "{text}");
    // Without credentials it is asked for them, not refused by address.
    let (code, text) = status(&pair.curl(CLIENT_PUBLIC, proxy, &url, &[]));
    assert_eq!(code, 407, "{text}");
}

#[test]
fn block_global_off_serves_a_public_client() {
    let Some(pair) = Pair::build() else { return };
    let (_running, (origin, proxy)) = start(&pair, |b| b.block_global(false));
    let url = format!("http://127.0.0.1:{origin}/hello");
    let (code, text) = status(&pair.curl(CLIENT_PUBLIC, proxy, &url, &[]));
    assert_eq!(code, 200, "{text}");
}

#[test]
fn block_private_refuses_a_private_client_and_https_clients_are_closed() {
    let Some(pair) = Pair::build() else { return };
    let (_running, (origin, proxy)) = start(&pair, |b| b.block_private(true));
    let url = format!("http://127.0.0.1:{origin}/hello");
    let (code, text) = status(&pair.curl(CLIENT_PRIVATE, proxy, &url, &[]));
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("block_private"), "{text}");
    // A CONNECT is refused before it is answered: the client sees the 403 too.
    let tls = format!("https://127.0.0.1:{origin}/");
    let out = pair.curl(CLIENT_PUBLIC, proxy, &tls, &["-k"]);
    assert!(!out.status.success(), "{}", status(&out).1);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("403"),
        "{}",
        status(&out).1
    );
}

#[test]
fn a_refused_socks5_client_is_told_no_method_is_acceptable() {
    let Some(pair) = Pair::build() else { return };
    let (_running, (origin, proxy)) = start(&pair, |b| {
        b.protocols(vec![std::sync::Arc::new(mitm::Socks5::new())])
    });
    let url = format!("http://127.0.0.1:{origin}/hello");
    let max_time = PATIENCE.as_secs().to_string();
    let through = |source: &str, proxy_ip: &str| {
        let socks = format!("socks5://{proxy_ip}:{proxy}");
        let args = [
            "-sS",
            "--max-time",
            &max_time,
            "--interface",
            source,
            "-x",
            &socks,
            &url,
        ];
        run(&mut in_ns(&pair.client, "curl", &args))
    };
    let refused = through(CLIENT_PUBLIC, PROXY_PUBLIC);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("authentication method"), "curl said: {said}");
    let served = through(CLIENT_PRIVATE, PROXY_PRIVATE);
    assert!(
        served.status.success(),
        "{}",
        String::from_utf8_lossy(&served.stderr)
    );
}

/// `mitm` (the command) listening on all addresses of the proxy's namespace, with its
/// log lines; killed when dropped.
struct Command {
    child: std::process::Child,
    port: u16,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _ca: tempfile::TempDir,
}

impl Drop for Command {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Command {
    fn start(pair: &Pair, args: &[&str]) -> Command {
        use std::io::BufRead;
        let ca = tempfile::tempdir().unwrap();
        let ca_dir = ca.path().to_string_lossy().into_owned();
        let mut all = vec!["--host", "0.0.0.0", "--port", "0", "--ca-dir", &ca_dir];
        all.extend_from_slice(args);
        let mut child = in_ns(&pair.proxy, env!("CARGO_BIN_EXE_mitm"), &all)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        // The banner names the port; the rest of stdout is drained so it never blocks.
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let port = line
                    .strip_prefix("mitm listening on http://0.0.0.0:")
                    .and_then(|rest| rest.split(' ').next()?.parse::<u16>().ok());
                if let Some(port) = port {
                    let _ = port_tx.send(port);
                }
            }
        });
        let port = port_rx.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            panic!(
                "mitm printed no banner; stderr: {:?}",
                stderr.lock().unwrap()
            )
        });
        Command {
            child,
            port,
            stderr,
            _ca: ca,
        }
    }

    /// The log lines that contain `text`, once at least one does.
    fn lines_with(&self, text: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let lines: Vec<String> = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(text))
                .cloned()
                .collect();
            if !lines.is_empty() {
                return lines;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {text:?}: {:?}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Only an origin, in the proxy's namespace.
fn start_origin_only(pair: &Pair) -> (InNamespace, u16) {
    InNamespace::start(&pair.proxy, || async {
        let origin = common::start_origin_at(SocketAddr::from(([127, 0, 0, 1], 0)), None).await;
        let port = origin.port();
        (origin, port)
    })
}

#[test]
fn the_command_refuses_a_public_client_with_one_log_line_and_block_global_false_serves_it() {
    let Some(pair) = Pair::build() else { return };
    let (_origin, origin) = start_origin_only(&pair);
    let url = format!("http://127.0.0.1:{origin}/hello");

    let mitm = Command::start(&pair, &[]);
    let (code, text) = status(&pair.curl(CLIENT_PUBLIC, mitm.port, &url, &[]));
    assert_eq!(code, 403, "{text}");
    let lines = mitm.lines_with("block_global");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(CLIENT_PUBLIC) && lines[0].contains("--block-global false"),
        "the line names the client and how to allow it: {lines:?}"
    );
    drop(mitm);

    let mitm = Command::start(&pair, &["--block-global", "false"]);
    let (code, text) = status(&pair.curl(CLIENT_PUBLIC, mitm.port, &url, &[]));
    assert_eq!(code, 200, "{text}");
}
