//! Bodies in captures: a body up to the save limit is kept whole, a larger one keeps its
//! first bytes (marked truncated, with its real size), whether it streams over HTTP/1
//! or HTTP/2, and the capture does not hold bodies back from the client; an HTTPS flow
//! keeps what its TLS settled.

use crate::common;

use std::sync::{Arc, Mutex};

use mitm::capture::{Capture, Record, Sink};

use common::*;

/// Keeps the records in memory.
#[derive(Clone, Default)]
struct Kept(Arc<Mutex<Vec<Record>>>);

impl Sink for Kept {
    fn write(&mut self, record: &Record) -> std::io::Result<()> {
        self.0.lock().unwrap().push(record.clone());
        Ok(())
    }
}

const LIMIT: usize = 1000;

async fn capturing() -> (TestProxy, Arc<Capture>, Kept) {
    let kept = Kept::default();
    let builder = Capture::builder()
        .sink(Box::new(kept.clone()))
        .body_limit(LIMIT);
    let (proxy, capture) = start_capturing(builder).await;
    (proxy, capture, kept)
}

#[tokio::test]
async fn large_bodies_keep_their_first_bytes_and_small_ones_all() {
    let origin = start_origin().await;
    let (proxy, capture, kept) = capturing().await;
    let client = client_via(&proxy);
    let base = format!("http://127.0.0.1:{}", origin.port());

    let big = pattern(200_000);
    let echoed = client
        .post(format!("{base}/echo"))
        .body(big.clone())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_same(&echoed, &big);
    let small = client
        .get(format!("{base}/bytes/500"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(small.len(), 500);

    tokio::time::timeout(PATIENCE, capture.wait_written(2))
        .await
        .expect("the flows were never written");
    let records = kept.0.lock().unwrap().clone();
    let post = &records[0];
    let request = &post.request.body;
    assert_eq!(
        (&request.data[..], request.size, request.truncated),
        (&big[..LIMIT], 200_000, true)
    );
    let response = &post.response.as_ref().unwrap().body;
    assert_eq!(
        (&response.data[..], response.size, response.truncated),
        (&big[..LIMIT], 200_000, true)
    );
    let get = records[1].response.as_ref().unwrap();
    assert_eq!(
        (&get.body.data[..], get.body.size, get.body.truncated),
        (&pattern(500)[..], 500, false)
    );
}

#[tokio::test]
async fn http2_bodies_keep_their_first_bytes_too() {
    if !require_tool(
        std::process::Command::new("curl")
            .arg("--version")
            .output()
            .is_ok(),
        "curl",
        "apt-get install curl",
    ) {
        return;
    }
    let origin = start_tls_origin().await;
    let (proxy, capture, kept) = capturing().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, proxy.ca.cert_pem()).unwrap();
    let upload = dir.path().join("upload.bin");
    std::fs::write(&upload, pattern(100_000)).unwrap();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--http2", "-o", "/dev/null"])
        .args(["-w", "%{http_version} %{size_download}", "-x", &proxy.url()])
        .arg("--cacert")
        .arg(&ca_file)
        .arg("--data-binary")
        .arg(format!("@{}", upload.display()))
        .arg(format!("https://localhost:{}/echo", origin.port()))
        .output()
        .await
        .expect("cannot run curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 100000");

    // The CONNECT, then the POST inside it.
    tokio::time::timeout(PATIENCE, capture.wait_written(2))
        .await
        .expect("the flows were never written");
    let records = kept.0.lock().unwrap().clone();
    let record = records
        .iter()
        .find(|r| r.request.method == "POST")
        .expect("no POST flow");
    // What the client's TLS with the proxy settled.
    assert_eq!(record.tls.sni.as_deref(), Some("localhost"));
    assert_eq!(record.tls.alpn.as_deref(), Some("h2"));
    assert!(
        record
            .tls
            .version
            .as_deref()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{:?}",
        record.tls
    );
    let want = pattern(LIMIT);
    let request = &record.request.body;
    assert_eq!(
        (&request.data[..], request.size, request.truncated),
        (&want[..], 100_000, true)
    );
    let response = &record.response.as_ref().unwrap().body;
    assert_eq!(
        (&response.data[..], response.size, response.truncated),
        (&want[..], 100_000, true)
    );
}

/// The capture keeps bodies as they pass: a response whose body never ends still
/// reaches the client (its head and first bytes), which holding it for the capture
/// would prevent.
#[tokio::test]
async fn the_capture_does_not_hold_a_streaming_response_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                    transfer-encoding: chunked\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(b"c\r\ndata: first\n\r\n").await.unwrap();
        // The stream stays open until the test has seen the first event.
        let _ = done_rx.await;
        let _ = s.write_all(b"0\r\n\r\n").await;
    });
    let (proxy, capture, kept) = capturing().await;
    let mut response = client_via(&proxy)
        .get(format!("http://127.0.0.1:{port}/events"))
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(PATIENCE, response.chunk())
        .await
        .expect("the first event was held back")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: first\n");
    done_tx.send(()).unwrap();
    while response.chunk().await.unwrap().is_some() {}
    tokio::time::timeout(PATIENCE, capture.wait_written(1))
        .await
        .expect("the flow was never written");
    let records = kept.0.lock().unwrap().clone();
    let body = &records[0].response.as_ref().unwrap().body;
    assert_eq!(
        (&body.data[..], body.truncated),
        (&b"data: first\n"[..], false)
    );
}
