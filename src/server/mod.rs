//! The server: [`MitmBuilder`] configures it, [`Mitm`] accepts clients, and each client
//! is served by its own task through the life described in [`crate::middleware`].
//!
//! Shutdown is a future the caller controls ([`Mitm::run_until`]) or a handle
//! ([`Mitm::spawn`]): the listener closes at once, connections in flight get a grace
//! period to finish, and whatever is left is then dropped.

pub mod listener;
pub mod mode;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::core::{Connection, Flow, Host, Target};
use crate::engine::context::Context;
use crate::error::{Error, Result, Side};
use crate::middleware::{Chain, Hooks, HttpHandler, Log, Middleware, Router};
use crate::protocol::{Connected, Http, Protocol, Resolution};
use crate::server::listener::{Bound, Listener};
use crate::tls::ca::{CertificateAuthority, CA_CERT_FILE};
use crate::upstream::route::Route;
use crate::upstream::{Resolve, SystemResolver, UpstreamTls, Upstreams};

/// The default listening host, as the original's.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The default listening port, as the original's.
pub const DEFAULT_PORT: u16 = 8888;
/// The default of [`MitmBuilder::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// The default grace period for connections in flight at shutdown.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// How long a host stays passed through after its client refused the proxy's
/// certificate, when TLS fail-open is asked for without a time of its own (see
/// [`MitmBuilder::tls_fail_open`]): 10 minutes.
pub const DEFAULT_TLS_FAIL_OPEN: Duration = Duration::from_secs(600);

/// Where the CA lives unless told otherwise: the user data directory the original uses,
/// `~/.local/share/mitm` on Linux (`~/Library/Application Support/mitm` on macOS,
/// `%APPDATA%\mitm` on Windows). `None` when the platform has no such directory.
pub fn default_ca_dir() -> Option<PathBuf> {
    data_dir().map(|d| d.join("mitm"))
}

/// The user data directory: `$XDG_DATA_HOME` or `~/.local/share` on Unix,
/// `~/Library/Application Support` on macOS, `%APPDATA%` on Windows. Read from the
/// environment, as the XDG base directory specification and the platforms define it.
fn data_dir() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if cfg!(windows) {
        return absolute("APPDATA");
    }
    let home = absolute("HOME");
    if cfg!(target_os = "macos") {
        return home.map(|h| h.join("Library/Application Support"));
    }
    absolute("XDG_DATA_HOME").or_else(|| home.map(|h| h.join(".local/share")))
}

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
    /// otherwise). [`DEFAULT_TLS_FAIL_OPEN`] is the usual time.
    pub fn tls_fail_open(mut self, time: Option<Duration>) -> Self {
        self.tls_fail_open = time;
        self
    }

    /// Loads or creates the CA, sets up upstream TLS and binds the listeners.
    ///
    /// Fails with [`Error::Bind`] when an address is taken or invalid, and with a CA
    /// error when the CA cannot be read or created; nothing is overwritten.
    pub async fn bind(self) -> Result<Mitm> {
        let (ca, ca_cert_path) = match (self.ca, self.ca_dir) {
            (Some(ca), _) => (ca, None),
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
                let ca = CertificateAuthority::init(&dir)?;
                (Arc::new(ca), Some(dir.join(CA_CERT_FILE)))
            }
        };
        let upstream_tls = match self.upstream_tls {
            Some(tls) => tls,
            None if self.dangerous_insecure => UpstreamTls::dangerous_unverified()?,
            None => UpstreamTls::verified(&self.upstream_ca_files)?,
        };
        let upstream_tls = match &self.upstream_client_cert {
            Some(pem) => upstream_tls.with_client_cert(pem)?,
            None => upstream_tls,
        };
        let hooks = if self.hooks_given {
            self.hooks
        } else {
            Hooks::new().middleware(Arc::new(Log))
        };
        let mut listeners = self.listeners;
        if listeners.is_empty() {
            let protocols = self
                .protocols
                .unwrap_or_else(|| vec![Arc::new(Http::new()) as Arc<dyn Protocol>]);
            listeners.push(Listener::new("regular", protocols));
        }
        let mut bound = Vec::with_capacity(listeners.len());
        for listener in listeners {
            let (host, port) = match &listener.at {
                Some((host, port)) => (host.clone().unwrap_or_else(|| self.host.clone()), *port),
                None => (self.host.clone(), self.port),
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
        };
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
                    ..cx.clone()
                },
                protocols: listener.protocols.into(),
            })
            .collect();
        Ok(Mitm {
            listeners,
            cx,
            ca_cert_path,
            grace: self.grace,
            limit,
            max_connections: self.max_connections,
            stop,
        })
    }
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

/// A bound listener, with what its clients are served with.
struct Serving {
    socket: TcpListener,
    bound: Bound,
    /// The server's context with this listener's route.
    cx: Context,
    protocols: Arc<[Arc<dyn Protocol>]>,
}

/// A bound proxy server, ready to run.
pub struct Mitm {
    /// At least one.
    listeners: Vec<Serving>,
    cx: Context,
    ca_cert_path: Option<PathBuf>,
    grace: Duration,
    /// Places for open connections, clients and upstreams alike.
    limit: Arc<Semaphore>,
    max_connections: usize,
    /// Tells connections the server is stopping.
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Mitm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mitm")
            .field("listeners", &self.listeners())
            .field("ca_cert_path", &self.ca_cert_path)
            .finish_non_exhaustive()
    }
}

impl Mitm {
    /// A builder with the original's defaults: `127.0.0.1:8888`, `[Http]`, `[Log]`, and
    /// the CA in the user data directory.
    pub fn builder() -> MitmBuilder {
        MitmBuilder::default()
    }

    /// The address the server listens on (with the real port when 0 was asked for);
    /// with several listeners, the first's.
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners[0].bound.addr
    }

    /// Every listener: its name and address, in the order they were added.
    pub fn listeners(&self) -> Vec<Bound> {
        self.listeners.iter().map(|l| l.bound.clone()).collect()
    }

    /// The certificate authority that signs leaves.
    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.cx.ca
    }

    /// The path of the CA certificate file, when the CA was loaded from a directory:
    /// the file clients must trust.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_cert_path.as_deref()
    }

    /// Sends `request` to its origin as a client of this server would (through the
    /// middlewares' hooks, the routes and the upstream pool), without a client
    /// connection: for replaying recorded requests (`mitm replay`). The body is sent
    /// as the request holds it (a streaming one as empty); the response comes back
    /// with its body held (up to 64 MiB). Works whether or not the server runs.
    ///
    /// ```no_run
    /// # async fn run() -> mitm::Result<()> {
    /// let proxy = mitm::Mitm::builder().port(0).bind().await?;
    /// let request = mitm::Request::new("GET", "http://127.0.0.1:8080/health").unwrap();
    /// let response = proxy.send(request).await?;
    /// println!("{}", response.status);
    /// # Ok(()) }
    /// ```
    pub async fn send(
        &self,
        request: crate::http::message::Request,
    ) -> Result<crate::http::message::Response> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut conn = Connection::new(id, Host::default());
        conn.target = Some(request.target.clone());
        let settings = crate::http::settings::Settings::default();
        let (mut response, body, _length) =
            crate::engine::exchange::direct::send(&self.cx, &settings, conn, request, 1).await?;
        response.body = crate::http::message::Body::Full(body);
        Ok(response)
    }

    /// Serves clients until the task is dropped.
    pub async fn run(self) -> Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves clients until `shutdown` completes, then stops accepting, closes the
    /// connections idle between requests at once, and gives the exchanges and tunnels
    /// in flight the grace period to finish.
    ///
    /// A panic in one connection's task (in a hook, say) ends that connection only: it
    /// is logged at `error` and the server goes on. Accept errors (a client gone, file
    /// descriptors exhausted) are logged and retried.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Mitm {
            listeners,
            cx,
            grace,
            limit,
            max_connections,
            stop,
            ..
        } = self;
        for l in &listeners {
            cx.chain.mitm_started(l.bound.addr).await;
            tracing::info!(addr = %l.bound.addr, mode = %l.bound.name, "mitm listening");
        }

        let mut tasks = JoinSet::new();
        let mut next_id = 0u64;
        // Where the next round of accepts starts, so that no listener starves the
        // others.
        let mut first = 0usize;
        tokio::pin!(shutdown);
        loop {
            let accept = std::future::poll_fn(|task| {
                let n = listeners.len();
                for i in 0..n {
                    let at = (first + i) % n;
                    if let std::task::Poll::Ready(r) = listeners[at].socket.poll_accept(task) {
                        return std::task::Poll::Ready((at, r));
                    }
                }
                std::task::Poll::Pending
            });
            tokio::select! {
                () = &mut shutdown => break,
                (at, accepted) = accept => {
                    first = (at + 1) % listeners.len();
                    let serving = &listeners[at];
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            accept_failed(serving.bound.addr, e).await;
                            continue;
                        }
                    };
                    // Room for this client and for one connection to its origin.
                    let room = limit.available_permits() >= 2;
                    let permit = limit.clone().try_acquire_owned().ok().filter(|_| room);
                    let Some(permit) = permit else {
                        // Refused at once: a queue would only make every client wait.
                        tracing::warn!(client = %peer, max_connections, "too many connections, refusing one");
                        drop(stream);
                        continue;
                    };
                    next_id += 1;
                    let span = tracing::info_span!("conn", id = next_id, client = %peer);
                    // The permit goes into `serve` itself: wrapping its future in another
                    // async block would store it twice (the capture and the awaited copy).
                    let job = serve(
                        serving.cx.clone(),
                        serving.protocols.clone(),
                        stream,
                        peer,
                        next_id,
                        permit,
                    );
                    tasks.spawn(job.instrument(span));
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "connection task failed");
                    }
                }
            }
        }
        drop(listeners);
        tracing::info!(in_flight = tasks.len(), "mitm stopping");
        // Connections idle between requests close at once; exchanges in flight get
        // the grace period.
        let _ = stop.send(true);
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::info!(left = tasks.len(), "grace period over, closing connections");
        }
        tasks.shutdown().await;
        Ok(())
    }

    /// Runs the server on a task of its own, returning a handle that stops it.
    /// Dropping the handle stops the server too.
    pub fn spawn(self) -> MitmHandle {
        let addr = self.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let stopped = async move {
            // Either an explicit stop or the handle being dropped.
            let _ = rx.await;
        };
        let task = tokio::spawn(self.run_until(stopped));
        MitmHandle {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }
}

/// Controls a server started with [`Mitm::spawn`].
#[derive(Debug)]
pub struct MitmHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

impl MitmHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes connections idle between requests, waits for
    /// exchanges in flight (up to the grace period) and returns once the server is
    /// down. Fails with [`Error::Stopped`] when the server's task panicked (or was
    /// cancelled), with the error it ended with if it failed.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result,
                Err(e) => Err(Error::Stopped {
                    reason: join_error(e),
                }),
            },
            None => Ok(()),
        }
    }

    /// Whether the server's task has ended (stopped, failed or panicked) without being
    /// asked to.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_some_and(JoinHandle::is_finished)
    }
}

/// What a failed task says: its panic message when it panicked.
fn join_error(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let panic = e.into_panic();
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .map_or_else(
            || "it panicked".to_string(),
            |m| format!("it panicked: {m}"),
        )
}

/// Accept errors are per connection (the peer gave up) or resource exhaustion (out of
/// file descriptors); in the latter case back off briefly rather than spin.
async fn accept_failed(addr: SocketAddr, source: std::io::Error) {
    let e = Error::Accept { addr, source };
    tracing::warn!(error = %crate::error::Report(&e), "accept failed");
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// The life of one client connection, hooks included. `permit` is its place under the
/// connection limit, given back at the end.
async fn serve(
    cx: Context,
    protocols: Arc<[Arc<dyn Protocol>]>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    permit: OwnedSemaphorePermit,
) {
    // The proxy writes whole chunks; Nagle's algorithm would only delay them.
    let _ = stream.set_nodelay(true);
    let mut conn = Connection::new(id, Host::new(peer));
    if protocols.iter().any(|p| p.wants_original_destination()) {
        conn.original_dst = crate::net::original_dst::redirected_from(&stream, &cx.local_addrs);
    }
    cx.chain.client_connected(&conn).await;
    if let Err(e) = drive(&cx, &protocols, &mut conn, stream).await {
        report(&cx, &conn, &e);
    }
    cx.chain.client_disconnected(&conn).await;
    // Only a server whose `server_connected` fired gets its `server_disconnected`.
    if conn.server_announced {
        cx.chain.server_disconnected(&conn).await;
    }
    drop(permit);
}

/// Picks a protocol, connects, relays.
async fn drive(
    cx: &Context,
    protocols: &[Arc<dyn Protocol>],
    conn: &mut Connection,
    mut stream: TcpStream,
) -> Result<()> {
    let sniffed = match sniff(protocols, conn, &mut stream).await {
        // Nobody took a client that came straight to a transparent listener: the
        // firewall's redirect rules are what is missing, so say that.
        Err(Error::NoProtocol)
            if conn.original_dst.is_none()
                && protocols.iter().any(|p| p.wants_original_destination()) =>
        {
            return Err(match stream.local_addr() {
                Ok(local) => Error::NotRedirected { local },
                Err(_) => Error::NoProtocol,
            });
        }
        other => other?,
    };
    let Some((protocol, target, first)) = sniffed else {
        return Ok(());
    };
    conn.protocol = Some(protocol.name());
    conn.target = Some(target.clone());
    let data = cx.chain.data(conn, Flow::ClientToServer, first).await;
    match protocol
        .connect(cx, conn, Box::new(stream), target, data)
        .await?
    {
        Connected::Tunnel(tunnel) => {
            cx.announce_server(conn).await;
            protocol.handle(cx, conn, tunnel).await
        }
        Connected::Handled => Ok(()),
    }
}

/// Reads the client's first bytes until a protocol accepts them. `None` when the
/// client closed without sending anything (not worth an error).
async fn sniff(
    protocols: &[Arc<dyn Protocol>],
    conn: &Connection,
    stream: &mut TcpStream,
) -> Result<Option<(Arc<dyn Protocol>, Target, Bytes)>> {
    let most = protocols
        .iter()
        .map(|p| p.bytes_needed())
        .max()
        .unwrap_or(0);
    let wait = protocols
        .iter()
        .map(|p| p.timeout())
        .max()
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + wait;
    let mut candidates: Vec<&Arc<dyn Protocol>> = protocols.iter().collect();
    let mut buf = BytesMut::with_capacity(most.clamp(512, 16 * 1024));
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await;
        let n = match read {
            Ok(r) => r.map_err(Error::client_io)?,
            Err(_) if buf.is_empty() => return Ok(None),
            Err(_) => return Err(Error::ClientTimeout),
        };
        if n == 0 && buf.is_empty() {
            return Ok(None);
        }
        let mut kept = Vec::with_capacity(candidates.len());
        for p in candidates {
            match p.resolve(conn, &buf).await {
                Resolution::Accept(target) => return Ok(Some((p.clone(), target, buf.freeze()))),
                Resolution::NeedMore if n > 0 && buf.len() < p.bytes_needed() => kept.push(p),
                _ => {}
            }
        }
        candidates = kept;
        if candidates.is_empty() {
            return Err(Error::NoProtocol);
        }
    }
}

/// Logs how a connection failed, at a level that matches whose fault it was.
fn report(cx: &Context, conn: &Connection, e: &Error) {
    let chain = crate::error::Report(e);
    let target = conn.target.as_ref().map(ToString::to_string);
    match e {
        // A client that just left mid-handshake (reset, EOF) said nothing about trust.
        Error::ClientTls { source, .. } if !is_tls_failure(source) => {
            tracing::debug!(error = %chain, "client went away during the TLS handshake")
        }
        // The tunnel has said already whether it learned the host.
        Error::ClientTls { .. } if cx.fail_open.is_some() => tracing::warn!(
            error = %chain,
            "client refused the TLS handshake; does it trust the mitm CA certificate? \
             (TLS fail-open passes its host through for a while if its origin verified)"
        ),
        Error::ClientTls { .. } => tracing::warn!(
            error = %chain,
            "client refused the TLS handshake; does it trust the mitm CA certificate?"
        ),
        _ if e.side() == Side::Client => tracing::debug!(error = %chain, "client failed"),
        _ => tracing::warn!(error = %chain, target, "connection failed"),
    }
}

/// Whether a handshake error came from TLS itself (an alert, a bad message) rather than
/// from the connection going away under it.
fn is_tls_failure(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        || e.kind() == std::io::ErrorKind::InvalidData
}
