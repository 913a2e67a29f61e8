//! Who may use the proxy, and how much: proxy authentication, the connection limit,
//! and the refusal of requests addressed to the proxy itself.

use crate::common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `Basic` credentials for `user:pass`.
const CREDENTIALS: &str = "Basic dXNlcjpwYXNz";

#[tokio::test]
async fn proxy_auth_asks_for_credentials_on_plain_requests() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b.proxy_auth("user", "pass")).await;
    let mut wire = Wire::connect(proxy.addr).await;
    let url = format!("http://127.0.0.1:{}/private", origin.port());
    wire.send(format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n"))
        .await;
    let refused = wire.response().await;
    assert_eq!(refused.status, 407, "{refused:?}");
    assert_eq!(
        refused.header("proxy-authenticate"),
        Some("Basic realm=\"mitm\"")
    );
    assert!(origin.requests().is_empty());
    // The same connection goes on, now with credentials.
    wire.send(format!(
        "GET {url} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: {CREDENTIALS}\r\n\r\n"
    ))
    .await;
    let ok = wire.response().await;
    assert_eq!(ok.text(), "hello from origin: GET /private");
    // Credentials are for the proxy: the origin never sees them.
    assert_eq!(origin.requests()[0].header("proxy-authorization"), None);
}

#[tokio::test]
async fn proxy_auth_asks_for_credentials_on_connect() {
    let origin = start_tls_origin().await;
    let proxy = start_proxy(|b| b.proxy_auth("user", "pass")).await;
    let connect = format!(
        "CONNECT localhost:{0} HTTP/1.1\r\nHost: localhost:{0}\r\n",
        origin.port()
    );
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!("{connect}\r\n")).await;
    assert_eq!(wire.response_to("CONNECT").await.status, 407);
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "{connect}Proxy-Authorization: Basic d3Jvbmc6d3Jvbmc=\r\n\r\n"
    ))
    .await;
    assert_eq!(wire.response_to("CONNECT").await.status, 407);
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "{connect}Proxy-Authorization: {CREDENTIALS}\r\n\r\n"
    ))
    .await;
    assert_eq!(wire.response_to("CONNECT").await.status, 200);
}

#[tokio::test]
async fn a_request_addressed_to_the_proxy_itself_is_refused() {
    let proxy = start_proxy(|b| b).await;
    for host in [
        format!("127.0.0.1:{}", proxy.addr.port()),
        format!("localhost:{}", proxy.addr.port()),
    ] {
        let mut wire = Wire::connect(proxy.addr).await;
        wire.send(format!(
            "GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n\r\n"
        ))
        .await;
        let reply = wire.response().await;
        assert_eq!(reply.status, 508, "{host}: {reply:?}");
        assert!(reply.text().contains("loop"), "{}", reply.text());
    }
    let mut wire = Wire::connect(proxy.addr).await;
    let port = proxy.addr.port();
    wire.send(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n"))
        .await;
    assert_eq!(wire.response_to("CONNECT").await.status, 508);
}

#[tokio::test]
async fn connections_past_the_limit_are_refused_and_the_others_served() {
    let origin = start_origin().await;
    // Three places: two clients, and room for one upstream connection at a time.
    let proxy = start_proxy(|b| b.max_connections(3)).await;
    // Two connections the proxy holds (each waiting for its first request)...
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    // ...wait until both are accepted: a third is then closed at once.
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(PATIENCE, third.read(&mut byte))
        .await
        .expect("the connection past the limit was left waiting")
        .unwrap_or(0);
    assert_eq!(n, 0);
    for mut s in held {
        let req = format!(
            "GET /held HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            origin.port()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(PATIENCE, s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&out).ends_with("hello from origin: GET /held"));
    }
}

/// Records each finished flow: method, status, and whether it carries an error.
#[derive(Default)]
struct Finished(std::sync::Mutex<Vec<String>>);

#[mitm::async_trait]
impl mitm::HttpHandler for Finished {
    async fn flow_finished(&self, _conn: &mitm::Connection, flow: &mitm::HttpFlow) {
        let status = flow.response.as_ref().map_or(0, |r| r.status);
        let error = flow.error.as_ref().map_or("-".into(), |e| e.to_string());
        let line = format!("{} {status} {error}", flow.request.method);
        self.0.lock().unwrap().push(line);
    }
}

/// The answers the proxy gives before an exchange (407 without credentials, 508 for a
/// request to itself) are flows too: the hooks see them, with the error that says why,
/// and the connection goes on after a 407 to a request without a body.
#[tokio::test]
async fn refusals_before_an_exchange_are_flows_the_hooks_see() {
    let origin = start_origin().await;
    let finished = std::sync::Arc::new(Finished::default());
    let proxy = start_proxy(|b| b.proxy_auth("user", "pass").http_handler(finished.clone())).await;
    let mut wire = Wire::connect(proxy.addr).await;
    let url = format!("http://127.0.0.1:{}/private", origin.port());
    wire.send(format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n"))
        .await;
    assert_eq!(wire.response().await.status, 407);
    // The connection goes on: a request to the proxy itself, with credentials.
    wire.send(format!(
        "GET http://{addr}/self HTTP/1.1\r\nHost: {addr}\r\nProxy-Authorization: {CREDENTIALS}\r\n\r\n",
        addr = proxy.addr
    ))
    .await;
    assert_eq!(wire.response().await.status, 508);
    assert!(origin.requests().is_empty());
    assert_eq!(
        finished.0.lock().unwrap().clone(),
        [
            "GET 407 proxy authentication required: the client sent no valid Proxy-Authorization"
                .to_string(),
            format!(
                "GET 508 the request for {} is addressed to the proxy itself: it would loop",
                proxy.addr
            ),
        ]
    );
}
