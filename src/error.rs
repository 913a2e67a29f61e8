//! The crate's error type.
//!
//! Every variant names what failed and, where there is one, the host, target or file it
//! failed on; the underlying cause is kept as the [`std::error::Error::source`], so a
//! caller that prints the whole chain (for example with `{:#}` in `anyhow`) shows both.
//! [`Error::side`] tells whether the client, the upstream server or the proxy itself was
//! at fault, which decides the HTTP status a protocol answers with.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which party a failure is attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Side {
    /// The client of the proxy sent something wrong or went away.
    Client,
    /// The upstream server could not be reached, failed TLS, or went away.
    Server,
    /// The proxy itself: its configuration, files or certificates.
    Internal,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Server => "server",
            Side::Internal => "proxy",
        })
    }
}

/// Everything that can go wrong in the proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listening socket could not be bound (port taken, no permission, bad address).
    #[error("failed to listen on {addr}")]
    Bind {
        /// The address that was asked for.
        addr: String,
        /// Why binding failed.
        #[source]
        source: io::Error,
    },

    /// A CA file could not be read, or a directory for it could not be made.
    #[error("failed to read {}", path.display())]
    CaRead {
        /// The file or directory.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: io::Error,
    },

    /// A CA file exists but does not hold what it should (a PEM certificate or key).
    #[error("{} is not a valid CA {what}: {reason}", path.display())]
    CaInvalid {
        /// The file, or an empty path when the PEM came from memory.
        path: PathBuf,
        /// `"certificate"` or `"private key"`.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A CA file could not be written.
    #[error("failed to write {}", path.display())]
    CaWrite {
        /// The file.
        path: PathBuf,
        /// Why writing failed.
        #[source]
        source: io::Error,
    },

    /// Saving would have replaced an existing file; a CA users have trusted is never
    /// overwritten.
    #[error("refusing to overwrite existing file {}", path.display())]
    CaExists {
        /// The file that is already there.
        path: PathBuf,
    },

    /// Only one of the two CA files (certificate, key) exists, so the CA can neither be
    /// loaded nor created without losing the other.
    #[error("{} exists but {} does not; restore it or move both away to make a new CA", present.display(), missing.display())]
    CaIncomplete {
        /// The file that is there.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },

    /// A certificate could not be made or signed.
    #[error("failed to issue a certificate for {host}")]
    Certificate {
        /// The host name or address the certificate was for (`"root"` for the CA itself).
        host: String,
        /// What rcgen reported.
        #[source]
        source: rcgen::Error,
    },

    /// A name is not usable in a certificate or as a TLS server name.
    #[error("invalid host name {host:?}")]
    InvalidHost {
        /// The name as given.
        host: String,
    },

    /// A certificate file given to serve for some hosts (`--certs`) cannot be used.
    #[error("cannot serve the certificate in {}: {reason}", path.display())]
    CertFile {
        /// The PEM file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// An upstream proxy URL could not be understood.
    #[error("invalid upstream proxy {url:?}: {reason}")]
    InvalidProxy {
        /// The URL as given, its password hidden.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A proxy mode spec (`--mode`) could not be understood.
    #[error("invalid mode {spec:?}: {reason}")]
    InvalidMode {
        /// The spec as given, any password hidden.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A reverse proxy's target could not be understood: it must be an origin URL,
    /// `http://HOST[:PORT]` or `https://HOST[:PORT]`.
    #[error("invalid reverse proxy target {url:?}: {reason}")]
    InvalidReverseTarget {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An upstream proxy failed or refused to reach the origin (the proxy itself was
    /// reached; connecting to it fails with [`Error::Connect`]).
    #[error("{proxy} upstream proxy: {reason}")]
    UpstreamProxy {
        /// The proxy, as [`UpstreamProxy`](crate::upstream::route::UpstreamProxy) displays it.
        proxy: String,
        /// What it said, e.g. `refused CONNECT: 407 Proxy Authentication Required`.
        reason: String,
    },

    /// A TLS configuration could not be built.
    #[error("invalid TLS configuration: {context}")]
    TlsConfig {
        /// What was being configured.
        context: String,
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },

    /// An extra trust anchor given for upstream verification could not be used.
    #[error("failed to load upstream CA file {}: {reason}", path.display())]
    UpstreamCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The client certificate for upstream mutual TLS could not be used.
    #[error("failed to load upstream client certificate {}: {reason}", path.display())]
    UpstreamClientCert {
        /// The PEM file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The TLS key log file could not be opened for appending.
    #[error("failed to open TLS key log file {}", path.display())]
    KeyLog {
        /// The file.
        path: PathBuf,
        /// Why opening it failed.
        #[source]
        source: std::io::Error,
    },

    /// A capture file could not be created, read or written.
    #[error("capture file {}", path.display())]
    CaptureIo {
        /// The file.
        path: PathBuf,
        /// Why it failed (`AlreadyExists` when a new capture would overwrite a file).
        #[source]
        source: io::Error,
    },

    /// A capture file holds something its format does not allow, or a version this
    /// crate does not read.
    #[error("invalid capture file {}: {reason}", path.display())]
    CaptureFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, and where.
        reason: String,
    },

    /// The SQLite store failed: the database could not be opened, written or read.
    #[error("capture store {}: {reason}", path.display())]
    CaptureStore {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        reason: String,
    },

    /// A [`Router`](crate::Router) refused a tunnel (an HTTP or SOCKS5 `CONNECT`, or a
    /// transparent connection) before anything was connected.
    #[error("a hook refused the tunnel to {target}: {reason}")]
    TunnelRefused {
        /// Where the tunnel would have gone.
        target: String,
        /// What the hook said.
        reason: String,
    },

    /// The client's first bytes matched none of the configured protocols.
    #[error("no protocol recognised the client's first bytes")]
    NoProtocol,

    /// A hook ended the connection ([`Connection::abort`](crate::Connection::abort)).
    #[error("a hook ended the connection")]
    Aborted,

    /// A client reached a listener whose protocols serve only connections a firewall
    /// redirected to the proxy (transparent mode), but its connection came straight to
    /// the proxy: no redirect rule rewrote it, or it was addressed to the proxy's own
    /// port.
    #[error(
        "connection to {local} was not redirected by the firewall: transparent mode serves \
         only connections that a REDIRECT rule sends to it (see docs/transparent.md); \
         set up the iptables or nftables rules, or point clients at an HTTP listener"
    )]
    NotRedirected {
        /// The proxy's address the client connected to.
        local: SocketAddr,
    },

    /// The client did not send enough bytes to pick a protocol in time.
    #[error("timed out waiting for the client's first bytes")]
    ClientTimeout,

    /// The client sent a request the proxy cannot act on.
    #[error("malformed request: {reason}")]
    BadRequest {
        /// What is wrong with it.
        reason: String,
    },

    /// A body was larger than [`crate::Http::max_body`] allows: a request's is answered
    /// `413`, a response's `502`.
    #[error("the {} body is larger than the body size limit of {limit} bytes", if *.response { "response" } else { "request" })]
    BodyTooLarge {
        /// Whether it was the response's body (else the request's).
        response: bool,
        /// The limit, in bytes.
        limit: u64,
    },

    /// A client of a proxy that asks for credentials sent none, or wrong ones
    /// (answered `407`).
    #[error("proxy authentication required: the client sent no valid Proxy-Authorization")]
    ProxyAuthRequired,

    /// A request addressed to the proxy itself, which would go round in a loop
    /// (answered `508`).
    #[error("the request for {target} is addressed to the proxy itself: it would loop")]
    LoopDetected {
        /// Where it was addressed.
        target: String,
    },

    /// The upstream host name did not resolve.
    #[error("cannot resolve upstream host {host}")]
    Resolve {
        /// The name that was looked up.
        host: String,
        /// What the resolver reported.
        #[source]
        source: io::Error,
    },

    /// The upstream server refused the connection or could not be reached.
    #[error("failed to connect to upstream {target}")]
    Connect {
        /// `host:port` of the upstream.
        target: String,
        /// Why connecting failed.
        #[source]
        source: io::Error,
    },

    /// Connecting to the upstream server took longer than the protocol's timeout.
    #[error("timed out connecting to upstream {target}")]
    ConnectTimeout {
        /// `host:port` of the upstream.
        target: String,
    },

    /// The TLS handshake with the upstream server failed, for example because its
    /// certificate is not trusted.
    #[error("TLS handshake with upstream {target} failed")]
    UpstreamTls {
        /// `host:port` of the upstream.
        target: String,
        /// What rustls reported (a certificate error is an `InvalidData` I/O error
        /// wrapping a [`rustls::Error`]).
        #[source]
        source: io::Error,
    },

    /// The TLS handshake with the client failed, most often because the client does not
    /// trust the proxy's CA.
    #[error("TLS handshake with client for {host} failed")]
    ClientTls {
        /// The host the client asked for.
        host: String,
        /// What rustls reported.
        #[source]
        source: io::Error,
    },

    /// Reading from or writing to one side failed while relaying.
    #[error("I/O error on the {side} side")]
    Io {
        /// Which side the failing socket faces.
        side: Side,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// The upstream server did not start its response in time.
    #[error("upstream {target} did not answer within {after:?}")]
    ResponseTimeout {
        /// `host:port` of the upstream.
        target: String,
        /// How long the proxy waited.
        after: std::time::Duration,
    },

    /// The upstream server sent something that is not a valid HTTP response.
    #[error("invalid response from upstream {target}: {reason}")]
    BadResponse {
        /// `host:port` of the upstream.
        target: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The proxy has as many connections open (clients and upstream servers together)
    /// as [`MitmBuilder::max_connections`](crate::MitmBuilder::max_connections)
    /// allows, and none it could close to make room.
    #[error("the proxy is at its limit of {limit} open connections")]
    ConnectionLimit {
        /// The limit.
        limit: usize,
    },

    /// A middleware's hook killed the exchange (`Verdict::Kill`).
    #[error("a middleware killed the connection")]
    Killed,

    /// A protocol (a [`Protocol`](crate::Protocol) of the crate or of its user) failed
    /// in its own terms: a message it could not parse, a state it cannot handle.
    #[error("{protocol}: {reason}")]
    Protocol {
        /// The protocol's name, e.g. `"http"`.
        protocol: &'static str,
        /// What went wrong.
        reason: String,
        /// The underlying error, if there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The server's task ended abnormally: it panicked, or was cancelled.
    #[error("the proxy server stopped abnormally: {reason}")]
    Stopped {
        /// What happened (the panic message when there is one).
        reason: String,
    },

    /// The proxy's own listening socket failed to accept.
    #[error("failed to accept a connection on {addr}")]
    Accept {
        /// The listening address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Takes back an error that was shared with hooks (on a flow, or a WebSocket's
    /// end): the error itself when no hook kept a clone, else a copy that says the same
    /// and blames the same side.
    pub(crate) fn unshare(shared: std::sync::Arc<Error>) -> Error {
        std::sync::Arc::try_unwrap(shared).unwrap_or_else(|e| Error::Io {
            side: e.side(),
            source: io::Error::other(Report(&*e).to_string()),
        })
    }

    /// Which party the failure is attributed to.
    ///
    /// ```
    /// use mitm::{Error, Side};
    /// let e = Error::ConnectTimeout { target: "example.com:443".into() };
    /// assert_eq!(e.side(), Side::Server);
    /// ```
    pub fn side(&self) -> Side {
        match self {
            Error::NoProtocol
            | Error::Aborted
            | Error::ClientTimeout
            | Error::BadRequest { .. }
            | Error::ClientTls { .. }
            | Error::TunnelRefused { .. }
            | Error::ProxyAuthRequired
            | Error::LoopDetected { .. } => Side::Client,
            Error::Resolve { .. }
            | Error::Connect { .. }
            | Error::ConnectTimeout { .. }
            | Error::UpstreamTls { .. }
            | Error::ResponseTimeout { .. }
            | Error::BadResponse { .. }
            | Error::UpstreamProxy { .. } => Side::Server,
            Error::Io { side, .. } => *side,
            Error::BodyTooLarge {
                response: false, ..
            } => Side::Client,
            Error::BodyTooLarge { response: true, .. } => Side::Server,
            _ => Side::Internal,
        }
    }

    /// An [`Error::Io`] on the client side: reading from or writing to the client
    /// failed.
    ///
    /// ```
    /// let e = mitm::Error::client_io(std::io::ErrorKind::ConnectionReset.into());
    /// assert_eq!(e.side(), mitm::Side::Client);
    /// ```
    pub fn client_io(source: io::Error) -> Self {
        Error::Io {
            side: Side::Client,
            source,
        }
    }

    /// An [`Error::Io`] on the server side: reading from or writing to the upstream
    /// server failed.
    pub fn server_io(source: io::Error) -> Self {
        Error::Io {
            side: Side::Server,
            source,
        }
    }

    /// An [`Error::Protocol`]: `protocol` (its name) failed for `reason`, with the
    /// underlying error `source` if there is one. For protocols of your own.
    ///
    /// ```
    /// let e = mitm::Error::protocol("smtp", "unexpected greeting", None);
    /// assert_eq!(e.to_string(), "smtp: unexpected greeting");
    /// ```
    pub fn protocol(
        protocol: &'static str,
        reason: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Protocol {
            protocol,
            reason: reason.into(),
            source,
        }
    }
}

/// Displays an error with its chain of causes: `outer: cause: root cause`.
pub(crate) struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}
