//! Our filter language against mitmproxy's own: the same flow file, written by a real
//! `mitmdump -w` in front of test origins (then marked, commented and flagged as
//! replayed with mitmproxy's Python API), filtered by `mitmdump -nr FILE EXPR` and by
//! `mitm read FILE --filter EXPR`, expression by expression; the counts must be equal,
//! but for the few differences README.md names, listed here with their reasons.

use crate::common;
use crate::flows::Mitmdump;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// The expressions whose counts must agree. Quoted arguments hold no backslash: there,
/// mitmproxy drops it and ours keeps it (see [`DIFFERENT`]).
const SAME: &[&str] = &[
    // Every flow, or none.
    "~all",
    "~http",
    "~tcp",
    "~udp",
    "~dns",
    "!~all",
    // Flags of a flow.
    "~q",
    "~s",
    "~e",
    "~a",
    "~websocket",
    "~marked",
    "!~marked",
    "~marker default",
    "~marker star",
    "~marker ^$",
    "~comment hand",
    "~comment Hand",
    "~comment ^second",
    "~comment line$",
    "~replay",
    "~replayq",
    "~replays",
    // Method, status, domain, URL.
    "~m GET",
    "~m post",
    "~m ^P",
    "~m DELETE|PUT",
    "~c 200",
    "~c 201",
    "~c 204",
    "~c 404",
    "~c 500",
    "~c 101",
    "~c 200&~m GET",
    "~d 127.0.0.1",
    "~d localhost",
    "~d ^LOCALHOST$",
    "~u index",
    "~u \\.css$",
    "~u ^https://",
    "~u page=2",
    "~u /API/",
    "~u '/api/items$'",
    "~u ^http://127\\.0\\.0\\.1:\\d+/chat$",
    "~u '^https://localhost:'",
    "~m ^get$",
    "api",
    "index|style",
    "'style'",
    "\"app.js\"",
    // Header lines, each `name: value\r\n`, case counting.
    "~h x-token",
    "~h X-Token",
    "~hq '^x-token: Secret'",
    "~hq 'x-token: secret'",
    "~h Secret$",
    "~h Secret\\r$",
    "~hs '^Content-Type: image/'",
    "~hs server",
    "~hs '(?i)server'",
    "~hs Cache-Control",
    "~hs ^Content-Encoding:",
    "~hq ^host:",
    "~h '(?i)^HOST: 127'",
    // Bodies, decoded, and WebSocket messages by side.
    "~b Ferris",
    "~b ferris",
    "~bq Ferris",
    "~bs Ferris",
    "~bs created",
    "~b 'hello ws'",
    "~bq 'hello ws'",
    "~bs 'hello ws'",
    "~bs compressed",
    "~bq 'line one.line two'",
    "~b ^$",
    "~bs PNG",
    // Content types.
    "~t json",
    "~tq json",
    "~ts json",
    "~t ^text/",
    "~ts image/png",
    "~t TEXT",
    "~tq text/plain",
    // Addresses.
    "~src 127.0.0.1",
    "~src ^127\\.0\\.0\\.1:\\d+$",
    "~dst .",
    "!~dst :",
    "~dst :\\d+$",
    // Operators.
    "~m GET & ~c 200",
    "~m GET | ~m POST",
    "!~c 200",
    "! ~e",
    "~q & ~e",
    "~s & !~a",
    "(~m POST | ~m PUT) & ~bq .",
    "~websocket & ~bs hello",
    "~a | ~t html",
    "~c 200 ~m GET",
    "~q | ~s ~c 404",
    "~e | ~c 500",
    "!~e & !~websocket & ~s",
    "~marked | ~comment .",
    "~replay & ~m POST",
];

/// The expressions where ours deliberately differs from mitmproxy (README.md says so),
/// each with why; the test checks that the counts do differ, so that a stale entry is
/// noticed.
const DIFFERENT: &[(&str, &str)] = &[
    (
        "~u \"\\d+\"",
        "inside quotes mitmproxy drops the backslash (the regex `d+`); ours keeps it (`\\d+`)",
    ),
    (
        "~dst localhost",
        "mitmproxy's ~dst sees the address it asked for (`localhost`); ours the IP it reached",
    ),
    (
        "~dst 127.0.0.1",
        "the same: the HTTPS flow went to `localhost`, which mitmproxy's ~dst sees as a name",
    ),
    (
        "~bs \\x89PNG",
        "mitmproxy matches bodies as bytes; ours as UTF-8 text, where the byte 0x89 is replaced",
    ),
];

/// What the typed origin answers, by path: status, content type, extra header fields,
/// body.
fn answer(method: &str, path: &str, body: &[u8]) -> (u16, &'static str, &'static str, Vec<u8>) {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    match (method, path) {
        ("GET", "/index.html") => (200, "text/html; charset=utf-8", "", b"<h1>hi</h1>".to_vec()),
        ("GET", "/style.css") => (200, "text/css", "", b"h1 { color: red }".to_vec()),
        ("GET", "/app.js") => (200, "application/javascript", "", b"let x = 1;".to_vec()),
        ("GET", "/logo.png") => (200, "image/png", "", png),
        ("GET", "/font.woff2") => (200, "font/woff2", "", b"wOF2".to_vec()),
        ("GET", "/api/items?page=2") => (
            200,
            "application/json",
            "Cache-Control: no-store\r\n",
            br#"{"items":[1,2]}"#.to_vec(),
        ),
        ("POST", "/api/items") => (201, "application/json", "", br#"{"created":true}"#.to_vec()),
        ("PUT", "/upload") => (
            200,
            "text/plain",
            "",
            format!("stored {}", body.len()).into(),
        ),
        ("DELETE", "/api/items/7") => (204, "", "", Vec::new()),
        ("GET", "/gzip") => (
            200,
            "text/plain",
            "Content-Encoding: gzip\r\n",
            gzip(b"a compressed greeting"),
        ),
        ("GET", "/boom") => (500, "text/plain", "", b"internal error".to_vec()),
        _ => (404, "text/html", "", b"<h1>Not Found</h1>".to_vec()),
    }
}

/// An origin on 127.0.0.1 that answers by [`answer`], keep-alive.
async fn start_typed_origin() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut wire = Wire::new(stream);
                while let Some((line, body)) = wire.request().await {
                    let mut parts = line.split(' ');
                    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    let (status, content_type, extra, content) = answer(method, path, &body);
                    let mut head = format!("HTTP/1.1 {status} Status\r\nServer: filter-origin\r\n");
                    if !content_type.is_empty() {
                        head.push_str(&format!("Content-Type: {content_type}\r\n"));
                    }
                    if status != 204 {
                        head.push_str(&format!("Content-Length: {}\r\n", content.len()));
                    }
                    head.push_str(extra);
                    head.push_str("\r\n");
                    let mut out = head.into_bytes();
                    out.extend_from_slice(&content);
                    wire.send(out).await;
                }
            });
        }
    });
    port
}

/// A WebSocket to the echo origin at `origin` through the proxy at `proxy`, in a
/// `CONNECT` tunnel (mitmdump wants absolute URLs or a tunnel): a text and a binary
/// message, each echoed, then closed.
async fn websocket_through(proxy: SocketAddr, origin: u16) {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    let connect =
        format!("CONNECT 127.0.0.1:{origin} HTTP/1.1\r\nHost: 127.0.0.1:{origin}\r\n\r\n");
    tcp.write_all(connect.as_bytes()).await.unwrap();
    // The reply's head, byte by byte: nothing of the tunnel may be read with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut byte))
            .await
            .expect("the proxy did not answer the CONNECT")
            .unwrap();
        assert_eq!(
            n,
            1,
            "the proxy closed the tunnel: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let url = format!("ws://127.0.0.1:{origin}/chat");
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), tcp)
        .await
        .expect("the WebSocket handshake through mitmdump failed");
    ws.send(Message::text("hello ws")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello ws"));
    ws.send(Message::binary(vec![0u8, 255, 7])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 255, 7])
    );
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
}

/// Marks, comments and replay flags set with mitmproxy's own API on the flows of
/// `argv[1]`, written to `argv[2]`; prints how many flows there are.
const ANNOTATE: &str = r#"
import sys
from mitmproxy import io
with open(sys.argv[1], "rb") as f:
    flows = list(io.FlowReader(f).stream())
for flow in flows:
    path, method = flow.request.path, flow.request.method
    if path == "/style.css":
        flow.marked = ":default:"
    elif path == "/api/items?page=2":
        flow.comment = "checked by hand\nsecond line"
    elif path == "/api/items" and method == "POST":
        flow.is_replay = "request"
    elif path == "/missing":
        flow.is_replay = "response"
        flow.marked = ":star:"
with open(sys.argv[2], "wb") as f:
    writer = io.FlowWriter(f)
    for flow in flows:
        writer.add(flow)
print(len(flows))
"#;

/// A mitmdump addon that prints a line for each flow mitmdump loads from its file:
/// given a filter, `mitmdump -nr` loads only the flows that match it.
const COUNT_ADDON: &str = r#"
def request(flow):
    print("filter-compat-match", flow.id, flush=True)
"#;

/// How many flows of `file` `mitmdump -nr FILE EXPR` loads; `Err` with its output when
/// it refuses the expression or fails.
fn mitmdump_count(mitmdump: &Path, addon: &Path, file: &Path, expr: &str) -> Result<usize, String> {
    let out = Command::new(mitmdump)
        .arg("-nr")
        .arg(file)
        .arg("-s")
        .arg(addon)
        .arg(expr)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut ids: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("filter-compat-match "))
        .collect();
    let loaded = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        loaded,
        "a flow was loaded twice for {expr:?}:\n{stdout}"
    );
    Ok(loaded)
}

/// How many flows `mitm read FILE --filter EXPR` prints, one line each.
fn mitm_count(file: &Path, expr: &str) -> Result<usize, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_mitm"))
        .arg("read")
        .arg(file)
        .arg("--filter")
        .arg(expr)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .count())
}

/// A count of matching flows, or why there is none (the tool refused the expression
/// or failed).
type Count = Result<usize, String>;

/// What each tool counted for one expression.
struct Outcome {
    expr: &'static str,
    theirs: Count,
    ours: Count,
}

/// Both counts of each of `exprs`, mitmdump's run a few at a time (each takes a
/// second or more to start).
fn counts(mitmdump: &Path, addon: &Path, file: &Path, exprs: &[&'static str]) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&expr) = exprs.get(i) else { return };
                let theirs = mitmdump_count(mitmdump, addon, file, expr);
                let ours = mitm_count(file, expr);
                results
                    .lock()
                    .unwrap()
                    .push((i, Outcome { expr, theirs, ours }));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    results.into_iter().map(|(_, outcome)| outcome).collect()
}

/// Captures the test traffic with `mitmdump -w` into `dir/raw.flows`: pages, assets,
/// JSON, a POST, a PUT with a body, a DELETE, 404 and 500, a gzip body, an HTTPS GET,
/// a request to a closed port, and a WebSocket with messages both ways.
async fn capture_with_mitmdump(mitmdump: &Path, dir: &Path) -> PathBuf {
    let typed = start_typed_origin().await;
    let echo = start_origin().await;
    let tls = start_tls_origin().await;
    let file = dir.join("raw.flows");
    let dump = Mitmdump::start(mitmdump, dir, &file).await;
    let client = dump.client(dir);

    let base = format!("http://127.0.0.1:{typed}");
    let sent = [
        client.get(format!("{base}/index.html")),
        client.get(format!("{base}/style.css")),
        client.get(format!("{base}/app.js")),
        client.get(format!("{base}/logo.png")),
        client.get(format!("{base}/font.woff2")),
        client
            .get(format!("{base}/api/items?page=2"))
            .header("X-Token", "Secret"),
        client
            .post(format!("{base}/api/items"))
            .header("Content-Type", "application/json")
            .body(r#"{"name":"Ferris"}"#),
        client
            .put(format!("{base}/upload"))
            .header("Content-Type", "text/plain")
            .body("line one\nline two"),
        client.delete(format!("{base}/api/items/7")),
        client.get(format!("{base}/gzip")),
        client.get(format!("{base}/missing")),
        client.get(format!("{base}/boom")),
        client.get(format!("https://localhost:{}/page", tls.port())),
        client.get(format!("http://127.0.0.1:{}/nowhere", refused_port())),
    ];
    let mut statuses = Vec::new();
    for request in sent {
        let response = request.send().await.unwrap();
        statuses.push(response.status().as_u16());
        response.bytes().await.unwrap();
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 201, 200, 204, 200, 404, 500, 200, 502]
    );
    drop(client);
    websocket_through(SocketAddr::from(([127, 0, 0, 1], dump.port)), echo.port()).await;
    dump.stop().await;
    file
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_count_what_mitmdump_counts_on_the_same_file() {
    let (mitmdump, python) = (venv_tool("mitmdump"), venv_tool("python"));
    if !require_tool(
        mitmdump.is_some() && python.is_some(),
        "mitmdump",
        VENV_INSTALL,
    ) {
        return;
    }
    let (mitmdump, python) = (mitmdump.unwrap(), python.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let raw = capture_with_mitmdump(&mitmdump, dir.path()).await;

    let file = dir.path().join("annotated.flows");
    let out = Command::new(&python)
        .args(["-c", ANNOTATE])
        .arg(&raw)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 14 requests and the WebSocket; mitmdump does not save CONNECTs.
    let total: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(total, 15);
    let addon = dir.path().join("count.py");
    std::fs::write(&addon, COUNT_ADDON).unwrap();

    let all: Vec<&'static str> = SAME
        .iter()
        .copied()
        .chain(DIFFERENT.iter().map(|d| d.0))
        .collect();
    assert!(SAME.len() >= 70, "{} expressions", SAME.len());
    let results = tokio::task::spawn_blocking({
        let (mitmdump, addon, file) = (mitmdump.clone(), addon.clone(), file.clone());
        move || counts(&mitmdump, &addon, &file, &all)
    })
    .await
    .unwrap();

    let mut report = String::new();
    let mut wrong = Vec::new();
    for Outcome { expr, theirs, ours } in &results {
        let (theirs, ours) = match (theirs, ours) {
            (Ok(t), Ok(o)) => (*t, *o),
            _ => {
                wrong.push(format!("{expr:?}: mitmdump {theirs:?}, mitm {ours:?}"));
                continue;
            }
        };
        report.push_str(&format!("{theirs:>8} {ours:>4}  {expr}\n"));
        match DIFFERENT.iter().find(|d| d.0 == *expr) {
            None if theirs != ours => {
                wrong.push(format!("{expr:?}: mitmdump {theirs}, mitm {ours}"));
            }
            Some((_, why)) if theirs == ours => wrong.push(format!(
                "{expr:?}: both {theirs}, but listed as different ({why})"
            )),
            _ => {}
        }
    }
    println!("mitmdump mitm  expression\n{report}");
    assert!(wrong.is_empty(), "{}\n\n{report}", wrong.join("\n"));

    // The table tells the flows apart: everything, nothing, and many counts between.
    let count = |e: &str| {
        let outcome = results.iter().find(|r| r.expr == e).unwrap();
        outcome.ours.clone().unwrap()
    };
    assert_eq!(count("~all"), total);
    assert_eq!(count("~tcp"), 0);
    for (expr, want) in [
        ("~e", 1),
        ("~q", 1),
        ("~websocket", 1),
        ("~marked", 2),
        ("~a", 4),
        ("~c 404", 1),
        ("~bs 'hello ws'", 1),
    ] {
        assert_eq!(count(expr), want, "{expr}");
    }
    let mut distinct: Vec<usize> = results.iter().filter_map(|r| r.ours.clone().ok()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 8, "{distinct:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_replay_saves_its_flows_as_replayed_requests() {
    let origin = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let recorded = dir.path().join("recorded.har");
    let url = format!("http://127.0.0.1:{}/page", origin.port());
    std::fs::write(
        &recorded,
        format!(
            r#"{{"log":{{"version":"1.2","creator":{{"name":"test","version":"1"}},"entries":[{{"startedDateTime":"2026-01-01T00:00:00.000Z","time":1,"request":{{"method":"GET","url":"{url}","httpVersion":"HTTP/1.1","headers":[],"queryString":[],"cookies":[],"headersSize":-1,"bodySize":0}},"response":{{"status":200,"statusText":"OK","httpVersion":"HTTP/1.1","headers":[],"cookies":[],"content":{{"size":2,"mimeType":"text/plain","text":"ok"}},"redirectURL":"","headersSize":-1,"bodySize":2}},"cache":{{}},"timings":{{"send":0,"wait":1,"receive":0}}}}]}}}}"#
        ),
    )
    .unwrap();
    let replayed = dir.path().join("replayed.flows");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mitm"))
        .args(["--log", "none", "-q", "--ca-dir"])
        .arg(dir.path().join("ca"))
        .arg("--save")
        .arg(&replayed)
        .arg("replay")
        .arg(&recorded)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flows = mitm::capture::read(&replayed).unwrap();
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].annotations.is_replay.as_deref(), Some("request"));
    // The recording itself was not replayed.
    assert_eq!(mitm_count(&recorded, "~replay"), Ok(0));
    assert_eq!(mitm_count(&replayed, "~replayq"), Ok(1));
    assert_eq!(mitm_count(&replayed, "~replays"), Ok(0));
    // mitmproxy reads the mark from our file as its own.
    let Some(mitmdump) = venv_tool("mitmdump") else {
        require_tool(false, "mitmdump", VENV_INSTALL);
        return;
    };
    let addon = dir.path().join("count.py");
    std::fs::write(&addon, COUNT_ADDON).unwrap();
    assert_eq!(
        mitmdump_count(&mitmdump, &addon, &replayed, "~replayq"),
        Ok(1)
    );
    assert_eq!(
        mitmdump_count(&mitmdump, &addon, &replayed, "~replays"),
        Ok(0)
    );
}
