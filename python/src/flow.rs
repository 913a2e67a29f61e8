//! An HTTP exchange and a WebSocket message as Python objects (`mitm.http.HttpFlow`:
//! [`PyFlow`], `mitm.http.WebSocketMessage`: [`PyMessage`]).
//!
//! The message handler (`handler.rs`) fills a flow's view from the engine's flow before
//! a hook and takes back what the hook changed after it. The mutexes are held only for
//! Rust work, never while Python runs or while waiting for the GIL.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mitm::HttpFlow;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::headers::{bytes_of, lock, raw, text, PyHeaders};
use crate::message::{response, PyRequest, PyResponse};

// -- flows ---------------------------------------------------------------------------

/// What a flow's view holds, behind its mutex.
#[derive(Debug)]
struct FlowCore {
    request: Arc<Mutex<mitm::Request>>,
    response: Option<Arc<Mutex<mitm::Response>>>,
    /// `kill()` was called.
    killed: bool,
    /// The engine's error, as text.
    error: Option<String>,
    /// `timings` and body sizes, as of the last sync.
    timings: mitm::Timings,
    sizes: (u64, u64),
    /// mitmproxy's `marked` and `comment`.
    marked: String,
    comment: String,
    /// `intercept()` was called (and not `resume()`).
    intercept: bool,
}

/// One HTTP exchange: its `request`, its `response` once there is one, and what
/// middlewares decided.
///
/// The same object is passed to a middleware's `request`, `response` and
/// `flow_finished` hooks for one exchange (and to `websocket_message` for the messages
/// of the WebSocket it opened), so a middleware may keep what it needs in
/// `flow.metadata`. Changes made after a hook returned reach nothing.
#[pyclass(module = "mitm.http", name = "HttpFlow", frozen)]
#[derive(Debug)]
pub(crate) struct PyFlow {
    id: u64,
    core: Mutex<FlowCore>,
    connection: Py<PyAny>,
    metadata: Py<PyDict>,
}

/// The flow's error as text, causes included.
fn error_text(flow: &HttpFlow) -> Option<String> {
    flow.error.as_ref().map(|e| crate::ca::chain(e.as_ref()))
}

/// What a flow's view is made from: the engine's flow as it is now, copied without the
/// GIL (a hook run on a thread of the pool makes the view there).
#[derive(Debug)]
pub(crate) struct Fresh {
    id: u64,
    core: FlowCore,
}

impl PyFlow {
    /// What a view of `flow` is made from.
    pub(crate) fn fresh(flow: &HttpFlow) -> Fresh {
        Fresh {
            id: flow.id,
            core: FlowCore {
                request: Arc::new(Mutex::new(flow.request.clone())),
                response: flow.response.clone().map(|r| Arc::new(Mutex::new(r))),
                killed: false,
                error: error_text(flow),
                timings: flow.timings,
                sizes: (flow.request_body_size, flow.response_body_size),
                marked: flow.marked.clone(),
                comment: flow.comment.clone(),
                intercept: flow.intercept,
            },
        }
    }

    /// The view made from `fresh`, on the connection whose Python `Connection` is
    /// `connection`.
    pub(crate) fn from_fresh(py: Python<'_>, connection: Py<PyAny>, fresh: Fresh) -> Self {
        PyFlow {
            id: fresh.id,
            core: Mutex::new(fresh.core),
            connection,
            metadata: PyDict::new(py).unbind(),
        }
    }

    /// Brings the view up to date with the engine's `flow` (before a hook): the
    /// request in place (views of it the hook kept see the new one), the response anew.
    pub(crate) fn sync(&self, flow: &HttpFlow) {
        let mut core = lock(&self.core);
        *lock(&core.request) = flow.request.clone();
        core.response = flow.response.clone().map(|r| Arc::new(Mutex::new(r)));
        core.error = error_text(flow);
        core.timings = flow.timings;
        core.sizes = (flow.request_body_size, flow.response_body_size);
        core.marked.clone_from(&flow.marked);
        core.comment.clone_from(&flow.comment);
        core.intercept = flow.intercept;
    }

    /// Writes the mark and comment the hooks left into the engine's `flow`.
    pub(crate) fn annotate(&self, flow: &mut HttpFlow) {
        let core = lock(&self.core);
        if core.marked != flow.marked {
            flow.marked.clone_from(&core.marked);
        }
        if core.comment != flow.comment {
            flow.comment.clone_from(&core.comment);
        }
        flow.intercept = core.intercept;
    }

    /// The request as the hooks left it.
    pub(crate) fn request_now(&self) -> mitm::Request {
        let request = lock(&self.core).request.clone();
        let r = lock(&request).clone();
        r
    }

    /// The response as the hooks left it, if any.
    pub(crate) fn response_now(&self) -> Option<mitm::Response> {
        let response = lock(&self.core).response.clone()?;
        let r = lock(&response).clone();
        Some(r)
    }

    /// Whether a hook called `kill()`.
    pub(crate) fn killed(&self) -> bool {
        lock(&self.core).killed
    }

    /// Sets the response (a hook's exception answered for it).
    pub(crate) fn answer(&self, response: mitm::Response) {
        lock(&self.core).response = Some(Arc::new(Mutex::new(response)));
    }
}

#[pymethods]
impl PyFlow {
    /// The flow's Python references, for Python's cycle collector: a middleware that
    /// keeps an object in `flow.metadata` which refers back to the flow (the addon
    /// host's mitmproxy-style flow does) makes a cycle that only the collector can
    /// free, and it can only see the edges listed here.
    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.metadata)?;
        visit.call(&self.connection)?;
        Ok(())
    }

    /// A number unique among the flows of one connection, from 1.
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    /// The client connection the exchange came on (the `Connection` the seven
    /// connection hooks get).
    #[getter]
    fn connection(&self, py: Python<'_>) -> Py<PyAny> {
        self.connection.clone_ref(py)
    }

    /// A dict for middlewares' own data, kept for the flow's life.
    #[getter]
    fn metadata(&self, py: Python<'_>) -> Py<PyDict> {
        self.metadata.clone_ref(py)
    }

    /// The request.
    #[getter]
    fn request(&self) -> PyRequest {
        PyRequest(lock(&self.core).request.clone())
    }

    #[setter]
    fn set_request(&self, request: Bound<'_, PyRequest>) {
        lock(&self.core).request = request.get().0.clone();
    }

    /// The response: None in a `request` hook until one is set there, which answers
    /// the client with it without contacting the origin.
    #[getter]
    fn response(&self) -> Option<PyResponse> {
        lock(&self.core).response.clone().map(PyResponse)
    }

    #[setter]
    fn set_response(&self, response: Option<Bound<'_, PyResponse>>) {
        lock(&self.core).response = response.map(|r| r.get().0.clone());
    }

    /// Answers the client with this response (in a `request` hook: without contacting
    /// the origin; in a `response` hook: instead of the origin's).
    #[pyo3(signature = (status_code = 200, content = None, headers = None))]
    fn respond(
        &self,
        status_code: u16,
        content: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let r = response(status_code, content, headers, None)?;
        self.answer(r);
        Ok(())
    }

    /// Drops the client connection at once, without an answer (in a
    /// `websocket_message` hook: closes the WebSocket).
    fn kill(&self) {
        lock(&self.core).killed = true;
    }

    /// The flow's mark (mitmproxy's `marked`: an emoji name such as ``":default:"``, or
    /// any text); ``""`` when not marked. Set in `request` or `response`, it is saved
    /// with the flow and shown in the web UI.
    #[getter]
    fn marked(&self) -> String {
        lock(&self.core).marked.clone()
    }

    #[setter]
    fn set_marked(&self, marked: String) {
        lock(&self.core).marked = marked;
    }

    /// A comment on the flow, ``""`` for none; kept as `marked` is.
    #[getter]
    fn comment(&self) -> String {
        lock(&self.core).comment.clone()
    }

    #[setter]
    fn set_comment(&self, comment: String) {
        lock(&self.core).comment = comment;
    }

    /// Holds the flow for the user in the web UI (`mitm --web`): after this hook, the
    /// flow waits where it is (before its request goes upstream, or before its response
    /// goes back) until the user resumes or kills it there. Without a web UI the flow
    /// goes on.
    fn intercept(&self) {
        lock(&self.core).intercept = true;
    }

    /// Takes back `intercept()` (within the same hook).
    fn resume(&self) {
        lock(&self.core).intercept = false;
    }

    /// Whether `intercept()` was called in this hook (and not taken back).
    #[getter]
    fn intercepted(&self) -> bool {
        lock(&self.core).intercept
    }

    /// Whether `kill()` was called.
    #[getter(killed)]
    fn is_killed(&self) -> bool {
        self.killed()
    }

    /// What went wrong, when the exchange failed (the origin unreachable, a timeout, a
    /// side gone); None otherwise.
    #[getter]
    fn error(&self) -> Option<String> {
        lock(&self.core).error.clone()
    }

    /// When the request head was complete: seconds since the epoch.
    #[getter]
    fn timestamp_start(&self) -> f64 {
        let started = lock(&self.core).timings.started_at;
        started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    /// Seconds from the request to the end of the response, once the response has been
    /// passed on (in `flow_finished`); None before.
    #[getter]
    fn duration(&self) -> Option<f64> {
        lock(&self.core).timings.total().map(|d| d.as_secs_f64())
    }

    /// Body bytes of the request sent on so far (all of them in `flow_finished`), held
    /// whole or streamed.
    #[getter]
    fn request_body_size(&self) -> u64 {
        lock(&self.core).sizes.0
    }

    /// Body bytes of the response passed on so far (all of them in `flow_finished`).
    #[getter]
    fn response_body_size(&self) -> u64 {
        lock(&self.core).sizes.1
    }

    fn __repr__(&self) -> String {
        let core = lock(&self.core);
        let request = lock(&core.request);
        let status = match &core.response {
            Some(r) => lock(r).status.to_string(),
            None => "-".into(),
        };
        format!(
            "HttpFlow(#{} {} {} → {status})",
            self.id,
            request.method,
            request.url()
        )
    }
}

// -- WebSocket messages --------------------------------------------------------------

/// What a message's view holds, behind its mutex.
#[derive(Debug)]
struct MessageCore {
    from_client: bool,
    text: bool,
    payload: Bytes,
    dropped: bool,
}

/// One WebSocket data message on its way: `content` (bytes) or `text`, `is_text`,
/// `from_client`. Change it in place, or `drop()` it; `flow.kill()` closes the
/// WebSocket.
#[pyclass(module = "mitm.http", name = "WebSocketMessage", frozen)]
#[derive(Debug)]
pub(crate) struct PyMessage(Mutex<MessageCore>);

impl PyMessage {
    /// A view of `message`.
    pub(crate) fn new(message: &mitm::WebSocketMessage) -> Self {
        PyMessage(Mutex::new(MessageCore {
            from_client: message.direction == mitm::Flow::ClientToServer,
            text: message.kind == mitm::MessageKind::Text,
            payload: message.payload.clone(),
            dropped: false,
        }))
    }

    /// Writes what the hook changed back into `message`; whether it was dropped.
    pub(crate) fn write_back(&self, message: &mut mitm::WebSocketMessage) -> bool {
        let core = lock(&self.0);
        message.payload = core.payload.clone();
        message.kind = if core.text {
            mitm::MessageKind::Text
        } else {
            mitm::MessageKind::Binary
        };
        core.dropped
    }
}

/// `mitm.core.Flow`, imported once.
fn flow_enum(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static FLOW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    FLOW.get_or_try_init(py, || {
        Ok(py
            .import(intern!(py, "mitm.core"))?
            .getattr(intern!(py, "Flow"))?
            .unbind())
    })
    .map(|f| f.bind(py))
}

#[pymethods]
impl PyMessage {
    /// Whether the client sent it (else the server).
    #[getter(from_client)]
    fn is_from_client(&self) -> bool {
        lock(&self.0).from_client
    }

    /// Which way it goes: `Flow.CLIENT_TO_SERVER` or `Flow.SERVER_TO_CLIENT`.
    #[getter]
    fn direction<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let name = if self.is_from_client() {
            intern!(py, "CLIENT_TO_SERVER")
        } else {
            intern!(py, "SERVER_TO_CLIENT")
        };
        flow_enum(py)?.getattr(name)
    }

    /// Whether it is a text message (else binary).
    #[getter]
    fn is_text(&self) -> bool {
        lock(&self.0).text
    }

    #[setter]
    fn set_is_text(&self, text: bool) {
        lock(&self.0).text = text;
    }

    /// The payload.
    #[getter]
    fn content<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let payload = lock(&self.0).payload.clone();
        PyBytes::new(py, &payload)
    }

    #[setter]
    fn set_content(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = bytes_of(value, "content")?;
        lock(&self.0).payload = bytes;
        Ok(())
    }

    /// The payload as text (UTF-8). Setting it sets the payload.
    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let payload = lock(&self.0).payload.clone();
        text(py, &payload)
    }

    #[setter]
    fn set_text(&self, value: &Bound<'_, PyString>) -> PyResult<()> {
        let bytes = raw(value.as_any(), "text")?;
        lock(&self.0).payload = bytes;
        Ok(())
    }

    /// Does not send the message on; the WebSocket goes on.
    fn drop(&self) {
        lock(&self.0).dropped = true;
    }

    /// Whether `drop()` was called.
    #[getter]
    fn dropped(&self) -> bool {
        lock(&self.0).dropped
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let (from_client, is_text, payload) = {
            let core = lock(&self.0);
            (core.from_client, core.text, core.payload.clone())
        };
        let from = if from_client { "client" } else { "server" };
        let kind = if is_text { "text" } else { "binary" };
        let start = PyBytes::new(py, &payload[..payload.len().min(64)]);
        Ok(format!(
            "WebSocketMessage({kind} from {from}, {} bytes: {})",
            payload.len(),
            start.repr()?
        ))
    }
}

/// Adds the classes to the native module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyFlow>()?;
    m.add_class::<PyRequest>()?;
    m.add_class::<PyResponse>()?;
    m.add_class::<PyHeaders>()?;
    m.add_class::<PyMessage>()?;
    Ok(())
}
