//! One side of an HTTP/1 connection as the engine reads it: its stream, the bytes read
//! from it and not used yet, and the scanner that finds where a head ends.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::parse::{HeadError, HeadScanner, Scan};
use crate::net::io::{eof_ok, read_through, BoxIo, Transform};

/// Most bytes asked of the socket per read: large enough that a bulk body moves in few
/// syscalls (the buffer is reused, so this is memory per connection in use, not per
/// read).
const READ_SIZE: usize = 64 * 1024;
/// Bytes asked per read at first. Reads that fill what was asked double it, up to
/// [`READ_SIZE`]: connections that only carry small messages keep small buffers
/// (thousands of them then cost little memory), bulk transfers get large ones after a
/// few reads.
const FIRST_READ_SIZE: usize = 8 * 1024;
/// A read that brings this much (a full TLS record's plaintext) suggests a stream with
/// more waiting: what is there already is taken too, without waiting, while the buffer
/// has room for as much again. A streamed body then moves in pieces of up to
/// [`READ_SIZE`] bytes, and the other side writes several TLS records per system call.
const GATHER_FROM: usize = 16 * 1024;

/// One side of the exchange: its stream, and bytes read from it but not used yet.
pub(crate) struct Peer {
    pub io: BoxIo,
    pub buf: BytesMut,
    /// Scratch space for reads that go through the data hooks.
    raw: BytesMut,
    /// Bytes to ask for on the next read.
    read_size: usize,
    /// Where the next head's end is being looked for.
    scanner: HeadScanner,
}

impl Peer {
    pub(crate) fn new(io: BoxIo, already: Bytes) -> Self {
        let mut buf = BytesMut::with_capacity(FIRST_READ_SIZE.max(already.len()));
        buf.extend_from_slice(&already);
        Peer {
            io,
            buf,
            raw: BytesMut::new(),
            read_size: FIRST_READ_SIZE,
            scanner: HeadScanner::default(),
        }
    }

    /// Reads into `into` (at least the current read size of room); a read that fills
    /// the room grows the next one. After a read of [`GATHER_FROM`] bytes or more, what
    /// the stream has ready is read too (a TLS stream hands out one record a read).
    async fn read_into(io: &mut BoxIo, into: &mut BytesMut, size: &mut usize) -> io::Result<usize> {
        use futures_util::FutureExt;
        into.reserve(*size);
        let room = into.capacity() - into.len();
        let mut n = eof_ok(io.read_buf(into).await)?;
        if n >= GATHER_FROM {
            // Polled once each, never waited for: a stream with nothing ready, at its
            // end or failing says so again on the next read.
            while n < READ_SIZE && into.capacity() - into.len() >= GATHER_FROM {
                match io.read_buf(into).now_or_never() {
                    Some(Ok(more)) if more > 0 => n += more,
                    _ => break,
                }
            }
        }
        if n >= room && *size < READ_SIZE {
            *size = (*size * 2).min(READ_SIZE);
        }
        Ok(n)
    }

    /// Reads more bytes into the buffer, through `hooks` (the data hooks of this side's
    /// direction) when given. Returns how many raw bytes were read (0 at the end of the
    /// stream).
    pub(crate) async fn fill<T: Transform>(&mut self, hooks: Option<&T>) -> io::Result<usize> {
        let Some(hooks) = hooks else {
            return Self::read_into(&mut self.io, &mut self.buf, &mut self.read_size).await;
        };
        let (n, chunk) = read_through(&mut self.io, &mut self.raw, self.read_size, hooks).await?;
        if n >= self.read_size && self.read_size < READ_SIZE {
            self.read_size = (self.read_size * 2).min(READ_SIZE);
        }
        self.buf.extend_from_slice(&chunk);
        Ok(n)
    }
}

/// The buffers of one side of an HTTP/1 connection, kept between its exchanges so
/// that each one does not allocate them again: the read buffer (empty, its capacity
/// kept) and the write buffer for heads.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    pub read: BytesMut,
    pub write: Vec<u8>,
}

impl Peer {
    /// A peer over `io` reading into `read` (emptied first; its capacity is reused).
    pub(crate) fn with_buffer(io: BoxIo, mut read: BytesMut) -> Self {
        read.clear();
        Peer {
            io,
            buf: read,
            raw: BytesMut::new(),
            read_size: FIRST_READ_SIZE,
            scanner: HeadScanner::default(),
        }
    }

    /// Takes the next head off the buffer if it is whole there (`None`: read more).
    /// Refuses a head over `max` bytes, or one ended by bare LFs, as soon as that
    /// shows.
    pub(crate) fn head(&mut self, max: usize) -> Result<Option<Bytes>, HeadError> {
        match self.scanner.scan(&self.buf) {
            Scan::Complete(end) if end > max => Err(HeadError::TooLarge),
            Scan::Complete(end) => {
                self.scanner.reset();
                Ok(Some(self.buf.split_to(end).freeze()))
            }
            Scan::BareLf => Err(HeadError::Malformed(
                "line ends must be CRLF, not a bare LF".into(),
            )),
            Scan::Partial if self.buf.len() > max => Err(HeadError::TooLarge),
            Scan::Partial => Ok(None),
        }
    }

    /// The stream and the bytes read from it but not used.
    pub(crate) fn into_parts(self) -> (BoxIo, BytesMut) {
        (self.io, self.buf)
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::*;

    /// A stream that hands out at most one TLS record's plaintext (16 KiB) a read, as
    /// a TLS stream does, with `left` bytes ready.
    struct Records {
        left: usize,
        reads: usize,
    }

    impl AsyncRead for Records {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.left.min(GATHER_FROM).min(buf.remaining());
            buf.put_slice(&vec![b'x'; n]);
            self.left -= n;
            self.reads += 1;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Records {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    struct NoHooks;

    impl Transform for NoHooks {
        fn apply(&self, data: Bytes) -> impl std::future::Future<Output = Bytes> + Send {
            std::future::ready(data)
        }
    }

    #[tokio::test]
    async fn a_full_record_read_takes_what_is_ready_too() {
        let total = 1 << 20;
        let mut peer = Peer::new(
            Box::new(Records {
                left: total,
                reads: 0,
            }),
            Bytes::new(),
        );
        let mut fills = Vec::new();
        loop {
            let n = peer.fill(None::<&NoHooks>).await.unwrap();
            if n == 0 {
                break;
            }
            fills.push(n);
            peer.buf.clear();
        }
        assert_eq!(fills.iter().sum::<usize>(), total);
        // Reads start at 8 KiB and grow; once they bring a whole record, the records
        // ready behind it come along, up to the largest read.
        assert_eq!(fills[0], FIRST_READ_SIZE);
        assert!(
            fills.iter().any(|&n| n > GATHER_FROM),
            "never gathered: {fills:?}"
        );
        assert!(fills.iter().all(|&n| n <= READ_SIZE), "{fills:?}");
        assert!(fills.len() < total / GATHER_FROM, "{} fills", fills.len());
    }

    #[tokio::test]
    async fn short_reads_are_not_followed_by_more() {
        // 1 KiB messages: one read each, nothing polled after it.
        let mut peer = Peer::new(
            Box::new(Records {
                left: 1024,
                reads: 0,
            }),
            Bytes::new(),
        );
        assert_eq!(peer.fill(None::<&NoHooks>).await.unwrap(), 1024);
        let any = peer.io.as_any_mut();
        let records = any.downcast_mut::<Records>().expect("the stream");
        assert_eq!(records.reads, 1);
    }
}
