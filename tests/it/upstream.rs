//! Upstream proxies: the proxy sends its traffic on through a real HTTP proxy
//! (tinyproxy, whose own log tells what it carried), through an HTTPS proxy (a fixture
//! here), and chooses per request with a middleware's `route` hook. Several listeners in
//! one process, and `--mode` on the command line.

use crate::common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use mitm::{async_trait, Connection, Http, IgnoreHosts, Listener, Route, Target};
use mitm::{HttpHandler, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use common::*;

/// A tinyproxy process on a loopback port, killed when dropped.
pub(crate) struct Tinyproxy {
    pub(crate) port: u16,
    log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tinyproxy {
    /// Starts tinyproxy, asking clients for `credentials` if given, and waits until it
    /// accepts connections. `None` when tinyproxy is not installed (and the test may
    /// skip).
    pub(crate) async fn start(credentials: Option<(&str, &str)>) -> Option<Tinyproxy> {
        // tinyproxy takes `-v`, not `--version`.
        let present = Command::new("tinyproxy")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success());
        if !require_tool(present, "tinyproxy", "apt-get install tinyproxy") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tinyproxy.log");
        // tinyproxy drops to `nobody` when started as root: let it write its log.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let port = refused_port();
        let mut config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Info\n\
             MaxClients 100\nAllow 127.0.0.1\n",
            log.display()
        );
        // No `ConnectPort` line: CONNECT to any port (test origins have random ones).
        if let Some((user, password)) = credentials {
            config.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start tinyproxy");
        let mut proxy = Tinyproxy {
            port,
            log,
            child,
            _dir: dir,
        };
        wait_for_port(port, &mut proxy.child).await;
        Some(proxy)
    }

    /// A route through it, with `credentials` if given.
    fn route(&self, credentials: Option<(&str, &str)>) -> Route {
        let userinfo = credentials.map_or(String::new(), |(u, p)| format!("{u}:{p}@"));
        format!("http://{userinfo}127.0.0.1:{}", self.port)
            .parse()
            .unwrap()
    }

    /// What it logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Waits until something accepts connections on `port` of 127.0.0.1, failing the test
/// if `child` exits first or it takes longer than [`PATIENCE`].
async fn wait_for_port(port: u16, child: &mut Child) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the peer server exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A proxy whose one listener sends everything through `route`.
async fn proxy_via(route: Route) -> TestProxy {
    start_proxy(|b| b.listener(Listener::new("upstream", vec![Arc::new(Http::new())]).route(route)))
        .await
}

#[tokio::test]
async fn plain_http_goes_to_an_http_upstream_proxy_in_absolute_form_with_its_credentials() {
    let Some(tiny) = Tinyproxy::start(Some(("alice", "s3cret"))).await else {
        return;
    };
    let origin = start_origin().await;
    let proxy = proxy_via(tiny.route(Some(("alice", "s3cret")))).await;
    let client = client_via(&proxy);
    for i in 0..3 {
        let url = format!("http://127.0.0.1:{}/plain/{i}", origin.port());
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.text().await.unwrap();
        assert_eq!(body, format!("hello from origin: GET /plain/{i}"));
    }
    let log = tiny.log();
    for i in 0..3 {
        let line = format!("GET http://127.0.0.1:{}/plain/{i} HTTP/1.1", origin.port());
        assert!(
            log.contains(&line),
            "tinyproxy did not log {line:?}:\n{log}"
        );
    }
    // The requests reached the origin through tinyproxy, which does not pass the
    // credentials on.
    let seen = origin.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen
        .iter()
        .all(|s| s.header("proxy-authorization").is_none()));
}

#[tokio::test]
async fn https_is_intercepted_inside_a_connect_tunnel_through_an_http_upstream_proxy() {
    let Some(tiny) = Tinyproxy::start(None).await else {
        return;
    };
    let origin = start_tls_origin().await;
    let hooks = Arc::new(Paths::default());
    let route = tiny.route(None);
    let proxy = start_proxy(|b| {
        b.http_handler(hooks.clone())
            .listener(Listener::new("upstream", vec![Arc::new(Http::new())]).route(route))
    })
    .await;
    let client = client_via(&proxy);
    let url = format!("https://localhost:{}/secret", origin.port());
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "hello from origin: GET /secret"
    );
    let log = tiny.log();
    let connect = format!("CONNECT localhost:{} HTTP/1.1", origin.port());
    assert!(
        log.contains(&connect),
        "tinyproxy did not log {connect:?}:\n{log}"
    );
    // Inside the upstream tunnel the proxy still saw the request.
    // (The `CONNECT` came through the hook too, its path the authority.)
    let paths = hooks.0.lock().unwrap().clone();
    assert_eq!(
        paths.last().map(String::as_str),
        Some("/secret"),
        "{paths:?}"
    );
}

#[tokio::test]
async fn https_over_http2_and_pass_through_tls_use_the_upstream_proxy_too() {
    if !require_tool(have("curl"), "curl", "apt-get install curl") {
        return;
    }
    let Some(tiny) = Tinyproxy::start(None).await else {
        return;
    };
    let origin = start_tls_origin().await;
    let passed = start_tls_origin().await;
    let route = tiny.route(None);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("proxy-ca.pem");
    let ignore = IgnoreHosts::new([format!("^localhost:{}$", passed.port())]).unwrap();
    let proxy = start_proxy(|b| {
        b.router(Arc::new(ignore))
            .listener(Listener::new("upstream", vec![Arc::new(Http::new())]).route(route))
    })
    .await;
    std::fs::write(&ca_file, proxy.ca.cert_pem()).unwrap();
    let port = origin.port();
    // HTTP/2 between curl and the proxy, the origin reached through tinyproxy.
    let out = curl(&[
        "--http2",
        "-x",
        &proxy.url(),
        "--cacert",
        ca_file.to_str().unwrap(),
        "-w",
        " %{http_version}",
        &format!("https://localhost:{port}/h2"),
    ])
    .await;
    assert_eq!(out, "hello from origin: GET /h2 2");
    // Let through untouched: curl sees the origin's own certificate, so it must
    // trust the origin's CA; the bytes still go through tinyproxy.
    let out = curl(&[
        "-x",
        &proxy.url(),
        "--cacert",
        origin_ca_file().to_str().unwrap(),
        &format!("https://localhost:{}/passed", passed.port()),
    ])
    .await;
    assert_eq!(out, "hello from origin: GET /passed");
    // The intercepted origin shows the proxy's leaf, which that CA does not sign.
    let refused = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-x", &proxy.url(), "--cacert"])
        .arg(origin_ca_file())
        .arg(format!("https://localhost:{port}/intercepted"))
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success(), "{refused:?}");
    let log = tiny.log();
    for port in [port, passed.port()] {
        let connect = format!("CONNECT localhost:{port} HTTP/1.1");
        assert!(
            log.contains(&connect),
            "tinyproxy did not log {connect:?}:\n{log}"
        );
    }
}

/// Records the path of every request its `request` hook sees.
#[derive(Default)]
struct Paths(std::sync::Mutex<Vec<String>>);

#[async_trait]
impl HttpHandler for Paths {
    async fn request(&self, _conn: &Connection, flow: &mut mitm::HttpFlow) -> mitm::Verdict {
        self.0.lock().unwrap().push(flow.request.path.clone());
        mitm::Verdict::Continue
    }
}

/// Runs curl with `args`, returning its output; fails the test when curl fails. (Not
/// blocking the test's runtime, on which the proxy runs too.)
async fn curl(args: &[&str]) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .await
        .expect("cannot run curl");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn websocket_goes_through_an_http_upstream_proxy_in_a_tunnel() {
    let Some(tiny) = Tinyproxy::start(None).await else {
        return;
    };
    let origin = start_origin().await;
    let proxy = proxy_via(tiny.route(None)).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let url = format!("ws://127.0.0.1:{}/chat", origin.port());
    let (mut ws, response) =
        tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(url.as_str(), tcp))
            .await
            .expect("the WebSocket handshake timed out")
            .expect("the WebSocket handshake failed");
    assert_eq!(response.status(), 101);
    ws.send(Message::text("through two proxies")).await.unwrap();
    let echoed = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("no echo")
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("through two proxies"));
    let log = tiny.log();
    let connect = format!("CONNECT 127.0.0.1:{} HTTP/1.1", origin.port());
    assert!(
        log.contains(&connect),
        "tinyproxy did not log {connect:?}:\n{log}"
    );
}

#[tokio::test]
async fn an_upstream_proxys_refusal_is_a_502_that_names_the_hop() {
    let Some(tiny) = Tinyproxy::start(Some(("alice", "s3cret"))).await else {
        return;
    };
    let plain = start_origin().await;
    let tls = start_tls_origin().await;
    // No credentials: tinyproxy answers 407 (to wrong ones it says 401).
    let proxy = proxy_via(tiny.route(None)).await;
    // A plain request: tinyproxy's 407 is the upstream hop's failure, not a question
    // for the client.
    let mut wire = Wire::connect(proxy.addr).await;
    let target = format!("127.0.0.1:{}", plain.port());
    wire.send(format!(
        "GET http://{target}/x HTTP/1.1\r\nHost: {target}\r\n\r\n"
    ))
    .await;
    let reply = wire.response_to("GET").await;
    assert_eq!(reply.status, 502, "{reply:?}");
    let body = String::from_utf8_lossy(&reply.body);
    assert!(
        body.contains("upstream proxy") && body.contains("407"),
        "{body}"
    );
    assert!(reply.header("proxy-authenticate").is_none(), "{reply:?}");
    // A CONNECT: refused before the client's tunnel is answered.
    let mut wire = Wire::connect(proxy.addr).await;
    let target = format!("localhost:{}", tls.port());
    wire.send(format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    ))
    .await;
    let reply = wire.response_to("CONNECT").await;
    assert_eq!(reply.status, 502, "{reply:?}");
    let body = String::from_utf8_lossy(&reply.body);
    assert!(
        body.contains("refused CONNECT") && body.contains("407"),
        "{body}"
    );
    assert_eq!(plain.requests().len() + tls.requests().len(), 0);
}

#[tokio::test]
async fn an_unreachable_upstream_proxy_is_named_in_the_error_page() {
    let origin = start_origin().await;
    let route: Route = format!("http://127.0.0.1:{}", refused_port())
        .parse()
        .unwrap();
    let proxy = proxy_via(route).await;
    let mut wire = Wire::connect(proxy.addr).await;
    let target = format!("127.0.0.1:{}", origin.port());
    wire.send(format!(
        "GET http://{target}/x HTTP/1.1\r\nHost: {target}\r\n\r\n"
    ))
    .await;
    let reply = wire.response_to("GET").await;
    assert_eq!(reply.status, 502, "{reply:?}");
    let body = String::from_utf8_lossy(&reply.body);
    assert!(body.contains("proxy http://127.0.0.1:"), "{body}");
    assert!(origin.requests().is_empty());
}

/// Sends the host `localhost` through a route, the rest (`127.0.0.1`) as the listener
/// says. (Names tinyproxy resolves itself.)
struct ByHost(Route);

#[async_trait]
impl Router for ByHost {
    async fn route(&self, _conn: &Connection, target: &Target) -> Option<Route> {
        (target.host == "localhost").then(|| self.0.clone())
    }
}

#[tokio::test]
async fn a_route_hook_sends_two_hosts_two_ways_in_one_run() {
    let Some(tiny) = Tinyproxy::start(None).await else {
        return;
    };
    let origin = start_origin().await;
    let port = origin.port();
    let by_host = Arc::new(ByHost(tiny.route(None)));
    let proxy = start_proxy(|b| b.router(by_host)).await;
    let client = client_via(&proxy);
    for host in ["localhost", "127.0.0.1"] {
        for _ in 0..2 {
            let url = format!("http://{host}:{port}/{host}");
            let response = client.get(&url).send().await.unwrap();
            assert_eq!(response.status(), 200, "{host}");
        }
    }
    let log = tiny.log();
    assert_eq!(
        log.matches(&format!("GET http://localhost:{port}/localhost"))
            .count(),
        2,
        "{log}"
    );
    assert!(!log.contains(&format!("127.0.0.1:{port}/")), "{log}");
    assert_eq!(origin.requests().len(), 4);
}

/// An HTTPS proxy for tests: TLS with a certificate for `localhost` from the origins'
/// CA, then `CONNECT` only. Records the targets it was asked for.
struct HttpsProxy {
    port: u16,
    asked: Arc<std::sync::Mutex<Vec<String>>>,
}

async fn start_https_proxy() -> HttpsProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(origin_ca().server_config("localhost").unwrap());
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if tls.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let target = head
                    .strip_prefix("CONNECT ")
                    .and_then(|rest| rest.split(' ').next())
                    .unwrap_or_default()
                    .to_string();
                seen.lock().unwrap().push(target.clone());
                let Ok(mut upstream) =
                    TcpStream::connect(target.replace("localhost", "127.0.0.1")).await
                else {
                    let _ = tls.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                if tls
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    HttpsProxy { port, asked }
}

#[tokio::test]
async fn an_https_upstream_proxy_is_verified_and_carries_the_tunnel() {
    let origin = start_tls_origin().await;
    let https = start_https_proxy().await;
    let route: Route = format!("https://localhost:{}", https.port).parse().unwrap();
    let proxy = proxy_via(route).await;
    let client = client_via(&proxy);
    let url = format!("https://localhost:{}/over-tls", origin.port());
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "hello from origin: GET /over-tls"
    );
    let asked = https.asked.lock().unwrap().clone();
    assert_eq!(asked, vec![format!("localhost:{}", origin.port())]);

    // A proxy whose certificate the proxy does not trust is refused, and said so.
    let distrusting = start_proxy(|b| {
        b.upstream_tls(mitm::UpstreamTls::verified(&[]).unwrap())
            .listener(
                Listener::new("upstream", vec![Arc::new(Http::new())])
                    .route(format!("https://localhost:{}", https.port).parse().unwrap()),
            )
    })
    .await;
    let mut wire = Wire::connect(distrusting.addr).await;
    let target = format!("localhost:{}", origin.port());
    wire.send(format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    ))
    .await;
    let reply = wire.response_to("CONNECT").await;
    assert_eq!(reply.status, 502, "{reply:?}");
    let body = String::from_utf8_lossy(&reply.body);
    assert!(body.contains("TLS"), "{body}");
    assert_eq!(https.asked.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn two_listeners_serve_at_once_with_their_own_routes() {
    let Some(tiny) = Tinyproxy::start(None).await else {
        return;
    };
    let origin = start_origin().await;
    let route = tiny.route(None);
    let proxy = start_proxy(|b| {
        b.listener(Listener::new("regular", vec![Arc::new(Http::new())]))
            .listener(
                Listener::new("upstream", vec![Arc::new(Http::new())])
                    .at("127.0.0.1", 0)
                    .route(route),
            )
    })
    .await;
    assert_eq!(proxy.addrs.len(), 2);
    assert_ne!(proxy.addrs[0], proxy.addrs[1]);
    let port = origin.port();
    // One after the other: the direct listener's connection to the origin, idle in the
    // pool, is not the upstream listener's to take (the pool keys by route).
    for (addr, path) in [
        (proxy.addrs[0], "direct-first"),
        (proxy.addrs[1], "upstream-next"),
    ] {
        let mut wire = Wire::connect(addr).await;
        wire.send(format!(
            "GET http://127.0.0.1:{port}/{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        ))
        .await;
        assert_eq!(wire.response_to("GET").await.status, 200, "{path}");
    }
    let log = tiny.log();
    assert!(log.contains("/upstream-next"), "{log}");
    // Both at once: a request held open on the first while the second serves.
    let mut first = Wire::connect(proxy.addrs[0]).await;
    let mut second = Wire::connect(proxy.addrs[1]).await;
    for (wire, path) in [(&mut first, "direct"), (&mut second, "upstream")] {
        wire.send(format!(
            "GET http://127.0.0.1:{port}/{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        ))
        .await;
    }
    for (wire, path) in [(&mut second, "upstream"), (&mut first, "direct")] {
        let reply = wire.response_to("GET").await;
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        assert_eq!(
            String::from_utf8_lossy(&reply.body),
            format!("hello from origin: GET /{path}")
        );
    }
    let log = tiny.log();
    assert!(
        log.contains(&format!("GET http://127.0.0.1:{port}/upstream")),
        "{log}"
    );
    assert!(!log.contains("/direct"), "{log}");
}

#[test]
fn the_command_line_takes_modes_and_prints_a_line_per_listener() {
    let tiny_port = refused_port();
    let child = ChildProxy::start_with(&[
        "--mode",
        "regular",
        "--mode",
        &format!("upstream:http://127.0.0.1:{tiny_port}@0"),
    ]);
    let modes: Vec<&str> = child.listeners.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        modes,
        ["regular", &format!("upstream:http://127.0.0.1:{tiny_port}")],
        "{:?}",
        child.listeners
    );
    assert_ne!(child.listeners[0].1, child.listeners[1].1);
}

#[test]
fn the_command_line_refuses_bad_modes_with_a_reason() {
    for (args, says) in [
        (vec!["--mode", "upsteam:http://h:1"], "unknown mode"),
        (vec!["--mode", "reverse"], "needs a URL"),
        (
            vec!["--mode", "regular", "--mode", "upstream:http://h:1"],
            "give all but one of them an address of its own",
        ),
        (vec!["--mode", "upstream:http://u:hunter2@h:1:2"], "invalid"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mitm"))
            .args(["--port", "0", "--ca-dir"])
            .arg(tempfile::tempdir().unwrap().path())
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{args:?}: {stderr}");
    }
}
