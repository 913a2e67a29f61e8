//! The facts of one proxied connection: [`Host`], [`Connection`], [`Flow`], [`Target`].
//!
//! These are what middlewares see. They describe a connection (who is on each side,
//! which protocol won, whether it is TLS) and carry a typed [`State`] map where each
//! middleware keeps its own per-connection data; the sockets themselves stay with the
//! server and the protocol.

use std::any::{Any, TypeId};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

/// One side of a relayed connection: the client, or the upstream server.
///
/// A `Host` is "empty" until the proxy has a socket to that side; it then knows the
/// peer's address. It prints as `ip:port`, or `<empty host>` while empty.
///
/// ```
/// use mitm::Host;
/// let h = Host::new("127.0.0.1:8080".parse().unwrap());
/// assert_eq!(h.to_string(), "127.0.0.1:8080");
/// assert_eq!(Host::default().to_string(), "<empty host>");
/// ```
///
/// The original's `mitm_managed` flag is gone: the proxy owns every socket it relays
/// and always closes both sides at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Host {
    /// The peer's socket address, once connected.
    pub addr: Option<SocketAddr>,
}

impl Host {
    /// A connected host at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Host { addr: Some(addr) }
    }

    /// Whether the proxy has a socket to this side.
    pub fn is_connected(&self) -> bool {
        self.addr.is_some()
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("<empty host>"),
        }
    }
}

/// The direction bytes travel in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    /// From the client, through the proxy, to the upstream server.
    ClientToServer,
    /// From the upstream server, through the proxy, to the client.
    ServerToClient,
}

/// Where a protocol decided to send a connection: a host name or address, a port, and
/// whether the upstream speaks TLS.
///
/// ```
/// use mitm::Target;
/// let t = Target::new("example.com", 443, true);
/// assert_eq!(t.to_string(), "example.com:443");
/// assert_eq!(Target::new("::1", 80, false).to_string(), "[::1]:80");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Target {
    /// Host name or IP address, without brackets for IPv6.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the proxy intercepts TLS on this connection (client side) and speaks TLS
    /// to the upstream.
    pub tls: bool,
}

impl Target {
    /// A target at `host:port`.
    pub fn new(host: impl Into<String>, port: u16, tls: bool) -> Self {
        Target {
            host: host.into(),
            port,
            tls,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What a TLS handshake settled, as text (for logs, captures and the web UI).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFacts {
    /// The server name the client asked for (SNI).
    pub sni: Option<String>,
    /// The application protocol chosen (ALPN), e.g. `h2` or `http/1.1`.
    pub alpn: Option<String>,
    /// The TLS version, as mitmproxy writes it: `TLSv1.2`, `TLSv1.3`.
    pub version: Option<String>,
}

impl TlsFacts {
    /// The facts of a finished handshake on the proxy's server side.
    pub(crate) fn of_server(tls: &rustls::ServerConnection) -> Self {
        TlsFacts {
            sni: tls.server_name().map(str::to_owned),
            alpn: tls
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            version: tls.protocol_version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
                other => format!("{other:?}"),
            }),
        }
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.sni.is_none() && self.alpn.is_none() && self.version.is_none()
    }
}

/// A connection between a client and (once connected) an upstream server, as
/// middlewares see it.
///
/// The server creates it when a client connects, with only [`client`](Self::client)
/// known; [`protocol`](Self::protocol) and [`target`](Self::target) are filled in when a
/// protocol accepts the client's first bytes, and [`server`](Self::server) once the
/// upstream is connected.
#[derive(Debug)]
#[non_exhaustive]
pub struct Connection {
    /// A number unique among the connections of one server, starting at 1.
    pub id: u64,
    /// The client side.
    pub client: Host,
    /// The upstream side; empty until the upstream is connected.
    pub server: Host,
    /// Where the client meant to connect, for a connection a firewall rule redirected
    /// to the proxy (transparent mode). Read when the client connects, and only on
    /// listeners with a protocol that
    /// [wants it](crate::Protocol::wants_original_destination); `None` otherwise, and
    /// for a connection that came straight to the proxy.
    pub original_dst: Option<SocketAddr>,
    /// The name of the protocol that accepted the connection (e.g. `"http"`).
    pub protocol: Option<&'static str>,
    /// Where the protocol sends this connection.
    pub target: Option<Target>,
    /// Whether the proxy terminates TLS with the client on this connection.
    pub tls: bool,
    /// What the client's TLS handshake with the proxy settled (the name it asked for,
    /// the protocol chosen, the TLS version), once it is done; empty without TLS.
    pub tls_facts: TlsFacts,
    state: Mutex<State>,
    /// Whether `server_connected` has fired without a `server_disconnected` yet.
    pub(crate) server_announced: bool,
    /// Whether a request hook answered this connection's `CONNECT`: the requests inside
    /// its tunnel get that answer (kept in the state, where only this flag sends the
    /// engine looking).
    pub(crate) tunnel_answered: bool,
    /// The places under the connection limit of upstream connections a protocol made
    /// through [`Context::connect`](crate::Context::connect), given back at the end.
    pub(crate) permits: Vec<tokio::sync::OwnedSemaphorePermit>,
}

impl Connection {
    /// A new connection with only the client known.
    pub fn new(id: u64, client: Host) -> Self {
        Connection {
            id,
            client,
            server: Host::default(),
            original_dst: None,
            protocol: None,
            target: None,
            tls: false,
            tls_facts: TlsFacts::default(),
            state: Mutex::new(State::default()),
            server_announced: false,
            tunnel_answered: false,
            permits: Vec::new(),
        }
    }

    /// The per-connection state where middlewares keep their data, keyed by type.
    ///
    /// Hooks receive `&Connection` (the two relay directions run at once), so the map
    /// sits behind a lock: take it, use it, and let it go before the next `.await`.
    ///
    /// ```
    /// # let conn = mitm::Connection::new(1, mitm::Host::default());
    /// #[derive(Default)]
    /// struct Bytes(u64);
    /// conn.state().get_or_default::<Bytes>().0 += 10;
    /// assert_eq!(conn.state().get::<Bytes>().map(|b| b.0), Some(10));
    /// ```
    pub fn state(&self) -> MutexGuard<'_, State> {
        // A panic in another hook while holding the lock poisons it; the map itself is
        // still consistent (every operation on it is a single insert or lookup).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A map from type to value: one slot per type, for per-connection middleware data.
///
/// A list, looked through: a connection holds the data of a few middlewares, and
/// comparing a few type ids costs less than hashing one (hooks look here for every
/// flow).
#[derive(Default)]
pub struct State {
    slots: Vec<(TypeId, Box<dyn Any + Send>)>,
}

impl State {
    fn slot(&self, id: TypeId) -> Option<usize> {
        self.slots.iter().position(|(t, _)| *t == id)
    }

    /// Stores `value`, returning the previous value of that type.
    pub fn insert<T: Send + 'static>(&mut self, value: T) -> Option<T> {
        let id = TypeId::of::<T>();
        match self.slot(id) {
            Some(at) => std::mem::replace(&mut self.slots[at].1, Box::new(value))
                .downcast()
                .ok()
                .map(|b| *b),
            None => {
                self.slots.push((id, Box::new(value)));
                None
            }
        }
    }

    /// The value of type `T`, if any.
    pub fn get<T: Send + 'static>(&self) -> Option<&T> {
        let at = self.slot(TypeId::of::<T>())?;
        self.slots[at].1.downcast_ref()
    }

    /// The value of type `T`, mutably, if any.
    pub fn get_mut<T: Send + 'static>(&mut self) -> Option<&mut T> {
        let at = self.slot(TypeId::of::<T>())?;
        self.slots[at].1.downcast_mut()
    }

    /// The value of type `T`, inserting `T::default()` first if there is none.
    pub fn get_or_default<T: Default + Send + 'static>(&mut self) -> &mut T {
        let id = TypeId::of::<T>();
        let at = match self.slot(id) {
            Some(at) => at,
            None => {
                self.slots.push((id, Box::new(T::default())));
                self.slots.len() - 1
            }
        };
        // The slot of `TypeId::of::<T>()` only ever holds a `T`.
        match self.slots[at].1.downcast_mut() {
            Some(v) => v,
            None => unreachable!("state slot holds the type of its key"),
        }
    }

    /// Removes and returns the value of type `T`.
    pub fn remove<T: Send + 'static>(&mut self) -> Option<T> {
        let at = self.slot(TypeId::of::<T>())?;
        self.slots.swap_remove(at).1.downcast().ok().map(|b| *b)
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("entries", &self.slots.len())
            .finish()
    }
}
