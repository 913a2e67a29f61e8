//! A running engine server for Python: started from an event loop, stopped from it,
//! waited on as an asyncio future.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mitm::{Mitm, Protocol};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tokio::sync::{oneshot, watch};

use crate::ca::{chain, to_py, Authority};
use crate::conn::ProtocolObjects;
use crate::hook::Bridge;
use crate::middleware::{EngineHooks, Shared};
use crate::options::Options;
use crate::protocol::{PyProtocol, SharedSlot};
use crate::rt::runtime;

/// The Python objects of the engine's built-in protocols, by engine name.
struct Builtins(HashMap<&'static str, Py<PyAny>>);

impl ProtocolObjects for Builtins {
    fn object(&self, py: Python<'_>, name: &str) -> Option<Py<PyAny>> {
        self.0.get(name).map(|o| o.clone_ref(py))
    }
}

/// How a server ended: `None` while it runs, then `Ok` or the error's text.
type Ended = Option<Result<(), String>>;

/// A server the engine runs (`mitm._native.start`).
#[pyclass(module = "mitm._native", name = "Server")]
#[derive(Debug)]
pub(crate) struct Server {
    /// Where it listens: `(host, port)` per listener.
    addresses: Vec<(String, u16)>,
    /// The CA it signs leaves with.
    ca: Authority,
    /// Asks the accept loop to stop (taken by the first `stop`).
    stop: Mutex<Option<oneshot::Sender<()>>>,
    /// How it ended.
    ended: watch::Receiver<Ended>,
    shared: Arc<Shared>,
}

/// Binds a server with the package's plan and starts serving on the engine's threads.
///
/// `protocols` lists `(kind, name, object)`: `("builtin", "http", HTTP())` for the
/// engine's own, `("python", class name, object)` for one written in Python.
/// `middlewares` lists each middleware's plan (see `mitm._bridge.plan`).
/// `options` holds what `MITM` takes beyond the original's arguments (see
/// `options.rs`).
#[pyfunction]
#[pyo3(signature = (event_loop, host, port, protocols, middlewares, ca, options = None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    py: Python<'_>,
    event_loop: Py<PyAny>,
    host: String,
    port: u16,
    protocols: &Bound<'_, PyList>,
    middlewares: &Bound<'_, PyList>,
    ca: PyRef<'_, Authority>,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Server> {
    let options = Options::from_py(options)?;
    let ca = Authority(ca.0.clone());
    let rt = runtime()?;
    let mut builtins = HashMap::new();
    let mut engine_protocols: Vec<Arc<dyn Protocol>> = Vec::new();
    let python_slot = SharedSlot::default();
    for item in protocols.iter() {
        let (kind, name, object): (String, String, Py<PyAny>) = item.extract()?;
        match (kind.as_str(), name.as_str()) {
            ("builtin", "http") => {
                engine_protocols.push(Arc::new(options.http()));
                builtins.insert("http", object);
            }
            ("python", _) => {
                let taken = |n: &str| builtins.contains_key(n);
                let proto = PyProtocol::new(object.bind(py), &taken, python_slot.clone())?;
                builtins.insert(proto.name(), object);
                engine_protocols.push(Arc::new(proto));
            }
            _ => {
                return Err(PyValueError::new_err(format!(
                    "unknown protocol {kind}:{name}"
                )))
            }
        }
    }
    let shared = Arc::new(Shared {
        bridge: Bridge::new(py, event_loop)?,
        protocols: Box::new(Builtins(builtins)),
    });
    let _ = python_slot.set(shared.clone());
    let mut builder = Mitm::builder()
        .host(host)
        .port(port)
        .certificate_authority(ca.0.clone())
        .protocols(engine_protocols);
    builder = EngineHooks::new(middlewares, options.handlers(py).as_ref(), &shared)?.add(builder);
    let (builder, finish) = options.apply(py, builder)?;
    let mitm: Mitm = py
        .detach(|| rt.block_on(builder.bind()))
        .map_err(|e| match &e {
            mitm::Error::Bind { .. } => pyo3::exceptions::PyOSError::new_err(chain(&e)),
            _ => to_py(e),
        })?;
    let addresses = mitm
        .listeners()
        .iter()
        .map(|l| (l.addr.ip().to_string(), l.addr.port()))
        .collect();
    let (stop_tx, stop_rx) = oneshot::channel();
    let (ended_tx, ended) = watch::channel(None);
    rt.spawn(async move {
        let outcome = mitm
            .run_until(async {
                let _ = stop_rx.await;
            })
            .await;
        finish.run().await;
        let _ = ended_tx.send(Some(outcome.map_err(|e| chain(&e))));
    });
    Ok(Server {
        addresses,
        ca,
        stop: Mutex::new(Some(stop_tx)),
        ended,
        shared,
    })
}

#[pymethods]
impl Server {
    /// `(host, port)` of every listener.
    #[getter]
    fn addresses(&self) -> Vec<(String, u16)> {
        self.addresses.clone()
    }

    /// The CA the server signs leaves with.
    #[getter]
    fn authority(&self) -> Authority {
        self.ca.clone()
    }

    /// Stops accepting; connections in flight get the grace period. Returns at once;
    /// `wait()` tells when it is over.
    fn stop(&self) {
        if let Some(tx) = self.stop.lock().ok().and_then(|mut s| s.take()) {
            let _ = tx.send(());
        }
    }

    /// Whether the server has stopped.
    #[getter]
    fn stopped(&self) -> bool {
        self.ended.borrow().is_some()
    }

    /// An asyncio future on the server's event loop, done when the server has stopped
    /// (with the error that stopped it, if any).
    fn wait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut ended = self.ended.clone();
        self.shared.bridge.future(py, async move {
            let outcome = match ended.wait_for(|e| e.is_some()).await {
                Ok(e) => e.clone().unwrap_or(Ok(())),
                Err(_) => Ok(()),
            };
            outcome.map_err(PyRuntimeError::new_err)?;
            Python::attach(|py| Ok(py.None()))
        })
    }
}
