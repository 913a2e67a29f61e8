//! HAR capture through a real proxy: the file is a whole HAR document after every flow,
//! valid against a HAR 1.2 JSON Schema (Python's `jsonschema`), read by a second reader
//! (Python's `json`, with checks of its own) and by Chromium's own DevTools HAR importer,
//! and read back into the same flows; and a process capturing flows killed with
//! `SIGKILL` leaves every flow it had written.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use common::*;
use mitm::capture::har::{read_har, HarFile};
use mitm::capture::Capture;

/// Waits until the capture has written `n` flows.
async fn written(capture: &Capture, n: u64) {
    if tokio::time::timeout(PATIENCE, capture.wait_written(n))
        .await
        .is_err()
    {
        panic!("only {} of {n} flows were written", capture.written());
    }
}

fn entries(path: &Path) -> Vec<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    doc["log"]["entries"].as_array().unwrap().clone()
}

/// HAR 1.2 (<http://www.softwareishard.com/blog/har-12-spec/>) as a JSON Schema, trimmed
/// to the objects and fields the spec requires, with their types.
const HAR_SCHEMA: &str = r##"{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "type": "object",
  "required": ["log"],
  "properties": {
    "log": {
      "type": "object",
      "required": ["version", "creator", "entries"],
      "properties": {
        "version": {"type": "string"},
        "creator": {"$ref": "#/definitions/creator"},
        "browser": {"$ref": "#/definitions/creator"},
        "pages": {"type": "array"},
        "entries": {"type": "array", "items": {"$ref": "#/definitions/entry"}},
        "comment": {"type": "string"}
      }
    }
  },
  "definitions": {
    "creator": {
      "type": "object",
      "required": ["name", "version"],
      "properties": {"name": {"type": "string"}, "version": {"type": "string"}}
    },
    "pair": {
      "type": "object",
      "required": ["name", "value"],
      "properties": {"name": {"type": "string"}, "value": {"type": "string"}}
    },
    "cookie": {
      "type": "object",
      "required": ["name", "value"],
      "properties": {
        "name": {"type": "string"}, "value": {"type": "string"},
        "path": {"type": "string"}, "domain": {"type": "string"},
        "expires": {"type": ["string", "null"]},
        "httpOnly": {"type": "boolean"}, "secure": {"type": "boolean"}
      }
    },
    "entry": {
      "type": "object",
      "required": ["startedDateTime", "time", "request", "response", "cache", "timings"],
      "properties": {
        "pageref": {"type": "string"},
        "startedDateTime": {
          "type": "string",
          "pattern": "^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d(\\.\\d+)?(Z|[+-]\\d\\d:\\d\\d)$"
        },
        "time": {"type": "number", "minimum": 0},
        "request": {"$ref": "#/definitions/request"},
        "response": {"$ref": "#/definitions/response"},
        "cache": {"type": "object"},
        "timings": {"$ref": "#/definitions/timings"},
        "serverIPAddress": {"type": "string"},
        "connection": {"type": "string"},
        "comment": {"type": "string"}
      }
    },
    "request": {
      "type": "object",
      "required": ["method", "url", "httpVersion", "cookies", "headers", "queryString",
                   "headersSize", "bodySize"],
      "properties": {
        "method": {"type": "string"},
        "url": {"type": "string", "pattern": "^https?://"},
        "httpVersion": {"type": "string"},
        "cookies": {"type": "array", "items": {"$ref": "#/definitions/cookie"}},
        "headers": {"type": "array", "items": {"$ref": "#/definitions/pair"}},
        "queryString": {"type": "array", "items": {"$ref": "#/definitions/pair"}},
        "postData": {
          "type": "object",
          "required": ["mimeType"],
          "properties": {
            "mimeType": {"type": "string"}, "text": {"type": "string"},
            "params": {"type": "array"}
          }
        },
        "headersSize": {"type": "integer", "minimum": -1},
        "bodySize": {"type": "integer", "minimum": -1}
      }
    },
    "response": {
      "type": "object",
      "required": ["status", "statusText", "httpVersion", "cookies", "headers", "content",
                   "redirectURL", "headersSize", "bodySize"],
      "properties": {
        "status": {"type": "integer"},
        "statusText": {"type": "string"},
        "httpVersion": {"type": "string"},
        "cookies": {"type": "array", "items": {"$ref": "#/definitions/cookie"}},
        "headers": {"type": "array", "items": {"$ref": "#/definitions/pair"}},
        "content": {"$ref": "#/definitions/content"},
        "redirectURL": {"type": "string"},
        "headersSize": {"type": "integer", "minimum": -1},
        "bodySize": {"type": "integer", "minimum": -1}
      }
    },
    "content": {
      "type": "object",
      "required": ["size", "mimeType"],
      "properties": {
        "size": {"type": "integer", "minimum": 0},
        "compression": {"type": "integer"},
        "mimeType": {"type": "string"},
        "text": {"type": "string"},
        "encoding": {"type": "string"},
        "comment": {"type": "string"}
      }
    },
    "timings": {
      "type": "object",
      "required": ["send", "wait", "receive"],
      "properties": {
        "blocked": {"type": "number", "minimum": -1},
        "dns": {"type": "number", "minimum": -1},
        "connect": {"type": "number", "minimum": -1},
        "ssl": {"type": "number", "minimum": -1},
        "send": {"type": "number", "minimum": 0},
        "wait": {"type": "number", "minimum": 0},
        "receive": {"type": "number", "minimum": 0}
      }
    }
  }
}"##;

/// Validates the HAR against [`HAR_SCHEMA`], then reads it as a second, independent
/// reader would: every body's size from its text, dates, timings adding up.
const CHECK_HAR: &str = r#"
import base64, datetime, json, sys
import jsonschema

schema = json.load(open(sys.argv[1]))
doc = json.load(open(sys.argv[2]))
jsonschema.Draft7Validator.check_schema(schema)
jsonschema.Draft7Validator(schema).validate(doc)

entries = doc["log"]["entries"]
assert doc["log"]["creator"]["name"] == "mitm"
for e in entries:
    datetime.datetime.fromisoformat(e["startedDateTime"].replace("Z", "+00:00"))
    t = e["timings"]
    # HAR 1.2: the sum of the phases that apply (`ssl` is inside `connect`).
    phases = ("blocked", "dns", "connect", "send", "wait", "receive")
    assert abs(e["time"] - sum(max(t.get(k, -1), 0) for k in phases)) < 0.01, e
    c = e["response"]["content"]
    if "text" in c:
        body = base64.b64decode(c["text"]) if c.get("encoding") == "base64" \
            else c["text"].encode()
        assert len(body) == c["size"], (len(body), c)
print(len(entries), " ".join(str(e["response"]["status"]) for e in entries))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn flows_through_the_proxy_make_a_valid_har_after_each_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.har");
    let origin = start_origin().await;
    let (proxy, capture) =
        start_capturing(Capture::builder().sink(Box::new(HarFile::create(&path).unwrap()))).await;
    let client = client_via(&proxy);
    let base = format!("http://127.0.0.1:{}", origin.port());
    let refused = format!("http://127.0.0.1:{}/down", refused_port());
    let form = "name=a+b&x=%2F";

    let mut statuses = Vec::new();
    for (n, (method, url)) in [
        ("GET", format!("{base}/page?q=a%20b")),
        ("GET", format!("{base}/gzip")),
        ("GET", format!("{base}/bytes/1000")),
        ("POST", format!("{base}/echo")),
        ("GET", format!("{base}/status/404")),
        ("GET", refused.clone()),
    ]
    .into_iter()
    .enumerate()
    {
        let request = if method == "POST" {
            client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
        } else {
            client.get(&url)
        };
        let response = request.send().await.unwrap();
        statuses.push(response.status().as_u16());
        response.bytes().await.unwrap();
        written(&capture, n as u64 + 1).await;
        // Whole after every flow, not only at the end.
        assert_eq!(entries(&path).len(), n + 1, "after {method} {url}");
    }
    assert_eq!(statuses, [200, 200, 200, 200, 404, 502]);

    let e = entries(&path);
    assert_eq!(
        e[0]["request"]["queryString"],
        serde_json::json!([{"name": "q", "value": "a b"}])
    );
    let gzip = &e[1]["response"]["content"];
    assert_eq!(gzip["text"], GZIP_TEXT);
    assert_eq!(gzip["size"], GZIP_TEXT.len());
    assert!(e[1]["response"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["name"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("content-encoding")
            && h["value"] == "gzip"));
    assert_eq!(e[2]["response"]["content"]["encoding"], "base64");
    assert_eq!(e[3]["request"]["postData"]["text"], form);
    assert_eq!(e[3]["response"]["content"]["text"], form);
    assert!(
        e[5]["_error"].as_str().unwrap().contains("connect"),
        "{}",
        e[5]
    );
    assert!(e[0]["serverIPAddress"] == "127.0.0.1");

    // A second reader, and the schema.
    let python = venv_tool("python");
    if require_tool(python.is_some(), "python jsonschema", VENV_INSTALL) {
        let schema = dir.path().join("har-1.2.schema.json");
        std::fs::write(&schema, HAR_SCHEMA).unwrap();
        let out = std::process::Command::new(python.unwrap())
            .arg("-c")
            .arg(CHECK_HAR)
            .arg(&schema)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the HAR failed the schema or the second reader:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            // The last could not be delivered: no response (status 0, as browsers
            // write one), its error beside.
            "6 200 200 200 200 404 0"
        );
    }

    // And back into records.
    let records = read_har(&path).unwrap();
    let summary: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.request.method.as_str(),
                r.request.url(),
                r.response.as_ref().map_or(0, |r| r.status),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("GET", format!("{base}/page?q=a%20b"), 200),
            ("GET", format!("{base}/gzip"), 200),
            ("GET", format!("{base}/bytes/1000"), 200),
            ("POST", format!("{base}/echo"), 200),
            ("GET", format!("{base}/status/404"), 404),
            ("GET", refused, 0),
        ]
    );
    let body = |i: usize| records[i].response.as_ref().unwrap().body.data.clone();
    assert!(String::from_utf8_lossy(&body(0)).starts_with("hello from origin: GET"));
    assert_eq!(gunzip(&body(1)), GZIP_TEXT.as_bytes());
    assert_same(&body(2), &pattern(1000));
    assert_eq!(&records[3].request.body.data[..], form.as_bytes());
    assert_eq!(&body(3)[..], form.as_bytes());
    assert!(records[5].error.is_some());
    assert!(records[..5].iter().all(|r| r.error.is_none()));
}

/// Chromium's own DevTools HAR importer (what "Import HAR file" in the Network panel
/// runs), loaded headless from the browser's bundled DevTools, reads our file: every
/// request with its URL, method, status, decoded content and body, and a WebSocket's
/// messages as frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_devtools_imports_our_har() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let chromium = find_chromium();
    if !require_tool(chromium.is_some(), "Chromium", "apt-get install chromium") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devtools.har");
    let origin = start_origin().await;
    let (proxy, capture) =
        start_capturing(Capture::builder().sink(Box::new(HarFile::create(&path).unwrap()))).await;
    let client = client_via(&proxy);
    let base = format!("http://127.0.0.1:{}", origin.port());
    let form = "name=a+b&x=%2F";
    for path in ["/page?q=1", "/gzip", "/status/404"] {
        client.get(format!("{base}{path}")).send().await.unwrap();
    }
    client
        .post(format!("{base}/echo"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let ws_url = format!("ws://127.0.0.1:{}/chat", origin.port());
    let (mut ws, _) = tokio_tungstenite::client_async(ws_url.as_str(), tcp)
        .await
        .unwrap();
    ws.send(Message::text("ping from the client"))
        .await
        .unwrap();
    ws.next().await.unwrap().unwrap();
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop(ws);
    written(&capture, 5).await;

    let out = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/devtools_har.py"
        ))
        .arg(chromium.unwrap())
        .arg(&path)
        .output();
    let out = tokio::time::timeout(PATIENCE * 4, out)
        .await
        .expect("the DevTools import did not finish")
        .expect("cannot run python3");
    assert!(
        out.status.success(),
        "Chromium's DevTools did not import the HAR: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imported: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let seen: Vec<(String, String, u64)> = imported
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["url"].as_str().unwrap().to_string(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = |m: &str, p: &str, s: u64| (m.to_string(), format!("{base}{p}"), s);
    assert_eq!(
        seen,
        [
            want("GET", "/page?q=1", 200),
            want("GET", "/gzip", 200),
            want("GET", "/status/404", 404),
            want("POST", "/echo", 200),
            (
                "GET".into(),
                format!("ws://127.0.0.1:{}/chat", origin.port()),
                101
            ),
        ]
        .to_vec(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(imported[0]["content"]
        .as_str()
        .unwrap()
        .starts_with("hello from origin: GET"));
    assert_eq!(imported[1]["content"], GZIP_TEXT, "decoded, as saved");
    assert_eq!(imported[3]["requestBody"], form);
    assert_eq!(imported[3]["content"], form);
    let frames: Vec<(&str, &str)> = imported[4]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["type"].as_str().unwrap(), f["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        frames,
        [
            ("send", "ping from the client"),
            ("receive", "ping from the client")
        ],
        "{}",
        imported[4]
    );
}

/// The file the child of [`a_capture_killed_mid_flow_keeps_every_flow_written_before`]
/// writes to; only that child has it set.
const KILL_FILE: &str = "MITM_TEST_HAR_KILL_FILE";

/// The child process of [`a_capture_killed_mid_flow_keeps_every_flow_written_before`]:
/// captures flows through a proxy to the HAR file it is given, one after another,
/// saying `written N` after each, until it is killed (or gives up after a while).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the child process of a_capture_killed_mid_flow_keeps_every_flow_written_before"]
async fn capture_until_killed() {
    let Some(path) = std::env::var_os(KILL_FILE) else {
        return;
    };
    let origin = start_origin().await;
    let capture = Arc::new(
        Capture::builder()
            .sink(Box::new(HarFile::create(path).unwrap()))
            .start(),
    );
    let proxy = start_proxy({
        let capture = capture.clone();
        |b| b.http_handler(capture)
    })
    .await;
    let client = client_via(&proxy);
    let deadline = Instant::now() + 3 * PATIENCE;
    let mut n = 0;
    while Instant::now() < deadline {
        let url = format!("http://127.0.0.1:{}/page/{n}", origin.port());
        client.get(url).send().await.unwrap().bytes().await.unwrap();
        n += 1;
        written(&capture, n).await;
        let mut out = std::io::stdout().lock();
        writeln!(out, "written {n}").unwrap();
        out.flush().unwrap();
    }
}

/// Kills its child when dropped, so that a failing test leaves no process behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_capture_killed_mid_flow_keeps_every_flow_written_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.har");
    // This test binary again, running only the child test.
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "har::capture_until_killed",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(KILL_FILE, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut written = 0;
    while written < 20 {
        let line = lines
            .next()
            .expect("the child ended before it was killed")
            .unwrap();
        if let Some(n) = line.strip_prefix("written ") {
            written = n.parse().unwrap();
        }
    }
    // SIGKILL, while it goes on making flows: no flush, no close.
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    // Every flow written before the kill is there. The kill may land in the middle of
    // the one write of the next entry, rarely: then only the reader's repair (the
    // torn last line dropped) makes the file whole again.
    let text = std::fs::read(&path).unwrap();
    match serde_json::from_slice::<serde_json::Value>(&text) {
        Ok(doc) => {
            let n = doc["log"]["entries"].as_array().unwrap().len();
            assert!(
                n >= written,
                "{n} entries, but {written} flows were written"
            );
        }
        Err(e) => eprintln!("the kill tore the last entry ({e}); reading what is before it"),
    }
    let records = read_har(&path).unwrap();
    assert!(
        records.len() >= written,
        "{} records of {written}",
        records.len()
    );
    for (i, r) in records.iter().enumerate() {
        assert!(
            r.request.path.ends_with(&format!("/page/{i}")),
            "{}",
            r.request.path
        );
        assert_eq!(r.response.as_ref().unwrap().status, 200);
    }
}
