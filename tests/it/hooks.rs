//! Which hooks cost the zero-copy relay: only a `Middleware` whose data hooks are on
//! makes the proxy copy bytes through its memory; a handler of HTTP messages leaves
//! `splice(2)` to move a large body, and a middleware's data hooks see every byte.

use crate::common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use mitm::{async_trait, Bytes, Connection, DataHooks, HttpFlow, HttpHandler, Middleware, Verdict};

/// Looks at every request, and at nothing else.
#[derive(Default)]
struct Requests(AtomicUsize);

#[async_trait]
impl HttpHandler for Requests {
    async fn request(&self, _conn: &Connection, _flow: &mut HttpFlow) -> Verdict {
        self.0.fetch_add(1, Ordering::Relaxed);
        Verdict::Continue
    }
}

/// Counts the bytes servers send.
#[derive(Default)]
struct ServerBytes(AtomicU64);

#[async_trait]
impl Middleware for ServerBytes {
    fn data_hooks(&self) -> DataHooks {
        DataHooks::On
    }

    async fn server_data(&self, _conn: &Connection, data: Bytes) -> Bytes {
        self.0.fetch_add(data.len() as u64, Ordering::Relaxed);
        data
    }
}

/// One GET of a 1 MiB body through `proxy`, checked whole; returns what the proxy
/// logged about splicing meanwhile.
async fn get_a_large_body(proxy: &TestProxy, origin: &Origin, log: &Captured) -> String {
    const SIZE: u64 = 1 << 20;
    let before = log.text().len();
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "GET http://127.0.0.1:{port}/bytes/{SIZE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n",
        port = origin.port()
    ))
    .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200);
    assert_same(&reply.body, &pattern(SIZE as usize));
    log.text()[before..].to_string()
}

// One thread: the proxy's tasks run on the test's own, so the subscriber set for this
// thread sees what they log, and tests running beside this one log elsewhere.
#[tokio::test(flavor = "current_thread")]
async fn a_handler_of_http_messages_keeps_the_zero_copy_relay() {
    let (log, _log) = thread_log("mitm::splice=trace");
    let origin = start_origin().await;

    let requests = Arc::new(Requests::default());
    let proxy = start_proxy(|b| b.http_handler(requests.clone())).await;
    let logged = get_a_large_body(&proxy, &origin, &log).await;
    assert_eq!(
        requests.0.load(Ordering::Relaxed),
        1,
        "the request hook ran"
    );
    if cfg!(target_os = "linux") {
        assert!(
            logged.contains("relaying with splice(2)"),
            "the body did not go through splice(2) with only a message handler: {logged:?}"
        );
    }

    // A middleware with its data hooks on sees every byte, and the body is copied.
    let bytes = Arc::new(ServerBytes::default());
    let proxy = start_proxy(|b| b.middleware(bytes.clone()).http_handler(requests.clone())).await;
    let logged = get_a_large_body(&proxy, &origin, &log).await;
    assert!(
        bytes.0.load(Ordering::Relaxed) >= 1 << 20,
        "the data hooks saw {} bytes of a 1 MiB body",
        bytes.0.load(Ordering::Relaxed)
    );
    assert!(
        !logged.contains("relaying with splice(2)"),
        "a body went through splice(2) past the data hooks: {logged:?}"
    );
}
