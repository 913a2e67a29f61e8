//! The message-aware HTTP/1 engine end to end, on loopback: one client connection to
//! several origins (plain and inside intercepted TLS), pipelining, chunked bodies and
//! trailers, bodiless responses, `Expect: 100-continue`, large bodies, the message
//! hooks, and error pages that say what went wrong.

use crate::common;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mitm::HttpHandler;
use mitm::{async_trait, Body, Bytes, Connection, Http, HttpFlow, Resolve};
use mitm::{Response, SystemResolver, Verdict};
use tokio::sync::Notify;

/// `127.0.0.1:PORT` of an origin.
fn host_of(origin: &Origin) -> String {
    format!("127.0.0.1:{}", origin.port())
}

/// A `GET` of `path` from `origin`, origin-form with a `Host` header.
fn get(origin: &Origin, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", host_of(origin))
}

/// Asserts `origin` received exactly one request: `method` with the origin-form
/// `target`.
#[track_caller]
fn assert_only_request(origin: &Origin, method: &str, target: &str) {
    let seen = origin.requests();
    let got: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.target.as_str()))
        .collect();
    assert_eq!(got, [(method, target)]);
}

/// A request over `wire` that must be answered 200 with the origin's greeting.
async fn assert_answered<S>(wire: &mut Wire<S>, origin: &Origin, path: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    wire.send(get(origin, path)).await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), format!("hello from origin: GET {path}"));
}

// ---------------------------------------------------------------------------------
// One client connection, several origins.

#[tokio::test]
async fn one_keep_alive_connection_reaches_two_plain_origins() {
    let (a, b) = (start_origin().await, start_origin().await);
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    for (origin, path) in [(&a, "/one"), (&b, "/two")] {
        let host = host_of(origin);
        wire.send(format!(
            "GET http://{host}{path} HTTP/1.1\r\nHost: {host}\r\n\r\n"
        ))
        .await;
        let reply = wire.response().await;
        assert_eq!(reply.status, 200, "{reply:?}");
        // The origin echoes the target it got: origin-form, not the absolute URI.
        assert_eq!(reply.text(), format!("hello from origin: GET {path}"));
    }
    assert_only_request(&a, "GET", "/one");
    assert_only_request(&b, "GET", "/two");
}

#[tokio::test]
async fn one_intercepted_tls_connection_reaches_two_origins_by_host_header() {
    let (a, b) = (start_tls_origin().await, start_tls_origin().await);
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::new(tls_through(&proxy, "localhost", a.port()).await);
    for (origin, path) in [(&a, "/one"), (&b, "/two")] {
        wire.send(format!(
            "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
            origin.port()
        ))
        .await;
        let reply = wire.response().await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.text(), format!("hello from origin: GET {path}"));
    }
    assert_only_request(&a, "GET", "/one");
    assert_only_request(&b, "GET", "/two");
    let host_b = format!("localhost:{}", b.port());
    assert_eq!(b.requests()[0].header("host"), Some(host_b.as_str()));
}

// ---------------------------------------------------------------------------------
// Framing.

#[tokio::test]
async fn pipelined_requests_in_one_write_are_answered_in_order() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let host = host_of(&origin);
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "GET /first HTTP/1.1\r\nHost: {host}\r\n\r\n\
         POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 6\r\n\r\nmiddle\
         GET /last HTTP/1.1\r\nHost: {host}\r\n\r\n"
    ))
    .await;
    assert_eq!(
        wire.response().await.text(),
        "hello from origin: GET /first"
    );
    assert_eq!(wire.response().await.text(), "middle");
    assert_eq!(wire.response().await.text(), "hello from origin: GET /last");
    let targets: Vec<String> = origin.requests().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/first", "/echo", "/last"]);
}

/// A chunked request body: "hello world" in two chunks, then a trailer.
const CHUNKED_REQUEST_BODY: &str = "5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n";

fn chunked_post(origin: &Origin) -> String {
    format!(
        "POST /echo HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n\r\n{CHUNKED_REQUEST_BODY}",
        host_of(origin)
    )
}

#[tokio::test]
async fn a_chunked_request_reaches_the_origin_decoded_with_its_trailer() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(chunked_post(&origin)).await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "hello world");
    let seen = &origin.requests()[0];
    assert_eq!(seen.body, b"hello world");
    assert_eq!(seen.trailers, [("X-Trailer".into(), "yes".into())]);
    // The connection goes on after a chunked request.
    assert_answered(&mut wire, &origin, "/after").await;
}

#[tokio::test]
async fn a_chunked_response_reaches_the_client_with_its_trailer() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(get(&origin, "/chunked")).await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.chunked, "{reply:?}");
    assert_eq!(reply.text(), CHUNKED_PARTS.concat());
    let (name, value) = CHUNKED_TRAILER;
    assert_eq!(reply.trailers, [(name.into(), value.into())]);
    assert_answered(&mut wire, &origin, "/after").await;
}

/// Asks to see every body up to 1 MiB whole, and changes nothing.
struct HoldBodies;

#[async_trait]
impl HttpHandler for HoldBodies {
    fn body_limit(&self) -> usize {
        1 << 20
    }
}

#[tokio::test]
async fn a_chunked_request_held_whole_for_the_hooks_keeps_valid_framing() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b.http_handler(Arc::new(HoldBodies))).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(chunked_post(&origin)).await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "hello world");
    assert_eq!(origin.requests()[0].body, b"hello world");
    assert_answered(&mut wire, &origin, "/after").await;
}

#[tokio::test]
async fn a_chunked_response_held_whole_for_the_hooks_keeps_valid_framing() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b.http_handler(Arc::new(HoldBodies))).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(get(&origin, "/chunked")).await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), CHUNKED_PARTS.concat());
    assert_answered(&mut wire, &origin, "/after").await;
}

#[tokio::test]
async fn a_gzip_encoded_body_passes_through_untouched() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(get(&origin, "/gzip")).await;
    let reply = wire.response().await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&reply.body), GZIP_TEXT.as_bytes());
}

/// Decodes each response body with the crate's helper and records the text.
#[derive(Default)]
struct Decoded(Mutex<Vec<String>>);

#[async_trait]
impl HttpHandler for Decoded {
    async fn response(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        let response = flow
            .response
            .as_ref()
            .expect("response hook has a response");
        let text = match response.decoded_body(1 << 20) {
            Some(Ok(plain)) => String::from_utf8_lossy(&plain).into_owned(),
            other => format!("not decoded: {other:?}"),
        };
        self.0.lock().unwrap().push(text);
        Verdict::Continue
    }

    fn body_limit(&self) -> usize {
        1 << 20
    }
}

#[tokio::test]
async fn a_hook_decodes_a_gzip_body_with_the_helper_and_the_client_gets_it_as_sent() {
    let origin = start_origin().await;
    let decoded = Arc::new(Decoded::default());
    let proxy = start_proxy(|b| b.http_handler(decoded.clone())).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(get(&origin, "/gzip")).await;
    let reply = wire.response().await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&reply.body), GZIP_TEXT.as_bytes());
    assert_eq!(*decoded.0.lock().unwrap(), [GZIP_TEXT]);
}

#[tokio::test]
async fn header_names_keep_their_case_and_order_both_ways() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    let request = format!(
        "GET /case HTTP/1.1\r\nX-Zeta: 1\r\nhost: 127.0.0.1:{}\r\nX-ALPHA: 2\r\nx-Mixed-Case: 3\r\n\r\n",
        origin.port()
    );
    wire.send(request).await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200);
    let seen = &origin.requests()[0];
    let names: Vec<&str> = seen.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["X-Zeta", "host", "X-ALPHA", "x-Mixed-Case"]);
    // The origin's own field names reach the client as it wrote them (lowercase here).
    let names: Vec<&str> = reply.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["content-type", "content-length"], "{reply:?}");
}

// ---------------------------------------------------------------------------------
// Responses without a body: the proxy must not wait for one. Each is followed by a
// second request on the same connection, which is answered only if the proxy moved on.

#[tokio::test]
async fn a_head_response_does_not_wait_for_the_body_its_length_announces() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    let host = host_of(&origin);
    wire.send(format!("HEAD /bytes/5000 HTTP/1.1\r\nHost: {host}\r\n\r\n"))
        .await;
    let reply = wire.response_to("HEAD").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-length"), Some("5000"));
    assert_answered(&mut wire, &origin, "/after-head").await;

    // A HEAD of a chunked resource: `Transfer-Encoding: chunked`, still no body.
    wire.send(format!("HEAD /chunked HTTP/1.1\r\nHost: {host}\r\n\r\n"))
        .await;
    let reply = wire.response_to("HEAD").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_answered(&mut wire, &origin, "/after-chunked-head").await;
}

#[tokio::test]
async fn a_204_response_does_not_wait_for_a_body() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(get(&origin, "/status/204")).await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 204, "{reply:?}");
    assert_answered(&mut wire, &origin, "/after").await;
}

#[tokio::test]
async fn a_304_response_does_not_wait_for_a_body() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(get(&origin, "/status/304")).await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 304, "{reply:?}");
    assert_answered(&mut wire, &origin, "/after").await;
}

// ---------------------------------------------------------------------------------
// Expect: 100-continue.

async fn expect_continue_through(proxy: &TestProxy, origin: &Origin) {
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "POST /echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
        host_of(origin)
    ))
    .await;
    // Nothing of the body has been sent: the 100 must come first.
    let interim = wire.response_head().await;
    assert_eq!(interim.status, 100, "{interim:?}");
    wire.send("hello world").await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "hello world");
    assert_eq!(origin.requests()[0].body, b"hello world");
}

#[tokio::test]
async fn expect_100_continue_gets_100_before_the_body_is_sent() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    expect_continue_through(&proxy, &origin).await;
}

#[tokio::test]
async fn expect_100_continue_works_when_hooks_hold_the_body() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b.http_handler(Arc::new(HoldBodies))).await;
    expect_continue_through(&proxy, &origin).await;
}

// ---------------------------------------------------------------------------------
// Large bodies.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mib_upload_arrives_intact() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let body: Vec<u8> = (0..10u32 << 20)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 13)) as u8)
        .collect();
    let want = sha256(&body);
    let mut wire = Wire::connect(proxy.addr).await;
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        host_of(&origin),
        body.len()
    );
    wire.send(head).await;
    wire.send(&body).await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        sha256(&origin.requests()[0].body),
        want,
        "what the origin got"
    );
    assert_eq!(sha256(&reply.body), want, "what came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_download_streams_intact() {
    const SIZE: u64 = 256 << 20;
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    // The expected hash is computed meanwhile, on another thread.
    let want = tokio::task::spawn_blocking(|| pattern_sha256(SIZE));
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(get(&origin, &format!("/bytes/{SIZE}"))).await;
    let head = wire.response_head().await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(
        head.header("content-length"),
        Some(SIZE.to_string().as_str())
    );
    let mut hasher = Sha256::default();
    wire.body(SIZE, |piece| hasher.update(piece)).await;
    assert_eq!(hasher.finish(), want.await.unwrap());
    assert_answered(&mut wire, &origin, "/after").await;
}

// ---------------------------------------------------------------------------------
// Message hooks.

/// Answers every request itself.
struct Deny;

#[async_trait]
impl HttpHandler for Deny {
    async fn request(&self, _conn: &Connection, _flow: &mut HttpFlow) -> Verdict {
        Verdict::Respond(Response::new(403).with_body("text/plain", "denied by a test hook"))
    }
}

#[tokio::test]
async fn a_request_hook_can_answer_without_contacting_the_origin() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b.http_handler(Arc::new(Deny))).await;
    let mut wire = Wire::connect(proxy.addr).await;
    for path in ["/secret", "/another"] {
        wire.send(get(&origin, path)).await;
        let reply = wire.response().await;
        assert_eq!(reply.status, 403, "{reply:?}");
        assert_eq!(reply.text(), "denied by a test hook");
        assert_eq!(reply.header("content-length"), Some("21"));
    }
    assert_eq!(origin.connections.load(Ordering::SeqCst), 0);
}

/// Adds a header to every request.
struct AddHeader;

#[async_trait]
impl HttpHandler for AddHeader {
    async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        flow.request.headers.insert("X-Added-By", "test-hook");
        Verdict::Continue
    }
}

#[tokio::test]
async fn a_request_hook_can_set_a_header_the_origin_sees() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b.http_handler(Arc::new(AddHeader))).await;
    let mut wire = Wire::connect(proxy.addr).await;
    assert_answered(&mut wire, &origin, "/with-header").await;
    assert_eq!(origin.requests()[0].header("x-added-by"), Some("test-hook"));
}

/// The body [`Rewrite`] puts in every response.
const REWRITTEN: &str = "rewritten by a response hook";

/// Replaces every response body (seen whole, up to 1 MiB).
struct Rewrite;

#[async_trait]
impl HttpHandler for Rewrite {
    async fn response(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if let Some(response) = flow.response.as_mut() {
            // Held whole (or empty, for a HEAD): never streaming under 1 MiB.
            assert_ne!(response.body, Body::Streaming);
            response.body = Body::Full(Bytes::from_static(REWRITTEN.as_bytes()));
        }
        Verdict::Continue
    }

    fn body_limit(&self) -> usize {
        1 << 20
    }
}

#[tokio::test]
async fn a_response_hook_can_replace_the_body_and_content_length_follows() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b.http_handler(Arc::new(Rewrite))).await;
    let mut wire = Wire::connect(proxy.addr).await;
    // A Content-Length body and a chunked one, replaced by a body of another length;
    // the connection goes on after each.
    for path in ["/bytes/1000", "/chunked", "/bytes/3"] {
        wire.send(get(&origin, path)).await;
        let reply = wire.response().await;
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        assert_eq!(reply.text(), REWRITTEN, "{path}");
        let length = REWRITTEN.len().to_string();
        assert_eq!(
            reply.header("content-length"),
            Some(length.as_str()),
            "{path}"
        );
        assert!(!reply.chunked, "{path}: {reply:?}");
    }
}

/// Records the request bodies the hook saw, holding bodies up to 1 KiB.
#[derive(Default)]
struct SeeRequestBodies(Mutex<Vec<Body>>);

#[async_trait]
impl HttpHandler for SeeRequestBodies {
    async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        self.0.lock().unwrap().push(flow.request.body.clone());
        Verdict::Continue
    }

    fn body_limit(&self) -> usize {
        1024
    }
}

#[tokio::test]
async fn a_request_hook_sees_small_bodies_whole_and_large_ones_streaming() {
    let origin = start_origin().await;
    let seen = Arc::new(SeeRequestBodies::default());
    let proxy = start_proxy(|b| b.http_handler(seen.clone())).await;
    let small = b"a small body".to_vec();
    let large: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let mut wire = Wire::connect(proxy.addr).await;
    for body in [&small, &large] {
        wire.send(format!(
            "POST /echo HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            host_of(&origin),
            body.len()
        ))
        .await;
        wire.send(body).await;
        let reply = wire.response().await;
        assert_eq!(reply.status, 200);
        assert_same(&reply.body, body);
    }
    let bodies = seen.0.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0], Body::Full(Bytes::from(small.clone())));
    assert_eq!(bodies[1], Body::Streaming);
    let got = origin.requests();
    assert_same(&got[0].body, &small);
    assert_same(&got[1].body, &large);
}

/// Kills the client connection from the request hook, or from the response hook.
struct Kill {
    in_response: bool,
}

#[async_trait]
impl HttpHandler for Kill {
    async fn request(&self, _conn: &Connection, _flow: &mut HttpFlow) -> Verdict {
        if self.in_response {
            Verdict::Continue
        } else {
            Verdict::Kill
        }
    }

    async fn response(&self, _conn: &Connection, _flow: &mut HttpFlow) -> Verdict {
        Verdict::Kill
    }
}

#[tokio::test]
async fn a_kill_verdict_from_a_request_hook_closes_the_client_without_a_response() {
    let origin = start_origin().await;
    let kill = Kill { in_response: false };
    let proxy = start_proxy(|b| b.http_handler(Arc::new(kill))).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(get(&origin, "/doomed")).await;
    let rest = wire.read_to_end().await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert_eq!(origin.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_kill_verdict_from_a_response_hook_closes_the_client_without_a_response() {
    let origin = start_origin().await;
    let kill = Kill { in_response: true };
    let proxy = start_proxy(|b| b.http_handler(Arc::new(kill))).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(get(&origin, "/doomed")).await;
    let rest = wire.read_to_end().await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert_only_request(&origin, "GET", "/doomed");
}

/// Keeps every finished flow, holding bodies up to `limit`.
#[derive(Default)]
struct Flows {
    limit: usize,
    done: Mutex<Vec<HttpFlow>>,
    changed: Notify,
}

impl Flows {
    /// Waits until `n` flows have finished; returns them.
    async fn wait_for(&self, n: usize) -> Vec<HttpFlow> {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                let done = self.done.lock().unwrap().clone();
                if done.len() >= n {
                    return done;
                }
                notified.await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("{n} flows did not finish in time"))
    }
}

#[async_trait]
impl HttpHandler for Flows {
    async fn flow_finished(&self, _conn: &Connection, flow: &HttpFlow) {
        self.done.lock().unwrap().push(flow.clone());
        self.changed.notify_waiters();
    }

    fn body_limit(&self) -> usize {
        self.limit
    }
}

/// Sends a 1234-byte POST and GETs of `paths` over one connection; returns the
/// finished flows.
async fn flows_of(limit: usize, paths: &[&str]) -> Vec<HttpFlow> {
    let origin = start_origin().await;
    let flows = Arc::new(Flows {
        limit,
        ..Flows::default()
    });
    let proxy = start_proxy(|b| b.http_handler(flows.clone())).await;
    let mut wire = Wire::connect(proxy.addr).await;
    let body = pattern(1234);
    wire.send(format!(
        "POST /echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 1234\r\n\r\n",
        host_of(&origin)
    ))
    .await;
    wire.send(&body).await;
    assert_same(&wire.response().await.body, &body);
    for path in paths {
        wire.send(get(&origin, path)).await;
        assert_eq!(wire.response().await.status, 200);
    }
    flows.wait_for(1 + paths.len()).await
}

#[track_caller]
fn assert_timed(flow: &HttpFlow) {
    let t = &flow.timings;
    let (Some(sent), Some(first), Some(end)) =
        (t.request_end, t.response_first_byte, t.response_end)
    else {
        panic!("flow {} lacks timings: {t:?}", flow.id);
    };
    assert!(t.start <= sent && sent <= first && first <= end, "{t:?}");
    assert!(t.time_to_first_byte().is_some() && t.total().is_some());
    assert_eq!(flow.response.as_ref().map(|r| r.status), Some(200));
}

#[tokio::test]
async fn flow_finished_reports_timings_and_body_sizes() {
    let flows = flows_of(0, &["/chunked", "/bytes/70000"]).await;
    let ids: Vec<u64> = flows.iter().map(|f| f.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    for f in &flows {
        assert_timed(f);
    }
    let sizes: Vec<(u64, u64)> = flows
        .iter()
        .map(|f| (f.request_body_size, f.response_body_size))
        .collect();
    let chunked = CHUNKED_PARTS.concat().len() as u64;
    assert_eq!(sizes, [(1234, 1234), (0, chunked), (0, 70000)]);
}

#[tokio::test]
async fn flow_sizes_are_the_same_when_hooks_hold_the_bodies() {
    let flows = flows_of(1 << 20, &["/bytes/70000"]).await;
    for f in &flows {
        assert_timed(f);
    }
    let sizes: Vec<(u64, u64)> = flows
        .iter()
        .map(|f| (f.request_body_size, f.response_body_size))
        .collect();
    assert_eq!(sizes, [(1234, 1234), (0, 70000)]);
}

// ---------------------------------------------------------------------------------
// Errors: each answered with a page that names the cause, and the proxy goes on.

#[tokio::test]
async fn a_malformed_head_gets_400_naming_the_problem() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send("GET / HTTP/1.1\r\nHost: a\r\nbad header line\r\n\r\n")
        .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.text().contains("header"), "{}", reply.text());
    assert!(wire.read_to_end().await.is_empty());
    assert_answered(&mut Wire::connect(proxy.addr).await, &origin, "/after").await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_gets_400_naming_both() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "POST /echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        host_of(&origin)
    ))
    .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let text = reply.text();
    assert!(
        text.contains("Transfer-Encoding") && text.contains("Content-Length"),
        "{text}"
    );
    assert_eq!(origin.connections.load(Ordering::SeqCst), 0);
    assert_answered(&mut Wire::connect(proxy.addr).await, &origin, "/after").await;
}

#[tokio::test]
async fn a_head_over_the_limit_gets_431_naming_the_limit() {
    let origin = start_origin().await;
    let http = Http::new().max_head(1024);
    let proxy = start_proxy(|b| b.protocols(vec![Arc::new(http)])).await;
    let mut wire = Wire::connect(proxy.addr).await;
    let filler = "a".repeat(2000);
    wire.send(format!(
        "GET /big HTTP/1.1\r\nHost: {}\r\nX-Filler: {filler}\r\n\r\n",
        host_of(&origin)
    ))
    .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 431, "{reply:?}");
    assert!(reply.text().contains("1024 bytes"), "{}", reply.text());
    assert_eq!(origin.connections.load(Ordering::SeqCst), 0);
    assert_answered(&mut Wire::connect(proxy.addr).await, &origin, "/small").await;
}

#[tokio::test]
async fn a_refused_upstream_gets_502_and_the_connection_goes_on() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let port = refused_port();
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"))
        .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 502, "{reply:?}");
    let text = reply.text();
    assert!(text.contains("could not connect"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert_answered(&mut wire, &origin, "/after").await;
}

/// Resolves like the system resolver, except that names under `nowhere.localhost`
/// do not exist (without asking any DNS).
struct NoNowhere;

#[async_trait]
impl Resolve for NoNowhere {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if host == "nowhere.localhost" || host.ends_with(".nowhere.localhost") {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such host (test resolver)",
            ));
        }
        SystemResolver.resolve(host, port).await
    }
}

#[tokio::test]
async fn an_unresolvable_name_gets_502_naming_the_host() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b.resolver(Arc::new(NoNowhere))).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send("GET http://www.nowhere.localhost/ HTTP/1.1\r\nHost: www.nowhere.localhost\r\n\r\n")
        .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 502, "{reply:?}");
    let text = reply.text();
    assert!(text.contains("could not resolve"), "{text}");
    assert!(text.contains("www.nowhere.localhost"), "{text}");
    assert!(text.contains("no such host (test resolver)"), "{text}");
    assert_answered(&mut wire, &origin, "/after").await;
}

#[tokio::test]
async fn an_untrusted_upstream_certificate_gets_502_naming_upstream_ca() {
    let tls = start_tls_origin().await;
    let plain = start_origin().await;
    // This proxy does not trust the origins' CA.
    let proxy =
        start_proxy(|b| b.upstream_tls(mitm::upstream::UpstreamTls::verified(&[]).unwrap())).await;

    // Through CONNECT: the page comes inside the intercepted TLS.
    let mut wire = Wire::new(tls_through(&proxy, "localhost", tls.port()).await);
    wire.send(format!(
        "GET /secret HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
        tls.port()
    ))
    .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 502, "{reply:?}");
    let text = reply.text();
    assert!(text.contains("--upstream-ca"), "{text}");
    assert!(
        text.contains(&format!("localhost:{}", tls.port())),
        "{text}"
    );

    // An absolute https:// URI sent to the proxy in plain: the same page, and the
    // connection goes on.
    let mut wire = Wire::connect(proxy.addr).await;
    let host = format!("localhost:{}", tls.port());
    wire.send(format!(
        "GET https://{host}/secret HTTP/1.1\r\nHost: {host}\r\n\r\n"
    ))
    .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(reply.text().contains("--upstream-ca"), "{}", reply.text());
    assert_answered(&mut wire, &plain, "/after").await;
    assert!(tls.requests().is_empty());
}

#[tokio::test]
async fn an_upstream_that_never_answers_gets_504_and_the_connection_goes_on() {
    let silent = start_silent_origin().await;
    let origin = start_origin().await;
    let http = Http::new().response_timeout(Duration::from_millis(300));
    let proxy = start_proxy(|b| b.protocols(vec![Arc::new(http)])).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(get(&silent, "/never")).await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 504, "{reply:?}");
    let text = reply.text();
    assert!(text.contains("timed out waiting"), "{text}");
    assert!(text.contains(&host_of(&silent)), "{text}");
    assert_eq!(silent.connections.load(Ordering::SeqCst), 1);
    assert_answered(&mut wire, &origin, "/after").await;
}

// ---------------------------------------------------------------------------------
// More of the engine's edges.

#[tokio::test]
async fn an_http10_client_gets_a_chunked_response_unchunked_until_close() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "GET /chunked HTTP/1.0\r\nHost: {}\r\n\r\n",
        host_of(&origin)
    ))
    .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.header("transfer-encoding").is_none(), "{reply:?}");
    assert_eq!(reply.text(), CHUNKED_PARTS.concat());
}

/// Sends every request to another origin.
struct Redirect(mitm::Target);

#[async_trait]
impl HttpHandler for Redirect {
    async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        flow.request.target = self.0.clone();
        Verdict::Continue
    }
}

#[tokio::test]
async fn a_request_hook_can_send_the_request_to_another_origin() {
    let (asked, other) = (start_origin().await, start_origin().await);
    let target = mitm::Target::new("127.0.0.1", other.port(), false);
    let proxy = start_proxy(|b| b.http_handler(Arc::new(Redirect(target)))).await;
    let mut wire = Wire::connect(proxy.addr).await;
    assert_answered(&mut wire, &asked, "/moved").await;
    assert_only_request(&other, "GET", "/moved");
    assert_eq!(asked.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_hook_answer_to_an_expect_100_continue_request_comes_without_100() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b.http_handler(Arc::new(Deny))).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "POST /echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
        host_of(&origin)
    ))
    .await;
    // The body was never sent: the answer comes at once, and no 100 before it.
    let reply = wire.response().await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.text(), "denied by a test hook");
    assert_eq!(origin.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_origin_that_answers_connection_close_is_reconnected_for_the_next_request() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(get(&origin, "/close")).await;
    let reply = wire.response().await;
    assert_eq!(reply.text(), "closing");
    // The origin's `Connection: close` is about its own hop: the client's goes on.
    assert!(reply.header("connection").is_none(), "{reply:?}");
    assert_answered(&mut wire, &origin, "/after").await;
    assert_eq!(origin.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_origin_that_hangs_up_an_idle_keep_alive_connection_is_reconnected() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(get(&origin, "/hangup")).await;
    assert_eq!(wire.response().await.text(), "hanging up");
    // The origin has closed the idle connection (as servers do after their
    // keep-alive timeout); the next request must not be lost to it.
    origin.hangups.wait_for(1).await;
    assert_answered(&mut wire, &origin, "/after").await;
}

#[tokio::test]
async fn an_error_page_for_a_head_request_has_no_body() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let port = refused_port();
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!("HEAD / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"))
        .await;
    let reply = wire.response_to("HEAD").await;
    assert_eq!(reply.status, 502, "{reply:?}");
    // Were the page's body sent after the head, it would be read as the next response.
    assert_answered(&mut wire, &origin, "/after").await;
}

/// Through a proxy with `middleware`: `method path`, whose response has no body, then
/// `GET /after`, whose response must be read as such (with `next_body`), which it is
/// not if the first response had a body after all.
async fn bodiless_then_get(
    handler: Arc<dyn HttpHandler>,
    method: &str,
    path: &str,
    next_body: &str,
) {
    let origin = start_origin().await;
    let host = host_of(&origin);
    let proxy = start_proxy(|b| b.http_handler(handler)).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"))
        .await;
    let first = wire.response_to(method).await;
    wire.send(get(&origin, "/after")).await;
    let next = wire.response().await;
    assert_eq!(next.text(), next_body, "{first:?} then {next:?}");
}

#[tokio::test]
async fn a_request_hook_answer_to_a_head_request_has_no_body() {
    bodiless_then_get(Arc::new(Deny), "HEAD", "/x", "denied by a test hook").await;
}

#[tokio::test]
async fn a_response_hook_body_for_a_head_request_is_not_sent() {
    bodiless_then_get(Arc::new(Rewrite), "HEAD", "/bytes/10", REWRITTEN).await;
}

#[tokio::test]
async fn a_response_hook_body_for_a_204_is_not_sent() {
    bodiless_then_get(Arc::new(Rewrite), "GET", "/status/204", REWRITTEN).await;
}

#[tokio::test]
async fn a_response_hook_body_for_a_304_is_not_sent() {
    bodiless_then_get(Arc::new(Rewrite), "GET", "/status/304", REWRITTEN).await;
}

#[tokio::test]
async fn a_hook_answer_reaches_the_client_when_the_request_body_is_left_unread() {
    // The hook answers from the head alone; the upload's body is still arriving. The
    // proxy closes the connection after its answer, which must not destroy the
    // answer on its way.
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b.http_handler(Arc::new(Deny))).await;
    let mut wire = Wire::connect(proxy.addr).await;
    let part = vec![b'x'; 64 * 1024];
    wire.send(format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        host_of(&origin),
        10 * part.len()
    ))
    .await;
    wire.send(&part).await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.text(), "denied by a test hook");
}

#[tokio::test]
async fn an_interim_103_response_is_passed_on_before_the_final_one() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(get(&origin, "/early-hints")).await;
    let interim = wire.response().await;
    assert_eq!(interim.status, 103, "{interim:?}");
    assert_eq!(interim.header("link"), Some("</style.css>; rel=preload"));
    let reply = wire.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "hello from origin: GET /early-hints");
    assert_answered(&mut wire, &origin, "/after").await;
}

// ---------------------------------------------------------------------------------
// Request smuggling and malformed framing: each vector gets a 400 naming the problem,
// nothing reaches the origin, and the proxy serves the next client.

#[tokio::test]
async fn ambiguous_or_malformed_requests_get_400_and_never_reach_the_origin() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let host = format!("127.0.0.1:{}", origin.port());
    let cases: Vec<(&str, String)> = vec![
        ("conflicting lengths", format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")),
        ("negative length", format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: -1\r\n\r\n")),
        ("non-digit length", format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1e3\r\n\r\n")),
        ("length and chunked", format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
        ("coding not ending in chunked", format!("POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked, gzip\r\n\r\n")),
        ("space before colon", format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Bad : 1\r\n\r\n")),
        ("obs-fold", format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Fold: a\r\n b\r\n\r\n")),
        ("invalid header byte", format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Bad: a\x01b\r\n\r\n")),
        ("control character in target", format!("GET /a\x7fb HTTP/1.1\r\nHost: {host}\r\n\r\n")),
        ("bare LF line ends", format!("GET / HTTP/1.1\nHost: {host}\n\n")),
    ];
    for (what, request) in cases {
        let reply = raw_exchange(proxy.addr, request.as_bytes()).await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 400 "), "{what}: {reply}");
        assert!(
            reply.contains("mitm could not understand the request"),
            "{what}: {reply}"
        );
    }
    assert!(origin.requests().is_empty(), "{:?}", origin.requests());
    let mut wire = Wire::connect(proxy.addr).await;
    assert_answered(&mut wire, &origin, "/after-smuggling").await;
}

#[tokio::test]
async fn chunked_framing_broken_mid_body_gets_400_and_the_connection_closes() {
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let host = format!("127.0.0.1:{}", origin.port());
    let cases = [
        (
            "size that overflows",
            "5\r\nhello\r\nFFFFFFFFFFFFFFFFFFFF\r\n",
        ),
        ("size not hex", "5\r\nhello\r\nzz\r\n"),
        ("data not followed by CRLF", "3\r\nabcXY"),
        ("bare LF after a size", "5\nhello\r\n0\r\n\r\n"),
    ];
    for (what, body) in cases {
        let mut wire = Wire::connect(proxy.addr).await;
        wire.send(format!(
            "POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        ))
        .await;
        let reply = wire.response().await;
        assert_eq!(reply.status, 400, "{what}: {reply:?}");
        let text = reply.text();
        assert!(text.contains("chunked framing"), "{what}: {text}");
        assert_eq!(reply.header("connection"), Some("close"), "{what}");
        // The proxy closes: nothing more comes on this connection.
        assert!(wire.read_to_end().await.is_empty(), "{what}");
    }
    let mut wire = Wire::connect(proxy.addr).await;
    assert_answered(&mut wire, &origin, "/after-bad-chunks").await;
}

#[tokio::test]
async fn the_header_count_limit_is_configurable() {
    let origin = start_origin().await;
    let request = |fields: usize| {
        let mut head = format!("GET /fields HTTP/1.1\r\nHost: {}\r\n", host_of(&origin));
        for i in 1..fields {
            head.push_str(&format!("X-F{i}: {i}\r\n"));
        }
        head + "\r\n"
    };
    // Default: 128 fields pass, 129 get 431 naming the limit.
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(request(128)).await;
    assert_eq!(wire.response().await.status, 200);
    wire.send(request(129)).await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 431, "{reply:?}");
    assert!(
        reply.text().contains("128 header fields"),
        "{}",
        reply.text()
    );
    // Raised (beyond the parser's stack table) and lowered.
    let http = Http::new().max_headers(300);
    let proxy = start_proxy(|b| b.protocols(vec![Arc::new(http)])).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(request(300)).await;
    assert_eq!(wire.response().await.status, 200);
    wire.send(request(301)).await;
    assert_eq!(wire.response().await.status, 431);
    let http = Http::new().max_headers(5);
    let proxy = start_proxy(|b| b.protocols(vec![Arc::new(http)])).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(request(5)).await;
    assert_eq!(wire.response().await.status, 200);
    wire.send(request(6)).await;
    assert_eq!(wire.response().await.status, 431);
}
