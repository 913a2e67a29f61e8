//! HTTP/2 through the proxy: h2 clients and h2 origins, in every combination with
//! HTTP/1.1, with the same message hooks. The clients are curl (skipped where it lacks
//! HTTP/2) and the `h2` crate in-process (always run).

use crate::common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use mitm::HttpHandler;
use mitm::{async_trait, Connection, HttpFlow, Response, Verdict, Version};

/// An HTTPS origin that speaks only HTTP/2 (ALPN `h2`). It answers every request with
/// `h2 origin: METHOD PATH x-hook=VALUE` and records the requests.
pub(crate) struct H2Origin {
    pub(crate) port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS acceptor as `localhost` (with the origin CA's certificate) offering only h2.
pub(crate) fn h2_acceptor() -> tokio_rustls::TlsAcceptor {
    let mut config = (*origin_ca().server_config("localhost").unwrap()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

pub(crate) async fn start_h2_origin() -> H2Origin {
    let acceptor = h2_acceptor();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut h2) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = h2.accept().await {
                    let (parts, mut body) = request.into_parts();
                    let mut received = Vec::new();
                    while let Some(Ok(chunk)) = body.data().await {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        received.extend_from_slice(&chunk);
                    }
                    let hook = parts
                        .headers
                        .get("x-hook")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    let text = format!(
                        "h2 origin: {} {} x-hook={hook} body={}",
                        parts.method,
                        parts.uri.path(),
                        received.len()
                    );
                    record.lock().unwrap().push(text.clone());
                    let response = http::Response::builder().status(200).body(()).unwrap();
                    let Ok(mut out) = respond.send_response(response, false) else {
                        continue;
                    };
                    let _ = out.send_data(Bytes::from(text), true);
                }
            });
        }
    });
    H2Origin { port, seen, task }
}

/// Adds `X-Hook: set` to every request and records the versions it saw.
#[derive(Default)]
struct Hook {
    versions: Mutex<Vec<Version>>,
}

#[async_trait]
impl HttpHandler for Hook {
    async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        self.versions.lock().unwrap().push(flow.request.version);
        flow.request.headers.insert("X-Hook", "set");
        Verdict::Continue
    }
}

/// curl through `proxy` with `version` (`--http2` or `--http1.1`): the body and the
/// HTTP version curl spoke with the proxy.
async fn curl(proxy: &TestProxy, version: &str, url: &str, extra: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, proxy.ca.cert_pem()).unwrap();
    let out = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--fail",
                version,
                "--proxy",
                &proxy.url(),
            ])
            .arg("--cacert")
            .arg(&ca)
            .args(["--write-out", "\n%{http_version}"])
            .args(extra)
            .arg(url)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "curl {version} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, version) = text.rsplit_once('\n').unwrap();
    (body.to_string(), version.to_string())
}

/// Whether curl with HTTP/2 is there; see [`require_tool`].
fn require_curl_http2() -> bool {
    let present = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("HTTP2"));
    let install = "apt-get install curl: Debian's is built with nghttp2";
    require_tool(present, "curl with HTTP/2", install)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_reaches_an_h2_origin_in_h2_on_both_sides() {
    if !require_curl_http2() {
        return;
    }
    let origin = start_h2_origin().await;
    let hook = Arc::new(Hook::default());
    let proxy = start_proxy(|b| b.http_handler(hook.clone())).await;
    let url = format!("https://localhost:{}/both", origin.port);
    let (body, version) = curl(&proxy, "--http2", &url, &[]).await;
    assert_eq!(version, "2", "the client did not speak h2 with the proxy");
    // The origin speaks only h2: an answer proves the proxy spoke h2 to it.
    assert_eq!(body, "h2 origin: GET /both x-hook=set body=0");
    assert_eq!(origin.seen.lock().unwrap().len(), 1);
    // The CONNECT (HTTP/1.1), then the request inside, seen as HTTP/2.
    assert_eq!(
        *hook.versions.lock().unwrap(),
        [Version::Http11, Version::Http2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_reaches_an_http1_only_origin() {
    if !require_curl_http2() {
        return;
    }
    let origin = start_tls_origin().await;
    let proxy = start_proxy(|b| b.http_handler(Arc::new(Hook::default()))).await;
    let url = format!("https://localhost:{}/echo", origin.port());
    let (body, version) = curl(
        &proxy,
        "--http2",
        &url,
        &["--data-binary", "posted over h2"],
    )
    .await;
    assert_eq!(version, "2");
    assert_eq!(body, "posted over h2");
    let seen = &origin.requests()[0];
    assert_eq!(seen.header("x-hook"), Some("set"));
    assert_eq!(seen.target, "/echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_uploads_and_downloads_large_bodies() {
    if !require_curl_http2() {
        return;
    }
    let origin = start_tls_origin().await;
    let proxy = start_proxy(|b| b).await;
    let url = format!("https://localhost:{}/bytes/3000000", origin.port());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("down.bin");
    let (_, version) = curl(
        &proxy,
        "--http2",
        &url,
        &["--output", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(version, "2");
    assert_same(&std::fs::read(&file).unwrap(), &pattern(3_000_000));

    let up = dir.path().join("up.bin");
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 17 % 256) as u8).collect();
    std::fs::write(&up, &data).unwrap();
    let echo = format!("https://localhost:{}/echo", origin.port());
    let out = dir.path().join("echo.bin");
    let at = format!("@{}", up.display());
    curl(
        &proxy,
        "--http2",
        &echo,
        &["--data-binary", &at, "--output", out.to_str().unwrap()],
    )
    .await;
    assert_same(&std::fs::read(&out).unwrap(), &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_reaches_an_h2_only_origin() {
    if !require_curl_http2() {
        return;
    }
    let origin = start_h2_origin().await;
    let hook = Arc::new(Hook::default());
    let proxy = start_proxy(|b| b.http_handler(hook.clone())).await;
    let url = format!("https://localhost:{}/one", origin.port);
    let (body, version) = curl(&proxy, "--http1.1", &url, &[]).await;
    assert_eq!(version, "1.1");
    assert_eq!(body, "h2 origin: GET /one x-hook=set body=0");
    assert_eq!(
        *hook.versions.lock().unwrap(),
        [Version::Http11, Version::Http11]
    );
}

// ---- The h2 crate as the client, in-process (no curl) ----

/// An HTTP/2 client connection to `localhost:port` through `proxy`: `CONNECT`, TLS
/// offering only `h2` and trusting only the proxy's CA, then the HTTP/2 handshake. A
/// task of its own drives the connection.
async fn h2_client(proxy: &TestProxy, port: u16) -> h2::client::SendRequest<Bytes> {
    let tls = tls_through_offering(proxy, "localhost", port, &[b"h2"]).await;
    let alpn = tls.get_ref().1.alpn_protocol();
    assert_eq!(alpn, Some(&b"h2"[..]), "the proxy did not agree to h2");
    let (send, connection) = tokio::time::timeout(PATIENCE, h2::client::handshake(tls))
        .await
        .expect("the HTTP/2 handshake with the proxy timed out")
        .expect("the HTTP/2 handshake with the proxy failed");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// Starts `request` on `send`, with `body` as its body unless it is empty, sending no
/// more than the peer's flow-control window allows at a time. Returns the response,
/// still to read.
async fn h2_send(
    send: &h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
    body: &[u8],
) -> h2::client::ResponseFuture {
    let mut send = tokio::time::timeout(PATIENCE, send.clone().ready())
        .await
        .expect("no stream available in time")
        .expect("the HTTP/2 connection failed");
    let (response, mut stream) = send.send_request(request, body.is_empty()).unwrap();
    let mut rest = Bytes::copy_from_slice(body);
    while !rest.is_empty() {
        stream.reserve_capacity(rest.len());
        let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx));
        let granted = tokio::time::timeout(PATIENCE, granted)
            .await
            .expect("no flow-control window in time")
            .expect("the stream ended before its body was sent")
            .expect("the stream failed while sending its body");
        let piece = rest.split_to(granted.min(rest.len()));
        stream.send_data(piece, rest.is_empty()).unwrap();
    }
    response
}

/// Reads the whole of `response`, giving its window back as the body arrives.
async fn h2_read(response: h2::client::ResponseFuture) -> http::Response<Vec<u8>> {
    let read = async {
        let (parts, mut body) = response.await?.into_parts();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        Ok::<_, h2::Error>(http::Response::from_parts(parts, data))
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("no whole response in time")
        .expect("the response failed")
}

/// A GET of `path` on `localhost:port` over `send`.
async fn h2_get(
    send: &h2::client::SendRequest<Bytes>,
    port: u16,
    path: &str,
) -> http::Response<Vec<u8>> {
    let url = format!("https://localhost:{port}{path}");
    let request = http::Request::get(url).body(()).unwrap();
    h2_read(h2_send(send, request, &[]).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_of_an_h2_client_each_get_their_own_answer_from_an_h2_origin() {
    const STREAMS: usize = 8;
    let origin = start_h2_origin().await;
    let hook = Arc::new(Hook::default());
    let proxy = start_proxy(|b| b.http_handler(hook.clone())).await;
    let send = h2_client(&proxy, origin.port).await;
    // Every request is sent before any response is read: the streams are open at once.
    let mut pending = Vec::new();
    for i in 0..STREAMS {
        let url = format!("https://localhost:{}/stream/{i}", origin.port);
        let request = http::Request::get(url).body(()).unwrap();
        pending.push(h2_send(&send, request, &[]).await);
    }
    let responses = futures_util::future::join_all(pending.into_iter().map(h2_read)).await;
    for (i, response) in responses.iter().enumerate() {
        assert_eq!(response.status(), 200);
        let body = String::from_utf8_lossy(response.body());
        assert_eq!(
            body,
            format!("h2 origin: GET /stream/{i} x-hook=set body=0")
        );
    }
    assert_eq!(origin.seen.lock().unwrap().len(), STREAMS);
    // The CONNECT (HTTP/1.1), then each stream inside, seen as HTTP/2.
    let versions = hook.versions.lock().unwrap().clone();
    let mut expected = vec![Version::Http11];
    expected.extend([Version::Http2; STREAMS]);
    assert_eq!(versions, expected);
}

/// `n` bytes that repeat nowhere within them (a xorshift sequence), so that a lost,
/// repeated or misplaced piece changes the hash.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_uploads_a_large_body_to_an_http1_origin_and_gets_it_back_intact() {
    let origin = start_tls_origin().await;
    let proxy = start_proxy(|b| b).await;
    let send = h2_client(&proxy, origin.port()).await;
    // Several times the initial 64 KiB window each way, and no content-length: the
    // proxy frames the body for HTTP/1.1 itself.
    let data = noise(384 * 1024);
    let url = format!("https://localhost:{}/echo", origin.port());
    let request = http::Request::post(url).body(()).unwrap();
    let response = h2_read(h2_send(&send, request, &data).await).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.body().len(), data.len());
    assert_eq!(sha256(response.body()), sha256(&data), "the echo differs");
    let seen = origin.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("POST", "/echo")
    );
    assert_eq!(
        sha256(&seen[0].body),
        sha256(&data),
        "the origin got another body"
    );
}

/// Answers requests for `/blocked` itself, with a 403; lets the others through.
struct Block;

#[async_trait]
impl HttpHandler for Block {
    async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if flow.request.path != "/blocked" {
            return Verdict::Continue;
        }
        Verdict::Respond(Response::new(403).with_body("text/plain", "blocked by a hook\n"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_hook_answers_an_h2_stream_itself_and_the_connection_goes_on() {
    let origin = start_h2_origin().await;
    let proxy = start_proxy(|b| b.http_handler(Arc::new(Block))).await;
    let send = h2_client(&proxy, origin.port).await;

    let blocked = h2_get(&send, origin.port, "/blocked").await;
    assert_eq!(blocked.status(), 403);
    let content_type = blocked.headers().get("content-type");
    assert_eq!(content_type.unwrap(), "text/plain");
    assert_eq!(blocked.body(), b"blocked by a hook\n");
    assert!(origin.seen.lock().unwrap().is_empty());

    // The next stream on the same connection reaches the origin.
    let after = h2_get(&send, origin.port, "/after").await;
    assert_eq!(after.status(), 200);
    assert_eq!(after.body(), b"h2 origin: GET /after x-hook=- body=0");
    assert_eq!(origin.seen.lock().unwrap().len(), 1);
}

/// Keeps a record of every finished flow (for a server replay), and says when one
/// came.
#[derive(Default)]
struct Recorder(Mutex<Vec<mitm::capture::Record>>, tokio::sync::Notify);

#[async_trait]
impl HttpHandler for Recorder {
    async fn flow_finished(&self, conn: &Connection, flow: &HttpFlow) {
        let record = mitm::capture::Record::from_flow(conn, flow, 1 << 20);
        self.0.lock().unwrap().push(record);
        self.1.notify_one();
    }

    fn body_limit(&self) -> usize {
        1 << 20
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_replay_answers_h2_streams_and_kills_only_the_unmatched_one() {
    use mitm::capture::server_replay::{ServerReplay, ServerReplayOptions, Unmatched};
    let origin = start_h2_origin().await;
    let port = origin.port;
    let recorder = Arc::new(Recorder::default());
    let recording = start_proxy(|b| b.http_handler(recorder.clone())).await;
    let send = h2_client(&recording, port).await;
    assert_eq!(h2_get(&send, port, "/one?a=1").await.status(), 200);
    // The flow finishes once its response is sent, maybe after the client read it.
    let get = |r: &mitm::capture::Record| !r.request.is_connect();
    while !recorder.0.lock().unwrap().iter().any(get) {
        tokio::time::timeout(PATIENCE, recorder.1.notified())
            .await
            .expect("the flow never finished");
    }
    drop(send);
    drop(recording);
    // The origin stays: a `CONNECT` reaches it before any request is seen (as in
    // mitmproxy, whose default connection strategy is eager); it must see no request.
    let mut records = std::mem::take(&mut *recorder.0.lock().unwrap());
    records.retain(get);
    assert_eq!(records.len(), 1);

    let replayed = |send: h2::client::SendRequest<Bytes>| async move {
        let replayed = h2_get(&send, port, "/one?a=2").await;
        assert_eq!(replayed.status(), 200);
        assert_eq!(replayed.body(), b"h2 origin: GET /one x-hook=- body=0");
        send
    };
    let proxy_with = |options: ServerReplayOptions| {
        let replay = Arc::new(ServerReplay::new(records.clone(), options).unwrap());
        start_proxy(|b| b.http_handler(replay))
    };

    // Reused, and a 404 for what matches nothing.
    let options = ServerReplayOptions::new()
        .extra(Unmatched::Status(404))
        .reuse(true)
        .ignore_params(["a"]);
    let proxy = proxy_with(options).await;
    let send = replayed(replayed(h2_client(&proxy, port).await).await).await;
    assert_eq!(h2_get(&send, port, "/two").await.status(), 404);

    // Killed: the stream is reset, and the connection goes on (as mitmproxy resets
    // the stream of a killed HTTP/2 flow).
    let options = ServerReplayOptions::new()
        .extra(Unmatched::Kill)
        .ignore_params(["a"]);
    let proxy = proxy_with(options).await;
    let send = h2_client(&proxy, port).await;
    let request = http::Request::get(format!("https://localhost:{port}/two"))
        .body(())
        .unwrap();
    let killed = h2_send(&send, request, &[]).await;
    let killed = tokio::time::timeout(PATIENCE, killed).await.unwrap();
    let reason = killed.map(|r| r.status()).unwrap_err().reason();
    assert_eq!(reason, Some(h2::Reason::CANCEL));
    replayed(send).await;
    assert_eq!(
        origin.seen.lock().unwrap().len(),
        1,
        "only the recording's request"
    );
}

// ---- Limits and connection changes ----

/// An h2 origin whose handler is `serve`, given each request, its responder, and the
/// number of the connection it came on (from 1).
pub(crate) fn start_h2_origin_with<F, Fut>(serve: F) -> (u16, tokio::task::JoinHandle<()>)
where
    F: Fn(http::Request<h2::RecvStream>, h2::server::SendResponse<Bytes>, usize) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let acceptor = h2_acceptor();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let serve = Arc::new(serve);
    let task = tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let mut connections = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            connections += 1;
            let (acceptor, serve, number) = (acceptor.clone(), serve.clone(), connections);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut h2) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = h2.accept().await {
                    tokio::spawn(serve(request, respond, number));
                }
            });
        }
    });
    (port, task)
}

/// Answers `text` on `respond`.
fn answer(mut respond: h2::server::SendResponse<Bytes>, text: String) {
    let response = http::Response::builder().status(200).body(()).unwrap();
    if let Ok(mut out) = respond.send_response(response, false) {
        let _ = out.send_data(Bytes::from(text), true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_origin_going_away_between_two_requests_answers_both() {
    // The origin answers the first request of each connection, then sends GOAWAY and
    // closes it, as a server being restarted or rebalanced does.
    let (going, going_away) = tokio::sync::oneshot::channel::<()>();
    let going = Arc::new(Mutex::new(Some(going)));
    let acceptor = h2_acceptor();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    let origin = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let number = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let (acceptor, going) = (acceptor.clone(), going.clone());
            tokio::spawn(async move {
                let tls = acceptor.accept(tcp).await.unwrap();
                let mut h2 = h2::server::handshake(tls).await.unwrap();
                if let Some(Ok((request, respond))) = h2.accept().await {
                    answer(
                        respond,
                        format!("{} on connection {number}", request.uri().path()),
                    );
                }
                // GOAWAY goes out as the connection is driven: whether the proxy sees
                // it before its next request or has that request refused, it must
                // answer from a new connection.
                h2.graceful_shutdown();
                if let Some(tx) = going.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                while h2.accept().await.is_some() {}
                let _ = std::future::poll_fn(|cx| h2.poll_closed(cx)).await;
            });
        }
    });
    let proxy = start_proxy(|b| b).await;
    // An HTTP/1.1 client: its requests go over the proxy's HTTP/2 connection.
    let mut wire = Wire::new(tls_through(&proxy, "localhost", port).await);
    wire.send(format!(
        "GET /one HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
    ))
    .await;
    let reply = wire.response().await;
    assert_eq!(reply.text(), "/one on connection 1");
    tokio::time::timeout(PATIENCE, going_away)
        .await
        .expect("the origin never let its first connection go")
        .unwrap();
    wire.send(format!(
        "GET /two HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
    ))
    .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "/two on connection 2");
    origin.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_is_held_to_max_concurrent_streams() {
    const STREAMS: usize = 5;
    // The origin holds every answer until the test lets one go, and records how many
    // requests it held at once.
    let held = Arc::new(Mutex::new((0usize, 0usize)));
    let changed = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (h, c, g) = (held.clone(), changed.clone(), gate.clone());
    let (port, origin) = start_h2_origin_with(move |request, respond, _| {
        let (held, changed, gate) = (h.clone(), c.clone(), g.clone());
        async move {
            {
                let mut held = held.lock().unwrap();
                held.0 += 1;
                held.1 = held.1.max(held.0);
            }
            changed.notify_waiters();
            let permit = gate.acquire().await.unwrap();
            permit.forget();
            held.lock().unwrap().0 -= 1;
            answer(respond, request.uri().path().to_string());
        }
    });
    let http = mitm::Http::new().max_concurrent_streams(2);
    let proxy = start_proxy(|b| b.protocols(vec![Arc::new(http)])).await;
    let send = h2_client(&proxy, port).await;
    // One exchange first: the proxy's settings (its limit) have come by its end. A
    // client that opens streams before they come may see some refused, as HTTP/2
    // allows.
    gate.add_permits(1);
    assert_eq!(h2_get(&send, port, "/first").await.into_body(), b"/first");
    assert_eq!(send.current_max_send_streams(), 2);
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let send = send.clone();
        streams.push(tokio::spawn(async move {
            let response = h2_get(&send, port, &format!("/s{i}")).await;
            String::from_utf8(response.into_body()).unwrap()
        }));
    }
    // Two streams reach the origin and wait there; the proxy announced its limit.
    let two_held = async {
        loop {
            let notified = changed.notified();
            if held.lock().unwrap().0 >= 2 {
                return;
            }
            notified.await;
        }
    };
    tokio::time::timeout(PATIENCE, two_held)
        .await
        .expect("two streams never reached the origin");
    gate.add_permits(STREAMS);
    let mut paths = Vec::new();
    for stream in streams {
        paths.push(stream.await.unwrap());
    }
    paths.sort();
    assert_eq!(paths, ["/s0", "/s1", "/s2", "/s3", "/s4"]);
    let most = held.lock().unwrap().1;
    assert!(most <= 2, "{most} streams were in flight at once");
    origin.abort();
}
