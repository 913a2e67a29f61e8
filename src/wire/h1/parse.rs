//! HTTP/1.x heads: finding where a head ends as its bytes arrive, parsing requests and
//! responses, and the framing rules of their bodies.
//!
//! Parsing is strict where leniency lets two parties disagree about where a message
//! ends (RFC 9112 section 6): a request with both `Content-Length` and
//! `Transfer-Encoding`, conflicting lengths, or a transfer coding other than a final
//! `chunked` is refused rather than forwarded.

use bytes::Bytes;

use crate::http::message::{Body, Headers, Response, Version};

/// Up to this many fields, a head is parsed into a table on the stack; a larger limit
/// costs one allocation per head.
const STACK_HEADERS: usize = 128;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// Why a head was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// Not valid HTTP/1: the reason, for a 400 page.
    Malformed(String),
    /// Larger than the limit (431 for requests).
    TooLarge,
}

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub method: String,
    /// The request target as sent: origin-form, absolute-form, authority-form or `*`.
    pub target: String,
    pub version: Version,
    pub headers: Headers,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub version: Version,
    pub headers: Headers,
}

impl From<ResponseHead> for Response {
    fn from(head: ResponseHead) -> Self {
        Response {
            status: head.status,
            reason: head.reason,
            version: head.version,
            headers: head.headers,
            body: Body::Empty,
        }
    }
}

/// What [`HeadScanner::scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The head ends here (just past its blank line).
    Complete(usize),
    /// A blank line of bare LFs: the end of a head that does not use CRLF, which RFC
    /// 9112 lets a recipient refuse (and which would otherwise never meet its end).
    BareLf,
    /// No end yet.
    Partial,
}

/// Finds the end of a head in a buffer that grows as bytes arrive, looking at each
/// byte about once however the head is split: a head that trickles in a byte at a time
/// costs time linear in its size, not quadratic.
#[derive(Debug, Default)]
pub(crate) struct HeadScanner {
    /// Bytes of the buffer already searched (its start holds no end of head).
    scanned: usize,
    /// Bytes looked at in all, for tests of the cost.
    examined: usize,
}

impl HeadScanner {
    /// Looks for the end of the head at the start of `buf`, resuming where the last
    /// call stopped. Call [`reset`](Self::reset) once the head is taken off the buffer.
    pub(crate) fn scan(&mut self, buf: &[u8]) -> Scan {
        // A terminator may straddle the old end: back up by its length less one.
        let from = self.scanned.min(buf.len()).saturating_sub(3);
        self.examined += buf.len() - from;
        self.scanned = buf.len();
        // A head whose lines end in bare LFs is refused when parsed (its length does not
        // match); one that never reaches a CRLF end is refused here, as soon as its
        // blank line shows.
        let new = &buf[from..];
        if let Some(at) = finders().0.find(new) {
            return Scan::Complete(from + at + 4);
        }
        if finders().1.find(new).is_some() {
            return Scan::BareLf;
        }
        Scan::Partial
    }

    /// Starts over, for the next head.
    pub(crate) fn reset(&mut self) {
        self.scanned = 0;
    }

    /// Bytes looked at so far, over every head.
    #[cfg(test)]
    pub(crate) fn examined(&self) -> usize {
        self.examined
    }
}

/// The searchers for the end of a head (CRLF CRLF) and for a blank line of bare LFs,
/// built once.
fn finders() -> &'static (
    memchr::memmem::Finder<'static>,
    memchr::memmem::Finder<'static>,
) {
    static FINDERS: std::sync::OnceLock<(
        memchr::memmem::Finder<'static>,
        memchr::memmem::Finder<'static>,
    )> = std::sync::OnceLock::new();
    FINDERS.get_or_init(|| {
        (
            memchr::memmem::Finder::new(b"\r\n\r\n"),
            memchr::memmem::Finder::new(b"\n\n"),
        )
    })
}

/// What the first line of some bytes is, read as an HTTP/1 request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestLine<'a> {
    /// `METHOD TARGET HTTP/1.x`: plausible, with its method and target.
    Valid { method: &'a [u8], target: &'a [u8] },
    /// Not complete yet, and plausible so far (a method's letters, then anything).
    Incomplete,
    /// Not HTTP/1.
    Invalid,
}

/// Reads the request line at the start of `data`, to tell whether a client speaks
/// HTTP/1 before its head is whole.
pub(crate) fn request_line(data: &[u8]) -> RequestLine<'_> {
    let is_method = |m: &[u8]| m.iter().all(|b| b.is_ascii_alphabetic() || *b == b'-');
    let Some(end) = data.iter().position(|&b| b == b'\n') else {
        let method_end = data.iter().position(|&b| b == b' ').unwrap_or(data.len());
        return if is_method(&data[..method_end]) {
            RequestLine::Incomplete
        } else {
            RequestLine::Invalid
        };
    };
    let line = data[..end].strip_suffix(b"\r").unwrap_or(&data[..end]);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return RequestLine::Invalid;
    };
    if method.is_empty()
        || !is_method(method)
        || target.is_empty()
        || !version.starts_with(b"HTTP/1.")
    {
        return RequestLine::Invalid;
    }
    RequestLine::Valid { method, target }
}

/// Finds the end of a head that is whole in `buf`, if it is there.
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    match HeadScanner::default().scan(buf) {
        Scan::Complete(end) => Some(end),
        _ => None,
    }
}

fn version_of(minor: Option<u8>) -> Version {
    match minor {
        Some(0) => Version::Http10,
        _ => Version::Http11,
    }
}

/// Copies parsed header fields into [`Headers`], slicing `head` (no per-field copy).
fn collect_headers(head: &Bytes, fields: &[httparse::Header<'_>]) -> Headers {
    let base = head.as_ptr() as usize;
    let mut headers = Headers::with_capacity(fields.len());
    for h in fields {
        let name = slice_of(head, base, h.name.as_bytes());
        let value = slice_of(head, base, h.value);
        headers.append(name, value);
    }
    headers
}

/// `part` is a subslice of `head`'s bytes; returns it as a `Bytes` sharing them.
fn slice_of(head: &Bytes, base: usize, part: &[u8]) -> Bytes {
    let start = part.as_ptr() as usize - base;
    head.slice(start..start + part.len())
}

/// Parses a complete request head (through its blank line) of at most `max_headers`
/// fields.
pub(crate) fn parse_request(head: &Bytes, max_headers: usize) -> Result<RequestHead, HeadError> {
    if max_headers <= STACK_HEADERS {
        let mut fields = [httparse::EMPTY_HEADER; STACK_HEADERS];
        request_into(head, &mut fields[..max_headers])
    } else {
        request_into(head, &mut vec![httparse::EMPTY_HEADER; max_headers])
    }
}

fn request_into<'h>(
    head: &'h Bytes,
    fields: &mut [httparse::Header<'h>],
) -> Result<RequestHead, HeadError> {
    let mut req = httparse::Request::new(fields);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        // httparse takes bare LFs as line ends: its head then ends before ours.
        Ok(httparse::Status::Complete(_)) => {
            return Err(HeadError::Malformed(
                "line ends must be CRLF, not a bare LF".into(),
            ))
        }
        Ok(httparse::Status::Partial) => {
            return Err(HeadError::Malformed("incomplete request head".into()))
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Malformed(format!("invalid request head: {e}"))),
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(HeadError::Malformed("missing method or target".into()));
    };
    if target.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(HeadError::Malformed(
            "control character in request target".into(),
        ));
    }
    Ok(RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        version: version_of(req.version),
        headers: collect_headers(head, req.headers),
    })
}

/// Parses a complete response head of at most `max_headers` fields.
pub(crate) fn parse_response(head: &Bytes, max_headers: usize) -> Result<ResponseHead, HeadError> {
    if max_headers <= STACK_HEADERS {
        let mut fields = [httparse::EMPTY_HEADER; STACK_HEADERS];
        response_into(head, &mut fields[..max_headers])
    } else {
        response_into(head, &mut vec![httparse::EMPTY_HEADER; max_headers])
    }
}

fn response_into<'h>(
    head: &'h Bytes,
    fields: &mut [httparse::Header<'h>],
) -> Result<ResponseHead, HeadError> {
    let mut res = httparse::Response::new(fields);
    match res.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(httparse::Status::Complete(_)) => {
            return Err(HeadError::Malformed(
                "line ends must be CRLF, not a bare LF".into(),
            ))
        }
        Ok(httparse::Status::Partial) => {
            return Err(HeadError::Malformed("incomplete response head".into()))
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Malformed(format!("invalid response head: {e}"))),
    }
    let Some(status) = res.code else {
        return Err(HeadError::Malformed("missing status code".into()));
    };
    Ok(ResponseHead {
        status,
        reason: res.reason.unwrap_or("").to_string(),
        version: version_of(res.version),
        headers: collect_headers(head, res.headers),
    })
}

/// The framing of a request body (RFC 9112 section 6.3), refusing ambiguous ones.
pub(crate) fn request_framing(headers: &Headers) -> Result<Framing, HeadError> {
    match body_framing(headers)? {
        Some(f) => Ok(f),
        None => Ok(Framing::Empty),
    }
}

/// The framing of a response body, given the request method and the status.
pub(crate) fn response_framing(
    method: &str,
    status: u16,
    headers: &Headers,
) -> Result<Framing, HeadError> {
    if !has_body(method, status) {
        return Ok(Framing::Empty);
    }
    if method.eq_ignore_ascii_case("CONNECT") && (200..300).contains(&status) {
        return Ok(Framing::Empty);
    }
    match body_framing(headers)? {
        Some(f) => Ok(f),
        None => Ok(Framing::UntilClose),
    }
}

/// Whether a response with `status` to a `method` request carries a body at all: not
/// for `HEAD`, 1xx, 204 and 304, whatever its fields say (RFC 9112 section 6.3).
pub(crate) fn has_body(method: &str, status: u16) -> bool {
    !(method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304)
}

/// `Transfer-Encoding` / `Content-Length` framing; `None` when neither is present.
fn body_framing(headers: &Headers) -> Result<Option<Framing>, HeadError> {
    let malformed = |m: &str| Err(HeadError::Malformed(m.into()));
    let has_te = headers.contains("transfer-encoding");
    let has_cl = headers.contains("content-length");
    if has_te && has_cl {
        return malformed("both Transfer-Encoding and Content-Length");
    }
    if has_te {
        // The last coding must be chunked, or the length is unknowable (for requests)
        // or until close (responses); we accept only chunked.
        let last = headers.tokens("transfer-encoding").last();
        return match last {
            Some(t) if t.eq_ignore_ascii_case(b"chunked") => Ok(Some(Framing::Chunked)),
            _ => malformed("Transfer-Encoding does not end in chunked"),
        };
    }
    if !has_cl {
        return Ok(None);
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all("content-length") {
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return malformed("invalid Content-Length");
            }
            let n: u64 = std::str::from_utf8(part)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| HeadError::Malformed("invalid Content-Length".into()))?;
            if length.is_some_and(|l| l != n) {
                return malformed("conflicting Content-Length values");
            }
            length = Some(n);
        }
    }
    Ok(length.map(|n| {
        if n == 0 {
            Framing::Empty
        } else {
            Framing::Length(n)
        }
    }))
}

/// Whether the sender of a message with `version` and `headers` keeps the connection
/// open afterwards.
pub(crate) fn keeps_alive(version: Version, headers: &Headers) -> bool {
    match version {
        Version::Http10 => headers.has_token("connection", "keep-alive"),
        // HTTP/2 has no `Connection` field; its connections stay up.
        Version::Http11 | Version::Http2 => !headers.has_token("connection", "close"),
    }
}

/// Raw HTTP/1 field lines (chunked trailers) as header fields; `None` when empty.
pub(crate) fn trailers(raw: &[u8]) -> Option<Headers> {
    if raw.is_empty() {
        return None;
    }
    let mut headers = Headers::new();
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.is_empty() {
            continue;
        }
        headers.append(
            Bytes::copy_from_slice(name),
            Bytes::copy_from_slice(line[colon + 1..].trim_ascii()),
        );
    }
    (!headers.is_empty()).then_some(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> Result<RequestHead, HeadError> {
        parse_request(&Bytes::copy_from_slice(raw.as_bytes()), 128)
    }

    #[test]
    fn header_case_and_order_survive() {
        let h = req("GET / HTTP/1.1\r\nX-B: 1\r\nhost: a\r\nX-A: 2\r\n\r\n").unwrap();
        let names: Vec<&str> = h.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["X-B", "host", "X-A"]);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let both =
            req("POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap();
        assert!(request_framing(&both.headers).is_err());
        let two = req("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").unwrap();
        assert!(request_framing(&two.headers).is_err());
        let same = req("POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n").unwrap();
        assert_eq!(request_framing(&same.headers), Ok(Framing::Length(2)));
        let neg = req("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").unwrap();
        assert!(request_framing(&neg.headers).is_err());
        let gzip = req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").unwrap();
        assert!(request_framing(&gzip.headers).is_err());
    }

    #[test]
    fn bodiless_responses() {
        let h = Headers::new();
        assert_eq!(response_framing("HEAD", 200, &h), Ok(Framing::Empty));
        assert_eq!(response_framing("GET", 204, &h), Ok(Framing::Empty));
        assert_eq!(response_framing("GET", 304, &h), Ok(Framing::Empty));
        assert_eq!(response_framing("GET", 200, &h), Ok(Framing::UntilClose));
    }

    #[test]
    fn heads_end_at_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r"), None);
        let mut s = HeadScanner::default();
        assert_eq!(s.scan(b"GET / HTTP/1.1\nHost: a\n\n"), Scan::BareLf);
    }

    /// Scans `head` as it would arrive in pieces of `step` bytes: where it ends, and how
    /// many bytes were looked at in all.
    fn scan_in_pieces(head: &[u8], step: usize) -> (Option<usize>, usize) {
        let mut s = HeadScanner::default();
        for end in (step..head.len() + step).step_by(step) {
            if let Scan::Complete(at) = s.scan(&head[..end.min(head.len())]) {
                return (Some(at), s.examined());
            }
        }
        (None, s.examined())
    }

    #[test]
    fn a_head_split_anywhere_is_found_once_whole() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n";
        for step in 1..head.len() {
            assert_eq!(
                scan_in_pieces(head, step).0,
                Some(head.len()),
                "step {step}"
            );
        }
    }

    #[test]
    fn a_head_arriving_a_byte_at_a_time_is_scanned_in_linear_work() {
        // 70 KiB of fields, one byte per read: each byte is looked at a bounded number
        // of times (the rescan of a quadratic scanner would look ~35 000 times at each).
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        while head.len() < 70 * 1024 {
            head.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let (end, examined) = scan_in_pieces(&head, 1);
        assert_eq!(end, Some(head.len()));
        assert!(
            examined <= 4 * head.len(),
            "{examined} bytes examined for a {}-byte head",
            head.len()
        );
    }
}
