//! `--block-list`, `--anticache`, `--anticomp`, `--stickycookie` and `--stickyauth`
//! against real mitmdump 11: the same options given to both, the same requests sent by
//! curl through each, and what curl and the origin see compared step by step (status,
//! body, whether the origin was reached, the request headers these options change).
//! Plain HTTP, intercepted HTTPS and HTTP/2 on both hops.

use crate::common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;

use crate::flows::Mitmdump;

/// The request headers the options under test change, as an origin saw them (names
/// lower-cased, in order).
type Heads = Vec<(String, String)>;

const WATCHED: [&str; 5] = [
    "authorization",
    "cookie",
    "if-none-match",
    "if-modified-since",
    "accept-encoding",
];

fn watched(headers: impl IntoIterator<Item = (String, String)>) -> Heads {
    headers
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .filter(|(n, _)| WATCHED.contains(&n.as_str()))
        .collect()
}

/// An origin whose requests' heads can be read back.
trait Recorded {
    fn heads(&self) -> Vec<Heads>;
}

impl Recorded for Origin {
    fn heads(&self) -> Vec<Heads> {
        self.requests()
            .into_iter()
            .map(|s| watched(s.headers))
            .collect()
    }
}

/// What one request got through one proxy.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    /// curl's exit code (52: the proxy closed without answering).
    exit: Option<i32>,
    /// The status (0 for none) and the HTTP version curl spoke.
    status: String,
    body: String,
    /// The watched headers of the request the origin received; `None` when no request
    /// reached it.
    origin: Option<Heads>,
}

/// One proxy under test: where it listens and the CA its clients trust.
struct Side {
    addr: SocketAddr,
    ca: PathBuf,
}

/// mitmdump and mitm, started with the same options.
struct Pair {
    theirs: Mitmdump,
    ours: ChildProxy,
    dir: tempfile::TempDir,
}

impl Pair {
    /// Starts mitmdump and mitm with the same `args` (mitmdump's command line, `--set`
    /// included); `None` (the test skips) without mitmdump.
    async fn start(args: &[&str]) -> Option<Pair> {
        let dump = venv_tool("mitmdump");
        if !require_tool(
            dump.is_some(),
            "mitmdump (mitmproxy 11)",
            "scripts/test-venv.sh",
        ) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mitmdump.flows");
        let theirs = Mitmdump::start_with(&dump?, dir.path(), &file, args).await;
        let ours = ChildProxy::start_with(args);
        Some(Pair { theirs, ours, dir })
    }

    fn sides(&self) -> [Side; 2] {
        [
            Side {
                addr: self.ours.addr,
                ca: self.ours.ca_pem.clone(),
            },
            Side {
                addr: self.theirs.addr(),
                ca: Mitmdump::ca_cert(self.dir.path()),
            },
        ]
    }

    /// Sends each request (curl arguments, the URL last) through both proxies in turn,
    /// asserts that both got the same, and returns what they got.
    async fn compare(&self, origin: &dyn Recorded, requests: &[&[&str]]) -> Vec<Step> {
        let [ours, theirs] = self.sides();
        let mut steps = Vec::new();
        for args in requests {
            let got = step(&ours, origin, args).await;
            let want = step(&theirs, origin, args).await;
            assert_eq!(got, want, "curl {args:?}: mitm (left) and mitmdump (right)");
            steps.push(got);
        }
        steps
    }

    async fn stop(self) {
        self.theirs.stop().await;
    }
}

/// One request by curl through `side`, and what the origin saw of it.
///
/// HTTP/1.1 unless the arguments ask for `--http2`: mitmdump offers a client HTTP/2
/// only when the origin speaks it, mitm whenever the client asks (not what is
/// compared here).
async fn step(side: &Side, origin: &dyn Recorded, args: &[&str]) -> Step {
    let before = origin.heads().len();
    let out = curl_output(
        curl_via(side.addr, &side.ca, args)
            .args(["--write-out", "\n%{http_code} %{http_version}"])
            .args(args),
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let heads = origin.heads();
    assert!(heads.len() <= before + 1, "one request, one origin request");
    Step {
        exit: out.status.code(),
        status: status.to_string(),
        body: body.to_string(),
        origin: heads.get(before).cloned(),
    }
}

fn curl_present() -> bool {
    require_tool(have("curl"), "curl", "apt-get install curl")
}

#[tokio::test(flavor = "multi_thread")]
async fn block_list_answers_and_closes_as_mitmdump_does() {
    if !curl_present() {
        return;
    }
    let origin = start_origin().await;
    let tls = start_tls_origin().await;
    let args = [
        "--set",
        "block_list=/~u blocked/403",
        "--set",
        "block_list=|~u /both|403",
        "--set",
        "block_list=|~u /both|404",
        "--set",
        "block_list=:~u drop:444",
        "--set",
        "block_list=:~u drop-too:410",
    ];
    let Some(pair) = Pair::start(&args).await else {
        return;
    };
    let plain = format!("http://127.0.0.1:{}", origin.port());
    let https = format!("https://localhost:{}", tls.port());
    let urls = [
        format!("{plain}/blocked"),
        format!("{plain}/both"),
        format!("{plain}/drop"),
        format!("{plain}/drop-too"),
        format!("{plain}/fine"),
        format!("{https}/blocked"),
        format!("{https}/fine"),
    ];
    let plain_requests: Vec<[&str; 1]> = urls[..5].iter().map(|u| [u.as_str()]).collect();
    let requests: Vec<&[&str]> = plain_requests.iter().map(|r| &r[..]).collect();
    let steps = pair.compare(&origin, &requests).await;
    let status: Vec<&str> = steps.iter().map(|s| s.status.as_str()).collect();
    // Blocked: answered with no body, the origin never asked; of two matching rules
    // the last wins, and a 444 among them closes without an answer.
    assert_eq!(status, ["403 1.1", "404 1.1", "000 0", "000 0", "200 1.1"]);
    assert!(steps[..4]
        .iter()
        .all(|s| s.origin.is_none() && s.body.is_empty()));
    assert_eq!(steps[2].exit, Some(52), "curl: empty reply from server");
    assert!(steps[4].origin.is_some());

    // Inside intercepted HTTPS.
    let tls_requests: Vec<[&str; 1]> = urls[5..].iter().map(|u| [u.as_str()]).collect();
    let requests: Vec<&[&str]> = tls_requests.iter().map(|r| &r[..]).collect();
    let steps = pair.compare(&tls, &requests).await;
    assert_eq!(steps[0].status, "403 1.1");
    assert!(steps[0].origin.is_none());
    assert_eq!(steps[1].status, "200 1.1");
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn anticache_and_anticomp_change_requests_as_mitmdump_does() {
    if !curl_present() {
        return;
    }
    let origin = start_origin().await;
    let tls = start_tls_origin().await;
    let Some(pair) = Pair::start(&["--anticache", "--anticomp"]).await else {
        return;
    };
    let url = format!("http://127.0.0.1:{}/page", origin.port());
    let conditional = [
        "-H",
        "If-None-Match: \"v1\"",
        "-H",
        "If-Modified-Since: Wed, 21 Oct 2015 07:28:00 GMT",
        "-H",
        "Accept-Encoding: gzip, br",
        "-H",
        "Authorization: Basic dTpw",
    ];
    let first: Vec<&str> = conditional.iter().copied().chain([url.as_str()]).collect();
    let steps = pair.compare(&origin, &[&first, &[url.as_str()]]).await;
    // The conditional headers are gone, the encoding is identity, what else the client
    // sent is untouched; a request with no Accept-Encoding gets one.
    assert_eq!(
        steps[0].origin.as_deref(),
        Some(
            &[
                ("accept-encoding".into(), "identity".into()),
                ("authorization".into(), "Basic dTpw".into()),
            ][..]
        )
    );
    assert_eq!(
        steps[1].origin.as_deref(),
        Some(&[("accept-encoding".into(), "identity".into())][..])
    );
    let url = format!("https://localhost:{}/page", tls.port());
    let first: Vec<&str> = conditional.iter().copied().chain([url.as_str()]).collect();
    let steps = pair.compare(&tls, &[&first]).await;
    assert_eq!(steps[0].origin.as_ref().unwrap().len(), 2);
    pair.stop().await;
}

/// `/set-cookie?…` on `base` setting these `Set-Cookie` values.
fn set_cookies(base: &str, cookies: &[&str]) -> String {
    let query: Vec<String> = cookies.iter().map(|c| percent_encode(c)).collect();
    format!("{base}/set-cookie?{}", query.join("&"))
}

#[tokio::test(flavor = "multi_thread")]
async fn stickycookie_sends_cookies_back_as_mitmdump_does() {
    if !curl_present() {
        return;
    }
    let origin = start_origin().await;
    let tls = start_tls_origin().await;
    let Some(pair) = Pair::start(&["--stickycookie", "~m GET"]).await else {
        return;
    };
    for base in [
        format!("http://127.0.0.1:{}", origin.port()),
        format!("https://localhost:{}", tls.port()),
    ] {
        let set = set_cookies(&base, &["a=1", "b=2; Path=/; Max-Age=3600"]);
        let delete = set_cookies(&base, &["a=gone; Max-Age=0"]);
        let next = format!("{base}/next");
        let requests: [&[&str]; 6] = [
            &[&next],
            &[&set],
            &[&next],
            &["-X", "POST", &next],
            &[&delete],
            &[&next],
        ];
        let recorder: &dyn Recorded = if base.starts_with("https") {
            &tls
        } else {
            &origin
        };
        let steps = pair.compare(recorder, &requests).await;
        let cookie = |s: &Step| {
            s.origin
                .as_ref()
                .unwrap()
                .iter()
                .find(|(n, _)| n == "cookie")
                .map(|(_, v)| v.clone())
        };
        assert_eq!(cookie(&steps[0]), None, "{base}");
        assert_eq!(cookie(&steps[2]).as_deref(), Some("a=1; b=2"), "{base}");
        // Not matching the filter: nothing added.
        assert_eq!(cookie(&steps[3]), None, "{base}");
        // Deleted by Max-Age=0.
        assert_eq!(cookie(&steps[5]).as_deref(), Some("b=2"), "{base}");
    }
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stickyauth_adds_authorization_as_mitmdump_does() {
    if !curl_present() {
        return;
    }
    let origin = start_origin().await;
    let tls = start_tls_origin().await;
    let Some(pair) = Pair::start(&["--stickyauth", "~u /api"]).await else {
        return;
    };
    for base in [
        format!("http://127.0.0.1:{}", origin.port()),
        format!("https://localhost:{}", tls.port()),
    ] {
        let (login, api, other) = (
            format!("{base}/login"),
            format!("{base}/api/x"),
            format!("{base}/other"),
        );
        let requests: [&[&str]; 5] = [
            &[&api],
            &["-H", "Authorization: Bearer first", &login],
            &[&api],
            &[&other],
            &["-H", "Authorization: Bearer own", &api],
        ];
        let recorder: &dyn Recorded = if base.starts_with("https") {
            &tls
        } else {
            &origin
        };
        let steps = pair.compare(recorder, &requests).await;
        let auth = |s: &Step| {
            s.origin
                .as_ref()
                .unwrap()
                .iter()
                .find(|(n, _)| n == "authorization")
                .map(|(_, v)| v.clone())
        };
        assert_eq!(auth(&steps[0]), None);
        assert_eq!(auth(&steps[2]).as_deref(), Some("Bearer first"), "{base}");
        assert_eq!(auth(&steps[3]), None, "not matching the filter");
        assert_eq!(
            auth(&steps[4]).as_deref(),
            Some("Bearer own"),
            "its own is kept"
        );
    }
    pair.stop().await;
}

/// An HTTP/2-only TLS origin for `localhost`, recording the watched headers of each
/// request; `/set-cookie?…` answers with `Set-Cookie` fields as the HTTP/1 origin does.
struct H2Recorder {
    port: u16,
    seen: Arc<Mutex<Vec<Heads>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorded for H2Recorder {
    fn heads(&self) -> Vec<Heads> {
        self.seen.lock().unwrap().clone()
    }
}

async fn start_h2_recorder() -> H2Recorder {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let (port, task) = crate::http2::start_h2_origin_with(move |request, mut respond, _| {
        let record = record.clone();
        async move {
            let headers = request
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()));
            record.lock().unwrap().push(watched(headers));
            let mut response = http::Response::builder().status(200);
            if request.uri().path() == "/set-cookie" {
                for part in request.uri().query().unwrap_or("").split('&') {
                    response = response.header("set-cookie", percent_decode(part));
                }
            }
            let response = response.body(()).unwrap();
            if let Ok(mut out) = respond.send_response(response, false) {
                let _ = out.send_data(Bytes::from_static(b"h2 origin"), true);
            }
        }
    });
    H2Recorder { port, seen, task }
}

fn require_curl_http2() -> bool {
    let present = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("HTTP2"));
    require_tool(present, "curl with HTTP/2", "apt-get install curl")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_options_apply_to_http2_as_in_mitmdump() {
    if !require_curl_http2() {
        return;
    }
    let origin = start_h2_recorder().await;
    let args = [
        "--anticache",
        "--stickycookie",
        "~q",
        "--stickyauth",
        "~q",
        "--set",
        "block_list=/~u blocked/403",
        "--set",
        "block_list=/~u drop/444",
    ];
    let Some(pair) = Pair::start(&args).await else {
        return;
    };
    let base = format!("https://localhost:{}", origin.port);
    let drop = format!("{base}/drop");
    let set = set_cookies(&base, &["s=h2"]);
    let next = format!("{base}/next");
    let blocked = format!("{base}/blocked");
    let requests: [&[&str]; 4] = [
        &["--http2", "-H", "Authorization: Basic aDI=", &set],
        &["--http2", "-H", "If-None-Match: \"x\"", &next],
        &["--http2", &blocked],
        // 444 over HTTP/2: no answer.
        &["--http2", &drop],
    ];
    let steps = pair.compare(&origin, &requests).await;
    assert_eq!(steps[0].status, "200 2", "HTTP/2 to the proxy");
    assert_eq!(
        steps[1].origin.as_deref(),
        Some(
            &[
                ("authorization".into(), "Basic aDI=".into()),
                ("cookie".into(), "s=h2".into()),
            ][..]
        )
    );
    assert_eq!(steps[2].status, "403 2");
    assert!(steps[2].origin.is_none());
    assert_ne!(steps[3].exit, Some(0), "{:?}", steps[3]);
    pair.stop().await;
}

/// A mitmdump command line combining the options, given to both as it is.
#[tokio::test(flavor = "multi_thread")]
async fn a_mitmdump_command_line_combining_them_works_the_same() {
    if !curl_present() {
        return;
    }
    let origin = start_origin().await;
    let args = [
        "--anticache",
        "--anticomp",
        "--stickycookie",
        "~d 127.0.0.1",
        "--stickyauth",
        "~q",
        "--set",
        "block_list=/~u ads/404",
        "--set",
        "block_list=/~hq x-drop/444",
    ];
    let Some(pair) = Pair::start(&args).await else {
        return;
    };
    let base = format!("http://127.0.0.1:{}", origin.port());
    let set = set_cookies(&base, &["sid=42"]);
    let (page, ads) = (format!("{base}/page"), format!("{base}/ads/1"));
    let requests: [&[&str]; 4] = [
        &[
            "-H",
            "Authorization: Basic YTpi",
            "-H",
            "If-None-Match: \"1\"",
            &set,
        ],
        &[&page],
        &[&ads],
        // mitmdump lower-cases its block_list rules: a name written lower-case is
        // matched by both.
        &["-H", "x-drop: 1", &page],
    ];
    let steps = pair.compare(&origin, &requests).await;
    assert_eq!(
        steps[1].origin.as_deref(),
        Some(
            &[
                ("accept-encoding".into(), "identity".into()),
                ("authorization".into(), "Basic YTpi".into()),
                ("cookie".into(), "sid=42".into()),
            ][..]
        ),
    );
    assert_eq!(steps[2].status, "404 1.1");
    assert_eq!(steps[3].exit, Some(52));
    pair.stop().await;
}

/// Options mitm refuses at start, saying why, where mitmdump would refuse them too.
#[test]
fn bad_rules_are_refused_at_start_with_the_reason() {
    for (args, says) in [
        (&["--block-list", "/~q/abc"][..], "invalid status \"abc\""),
        (&["--block-list", "/~x/404"][..], "invalid filter \"~x\""),
        (&["--block-list", "/~q"][..], "expected 2 parts"),
        (&["--stickycookie", "~q &"][..], "--stickycookie"),
        (&["--stickyauth", "(~q"][..], "--stickyauth"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mitm"))
            .args(["--port", "0"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// A 444 inside intercepted HTTPS closes the client's connection, as in mitmdump.
#[tokio::test(flavor = "multi_thread")]
async fn block_list_444_closes_an_intercepted_https_connection_as_mitmdump_does() {
    if !curl_present() {
        return;
    }
    let tls = start_tls_origin().await;
    let Some(pair) = Pair::start(&["--set", "block_list=/~u drop/444"]).await else {
        return;
    };
    let url = format!("https://localhost:{}/drop", tls.port());
    let steps = pair.compare(&tls, &[&[&url]]).await;
    assert_eq!(steps[0].status, "000 0");
    assert_ne!(steps[0].exit, Some(0));
    assert!(steps[0].origin.is_none());
    pair.stop().await;
}

/// The one difference kept on purpose: mitmdump keys its cookie jar by port, so a
/// cookie set by `127.0.0.1:A` does not go to `127.0.0.1:B`; by RFC 6265 cookies do not
/// depend on the port, and mitm sends it.
#[tokio::test(flavor = "multi_thread")]
async fn stickycookie_sends_cookies_to_every_port_of_a_host_where_mitmdump_keys_by_port() {
    if !curl_present() {
        return;
    }
    let (a, b) = (start_origin().await, start_origin().await);
    let Some(pair) = Pair::start(&["--stickycookie", "~q"]).await else {
        return;
    };
    let set = set_cookies(&format!("http://127.0.0.1:{}", a.port()), &["p=1"]);
    let other = format!("http://127.0.0.1:{}/next", b.port());
    let [ours, theirs] = pair.sides();
    let mut cookies = Vec::new();
    for side in [&ours, &theirs] {
        step(side, &a, &[&set]).await;
        let got = step(side, &b, &[&other]).await.origin.unwrap();
        cookies.push(got.into_iter().find(|(n, _)| n == "cookie").map(|(_, v)| v));
    }
    assert_eq!(cookies, [Some("p=1".to_string()), None], "mitm, mitmdump");
    pair.stop().await;
}

/// What `--save` keeps is the flow as the options changed it: the request as sent on,
/// the answer the proxy gave.
#[tokio::test(flavor = "multi_thread")]
async fn a_saved_flow_is_the_flow_as_changed() {
    if !curl_present() {
        return;
    }
    let origin = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("changed.flows");
    let mut ours = ChildProxy::start_with(&[
        "--save",
        file.to_str().unwrap(),
        "--anticache",
        "--anticomp",
        "--block-list",
        "/~u blocked/403",
    ]);
    let side = Side {
        addr: ours.addr,
        ca: ours.ca_pem.clone(),
    };
    let base = format!("http://127.0.0.1:{}", origin.port());
    let page = format!("{base}/page");
    step(&side, &origin, &["-H", "If-None-Match: \"1\"", &page]).await;
    step(&side, &origin, &[&format!("{base}/blocked")]).await;
    ours.interrupt();
    let records = mitm::capture::flows::read_flows(&file).unwrap();
    assert_eq!(records.len(), 2, "{records:#?}");
    let sent = &records[0].request.headers;
    assert_eq!(sent.get("if-none-match"), None);
    assert_eq!(sent.get("accept-encoding"), Some("identity"));
    let blocked = records[1].response.as_ref().expect("the proxy's answer");
    assert_eq!(blocked.status, 403);
}

/// A rule whose filter reads the request body sees it whole (the body is held for it),
/// as in mitmdump.
#[tokio::test(flavor = "multi_thread")]
async fn block_list_matches_request_bodies_as_mitmdump_does() {
    if !curl_present() {
        return;
    }
    let origin = start_origin().await;
    let Some(pair) = Pair::start(&["--set", "block_list=/~bq secret/403"]).await else {
        return;
    };
    let url = format!("http://127.0.0.1:{}/echo", origin.port());
    let requests: [&[&str]; 2] = [
        &["--data-binary", "a secret here", &url],
        &["--data-binary", "nothing to see", &url],
    ];
    let steps = pair.compare(&origin, &requests).await;
    assert_eq!(steps[0].status, "403 1.1");
    assert!(steps[0].origin.is_none());
    assert_eq!(steps[1].body, "nothing to see");
    pair.stop().await;
}

/// The options apply in every mode: here a reverse proxy, which curl asks directly.
#[tokio::test(flavor = "multi_thread")]
async fn the_options_apply_in_reverse_mode() {
    if !curl_present() {
        return;
    }
    let origin = start_origin().await;
    let mode = format!("reverse:http://127.0.0.1:{}", origin.port());
    let ours = ChildProxy::start_with(&[
        "--mode",
        &mode,
        "--anticache",
        "--stickyauth",
        "~q",
        "--block-list",
        "/~u blocked/403",
    ]);
    let base = format!("http://{}", ours.addr);
    let curl = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("curl")
            .args(["--silent", "--write-out", "%{http_code}"])
            .args(args)
            .output();
        let out = tokio::time::timeout(PATIENCE, out).await.unwrap().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let auth = "Authorization: Bearer r".to_string();
    curl(vec!["-H".into(), auth, format!("{base}/login")]).await;
    let none_match = "If-None-Match: \"1\"".to_string();
    let got = curl(vec!["-H".into(), none_match, format!("{base}/next")]).await;
    assert!(got.ends_with("200"), "{got}");
    let seen = origin.requests();
    assert_eq!(
        watched(seen[1].headers.clone()),
        [("authorization".to_string(), "Bearer r".to_string())]
    );
    assert_eq!(curl(vec![format!("{base}/blocked")]).await, "403");
    assert_eq!(
        origin.requests().len(),
        2,
        "the blocked request went nowhere"
    );
}
