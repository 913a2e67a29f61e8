//! The same traffic captured by this proxy (`--save x.flows`) and by real mitmdump
//! (`-w`), both files opened with mitmproxy's own `FlowReader`, and compared field by
//! field: what a mitmproxy user reads from our files is what mitmproxy itself would
//! have saved. Fields that cannot be equal (ports, times) are checked for being
//! present and plausible instead.
//!
//! The traffic: HTTP/1.1 GET and POST (a binary body), a gzip and a br body, a 404, a
//! path and a header holding UTF-8, a closed port, HTTPS over HTTP/1.1 and over HTTP/2
//! (curl), and a WebSocket through a CONNECT tunnel.
//!
//! And the round trip of such a capture through every format: flows, HAR, SQLite and
//! flows again keep every field all of them hold.

use crate::common;
use crate::flows::Mitmdump;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// Prints one JSON object per flow of the file `argv[1]`: every field compared below.
const DUMP_FLOWS: &str = r#"
import json, sys
from mitmproxy.io import FlowReader

def text(b):
    return None if b is None else b.decode("utf-8", "backslashreplace")

def fields(headers):
    return [[text(n), text(v)] for n, v in headers.fields]

def conn(c):
    if c is None:
        return None
    return {
        "peername": list(c.peername) if c.peername else None,
        "sockname": list(c.sockname) if c.sockname else None,
        "timestamp_start": c.timestamp_start,
        "timestamp_tls_setup": c.timestamp_tls_setup,
        "tls_established": c.tls_established,
        "tls_version": c.tls_version,
        "cipher": c.cipher,
        "alpn": text(c.alpn),
        "sni": c.sni,
    }

with open(sys.argv[1], "rb") as f:
    for flow in FlowReader(f).stream():
        q, r = flow.request, flow.response
        ws = getattr(flow, "websocket", None)
        print(json.dumps({
            "type": flow.type,
            "request": {
                "method": q.method, "scheme": q.scheme, "host": q.host, "port": q.port,
                "path": q.path, "authority": q.authority, "http_version": q.http_version,
                "headers": fields(q.headers), "content": q.raw_content.hex(),
                "decoded": (q.get_content(strict=False) or b"").hex(),
                "timestamp_start": q.timestamp_start, "timestamp_end": q.timestamp_end,
            },
            "response": None if r is None else {
                "status_code": r.status_code, "reason": r.reason,
                "http_version": r.http_version, "headers": fields(r.headers),
                "content": r.raw_content.hex(),
                "decoded": (r.get_content(strict=False) or b"").hex(),
                "timestamp_start": r.timestamp_start, "timestamp_end": r.timestamp_end,
            },
            "error": flow.error.msg if flow.error else None,
            "websocket": None if ws is None else {
                "messages": [[m.from_client, int(m.type), m.content.hex()] for m in ws.messages],
                "close_code": ws.close_code, "close_reason": ws.close_reason,
                "closed_by_client": ws.closed_by_client, "timestamp_end": ws.timestamp_end,
            },
            "client_conn": conn(flow.client_conn),
            "server_conn": conn(flow.server_conn),
        }))
"#;

/// The traffic of these tests, and the origins it goes to (a port nothing listens on
/// for the request that cannot be delivered).
struct Traffic {
    origin: Origin,
    tls_origin: Origin,
    /// An HTTPS origin that speaks HTTP/2 only: mitmproxy offers its clients HTTP/2
    /// only when the origin takes it.
    h2_origin: crate::http2::H2Origin,
    refused: u16,
}

impl Traffic {
    /// Starts the origins the traffic goes to.
    async fn start() -> Traffic {
        Traffic {
            origin: start_origin().await,
            tls_origin: start_tls_origin().await,
            h2_origin: crate::http2::start_h2_origin().await,
            refused: refused_port(),
        }
    }

    /// Sends every case through the proxy at `proxy`, one after another, each on a
    /// connection of its own, so that the flows finish in this order.
    async fn send(&self, proxy: SocketAddr, ca: &Path) {
        let (o, t) = (self.origin.port(), self.tls_origin.port());
        let plain = [
            format!(
                "GET http://127.0.0.1:{o}/page?q=a%20b HTTP/1.1\r\nHost: 127.0.0.1:{o}\r\nX-Note: caf\u{e9}\r\n\r\n"
            ),
            format!(
                "POST http://127.0.0.1:{o}/echo HTTP/1.1\r\nHost: 127.0.0.1:{o}\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\n\r\n\0\x01\x02ab"
            ),
            format!("GET http://127.0.0.1:{o}/gzip HTTP/1.1\r\nHost: 127.0.0.1:{o}\r\n\r\n"),
            format!("GET http://127.0.0.1:{o}/br HTTP/1.1\r\nHost: 127.0.0.1:{o}\r\n\r\n"),
            format!("GET http://127.0.0.1:{o}/status/404 HTTP/1.1\r\nHost: 127.0.0.1:{o}\r\n\r\n"),
            format!(
                "GET http://127.0.0.1:{o}/caf%C3%A9/%E2%9C%93?x=%C3%A9 HTTP/1.1\r\nHost: 127.0.0.1:{o}\r\n\r\n"
            ),
            // mitmdump answers a target holding raw UTF-8 with a 400 and saves no flow;
            // this proxy passes it on, and saves it (see ONLY_OURS).
            format!(
                "GET http://127.0.0.1:{o}/caf\u{e9}/\u{2713}?x=\u{e9} HTTP/1.1\r\nHost: 127.0.0.1:{o}\r\n\r\n"
            ),
            format!("GET http://127.0.0.1:{o}/utf8-header HTTP/1.1\r\nHost: 127.0.0.1:{o}\r\n\r\n"),
        ];
        for request in plain {
            let mut wire = Wire::connect(proxy).await;
            wire.send(request.as_bytes()).await;
            let method = request.split(' ').next().unwrap();
            wire.response_to(method).await;
        }
        // The origin is not there: the client gets the proxy's error page.
        let r = self.refused;
        let mut wire = Wire::connect(proxy).await;
        wire.send(format!(
            "GET http://127.0.0.1:{r}/down HTTP/1.1\r\nHost: 127.0.0.1:{r}\r\n\r\n"
        ))
        .await;
        assert_eq!(wire.response_to("GET").await.status, 502);
        // HTTPS, over HTTP/1.1 and HTTP/2, by curl.
        curl(
            proxy,
            ca,
            "--http1.1",
            &format!("https://localhost:{t}/secure"),
        )
        .await;
        let h2 = self.h2_origin.port;
        curl(proxy, ca, "--http2", &format!("https://localhost:{h2}/h2")).await;
        // A WebSocket in a CONNECT tunnel: two messages each way, closed by the client.
        let mut wire = Wire::connect(proxy).await;
        wire.send(format!(
            "CONNECT 127.0.0.1:{o} HTTP/1.1\r\nHost: 127.0.0.1:{o}\r\n\r\n"
        ))
        .await;
        assert_eq!(wire.response_to("CONNECT").await.status, 200);
        let ws = websocket_over(wire.io, o).await;
        close_websocket(ws).await;
    }
}

/// A WebSocket to the echo origin's `/chat` over `io` (a tunnel to it), after the
/// messages [`assert_echoed`] expects went there and back.
async fn websocket_over(
    io: tokio::net::TcpStream,
    port: u16,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://127.0.0.1:{port}/chat");
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), io)
        .await
        .expect("the WebSocket handshake through the tunnel failed");
    for message in [Message::text("hello"), Message::binary(vec![0u8, 255])] {
        ws.send(message.clone()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), message);
    }
    ws
}

/// `curl VERSION URL` through the proxy at `proxy`, trusting `ca`; fails the test
/// unless it gets a 2xx.
async fn curl(proxy: SocketAddr, ca: &Path, version: &str, url: &str) {
    let out = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "30"])
        .args([version, "--proxy", &format!("http://{proxy}"), "--cacert"])
        .arg(ca)
        .arg(url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "curl {version} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The flows of `file` as mitmproxy's `FlowReader` (in the venv's `python`) reads
/// them.
fn load(python: &Path, dir: &Path, file: &Path) -> Vec<Value> {
    python_json_lines(python, dir, "dump_flows.py", DUMP_FLOWS, file)
}

/// The fields mitmproxy and this proxy must save alike for the same traffic, as
/// JSON pointers into [`DUMP_FLOWS`]'s objects.
const EQUAL: &[&str] = &[
    "/type",
    "/request/method",
    "/request/scheme",
    "/request/host",
    "/request/port",
    "/request/path",
    "/request/authority",
    "/request/http_version",
    "/request/headers",
    "/request/content",
    "/response/status_code",
    "/response/reason",
    "/response/http_version",
    "/response/headers",
    "/response/content",
    "/websocket/messages",
    "/websocket/close_code",
    "/websocket/close_reason",
    "/websocket/closed_by_client",
    "/client_conn/tls_established",
    "/client_conn/tls_version",
    "/client_conn/alpn",
    "/client_conn/sni",
    "/server_conn/tls_established",
    "/server_conn/tls_version",
    "/server_conn/alpn",
    "/server_conn/sni",
];

/// Flows only this proxy saves, and why: mitmdump refuses a request whose target holds
/// raw UTF-8 (not percent-encoded) with a `400` and saves nothing of it; this proxy
/// passes it on as it came, as the origin may well take it.
const ONLY_OURS: &[&str] = &["GET /caf\u{e9}/\u{2713}?x=\u{e9}"];

/// Where a field differs between the two captures, for the flow at `i` (`what`).
fn differences(ours: &Value, theirs: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let (ours, theirs) = (&masked(ours), &masked(theirs));
    for pointer in EQUAL {
        let (a, b) = (ours.pointer(pointer), theirs.pointer(pointer));
        if a != b {
            out.push(format!(
                "{pointer}: ours {}, mitmdump's {}",
                a.map_or("absent".into(), Value::to_string),
                b.map_or("absent".into(), Value::to_string)
            ));
        }
    }
    // What cannot be equal, present and plausible: the error of a flow that failed
    // (its words are each proxy's own), and the times in order.
    let failed = |f: &Value| f["error"].is_string();
    if failed(ours) != failed(theirs) {
        out.push(format!(
            "/error: ours {}, mitmdump's {}",
            ours["error"], theirs["error"]
        ));
    }
    // Both connections' addresses and times, where the flow had them.
    for side in ["client_conn", "server_conn"] {
        if failed(ours) && side == "server_conn" {
            continue;
        }
        for field in ["peername", "sockname"] {
            let port = ours[side][field][1].as_u64().unwrap_or(0);
            let host = ours[side][field][0].as_str().unwrap_or("");
            if port == 0
                || !(host == "127.0.0.1" || host == "::1" || host.starts_with("::ffff:127."))
            {
                out.push(format!("/{side}/{field}: {}", ours[side][field]));
            }
        }
        let tls_start = ours[side]["timestamp_start"].as_f64().unwrap_or(0.0);
        let tls_setup = ours[side]["timestamp_tls_setup"].as_f64();
        if tls_start <= 0.0 || tls_setup.is_some_and(|t| t < tls_start) {
            out.push(format!("/{side}/timestamp_*: {tls_start} .. {tls_setup:?}"));
        }
    }
    let start = ours["request"]["timestamp_start"].as_f64().unwrap_or(0.0);
    // A request never sent on (its origin unreachable) has no end.
    let end = ours["request"]["timestamp_end"].as_f64();
    if start <= 0.0 || end.is_some_and(|end| end < start) {
        out.push(format!("/request/timestamp_*: {start} .. {end:?}"));
    }
    out
}

/// `flow` with the values each client or server picks at random (a WebSocket's key,
/// and so its accept) replaced by a mark.
fn masked(flow: &Value) -> Value {
    let mut flow = flow.clone();
    for side in ["request", "response"] {
        if let Some(Value::Array(fields)) = flow.pointer_mut(&format!("/{side}/headers")) {
            for field in fields {
                let name = field[0].as_str().unwrap_or("").to_ascii_lowercase();
                if name == "sec-websocket-key" || name == "sec-websocket-accept" {
                    field[1] = "(random)".into();
                }
            }
        }
    }
    flow
}

/// A short name for a flow in failures: method and path.
fn name(flow: &Value) -> String {
    format!(
        "{} {}",
        flow["request"]["method"].as_str().unwrap_or("?"),
        flow["request"]["path"].as_str().unwrap_or("?")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_flow_files_hold_what_mitmdump_saves_of_the_same_traffic() {
    let (dump, python) = (venv_tool("mitmdump"), venv_tool("python"));
    if !require_tool(dump.is_some() && python.is_some(), "mitmdump", VENV_INSTALL) {
        return;
    }
    let (dump, python) = (dump.unwrap(), python.unwrap());
    let traffic = Traffic::start().await;
    let dir = tempfile::tempdir().unwrap();

    // mitmdump's capture.
    let theirs_file = dir.path().join("mitmdump.flows");
    let mitmdump = Mitmdump::start(&dump, dir.path(), &theirs_file).await;
    let proxy = SocketAddr::from(([127, 0, 0, 1], mitmdump.port));
    traffic.send(proxy, &Mitmdump::ca_cert(dir.path())).await;
    mitmdump.stop().await;

    // Ours, of the same traffic.
    let ours_file: PathBuf = dir.path().join("ours.flows");
    let save = ours_file.to_str().unwrap().to_string();
    let mut ours = tokio::task::spawn_blocking(move || ChildProxy::start_with(&["--save", &save]))
        .await
        .unwrap();
    traffic.send(ours.addr, &ours.ca_pem).await;
    ours.interrupt();

    // mitmdump reads our file, and our HAR of it, with no complaint.
    let har = dir.path().join("ours.har");
    let converted = Command::new(env!("CARGO_BIN_EXE_mitm"))
        .arg("convert")
        .args([&ours_file, &har])
        .output()
        .unwrap();
    assert!(converted.status.success(), "{converted:?}");
    for file in [&ours_file, &har] {
        let out = Command::new(&dump)
            .arg("-nr")
            .arg(file)
            .args(["--set", "flow_detail=2", "--set"])
            .arg(format!(
                "confdir={}",
                dir.path().join("mitmproxy").display()
            ))
            .output()
            .unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "mitmdump -nr {}:\n{printed}",
            file.display()
        );
        let complaints: Vec<&str> = printed
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                // ` << ` starts what a flow got: the closed port's error is one.
                (l.contains("error") || l.contains("warn")) && !l.starts_with(" << ")
            })
            .collect();
        assert!(
            complaints.is_empty(),
            "mitmdump -nr {}: {complaints:#?}\n{printed}",
            file.display()
        );
    }

    let theirs = load(&python, dir.path(), &theirs_file);
    let ours = load(&python, dir.path(), &ours_file);
    let names = |flows: &[Value]| flows.iter().map(name).collect::<Vec<_>>();
    let mut ours: Vec<Value> = ours
        .into_iter()
        .filter(|f| !ONLY_OURS.contains(&name(f).as_str()))
        .collect();
    let mut theirs = theirs;
    // A flow is written once its response went to the client, which may already be
    // sending the next request: files need not hold them in the order they were sent.
    ours.sort_by_key(name);
    theirs.sort_by_key(name);
    assert_eq!(names(&ours), names(&theirs), "the same flows");
    let mut report = BTreeMap::new();
    for (a, b) in ours.iter().zip(&theirs) {
        let diffs = differences(a, b);
        if !diffs.is_empty() {
            report.insert(name(a), diffs);
        }
    }
    assert!(
        report.is_empty(),
        "fields saved differently from mitmdump:\n{report:#?}"
    );
}

/// What a conversion between formats keeps of a flow that all of them hold, as JSON
/// pointers into [`DUMP_FLOWS`]'s objects: the heads, the bodies decoded (HAR holds
/// them decoded, and a body encoded again need not have the same bytes), the error,
/// the WebSocket messages, the connection facts, the times to the millisecond.
const KEPT: &[&str] = &[
    "/type",
    "/request/method",
    "/request/scheme",
    "/request/host",
    "/request/port",
    "/request/path",
    "/request/authority",
    "/request/http_version",
    "/request/headers",
    "/request/decoded",
    "/response/status_code",
    "/response/reason",
    "/response/http_version",
    "/response/headers",
    "/response/decoded",
    "/error",
    "/websocket/messages",
    "/websocket/close_code",
    "/websocket/close_reason",
    "/websocket/closed_by_client",
    "/client_conn/peername",
    "/client_conn/sockname",
    "/client_conn/tls_established",
    "/client_conn/sni",
    "/client_conn/alpn",
    "/client_conn/tls_version",
    "/client_conn/cipher",
    "/server_conn/peername",
    "/server_conn/sockname",
    "/server_conn/tls_established",
    "/server_conn/sni",
    "/server_conn/alpn",
    "/server_conn/tls_version",
    "/server_conn/cipher",
];

/// The times of a flow, to compare to the millisecond.
const TIMES: &[&str] = &[
    "/request/timestamp_start",
    "/request/timestamp_end",
    "/response/timestamp_start",
    "/response/timestamp_end",
    "/websocket/timestamp_end",
    "/client_conn/timestamp_start",
    "/client_conn/timestamp_tls_setup",
    "/server_conn/timestamp_start",
    "/server_conn/timestamp_tls_setup",
];

/// `flow` with what an encoding may change left out: the `Content-Length` of a body
/// that has a `Content-Encoding` (encoded again, it need not be as long).
fn without_encoded_lengths(flow: &Value) -> Value {
    let mut flow = masked(flow);
    for side in ["request", "response"] {
        if let Some(Value::Array(fields)) = flow.pointer_mut(&format!("/{side}/headers")) {
            let encoded = fields.iter().any(|f| {
                f[0].as_str()
                    .unwrap_or("")
                    .eq_ignore_ascii_case("content-encoding")
            });
            if encoded {
                fields.retain(|f| {
                    !f[0]
                        .as_str()
                        .unwrap_or("")
                        .eq_ignore_ascii_case("content-length")
                });
            }
        }
    }
    flow
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_converted_from_flows_to_har_to_sqlite_to_flows_keeps_every_field() {
    let python = venv_tool("python");
    if !require_tool(python.is_some(), "mitmproxy's python", VENV_INSTALL) {
        return;
    }
    let python = python.unwrap();
    let traffic = Traffic::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.flows");
    let save = first.to_str().unwrap().to_string();
    let mut proxy = tokio::task::spawn_blocking(move || ChildProxy::start_with(&["--save", &save]))
        .await
        .unwrap();
    traffic.send(proxy.addr, &proxy.ca_pem).await;
    proxy.interrupt();

    let [har, db, last] = ["x.har", "x.sqlite", "last.flows"].map(|f| dir.path().join(f));
    for (from, to) in [(&first, &har), (&har, &db), (&db, &last)] {
        let out = Command::new(env!("CARGO_BIN_EXE_mitm"))
            .arg("convert")
            .args([from, to])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mitm convert {} {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let before = load(&python, dir.path(), &first);
    let after = load(&python, dir.path(), &last);
    assert_eq!(before.len(), 12, "{before:#?}");
    let names = |flows: &[Value]| flows.iter().map(name).collect::<Vec<_>>();
    assert_eq!(names(&after), names(&before));
    let mut report = BTreeMap::new();
    for (a, b) in before.iter().zip(&after) {
        let (a, b) = (without_encoded_lengths(a), without_encoded_lengths(b));
        let mut diffs = Vec::new();
        for pointer in KEPT {
            if a.pointer(pointer) != b.pointer(pointer) {
                diffs.push(format!(
                    "{pointer}: {:?} became {:?}",
                    a.pointer(pointer),
                    b.pointer(pointer)
                ));
            }
        }
        for pointer in TIMES {
            let (x, y) = (
                a.pointer(pointer).and_then(Value::as_f64),
                b.pointer(pointer).and_then(Value::as_f64),
            );
            let near = match (x, y) {
                (Some(x), Some(y)) => (x - y).abs() <= 0.001,
                (x, y) => x == y,
            };
            if !near {
                diffs.push(format!("{pointer}: {x:?} became {y:?}"));
            }
        }
        if !diffs.is_empty() {
            report.insert(name(&a), diffs);
        }
    }
    assert!(report.is_empty(), "lost in conversion:\n{report:#?}");
}
