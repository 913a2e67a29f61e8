//! The [`Protocol`] trait: how the server learns what a client speaks and where its
//! connection goes.
//!
//! For each client the server reads the first bytes and offers them to every protocol,
//! in the order they were configured, through [`Protocol::resolve`]. A protocol answers
//! with a [`Resolution`]: it takes the connection (and names the [`Target`]), it is not
//! this protocol, or it needs more bytes to tell. The server keeps reading until one
//! takes it, all have declined, `bytes_needed` is reached or the timeout passes, so a
//! request head split over several TCP segments is still recognised.
//!
//! The winner then [`connect`](Protocol::connect)s: it answers the client as its
//! protocol requires (e.g. `200 Connection established`), reaches the upstream through
//! the [`Context`], and returns a [`Tunnel`] of two streams, which
//! [`handle`](Protocol::handle) relays (by default through the middlewares' data hooks).
//!
//! To add a protocol, implement the trait in a file of its own under `src/protocol/`
//! (or in your crate) and list it with [`MitmBuilder::protocol`](crate::MitmBuilder::protocol).

pub mod regular;
pub mod reverse;
pub mod socks5;
mod transparent;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::core::{Connection, Target};
use crate::error::Result;
use crate::net::io::BoxIo;

pub use self::regular::Http;
pub use self::reverse::Reverse;
pub use self::socks5::Socks5;
pub use self::transparent::Transparent;
pub use crate::engine::context::Context;
pub use crate::engine::relay::Tunnel;

/// The default of [`Protocol::bytes_needed`]: the original's, 8 KiB.
pub const DEFAULT_BYTES_NEEDED: usize = 8192;
/// The default of [`Protocol::buffer_size`]: 8 KiB.
pub const DEFAULT_BUFFER_SIZE: usize = 8192;
/// The default of [`Protocol::timeout`]: 15 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// What a protocol makes of a client's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resolution {
    /// This protocol takes the connection, to this target.
    Accept(Target),
    /// Not this protocol: the server offers the bytes to the next one.
    NotMine,
    /// The bytes so far are a valid beginning; ask again when more have arrived.
    NeedMore,
}

/// What [`Protocol::connect`] achieved.
#[derive(Debug)]
#[non_exhaustive]
pub enum Connected {
    /// An upstream is connected (and `conn.server` set): relay the tunnel.
    Tunnel(Tunnel),
    /// The protocol answered the client itself (an error page, a local reply); there is
    /// nothing to relay.
    Handled,
}

/// A way of speaking to clients, recognised from their first bytes.
///
/// The settings mirror the original's class attributes; each has a default.
#[async_trait]
pub trait Protocol: Send + Sync + 'static {
    /// A short name for logs and [`Connection::protocol`], e.g. `"http"`.
    fn name(&self) -> &'static str;

    /// At most this many first bytes are read before the protocol must decide; if it
    /// still says [`Resolution::NeedMore`] then, it is taken as
    /// [`Resolution::NotMine`]. Default: [`DEFAULT_BYTES_NEEDED`].
    fn bytes_needed(&self) -> usize {
        DEFAULT_BYTES_NEEDED
    }

    /// Bytes read per chunk when relaying. Default: [`DEFAULT_BUFFER_SIZE`].
    fn buffer_size(&self) -> usize {
        DEFAULT_BUFFER_SIZE
    }

    /// How long to wait for the first bytes, for the upstream to connect, and (when
    /// [`keep_alive`](Self::keep_alive) is false) for a relayed connection to move a
    /// byte before it is closed. Default: [`DEFAULT_TIMEOUT`].
    fn timeout(&self) -> Duration {
        DEFAULT_TIMEOUT
    }

    /// Whether relayed connections stay open while idle, for as long as both peers keep
    /// them. When false, a connection with no byte moving either way for
    /// [`timeout`](Self::timeout) is closed. Default: `true`.
    fn keep_alive(&self) -> bool {
        true
    }

    /// Whether this protocol needs to know where a redirected client meant to connect
    /// ([`Connection::original_dst`]). The server asks the kernel for it when a client
    /// connects, only on listeners where a protocol says yes. Default: `false`.
    fn wants_original_destination(&self) -> bool {
        false
    }

    /// Decides from `data`, the client's first bytes, whether this protocol speaks the
    /// connection and where it goes. Called again with more bytes after
    /// [`Resolution::NeedMore`].
    async fn resolve(&self, conn: &Connection, data: &[u8]) -> Resolution;

    /// Reaches `target` and does whatever the protocol requires of the client first.
    ///
    /// `data` is the first bytes after the middlewares' `client_data` hooks; they have
    /// been read from `client` already. On success, set `conn.server` (the
    /// [`Context::connect`] helpers do) and return the tunnel to relay: the server
    /// fires `server_connected` for it. On failure, answer the client if the protocol
    /// can (e.g. a `502` page), then return the error, which the server logs; build
    /// errors of your own with [`Error::protocol`](crate::Error::protocol),
    /// [`Error::client_io`](crate::Error::client_io) or
    /// [`Error::server_io`](crate::Error::server_io).
    async fn connect(
        &self,
        cx: &Context,
        conn: &mut Connection,
        client: BoxIo,
        target: Target,
        data: Bytes,
    ) -> Result<Connected>;

    /// Relays the tunnel until the connection ends. Default: copies both ways through
    /// the middlewares' data hooks, honouring [`buffer_size`](Self::buffer_size),
    /// [`timeout`](Self::timeout) and [`keep_alive`](Self::keep_alive).
    async fn handle(&self, cx: &Context, conn: &Connection, tunnel: Tunnel) -> Result<()> {
        let idle_timeout = (!self.keep_alive()).then(|| self.timeout());
        cx.relay(conn, tunnel, self.buffer_size(), idle_timeout)
            .await
    }
}
