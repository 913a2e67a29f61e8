//! Copying bytes both ways between client and server.
//!
//! Two paths, chosen once per connection:
//! - no middleware wants the bytes and there is no idle limit: tokio's
//!   `copy_bidirectional`, which reuses one buffer per direction and never allocates
//!   per chunk;
//! - otherwise, one pump per direction that reads a chunk, runs it through the data
//!   hooks and writes what they return. Each chunk is split off a reusable `BytesMut`
//!   and frozen without copying; once the write is done and the hooks have let go of
//!   it, `reserve` reclaims the same allocation for the next read.
//!
//! Both directions run inside the connection's task (joined, not spawned): they share
//! `&Connection` without locks, and a slow write in one direction never stops the other
//! from being read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;

use crate::core::{Connection, Flow};
use crate::error::{Error, Result, Side};
use crate::middleware::Chain;
use crate::net::io::{read_through, BoxIo};

/// The two streams of a connection, ready to relay.
#[non_exhaustive]
pub struct Tunnel {
    /// The client side (plaintext: TLS already terminated if intercepted).
    pub client: BoxIo,
    /// The upstream side (plaintext: TLS already set up if the upstream speaks it).
    pub server: BoxIo,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel").finish_non_exhaustive()
    }
}

impl Tunnel {
    /// A tunnel between `client` and `server`.
    pub fn new(client: BoxIo, server: BoxIo) -> Self {
        Tunnel { client, server }
    }
}

/// How a relay should run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayOptions {
    /// Bytes read per chunk.
    pub buffer_size: usize,
    /// Close both sides when no byte has moved either way for this long.
    pub idle_timeout: Option<Duration>,
    /// Whether two plain TCP sockets may be relayed with `splice(2)` (Linux).
    pub zero_copy: bool,
}

/// Relays two TCP sockets both ways with `splice(2)`, bytes never entering the proxy's
/// memory. `None` (nothing done) unless both streams are plain sockets; bytes a
/// [`crate::net::io::Rewind`] holds in front (a ClientHello read to decide) go first.
#[cfg(target_os = "linux")]
async fn splice_both(client: &mut BoxIo, server: &mut BoxIo) -> Option<Result<()>> {
    use crate::net::io::{is_tcp, take_prefix, tcp_of};
    use crate::net::splice::Pipe;
    if !(is_tcp(client) && is_tcp(server)) {
        return None;
    }
    let (up_pipe, down_pipe) = (Pipe::new().ok()?, Pipe::new().ok()?);
    let (to_server, to_client) = (take_prefix(client), take_prefix(server));
    let (c, s) = (tcp_of(client)?, tcp_of(server)?);
    let up = splice_one_way(c, s, to_server, up_pipe, (Side::Client, Side::Server));
    let down = splice_one_way(s, c, to_client, down_pipe, (Side::Server, Side::Client));
    Some(tokio::try_join!(up, down).map(|_| ()))
}

/// One direction of [`splice_both`]: `first` (bytes read already), then everything
/// until `from` ends, which is passed on by shutting `to` for writing. `sides` are
/// `from`'s and `to`'s, for errors.
#[cfg(target_os = "linux")]
async fn splice_one_way(
    from: &tokio::net::TcpStream,
    to: &tokio::net::TcpStream,
    first: bytes::Bytes,
    pipe: crate::net::splice::Pipe,
    sides: (Side, Side),
) -> Result<()> {
    let err = |side, source| Error::Io { side, source };
    let mut rest = &first[..];
    while !rest.is_empty() {
        let n = to
            .async_io(tokio::io::Interest::WRITABLE, || {
                rustix::io::write(to, rest).map_err(std::io::Error::from)
            })
            .await
            .map_err(|e| err(sides.1, e))?;
        rest = &rest[n..];
    }
    match crate::net::splice::relay(from, to, &pipe, None, None).await {
        Ok(_) => {
            // The end of one direction is passed on; the other may go on.
            let _ = rustix::net::shutdown(to, rustix::net::Shutdown::Write);
            Ok(())
        }
        Err((e, true)) => Err(err(sides.1, e)),
        Err((e, false)) => Err(err(sides.0, e)),
    }
}

/// Relays `client` <-> `server` until both directions have ended, one fails, or the
/// idle limit passes. A clean end of either side is not an error.
pub(crate) async fn relay(
    chain: &Chain,
    conn: &Connection,
    mut client: BoxIo,
    mut server: BoxIo,
    opts: RelayOptions,
) -> Result<()> {
    let size = opts.buffer_size.max(1024);
    #[cfg(target_os = "linux")]
    if !chain.wants_data() && opts.idle_timeout.is_none() && opts.zero_copy {
        if let Some(relayed) = splice_both(&mut client, &mut server).await {
            return relayed;
        }
    }
    if !chain.wants_data() && opts.idle_timeout.is_none() {
        return match tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, size, size)
            .await
        {
            Ok(_) => Ok(()),
            // Which side failed is not reported by the copy; a reset is the common case
            // and is usually the client's.
            Err(e) => Err(Error::client_io(e)),
        };
    }

    let (cr, cw) = tokio::io::split(client);
    let (sr, sw) = tokio::io::split(server);
    let clock = Activity::new();
    let up = pump(chain, conn, Flow::ClientToServer, cr, sw, size, &clock);
    let down = pump(chain, conn, Flow::ServerToClient, sr, cw, size, &clock);
    let both = async { tokio::try_join!(up, down).map(|_| ()) };
    match opts.idle_timeout {
        None => both.await,
        Some(limit) => {
            tokio::select! {
                r = both => r,
                () = clock.idle_for(limit) => {
                    tracing::debug!(?limit, "closing idle connection");
                    Ok(())
                }
            }
        }
    }
}

/// Reads chunks from `from`, passes them through the hooks for `flow` and writes them
/// to `to`, until `from` ends (then `to` is shut down, passing the end on).
async fn pump(
    chain: &Chain,
    conn: &Connection,
    flow: Flow,
    mut from: ReadHalf<BoxIo>,
    mut to: WriteHalf<BoxIo>,
    size: usize,
    clock: &Activity,
) -> Result<()> {
    let (from_side, to_side) = match flow {
        Flow::ClientToServer => (Side::Client, Side::Server),
        Flow::ServerToClient => (Side::Server, Side::Client),
    };
    let read_err = |source| Error::Io {
        side: from_side,
        source,
    };
    let write_err = |source| Error::Io {
        side: to_side,
        source,
    };
    let hooks = chain.data_hooks(conn, flow);
    let mut buf = BytesMut::with_capacity(size);
    loop {
        let (n, chunk) = read_through(&mut from, &mut buf, size, &hooks)
            .await
            .map_err(read_err)?;
        if n == 0 {
            // The peer finished sending; tell the other side, ignoring a peer that is
            // already gone.
            let _ = to.shutdown().await;
            return Ok(());
        }
        clock.touch();
        if !chunk.is_empty() {
            to.write_all(&chunk).await.map_err(write_err)?;
            // A TLS side holds what its socket did not take: send it before waiting
            // for more.
            to.flush().await.map_err(write_err)?;
            clock.touch();
        }
    }
}

/// The time of the last byte moved, shared by both pumps, for the idle limit.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}
