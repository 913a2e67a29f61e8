//! [`HttpHandler`]: hooks on HTTP messages, whatever the HTTP version, and on the
//! WebSocket messages that follow an upgrade.

use async_trait::async_trait;

use crate::core::Connection;
use crate::http::message::{HttpFlow, Verdict};
use crate::http::websocket::{MessageVerdict, WebSocketEnd, WebSocketMessage};

/// Hooks on whole messages: requests and responses of every HTTP version (HTTP/1.x and
/// HTTP/2, plain or inside an intercepted tunnel, from every mode), and WebSocket
/// messages. Every method has a default that does nothing, and none of them turns off
/// the proxy's zero-copy relay: bodies stream past unless a handler asks to see them
/// whole ([`body_limit`](Self::body_limit)), and WebSocket frames stream through unless
/// one asks for messages ([`websocket_message_limit`](Self::websocket_message_limit)).
///
/// ```
/// use mitm::middleware::HttpHandler;
/// use mitm::{async_trait, Connection, HttpFlow, Response, Verdict};
///
/// /// Answers every request for a `/ads/` path itself.
/// struct NoAds;
///
/// #[async_trait]
/// impl HttpHandler for NoAds {
///     async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
///         if flow.request.path.starts_with("/ads/") {
///             return Verdict::Respond(Response::new(204));
///         }
///         Verdict::Continue
///     }
/// }
/// ```
#[async_trait]
pub trait HttpHandler: Send + Sync + 'static {
    /// An HTTP request is about to go to its origin: `flow.request` is set,
    /// `flow.response` is not. Change the request in place (method, target, path,
    /// headers, body), or return [`Verdict::Respond`] to answer it here without
    /// contacting any origin, or [`Verdict::Kill`] to drop the client. The body is
    /// [`Body::Full`](crate::Body::Full) when it fits every handler's
    /// [`body_limit`](Self::body_limit), otherwise it streams past.
    ///
    /// A `CONNECT` comes here too (method `CONNECT`, no body). Answering it with
    /// `Respond` answers the requests the client then sends through the tunnel with that
    /// response (the tunnel's TLS is intercepted for it, so the client reads it); to
    /// refuse the tunnel itself, use [`Router::tunnel`](super::Router::tunnel) or
    /// `Kill`. Every request this hook sees later gets its
    /// [`response`](Self::response) (for a `CONNECT`: `200 Connection established`, or
    /// the error page when its target cannot be reached) and its
    /// [`flow_finished`](Self::flow_finished). Default: continues.
    async fn request(&self, _conn: &Connection, _flow: &mut HttpFlow) -> Verdict {
        Verdict::Continue
    }

    /// The response head (and, within the body limit, its body) arrived and is about
    /// to go to the client: change `flow.response` in place, replace it with
    /// [`Verdict::Respond`], or drop the client with [`Verdict::Kill`]. Also called for
    /// responses a request hook or the proxy itself made: for the proxy's error pages
    /// (`502` when the origin cannot be reached, `504` on a timeout, …),
    /// [`flow.error`](HttpFlow::error) holds the failure, so they can be told from an
    /// origin's own. Default: continues.
    async fn response(&self, _conn: &Connection, _flow: &mut HttpFlow) -> Verdict {
        Verdict::Continue
    }

    /// The exchange is over: the response has been passed to the client, or the
    /// exchange broke off ([`flow.error`](HttpFlow::error) says why), and
    /// `flow.timings` and the body sizes are final. Fires exactly once for every
    /// request the [`request`](Self::request) hook saw. Default: does nothing.
    async fn flow_finished(&self, _conn: &Connection, _flow: &HttpFlow) {}

    /// A WebSocket data message (text or binary, reassembled from its fragments) is on
    /// its way in `message.direction`. Change it in place, or drop it, or close the
    /// WebSocket. Ping, pong and close frames pass without this hook.
    ///
    /// Called only when some handler of the server asks for messages with
    /// [`websocket_message_limit`](Self::websocket_message_limit); otherwise frames
    /// stream through untouched. Default: forwards.
    async fn websocket_message(
        &self,
        _conn: &Connection,
        _message: &mut WebSocketMessage,
    ) -> MessageVerdict {
        MessageVerdict::Forward
    }

    /// The WebSocket that a `101` response of this connection switched to is over
    /// (both sides closed, or the relay broke off: `end.error` says why). Its
    /// [`flow_finished`](Self::flow_finished) fired at the switch, before its messages.
    /// Called for every WebSocket, whether or not messages were asked for. Default: does
    /// nothing.
    async fn websocket_end(&self, _conn: &Connection, _end: &WebSocketEnd) {}

    /// The largest body, in bytes, this handler wants to see whole in
    /// [`request`](Self::request) and [`response`](Self::response). Bodies up to the
    /// largest limit of all handlers are held in memory before the hooks run; larger
    /// ones stream past as [`Body::Streaming`](crate::Body::Streaming), keeping memory
    /// bounded. Asked for every message. Default: 0 (bodies always stream).
    fn body_limit(&self) -> usize {
        0
    }

    /// How many first bytes of a body that streams past (one not held whole for the
    /// hooks: see [`body_limit`](Self::body_limit)) this handler wants to find in
    /// [`HttpFlow::request_body_prefix`] and [`HttpFlow::response_body_prefix`] when
    /// [`flow_finished`](Self::flow_finished) fires. The bytes are copied as they pass,
    /// without holding the body back; the proxy keeps the largest prefix any handler
    /// asks for. A capture uses this to save the start of a body it cannot keep whole.
    /// Default: 0 (none).
    fn streamed_body_prefix(&self) -> usize {
        0
    }

    /// The largest WebSocket message, in bytes, this handler wants to see whole in
    /// [`websocket_message`](Self::websocket_message). When every handler says 0,
    /// WebSocket frames stream through untouched (compression may then be negotiated
    /// end to end), whatever their size. Otherwise messages are reassembled up to the
    /// largest limit of all handlers, compression is not offered (so that hooks see
    /// messages as sent), and a message over the limit closes the WebSocket with status
    /// 1009 (message too big) both ways. Default: 0 (no messages).
    fn websocket_message_limit(&self) -> usize {
        0
    }
}
