//! End-to-end proxying on loopback: plain HTTP, HTTPS through CONNECT, middlewares,
//! protocol selection and upstream failures.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mitm::DataHooks;
use mitm::{async_trait, Bytes, Connected, Connection, Context, Http, Middleware, Protocol};
use mitm::{BoxIo, Resolution, Target, Tunnel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn plain_get_and_post_reach_an_origin_on_a_non_80_port() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let client = client_via(&proxy);

    let url = format!("http://127.0.0.1:{}/bytes/100000", origin.port());
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_same(&got.bytes().await.unwrap(), &pattern(100_000));

    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let url = format!("http://127.0.0.1:{}/echo", origin.port());
    let got = client.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_same(&got.bytes().await.unwrap(), &body);

    let seen = origin.requests();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[1].method, "POST");
    assert_same(&seen[1].body, &body);
}

#[tokio::test]
async fn host_header_with_its_port_routes_an_origin_form_request() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let request = format!(
        "GET /where HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        origin.port()
    );
    let reply = raw_exchange(proxy.addr, request.as_bytes()).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.ends_with("hello from origin: GET /where"), "{reply}");
}

#[tokio::test]
async fn absolute_uri_routes_to_its_port() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    // The Host header names another port on purpose: the URI wins.
    let request = format!(
        "GET http://127.0.0.1:{}/abs HTTP/1.1\r\nHost: 127.0.0.1:1\r\nConnection: close\r\n\r\n",
        origin.port()
    );
    let reply = raw_exchange(proxy.addr, request.as_bytes()).await;
    let reply = String::from_utf8_lossy(&reply);
    // The origin gets the origin-form target.
    assert!(reply.ends_with("hello from origin: GET /abs"), "{reply}");
}

/// Delegates to [`Http`] and counts `resolve` calls, so a test can tell when the
/// server has looked at a partial head.
struct CountingHttp {
    inner: Http,
    resolves: AtomicUsize,
    changed: tokio::sync::Notify,
}

#[async_trait]
impl Protocol for CountingHttp {
    fn name(&self) -> &'static str {
        "counting-http"
    }
    async fn resolve(&self, conn: &Connection, data: &[u8]) -> Resolution {
        let r = self.inner.resolve(conn, data).await;
        self.resolves.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        r
    }
    async fn connect(
        &self,
        cx: &Context,
        conn: &mut Connection,
        client: BoxIo,
        target: Target,
        data: Bytes,
    ) -> mitm::Result<Connected> {
        self.inner.connect(cx, conn, client, target, data).await
    }
}

#[tokio::test]
async fn a_request_head_split_over_segments_is_recognised() {
    let origin = start_origin().await;
    let http = Arc::new(CountingHttp {
        inner: Http::new(),
        resolves: AtomicUsize::new(0),
        changed: tokio::sync::Notify::new(),
    });
    let proxy = start_proxy(|b| b.protocols(vec![http.clone()])).await;

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // Cut inside the request line, which is what the protocol must see whole.
    s.write_all(b"GET /spl").await.unwrap();
    // Wait until the proxy has judged the first part (and asked for more).
    let judged = async {
        loop {
            let notified = http.changed.notified();
            if http.resolves.load(Ordering::SeqCst) >= 1 {
                return;
            }
            notified.await;
        }
    };
    tokio::time::timeout(PATIENCE, judged).await.unwrap();
    let rest = format!(
        "it HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        origin.port()
    );
    s.write_all(rest.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&reply).ends_with("hello from origin: GET /split"));
    assert!(http.resolves.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn https_through_connect_trusting_only_the_proxy_ca() {
    let origin = start_tls_origin().await;
    let proxy = start_proxy(|b| b).await;
    let client = client_via(&proxy);

    let url = format!("https://localhost:{}/bytes/1000000", origin.port());
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_same(&got.bytes().await.unwrap(), &pattern(1_000_000));

    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let url = format!("https://localhost:{}/echo", origin.port());
    let got = client.post(&url).body(body.clone()).send().await.unwrap();
    assert_same(&got.bytes().await.unwrap(), &body);
}

#[tokio::test]
async fn https_to_an_ip_address_gets_an_ip_leaf() {
    let origin = start_tls_origin_for("127.0.0.1").await;
    let proxy = start_proxy(|b| b).await;
    let client = client_via(&proxy);
    let url = format!("https://127.0.0.1:{}/ip", origin.port());
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "hello from origin: GET /ip");
}

/// Swaps `ping` for `PING` from clients and `hello` for `HELLO` from servers (same
/// lengths, so framing holds).
struct Rewrite;

#[async_trait]
impl Middleware for Rewrite {
    fn data_hooks(&self) -> DataHooks {
        DataHooks::On
    }

    async fn client_data(&self, _conn: &Connection, data: Bytes) -> Bytes {
        replace(&data, b"ping", b"PING")
    }

    async fn server_data(&self, _conn: &Connection, data: Bytes) -> Bytes {
        replace(&data, b"hello", b"HELLO")
    }
}

fn replace(data: &[u8], from: &[u8], to: &[u8]) -> Bytes {
    let mut out = data.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    Bytes::from(out)
}

#[tokio::test]
async fn middleware_changes_arrive_both_ways_in_plain_and_tls() {
    let plain = start_origin().await;
    let tls = start_tls_origin().await;
    let proxy = start_proxy(|b| b.middleware(Arc::new(Rewrite))).await;
    let client = client_via(&proxy);
    for url in [
        format!("http://127.0.0.1:{}/echo", plain.port()),
        format!("https://localhost:{}/echo", tls.port()),
    ] {
        let got = client.post(&url).body("ping pong").send().await.unwrap();
        assert_eq!(got.text().await.unwrap(), "PING pong", "{url}");
        let got = client.get(url.replace("/echo", "/x")).send().await.unwrap();
        let text = got.text().await.unwrap();
        assert!(text.starts_with("HELLO from origin: GET "), "{text}");
        assert!(text.ends_with("/x"), "{text}");
    }
    assert_eq!(plain.requests()[0].body, b"PING pong");
    assert_eq!(tls.requests()[0].body, b"PING pong");
}

/// Drops every byte from the server: nothing reaches the client.
struct Swallow;

#[async_trait]
impl Middleware for Swallow {
    fn data_hooks(&self) -> DataHooks {
        DataHooks::On
    }

    async fn server_data(&self, _conn: &Connection, _data: Bytes) -> Bytes {
        Bytes::new()
    }
}

#[tokio::test]
async fn a_data_hook_can_drop_bytes() {
    // Every byte from the server is dropped: no response reaches the engine, which
    // answers 504 once the origin has had its time.
    let origin = start_origin().await;
    let http = Http::new().response_timeout(Duration::from_millis(300));
    let proxy = start_proxy(|b| {
        b.protocols(vec![Arc::new(http)])
            .middleware(Arc::new(Swallow))
    })
    .await;
    let req = format!(
        "GET /x HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        origin.port()
    );
    let reply = String::from_utf8(raw_exchange(proxy.addr, req.as_bytes()).await).unwrap();
    assert!(reply.starts_with("HTTP/1.1 504 Gateway Timeout"), "{reply}");
    assert!(!reply.contains("hello from origin"), "{reply}");
    assert_eq!(origin.requests().len(), 1);
}

#[tokio::test]
async fn hooks_fire_in_the_documented_order() {
    let origin = start_origin().await;
    let tls = start_tls_origin().await;
    let recorder = Arc::new(Recorder::default());
    let proxy = start_proxy(|b| b.middleware(recorder.clone())).await;

    let req = format!(
        "GET /x HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        origin.port()
    );
    raw_exchange(proxy.addr, req.as_bytes()).await;
    recorder.wait_for(1, "client_disconnected").await;
    let expected = [
        "client_connected",
        "client_data",
        "server_connected",
        "client_data",
        "server_data",
        "server_disconnected",
        "client_disconnected",
    ];
    let got = recorder.of(1);
    // The relay may see the client's end before the server's data or after it; the
    // fixed points are the first bytes, server_connected and the two disconnections.
    assert_eq!(&got[..3], &expected[..3], "{got:?}");
    assert!(got.contains(&"server_data".to_string()), "{got:?}");
    assert_eq!(&got[got.len() - 2..], &expected[5..], "{got:?}");

    // An intercepted CONNECT: the same order, with decrypted data after server_connected.
    let client = client_via(&proxy);
    let url = format!("https://localhost:{}/y", tls.port());
    client.get(&url).send().await.unwrap().text().await.unwrap();
    drop(client);
    recorder.wait_for(2, "client_disconnected").await;
    let got = recorder.of(2);
    assert_eq!(&got[..5], &expected[..5], "{got:?}");
    assert_eq!(&got[got.len() - 2..], &expected[5..], "{got:?}");
}

/// A protocol that never takes a connection.
struct NotMine;

#[async_trait]
impl Protocol for NotMine {
    fn name(&self) -> &'static str {
        "not-mine"
    }
    async fn resolve(&self, _conn: &Connection, _data: &[u8]) -> Resolution {
        Resolution::NotMine
    }
    async fn connect(
        &self,
        _cx: &Context,
        _conn: &mut Connection,
        _client: BoxIo,
        _target: Target,
        _data: Bytes,
    ) -> mitm::Result<Connected> {
        unreachable!("NotMine never accepts")
    }
}

#[tokio::test]
async fn a_protocol_that_says_not_mine_hands_over_to_the_next() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b.protocols(vec![Arc::new(NotMine), Arc::new(Http::new())])).await;
    let req = format!(
        "GET /next HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        origin.port()
    );
    let reply = raw_exchange(proxy.addr, req.as_bytes()).await;
    assert!(String::from_utf8_lossy(&reply).ends_with("hello from origin: GET /next"));
}

#[tokio::test]
async fn when_no_protocol_accepts_the_client_is_closed_cleanly() {
    let recorder = Arc::new(Recorder::default());
    let proxy = start_proxy(|b| {
        b.protocols(vec![Arc::new(NotMine)])
            .middleware(recorder.clone())
    })
    .await;
    let reply = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(reply.is_empty());
    recorder.wait_for(1, "client_disconnected").await;
    assert_eq!(recorder.of(1), ["client_connected", "client_disconnected"]);
}

#[tokio::test]
async fn an_untrusted_upstream_certificate_gives_an_error_and_the_proxy_goes_on() {
    let tls = start_tls_origin().await;
    let plain = start_origin().await;
    // This proxy does not trust the origins' CA.
    let proxy =
        start_proxy(|b| b.upstream_tls(mitm::upstream::UpstreamTls::verified(&[]).unwrap())).await;
    let client = client_via(&proxy);

    let url = format!("https://localhost:{}/secret", tls.port());
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 502);
    let text = got.text().await.unwrap();
    assert!(text.contains("--upstream-ca"), "{text}");
    assert!(!text.contains("hello from origin"), "{text}");
    assert!(tls.requests().is_empty());

    let url = format!("http://127.0.0.1:{}/after", plain.port());
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "hello from origin: GET /after");
}

#[tokio::test]
async fn dangerous_mode_accepts_an_untrusted_upstream() {
    let tls = start_tls_origin().await;
    let proxy = start_proxy(|b| {
        b.upstream_tls(mitm::upstream::UpstreamTls::dangerous_unverified().unwrap())
    })
    .await;
    let client = client_via(&proxy);
    let url = format!("https://localhost:{}/ok", tls.port());
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "hello from origin: GET /ok");
}

#[tokio::test]
async fn a_refused_upstream_gets_a_502_that_says_so() {
    // Bind then drop a listener: its port is now (almost certainly) closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let proxy = start_proxy(|b| b).await;
    let req = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let reply = String::from_utf8(raw_exchange(proxy.addr, req.as_bytes()).await).unwrap();
    assert!(reply.starts_with("HTTP/1.1 502 Bad Gateway"), "{reply}");
    assert!(reply.contains("could not connect"), "{reply}");
}

#[tokio::test]
async fn a_connect_tunnel_relays_a_non_tls_protocol() {
    // An echo service that is not HTTP at all.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
    });
    let proxy = start_proxy(|b| b).await;
    let mut s = open_tunnel(&proxy, port).await;
    s.write_all(b"echo me").await.unwrap();
    let mut back = [0u8; 7];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"echo me");
}

#[tokio::test]
async fn without_keep_alive_the_proxy_closes_the_connection_after_each_response() {
    let origin = start_origin().await;
    // The idle limit stays at its (long) default: only keep-alive being off can close
    // the connection within the test's patience.
    let http = Http::new().keep_alive(false);
    let proxy = start_proxy(|b| b.protocols(vec![Arc::new(http)])).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "GET /x HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        origin.port()
    ))
    .await;
    let reply = wire.response().await;
    assert_eq!(reply.text(), "hello from origin: GET /x");
    assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
    let rest = wire.read_to_end().await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

/// The idle limit of the tests below: long enough that a loaded machine (two shared
/// cores, the rest of the suite running) still moves a byte well within it, with
/// traffic every quarter of it leaving over a second of stall; short enough to wait
/// out a few times.
const IDLE_LIMIT: Duration = Duration::from_millis(1500);
/// How much earlier than [`IDLE_LIMIT`] a client may see the close: the proxy starts
/// counting when it has written its last bytes, before the client has read them, and
/// on a loaded machine the client's read may come late.
const EARLY: Duration = Duration::from_millis(400);

/// Waits for the proxy to close `s` (a reset counts), failing the test after
/// [`PATIENCE`]; returns what came before the end.
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest))
        .await
        .expect("the proxy kept the idle connection open");
    match read {
        Ok(_) => rest,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => rest,
        Err(e) => panic!("reading from the proxy failed: {e}"),
    }
}

#[tokio::test]
async fn a_keep_alive_client_connection_is_closed_after_idling_for_the_idle_timeout() {
    let origin = start_origin().await;
    let http = Http::new().idle_timeout(IDLE_LIMIT);
    let proxy = start_proxy(|b| b.protocols(vec![Arc::new(http)])).await;
    let mut wire = Wire::connect(proxy.addr).await;
    // Requests a quarter of the limit apart, for two limits: never idle for long, the
    // connection stays.
    let opened = Instant::now();
    for n in 0.. {
        wire.send(format!(
            "GET /{n} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            origin.port()
        ))
        .await;
        let reply = wire.response().await;
        assert_eq!(reply.text(), format!("hello from origin: GET /{n}"));
        if opened.elapsed() > IDLE_LIMIT * 2 {
            break;
        }
        tokio::time::sleep(IDLE_LIMIT / 4).await;
    }
    // Then silence: the proxy closes, without a word, once the limit has passed.
    let quiet = Instant::now();
    let (mut tcp, rest) = wire.into_parts();
    assert!(rest.is_empty(), "{rest:?}");
    let rest = until_closed(&mut tcp).await;
    let waited = quiet.elapsed();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(
        waited >= IDLE_LIMIT - EARLY,
        "closed after {waited:?} idle, before the {IDLE_LIMIT:?} limit"
    );
}

/// A raw TCP service on 127.0.0.1 that echoes each connection's bytes back: its port.
async fn start_echo() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// Relays every client, bytes as they are, to 127.0.0.1:`port`, through the default
/// [`Protocol::handle`] and with keep-alive off: the relay is closed once no byte has
/// moved either way for [`IDLE_LIMIT`].
struct IdleRelay {
    port: u16,
}

#[async_trait]
impl Protocol for IdleRelay {
    fn name(&self) -> &'static str {
        "idle-relay"
    }
    fn timeout(&self) -> Duration {
        IDLE_LIMIT
    }
    fn keep_alive(&self) -> bool {
        false
    }
    async fn resolve(&self, _conn: &Connection, _data: &[u8]) -> Resolution {
        Resolution::Accept(Target::new("127.0.0.1", self.port, false))
    }
    async fn connect(
        &self,
        cx: &Context,
        conn: &mut Connection,
        client: BoxIo,
        target: Target,
        data: Bytes,
    ) -> mitm::Result<Connected> {
        let mut server = cx.connect(conn, &target, PATIENCE).await?;
        // The first bytes were read to resolve the connection: they go first.
        server
            .write_all(&data)
            .await
            .map_err(|source| mitm::Error::Io {
                side: mitm::Side::Server,
                source,
            })?;
        Ok(Connected::Tunnel(Tunnel::new(client, Box::new(server))))
    }
}

/// A client of a proxy speaking only [`IdleRelay`] to an echo service, after its first
/// bytes (`ping`) have come back.
async fn relayed_client() -> (TestProxy, TcpStream) {
    let port = start_echo().await;
    let relay = IdleRelay { port };
    let proxy = start_proxy(|b| b.protocols(vec![Arc::new(relay)])).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut back))
        .await
        .expect("no echo in time")
        .expect("the relay closed before echoing");
    assert_eq!(&back, b"ping");
    (proxy, s)
}

#[tokio::test]
async fn a_relay_without_keep_alive_is_closed_after_its_timeout_of_silence() {
    let (_proxy, mut s) = relayed_client().await;
    // The echo was the last byte to move.
    let quiet = Instant::now();
    let rest = until_closed(&mut s).await;
    let waited = quiet.elapsed();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        waited >= IDLE_LIMIT - EARLY,
        "closed after {waited:?} of silence, before the {IDLE_LIMIT:?} limit"
    );
}

#[tokio::test]
async fn a_relay_without_keep_alive_stays_open_while_bytes_move() {
    let (_proxy, mut s) = relayed_client().await;
    // A byte each way every quarter of the limit, for two limits.
    let opened = Instant::now();
    while opened.elapsed() <= IDLE_LIMIT * 2 {
        tokio::time::sleep(IDLE_LIMIT / 4).await;
        s.write_all(b"x").await.unwrap();
        let mut back = [0u8; 1];
        tokio::time::timeout(PATIENCE, s.read_exact(&mut back))
            .await
            .expect("no echo in time")
            .unwrap_or_else(|e| {
                let after = opened.elapsed();
                panic!("the relay closed after {after:?} though bytes kept moving: {e}")
            });
        assert_eq!(&back, b"x");
    }
}

#[tokio::test]
async fn the_upstream_connect_timeout_is_its_own_setting() {
    // A TLS origin that accepts TCP and never answers the handshake: connecting to it
    // never completes. The head timeout stays at its (long) default.
    let silent = start_silent_origin().await;
    let http = Http::new().connect_timeout(Duration::from_millis(300));
    let proxy = start_proxy(|b| b.protocols(vec![Arc::new(http)])).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "GET https://127.0.0.1:{}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        silent.port()
    ))
    .await;
    let asked = std::time::Instant::now();
    let reply = wire.response().await;
    // Well before the 15 s default, which is what a setting not applied would give.
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(reply.status, 504, "{reply:?}");
    assert!(
        reply.text().contains("timed out connecting"),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn a_client_stalling_its_tls_handshake_is_cut_off_by_the_handshake_timeout() {
    let origin = start_tls_origin().await;
    let http = Http::new().handshake_timeout(Duration::from_millis(300));
    let proxy = start_proxy(|b| b.protocols(vec![Arc::new(http)])).await;
    let mut s = open_tunnel(&proxy, origin.port()).await;
    // The start of a ClientHello record, and then nothing.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let mut rest = Vec::new();
    // Well before the 15 s default, which is what a setting not applied would give.
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("the proxy kept a stalled handshake open")
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

/// Sends `data` through a raw `CONNECT` tunnel to an echo service, closing the sending
/// half at the end; returns what came back before the tunnel closed.
async fn echo_through_tunnel(proxy: &TestProxy, data: Vec<u8>) -> Vec<u8> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        // The client's end arrived (a half-close): answer with one of our own.
        w.shutdown().await.unwrap();
    });
    let (mut r, mut w) = open_tunnel(proxy, port).await.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
        w
    });
    let mut back = Vec::new();
    tokio::time::timeout(PATIENCE, r.read_to_end(&mut back))
        .await
        .expect("the tunnel did not pass the half-close on")
        .unwrap();
    drop(writer.await.unwrap());
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_tunnel_carries_megabytes_both_ways_and_passes_half_closes_on() {
    // Zero-copy (splice) on Linux by default, and the buffered copy.
    for zero_copy in [true, false] {
        let http = Http::new().zero_copy(zero_copy);
        let proxy = start_proxy(|b| b.protocols(vec![Arc::new(http)])).await;
        let data = pattern(8 << 20);
        let back = echo_through_tunnel(&proxy, data.clone()).await;
        assert_same(&back, &data);
    }
}

/// Opens a `CONNECT` tunnel through `proxy` to 127.0.0.1:`port` and reads the proxy's
/// `200`, leaving the stream at the tunnel's first byte.
async fn open_tunnel(proxy: &TestProxy, port: u16) -> TcpStream {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let connect = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    s.write_all(connect.as_bytes()).await.unwrap();
    let expected = b"HTTP/1.1 200 Connection established\r\n\r\n";
    let mut head = vec![0u8; expected.len()];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head, expected);
    s
}
