//! Requests the proxy sends itself: a `Sender` with no listener obeys the HTTP settings
//! it was built with and goes through the hooks; a running server's handle knows its
//! listeners and its CA's file, and sends through the server with ids from the same
//! count as its clients'.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mitm::{async_trait, Connection, Http, HttpFlow, HttpHandler, Listener, Mitm, Request};

/// Records each finished flow: its connection id and what it got.
#[derive(Default)]
struct Finished(Mutex<Vec<(u64, String)>>);

#[async_trait]
impl HttpHandler for Finished {
    async fn flow_finished(&self, conn: &Connection, flow: &HttpFlow) {
        let status = flow.response.as_ref().map_or(0, |r| r.status);
        let line = format!("{} {} {status}", flow.request.method, flow.request.path);
        self.0.lock().unwrap().push((conn.id, line));
    }
}

#[tokio::test]
async fn a_sender_with_no_listener_goes_through_the_hooks() {
    let origin = start_origin().await;
    let finished = Arc::new(Finished::default());
    let sender = Mitm::builder()
        .certificate_authority(Arc::new(mitm::CertificateAuthority::generate().unwrap()))
        .http_handler(finished.clone())
        .upstream_ca_file(origin_ca_file())
        .sender()
        .await
        .unwrap();
    let url = format!("http://127.0.0.1:{}/sent", origin.port());
    let response = sender
        .send(Request::new("GET", &url).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body.bytes().map(|b| b.to_vec()),
        Some(b"hello from origin: GET /sent".to_vec())
    );
    assert_eq!(
        finished.0.lock().unwrap().clone(),
        [(1, "GET /sent 200".to_string())]
    );
}

/// A response timeout of 300 ms set on the builder's `Http` is the sender's: a silent
/// origin fails the request after it, with the typed error (the default would wait
/// 120 s, past this test's patience).
#[tokio::test]
async fn a_sender_obeys_the_response_timeout_it_was_built_with() {
    let silent = start_silent_origin().await;
    let limit = Duration::from_millis(300);
    let sender = Mitm::builder()
        .certificate_authority(Arc::new(mitm::CertificateAuthority::generate().unwrap()))
        .middlewares(vec![])
        .http(Http::new().response_timeout(limit))
        .sender()
        .await
        .unwrap();
    let url = format!("http://127.0.0.1:{}/never", silent.port());
    let started = Instant::now();
    let sent = tokio::time::timeout(PATIENCE, sender.send(Request::new("GET", &url).unwrap()))
        .await
        .expect("the sender ignored its response timeout");
    let waited = started.elapsed();
    match sent {
        Err(mitm::Error::ResponseTimeout { after, .. }) => assert_eq!(after, limit),
        other => panic!("expected a response timeout, got {other:?}"),
    }
    assert!(waited >= limit, "gave up after {waited:?}");
}

/// The handle of a running server names every listener and the CA file, and its sender
/// goes through the server's hooks with a connection id none of its clients has.
#[tokio::test]
async fn the_handle_knows_its_listeners_and_ca_and_sends_through_the_server() {
    let origin = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let finished = Arc::new(Finished::default());
    let http = || Arc::new(Http::new()) as Arc<dyn mitm::Protocol>;
    // A CA loaded by the embedder and given to the builder still names its file.
    let ca = Arc::new(mitm::CertificateAuthority::init(dir.path()).unwrap());
    let handle = Mitm::builder()
        .certificate_authority(ca)
        .http_handler(finished.clone())
        .listener(Listener::new("one", vec![http()]).at("127.0.0.1", 0))
        .listener(Listener::new("two", vec![http()]).at("127.0.0.1", 0))
        .bind()
        .await
        .unwrap()
        .spawn();
    let listeners = handle.listeners().to_vec();
    assert_eq!(
        listeners
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["one", "two"]
    );
    assert_eq!(handle.local_addr(), listeners[0].addr);
    assert_eq!(
        handle.ca_cert_path(),
        Some(dir.path().join(mitm::tls::ca::CA_CERT_FILE).as_path())
    );
    // A client of each listener, then the handle's sender.
    for listener in &listeners {
        let mut wire = Wire::connect(listener.addr).await;
        wire.send(format!(
            "GET http://127.0.0.1:{port}/{name} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n",
            port = origin.port(),
            name = listener.name
        ))
        .await;
        assert_eq!(wire.response().await.status, 200);
    }
    let url = format!("http://127.0.0.1:{}/sender", origin.port());
    let sent = handle
        .sender()
        .send(Request::new("GET", &url).unwrap())
        .await;
    assert_eq!(sent.unwrap().status, 200);
    handle.shutdown().await.unwrap();

    let mut seen = finished.0.lock().unwrap().clone();
    seen.sort();
    let lines: Vec<&str> = seen.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(lines, ["GET /one 200", "GET /two 200", "GET /sender 200"]);
    let mut ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "connection ids repeat: {seen:?}");
}
