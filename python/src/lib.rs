//! The native half of the `mitm` Python package (`mitm._native`): the engine's server,
//! its certificate authority, and the bridge that runs Python hooks from the engine's
//! threads. The package's Python modules (`python/mitm/`) give it the original
//! package's API; this crate uses only the `mitm` library's public API.

mod ca;
mod command;
mod conn;
mod filter;
mod flow;
mod handler;
mod headers;
mod hook;
mod log;
mod message;
mod middleware;
mod options;
mod pool;
mod protocol;
mod rt;
mod server;
mod stream;

use pyo3::prelude::*;

/// The module `mitm._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ca::Authority>()?;
    m.add_class::<server::Server>()?;
    m.add_class::<stream::Stream>()?;
    m.add_class::<filter::PyFilter>()?;
    m.add_class::<hook::HookGate>()?;
    m.add_function(wrap_pyfunction!(server::start, m)?)?;
    m.add_function(wrap_pyfunction!(command::cli, m)?)?;
    m.add_function(wrap_pyfunction!(default_ca_dir, m)?)?;
    m.add_function(wrap_pyfunction!(rt::at_exit, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    flow::register(m)?;
    log::install(m.py())?;
    Ok(())
}

/// The directory `MITM()` keeps its CA in unless given one (the original's user data
/// directory), or None on a platform without one.
#[pyfunction]
fn default_ca_dir() -> Option<std::path::PathBuf> {
    mitm::default_ca_dir()
}
