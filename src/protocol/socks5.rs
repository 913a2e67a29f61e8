//! The built-in [`Socks5`] protocol: a SOCKS5 proxy (RFC 1928, `CONNECT` only) with
//! username/password authentication (RFC 1929) when the server asks clients for
//! credentials.
//!
//! After the handshake the connection is a tunnel like the one an HTTP `CONNECT` opens,
//! and the same code runs it (`crate::engine::tunnel`): TLS is intercepted or let through,
//! what the server says first is relayed as it is, anything else is relayed to the
//! target. The wire format is `crate::wire::socks5`'s.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::{Connected, Context, Http, Protocol, Resolution};
use crate::core::{Connection, Target};
use crate::engine::exchange::serve_h1::Opened;
use crate::engine::exchange::Ahead;
use crate::error::{Error, Result};
use crate::http::settings::Settings;
use crate::middleware::TunnelVerdict;
use crate::net::io::{rewound, BoxIo};
use crate::upstream::route::Route;
use crate::wire::socks5::{self, Command, Credentials, Greeting, Reply, Step};

/// A SOCKS5 proxy: clients ask for a TCP connection to a host (by name, IPv4 or IPv6
/// address) and the proxy treats it as an HTTP proxy treats a `CONNECT` tunnel: HTTPS
/// inside is intercepted (or let through, see
/// [`Router::should_intercept`](crate::Router::should_intercept)), anything
/// else is relayed through the data hooks.
///
/// With [`MitmBuilder::proxy_auth`](crate::MitmBuilder::proxy_auth) set, clients must
/// log in with that username and password; otherwise any client may connect. `BIND` and
/// `UDP ASSOCIATE` are answered "command not supported".
///
/// ```no_run
/// # async fn run() -> mitm::Result<()> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use mitm::{Http, Mitm, Socks5};
///
/// // What runs inside the tunnels obeys these settings.
/// let socks = Socks5::with_http(Http::new().timeout(Duration::from_secs(30)));
/// let proxy = Mitm::builder()
///     .port(1080)
///     .protocols(vec![Arc::new(socks), Arc::new(Http::new())])
///     .bind()
///     .await?;
/// proxy.run().await
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Socks5 {
    settings: Settings,
}

impl Socks5 {
    /// The protocol with [`Http`]'s default settings for what runs inside its tunnels.
    pub fn new() -> Self {
        Self::default()
    }

    /// The protocol with `http`'s settings: its timeouts (the handshake with the client
    /// is bounded by its [`handshake_timeout`](Http::handshake_timeout), reaching the
    /// target by its [`connect_timeout`](Http::connect_timeout)), and its limits for
    /// the HTTP intercepted inside the tunnels.
    pub fn with_http(http: Http) -> Self {
        Socks5 {
            settings: http.settings().clone(),
        }
    }
}

#[async_trait]
impl Protocol for Socks5 {
    fn name(&self) -> &'static str {
        "socks5"
    }

    fn buffer_size(&self) -> usize {
        self.settings.buffer_size
    }

    fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    fn keep_alive(&self) -> bool {
        self.settings.keep_alive
    }

    /// Takes a connection whose first byte is SOCKS version 5; the target is known only
    /// once the handshake has run (a placeholder until then).
    async fn resolve(&self, _conn: &Connection, data: &[u8]) -> Resolution {
        match data.first() {
            None => Resolution::NeedMore,
            Some(&socks5::VERSION) => Resolution::Accept(Target::new("", 0, false)),
            Some(_) => Resolution::NotMine,
        }
    }

    async fn connect(
        &self,
        cx: &Context,
        conn: &mut Connection,
        client: BoxIo,
        _target: Target,
        data: Bytes,
    ) -> Result<Connected> {
        let settings = &self.settings;
        let mut hs = Handshake {
            client,
            buf: BytesMut::from(&data[..]),
            deadline: Instant::now() + settings.handshake_timeout,
        };
        hs.log_in(cx).await?;
        let request = hs.read(socks5::parse_request).await?;
        if request.command != Command::Connect {
            hs.answer(&socks5::reply(Reply::CommandNotSupported, None))
                .await?;
            return Err(bad(format!("{:?} is not supported", request.command)));
        }
        let target = Target::new(request.address.host(), request.port, true);
        conn.target = Some(target.clone());
        if cx.is_self(&target) {
            hs.answer(&socks5::reply(Reply::NotAllowed, None)).await?;
            return Err(bad(format!(
                "{target} is the proxy itself: connecting would loop"
            )));
        }
        if let TunnelVerdict::Refuse(reason) = cx.chain.tunnel(conn, &target).await {
            // The client may be gone; the refusal is what matters.
            let _ = hs.answer(&socks5::reply(Reply::NotAllowed, None)).await;
            return Err(Error::TunnelRefused {
                target: target.to_string(),
                reason,
            });
        }
        let (route, ahead, bound) = if settings.is_magic(&target.host) {
            // The proxy's own page, served inside the tunnel: nothing to reach.
            (Route::Direct, Ahead::Nothing, None)
        } else {
            let route = cx.route_for(conn, &target).await;
            let reached = cx
                .upstreams
                .tcp(&route, &target, settings.connect_timeout)
                .await;
            let mut tcp = match reached {
                Ok(tcp) => tcp,
                Err(e) => {
                    let code = failure_reply(&e, &route);
                    // The client may be gone; the failure to reach the target is what
                    // matters.
                    let _ = hs.answer(&socks5::reply(code, None)).await;
                    return Err(e);
                }
            };
            let bound = match route {
                Route::Direct => local_addr(&mut tcp.stream),
                _ => None,
            };
            (route, Ahead::Tcp(tcp), bound)
        };
        hs.send(&socks5::reply(Reply::Succeeded, bound)).await?;
        // Whatever the client sent after its request (a ClientHello, a request) is the
        // tunnel's first bytes.
        let client = rewound(hs.client, hs.buf.freeze());
        let opened = Opened {
            client,
            target,
            route,
            ahead,
        };
        crate::engine::tunnel::run(cx, settings, conn, opened).await?;
        Ok(Connected::Handled)
    }
}

/// The client's side of the handshake: its stream, the bytes read and not yet parsed,
/// and when its time is up.
struct Handshake {
    client: BoxIo,
    buf: BytesMut,
    deadline: Instant,
}

impl Handshake {
    /// The greeting, and the username/password sub-negotiation when the method chosen
    /// asks for it. Credentials are required when the server has them, and accepted
    /// (whatever they are) from a client that offers nothing else otherwise.
    async fn log_in(&mut self, cx: &Context) -> Result<()> {
        let greeting = self.read(socks5::parse_greeting).await?;
        let required = cx.proxy_credentials.as_deref();
        let method = choose_method(&greeting, required.is_some());
        if method == socks5::NO_ACCEPTABLE {
            self.answer(&socks5::method_selection(method)).await?;
            return Err(bad(if required.is_some() {
                "the client offered no username/password authentication, which this proxy requires"
            } else {
                "the client offered no method this proxy supports"
            }));
        }
        self.send(&socks5::method_selection(method)).await?;
        if method != socks5::USER_PASS {
            return Ok(());
        }
        let given = self.read(socks5::parse_auth).await?;
        if required.is_some_and(|(user, password)| !same(&given, user, password)) {
            self.answer(&socks5::auth_status(false)).await?;
            // The user name helps whoever reads the logs; the password never shows.
            let user = String::from_utf8_lossy(&given.user);
            return Err(bad(format!("wrong username or password (user {user:?})")));
        }
        self.send(&socks5::auth_status(true)).await
    }

    /// Reads until `parse` has a whole message, and takes its bytes from the buffer. An
    /// invalid message gets the answer the RFC gives, and the connection is closed.
    async fn read<T>(&mut self, parse: fn(&[u8]) -> Step<T>) -> Result<T> {
        loop {
            match parse(&self.buf) {
                Step::Done(message, used) => {
                    self.buf.advance(used);
                    return Ok(message);
                }
                Step::Refuse(refusal) => {
                    self.answer(&refusal.answer).await?;
                    return Err(bad(refusal.reason));
                }
                Step::NeedMore => {}
            }
            self.buf.reserve(512);
            let read = tokio::time::timeout_at(self.deadline, self.client.read_buf(&mut self.buf))
                .await
                .map_err(|_| Error::ClientTimeout)?
                .map_err(Error::client_io)?;
            if read == 0 {
                return Err(Error::client_io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed during the SOCKS5 handshake",
                )));
            }
        }
    }

    /// Sends `bytes` to the client.
    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.client
            .write_all(bytes)
            .await
            .map_err(Error::client_io)?;
        self.client.flush().await.map_err(Error::client_io)
    }

    /// Sends a final answer (a refusal), then closes the connection.
    async fn answer(&mut self, bytes: &[u8]) -> Result<()> {
        self.send(bytes).await?;
        // Closing is all that is left; a client already gone does not matter.
        let _ = self.client.shutdown().await;
        Ok(())
    }
}

/// The method the proxy picks from a greeting.
fn choose_method(greeting: &Greeting, credentials_required: bool) -> u8 {
    if greeting.offers(socks5::NO_AUTH) && !credentials_required {
        socks5::NO_AUTH
    } else if greeting.offers(socks5::USER_PASS) {
        socks5::USER_PASS
    } else {
        socks5::NO_ACCEPTABLE
    }
}

/// Whether a client's credentials are the ones the server asks for.
fn same(given: &Credentials, user: &str, password: &str) -> bool {
    given.user == user.as_bytes() && given.password == password.as_bytes()
}

/// The reply code for a failure to reach the target by `route`. Through an upstream
/// proxy, the failure of that proxy is the proxy's own: a general failure.
fn failure_reply(e: &Error, route: &Route) -> Reply {
    match e {
        Error::Resolve { .. } => Reply::HostUnreachable,
        Error::ConnectTimeout { .. } => Reply::TtlExpired,
        Error::Connect { source, .. } if *route == Route::Direct => match source.kind() {
            io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
            io::ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
            io::ErrorKind::HostUnreachable => Reply::HostUnreachable,
            _ => Reply::GeneralFailure,
        },
        _ => Reply::GeneralFailure,
    }
}

/// The local address of a direct TCP connection: the address bound for the client.
fn local_addr(stream: &mut BoxIo) -> Option<SocketAddr> {
    (**stream)
        .as_any_mut()
        .downcast_ref::<tokio::net::TcpStream>()?
        .local_addr()
        .ok()
}

/// A client's mistake in the handshake (logged at `debug`: the client's fault).
fn bad(reason: impl std::fmt::Display) -> Error {
    Error::BadRequest {
        reason: format!("SOCKS5: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(data: &[u8]) -> Resolution {
        let conn = Connection::new(1, crate::Host::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(Socks5::new().resolve(&conn, data))
    }

    #[test]
    fn takes_version_5_and_nothing_else() {
        assert_eq!(resolve(b""), Resolution::NeedMore);
        assert!(matches!(resolve(&[5]), Resolution::Accept(_)));
        assert!(matches!(resolve(&[5, 1, 0]), Resolution::Accept(_)));
        assert_eq!(resolve(&[4, 1, 0, 80]), Resolution::NotMine);
        assert_eq!(resolve(b"GET / HTTP/1.1\r\n"), Resolution::NotMine);
        assert_eq!(resolve(b"\x16\x03\x01"), Resolution::NotMine);
    }

    #[test]
    fn methods_are_chosen_by_whether_credentials_are_required() {
        let offer = |methods: &[u8]| Greeting {
            methods: methods.to_vec(),
        };
        let (none, login) = (socks5::NO_AUTH, socks5::USER_PASS);
        assert_eq!(choose_method(&offer(&[none, login]), false), none);
        assert_eq!(choose_method(&offer(&[login]), false), login);
        assert_eq!(choose_method(&offer(&[none, login]), true), login);
        assert_eq!(choose_method(&offer(&[none]), true), socks5::NO_ACCEPTABLE);
        assert_eq!(choose_method(&offer(&[0x01]), false), socks5::NO_ACCEPTABLE);
    }

    #[test]
    fn credentials_must_match_exactly() {
        let given = |user: &[u8], password: &[u8]| Credentials {
            user: user.to_vec(),
            password: password.to_vec(),
        };
        assert!(same(&given(b"alice", b"pw"), "alice", "pw"));
        assert!(!same(&given(b"alice", b"pw "), "alice", "pw"));
        assert!(!same(&given(b"Alice", b"pw"), "alice", "pw"));
        assert!(!same(&given(b"", b""), "alice", "pw"));
    }

    #[test]
    fn connect_failures_map_to_reply_codes() {
        let connect = |kind: io::ErrorKind| Error::Connect {
            target: "h:1".into(),
            source: kind.into(),
        };
        let direct = Route::Direct;
        let cases = [
            (
                connect(io::ErrorKind::ConnectionRefused),
                Reply::ConnectionRefused,
            ),
            (
                connect(io::ErrorKind::NetworkUnreachable),
                Reply::NetworkUnreachable,
            ),
            (
                connect(io::ErrorKind::HostUnreachable),
                Reply::HostUnreachable,
            ),
            (connect(io::ErrorKind::Other), Reply::GeneralFailure),
            (
                Error::Resolve {
                    host: "nowhere.invalid".into(),
                    source: io::ErrorKind::NotFound.into(),
                },
                Reply::HostUnreachable,
            ),
            (
                Error::ConnectTimeout {
                    target: "h:1".into(),
                },
                Reply::TtlExpired,
            ),
            (Error::ConnectionLimit { limit: 1 }, Reply::GeneralFailure),
        ];
        for (e, code) in cases {
            assert_eq!(failure_reply(&e, &direct), code, "{e}");
        }
        // A proxy on the way that refuses is not the target refusing.
        let proxied: Route = "socks5://127.0.0.1:1080".parse().unwrap();
        let e = connect(io::ErrorKind::ConnectionRefused);
        assert_eq!(failure_reply(&e, &proxied), Reply::GeneralFailure);
    }
}
