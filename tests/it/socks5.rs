//! SOCKS5 on both sides of the proxy, on loopback: the `Socks5` protocol as curl and
//! raw sockets see it (address types, credentials, bad input answered with the RFC's
//! reply codes, tunnels where the server speaks first), and upstream SOCKS5 proxies
//! (microsocks, with credentials; the proxy's own `Socks5` too) reached through a
//! middleware's route.
//!
//! Tests that drive curl or microsocks skip, saying so, where they are not installed
//! (a failure instead with `MITM_REQUIRE_TOOLS=1`).

use crate::common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mitm::{async_trait, Connection, MitmBuilder, Resolve, Route, Socks5, Target};
use mitm::{HttpHandler, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CURL_INSTALL: &str = "apt-get install curl";

/// A proxy on 127.0.0.1:0 speaking only SOCKS5 (with [`start_proxy`]'s defaults:
/// a fresh CA, trusting the test origins' CA upstream).
async fn socks_proxy(configure: impl FnOnce(MitmBuilder) -> MitmBuilder) -> TestProxy {
    start_proxy(|b| configure(b.protocols(vec![Arc::new(Socks5::new())]))).await
}

/// The proxy's CA certificate in a PEM file, for curl's `--cacert`.
fn ca_file(proxy: &TestProxy) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy-ca.pem");
    std::fs::write(&path, proxy.ca.cert_pem()).unwrap();
    (dir, path)
}

/// What curl did: its exit code, stdout and stderr.
struct Curl {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs curl with `args` (and `--silent --show-error`), within [`PATIENCE`].
async fn curl(args: &[&str]) -> Curl {
    let out = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "15"])
            .args(args)
            .output(),
    )
    .await
    .expect("curl took too long")
    .expect("curl runs");
    Curl {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs curl and returns what it printed, failing the test if curl failed.
async fn curl_ok(args: &[&str]) -> String {
    let out = curl(args).await;
    assert_eq!(
        out.code,
        Some(0),
        "curl {args:?} failed: {}{}",
        out.stderr,
        out.stdout
    );
    out.stdout
}

/// Records the target of every route decision: the targets the proxy reached.
#[derive(Default)]
struct Targets(Mutex<Vec<String>>);

impl Targets {
    /// The targets in order, each once in a row: a tunnel and the plain requests inside
    /// it ask for the same target.
    fn all(&self) -> Vec<String> {
        let mut all = self.0.lock().unwrap().clone();
        all.dedup();
        all
    }
}

#[async_trait]
impl Router for Targets {
    async fn route(&self, _conn: &Connection, target: &Target) -> Option<Route> {
        self.0.lock().unwrap().push(target.to_string());
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_socks5_hostname_reaches_plain_and_tls_origins() {
    if !require_tool(have("curl"), "curl", CURL_INSTALL) {
        return;
    }
    let plain = start_origin().await;
    let tls = start_tls_origin().await;
    let targets = Arc::new(Targets::default());
    let proxy = socks_proxy(|b| b.router(targets.clone())).await;
    let (_dir, ca) = ca_file(&proxy);
    let socks = proxy.addr.to_string();

    let url = format!("http://localhost:{}/plain", plain.port());
    let got = curl_ok(&["--socks5-hostname", &socks, &url]).await;
    assert_eq!(got, "hello from origin: GET /plain");

    // curl trusts only the proxy's CA: the TLS inside the tunnel was intercepted.
    let url = format!("https://localhost:{}/secret", tls.port());
    let ca = ca.to_str().unwrap();
    let got = curl_ok(&["--socks5-hostname", &socks, "--cacert", ca, &url]).await;
    assert_eq!(got, "hello from origin: GET /secret");
    assert_eq!(tls.requests()[0].target, "/secret");

    // The names went to the proxy as names.
    let all = targets.all();
    assert_eq!(all[0], format!("localhost:{}", plain.port()), "{all:?}");
    assert_eq!(all[1], format!("localhost:{}", tls.port()), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_socks5_with_an_ipv4_address_reaches_plain_and_tls_origins() {
    if !require_tool(have("curl"), "curl", CURL_INSTALL) {
        return;
    }
    let plain = start_origin().await;
    let tls = start_tls_origin().await;
    let targets = Arc::new(Targets::default());
    let proxy = socks_proxy(|b| b.router(targets.clone())).await;
    let (_dir, ca) = ca_file(&proxy);
    let socks = proxy.addr.to_string();

    let url = format!("http://127.0.0.1:{}/v4", plain.port());
    let got = curl_ok(&["--socks5", &socks, &url]).await;
    assert_eq!(got, "hello from origin: GET /v4");

    // curl resolves the name itself and sends the address; the name still reaches the
    // proxy by SNI, for the leaf and for the origin's certificate.
    let url = format!("https://localhost:{}/v4-tls", tls.port());
    let pin = format!("localhost:{}:127.0.0.1", tls.port());
    let ca = ca.to_str().unwrap();
    let args = ["--socks5", &socks, "--resolve", &pin, "--cacert", ca, &url];
    let got = curl_ok(&args).await;
    assert_eq!(got, "hello from origin: GET /v4-tls");

    let all = targets.all();
    assert_eq!(all[0], format!("127.0.0.1:{}", plain.port()), "{all:?}");
    assert_eq!(all[1], format!("127.0.0.1:{}", tls.port()), "{all:?}");
}

/// A one-request HTTP origin on `[::1]`, or `None` when the machine has no IPv6
/// loopback.
async fn start_ipv6_origin() -> Option<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("[::1]:0").await.ok()?;
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let request = Wire::new(&mut s).request().await;
            if let Some((line, _)) = request {
                let body = format!("v6 origin: {line}");
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
            }
        }
    });
    Some((addr, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_socks5_reaches_an_ipv6_target() {
    if !require_tool(have("curl"), "curl", CURL_INSTALL) {
        return;
    }
    let Some((origin, task)) = start_ipv6_origin().await else {
        eprintln!("skipped: this machine has no IPv6 loopback ([::1] cannot be bound)");
        return;
    };
    let targets = Arc::new(Targets::default());
    let proxy = socks_proxy(|b| b.router(targets.clone())).await;
    let url = format!("http://[::1]:{}/six", origin.port());
    let got = curl_ok(&["--socks5", &proxy.addr.to_string(), &url]).await;
    assert_eq!(got, "v6 origin: GET /six HTTP/1.1");
    assert_eq!(targets.all()[0], format!("[::1]:{}", origin.port()));
    task.abort();
}

#[tokio::test]
async fn an_ipv6_request_is_answered_with_the_bound_ipv6_address() {
    let Some((origin, task)) = start_ipv6_origin().await else {
        eprintln!("skipped: this machine has no IPv6 loopback ([::1] cannot be bound)");
        return;
    };
    let proxy = socks_proxy(|b| b).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut request = vec![5, 1, 0, 5, 1, 0, 4];
    request.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    request.extend_from_slice(&origin.port().to_be_bytes());
    // HTTP inside the tunnel is served by the proxy: `close` ends the connection after
    // the response.
    request.extend_from_slice(b"GET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(&request).await.unwrap();
    let got = read_all(&mut s).await;
    assert_eq!(&got[..2], [5, 0]);
    // Succeeded, with the proxy's end of its connection to [::1] as the bound address.
    assert_eq!(&got[2..6], [5, 0, 0, 4]);
    assert_eq!(&got[6..22], std::net::Ipv6Addr::LOCALHOST.octets());
    let text = String::from_utf8_lossy(&got[24..]);
    assert!(text.ends_with("v6 origin: GET /raw HTTP/1.1"), "{text}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_the_right_credentials_passes_and_others_reach_nothing() {
    if !require_tool(have("curl"), "curl", CURL_INSTALL) {
        return;
    }
    let origin = start_origin().await;
    let proxy = socks_proxy(|b| b.proxy_auth("alice", "s3cret")).await;
    let url = format!("http://127.0.0.1:{}/in", origin.port());
    let at = proxy.addr;

    for proxy_url in [
        format!("socks5h://{at}"),
        format!("socks5h://alice:wrong@{at}"),
        format!("socks5h://mallory:s3cret@{at}"),
    ] {
        let out = curl(&["--proxy", &proxy_url, &url]).await;
        assert_ne!(out.code, Some(0), "{proxy_url} got through: {}", out.stdout);
    }
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    let proxy_url = format!("socks5h://alice:s3cret@{at}");
    let got = curl_ok(&["--proxy", &proxy_url, &url]).await;
    assert_eq!(got, "hello from origin: GET /in");
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

/// Everything `s` sends until it closes (a reset counts as a close).
async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(PATIENCE, s.read(&mut chunk))
            .await
            .expect("the proxy neither answered nor closed in time");
        match read {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("reading from the proxy failed: {e}"),
        }
    }
}

/// Sends `bytes` to the proxy on a new connection and returns everything it answers
/// before closing.
async fn exchange(proxy: &TestProxy, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_all(&mut s).await
}

/// The reply with `code` and no bound address: `0.0.0.0:0`.
fn failure(code: u8) -> [u8; 10] {
    [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

#[tokio::test]
async fn credentials_are_checked_on_the_wire() {
    let origin = start_origin().await;
    let proxy = socks_proxy(|b| b.proxy_auth("alice", "s3cret")).await;
    let port = origin.port().to_be_bytes();
    let request = [5, 1, 0, 1, 127, 0, 0, 1, port[0], port[1]];

    // No username/password offered: no acceptable method, and closed.
    let got = exchange(&proxy, &[5, 1, 0]).await;
    assert_eq!(got, [5, 0xFF]);

    // Wrong password: a failure status, and closed, whatever comes after.
    let mut wrong = vec![5, 2, 0, 2, 1, 5];
    wrong.extend_from_slice(b"alice\x06s3cre7");
    wrong.extend_from_slice(&request);
    assert_eq!(exchange(&proxy, &wrong).await, [5, 2, 1, 1]);

    // A bad sub-negotiation version.
    let got = exchange(&proxy, b"\x05\x01\x02\x05\x05alice\x06s3cret").await;
    assert_eq!(got, [5, 2, 1, 1]);
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    let mut right = vec![5, 1, 2, 1, 5];
    right.extend_from_slice(b"alice\x06s3cret");
    right.extend_from_slice(&request);
    right.extend_from_slice(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let got = exchange(&proxy, &right).await;
    assert_eq!(&got[..6], [5, 2, 1, 0, 5, 0]);
    let text = String::from_utf8_lossy(&got[14..]);
    assert!(text.ends_with("hello from origin: GET /ok"), "{text}");
}

#[tokio::test]
async fn bad_input_gets_the_rfc_reply_and_a_close() {
    let origin = start_origin().await;
    let proxy = socks_proxy(|b| b).await;
    let port = origin.port().to_be_bytes();

    // A request of another version.
    let got = exchange(
        &proxy,
        &[5, 1, 0, 4, 1, 0, 1, 127, 0, 0, 1, port[0], port[1]],
    )
    .await;
    assert_eq!(got[..2], [5, 0]);
    assert_eq!(got[2..], failure(0x01));

    // An unknown address type.
    let got = exchange(&proxy, &[5, 1, 0, 5, 1, 0, 9, 127, 0, 0, 1, 0, 80]).await;
    assert_eq!(got[2..], failure(0x08));

    // BIND, UDP ASSOCIATE and unknown commands are not supported.
    for command in [2, 3, 9] {
        let got = exchange(&proxy, &[5, 1, 0, 5, command, 0, 1, 127, 0, 0, 1, 0, 80]).await;
        assert_eq!(got[2..], failure(0x07), "command {command}");
    }

    // A greeting offering no method.
    assert_eq!(exchange(&proxy, &[5, 0]).await, [5, 0xFF]);

    // Not SOCKS5 at all (SOCKS4): no protocol takes it, closed without a word.
    let got = exchange(&proxy, &[4, 1, 0, 80, 127, 0, 0, 1, 0]).await;
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn a_truncated_greeting_waits_for_the_rest_or_the_end() {
    let proxy = socks_proxy(|b| b).await;

    // The end comes first: nothing was asked, nothing is answered.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[5, 2, 0]).await.unwrap();
    s.shutdown().await.unwrap();
    assert!(read_all(&mut s).await.is_empty());

    // The rest comes: the greeting is answered once it is whole.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[5, 2, 0]).await.unwrap();
    s.flush().await.unwrap();
    s.write_all(&[2]).await.unwrap();
    let mut answer = [0u8; 2];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, [5, 0]);
}

#[tokio::test]
async fn unreachable_targets_get_their_reply_codes() {
    let proxy = socks_proxy(|b| b.resolver(Arc::new(NoSuchHost))).await;
    let port = refused_port().to_be_bytes();
    let got = exchange(
        &proxy,
        &[5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, port[0], port[1]],
    )
    .await;
    assert_eq!(got[2..], failure(0x05), "connection refused");

    let mut request = vec![5, 1, 0, 5, 1, 0, 3, 15];
    request.extend_from_slice(b"nowhere.invalid\x00\x50");
    let got = exchange(&proxy, &request).await;
    assert_eq!(got[2..], failure(0x04), "host unreachable");

    // The proxy itself: it would loop.
    let me = proxy.addr.port().to_be_bytes();
    let got = exchange(&proxy, &[5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, me[0], me[1]]).await;
    assert_eq!(got[2..], failure(0x02), "not allowed");
}

/// A resolver that knows only IP literals and `localhost`: other names do not exist.
struct NoSuchHost;

#[async_trait]
impl Resolve for NoSuchHost {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        if host == "localhost" {
            return Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]);
        }
        match host.parse() {
            Ok(ip) => Ok(vec![SocketAddr::new(ip, port)]),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no such host {host}"),
            )),
        }
    }
}

/// An origin that greets first with `banner`, then echoes what it gets.
async fn start_banner_origin(banner: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if s.write_all(banner).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, task)
}

/// A SOCKS5 `CONNECT` to 127.0.0.1:`port` with no authentication, checked to succeed.
async fn socks_connect(proxy: &TestProxy, port: u16) -> TcpStream {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let p = port.to_be_bytes();
    s.write_all(&[5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, p[0], p[1]])
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut answer))
        .await
        .expect("no SOCKS5 answer in time")
        .unwrap();
    assert_eq!(answer[..6], [5, 0, 5, 0, 0, 1], "{answer:?}");
    s
}

#[tokio::test]
async fn a_server_that_speaks_first_is_relayed_through_the_tunnel() {
    let (origin, task) = start_banner_origin(b"220 banner ready\r\n").await;
    let proxy = socks_proxy(|b| b).await;
    let mut s = socks_connect(&proxy, origin.port()).await;
    let mut banner = [0u8; 18];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut banner))
        .await
        .expect("no banner in time")
        .unwrap();
    assert_eq!(&banner, b"220 banner ready\r\n");
    s.write_all(b"EHLO me\r\n").await.unwrap();
    let mut echo = [0u8; 9];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"EHLO me\r\n");
    task.abort();
}

#[tokio::test]
async fn bytes_sent_with_the_request_reach_the_target() {
    let (origin, task) = start_banner_origin(b"").await;
    let proxy = socks_proxy(|b| b).await;
    let p = origin.port().to_be_bytes();
    // Greeting, request and the first bytes for the target in one write.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut all = vec![5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, p[0], p[1]];
    all.extend_from_slice(b"early bytes");
    s.write_all(&all).await.unwrap();
    let mut got = [0u8; 12 + 11];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got[..6], [5, 0, 5, 0, 0, 1]);
    assert_eq!(&got[12..], b"early bytes");
    task.abort();
}

#[test]
fn the_fuzz_seeds_are_whole_handshakes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/socks5_handshake");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let steps = mitm::internals::parse_socks5_handshake(&data);
        // Greeting, sub-negotiation and request, all three whole.
        assert_eq!(steps, 3, "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 4);
}

// Upstream SOCKS5 proxies.

/// Sends every connection through one route.
struct Via(Route);

#[async_trait]
impl Router for Via {
    async fn route(&self, _conn: &Connection, _target: &Target) -> Option<Route> {
        Some(self.0.clone())
    }
}

/// Whether `program` is an executable file on the `PATH` (microsocks has no
/// `--version` for [`have`]).
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A microsocks server on loopback, killed when dropped.
struct Microsocks {
    child: std::process::Child,
    port: u16,
}

impl Drop for Microsocks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Microsocks {
    /// Starts microsocks on a free loopback port, asking for `user` and `password`, and
    /// waits until it accepts connections.
    async fn start(user: &str, password: &str) -> Microsocks {
        let port = refused_port();
        let child = std::process::Command::new("microsocks")
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-u", user, "-P", password])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cannot start microsocks");
        let mut server = Microsocks { child, port };
        let deadline = Instant::now() + PATIENCE;
        // Waits on the port itself: the server is ready when it accepts.
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("microsocks exited before listening on {port}: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "microsocks never listened on {port}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server
    }

    fn route(&self, user: &str, password: &str) -> Route {
        let url = format!("socks5://{user}:{password}@127.0.0.1:{}", self.port);
        url.parse().unwrap()
    }
}

#[tokio::test]
async fn upstream_socks5_with_credentials_carries_plain_and_tls() {
    if !require_tool(
        on_path("microsocks"),
        "microsocks",
        "apt-get install microsocks",
    ) {
        return;
    }
    let socks = Microsocks::start("hop", "pass word").await;
    let plain = start_origin().await;
    let tls = start_tls_origin_for("127.0.0.1").await;
    let via = Arc::new(Via(socks.route("hop", "pass%20word")));
    let proxy = start_proxy(|b| b.router(via)).await;
    let client = client_via(&proxy);

    let url = format!("http://127.0.0.1:{}/through", plain.port());
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), "hello from origin: GET /through");

    let url = format!("https://127.0.0.1:{}/secret", tls.port());
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), "hello from origin: GET /secret");
    assert_eq!(tls.requests()[0].target, "/secret");
}

#[tokio::test]
async fn upstream_socks5_failures_name_the_hop_in_the_page() {
    if !require_tool(
        on_path("microsocks"),
        "microsocks",
        "apt-get install microsocks",
    ) {
        return;
    }
    let socks = Microsocks::start("hop", "right").await;
    let origin = start_origin().await;

    let wrong = Arc::new(Via(socks.route("hop", "wrong")));
    let proxy = start_proxy(|b| b.router(wrong)).await;
    let url = format!("http://127.0.0.1:{}/", origin.port());
    let got = client_via(&proxy).get(&url).send().await.unwrap();
    assert_eq!(got.status(), 502);
    let page = got.text().await.unwrap();
    let hop = format!("socks5://hop:***@127.0.0.1:{}", socks.port);
    assert!(page.contains(&hop), "{page}");
    assert!(page.contains("authentication failed"), "{page}");
    assert!(!page.contains("wrong"), "the password shows: {page}");
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    let right = Arc::new(Via(socks.route("hop", "right")));
    let proxy = start_proxy(|b| b.router(right)).await;
    let url = format!("http://127.0.0.1:{}/", refused_port());
    let got = client_via(&proxy).get(&url).send().await.unwrap();
    assert_eq!(got.status(), 502);
    let page = got.text().await.unwrap();
    assert!(page.contains(&hop), "{page}");
    assert!(page.contains("connection refused"), "{page}");
}

#[tokio::test]
async fn the_proxy_chains_through_its_own_socks5_server() {
    // The upstream: a SOCKS5 proxy of this crate, with credentials and a resolver
    // that knows no names but localhost.
    let upstream =
        socks_proxy(|b| b.proxy_auth("up", "stream").resolver(Arc::new(NoSuchHost))).await;
    let plain = start_origin().await;
    let route: Route = format!("socks5://up:stream@{}", upstream.addr)
        .parse()
        .unwrap();
    let proxy = start_proxy(|b| b.router(Arc::new(Via(route)))).await;
    let client = client_via(&proxy);

    let url = format!("http://localhost:{}/chained", plain.port());
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "hello from origin: GET /chained");

    let got = client.get("http://nowhere.invalid/").send().await.unwrap();
    assert_eq!(got.status(), 502);
    assert!(got.text().await.unwrap().contains("host unreachable"));

    let url = format!("http://127.0.0.1:{}/", refused_port());
    let got = client.get(&url).send().await.unwrap();
    assert!(got.text().await.unwrap().contains("connection refused"));
}

/// A Dante server (`danted`) on loopback letting loopback clients through without
/// authentication (its username method checks the system's users, which a test should
/// not create), stopped when dropped.
struct Dante {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Dante {
    fn drop(&mut self) {
        // SIGTERM, so that the server takes its child processes down with it.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Dante {
    const PATH: &'static str = "/usr/sbin/danted";

    async fn start() -> Dante {
        let dir = tempfile::tempdir().unwrap();
        let port = refused_port();
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        // As root Dante must be told which users to be; otherwise it stays who it is.
        let users = if root {
            "user.privileged: root\nuser.unprivileged: nobody\n"
        } else {
            ""
        };
        let config = format!(
            "logoutput: stderr\n\
             internal: 127.0.0.1 port = {port}\n\
             external: 127.0.0.1\n\
             clientmethod: none\n\
             socksmethod: none\n\
             {users}\
             client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
             socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n"
        );
        let path = dir.path().join("danted.conf");
        std::fs::write(&path, config).unwrap();
        let child = std::process::Command::new(Self::PATH)
            .arg("-f")
            .arg(&path)
            .args(["-N", "1", "-p"])
            .arg(dir.path().join("danted.pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cannot start danted");
        let mut server = Dante {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + PATIENCE;
        // Waits on the port itself: the server is ready when it accepts.
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("danted exited before listening on {port}: {status}");
            }
            assert!(Instant::now() < deadline, "danted never listened on {port}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server
    }
}

#[tokio::test]
async fn upstream_dante_carries_plain_and_tls_and_says_why_it_failed() {
    let installed = std::path::Path::new(Dante::PATH).is_file();
    if !require_tool(installed, "Dante", "apt-get install dante-server") {
        return;
    }
    let dante = Dante::start().await;
    let plain = start_origin().await;
    let tls = start_tls_origin_for("127.0.0.1").await;
    let route: Route = format!("socks5://127.0.0.1:{}", dante.port)
        .parse()
        .unwrap();
    let proxy = start_proxy(|b| b.router(Arc::new(Via(route)))).await;
    let client = client_via(&proxy);

    let url = format!("http://127.0.0.1:{}/dante", plain.port());
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "hello from origin: GET /dante");

    let url = format!("https://127.0.0.1:{}/dante-tls", tls.port());
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(
        got.text().await.unwrap(),
        "hello from origin: GET /dante-tls"
    );

    let url = format!("http://127.0.0.1:{}/", refused_port());
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 502);
    let page = got.text().await.unwrap();
    let hop = format!("upstream proxy socks5://127.0.0.1:{}", dante.port);
    assert!(page.contains(&hop), "{page}");
    assert!(page.contains("connection refused"), "{page}");
}

/// Marks every response it sees, and records the requests.
#[derive(Default)]
struct Mark(Mutex<Vec<String>>);

#[async_trait]
impl HttpHandler for Mark {
    async fn request(&self, _conn: &Connection, flow: &mut mitm::HttpFlow) -> mitm::Verdict {
        let line = format!("{} {}", flow.request.method, flow.request.path);
        self.0.lock().unwrap().push(line);
        mitm::Verdict::Continue
    }

    async fn response(&self, _conn: &Connection, flow: &mut mitm::HttpFlow) -> mitm::Verdict {
        if let Some(response) = flow.response.as_mut() {
            response.headers.insert("X-Seen-By", "mitm");
        }
        mitm::Verdict::Continue
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_through_socks5_goes_through_the_message_hooks() {
    if !require_tool(have("curl"), "curl", CURL_INSTALL) {
        return;
    }
    let origin = start_origin().await;
    let mark = Arc::new(Mark::default());
    let proxy = socks_proxy(|b| b.http_handler(mark.clone())).await;
    let url = format!("http://localhost:{}/plain", origin.port());
    let got = curl_ok(&["-i", "--socks5-hostname", &proxy.addr.to_string(), &url]).await;
    assert!(
        got.to_ascii_lowercase().contains("x-seen-by: mitm"),
        "{got}"
    );
    assert!(got.ends_with("hello from origin: GET /plain"), "{got}");
    assert_eq!(*mark.0.lock().unwrap(), ["GET /plain"]);
}

/// Opens tunnels to no target at all.
struct NoTunnels;

#[async_trait]
impl Router for NoTunnels {
    async fn tunnel(&self, _conn: &Connection, target: &Target) -> mitm::TunnelVerdict {
        mitm::TunnelVerdict::Refuse(format!("no tunnels to {}", target.host))
    }
}

/// A router refuses a SOCKS5 target before it is connected: the client is told
/// "connection not allowed by ruleset" (02), and the target sees no connection.
#[tokio::test]
async fn a_router_refuses_a_socks5_target_before_connecting() {
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = target.local_addr().unwrap().port();
    let proxy = socks_proxy(|b| b.router(Arc::new(NoTunnels))).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await.unwrap();
    assert_eq!(choice, [5, 0]);
    let mut request = vec![5, 1, 0, 1, 127, 0, 0, 1];
    request.extend_from_slice(&port.to_be_bytes());
    s.write_all(&request).await.unwrap();
    let mut reply = [0u8; 10];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut reply))
        .await
        .expect("no SOCKS5 reply")
        .unwrap();
    assert_eq!(reply[..2], [5, 2], "reply {reply:?}");
    // Had the proxy connected before answering, the connection would be waiting here.
    let accepted = tokio::time::timeout(Duration::ZERO, target.accept()).await;
    assert!(accepted.is_err(), "the proxy connected a refused target");
}
