//! The limits and timeouts every HTTP connection obeys, whatever its version. They are
//! set on [`crate::Http`] (and by the CLI flags of the same names); each default is
//! documented on its setter there.

use std::time::Duration;

/// Most header fields accepted in one head by default (see [`crate::Http::max_headers`]).
pub const DEFAULT_MAX_HEADERS: usize = 128;
/// The default of [`crate::Http::max_head`]: 64 KiB.
pub const DEFAULT_MAX_HEAD: usize = 64 * 1024;
/// The default of [`crate::Http::max_concurrent_streams`]: 100, what RFC 9113 advises
/// as the least a server should allow.
pub const DEFAULT_MAX_STREAMS: u32 = 100;
/// The default of [`crate::Http::max_upstream_connections`]: upstream connections one
/// client connection may hold open at once (browsers use 6 per host over HTTP/1.1).
pub const DEFAULT_MAX_UPSTREAMS: usize = 8;
/// The default of [`crate::Http::timeout`] (a request head once begun), and so of
/// [`crate::Http::connect_timeout`] and [`crate::Http::handshake_timeout`]: 15 seconds.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(15);
/// The default of [`crate::Http::response_timeout`]: 120 seconds.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// The default of [`crate::Http::idle_timeout`]: 120 seconds.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
pub use crate::tls::trust::DEFAULT_MAGIC_HOST;

/// The settings of the HTTP layers (set on [`crate::Http`]).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Time for a request head once it has begun.
    pub timeout: Duration,
    /// Time for connecting upstream (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time for a client's TLS handshake with the proxy (and its first bytes in a
    /// tunnel).
    pub handshake_timeout: Duration,
    /// Time an origin has to start its response, and each wait for its body (504).
    pub response_timeout: Duration,
    /// Time a keep-alive client may stay silent between requests.
    pub idle_timeout: Duration,
    /// Whether client connections are kept open between requests.
    pub keep_alive: bool,
    /// Largest request head (HTTP/1) or header list (HTTP/2) accepted (431 beyond).
    pub max_head: usize,
    /// Most header fields in a request head (431 beyond); response heads may have at
    /// least [`DEFAULT_MAX_HEADERS`].
    pub max_headers: usize,
    /// Largest request or response body let through (`413` for a request, `502` for a
    /// response beyond); `None`: no limit.
    pub max_body: Option<u64>,
    /// Most streams an HTTP/2 client may have open at once.
    pub max_streams: u32,
    /// Most upstream connections one client connection holds at once.
    pub max_upstreams: usize,
    /// Bytes read per chunk when relaying tunnels.
    pub buffer_size: usize,
    /// Whether large plain bodies and untouched tunnels may be moved with `splice(2)`.
    pub zero_copy: bool,
    /// The host the proxy answers itself (CA download page).
    pub magic_host: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        let timeout = DEFAULT_HEAD_TIMEOUT;
        Settings {
            timeout,
            connect_timeout: timeout,
            handshake_timeout: timeout,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keep_alive: true,
            max_head: DEFAULT_MAX_HEAD,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body: None,
            max_streams: DEFAULT_MAX_STREAMS,
            max_upstreams: DEFAULT_MAX_UPSTREAMS,
            buffer_size: 8192,
            zero_copy: true,
            magic_host: Some(DEFAULT_MAGIC_HOST.to_string()),
        }
    }
}

impl Settings {
    /// Whether `host` is the magic host, answered by the proxy itself.
    pub(crate) fn is_magic(&self, host: &str) -> bool {
        self.magic_host.as_deref() == Some(host)
    }
}
