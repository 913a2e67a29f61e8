//! Tunnels after a `CONNECT` was answered `200`: whoever speaks first decides what the
//! tunnel is.
//!
//! - The server speaks first (SSH, SMTP, any banner): the tunnel is a raw relay at
//!   once, the banner first.
//! - The client speaks TLS: its ClientHello is read whole without consuming it
//!   (`client_hello::peek`: SNI, ALPN). A host whose client refused the proxy's
//!   certificate lately goes through untouched (TLS fail-open, `fail_open`), and so
//!   does one a middleware lets through (`should_intercept`); otherwise TLS is
//!   intercepted: the upstream handshake runs first (with the client's SNI, over the
//!   connection made for the `CONNECT`, or one the pool already holds), then the
//!   client's, with a leaf for that name and the protocol the origin chose, and the
//!   exchange serves HTTP/2 or HTTP/1 inside. A client that refuses the leaf of an
//!   origin that was reached and verified teaches fail-open its host.
//! - The client speaks anything else: a raw relay to the target.
//!
//! A router's [`payload`](crate::middleware::Router::payload) may ask for the bytes to be
//! relayed raw (`--tcp-hosts`): plain HTTP then goes through as it is, and intercepted
//! TLS carries the decrypted bytes as they are, with the ALPN the origin chose. Plain
//! HTTP goes through as it is too when `should_intercept` passes its host through.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_rustls::LazyConfigAcceptor;

use crate::core::{Connection, Host, Target};
use crate::engine::context::Context;
use crate::engine::exchange::serve_h1::{self, Opened, Served, Start};
use crate::engine::exchange::serve_h2;
use crate::engine::exchange::Ahead;
use crate::engine::relay::{RelayOptions, Tunnel};
use crate::error::{Error, Report, Result};
use crate::http::page;
use crate::http::settings::Settings;
use crate::http::target::Scope;
use crate::middleware::{Interception, Payload};
use crate::net::io::{rewound, BoxIo, ReadAhead};
use crate::tls::fail_open::{self, Abort};
use crate::upstream::{Link, Route, Tcp, Upstream, H2, HTTP11};
use crate::wire::client_hello::{self, ClientHello};
use crate::wire::h1::parse::RequestLine;
use crate::wire::h1::write;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Runs the tunnel of an answered `CONNECT` until it ends.
pub(crate) async fn run(
    cx: &Context,
    settings: &Settings,
    conn: &mut Connection,
    opened: Opened,
) -> Result<()> {
    let Opened {
        mut client,
        target,
        route,
        mut ahead,
    } = opened;
    // A hook answered the `CONNECT`: the requests inside get its answer, and no origin
    // is reached.
    conn.tunnel_answered = matches!(ahead, Ahead::Answered);
    let server = match &mut ahead {
        Ahead::Tcp(tcp) => Some(&mut tcp.stream),
        _ => None,
    };
    let first = first_speaker(&mut client, server, settings.handshake_timeout).await;
    let first = match first {
        Ok(Speaker::Client(first)) => first,
        Ok(Speaker::Server(banner)) => {
            tracing::debug!(%target, "the server spoke first: relaying as it is");
            let Ahead::Tcp(tcp) = ahead else {
                return Ok(());
            };
            return relay_raw(cx, settings, conn, client, banner, tcp).await;
        }
        other => {
            release(cx, ahead);
            return other.map(|_| ());
        }
    };
    let (first, hello) = match read_hello(&mut client, first, settings.handshake_timeout).await {
        Ok((first, hello)) if !first.is_empty() => (first, hello),
        other => {
            release(cx, ahead);
            return other.map(|_| ());
        }
    };
    // The bytes read go back in front, so the TLS acceptor or the relay (and its data
    // hooks) read them as if nothing had happened: a connection let through reaches
    // the origin byte for byte.
    let speaks_http = hello.is_none()
        && matches!(
            crate::wire::h1::parse::request_line(&first),
            RequestLine::Valid { .. }
        );
    let client = rewound(client, first);
    if speaks_http {
        if !conn.tunnel_answered
            && !settings.is_magic(&target.host)
            && relay_http_raw(cx, conn).await
        {
            tracing::debug!(%target, "relaying HTTP as raw bytes, as a router asked");
            return pass_through(cx, settings, conn, client, &target, &route, ahead).await;
        }
        return serve_plain(cx, settings, conn, client, &target, route, ahead).await;
    }
    let Some(hello) = hello else {
        if conn.tunnel_answered {
            tracing::debug!(%target, "neither HTTP nor TLS in a tunnel a hook answered: closing");
            return Ok(());
        }
        return pass_through(cx, settings, conn, client, &target, &route, ahead).await;
    };
    // No origin behind the tunnel: the proxy answers every request itself.
    let local = settings.is_magic(&target.host) || conn.tunnel_answered;
    let server_name = hello.server_name.as_deref();
    // The name a leaf would be for, as `Intercept::run` picks it.
    let leaf_name = server_name.unwrap_or(&target.host);
    let learned = cx
        .fail_open
        .as_ref()
        .is_some_and(|f| f.should_pass(leaf_name, target.port));
    if !local && learned {
        tracing::debug!(%target, sni = ?server_name, "its client refused our certificate lately: passing TLS through");
        return pass_through(cx, settings, conn, client, &target, &route, ahead).await;
    }
    if !local && cx.chain.tls_clienthello(conn, &hello).await == Interception::PassThrough {
        tracing::debug!(target = %target, sni = ?server_name, "passing TLS through untouched");
        return pass_through(cx, settings, conn, client, &target, &route, ahead).await;
    }
    let raw = !local && cx.chain.payload(conn, server_name).await == Payload::Raw;
    let tls = Intercept {
        cx,
        settings,
        target,
        route,
        hello,
        local,
        raw,
    };
    tls.run(conn, client, ahead).await
}

/// Whether plain HTTP in a tunnel to `conn.target` goes through unparsed: a router
/// passes the host through (`--ignore-hosts`, `--allow-hosts`, as mitmproxy ignores a
/// host's connections whatever they carry) or asks for raw bytes (`--tcp-hosts`).
pub(crate) async fn relay_http_raw(cx: &Context, conn: &Connection) -> bool {
    cx.chain.should_intercept(conn, None).await == Interception::PassThrough
        || cx.chain.payload(conn, None).await == Payload::Raw
}

/// Gives back what a `CONNECT` reached and the tunnel does not use.
fn release(cx: &Context, ahead: Ahead) {
    if let Ahead::Pooled(link) = ahead {
        crate::engine::exchange::give_back(cx, link);
    }
}

/// Who spoke first in a tunnel.
enum Speaker {
    /// The client closed without a byte.
    Nobody,
    /// The client, with these bytes.
    Client(BytesMut),
    /// The server, with these bytes (maybe none: it closed).
    Server(Bytes),
}

/// Waits for the first bytes of either side (the server's only when connected).
async fn first_speaker<S: AsyncRead + Unpin>(
    client: &mut BoxIo,
    server: Option<&mut S>,
    timeout: Duration,
) -> Result<Speaker> {
    let mut from_client = BytesMut::with_capacity(8192);
    let mut from_server = BytesMut::new();
    let wait = async {
        match server {
            Some(server) => {
                from_server.reserve(8192);
                tokio::select! {
                    read = client.read_buf(&mut from_client) => (true, read),
                    read = server.read_buf(&mut from_server) => (false, read),
                }
            }
            None => (true, client.read_buf(&mut from_client).await),
        }
    };
    let (client_spoke, read) = tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| Error::ClientTimeout)?;
    Ok(match (client_spoke, read) {
        (true, Ok(0)) => Speaker::Nobody,
        (true, Ok(_)) => Speaker::Client(from_client),
        (true, Err(e)) => return Err(Error::client_io(e)),
        (false, Ok(_)) => Speaker::Server(from_server.freeze()),
        (false, Err(e)) => return Err(Error::server_io(e)),
    })
}

/// Reads the rest of a ClientHello when `buf` starts one: the bytes, with the hello
/// (`Some`) or without (`None`: not TLS). Empty bytes mean the client left in the
/// middle of its ClientHello.
async fn read_hello(
    client: &mut BoxIo,
    mut buf: BytesMut,
    timeout: Duration,
) -> Result<(Bytes, Option<ClientHello>)> {
    if buf.first() != Some(&TLS_HANDSHAKE) {
        return Ok((buf.freeze(), None));
    }
    loop {
        match client_hello::peek(&buf) {
            client_hello::Peek::Hello(hello) => return Ok((buf.freeze(), Some(hello))),
            client_hello::Peek::Invalid => return Ok((buf.freeze(), None)),
            client_hello::Peek::NeedMore => {}
        }
        let read = tokio::time::timeout(timeout, client.read_buf(&mut buf))
            .await
            .map_err(|_| Error::ClientTimeout)?
            .map_err(Error::client_io)?;
        if read == 0 {
            // Half a ClientHello and then the end: nothing to intercept or pass on.
            return Ok((Bytes::new(), None));
        }
    }
}

/// Serves plain HTTP/1 inside a tunnel: each request goes to the tunnel's target
/// through the exchange (hooks, routing, pooling), its `Host` passed on as sent.
async fn serve_plain(
    cx: &Context,
    settings: &Settings,
    conn: &mut Connection,
    client: BoxIo,
    target: &Target,
    route: Route,
    ahead: Ahead,
) -> Result<()> {
    let origin = Target::new(target.host.clone(), target.port, false);
    conn.target = Some(origin.clone());
    // The connection made for the tunnel carries the first exchange, unless an HTTP
    // proxy is on the route: plain requests go to one in absolute form, on a connection
    // of their own.
    let start = match ahead {
        Ahead::Tcp(tcp) if !route_is_http_proxy(&route) => {
            conn.server = Host::new(tcp.addr);
            let facts = crate::upstream::facts_of(tcp.socket, None);
            conn.server_facts = Some(facts.clone());
            cx.announce_server(conn).await;
            Start::H1(Upstream {
                facts,
                io: tcp.stream,
                addr: tcp.addr,
                target: origin.clone(),
                route,
                permit: tcp.permit,
                buffers: crate::wire::h1::Buffers::default(),
            })
        }
        other => {
            // A pooled connection to the target speaks TLS: not for plain requests.
            release(cx, other);
            Start::Nothing
        }
    };
    let scope = Scope::Destination(origin);
    let served = serve_h1::serve(cx, settings, conn, client, Bytes::new(), scope, start).await?;
    // A tunnel's engine refuses `CONNECT` itself.
    debug_assert!(matches!(served, Served::Closed));
    Ok(())
}

/// Whether `route` goes through an HTTP (or HTTPS) proxy.
fn route_is_http_proxy(route: &Route) -> bool {
    route
        .upstream_proxy()
        .is_some_and(|p| p.scheme() != crate::upstream::route::ProxyScheme::Socks5)
}

/// Relays a tunnel without looking inside: to the `CONNECT` target, bytes as they are.
async fn pass_through(
    cx: &Context,
    settings: &Settings,
    conn: &mut Connection,
    client: BoxIo,
    target: &Target,
    route: &Route,
    ahead: Ahead,
) -> Result<()> {
    let tcp = match ahead {
        Ahead::Tcp(tcp) => tcp,
        other => {
            // A pooled connection speaks TLS or HTTP already: a raw tunnel needs its
            // own.
            release(cx, other);
            cx.upstreams
                .tcp(route, target, settings.connect_timeout)
                .await?
        }
    };
    relay_raw(cx, settings, conn, client, Bytes::new(), tcp).await
}

/// Relays `client` and the target's connection `tcp` as they are, `banner` (bytes the
/// server sent already) first.
async fn relay_raw(
    cx: &Context,
    settings: &Settings,
    conn: &mut Connection,
    client: BoxIo,
    banner: Bytes,
    tcp: Tcp,
) -> Result<()> {
    let Tcp {
        stream,
        addr,
        permit,
        socket,
    } = tcp;
    conn.server = Host::new(addr);
    conn.server_facts = Some(crate::upstream::facts_of(socket, None));
    cx.announce_server(conn).await;
    let server = rewound(stream, banner);
    let opts = RelayOptions {
        buffer_size: settings.buffer_size,
        idle_timeout: None,
        zero_copy: settings.zero_copy,
    };
    let relayed = cx.relay_with(conn, Tunnel::new(client, server), opts).await;
    drop(permit);
    relayed
}

/// An upstream reached for an intercepted tunnel.
enum Reached {
    /// For HTTP: a link the exchanges use.
    Http(Link),
    /// For another protocol: a TLS connection relayed as it is, with the protocol the
    /// origin chose.
    Raw(Upstream, Option<Vec<u8>>),
}

/// TLS interception of one tunnel.
struct Intercept<'a> {
    cx: &'a Context,
    settings: &'a Settings,
    /// The `CONNECT` target.
    target: Target,
    /// How the tunnel reaches it.
    route: Route,
    hello: ClientHello,
    /// No origin: the proxy answers every request (the magic host, or a `CONNECT` a
    /// hook answered).
    local: bool,
    /// A router asked for the decrypted bytes to be relayed as they are (no HTTP).
    raw: bool,
}

impl Intercept<'_> {
    async fn run(self, conn: &mut Connection, client: BoxIo, ahead: Ahead) -> Result<()> {
        let (cx, settings) = (self.cx, self.settings);
        let start = accept_hello(client, &self.target.host, settings.handshake_timeout).await?;
        let name = self
            .hello
            .server_name
            .clone()
            .unwrap_or_else(|| self.target.host.clone());
        conn.tls = true;
        // The client speaks HTTP/2 with the proxy when it offers it, HTTP/1.1
        // otherwise; the origin is offered both and picks, each side speaking what it
        // can. A client offering neither gets its bytes relayed with the protocol the
        // origin picks from the client's own list.
        let offered = &self.hello.alpn;
        // Relayed raw, the client is handled as one offering neither.
        let client_h2 = !self.raw && offered.iter().any(|p| p == H2);
        let speaks_h1 = !self.raw && (offered.is_empty() || offered.iter().any(|p| p == HTTP11));
        let http = client_h2 || speaks_h1;
        let origin = Target::new(name.clone(), self.target.port, true);
        conn.target = Some(origin.clone());

        let reached = if self.local {
            Ok(None)
        } else {
            self.reach(&origin, &name, ahead, http).await.map(Some)
        };
        let for_client = if client_h2 {
            Some(H2.to_vec())
        } else if speaks_h1 {
            Some(HTTP11.to_vec())
        } else {
            match &reached {
                Ok(Some(Reached::Raw(_, alpn))) => alpn.clone(),
                _ => None,
            }
        };
        let config = cx.with_key_log(leaf_config(cx, &name, for_client.as_deref())?);
        let handshake = start.into_stream(config);
        let mut client = match tokio::time::timeout(settings.handshake_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(source)) => {
                self.learn_refusal(&name, &reached, &source);
                return Err(Error::ClientTls { host: name, source });
            }
            Err(_) => return Err(Error::ClientTimeout),
        };
        conn.client_socket.tls_setup = Some(std::time::SystemTime::now());
        let offers = offered
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        conn.tls_facts = crate::core::TlsFacts::of_server(client.get_ref().1, offers);
        let reached = match reached {
            Ok(None) => None,
            Ok(Some(reached)) => {
                let (addr, facts) = match &reached {
                    Reached::Http(link) => (link.addr(), link.facts()),
                    Reached::Raw(up, _) => (up.addr, &up.facts),
                };
                conn.server = Host::new(addr);
                conn.server_facts = Some(facts.clone());
                cx.announce_server(conn).await;
                Some(reached)
            }
            // An HTTP client gets its error page from the exchange, per request (per
            // stream for HTTP/2), through the hooks: each tries the origin again and
            // answers with what failed.
            Err(e) if http => {
                tracing::debug!(error = %Report(&e), "upstream failed; the exchanges will say so");
                None
            }
            Err(e) => return fail(&mut client, e).await,
        };
        let client: BoxIo = Box::new(client);
        match reached {
            Some(Reached::Raw(up, _)) => {
                let tunnel = Tunnel::new(client, up.io);
                let relayed = cx.relay(conn, tunnel, settings.buffer_size, None).await;
                drop(up.permit);
                relayed
            }
            None if !http => Ok(()),
            reached if client_h2 => {
                let spare = match reached {
                    Some(Reached::Http(link)) => Some(link),
                    _ => None,
                };
                serve_h2::serve(cx, settings, conn, client, Scope::Tunnel(origin), spare).await
            }
            reached => {
                let start = match reached {
                    Some(Reached::Http(Link::H1 { up, .. })) => Start::H1(up),
                    Some(Reached::Http(Link::H2 { target, .. })) => Start::H2(target),
                    _ => Start::Nothing,
                };
                let scope = Scope::Tunnel(origin);
                let served =
                    serve_h1::serve(cx, settings, conn, client, Bytes::new(), scope, start).await?;
                // Inside a tunnel the engine refuses `CONNECT` itself.
                debug_assert!(matches!(served, Served::Closed));
                Ok(())
            }
        }
    }

    /// With TLS fail-open on, records `name` (on the target's port) as passed through
    /// when the client's handshake failed with `e` because it refused the leaf, and the
    /// origin was reached and verified (`reached`). A host whose origin failed is
    /// never learned: passing it through would hide that failure from the client's
    /// error page.
    fn learn_refusal(&self, name: &str, reached: &Result<Option<Reached>>, e: &std::io::Error) {
        let Some(learned) = &self.cx.fail_open else {
            return;
        };
        if fail_open::abort_of(e) != Abort::Refused {
            return;
        }
        let port = self.target.port;
        match reached {
            Ok(Some(_)) => {}
            // No origin (the magic host, an answered tunnel): never passed through.
            Ok(None) => return,
            Err(up) => {
                tracing::debug!(
                    host = %name, port, upstream = %Report(up),
                    "client refused our certificate, but its origin failed: not passing it through"
                );
                return;
            }
        }
        if learned.learn(name, port) {
            let time = fail_open::human(learned.ttl());
            tracing::warn!(
                "client refused our certificate for {name}:{port}; passing {name}:{port} through for {time}"
            );
        }
    }

    /// The upstream for `origin`: for HTTP, the pooled connection the `CONNECT` took, or
    /// one the pool holds now (a connection already up costs no second handshake);
    /// else TLS over the connection made for the `CONNECT` (or a new one), naming `name`
    /// by SNI and offering what the client can use.
    async fn reach(
        &self,
        origin: &Target,
        name: &str,
        ahead: Ahead,
        http: bool,
    ) -> Result<Reached> {
        let (cx, settings) = (self.cx, self.settings);
        let tcp = match ahead {
            Ahead::Pooled(link) if http && link.target() == origin => {
                return Ok(Reached::Http(link));
            }
            Ahead::Tcp(tcp) => Some(tcp),
            other => {
                release(cx, other);
                None
            }
        };
        if http {
            if let Some(link) = cx.upstreams.pooled(&self.route, origin) {
                // Dropping a bare TCP connection costs less than a TLS handshake.
                return Ok(Reached::Http(link));
            }
        }
        let timeout = settings.connect_timeout;
        let tcp = match tcp {
            Some(tcp) => tcp,
            None => cx.upstreams.tcp(&self.route, &self.target, timeout).await?,
        };
        let alpn = if http {
            vec![H2.to_vec(), HTTP11.to_vec()]
        } else {
            self.hello.alpn.clone()
        };
        let Tcp {
            stream,
            addr,
            permit,
            socket,
        } = tcp;
        let tls = cx
            .upstreams
            .handshake(ReadAhead::new(stream), &self.target, name, &alpn, timeout)
            .await?;
        let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let facts = crate::upstream::facts_of(socket, Some((tls.get_ref().1, name, &alpn)));
        let up = Upstream {
            io: Box::new(tls),
            addr,
            target: origin.clone(),
            route: self.route.clone(),
            permit,
            buffers: crate::wire::h1::Buffers::default(),
            facts,
        };
        if !http {
            return Ok(Reached::Raw(up, chosen));
        }
        if chosen.as_deref() == Some(H2) {
            let shared = cx.upstreams.share(up).await?;
            return Ok(Reached::Http(Link::H2 {
                shared,
                target: origin.clone(),
                route: self.route.clone(),
                reused: false,
            }));
        }
        Ok(Reached::Http(Link::H1 { up, reused: false }))
    }
}

/// Reads a client's ClientHello with rustls, within `timeout`, to choose the server
/// config from it; `host` names the connection in errors. The TLS stream reads its
/// socket through a [`ReadAhead`]: large reads when a body streams in.
pub(crate) async fn accept_hello(
    client: BoxIo,
    host: &str,
    timeout: Duration,
) -> Result<tokio_rustls::StartHandshake<ReadAhead<BoxIo>>> {
    let accept = LazyConfigAcceptor::new(Acceptor::default(), ReadAhead::new(client));
    match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(start)) => Ok(start),
        Ok(Err(source)) => Err(Error::ClientTls {
            host: host.to_string(),
            source,
        }),
        Err(_) => Err(Error::ClientTimeout),
    }
}

/// The TLS server config for a leaf of `host`, announcing `alpn` (the upstream's pick).
/// The common case, HTTP/1.1 or no ALPN, is the CA's cached config.
fn leaf_config(cx: &Context, host: &str, alpn: Option<&[u8]>) -> Result<Arc<rustls::ServerConfig>> {
    match alpn {
        None | Some(HTTP11) => cx.ca.server_config(host),
        Some(proto) => {
            // Same leaf, other ALPN: a shallow clone of the cached config.
            let mut config = (*cx.ca.server_config(host)?).clone();
            config.alpn_protocols = vec![proto.to_vec()];
            Ok(Arc::new(config))
        }
    }
}

/// Answers the client with the error page for `e` (inside TLS, where it can read it),
/// then hands `e` back to be logged.
async fn fail<W: tokio::io::AsyncWrite + Unpin>(client: &mut W, e: Error) -> Result<()> {
    let out = write::local_response(&page::error(&e), "", Some("close"));
    // The client may be gone already; the original error is what matters.
    let _ = client.write_all(&out).await;
    let _ = client.shutdown().await;
    Err(e)
}
