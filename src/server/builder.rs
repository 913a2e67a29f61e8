//! [`MitmBuilder`]: every setting of a server, each with its default, and binding its
//! listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::block::Block;
use super::run::{Mitm, Serving};
use super::sender::Sender;
use super::{default_ca_dir, DEFAULT_GRACE, DEFAULT_HOST, DEFAULT_MAX_CONNECTIONS, DEFAULT_PORT};
use crate::core::Target;
use crate::engine::context::Context;
use crate::error::{Error, Result};
use crate::http::settings::Settings;
use crate::middleware::{Chain, Hooks, HttpHandler, Log, Middleware, Router};
use crate::protocol::{Http, Protocol};
use crate::server::listener::{Bound, Listener};
use crate::tls::ca::CertificateAuthority;
use crate::upstream::route::Route;
use crate::upstream::{Resolve, SystemResolver, UpstreamTls, Upstreams};
use std::sync::atomic::AtomicU64;

/// Configures a [`Mitm`] server. Every setting has a default; see each setter.
///
/// ```no_run
/// # async fn run() -> mitm::Result<()> {
/// use std::sync::Arc;
/// let ca = Arc::new(mitm::CertificateAuthority::generate()?);
/// let proxy = mitm::Mitm::builder()
///     .port(0)
///     .certificate_authority(ca)
///     .http_handler(Arc::new(mitm::HttpLog::default()))
///     .bind()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct MitmBuilder {
    host: String,
    port: u16,
    /// The HTTP settings of the default listener and of senders.
    http: Http,
    protocols: Option<Vec<Arc<dyn Protocol>>>,
    listeners: Vec<Listener>,
    hooks: Hooks,
    /// Whether any hook was added or the middlewares set: else the default `[Log]`.
    hooks_given: bool,
    ca: Option<Arc<CertificateAuthority>>,
    ca_dir: Option<PathBuf>,
    upstream_ca_files: Vec<PathBuf>,
    dangerous_insecure: bool,
    upstream_tls: Option<UpstreamTls>,
    upstream_client_cert: Option<PathBuf>,
    resolver: Arc<dyn Resolve>,
    grace: Duration,
    proxy_auth: Option<(String, String)>,
    max_connections: usize,
    tls_fail_open: Option<Duration>,
    key_log: Option<KeyLogTo>,
    /// `block_global` and `block_private`.
    block: (bool, bool),
    /// Certificates to serve instead of leaves: (domain, PEM file).
    certs: Vec<(String, PathBuf)>,
}

/// Where [`MitmBuilder::key_log`] or [`MitmBuilder::key_logger`] sends TLS secrets.
enum KeyLogTo {
    /// A file, opened (for appending) when the server is bound.
    File(PathBuf),
    /// The embedder's own logger.
    Logger(Arc<dyn rustls::KeyLog>),
}

impl std::fmt::Debug for MitmBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MitmBuilder")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("ca_dir", &self.ca_dir)
            .field("upstream_ca_files", &self.upstream_ca_files)
            .field("dangerous_insecure", &self.dangerous_insecure)
            .finish_non_exhaustive()
    }
}

impl Default for MitmBuilder {
    fn default() -> Self {
        MitmBuilder {
            host: DEFAULT_HOST.into(),
            port: DEFAULT_PORT,
            http: Http::new(),
            protocols: None,
            listeners: Vec::new(),
            hooks: Hooks::new(),
            hooks_given: false,
            ca: None,
            ca_dir: None,
            upstream_ca_files: Vec::new(),
            dangerous_insecure: false,
            upstream_tls: None,
            upstream_client_cert: None,
            resolver: Arc::new(SystemResolver),
            grace: DEFAULT_GRACE,
            proxy_auth: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls_fail_open: None,
            key_log: None,
            block: (true, false),
            certs: Vec::new(),
        }
    }
}

impl MitmBuilder {
    /// The address or name to listen on. Default: `127.0.0.1` (this machine only).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// The port to listen on; 0 picks a free one, reported by [`Mitm::local_addr`].
    /// Default: 8888.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Adds a listener: an address of its own (or the builder's
    /// [`host`](Self::host) and [`port`](Self::port)), its protocols and its route. A
    /// server with no listener added has one: the builder's host, port and
    /// [`protocols`](Self::protocols), direct. All listeners share the CA, the
    /// middlewares, the connection limit and the upstream pool.
    ///
    /// ```no_run
    /// # async fn run() -> mitm::Result<()> {
    /// use std::sync::Arc;
    /// use mitm::{Http, Listener, Mitm};
    /// let proxy = Mitm::builder()
    ///     .listener(Listener::new("regular", vec![Arc::new(Http::new())]).at("127.0.0.1", 8080))
    ///     .listener(
    ///         Listener::new("via-socks", vec![Arc::new(Http::new())])
    ///             .at("127.0.0.1", 8081)
    ///             .route("socks5://127.0.0.1:1080".parse()?),
    ///     )
    ///     .bind()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// The HTTP settings (limits and timeouts) of the listener a server has when none is
    /// added with [`listener`](Self::listener) (unless [`protocols`](Self::protocols)
    /// are given), and of every [`Sender`] the server makes: its requests obey the
    /// connect and response timeouts set here. Default: [`Http::new`].
    ///
    /// ```no_run
    /// # async fn run() -> mitm::Result<()> {
    /// use std::time::Duration;
    /// let sender = mitm::Mitm::builder()
    ///     .http(mitm::Http::new().response_timeout(Duration::from_secs(5)))
    ///     .sender()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn http(mut self, http: Http) -> Self {
        self.http = http;
        self
    }

    /// Adds a protocol after those added before, for the listener a server has when
    /// none is added with [`listener`](Self::listener). Default: `[Http]`, used only
    /// when no protocol is added.
    pub fn protocol(mut self, protocol: Arc<dyn Protocol>) -> Self {
        self.protocols.get_or_insert_with(Vec::new).push(protocol);
        self
    }

    /// Replaces the list of protocols; they are asked in this order.
    pub fn protocols(mut self, protocols: Vec<Arc<dyn Protocol>>) -> Self {
        self.protocols = Some(protocols);
        self
    }

    /// Adds a [`Middleware`] (the original's seven connection hooks) after those added
    /// before. Default: `[Log]`, used only when no hook of any kind is added.
    pub fn middleware(mut self, middleware: Arc<dyn Middleware>) -> Self {
        self.hooks = self.hooks.middleware(middleware);
        self.hooks_given = true;
        self
    }

    /// Replaces the list of middlewares; an empty list means none at all (not even the
    /// default `[Log]`).
    pub fn middlewares(mut self, middlewares: Vec<Arc<dyn Middleware>>) -> Self {
        self.hooks.set_middlewares(middlewares);
        self.hooks_given = true;
        self
    }

    /// Adds an [`HttpHandler`] (hooks on HTTP and WebSocket messages) after those added
    /// before. Default: none.
    ///
    /// ```no_run
    /// # async fn run() -> mitm::Result<()> {
    /// use std::sync::Arc;
    /// let proxy = mitm::Mitm::builder()
    ///     .http_handler(Arc::new(mitm::HttpLog::default()))
    ///     .bind()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn http_handler(mut self, handler: Arc<dyn HttpHandler>) -> Self {
        self.hooks = self.hooks.http_handler(handler);
        self.hooks_given = true;
        self
    }

    /// Adds a [`Router`] (routes, tunnels, TLS interception) after those added before.
    /// Default: none.
    pub fn router(mut self, router: Arc<dyn Router>) -> Self {
        self.hooks = self.hooks.router(router);
        self.hooks_given = true;
        self
    }

    /// Uses this CA. Default: the CA in [`ca_dir`](Self::ca_dir).
    pub fn certificate_authority(mut self, ca: Arc<CertificateAuthority>) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Loads the CA from `dir/mitm.pem` and `dir/mitm.key`, creating them on first use
    /// (see [`CertificateAuthority::init`]). Ignored when a CA is given with
    /// [`certificate_authority`](Self::certificate_authority). Default:
    /// [`default_ca_dir`].
    pub fn ca_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.ca_dir = Some(dir.into());
        self
    }

    /// Trusts the CA certificates in this PEM file for upstream servers, besides the web
    /// PKI roots and the system store. May be called several times. Default: none.
    pub fn upstream_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.upstream_ca_files.push(path.into());
        self
    }

    /// When true, upstream certificates are not verified at all, so anyone between the
    /// proxy and the server can read and change the traffic. For tests and servers you
    /// control. Default: false.
    pub fn dangerous_accept_invalid_upstream_certs(mut self, accept: bool) -> Self {
        self.dangerous_insecure = accept;
        self
    }

    /// Uses this upstream TLS setup instead of building one from
    /// [`upstream_ca_file`](Self::upstream_ca_file) and
    /// [`dangerous_accept_invalid_upstream_certs`](Self::dangerous_accept_invalid_upstream_certs).
    pub fn upstream_tls(mut self, tls: UpstreamTls) -> Self {
        self.upstream_tls = Some(tls);
        self
    }

    /// Presents the certificate chain and key in this PEM file to upstream servers that
    /// ask for a client certificate (mutual TLS). Default: none.
    pub fn upstream_client_cert(mut self, pem: impl Into<PathBuf>) -> Self {
        self.upstream_client_cert = Some(pem.into());
        self
    }

    /// Resolves upstream host names with `resolver`. Default: [`SystemResolver`].
    pub fn resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = resolver;
        self
    }

    /// How long connections in flight may go on after shutdown is asked for.
    /// Default: [`DEFAULT_GRACE`] (5 seconds).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Asks clients for these credentials (HTTP Basic, `Proxy-Authorization`) on every
    /// proxy request and `CONNECT`; others get `407` with `Proxy-Authenticate`. SOCKS5
    /// clients ([`Socks5`](crate::Socks5)) must then log in with them too (RFC 1929
    /// username/password). Default: none asked.
    pub fn proxy_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.proxy_auth = Some((user.into(), password.into()));
        self
    }

    /// The most connections open at once, client and upstream connections together
    /// (each holds a socket). A new client is accepted only while there is room for it
    /// and for one upstream connection; past that it is closed at once rather than
    /// queued. An upstream connection past the limit closes an idle pooled one to make
    /// room, or the request gets a `503`. At least 2. Default:
    /// [`DEFAULT_MAX_CONNECTIONS`].
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(2);
        self
    }

    /// TLS fail-open: with `Some(time)`, a host whose client refuses the proxy's
    /// certificate is passed through untouched (relayed as it is, the client seeing the
    /// origin's own certificate) for `time` after the refusal, so that clients which pin
    /// certificates or ship their own roots keep working; the log says so once per host.
    ///
    /// A refusal is a TLS alert from the client during the handshake with the proxy's
    /// leaf (`unknown_ca`, `bad_certificate`, …), or the client closing the connection
    /// once the proxy's certificate went out. It is learned only when the proxy reached
    /// the origin and verified it: a host whose origin fails verification is never
    /// passed through. A client that leaves before or during its ClientHello, or speaks
    /// no TLS, teaches nothing. Hosts are keyed by the leaf's name (the SNI name, else
    /// the `CONNECT` host) and the port; up to 10 000 are remembered, the oldest
    /// forgotten first.
    ///
    /// Default: `None` (off: every TLS tunnel is intercepted unless a middleware says
    /// otherwise). [`DEFAULT_TLS_FAIL_OPEN`](super::DEFAULT_TLS_FAIL_OPEN) is the usual time.
    pub fn tls_fail_open(mut self, time: Option<Duration>) -> Self {
        self.tls_fail_open = time;
        self
    }

    /// Appends the TLS secrets of both hops (client to proxy and proxy to origin) to
    /// the file at `path`, in the NSS key log format that `SSLKEYLOGFILE` names and
    /// Wireshark reads: a capture of either side can then be decrypted. The file is
    /// created if missing and never truncated; one that cannot be opened fails
    /// [`bind`](Self::bind) with [`Error::KeyLog`]. Anyone who can read the file can
    /// read the intercepted traffic. Default: no key log (nothing is logged, no cost).
    pub fn key_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_log = Some(KeyLogTo::File(path.into()));
        self
    }

    /// Like [`key_log`](Self::key_log), but hands the secrets to `logger` instead of a
    /// file. Default: none.
    pub fn key_logger(mut self, logger: Arc<dyn rustls::KeyLog>) -> Self {
        self.key_log = Some(KeyLogTo::Logger(logger));
        self
    }

    /// Refuses clients from public (globally reachable) addresses, as mitmproxy's
    /// `block_global`, unless [`proxy_auth`](Self::proxy_auth) asks every client for
    /// credentials. A refused client is answered `403 Forbidden` when it speaks HTTP,
    /// "no acceptable methods" when it speaks SOCKS5, and closed otherwise, before any
    /// hook sees it; the log says so in one line naming the option. Loopback clients
    /// are always served; what counts as public is [`is_global`](super::block::is_global).
    /// Default: true (a proxy listening on a public interface serves only its own
    /// networks until told otherwise).
    pub fn block_global(mut self, block: bool) -> Self {
        self.block.0 = block;
        self
    }

    /// Refuses clients from private addresses ([`is_private`](super::block::is_private):
    /// private networks, link-local, unique local IPv6 …), as mitmproxy's
    /// `block_private`, the same way as [`block_global`](Self::block_global), whether or
    /// not proxy authentication is on. Loopback clients are always served. Default:
    /// false.
    pub fn block_private(mut self, block: bool) -> Self {
        self.block.1 = block;
        self
    }

    /// Serves the certificate in the PEM file at `path` (leaf, chain and key in one
    /// file) for `domain` (a host name, `*.parent`, or `*` for every host) instead of a
    /// leaf of the CA, as mitmproxy's `--certs domain=path`; see
    /// [`CertificateAuthority::add_cert_file`] for how hosts are matched. May be called
    /// several times. A file that cannot be used fails [`bind`](Self::bind) with
    /// [`Error::CertFile`]. Default: none (every host gets a leaf).
    pub fn cert(mut self, domain: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.certs.push((domain.into(), path.into()));
        self
    }

    /// Binds every listener (the default one when none was added) and readies the
    /// server: loads or creates the CA, sets up upstream TLS. Nothing is accepted until
    /// [`Mitm::run`] (or [`run_until`](Mitm::run_until), [`spawn`](Mitm::spawn)).
    pub async fn bind(mut self) -> Result<Mitm> {
        let host = self.host.clone();
        let port = self.port;
        let grace = self.grace;
        let max_connections = self.max_connections;
        let block = Block::effective(self.block.0, self.block.1, self.proxy_auth.is_some());
        let mut listeners = self.listeners_or_default();
        let mut bound = Vec::with_capacity(listeners.len());
        for listener in listeners.drain(..) {
            let (host, port) = match &listener.at {
                Some((at, port)) => (at.clone().unwrap_or_else(|| host.clone()), *port),
                None => (host.clone(), port),
            };
            let where_ = format_addr(&host, port);
            let socket = listen(&host, port).await.map_err(|source| Error::Bind {
                addr: format!("{where_} ({})", listener.name),
                source,
            })?;
            let addr = socket.local_addr().map_err(|source| Error::Bind {
                addr: where_,
                source,
            })?;
            bound.push((listener, socket, addr));
        }
        let local_addrs: Arc<[SocketAddr]> = bound.iter().map(|(_, _, addr)| *addr).collect();
        let parts = self.prepare(local_addrs)?;
        let listeners = bound
            .into_iter()
            .map(|(listener, socket, addr)| Serving {
                socket,
                bound: Bound {
                    name: listener.name,
                    addr,
                },
                cx: Context {
                    route: listener.route,
                    ..parts.cx.clone()
                },
                protocols: listener.protocols.into(),
            })
            .collect();
        Ok(Mitm {
            listeners,
            cx: parts.cx,
            settings: parts.settings,
            grace,
            limit: parts.limit,
            max_connections,
            stop: parts.stop,
            block,
        })
    }

    /// A [`Sender`] with everything this builder sets (CA, hooks, routes, upstream
    /// TLS, resolver, the [`http`](Self::http) settings) and no listener: requests go
    /// through the hooks and the upstream pool as a client's would, with no socket
    /// bound. Listeners added to the builder are ignored.
    ///
    /// ```no_run
    /// # async fn run() -> mitm::Result<()> {
    /// let sender = mitm::Mitm::builder().sender().await?;
    /// let request = mitm::Request::new("GET", "http://127.0.0.1:8080/health").unwrap();
    /// let response = sender.send(request).await?;
    /// println!("{}", response.status);
    /// # Ok(()) }
    /// ```
    pub async fn sender(self) -> Result<Sender> {
        let parts = self.prepare(Arc::from([]))?;
        Ok(Sender::new(
            parts.cx,
            parts.settings,
            Some(Arc::new(parts.stop)),
        ))
    }

    /// The listeners to bind: those added, or the default one.
    fn listeners_or_default(&mut self) -> Vec<Listener> {
        let mut listeners = std::mem::take(&mut self.listeners);
        if listeners.is_empty() {
            let protocols = self
                .protocols
                .take()
                .unwrap_or_else(|| vec![Arc::new(self.http.clone()) as Arc<dyn Protocol>]);
            listeners.push(Listener::new("regular", protocols));
        }
        listeners
    }

    /// What a server and a sender share: the CA, upstream TLS and the pool, the hooks,
    /// the connection limit. `local_addrs` are the listeners' addresses (requests to
    /// them would loop).
    fn prepare(self, local_addrs: Arc<[SocketAddr]>) -> Result<Parts> {
        let ca = match (self.ca, self.ca_dir) {
            (Some(ca), _) => ca,
            (None, dir) => {
                let dir = match dir.or_else(default_ca_dir) {
                    Some(dir) => dir,
                    None => {
                        return Err(Error::CaRead {
                            path: PathBuf::from("<user data directory>"),
                            source: std::io::Error::new(
                                std::io::ErrorKind::NotFound,
                                "this platform has no user data directory; give a CA directory",
                            ),
                        })
                    }
                };
                Arc::new(CertificateAuthority::init(&dir)?)
            }
        };
        for (domain, path) in &self.certs {
            ca.add_cert_file(domain, path)?;
        }
        let upstream_tls = match self.upstream_tls {
            Some(tls) => tls,
            None if self.dangerous_insecure => UpstreamTls::dangerous_unverified()?,
            None => UpstreamTls::verified(&self.upstream_ca_files)?,
        };
        let upstream_tls = match &self.upstream_client_cert {
            Some(pem) => upstream_tls.with_client_cert(pem)?,
            None => upstream_tls,
        };
        let key_log: Option<Arc<dyn rustls::KeyLog>> = match self.key_log {
            None => None,
            Some(KeyLogTo::File(path)) => Some(crate::tls::keylog::KeyLogWriter::open(&path)?),
            Some(KeyLogTo::Logger(logger)) => Some(logger),
        };
        let upstream_tls = match &key_log {
            Some(log) => upstream_tls.with_key_log(log.clone()),
            None => upstream_tls,
        };
        let hooks = if self.hooks_given {
            self.hooks
        } else {
            Hooks::new().middleware(Arc::new(Log))
        };
        // Client and upstream connections share one limit of open connections.
        let limit = Arc::new(Semaphore::new(self.max_connections));
        let upstreams = Upstreams::new(
            self.resolver,
            Arc::new(upstream_tls),
            limit.clone(),
            self.max_connections,
        );
        upstreams.start_sweeping();
        let (stop, stopping) = watch::channel(false);
        let cx = Context {
            chain: Chain::new(hooks),
            ca,
            upstreams,
            route: Route::Direct,
            proxy_auth: self
                .proxy_auth
                .as_ref()
                .map(|(user, pass)| basic_credentials(user, pass)),
            proxy_credentials: self.proxy_auth.map(Arc::new),
            local_addrs,
            stopping,
            fail_open: self
                .tls_fail_open
                .map(|ttl| Arc::new(crate::tls::fail_open::FailOpen::new(ttl))),
            ids: Arc::new(AtomicU64::new(0)),
            key_log,
        };
        Ok(Parts {
            cx,
            settings: Arc::new(self.http.settings().clone()),
            limit,
            stop,
        })
    }
}

/// What [`MitmBuilder::prepare`] makes for a server or a sender.
struct Parts {
    cx: Context,
    settings: Arc<Settings>,
    limit: Arc<Semaphore>,
    stop: watch::Sender<bool>,
}

/// The `Proxy-Authorization` value for `user` and `password` (HTTP Basic).
fn basic_credentials(user: &str, password: &str) -> Arc<[u8]> {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}").into_bytes().into()
}

/// Pending connections the kernel queues for `accept`: tokio's default (128) makes a
/// burst of new clients wait a second for a retry.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds the listener, trying each address `host` resolves to.
async fn listen(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // A restarted proxy can take its port back while old connections linger.
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the host resolves to no address",
        )
    }))
}

fn format_addr(host: &str, port: u16) -> String {
    Target::new(host, port, false).to_string()
}
