//! Reverse-proxy mode (`Reverse`) as curl sees it: the listener poses as the origin, to
//! plain and TLS clients (HTTP/1.1 and HTTP/2), in front of plain and TLS origins,
//! with the hooks seeing every request. Skipped, with the reason printed, where curl is
//! not installed (a failure instead with `MITM_REQUIRE_TOOLS=1`).

use crate::common;

use std::sync::{Arc, Mutex};

use common::*;
use mitm::HttpHandler;
use mitm::{async_trait, Connection, HttpFlow, Reverse, Verdict};
use tokio::process::Command;

/// The name TLS clients ask the reverse proxy for (resolved by curl's `--resolve`,
/// never looked up).
const FRONT: &str = "front.reverse.test";

/// Records the URL of every request the hooks see and tags it with `x-seen-by`.
#[derive(Default)]
struct Tag {
    urls: Mutex<Vec<String>>,
}

#[async_trait]
impl HttpHandler for Tag {
    async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        self.urls.lock().unwrap().push(flow.request.url());
        flow.request.headers.insert("x-seen-by", "mitm-reverse");
        Verdict::Continue
    }
}

/// A reverse proxy for `reverse` on 127.0.0.1:0 (trusting the test origins' CA
/// upstream), with `tag` as its only middleware.
async fn start_reverse(reverse: Reverse, tag: Arc<Tag>) -> TestProxy {
    start_proxy(|b| b.protocols(vec![Arc::new(reverse)]).http_handler(tag)).await
}

/// Runs curl with `args`: its status (`-w`'s output) and body, failing the test on a
/// non-zero exit.
async fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let out = curl_success(
        Command::new("curl")
            .args(["--silent", "--show-error", "--noproxy", "*"])
            .args(args),
        args,
    )
    .await;
    // `-w` output comes last, after a marker line.
    let text = out.stdout;
    let marker = b"\n--mitm-test--\n";
    match text.windows(marker.len()).rposition(|w| w == marker) {
        Some(at) => (
            String::from_utf8_lossy(&text[at + marker.len()..]).into_owned(),
            text[..at].to_vec(),
        ),
        None => (String::new(), text),
    }
}

/// curl's `-w` for [`curl`]: the status and the HTTP version, e.g. `200 2`.
const STATUS_AND_VERSION: &str = "\n--mitm-test--\n%{http_code} %{http_version}";

/// The proxy's CA as a PEM file for curl's `--cacert`.
fn ca_file(proxy: &TestProxy, dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("proxy-ca.pem");
    std::fs::write(&path, proxy.ca.cert_pem()).unwrap();
    path.display().to_string()
}

fn curl_present() -> bool {
    require_tool(have("curl"), "curl", "apt-get install curl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_client_reaches_an_http_target_which_sees_its_own_host() {
    if !curl_present() {
        return;
    }
    let origin = start_origin().await;
    let tag = Arc::new(Tag::default());
    let target = format!("http://127.0.0.1:{}", origin.port());
    let proxy = start_reverse(Reverse::parse(&target).unwrap(), tag.clone()).await;

    let url = format!("http://127.0.0.1:{}/path?q=1", proxy.addr.port());
    let (status, body) = curl(&["-w", STATUS_AND_VERSION, &url]).await;
    assert_eq!(status, "200 1.1");
    assert_eq!(body, b"hello from origin: GET /path?q=1");
    let seen = origin.requests();
    assert_eq!(seen.len(), 1);
    let host = format!("127.0.0.1:{}", origin.port());
    assert_eq!(seen[0].header("host"), Some(host.as_str()), "{seen:?}");
    assert_eq!(seen[0].header("x-seen-by"), Some("mitm-reverse"));
    assert_eq!(*tag.urls.lock().unwrap(), [format!("{target}/path?q=1")]);

    // A POST body goes through as it is.
    let echo = format!("http://127.0.0.1:{}/echo", proxy.addr.port());
    let (_, body) = curl(&["--data-binary", "ping", &echo]).await;
    assert_eq!(body, b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_host_sends_the_clients_host_to_the_target() {
    if !curl_present() {
        return;
    }
    let origin = start_origin().await;
    let tag = Arc::new(Tag::default());
    let reverse = Reverse::parse(&format!("http://127.0.0.1:{}", origin.port()))
        .unwrap()
        .keep_host(true);
    let proxy = start_reverse(reverse, tag.clone()).await;

    let url = format!("http://127.0.0.1:{}/kept", proxy.addr.port());
    let (_, body) = curl(&[&url]).await;
    assert_eq!(body, b"hello from origin: GET /kept");
    let (_, body) = curl(&["-H", "Host: shop.reverse.test", &url]).await;
    assert_eq!(body, b"hello from origin: GET /kept");
    let hosts: Vec<_> = origin
        .requests()
        .iter()
        .map(|s| s.header("host").unwrap_or_default().to_string())
        .collect();
    let client_host = format!("127.0.0.1:{}", proxy.addr.port());
    assert_eq!(hosts, [client_host.as_str(), "shop.reverse.test"]);
    assert_eq!(tag.urls.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_client_reaches_an_https_target_over_tls() {
    if !curl_present() {
        return;
    }
    // Its certificate is for `localhost`, from a CA only the proxy trusts.
    let origin = start_tls_origin().await;
    let tag = Arc::new(Tag::default());
    let target = format!("https://localhost:{}", origin.port());
    let proxy = start_reverse(Reverse::parse(&target).unwrap(), tag.clone()).await;

    let url = format!("http://127.0.0.1:{}/bytes/300000", proxy.addr.port());
    let (status, body) = curl(&["-w", STATUS_AND_VERSION, &url]).await;
    assert_eq!(status, "200 1.1");
    assert_same(&body, &pattern(300_000));
    let seen = origin.requests();
    let host = format!("localhost:{}", origin.port());
    assert_eq!(seen[0].header("host"), Some(host.as_str()), "{seen:?}");
    assert_eq!(seen[0].header("x-seen-by"), Some("mitm-reverse"));
    assert_eq!(
        *tag.urls.lock().unwrap(),
        [format!("{target}/bytes/300000")]
    );
}

/// curl over TLS to the reverse proxy by the name [`FRONT`], trusting only the proxy's
/// CA (so the leaf must be for that name), with `version` (`--http1.1`, `--http2`).
async fn tls_client_round_trip(version: &str, expected_version: &str) {
    let origin = start_origin().await;
    let tag = Arc::new(Tag::default());
    let target = format!("http://127.0.0.1:{}", origin.port());
    let proxy = start_reverse(Reverse::parse(&target).unwrap(), tag.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(&proxy, &dir);
    let port = proxy.addr.port();
    let resolve = format!("{FRONT}:{port}:127.0.0.1");

    let mut urls = Vec::new();
    for path in ["/one", "/bytes/100000"] {
        let url = format!("https://{FRONT}:{port}{path}");
        let args = [
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            version,
            "-w",
            STATUS_AND_VERSION,
            &url,
        ];
        let (status, body) = curl(&args).await;
        assert_eq!(status, format!("200 {expected_version}"), "{path}");
        if path == "/one" {
            assert_eq!(body, b"hello from origin: GET /one");
        } else {
            assert_same(&body, &pattern(100_000));
        }
        urls.push(format!("{target}{path}"));
    }
    let seen = origin.requests();
    assert_eq!(seen.len(), 2);
    let host = format!("127.0.0.1:{}", origin.port());
    for s in &seen {
        assert_eq!(s.header("host"), Some(host.as_str()), "{seen:?}");
        assert_eq!(s.header("x-seen-by"), Some("mitm-reverse"));
    }
    assert_eq!(*tag.urls.lock().unwrap(), urls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_gets_a_leaf_for_its_name_over_http1() {
    if !curl_present() {
        return;
    }
    tls_client_round_trip("--http1.1", "1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_gets_a_leaf_for_its_name_over_http2() {
    if !curl_present() {
        return;
    }
    tls_client_round_trip("--http2", "2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_with_keep_host_sends_its_authority_to_an_https_target() {
    if !curl_present() {
        return;
    }
    let origin = start_tls_origin().await;
    let tag = Arc::new(Tag::default());
    let reverse = Reverse::parse(&format!("https://localhost:{}", origin.port()))
        .unwrap()
        .keep_host(true);
    let proxy = start_reverse(reverse, tag.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(&proxy, &dir);
    let port = proxy.addr.port();
    let resolve = format!("{FRONT}:{port}:127.0.0.1");
    let url = format!("https://{FRONT}:{port}/h2");
    let args = [
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        "--http2",
        "-w",
        STATUS_AND_VERSION,
        &url,
    ];
    let (status, body) = curl(&args).await;
    assert_eq!(status, "200 2");
    assert_eq!(body, b"hello from origin: GET /h2");
    let seen = origin.requests();
    let authority = format!("{FRONT}:{port}");
    assert_eq!(seen[0].header("host"), Some(authority.as_str()), "{seen:?}");
    assert_eq!(tag.urls.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http2_client_with_prior_knowledge_is_served() {
    if !curl_present() {
        return;
    }
    let origin = start_origin().await;
    let tag = Arc::new(Tag::default());
    let target = format!("http://127.0.0.1:{}", origin.port());
    let proxy = start_reverse(Reverse::parse(&target).unwrap(), tag.clone()).await;
    let url = format!("http://127.0.0.1:{}/h2c", proxy.addr.port());
    let args = ["--http2-prior-knowledge", "-w", STATUS_AND_VERSION, &url];
    let (status, body) = curl(&args).await;
    assert_eq!(status, "200 2");
    assert_eq!(body, b"hello from origin: GET /h2c");
    let host = format!("127.0.0.1:{}", origin.port());
    assert_eq!(origin.requests()[0].header("host"), Some(host.as_str()));
    assert_eq!(*tag.urls.lock().unwrap(), [format!("{target}/h2c")]);
}

#[tokio::test]
async fn connect_to_a_reverse_proxy_is_refused_clearly() {
    let origin = start_origin().await;
    let tag = Arc::new(Tag::default());
    let target = format!("http://127.0.0.1:{}", origin.port());
    let proxy = start_reverse(Reverse::parse(&target).unwrap(), tag.clone()).await;
    let out = raw_exchange(
        proxy.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 405 "), "{text}");
    assert!(
        text.contains(&format!("reverse proxy for {target}")),
        "{text}"
    );
    assert!(text.contains("does not accept CONNECT"), "{text}");
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert!(tag.urls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn proxy_credentials_are_not_asked_of_reverse_clients() {
    let origin = start_origin().await;
    let reverse = Reverse::parse(&format!("http://127.0.0.1:{}", origin.port())).unwrap();
    let proxy = start_proxy(|b| {
        b.protocols(vec![Arc::new(reverse)])
            .proxy_auth("user", "secret")
    })
    .await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send("GET /open HTTP/1.1\r\nHost: shop.reverse.test\r\n\r\n")
        .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "hello from origin: GET /open");
}

#[tokio::test]
async fn a_reverse_target_that_is_the_proxy_itself_is_refused() {
    let port = refused_port();
    let reverse = Reverse::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let proxy = start_proxy(|b| b.port(port).protocols(vec![Arc::new(reverse)])).await;
    assert_eq!(proxy.addr.port(), port);
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send("GET / HTTP/1.1\r\nHost: anything.reverse.test\r\n\r\n")
        .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 508, "{reply:?}");
    assert!(reply.text().contains("loop"), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_of_a_reverse_proxy_to_itself_is_refused() {
    if !curl_present() {
        return;
    }
    let port = refused_port();
    let reverse = Reverse::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let proxy = start_proxy(|b| b.port(port).protocols(vec![Arc::new(reverse)])).await;
    let url = format!("http://127.0.0.1:{}/", proxy.addr.port());
    let args = ["--http2-prior-knowledge", "-w", STATUS_AND_VERSION, &url];
    let (status, body) = curl(&args).await;
    assert_eq!(status, "508 2");
    assert!(String::from_utf8_lossy(&body).contains("loop"));
}
