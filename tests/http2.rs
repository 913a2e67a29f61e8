//! HTTP/2 through the proxy: h2 clients and h2 origins, in every combination with
//! HTTP/1.1, with the same message hooks.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use mitm::{async_trait, Connection, HttpFlow, Middleware, Verdict, Version};

/// An HTTPS origin that speaks only HTTP/2 (ALPN `h2`). It answers every request with
/// `h2 origin: METHOD PATH x-hook=VALUE` and records the requests.
struct H2Origin {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_h2_origin() -> H2Origin {
    let mut config = (*origin_ca().server_config("localhost").unwrap()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
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
impl Middleware for Hook {
    async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        self.versions.lock().unwrap().push(flow.request.version);
        flow.request.headers.insert("X-Hook", "set");
        Verdict::Continue
    }
    fn wants_data(&self) -> bool {
        false
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
    let proxy = start_proxy(|b| b.middleware(hook.clone())).await;
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
    let proxy = start_proxy(|b| b.middleware(Arc::new(Hook::default()))).await;
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
    let proxy = start_proxy(|b| b.middleware(hook.clone())).await;
    let url = format!("https://localhost:{}/one", origin.port);
    let (body, version) = curl(&proxy, "--http1.1", &url, &[]).await;
    assert_eq!(version, "1.1");
    assert_eq!(body, "h2 origin: GET /one x-hook=set body=0");
    assert_eq!(
        *hook.versions.lock().unwrap(),
        [Version::Http11, Version::Http11]
    );
}
