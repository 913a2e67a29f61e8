//! `body_size_limit` against real mitmdump 11: the same `--set body_size_limit=1k` given
//! to both, request bodies under and over it (with a `Content-Length` and chunked) and
//! responses under and over it, sent by curl through each; the status the client sees
//! and whether the origin got the request compared. Plain HTTP/1.1, and intercepted
//! HTTPS with HTTP/2 from the client. Then `Http::max_body` from Rust on chunked bodies.

use crate::common;

use std::path::Path;

use common::*;

use crate::flows::Mitmdump;

/// What one request got through one proxy.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    /// The status curl saw (`000`: none).
    status: String,
    /// Whether the origin got the request.
    reached: bool,
}

/// One request by curl through the proxy at `proxy` trusting `ca`.
async fn step(proxy: std::net::SocketAddr, ca: &Path, origin: &Origin, args: &[&str]) -> Step {
    let before = origin.requests().len();
    let out = curl_output(
        curl_via(proxy, ca, args)
            .args(["--output", "/dev/null", "--write-out", "%{http_code}"])
            .args(args),
    )
    .await;
    Step {
        status: String::from_utf8_lossy(&out.stdout).into_owned(),
        reached: origin.requests().len() > before,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn body_size_limit_refuses_as_mitmdump_does() {
    if !require_tool(have("curl"), "curl", "apt-get install curl") {
        return;
    }
    let dump = venv_tool("mitmdump");
    if !require_tool(
        dump.is_some(),
        "mitmdump (mitmproxy 11)",
        "scripts/test-venv.sh",
    ) {
        return;
    }
    let args = ["--set", "body_size_limit=1k"];
    let dir = tempfile::tempdir().unwrap();
    let theirs = Mitmdump::start_with(
        &dump.unwrap(),
        dir.path(),
        &dir.path().join("f.flows"),
        &args,
    )
    .await;
    let ours = ChildProxy::start_with(&args);
    let origin = start_origin().await;
    let tls = start_tls_origin().await;
    let small = dir.path().join("small");
    let large = dir.path().join("large");
    std::fs::write(&small, pattern(1000)).unwrap();
    std::fs::write(&large, pattern(1025)).unwrap();
    let small = format!("@{}", small.display());
    let large = format!("@{}", large.display());
    let echo = format!("http://127.0.0.1:{}/echo", origin.port());
    let bytes = |n: usize| format!("http://127.0.0.1:{}/bytes/{n}", origin.port());
    let (fits, over) = (bytes(1024), bytes(1025));
    let chunked = "Transfer-Encoding: chunked";
    let requests: Vec<Vec<&str>> = vec![
        vec!["--data-binary", &small, &echo],
        vec!["--data-binary", &large, &echo],
        vec!["-H", chunked, "--data-binary", &small, &echo],
        vec!["-H", chunked, "--data-binary", &large, &echo],
        vec![&fits],
        vec![&over],
    ];
    let theirs_ca = Mitmdump::ca_cert(dir.path());
    let mut statuses = Vec::new();
    for request in &requests {
        let got = step(ours.addr, &ours.ca_pem, &origin, request).await;
        let want = step(theirs.addr(), &theirs_ca, &origin, request).await;
        assert_eq!(got, want, "curl {request:?}: mitm (left), mitmdump (right)");
        statuses.push(got);
    }
    let seen: Vec<(&str, bool)> = statuses
        .iter()
        .map(|s| (s.status.as_str(), s.reached))
        .collect();
    assert_eq!(
        seen,
        [
            ("200", true),
            ("413", false),
            ("200", true),
            ("413", false),
            ("200", true),
            ("502", true),
        ]
    );
    // mitm's page says which limit was hit and how to raise it.
    let page = tokio::process::Command::new("curl")
        .args([
            "--silent",
            "--http1.1",
            "--proxy",
            &format!("http://{}", ours.addr),
        ])
        .args(["--data-binary", &large, &echo])
        .output()
        .await
        .unwrap();
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(
        page.contains("1024 bytes") && page.contains("--body-size-limit"),
        "{page}"
    );
    // HTTP/2 from the client, inside intercepted HTTPS (mitmdump speaks HTTP/2 to a
    // client only when the origin does: only mitm's side is checked here).
    let echo = format!("https://localhost:{}/echo", tls.port());
    let over = format!("https://localhost:{}/bytes/1025", tls.port());
    let mut h2 = Vec::new();
    for request in [
        vec!["--http2", "--data-binary", &small, &echo],
        vec!["--http2", "--data-binary", &large, &echo],
        vec!["--http2", "-H", chunked, "--data-binary", &large, &echo],
        vec!["--http2", &over],
    ] {
        let got = step(ours.addr, &ours.ca_pem, &tls, &request).await;
        h2.push((got.status, got.reached));
    }
    let h2: Vec<(&str, bool)> = h2.iter().map(|(s, r)| (s.as_str(), *r)).collect();
    assert_eq!(
        h2,
        [("200", true), ("413", false), ("413", false), ("502", true)]
    );
    theirs.stop().await;
}

/// `Http::max_body` from Rust, on the wire: a chunked request over it gets `413` and
/// its origin is never dialled; a chunked response over it becomes a `502` with none
/// of its body, and the client connection goes on; one under it passes whole.
#[tokio::test]
async fn max_body_refuses_chunked_bodies_over_it() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    let origin = start_origin().await;
    let host = format!("127.0.0.1:{}", origin.port());
    // `/chunked` is 19 bytes.
    let http = mitm::Http::new().max_body(Some(18));
    let proxy = start_proxy(|b| b.protocols(vec![Arc::new(http)])).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n\
         a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n"
    ))
    .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert!(reply.text().contains("18 bytes"), "{}", reply.text());
    assert_eq!(origin.connections.load(Ordering::SeqCst), 0);

    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!("GET /chunked HTTP/1.1\r\nHost: {host}\r\n\r\n"))
        .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(!reply.text().contains("hello"), "{}", reply.text());
    // The client connection goes on.
    wire.send(format!("GET /bytes/18 HTTP/1.1\r\nHost: {host}\r\n\r\n"))
        .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, pattern(18));

    let http = mitm::Http::new().max_body(Some(19));
    let proxy = start_proxy(|b| b.protocols(vec![Arc::new(http)])).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!("GET /chunked HTTP/1.1\r\nHost: {host}\r\n\r\n"))
        .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), CHUNKED_PARTS.concat());
}
