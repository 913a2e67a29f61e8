//! [`Subject`]: what a filter looks at in a flow, whether the flow is on its way
//! ([`Live`]: a connection and its [`HttpFlow`], in a hook) or saved (a capture's
//! record).

use std::net::SocketAddr;

use crate::core::Connection;
use crate::http::message::{Body, Headers, HttpFlow, Replay, Request, Response};

/// A request as a filter sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The host the request goes to, without brackets for IPv6.
    pub host: &'a str,
    /// The port the request goes to.
    pub port: u16,
    /// The origin-form target (path and query); `*` for `OPTIONS *`.
    pub path: &'a str,
    /// The header fields.
    pub headers: &'a Headers,
    /// The body as far as it is known (empty when it streams past unseen).
    pub body: &'a [u8],
}

/// A response as a filter sees it.
#[derive(Debug, Clone, Copy)]
pub struct ResponseView<'a> {
    /// The status code.
    pub status: u16,
    /// The header fields.
    pub headers: &'a Headers,
    /// The body as far as it is known (empty when it streams past unseen).
    pub body: &'a [u8],
}

impl<'a> From<&'a Request> for RequestView<'a> {
    /// What a filter sees of `r`: its body only when it is held.
    fn from(r: &'a Request) -> Self {
        RequestView {
            method: &r.method,
            scheme: if r.target.tls { "https" } else { "http" },
            host: &r.target.host,
            port: r.target.port,
            path: &r.path,
            headers: &r.headers,
            body: held(&r.body),
        }
    }
}

impl<'a> From<&'a Response> for ResponseView<'a> {
    /// What a filter sees of `s`: its body only when it is held.
    fn from(s: &'a Response) -> Self {
        ResponseView {
            status: s.status,
            headers: &s.headers,
            body: held(&s.body),
        }
    }
}

/// A flow as a [`Filter`](super::Filter) matches it. Implemented by [`Live`] (a flow
/// in a hook) and by the capture's records, so one filter works on both.
pub trait Subject {
    /// The request.
    fn request(&self) -> RequestView<'_>;
    /// The response, once there is one.
    fn response(&self) -> Option<ResponseView<'_>>;
    /// Whether the flow failed (it has an error).
    fn failed(&self) -> bool;
    /// The client's address.
    fn client(&self) -> Option<SocketAddr>;
    /// The server's address, once connected.
    fn server(&self) -> Option<SocketAddr>;
    /// The flow's mark (`~marked`, `~marker`); empty for none.
    fn marked(&self) -> &str {
        ""
    }
    /// The flow's comment (`~comment`); empty for none.
    fn comment(&self) -> &str {
        ""
    }
    /// Whether, and how, the flow was replayed (`~replay`).
    fn replay(&self) -> Option<Replay> {
        None
    }
    /// Whether the flow became a WebSocket, even with no messages known.
    fn is_websocket(&self) -> bool {
        false
    }
    /// Calls `each` with every WebSocket message known (whether it came from the
    /// client, its payload) until it returns `true`; returns whether one did.
    fn any_message(&self, _each: &mut dyn FnMut(bool, &[u8]) -> bool) -> bool {
        false
    }
}

/// A flow on its way, as a hook has it: filters match it with
/// [`Filter::matches`](super::Filter::matches).
///
/// In a [`request`](crate::HttpHandler::request) hook, a flow has no response yet, so
/// `~s` does not match and `~q` does; its body is seen only when it is held
/// ([`Body::Full`]: a handler's [`body_limit`](crate::HttpHandler::body_limit) asked for
/// it). A flow that is not marked, commented or replayed matches none of those
/// operators (server replay sets [`HttpFlow::is_replay`]).
///
/// ```
/// use mitm::filter::{Filter, Live};
/// use mitm::{async_trait, Connection, HttpFlow, HttpHandler, Verdict};
///
/// /// Tags the requests a filter matches.
/// struct Tag(Filter);
///
/// #[async_trait]
/// impl HttpHandler for Tag {
///     async fn request(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
///         if self.0.matches(&Live::new(conn, flow)) {
///             flow.request.headers.append("x-matched", "1");
///         }
///         Verdict::Continue
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Live<'a> {
    conn: &'a Connection,
    flow: &'a HttpFlow,
}

impl<'a> Live<'a> {
    /// The flow `flow` of the connection `conn`.
    pub fn new(conn: &'a Connection, flow: &'a HttpFlow) -> Self {
        Live { conn, flow }
    }
}

/// The bytes of a body that is held; none of one that streams.
fn held(body: &Body) -> &[u8] {
    body.bytes().map_or(&[], |b| b.as_ref())
}

impl Subject for Live<'_> {
    fn request(&self) -> RequestView<'_> {
        RequestView::from(&self.flow.request)
    }

    fn response(&self) -> Option<ResponseView<'_>> {
        self.flow.response.as_ref().map(ResponseView::from)
    }

    fn failed(&self) -> bool {
        self.flow.error.is_some()
    }

    fn client(&self) -> Option<SocketAddr> {
        self.conn.client.addr
    }

    fn server(&self) -> Option<SocketAddr> {
        self.conn.server.addr
    }

    fn replay(&self) -> Option<Replay> {
        self.flow.is_replay
    }

    fn is_websocket(&self) -> bool {
        self.flow
            .response
            .as_ref()
            .is_some_and(|s| s.status == 101 && s.headers.has_token("upgrade", "websocket"))
    }
}
