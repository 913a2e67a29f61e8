//! The package's `mitm` command (`_native.cli`): the Rust binary's command line, built
//! from the same sources (`src/bin/mitm/`, included below), with a host that logs
//! through Python's `logging`, keeps a Python thread state on each of the runtime's
//! threads (as `rt.rs` does for `MITM`), and runs mitmproxy's addon scripts (`-s`).
//!
//! Scripts are loaded by a factory (`mitm.addons.Addons` unless the package's
//! `mitm._cli` is told another): called with the script paths and the settings no
//! option of the command takes, it returns a `mitm.Middleware`, whose hooks become the
//! engine's exactly as `_native.start` makes them for `MITM(middlewares=[...])`
//! ([`EngineHooks`]). Its `mitm_stopped`, if it has one, is awaited once the proxy has
//! stopped.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::conn::ProtocolObjects;
use crate::hook::Bridge;
use crate::middleware::{EngineHooks, Shared};

#[path = "../../src/bin/mitm/cli.rs"]
#[allow(
    dead_code,
    reason = "the binary's modules: a few items serve only the binary's tests"
)]
mod shared;

/// Runs the `mitm` command with `argv` (the program's name first) and returns its exit
/// code. The GIL is released while it runs; hooks that await run on `event_loop`
/// (running on another thread). `factory(scripts, options)` makes the middleware of
/// `-s`'s scripts.
#[pyfunction]
#[pyo3(signature = (argv, event_loop, factory))]
pub(crate) fn cli(
    py: Python<'_>,
    argv: Vec<OsString>,
    event_loop: Py<PyAny>,
    factory: Py<PyAny>,
) -> u8 {
    let host = PyHost {
        event_loop,
        factory,
    };
    py.detach(|| shared::run(argv, Some(&host)))
}

/// The command's host in Python.
struct PyHost {
    event_loop: Py<PyAny>,
    factory: Py<PyAny>,
}

/// No engine protocol has a Python object here: a `Connection`'s `protocol` is None.
struct NoProtocols;

impl ProtocolObjects for NoProtocols {
    fn object(&self, _py: Python<'_>, _name: &str) -> Option<Py<PyAny>> {
        None
    }
}

/// A Python exception as the command's error: the message of the command's own
/// (`mitm._cli.CommandError`); else its type and message, and, unless it is a
/// `ValueError` (a wrong value: the message says it all), its traceback.
fn error(py: Python<'_>, e: &PyErr) -> anyhow::Error {
    let own = py
        .import(intern!(py, "mitm._cli"))
        .and_then(|m| m.getattr(intern!(py, "CommandError")))
        .is_ok_and(|class| e.matches(py, class).unwrap_or(false));
    if own {
        return anyhow::anyhow!("{}", e.value(py));
    }
    let traceback = e
        .traceback(py)
        .and_then(|t| t.format().ok())
        .unwrap_or_default();
    if traceback.is_empty() || e.is_instance_of::<pyo3::exceptions::PyValueError>(py) {
        anyhow::anyhow!("{e}")
    } else {
        anyhow::anyhow!("{e}\n{}", traceback.trim_end())
    }
}

impl shared::Host for PyHost {
    fn init_logging(&self, level: &'static str) {
        Python::attach(|py| {
            let configured = py
                .import(intern!(py, "mitm._cli"))
                .and_then(|m| m.call_method1(intern!(py, "configure_logging"), (level,)));
            if let Err(e) = configured {
                e.print(py);
            }
            crate::log::refresh(py);
        });
    }

    fn on_thread_start(&self) -> Option<fn()> {
        Some(crate::rt::keep_thread_state)
    }

    fn scripts(
        &self,
        scripts: &[PathBuf],
        options: &[shared::settings::Given],
    ) -> anyhow::Result<shared::Scripts> {
        Python::attach(|py| {
            self.load(py, scripts, options)
                .map_err(|e| error(py, &e).context("cannot load the addon scripts"))
        })
    }
}

impl PyHost {
    fn load(
        &self,
        py: Python<'_>,
        scripts: &[PathBuf],
        options: &[shared::settings::Given],
    ) -> PyResult<shared::Scripts> {
        let given = PyDict::new(py);
        for option in options {
            match option.values.as_slice() {
                [] => given.set_item(&option.name, py.None())?,
                [one] => given.set_item(&option.name, one)?,
                many => given.set_item(&option.name, many)?,
            }
        }
        let helpers = py.import(intern!(py, "mitm._cli"))?;
        let (middleware, plan, message_plan): (Py<PyAny>, Py<PyAny>, Py<PyAny>) = helpers
            .call_method1(
                intern!(py, "load"),
                (self.factory.bind(py), scripts.to_vec(), given),
            )?
            .extract()?;
        let shared = Arc::new(Shared {
            bridge: Bridge::new(py, self.event_loop.clone_ref(py))?,
            protocols: Box::new(NoProtocols),
        });
        let plans = PyList::new(py, [plan])?;
        let message_plans = if message_plan.is_none(py) {
            PyList::empty(py)
        } else {
            PyList::new(py, [message_plan])?
        };
        crate::log::refresh(py);
        let hooks = EngineHooks::new(&plans, Some(&message_plans), &shared)?;
        let stopped = async move {
            let awaitable = Python::attach(|py| {
                py.import(intern!(py, "mitm._cli"))?
                    .call_method1(intern!(py, "stopped"), (middleware,))
                    .map(Bound::unbind)
            });
            let done = match awaitable {
                Ok(awaitable) => shared.bridge.finish(awaitable).await.map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                shared.bridge.report("mitm_stopped", e);
            }
        };
        Ok(shared::Scripts {
            middleware: hooks
                .middlewares
                .into_iter()
                .next()
                .map(|m| m as Arc<dyn mitm::Middleware>),
            handler: hooks
                .handler
                .map(|h| h as Arc<dyn mitm::middleware::HttpHandler>),
            stopped: Box::pin(stopped),
        })
    }
}
