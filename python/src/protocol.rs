//! A `Protocol` written in Python as an engine [`Protocol`].
//!
//! - `resolve` calls the Python `resolve(connection, data)` (inline when it never
//!   awaits) with the client's first bytes: `(host, port, tls)` accepts the connection
//!   to that [`Target`]; `InvalidProtocol` passes to the next protocol. Any other
//!   exception (or a result that is not `(str, int, bool)`) is logged with its
//!   traceback and ends that connection: the next protocols are still asked, but the
//!   connection is aborted whoever takes it.
//! - `connect` does the rest of the connection's life on the event loop, through
//!   `mitm._protocol`: the client's stream becomes a [`Stream`] under
//!   `connection.client.reader`/`.writer`; the Python `connect` runs and sets
//!   `connection.server` (usually from `asyncio.open_connection`); the engine fires
//!   `server_connected`; the Python `handle` runs, or the default relay (in Python,
//!   both ways through the protocol's middlewares' data hooks, as the original's
//!   `HTTP.handle`); the server's writer is closed. It returns [`Connected::Handled`]:
//!   the engine then fires `server_disconnected` and `client_disconnected`.
//!
//! An exception in `connect` or `handle` (an `InvalidProtocol` from `connect` too: the
//! engine cannot offer a stream it has handed over to the next protocol) is logged
//! with its traceback and ends that connection only. Whatever the Python code did, the
//! client's socket is closed when the engine is done with the connection (unless
//! `connection.client.mitm_managed` was set False: then when Python drops its reader
//! and writer).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use mitm::{async_trait, BoxIo, Connected, Connection, Context, Protocol, Resolution, Target};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyModule, PyTuple};
use pyo3::{intern, IntoPyObjectExt};

use crate::conn::{connection, server_set_by_python};
use crate::hook::Hook;
use crate::middleware::Shared;
use crate::stream::{Inner, Stream};

/// Bytes read from a client per chunk handed to Python (asyncio's transports read
/// up to 256 KiB at once; this keeps a chunk's copy small).
const CHUNK: usize = 64 * 1024;

/// Where a server's [`Shared`] lands once made (it is made after the protocols).
pub(crate) type SharedSlot = Arc<OnceLock<Arc<Shared>>>;

/// One Python protocol object.
#[derive(Debug)]
pub(crate) struct PyProtocol {
    /// Its name for the engine (its class name, made unique on the server).
    name: &'static str,
    /// The protocol object.
    object: Py<PyAny>,
    bytes_needed: usize,
    buffer_size: usize,
    timeout: Duration,
    keep_alive: bool,
    resolve: Hook,
    /// Its own `handle`, or None for the default relay.
    handle: Option<Py<PyAny>>,
    shared: SharedSlot,
}

/// `mitm._protocol` and `mitm.core.InvalidProtocol`, imported once.
fn python(py: Python<'_>) -> PyResult<&(Py<PyModule>, Py<PyAny>)> {
    static MODULES: PyOnceLock<(Py<PyModule>, Py<PyAny>)> = PyOnceLock::new();
    MODULES.get_or_try_init(py, || {
        let core = py.import(intern!(py, "mitm.core"))?;
        Ok((
            py.import(intern!(py, "mitm._protocol"))?.unbind(),
            core.getattr(intern!(py, "InvalidProtocol"))?.unbind(),
        ))
    })
}

/// `name`, or `name#2`, `name#3`... the first that `taken` says is free, as a
/// `&'static str` (the names are kept for the life of the process, once each).
fn unique_name(name: &str, taken: &dyn Fn(&str) -> bool) -> &'static str {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut candidate = name.to_string();
    let mut n = 1;
    while taken(&candidate) {
        n += 1;
        candidate = format!("{name}#{n}");
    }
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let names = names.get_or_insert_with(HashSet::new);
    match names.get(candidate.as_str()) {
        Some(known) => known,
        None => {
            let leaked: &'static str = Box::leak(candidate.into_boxed_str());
            names.insert(leaked);
            leaked
        }
    }
}

impl PyProtocol {
    /// The engine protocol for the Python protocol `object` (its plan read by
    /// `mitm._protocol.plan`, which raises TypeError for one the engine cannot run).
    /// `taken` tells the names other protocols of the server have.
    pub(crate) fn new(
        object: &Bound<'_, PyAny>,
        taken: &dyn Fn(&str) -> bool,
        shared: SharedSlot,
    ) -> PyResult<PyProtocol> {
        let py = object.py();
        let plan = python(py)?
            .0
            .bind(py)
            .call_method1(intern!(py, "plan"), (object,))?;
        let plan = plan.cast::<PyDict>()?;
        let item = |key: &str| -> PyResult<Bound<'_, PyAny>> {
            plan.get_item(key)?
                .ok_or_else(|| PyValueError::new_err(format!("protocol plan without {key}")))
        };
        let class: String = item("name")?.extract()?;
        let timeout: f64 = item("timeout")?.extract()?;
        let resolve = Hook::from_plan(&item("resolve")?)?
            .ok_or_else(|| PyTypeError::new_err(format!("{class} does not define resolve()")))?;
        let handle = item("handle")?;
        Ok(PyProtocol {
            name: unique_name(&class, taken),
            object: object.clone().unbind(),
            bytes_needed: item("bytes_needed")?.extract()?,
            buffer_size: item("buffer_size")?.extract()?,
            timeout: Duration::try_from_secs_f64(timeout)
                .map_err(|e| PyValueError::new_err(format!("{class}.timeout is {timeout}: {e}")))?,
            keep_alive: item("keep_alive")?.extract()?,
            resolve,
            handle: (!handle.is_none()).then(|| handle.unbind()),
            shared,
        })
    }

    /// The server's shared state (always set once the server runs).
    fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.get()
    }

    /// Logs `err`, raised by this protocol's `what`, with its traceback.
    fn report(&self, shared: &Shared, what: &str, err: PyErr) {
        shared.bridge.report(&format!("{}.{what}", self.name), err);
    }

    /// The target a Python `resolve` returned: `(host, port, tls)`.
    fn target(&self, value: &Bound<'_, PyAny>) -> PyResult<Target> {
        let (host, port, tls): (String, i64, bool) = value.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "{}.resolve returned {}: it returns (host: str, port: int, tls: bool), \
                 or raises InvalidProtocol",
                self.name,
                value.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let port = u16::try_from(port).map_err(|_| {
            PyValueError::new_err(format!(
                "{}.resolve returned port {port}: a port is 0 to 65535",
                self.name
            ))
        })?;
        Ok(Target::new(host, port, tls))
    }

    /// The Python `connect`, `server_connected`, the Python `handle` (or the default
    /// relay); an error comes with the step that raised it.
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        &self,
        cx: &Context,
        conn: &mut Connection,
        shared: &Shared,
        py_conn: &Py<PyAny>,
        py_stream: Py<Stream>,
        target: &Target,
        data: &Bytes,
    ) -> Result<(), (&'static str, PyErr)> {
        let connected = self
            .run(shared, "connect", |py| {
                PyTuple::new(
                    py,
                    [
                        self.object.bind(py).clone(),
                        py_conn.bind(py).clone(),
                        py_stream.into_bound(py).into_any(),
                        target.host.as_str().into_bound_py_any(py)?,
                        target.port.into_bound_py_any(py)?,
                        target.tls.into_bound_py_any(py)?,
                        PyBytes::new(py, data).into_any(),
                    ],
                )
            })
            .await
            .map_err(|e| ("connect", e))?;
        // `(connected, (ip, port) or None)`.
        let (connected, server) = Python::attach(|py| {
            connected
                .bind(py)
                .extract::<(bool, Option<(String, u16)>)>()
        })
        .map_err(|e| ("connect", e))?;
        if !connected {
            return Err((
                "connect",
                PyValueError::new_err(format!(
                    "{} took the connection but connected no server: its connect() sets \
                     connection.server = Host(reader, writer)",
                    self.name
                )),
            ));
        }
        let addr = server.and_then(|(ip, port)| Some(SocketAddr::new(ip.parse().ok()?, port)));
        if let Some(addr) = addr {
            conn.server = mitm::Host::new(addr);
            server_set_by_python(conn);
        }
        cx.announce_server(conn).await;
        if conn.is_aborted() {
            return Ok(());
        }
        let handle = Python::attach(|py| self.handle.as_ref().map(|h| h.clone_ref(py)));
        self.run(shared, "handle", |py| {
            let handle = match handle {
                Some(h) => h.into_bound(py),
                None => py.None().into_bound(py),
            };
            PyTuple::new(
                py,
                [
                    self.object.bind(py).clone(),
                    py_conn.bind(py).clone(),
                    handle,
                ],
            )
        })
        .await
        .map(drop)
        .map_err(|e| ("handle", e))
    }

    /// Runs `mitm._protocol.<function>(args)` on the event loop and waits for it.
    async fn run<F>(&self, shared: &Shared, function: &str, args: F) -> PyResult<Py<PyAny>>
    where
        F: for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>>,
    {
        let coro = Python::attach(|py| {
            let args = args(py)?;
            python(py)?
                .0
                .bind(py)
                .call_method1(function, args)
                .map(Bound::unbind)
        })?;
        shared.bridge.finish(coro).await
    }
}

/// Closes the client's stream when the connection is over, and the Python server's
/// writer too if the engine dropped the connection before `finish` ran.
struct Ending {
    stream: Arc<Inner>,
    /// The Python connection, until `finish` ran.
    abandoned: Option<(Py<PyAny>, Arc<Shared>)>,
    /// Whether the client's socket is left to Python (`mitm_managed` False).
    leave_client: bool,
}

impl Drop for Ending {
    fn drop(&mut self) {
        if !self.leave_client {
            self.stream.close();
        }
        if let Some((connection, shared)) = self.abandoned.take() {
            if let Ok(rt) = crate::rt::runtime() {
                rt.spawn(async move {
                    let coro = Python::attach(|py| {
                        python(py)?
                            .0
                            .bind(py)
                            .call_method1(intern!(py, "abandon"), (connection,))
                            .map(Bound::unbind)
                    });
                    if let Ok(coro) = coro {
                        let _ = shared.bridge.finish(coro).await;
                    }
                });
            }
        }
    }
}

#[async_trait]
impl Protocol for PyProtocol {
    fn name(&self) -> &'static str {
        self.name
    }

    fn bytes_needed(&self) -> usize {
        self.bytes_needed
    }

    fn buffer_size(&self) -> usize {
        self.buffer_size
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    async fn resolve(&self, conn: &Connection, data: &[u8]) -> Resolution {
        let Some(shared) = self.shared() else {
            return Resolution::NotMine;
        };
        let called = self
            .resolve
            .call(&shared.bridge, |py| {
                let c = connection(py, conn, shared.protocols.as_ref())?;
                PyTuple::new(py, [c, PyBytes::new(py, data).into_any()])
            })
            .await;
        let target = Python::attach(|py| match called {
            Ok(value) => self.target(value.bind(py)).map(Some),
            Err(e) => {
                let invalid = python(py).map(|m| e.is_instance(py, m.1.bind(py)));
                match invalid {
                    Ok(true) => Ok(None),
                    _ => Err(e),
                }
            }
        });
        match target {
            Ok(Some(target)) => Resolution::Accept(target),
            Ok(None) => Resolution::NotMine,
            Err(e) => {
                self.report(shared, "resolve", e);
                conn.abort();
                Resolution::NotMine
            }
        }
    }

    async fn connect(
        &self,
        cx: &Context,
        conn: &mut Connection,
        client: BoxIo,
        target: Target,
        data: Bytes,
    ) -> mitm::Result<Connected> {
        let Some(shared) = self.shared().cloned() else {
            return Err(mitm::Error::Aborted);
        };
        let stream = match Stream::new(
            client,
            conn.client.addr,
            conn.client_socket.local,
            cx.ca().clone(),
            CHUNK,
            shared.clone(),
        ) {
            Ok(s) => s,
            Err(e) => {
                self.report(&shared, "connect", e);
                return Ok(Connected::Handled);
            }
        };
        let mut ending = Ending {
            stream: stream.inner(),
            abandoned: None,
            leave_client: false,
        };
        let made = Python::attach(|py| -> PyResult<(Py<PyAny>, Py<Stream>)> {
            let c = connection(py, conn, shared.protocols.as_ref())?;
            Ok((c.unbind(), Py::new(py, stream)?))
        });
        let (py_conn, py_stream) = match made {
            Ok(m) => m,
            Err(e) => {
                self.report(&shared, "connect", e);
                return Ok(Connected::Handled);
            }
        };
        ending.abandoned = Some((Python::attach(|py| py_conn.clone_ref(py)), shared.clone()));
        let served = self
            .serve(cx, conn, &shared, &py_conn, py_stream, &target, &data)
            .await;
        if let Err((what, e)) = served {
            self.report(&shared, what, e);
            conn.abort();
        }
        // The server's writer closed (when Python manages it), then the client's.
        let finished = self
            .run(&shared, "finish", |py| {
                PyTuple::new(py, [py_conn.bind(py).clone()])
            })
            .await;
        if let Err(e) = finished {
            tracing::debug!(error = %e, protocol = self.name, "closing a Python protocol's streams failed");
        }
        ending.abandoned = None;
        ending.leave_client = Python::attach(|py| {
            py_conn
                .bind(py)
                .getattr(intern!(py, "client"))
                .and_then(|c| c.getattr(intern!(py, "mitm_managed")))
                .and_then(|m| m.is_truthy())
                .map(|managed| !managed)
                .unwrap_or(false)
        });
        drop(ending);
        Ok(Connected::Handled)
    }
}
