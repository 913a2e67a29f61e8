//! The exchange's own rules, whatever the HTTP version: when a request may be sent
//! again, how a proxy-made error is told from an origin's, heads that trickle in, and
//! what a graceful stop does to idle clients.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mitm::HttpHandler;
use mitm::{async_trait, Connection, HttpFlow, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An origin that answers the first request of each connection and resets the
/// connection (RST, no answer) on the second, after reading it whole: a kept-alive
/// connection that dies just as it is reused. It counts every request it read, by
/// request line.
struct Flaky {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn start_flaky_origin() -> Flaky {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut s = Wire::new(s);
                for turn in 0.. {
                    let Some((line, _body)) = s.request().await else {
                        return;
                    };
                    record.lock().unwrap().push(line.clone());
                    if turn == 1 {
                        let (tcp, _) = s.into_parts();
                        // Linger 0: the close is a reset, as a crashed server's.
                        let _ = tcp.set_zero_linger();
                        drop(tcp);
                        return;
                    }
                    let body = format!("answer to {line}");
                    s.send(format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    ))
                    .await;
                }
            });
        }
    });
    Flaky { port, seen }
}

impl Flaky {
    fn count(&self, line: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|l| *l == line)
            .count()
    }
}

#[tokio::test]
async fn a_post_is_not_sent_again_on_its_own_but_a_get_is() {
    let origin = start_flaky_origin().await;
    let proxy = start_proxy(|b| b).await;
    let host = format!("127.0.0.1:{}", origin.port);

    // A POST on the kept-alive connection, which dies after reading it: the origin may
    // have acted on it, so the proxy must not send it again (RFC 9110 §9.2.2).
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!("GET /first HTTP/1.1\r\nHost: {host}\r\n\r\n"))
        .await;
    assert_eq!(wire.response().await.status, 200);
    wire.send(format!(
        "POST /order HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello"
    ))
    .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(origin.count("POST /order HTTP/1.1"), 1);
    drop(wire);

    // A GET in the same place is idempotent: sent once more, on a new connection.
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!("GET /first HTTP/1.1\r\nHost: {host}\r\n\r\n"))
        .await;
    assert_eq!(wire.response().await.status, 200);
    wire.send(format!("GET /again HTTP/1.1\r\nHost: {host}\r\n\r\n"))
        .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "answer to GET /again HTTP/1.1");
    assert_eq!(origin.count("GET /again HTTP/1.1"), 2);
}

/// Records, for each response the hooks see, its status and whether the proxy made it
/// because of a failure.
#[derive(Default)]
struct Errors {
    seen: Mutex<Vec<(u16, Option<String>)>>,
    finished: Mutex<Vec<(u16, bool)>>,
}

#[async_trait]
impl HttpHandler for Errors {
    async fn response(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        let status = flow.response.as_ref().map_or(0, |r| r.status);
        let error = flow.error.as_ref().map(|e| e.to_string());
        self.seen.lock().unwrap().push((status, error));
        Verdict::Continue
    }

    async fn flow_finished(&self, _conn: &Connection, flow: &HttpFlow) {
        let status = flow.response.as_ref().map_or(0, |r| r.status);
        self.finished
            .lock()
            .unwrap()
            .push((status, flow.error.is_some()));
    }
}

#[tokio::test]
async fn a_proxy_made_502_carries_its_error_and_an_origins_does_not() {
    let origin = start_origin().await;
    let errors = Arc::new(Errors::default());
    let proxy = start_proxy(|b| b.http_handler(errors.clone())).await;
    let closed = refused_port();
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "GET /status/502 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        origin.port()
    ))
    .await;
    assert_eq!(wire.response().await.status, 502);
    wire.send(format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{closed}\r\n\r\n"
    ))
    .await;
    assert_eq!(wire.response().await.status, 502);
    drop(wire);
    let seen = errors.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], (502, None), "the origin's own 502");
    let (status, error) = &seen[1];
    assert_eq!(*status, 502);
    let error = error.as_deref().expect("the proxy's 502 says why");
    assert!(
        error.contains(&format!("failed to connect to upstream 127.0.0.1:{closed}")),
        "{error}"
    );
    assert_eq!(
        *errors.finished.lock().unwrap(),
        [(502, false), (502, true)]
    );
}

#[tokio::test]
async fn a_flow_broken_off_midway_is_finished_with_its_error() {
    // An origin that promises 1000 bytes, sends 10 and resets.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut s = Wire::new(s);
        s.request().await;
        s.send("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly these")
            .await;
        let (tcp, _) = s.into_parts();
        let _ = tcp.set_zero_linger();
    });
    let errors = Arc::new(Errors::default());
    let proxy = start_proxy(|b| b.http_handler(errors.clone())).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"))
        .await;
    let head = wire.response_head().await;
    assert_eq!(head.status, 200);
    wire.read_to_end().await;
    drop(wire);
    let finished = async {
        loop {
            if !errors.finished.lock().unwrap().is_empty() {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(PATIENCE, finished)
        .await
        .expect("flow_finished never fired");
    assert_eq!(*errors.finished.lock().unwrap(), [(200, true)]);
}

#[tokio::test]
async fn a_head_over_the_limit_trickling_in_a_byte_at_a_time_gets_431() {
    let proxy = start_proxy(|b| b).await;
    let s = TcpStream::connect(proxy.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (mut read, mut write) = s.into_split();
    let mut head = b"GET / HTTP/1.1\r\nHost: example.test\r\n".to_vec();
    while head.len() < 70 * 1024 {
        head.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let sender = tokio::spawn(async move {
        for byte in head.chunks(1) {
            // The proxy refuses before the end and closes: writing then fails.
            if write.write_all(byte).await.is_err() {
                return;
            }
        }
    });
    let mut reply = Vec::new();
    tokio::time::timeout(PATIENCE, read.read_to_end(&mut reply))
        .await
        .expect("no answer to an oversized head")
        .ok();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    assert!(reply.contains("larger than 65536 bytes"), "{reply}");
    sender.await.unwrap();
}

#[tokio::test]
async fn shutdown_returns_at_once_with_an_idle_keep_alive_client() {
    let origin = start_origin().await;
    // A grace period far longer than the test's patience: waiting it out fails.
    let proxy = start_proxy(|b| b.grace_period(Duration::from_secs(600))).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "GET /idle HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        origin.port()
    ))
    .await;
    assert_eq!(wire.response().await.status, 200);
    // The client keeps its connection, idle between requests.
    tokio::time::timeout(PATIENCE, proxy.handle.shutdown())
        .await
        .expect("shutdown waited for an idle keep-alive client")
        .unwrap();
    assert!(
        wire.read_to_end().await.is_empty(),
        "the idle client is closed"
    );
}

/// Counts the requests that reach it.
#[derive(Default)]
struct Count(AtomicUsize);

#[async_trait]
impl HttpHandler for Count {
    async fn request(&self, _conn: &Connection, _flow: &mut HttpFlow) -> Verdict {
        self.0.fetch_add(1, Ordering::SeqCst);
        Verdict::Continue
    }
}

#[tokio::test]
async fn a_request_in_flight_at_shutdown_still_finishes() {
    // The other half of a graceful stop: an exchange in flight is not cut.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (answer, answered) = tokio::sync::oneshot::channel::<()>();
    let (got, request_arrived) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut s = Wire::new(s);
        s.request().await;
        let _ = got.send(());
        let _ = answered.await;
        s.send("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
            .await;
    });
    let count = Arc::new(Count::default());
    let proxy = start_proxy(|b| {
        b.grace_period(Duration::from_secs(600))
            .http_handler(count.clone())
    })
    .await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "GET /slow HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    ))
    .await;
    request_arrived.await.unwrap();
    let stopping = tokio::spawn(proxy.handle.shutdown());
    // The proxy stopped accepting; the exchange in flight goes on.
    answer.send(()).unwrap();
    let reply = wire.response().await;
    assert_eq!(reply.text(), "late");
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("shutdown did not end after the last exchange")
        .unwrap()
        .unwrap();
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
}
