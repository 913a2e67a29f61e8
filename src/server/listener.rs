//! [`Listener`]: one address a server listens on, with the protocols its clients are
//! offered and the route their connections leave by. A server has one or more; they
//! share the CA, the middlewares and the upstream pool.
//!
//! The command line's `--mode` specs ([`crate::server::mode`]) are made into listeners.

use std::sync::Arc;

use crate::protocol::Protocol;
use crate::upstream::route::Route;

/// One address of a server, with what it speaks.
///
/// ```
/// use std::sync::Arc;
/// use mitm::{Http, Listener, Route};
/// // An explicit proxy on port 8080 whose traffic leaves through a corporate proxy.
/// let corporate: Route = "http://proxy.example:3128".parse().unwrap();
/// let listener = Listener::new("upstream", vec![Arc::new(Http::new())])
///     .at("127.0.0.1", 8080)
///     .route(corporate);
/// ```
#[derive(Clone)]
#[must_use]
pub struct Listener {
    pub(crate) name: String,
    /// Its own address: a host (`None`: the builder's) and a port.
    pub(crate) at: Option<(Option<String>, u16)>,
    pub(crate) protocols: Vec<Arc<dyn Protocol>>,
    pub(crate) route: Route,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name)
            .field("at", &self.at)
            .field(
                "protocols",
                &self.protocols.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .field("route", &self.route)
            .finish()
    }
}

impl Listener {
    /// A listener named `name` (for the logs and [`Mitm::listeners`](crate::Mitm::listeners),
    /// e.g. the mode it serves) offering `protocols` to its clients, in this order. It
    /// listens on the builder's [`host`](crate::MitmBuilder::host) and
    /// [`port`](crate::MitmBuilder::port) unless given an address with
    /// [`at`](Self::at), and its connections go direct unless given a
    /// [`route`](Self::route).
    pub fn new(name: impl Into<String>, protocols: Vec<Arc<dyn Protocol>>) -> Self {
        Listener {
            name: name.into(),
            at: None,
            protocols,
            route: Route::Direct,
        }
    }

    /// Listens on `host:port` (port 0 picks a free one).
    pub fn at(mut self, host: impl Into<String>, port: u16) -> Self {
        self.at = Some((Some(host.into()), port));
        self
    }

    /// Listens on `port` of the builder's [`host`](crate::MitmBuilder::host).
    pub fn port(mut self, port: u16) -> Self {
        self.at = Some((None, port));
        self
    }

    /// How its clients' connections leave the proxy, unless a middleware's
    /// [`route`](crate::Router::route) chooses otherwise. Default: direct.
    pub fn route(mut self, route: Route) -> Self {
        self.route = route;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A listener of a bound server: its name and the address it listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bound {
    /// The listener's name (its mode, for those made from `--mode` specs).
    pub name: String,
    /// Where it listens, with the real port when 0 was asked for.
    pub addr: std::net::SocketAddr,
}
