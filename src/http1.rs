//! An incremental HTTP/1.x message framer over a byte stream.
//!
//! It is fed chunks as they are relayed, wherever they happen to be cut, and reports
//! each message's head, its body bytes and its end: a head split over several chunks,
//! or two messages in one chunk, come out right. Bodies are framed as RFC 9112 says:
//! `Transfer-Encoding: chunked` (with trailers), `Content-Length`, no body for `HEAD`
//! responses, 1xx, 204 and 304, and until-close for responses with neither. After a
//! `101 Switching Protocols` or anything that does not parse, the framer stops looking
//! (the stream is no longer HTTP/1).

use std::collections::VecDeque;

/// Which side of the exchange a framer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Request,
    Response,
}

/// What the framer found in a chunk.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// A complete head, through its blank line.
    Head(&'a [u8]),
    /// Body bytes (decoded from chunked framing).
    Body(&'a [u8]),
    /// The message is complete.
    End,
}

/// Longest head accepted before giving up on framing.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug)]
enum State {
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    UntilClose,
    /// Not HTTP/1 (any more): everything is ignored.
    Opaque,
    /// The message just framed switched the stream to another protocol (101, or 2xx to
    /// CONNECT): it ends here and the framer turns opaque.
    Tunnel,
}

/// The framer for one direction of one connection.
#[derive(Debug)]
pub(crate) struct Framer {
    role: Role,
    state: State,
    /// Bytes of a head, chunk-size line or trailer line not complete yet.
    line: Vec<u8>,
    /// Response side: for each request sent, whether it was `HEAD` (no body comes back)
    /// or `CONNECT`.
    pending: VecDeque<RequestKind>,
}

/// What the response framer must know of the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestKind {
    Head,
    Connect,
    Other,
}

impl Framer {
    pub(crate) fn new(role: Role) -> Self {
        Framer {
            role,
            state: State::Head,
            line: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    /// Response side: a request of this kind was sent and awaits its response.
    pub(crate) fn expect_response(&mut self, kind: RequestKind) {
        self.pending.push_back(kind);
    }

    /// The kind of request a head is (for [`expect_response`](Self::expect_response)).
    pub(crate) fn request_kind(head: &[u8]) -> RequestKind {
        if head.starts_with(b"HEAD ") {
            RequestKind::Head
        } else if head.starts_with(b"CONNECT ") {
            RequestKind::Connect
        } else {
            RequestKind::Other
        }
    }

    /// The stream ended: a body delimited by the close is complete.
    pub(crate) fn finish(&mut self, out: &mut impl FnMut(Event<'_>)) {
        if matches!(self.state, State::UntilClose) {
            out(Event::End);
            self.state = State::Head;
        }
    }

    /// Frames `data`, reporting what it holds to `out`.
    pub(crate) fn feed(&mut self, mut data: &[u8], out: &mut impl FnMut(Event<'_>)) {
        while !data.is_empty() {
            data = match self.state {
                State::Opaque | State::Tunnel => return,
                State::UntilClose => {
                    out(Event::Body(data));
                    return;
                }
                State::Head => self.feed_head(data, out),
                State::Length(left) => {
                    let n = left.min(data.len() as u64) as usize;
                    out(Event::Body(&data[..n]));
                    self.state = State::Length(left - n as u64);
                    if left == n as u64 {
                        self.end(out);
                    }
                    &data[n..]
                }
                State::ChunkData(left) => {
                    let n = left.min(data.len() as u64) as usize;
                    out(Event::Body(&data[..n]));
                    self.state = if left == n as u64 {
                        State::ChunkDataEnd
                    } else {
                        State::ChunkData(left - n as u64)
                    };
                    &data[n..]
                }
                State::ChunkSize | State::ChunkDataEnd | State::Trailers => {
                    self.feed_line(data, out)
                }
            };
        }
    }

    /// Collects a head; on its blank line, reports it and picks the body framing.
    fn feed_head<'a>(&mut self, data: &'a [u8], out: &mut impl FnMut(Event<'_>)) -> &'a [u8] {
        // The blank line may straddle the previous chunk: search from 3 bytes back.
        let from = self.line.len().saturating_sub(3);
        self.line.extend_from_slice(data);
        let Some(end) = find(&self.line[from..], b"\r\n\r\n").map(|i| from + i + 4) else {
            if self.line.len() > MAX_HEAD {
                self.state = State::Opaque;
            }
            return &[];
        };
        let consumed = data.len() - (self.line.len() - end);
        self.line.truncate(end);
        let head = std::mem::take(&mut self.line);
        let Some(next) = self.framing(&head) else {
            self.state = State::Opaque;
            return &[];
        };
        out(Event::Head(&head));
        self.state = next;
        match self.state {
            State::Length(0) => self.end(out),
            State::Tunnel => {
                out(Event::End);
                self.state = State::Opaque;
            }
            _ => {}
        }
        &data[consumed..]
    }

    /// Collects one line of chunked framing and acts on it.
    fn feed_line<'a>(&mut self, data: &'a [u8], out: &mut impl FnMut(Event<'_>)) -> &'a [u8] {
        let Some(nl) = data.iter().position(|&b| b == b'\n') else {
            self.line.extend_from_slice(data);
            if self.line.len() > MAX_HEAD {
                self.state = State::Opaque;
            }
            return &[];
        };
        self.line.extend_from_slice(&data[..=nl]);
        let line = std::mem::take(&mut self.line);
        let text = trim_line(&line);
        self.state = match self.state {
            State::ChunkSize => match chunk_size(text) {
                Some(0) => State::Trailers,
                Some(n) => State::ChunkData(n),
                None => State::Opaque,
            },
            State::ChunkDataEnd if text.is_empty() => State::ChunkSize,
            State::Trailers if text.is_empty() => {
                self.end(out);
                State::Head
            }
            State::Trailers => State::Trailers,
            _ => State::Opaque,
        };
        &data[nl + 1..]
    }

    fn end(&mut self, out: &mut impl FnMut(Event<'_>)) {
        out(Event::End);
        if !matches!(self.state, State::Opaque) {
            self.state = State::Head;
        }
    }

    /// The body framing announced by `head`; `None` when it does not parse.
    fn framing(&mut self, head: &[u8]) -> Option<State> {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let (parsed, status) = match self.role {
            Role::Request => {
                let mut req = httparse::Request::new(&mut headers);
                let ok = matches!(req.parse(head), Ok(httparse::Status::Complete(_)));
                (ok.then_some(req.headers.len()), None)
            }
            Role::Response => {
                let mut res = httparse::Response::new(&mut headers);
                let ok = matches!(res.parse(head), Ok(httparse::Status::Complete(_)));
                (ok.then_some(res.headers.len()), res.code)
            }
        };
        let count = parsed?;
        let headers = &headers[..count];
        if let Some(code) = status {
            if code == 101 {
                return Some(State::Tunnel);
            }
            if (100..200).contains(&code) {
                // Interim: the final response to the same request is still to come.
                return Some(State::Length(0));
            }
            let request = self.pending.pop_front().unwrap_or(RequestKind::Other);
            if request == RequestKind::Connect && (200..300).contains(&code) {
                return Some(State::Tunnel);
            }
            if request == RequestKind::Head || code == 204 || code == 304 {
                return Some(State::Length(0));
            }
        }
        if headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("transfer-encoding")
                && h.value.to_ascii_lowercase().ends_with(b"chunked")
        }) {
            return Some(State::ChunkSize);
        }
        let length = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| {
                std::str::from_utf8(h.value)
                    .ok()?
                    .trim()
                    .parse::<u64>()
                    .ok()
            });
        Some(match (length, self.role) {
            (Some(n), _) => State::Length(n),
            (None, Role::Request) => State::Length(0),
            (None, Role::Response) => State::UntilClose,
        })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The size of a chunk-size line, ignoring chunk extensions.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let hex = line.split(|&b| b == b';').next()?;
    let hex = std::str::from_utf8(hex).ok()?.trim();
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` and renders the events as text.
    fn run(role: Role, chunks: &[&[u8]], pending: &[RequestKind]) -> Vec<String> {
        let mut f = Framer::new(role);
        for k in pending {
            f.expect_response(*k);
        }
        let mut seen = Vec::new();
        let mut out = |e: Event<'_>| match e {
            Event::Head(h) => seen.push(format!("head {}", h.len())),
            Event::Body(b) => seen.push(format!("body {}", String::from_utf8_lossy(b))),
            Event::End => seen.push("end".into()),
        };
        for c in chunks {
            f.feed(c, &mut out);
        }
        f.finish(&mut out);
        seen
    }

    #[test]
    fn two_requests_in_one_chunk() {
        let two = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\n\r\n";
        assert_eq!(
            run(Role::Request, &[two], &[]),
            ["head 38", "body hi", "end", "head 18", "end"]
        );
    }

    #[test]
    fn head_split_across_chunks_even_inside_the_blank_line() {
        let parts: [&[u8]; 3] = [b"GET / HTTP/1.1\r\nHost: a\r", b"\n\r", b"\nGET"];
        assert_eq!(run(Role::Request, &parts, &[]), ["head 27", "end"]);
    }

    #[test]
    fn chunked_with_trailers_split_anywhere() {
        let msg: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n";
        let whole = run(Role::Response, &[msg], &[]);
        assert_eq!(whole, ["head 47", "body abc", "body de", "end"]);
        let bytes: Vec<&[u8]> = msg.chunks(1).collect();
        let split = run(Role::Response, &bytes, &[]);
        assert_eq!(split.iter().filter(|e| *e == "end").count(), 1);
        let body: String = split
            .iter()
            .filter_map(|e| e.strip_prefix("body "))
            .collect();
        assert_eq!(body, "abcde");
    }

    #[test]
    fn bodiless_responses() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(
            run(Role::Response, &[head], &[RequestKind::Head]),
            ["head 38", "end"]
        );
        let no_content = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(run(Role::Response, &[no_content], &[]), ["head 27", "end"]);
        let until_close = b"HTTP/1.0 200 OK\r\n\r\nabc";
        assert_eq!(
            run(Role::Response, &[until_close], &[]),
            ["head 19", "body abc", "end"]
        );
    }

    #[test]
    fn garbage_stops_framing() {
        assert!(run(Role::Request, &[b"\x16\x03\x01junk\r\n\r\nmore"], &[]).is_empty());
    }
}
