//! Entry points into the parsers and the hook chain for fuzz targets and benchmarks.
//!
//! Not part of the API: hidden from the docs and free to change. Each function takes
//! plain bytes and must never panic, whatever they are; that is what the fuzz targets
//! check. Some also check a parser against itself (the same result from bytes that
//! arrive in pieces, a round trip through the encoder) and panic, as a bug, when it
//! disagrees.

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

#[cfg(feature = "capture")]
/// Parses `data` (as UTF-8) as a filter expression and, when it parses, matches it
/// against a few fixed records (a GET with a gzip-encoded response, a POST that failed
/// without one, a WebSocket flow). Returns how many matched, or `None` if it does not
/// parse. Panics if a parse error points past the text, if a record the filter matches
/// breaks one of its [`prefilters`](crate::capture::Filter::prefilters) (a store would
/// skip a flow the filter matches), or if a filter that does not
/// [need bodies](crate::capture::Filter::needs_bodies) changes its answer when the
/// bodies are left out.
pub fn filter_records(data: &[u8]) -> Option<usize> {
    use crate::capture::{Filter, Prefilter, Record};

    /// Whether `record` meets `pre` (as a store checks it: ASCII case ignored).
    fn meets(pre: &Prefilter, record: &Record) -> bool {
        let request = &record.request;
        let response = record.response.as_ref();
        match pre {
            Prefilter::Status(code) => response.is_some_and(|r| r.status == *code),
            Prefilter::NoResponse => response.is_none(),
            Prefilter::HasResponse => response.is_some(),
            Prefilter::HostOrRequestHead(text) => {
                let lines: String = request
                    .headers
                    .iter()
                    .map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v)))
                    .collect();
                request.host.to_ascii_lowercase().contains(text.as_str())
                    || lines.to_ascii_lowercase().contains(text.as_str())
            }
            Prefilter::Method(text) => request.method.to_ascii_lowercase().contains(text.as_str()),
        }
    }

    let text = std::str::from_utf8(data).ok()?;
    let filter = match Filter::parse(text) {
        Ok(filter) => filter,
        Err(e) => {
            assert!(e.position() <= text.len(), "{e} in {} bytes", text.len());
            return None;
        }
    };
    assert_eq!(filter.as_str(), text);
    let prefilters = filter.prefilters();
    let mut matched = 0;
    for record in filter_fixtures().iter() {
        let hit = filter.matches(record);
        if hit {
            matched += 1;
            for pre in &prefilters {
                assert!(
                    meets(pre, record),
                    "{pre:?} fails a record {text:?} matches"
                );
            }
        }
        if !filter.needs_bodies() {
            let mut bare = record.clone();
            bare.request.body = Default::default();
            if let Some(r) = bare.response.as_mut() {
                r.body = Default::default();
            }
            assert_eq!(filter.matches(&bare), hit, "{text:?} looked at a body");
        }
    }
    Some(matched)
}

#[cfg(feature = "capture")]
/// The records [`filter_records`] matches filters against, made once.
fn filter_fixtures() -> &'static [crate::capture::Record] {
    use std::sync::OnceLock;
    use std::time::{Duration, SystemTime};

    use crate::capture::{
        Record, RecordedBody, RecordedMessage, RecordedRequest, RecordedResponse, RecordedTimings,
    };
    use crate::http::message::Headers;

    static RECORDS: OnceLock<Vec<Record>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let headers = |fields: &[(&str, &str)]| {
            let mut h = Headers::new();
            for (n, v) in fields {
                h.append(n.to_string(), v.to_string());
            }
            h
        };
        let body = |data: &[u8]| RecordedBody::whole(Bytes::copy_from_slice(data));
        let request = |method: &str, scheme: &str, host: &str, port, path: &str| RecordedRequest {
            method: method.into(),
            scheme: scheme.into(),
            host: host.into(),
            port,
            path: path.into(),
            version: "HTTP/1.1".into(),
            headers: Headers::new(),
            body: RecordedBody::default(),
        };
        let record = |request, response| Record {
            annotations: Default::default(),
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            client: Some(([127, 0, 0, 1], 50000).into()),
            server: None,
            client_tls: false,
            tls: Default::default(),
            request,
            response,
            timings: RecordedTimings::default(),
            error: None,
            websocket: None,
            facts: Default::default(),
        };

        // A GET over HTTPS answered with a gzip-encoded page (`~b` decodes it).
        let mut get = request("GET", "https", "www.Example.com", 8443, "/a/b?q=rust&x=1");
        get.headers = headers(&[
            ("Host", "www.Example.com:8443"),
            ("Accept", "text/html"),
            ("Cookie", "id=7"),
        ]);
        let page = b"<html><title>Hello</title></html>";
        // gzip is always available: encoding cannot fail.
        let gzipped = crate::decode::encode("gzip", page).unwrap_or_else(|_| page.to_vec());
        let mut get = record(
            get,
            Some(RecordedResponse {
                status: 200,
                reason: "OK".into(),
                version: "HTTP/1.1".into(),
                headers: headers(&[
                    ("Content-Type", "text/html; charset=utf-8"),
                    ("Content-Encoding", "gzip"),
                    ("Set-Cookie", "id=8; Path=/"),
                ]),
                body: body(&gzipped),
            }),
        );
        get.client_tls = true;
        get.server = Some(([93, 184, 215, 14], 8443).into());
        // Marked and commented in mitmproxy (`~marked`, `~marker`, `~comment`).
        get.annotations.marked = ":default:".into();
        get.annotations.comment = "looked at\ntwice".into();

        // A POST of JSON to an IPv6 origin that failed before any response.
        let mut post = request("POST", "http", "::1", 8080, "/api/upload");
        post.headers = headers(&[
            ("Host", "[::1]:8080"),
            ("Content-Type", "application/json"),
            ("X-Token", "Secret"),
        ]);
        post.body = body(b"{\"name\":\"Ferris\",\"bytes\":\"\xff\xfe\"}");
        let mut post = record(post, None);
        post.error = Some("connection refused".into());
        post.annotations.is_replay = Some("request".into());

        // A WebSocket flow: a 101 to an upgrade, and its messages.
        let mut ws = request("GET", "http", "chat.localhost", 80, "/socket");
        ws.headers = headers(&[
            ("Host", "chat.localhost"),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
        ]);
        let mut ws = record(
            ws,
            Some(RecordedResponse {
                status: 101,
                reason: "Switching Protocols".into(),
                version: "HTTP/1.1".into(),
                headers: headers(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]),
                body: RecordedBody::default(),
            }),
        );
        ws.websocket = Some(vec![RecordedMessage {
            from_client: true,
            text: true,
            data: Bytes::from_static(b"hello"),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_001),
        }]);

        vec![get, post, ws]
    })
}

/// Parses `data` as WebSocket frames, the way the relay reads them, and checks the codec
/// against itself. The first byte says who sent them (bit 0: the client, whose frames
/// are masked) and how large frames and messages may be (bit 1: small limits, 200 and
/// 300 bytes); the second byte is the size of the pieces the rest arrives in (0 counts
/// as 1).
///
/// Panics if the frames (or the error, or the bytes left over) differ between the
/// pieces and the whole of the stream at once; if a frame, encoded again (masked as
/// its sender masks), does not parse back to the same frame using the whole encoding;
/// or if a message the assembler puts together is not its frames' payloads joined.
/// Returns how many frames parsed.
pub fn websocket_frames(data: &[u8]) -> usize {
    use crate::wire::websocket::{
        encode, Assembled, Assembler, Frame, FrameError, FrameParser, OpCode, Role,
    };

    /// Every frame parsed from `stream` arriving in pieces of `step` bytes; how the
    /// stream ended (an error, or `None`: more bytes needed); what was left unparsed.
    fn parse_all(
        stream: &[u8],
        step: usize,
        from: Role,
        max_frame: usize,
    ) -> (Vec<Frame>, Option<FrameError>, BytesMut) {
        let mut parser = FrameParser::new(max_frame);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for piece in stream.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match parser.parse(&mut buf, from) {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(e) => return (frames, Some(e), buf),
                }
            }
        }
        (frames, None, buf)
    }

    let [flags, step, stream @ ..] = data else {
        return 0;
    };
    let from = if flags & 1 != 0 {
        Role::Client
    } else {
        Role::Server
    };
    let (max_frame, max_message) = if flags & 2 != 0 {
        (200, 300)
    } else {
        (1 << 16, 1 << 17)
    };
    let step = usize::from(*step).max(1);

    let (frames, error, rest) = parse_all(stream, step, from, max_frame);
    let whole = parse_all(stream, stream.len().max(1), from, max_frame);
    assert_eq!(frames, whole.0, "the frames depend on how the bytes arrive");
    assert_eq!(error, whole.1, "the error depends on how the bytes arrive");
    if error.is_none() {
        assert_eq!(rest, whole.2, "the bytes left depend on how they arrive");
    }

    // Each frame, encoded again as its sender would, parses back to itself.
    for frame in &frames {
        let mut out = BytesMut::new();
        encode(frame, from == Role::Client, &mut out);
        let len = out.len();
        let again = FrameParser::new(max_frame).parse(&mut out, from);
        assert_eq!(
            again,
            Ok(Some(frame.clone())),
            "a frame encoded in {len} bytes"
        );
        assert!(out.is_empty(), "{} of {len} encoded bytes left", out.len());
    }

    // The assembler against a plain model: a message is its frames' payloads joined.
    let mut assembler = Assembler::new(max_message);
    let mut joined: Option<(bool, u8, Vec<u8>)> = None;
    for frame in &frames {
        let got = assembler.push(frame.clone());
        let Ok(got) = got else {
            break;
        };
        match got {
            Assembled::Control(control) => {
                assert!(control.opcode.is_control() && control == *frame);
            }
            Assembled::Pending => {
                assert!(!frame.fin && !frame.opcode.is_control());
                let (text, rsv, mut data) = joined.take().unwrap_or_else(|| {
                    assert_ne!(frame.opcode, OpCode::Continuation, "a message from nothing");
                    (frame.opcode == OpCode::Text, frame.rsv, Vec::new())
                });
                data.extend_from_slice(&frame.payload);
                joined = Some((text, rsv, data));
            }
            Assembled::Message { text, rsv, payload } => {
                assert!(frame.fin && !frame.opcode.is_control());
                let (want_text, want_rsv, mut data) = joined.take().unwrap_or_else(|| {
                    assert_ne!(frame.opcode, OpCode::Continuation, "a message from nothing");
                    (frame.opcode == OpCode::Text, frame.rsv, Vec::new())
                });
                data.extend_from_slice(&frame.payload);
                assert_eq!((text, rsv), (want_text, want_rsv));
                assert_eq!(payload, data, "a message is not its fragments joined");
                assert!(payload.len() <= max_message);
            }
        }
    }
    frames.len()
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

#[cfg(feature = "capture")]
/// Writes `count` flows, as `--save FILE.flows` writes them, of one record shaped as
/// `mitm-bench`'s `http-ka` load makes (a GET over plain HTTP answered with 1 KiB, the
/// connections' facts known), to a stream that only counts; returns the bytes
/// written.
pub fn write_flows(count: usize) -> usize {
    use std::io::{self, Write};
    use std::time::{Duration, SystemTime};

    use crate::capture::flows::FlowWriter;
    use crate::capture::{Record, RecordedBody, RecordedRequest, RecordedResponse};
    use crate::http::message::Headers;

    /// Counts what it is given.
    struct Counter(usize);
    impl Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let mut request = Headers::new();
    request.append("Host", "127.0.0.1:40123");
    request.append("User-Agent", "mitm-bench");
    let mut response = Headers::new();
    response.append("Server", "nginx/1.24.0");
    response.append("Date", "Mon, 07 Dec 2026 12:00:00 GMT");
    response.append("Content-Type", "application/octet-stream");
    response.append("Content-Length", "1024");
    response.append("Connection", "keep-alive");
    let mut record = Record {
        annotations: Default::default(),
        started_at: at,
        client: Some(([127, 0, 0, 1], 50000).into()),
        server: Some(([127, 0, 0, 1], 40123).into()),
        client_tls: false,
        tls: Default::default(),
        request: RecordedRequest {
            method: "GET".into(),
            scheme: "http".into(),
            host: "127.0.0.1".into(),
            port: 40123,
            path: "/1k".into(),
            version: "HTTP/1.1".into(),
            headers: request,
            body: RecordedBody::default(),
        },
        response: Some(RecordedResponse {
            status: 200,
            reason: "OK".into(),
            version: "HTTP/1.1".into(),
            headers: response,
            body: RecordedBody::whole(Bytes::from(vec![b'x'; 1024])),
        }),
        timings: crate::capture::RecordedTimings {
            request_end: Some(Duration::from_micros(20)),
            response_first_byte: Some(Duration::from_micros(180)),
            response_end: Some(Duration::from_micros(200)),
        },
        error: None,
        websocket: None,
        facts: Default::default(),
    };
    record.facts.client.local = Some(([127, 0, 0, 1], 8080).into());
    record.facts.client.started = Some(at);
    record.facts.server.socket.local = Some(([127, 0, 0, 1], 50001).into());
    record.facts.server.socket.started = Some(at);
    record.facts.server.socket.tcp_setup = Some(at);
    let mut writer = FlowWriter::new(Counter(0));
    for _ in 0..count {
        // Writing to a counter cannot fail.
        let _ = writer.write(&record);
    }
    writer.finish().map_or(0, |c| c.0)
}
