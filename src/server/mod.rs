//! The server: [`MitmBuilder`] configures it, [`Mitm`] accepts clients, and each client
//! is served by its own task through the life described in [`crate::middleware`].
//!
//! Shutdown is a future the caller controls ([`Mitm::run_until`]) or a handle
//! ([`Mitm::spawn`]): the listener closes at once, connections in flight get a grace
//! period to finish, and whatever is left is then dropped.

pub mod block;
mod builder;
mod connection;
pub mod listener;
pub mod mode;
mod run;
mod sender;

pub use self::builder::MitmBuilder;
pub use self::run::{Mitm, MitmHandle};
pub use self::sender::Sender;

use std::path::PathBuf;
use std::time::Duration;

/// The default listening host, as the original's.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The default listening port, as the original's.
pub const DEFAULT_PORT: u16 = 8888;
/// The default of [`MitmBuilder::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// The default grace period for connections in flight at shutdown.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// How long a host stays passed through after its client refused the proxy's
/// certificate, when TLS fail-open is asked for without a time of its own (see
/// [`MitmBuilder::tls_fail_open`]): 10 minutes.
pub const DEFAULT_TLS_FAIL_OPEN: Duration = Duration::from_secs(600);

/// Where the CA lives unless told otherwise: the user data directory the original uses,
/// `~/.local/share/mitm` on Linux (`~/Library/Application Support/mitm` on macOS,
/// `%APPDATA%\mitm` on Windows). `None` when the platform has no such directory.
pub fn default_ca_dir() -> Option<PathBuf> {
    data_dir().map(|d| d.join("mitm"))
}

/// The user data directory: `$XDG_DATA_HOME` or `~/.local/share` on Unix,
/// `~/Library/Application Support` on macOS, `%APPDATA%` on Windows. Read from the
/// environment, as the XDG base directory specification and the platforms define it.
fn data_dir() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if cfg!(windows) {
        return absolute("APPDATA");
    }
    let home = absolute("HOME");
    if cfg!(target_os = "macos") {
        return home.map(|h| h.join("Library/Application Support"));
    }
    absolute("XDG_DATA_HOME").or_else(|| home.map(|h| h.join(".local/share")))
}
