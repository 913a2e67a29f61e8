//! The [`Middleware`] trait: hooks called at each event of a proxied connection.
//!
//! # The life of a connection, as hooks see it
//!
//! 1. [`mitm_started`](Middleware::mitm_started): once per server, when it listens.
//! 2. [`client_connected`](Middleware::client_connected): a client's TCP connection is
//!    accepted; only `conn.client` is known.
//! 3. [`client_data`](Middleware::client_data) with the client's *first bytes* (those a
//!    protocol recognised, e.g. the `CONNECT` request), before any server is connected.
//! 4. [`server_connected`](Middleware::server_connected): the protocol reached the
//!    upstream (and finished TLS on both sides for an intercepted `CONNECT`).
//! 5. [`client_data`](Middleware::client_data) / [`server_data`](Middleware::server_data)
//!    for every chunk read, in each direction, as it arrives: the bytes of every
//!    protocol, HTTP/1 heads and bodies included (`conn.protocol` tells which protocol
//!    speaks). Bytes are plaintext: TLS handshakes never reach the hooks, and neither
//!    do HTTP/2 connections (binary frames, not something a hook could edit).
//!    For HTTP, the message hooks run in between:
//!    [`request`](Middleware::request), [`response`](Middleware::response),
//!    [`flow_finished`](Middleware::flow_finished), and
//!    [`websocket_message`](Middleware::websocket_message) after an upgrade.
//! 6. [`client_disconnected`](Middleware::client_disconnected), then
//!    [`server_disconnected`](Middleware::server_disconnected) if a server was
//!    connected. They run however the connection ended, errors included.
//!
//! One client connection may reach several servers over its life: a keep-alive HTTP/1
//! client may send each request to another origin. Each time the origin changes,
//! `server_disconnected` fires for the old one and `server_connected` for the new one
//! (`conn.server` then names it). An HTTP/2 client's streams run at once and may go to
//! several origins at once: there, the server hooks fire only for the tunnel's own
//! upstream.
//!
//! Middlewares run in the order they were added to the server. For the data hooks, the
//! bytes one returns are what the next one receives, and what the last one returns is
//! what is sent.
//!
//! # State
//!
//! One middleware value serves every connection at once, so hooks take `&self`. Keep
//! per-connection data in [`Connection::state`], never in a field of the middleware.

mod http_log;
mod ignore;
mod log;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::core::{Connection, Flow, Target};
use crate::http::message::{HttpFlow, Verdict};
use crate::http::websocket::{MessageVerdict, WebSocketMessage};
use crate::net::io::Transform;
use crate::upstream::route::Route;

pub use self::http_log::HttpLog;
pub use self::ignore::IgnoreHosts;
pub use self::log::Log;

/// Whether the proxy decrypts a TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Interception {
    /// Terminate TLS with a leaf of the proxy's CA and see the traffic.
    Intercept,
    /// Relay the encrypted bytes untouched: the client sees the origin's own
    /// certificate (for pinned apps, or hosts that must stay private).
    PassThrough,
}

/// Event hooks for every proxied connection. Every method has a default that does
/// nothing (the data hooks pass bytes through unchanged), so implement only what you
/// need.
///
/// ```
/// use mitm::{async_trait, Bytes, Connection, Middleware};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// /// Counts the bytes servers send, over all connections.
/// #[derive(Default)]
/// struct Count(AtomicU64);
///
/// #[async_trait]
/// impl Middleware for Count {
///     async fn server_data(&self, _conn: &Connection, data: Bytes) -> Bytes {
///         self.0.fetch_add(data.len() as u64, Ordering::Relaxed);
///         data
///     }
/// }
/// ```
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// The server is listening on `addr`. Called once, before any client is accepted.
    /// Default: does nothing.
    async fn mitm_started(&self, _addr: SocketAddr) {}

    /// A client connected. `conn.client` is set; no protocol has been chosen and no
    /// server is connected. Default: does nothing.
    async fn client_connected(&self, _conn: &Connection) {}

    /// The upstream server is connected: `conn.server`, `conn.protocol`, `conn.target`
    /// and `conn.tls` are set. For an intercepted `CONNECT`, both TLS handshakes are
    /// done. May fire several times on one client connection, once per origin its
    /// requests go to in turn (see the [module docs](self)). Default: does nothing.
    async fn server_connected(&self, _conn: &Connection) {}

    /// Bytes from the client, on their way to the server. The first call carries the
    /// bytes the protocol was recognised by (before a server is connected); later calls
    /// carry each chunk read from the client. Return the bytes to send on: changed,
    /// longer, shorter, or empty to send nothing. Default: returns `data` unchanged.
    async fn client_data(&self, _conn: &Connection, data: Bytes) -> Bytes {
        data
    }

    /// Bytes from the server, on their way to the client; as
    /// [`client_data`](Self::client_data) in the other direction. Default: returns
    /// `data` unchanged.
    async fn server_data(&self, _conn: &Connection, data: Bytes) -> Bytes {
        data
    }

    /// The client side is closed (or the connection ended for any other reason).
    /// Default: does nothing.
    async fn client_disconnected(&self, _conn: &Connection) {}

    /// The connection to the server announced by
    /// [`server_connected`](Self::server_connected) is over for this client: when the
    /// client's next request goes to another origin (before that origin's
    /// `server_connected`), or at the end, after
    /// [`client_disconnected`](Self::client_disconnected). Fires only for a server that
    /// was announced. Default: does nothing.
    async fn server_disconnected(&self, _conn: &Connection) {}

    /// A client started TLS inside a `CONNECT` tunnel to `conn.target`, naming
    /// `server_name` by SNI (if it did). Return [`Interception::PassThrough`] to relay
    /// it without decrypting; the first middleware that does wins. Default: intercepts.
    async fn should_intercept(
        &self,
        _conn: &Connection,
        _server_name: Option<&str>,
    ) -> Interception {
        Interception::Intercept
    }

    /// Chooses how a connection to `target` leaves the proxy: [`Route::Direct`], or
    /// through an upstream proxy (HTTP, HTTPS or SOCKS5). Asked for each HTTP request
    /// after its [`request`](Self::request) hooks (so `target` is where they sent it),
    /// for each `CONNECT` and SOCKS5 tunnel before it is answered, and for whatever
    /// else reaches an origin. The first middleware that returns `Some` wins; `None`
    /// everywhere leaves the listener's route (direct, or its `upstream:` mode's proxy).
    /// Connections are pooled per route, so two routes never share one. Default: `None`.
    ///
    /// ```
    /// use mitm::{async_trait, Connection, Middleware, Route, Target};
    ///
    /// /// Sends `*.onion` through Tor's SOCKS port, the rest as the listener says.
    /// struct Onion(Route);
    ///
    /// #[async_trait]
    /// impl Middleware for Onion {
    ///     async fn route(&self, _conn: &Connection, target: &Target) -> Option<Route> {
    ///         target.host.ends_with(".onion").then(|| self.0.clone())
    ///     }
    /// }
    /// let tor = Onion("socks5://127.0.0.1:9050".parse().unwrap());
    /// ```
    async fn route(&self, _conn: &Connection, _target: &Target) -> Option<Route> {
        None
    }

    /// An HTTP request is about to go to its origin: `flow.request` is set,
    /// `flow.response` is not. Change the request in place (method, target, path,
    /// headers, body), or return [`Verdict::Respond`] to answer it here without
    /// contacting any origin, or [`Verdict::Kill`] to drop the client. The body is
    /// [`Body::Full`](crate::Body::Full) when it fits every middleware's
    /// [`body_limit`](Self::body_limit), otherwise it streams past.
    ///
    /// A `CONNECT` comes here too (method `CONNECT`, no body): refusing it with
    /// `Respond` keeps the tunnel shut. Every request this hook sees later gets its
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
    /// Called only when some middleware of the server asks for messages with
    /// [`websocket_message_limit`](Self::websocket_message_limit); otherwise frames
    /// stream through untouched. Default: forwards.
    async fn websocket_message(
        &self,
        _conn: &Connection,
        _message: &mut WebSocketMessage,
    ) -> MessageVerdict {
        MessageVerdict::Forward
    }

    /// The largest body, in bytes, this middleware wants to see whole in
    /// [`request`](Self::request) and [`response`](Self::response). Bodies up to the
    /// largest limit of all middlewares are held in memory before the hooks run;
    /// larger ones stream past as [`Body::Streaming`](crate::Body::Streaming), keeping
    /// memory bounded. Default: 0 (bodies always stream).
    fn body_limit(&self) -> usize {
        0
    }

    /// How many first bytes of a body that streams past (one not held whole for the
    /// hooks: see [`body_limit`](Self::body_limit)) this middleware wants to find in
    /// [`HttpFlow::request_body_prefix`] and [`HttpFlow::response_body_prefix`] when
    /// [`flow_finished`](Self::flow_finished) fires. The bytes are copied as they pass,
    /// without holding the body back; the proxy keeps the largest prefix any middleware
    /// asks for. A capture uses this to save the start of a body it cannot keep whole.
    /// Default: 0 (none).
    fn streamed_body_prefix(&self) -> usize {
        0
    }

    /// The largest WebSocket message, in bytes, this middleware wants to see whole in
    /// [`websocket_message`](Self::websocket_message). When every middleware says 0,
    /// WebSocket frames stream through untouched (compression may then be negotiated
    /// end to end), whatever their size. Otherwise messages are reassembled up to the
    /// largest limit of all middlewares, compression is not offered (so that hooks see
    /// messages as sent), and a message over the limit closes the WebSocket with status
    /// 1009 (message too big) both ways. Default: 0 (no messages).
    fn websocket_message_limit(&self) -> usize {
        0
    }

    /// Whether this middleware wants the relayed bytes, i.e. overrides
    /// [`client_data`](Self::client_data) or [`server_data`](Self::server_data).
    ///
    /// When no middleware of a server wants them, connections are relayed by a plain
    /// copy loop that never calls the data hooks, which is markedly faster. Asked once
    /// per connection, when relaying starts (the first-bytes call of `client_data`
    /// happens regardless). Default: `true`, so a data hook is never skipped by
    /// mistake; return `false` from middlewares that only watch events.
    fn wants_data(&self) -> bool {
        true
    }
}

/// The middlewares of one server, in order, with helpers that run a hook on all of them.
#[derive(Clone, Default)]
pub(crate) struct Chain(Arc<[Arc<dyn Middleware>]>);

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chain({} middlewares)", self.0.len())
    }
}

impl Chain {
    pub(crate) fn new(list: Vec<Arc<dyn Middleware>>) -> Self {
        Chain(list.into())
    }

    pub(crate) async fn mitm_started(&self, addr: SocketAddr) {
        for m in self.0.iter() {
            m.mitm_started(addr).await;
        }
    }

    pub(crate) async fn client_connected(&self, conn: &Connection) {
        for m in self.0.iter() {
            m.client_connected(conn).await;
        }
    }

    pub(crate) async fn server_connected(&self, conn: &Connection) {
        for m in self.0.iter() {
            m.server_connected(conn).await;
        }
    }

    pub(crate) async fn client_disconnected(&self, conn: &Connection) {
        for m in self.0.iter() {
            m.client_disconnected(conn).await;
        }
    }

    pub(crate) async fn server_disconnected(&self, conn: &Connection) {
        for m in self.0.iter() {
            m.server_disconnected(conn).await;
        }
    }

    /// Passes `data` through every middleware's data hook for `flow`, in order. A hook
    /// that returns nothing ends the chain: there is nothing left to show the others.
    pub(crate) async fn data(&self, conn: &Connection, flow: Flow, mut data: Bytes) -> Bytes {
        for m in self.0.iter() {
            data = match flow {
                Flow::ClientToServer => m.client_data(conn, data).await,
                Flow::ServerToClient => m.server_data(conn, data).await,
            };
            if data.is_empty() {
                break;
            }
        }
        data
    }

    /// Intercepts unless some middleware says to pass through.
    pub(crate) async fn should_intercept(
        &self,
        conn: &Connection,
        server_name: Option<&str>,
    ) -> Interception {
        for m in self.0.iter() {
            if m.should_intercept(conn, server_name).await == Interception::PassThrough {
                return Interception::PassThrough;
            }
        }
        Interception::Intercept
    }

    /// The first route a middleware chooses for `target`, if any.
    pub(crate) async fn route(&self, conn: &Connection, target: &Target) -> Option<Route> {
        for m in self.0.iter() {
            if let Some(route) = m.route(conn, target).await {
                return Some(route);
            }
        }
        None
    }

    /// Runs the request hooks in order until one does not continue.
    pub(crate) async fn request(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        for m in self.0.iter() {
            match m.request(conn, flow).await {
                Verdict::Continue => {}
                other => return other,
            }
        }
        Verdict::Continue
    }

    /// Runs the response hooks in order; a `Respond` replaces the response and the
    /// remaining hooks see the new one.
    pub(crate) async fn response(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        for m in self.0.iter() {
            match m.response(conn, flow).await {
                Verdict::Continue => {}
                Verdict::Respond(r) => flow.response = Some(r),
                Verdict::Kill => return Verdict::Kill,
            }
        }
        Verdict::Continue
    }

    pub(crate) async fn flow_finished(&self, conn: &Connection, flow: &HttpFlow) {
        for m in self.0.iter() {
            m.flow_finished(conn, flow).await;
        }
    }

    /// Runs the WebSocket message hooks in order until one does not forward.
    pub(crate) async fn websocket_message(
        &self,
        conn: &Connection,
        message: &mut WebSocketMessage,
    ) -> MessageVerdict {
        for m in self.0.iter() {
            match m.websocket_message(conn, message).await {
                MessageVerdict::Forward => {}
                other => return other,
            }
        }
        MessageVerdict::Forward
    }

    /// The largest body any middleware wants to see whole.
    pub(crate) fn body_limit(&self) -> usize {
        self.0.iter().map(|m| m.body_limit()).max().unwrap_or(0)
    }

    /// The most first bytes of a streamed body any middleware wants kept.
    pub(crate) fn streamed_body_prefix(&self) -> usize {
        self.0
            .iter()
            .map(|m| m.streamed_body_prefix())
            .max()
            .unwrap_or(0)
    }

    /// The largest WebSocket message any middleware wants to see (0: none).
    pub(crate) fn websocket_message_limit(&self) -> usize {
        self.0
            .iter()
            .map(|m| m.websocket_message_limit())
            .max()
            .unwrap_or(0)
    }

    /// Whether any middleware wants the relayed bytes.
    pub(crate) fn wants_data(&self) -> bool {
        self.0.iter().any(|m| m.wants_data())
    }

    /// The data hooks of one direction of `conn`, as the readers below the engine take
    /// them.
    pub(crate) fn data_hooks<'a>(&'a self, conn: &'a Connection, flow: Flow) -> DataHooks<'a> {
        DataHooks {
            chain: self,
            conn,
            flow,
        }
    }
}

/// The data hooks of one direction of one connection: what the relay, the HTTP/1
/// reader and the WebSocket relay pass every chunk they read through.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DataHooks<'a> {
    chain: &'a Chain,
    conn: &'a Connection,
    flow: Flow,
}

impl Transform for DataHooks<'_> {
    async fn apply(&self, data: Bytes) -> Bytes {
        self.chain.data(self.conn, self.flow, data).await
    }
}
