//! The native half of the `mitm` Python package (`mitm._native`): the engine's server,
//! its certificate authority, and the bridge that runs Python hooks from the engine's
//! threads. The package's Python modules (`python/mitm/`) give it the original
//! package's API; this crate uses only the `mitm` library's public API.

mod ca;
mod conn;
mod hook;
mod middleware;
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
    m.add_function(wrap_pyfunction!(server::start, m)?)?;
    m.add_function(wrap_pyfunction!(default_ca_dir, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// The directory `MITM()` keeps its CA in unless given one (the original's user data
/// directory), or None on a platform without one.
#[pyfunction]
fn default_ca_dir() -> Option<std::path::PathBuf> {
    mitm::default_ca_dir()
}
