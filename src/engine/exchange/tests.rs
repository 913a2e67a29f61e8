//! The timeouts of a client connection, on paused time: the client is an in-memory
//! stream and the clock only moves when every task waits, so each limit is checked to
//! the millisecond without a wall-clock wait. The magic host lets an exchange complete
//! without any origin.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::serve_h1::{serve, Served, Start};
use crate::core::{Connection, Host};
use crate::engine::context::Context;
use crate::http::settings::Settings;
use crate::http::target::Scope;
use crate::middleware::Chain;
use crate::tls::ca::CertificateAuthority;
use crate::upstream::{SystemResolver, UpstreamTls, Upstreams};

/// A context with no middlewares, and the switch that stops its server.
fn context() -> (Context, watch::Sender<bool>) {
    let (stop, stopping) = watch::channel(false);
    let upstreams = Upstreams::new(
        Arc::new(SystemResolver),
        Arc::new(UpstreamTls::dangerous_unverified().unwrap()),
        Arc::new(Semaphore::new(100)),
        100,
    );
    let cx = Context {
        chain: Chain::new(crate::middleware::Hooks::new()),
        ca: Arc::new(CertificateAuthority::generate().unwrap()),
        upstreams,
        route: crate::upstream::route::Route::Direct,
        proxy_auth: None,
        proxy_credentials: None,
        local_addrs: Arc::from([]),
        stopping,
        fail_open: None,
        ids: Default::default(),
        key_log: None,
    };
    (cx, stop)
}

fn settings() -> Settings {
    Settings {
        timeout: Duration::from_secs(15),
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        ..Settings::default()
    }
}

/// Serves the proxy side of `server` as the HTTP protocol does; returns when the
/// connection ends.
async fn serve_proxy(cx: &Context, settings: &Settings, server: DuplexStream) -> Served {
    let mut conn = Connection::new(1, Host::default());
    serve(
        cx,
        settings,
        &mut conn,
        Box::new(server),
        Bytes::new(),
        Scope::Proxy,
        Start::Nothing,
    )
    .await
    .unwrap()
}

/// Reads until the proxy closes its side: what it sent.
async fn read_to_close(client: &mut DuplexStream) -> String {
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(start_paused = true)]
async fn a_head_begun_and_not_finished_is_cut_off_after_the_timeout() {
    let (cx, _stop) = context();
    let settings = settings();
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let start = Instant::now();
    let client_side = async {
        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        read_to_close(&mut client).await
    };
    let (served, sent) = tokio::join!(serve_proxy(&cx, &settings, server), client_side);
    assert!(matches!(served, Served::Closed));
    assert_eq!(sent, "", "a slow head gets no answer, only the close");
    assert_eq!(start.elapsed().as_secs(), 15);
}

#[tokio::test(start_paused = true)]
async fn a_keep_alive_client_idle_between_requests_is_closed_after_the_idle_timeout() {
    let (cx, _stop) = context();
    let settings = settings();
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let start = Instant::now();
    let client_side = async {
        client
            .write_all(b"GET http://mitm.it/ HTTP/1.1\r\nHost: mitm.it\r\n\r\n")
            .await
            .unwrap();
        read_to_close(&mut client).await
    };
    let (served, sent) = tokio::join!(serve_proxy(&cx, &settings, server), client_side);
    assert!(matches!(served, Served::Closed));
    // Answered (at once), then closed exactly when the idle limit ran out.
    assert!(sent.starts_with("HTTP/1.1 200 OK\r\n"), "{sent}");
    assert!(sent.contains("mitm CA certificate"), "{sent}");
    assert_eq!(start.elapsed().as_secs(), 30);
}

#[tokio::test(start_paused = true)]
async fn a_stopping_server_closes_a_keep_alive_client_at_once() {
    let (cx, stop) = context();
    let settings = settings();
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let start = Instant::now();
    let client_side = async {
        client
            .write_all(b"GET http://mitm.it/ HTTP/1.1\r\nHost: mitm.it\r\n\r\n")
            .await
            .unwrap();
        // Wait for the whole answer, then stop the server while the client idles.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("</html>") {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the answer");
            got.extend_from_slice(&buf[..n]);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.send(true).unwrap();
        read_to_close(&mut client).await
    };
    let (served, rest) = tokio::join!(serve_proxy(&cx, &settings, server), client_side);
    assert!(matches!(served, Served::Closed));
    assert_eq!(rest, "");
    // Closed when the server stopped (after 5 s), not when the idle limit ran out.
    assert_eq!(start.elapsed().as_secs(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_tunnel_whose_client_never_speaks_ends_after_the_handshake_timeout() {
    use crate::protocol::{Http, Protocol};
    let (cx, _stop) = context();
    let http = Http::new()
        .timeout(Duration::from_secs(15))
        .handshake_timeout(Duration::from_secs(10));
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let start = Instant::now();
    let proxy_side = async {
        let mut conn = Connection::new(1, Host::default());
        let target = crate::core::Target::new("mitm.it", 443, true);
        http.connect(&cx, &mut conn, Box::new(server), target, Bytes::new())
            .await
    };
    let client_side = async {
        // The magic host needs no upstream: the CONNECT is granted at once.
        client
            .write_all(b"CONNECT mitm.it:443 HTTP/1.1\r\nHost: mitm.it:443\r\n\r\n")
            .await
            .unwrap();
        read_to_close(&mut client).await
    };
    let (outcome, sent) = tokio::join!(proxy_side, client_side);
    assert!(
        matches!(outcome, Err(crate::Error::ClientTimeout)),
        "{outcome:?}"
    );
    assert_eq!(sent, "HTTP/1.1 200 Connection established\r\n\r\n");
    assert_eq!(start.elapsed().as_secs(), 10);
}
