//! [`Middleware`]: the original's seven hooks, on the life of a connection and its
//! bytes.

use std::net::SocketAddr;

use async_trait::async_trait;
use bytes::Bytes;

use crate::core::Connection;

/// Whether a middleware's [`client_data`](Middleware::client_data) and
/// [`server_data`](Middleware::server_data) see the bytes the proxy relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataHooks {
    /// Every chunk read from either side goes through them (plaintext: TLS handshakes
    /// and HTTP/2 frames never do), starting with the client's first bytes. Relays
    /// then copy through the proxy's memory instead of splicing socket to socket.
    On,
    /// They are never called: the proxy may relay untouched bytes with `splice(2)`.
    /// For middlewares that only watch the connection's events.
    Off,
}

/// The hooks of the original `mitm` package: a connection's events and the bytes it
/// carries, in both directions, whatever protocol it speaks. Every hook has a default
/// that does nothing (the data hooks pass bytes through unchanged); the one method
/// without a default, [`data_hooks`](Self::data_hooks), says whether the data hooks run
/// at all, so that a middleware can neither lose its data hooks nor turn off the
/// proxy's zero-copy relay by forgetting an override.
///
/// HTTP messages (requests, responses, WebSocket messages) have their own trait,
/// [`HttpHandler`](super::HttpHandler), and where connections go has
/// [`Router`](super::Router): a type implements those it needs.
///
/// ```
/// use mitm::middleware::{DataHooks, Middleware};
/// use mitm::{async_trait, Bytes, Connection};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// /// Counts the bytes servers send, over all connections.
/// #[derive(Default)]
/// struct Count(AtomicU64);
///
/// #[async_trait]
/// impl Middleware for Count {
///     fn data_hooks(&self) -> DataHooks {
///         DataHooks::On
///     }
///
///     async fn server_data(&self, _conn: &Connection, data: Bytes) -> Bytes {
///         self.0.fetch_add(data.len() as u64, Ordering::Relaxed);
///         data
///     }
/// }
/// ```
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// Whether [`client_data`](Self::client_data) and
    /// [`server_data`](Self::server_data) are called. Asked when a connection starts
    /// to relay; a middleware may answer differently over time (e.g. only while a log
    /// level is on).
    fn data_hooks(&self) -> DataHooks;

    /// The server is listening on `addr`. Called once per listener, before any client
    /// is accepted. Default: does nothing.
    async fn mitm_started(&self, _addr: SocketAddr) {}

    /// A client connected. `conn.client` is set; no protocol has been chosen and no
    /// server is connected. Default: does nothing.
    async fn client_connected(&self, _conn: &Connection) {}

    /// The upstream server is connected: `conn.server`, `conn.protocol`, `conn.target`
    /// and `conn.tls` are set. For an intercepted `CONNECT`, both TLS handshakes are
    /// done. May fire several times on one client connection, once per origin its
    /// requests go to in turn (see the [module docs](super)). Default: does nothing.
    async fn server_connected(&self, _conn: &Connection) {}

    /// Bytes from the client, on their way to the server (with
    /// [`DataHooks::On`] only). The first call carries the bytes the protocol was
    /// recognised by (before a server is connected); later calls carry each chunk read
    /// from the client. Return the bytes to send on: changed, longer, shorter, or empty
    /// to send nothing. Default: returns `data` unchanged.
    async fn client_data(&self, _conn: &Connection, data: Bytes) -> Bytes {
        data
    }

    /// Bytes from the server, on their way to the client; as
    /// [`client_data`](Self::client_data) in the other direction. Default: returns
    /// `data` unchanged.
    async fn server_data(&self, _conn: &Connection, data: Bytes) -> Bytes {
        data
    }

    /// The client side is closed (or the connection ended for any other reason): the
    /// last hook of a connection, after its `server_disconnected`. Default: does
    /// nothing.
    async fn client_disconnected(&self, _conn: &Connection) {}

    /// The connection to the server announced by
    /// [`server_connected`](Self::server_connected) is over for this client: when the
    /// client's next request goes to another origin (before that origin's
    /// `server_connected`), or at the end, before
    /// [`client_disconnected`](Self::client_disconnected) (the original's order). Fires
    /// only for a server that was announced. Default: does nothing.
    async fn server_disconnected(&self, _conn: &Connection) {}
}
