//! Relaying a connection after `101 Switching Protocols`.
//!
//! Unless a middleware asks for WebSocket messages
//! ([`HttpHandler::websocket_message_limit`](crate::HttpHandler::websocket_message_limit)),
//! the bytes stream through as they are (through the data hooks if a middleware wants
//! bytes, else copied or spliced), whatever the size of the messages. When one does,
//! frames are parsed both ways, data messages are reassembled from their fragments up
//! to the limit and go through the `websocket_message` hooks, and control frames (ping,
//! pong, close) pass untouched; a message over the limit closes the WebSocket with
//! status 1009 (message too big) both ways.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Notify;

use crate::core::{Connection, Flow};
use crate::engine::context::Context;
use crate::engine::relay::{RelayOptions, Tunnel};
use crate::error::{Error, Result, Side};
use crate::http::settings::Settings;
use crate::http::websocket::{MessageKind, MessageVerdict, WebSocketClose, WebSocketMessage};
use crate::net::io::{eof_ok, read_through, BoxIo};
use crate::wire::websocket::{
    self as codec, Assembled, Assembler, Frame, FrameError, FrameParser, OpCode, Role,
};

/// Close status 1009: a message too big to process (RFC 6455 7.4.1).
const MESSAGE_TOO_BIG: [u8; 2] = 1009u16.to_be_bytes();
/// Close status 1000: normal closure.
const NORMAL: [u8; 2] = 1000u16.to_be_bytes();

/// Relays `client` and `server` both ways until both have closed. `websocket` says the
/// switch was to WebSocket (other protocols are always relayed as bytes). When frames
/// are read (a middleware wants messages), the first close is set in `closed`.
pub(crate) async fn relay(
    cx: &Context,
    settings: &Settings,
    conn: &Connection,
    client: BoxIo,
    server: BoxIo,
    websocket: bool,
    closed: &OnceLock<WebSocketClose>,
) -> Result<()> {
    let limit = cx.chain.websocket_message_limit();
    if !websocket || limit == 0 {
        let opts = RelayOptions {
            buffer_size: settings.buffer_size,
            idle_timeout: None,
            zero_copy: settings.zero_copy,
        };
        return cx.relay_with(conn, Tunnel::new(client, server), opts).await;
    }
    let (cr, cw) = tokio::io::split(client);
    let (sr, sw) = tokio::io::split(server);
    // A side that sent too big a message is told so by the pump that writes to it.
    let close_client = Notify::new();
    let close_server = Notify::new();
    let up = Pump {
        cx,
        conn,
        flow: Flow::ClientToServer,
        limit,
        close_sender: &close_client,
        close_me: &close_server,
        closed,
    };
    let down = Pump {
        cx,
        conn,
        flow: Flow::ServerToClient,
        limit,
        close_sender: &close_server,
        close_me: &close_client,
        closed,
    };
    tokio::try_join!(up.run(cr, sw), down.run(sr, cw)).map(|_| ())
}

/// One direction of a message relay.
struct Pump<'a> {
    cx: &'a Context,
    conn: &'a Connection,
    flow: Flow,
    limit: usize,
    /// Asks the other pump to close the side this one reads from.
    close_sender: &'a Notify,
    /// Told to close the side this one writes to.
    close_me: &'a Notify,
    /// The first close either side made.
    closed: &'a OnceLock<WebSocketClose>,
}

impl Pump<'_> {
    /// Reads frames from `from` and writes them, or the messages the hooks return, to
    /// `to`.
    async fn run(self, mut from: ReadHalf<BoxIo>, mut to: WriteHalf<BoxIo>) -> Result<()> {
        let (sender, from_side, to_side) = match self.flow {
            Flow::ClientToServer => (Role::Client, Side::Client, Side::Server),
            Flow::ServerToClient => (Role::Server, Side::Server, Side::Client),
        };
        let write_err = |source| Error::Io {
            side: to_side,
            source,
        };
        // Frames to the server must be masked; frames to the client must not.
        let mask = self.flow == Flow::ClientToServer;
        let from_client = mask;
        let hooks = self.cx.chain.wants_data();
        let mut parser = FrameParser::new(self.limit);
        let mut assembler = Assembler::new(self.limit);
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut raw = BytesMut::new();
        let mut out = BytesMut::new();
        let data_hooks = self.cx.chain.data_hooks(self.conn, self.flow);
        loop {
            let read = async {
                if !hooks {
                    buf.reserve(16 * 1024);
                    return eof_ok(from.read_buf(&mut buf).await);
                }
                let (n, chunk) = read_through(&mut from, &mut raw, 16 * 1024, &data_hooks).await?;
                buf.extend_from_slice(&chunk);
                Ok(n)
            };
            let n = tokio::select! {
                read = read => read.map_err(|source| Error::Io {
                    side: from_side,
                    source,
                })?,
                () = self.close_me.notified() => {
                    close(&mut to, mask, MESSAGE_TOO_BIG).await;
                    return Ok(());
                }
            };
            if n == 0 {
                // A side gone without a close frame (after one, this sets nothing).
                let _ = self.closed.set(WebSocketClose::abnormal(from_client));
                let _ = to.shutdown().await;
                return Ok(());
            }
            out.clear();
            let mut closing = None;
            loop {
                let frame = match parser.parse(&mut buf, sender) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => {
                        closing = Some(self.refuse(e, from_side)?);
                        break;
                    }
                };
                let assembled = match assembler.push(frame) {
                    Ok(a) => a,
                    Err(e) => {
                        closing = Some(self.refuse(e, from_side)?);
                        break;
                    }
                };
                match assembled {
                    Assembled::Pending => {}
                    Assembled::Control(frame) => {
                        if frame.opcode == OpCode::Close && self.closed.get().is_none() {
                            let _ = self
                                .closed
                                .set(WebSocketClose::of_frame(&frame.payload, from_client));
                        }
                        codec::encode(&frame, mask, &mut out);
                    }
                    Assembled::Message { text, rsv, payload } => {
                        let kind = if text {
                            MessageKind::Text
                        } else {
                            MessageKind::Binary
                        };
                        let mut message = WebSocketMessage {
                            direction: self.flow,
                            kind,
                            payload,
                        };
                        let verdict = self
                            .cx
                            .chain
                            .websocket_message(self.conn, &mut message)
                            .await;
                        match verdict {
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
                            MessageVerdict::Close => {
                                closing = Some(NORMAL);
                                break;
                            }
                        }
                    }
                }
            }
            if !out.is_empty() {
                to.write_all(&out).await.map_err(write_err)?;
                to.flush().await.map_err(write_err)?;
            }
            if let Some(status) = closing {
                close(&mut to, mask, status).await;
                return Ok(());
            }
        }
    }

    /// A frame the relay will not pass: too big a message closes the WebSocket with
    /// 1009 both ways (the status to send on is returned); a framing violation fails
    /// the connection.
    fn refuse(&self, e: FrameError, from: Side) -> Result<[u8; 2]> {
        match e {
            FrameError::TooLarge { .. } | FrameError::MessageTooLarge { .. } => {
                tracing::info!(limit = self.limit, direction = ?self.flow, "WebSocket message over the limit; closing with 1009");
                self.close_sender.notify_one();
                Ok(MESSAGE_TOO_BIG)
            }
            other => Err(Error::Io {
                side: from,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, other),
            }),
        }
    }
}

/// Sends a close frame with `status` and ends the stream.
async fn close(to: &mut WriteHalf<BoxIo>, mask: bool, status: [u8; 2]) {
    let mut bye = BytesMut::new();
    codec::encode(
        &Frame::new(OpCode::Close, Bytes::copy_from_slice(&status)),
        mask,
        &mut bye,
    );
    // The peer may be gone already; the relay ends either way.
    let _ = to.write_all(&bye).await;
    let _ = to.shutdown().await;
}
