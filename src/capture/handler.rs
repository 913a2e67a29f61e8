//! [`Capture`]: the HTTP handler that turns each finished flow into a [`Record`] (a
//! WebSocket flow when its connection ends, with its messages) and queues it for the
//! [writer thread](super::writer) and its [`Sink`]s; [`CaptureBuilder`] configures it.

use std::time::SystemTime;

use async_trait::async_trait;

use super::writer::{Writer, DEFAULT_QUEUE, DEFAULT_QUEUE_BYTES};
use super::{Annotations, Filter, Record, RecordedMessage, Sink};
use crate::core::Connection;
use crate::http::message::HttpFlow;
use crate::http::websocket::{MessageKind, MessageVerdict, WebSocketEnd, WebSocketMessage};
use crate::middleware::HttpHandler;

/// The default of [`CaptureBuilder::body_limit`]: 16 MiB per body.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Configures a [`Capture`].
#[must_use]
pub struct CaptureBuilder {
    sinks: Vec<Box<dyn Sink>>,
    filter: Option<Filter>,
    body_limit: usize,
    queue: usize,
    queue_bytes: usize,
    annotations: Option<Annotations>,
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

    /// Gives every record these annotations (before the filter sees it): a client
    /// replay marks the flows it sends `is_replay: request`, as mitmproxy does.
    /// Default: none.
    pub fn annotations(mut self, annotations: Annotations) -> Self {
        self.annotations = Some(annotations);
        self
    }

    /// Starts the writer thread.
    pub fn start(self) -> Capture {
        Capture {
            writer: Writer::start(self.sinks, self.queue, self.queue_bytes),
            body_limit: self.body_limit,
            filter: self.filter,
            annotations: self.annotations,
        }
    }
}

/// The capture middleware: each finished flow becomes a [`Record`], queued for the
/// writer thread and its [`Sink`]s. Build it with [`Capture::builder`]; dropping it (or
/// [`finish`](Self::finish)) lets the writer write what is queued and stop.
pub struct Capture {
    writer: Writer,
    body_limit: usize,
    filter: Option<Filter>,
    annotations: Option<Annotations>,
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
            annotations: None,
        }
    }

    /// Flows written so far, and flushed: in every sink's file.
    pub fn written(&self) -> u64 {
        self.writer.written()
    }

    /// Waits until at least `n` flows are written (flushed into every sink).
    pub async fn wait_written(&self, n: u64) {
        self.writer.wait_written(n).await;
    }

    /// Writes that failed (a flow that could not be saved, or a flush), each logged.
    pub fn failed(&self) -> u64 {
        self.writer.failed()
    }

    /// Flows dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.writer.dropped()
    }

    /// Hands `record` to the writer, or drops (and counts) it when the queue is full.
    pub fn push(&self, record: Record) {
        self.writer.push(Box::new(record));
    }

    /// Stops taking flows, waits until the writer has written what is queued, and
    /// returns how many flows were written and dropped.
    pub fn finish(&self) -> (u64, u64) {
        let (written, dropped) = self.writer.finish();
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
struct Sockets(std::collections::HashMap<usize, Box<Record>>);

impl Capture {
    /// This capture's key in a connection's [`Sockets`].
    fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Queues `record`, annotated, if the filter keeps it.
    fn keep(&self, mut record: Box<Record>) {
        if let Some(annotations) = &self.annotations {
            record.annotations = annotations.clone();
        }
        if self.filter.as_ref().is_none_or(|f| f.matches(&*record)) {
            self.writer.push(record);
        } else {
            // Made again for the next flow, rather than freed and made anew.
            self.writer.recycle(record);
        }
    }

    /// The record of `flow`, made in one the writer gave back when there is one
    /// ([`Record::remake`]).
    fn record(&self, conn: &Connection, flow: &HttpFlow) -> Box<Record> {
        match self.writer.spare() {
            Some(mut record) => {
                record.remake(conn, flow, self.body_limit);
                record
            }
            None => Box::new(Record::from_flow(conn, flow, self.body_limit)),
        }
    }
}

#[async_trait]
impl HttpHandler for Capture {
    async fn flow_finished(&self, conn: &Connection, flow: &HttpFlow) {
        let record = self.record(conn, flow);
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

    async fn websocket_end(&self, conn: &Connection, end: &WebSocketEnd) {
        let record = conn
            .state()
            .get_mut::<Sockets>()
            .and_then(|s| s.0.remove(&self.key()));
        if let Some(mut record) = record {
            record.facts.websocket_close = end.close.clone();
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
