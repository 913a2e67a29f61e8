//! WebSocket relaying after a `101 Switching Protocols`: frames are parsed in both
//! directions, data messages (reassembled from their fragments) go through the
//! [`Middleware::websocket_message`](crate::Middleware::websocket_message) hooks, and
//! control frames (ping, pong, close) pass through untouched.
//!
//! The upgrade request loses its `Sec-WebSocket-Extensions` on the way (see
//! `crate::h1`), so no compression is negotiated and hooks see messages as sent.

pub(crate) mod codec;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use self::codec::{Assembled, Assembler, Frame, FrameParser, OpCode, Role};
use crate::core::{Connection, Flow};
use crate::error::{Error, Result, Side};
use crate::h1::body::end_is_eof;
use crate::io::BoxIo;
use crate::protocol::{Context, Tunnel};

/// Largest frame accepted.
const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Largest message (all its fragments) accepted.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// The kind of a WebSocket data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
}

/// One WebSocket data message, as hooks see it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebSocketMessage {
    /// Which way it travels.
    pub direction: Flow,
    /// Text or binary. A hook may change it.
    pub kind: MessageKind,
    /// The payload (reassembled from fragments). A hook may replace it.
    pub payload: Bytes,
}

impl WebSocketMessage {
    /// The payload as text, when it is valid UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }
}

/// What a WebSocket message hook decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageVerdict {
    /// Send the message on (as the hook left it).
    Forward,
    /// Do not send it; the connection goes on.
    Drop,
    /// Close the WebSocket connection.
    Close,
}

/// Relays a WebSocket connection until both sides have closed.
pub(crate) async fn relay(cx: &Context, conn: &Connection, tunnel: Tunnel) -> Result<()> {
    let (cr, cw) = tokio::io::split(tunnel.client);
    let (sr, sw) = tokio::io::split(tunnel.server);
    let up = pump(cx, conn, Flow::ClientToServer, cr, sw);
    let down = pump(cx, conn, Flow::ServerToClient, sr, cw);
    tokio::try_join!(up, down).map(|_| ())
}

/// Reads frames from one side and writes them, or the messages the hooks return, to
/// the other.
async fn pump(
    cx: &Context,
    conn: &Connection,
    flow: Flow,
    mut from: ReadHalf<BoxIo>,
    mut to: WriteHalf<BoxIo>,
) -> Result<()> {
    let (sender, from_side, to_side) = match flow {
        Flow::ClientToServer => (Role::Client, Side::Client, Side::Server),
        Flow::ServerToClient => (Role::Server, Side::Server, Side::Client),
    };
    // Frames to the server must be masked; frames to the client must not.
    let mask = flow == Flow::ClientToServer;
    let hooks = cx.chain.wants_data();
    let mut parser = FrameParser::new(MAX_FRAME);
    let mut assembler = Assembler::new(MAX_MESSAGE);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut raw = BytesMut::new();
    let mut out = BytesMut::new();
    loop {
        let n = if hooks {
            raw.reserve(16 * 1024);
            let n = end_is_eof(from.read_buf(&mut raw).await).map_err(|source| Error::Io {
                side: from_side,
                source,
            })?;
            let chunk = cx.chain.data(conn, flow, raw.split().freeze()).await;
            buf.extend_from_slice(&chunk);
            n
        } else {
            buf.reserve(16 * 1024);
            end_is_eof(from.read_buf(&mut buf).await).map_err(|source| Error::Io {
                side: from_side,
                source,
            })?
        };
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        out.clear();
        let mut close = false;
        while let Some(frame) = parser
            .parse(&mut buf, sender)
            .map_err(protocol_error(from_side))?
        {
            let assembled = assembler.push(frame).map_err(protocol_error(from_side))?;
            match assembled {
                Assembled::Pending => {}
                Assembled::Control(frame) => codec::encode(&frame, mask, &mut out),
                Assembled::Message { text, rsv, payload } => {
                    let mut message = WebSocketMessage {
                        direction: flow,
                        kind: if text {
                            MessageKind::Text
                        } else {
                            MessageKind::Binary
                        },
                        payload,
                    };
                    match cx.chain.websocket_message(conn, &mut message).await {
                        MessageVerdict::Forward => {
                            let opcode = match message.kind {
                                MessageKind::Text => OpCode::Text,
                                MessageKind::Binary => OpCode::Binary,
                            };
                            let mut frame = Frame::new(opcode, message.payload);
                            frame.rsv = rsv;
                            codec::encode(&frame, mask, &mut out);
                        }
                        MessageVerdict::Drop => {}
                        MessageVerdict::Close => close = true,
                    }
                }
            }
        }
        if !out.is_empty() {
            let sent = match to.write_all(&out).await {
                Ok(()) => to.flush().await,
                Err(e) => Err(e),
            };
            sent.map_err(|source| Error::Io {
                side: to_side,
                source,
            })?;
        }
        if close {
            let mut bye = BytesMut::new();
            // 1000: normal closure.
            codec::encode(
                &Frame::new(OpCode::Close, Bytes::from_static(&[0x03, 0xe8])),
                mask,
                &mut bye,
            );
            let _ = to.write_all(&bye).await;
            let _ = to.shutdown().await;
            return Ok(());
        }
    }
}

/// A framing violation by one side, as an error of that side.
fn protocol_error(side: Side) -> impl Fn(codec::FrameError) -> Error {
    move |e| Error::Io {
        side,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    }
}
