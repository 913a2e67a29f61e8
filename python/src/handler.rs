//! The message hooks of Python middlewares (`request`, `response`, `flow_finished`,
//! `websocket_message`) as one engine [`HttpHandler`]: registered only when some
//! middleware defines one, so a server without them keeps the engine's fast path.
//!
//! The middlewares' hooks run in their order, through the same [`Hook`] bridge as the
//! connection hooks (inline when they never await, else on the asyncio loop). One
//! Python `HttpFlow` is made per exchange, at its first hook, kept in the connection's
//! state until `flow_finished`, and brought up to date from the engine's flow before
//! each hook; after the hooks, what they changed is taken back into the engine's flow.
//!
//! An exception in a hook is logged with its traceback and ends that exchange only: in
//! `request` or `response` the client gets a `502 Bad Gateway` (the connection goes
//! on), in `websocket_message` the WebSocket is closed, in `flow_finished` nothing more
//! happens.

use std::collections::HashMap;
use std::sync::Arc;

use mitm::middleware::HttpHandler;
use mitm::websocket::WebSocketEnd;
use mitm::{async_trait, Connection, HttpFlow, MessageVerdict, Verdict, WebSocketMessage};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple};
use pyo3::{intern, IntoPyObjectExt};

use crate::conn::{ConnFacts, ProtocolObjects, PyConnection};
use crate::flow::{Fresh, PyFlow, PyMessage};
use crate::hook::{ignore, Hook};
use crate::middleware::Shared;

/// The message hooks of one Python middleware.
#[derive(Debug)]
struct MessageHooks {
    /// Its class name, for reports.
    name: String,
    request: Option<Hook>,
    response: Option<Hook>,
    flow_finished: Option<Hook>,
    websocket_message: Option<Hook>,
}

/// The message hooks of every Python middleware of a server that has any.
#[derive(Debug)]
pub(crate) struct PyHandlers {
    middlewares: Vec<MessageHooks>,
    /// Which hooks any middleware has: the others return at once.
    any: Any,
    body_limit: usize,
    websocket_message_limit: usize,
    shared: Arc<Shared>,
}

/// Which hooks any middleware defines.
#[derive(Debug, Default, Clone, Copy)]
struct Any {
    request: bool,
    response: bool,
    flow_finished: bool,
    websocket_message: bool,
}

/// The Python view of one exchange, shared by the engine's task and the thread a hook
/// runs on (cloned and dropped without the GIL; read through [`Py::get`]).
type View = Arc<Py<PyFlow>>;

/// The Python views of the exchanges of one connection in flight, by flow id.
#[derive(Default)]
struct PyFlows(HashMap<u64, View>);

/// The flow whose `101` opened this connection's WebSocket, for its messages' hooks.
struct PyWebSocket(View);

/// Why a message hook's call failed.
enum Failure {
    /// The flow's view could not be made (the hook did not run).
    View(PyErr),
    /// The hook raised.
    Hook(PyErr),
}

impl PyHandlers {
    /// From the package's plans (`mitm.http.message_plan`: a dict per middleware with
    /// message hooks), or `None` when the list is empty.
    pub(crate) fn new(plans: &Bound<'_, PyList>, shared: Arc<Shared>) -> PyResult<Option<Self>> {
        let py = plans.py();
        let mut middlewares = Vec::new();
        let (mut body_limit, mut websocket_message_limit) = (0usize, 0usize);
        let mut any = Any::default();
        for plan in plans.iter() {
            let plan = plan.cast::<PyDict>()?;
            let hook = |name: &str| -> PyResult<Option<Hook>> {
                match plan.get_item(name)? {
                    Some(item) => Hook::from_plan(&item),
                    None => Ok(None),
                }
            };
            let limit = |name: &str| -> PyResult<usize> {
                match plan.get_item(name)? {
                    Some(v) => v.extract().map_err(|_| {
                        pyo3::exceptions::PyValueError::new_err(format!(
                            "{name} is a number of bytes, at least 0"
                        ))
                    }),
                    None => Ok(0),
                }
            };
            let hooks = MessageHooks {
                name: match plan.get_item(intern!(py, "name"))? {
                    Some(n) => n.extract()?,
                    None => "Middleware".into(),
                },
                request: hook("request")?,
                response: hook("response")?,
                flow_finished: hook("flow_finished")?,
                websocket_message: hook("websocket_message")?,
            };
            any.request |= hooks.request.is_some();
            any.response |= hooks.response.is_some();
            any.flow_finished |= hooks.flow_finished.is_some();
            any.websocket_message |= hooks.websocket_message.is_some();
            if hooks.request.is_some() || hooks.response.is_some() || hooks.flow_finished.is_some()
            {
                body_limit = body_limit.max(limit("body_limit")?);
            }
            if hooks.websocket_message.is_some() {
                websocket_message_limit =
                    websocket_message_limit.max(limit("websocket_message_limit")?);
            }
            middlewares.push(hooks);
        }
        if middlewares.is_empty() {
            return Ok(None);
        }
        Ok(Some(PyHandlers {
            middlewares,
            any,
            body_limit,
            websocket_message_limit,
            shared,
        }))
    }

    /// The view of `flow` made at an earlier hook of this exchange, brought up to date
    /// (and taken out of the connection's state if `forget`), if there is one.
    fn known_view(conn: &Connection, flow: &HttpFlow, forget: bool) -> Option<View> {
        let known = if forget {
            Self::forget(conn, flow.id)
        } else {
            conn.state()
                .get::<PyFlows>()
                .and_then(|f| f.0.get(&flow.id).cloned())
        }?;
        known.get().sync(flow);
        Some(known)
    }

    /// Keeps `view`, just made, in the connection's state for the exchange's later hooks.
    fn keep_view(conn: &Connection, id: u64, view: &View) {
        conn.state()
            .get_or_default::<PyFlows>()
            .0
            .insert(id, Arc::clone(view));
    }

    /// A new view of a flow, from what was taken of it and of its connection (GIL held),
    /// and what the connection's state is to keep of its Python `Connection`.
    fn new_view(
        py: Python<'_>,
        facts: ConnFacts,
        fresh: Fresh,
        protocols: &dyn ProtocolObjects,
    ) -> PyResult<(View, Option<PyConnection>)> {
        let (c, keep) = facts.object(py, protocols)?;
        let view = Py::new(py, PyFlow::from_fresh(py, c.unbind(), fresh))?;
        Ok((Arc::new(view), keep))
    }

    /// Calls `hook` with the view of `flow`: `view` if made already, else the one made at
    /// an earlier hook (taken out of the connection's state if `forget`), else one made
    /// where the hook runs; left in `view`.
    async fn call_view(
        &self,
        hook: &Hook,
        conn: &Connection,
        flow: &HttpFlow,
        view: &mut Option<View>,
        forget: bool,
    ) -> Result<(), Failure> {
        if view.is_none() {
            *view = Self::known_view(conn, flow, forget);
        }
        // What the hook's thread needs to make the view, when there is none yet.
        let make = match view {
            Some(v) => Err(Arc::clone(v)),
            None => Ok((ConnFacts::of(conn), PyFlow::fresh(flow))),
        };
        let shared = Arc::clone(&self.shared);
        let called = hook
            .call_owned(
                &self.shared.bridge,
                move |py| {
                    let (object, made) = match make {
                        Err(known) => (known, None),
                        Ok((facts, fresh)) => {
                            let (view, keep) =
                                Self::new_view(py, facts, fresh, shared.protocols.as_ref())?;
                            (Arc::clone(&view), Some((view, keep)))
                        }
                    };
                    Ok((PyTuple::new(py, [object.clone_ref(py)])?, made))
                },
                ignore,
            )
            .await;
        if let Some(Some((made, keep))) = called.context {
            ConnFacts::keep(conn, keep);
            if !forget {
                Self::keep_view(conn, flow.id, &made);
            }
            *view = Some(made);
        }
        match called.result {
            Ok(()) => Ok(()),
            // The view is made before the hook runs: without one, making it failed.
            Err(e) if view.is_none() => Err(Failure::View(e)),
            Err(e) => Err(Failure::Hook(e)),
        }
    }

    /// Forgets the view of `flow` (its exchange is over); returns it, if there was one.
    fn forget(conn: &Connection, id: u64) -> Option<View> {
        conn.state()
            .get_mut::<PyFlows>()
            .and_then(|f| f.0.remove(&id))
    }
}

/// The answer a client gets when a hook of its exchange raised.
fn failed(what: &str) -> mitm::Response {
    mitm::Response::new(502).with_body(
        "text/plain; charset=utf-8",
        format!("mitm: {what} raised an exception (the proxy's log has its traceback)\n"),
    )
}

/// Logs `err`, raised by the hook `what`, with its traceback and what it led to
/// (`mitm.http._report`).
fn report(shared: &Shared, what: &str, err: PyErr, outcome: &str) {
    static REPORT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let logged = Python::attach(|py| {
        let f = REPORT.get_or_try_init(py, || {
            Ok::<_, PyErr>(
                py.import(intern!(py, "mitm.http"))?
                    .getattr(intern!(py, "_report"))?
                    .unbind(),
            )
        })?;
        f.bind(py)
            .call1((what, err.into_value(py), outcome))
            .map(drop)
    });
    if let Err(e) = logged {
        // The package's reporter is missing or broken: the bridge's is what is left.
        shared.bridge.report(what, e);
    }
}

#[async_trait]
impl HttpHandler for PyHandlers {
    async fn request(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if !self.any.request {
            return Verdict::Continue;
        }
        let mut view = None;
        for m in &self.middlewares {
            let Some(hook) = m.request.as_ref().filter(|h| h.active()) else {
                continue;
            };
            match self.call_view(hook, conn, flow, &mut view, false).await {
                Ok(()) => {}
                Err(Failure::View(e)) => {
                    report(
                        &self.shared,
                        "HttpFlow",
                        e,
                        "the client got 502 Bad Gateway",
                    );
                    return Verdict::Respond(failed("making the HttpFlow"));
                }
                Err(Failure::Hook(e)) => {
                    let what = format!("{}.request", m.name);
                    report(&self.shared, &what, e, "the client got 502 Bad Gateway");
                    if let Some(v) = &view {
                        flow.request = v.get().request_now();
                        v.get().annotate(flow);
                    }
                    return Verdict::Respond(failed(&what));
                }
            }
            let Some(v) = view.as_deref().map(Py::get) else {
                continue;
            };
            if v.killed() {
                flow.request = v.request_now();
                v.annotate(flow);
                return Verdict::Kill;
            }
            if let Some(response) = v.response_now() {
                flow.request = v.request_now();
                v.annotate(flow);
                return Verdict::Respond(response);
            }
        }
        if let Some(v) = &view {
            flow.request = v.get().request_now();
            v.get().annotate(flow);
        }
        Verdict::Continue
    }

    async fn response(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if !self.any.response {
            return Verdict::Continue;
        }
        let mut view = None;
        for m in &self.middlewares {
            let Some(hook) = m.response.as_ref().filter(|h| h.active()) else {
                continue;
            };
            match self.call_view(hook, conn, flow, &mut view, false).await {
                Ok(()) => {}
                Err(Failure::View(e)) => {
                    report(
                        &self.shared,
                        "HttpFlow",
                        e,
                        "the client got 502 Bad Gateway",
                    );
                    return Verdict::Respond(failed("making the HttpFlow"));
                }
                Err(Failure::Hook(e)) => {
                    let what = format!("{}.response", m.name);
                    report(&self.shared, &what, e, "the client got 502 Bad Gateway");
                    let answer = failed(&what);
                    if let Some(v) = &view {
                        v.get().answer(answer.clone());
                        v.get().annotate(flow);
                    }
                    return Verdict::Respond(answer);
                }
            }
            if let Some(v) = view.as_deref().map(Py::get).filter(|v| v.killed()) {
                v.annotate(flow);
                return Verdict::Kill;
            }
        }
        let Some(v) = view.as_deref().map(Py::get) else {
            return Verdict::Continue;
        };
        v.annotate(flow);
        // A response set to None keeps the one there was.
        if let Some(response) = v.response_now() {
            flow.response = Some(response);
        }
        Verdict::Continue
    }

    async fn flow_finished(&self, conn: &Connection, flow: &HttpFlow) {
        let upgrade =
            self.any.websocket_message && flow.response.as_ref().is_some_and(|r| r.status == 101);
        if !self.any.flow_finished && !upgrade {
            if self.any.request || self.any.response {
                // Without the GIL, the view's reference is let go of at the next hook.
                drop(Self::forget(conn, flow.id));
            }
            return;
        }
        let mut view = None;
        for m in &self.middlewares {
            let Some(hook) = m.flow_finished.as_ref().filter(|h| h.active()) else {
                continue;
            };
            match self.call_view(hook, conn, flow, &mut view, true).await {
                Ok(()) => {}
                Err(Failure::View(e)) => {
                    let outcome = "its flow_finished hooks were not called";
                    report(&self.shared, "HttpFlow", e, outcome);
                    return;
                }
                Err(Failure::Hook(e)) => {
                    let what = format!("{}.flow_finished", m.name);
                    report(&self.shared, &what, e, "the exchange was over already");
                }
            }
        }
        if !upgrade {
            if view.is_none() {
                // No hook took the view (every flow_finished hook gated off, e.g. a
                // reloadable addon script without one): let it go here, or the
                // connection's state keeps every flow of a keep-alive connection.
                drop(Self::forget(conn, flow.id));
            }
            return;
        }
        let object = match view.or_else(|| Self::known_view(conn, flow, true)) {
            Some(o) => Ok(o),
            None => {
                let (facts, fresh) = (ConnFacts::of(conn), PyFlow::fresh(flow));
                crate::rt::attach_result(|py| {
                    Self::new_view(py, facts, fresh, self.shared.protocols.as_ref())
                })
                .map(|(o, keep)| {
                    ConnFacts::keep(conn, keep);
                    o
                })
            }
        };
        match object {
            Ok(o) => drop(conn.state().insert(PyWebSocket(o))),
            Err(e) => report(
                &self.shared,
                "HttpFlow",
                e,
                "its WebSocket's messages get no flow",
            ),
        }
    }

    async fn websocket_message(
        &self,
        conn: &Connection,
        message: &mut WebSocketMessage,
    ) -> MessageVerdict {
        if !self.any.websocket_message {
            return MessageVerdict::Forward;
        }
        let flow = conn.state().get::<PyWebSocket>().map(|w| Arc::clone(&w.0));
        // The message's view, made by the first hook's call and shared by the others.
        let mut object: Option<Arc<Py<PyMessage>>> = None;
        for m in &self.middlewares {
            let Some(hook) = m.websocket_message.as_ref().filter(|h| h.active()) else {
                continue;
            };
            let make = match &object {
                Some(o) => Ok(Arc::clone(o)),
                None => Err(PyMessage::new(message)),
            };
            let this_flow = flow.clone();
            let called = hook
                .call_owned(
                    &self.shared.bridge,
                    move |py| {
                        let (o, made) = match make {
                            Ok(o) => (o, None),
                            Err(fresh) => {
                                let o = Arc::new(Py::new(py, fresh)?);
                                (Arc::clone(&o), Some(o))
                            }
                        };
                        let flow = match &this_flow {
                            Some(f) => f.clone_ref(py).into_bound_py_any(py)?,
                            None => py.None().into_bound(py),
                        };
                        Ok((
                            PyTuple::new(py, [flow, o.clone_ref(py).into_bound_py_any(py)?])?,
                            made,
                        ))
                    },
                    ignore,
                )
                .await;
            if let Some(Some(made)) = called.context {
                object = Some(made);
            }
            if let Err(e) = called.result {
                if object.is_none() {
                    report(
                        &self.shared,
                        "WebSocketMessage",
                        e,
                        "the WebSocket is closed",
                    );
                } else {
                    let what = format!("{}.websocket_message", m.name);
                    report(&self.shared, &what, e, "the WebSocket is closed");
                }
                return MessageVerdict::Close;
            }
            if flow.as_ref().is_some_and(|f| f.get().killed()) {
                return MessageVerdict::Close;
            }
            if object.as_ref().is_some_and(|o| o.get().write_back(message)) {
                return MessageVerdict::Drop;
            }
        }
        MessageVerdict::Forward
    }

    async fn websocket_end(&self, conn: &Connection, _end: &WebSocketEnd) {
        if !self.any.websocket_message {
            return;
        }
        drop(conn.state().remove::<PyWebSocket>());
    }

    fn body_limit(&self) -> usize {
        self.body_limit
    }

    fn websocket_message_limit(&self) -> usize {
        self.websocket_message_limit
    }
}
