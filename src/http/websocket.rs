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
    /// How it was closed: the first close frame either side sent, or the first side
    /// that went away without one (status 1006); `None` when the relay did not read
    /// frames (no middleware asked for messages) or neither side closed.
    pub close: Option<WebSocketClose>,
}

/// How a WebSocket was closed, as mitmproxy records it (`close_code`, `close_reason`,
/// `closed_by_client`, `timestamp_end`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebSocketClose {
    /// The status code of the close frame: 1005 for a close frame without one, 1006
    /// for a side that went away without a close frame (RFC 6455 7.4.1).
    pub code: u16,
    /// The reason the close frame gave (empty without one).
    pub reason: String,
    /// Whether the client closed (else the server).
    pub by_client: bool,
    /// When the proxy saw it.
    pub at: std::time::SystemTime,
}

impl WebSocketClose {
    /// Status 1005: a close frame without a status code.
    pub const NO_STATUS: u16 = 1005;
    /// Status 1006: the connection ended without a close frame.
    pub const ABNORMAL: u16 = 1006;

    /// The close that a close frame's `payload` says, sent by the client or not.
    pub(crate) fn of_frame(payload: &[u8], by_client: bool) -> Self {
        let (code, reason) = match payload {
            [hi, lo, reason @ ..] => (
                u16::from_be_bytes([*hi, *lo]),
                String::from_utf8_lossy(reason).into_owned(),
            ),
            _ => (Self::NO_STATUS, String::new()),
        };
        WebSocketClose {
            code,
            reason,
            by_client,
            at: std::time::SystemTime::now(),
        }
    }

    /// A close as a capture file recorded it.
    pub fn recorded(code: u16, reason: String, by_client: bool, at: std::time::SystemTime) -> Self {
        WebSocketClose {
            code,
            reason,
            by_client,
            at,
        }
    }

    /// A side that went away without a close frame.
    pub(crate) fn abnormal(by_client: bool) -> Self {
        WebSocketClose {
            code: Self::ABNORMAL,
            reason: String::new(),
            by_client,
            at: std::time::SystemTime::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_frames_give_their_code_and_reason() {
        let c = WebSocketClose::of_frame(b"\x03\xe8bye", true);
        assert_eq!(
            (c.code, c.reason.as_str(), c.by_client),
            (1000, "bye", true)
        );
        let c = WebSocketClose::of_frame(b"", false);
        assert_eq!((c.code, c.reason.as_str()), (1005, ""));
        assert_eq!(WebSocketClose::abnormal(false).code, 1006);
    }
}
