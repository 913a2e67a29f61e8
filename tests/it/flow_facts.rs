//! The connection facts of a capture, as mitmproxy reads them: a TLS flow and a
//! WebSocket flow captured through the proxy, saved as a flow file, loaded by
//! mitmproxy's own `FlowReader`; every field of `client_conn`, `server_conn` and the
//! WebSocket's end present and plausible, and `mitmdump -nr` of the file quiet.

use crate::common;

use std::net::SocketAddr;
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
    // CONNECTs left out: two flows, whatever the capture does with tunnels.
    let (proxy, capture) = start_capturing(
        Capture::builder()
            .filter(Filter::parse("!~m CONNECT").unwrap())
            .sink(Box::new(FlowWriter::create(&path).unwrap())),
    )
    .await;

    // A TLS flow, by a client that offers h2 and http/1.1 (and gets HTTP/1.1 inside
    // the tunnel: the proxy announces what the origin picks, h2 here, so offer only
    // http/1.1 to keep to HTTP/1.1 text on the wire).
    let tls = tls_through_offering(&proxy, "localhost", tls_origin.port(), &[b"http/1.1"]).await;
    let (version, cipher) = {
        let session = tls.get_ref().1;
        (
            session.protocol_version().unwrap(),
            session.negotiated_cipher_suite().unwrap().suite(),
        )
    };
    let mut wire = Wire::new(tls);
    wire.send(format!(
        "GET /secure HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        tls_origin.port()
    ))
    .await;
    assert_eq!(wire.response().await.status, 200);
    drop(wire);

    // A WebSocket flow, closed by the client with 1000 and a reason.
    let mut ws = websocket_echoed(proxy.addr, origin.port()).await;
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done here".into(),
    }))
    .await
    .unwrap();
    while ws.next().await.is_some() {}
    // The relay (and so the flow) ends when both sides have gone.
    drop(ws);

    if tokio::time::timeout(PATIENCE, capture.wait_written(2))
        .await
        .is_err()
    {
        capture.finish();
        let got: Vec<String> = mitm::capture::read(&path)
            .unwrap()
            .iter()
            .map(|r| format!("{} {}", r.request.method, r.request.url()))
            .collect();
        panic!("timed out waiting for two flows written: {got:?}");
    }
    assert_eq!(capture.finish(), (2, 0));

    let script = dir.path().join("facts.py");
    std::fs::write(&script, LOAD_FACTS).unwrap();
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "FlowReader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(flows.len(), 2, "{flows:?}");
    let secure = flows.iter().find(|f| f["path"] == "/secure").unwrap();
    let chat = flows.iter().find(|f| f["path"] == "/chat").unwrap();

    for flow in [secure, chat] {
        let (client, server) = (&flow["client"], &flow["server"]);
        let request = time(&flow["request_start"], "request start");
        // The client side: its address, the proxy's it reached, connected before the
        // request.
        let peer = addr(&client["peername"]);
        assert!(peer.ip().is_loopback() && peer.port() != 0, "{flow}");
        assert_eq!(addr(&client["sockname"]), proxy.addr, "{flow}");
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
