//! WebSocket through the proxy, on loopback: `ws://` to a plain origin and `wss://`
//! inside an intercepted `CONNECT`. A message hook rewrites text from the client;
//! binary messages, pings and closes pass as they are.

use crate::common;

use std::sync::{Arc, Mutex};

use common::*;
use futures_util::{SinkExt, StreamExt};
use mitm::HttpHandler;
use mitm::WebSocketMessage;
use mitm::{async_trait, Bytes, Connection, Flow, MessageKind, MessageVerdict};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Turns the text "ping" from clients into "PONG", and records every message it sees.
#[derive(Default)]
struct Shout {
    seen: Mutex<Vec<(Flow, MessageKind, Bytes)>>,
}

#[async_trait]
impl HttpHandler for Shout {
    async fn websocket_message(
        &self,
        _conn: &Connection,
        message: &mut WebSocketMessage,
    ) -> MessageVerdict {
        let record = (message.direction, message.kind, message.payload.clone());
        self.seen.lock().unwrap().push(record);
        if message.direction == Flow::ClientToServer && message.text() == Some("ping") {
            message.payload = Bytes::from_static(b"PONG");
        }
        MessageVerdict::Forward
    }

    fn websocket_message_limit(&self) -> usize {
        1 << 20
    }
}

/// The next message from `ws`, within [`PATIENCE`].
async fn next<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Message {
    tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("no WebSocket message in time")
        .expect("the WebSocket ended")
        .expect("WebSocket error")
}

/// Sends a message, within [`PATIENCE`].
async fn send<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, m: Message) {
    tokio::time::timeout(PATIENCE, ws.send(m))
        .await
        .expect("sending timed out")
        .expect("sending failed");
}

/// Binary payload larger than 64 KiB (a 64-bit frame length), every byte value.
fn binary_payload() -> Vec<u8> {
    (0..70_000u32).map(|i| (i % 256) as u8).collect()
}

/// The conversation every test has with the echo origin: text rewritten by the hook,
/// a fragmented text reassembled for it, binary unchanged, a ping answered, a close
/// completed.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
    send(ws, Message::text("ping")).await;
    assert_eq!(next(ws).await, Message::text("PONG"));

    // The same text in two fragments: the hook sees the whole message.
    let first = Frame::message(Bytes::from_static(b"pi"), OpCode::Data(Data::Text), false);
    let rest = Frame::message(
        Bytes::from_static(b"ng"),
        OpCode::Data(Data::Continue),
        true,
    );
    send(ws, Message::Frame(first)).await;
    send(ws, Message::Frame(rest)).await;
    assert_eq!(next(ws).await, Message::text("PONG"));

    send(ws, Message::text("other text")).await;
    assert_eq!(next(ws).await, Message::text("other text"));

    let binary = binary_payload();
    send(ws, Message::binary(binary.clone())).await;
    match next(ws).await {
        Message::Binary(got) => assert_same(&got, &binary),
        other => panic!("expected the binary echo, got {other:?}"),
    }

    send(ws, Message::Ping(Bytes::from_static(b"are you there"))).await;
    assert_eq!(
        next(ws).await,
        Message::Pong(Bytes::from_static(b"are you there"))
    );

    // Close: the origin's close frame comes back, then the stream ends.
    tokio::time::timeout(PATIENCE, ws.close(None))
        .await
        .expect("closing timed out")
        .expect("closing failed");
    let mut got_close = false;
    let drain = async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(_)) => got_close = true,
                Ok(other) => panic!("unexpected message after close: {other:?}"),
                Err(e) => panic!("WebSocket error while closing: {e}"),
            }
        }
    };
    tokio::time::timeout(PATIENCE, drain)
        .await
        .expect("the close did not complete in time");
    assert!(got_close, "no close frame came back");
}

/// What the hook must have seen after [`converse`]: data messages only, both ways,
/// the client's "ping"s before they were rewritten.
fn assert_hook_saw_messages(shout: &Shout) {
    use Flow::{ClientToServer as Up, ServerToClient as Down};
    use MessageKind::{Binary, Text};
    let binary = Bytes::from(binary_payload());
    let text = |s: &'static str| Bytes::from_static(s.as_bytes());
    let want = vec![
        (Up, Text, text("ping")),
        (Down, Text, text("PONG")),
        (Up, Text, text("ping")),
        (Down, Text, text("PONG")),
        (Up, Text, text("other text")),
        (Down, Text, text("other text")),
        (Up, Binary, binary.clone()),
        (Down, Binary, binary),
    ];
    let seen = shout.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), want.len(), "kinds and directions seen: {:?}", {
        seen.iter()
            .map(|(f, k, p)| (*f, *k, p.len()))
            .collect::<Vec<_>>()
    });
    for (i, (got, want)) in seen.iter().zip(&want).enumerate() {
        assert_eq!((got.0, got.1), (want.0, want.1), "message {i}");
        assert_same(&got.2, &want.2);
    }
}

/// Asserts the origin got one upgrade request for `/chat`, without the compression
/// offer (the proxy removes it so hooks see messages as sent).
fn assert_upgrade_request(origin: &Origin) {
    let seen = origin.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].target, "/chat");
    assert_eq!(seen[0].header("upgrade"), Some("websocket"));
    assert!(
        seen[0].header("sec-websocket-extensions").is_none(),
        "{seen:?}"
    );
}

/// A WebSocket handshake for `url` over `stream`, offering compression.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(url: &str, stream: S) -> WebSocketStream<S> {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits"
            .parse()
            .unwrap(),
    );
    let (ws, response) =
        tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(request, stream))
            .await
            .expect("the WebSocket handshake timed out")
            .expect("the WebSocket handshake failed");
    assert_eq!(response.status(), 101);
    assert!(
        response.headers().get("sec-websocket-extensions").is_none(),
        "{response:?}"
    );
    ws
}

#[tokio::test]
async fn ws_through_the_proxy_rewrites_text_and_passes_binary_ping_and_close() {
    let origin = start_origin().await;
    let shout = Arc::new(Shout::default());
    let proxy = start_proxy(|b| b.http_handler(shout.clone())).await;
    // Raw TCP to the proxy; the upgrade request names the origin in its Host header.
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let url = format!("ws://127.0.0.1:{}/chat", origin.port());
    let mut ws = handshake(&url, tcp).await;
    converse(&mut ws).await;
    assert_hook_saw_messages(&shout);
    assert_upgrade_request(&origin);
}

#[tokio::test]
async fn wss_through_an_intercepted_connect_rewrites_text_and_passes_binary_ping_and_close() {
    let origin = start_tls_origin().await;
    let shout = Arc::new(Shout::default());
    let proxy = start_proxy(|b| b.http_handler(shout.clone())).await;
    let tls = tls_through(&proxy, "localhost", origin.port()).await;
    let url = format!("wss://localhost:{}/chat", origin.port());
    let mut ws = handshake(&url, tls).await;
    converse(&mut ws).await;
    assert_hook_saw_messages(&shout);
    assert_upgrade_request(&origin);
}

#[tokio::test]
async fn ws_messages_are_rewritten_when_data_hooks_also_run() {
    // A middleware that wants the raw bytes too: frames then go through the data
    // hooks before they are parsed.
    let origin = start_origin().await;
    let shout = Arc::new(Shout::default());
    let recorder = Arc::new(Recorder::default());
    let proxy = start_proxy(|b| b.middleware(recorder.clone()).http_handler(shout.clone())).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let url = format!("ws://127.0.0.1:{}/chat", origin.port());
    let mut ws = handshake(&url, tcp).await;
    converse(&mut ws).await;
    assert_hook_saw_messages(&shout);
    let events = recorder.of(1);
    assert!(events.iter().any(|e| e == "server_data"), "{events:?}");
}

/// A WebSocket origin that takes messages of any size and echoes each back.
async fn start_large_echo_origin() -> u16 {
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let config = WebSocketConfig::default()
                    .max_message_size(None)
                    .max_frame_size(None);
                let Ok(mut ws) =
                    tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
                else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Binary(_) | Message::Text(_) = message {
                        if ws.send(message).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_websocket_with_no_message_hook_streams_100_mib_in_little_proxy_memory() {
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    const SIZE: usize = 100 * 1024 * 1024;
    // The proxy is the `mitm` binary, so that its memory is its own; no middleware
    // asks for WebSocket messages.
    let proxy = ChildProxy::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (sent, echoed) = rt.block_on(async {
        let port = start_large_echo_origin().await;
        let tcp = TcpStream::connect(proxy.addr).await.unwrap();
        let url = format!("ws://127.0.0.1:{port}/big");
        let config = WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        let (mut ws, response) = tokio_tungstenite::client_async_with_config(
            url.into_client_request().unwrap(),
            tcp,
            Some(config),
        )
        .await
        .expect("the WebSocket handshake failed");
        assert_eq!(response.status(), 101);
        let payload: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
        let sent = sha256(&payload);
        let big = std::time::Duration::from_secs(120);
        tokio::time::timeout(big, ws.send(Message::binary(payload)))
            .await
            .expect("sending 100 MiB timed out")
            .expect("sending failed");
        let echoed = match tokio::time::timeout(big, ws.next()).await {
            Ok(Some(Ok(Message::Binary(back)))) => {
                assert_eq!(back.len(), SIZE);
                sha256(&back)
            }
            other => panic!("expected the 100 MiB echo, got {other:?}"),
        };
        let _ = ws.close(None).await;
        (sent, echoed)
    });
    assert_eq!(sent, echoed, "the message came back changed");
    let peak = proxy.status_kib("VmHWM");
    eprintln!("proxy peak RSS: {peak} KiB");
    assert!(
        peak < 32 * 1024,
        "the proxy's resident memory peaked at {peak} KiB relaying a 100 MiB message"
    );
}

/// Wants every WebSocket message, up to 1 KiB.
struct SmallMessages;

#[async_trait]
impl HttpHandler for SmallMessages {
    fn websocket_message_limit(&self) -> usize {
        1024
    }
}

#[tokio::test]
async fn a_message_over_the_hooks_limit_closes_the_websocket_with_1009() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b.http_handler(Arc::new(SmallMessages))).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let url = format!("ws://127.0.0.1:{}/chat", origin.port());
    let mut ws = handshake(&url, tcp).await;
    send(&mut ws, Message::text("small enough")).await;
    assert_eq!(next(&mut ws).await, Message::text("small enough"));
    send(&mut ws, Message::binary(vec![7u8; 4096])).await;
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected a close with 1009, got {other:?}"),
    }
}
