//! HTTP/1 bodies as they stream: a [`Decoder`] takes body bytes out of a peer's read
//! buffer by the message's framing, an [`Encoder`] frames them again for the other
//! side, and `splice_rest` moves a plain body socket to socket without looking at it.
//!
//! Memory stays bounded: bytes are read into one reusable buffer per side and written
//! on before more are read, whatever the body's size.

use std::io;

use bytes::{Bytes, BytesMut};

use super::parse::Framing;
#[cfg(target_os = "linux")]
use super::peer::Peer;
#[cfg(target_os = "linux")]
use crate::net::io::BoxIo;
#[cfg(target_os = "linux")]
use tokio::io::AsyncWriteExt;

/// What the decoder found.
#[derive(Debug)]
pub(crate) enum Piece {
    /// Body bytes.
    Data(Bytes),
    /// More bytes must be read first.
    NeedMore,
    /// The body is complete.
    End,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    UntilClose,
    Done,
}

/// Takes body bytes out of a peer's buffer according to the framing.
#[derive(Debug)]
pub(crate) struct Decoder {
    state: State,
    /// Raw trailer lines of a chunked body, to pass on.
    pub trailers: Vec<u8>,
    /// How much of the buffer is known to hold no line end yet: a line that arrives a
    /// byte at a time is scanned once, not once per byte.
    scanned: usize,
}

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;
/// Most trailer bytes accepted.
const MAX_TRAILERS: usize = 64 * 1024;

impl Decoder {
    pub(crate) fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Decoder {
            state,
            trailers: Vec::new(),
            scanned: 0,
        }
    }

    /// What is left of a body that may be moved without looking at it: `Some(Some(n))`
    /// for `n` bytes of a length-delimited body, `Some(None)` for a body that runs
    /// until the connection closes; `None` while framing must be parsed (chunked).
    #[cfg(target_os = "linux")]
    pub(crate) fn raw_remaining(&self) -> Option<Option<u64>> {
        match self.state {
            State::Length(n) => Some(Some(n)),
            State::UntilClose => Some(None),
            _ => None,
        }
    }

    /// Records that the rest of a [`raw_remaining`](Self::raw_remaining) body, `n`
    /// bytes, was moved around the decoder (all of it: the caller reports a shortfall).
    #[cfg(target_os = "linux")]
    pub(crate) fn moved_raw(&mut self, n: u64) {
        self.state = match self.state {
            State::Length(left) if left > n => State::Length(left - n),
            _ => State::Done,
        };
    }

    /// Whether the whole body has been taken.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Takes the next piece of body from `buf`. `eof` says the stream has ended, which
    /// completes an until-close body and is an error for any other.
    pub(crate) fn next(&mut self, buf: &mut BytesMut, eof: bool) -> io::Result<Piece> {
        loop {
            match self.state {
                State::Done => return Ok(Piece::End),
                State::UntilClose => {
                    if !buf.is_empty() {
                        return Ok(Piece::Data(buf.split().freeze()));
                    }
                    if eof {
                        self.state = State::Done;
                        return Ok(Piece::End);
                    }
                    return Ok(Piece::NeedMore);
                }
                State::Length(left) | State::ChunkData(left) => {
                    if buf.is_empty() {
                        return if eof {
                            Err(truncated())
                        } else {
                            Ok(Piece::NeedMore)
                        };
                    }
                    let n = left.min(buf.len() as u64) as usize;
                    let data = buf.split_to(n).freeze();
                    let rest = left - n as u64;
                    self.state = match (self.state, rest) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), r) => State::Length(r),
                        (_, 0) => State::ChunkDataEnd,
                        (_, r) => State::ChunkData(r),
                    };
                    return Ok(Piece::Data(data));
                }
                // Chunk data ends with exactly CRLF: anything else is refused as soon
                // as it shows, not when a line end happens to come.
                State::ChunkDataEnd if !b"\r\n".starts_with(&buf[..buf.len().min(2)]) => {
                    return Err(invalid("chunk data not followed by CRLF"));
                }
                State::ChunkSize | State::ChunkDataEnd | State::Trailers => {
                    let Some(line) = take_line(buf, &mut self.scanned)? else {
                        return if eof {
                            Err(truncated())
                        } else {
                            Ok(Piece::NeedMore)
                        };
                    };
                    self.state = self.after_line(&line)?;
                }
            }
        }
    }

    fn after_line(&mut self, line: &[u8]) -> io::Result<State> {
        let text = line.strip_suffix(b"\r\n").unwrap_or(line);
        Ok(match self.state {
            State::ChunkSize => match chunk_size(text) {
                Some(0) => State::Trailers,
                Some(n) => State::ChunkData(n),
                None => return Err(invalid("invalid chunk size line")),
            },
            State::ChunkDataEnd if text.is_empty() => State::ChunkSize,
            State::ChunkDataEnd => return Err(invalid("chunk data not followed by CRLF")),
            State::Trailers if text.is_empty() => State::Done,
            State::Trailers => {
                if self.trailers.len() + line.len() > MAX_TRAILERS {
                    return Err(invalid("trailers too large"));
                }
                self.trailers.extend_from_slice(line);
                State::Trailers
            }
            other => other,
        })
    }
}

/// Whether the rest of the body `decoder` takes from `from` is worth moving with
/// [`splice_rest`]: plain (not chunked), and at least `splice::MIN_LEN` bytes beyond
/// what is buffered already (or of unknown length). Smaller bodies go through the
/// buffers, where the head and the body can leave in one write.
#[cfg(target_os = "linux")]
pub(crate) fn worth_splicing(from: &Peer, decoder: &Decoder) -> bool {
    let buffered = from.buf.len() as u64;
    match decoder.raw_remaining() {
        Some(Some(n)) => n.saturating_sub(buffered) >= crate::net::splice::MIN_LEN,
        Some(None) => true,
        None => false,
    }
}

/// Why [`splice_rest`] stopped short.
#[cfg(target_os = "linux")]
pub(crate) struct SpliceError {
    /// Whether writing (rather than reading) failed.
    pub writing: bool,
    /// What failed: `TimedOut` when the source was silent too long, `UnexpectedEof`
    /// when it closed early.
    pub error: io::Error,
}

/// Moves the rest of a large, plain (length-delimited or until-close) body from `from`
/// to `to` with `splice(2)` when both are TCP sockets, leaving `decoder` done; bytes
/// already in `from`'s buffer go first. Returns the bytes moved; moves none (and the
/// caller's buffered path runs) where splicing does not apply. `idle` bounds each wait
/// for the source.
#[cfg(target_os = "linux")]
pub(crate) async fn splice_rest(
    from: &mut Peer,
    to: &mut BoxIo,
    decoder: &mut Decoder,
    idle: std::time::Duration,
) -> Result<u64, SpliceError> {
    use crate::net::splice::{self, Spliced};
    let Some(left) = decoder.raw_remaining() else {
        return Ok(0);
    };
    let buffered = from.buf.len() as u64;
    if left.is_some_and(|n| n.saturating_sub(buffered) < splice::MIN_LEN) {
        return Ok(0);
    }
    let (Some(source), Some(sink)) = (
        crate::net::io::tcp_of(&mut from.io),
        crate::net::io::tcp_of(to),
    ) else {
        return Ok(0);
    };
    let Ok(pipe) = splice::Pipe::new() else {
        return Ok(0);
    };
    let fail = |writing, error| SpliceError { writing, error };
    let mut moved = 0;
    if let Ok(Piece::Data(b)) = decoder.next(&mut from.buf, false) {
        sink.write_all(&b).await.map_err(|e| fail(true, e))?;
        moved = b.len() as u64;
    }
    let Some(left) = decoder.raw_remaining() else {
        return Ok(moved);
    };
    match splice::relay(source, sink, &pipe, left, Some(idle)).await {
        Ok(Spliced::Done(n)) => {
            decoder.moved_raw(n);
            Ok(moved + n)
        }
        Ok(Spliced::Truncated) => Err(fail(false, truncated())),
        Ok(Spliced::TimedOut) => Err(fail(false, io::ErrorKind::TimedOut.into())),
        Err((e, writing)) => Err(fail(writing, e)),
    }
}

/// Takes one CRLF-terminated line off the front of `buf` (with its CRLF), searching
/// only past the `scanned` bytes already known to hold no line end.
fn take_line(buf: &mut BytesMut, scanned: &mut usize) -> io::Result<Option<BytesMut>> {
    let from = (*scanned).min(buf.len());
    match buf[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| i + from)
    {
        Some(i) if i > 0 && buf[i - 1] == b'\r' => {
            *scanned = 0;
            Ok(Some(buf.split_to(i + 1)))
        }
        Some(_) => Err(invalid("bare LF in chunked framing")),
        None if buf.len() > MAX_LINE => Err(invalid("chunked framing line too long")),
        None => {
            *scanned = buf.len();
            Ok(None)
        }
    }
}

/// A chunk size, ignoring extensions; `None` when invalid or absurdly large.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let hex = line.split(|&b| b == b';').next()?.trim_ascii();
    if hex.is_empty() || hex.len() > 15 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed in the middle of a body",
    )
}

/// How the body is framed on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoder {
    /// As it is: `Content-Length` or until close.
    Plain,
    /// Chunked: each piece becomes a chunk.
    Chunked,
}

impl Encoder {
    /// Appends one piece of body, framed, to `out`.
    pub(crate) fn encode(self, out: &mut Vec<u8>, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        match self {
            Encoder::Plain => out.extend_from_slice(data),
            Encoder::Chunked => {
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Appends the end of the body to `out`: for chunked, the last chunk and
    /// `trailers` (raw field lines, each ending in CRLF).
    pub(crate) fn finish(self, out: &mut Vec<u8>, trailers: &[u8]) {
        if self == Encoder::Chunked {
            out.extend_from_slice(b"0\r\n");
            out.extend_from_slice(trailers);
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(framing: Framing, parts: &[&[u8]]) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            buf.extend_from_slice(p);
            let eof = i + 1 == parts.len();
            loop {
                match d.next(&mut buf, eof)? {
                    Piece::Data(b) => body.extend_from_slice(&b),
                    Piece::NeedMore => break,
                    Piece::End => return Ok((body, d.trailers)),
                }
            }
        }
        Err(truncated())
    }

    #[test]
    fn chunked_bodies_with_trailers_decode_whatever_the_cuts() {
        let raw: &[u8] = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        let (body, trailers) = decode_all(Framing::Chunked, &[raw]).unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(trailers, b"X-T: 1\r\n");
        let bytes: Vec<&[u8]> = raw.chunks(1).collect();
        assert_eq!(
            decode_all(Framing::Chunked, &bytes).unwrap().0,
            b"hello world"
        );
    }

    #[test]
    fn bad_chunked_framing_is_an_error() {
        assert!(decode_all(Framing::Chunked, &[b"zz\r\n"]).is_err());
        assert!(decode_all(Framing::Chunked, &[b"fffffffffffffffff\r\n"]).is_err());
        assert!(decode_all(Framing::Chunked, &[b"1\nA\n0\n\n"]).is_err());
        assert!(decode_all(Framing::Chunked, &[b"1\r\nAB\r\n"]).is_err());
    }

    #[test]
    fn bytes_after_chunk_data_other_than_crlf_fail_at_once() {
        for bad in [&b"3\r\nabcXY"[..], b"3\r\nabcX", b"3\r\nabc\rX"] {
            let mut d = Decoder::new(Framing::Chunked);
            let mut buf = BytesMut::from(bad);
            let mut failed = false;
            for _ in 0..4 {
                match d.next(&mut buf, false) {
                    Ok(Piece::Data(_)) => continue,
                    Ok(other) => panic!("{bad:?}: {other:?} instead of an error"),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            assert!(failed, "{bad:?}");
        }
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let mut d = Decoder::new(Framing::Length(3));
        let mut buf = BytesMut::from(&b"abcNEXT"[..]);
        assert!(matches!(d.next(&mut buf, false).unwrap(), Piece::Data(b) if b == "abc"));
        assert!(matches!(d.next(&mut buf, false).unwrap(), Piece::End));
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn a_short_body_at_eof_is_an_error() {
        assert!(decode_all(Framing::Length(10), &[b"abc"]).is_err());
    }
}
