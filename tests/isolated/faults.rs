//! Faults survived, and a graceful stop: each fault ends its own flow, the proxy goes on
//! serving, and its file descriptors come back to where they were.

use crate::common;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use mitm::{async_trait, Http, Resolve, SystemResolver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The tests of this file run one at a time: they count the process's descriptors.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Open file descriptors of this process (proxy, origins and clients all live here).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Waits until the descriptor count is back to `baseline` (closing takes the tasks a
/// moment); fails the test if it never is.
async fn fds_back_to(baseline: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = open_fds();
        if now <= baseline {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now} descriptors open, {baseline} before"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain GET through `proxy` to `origin` answers (the proxy goes on serving).
async fn still_serves(proxy: &TestProxy, origin: &Origin) {
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "GET /after HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        origin.port()
    ))
    .await;
    assert_eq!(
        wire.response().await.text(),
        "hello from origin: GET /after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_closes_mid_body_ends_only_its_flow() {
    let _serial = SERIAL.lock().await;
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    still_serves(&proxy, &origin).await;
    let baseline = open_fds();
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 100000\r\n\r\npartial",
        origin.port()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    drop(s);
    fds_back_to(baseline).await;
    still_serves(&proxy, &origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_resets_mid_body_ends_only_its_flow() {
    let _serial = SERIAL.lock().await;
    // An origin that promises 1 MB, sends a little, and goes away.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\nonly this")
                .await;
        }
    });
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    still_serves(&proxy, &origin).await;
    let baseline = open_fds();
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The client gets the head and what came, then the connection ends: it can tell
    // the body is short.
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut got))
        .await
        .expect("the proxy kept a broken response open")
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert!(got.ends_with("only this"), "{got}");
    drop(s);
    fds_back_to(baseline).await;
    still_serves(&proxy, &origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_garbage_after_connect_ends_only_its_flow() {
    let _serial = SERIAL.lock().await;
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    still_serves(&proxy, &origin).await;
    let baseline = open_fds();
    // A target that reads what comes and hangs up, as a TLS server does on nonsense.
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_port = target.local_addr().unwrap().port();
    let hangs_up = tokio::spawn(async move {
        let (mut s, _) = target.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf).await;
    });
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!("CONNECT 127.0.0.1:{target_port} HTTP/1.1\r\n\r\n"))
        .await;
    assert_eq!(wire.response_to("CONNECT").await.status, 200);
    let (mut tcp, _) = wire.into_parts();
    // A TLS record header claiming a handshake, then nonsense.
    tcp.write_all(b"\x16\x03\x01\x00\x10garbage-garbage!")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut rest))
        .await
        .expect("the proxy kept a garbage tunnel open");
    drop(tcp);
    hangs_up.await.unwrap();
    fds_back_to(baseline).await;
    still_serves(&proxy, &origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_lets_a_request_in_flight_finish() {
    let _serial = SERIAL.lock().await;
    // An origin that answers only when told to.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = arrived_tx.send(());
        let _ = released.await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nfinished")
            .await;
    });
    let proxy = start_proxy(|b| b.grace_period(PATIENCE)).await;
    let addr = proxy.addr;
    let client = tokio::spawn(async move {
        let mut wire = Wire::connect(addr).await;
        wire.send(format!(
            "GET /slow HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        ))
        .await;
        wire.response().await
    });
    tokio::time::timeout(PATIENCE, arrived)
        .await
        .unwrap()
        .unwrap();
    // Stop while the request waits on the origin; the listener closes at once.
    let stopping = tokio::spawn(proxy.handle.shutdown());
    let refused = async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(PATIENCE, refused)
        .await
        .expect("the listener stayed open after the stop");
    release.send(()).unwrap();
    let reply = tokio::time::timeout(PATIENCE, client)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.text(), "finished");
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("the proxy did not stop after the request finished")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_gets_504_in_time() {
    let _serial = SERIAL.lock().await;
    let silent = start_silent_origin().await;
    let origin = start_origin().await;
    let limit = Duration::from_secs(1);
    let http = Http::new().response_timeout(limit);
    let proxy = start_proxy(|b| b.protocols(vec![Arc::new(http)])).await;
    still_serves(&proxy, &origin).await;
    let baseline = open_fds();

    let mut wire = Wire::connect(proxy.addr).await;
    let started = Instant::now();
    wire.send(format!(
        "GET /never HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        silent.port()
    ))
    .await;
    let reply = wire.response().await;
    let waited = started.elapsed();
    assert_eq!(reply.status, 504, "{reply:?}");
    let text = reply.text();
    assert!(text.contains("timed out waiting"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", silent.port())),
        "{text}"
    );
    assert!(text.contains("response timeout"), "{text}");
    assert_eq!(
        silent.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // The timeout is what ended the wait: not earlier, and not much later.
    assert!(
        waited >= limit,
        "answered after {waited:?}, before the timeout"
    );
    assert!(waited < limit * 5, "answered only after {waited:?}");
    // The client connection goes on after the 504.
    wire.send(format!(
        "GET /again HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        origin.port()
    ))
    .await;
    assert_eq!(
        wire.response().await.text(),
        "hello from origin: GET /again"
    );
    drop(wire);
    // The silent origin's connection was dropped by the proxy, not kept or pooled.
    fds_back_to(baseline).await;
    still_serves(&proxy, &origin).await;
}

/// Warnings the proxy logs (through `tracing`), kept for tests to read.
fn proxy_log() -> &'static Mutex<Vec<u8>> {
    static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        struct Sink;
        impl io::Write for Sink {
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                LOG.lock().unwrap().extend_from_slice(data);
                Ok(data.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        // The proxy's tasks run on the runtime's worker threads: the subscriber must be
        // the global one. Nothing else in this test binary sets one.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("mitm=warn"))
            .with_ansi(false)
            .with_writer(|| Sink)
            .try_init();
    });
    &LOG
}

/// Waits until a line of the proxy's log contains every one of `words`; returns it.
async fn logged(words: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = String::from_utf8_lossy(&proxy_log().lock().unwrap()).into_owned();
        if let Some(line) = text.lines().find(|l| words.iter().all(|w| l.contains(w))) {
            return line.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line with {words:?}; the log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_ca_ends_only_its_flow() {
    let _serial = SERIAL.lock().await;
    proxy_log();
    let tls_origin = start_tls_origin().await;
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    still_serves(&proxy, &origin).await;
    let baseline = open_fds();

    let mut wire = Wire::connect(proxy.addr).await;
    let host = format!("localhost:{}", tls_origin.port());
    wire.send(format!("CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n"))
        .await;
    assert_eq!(wire.response_to("CONNECT").await.status, 200);
    let (tcp, rest) = wire.into_parts();
    assert!(rest.is_empty(), "{rest:?}");
    // This client trusts no CA at all, so not the proxy's. (Another mitm CA would not
    // do: every generated CA has the same subject name, so rustls would find it as the
    // issuer and report a bad signature instead.)
    let config = rustls::ClientConfig::builder_with_provider(mitm::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let err = tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .expect("the handshake neither finished nor failed")
        .expect_err("a client that does not trust the proxy's CA accepted its leaf");
    let tls = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a TLS error: {err}"));
    assert_eq!(
        tls,
        &rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        "{err}"
    );
    // The client's socket is gone with the failed handshake (dropped by `connect`).
    let line = logged(&["client refused the TLS handshake", "localhost", "UnknownCA"]).await;
    eprintln!("proxy log: {line}");
    fds_back_to(baseline).await;
    still_serves(&proxy, &origin).await;
    // And a client that does trust the CA still gets through.
    let mut wire = Wire::new(tls_through(&proxy, "localhost", tls_origin.port()).await);
    wire.send(format!(
        "GET /trusted HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert_eq!(
        wire.response().await.text(),
        "hello from origin: GET /trusted"
    );
}

/// Resolves like the system resolver, except that names under `.invalid` (reserved by
/// RFC 6761) fail at once, without asking any DNS.
struct NoInvalid;

/// What [`NoInvalid`] says about a name it will not resolve.
const NO_SUCH_HOST: &str = "no such host (test resolver)";

#[async_trait]
impl Resolve for NoInvalid {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if host == "invalid" || host.ends_with(".invalid") {
            return Err(io::Error::new(io::ErrorKind::NotFound, NO_SUCH_HOST));
        }
        SystemResolver.resolve(host, port).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_upstream_gets_502_naming_the_lookup() {
    let _serial = SERIAL.lock().await;
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b.resolver(Arc::new(NoInvalid))).await;
    still_serves(&proxy, &origin).await;
    let baseline = open_fds();

    // A plain request in absolute form: a 502 page, and the connection goes on.
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send("GET http://nowhere.invalid/x HTTP/1.1\r\nHost: nowhere.invalid\r\n\r\n")
        .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 502, "{reply:?}");
    let text = reply.text();
    assert!(
        text.contains("could not resolve the upstream host nowhere.invalid"),
        "{text}"
    );
    assert!(text.contains(NO_SUCH_HOST), "{text}");
    wire.send(format!(
        "GET /next HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        origin.port()
    ))
    .await;
    assert_eq!(wire.response().await.text(), "hello from origin: GET /next");
    drop(wire);

    // CONNECT: the target is sought before the tunnel is granted, so the CONNECT
    // itself gets the page, whatever would have followed (TLS or raw bytes), and the
    // proxy closes the connection after it.
    for port in [443, 80] {
        let mut wire = Wire::connect(proxy.addr).await;
        wire.send(format!(
            "CONNECT nowhere.invalid:{port} HTTP/1.1\r\nHost: nowhere.invalid:{port}\r\n\r\n"
        ))
        .await;
        let reply = wire.response_to("CONNECT").await;
        assert_eq!(reply.status, 502, "{reply:?}");
        let text = reply.text();
        assert!(
            text.contains("could not resolve the upstream host nowhere.invalid"),
            "{text}"
        );
        assert!(text.contains(NO_SUCH_HOST), "{text}");
        assert!(wire.read_to_end().await.is_empty());
    }

    fds_back_to(baseline).await;
    still_serves(&proxy, &origin).await;
}
