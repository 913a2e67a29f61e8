//! [`Router`]: where a connection goes, whether it may go there, and whether its TLS is
//! opened.

use async_trait::async_trait;

use crate::core::{Connection, Target};
use crate::upstream::route::Route;
use crate::wire::client_hello::ClientHello;

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

/// What the proxy makes of the bytes inside a tunnel (inside TLS, when it is
/// intercepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload {
    /// Serve HTTP when the client speaks it (requests through the hooks, flows), and
    /// relay anything else as it is.
    Detect,
    /// Relay the bytes as they are, without parsing HTTP (mitmproxy's `tcp_hosts`):
    /// no flows, only the data hooks. TLS is still intercepted, the origin being
    /// offered the client's own ALPN list and the client given the origin's pick.
    Raw,
}

/// Whether a tunnel may be opened to its target.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TunnelVerdict {
    /// Connect the target.
    Open,
    /// Refuse before anything is connected, saying why (shown in the log, and on the
    /// page an HTTP `CONNECT` is answered with: `403 Forbidden`). A SOCKS5 client is
    /// told "connection not allowed by ruleset"; a transparent client's connection is
    /// closed.
    Refuse(String),
}

/// Decisions about connections before they are made: the route to an origin, whether a
/// tunnel may open, and whether its TLS is intercepted. Every method has a default that
/// leaves the decision to the listener and the proxy's settings. The first router that
/// decides wins, in the order they were added.
///
/// ```
/// use mitm::middleware::{Router, TunnelVerdict};
/// use mitm::{async_trait, Connection, Target};
///
/// /// Only port 443 may be tunnelled to.
/// struct HttpsOnly;
///
/// #[async_trait]
/// impl Router for HttpsOnly {
///     async fn tunnel(&self, _conn: &Connection, target: &Target) -> TunnelVerdict {
///         if target.port == 443 {
///             TunnelVerdict::Open
///         } else {
///             TunnelVerdict::Refuse(format!("port {} is not allowed", target.port))
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait Router: Send + Sync + 'static {
    /// Chooses how a connection to `target` leaves the proxy: [`Route::Direct`], or
    /// through an upstream proxy (HTTP, HTTPS or SOCKS5). Asked for each HTTP request
    /// after its [`request`](super::HttpHandler::request) hooks (so `target` is where
    /// they sent it), for each `CONNECT` and SOCKS5 tunnel before it is answered, and
    /// for whatever else reaches an origin. `None` everywhere leaves the listener's
    /// route (direct, or its `upstream:` mode's proxy). Connections are pooled per
    /// route, so two routes never share one. Default: `None`.
    ///
    /// ```
    /// use mitm::middleware::Router;
    /// use mitm::{async_trait, Connection, Route, Target};
    ///
    /// /// Sends `*.onion` through Tor's SOCKS port, the rest as the listener says.
    /// struct Onion(Route);
    ///
    /// #[async_trait]
    /// impl Router for Onion {
    ///     async fn route(&self, _conn: &Connection, target: &Target) -> Option<Route> {
    ///         target.host.ends_with(".onion").then(|| self.0.clone())
    ///     }
    /// }
    /// let tor = Onion("socks5://127.0.0.1:9050".parse().unwrap());
    /// ```
    async fn route(&self, _conn: &Connection, _target: &Target) -> Option<Route> {
        None
    }

    /// A tunnel to `target` is about to be connected: an HTTP `CONNECT`, a SOCKS5
    /// `CONNECT`, or a transparent connection's original destination. Return
    /// [`TunnelVerdict::Refuse`] to refuse it before anything is connected. Default:
    /// opens.
    async fn tunnel(&self, _conn: &Connection, _target: &Target) -> TunnelVerdict {
        TunnelVerdict::Open
    }

    /// A client started TLS inside a tunnel to `conn.target`, naming `server_name` by
    /// SNI (if it did), or sent plain HTTP in one (`server_name` is `None`). Return
    /// [`Interception::PassThrough`] to relay it without decrypting (or parsing, for
    /// plain HTTP). A plain proxy request (not in a tunnel) is not asked about.
    /// Default: intercepts.
    async fn should_intercept(
        &self,
        _conn: &Connection,
        _server_name: Option<&str>,
    ) -> Interception {
        Interception::Intercept
    }

    /// A client sent a TLS ClientHello inside a tunnel to `conn.target` (mitmproxy's
    /// `tls_clienthello`), offering `hello.server_name` by SNI and the ALPN protocols
    /// `hello.alpn`. Return [`Interception::PassThrough`] to relay the connection
    /// untouched (the client then talks TLS with the origin itself). Default: what
    /// [`should_intercept`](Self::should_intercept) says for the server name.
    ///
    /// ```
    /// use mitm::middleware::{ClientHello, Interception, Router};
    /// use mitm::{async_trait, Connection};
    ///
    /// /// Lets clients that offer only HTTP/2 keep their TLS to themselves.
    /// struct H2Private;
    ///
    /// #[async_trait]
    /// impl Router for H2Private {
    ///     async fn tls_clienthello(&self, _conn: &Connection, hello: &ClientHello) -> Interception {
    ///         if hello.alpn == [b"h2".to_vec()] {
    ///             Interception::PassThrough
    ///         } else {
    ///             Interception::Intercept
    ///         }
    ///     }
    /// }
    /// ```
    async fn tls_clienthello(&self, conn: &Connection, hello: &ClientHello) -> Interception {
        self.should_intercept(conn, hello.server_name.as_deref())
            .await
    }

    /// A tunnel to `conn.target` is about to be served: a plain one whose client sent
    /// an HTTP request line (`server_name` is `None`), or a TLS one the proxy
    /// intercepts (`server_name` is the SNI name, if any), before the handshakes.
    /// Return [`Payload::Raw`] to relay its bytes without parsing HTTP. Default:
    /// [`Payload::Detect`].
    async fn payload(&self, _conn: &Connection, _server_name: Option<&str>) -> Payload {
        Payload::Detect
    }
}
