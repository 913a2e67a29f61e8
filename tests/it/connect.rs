//! `CONNECT` as users of mature proxies expect it: the target is reached before the
//! tunnel is granted (a closed port gets a 502 at once), a server that speaks first is
//! heard, and the exchange is a flow like any other for the hooks.

use crate::common;

use std::sync::{Arc, Mutex};

use common::*;
use mitm::HttpHandler;
use mitm::{async_trait, Connection, HttpFlow, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A service that speaks first, as SSH and SMTP do: a banner on connect, then it
/// echoes what it reads.
async fn start_banner_service(banner: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if s.write_all(banner).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_server_that_speaks_first_is_heard_through_a_tunnel() {
    let banner: &[u8] = b"SSH-2.0-OpenSSH_9.6 test banner\r\n";
    let port = start_banner_service(banner).await;
    let proxy = start_proxy(|b| b).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n"))
        .await;
    assert_eq!(wire.response_to("CONNECT").await.status, 200);
    let (mut tcp, rest) = wire.into_parts();
    // The client says nothing: the banner must come anyway.
    let mut got = rest;
    while got.len() < banner.len() {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .expect("the banner never came through the tunnel")
            .unwrap();
        assert!(n > 0, "the tunnel closed before the banner");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, banner);
    // Then it is an ordinary tunnel, both ways.
    for line in [&b"hello\n"[..], b"second line\n"] {
        tcp.write_all(line).await.unwrap();
        let mut back = vec![0u8; line.len()];
        tokio::time::timeout(PATIENCE, tcp.read_exact(&mut back))
            .await
            .expect("no echo")
            .unwrap();
        assert_eq!(back, line);
    }
}

#[tokio::test]
async fn a_connect_to_a_closed_port_is_answered_502_before_any_tunnel() {
    let proxy = start_proxy(|b| b).await;
    let port = refused_port();
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    ))
    .await;
    let reply = wire.response_to("CONNECT").await;
    assert_eq!(reply.status, 502, "{reply:?}");
    let text = reply.text();
    assert!(
        text.contains(&format!(
            "could not connect to the upstream server 127.0.0.1:{port}"
        )),
        "{text}"
    );
    assert!(text.contains("refused"), "{text}");
    assert_eq!(reply.header("connection"), Some("close"));
    // No tunnel: the proxy closes after the page.
    assert!(wire.read_to_end().await.is_empty());
}

/// Records what the message hooks see of each flow.
#[derive(Default)]
struct Flows {
    seen: Mutex<Vec<String>>,
}

#[async_trait]
impl HttpHandler for Flows {
    async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        let line = format!("request {} {}", flow.request.method, flow.request.target);
        self.seen.lock().unwrap().push(line);
        Verdict::Continue
    }

    async fn response(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        let status = flow.response.as_ref().map_or(0, |r| r.status);
        let error = flow.error.is_some();
        let line = format!("response {} {status} error={error}", flow.request.method);
        self.seen.lock().unwrap().push(line);
        Verdict::Continue
    }

    async fn flow_finished(&self, _conn: &Connection, flow: &HttpFlow) {
        let status = flow.response.as_ref().map_or(0, |r| r.status);
        let line = format!("finished {} {status}", flow.request.method);
        self.seen.lock().unwrap().push(line);
    }
}

#[tokio::test]
async fn a_connect_is_a_flow_with_its_response_and_its_end() {
    let origin = start_tls_origin().await;
    let flows = Arc::new(Flows::default());
    let proxy = start_proxy(|b| b.http_handler(flows.clone())).await;
    let port = origin.port();

    let mut tls = Wire::new(tls_through(&proxy, "localhost", port).await);
    tls.send(format!(
        "GET /inside HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert_eq!(tls.response().await.status, 200);
    drop(tls);

    // A CONNECT that cannot reach its target: the hooks see the proxy's own 502.
    let closed = refused_port();
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!("CONNECT 127.0.0.1:{closed} HTTP/1.1\r\n\r\n"))
        .await;
    assert_eq!(wire.response_to("CONNECT").await.status, 502);
    drop(wire);

    let seen = flows.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            format!("request CONNECT localhost:{port}"),
            "response CONNECT 200 error=false".into(),
            "finished CONNECT 200".into(),
            format!("request GET localhost:{port}"),
            "response GET 200 error=false".into(),
            "finished GET 200".into(),
            format!("request CONNECT 127.0.0.1:{closed}"),
            "response CONNECT 502 error=true".into(),
            "finished CONNECT 502".into(),
        ]
    );
}

/// Refuses every tunnel from its `response` hook.
struct NoTunnels;

#[async_trait]
impl HttpHandler for NoTunnels {
    async fn response(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if flow.request.method == "CONNECT" {
            let refusal = mitm::Response::new(403).with_body("text/plain", "no tunnels here\n");
            return Verdict::Respond(refusal);
        }
        Verdict::Continue
    }
}

#[tokio::test]
async fn a_response_hook_can_turn_a_tunnel_down() {
    let origin = start_tls_origin().await;
    let proxy = start_proxy(|b| b.http_handler(Arc::new(NoTunnels))).await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "CONNECT localhost:{} HTTP/1.1\r\n\r\n",
        origin.port()
    ))
    .await;
    let reply = wire.response_to("CONNECT").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.text(), "no tunnels here\n");
    assert!(wire.read_to_end().await.is_empty());
}

#[tokio::test]
async fn plain_http_inside_a_tunnel_goes_through_the_message_hooks() {
    let origin = start_origin().await;
    let flows = Arc::new(Flows::default());
    let proxy = start_proxy(|b| b.http_handler(flows.clone())).await;
    let port = origin.port();

    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!(
        "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    ))
    .await;
    assert_eq!(wire.response_to("CONNECT").await.status, 200);
    // Two requests on the tunnel, kept alive; the Host names some other place, but the
    // tunnel's target is where they go.
    for path in ["/one", "/two"] {
        wire.send(format!(
            "GET {path} HTTP/1.1\r\nHost: elsewhere.localhost\r\n\r\n"
        ))
        .await;
        let reply = wire.response_to("GET").await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            String::from_utf8_lossy(&reply.body),
            format!("hello from origin: GET {path}")
        );
    }
    drop(wire);
    let seen = origin.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("host"), Some("elsewhere.localhost"));
    let seen = flows.seen.lock().unwrap().clone();
    assert_eq!(
        seen[3..],
        [
            format!("request GET 127.0.0.1:{port}"),
            "response GET 200 error=false".into(),
            "finished GET 200".into(),
            format!("request GET 127.0.0.1:{port}"),
            "response GET 200 error=false".into(),
            "finished GET 200".into(),
        ],
        "{seen:?}"
    );
}

/// Answers requests for one host itself, `CONNECT` included, as a blocking policy
/// written the simple way would.
struct Blocked(&'static str);

#[async_trait]
impl HttpHandler for Blocked {
    async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if flow.request.target.host != self.0 {
            return Verdict::Continue;
        }
        let page = mitm::Response::new(403).with_body("text/plain", "blocked by policy\n");
        Verdict::Respond(page)
    }
}

/// A request hook that answers an HTTPS host's `CONNECT` gets its answer read by the
/// client: the tunnel is opened (nothing is connected upstream), its TLS intercepted,
/// and each request in it answered with the page, through the hooks.
#[tokio::test]
async fn a_connect_answered_by_a_request_hook_is_read_inside_the_tunnel() {
    let flows = Arc::new(Flows::default());
    let proxy = start_proxy(|b| {
        b.http_handler(flows.clone())
            .http_handler(Arc::new(Blocked("blocked.localhost")))
    })
    .await;
    // Nothing listens there: the answer cannot come from an origin.
    let port = refused_port();
    let client = client_via(&proxy);
    for _ in 0..2 {
        let reply = client
            .get(format!("https://blocked.localhost:{port}/page"))
            .send()
            .await
            .expect("the client never read the page");
        assert_eq!(reply.status().as_u16(), 403);
        assert_eq!(reply.text().await.unwrap(), "blocked by policy\n");
    }
    let seen = flows.seen.lock().unwrap().clone();
    assert_eq!(
        &seen[..6],
        [
            format!("request CONNECT blocked.localhost:{port}"),
            "response CONNECT 200 error=false".into(),
            "finished CONNECT 200".into(),
            format!("request GET blocked.localhost:{port}"),
            "response GET 403 error=false".into(),
            "finished GET 403".into(),
        ],
        "{seen:#?}"
    );
}

/// Opens tunnels to one port only.
struct OnlyPort(u16);

#[async_trait]
impl mitm::Router for OnlyPort {
    async fn tunnel(&self, _conn: &Connection, target: &mitm::Target) -> mitm::TunnelVerdict {
        if target.port == self.0 {
            mitm::TunnelVerdict::Open
        } else {
            mitm::TunnelVerdict::Refuse(format!("only port {} is open", self.0))
        }
    }
}

/// A router refuses a `CONNECT` before anything is connected: the client reads a 403
/// saying why, the hooks see it as a flow with its error, and the target never sees a
/// connection.
#[tokio::test]
async fn a_router_refuses_a_connect_before_connecting() {
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = target.local_addr().unwrap().port();
    let flows = Arc::new(Flows::default());
    let proxy = start_proxy(|b| {
        b.router(Arc::new(OnlyPort(443)))
            .http_handler(flows.clone())
    })
    .await;
    let mut wire = Wire::connect(proxy.addr).await;
    wire.send(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n"))
        .await;
    let reply = wire.response_to("CONNECT").await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(reply.text().contains("only port 443 is open"), "{reply:?}");
    // Had the proxy connected before answering, the connection would be waiting here.
    let accepted = tokio::time::timeout(std::time::Duration::ZERO, target.accept()).await;
    assert!(accepted.is_err(), "the proxy connected a refused target");
    let seen = flows.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            format!("request CONNECT 127.0.0.1:{port}"),
            "response CONNECT 403 error=true".into(),
            "finished CONNECT 403".into(),
        ]
    );
}

/// An HTTP/1.1 client inside a tunnel whose origin fails TLS (its certificate names
/// another host) reads its 502 as the answer to its request, made by the exchange: the
/// hooks see it with the error, and a capture keeps it.
#[tokio::test]
async fn an_http1_client_in_a_tunnel_whose_origin_fails_tls_gets_its_502_through_the_hooks() {
    let origin = start_tls_origin_for("other.localhost").await;
    let port = origin.port();
    let flows = Arc::new(Flows::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failed.flows");
    let capture = Arc::new(
        mitm::capture::Capture::builder()
            .sink(mitm::capture::create(&path).unwrap())
            .start(),
    );
    let proxy = start_proxy(|b| b.http_handler(flows.clone()).http_handler(capture.clone())).await;

    let mut tls = Wire::new(tls_through_offering(&proxy, "localhost", port, &[b"http/1.1"]).await);
    tls.send(format!(
        "GET /inside HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
    ))
    .await;
    let reply = tls.response().await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(reply.text().contains("TLS"), "{reply:?}");
    drop(tls);

    tokio::time::timeout(PATIENCE, capture.wait_written(2))
        .await
        .expect("timed out waiting for the capture");
    let seen = flows.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            format!("request CONNECT localhost:{port}"),
            "response CONNECT 200 error=false".into(),
            "finished CONNECT 200".into(),
            format!("request GET localhost:{port}"),
            "response GET 502 error=true".into(),
            "finished GET 502".into(),
        ]
    );
    let saved = mitm::capture::read(&path).unwrap();
    let get = saved
        .iter()
        .find(|r| r.request.method == "GET")
        .expect("the GET is in the capture");
    // The 502 was the proxy's page: the capture keeps the flow as mitmproxy does, its
    // error and no response.
    assert_eq!(get.response.as_ref().map(|r| r.status), None);
    assert!(get.error.is_some(), "the capture keeps why it failed");
}
