//! The Python `Connection` of each engine connection: made once, at its first hook,
//! kept in the connection's state, its `server` and `protocol` brought up to date
//! before every hook.

use std::net::SocketAddr;

use mitm::Connection;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::{intern, IntoPyObjectExt};

/// The Python side of one connection, in its [`mitm::State`].
struct PyConnection {
    object: Py<PyAny>,
    /// The server address its `server` shows.
    server: Option<SocketAddr>,
    /// The protocol its `protocol` shows.
    protocol: Option<&'static str>,
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
    // The state lock is taken with the GIL held and let go before calling Python:
    // engine code never waits for the GIL while holding it.
    let known = conn
        .state()
        .get::<PyConnection>()
        .map(|c| (c.object.clone_ref(py), c.server, c.protocol));
    let server = conn.server.addr;
    let (object, stale_server, stale_protocol, fresh) = match known {
        Some((object, s, p)) => (
            object.into_bound(py),
            s != server,
            p != conn.protocol,
            false,
        ),
        None => {
            let object = classes(py)?
                .1
                .bind(py)
                .call1((host(py, conn.client.addr)?, host(py, None)?))?;
            (object, server.is_some(), conn.protocol.is_some(), true)
        }
    };
    if stale_server {
        object.setattr(intern!(py, "server"), host(py, server)?)?;
    }
    if stale_protocol {
        let proto = match conn.protocol.and_then(|name| protocols.object(py, name)) {
            Some(p) => p.into_bound(py),
            None => conn.protocol.into_bound_py_any(py)?,
        };
        object.setattr(intern!(py, "protocol"), proto)?;
    }
    if fresh || stale_server || stale_protocol {
        conn.state().insert(PyConnection {
            object: object.clone().unbind(),
            server,
            protocol: conn.protocol,
        });
    }
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
