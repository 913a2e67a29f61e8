//! A Python `Middleware` as an engine [`Middleware`]: its seven hooks, each called only
//! if its class defines it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use mitm::middleware::{ClientHello, DataHooks, Interception, Middleware, Router};
use mitm::{async_trait, Connection, MitmBuilder};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use pyo3::{intern, IntoPyObjectExt};

use crate::conn::{connection, ConnFacts, ProtocolObjects};
use crate::handler::PyHandlers;
use crate::hook::{ignore, Bridge, Hook};

/// What every Python hook of one server shares: the event loop and the protocols'
/// Python objects.
pub(crate) struct Shared {
    pub(crate) bridge: Bridge,
    pub(crate) protocols: Box<dyn ProtocolObjects>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// The engine hooks of Python middlewares: each one's connection hooks, and the
/// message hooks of those that have any as one handler (none without them, so that the
/// engine keeps its fast path). What `_native.start` adds for `MITM(middlewares=[...])`
/// and the `mitm` command for the addon scripts of `-s`.
#[derive(Debug)]
pub(crate) struct EngineHooks {
    pub(crate) middlewares: Vec<Arc<PyMiddleware>>,
    pub(crate) handler: Option<Arc<PyHandlers>>,
}

impl EngineHooks {
    /// From the package's plans: one per middleware (`mitm._bridge.plan`), and the
    /// message hooks' (`mitm.http.message_plan`) of those that have any.
    pub(crate) fn new(
        plans: &Bound<'_, PyList>,
        message_plans: Option<&Bound<'_, PyList>>,
        shared: &Arc<Shared>,
    ) -> PyResult<EngineHooks> {
        let mut middlewares = Vec::new();
        for plan in plans.iter() {
            let plan = plan.cast::<PyDict>()?;
            middlewares.push(Arc::new(PyMiddleware::new(plan, shared.clone())?));
        }
        let handler = match message_plans {
            Some(plans) => PyHandlers::new(plans, shared.clone())?.map(Arc::new),
            None => None,
        };
        Ok(EngineHooks {
            middlewares,
            handler,
        })
    }

    /// `builder` with the hooks: the middlewares after its own, the handler after its
    /// own (before a capture added later, which then saves flows as the hooks left
    /// them).
    pub(crate) fn add(self, mut builder: MitmBuilder) -> MitmBuilder {
        for middleware in self.middlewares {
            if middleware.tls_clienthello.is_some() {
                builder = builder.router(middleware.clone());
            }
            builder = builder.middleware(middleware);
        }
        if let Some(handler) = self.handler {
            builder = builder.http_handler(handler);
        }
        builder
    }
}

/// One Python middleware object.
#[derive(Debug)]
pub(crate) struct PyMiddleware {
    /// Its class name, for reports.
    name: String,
    mitm_started: Option<Hook>,
    client_connected: Option<Hook>,
    server_connected: Option<Hook>,
    client_data: Option<Hook>,
    server_data: Option<Hook>,
    client_disconnected: Option<Hook>,
    server_disconnected: Option<Hook>,
    /// `tls_clienthello(connection, sni, alpn, target)`, beyond the original's hooks:
    /// a true result passes the connection's TLS through untouched (the addon host's
    /// `tls_clienthello`). A middleware with it is a [`Router`] too.
    tls_clienthello: Option<Hook>,
    shared: Arc<Shared>,
}

impl PyMiddleware {
    /// From the package's plan of a middleware: `{"name": class name, hook name:
    /// (callable, is_coroutine, inline) or None, ...}`.
    pub(crate) fn new(plan: &Bound<'_, PyDict>, shared: Arc<Shared>) -> PyResult<Self> {
        let py = plan.py();
        let hook = |name: &str| -> PyResult<Option<Hook>> {
            match plan.get_item(name)? {
                Some(item) => Hook::from_plan(&item),
                None => Ok(None),
            }
        };
        let name: String = match plan.get_item(intern!(py, "name"))? {
            Some(n) => n.extract()?,
            None => "Middleware".to_string(),
        };
        Ok(PyMiddleware {
            name,
            mitm_started: hook("mitm_started")?,
            client_connected: hook("client_connected")?,
            server_connected: hook("server_connected")?,
            client_data: hook("client_data")?,
            server_data: hook("server_data")?,
            client_disconnected: hook("client_disconnected")?,
            server_disconnected: hook("server_disconnected")?,
            tls_clienthello: hook("tls_clienthello")?,
            shared,
        })
    }

    /// Runs an event hook with the connection; an exception is logged and ends the
    /// connection.
    async fn event(&self, hook: &Option<Hook>, what: &str, conn: &Connection) {
        let Some(hook) = hook.as_ref().filter(|h| h.active()) else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let facts = ConnFacts::of(conn);
        let called = hook
            .call_owned(
                &self.shared.bridge,
                move |py| {
                    let (c, keep) = facts.object(py, shared.protocols.as_ref())?;
                    Ok((PyTuple::new(py, [c])?, keep))
                },
                ignore,
            )
            .await;
        if let Some(keep) = called.context {
            ConnFacts::keep(conn, keep);
        }
        if let Err(e) = called.result {
            self.shared
                .bridge
                .report(&format!("{}.{what}", self.name), e);
            conn.abort();
        }
    }

    /// Runs a data hook: what it returns is sent on. An exception, or a result that is
    /// not bytes, is logged and ends the connection.
    ///
    /// The hot path of a Python middleware, once per chunk relayed: one hold of the GIL
    /// for a hook that runs inline, the chunk copied into one `bytes`, and, when the
    /// hook returns that very object (`return data`), the original buffer sent on
    /// without a copy back.
    async fn data(&self, hook: &Option<Hook>, what: &str, conn: &Connection, data: Bytes) -> Bytes {
        let Some(hook) = hook else { return data };
        if conn.is_aborted() {
            return Bytes::new();
        }
        let shared = &self.shared;
        let called = hook
            .call_with(
                &shared.bridge,
                |py| {
                    let c = connection(py, conn, shared.protocols.as_ref())?;
                    let b = PyBytes::new(py, &data);
                    let sent = b.clone().unbind();
                    Ok((PyTuple::new(py, [c, b.into_any()])?, sent))
                },
                |py, value, sent| {
                    if value.is(&sent) {
                        return Ok(None);
                    }
                    to_bytes(py, &value, what).map(Some)
                },
            )
            .await;
        match called {
            Ok(None) => data,
            Ok(Some(bytes)) => bytes,
            Err(e) => {
                shared.bridge.report(&format!("{}.{what}", self.name), e);
                conn.abort();
                Bytes::new()
            }
        }
    }
}

/// The bytes a data hook returned (`bytes`, `bytearray` or `memoryview`).
fn to_bytes(py: Python<'_>, value: &Bound<'_, PyAny>, what: &str) -> PyResult<Bytes> {
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(b.as_bytes()));
    }
    if value.is_none() {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "{what} returned None: a data hook returns the bytes to send on (return data to pass them unchanged)"
        )));
    }
    match value.call_method0(intern!(py, "__bytes__")) {
        Ok(b) => Ok(Bytes::copy_from_slice(b.cast::<PyBytes>()?.as_bytes())),
        Err(_) => {
            let bytes = py
                .import(intern!(py, "builtins"))?
                .getattr(intern!(py, "bytes"))?
                .call1((value,))
                .map_err(|_| {
                    pyo3::exceptions::PyTypeError::new_err(format!(
                        "{what} returned {}, not bytes",
                        value
                            .get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    ))
                })?;
            Ok(Bytes::copy_from_slice(bytes.cast::<PyBytes>()?.as_bytes()))
        }
    }
}

#[async_trait]
impl Middleware for PyMiddleware {
    fn data_hooks(&self) -> DataHooks {
        if self.client_data.is_some() || self.server_data.is_some() {
            DataHooks::On
        } else {
            DataHooks::Off
        }
    }

    async fn mitm_started(&self, addr: SocketAddr) {
        let Some(hook) = self.mitm_started.as_ref().filter(|h| h.active()) else {
            return;
        };
        let called = hook
            .call(&self.shared.bridge, |py| {
                PyTuple::new(
                    py,
                    [
                        addr.ip().to_string().into_bound_py_any(py)?,
                        addr.port().into_bound_py_any(py)?,
                    ],
                )
            })
            .await;
        if let Err(e) = called {
            self.shared
                .bridge
                .report(&format!("{}.mitm_started", self.name), e);
        }
    }

    async fn client_connected(&self, conn: &Connection) {
        self.event(&self.client_connected, "client_connected", conn)
            .await;
    }

    async fn server_connected(&self, conn: &Connection) {
        self.event(&self.server_connected, "server_connected", conn)
            .await;
    }

    async fn client_data(&self, conn: &Connection, data: Bytes) -> Bytes {
        self.data(&self.client_data, "client_data", conn, data)
            .await
    }

    async fn server_data(&self, conn: &Connection, data: Bytes) -> Bytes {
        self.data(&self.server_data, "server_data", conn, data)
            .await
    }

    async fn client_disconnected(&self, conn: &Connection) {
        self.event(&self.client_disconnected, "client_disconnected", conn)
            .await;
    }

    async fn server_disconnected(&self, conn: &Connection) {
        self.event(&self.server_disconnected, "server_disconnected", conn)
            .await;
    }
}

#[async_trait]
impl Router for PyMiddleware {
    /// The middleware's `tls_clienthello(connection, sni, alpn, target)`: true passes
    /// the connection through. An exception is logged and the connection intercepted.
    async fn tls_clienthello(&self, conn: &Connection, hello: &ClientHello) -> Interception {
        let Some(hook) = self.tls_clienthello.as_ref().filter(|h| h.active()) else {
            return Interception::Intercept;
        };
        let shared = Arc::clone(&self.shared);
        let facts = ConnFacts::of(conn);
        let sni = hello.server_name.clone();
        let alpn = hello.alpn.clone();
        let target = conn.target.as_ref().map(|t| (t.host.clone(), t.port));
        let called = hook
            .call_owned(
                &self.shared.bridge,
                move |py| {
                    let (c, keep) = facts.object(py, shared.protocols.as_ref())?;
                    let alpn = PyList::new(py, alpn.iter().map(|p| PyBytes::new(py, p)))?;
                    let args = PyTuple::new(
                        py,
                        [
                            c,
                            sni.into_bound_py_any(py)?,
                            alpn.into_any(),
                            target.into_bound_py_any(py)?,
                        ],
                    )?;
                    Ok((args, keep))
                },
                |_py, value| value.is_truthy(),
            )
            .await;
        if let Some(keep) = called.context {
            ConnFacts::keep(conn, keep);
        }
        match called.result {
            Ok(true) => Interception::PassThrough,
            Ok(false) => Interception::Intercept,
            Err(e) => {
                self.shared
                    .bridge
                    .report(&format!("{}.tls_clienthello", self.name), e);
                Interception::Intercept
            }
        }
    }
}
