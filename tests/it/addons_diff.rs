//! mitmproxy's traffic-changing options (`--map-remote`, `--map-local`,
//! `--modify-headers`, `--modify-body`) against real mitmdump 11: the same option
//! strings given to both, the same requests sent by curl through each (plain HTTP,
//! intercepted HTTPS, HTTP/2), and what the client and the origins see compared. Then
//! `map_local` refusing `..` and symlinks out of its directory, where mitmdump does
//! not.

use crate::common;
use crate::flows::Mitmdump;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::*;

/// One proxy under comparison: where it listens and the CA its clients trust.
struct Through {
    addr: SocketAddr,
    ca: PathBuf,
}

/// mitmdump and ours, started with the same options.
struct Both {
    dump: Option<Mitmdump>,
    ours: ChildProxy,
    _dir: tempfile::TempDir,
    dump_ca: PathBuf,
}

impl Both {
    /// Both proxies with `args`; `None` (the test skips) without mitmdump.
    async fn start(args: &[String]) -> Option<Both> {
        let dump = venv_tool("mitmdump");
        if !require_tool(dump.is_some(), "mitmdump", VENV_INSTALL)
            || !require_tool(have("curl"), "curl", "apt-get install curl")
        {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mitmdump.flows");
        let dump_args: Vec<&str> = args.iter().map(String::as_str).collect();
        let dump = Mitmdump::start_with(&dump.unwrap(), dir.path(), &file, &dump_args).await;
        let ours_args = args.to_vec();
        let ours = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = ours_args.iter().map(String::as_str).collect();
            ChildProxy::start_with(&args)
        })
        .await
        .unwrap();
        Some(Both {
            dump_ca: Mitmdump::ca_cert(dir.path()),
            dump: Some(dump),
            ours,
            _dir: dir,
        })
    }

    fn proxies(&self) -> [(&'static str, Through); 2] {
        let dump = self.dump.as_ref().unwrap();
        [
            (
                "mitmdump",
                Through {
                    addr: dump.addr(),
                    ca: self.dump_ca.clone(),
                },
            ),
            (
                "mitm",
                Through {
                    addr: self.ours.addr,
                    ca: self.ours.ca_pem.clone(),
                },
            ),
        ]
    }

    async fn stop(mut self) {
        self.dump.take().unwrap().stop().await;
    }
}

/// A field: name and value.
type Field = (String, String);

/// One request an origin received: the origin's index among those watched, the
/// target (origin-form), the fields asked for, the body.
type Received = (usize, String, Vec<Field>, Vec<u8>);

/// What a client and the origins saw of one request.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    /// The response fields asked for (names lower-cased), in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Per origin (by its index), the requests it received: target (origin-form),
    /// the fields asked for, body.
    origins: Vec<Received>,
}

/// The fields of `all` named in `names`, names lower-cased.
fn pick(all: &[(String, String)], names: &[&str]) -> Vec<(String, String)> {
    all.iter()
        .filter(|(n, _)| names.iter().any(|w| w.eq_ignore_ascii_case(n)))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect()
}

/// A target in origin-form, whichever form the proxy sent.
fn origin_form(target: &str) -> String {
    for scheme in ["http://", "https://"] {
        if let Some(rest) = target.strip_prefix(scheme) {
            return rest.find('/').map_or("/".into(), |i| rest[i..].to_string());
        }
    }
    target.to_string()
}

/// One request with curl (`args`, then the URL) through `proxy`, trusting its CA:
/// the status, the response fields `response_fields`, the body (decoded when `args`
/// has `--compressed`), and what each origin received since, with its fields
/// `request_fields`.
async fn exchange(
    proxy: &Through,
    origins: &[&Origin],
    args: &[&str],
    url: &str,
    response_fields: &[&str],
    request_fields: &[&str],
) -> Seen {
    let before: Vec<usize> = origins.iter().map(|o| o.requests().len()).collect();
    let dir = tempfile::tempdir().unwrap();
    let body_file = dir.path().join("body");
    let out = curl_success(
        tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--suppress-connect-headers"])
            .arg("--proxy")
            .arg(format!("http://{}", proxy.addr))
            .arg("--cacert")
            .arg(&proxy.ca)
            .args(["--dump-header", "-", "--output"])
            .arg(&body_file)
            .args(args)
            .arg(url),
        (args, url),
    )
    .await;
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let fields: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut origins_seen = Vec::new();
    for (i, (origin, before)) in origins.iter().zip(before).enumerate() {
        for r in &origin.requests()[before..] {
            origins_seen.push((
                i,
                origin_form(&r.target),
                pick(&r.headers, request_fields),
                r.body.clone(),
            ));
        }
    }
    Seen {
        status,
        headers: pick(&fields, response_fields),
        body: std::fs::read(&body_file).unwrap_or_default(),
        origins: origins_seen,
    }
}

/// One request to compare: curl's arguments and the URL.
struct Ask<'a> {
    args: &'a [&'a str],
    url: String,
}

fn ask<'a>(args: &'a [&'a str], url: String) -> Ask<'a> {
    Ask { args, url }
}

/// Every request of `asks` through both proxies: what each saw is the same.
/// Returns ours, for checks of what the option did.
async fn compare(
    both: &Both,
    origins: &[&Origin],
    asks: &[Ask<'_>],
    response_fields: &[&str],
    request_fields: &[&str],
) -> Vec<Seen> {
    let mut ours = Vec::new();
    for a in asks {
        let mut seen = Vec::new();
        for (name, proxy) in both.proxies() {
            let s = exchange(
                &proxy,
                origins,
                a.args,
                &a.url,
                response_fields,
                request_fields,
            )
            .await;
            seen.push((name, s));
        }
        let (theirs, mine) = (&seen[0].1, &seen[1].1);
        assert_eq!(
            mine, theirs,
            "{:?} {}: mitm (left) and mitmdump (right) differ",
            a.args, a.url
        );
        ours.push(seen.pop().unwrap().1);
    }
    ours
}

fn args(list: &[(&str, &str)]) -> Vec<String> {
    list.iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modify_headers_sets_and_removes_as_mitmdump_does() {
    let origin = start_origin().await;
    let tls = start_tls_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let value_file = dir.path().join("value");
    std::fs::write(&value_file, "from a file").unwrap();
    let from_file = format!("|~q & ~u /echo|X-Echo|@{}", value_file.display());
    let options = args(&[
        ("--modify-headers", "/~q/X-Req/added"),
        ("--modify-headers", "/~s/X-Resp/r1"),
        ("--modify-headers", "/~s/x-resp/r2"),
        ("--modify-headers", "/User-Agent/"),
        ("--modify-headers", "/~s/Content-Type/text/x-changed"),
        ("--modify-headers", "/~q/X-Gone/"),
        ("--modify-headers", &from_file),
    ]);
    let Some(both) = Both::start(&options).await else {
        return;
    };
    let (p, t) = (origin.port(), tls.port());
    let asks = [
        ask(&["-H", "X-Gone: 1"], format!("http://127.0.0.1:{p}/hello")),
        ask(
            &["--data-binary", "x"],
            format!("http://127.0.0.1:{p}/echo"),
        ),
        ask(&["--http1.1"], format!("https://localhost:{t}/hello")),
        ask(
            &["--http2", "-H", "X-Gone: 1"],
            format!("https://localhost:{t}/echo"),
        ),
    ];
    let ours = compare(
        &both,
        &[&origin, &tls],
        &asks,
        &["x-resp", "content-type", "x-req", "user-agent"],
        &["x-req", "user-agent", "x-echo", "x-gone", "x-resp"],
    )
    .await;
    // What the options did, beyond being the same as mitmdump's.
    let first = &ours[0];
    assert_eq!(
        first.headers,
        [
            ("x-resp".into(), "r1".into()),
            ("x-resp".into(), "r2".into()),
            ("content-type".into(), "text/x-changed".into()),
        ],
        "{first:?}"
    );
    assert_eq!(first.origins[0].2, [("x-req".into(), "added".into())]);
    assert!(ours[3]
        .origins
        .iter()
        .any(|o| o.2.contains(&("x-echo".into(), "from a file".into()))));
    both.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_remote_sends_requests_where_mitmdump_does() {
    let from = start_origin().await;
    let to = start_origin().await;
    let tls = start_tls_origin().await;
    let (f, o, t) = (from.port(), to.port(), tls.port());
    let to_other = format!(r"|^http://127\.0\.0\.1:{f}/old/(.*)|http://127.0.0.1:{o}/new/\1");
    let in_tls = format!(r"|^https://localhost:{t}/moved|https://localhost:{t}/target");
    let tls_to_plain = format!(r"|^https://localhost:{t}/plain/|http://127.0.0.1:{o}/from-tls/");
    let options = args(&[
        ("--map-remote", &to_other),
        ("--map-remote", &in_tls),
        ("--map-remote", &tls_to_plain),
    ]);
    let Some(both) = Both::start(&options).await else {
        return;
    };
    let asks = [
        ask(&[], format!("http://127.0.0.1:{f}/old/a/b?c=1")),
        ask(&[], format!("http://127.0.0.1:{f}/kept")),
        ask(&["--http1.1"], format!("https://localhost:{t}/moved?x=1")),
        ask(&["--http2"], format!("https://localhost:{t}/moved")),
        ask(&["--http2"], format!("https://localhost:{t}/plain/p")),
    ];
    let ours = compare(&both, &[&from, &to, &tls], &asks, &[], &["host"]).await;
    assert_eq!(
        ours[0].origins,
        [(
            1,
            "/new/a/b?c=1".into(),
            vec![("host".into(), format!("127.0.0.1:{o}"))],
            vec![]
        )]
    );
    assert_eq!(ours[2].origins[0].1, "/target?x=1");
    assert_eq!(ours[4].origins[0].0, 1, "{:?}", ours[4]);
    both.stop().await;
}

/// A directory for `map_local`: `www/` with files, and `secret.txt` beside it.
fn site(dir: &Path) -> PathBuf {
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::write(dir.join("secret.txt"), "outside the directory").unwrap();
    std::fs::write(www.join("index.html"), "<p>home</p>").unwrap();
    std::fs::write(www.join("style.css"), "p { color: red }").unwrap();
    std::fs::write(www.join("sub/page.html"), "<p>sub page</p>").unwrap();
    std::fs::write(www.join("a b.txt"), "spaced name").unwrap();
    std::fs::write(www.join("data.json"), "{\"a\": 1}").unwrap();
    std::os::unix::fs::symlink(dir.join("secret.txt"), www.join("link.txt")).unwrap();
    www
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_local_serves_the_files_mitmdump_serves() {
    let origin = start_origin().await;
    let tls = start_tls_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let www = site(dir.path());
    let (p, t) = (origin.port(), tls.port());
    let directory = format!("|127.0.0.1:{p}/static/|{}", www.display());
    let file = format!("|/single|{}", www.join("style.css").display());
    let tls_dir = format!("|~d localhost|localhost:{t}/files|{}", www.display());
    let options = args(&[
        ("--map-local", &directory),
        ("--map-local", &file),
        ("--map-local", &tls_dir),
    ]);
    let Some(both) = Both::start(&options).await else {
        return;
    };
    let asks = [
        ask(&[], format!("http://127.0.0.1:{p}/static/")),
        ask(&[], format!("http://127.0.0.1:{p}/static/style.css")),
        ask(
            &[],
            format!("http://127.0.0.1:{p}/static/sub/page.html?q=1"),
        ),
        ask(&[], format!("http://127.0.0.1:{p}/static/a%20b.txt")),
        ask(&[], format!("http://127.0.0.1:{p}/static/data.json")),
        ask(&[], format!("http://127.0.0.1:{p}/static/missing.txt")),
        ask(&[], format!("http://127.0.0.1:{p}/single")),
        ask(&[], format!("http://127.0.0.1:{p}/elsewhere")),
        ask(
            &["--http1.1"],
            format!("https://localhost:{t}/files/sub/page.html"),
        ),
        ask(
            &["--http2"],
            format!("https://localhost:{t}/files/style.css"),
        ),
    ];
    let ours = compare(&both, &[&origin, &tls], &asks, &["content-type"], &[]).await;
    assert_eq!(ours[0].body, b"<p>home</p>");
    assert_eq!(ours[5].status, 404);
    assert_eq!(ours[6].body, b"p { color: red }");
    assert_eq!(ours[9].body, b"p { color: red }");
    // Only the request no rule takes reached an origin.
    let reached: Vec<_> = ours.iter().filter(|s| !s.origins.is_empty()).collect();
    assert_eq!(reached.len(), 1, "{ours:?}");
    assert_eq!(reached[0].origins[0].1, "/elsewhere");
    both.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modify_body_replaces_in_decoded_bodies_as_mitmdump_does() {
    let origin = start_origin().await;
    let tls = start_tls_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let replacement = dir.path().join("replacement");
    std::fs::write(&replacement, "travelled by file").unwrap();
    let from_file = format!("|~s & ~u /br|travelled|@{}", replacement.display());
    let options = args(&[
        ("--modify-body", "/~s/origin/ORIGIN"),
        ("--modify-body", "/~q/ping/pong"),
        (
            "--modify-body",
            r"|~s & ~u /gzip|(gzip)-(encoded)|\g<2>-\g<1>",
        ),
        ("--modify-body", &from_file),
    ]);
    let Some(both) = Both::start(&options).await else {
        return;
    };
    let (p, t) = (origin.port(), tls.port());
    let asks = [
        ask(
            &["--data-binary", "ping ping"],
            format!("http://127.0.0.1:{p}/echo"),
        ),
        ask(&[], format!("http://127.0.0.1:{p}/hello")),
        ask(&["--compressed"], format!("http://127.0.0.1:{p}/gzip")),
        ask(
            &["--compressed", "--http1.1"],
            format!("https://localhost:{t}/br"),
        ),
        ask(
            &["--http2", "--data-binary", "ping"],
            format!("https://localhost:{t}/echo"),
        ),
        ask(&["--http2"], format!("https://localhost:{t}/hello")),
    ];
    let ours = compare(&both, &[&origin, &tls], &asks, &["content-encoding"], &[]).await;
    assert_eq!(ours[0].origins[0].3, b"pong pong");
    assert_eq!(ours[0].body, b"pong pong");
    assert_eq!(ours[1].body, b"hello from ORIGIN: GET /hello");
    assert_eq!(
        ours[2].headers,
        [("content-encoding".into(), "gzip".into())]
    );
    assert_eq!(
        String::from_utf8_lossy(&ours[2].body),
        GZIP_TEXT.replace("gzip-encoded", "encoded-gzip")
    );
    assert_eq!(
        String::from_utf8_lossy(&ours[3].body),
        GZIP_TEXT.replace("travelled", "travelled by file")
    );
    both.stop().await;
}

/// A request for `target` written by hand to `proxy` (so that `..` reaches it as
/// written): the status of the answer.
async fn raw_status(proxy: SocketAddr, target: &str, host: &str) -> u16 {
    let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let answer = raw_exchange(proxy, request.as_bytes()).await;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_local_never_serves_outside_its_directory() {
    let origin = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let www = site(dir.path());
    let p = origin.port();
    let host = format!("127.0.0.1:{p}");
    let rule = format!("|{host}/static/|{}", www.display());
    let Some(both) = Both::start(&args(&[("--map-local", &rule)])).await else {
        return;
    };
    let outside = [
        format!("http://{host}/static/../secret.txt"),
        format!("http://{host}/static/%2e%2e/secret.txt"),
        format!("http://{host}/static/sub/%2E%2E/%2e%2e/secret.txt"),
        format!("http://{host}/static/link.txt"),
    ];
    for target in &outside {
        let status = raw_status(both.ours.addr, target, &host).await;
        assert_eq!(status, 403, "{target}");
    }
    assert!(
        origin.requests().is_empty(),
        "the origin was asked: {:?}",
        origin.requests()
    );
    // Inside the directory, served as before.
    assert_eq!(
        raw_status(
            both.ours.addr,
            &format!("http://{host}/static/style.css"),
            &host
        )
        .await,
        200
    );

    // mitmdump's quirks, which ours does not copy: it sends a `..` request on to the
    // origin, and serves a symlink that leads out of the directory.
    let dump = both.dump.as_ref().unwrap().addr();
    raw_status(dump, &outside[1], &host).await;
    assert!(
        origin
            .requests()
            .iter()
            .any(|r| r.target.contains("%2e%2e")),
        "mitmdump sent no `..` request to the origin: {:?}",
        origin.requests()
    );
    let linked = Through {
        addr: dump,
        ca: both.dump_ca.clone(),
    };
    let seen = exchange(&linked, &[], &[], &outside[3], &[], &[]).await;
    assert_eq!(seen.body, b"outside the directory");
    both.stop().await;
}

/// `mitm` with `args` and a CA directory of its own: it must exit at start; its
/// stderr.
async fn refused_at_start(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_mitm"))
            .args(["--port", "0", "--log", "none", "--ca-dir"])
            .arg(dir.path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("mitm {args:?} did not stop at start"))
    .unwrap();
    assert!(!out.status.success(), "mitm {args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rules_stop_the_start_saying_what_is_wrong() {
    let e = refused_at_start(&["--map-remote", "/(unclosed/x"]).await;
    assert!(
        e.contains(r#"map_remote rule "/(unclosed/x": invalid regular expression "(unclosed""#),
        "{e}"
    );
    let e = refused_at_start(&["--modify-headers", "|x-a|@/nonexistent/value"]).await;
    assert!(
        e.contains("modify_headers rule") && e.contains("cannot read /nonexistent/value"),
        "{e}"
    );
    let e = refused_at_start(&["--modify-body", "|a|@/nonexistent/body"]).await;
    assert!(e.contains("cannot read /nonexistent/body"), "{e}");
    let e = refused_at_start(&["--map-local", "|x|/nonexistent/dir"]).await;
    assert!(
        e.contains("map_local rule") && e.contains("/nonexistent/dir"),
        "{e}"
    );
    let e = refused_at_start(&["--modify-headers", "/~nope/a/b"]).await;
    assert!(e.contains("invalid filter"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_saved_is_the_flow_as_changed() {
    if !require_tool(have("curl"), "curl", "apt-get install curl") {
        return;
    }
    let from = start_origin().await;
    let to = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("saved.flows");
    let save = file.to_str().unwrap().to_string();
    let remap = format!("|127.0.0.1:{}/a|127.0.0.1:{}/b", from.port(), to.port());
    let mut ours = tokio::task::spawn_blocking(move || {
        ChildProxy::start_with(&[
            "--save",
            &save,
            "--modify-headers",
            "/~s/X-Saved/changed",
            "--modify-headers",
            "/~q/X-Asked/changed",
            "--map-remote",
            &remap,
            "--modify-body",
            "/~s/from origin/from the rule",
        ])
    })
    .await
    .unwrap();
    let proxy = Through {
        addr: ours.addr,
        ca: ours.ca_pem.clone(),
    };
    let url = format!("http://127.0.0.1:{}/a", from.port());
    let seen = exchange(&proxy, &[&from, &to], &[], &url, &["x-saved"], &["x-asked"]).await;
    assert_eq!(seen.origins[0].0, 1, "{seen:?}");
    assert_eq!(seen.body, b"hello from the rule: GET /b");
    tokio::task::spawn_blocking(move || ours.interrupt())
        .await
        .unwrap();
    let records = mitm::capture::read(&file).unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!((r.request.port, r.request.path.as_str()), (to.port(), "/b"));
    assert_eq!(r.request.headers.get("x-asked"), Some("changed"));
    let response = r.response.as_ref().unwrap();
    assert_eq!(response.headers.get("x-saved"), Some("changed"));
    assert_eq!(&response.body.data[..], b"hello from the rule: GET /b");
}
