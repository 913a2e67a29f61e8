//! Entry points into the parsers and the hook chain for fuzz targets and benchmarks.
//!
//! Not part of the API: hidden from the docs and free to change. Each function takes
//! plain bytes and must never panic, whatever they are; that is what the fuzz targets
//! check.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::core::{Connection, Flow, Host};
use crate::middleware::{Chain, Hooks, Middleware};
use crate::wire::h1::body::{Decoder, Piece};
use crate::wire::h1::parse::{self, Framing};

/// Parses `data` as a request head (through its blank line, if there is one) and, if it
/// parses, works out its body framing. Returns whether the head was accepted.
pub fn parse_request_head(data: &[u8]) -> bool {
    let Some(end) = parse::head_end(data) else {
        return false;
    };
    let head = Bytes::copy_from_slice(&data[..end]);
    match parse::parse_request(&head, crate::http::settings::DEFAULT_MAX_HEADERS) {
        Ok(req) => parse::request_framing(&req.headers).is_ok(),
        Err(_) => false,
    }
}

/// Parses `data` as a response head and its framing for a GET.
pub fn parse_response_head(data: &[u8]) -> bool {
    let Some(end) = parse::head_end(data) else {
        return false;
    };
    let head = Bytes::copy_from_slice(&data[..end]);
    match parse::parse_response(&head, crate::http::settings::DEFAULT_MAX_HEADERS) {
        Ok(res) => parse::response_framing("GET", res.status, &res.headers).is_ok(),
        Err(_) => false,
    }
}

/// Parses a `CONNECT` authority (`host:port`), as the engine does.
pub fn parse_connect_authority(data: &[u8]) -> Option<(String, u16)> {
    crate::http::target::parse_authority(std::str::from_utf8(data).ok()?, 443)
}

/// Decodes `data` as a chunked body fed in pieces of `step` bytes; returns the body
/// bytes, or `None` on a framing error or a body left incomplete.
pub fn decode_chunked(data: &[u8], step: usize) -> Option<Vec<u8>> {
    let mut decoder = Decoder::new(Framing::Chunked);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let step = step.max(1);
    let mut pieces = data.chunks(step).peekable();
    while let Some(piece) = pieces.next() {
        buf.extend_from_slice(piece);
        let eof = pieces.peek().is_none();
        loop {
            match decoder.next(&mut buf, eof).ok()? {
                Piece::Data(b) => out.extend_from_slice(&b),
                Piece::NeedMore => break,
                Piece::End => return Some(out),
            }
        }
    }
    None
}

/// Runs the protocol detection of the built-in `Http` protocol on a connection's
/// first bytes. Returns whether it took them.
pub fn detect_http(data: &[u8]) -> bool {
    use crate::protocol::{Protocol, Resolution};
    let conn = Connection::new(0, Host::default());
    let http = crate::protocol::Http::new();
    let mut resolve = http.resolve(&conn, data);
    // `resolve` never awaits anything: poll it once.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    matches!(
        resolve.as_mut().poll(&mut cx),
        std::task::Poll::Ready(Resolution::Accept(_))
    )
}

/// Looks for a ClientHello at the start of `data`; returns its server name if one was
/// found.
pub fn peek_client_hello(data: &[u8]) -> Option<Option<String>> {
    match crate::wire::client_hello::peek(data) {
        crate::wire::client_hello::Peek::Hello(h) => Some(h.server_name),
        _ => None,
    }
}

/// Runs the SOCKS5 server-side parsers over `data` as a client's handshake arrives: the
/// greeting, then the username/password sub-negotiation, then the request, each from
/// where the one before ended; each parser also sees the whole of `data` and every cut
/// of it. Panics if a parser claims more bytes than it has, or changes its mind about
/// a message when more bytes follow it. Returns how many of the three steps were whole
/// and valid.
pub fn parse_socks5_handshake(data: &[u8]) -> usize {
    use crate::wire::socks5::{parse_auth, parse_greeting, parse_request, Step};

    /// Parses `buf` and checks the result against every cut of it.
    fn consistent<T: PartialEq + std::fmt::Debug>(
        parse: fn(&[u8]) -> Step<T>,
        buf: &[u8],
    ) -> Step<T> {
        let whole = parse(buf);
        for cut in 0..buf.len() {
            let part = parse(&buf[..cut]);
            match (&whole, &part) {
                (Step::Done(_, used), Step::Done(..)) if cut < *used => {
                    panic!("done with {cut} bytes of a {used}-byte message")
                }
                (Step::Done(_, used), _) if cut >= *used => {
                    assert_eq!(part, whole, "a message changed with bytes after it")
                }
                (Step::Done(..), Step::Refuse(_)) => panic!("refused a valid beginning"),
                (Step::NeedMore, Step::Done(..) | Step::Refuse(_)) => {
                    panic!("decided on {cut} bytes, then needed more")
                }
                _ => {}
            }
        }
        if let Step::Done(_, used) = &whole {
            assert!(*used <= buf.len(), "took {used} of {} bytes", buf.len());
        }
        whole
    }

    // Each parser on its own, over the same bytes.
    let _ = consistent(parse_auth, data);
    let _ = consistent(parse_request, data);
    // In sequence, as a client sends them.
    let mut rest = data;
    let Step::Done(_, used) = consistent(parse_greeting, rest) else {
        return 0;
    };
    rest = &rest[used..];
    let Step::Done(_, used) = consistent(parse_auth, rest) else {
        return 1;
    };
    rest = &rest[used..];
    match consistent(parse_request, rest) {
        Step::Done(..) => 3,
        _ => 2,
    }
}

/// A chain of middlewares, to measure what the data hooks cost.
#[derive(Debug, Clone)]
pub struct HookChain {
    chain: Chain,
    conn: Arc<Connection>,
}

impl HookChain {
    /// A chain of `middlewares`.
    pub fn new(middlewares: Vec<Arc<dyn Middleware>>) -> Self {
        HookChain {
            chain: Chain::new(
                middlewares
                    .into_iter()
                    .fold(Hooks::new(), Hooks::middleware),
            ),
            conn: Arc::new(Connection::new(1, Host::default())),
        }
    }

    /// Whether the relay would call the data hooks at all.
    pub fn wants_data(&self) -> bool {
        self.chain.wants_data()
    }

    /// Passes `data` through every client-to-server data hook.
    pub async fn client_data(&self, data: Bytes) -> Bytes {
        self.chain
            .data(&self.conn, Flow::ClientToServer, data)
            .await
    }
}
