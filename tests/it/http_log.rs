//! `HttpLog` through a real proxy: each request and response logged once and whole,
//! however the bytes were cut.

use crate::common;

use std::sync::{Arc, Mutex};

use common::*;
use mitm::DataHooks;
use mitm::{async_trait, Bytes, Connection, Middleware};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Records each chunk the proxy reads from clients, so that a test can wait until the
/// proxy has read a given piece on its own.
#[derive(Default)]
struct Reads {
    chunks: Mutex<Vec<Bytes>>,
    changed: Notify,
}

impl Reads {
    fn any_ending(&self, tail: &[u8]) -> bool {
        let chunks = self.chunks.lock().unwrap();
        chunks.iter().any(|c| c.ends_with(tail))
    }

    /// Waits until the proxy has read a chunk ending with `tail`.
    async fn wait_for_chunk_ending(&self, tail: &[u8]) {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                if self.any_ending(tail) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| {
                let chunks = self.chunks.lock().unwrap();
                let tail = String::from_utf8_lossy(tail);
                panic!("the proxy never read a chunk ending {tail:?}; it read {chunks:?}")
            });
    }
}

#[async_trait]
impl Middleware for Reads {
    fn data_hooks(&self) -> DataHooks {
        DataHooks::On
    }

    async fn client_data(&self, _conn: &Connection, data: Bytes) -> Bytes {
        self.chunks.lock().unwrap().push(data.clone());
        self.changed.notify_waiters();
        data
    }
}

// One thread: the proxy's tasks run on the test's own, so the subscriber set for this
// thread sees everything they log, and tests running beside this one log elsewhere.
#[tokio::test(flavor = "current_thread")]
async fn pipelined_and_split_messages_are_each_logged_once() {
    let (captured, _log) = thread_log("info");

    let origin = start_origin().await;
    let reads = Arc::new(Reads::default());
    let proxy = start_proxy(|b| {
        b.http_handler(Arc::new(mitm::HttpLog::default()))
            .middleware(reads.clone())
    })
    .await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // Two requests in one write, the second with a body; then a third split mid-head.
    let host = format!("127.0.0.1:{}", origin.port());
    let two = format!(
        "GET /first HTTP/1.1\r\nHost: {host}\r\n\r\n\
         POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 11\r\n\r\nhello world"
    );
    s.write_all(two.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // Read both responses (the second ends with the echoed body).
    while !String::from_utf8_lossy(&reply).ends_with("hello world") {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "proxy closed early");
        reply.extend_from_slice(&buf[..n]);
    }
    // The proxy reads the first half on its own before the second is sent.
    let first_half = b"GET /third HTTP/1.1\r\nHo";
    s.write_all(first_half).await.unwrap();
    reads.wait_for_chunk_ending(first_half).await;
    s.write_all(format!("st: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s.read_to_end(&mut reply).await.unwrap();
    drop(s);
    proxy.handle.shutdown().await.unwrap();
    // Everything before the first half had been answered, so that read was the first
    // half alone.
    let chunks = reads.chunks.lock().unwrap().clone();
    assert!(
        chunks.iter().any(|c| c[..] == first_half[..]),
        "no read of the first half alone: {chunks:?}"
    );

    let log = captured.text();
    let base = format!("http://{host}");
    for needle in [
        format!("GET {base}/first -> 200 OK"),
        format!("POST {base}/echo -> 200 OK (11 B up, 11 B down"),
        format!("GET {base}/third -> 200 OK"),
    ] {
        assert_eq!(log.matches(&needle).count(), 1, "{needle} in:\n{log}");
    }
    assert_eq!(log.matches(" -> 200 OK").count(), 3, "{log}");
    // The echoed body is shown with the POST and with its response.
    assert_eq!(log.matches("hello world").count(), 2, "{log}");
}
