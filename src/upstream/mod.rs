//! Reaching upstream servers: name lookup ([`Resolve`], [`SystemResolver`]) and TLS
//! with them ([`UpstreamTls`]) are the parts you can configure.
//!
//! Inside, this is the one place that reaches origin servers. `Upstreams` dials (name
//! lookup, TCP with a deadline, TLS with ALPN), counts every connection it opens
//! against the server's connection limit, and keeps connections for reuse in its pool
//! (`pool.rs`): idle HTTP/1.1 ones and shared HTTP/2 ones. An exchange asks it for a
//! `Link` to an origin; a `CONNECT` asks it for a bare TCP connection, and later for
//! TLS over it. Every connection goes by a `Route`: straight to the origin, or through
//! an upstream proxy (`proxy.rs`: `CONNECT`, SOCKS5, or absolute-form requests to an HTTP
//! proxy), and the pool keeps connections per route and origin. Which hooks fire is the
//! callers' business: `server_connected` belongs to a client connection's view of its
//! server.

pub(crate) mod pool;
mod proxy;
mod resolve;
pub mod route;
mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::client::TlsStream;

pub use self::resolve::{Resolve, SystemResolver};
pub use self::tls::UpstreamTls;

use self::pool::{Key, Pool, Shared};
pub use self::route::{ProxyScheme, Route, UpstreamProxy};
use crate::core::{ServerFacts, SocketFacts, Target, TlsFacts};
use crate::error::{Error, Result};
use crate::net::io::{BoxIo, ReadAhead};
use crate::wire::h1::Buffers;

/// A place under the server's connection limit, given back when dropped.
pub(crate) type Permit = OwnedSemaphorePermit;

/// ALPN protocol ids.
pub(crate) const H2: &[u8] = b"h2";
pub(crate) const HTTP11: &[u8] = b"http/1.1";

/// An open connection to an origin.
pub(crate) struct Upstream {
    pub io: BoxIo,
    /// The address reached.
    pub addr: SocketAddr,
    /// The origin, as requests name it.
    pub target: Target,
    /// How it reaches the origin (the pool's key, with the target).
    pub route: Route,
    /// The connection's place under the connection limit.
    pub permit: Permit,
    /// HTTP/1.1 buffers kept between the exchanges of one client connection (none in
    /// the pool, where they would only hold memory).
    pub buffers: Buffers,
    /// Its times, local address and TLS, for the flows that go over it.
    pub facts: Arc<ServerFacts>,
}

impl std::fmt::Debug for Tcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tcp")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// A connection just made to an origin (through the route's proxy, if any), not yet
/// used: a `TcpStream` when direct.
pub(crate) struct Tcp {
    pub stream: BoxIo,
    pub addr: SocketAddr,
    pub permit: Permit,
    /// When it was begun and made, and the proxy's address on it (when direct).
    pub socket: SocketFacts,
}

/// The facts of an upstream connection made as `socket` says, after a TLS handshake
/// `tls` (naming `sni`, offering `alpn`) when there was one: just after the handshake.
pub(crate) fn facts_of(
    socket: SocketFacts,
    tls: Option<(&rustls::ClientConnection, &str, &[Vec<u8>])>,
) -> Arc<ServerFacts> {
    let mut facts = ServerFacts {
        socket,
        ..ServerFacts::default()
    };
    if let Some((tls, sni, alpn)) = tls {
        facts.socket.tls_setup = Some(SystemTime::now());
        facts.tls = TlsFacts::of_client(tls, sni, alpn);
    }
    Arc::new(facts)
}

/// A way to send one exchange to an origin.
#[derive(Debug)]
pub(crate) enum Link {
    /// An HTTP/1.1 connection of its own, for one exchange at a time.
    H1 {
        up: Upstream,
        /// Taken from the pool: the origin may have closed it meanwhile.
        reused: bool,
    },
    /// A stream of a shared HTTP/2 connection.
    H2 {
        shared: Shared,
        target: Target,
        route: Route,
        /// An existing connection: it may have gone away meanwhile.
        reused: bool,
    },
}

impl Link {
    /// The origin this link reaches.
    pub(crate) fn target(&self) -> &Target {
        match self {
            Link::H1 { up, .. } => &up.target,
            Link::H2 { target, .. } => target,
        }
    }

    /// How this link reaches its origin.
    pub(crate) fn route(&self) -> &Route {
        match self {
            Link::H1 { up, .. } => &up.route,
            Link::H2 { route, .. } => route,
        }
    }

    /// The address of the origin this link reaches.
    pub(crate) fn addr(&self) -> SocketAddr {
        match self {
            Link::H1 { up, .. } => up.addr,
            Link::H2 { shared, .. } => shared.addr,
        }
    }

    /// What the proxy knows of the connection this link goes over.
    pub(crate) fn facts(&self) -> &Arc<ServerFacts> {
        match self {
            Link::H1 { up, .. } => &up.facts,
            Link::H2 { shared, .. } => &shared.facts,
        }
    }
}

/// What an exchange accepts from [`Upstreams::link`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want {
    /// HTTP/2 may carry it (not for protocol upgrades such as WebSocket).
    pub h2: bool,
    /// A new connection, not one from the pool (a retry after a stale one).
    pub fresh: bool,
}

/// The upstream side of one server: dialing, the connection limit, the pool.
pub(crate) struct Upstreams {
    resolver: Arc<dyn Resolve>,
    tls: Arc<UpstreamTls>,
    pool: Pool,
    limit: Arc<Semaphore>,
    max_connections: usize,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("pool", &self.pool)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// How often expired and dead pooled connections are let go.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl Upstreams {
    /// The upstream side of a server whose connections (client and upstream alike)
    /// share `limit`, of `max_connections` places.
    pub(crate) fn new(
        resolver: Arc<dyn Resolve>,
        tls: Arc<UpstreamTls>,
        limit: Arc<Semaphore>,
        max_connections: usize,
    ) -> Arc<Self> {
        Arc::new(Upstreams {
            resolver,
            tls,
            pool: Pool::default(),
            limit,
            max_connections,
        })
    }

    /// Sweeps the pool now and then, until the server is gone. Needs a runtime.
    pub(crate) fn start_sweeping(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                match weak.upgrade() {
                    Some(upstreams) => upstreams.pool.sweep(),
                    None => return,
                }
            }
        });
    }

    /// The resolver for upstream names.
    pub(crate) fn resolver(&self) -> &Arc<dyn Resolve> {
        &self.resolver
    }

    /// A place under the connection limit, closing an idle pooled connection to make
    /// one if need be.
    pub(crate) fn permit(&self) -> Result<Permit> {
        loop {
            if let Ok(permit) = self.limit.clone().try_acquire_owned() {
                return Ok(permit);
            }
            if !self.pool.evict_one() {
                return Err(Error::ConnectionLimit {
                    limit: self.max_connections,
                });
            }
        }
    }

    /// A connection to `target` by `route`, within `timeout`: TCP to the target (the
    /// first of its addresses that answers), or through the route's proxy a tunnel to
    /// it (`CONNECT`, SOCKS5). Sockets have `TCP_NODELAY` set: the proxy writes whole
    /// messages, and Nagle's algorithm would only delay them.
    pub(crate) async fn tcp(
        &self,
        route: &Route,
        target: &Target,
        timeout: Duration,
    ) -> Result<Tcp> {
        self.open(route, target, true, timeout).await
    }

    /// [`tcp`](Self::tcp), except that through an HTTP proxy a plain-HTTP target gets
    /// the proxy itself (`tunnel` false), to which requests go in absolute form.
    async fn open(
        &self,
        route: &Route,
        target: &Target,
        tunnel: bool,
        timeout: Duration,
    ) -> Result<Tcp> {
        let permit = self.permit()?;
        let started = SystemTime::now();
        let attempt = async {
            match route {
                Route::Direct => {
                    let (stream, addr) = self.connect_tcp(target).await?;
                    let local = stream.local_addr().ok();
                    Ok((Box::new(stream) as BoxIo, addr, local))
                }
                Route::Proxy(proxy) => proxy::open(self, proxy, target, tunnel)
                    .await
                    .map(|(stream, addr)| (stream, addr, None)),
            }
        };
        let (stream, addr, local) = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::ConnectTimeout {
                    target: match route {
                        Route::Direct => target.to_string(),
                        Route::Proxy(proxy) => format!("{target} through {proxy}"),
                    },
                })
            }
        };
        Ok(Tcp {
            stream,
            addr,
            permit,
            socket: SocketFacts {
                local,
                started: Some(started),
                tcp_setup: Some(SystemTime::now()),
                tls_setup: None,
            },
        })
    }

    /// TCP to the first address of `target` that answers, with `TCP_NODELAY`.
    pub(crate) async fn connect_tcp(&self, target: &Target) -> Result<(TcpStream, SocketAddr)> {
        let addrs = self
            .resolver
            .resolve(&target.host, target.port)
            .await
            .map_err(|source| Error::Resolve {
                host: target.host.clone(),
                source,
            })?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Failing to set the option only costs latency.
                    let _ = stream.set_nodelay(true);
                    return Ok((stream, addr));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Error::Connect {
            target: target.to_string(),
            source: last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no addresses")),
        })
    }

    /// Runs the TLS handshake with `target` over `tcp`, naming `server_name` by SNI
    /// and offering `alpn`, within `timeout`.
    pub(crate) async fn handshake<S>(
        &self,
        tcp: S,
        target: &Target,
        server_name: &str,
        alpn: &[Vec<u8>],
        timeout: Duration,
    ) -> Result<TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let handshake = self.tls.connect(tcp, target, server_name, alpn);
        match tokio::time::timeout(timeout, handshake).await {
            Ok(r) => r,
            Err(_) => Err(Error::ConnectTimeout {
                target: target.to_string(),
            }),
        }
    }

    /// A new connection to `target`: TCP, then TLS offering `alpn` when the target
    /// speaks it, all within `timeout`. Returns it with the protocol the origin chose.
    pub(crate) async fn dial(
        &self,
        route: &Route,
        target: &Target,
        alpn: &[Vec<u8>],
        upgrade: bool,
        timeout: Duration,
    ) -> Result<(Upstream, Option<Vec<u8>>)> {
        let started = tokio::time::Instant::now();
        // Plain HTTP through an HTTP proxy goes to the proxy itself, in absolute form,
        // unless the request switches protocols (a tunnel carries what follows).
        let tunnel = target.tls || upgrade;
        let tcp = self.open(route, target, tunnel, timeout).await?;
        if !target.tls {
            let up = Upstream {
                facts: facts_of(tcp.socket, None),
                io: tcp.stream,
                addr: tcp.addr,
                target: target.clone(),
                route: route.clone(),
                permit: tcp.permit,
                buffers: Buffers::default(),
            };
            return Ok((up, None));
        }
        let left = timeout.saturating_sub(started.elapsed());
        let Tcp {
            stream,
            addr,
            permit,
            socket,
        } = tcp;
        let tls = self
            .handshake(ReadAhead::new(stream), target, &target.host, alpn, left)
            .await?;
        let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let facts = facts_of(socket, Some((tls.get_ref().1, &target.host, alpn)));
        let up = Upstream {
            io: Box::new(tls),
            addr,
            target: target.clone(),
            route: route.clone(),
            permit,
            buffers: Buffers::default(),
            facts,
        };
        Ok((up, chosen))
    }

    /// A way to `target` for one exchange: its shared HTTP/2 connection, an idle
    /// HTTP/1.1 one, or a new connection (offering HTTP/2 over TLS when `want.h2`).
    pub(crate) async fn link(
        &self,
        route: &Route,
        target: &Target,
        want: Want,
        timeout: Duration,
    ) -> Result<Link> {
        // A protocol switch through an HTTP proxy needs a tunnel of its own: pooled
        // connections to the proxy carry absolute-form requests.
        let upgrade = !want.h2 && !target.tls && route.upstream_proxy().is_some();
        if !want.fresh && !upgrade {
            let pooled = if want.h2 {
                self.pooled(route, target)
            } else {
                self.idle(route, target)
            };
            if let Some(link) = pooled {
                return Ok(link);
            }
        }
        let alpn: Vec<Vec<u8>> = if want.h2 {
            vec![H2.to_vec(), HTTP11.to_vec()]
        } else {
            vec![HTTP11.to_vec()]
        };
        let (up, chosen) = self.dial(route, target, &alpn, upgrade, timeout).await?;
        if chosen.as_deref() == Some(H2) {
            let shared = self.share(up).await?;
            return Ok(Link::H2 {
                shared,
                target: target.clone(),
                route: route.clone(),
                reused: false,
            });
        }
        Ok(Link::H1 { up, reused: false })
    }

    /// Starts HTTP/2 on `up` (which negotiated it) and shares the connection through
    /// the pool. A task of its own drives it, holding its place under the connection
    /// limit until it ends.
    pub(crate) async fn share(&self, up: Upstream) -> Result<Shared> {
        let Upstream {
            io,
            addr,
            target,
            route,
            permit,
            facts,
            ..
        } = up;
        let (send, connection) = crate::wire::h2::client_handshake(io).await?;
        let shared = Shared::new(send, addr, facts);
        let closed = shared.closed_flag();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP/2 upstream connection ended");
            }
            closed();
            drop(permit);
        });
        self.pool.put_shared((route, target), shared.clone());
        Ok(shared)
    }

    /// Keeps an HTTP/1.1 connection whose last exchange left it reusable.
    pub(crate) fn give_back(&self, mut up: Upstream) {
        let key: Key = (up.route.clone(), up.target.clone());
        up.buffers = Buffers::default();
        self.pool.put(key, up);
    }

    /// The shared HTTP/2 connection to `target`, if one is up, without dialing.
    pub(crate) fn shared(&self, route: &Route, target: &Target) -> Option<Link> {
        let key = (route.clone(), target.clone());
        self.pool.shared(&key).map(|shared| Link::H2 {
            shared,
            target: target.clone(),
            route: route.clone(),
            reused: true,
        })
    }

    /// An idle HTTP/1.1 connection to `target` that is still open, without dialing.
    fn idle(&self, route: &Route, target: &Target) -> Option<Link> {
        let key = (route.clone(), target.clone());
        self.pool.take(&key).map(|up| Link::H1 { up, reused: true })
    }

    /// The shared HTTP/2 connection to `target`, or an idle HTTP/1.1 one, without
    /// dialing.
    pub(crate) fn pooled(&self, route: &Route, target: &Target) -> Option<Link> {
        self.shared(route, target)
            .or_else(|| self.idle(route, target))
    }
}
