//! The connection facts of a capture, as mitmproxy reads them: a TLS flow and a
//! WebSocket flow captured through the proxy, saved as a flow file, loaded by
//! mitmproxy's own `FlowReader`; every field of `client_conn`, `server_conn` and the
//! WebSocket's end present and plausible, and `mitmdump -nr` of the file quiet. Then
//! the same traffic through `mitmdump -w`, the two files compared field by field; and
//! a reverse proxy's flow, with both handshakes.

use crate::common;
use crate::flows::Mitmdump;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::*;
use futures_util::StreamExt;
use mitm::capture::flows::FlowWriter;
use mitm::capture::{Capture, Filter};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// What mitmproxy's `FlowReader` sees of each flow: the connection fields, as JSON.
const LOAD_FACTS: &str = r#"
import json, sys
from mitmproxy.io import FlowReader

def conn(c):
    return {
        "peername": list(c.peername) if c.peername else None,
        "sockname": list(c.sockname) if c.sockname else None,
        "timestamp_start": c.timestamp_start,
        "timestamp_tcp_setup": getattr(c, "timestamp_tcp_setup", None),
        "timestamp_tls_setup": c.timestamp_tls_setup,
        "tls_established": c.tls_established,
        "tls_version": c.tls_version,
        "cipher": c.cipher,
        "alpn": c.alpn.decode() if c.alpn else None,
        "alpn_offers": [a.decode() for a in c.alpn_offers],
        "sni": c.sni,
        "certificates": [x.fingerprint().hex() for x in c.certificate_list],
    }

with open(sys.argv[1], "rb") as f:
    for flow in FlowReader(f).stream():
        ws = flow.websocket
        print(json.dumps({
            "path": flow.request.path,
            "request_start": flow.request.timestamp_start,
            "client": conn(flow.client_conn),
            "server": conn(flow.server_conn),
            "websocket": None if ws is None else {
                "close_code": ws.close_code,
                "close_reason": ws.close_reason,
                "closed_by_client": ws.closed_by_client,
                "timestamp_end": ws.timestamp_end,
                "last_message": ws.messages[-1].timestamp if ws.messages else None,
            },
        }))
"#;

/// The certificate the TLS origin at `port` presents (DER), fetched straight from it.
async fn origin_leaf(port: u16) -> Vec<u8> {
    let config = tls_client_config(origin_ca());
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A cipher suite as OpenSSL (and so mitmproxy) names the TLS 1.3 ones.
fn openssl_name(suite: rustls::CipherSuite) -> String {
    format!("{suite:?}").replace("TLS13_", "TLS_")
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// An address from mitmproxy's `[host, port]`.
fn addr(v: &serde_json::Value) -> SocketAddr {
    let host = v[0].as_str().unwrap_or_else(|| panic!("no host in {v}"));
    let port = v[1].as_u64().unwrap_or_else(|| panic!("no port in {v}"));
    SocketAddr::new(host.parse().unwrap(), u16::try_from(port).unwrap())
}

fn time(v: &serde_json::Value, what: &str) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("no {what}: {v}"))
}

/// A TLS stream to `localhost:port` through the proxy at `proxy` (`CONNECT`, then TLS
/// trusting `roots`, offering only `http/1.1`).
async fn tls_via(
    proxy: SocketAddr,
    roots: rustls::RootCertStore,
    port: u16,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut wire = Wire::connect(proxy).await;
    wire.send(format!(
        "CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
    ))
    .await;
    assert_eq!(wire.response_to("CONNECT").await.status, 200);
    let (tcp, _) = wire.into_parts();
    let mut config = rustls::ClientConfig::builder_with_provider(mitm::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .expect("TLS handshake with the proxy timed out")
        .expect("TLS handshake with the proxy failed")
}

/// The traffic of both tests, through the proxy at `proxy` (whose CA is in `roots`):
/// `GET /secure` to the TLS origin at `tls_port` in a tunnel, by a client offering
/// `http/1.1`, and a WebSocket to the origin at `ws_port` that the client closes with
/// 1000 and a reason. Returns the TLS version and cipher the client negotiated.
async fn send_traffic(
    proxy: SocketAddr,
    roots: rustls::RootCertStore,
    tls_port: u16,
    ws_port: u16,
) -> (rustls::ProtocolVersion, rustls::CipherSuite) {
    let tls = tls_via(proxy, roots, tls_port).await;
    let negotiated = {
        let session = tls.get_ref().1;
        (
            session.protocol_version().unwrap(),
            session.negotiated_cipher_suite().unwrap().suite(),
        )
    };
    let mut wire = Wire::new(tls);
    wire.send(format!(
        "GET /secure HTTP/1.1\r\nHost: localhost:{tls_port}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert_eq!(wire.response().await.status, 200);
    drop(wire);

    let mut ws = websocket_echoed(proxy, ws_port).await;
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done here".into(),
    }))
    .await
    .unwrap();
    while ws.next().await.is_some() {}
    // The relay (and so the flow) ends when both sides have gone.
    drop(ws);
    negotiated
}

/// The flows of `path` as mitmproxy's `FlowReader` loads them ([`LOAD_FACTS`]).
fn load(python: &Path, dir: &Path, path: &Path) -> Vec<serde_json::Value> {
    python_json_lines(python, dir, "facts.py", LOAD_FACTS, path)
}

/// The flow of `flows` whose path is `path`.
fn by_path<'a>(flows: &'a [serde_json::Value], path: &str) -> &'a serde_json::Value {
    flows
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("no flow of {path}: {flows:?}"))
}

/// Trusting `ca` alone.
fn roots_of(ca: &rustls::pki_types::CertificateDer<'_>) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone().into_owned()).unwrap();
    roots
}

/// Our capture of [`send_traffic`], as a flow file at `path`: the TLS origin's port,
/// the plain origin's, the proxy's address and what the client negotiated.
async fn capture_ours(
    path: &Path,
    tls_port: u16,
    ws_port: u16,
) -> (SocketAddr, (rustls::ProtocolVersion, rustls::CipherSuite)) {
    // CONNECTs left out: two flows, whatever the capture does with tunnels.
    let (proxy, capture) = start_capturing(
        Capture::builder()
            .filter(Filter::parse("!~m CONNECT").unwrap())
            .sink(Box::new(FlowWriter::create(path).unwrap())),
    )
    .await;
    let negotiated =
        send_traffic(proxy.addr, roots_of(proxy.ca.cert_der()), tls_port, ws_port).await;
    if tokio::time::timeout(PATIENCE, capture.wait_written(2))
        .await
        .is_err()
    {
        capture.finish();
        let got: Vec<String> = mitm::capture::read(path)
            .unwrap()
            .iter()
            .map(|r| format!("{} {}", r.request.method, r.request.url()))
            .collect();
        panic!("timed out waiting for two flows written: {got:?}");
    }
    assert_eq!(capture.finish(), (2, 0));
    (proxy.addr, negotiated)
}

#[tokio::test(flavor = "multi_thread")]
async fn mitmproxy_reads_every_connection_fact_we_capture() {
    let Some(python) = venv_tool("python") else {
        require_tool(false, "mitmproxy (Python)", VENV_INSTALL);
        return;
    };
    let Some(mitmdump) = venv_tool("mitmdump") else {
        require_tool(false, "mitmdump", VENV_INSTALL);
        return;
    };
    let origin = start_origin().await;
    let tls_origin = start_tls_origin().await;
    let leaf = origin_leaf(tls_origin.port()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("facts.flows");
    let (proxy_addr, (version, cipher)) =
        capture_ours(&path, tls_origin.port(), origin.port()).await;

    let flows = load(&python, dir.path(), &path);
    assert_eq!(flows.len(), 2, "{flows:?}");
    let (secure, chat) = (by_path(&flows, "/secure"), by_path(&flows, "/chat"));

    for flow in [secure, chat] {
        let (client, server) = (&flow["client"], &flow["server"]);
        let request = time(&flow["request_start"], "request start");
        // The client side: its address, the proxy's it reached, connected before the
        // request.
        let peer = addr(&client["peername"]);
        assert!(peer.ip().is_loopback() && peer.port() != 0, "{flow}");
        assert_eq!(addr(&client["sockname"]), proxy_addr, "{flow}");
        let accepted = time(&client["timestamp_start"], "client timestamp_start");
        assert!(accepted <= request, "{flow}");
        // The server side: the origin, from a local port of the proxy's; TCP set up
        // after connecting began (for a plain request, once its head came).
        let up = addr(&server["peername"]);
        assert!(up.ip().is_loopback(), "{flow}");
        let local = addr(&server["sockname"]);
        assert!(local.ip().is_loopback() && local.port() != 0, "{flow}");
        let start = time(&server["timestamp_start"], "server timestamp_start");
        let tcp = time(&server["timestamp_tcp_setup"], "timestamp_tcp_setup");
        assert!(start <= tcp, "{flow}");
    }

    // TLS on both sides of the HTTPS flow.
    let (client, server) = (&secure["client"], &secure["server"]);
    let request = time(&secure["request_start"], "request start");
    assert_eq!(client["tls_established"], true, "{secure}");
    let accepted = time(&client["timestamp_start"], "client timestamp_start");
    let client_tls = time(&client["timestamp_tls_setup"], "client timestamp_tls_setup");
    assert!(accepted <= client_tls && client_tls <= request, "{secure}");
    let want_version = match version {
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        other => panic!("negotiated {other:?}"),
    };
    assert_eq!(client["tls_version"], want_version, "{secure}");
    assert_eq!(client["cipher"], openssl_name(cipher).as_str(), "{secure}");
    assert_eq!(client["sni"], "localhost", "{secure}");
    assert_eq!(client["alpn"], "http/1.1", "{secure}");
    assert_eq!(client["alpn_offers"], serde_json::json!(["http/1.1"]));

    assert_eq!(addr(&server["peername"]).port(), tls_origin.port());
    assert_eq!(server["tls_established"], true, "{secure}");
    let tcp = time(&server["timestamp_tcp_setup"], "timestamp_tcp_setup");
    let server_tls = time(&server["timestamp_tls_setup"], "server timestamp_tls_setup");
    assert!(tcp <= server_tls && server_tls <= request, "{secure}");
    assert_eq!(server["sni"], "localhost", "{secure}");
    assert!(
        matches!(server["tls_version"].as_str(), Some("TLSv1.2" | "TLSv1.3")),
        "{secure}"
    );
    let server_cipher = server["cipher"].as_str().unwrap_or_default();
    assert!(server_cipher.starts_with("TLS_") || server_cipher.starts_with("ECDHE-"));
    assert!(server["alpn"].is_string(), "{secure}");
    assert!(!server["alpn_offers"].as_array().unwrap().is_empty());
    let chain = server["certificates"].as_array().unwrap();
    assert_eq!(chain[0], hex(&sha256(&leaf)).as_str(), "{secure}");

    // The WebSocket: plain, closed by the client with 1000, after its last message.
    assert_eq!(chat["client"]["tls_established"], false, "{chat}");
    assert_eq!(chat["server"]["tls_established"], false, "{chat}");
    assert_eq!(addr(&chat["server"]["peername"]).port(), origin.port());
    let ws = &chat["websocket"];
    assert_eq!(ws["close_code"], 1000, "{chat}");
    assert_eq!(ws["close_reason"], "done here", "{chat}");
    assert_eq!(ws["closed_by_client"], true, "{chat}");
    let end = time(&ws["timestamp_end"], "websocket timestamp_end");
    assert!(time(&ws["last_message"], "last message") <= end, "{chat}");

    // mitmdump lists the file with no error and no warning.
    let confdir = dir.path().join("mitmproxy");
    let out = std::process::Command::new(&mitmdump)
        .arg("-nr")
        .arg(&path)
        .args(["--set", &format!("confdir={}", confdir.display())])
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "mitmdump -nr failed:\n{printed}");
    let bad: Vec<&str> = printed
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("warn")
        })
        .collect();
    assert!(
        bad.is_empty(),
        "mitmdump -nr complained: {bad:?}\n{printed}"
    );
    assert!(
        printed.contains("/secure") && printed.contains("/chat"),
        "{printed}"
    );
}

/// Whether a field is there (not null, not an empty list).
fn present(v: &serde_json::Value) -> bool {
    !(v.is_null() || v.as_array().is_some_and(Vec::is_empty))
}

#[tokio::test(flavor = "multi_thread")]
async fn our_connection_facts_match_mitmdumps_field_by_field() {
    let Some(python) = venv_tool("python") else {
        require_tool(false, "mitmproxy (Python)", VENV_INSTALL);
        return;
    };
    let Some(mitmdump) = venv_tool("mitmdump") else {
        require_tool(false, "mitmdump", VENV_INSTALL);
        return;
    };
    let origin = start_origin().await;
    let tls_origin = start_tls_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ours_file = dir.path().join("ours.flows");
    capture_ours(&ours_file, tls_origin.port(), origin.port()).await;
    let theirs_file = dir.path().join("theirs.flows");
    let dump = Mitmdump::start(&mitmdump, dir.path(), &theirs_file).await;
    let dump_port = dump.port;
    let roots = Mitmdump::roots(dir.path());
    send_traffic(dump.addr(), roots, tls_origin.port(), origin.port()).await;
    dump.stop().await;

    let ours = load(&python, dir.path(), &ours_file);
    let theirs = load(&python, dir.path(), &theirs_file);
    // A field that differs by design: the offers to the origin (we offer h2 as well,
    // to pool it; mitmproxy offers what its client did).
    let by_design = [("server", "alpn_offers")];
    // Fields whose values cannot be the same (ports, times, the proxy's own
    // certificate choices): present on both sides or on neither.
    let presence_only = [
        "peername",
        "sockname",
        "timestamp_start",
        "timestamp_tcp_setup",
        "timestamp_tls_setup",
        "cipher",
    ];
    let mut compared = 0;
    for path in ["/secure", "/chat"] {
        let (a, b) = (by_path(&ours, path), by_path(&theirs, path));
        for side in ["client", "server"] {
            let fields = b[side].as_object().unwrap();
            for (field, want) in fields {
                if by_design.contains(&(side, field.as_str())) {
                    continue;
                }
                let got = &a[side][field];
                if presence_only.contains(&field.as_str()) {
                    assert_eq!(
                        present(got),
                        present(want),
                        "{path} {side}.{field}: ours {got}, mitmdump's {want}"
                    );
                } else {
                    assert_eq!(got, want, "{path} {side}.{field}");
                }
                compared += 1;
            }
        }
        for field in ["close_code", "close_reason", "closed_by_client"] {
            assert_eq!(
                a["websocket"][field], b["websocket"][field],
                "{path} websocket.{field}"
            );
        }
        assert_eq!(
            present(&a["websocket"]["timestamp_end"]),
            present(&b["websocket"]["timestamp_end"]),
            "{path} websocket.timestamp_end"
        );
    }
    // Every field of both connections of both flows, less the one by design.
    assert_eq!(compared, 2 * (12 + 12 - 1), "fields compared");

    // Our reader gets the same facts from mitmdump's file.
    let records = mitm::capture::flows::read_flows(&theirs_file).unwrap();
    let secure = records
        .iter()
        .find(|r| r.request.path == "/secure")
        .unwrap();
    let server = &secure.facts.server;
    assert_eq!(
        server.tls.certificates[0][..],
        origin_leaf(tls_origin.port()).await[..]
    );
    assert!(server.socket.started <= server.socket.tcp_setup);
    assert!(server.socket.tcp_setup <= server.socket.tls_setup);
    assert!(server.socket.local.is_some_and(|a| a.port() != 0));
    assert_eq!(server.tls.sni.as_deref(), Some("localhost"));
    let client_cipher = by_path(&theirs, "/secure")["client"]["cipher"].clone();
    assert_eq!(secure.tls.cipher.as_deref(), client_cipher.as_str());
    assert!(secure.facts.client.started <= secure.facts.client.tls_setup);
    assert_eq!(secure.facts.client.local.map(|a| a.port()), Some(dump_port));
    let chat = records.iter().find(|r| r.request.path == "/chat").unwrap();
    let close = chat.facts.websocket_close.as_ref().expect("the close");
    assert_eq!(
        (close.code, close.reason.as_str(), close.by_client),
        (1000, "done here", true)
    );
}

/// A TLS client of the reverse proxy: its handshake and the upstream's are both in the
/// record, with the times in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_reverse_proxys_flows_keep_both_handshakes() {
    let tls_origin = start_tls_origin().await;
    let leaf = origin_leaf(tls_origin.port()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reverse.flows");
    let capture = Arc::new(
        Capture::builder()
            .sink(Box::new(FlowWriter::create(&path).unwrap()))
            .start(),
    );
    let handler = capture.clone();
    let reverse =
        mitm::Reverse::parse(&format!("https://localhost:{}", tls_origin.port())).unwrap();
    let proxy = start_proxy(|b| b.protocols(vec![Arc::new(reverse)]).http_handler(handler)).await;

    let mut config = tls_client_config(&proxy.ca);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("front.localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let cipher = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
    let mut wire = Wire::new(tls);
    wire.send("GET /r HTTP/1.1\r\nHost: front.localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(wire.response().await.status, 200);
    drop(wire);
    tokio::time::timeout(PATIENCE, capture.wait_written(1))
        .await
        .expect("the flow was never written");
    capture.finish();

    let records = mitm::capture::flows::read_flows(&path).unwrap();
    let r = &records[0];
    assert_eq!(r.tls.sni.as_deref(), Some("front.localhost"));
    assert_eq!(r.tls.cipher, Some(openssl_name(cipher)));
    assert_eq!(r.tls.alpn_offers, ["http/1.1"]);
    let client = &r.facts.client;
    assert_eq!(client.local, Some(proxy.addr));
    assert!(client.started.is_some() && client.started <= client.tls_setup);
    assert!(client.tls_setup <= Some(r.started_at));
    let server = &r.facts.server;
    assert!(server.socket.started <= server.socket.tcp_setup);
    assert!(
        server.socket.tcp_setup.is_some() && server.socket.tcp_setup <= server.socket.tls_setup
    );
    assert_eq!(server.tls.certificates[0][..], leaf[..]);
    assert_eq!(server.tls.sni.as_deref(), Some("localhost"));
}
