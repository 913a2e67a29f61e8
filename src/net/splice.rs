//! Zero-copy relay on Linux: bytes go from one socket to another through a pipe with
//! `splice(2)`, never through the proxy's memory.
//!
//! Used where no middleware looks at the bytes and both ends are plain TCP: large
//! plain-HTTP bodies with a known length (or running until the origin closes), and
//! tunnels relayed as they are (not intercepted). A copy through user space reads each byte into a buffer and writes it out
//! again; on loopback, where the copies are the whole cost, splicing roughly halves the
//! proxy's work per byte. Everywhere else (TLS, hooks, chunked framing) the usual
//! buffered path runs.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bodies shorter than this take the buffered path: a pipe costs a few syscalls to set
/// up, which only pays off on larger transfers.
pub(crate) const MIN_LEN: u64 = 256 * 1024;

/// The pipe's capacity asked for (the kernel may give less): bytes moved per pair of
/// `splice` calls.
const PIPE_SIZE: usize = 128 * 1024;

/// How a splice ended.
#[derive(Debug)]
pub(crate) enum Spliced {
    /// Everything asked for was moved (or the source closed, when no length was set).
    Done(u64),
    /// The source closed early.
    Truncated,
    /// The source stayed silent longer than the timeout.
    TimedOut,
}

/// A pipe for [`relay`].
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    pub(crate) fn new() -> io::Result<Self> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        // A larger pipe means fewer calls per byte; the default (64 KiB) still works.
        let _ = fcntl_setpipe_size(&write, PIPE_SIZE);
        Ok(Pipe { read, write })
    }
}

/// Moves `len` bytes (or, with `None`, everything until `from` closes) from `from` to
/// `to` through `pipe`. `idle`, when set, bounds each wait for the source. Errors are
/// I/O errors of either socket, with whether writing to `to` (rather than reading)
/// failed.
pub(crate) async fn relay(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    len: Option<u64>,
    idle: Option<Duration>,
) -> Result<Spliced, (io::Error, bool)> {
    // Which relays take this path is worth knowing when tuning: say so at trace level.
    tracing::trace!(target: "mitm::splice", ?len, "relaying with splice(2)");
    let mut moved = 0u64;
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        let want = match len {
            Some(len) if moved >= len => return Ok(Spliced::Done(moved)),
            Some(len) => (len - moved).min(PIPE_SIZE as u64) as usize,
            None => PIPE_SIZE,
        };
        let fill = from.async_io(Interest::READABLE, || {
            splice(from, None, &pipe.write, None, want, flags).map_err(io::Error::from)
        });
        let filled = match idle {
            Some(idle) => match tokio::time::timeout(idle, fill).await {
                Ok(filled) => filled,
                Err(_) => return Ok(Spliced::TimedOut),
            },
            None => fill.await,
        };
        let n = match filled {
            Err(e) => return Err((e, false)),
            Ok(0) if len.is_none() => return Ok(Spliced::Done(moved)),
            Ok(0) => return Ok(Spliced::Truncated),
            Ok(n) => n,
        };
        let mut left = n;
        while left > 0 {
            let drain = to.async_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, to, None, left, flags).map_err(io::Error::from)
            });
            match drain.await {
                Ok(0) => return Err((io::ErrorKind::WriteZero.into(), true)),
                Ok(w) => left -= w,
                Err(e) => return Err((e, true)),
            }
        }
        moved += n as u64;
    }
}
