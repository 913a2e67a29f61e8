//! Faults survived, and a graceful stop: each fault ends its own flow, the proxy goes on
//! serving, and its file descriptors come back to where they were.

mod common;

use std::time::Duration;

use common::*;
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
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send("CONNECT localhost:443 HTTP/1.1\r\n\r\n").await;
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
