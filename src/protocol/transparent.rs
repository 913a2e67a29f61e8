//! The built-in [`Transparent`] protocol: clients that do not know about the proxy,
//! whose connections a firewall rule (iptables or nftables `REDIRECT`) sends to it.
//!
//! Where each connection was going comes from the kernel
//! ([`Connection::original_dst`], read by the server when the client connects). What
//! it carries decides the rest, with the same machinery as [`Http`]:
//!
//! - TLS (a first byte `0x16`): what follows a `CONNECT`, as if the client had asked for
//!   the original destination (`crate::engine::tunnel`): a leaf named by the ClientHello's SNI,
//!   the upstream reached over TCP at the original address and TLS naming the SNI
//!   name, or pass-through where a middleware says so.
//! - HTTP/1: served by the HTTP engine, every request sent to the original destination
//!   whatever its `Host` names (the `Host` goes on as the client sent it).
//! - Anything else: relayed as it is to the original destination.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Connected, Context, Http, Protocol, Resolution};
use crate::core::{Connection, Target};
use crate::engine::exchange::serve_h1::{self, Opened, Served, Start};
use crate::engine::exchange::Ahead;
use crate::error::{Error, Result};
use crate::http::target::Scope;
use crate::middleware::TunnelVerdict;
use crate::net::io::{rewound, BoxIo};

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Transparent proxying (Linux): serves connections that a firewall redirected to the
/// proxy, to where each was going, intercepting TLS and HTTP as [`Http`] does inside a
/// `CONNECT` tunnel.
///
/// A connection that came straight to the proxy, without a redirect, is not this
/// protocol's: on a listener with no other protocol it is closed, and the log says
/// which firewall rules are missing (`docs/transparent.md` has them).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// let transparent = mitm::Transparent::with_http(
///     mitm::Http::new().timeout(Duration::from_secs(30)),
/// );
/// let builder = mitm::Mitm::builder()
///     .host("0.0.0.0")
///     .port(8080)
///     .protocol(Arc::new(transparent));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Transparent {
    /// Where the limits and timeouts come from, and how a client speaking HTTP is
    /// recognised.
    http: Http,
}

impl Transparent {
    /// The protocol with [`Http`]'s defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The protocol with the limits and timeouts of `http` (its
    /// [`timeout`](Http::timeout), [`max_head`](Http::max_head), … apply to the
    /// connections it serves).
    pub fn with_http(http: Http) -> Self {
        Transparent { http }
    }

    /// What `data`, a redirected client's first bytes, is in.
    async fn speaks(&self, conn: &Connection, data: &[u8]) -> Speaks {
        if data.first() == Some(&TLS_HANDSHAKE) {
            return Speaks::Tls;
        }
        // An HTTP request line, as `Http` judges it.
        match self.http.resolve(conn, data).await {
            Resolution::Accept(_) => Speaks::Http,
            Resolution::NeedMore => Speaks::NotYet,
            _ => Speaks::Other,
        }
    }
}

/// What a redirected client speaks, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speaks {
    /// A TLS handshake.
    Tls,
    /// HTTP/1.
    Http,
    /// Something the proxy relays as it is.
    Other,
    /// Too few bytes to tell: they may still become an HTTP request line.
    NotYet,
}

#[async_trait]
impl Protocol for Transparent {
    fn name(&self) -> &'static str {
        "transparent"
    }

    fn bytes_needed(&self) -> usize {
        Protocol::bytes_needed(&self.http)
    }

    fn buffer_size(&self) -> usize {
        self.http.settings().buffer_size
    }

    fn timeout(&self) -> Duration {
        self.http.settings().timeout
    }

    fn keep_alive(&self) -> bool {
        self.http.settings().keep_alive
    }

    fn wants_original_destination(&self) -> bool {
        true
    }

    /// Takes every connection a firewall redirected (one with an
    /// [`original_dst`](Connection::original_dst)), to that destination: as TLS when
    /// its first byte starts a TLS handshake. It waits for more bytes only while they
    /// may still become an HTTP request line, so the connection is served as HTTP.
    async fn resolve(&self, conn: &Connection, data: &[u8]) -> Resolution {
        let Some(dst) = conn.original_dst else {
            return Resolution::NotMine;
        };
        let tls = match self.speaks(conn, data).await {
            Speaks::NotYet => return Resolution::NeedMore,
            speaks => speaks == Speaks::Tls,
        };
        Resolution::Accept(Target::new(dst.ip().to_string(), dst.port(), tls))
    }

    async fn connect(
        &self,
        cx: &Context,
        conn: &mut Connection,
        client: BoxIo,
        target: Target,
        data: Bytes,
    ) -> Result<Connected> {
        let settings = self.http.settings();
        if let TunnelVerdict::Refuse(reason) = cx.chain.tunnel(conn, &target).await {
            // Nothing can be answered where the client expects its destination: it is
            // closed, and the refusal logged.
            drop(client);
            return Err(Error::TunnelRefused {
                target: target.to_string(),
                reason,
            });
        }
        // A router may ask for HTTP to be relayed raw: the tunnel does that.
        if self.speaks(conn, &data).await == Speaks::Http
            && !crate::engine::tunnel::relay_http_raw(cx, conn).await
        {
            let scope = Scope::Destination(target);
            let served =
                serve_h1::serve(cx, settings, conn, client, data, scope, Start::Nothing).await?;
            // The engine refuses `CONNECT` on a redirected connection itself.
            return match served {
                Served::Closed => Ok(Connected::Handled),
                Served::Connect(_) => Err(Error::protocol(
                    "transparent",
                    "CONNECT on a redirected connection",
                    None,
                )),
            };
        }
        // TLS, or a protocol the proxy does not speak: the tunnel after a `CONNECT`
        // does both (interception with a leaf for the SNI name, or a raw relay), and
        // dials the original address itself, so a failure reaches an intercepted
        // client as an error page inside TLS.
        let route = cx.route_for(conn, &target).await;
        let opened = Opened {
            client: rewound(client, data),
            target,
            route,
            ahead: Ahead::Nothing,
        };
        crate::engine::tunnel::run(cx, settings, conn, opened).await?;
        Ok(Connected::Handled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Host;

    fn resolve(original_dst: Option<&str>, data: &[u8]) -> Resolution {
        let mut conn = Connection::new(1, Host::default());
        conn.original_dst = original_dst.map(|a| a.parse().unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(Transparent::new().resolve(&conn, data))
    }

    #[test]
    fn a_direct_connection_is_not_mine() {
        assert_eq!(
            resolve(None, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Resolution::NotMine
        );
        assert_eq!(resolve(None, b"\x16\x03\x01"), Resolution::NotMine);
    }

    #[test]
    fn redirected_connections_go_to_their_original_destination() {
        let tls = resolve(Some("[fd00::2]:443"), b"\x16\x03\x01\x02\x00");
        assert_eq!(tls, Resolution::Accept(Target::new("fd00::2", 443, true)));
        let http = resolve(Some("10.0.0.2:80"), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(http, Resolution::Accept(Target::new("10.0.0.2", 80, false)));
        // Not HTTP and not TLS: relayed as it is.
        let raw = resolve(Some("10.0.0.2:22"), b"SSH-2.0-OpenSSH_9.6\r\n");
        assert_eq!(raw, Resolution::Accept(Target::new("10.0.0.2", 22, false)));
    }

    #[test]
    fn a_request_line_in_pieces_waits_for_the_rest() {
        assert_eq!(
            resolve(Some("10.0.0.2:80"), b"GET / HT"),
            Resolution::NeedMore
        );
    }
}
