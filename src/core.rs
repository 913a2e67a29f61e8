//! The facts of one proxied connection: [`Host`], [`Connection`], [`Flow`], [`Target`].
//!
//! These are what middlewares see. They describe a connection (who is on each side,
//! which protocol won, whether it is TLS) and carry a typed [`State`] map where each
//! middleware keeps its own per-connection data; the sockets themselves stay with the
//! server and the protocol.

use std::any::{Any, TypeId};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

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
#[derive(Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFacts {
    /// The server name the client asked for (SNI).
    pub sni: Option<String>,
    /// The application protocol chosen (ALPN), e.g. `h2` or `http/1.1`.
    pub alpn: Option<String>,
    /// The TLS version, as mitmproxy writes it: `TLSv1.2`, `TLSv1.3`.
    pub version: Option<String>,
    /// The cipher suite, named as OpenSSL (and so mitmproxy) names it, e.g.
    /// `TLS_AES_256_GCM_SHA384` or `ECDHE-RSA-AES128-GCM-SHA256`.
    pub cipher: Option<String>,
    /// The application protocols the client side of the handshake offered, in order.
    pub alpn_offers: Vec<String>,
    /// The certificate chain the server side presented (DER, its own first); kept for
    /// the upstream's handshakes, empty for the client's.
    pub certificates: Vec<bytes::Bytes>,
}

// By hand for `clone_from`, which keeps the strings' storage: a capture's record is
// made again, flow after flow, in the storage of one written.
impl Clone for TlsFacts {
    fn clone(&self) -> Self {
        let mut copy = TlsFacts::default();
        copy.clone_from(self);
        copy
    }

    fn clone_from(&mut self, source: &Self) {
        let TlsFacts {
            sni,
            alpn,
            version,
            cipher,
            alpn_offers,
            certificates,
        } = source;
        self.sni.clone_from(sni);
        self.alpn.clone_from(alpn);
        self.version.clone_from(version);
        self.cipher.clone_from(cipher);
        self.alpn_offers.clone_from(alpn_offers);
        self.certificates.clone_from(certificates);
    }
}

impl TlsFacts {
    /// The facts of a finished handshake on the proxy's server side (with a client),
    /// which offered `alpn_offers`.
    pub(crate) fn of_server(tls: &rustls::ServerConnection, alpn_offers: Vec<String>) -> Self {
        TlsFacts {
            sni: tls.server_name().map(str::to_owned),
            alpn: tls
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            version: tls.protocol_version().map(version_name),
            cipher: tls
                .negotiated_cipher_suite()
                .map(|s| cipher_name(s.suite())),
            alpn_offers,
            certificates: Vec::new(),
        }
    }

    /// The facts of a finished handshake on the proxy's client side (with an upstream),
    /// naming `sni` and offering `alpn_offers`; the upstream's certificates are kept.
    pub(crate) fn of_client(
        tls: &rustls::ClientConnection,
        sni: &str,
        alpn_offers: &[Vec<u8>],
    ) -> Self {
        TlsFacts {
            sni: Some(sni.to_owned()),
            alpn: tls
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            version: tls.protocol_version().map(version_name),
            cipher: tls
                .negotiated_cipher_suite()
                .map(|s| cipher_name(s.suite())),
            alpn_offers: alpn_offers
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect(),
            certificates: tls.peer_certificates().map_or_else(Vec::new, |chain| {
                chain
                    .iter()
                    .map(|c| bytes::Bytes::copy_from_slice(c.as_ref()))
                    .collect()
            }),
        }
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.sni.is_none()
            && self.alpn.is_none()
            && self.version.is_none()
            && self.cipher.is_none()
            && self.alpn_offers.is_empty()
            && self.certificates.is_empty()
    }
}

/// A TLS version as mitmproxy (OpenSSL) writes it.
fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
        other => format!("{other:?}"),
    }
}

/// A cipher suite by OpenSSL's name, as mitmproxy writes it; suites OpenSSL names
/// otherwise than the IANA registry get its spelling, others their IANA name.
fn cipher_name(suite: rustls::CipherSuite) -> String {
    use rustls::CipherSuite as C;
    let name = match suite {
        C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        other => return format!("{other:?}"),
    };
    name.to_owned()
}

/// When one side's connection was made and at which of the proxy's addresses, as
/// mitmproxy's flow format keeps them (`sockname`, `timestamp_start`,
/// `timestamp_tcp_setup`, `timestamp_tls_setup`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketFacts {
    /// The proxy's own address on this connection: for the client, the listening
    /// address it reached; for the upstream, the local end of the proxy's socket.
    pub local: Option<SocketAddr>,
    /// When the connection began: the client's accepted, or the proxy starting to
    /// connect to the upstream.
    pub started: Option<SystemTime>,
    /// When the upstream's TCP connection was up (the client's is at `started`).
    pub tcp_setup: Option<SystemTime>,
    /// When the TLS handshake on this connection finished.
    pub tls_setup: Option<SystemTime>,
}

/// What the proxy knows of one upstream connection: its times and local address, and
/// what its TLS handshake settled (empty without TLS). Shared by every flow that goes
/// over the connection.
#[derive(Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerFacts {
    /// Its times and the proxy's address on it.
    pub socket: SocketFacts,
    /// Its TLS handshake, with the server's certificate chain.
    pub tls: TlsFacts,
}

// By hand for `clone_from`, as `TlsFacts`.
impl Clone for ServerFacts {
    fn clone(&self) -> Self {
        let ServerFacts { socket, tls } = self;
        ServerFacts {
            socket: *socket,
            tls: tls.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        let ServerFacts { socket, tls } = source;
        self.socket = *socket;
        self.tls.clone_from(tls);
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
    /// When the client connected, the proxy's address it reached, and when its TLS
    /// handshake with the proxy finished.
    pub client_socket: SocketFacts,
    /// What the proxy knows of the upstream connection in use (times, local address,
    /// TLS); `None` while [`server`](Self::server) is empty, or for an upstream the
    /// proxy did not dial itself.
    pub server_facts: Option<Arc<ServerFacts>>,
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
    /// Set by [`abort`](Connection::abort).
    aborted: std::sync::atomic::AtomicBool,
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
            client_socket: SocketFacts::default(),
            server_facts: None,
            state: Mutex::new(State::default()),
            server_announced: false,
            tunnel_answered: false,
            permits: Vec::new(),
            aborted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Ends this connection from a hook: the next read through the data hooks (the
    /// chunk after the one being handled, in either direction) fails instead, and a
    /// connection that has not picked a protocol yet stops there. Both sides are then
    /// closed and the end hooks run as for any other failure. For a middleware whose
    /// hook cannot go on with a connection (the Python bridge calls it when a hook
    /// raises); a message hook ends one flow with [`Verdict::Kill`](crate::Verdict::Kill)
    /// instead.
    ///
    /// ```
    /// let conn = mitm::Connection::new(1, mitm::Host::default());
    /// assert!(!conn.is_aborted());
    /// conn.abort();
    /// assert!(conn.is_aborted());
    /// ```
    pub fn abort(&self) {
        self.aborted
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether [`abort`](Self::abort) was called.
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(std::sync::atomic::Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_the_proxy_speaks_has_openssls_name() {
        let provider = crate::tls::crypto_provider();
        assert!(!provider.cipher_suites.is_empty());
        for suite in &provider.cipher_suites {
            let name = cipher_name(suite.suite());
            // IANA's spellings that OpenSSL does not use.
            assert!(
                !name.starts_with("TLS13_") && !name.contains("_WITH_"),
                "{:?} is {name}",
                suite.suite()
            );
        }
        assert_eq!(
            cipher_name(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
            "TLS_AES_128_GCM_SHA256"
        );
        assert_eq!(
            cipher_name(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
            "ECDHE-RSA-AES256-GCM-SHA384"
        );
        assert_eq!(version_name(rustls::ProtocolVersion::TLSv1_2), "TLSv1.2");
    }
}
