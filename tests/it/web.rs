//! The web UI: who it lets in (token, Host, Origin), its API and live socket, the
//! `mitm --web` and `mitm web FILE` commands, and the page itself in headless Chromium
//! (skipped with the reason where Chromium is missing; a failure with
//! `MITM_REQUIRE_TOOLS=1`).

#[path = "common/cdp.rs"]
mod cdp;
use crate::common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use futures_util::StreamExt;
use mitm::web::{FlowSource, MemoryStore, WebUi};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use common::*;

/// A running web UI, as a test sees it.
struct Ui {
    addr: SocketAddr,
    url: String,
    token: String,
    feed: Arc<mitm::web::Feed>,
    store: Arc<MemoryStore>,
    interceptor: Arc<mitm::web::Interceptor>,
}

impl Ui {
    fn host(&self) -> String {
        self.addr.to_string()
    }
}

/// A web UI on a free port, replaying with a sender of its own (no listener) that
/// trusts the test origins.
async fn start_ui() -> Ui {
    let sender = mitm::Mitm::builder()
        .certificate_authority(Arc::new(mitm::CertificateAuthority::generate().unwrap()))
        .middlewares(vec![])
        .upstream_ca_file(origin_ca_file())
        .sender()
        .await
        .unwrap();
    let ui = WebUi::builder()
        .port(0)
        .bind()
        .await
        .unwrap()
        .replayer(Arc::new(sender));
    let started = Ui {
        interceptor: ui.interceptor().clone(),
        addr: ui.local_addr(),
        url: ui.url(),
        token: ui.token().to_string(),
        feed: ui.feed(),
        store: ui.store().clone(),
    };
    tokio::spawn(ui.run());
    started
}

/// A proxy feeding `ui`, and an origin behind it.
async fn proxy_into(ui: &Ui) -> (TestProxy, Origin) {
    let origin = start_origin().await;
    let feed = ui.feed.clone();
    let proxy = start_proxy(|b| b.http_handler(feed)).await;
    (proxy, origin)
}

/// A reqwest client that goes straight to loopback, no proxy.
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_client_config(origin_ca()))
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

/// The body the UI at `url` answers, as text, asked with `token` as a bearer token.
pub(crate) async fn get_text(url: String, token: &str) -> String {
    plain_client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The JSON the UI at `url` answers, asked with `token` as a bearer token.
async fn get_json(url: String, token: &str) -> serde_json::Value {
    json(&get_text(url, token).await)
}

/// `text` as JSON, or a failure showing it.
fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The status code of a raw HTTP/1 answer.
fn status(answer: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Sends a request with these extra header lines to the UI, returns the answer.
async fn ask(ui: &Ui, method: &str, target: &str, host: &str, extra: &str) -> String {
    let request =
        format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n");
    String::from_utf8_lossy(&raw_exchange(ui.addr, request.as_bytes()).await).into_owned()
}

#[tokio::test]
async fn no_token_is_403_and_the_token_once_leaves_a_cookie_that_is_enough() {
    let ui = start_ui().await;
    let host = ui.host();
    let bare = ask(&ui, "GET", "/", &host, "").await;
    assert_eq!(status(bare.as_bytes()), 403, "{bare}");
    let api = ask(&ui, "GET", "/api/flows", &host, "").await;
    assert_eq!(status(api.as_bytes()), 403, "{api}");
    let wrong = ask(&ui, "GET", "/?token=0123", &host, "").await;
    assert_eq!(status(wrong.as_bytes()), 403, "{wrong}");

    let first = ask(&ui, "GET", &format!("/?token={}", ui.token), &host, "").await;
    assert_eq!(status(first.as_bytes()), 200, "{first}");
    assert!(first.contains("<title>mitm</title>"), "{first}");
    let cookie = header(&first, "set-cookie").expect("a cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();

    let again = ask(
        &ui,
        "GET",
        "/api/flows",
        &host,
        &format!("Cookie: {pair}\r\n"),
    )
    .await;
    assert_eq!(status(again.as_bytes()), 200, "{again}");
    assert!(again.contains("\"flows\":[]"), "{again}");
    let bearer = ask(
        &ui,
        "GET",
        "/api/flows",
        &host,
        &format!("Authorization: Bearer {}\r\n", ui.token),
    )
    .await;
    assert_eq!(status(bearer.as_bytes()), 200, "{bearer}");
}

#[tokio::test]
async fn a_foreign_host_is_refused_even_with_the_token() {
    let ui = start_ui().await;
    let auth = format!("Authorization: Bearer {}\r\n", ui.token);
    for host in ["evil.example", &format!("evil.example:{}", ui.addr.port())] {
        let answer = ask(&ui, "GET", "/api/flows", host, &auth).await;
        assert_eq!(status(answer.as_bytes()), 403, "Host {host}: {answer}");
    }
    let local = format!("localhost:{}", ui.addr.port());
    let answer = ask(&ui, "GET", "/api/flows", &local, &auth).await;
    assert_eq!(status(answer.as_bytes()), 200, "{answer}");
}

/// The policy every answer of the UI carries: its own scripts, styles and images
/// only, never framed.
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; \
                   form-action 'none'; base-uri 'none'";

/// The modules a module of the page imports (`import … from "./NAME.js"`).
fn imports(module: &str) -> Vec<String> {
    module
        .lines()
        .filter(|l| l.starts_with("import ") || l.starts_with("} from "))
        .filter_map(|l| l.split("from \"./").nth(1)?.split('"').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_page_and_each_of_its_modules_are_served_as_such_behind_the_same_checks() {
    let ui = start_ui().await;
    let host = ui.host();
    let auth = format!("Authorization: Bearer {}\r\n", ui.token);
    let page = ask(&ui, "GET", "/", &host, &auth).await;
    assert_eq!(status(page.as_bytes()), 200, "{page}");
    assert_eq!(header(&page, "content-security-policy"), Some(CSP));
    assert!(
        page.contains(r#"<script type="module" src="/js/main.js"></script>"#),
        "{page}"
    );
    // Every module main.js reaches, as JavaScript, with the headers of any answer.
    let mut modules = vec!["main.js".to_string()];
    let mut i = 0;
    while let Some(name) = modules.get(i).cloned() {
        let path = format!("/js/{name}");
        let answer = ask(&ui, "GET", &path, &host, &auth).await;
        assert_eq!(status(answer.as_bytes()), 200, "{path}: {answer}");
        assert_eq!(
            header(&answer, "content-type"),
            Some("text/javascript; charset=utf-8"),
            "{path}"
        );
        assert_eq!(
            header(&answer, "content-security-policy"),
            Some(CSP),
            "{path}"
        );
        assert_eq!(
            header(&answer, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        // Behind the same checks: the token, and the Host.
        let bare = ask(&ui, "GET", &path, &host, "").await;
        assert_eq!(status(bare.as_bytes()), 403, "{path} without the token");
        let foreign = ask(&ui, "GET", &path, "evil.example", &auth).await;
        assert_eq!(status(foreign.as_bytes()), 403, "{path} for another Host");
        let (_, text) = answer.split_once("\r\n\r\n").unwrap();
        for import in imports(text) {
            if !modules.contains(&import) {
                modules.push(import);
            }
        }
        i += 1;
    }
    assert!(modules.len() > 5, "main.js imports only {modules:?}");
    let unknown = ask(&ui, "GET", "/js/nope.js", &host, &auth).await;
    assert_eq!(status(unknown.as_bytes()), 404, "{unknown}");
}

#[tokio::test]
async fn a_cross_origin_post_is_refused_and_a_same_origin_one_accepted() {
    let ui = start_ui().await;
    let (proxy, origin) = proxy_into(&ui).await;
    client_via(&proxy)
        .get(format!("http://127.0.0.1:{}/page", origin.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(ui.store.len(), 1);
    let host = ui.host();
    let auth = format!("Authorization: Bearer {}\r\n", ui.token);
    let evil = ask(
        &ui,
        "POST",
        "/api/clear",
        &host,
        &format!("{auth}Origin: http://evil.example\r\n"),
    )
    .await;
    assert_eq!(status(evil.as_bytes()), 403, "{evil}");
    assert_eq!(ui.store.len(), 1, "a refused clear cleared");
    let own = ask(
        &ui,
        "POST",
        "/api/clear",
        &host,
        &format!("{auth}Origin: http://{host}\r\n"),
    )
    .await;
    assert_eq!(status(own.as_bytes()), 204, "{own}");
    assert_eq!(ui.store.len(), 0);
}

/// Opens the live socket with `origin`, authenticated by the token.
async fn live(
    ui: &Ui,
    origin: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    tokio_tungstenite::tungstenite::Error,
> {
    live_at(ui.addr, &ui.token, origin).await
}

/// As [`live`], to the UI at `addr` with `token`.
async fn live_at(
    addr: SocketAddr,
    token: &str,
    origin: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    tokio_tungstenite::tungstenite::Error,
> {
    let mut request = format!("ws://{addr}/api/live")
        .into_client_request()
        .unwrap();
    let h = request.headers_mut();
    h.insert("origin", HeaderValue::from_str(origin).unwrap());
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(request, tcp)
        .await
        .map(|(ws, _)| ws)
}

#[tokio::test]
async fn a_cross_origin_live_socket_is_refused_and_a_same_origin_one_gets_batched_flows() {
    let ui = start_ui().await;
    match live(&ui, "http://evil.example").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
            assert_eq!(answer.status(), 403)
        }
        Err(e) => panic!("refused, but not with 403: {e}"),
        Ok(_) => panic!("a cross-origin live socket was accepted"),
    }
    let mut socket = live(&ui, &format!("http://{}", ui.addr))
        .await
        .expect("same-origin live socket");
    let (proxy, origin) = proxy_into(&ui).await;
    let client = client_via(&proxy);
    for i in 0..20 {
        client
            .get(format!("http://127.0.0.1:{}/page/{i}", origin.port()))
            .send()
            .await
            .unwrap();
    }
    // Every flow arrives, finished, in a few batched messages rather than one each
    // (each flow changes three times: started, response, finished).
    let mut finished = std::collections::BTreeSet::new();
    let mut messages = 0;
    while finished.len() < 20 {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("live flows in time")
            .expect("socket open")
            .unwrap();
        messages += 1;
        let event: serde_json::Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
        assert_eq!(event["type"], "flows", "{event}");
        let columns: Vec<&str> = event["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        for row in event["rows"].as_array().unwrap() {
            let f: serde_json::Map<String, serde_json::Value> = columns
                .iter()
                .map(|c| c.to_string())
                .zip(row.as_array().unwrap().iter().cloned())
                .collect();
            assert_eq!(f["matches"], true);
            if f["pending"] == false {
                assert_eq!(f["status"], 200);
                finished.insert(f["path"].as_str().unwrap().to_string());
            }
        }
    }
    assert!(
        messages < 60,
        "{messages} messages for 20 flows: not batched"
    );
}

#[tokio::test]
async fn the_api_lists_filters_and_shows_flows_with_decoded_bodies() {
    let ui = start_ui().await;
    let (proxy, origin) = proxy_into(&ui).await;
    let client = client_via(&proxy);
    let base = format!("http://127.0.0.1:{}", origin.port());
    client.get(format!("{base}/gzip")).send().await.unwrap();
    client
        .post(format!("{base}/echo"))
        .body("posted")
        .send()
        .await
        .unwrap();
    let api = plain_client();
    let get = |path: String| {
        api.get(format!("http://{}{path}", ui.addr))
            .bearer_auth(&ui.token)
            .send()
    };
    let all: serde_json::Value = get("/api/flows".into())
        .await
        .unwrap()
        .text()
        .await
        .map(|t| json(&t))
        .unwrap();
    assert_eq!(all["count"], 2, "{all}");
    let posts: serde_json::Value = get("/api/flows?filter=~m%20POST".into())
        .await
        .unwrap()
        .text()
        .await
        .map(|t| json(&t))
        .unwrap();
    let rows = posts["flows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{posts}");
    assert_eq!(rows[0]["path"], "/echo");

    let bad = get("/api/flows?filter=~m%20GET%20%26%20~x".into())
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad: serde_json::Value = bad.text().await.map(|t| json(&t)).unwrap();
    assert_eq!(bad["position"], 9, "{bad}");
    assert_eq!(bad["error"], "unknown operator ~x");

    let gzip_id = all["flows"][0]["id"].as_u64().unwrap();
    let detail: serde_json::Value = get(format!("/api/flows/{gzip_id}"))
        .await
        .unwrap()
        .text()
        .await
        .map(|t| json(&t))
        .unwrap();
    let body = &detail["response"]["body"];
    assert_eq!(body["encoding"], "gzip", "{detail}");
    assert_eq!(body["decoded"], GZIP_TEXT.len());
    assert_eq!(body["size"], gzip(GZIP_TEXT.as_bytes()).len());
    let decoded = get(format!("/api/flows/{gzip_id}/response/body"))
        .await
        .unwrap();
    assert_eq!(
        decoded.headers()["content-type"],
        "application/octet-stream",
        "captured bodies are never served as pages"
    );
    assert_eq!(decoded.text().await.unwrap(), GZIP_TEXT);
    let raw = get(format!("/api/flows/{gzip_id}/response/body?raw=1"))
        .await
        .unwrap();
    assert_eq!(raw.bytes().await.unwrap(), gzip(GZIP_TEXT.as_bytes()));
    let missing = get("/api/flows/999".into()).await.unwrap();
    assert_eq!(missing.status(), 404);

    // The flows shown (here: the POSTs) as HAR, and all of them as mitmproxy flows.
    let har = get("/api/export?format=har&filter=~m%20POST".into())
        .await
        .unwrap();
    assert_eq!(har.status(), 200);
    assert!(har.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("mitm.har"));
    let har = json(&har.text().await.unwrap());
    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{har}");
    assert_eq!(entries[0]["request"]["method"], "POST");
    let flows = get("/api/export?format=flows".into()).await.unwrap();
    assert_eq!(flows.status(), 200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("back.flows");
    std::fs::write(&file, flows.bytes().await.unwrap()).unwrap();
    assert_eq!(mitm::capture::read(&file).unwrap().len(), 2);
    let unknown = get("/api/export?format=pcap".into()).await.unwrap();
    assert_eq!(unknown.status(), 400);
}

/// `mitm` with `args`, until it prints its web UI's URL.
struct WebChild {
    child: Child,
    url: String,
    /// The proxy's first listener, when it runs one.
    proxy: Option<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Drop for WebChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WebChild {
    /// Stops it as Ctrl-C does, and waits until it has exited (with code 0).
    fn interrupt(&mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mitm did not stop on SIGINT"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(0), "{status}");
    }
}

fn start_mitm(args: &[&str]) -> WebChild {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mitm"))
        .args(["--log", "none", "-q", "--ca-dir"])
        .arg(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start mitm");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    let mut child = WebChild {
        child,
        url: String::new(),
        proxy: None,
        _dir: dir,
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx.recv_timeout(left).expect("mitm printed no web UI line");
        if let Some(rest) = line.strip_prefix("mitm listening on http://") {
            let addr = rest.split(' ').next().unwrap();
            child.proxy.get_or_insert(addr.parse().unwrap());
        }
        if let Some(url) = line.strip_prefix("web UI: ") {
            child.url = url.to_string();
            return child;
        }
    }
}

#[tokio::test]
async fn mitm_web_serves_a_saved_capture() {
    // A capture of two flows, made by the proxy itself.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("two.har");
    let origin = start_origin().await;
    {
        let capture = Arc::new(
            mitm::capture::Capture::builder()
                .sink(mitm::capture::create(&file).unwrap())
                .start(),
        );
        let proxy = start_proxy(|b| b.http_handler(capture.clone())).await;
        let client = client_via(&proxy);
        for path in ["/page/one", "/status/404"] {
            client
                .get(format!("http://127.0.0.1:{}{path}", origin.port()))
                .send()
                .await
                .unwrap();
        }
        capture.wait_written(2).await;
        proxy.handle.shutdown().await.unwrap();
        capture.finish();
    }
    let mitm = start_mitm(&["web", file.to_str().unwrap(), "--web-port", "0"]);
    let (base, token) = mitm.url.split_once("/?token=").unwrap();
    let list = get_json(format!("{base}/api/flows?filter=~c%20404"), token).await;
    assert_eq!(list["count"], 2, "{list}");
    assert_eq!(list["flows"][0]["path"], "/status/404", "{list}");
}

/// Saves one flow, `GET /page/original` to `origin`, made by the proxy itself, into
/// the new capture `file` (in the format its name says).
async fn capture_one(file: &std::path::Path, origin: &Origin) {
    let capture = Arc::new(
        mitm::capture::Capture::builder()
            .sink(mitm::capture::create(file).unwrap())
            .start(),
    );
    let proxy = start_proxy(|b| b.http_handler(capture.clone())).await;
    client_via(&proxy)
        .get(format!("http://127.0.0.1:{}/page/original", origin.port()))
        .send()
        .await
        .unwrap();
    capture.wait_written(1).await;
    proxy.handle.shutdown().await.unwrap();
    capture.finish();
}

/// The next message of a live socket, as JSON.
async fn next_event(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> serde_json::Value {
    let message = tokio::time::timeout(PATIENCE, socket.next())
        .await
        .expect("a live message in time")
        .expect("socket open")
        .unwrap();
    json(message.to_text().unwrap())
}

/// `mitm web` of a capture saved as `name`: a flow replayed (edited into a POST to
/// the origin's `/echo`) gets an id the UI shows it under, joins the list, reaches the
/// live socket, and the file is left byte for byte as it was.
async fn a_replay_in_mitm_web_of(name: &str) {
    use futures_util::SinkExt as _;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    let origin = start_origin().await;
    capture_one(&file, &origin).await;
    let saved = sha256(&std::fs::read(&file).unwrap());

    let mitm = start_mitm(&["web", file.to_str().unwrap(), "--web-port", "0"]);
    let (base, token) = mitm.url.split_once("/?token=").unwrap();
    let list = get_json(format!("{base}/api/flows"), token).await;
    assert_eq!(list["count"], 1, "{list}");
    let old = list["flows"][0]["id"].as_u64().unwrap();

    // A live socket, subscribed once it answers a message (here: a bad filter).
    let addr: SocketAddr = base.strip_prefix("http://").unwrap().parse().unwrap();
    let mut socket = live_at(addr, token, base).await.expect("live socket");
    socket.send(r#"{"filter":"~x"}"#.into()).await.unwrap();
    let event = next_event(&mut socket).await;
    assert_eq!(event["type"], "filtererror", "{event}");

    let body = format!("replayed from {name}");
    let edit = serde_json::json!({
        "method": "POST",
        "url": format!("http://127.0.0.1:{}/echo", origin.port()),
        "body": body,
    });
    let answer = plain_client()
        .post(format!("{base}/api/flows/{old}/replay"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(edit.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let replayed = json(&answer.text().await.unwrap());
    assert_eq!(replayed["error"], serde_json::Value::Null, "{replayed}");
    let new = replayed["id"].as_u64().unwrap();
    assert_ne!(new, old);
    let seen = origin.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[1].method.as_str(), &seen[1].body[..]),
        ("POST", body.as_bytes())
    );

    // The new id is the replayed flow.
    let detail = get_json(format!("{base}/api/flows/{new}"), token).await;
    assert_eq!(detail["summary"]["method"], "POST", "{detail}");
    assert_eq!(detail["summary"]["path"], "/echo", "{detail}");
    assert_eq!(detail["summary"]["status"], 200, "{detail}");
    let echoed = get_text(format!("{base}/api/flows/{new}/response/body"), token).await;
    assert_eq!(echoed, body);
    let original = get_json(format!("{base}/api/flows/{old}"), token).await;
    assert_eq!(original["summary"]["path"], "/page/original", "{original}");

    // It is in the list, after the saved flow.
    let list = get_json(format!("{base}/api/flows?after=0"), token).await;
    assert_eq!(list["count"], 2, "{list}");
    let rows: Vec<_> = list["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_u64().unwrap(),
                f["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [(old, "/page/original".into()), (new, "/echo".into())]
    );

    // The live socket was told.
    loop {
        let event = next_event(&mut socket).await;
        assert_eq!(event["type"], "flows", "{event}");
        let id_at = event["columns"]
            .as_array()
            .unwrap()
            .iter()
            .position(|c| c == "id")
            .unwrap();
        if event["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row[id_at] == new)
        {
            assert_eq!(event["count"], 2, "{event}");
            break;
        }
    }

    // Stopped as a user stops it, so that whatever it wrote is in the file (not in a
    // write-ahead log beside it): the file holds what it held, byte for byte.
    drop(socket);
    let mut mitm = mitm;
    mitm.interrupt();
    let now = sha256(&std::fs::read(&file).unwrap());
    assert!(now == saved, "{name} changed");
    let wal = dir.path().join(format!("{name}-wal"));
    let logged = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(logged, 0, "{} holds writes", wal.display());
}

#[tokio::test]
async fn a_replay_in_mitm_web_of_an_sqlite_file_is_shown_and_the_file_is_left_alone() {
    a_replay_in_mitm_web_of("saved.sqlite").await;
}

#[tokio::test]
async fn a_replay_in_mitm_web_of_a_har_file_is_shown() {
    a_replay_in_mitm_web_of("saved.har").await;
}

#[tokio::test]
async fn a_replay_in_mitm_web_of_a_flows_file_is_shown() {
    a_replay_in_mitm_web_of("saved.flows").await;
}

/// A source of an embedder's own that keeps no new flows (no `add`).
struct Frozen(MemoryStore);

impl FlowSource for Frozen {
    fn list(&self, query: &mitm::web::ListQuery) -> mitm::web::FlowPage {
        self.0.list(query)
    }
    fn get(&self, id: u64) -> Option<(Arc<mitm::capture::Record>, mitm::web::FlowState)> {
        self.0.get(id)
    }
    fn records(&self, filter: Option<&mitm::capture::Filter>) -> Vec<Arc<mitm::capture::Record>> {
        self.0.records(filter)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn clear(&self) {}
    fn changes(&self) -> mitm::web::Changes {
        mitm::web::Changes::never()
    }
}

#[tokio::test]
async fn a_replay_in_a_ui_whose_source_keeps_no_new_flows_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one.har");
    let origin = start_origin().await;
    capture_one(&file, &origin).await;
    let store = MemoryStore::default();
    store.extend(mitm::capture::read(&file).unwrap());
    let sender = mitm::Mitm::builder()
        .certificate_authority(Arc::new(mitm::CertificateAuthority::generate().unwrap()))
        .middlewares(vec![])
        .sender()
        .await
        .unwrap();
    let ui = WebUi::builder()
        .port(0)
        .bind()
        .await
        .unwrap()
        .replayer(Arc::new(sender))
        .source(Arc::new(Frozen(store)));
    let (addr, token) = (ui.local_addr(), ui.token().to_string());
    tokio::spawn(ui.run());
    let answer = plain_client()
        .post(format!("http://{addr}/api/flows/1/replay"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 500);
    let error = json(&answer.text().await.unwrap());
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("could not keep the new one"),
        "{error}"
    );
    assert_eq!(origin.requests().len(), 2, "the request was sent");
    let list = get_json(format!("http://{addr}/api/flows"), &token).await;
    assert_eq!(list["count"], 1, "{list}");
}

#[tokio::test]
async fn mitm_with_web_shows_the_proxy_flows() {
    let origin = start_origin().await;
    let mitm = start_mitm(&["--port", "0", "--web", "--web-port", "0"]);
    let (base, token) = mitm.url.split_once("/?token=").unwrap();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let proxy = mitm.proxy.expect("the proxy's banner before the web UI's");
    client_for(&format!("http://{proxy}"), origin_ca())
        .get(format!("http://127.0.0.1:{}/page/via-cli", origin.port()))
        .send()
        .await
        .unwrap();
    let list = get_json(format!("{base}/api/flows"), token).await;
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["flows"][0]["path"], "/page/via-cli");
    assert_eq!(list["flows"][0]["status"], 200);
    // The page links the proxy's CA certificate, served by the UI itself.
    let pem = get_text(format!("{base}/ca.pem"), token).await;
    let want = std::fs::read_to_string(mitm._dir.path().join("mitm.pem")).unwrap();
    assert_eq!(pem, want);
}

/// The UI shows the flow as mitmproxy's traffic-changing options left it (the request
/// field added, the response body replaced), and `--save` saves it so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mitm_with_web_shows_and_saves_the_flow_as_the_options_changed_it() {
    let origin = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let har = dir.path().join("changed.har");
    let mut mitm = start_mitm(&[
        "--port",
        "0",
        "--web",
        "--web-port",
        "0",
        "--save",
        har.to_str().unwrap(),
        "--modify-headers",
        "/~q/x-added/yes",
        "--modify-body",
        "/~s/from origin/from the rule",
    ]);
    let (base, token) = mitm.url.split_once("/?token=").unwrap();
    let (base, token) = (base.to_string(), token.to_string());
    let proxy = mitm.proxy.expect("the proxy's banner before the web UI's");
    let answer = client_for(&format!("http://{proxy}"), origin_ca())
        .get(format!("http://127.0.0.1:{}/changed", origin.port()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let want = "hello from the rule: GET /changed";
    assert_eq!(answer, want);
    assert_eq!(origin.requests()[0].header("x-added"), Some("yes"));
    // The flow, once its response is in.
    let deadline = std::time::Instant::now() + PATIENCE;
    let detail = loop {
        let list = get_json(format!("{base}/api/flows"), &token).await;
        if let Some(id) = list["flows"][0]["id"].as_u64() {
            let detail = get_json(format!("{base}/api/flows/{id}"), &token).await;
            if detail["response"]["body"]["size"].as_u64() > Some(0) {
                break detail;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the UI never showed the finished flow: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let id = detail["summary"]["id"].as_u64().unwrap();
    let headers = detail["request"]["headers"].as_array().unwrap();
    assert!(
        headers.contains(&serde_json::json!(["x-added", "yes"])),
        "{detail}"
    );
    assert_eq!(detail["response"]["body"]["size"], want.len(), "{detail}");
    let body = get_text(format!("{base}/api/flows/{id}/response/body"), &token).await;
    assert_eq!(body, want);
    tokio::task::spawn_blocking(move || mitm.interrupt())
        .await
        .unwrap();
    let saved = mitm::capture::read(&har).unwrap();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].request.headers.get("x-added"), Some("yes"));
    let response = saved[0].response.as_ref().unwrap();
    assert_eq!(&response.body.data[..], want.as_bytes());
}

/// Chromium, or `None` (with the reason printed) where it is missing.
fn chromium() -> Option<&'static str> {
    let found = find_chromium();
    require_tool(found.is_some(), "Chromium", "apt-get install chromium").then_some(())?;
    found
}

/// Where the screenshots go, when asked for (`MITM_WEB_SCREENSHOTS=DIR`).
fn screenshot_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("MITM_WEB_SCREENSHOTS").map(Into::into)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_flows_live_shows_one_and_filters() {
    let Some(chromium) = chromium() else { return };
    let ui = start_ui().await;
    let (proxy, origin) = proxy_into(&ui).await;
    let client = client_via(&proxy);
    let base = format!("http://127.0.0.1:{}", origin.port());
    for path in ["/page/first", "/gzip", "/status/404"] {
        client.get(format!("{base}{path}")).send().await.unwrap();
    }

    let browser = cdp::Browser::start(chromium).await;
    let page = browser.page().await;
    page.navigate(&ui.url).await;
    let rows = "document.querySelectorAll('#spacer .row')";
    page.wait_for(
        &format!("{rows}.length === 3"),
        "the three flows in the list",
    )
    .await;
    // The token left the address bar for a cookie.
    assert_eq!(page.eval("location.search").await, "");

    // A flow made now appears without a reload (over the live socket).
    client
        .post(format!("{base}/echo"))
        .body(r#"{"posted":[1,2]}"#)
        .send()
        .await
        .unwrap();
    page.wait_for(
        &format!("[...{rows}].some(r => r.textContent.includes('/echo') && r.textContent.includes('200'))"),
        "the new flow, finished, in the list",
    )
    .await;
    if let Some(dir) = screenshot_dir() {
        std::fs::write(dir.join("web-list.png"), page.screenshot().await).unwrap();
    }

    // Clicking a row shows its request head, then its response head and decoded body.
    page.eval(&format!(
        "[...{rows}].find(r => r.textContent.includes('/gzip')).click()"
    ))
    .await;
    let pane = "document.getElementById('pane').innerText";
    page.wait_for(
        &format!(
            "{pane}.includes('GET http://127.0.0.1:{}/gzip HTTP/1.1')",
            origin.port()
        ),
        "the request head",
    )
    .await;
    page.eval("document.querySelector('[data-tab=response]').click()")
        .await;
    page.wait_for(
        &format!(
            "{pane}.includes('HTTP/1.1 200 OK') && {pane}.toLowerCase().includes('content-encoding') \
             && {pane}.includes({:?}) && {pane}.includes('gzip') && {pane}.includes('decoded')",
            GZIP_TEXT.trim()
        ),
        "the response head and its body, decoded",
    )
    .await;
    // The echoed JSON is shown pretty.
    page.eval(&format!(
        "[...{rows}].find(r => r.textContent.includes('/echo')).click()"
    ))
    .await;
    page.wait_for(
        &format!("{pane}.includes('\"posted\": [')"),
        "the JSON body, pretty",
    )
    .await;
    if let Some(dir) = screenshot_dir() {
        std::fs::write(dir.join("web-detail.png"), page.screenshot().await).unwrap();
    }

    // The columns sort, both ways.
    let paths = format!("[...{rows}].map(r => r.children[4].textContent).join(' ')");
    page.eval("document.querySelector('#columns [data-key=path]').click()")
        .await;
    page.wait_for(
        &format!("{paths} === '/echo /gzip /page/first /status/404'"),
        "the rows sorted by path",
    )
    .await;
    page.eval("document.querySelector('#columns [data-key=path]').click()")
        .await;
    page.wait_for(
        &format!("{paths} === '/status/404 /page/first /gzip /echo'"),
        "the rows sorted by path, backwards",
    )
    .await;
    // j and k move the selection down and up the list as shown.
    page.eval("document.activeElement.blur()").await;
    let selected = "document.querySelector('#spacer .row.selected').children[4].textContent";
    page.press("k").await;
    page.wait_for(
        &format!("{selected} === '/gzip'"),
        "k to select the row above",
    )
    .await;
    page.press("j").await;
    page.wait_for(
        &format!("{selected} === '/echo'"),
        "j to select the row below",
    )
    .await;
    page.eval("document.querySelector('#columns [data-key=id]').click()")
        .await;

    // Typing a filter narrows the list (the server filters)...
    page.eval("document.getElementById('filter').focus()").await;
    page.type_text("~c 404").await;
    page.wait_for(
        &format!("{rows}.length === 1 && {rows}[0].textContent.includes('/status/404')"),
        "the list narrowed to the 404",
    )
    .await;
    // ...and a bad one shows its error, with where it is.
    page.eval(
        "const f = document.getElementById('filter'); f.value = '~c 404 & ~x'; \
         f.dispatchEvent(new Event('input'))",
    )
    .await;
    page.wait_for(
        "document.getElementById('filter-error').textContent.includes('unknown operator ~x (at 9)')",
        "the filter's error",
    )
    .await;
    // Flows the filter leaves out stay out as they arrive.
    page.eval(
        "const g = document.getElementById('filter'); g.value = '~m POST'; \
         g.dispatchEvent(new Event('input'))",
    )
    .await;
    page.wait_for(&format!("{rows}.length === 1"), "only the POST")
        .await;
    client
        .get(format!("{base}/page/later"))
        .send()
        .await
        .unwrap();
    client
        .post(format!("{base}/echo"))
        .body("2")
        .send()
        .await
        .unwrap();
    page.wait_for(&format!("{rows}.length === 2"), "the second POST")
        .await;
    assert!(!page
        .eval(&format!(
            "[...{rows}].some(r => r.textContent.includes('/page/later'))"
        ))
        .await
        .as_bool()
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_runs_as_modules_and_scripts_from_elsewhere_are_refused() {
    let Some(chromium) = chromium() else { return };
    let ui = start_ui().await;
    let browser = cdp::Browser::start(chromium).await;
    let page = browser.page().await;
    // Errors the page throws, and what its policy refuses, kept from the start.
    page.call(
        "Page.addScriptToEvaluateOnNewDocument",
        serde_json::json!({"source": "window.errors = []; addEventListener('error', e => errors.push(String(e.message))); \
                                      window.refused = []; addEventListener('securitypolicyviolation', e => refused.push(e.blockedURI));"}),
    )
    .await;
    page.navigate(&ui.url).await;
    page.wait_for(
        "document.getElementById('live').classList.contains('on') \
         && document.getElementById('count').textContent === '0 flows'",
        "the page running: its live socket open, its list drawn",
    )
    .await;
    assert_eq!(
        page.eval("[...document.scripts].map(s => s.type + ' ' + s.src)")
            .await,
        serde_json::json!([format!("module http://{}/js/main.js", ui.addr)])
    );
    assert_eq!(
        page.eval("[window.errors, window.refused]").await,
        serde_json::json!([[], []])
    );
    // A module from another origin (this very UI, by another name) is refused, and so
    // is a script written into the page.
    let elsewhere = format!("http://localhost:{}/js/state.js", ui.addr.port());
    let imported = page
        .eval(&format!(
            "import({elsewhere:?}).then(() => 'loaded', () => 'refused')"
        ))
        .await;
    assert_eq!(imported, "refused");
    page.eval(
        "(() => { const s = document.createElement('script'); \
         s.textContent = 'window.ran = true'; document.head.append(s); })()",
    )
    .await;
    page.wait_for("window.refused.length === 2", "both scripts refused")
        .await;
    assert_eq!(
        page.eval("[window.refused, window.ran === undefined]")
            .await,
        serde_json::json!([[elsewhere, "inline"], true])
    );
}

/// Opens `ui` in a new tab of `browser` and waits for its list to show `rows` rows.
async fn open<'a>(browser: &'a cdp::Browser, ui: &Ui, rows: usize) -> cdp::Page<'a> {
    let page = browser.page().await;
    page.navigate(&ui.url).await;
    page.wait_for(
        &format!("document.querySelectorAll('#spacer .row').length === {rows}"),
        "the list",
    )
    .await;
    page
}

/// Clicks the first row whose text has `text`.
async fn click_row(page: &cdp::Page<'_>, text: &str) {
    let row = format!("[...document.querySelectorAll('#spacer .row')].find(r => r.textContent.includes({text:?}))");
    page.wait_for(&format!("!!{row}"), &format!("a row with {text}"))
        .await;
    page.eval(&format!("{row}.click()")).await;
}

/// Sets an input's (or textarea's) value as typing would, in the page's `selector`.
async fn fill(page: &cdp::Page<'_>, selector: &str, value: &str) {
    page.eval(&format!(
        "(() => {{ const e = document.querySelector({selector:?}); e.value = {value:?}; \
         e.dispatchEvent(new Event('input', {{bubbles: true}})); }})()"
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intercepted_request_edited_in_the_page_reaches_the_origin_edited() {
    let Some(chromium) = chromium() else { return };
    let ui = start_ui().await;
    let (proxy, origin) = proxy_into(&ui).await;
    let browser = cdp::Browser::start(chromium).await;
    let page = open(&browser, &ui, 0).await;
    page.eval("document.getElementById('intercept').focus()")
        .await;
    // `~q`: requests with no response yet, so the response is not held as well.
    page.type_text("~q & ~u /echo").await;
    page.wait_for(
        "document.getElementById('intercept').classList.contains('on')",
        "the intercept filter to be set",
    )
    .await;
    assert!(ui.interceptor.filter().is_some());

    let client = client_via(&proxy);
    let url = format!("http://127.0.0.1:{}/echo", origin.port());
    let sent = tokio::spawn(async move {
        let r = client.post(url).body("original body").send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    click_row(&page, "⏸ request").await;
    page.wait_for(
        "!!document.querySelector('form.edit textarea[name=body]:not([disabled])')",
        "the edit form",
    )
    .await;
    assert!(
        origin.requests().is_empty(),
        "the request went on before the user said so"
    );
    fill(&page, "form.edit input[name=method]", "PUT").await;
    fill(&page, "form.edit textarea[name=body]", "edited in the page").await;
    page.eval(
        "(() => { const h = document.querySelector('form.edit textarea[name=headers]'); \
         h.value += '\\nX-Edited: yes'; })()",
    )
    .await;
    page.eval("document.querySelector('form.edit .resume').click()")
        .await;
    page.wait_for(
        "[...document.querySelectorAll('#spacer .row')].some(r => r.textContent.includes('PUT') && r.textContent.includes('200'))",
        "the edited flow, finished",
    )
    .await;
    let (status, body) = tokio::time::timeout(PATIENCE, sent)
        .await
        .expect("the resumed request to finish")
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "edited in the page"));
    let seen = origin.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].body, b"edited in the page");
    assert_eq!(seen[0].header("x-edited"), Some("yes"));
    // The list shows it finished, with the edited method.
    page.wait_for(
        "[...document.querySelectorAll('#spacer .row')].some(r => r.textContent.includes('PUT') && r.textContent.includes('200'))",
        "the edited flow, finished",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_request_never_reaches_the_origin_and_a_replay_does() {
    let Some(chromium) = chromium() else { return };
    let ui = start_ui().await;
    let (proxy, origin) = proxy_into(&ui).await;
    let client = client_via(&proxy);
    let base = format!("http://127.0.0.1:{}", origin.port());
    client
        .get(format!("{base}/page/again"))
        .send()
        .await
        .unwrap();
    let browser = cdp::Browser::start(chromium).await;
    let page = open(&browser, &ui, 1).await;

    // Replay: the button, then the key `r`; each reaches the origin again.
    click_row(&page, "/page/again").await;
    page.wait_for(
        "!!document.querySelector('#pane .replay')",
        "the replay button",
    )
    .await;
    page.eval("document.querySelector('#pane .replay').click()")
        .await;
    page.wait_for(
        "document.querySelectorAll('#spacer .row').length === 2",
        "the replayed flow in the list",
    )
    .await;
    page.eval("document.activeElement.blur()").await;
    page.press("r").await;
    page.wait_for(
        "document.querySelectorAll('#spacer .row').length === 3",
        "the second replay in the list",
    )
    .await;
    let again = |seen: &[Seen]| seen.iter().filter(|s| s.target == "/page/again").count();
    assert_eq!(again(&origin.requests()), 3);

    // Kill: the intercepted request never reaches the origin; the client is dropped.
    ui.interceptor.set_filter(Some(
        mitm::capture::Filter::parse("~q & ~u /page/kill").unwrap(),
    ));
    let url = format!("{base}/page/kill");
    let sent = tokio::spawn(async move { client.get(url).send().await });
    click_row(&page, "⏸ request").await;
    page.wait_for(
        "!!document.querySelector('form.edit .kill')",
        "the kill button",
    )
    .await;
    page.eval("document.querySelector('form.edit .kill').click()")
        .await;
    let answer = tokio::time::timeout(PATIENCE, sent)
        .await
        .expect("the killed request to end")
        .unwrap();
    assert!(
        answer.is_err(),
        "a killed request got an answer: {answer:?}"
    );
    page.wait_for(
        "document.getElementById('pane').innerText.includes('killed in the web UI')",
        "the flow marked killed",
    )
    .await;
    assert_eq!(
        origin
            .requests()
            .iter()
            .filter(|s| s.target.contains("kill"))
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intercepted_response_edited_in_the_page_reaches_the_client_edited() {
    let Some(chromium) = chromium() else { return };
    let ui = start_ui().await;
    let (proxy, origin) = proxy_into(&ui).await;
    ui.interceptor.set_filter(Some(
        mitm::capture::Filter::parse("~s & ~u /page/resp").unwrap(),
    ));
    let browser = cdp::Browser::start(chromium).await;
    let page = open(&browser, &ui, 0).await;
    let client = client_via(&proxy);
    let url = format!("http://127.0.0.1:{}/page/resp", origin.port());
    let sent = tokio::spawn(async move {
        let r = client.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    click_row(&page, "⏸ response").await;
    page.eval("document.querySelector('[data-tab=response]').click()")
        .await;
    page.wait_for(
        "!!document.querySelector('form.edit textarea[name=body]:not([disabled])')",
        "the response form",
    )
    .await;
    fill(&page, "form.edit input[name=status]", "418").await;
    fill(
        &page,
        "form.edit textarea[name=body]",
        "changed on the way back",
    )
    .await;
    // `a` resumes the selected flow, with the form's changes.
    page.eval("document.activeElement.blur()").await;
    page.press("a").await;
    let (status, body) = tokio::time::timeout(PATIENCE, sent)
        .await
        .expect("the resumed response")
        .unwrap();
    assert_eq!((status, body.as_str()), (418, "changed on the way back"));
}

/// A HAR file of `n` small flows, `GET http://big.localhost/p/I` answered 200.
fn big_har(path: &std::path::Path, n: usize) {
    let mut out = String::from(
        r#"{"log":{"version":"1.2","creator":{"name":"test","version":"1"},"entries":["#,
    );
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"startedDateTime":"2026-01-01T00:00:{:02}.{:03}Z","time":1,"request":{{"method":"GET","url":"http://big.localhost/p/{i}","httpVersion":"HTTP/1.1","headers":[],"queryString":[],"cookies":[],"headersSize":-1,"bodySize":0}},"response":{{"status":200,"statusText":"OK","httpVersion":"HTTP/1.1","headers":[{{"name":"content-type","value":"text/plain"}}],"cookies":[],"content":{{"size":2,"mimeType":"text/plain","text":"ok"}},"redirectURL":"","headersSize":-1,"bodySize":2}},"cache":{{}},"timings":{{"send":0,"wait":1,"receive":0}}}}"#,
            (i / 1000) % 60,
            i % 1000
        ));
    }
    out.push_str("]}}");
    std::fs::write(path, out).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_loads_100000_flows_from_sqlite_scrolls_and_filters() {
    const N: usize = 100_000;
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let har = dir.path().join("big.har");
    let db = dir.path().join("big.sqlite");
    big_har(&har, N);
    let converted = Command::new(env!("CARGO_BIN_EXE_mitm"))
        .args(["-q", "convert"])
        .arg(&har)
        .arg(&db)
        .status()
        .unwrap();
    assert!(converted.success());
    let mitm = start_mitm(&["web", db.to_str().unwrap(), "--web-port", "0"]);

    let browser = cdp::Browser::start(chromium).await;
    let page = browser.page().await;
    // Errors the page's scripts throw, kept for the end.
    page.call(
        "Page.addScriptToEvaluateOnNewDocument",
        serde_json::json!({"source": "window.errors = []; addEventListener('error', e => errors.push(String(e.message)));"}),
    )
    .await;
    let started = std::time::Instant::now();
    page.navigate(&mitm.url).await;
    let rows = "document.querySelectorAll('#spacer .row')";
    page.wait_for(&format!("{rows}.length > 0"), "the first rows")
        .await;
    let first_render = started.elapsed();
    page.wait_for(
        &format!("document.getElementById('count').textContent === '{N} flows'"),
        "every flow loaded",
    )
    .await;
    let all_loaded = started.elapsed();
    // Only the visible rows are in the page, however many flows there are.
    let shown = page.eval(&format!("{rows}.length")).await.as_u64().unwrap();
    assert!(shown > 0 && shown < 200, "{shown} rows in the DOM");

    // Scrolling to the middle and to the end shows those rows.
    let scrolled = std::time::Instant::now();
    page.eval("document.getElementById('list').scrollTop = 50000 * 22")
        .await;
    page.wait_for(
        &format!("[...{rows}].some(r => r.textContent.includes('/p/50000'))"),
        "the middle rows",
    )
    .await;
    page.eval("const l = document.getElementById('list'); l.scrollTop = l.scrollHeight")
        .await;
    page.wait_for(
        &format!(
            "[...{rows}].some(r => r.textContent.includes('/p/{}'))",
            N - 1
        ),
        "the last rows",
    )
    .await;
    let scrolling = scrolled.elapsed();

    // The server filters all of them.
    let filtering = std::time::Instant::now();
    page.eval("document.getElementById('filter').focus()").await;
    page.type_text("~u /p/9999").await;
    page.wait_for(
        &format!("{rows}.length === 11 && document.getElementById('count').textContent === '11 of {N} flows'"),
        "the 11 flows whose path has /p/9999",
    )
    .await;
    let filtered = filtering.elapsed();
    assert_eq!(page.eval("window.errors").await, serde_json::json!([]));
    eprintln!(
        "{N} flows: first rows after {first_render:?}, all loaded after {all_loaded:?}, \
         scrolled to the middle and the end in {scrolling:?}, filtered in {filtered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_flows_reaches_the_page_in_batches_and_it_stays_responsive() {
    const N: usize = 20_000;
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let har = dir.path().join("flood.har");
    big_har(&har, N);
    let records = mitm::capture::read(&har).unwrap();
    let ui = start_ui().await;
    let browser = cdp::Browser::start(chromium).await;
    let page = open(&browser, &ui, 0).await;

    // 10 000 flows a second for two seconds, while the page is open.
    let store = ui.store.clone();
    let flood = std::thread::spawn(move || {
        let mut records = records.into_iter();
        let start = std::time::Instant::now();
        for tick in 1..=100u32 {
            store.extend(records.by_ref().take(N / 100));
            let next = start + std::time::Duration::from_millis(20) * tick;
            std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
        }
    });
    // The page answers all along, and until it has caught up: no script call waits
    // long behind the updates.
    let all = format!("document.getElementById('count').textContent === '{N} flows'");
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut slowest = std::time::Duration::ZERO;
    loop {
        let asked = std::time::Instant::now();
        let done = page.eval(&all).await == serde_json::Value::Bool(true);
        slowest = slowest.max(asked.elapsed());
        if done && flood.is_finished() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the page did not show the {N} flows in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    flood.join().unwrap();
    assert!(
        slowest < std::time::Duration::from_secs(1),
        "the page took {slowest:?} to answer during the flood"
    );
    eprintln!("{N} flows flooded in; the page answered within {slowest:?} throughout");
}

#[tokio::test]
async fn websocket_messages_show_in_the_flow_as_they_pass() {
    let ui = start_ui().await;
    let (proxy, origin) = proxy_into(&ui).await;
    let mut ws = websocket_echoed(proxy.addr, origin.port()).await;
    // While the socket is still open, its flow shows the four messages.
    let detail = |id: u64| {
        let addr = ui.addr;
        let token = ui.token.clone();
        async move {
            let text = get_text(format!("http://{addr}/api/flows/{id}"), &token).await;
            json(&text)
        }
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    let flow = loop {
        let flow = detail(1).await;
        if flow["websocket"].as_array().is_some_and(|m| m.len() == 4) {
            break flow;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the messages never showed: {flow}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(flow["summary"]["websocket"], true);
    assert_eq!(flow["summary"]["status"], 101);
    let seen: Vec<(bool, bool, &str)> = flow["websocket"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["from_client"].as_bool().unwrap(),
                m["text"].as_bool().unwrap(),
                m["data"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (true, true, "hello"),
            (false, true, "hello"),
            (true, false, "00 ff "),
            (false, false, "00 ff "),
        ]
    );
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn mitm_web_of_a_damaged_file_shows_the_flows_before_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cut.har");
    let entry = |i: usize| {
        format!(
            r#"{{"startedDateTime":"2026-01-01T00:00:00.{i:03}Z","request":{{"method":"GET","url":"http://a.localhost/flow-{i}"}},"response":{{"status":200,"content":{{"text":"ok"}}}}}}"#
        )
    };
    let entries: Vec<String> = (0..5).map(entry).collect();
    let har = format!(r#"{{"log":{{"entries":[{}]}}}}"#, entries.join(","));
    // Cut inside the fourth entry.
    let cut = har.find("flow-3").unwrap();
    std::fs::write(&file, &har[..cut]).unwrap();
    let mitm = start_mitm(&["web", file.to_str().unwrap(), "--web-port", "0"]);
    let (base, token) = mitm.url.split_once("/?token=").unwrap();
    let list = get_json(format!("{base}/api/flows?after=0"), token).await;
    assert_eq!(list["count"], 3, "{list}");
    let paths: Vec<_> = list["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, ["/flow-0", "/flow-1", "/flow-2"], "{list}");
}
