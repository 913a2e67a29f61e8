//! [`HttpLog`]: requests and responses pretty-printed, framed message by message.

use std::fmt::Write as _;

use async_trait::async_trait;
use bytes::Bytes;

use super::Middleware;
use crate::core::Connection;
use crate::http1::{Event, Framer, RequestKind, Role};

/// Logs each HTTP/1 request and response that crosses the proxy (decrypted, for
/// intercepted TLS) as one block: the head as sent, then the body when it is short
/// text, or its size. Output goes through `tracing` at `info`, target `mitm::http`.
///
/// Messages are framed as they stream past, so a message cut over several chunks, or
/// two messages in one chunk, are each logged once and whole. Bytes are passed on
/// unchanged.
#[derive(Debug, Clone)]
pub struct HttpLog {
    max_body: usize,
}

impl Default for HttpLog {
    fn default() -> Self {
        HttpLog { max_body: 2048 }
    }
}

impl HttpLog {
    /// Shows bodies of at most `bytes` bytes (longer ones are summarised by size).
    /// Default: 2048.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }
}

/// Per-connection state: a framer and the message being collected, per direction.
struct Sides {
    request: Side,
    response: Side,
}

impl Default for Sides {
    fn default() -> Self {
        Sides {
            request: Side::new(Role::Request),
            response: Side::new(Role::Response),
        }
    }
}

struct Side {
    framer: Framer,
    message: Message,
}

impl Side {
    fn new(role: Role) -> Self {
        Side {
            framer: Framer::new(role),
            message: Message::default(),
        }
    }
}

/// The message being collected: its head, the start of its body, its body size.
#[derive(Default)]
struct Message {
    head: Vec<u8>,
    body: Vec<u8>,
    body_len: u64,
}

impl HttpLog {
    /// Frames `data` for one direction and logs every message it completes; with
    /// `finish`, the stream has ended.
    fn observe(&self, conn: &Connection, role: Role, data: &[u8], finish: bool) {
        let mut blocks = Vec::new();
        {
            let mut state = conn.state();
            let sides = state.get_or_default::<Sides>();
            let (side, other) = match role {
                Role::Request => (&mut sides.request, &mut sides.response),
                Role::Response => (&mut sides.response, &mut sides.request),
            };
            let Side { framer, message } = side;
            let mut requests = Vec::new();
            let mut out = |e: Event<'_>| match e {
                Event::Head(h) => {
                    *message = Message::default();
                    message.head.extend_from_slice(h);
                }
                Event::Body(b) => {
                    message.body_len += b.len() as u64;
                    let room = (self.max_body + 1).saturating_sub(message.body.len());
                    message.body.extend_from_slice(&b[..b.len().min(room)]);
                }
                Event::End => {
                    if role == Role::Request {
                        requests.push(Framer::request_kind(&message.head));
                    }
                    blocks.push(self.render(role, message));
                }
            };
            framer.feed(data, &mut out);
            if finish {
                framer.finish(&mut out);
            }
            // The proxy answers CONNECT itself: no response comes from the server.
            for kind in requests.into_iter().filter(|k| *k != RequestKind::Connect) {
                other.framer.expect_response(kind);
            }
        }
        for block in blocks {
            let (from, to) = match role {
                Role::Request => (conn.client.to_string(), conn.server.to_string()),
                Role::Response => (conn.server.to_string(), conn.client.to_string()),
            };
            let what = match role {
                Role::Request => "request",
                Role::Response => "response",
            };
            tracing::info!(target: "mitm::http", "{what} {from} -> {to}\n{block}");
        }
    }

    /// The message as text: its head as sent, then its body or a note of its size.
    fn render(&self, _role: Role, message: &Message) -> String {
        let mut text = String::from_utf8_lossy(&message.head).into_owned();
        let shown = message.body_len as usize <= self.max_body;
        match std::str::from_utf8(&message.body) {
            _ if message.body_len == 0 => {}
            Ok(body) if shown => text.push_str(body),
            _ => {
                let _ = write!(text, "<{} bytes of body>", message.body_len);
            }
        }
        text
    }
}

#[async_trait]
impl Middleware for HttpLog {
    async fn client_data(&self, conn: &Connection, data: Bytes) -> Bytes {
        self.observe(conn, Role::Request, &data, false);
        data
    }

    async fn server_data(&self, conn: &Connection, data: Bytes) -> Bytes {
        self.observe(conn, Role::Response, &data, false);
        data
    }

    async fn server_disconnected(&self, conn: &Connection) {
        // A response delimited by the close of the connection ends here.
        self.observe(conn, Role::Response, &[], true);
    }
}
