//! [`Packed`]: a flow the web UI's feed saw go by, as the [`MemoryStore`] keeps it:
//! the request's head in one buffer, the response's in another, both bodies in a
//! third, the rest plain values. A [`Record`] is made of it only when the UI asks for one
//! ([`Packed::record`]). A record is fifteen allocations or so (its strings, its heads'
//! fields, its bodies), made on the proxy's threads and freed, long after and out of
//! the cache, when the store drops the oldest flow; a packed flow is held in the
//! store's ring itself, and its buffers are cut from a block of the thread's
//! ([`BLOCK`]) freed when its last flow goes: no allocation, and no free, of its own.
//!
//! [`MemoryStore`]: super::MemoryStore

use std::borrow::Cow;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

use crate::capture::{
    differs, error_text, is_websocket, kept_body, recorded_reason, scheme_and_path, version_name,
    Annotations, Record, RecordedBody, RecordedFacts, RecordedRequest, RecordedResponse,
    RecordedTimings,
};
use crate::core::{Connection, ServerFacts, SocketFacts, TlsFacts};
use crate::http::message::{Body, Headers, HttpFlow, Response, Version};
use crate::web::json::{duration_ms, media_type, millis_since_epoch, FlowState, RowValues};

/// A flow as the store keeps it (see the module's note). Made at the request by
/// [`of_request`](Self::of_request), given its response's head by
/// [`set_response`](Self::set_response) (a streaming body's, shown at once) and the
/// rest by [`finish`](Self::finish): what `Record::head_of`, a record's
/// `response` set at the response hook, and `Record::finish` make, in the same steps
/// (`a_packed_flow_is_the_record_the_feed_made` in the feed's tests says so).
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    started_at: SystemTime,
    /// The client's side of the connection, shared by its flows.
    client: Arc<ClientSide>,
    server: Option<SocketAddr>,
    /// The upstream connection's facts, shared with it.
    facts_server: Option<Arc<ServerFacts>>,
    timings: RecordedTimings,
    /// The marks and the error, which few flows have.
    extra: Option<Box<Extra>>,
    websocket: bool,
    /// `""` (a CONNECT), `http` or `https`.
    scheme: &'static str,
    port: u16,
    version: Version,
    /// The request's method, host, path and header fields, one after the other.
    head: Bytes,
    method: usize,
    host: usize,
    path: usize,
    fields: usize,
    /// The response's reason and header fields, once it has a head.
    reply: Bytes,
    response: Option<ResponseAt>,
    /// The request's body, then the response's.
    bodies: Bytes,
    request_body: BodyAt,
}

/// What a record has of the client's side of its connection: the same for every flow
/// of it, kept once for them ([`ClientSide::of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientSide {
    addr: Option<SocketAddr>,
    tls: bool,
    tls_facts: TlsFacts,
    socket: SocketFacts,
}

impl ClientSide {
    /// The client's side of `conn`: `kept` shared if it is the same (and made the new
    /// one if not).
    pub(crate) fn of(conn: &Connection, kept: &mut Option<Arc<ClientSide>>) -> Arc<ClientSide> {
        let same = |k: &ClientSide| {
            k.addr == conn.client.addr
                && k.tls == conn.tls
                && k.socket == conn.client_socket
                && k.tls_facts == conn.tls_facts
        };
        match kept {
            Some(k) if same(k) => k.clone(),
            _ => {
                let side = Arc::new(ClientSide {
                    addr: conn.client.addr,
                    tls: conn.tls,
                    tls_facts: conn.tls_facts.clone(),
                    socket: conn.client_socket,
                });
                *kept = Some(side.clone());
                side
            }
        }
    }
}

/// The marks and the error of a [`Packed`] flow that has any.
#[derive(Debug, Clone, Default)]
struct Extra {
    annotations: Annotations,
    error: Option<String>,
}

/// A response's head in a [`Packed`]'s `reply` (its length, how many fields), what
/// it says, and its body.
#[derive(Debug, Clone, Copy)]
struct ResponseAt {
    status: u16,
    version: Version,
    reason: usize,
    /// The bytes of its header fields (encoded), and how many there are.
    fields_len: usize,
    fields: usize,
    body: BodyAt,
}

impl ResponseAt {
    /// The length of the head in `reply`.
    fn head_len(&self) -> usize {
        self.reason + self.fields_len
    }
}

/// A body in a [`Packed`]'s `bodies`: its kept length, its size, whether it was cut.
#[derive(Debug, Clone, Copy, Default)]
struct BodyAt {
    len: usize,
    size: u64,
    truncated: bool,
}

/// The encoded length of `headers`' fields: each a name's and a value's length (eight
/// bytes each), then the name and the value.
fn fields_len(headers: &Headers) -> usize {
    headers
        .raw_iter()
        .map(|(n, v)| 16 + n.len() + v.len())
        .sum()
}

fn put_fields(buf: &mut BytesMut, headers: &Headers) {
    for (n, v) in headers.raw_iter() {
        buf.extend_from_slice(&(n.len() as u64).to_le_bytes());
        buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
        buf.extend_from_slice(n);
        buf.extend_from_slice(v);
    }
}

/// The size of the blocks packed flows' buffers are cut from.
const BLOCK: usize = 64 * 1024;

thread_local! {
    /// The rest of this thread's block: the buffers of the flows its hooks pack are
    /// cut from it one after the other, so that a flow costs no allocation of its own
    /// and the store, dropping its oldest flows, frees a block every few dozen flows
    /// (when the last flow cut from it goes) rather than a buffer or two for each, from
    /// memory long out of the cache.
    static BLOCK_LEFT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// A buffer of `len` bytes written by `fill`, cut from this thread's block (or made
/// on its own when large, or when the block cannot be had).
fn packed(len: usize, fill: impl FnOnce(&mut BytesMut)) -> Bytes {
    if len == 0 {
        return Bytes::new();
    }
    let own = |fill: &mut dyn FnMut(&mut BytesMut)| {
        let mut buf = BytesMut::with_capacity(len);
        fill(&mut buf);
        buf.freeze()
    };
    let mut fill = Some(fill);
    let mut write = |buf: &mut BytesMut| {
        if let Some(fill) = fill.take() {
            fill(buf);
        }
    };
    if len > BLOCK / 8 {
        return own(&mut write);
    }
    let cut = BLOCK_LEFT.try_with(|left| {
        let mut left = left.try_borrow_mut().ok()?;
        if left.capacity() < len {
            *left = BytesMut::with_capacity(BLOCK);
        }
        write(&mut left);
        Some(left.split().freeze())
    });
    match cut {
        Ok(Some(buf)) => buf,
        _ => own(&mut write),
    }
}

/// Where the `count` fields encoded in `buf` from `at` are: each one's name and
/// value, as ranges of `buf` (stopping at one that would go past its end, which a
/// buffer this module wrote never has).
fn fields(
    buf: &[u8],
    mut at: usize,
    count: usize,
) -> impl Iterator<Item = (Range<usize>, Range<usize>)> + '_ {
    let len = |at: usize| {
        buf.get(at..at.checked_add(8)?)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .and_then(|b| usize::try_from(u64::from_le_bytes(b)).ok())
    };
    (0..count).map_while(move |_| {
        let (n, v) = (len(at)?, len(at.checked_add(8)?)?);
        let name = at + 16..(at + 16).checked_add(n)?;
        let value = name.end..name.end.checked_add(v)?;
        if value.end > buf.len() {
            return None;
        }
        at = value.end;
        Some((name, value))
    })
}

/// The `count` fields encoded in `buf` from `at`, as slices of it (no copy).
fn fields_of(buf: &Bytes, at: usize, count: usize) -> Headers {
    let mut headers = Headers::with_capacity(count);
    for (name, value) in fields(buf, at, count) {
        headers.append(buf.slice(name), buf.slice(value));
    }
    headers
}

/// `bytes` as text, borrowed when it is UTF-8 (checked in one pass, the common case,
/// before the slower lossy walk a malformed one needs).
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// `buf[at..at + len]`, shared; `None` past its end (which a buffer this module wrote
/// never is).
fn slice(buf: &Bytes, at: usize, len: usize) -> Option<Bytes> {
    let end = at.checked_add(len)?;
    (end <= buf.len()).then(|| buf.slice(at..end))
}

/// `buf[at..at + len]` as text, borrowed when it is UTF-8 (empty past its end).
fn part(buf: &[u8], at: usize, len: usize) -> Cow<'_, str> {
    lossy(buf.get(at..at + len).unwrap_or_default())
}

/// `buf[at..at + len]` as text, owned.
fn text(buf: &Bytes, at: usize, len: usize) -> String {
    part(buf, at, len).into_owned()
}

/// A body as a record keeps it ([`kept_body`]): the bytes to keep, and what the
/// record says of them.
fn body_of<'a>(body: &'a Body, prefix: &'a Bytes, size: u64, limit: usize) -> (&'a [u8], BodyAt) {
    let (kept, size, truncated) = kept_body(body, prefix, size, limit);
    let at = BodyAt {
        len: kept.len(),
        size,
        truncated,
    };
    (kept, at)
}

/// A response's head, packed: where it is, and its reason (its bytes are the reason
/// then the fields, [`put_response`]).
fn head_of_response(r: &Response, body: BodyAt) -> (ResponseAt, &str) {
    let reason = recorded_reason(r);
    let at = ResponseAt {
        status: r.status,
        version: r.version,
        reason: reason.len(),
        fields_len: fields_len(&r.headers),
        fields: r.headers.len(),
        body,
    };
    (at, reason)
}

fn put_response(buf: &mut BytesMut, r: &Response, reason: &str) {
    buf.extend_from_slice(reason.as_bytes());
    put_fields(buf, &r.headers);
}

/// What a finished flow adds to its [`Packed`] ([`Packed::finish`]): made apart, so
/// that the bodies are copied before the store is locked.
pub(crate) struct PackedEnd {
    /// The request's body, then the response's.
    bodies: Bytes,
    request_body: BodyAt,
    /// The response's body, if the flow has a response that was delivered.
    response_body: Option<BodyAt>,
    /// Its head, packed, unless the one shown at the response hook is kept.
    reply: Option<(ResponseAt, Bytes)>,
    timings: RecordedTimings,
    error: Option<String>,
    websocket: bool,
}

impl PackedEnd {
    /// What `flow`, finished, adds, keeping at most `body_limit` bytes of each body;
    /// its response's head too, unless it was `shown` ([`Packed::set_response`]).
    pub(crate) fn of(flow: &HttpFlow, body_limit: usize, shown: bool) -> Self {
        let (request_data, request_body) = body_of(
            &flow.request.body,
            &flow.request_body_prefix,
            flow.request_body_size,
            body_limit,
        );
        // A request that could not be delivered has its error and no response (the
        // page the proxy made for it is not the origin's answer).
        let delivered = flow.response.as_ref().filter(|_| !flow.undelivered);
        let (response_data, response_body) = match delivered {
            Some(r) => {
                let (data, body) = body_of(
                    &r.body,
                    &flow.response_body_prefix,
                    flow.response_body_size,
                    body_limit,
                );
                (data, Some(body))
            }
            None => (&[][..], None),
        };
        let bodies = packed(request_data.len() + response_data.len(), |buf| {
            buf.extend_from_slice(request_data);
            buf.extend_from_slice(response_data);
        });
        PackedEnd {
            bodies,
            request_body,
            response_body,
            reply: delivered.filter(|_| !shown).map(reply_of),
            timings: RecordedTimings::of(flow),
            error: error_text(flow),
            websocket: is_websocket(flow),
        }
    }
}

/// `r`'s head, packed (its body not yet known).
fn reply_of(r: &Response) -> (ResponseAt, Bytes) {
    let (at, reason) = head_of_response(r, BodyAt::default());
    let buf = packed(at.head_len(), |buf| put_response(buf, r, reason));
    (at, buf)
}

impl Packed {
    /// `flow` as its request is about to go upstream, on `conn` (whose client side is
    /// `client`, [`ClientSide::of`]): what `Record::head_of` makes of it.
    /// For a flow with no bodies, response or error yet (the feed makes a record of
    /// any other).
    pub(crate) fn of_request(conn: &Connection, flow: &HttpFlow, client: Arc<ClientSide>) -> Self {
        let r = &flow.request;
        let (scheme, path) = scheme_and_path(r);
        let (method, host) = (r.method.as_str(), r.target.host.as_str());
        let size = method.len() + host.len() + path.len() + fields_len(&r.headers);
        let head = packed(size, |head| {
            head.extend_from_slice(method.as_bytes());
            head.extend_from_slice(host.as_bytes());
            head.extend_from_slice(path.as_bytes());
            put_fields(head, &r.headers);
        });
        Packed {
            started_at: flow.timings.started_at,
            client,
            server: conn.server.addr,
            facts_server: conn.server_facts.clone(),
            timings: RecordedTimings::of(flow),
            extra: (flow.is_replay.is_some()
                || !flow.marked.is_empty()
                || !flow.comment.is_empty())
            .then(|| {
                Box::new(Extra {
                    annotations: Annotations {
                        is_replay: flow.is_replay.map(|r| r.as_str().to_owned()),
                        marked: flow.marked.clone(),
                        comment: flow.comment.clone(),
                    },
                    error: None,
                })
            }),
            websocket: false,
            scheme,
            port: r.target.port,
            version: r.version,
            head,
            method: method.len(),
            host: host.len(),
            path: path.len(),
            fields: r.headers.len(),
            reply: Bytes::new(),
            response: None,
            bodies: Bytes::new(),
            request_body: BodyAt::default(),
        }
    }

    /// The response's head, packed, for [`set_response`](Self::set_response): made
    /// before the store is locked.
    pub(crate) fn response_head(r: &Response) -> ResponseHead {
        ResponseHead(reply_of(r))
    }

    /// Shows `head` (a streaming body's response, [`response_head`](Self::response_head)),
    /// its body to come with the flow's end.
    pub(crate) fn set_response(&mut self, head: ResponseHead) {
        let (at, reply) = head.0;
        self.reply = reply;
        self.response = Some(at);
    }

    /// Brings the flow up to date with its end (as `Record::finish` does a record):
    /// the marks, the bodies, the response (the head shown before kept), the timings,
    /// the error. `flow`'s response's head is packed here (the store locked) only if
    /// `end` was made thinking it shown, and it was not.
    pub(crate) fn finish(&mut self, flow: &HttpFlow, end: PackedEnd) {
        let (marked, comment) = self.extra.as_deref().map_or(("", ""), |e| {
            (
                e.annotations.marked.as_str(),
                e.annotations.comment.as_str(),
            )
        });
        if differs(marked, &flow.marked) || differs(comment, &flow.comment) {
            let extra = self.extra.get_or_insert_with(Box::default);
            extra.annotations.marked.clone_from(&flow.marked);
            extra.annotations.comment.clone_from(&flow.comment);
        }
        self.request_body = end.request_body;
        self.bodies = end.bodies;
        let (response, reply) = match (end.response_body, self.response, end.reply) {
            (None, ..) => (None, Bytes::new()),
            // The head shown at the response hook stays.
            (Some(body), Some(kept), _) => {
                self.response = Some(ResponseAt { body, ..kept });
                return self.ended(end.timings, end.error, end.websocket);
            }
            (Some(body), None, Some((at, reply))) => (Some(ResponseAt { body, ..at }), reply),
            (Some(body), None, None) => match flow.response.as_ref().map(reply_of) {
                Some((at, reply)) => (Some(ResponseAt { body, ..at }), reply),
                None => (None, Bytes::new()),
            },
        };
        self.response = response;
        self.reply = reply;
        self.ended(end.timings, end.error, end.websocket);
    }

    /// The end's timings, error and WebSocket switch.
    fn ended(&mut self, timings: RecordedTimings, error: Option<String>, websocket: bool) {
        self.timings = timings;
        self.set_error(error);
        self.websocket |= websocket;
    }

    /// Marks the flow failed with `error` (killed by the user).
    pub(crate) fn fail(&mut self, error: &str) {
        self.set_error(Some(error.to_owned()));
    }

    fn set_error(&mut self, error: Option<String>) {
        match (&mut self.extra, error) {
            (Some(extra), error) => extra.error = error,
            (None, None) => {}
            (None, error) => {
                self.extra = Some(Box::new(Extra {
                    error,
                    ..Extra::default()
                }));
            }
        }
    }

    /// Body and message bytes kept, counted against the store's `max_bytes`.
    pub(crate) fn kept_bytes(&self) -> usize {
        self.request_body.len + self.response.map_or(0, |r| r.body.len)
    }

    /// Whether the flow became a WebSocket.
    pub(crate) fn is_websocket(&self) -> bool {
        self.websocket
    }

    /// The record of this flow, as the feed's `Record` would be: its buffers shared
    /// (headers and bodies are slices of them), its strings copied.
    pub(crate) fn record(&self) -> Record {
        let head = &self.head;
        let (method, host, path) = (self.method, self.host, self.path);
        let body = |at: usize, b: BodyAt| RecordedBody {
            data: slice(&self.bodies, at, b.len).unwrap_or_default(),
            size: b.size,
            truncated: b.truncated,
        };
        let request = RecordedRequest {
            method: text(head, 0, method),
            scheme: self.scheme.to_owned(),
            host: text(head, method, host),
            port: self.port,
            path: text(head, method + host, path),
            version: version_name(self.version).to_owned(),
            headers: fields_of(head, method + host + path, self.fields),
            body: body(0, self.request_body),
        };
        let response = self.response.map(|r| RecordedResponse {
            status: r.status,
            reason: text(&self.reply, 0, r.reason),
            version: version_name(r.version).to_owned(),
            headers: fields_of(&self.reply, r.reason, r.fields),
            body: body(self.request_body.len, r.body),
        });
        Record {
            started_at: self.started_at,
            client: self.client.addr,
            server: self.server,
            client_tls: self.client.tls,
            tls: self.client.tls_facts.clone(),
            request,
            response,
            timings: self.timings,
            annotations: self
                .extra
                .as_deref()
                .map(|e| e.annotations.clone())
                .unwrap_or_default(),
            error: self.extra.as_deref().and_then(|e| e.error.clone()),
            websocket: self.websocket.then(Vec::new),
            facts: RecordedFacts {
                client: self.client.socket,
                server: self.facts_server.as_deref().cloned().unwrap_or_default(),
                websocket_close: None,
            },
        }
    }
}

impl Packed {
    /// The live row of this flow, stored as `id`, in `state`: what
    /// [`SummaryRow`](crate::web::store::SummaryRow) writes of its [`record`](Self::record),
    /// read from the packed buffers with no record made.
    pub(crate) fn row(&self, id: u64, state: FlowState, matches: bool) -> RowValues<'_> {
        let head = &self.head[..];
        let content_type = self.response.and_then(|r| {
            let reply = &self.reply[..];
            fields(reply, r.reason, r.fields)
                .find(|(name, _)| reply[name.clone()].eq_ignore_ascii_case(b"content-type"))
                .and_then(|(_, value)| std::str::from_utf8(&reply[value]).ok())
        });
        let extra = self.extra.as_deref();
        RowValues {
            id,
            time: millis_since_epoch(self.started_at),
            method: part(head, 0, self.method),
            scheme: self.scheme,
            host: part(head, self.method, self.host),
            port: self.port,
            path: part(head, self.method + self.host, self.path),
            status: self.response.map(|r| r.status),
            content_type: media_type(content_type),
            size: self.response.map_or(0, |r| r.body.size),
            duration: duration_ms(&self.timings),
            state,
            error: extra.is_some_and(|e| e.error.is_some()),
            websocket: self.websocket,
            marked: extra.map_or("", |e| &e.annotations.marked),
            comment: extra.map_or("", |e| &e.annotations.comment),
            matches,
        }
    }
}

/// A response's head packed by [`Packed::response_head`].
pub(crate) struct ResponseHead((ResponseAt, Bytes));
