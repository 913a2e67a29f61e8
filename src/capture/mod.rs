//! Keeping flows: [`Record`] (one finished flow as plain data, what every capture
//! format writes and reads), [`Sink`] (where records go: a file format, a store), and
//! [`Capture`] (the middleware that turns each finished flow into a record and hands it
//! to a writer thread through a bounded queue, so that saving never slows the proxy).
//!
//! ```no_run
//! # async fn run() -> mitm::Result<()> {
//! use std::sync::Arc;
//! use mitm::capture::{Capture, Record, Sink};
//!
//! /// Prints one line per flow.
//! struct Lines;
//!
//! impl Sink for Lines {
//!     fn write(&mut self, record: &Record) -> std::io::Result<()> {
//!         let status = record.response.as_ref().map_or(0, |r| r.status);
//!         println!("{} {} {status}", record.request.method, record.request.url());
//!         Ok(())
//!     }
//! }
//!
//! let capture = Capture::builder().sink(Box::new(Lines)).start();
//! let proxy = mitm::Mitm::builder().http_handler(Arc::new(capture)).bind().await?;
//! # Ok(()) }
//! ```

mod export;
pub mod flows;
pub mod tnetstring;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::core::{Connection, TlsFacts};
use crate::http::message::{Body, Headers, HttpFlow, Request, Response};
use crate::http::websocket::{MessageKind, MessageVerdict, WebSocketEnd, WebSocketMessage};
use crate::middleware::HttpHandler;

mod filter;
pub use filter::{
    Filter, FilterError, FilterErrorKind, Prefilter, MAX_FILTER_DEPTH, MAX_FILTER_LEN,
};
pub mod har;
pub mod server_replay;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// The default of [`CaptureBuilder::body_limit`]: 16 MiB per body.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// The default of [`CaptureBuilder::queue`]: flows waiting for the writer (a fifth of a
/// second of them at 80 000 flows a second).
pub const DEFAULT_QUEUE: usize = 16_384;
/// The default of [`CaptureBuilder::queue_bytes`]: 64 MiB of flows waiting for the
/// writer.
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// One finished flow, as plain data: what a capture file holds.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Record {
    /// When the request head was complete.
    pub started_at: SystemTime,
    /// The client's address, when known.
    pub client: Option<SocketAddr>,
    /// The address of the server that answered, when one did.
    pub server: Option<SocketAddr>,
    /// Whether the client spoke TLS with the proxy.
    pub client_tls: bool,
    /// What the client's TLS with the proxy settled (SNI, ALPN, version), as far as
    /// known; empty without TLS.
    pub tls: TlsFacts,
    /// The request as it went to the origin (after the hooks).
    pub request: RecordedRequest,
    /// The response as it went to the client, if there was one.
    pub response: Option<RecordedResponse>,
    /// Time from the start to each later point, when it was reached.
    pub timings: RecordedTimings,
    /// What went wrong, when the flow failed.
    pub error: Option<String>,
    /// The messages of a WebSocket flow (a `101` to a WebSocket upgrade), in order;
    /// `None` for other flows.
    pub websocket: Option<Vec<RecordedMessage>>,
}

/// A WebSocket message, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedMessage {
    /// Sent by the client (else by the server).
    pub from_client: bool,
    /// A text message (else binary).
    pub text: bool,
    /// The payload, as the capture's hook saw it (middlewares before it may have changed
    /// it), cut to the capture's body limit.
    pub data: Bytes,
    /// When the proxy passed it on.
    pub at: SystemTime,
}

/// A request, as recorded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// The method, e.g. `GET`.
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The origin's host (a name, or an IP address without brackets).
    pub host: String,
    /// The origin's port.
    pub port: u16,
    /// Path and query, e.g. `/search?q=1`.
    pub path: String,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The header fields in order, names as sent.
    pub headers: Headers,
    /// The body.
    pub body: RecordedBody,
}

impl RecordedRequest {
    /// The URL: `scheme://host[:port]path`, the port only when not the scheme's
    /// default.
    pub fn url(&self) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            format!("{}://{host}{}", self.scheme, self.path)
        } else {
            format!("{}://{host}:{}{}", self.scheme, self.port, self.path)
        }
    }
}

impl RecordedRequest {
    /// The request to send again: its method, target, path, header fields and body
    /// (as much of it as was kept).
    pub fn to_request(&self) -> Request {
        let target = crate::core::Target::new(self.host.clone(), self.port, self.scheme == "https");
        let mut request = Request::new_to(self.method.clone(), target, self.path.clone());
        request.headers = self.headers.clone();
        if !self.body.data.is_empty() {
            request.body = Body::Full(self.body.data.clone());
        }
        request
    }
}

/// A response, as recorded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RecordedResponse {
    /// The status code.
    pub status: u16,
    /// The reason phrase (empty for HTTP/2).
    pub reason: String,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The header fields in order, names as sent.
    pub headers: Headers,
    /// The body.
    pub body: RecordedBody,
}

/// A body, as recorded: the bytes kept (up to the capture's body limit), and how many
/// there were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedBody {
    /// The bytes kept, as they went over the wire (still content-encoded).
    pub data: Bytes,
    /// How many bytes the body had on the wire.
    pub size: u64,
    /// Whether `data` holds less than the whole body (it streamed past the proxy, or
    /// was larger than the limit).
    pub truncated: bool,
}

impl RecordedBody {
    /// A whole body.
    pub fn whole(data: Bytes) -> Self {
        RecordedBody {
            size: data.len() as u64,
            data,
            truncated: false,
        }
    }
}

/// When things happened, as offsets from the start of the flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedTimings {
    /// The request (with its body) was sent on.
    pub request_end: Option<Duration>,
    /// The first byte of the response arrived.
    pub response_first_byte: Option<Duration>,
    /// The response (with its body) was passed to the client.
    pub response_end: Option<Duration>,
}

impl Record {
    /// Roughly how many bytes this record holds: its bodies, heads and messages.
    fn weight(&self) -> usize {
        let head = |h: &Headers| h.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>();
        let response = self
            .response
            .as_ref()
            .map_or(0, |r| r.body.data.len() + head(&r.headers));
        let messages = self
            .websocket
            .as_ref()
            .map_or(0, |m| m.iter().map(|m| m.data.len() + 48).sum());
        256 + self.request.body.data.len() + head(&self.request.headers) + response + messages
    }

    /// The record of `flow`, finished on `conn`, keeping at most `body_limit` bytes of
    /// each body.
    pub fn from_flow(conn: &Connection, flow: &HttpFlow, body_limit: usize) -> Self {
        let mut record = Record {
            started_at: flow.timings.started_at,
            client: conn.client.addr,
            server: conn.server.addr,
            client_tls: conn.tls,
            tls: conn.tls_facts.clone(),
            request: recorded_request(&flow.request, RecordedBody::default()),
            response: None,
            timings: RecordedTimings::default(),
            error: None,
            websocket: None,
        };
        // The bodies, the response, the timings and the error: as for a record made
        // before the flow finished.
        record.finish(flow, Ending::of(flow, body_limit));
        record
    }

    /// Brings this record of `flow`, made before it finished (its request head, and
    /// maybe its response head), up to date with the flow as it finished, `end`: the
    /// bodies, the response (its head made only if the record has none), the timings,
    /// the error. What the record has of the heads stays: cheaper than
    /// [`from_flow`](Self::from_flow) again, for a record kept while the flow goes.
    pub(crate) fn finish(&mut self, flow: &HttpFlow, end: Ending) {
        self.request.body = end.request_body;
        self.response = match (flow.response.as_ref(), end.response_body) {
            (Some(r), Some(body)) => Some(match self.response.take() {
                Some(mut kept) => {
                    kept.body = body;
                    kept
                }
                None => recorded_response(r, body),
            }),
            _ => None,
        };
        self.timings = end.timings;
        self.error = end.error;
        if end.websocket {
            self.websocket.get_or_insert_with(Vec::new);
        }
    }
}

/// What a finished flow adds to a record made before ([`Record::finish`]): made
/// apart, so that the bodies are copied before the record is taken to be changed.
pub(crate) struct Ending {
    request_body: RecordedBody,
    response_body: Option<RecordedBody>,
    timings: RecordedTimings,
    error: Option<String>,
    websocket: bool,
}

impl Ending {
    /// What `flow`, finished, adds to its record, keeping at most `body_limit` bytes of
    /// each body.
    pub(crate) fn of(flow: &HttpFlow, body_limit: usize) -> Self {
        let since = |t: Option<std::time::Instant>| {
            t.map(|t| t.saturating_duration_since(flow.timings.start))
        };
        Ending {
            request_body: recorded_body(
                &flow.request.body,
                &flow.request_body_prefix,
                flow.request_body_size,
                body_limit,
            ),
            response_body: flow.response.as_ref().map(|r| {
                recorded_body(
                    &r.body,
                    &flow.response_body_prefix,
                    flow.response_body_size,
                    body_limit,
                )
            }),
            timings: RecordedTimings {
                request_end: since(flow.timings.request_end),
                response_first_byte: since(flow.timings.response_first_byte),
                response_end: since(flow.timings.response_end),
            },
            error: flow
                .error
                .as_ref()
                .map(|e| crate::error::Report(e).to_string()),
            websocket: is_websocket(flow),
        }
    }
}

/// Whether `flow` switched to WebSocket.
fn is_websocket(flow: &HttpFlow) -> bool {
    flow.response.as_ref().is_some_and(|r| r.status == 101)
        && flow
            .request
            .headers
            .get("upgrade")
            .is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket"))
}

fn recorded_request(r: &Request, body: RecordedBody) -> RecordedRequest {
    RecordedRequest {
        method: r.method.clone(),
        scheme: if r.target.tls { "https" } else { "http" }.into(),
        host: r.target.host.clone(),
        port: r.target.port,
        path: r.path.clone(),
        version: r.version.as_str().into(),
        headers: r.headers.compact(),
        body,
    }
}

pub(crate) fn recorded_response(r: &Response, body: RecordedBody) -> RecordedResponse {
    RecordedResponse {
        status: r.status,
        reason: r.reason.clone(),
        version: r.version.as_str().into(),
        headers: r.headers.compact(),
        body,
    }
}

/// A body as the flow holds it: whole, or streamed past (`size` bytes, of which the
/// proxy kept `prefix` for `flow_finished`); either cut to `limit`.
fn recorded_body(body: &Body, prefix: &Bytes, size: u64, limit: usize) -> RecordedBody {
    match body {
        Body::Empty => RecordedBody::default(),
        // Copied: the bytes may share a larger buffer (a connection's read buffer),
        // which a queued record would otherwise keep alive.
        Body::Full(data) => RecordedBody {
            size: size.max(data.len() as u64),
            truncated: data.len() > limit,
            data: Bytes::copy_from_slice(&data[..data.len().min(limit)]),
        },
        Body::Streaming => {
            let data = Bytes::copy_from_slice(&prefix[..prefix.len().min(limit)]);
            RecordedBody {
                size: size.max(data.len() as u64),
                truncated: size > data.len() as u64,
                data,
            }
        }
    }
}

/// Where records go: a file format, a store. Called on the capture's writer thread,
/// one record at a time, in the order flows finished.
pub trait Sink: Send + 'static {
    /// Writes one record. An error is logged and counted; the capture goes on.
    fn write(&mut self, record: &Record) -> io::Result<()>;

    /// Makes what was written durable, when the queue has nothing more for now.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Configures a [`Capture`].
#[must_use]
pub struct CaptureBuilder {
    sinks: Vec<Box<dyn Sink>>,
    filter: Option<Filter>,
    body_limit: usize,
    queue: usize,
    queue_bytes: usize,
}

impl std::fmt::Debug for CaptureBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureBuilder")
            .field("sinks", &self.sinks.len())
            .field("body_limit", &self.body_limit)
            .field("queue", &self.queue)
            .finish()
    }
}

impl CaptureBuilder {
    /// Adds a sink; every record goes to each.
    pub fn sink(mut self, sink: Box<dyn Sink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Keeps only the flows that match `filter`. Default: every flow.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// The most bytes kept of each body (and WebSocket message); longer ones keep
    /// their first bytes, marked truncated. The proxy does not hold bodies back for
    /// the capture: it copies their first bytes as they pass. Default:
    /// [`DEFAULT_BODY_LIMIT`] (16 MiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// How many finished flows may wait for the writer; past that, flows are dropped
    /// (and counted) rather than slowing the proxy. Default: [`DEFAULT_QUEUE`].
    pub fn queue(mut self, flows: usize) -> Self {
        self.queue = flows.max(1);
        self
    }

    /// How many bytes of flows (their bodies, heads and messages, roughly) may wait
    /// for the writer; past that, flows are dropped (and counted). A flow larger than
    /// this alone is queued when nothing else waits. Default: [`DEFAULT_QUEUE_BYTES`].
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// Starts the writer thread.
    pub fn start(self) -> Capture {
        let (tx, rx) = sync_channel::<Record>(self.queue);
        let stats = Arc::new(Stats::default());
        let thread_stats = stats.clone();
        let sinks = self.sinks;
        let writer = std::thread::Builder::new()
            .name("mitm-capture".into())
            .spawn(move || write_all(rx, sinks, &thread_stats))
            .ok();
        Capture {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(writer),
            stats,
            body_limit: self.body_limit,
            filter: self.filter,
            queue_bytes: self.queue_bytes,
        }
    }
}

/// Counts of a capture's work.
#[derive(Debug)]
struct Stats {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// Bytes of the records queued (their [`Record::weight`]).
    queued_bytes: std::sync::atomic::AtomicUsize,
    /// Told the new `written` count after each flush, for [`Capture::wait_written`].
    flushed: tokio::sync::watch::Sender<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            queued_bytes: std::sync::atomic::AtomicUsize::new(0),
            flushed: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Stats {
    /// Counts `n` more flows as written (flushed) and tells the waiters.
    fn wrote(&self, n: u64) {
        let total = self.written.fetch_add(n, Ordering::Relaxed) + n;
        self.flushed.send_replace(total);
    }
}

/// How long a written flow may wait for its sinks' flush (an SQLite commit, a
/// buffered file's write): flows are flushed together, at most this long after the
/// first of them was written, and once the writer stops. One flush per flow would cost
/// more than the flows themselves under load (a commit rewrites the pages it touched).
pub const FLUSH_AFTER: Duration = Duration::from_millis(50);

/// How long the writer sleeps when it has caught up with the queue but has flows to
/// flush later: while it sleeps, a flow queued does not have to wake it.
const NAP: Duration = Duration::from_millis(5);

/// The writer thread: records from `rx` to every sink, flushing at most
/// [`FLUSH_AFTER`] after a flow was written, until every sender is gone.
/// `written` counts a flow once it is flushed: then it is in every sink's file.
///
/// Waiting for the next flow blocks only when everything is flushed: otherwise the
/// writer naps ([`NAP`]) and looks again. A blocked writer must be woken for each flow
/// queued (a system call on the proxy's thread, and a context switch, per flow); a
/// napping one takes the flows queued meanwhile in one go.
fn write_all(rx: Receiver<Record>, mut sinks: Vec<Box<dyn Sink>>, stats: &Stats) {
    use std::sync::mpsc::TryRecvError;
    // Flows written since the last flush, and when they must be flushed.
    let mut pending = 0;
    let mut due: Option<std::time::Instant> = None;
    loop {
        let record = match rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => match due {
                None => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
                Some(at) => {
                    let left = at.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        flush(&mut sinks, stats);
                        stats.wrote(std::mem::take(&mut pending));
                        due = None;
                    } else {
                        std::thread::sleep(left.min(NAP));
                    }
                    continue;
                }
            },
        };
        for sink in &mut sinks {
            if let Err(e) = sink.write(&record) {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "capture: a flow could not be saved");
            }
        }
        stats
            .queued_bytes
            .fetch_sub(record.weight(), Ordering::Relaxed);
        pending += 1;
        let now = std::time::Instant::now();
        match due {
            // Busy: the queue may never be empty; flush on time anyway.
            Some(at) if now >= at => {
                flush(&mut sinks, stats);
                stats.wrote(std::mem::take(&mut pending));
                due = None;
            }
            Some(_) => {}
            None => due = Some(now + FLUSH_AFTER),
        }
    }
    flush(&mut sinks, stats);
    stats.wrote(pending);
}

fn flush(sinks: &mut [Box<dyn Sink>], stats: &Stats) {
    for sink in sinks {
        if let Err(e) = sink.flush() {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "capture: saved flows could not be flushed");
        }
    }
}

/// The capture middleware: each finished flow becomes a [`Record`], queued for the
/// writer thread and its [`Sink`]s. Build it with [`Capture::builder`]; dropping it (or
/// [`finish`](Self::finish)) lets the writer write what is queued and stop.
pub struct Capture {
    tx: Mutex<Option<SyncSender<Record>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Stats>,
    body_limit: usize,
    filter: Option<Filter>,
    queue_bytes: usize,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// A capture with no sink yet and the defaults.
    pub fn builder() -> CaptureBuilder {
        CaptureBuilder {
            sinks: Vec::new(),
            filter: None,
            body_limit: DEFAULT_BODY_LIMIT,
            queue: DEFAULT_QUEUE,
            queue_bytes: DEFAULT_QUEUE_BYTES,
        }
    }

    /// Flows written so far, and flushed: in every sink's file.
    pub fn written(&self) -> u64 {
        self.stats.written.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` flows are written (flushed into every sink).
    pub async fn wait_written(&self, n: u64) {
        let mut flushed = self.stats.flushed.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = flushed.wait_for(|&written| written >= n).await;
    }

    /// Writes that failed (a flow that could not be saved, or a flush), each logged.
    pub fn failed(&self) -> u64 {
        self.stats.failed.load(Ordering::Relaxed)
    }

    /// Flows dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    /// Hands `record` to the writer, or drops (and counts) it when the queue is full.
    pub fn push(&self, record: Record) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = tx.as_ref() else {
            return;
        };
        let weight = record.weight();
        let queued = &self.stats.queued_bytes;
        let before = queued.fetch_add(weight, Ordering::Relaxed);
        let sent = if before > 0 && before + weight > self.queue_bytes {
            Err(TrySendError::Full(record))
        } else {
            tx.try_send(record)
        };
        if sent.is_err() {
            queued.fetch_sub(weight, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Said at once, then every 1000th, so a flood does not flood the log.
                if dropped == 1 || dropped.is_multiple_of(1000) {
                    tracing::warn!(
                        dropped,
                        "capture: the writer fell behind, flows were dropped"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Stops taking flows, waits until the writer has written what is queued, and
    /// returns how many flows were written and dropped.
    pub fn finish(&self) -> (u64, u64) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = writer.join();
        }
        let (written, dropped) = (self.written(), self.dropped());
        if dropped > 0 {
            tracing::warn!(written, dropped, "capture: flows were dropped");
        }
        (written, dropped)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.finish();
    }
}

/// WebSocket flows waiting for their connection to end, per capture (by address: a
/// server may have several).
#[derive(Default)]
struct Sockets(std::collections::HashMap<usize, Record>);

impl Capture {
    /// This capture's key in a connection's [`Sockets`].
    fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Queues `record` if the filter keeps it.
    fn keep(&self, record: Record) {
        if self.filter.as_ref().is_none_or(|f| f.matches(&record)) {
            self.push(record);
        }
    }
}

#[async_trait]
impl HttpHandler for Capture {
    async fn flow_finished(&self, conn: &Connection, flow: &HttpFlow) {
        let record = Record::from_flow(conn, flow, self.body_limit);
        if record.websocket.is_some() {
            // Its messages come after: it is kept when the connection ends.
            let mut state = conn.state();
            state
                .get_or_default::<Sockets>()
                .0
                .insert(self.key(), record);
            return;
        }
        self.keep(record);
    }

    async fn websocket_message(
        &self,
        conn: &Connection,
        message: &mut WebSocketMessage,
    ) -> MessageVerdict {
        let mut state = conn.state();
        let socket = state
            .get_mut::<Sockets>()
            .and_then(|s| s.0.get_mut(&self.key()))
            .and_then(|r| r.websocket.as_mut());
        if let Some(messages) = socket {
            let kept = message.payload.len().min(self.body_limit);
            messages.push(RecordedMessage {
                from_client: message.direction == crate::core::Flow::ClientToServer,
                text: message.kind == MessageKind::Text,
                data: message.payload.slice(..kept),
                at: SystemTime::now(),
            });
        }
        MessageVerdict::Forward
    }

    async fn websocket_end(&self, conn: &Connection, _end: &WebSocketEnd) {
        let record = conn
            .state()
            .get_mut::<Sockets>()
            .and_then(|s| s.0.remove(&self.key()));
        if let Some(record) = record {
            self.keep(record);
        }
    }

    /// Bodies are not held back for the capture: they stream as they would without
    /// it, and their first bytes (all of a body up to the limit) are kept as they pass.
    fn streamed_body_prefix(&self) -> usize {
        self.body_limit
    }

    /// WebSocket messages up to the body limit are seen whole (and kept); a larger one
    /// closes its WebSocket with 1009, as for any message hook.
    fn websocket_message_limit(&self) -> usize {
        self.body_limit
    }
}

/// The format of a capture file, from its name: `.har` is HAR 1.2; `.sqlite` and `.db`
/// are the SQLite store ([`sqlite`]); anything else is mitmproxy's flow format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// HAR 1.2 (`.har`).
    Har,
    /// mitmproxy's flow files (`.flows`, `.mitm`, anything else).
    Flows,
    /// An SQLite database (`.sqlite`, `.db`).
    Sqlite,
}

impl Format {
    /// The format a file's name says.
    pub fn of(path: &Path) -> Format {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("har") => Format::Har,
            Some("sqlite" | "db") => Format::Sqlite,
            _ => Format::Flows,
        }
    }
}

/// A sink writing a new capture file at `path` in the format its name says. Fails if
/// the file exists: nothing saved is overwritten.
pub fn create(path: impl AsRef<Path>) -> crate::Result<Box<dyn Sink>> {
    let path = path.as_ref();
    match Format::of(path) {
        Format::Har => Ok(Box::new(har::HarWriter::create(path)?)),
        Format::Flows => Ok(Box::new(flows::FlowWriter::create(path)?)),
        #[cfg(feature = "sqlite")]
        Format::Sqlite => Ok(Box::new(sqlite::SqliteStore::create(path)?)),
        #[cfg(not(feature = "sqlite"))]
        Format::Sqlite => Err(no_sqlite(path)),
    }
}

/// Every HTTP flow of the capture file at `path`, in the format its name says.
pub fn read(path: impl AsRef<Path>) -> crate::Result<Vec<Record>> {
    let path = path.as_ref();
    match Format::of(path) {
        Format::Har => har::read_har(path),
        Format::Flows => flows::read_flows(path),
        #[cfg(feature = "sqlite")]
        Format::Sqlite => sqlite::read_sqlite(path),
        #[cfg(not(feature = "sqlite"))]
        Format::Sqlite => Err(no_sqlite(path)),
    }
}

/// The error for an SQLite capture in a build without the `sqlite` feature.
#[cfg(not(feature = "sqlite"))]
pub(crate) fn no_sqlite(path: &Path) -> crate::Error {
    crate::Error::CaptureStore {
        path: path.to_path_buf(),
        reason: "this build of mitm has no SQLite support: build it with the `sqlite` \
                 feature, or use a .har or .flows file"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Host, Target};

    /// Keeps what it is given, blocking until `gate` opens.
    struct Slow {
        seen: Arc<Mutex<Vec<String>>>,
        gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
    }

    impl Sink for Slow {
        fn write(&mut self, record: &Record) -> io::Result<()> {
            let (open, changed) = &*self.gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = changed.wait(open).unwrap();
            }
            self.seen.lock().unwrap().push(record.request.url());
            Ok(())
        }
    }

    /// A capture from `builder` whose one sink blocks until the gate opens: the
    /// capture, the URLs written, and the gate's opener.
    fn gated(builder: CaptureBuilder) -> (Capture, Arc<Mutex<Vec<String>>>, impl Fn()) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let sink = Slow {
            seen: seen.clone(),
            gate: gate.clone(),
        };
        let open = move || {
            *gate.0.lock().unwrap() = true;
            gate.1.notify_all();
        };
        (builder.sink(Box::new(sink)).start(), seen, open)
    }

    fn flow(path: &str) -> HttpFlow {
        let request = Request::new_to(
            "GET".into(),
            Target::new("a.localhost", 8080, false),
            path.into(),
        );
        HttpFlow::new(1, request)
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (capture, seen, open) = gated(Capture::builder().queue(2));
        let conn = Connection::new(1, Host::default());
        // The writer takes the first and blocks on it; two wait; the rest are dropped.
        for i in 0..10 {
            capture.push(Record::from_flow(&conn, &flow(&format!("/{i}")), 1024));
        }
        assert!(capture.dropped() >= 7, "dropped {}", capture.dropped());
        open();
        let (written, dropped) = capture.finish();
        assert_eq!(written + dropped, 10);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len() as u64, written);
        assert_eq!(seen[0], "http://a.localhost:8080/0");
    }

    #[test]
    fn the_queue_holds_at_most_its_bytes() {
        let (capture, seen, open) = gated(Capture::builder().queue_bytes(10_000));
        let conn = Connection::new(1, Host::default());
        let big = |i: usize| {
            let mut f = flow(&format!("/{i}"));
            f.request.body = Body::Full(Bytes::from(vec![b'x'; 4000]));
            Record::from_flow(&conn, &f, 1 << 20)
        };
        // One alone may be larger than the budget.
        let huge = |i: usize| {
            let mut f = flow(&format!("/{i}"));
            f.request.body = Body::Full(Bytes::from(vec![b'x'; 50_000]));
            Record::from_flow(&conn, &f, 1 << 20)
        };
        // A flow counts until it is written (the writer holds the first at the gate):
        // a small one and two of 4 KB fit in 10 KB, a third does not.
        capture.push(Record::from_flow(&conn, &flow("/0"), 1 << 20));
        for i in 1..=3 {
            capture.push(big(i));
        }
        assert_eq!(capture.dropped(), 1);
        open();
        assert_eq!(capture.finish(), (3, 1));
        assert_eq!(capture.stats.queued_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(seen.lock().unwrap().len(), 3);

        // One larger than the whole budget goes when nothing else waits (and counts
        // until it is written: the writer holds it at a closed gate again).
        let (capture, _, open) = gated(Capture::builder().queue_bytes(10_000));
        capture.push(huge(4));
        capture.push(big(5));
        assert_eq!(capture.dropped(), 1);
        open();
        assert_eq!(capture.finish(), (1, 1));
    }

    #[test]
    fn bodies_are_kept_up_to_the_limit_and_marked_when_cut() {
        let none = Bytes::new();
        let whole = recorded_body(&Body::Full(Bytes::from_static(b"hello")), &none, 5, 16);
        assert_eq!(
            (&whole.data[..], whole.size, whole.truncated),
            (&b"hello"[..], 5, false)
        );
        let cut = recorded_body(&Body::Full(Bytes::from_static(b"hello")), &none, 5, 2);
        assert_eq!(
            (&cut.data[..], cut.size, cut.truncated),
            (&b"he"[..], 5, true)
        );
        let start = Bytes::from(vec![7u8; 32]);
        let streamed = recorded_body(&Body::Streaming, &start, 1 << 30, 16);
        assert_eq!(
            (&streamed.data[..], streamed.size, streamed.truncated),
            (&[7u8; 16][..], 1 << 30, true)
        );
        let small = recorded_body(&Body::Streaming, &start.slice(..5), 5, 16);
        assert_eq!(
            (&small.data[..], small.size, small.truncated),
            (&[7u8; 5][..], 5, false)
        );
        assert_eq!(
            recorded_body(&Body::Empty, &none, 0, 16),
            RecordedBody::default()
        );
    }

    #[test]
    fn urls_leave_default_ports_out_and_bracket_ipv6() {
        let conn = Connection::new(1, Host::default());
        let mut f = flow("/x?y");
        f.request.target = Target::new("::1", 443, true);
        assert_eq!(
            Record::from_flow(&conn, &f, 0).request.url(),
            "https://[::1]/x?y"
        );
        f.request.target = Target::new("h.localhost", 80, false);
        assert_eq!(
            Record::from_flow(&conn, &f, 0).request.url(),
            "http://h.localhost/x?y"
        );
    }
}
