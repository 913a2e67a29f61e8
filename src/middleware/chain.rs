//! The hooks of one server, in order, and the helpers that run one hook on all of them.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use super::{DataHooks, HttpHandler, Interception, Middleware, Payload, Router, TunnelVerdict};
use crate::core::{Connection, Flow, Target};
use crate::http::message::{HttpFlow, Verdict};
use crate::http::websocket::{MessageVerdict, WebSocketEnd, WebSocketMessage};
use crate::net::io::Transform;
use crate::upstream::route::Route;
use crate::wire::client_hello::ClientHello;

/// Everything a server calls, each list in the order it was added.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    middlewares: Vec<Arc<dyn Middleware>>,
    handlers: Vec<Arc<dyn HttpHandler>>,
    routers: Vec<Arc<dyn Router>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("middlewares", &self.middlewares.len())
            .field("handlers", &self.handlers.len())
            .field("routers", &self.routers.len())
            .finish()
    }
}

impl Hooks {
    /// No hooks at all.
    pub(crate) fn new() -> Self {
        Hooks::default()
    }

    /// Adds a [`Middleware`] after those added before.
    pub(crate) fn middleware(mut self, middleware: Arc<dyn Middleware>) -> Self {
        self.middlewares.push(middleware);
        self
    }

    /// Adds an [`HttpHandler`] after those added before.
    pub(crate) fn http_handler(mut self, handler: Arc<dyn HttpHandler>) -> Self {
        self.handlers.push(handler);
        self
    }

    /// Adds a [`Router`] after those added before.
    pub(crate) fn router(mut self, router: Arc<dyn Router>) -> Self {
        self.routers.push(router);
        self
    }

    pub(crate) fn set_middlewares(&mut self, middlewares: Vec<Arc<dyn Middleware>>) {
        self.middlewares = middlewares;
    }
}

/// The hooks of one server, frozen, with helpers that run a hook on all of them.
#[derive(Clone, Default)]
pub(crate) struct Chain(Arc<Hooks>);

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chain({:?})", self.0)
    }
}

impl Chain {
    pub(crate) fn new(hooks: Hooks) -> Self {
        Chain(Arc::new(hooks))
    }

    pub(crate) async fn mitm_started(&self, addr: SocketAddr) {
        for m in &self.0.middlewares {
            m.mitm_started(addr).await;
        }
    }

    pub(crate) async fn client_connected(&self, conn: &Connection) {
        for m in &self.0.middlewares {
            m.client_connected(conn).await;
        }
    }

    pub(crate) async fn server_connected(&self, conn: &Connection) {
        for m in &self.0.middlewares {
            m.server_connected(conn).await;
        }
    }

    pub(crate) async fn client_disconnected(&self, conn: &Connection) {
        for m in &self.0.middlewares {
            m.client_disconnected(conn).await;
        }
    }

    pub(crate) async fn server_disconnected(&self, conn: &Connection) {
        for m in &self.0.middlewares {
            m.server_disconnected(conn).await;
        }
    }

    /// Passes `data` through the data hooks of every middleware that has them on, for
    /// `flow`, in order. A hook that returns nothing ends the chain: there is nothing
    /// left to show the others.
    pub(crate) async fn data(&self, conn: &Connection, flow: Flow, mut data: Bytes) -> Bytes {
        for m in &self.0.middlewares {
            if m.data_hooks() == DataHooks::Off {
                continue;
            }
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

    /// Whether any middleware has its data hooks on.
    pub(crate) fn wants_data(&self) -> bool {
        self.0
            .middlewares
            .iter()
            .any(|m| m.data_hooks() == DataHooks::On)
    }

    /// The data hooks of one direction of `conn`, as the readers below the engine take
    /// them.
    pub(crate) fn data_hooks<'a>(&'a self, conn: &'a Connection, flow: Flow) -> DataTransform<'a> {
        DataTransform {
            chain: self,
            conn,
            flow,
        }
    }

    /// Intercepts unless some router says to pass through.
    pub(crate) async fn should_intercept(
        &self,
        conn: &Connection,
        server_name: Option<&str>,
    ) -> Interception {
        for r in &self.0.routers {
            if r.should_intercept(conn, server_name).await == Interception::PassThrough {
                return Interception::PassThrough;
            }
        }
        Interception::Intercept
    }

    /// Intercepts a TLS client's connection unless some router says to pass it through.
    pub(crate) async fn tls_clienthello(
        &self,
        conn: &Connection,
        hello: &ClientHello,
    ) -> Interception {
        for r in &self.0.routers {
            if r.tls_clienthello(conn, hello).await == Interception::PassThrough {
                return Interception::PassThrough;
            }
        }
        Interception::Intercept
    }

    /// Raw when some router says so.
    pub(crate) async fn payload(&self, conn: &Connection, server_name: Option<&str>) -> Payload {
        for r in &self.0.routers {
            if r.payload(conn, server_name).await == Payload::Raw {
                return Payload::Raw;
            }
        }
        Payload::Detect
    }

    /// The first route a router chooses for `target`, if any.
    pub(crate) async fn route(&self, conn: &Connection, target: &Target) -> Option<Route> {
        for r in &self.0.routers {
            if let Some(route) = r.route(conn, target).await {
                return Some(route);
            }
        }
        None
    }

    /// Opens unless some router refuses.
    pub(crate) async fn tunnel(&self, conn: &Connection, target: &Target) -> TunnelVerdict {
        for r in &self.0.routers {
            if let refused @ TunnelVerdict::Refuse(_) = r.tunnel(conn, target).await {
                return refused;
            }
        }
        TunnelVerdict::Open
    }

    /// Runs the request hooks in order until one does not continue.
    pub(crate) async fn request(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        for h in &self.0.handlers {
            match h.request(conn, flow).await {
                Verdict::Continue => {}
                other => return other,
            }
        }
        Verdict::Continue
    }

    /// Runs the response hooks in order; a `Respond` replaces the response and the
    /// remaining hooks see the new one.
    pub(crate) async fn response(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        for h in &self.0.handlers {
            match h.response(conn, flow).await {
                Verdict::Continue => {}
                Verdict::Respond(r) => flow.response = Some(r),
                Verdict::Kill => return Verdict::Kill,
            }
        }
        Verdict::Continue
    }

    pub(crate) async fn flow_finished(&self, conn: &Connection, flow: &HttpFlow) {
        for h in &self.0.handlers {
            h.flow_finished(conn, flow).await;
        }
    }

    /// Runs the WebSocket message hooks in order until one does not forward.
    pub(crate) async fn websocket_message(
        &self,
        conn: &Connection,
        message: &mut WebSocketMessage,
    ) -> MessageVerdict {
        for h in &self.0.handlers {
            match h.websocket_message(conn, message).await {
                MessageVerdict::Forward => {}
                other => return other,
            }
        }
        MessageVerdict::Forward
    }

    pub(crate) async fn websocket_end(&self, conn: &Connection, end: &WebSocketEnd) {
        for h in &self.0.handlers {
            h.websocket_end(conn, end).await;
        }
    }

    /// The largest body any handler wants to see whole.
    pub(crate) fn body_limit(&self) -> usize {
        self.0
            .handlers
            .iter()
            .map(|h| h.body_limit())
            .max()
            .unwrap_or(0)
    }

    /// The most first bytes of a streamed body any handler wants kept.
    pub(crate) fn streamed_body_prefix(&self) -> usize {
        self.0
            .handlers
            .iter()
            .map(|h| h.streamed_body_prefix())
            .max()
            .unwrap_or(0)
    }

    /// The largest WebSocket message any handler wants to see (0: none).
    pub(crate) fn websocket_message_limit(&self) -> usize {
        self.0
            .handlers
            .iter()
            .map(|h| h.websocket_message_limit())
            .max()
            .unwrap_or(0)
    }
}

/// The data hooks of one direction of one connection: what the relay, the HTTP/1
/// reader and the WebSocket relay pass every chunk they read through.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DataTransform<'a> {
    chain: &'a Chain,
    conn: &'a Connection,
    flow: Flow,
}

impl Transform for DataTransform<'_> {
    async fn apply(&self, data: Bytes) -> Bytes {
        self.chain.data(self.conn, self.flow, data).await
    }

    fn aborted(&self) -> bool {
        self.conn.is_aborted()
    }
}
