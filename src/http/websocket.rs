//! WebSocket, the wire format: the messages hooks see ([`WebSocketMessage`]) and the
//! RFC 6455 frame codec (`codec`: parser, encoder, fragment assembler).
//!
//! Relaying a WebSocket after its `101 Switching Protocols` is the exchange's work
//! (`crate::engine::exchange::upgrade`): frames stream through untouched unless a middleware
//! asks for messages with
//! [`HttpHandler::websocket_message_limit`](crate::HttpHandler::websocket_message_limit).

use bytes::Bytes;

use crate::core::Flow;

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

/// How a WebSocket relay ended, for
/// [`HttpHandler::websocket_end`](crate::middleware::HttpHandler::websocket_end).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebSocketEnd {
    /// When the relay ended.
    pub at: std::time::SystemTime,
    /// Why it broke off, if it did (a side's connection failed, or a frame broke the
    /// protocol); `None` when both sides closed.
    pub error: Option<std::sync::Arc<crate::Error>>,
}
