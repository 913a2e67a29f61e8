//! Stream types that protocols pass around.
//!
//! A connection's client side starts as a TCP socket, may become a TLS stream after
//! `CONNECT`, and may have bytes that were read ahead (to sniff the protocol or the TLS
//! ClientHello) and must be read again. [`BoxIo`] hides which of these it is, and
//! [`Rewind`] puts read-ahead bytes back in front of a stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A bidirectional byte stream: what every side of a connection is.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// The stream as [`Any`](std::any::Any), so the engine can tell a plain TCP socket
    /// (which it may splice) from other streams.
    #[doc(hidden)]
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// The TCP socket under `io` when it is one (boxes looked through), for zero-copy relay.
/// A [`Rewind`] counts only once its bytes are used up (see [`take_prefix`]).
#[cfg(target_os = "linux")]
pub(crate) fn tcp_of(io: &mut BoxIo) -> Option<&mut tokio::net::TcpStream> {
    socket_under(io, false)
}

/// Whether a TCP socket is under `io`, boxes and [`Rewind`]s (even unread ones) looked
/// through.
#[cfg(target_os = "linux")]
pub(crate) fn is_tcp(io: &mut BoxIo) -> bool {
    socket_under(io, true).is_some()
}

/// The socket under boxes and rewinds; past a rewind with bytes left only when `unread`.
#[cfg(target_os = "linux")]
fn socket_under(io: &mut BoxIo, unread: bool) -> Option<&mut tokio::net::TcpStream> {
    // Dispatch through the trait object, not on the box (which is an `Io` too).
    let any = (**io).as_any_mut();
    if any.is::<BoxIo>() {
        return any
            .downcast_mut::<BoxIo>()
            .and_then(|inner| socket_under(inner, unread));
    }
    if any.is::<Rewind<BoxIo>>() {
        return any
            .downcast_mut::<Rewind<BoxIo>>()
            .filter(|r| unread || r.prefix.is_empty())
            .and_then(|r| socket_under(&mut r.inner, unread));
    }
    any.downcast_mut::<tokio::net::TcpStream>()
}

/// Takes the bytes a [`Rewind`] (possibly boxed) still holds in front of its stream,
/// leaving it a plain pass-through; empty for other streams.
#[cfg(target_os = "linux")]
pub(crate) fn take_prefix(io: &mut BoxIo) -> Bytes {
    let any = (**io).as_any_mut();
    if any.is::<BoxIo>() {
        return any
            .downcast_mut::<BoxIo>()
            .map(take_prefix)
            .unwrap_or_default();
    }
    match any.downcast_mut::<Rewind<BoxIo>>() {
        Some(r) => std::mem::take(&mut r.prefix),
        None => Bytes::new(),
    }
}

/// A boxed [`Io`], so that plain TCP, TLS and rewound streams share one type.
pub type BoxIo = Box<dyn Io>;

/// A stream with some bytes put back in front of it: reads return `prefix` first, then
/// whatever the inner stream yields. Writes go straight to the inner stream.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tokio::io::AsyncReadExt;
/// let inner: &[u8] = b" world";
/// let mut s = mitm::Rewind::new(tokio::io::join(inner, tokio::io::sink()), "hello".into());
/// let mut out = String::new();
/// s.read_to_string(&mut out).await.unwrap();
/// assert_eq!(out, "hello world");
/// # }
/// ```
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    /// Wraps `inner`, to be read after `prefix`.
    pub fn new(inner: S, prefix: Bytes) -> Self {
        Rewind { prefix, inner }
    }

    /// The inner stream and the bytes of the prefix not read yet.
    pub fn into_parts(self) -> (S, Bytes) {
        (self.inner, self.prefix)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// `AsyncWrite` for a wrapper that changes only how its `inner` stream is read: writes
/// go to `inner` as they are.
macro_rules! writes_go_through {
    ($wrapper:ident) => {
        impl<S: AsyncWrite + Unpin> AsyncWrite for $wrapper<S> {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}

writes_go_through!(Rewind);

/// Bytes read per system call once [`ReadAhead`] reads ahead: four TLS records of the
/// largest size (16 KiB of plaintext each).
const READ_AHEAD: usize = 64 * 1024;

/// A stream under a TLS layer, read in large gulps while data keeps coming.
///
/// rustls asks the stream under it for at most 4 KiB a read, so a full-size record
/// (16 KiB) costs four system calls or more. This passes reads through as asked until
/// one fills what was asked (the sign of a stream with more waiting), then reads up to
/// [`READ_AHEAD`] bytes a call into a buffer of its own and serves the TLS layer from
/// it; a gulp no larger than what was asked goes back to reading as asked, and the
/// buffer is freed once drained. Connections that carry small messages (and idle ones)
/// never hold a buffer; writes go straight through.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Bytes read ahead: `buf[at..end]` are not served yet.
    buf: Vec<u8>,
    at: usize,
    end: usize,
    /// Whether the next read that finds nothing buffered reads a gulp.
    gulp: bool,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`, reading it as asked until a read fills what was asked.
    pub fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buf: Vec::new(),
            at: 0,
            end: 0,
            gulp: false,
        }
    }

    /// Bytes of buffer held now (0 unless reading ahead).
    #[cfg(test)]
    fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Serves buffered bytes into `out`; frees the buffer once drained unless reading
    /// ahead goes on.
    fn serve(&mut self, out: &mut ReadBuf<'_>) {
        let n = (self.end - self.at).min(out.remaining());
        out.put_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        if self.at == self.end {
            self.at = 0;
            self.end = 0;
            if !self.gulp {
                self.buf = Vec::new();
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.end {
            this.serve(out);
            return Poll::Ready(Ok(()));
        }
        let asked = out.remaining();
        if !this.gulp || asked >= READ_AHEAD {
            let before = out.filled().len();
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
            let got = out.filled().len() - before;
            this.gulp = got > 0 && got == asked && asked < READ_AHEAD;
            return Poll::Ready(Ok(()));
        }
        if this.buf.len() < READ_AHEAD {
            this.buf.resize(READ_AHEAD, 0);
        }
        let mut into = ReadBuf::new(&mut this.buf);
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut into))?;
        let got = into.filled().len();
        // A gulp no larger than the ask saved nothing: back to reading as asked.
        this.gulp = got > asked;
        this.at = 0;
        this.end = got;
        this.serve(out);
        Poll::Ready(Ok(()))
    }
}

writes_go_through!(ReadAhead);

/// A TLS peer that closes TCP without `close_notify` (common among servers) has ended
/// its stream all the same: the message framing, not the TLS alert, says whether what
/// was read is complete. Turns that error into an ordinary end of stream (0 bytes).
pub(crate) fn eof_ok(read: io::Result<usize>) -> io::Result<usize> {
    match read {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        other => other,
    }
}

/// What raw bytes pass through between being read and being used: the data hooks of
/// one direction of one connection, which the engine hands to the code that reads
/// (`crate::middleware::DataHooks`), so that readers below the hooks never import them.
pub(crate) trait Transform: Sync {
    /// What to use instead of `data` (changed, or empty to drop it).
    fn apply(&self, data: Bytes) -> impl std::future::Future<Output = Bytes> + Send;

    /// Whether a hook ended the connection: the read that ran the hooks fails.
    fn aborted(&self) -> bool {
        false
    }
}

/// One read through the data hooks: reads what `io` has into `raw` (reserving `room`
/// bytes first) and returns how many bytes came (0: the stream ended, treated as in
/// [`eof_ok`]) with what `hooks` made of them. `raw` is split, not copied, so its
/// allocation comes back once the hooks and the caller let go of the chunk.
pub(crate) async fn read_through<R, T>(
    io: &mut R,
    raw: &mut BytesMut,
    room: usize,
    hooks: &T,
) -> io::Result<(usize, Bytes)>
where
    R: AsyncRead + Unpin + ?Sized,
    T: Transform,
{
    use tokio::io::AsyncReadExt;
    raw.reserve(room);
    let n = eof_ok(io.read_buf(raw).await)?;
    if n == 0 {
        return Ok((0, Bytes::new()));
    }
    let data = hooks.apply(raw.split().freeze()).await;
    if hooks.aborted() {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "a hook ended the connection",
        ));
    }
    Ok((n, data))
}

/// Boxes `io`, first putting `prefix` back in front of it when there is one.
pub(crate) fn rewound(io: BoxIo, prefix: Bytes) -> BoxIo {
    if prefix.is_empty() {
        io
    } else {
        Box::new(Rewind::new(io, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Reads `from` through a [`ReadAhead`] `ask` bytes at a time, as rustls does.
    async fn read_all(from: &[u8], ask: usize) -> (Vec<u8>, ReadAhead<&[u8]>) {
        let mut r = ReadAhead::new(from);
        let mut got = Vec::new();
        let mut chunk = vec![0; ask];
        loop {
            let n = r.read(&mut chunk).await.unwrap();
            if n == 0 {
                return (got, r);
            }
            got.extend_from_slice(&chunk[..n]);
        }
    }

    #[tokio::test]
    async fn read_ahead_passes_every_byte_in_order_and_lets_go_of_its_buffer() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for ask in [1, 100, 4096, 5000, READ_AHEAD, 2 * READ_AHEAD] {
            let (got, r) = read_all(&data, ask).await;
            assert_eq!(got, data, "asking {ask} bytes at a time");
            assert_eq!(
                r.buffered_capacity(),
                0,
                "asking {ask}: buffer kept at the end"
            );
        }
    }

    #[tokio::test]
    async fn read_ahead_reads_as_asked_until_a_read_fills_the_ask() {
        // Short reads never start a gulp: nothing is buffered.
        let mut r = ReadAhead::new(&[7u8; 10][..]);
        let mut chunk = [0; 4096];
        assert_eq!(r.read(&mut chunk).await.unwrap(), 10);
        assert_eq!(r.buffered_capacity(), 0);
        // A read that fills the ask does: the next one reads ahead.
        let data = vec![1u8; 3 * READ_AHEAD];
        let mut r = ReadAhead::new(&data[..]);
        assert_eq!(r.read(&mut chunk).await.unwrap(), 4096);
        assert_eq!(r.buffered_capacity(), 0);
        assert_eq!(r.read(&mut chunk).await.unwrap(), 4096);
        assert_eq!(r.buffered_capacity(), READ_AHEAD);
        assert_eq!(r.end - r.at, READ_AHEAD - 4096);
    }
}
