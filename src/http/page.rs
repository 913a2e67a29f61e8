//! The responses the proxy makes itself: error pages that say what went wrong and what
//! to try, and its refusals (400, 407, 431, 508). Plain text, so that curl shows them
//! as they are.

use crate::error::{Error, Report};
use crate::http::message::Response;

/// A plain-text response made by the proxy.
pub(crate) fn text(status: u16, body: String) -> Response {
    Response::new(status).with_body("text/plain; charset=utf-8", body)
}

/// The response that tells a client what went wrong on the way to the origin, and what
/// to try.
pub(crate) fn error(e: &Error) -> Response {
    let (status, body) = match e {
        Error::Resolve { host, source } => (
            502,
            format!(
                "mitm could not resolve the upstream host {host}: {source}.\n\
                 Check the host name, and that the proxy's machine can resolve it.\n"
            ),
        ),
        Error::Connect { target, source } => (
            502,
            format!(
                "mitm could not connect to the upstream server {target}: {source}.\n\
                 Check that the server is running and reachable from the proxy.\n"
            ),
        ),
        Error::ConnectTimeout { target } => (
            504,
            format!(
                "mitm timed out connecting to the upstream server {target}.\n\
                 The server did not answer in time; try again, or raise the timeout.\n"
            ),
        ),
        Error::ResponseTimeout { target, after } => (
            504,
            format!(
                "mitm timed out waiting for the upstream server {target}: no response \
                 within {after:?}.\nThe server may be overloaded; try again, or raise the \
                 response timeout.\n"
            ),
        ),
        Error::UpstreamTls { target, source } => (
            502,
            format!(
                "mitm could not set up TLS with the upstream server {target}: {}.\n\
                 If the server's certificate comes from a private CA, give that CA to the \
                 proxy with --upstream-ca FILE; to skip verification (unsafe), use --insecure.\n",
                tls_cause(source)
            ),
        ),
        Error::ConnectionLimit { limit } => (
            503,
            format!(
                "mitm is at its limit of {limit} open connections and could not open one \
                 more to the upstream server.\nTry again shortly, or raise the proxy's \
                 --max-connections.\n"
            ),
        ),
        Error::ProxyAuthRequired => return proxy_auth_required(),
        Error::LoopDetected { .. } => return loop_detected(),
        Error::TunnelRefused { target, reason } => (
            403,
            format!("mitm does not open tunnels to {target}: {reason}.\n"),
        ),
        Error::BadResponse { target, reason } => (
            502,
            format!("mitm got an invalid response from the upstream server {target}: {reason}.\n"),
        ),
        Error::UpstreamProxy { proxy, reason } => (
            502,
            format!(
                "mitm could not reach the origin through the upstream proxy {proxy}: \
                 {reason}.\nCheck the upstream proxy's address, its credentials, and \
                 that it lets this destination through.\n"
            ),
        ),
        Error::BodyTooLarge { response, limit } => {
            let (status, what) = if *response {
                (502, "the upstream server's response")
            } else {
                (413, "the request")
            };
            (
                status,
                format!(
                    "mitm refused {what}: its body is larger than the body size limit of                      {limit} bytes.\nRaise the limit with --body-size-limit SIZE (say 10m),                      or lift it by leaving the option out.\n"
                ),
            )
        }
        Error::BadRequest { reason } => (
            400,
            format!("mitm could not understand the request: {reason}.\n"),
        ),
        other => (
            502,
            format!(
                "mitm could not get a response from the upstream server: {}.\n",
                Report(other)
            ),
        ),
    };
    text(status, body)
}

/// `407`: the proxy wants credentials.
pub(crate) fn proxy_auth_required() -> Response {
    let mut r = text(
        407,
        "mitm needs proxy credentials: configure your client's proxy with the user name \
         and password the proxy was started with.\n"
            .into(),
    );
    r.headers
        .insert("Proxy-Authenticate", "Basic realm=\"mitm\"");
    r
}

/// `508`: the request is addressed to the proxy itself and would come back around.
pub(crate) fn loop_detected() -> Response {
    text(
        508,
        "mitm refused a request addressed to the proxy itself: it would loop. Request \
         the real origin, or configure the client to use the proxy instead of calling it.\n"
            .into(),
    )
}

/// `400`: the request cannot be routed.
pub(crate) fn unroutable(reason: &str) -> Response {
    text(
        400,
        format!("mitm could not route the request: {reason}.\n"),
    )
}

/// `431`: the head is over the limits.
pub(crate) fn head_too_large(max_head: usize, max_headers: usize) -> Response {
    text(
        431,
        format!(
            "mitm refused the request: its head is larger than {max_head} bytes (or has more \
             than {max_headers} header fields). Send smaller headers (cookies are the usual \
             cause), or raise the proxy's limit.\n"
        ),
    )
}

/// `400`: the head is not valid HTTP.
pub(crate) fn malformed(reason: &str) -> Response {
    text(
        400,
        format!("mitm could not understand the request: {reason}.\n"),
    )
}

/// The rustls error inside an I/O error when there is one (e.g. "invalid peer
/// certificate: UnknownIssuer"), otherwise the I/O error itself.
fn tls_cause(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}
