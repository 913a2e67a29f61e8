//! The Python `Connection` of each engine connection: made once, at its first hook,
//! kept in the connection's state, its `server` and `protocol` brought up to date
//! before every hook.

use std::net::SocketAddr;
use std::sync::Arc;

use mitm::Connection;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::{intern, IntoPyObjectExt};

/// The Python side of one connection, in its [`mitm::State`].
#[derive(Clone)]
pub(crate) struct PyConnection {
    /// The `Connection` object (shared, so that a hook on a thread of the pool can be
    /// given it without the GIL being taken here).
    object: Arc<Py<PyAny>>,
    /// The server address its `server` shows.
    server: Option<SocketAddr>,
    /// The protocol its `protocol` shows.
    protocol: Option<&'static str>,
}

/// What the Python `Connection` of an engine connection is made or brought up to date
/// from, taken from the connection without the GIL: what a hook run on another thread
/// needs of it.
pub(crate) struct ConnFacts {
    known: Option<PyConnection>,
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    protocol: Option<&'static str>,
}

impl ConnFacts {
    /// The facts of `conn` now.
    pub(crate) fn of(conn: &Connection) -> ConnFacts {
        ConnFacts {
            known: conn.state().get::<PyConnection>().cloned(),
            client: conn.client.addr,
            server: conn.server.addr,
            protocol: conn.protocol,
        }
    }

    /// The Python `Connection`, made or brought up to date (GIL held), and, when it
    /// changed, what the connection's state is to keep from now on
    /// ([`ConnFacts::keep`]).
    pub(crate) fn object<'py>(
        self,
        py: Python<'py>,
        protocols: &dyn ProtocolObjects,
    ) -> PyResult<(Bound<'py, PyAny>, Option<PyConnection>)> {
        let (object, stale_server, stale_protocol, fresh) = match self.known {
            Some(known) => (
                known.object.bind(py).clone(),
                known.server != self.server,
                known.protocol != self.protocol,
                false,
            ),
            None => {
                let object = classes(py)?
                    .1
                    .bind(py)
                    .call1((host(py, self.client)?, host(py, None)?))?;
                (object, self.server.is_some(), self.protocol.is_some(), true)
            }
        };
        if stale_server {
            object.setattr(intern!(py, "server"), host(py, self.server)?)?;
        }
        if stale_protocol {
            let proto = match self.protocol.and_then(|name| protocols.object(py, name)) {
                Some(p) => p.into_bound(py),
                None => self.protocol.into_bound_py_any(py)?,
            };
            object.setattr(intern!(py, "protocol"), proto)?;
        }
        let keep = (fresh || stale_server || stale_protocol).then(|| PyConnection {
            object: Arc::new(object.clone().unbind()),
            server: self.server,
            protocol: self.protocol,
        });
        Ok((object, keep))
    }

    /// Keeps `made` (from [`ConnFacts::object`]) in `conn`'s state.
    pub(crate) fn keep(conn: &Connection, made: Option<PyConnection>) {
        if let Some(made) = made {
            conn.state().insert(made);
        }
    }
}

/// `mitm.core.Host` and `mitm.core.Connection`, imported once.
fn classes(py: Python<'_>) -> PyResult<&(Py<PyAny>, Py<PyAny>)> {
    static CLASSES: PyOnceLock<(Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();
    CLASSES.get_or_try_init(py, || {
        let core = py.import(intern!(py, "mitm.core"))?;
        Ok((
            core.getattr(intern!(py, "Host"))?.unbind(),
            core.getattr(intern!(py, "Connection"))?.unbind(),
        ))
    })
}

/// A `Host` for an address the engine holds the stream of, or an empty one.
fn host<'py>(py: Python<'py>, addr: Option<SocketAddr>) -> PyResult<Bound<'py, PyAny>> {
    let class = classes(py)?.0.bind(py);
    match addr {
        Some(addr) => {
            class.call_method1(intern!(py, "_engine"), (addr.ip().to_string(), addr.port()))
        }
        None => class.call0(),
    }
}

/// What the protocol names resolve to on the Python side (`"http"` → the `HTTP`
/// object the server was given).
pub(crate) trait ProtocolObjects: Send + Sync {
    /// The Python object of the engine protocol `name`, if there is one.
    fn object(&self, py: Python<'_>, name: &str) -> Option<Py<PyAny>>;
}

/// The Python `Connection` of `conn`, made on first use, with `server` and `protocol`
/// as the engine has them now.
pub(crate) fn connection<'py>(
    py: Python<'py>,
    conn: &Connection,
    protocols: &dyn ProtocolObjects,
) -> PyResult<Bound<'py, PyAny>> {
    // The state lock is let go of before calling Python: engine code never waits for
    // the GIL while holding it.
    let (object, keep) = ConnFacts::of(conn).object(py, protocols)?;
    ConnFacts::keep(conn, keep);
    Ok(object)
}

/// Records that the Python `Connection` of `conn` already shows `conn.server` (a
/// `Protocol` written in Python set `connection.server` to a `Host` with its own
/// streams): later hooks keep that `Host` rather than replacing it with the engine's.
pub(crate) fn server_set_by_python(conn: &Connection) {
    if let Some(known) = conn.state().get_mut::<PyConnection>() {
        known.server = conn.server.addr;
    }
}
