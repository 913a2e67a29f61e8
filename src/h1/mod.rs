//! The HTTP/1.x proxy engine: one client connection, request after request.
//!
//! Each request head is parsed and routed on its own (one keep-alive client may address
//! several origins), given to the message hooks, sent to its origin in origin-form over
//! a pooled connection, and answered with the origin's response, also through the
//! hooks. Bodies stream through bounded buffers unless a middleware asked to see them
//! whole. Pipelined requests are answered in order because each exchange completes
//! before the next head is read. Failures are answered with an error page that says
//! what happened; the connection goes on when it safely can.
//!
//! `CONNECT` is handed to [`crate::protocol::http`], which intercepts TLS and then runs
//! this same engine inside the tunnel, with the tunnel's host as the default origin.

pub(crate) mod body;
mod magic;
pub(crate) mod parse;
pub(crate) mod pool;
mod request;
mod response;
mod upstream;
mod via_h2;
mod write;

pub(crate) use self::magic::answer as magic_answer;
pub(crate) use self::response::read_response_head;
pub(crate) use self::write::{host_value, request_head as write_request_head};

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use self::body::{Decoder, Encoder, Peer, Piece};
use self::parse::{Framing, HeadError, RequestHead};
use self::pool::Upstream;
use self::write::ResponseBody;
use crate::core::{Connection, Flow, Host, Target};
use crate::error::{Error, Result};
use crate::io::BoxIo;
use crate::message::{Body, Headers, HttpFlow, Request, Response, Timings, Verdict, Version};
use crate::protocol::http::{error_response, parse_authority, split_absolute};
use crate::protocol::Context;

/// The engine's limits and timeouts (set on [`crate::Http`]).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Time for a request head once it has begun.
    pub timeout: Duration,
    /// Time for connecting upstream (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time for a client's TLS handshake with the proxy.
    pub handshake_timeout: Duration,
    /// Time an origin has to start its response (504 after).
    pub response_timeout: Duration,
    /// Time a keep-alive client may stay silent between requests.
    pub idle_timeout: Duration,
    /// Whether client connections are kept open between requests.
    pub keep_alive: bool,
    /// Largest request head accepted (431 beyond).
    pub max_head: usize,
    /// Most header fields in a request head (431 beyond); response heads may have at
    /// least [`parse::DEFAULT_MAX_HEADERS`].
    pub max_headers: usize,
    /// Whether large plain bodies may be moved with `splice(2)` (Linux).
    pub zero_copy: bool,
    /// The host the proxy answers itself (CA download page).
    pub magic_host: Option<String>,
}

/// Where requests without an absolute URI go.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// A client talking to the proxy as a proxy: absolute URIs or `Host` headers.
    Proxy,
    /// Inside an intercepted tunnel: requests go to the tunnel's origin (or the `Host`
    /// header's, which shares its scheme).
    Tunnel(Target),
}

/// Serves HTTP/1 requests from `client` until it closes. `first` holds bytes already
/// read from it; `upstream` an origin connection already made (during TLS setup).
pub(crate) async fn serve(
    cx: &Context,
    conn: &mut Connection,
    settings: &Settings,
    client: BoxIo,
    first: Bytes,
    scope: Scope,
    upstream: Option<Upstream>,
) -> Result<()> {
    let hooks = cx.chain.wants_data();
    let upstream = upstream.map(|up| Current {
        peer: Peer::new(up.io, Flow::ServerToClient, Bytes::new()),
        addr: up.addr,
        target: up.target,
        reused: false,
    });
    let mut session = Session {
        cx,
        conn,
        settings,
        client: Peer::new(client, Flow::ClientToServer, first),
        upstream,
        hooks,
        scope,
        flows: 0,
        scratch: Vec::new(),
        body_limit: cx.chain.body_limit(),
        reusable_at_end: false,
    };
    let result = session.run().await;
    // A clean upstream goes back to the pool. `server_disconnected` is left to the
    // server, which fires it after `client_disconnected`, in the original's order.
    session.park_upstream();
    result
}

/// The upstream connection in use.
struct Current {
    peer: Peer,
    addr: std::net::SocketAddr,
    target: Target,
    /// Taken from the pool (it may have been closed by the server meanwhile).
    reused: bool,
}

struct Session<'a> {
    cx: &'a Context,
    conn: &'a mut Connection,
    settings: &'a Settings,
    client: Peer,
    upstream: Option<Current>,
    /// Whether the raw data hooks run.
    hooks: bool,
    scope: Scope,
    flows: u64,
    /// Reused for heads and chunk framing.
    scratch: Vec<u8>,
    body_limit: usize,
    /// Whether the upstream in use finished its last exchange cleanly (cleared when an
    /// exchange starts on it).
    reusable_at_end: bool,
}

/// What to do after an exchange.
enum Next {
    Continue,
    Close,
}

/// A request body on its way: what was read ahead for the hooks, and the rest.
struct Incoming {
    decoder: Decoder,
    framing: Framing,
    /// Whether `100 Continue` must be sent before reading the body.
    expects_continue: bool,
}

impl Session<'_> {
    async fn run(&mut self) -> Result<()> {
        let mut first = true;
        loop {
            let head = match self.read_request_head(first).await? {
                Some(head) => head,
                None => return Ok(()),
            };
            first = false;
            // Credentials are asked of proxy requests (and CONNECT), not of requests
            // inside a tunnel the CONNECT already opened.
            if matches!(self.scope, Scope::Proxy) && !self.cx.authorized(&head.headers) {
                let keep = parse::keeps_alive(head.version, &head.headers);
                let mut r = text_response(
                    407,
                    "mitm needs proxy credentials: configure your client's proxy with the \
                     user name and password the proxy was started with.\n"
                        .into(),
                );
                r.headers
                    .insert("Proxy-Authenticate", "Basic realm=\"mitm\"");
                // A body the request may carry is not read: the connection ends then.
                let keep = keep && parse::request_framing(&head.headers) == Ok(Framing::Empty);
                self.write_local(r, &head.method, head.version, keep)
                    .await?;
                if keep {
                    continue;
                }
                return Ok(());
            }
            if head.method.eq_ignore_ascii_case("CONNECT") {
                return self.connect(head).await;
            }
            match self.exchange(head).await? {
                Next::Continue => {}
                Next::Close => return Ok(()),
            }
        }
    }

    /// Reads the next request head. `None` when the client closed (or idled out)
    /// between requests, or was answered with an error page.
    async fn read_request_head(&mut self, first: bool) -> Result<Option<RequestHead>> {
        let mut waited_idle = !first;
        loop {
            if let Some(end) = parse::head_end(&self.client.buf) {
                if end > self.settings.max_head {
                    return self.refuse_head(HeadError::TooLarge).await;
                }
                let raw = self.client.buf.split_to(end).freeze();
                return match parse::parse_request(&raw, self.settings.max_headers) {
                    Ok(head) => Ok(Some(head)),
                    Err(e) => self.refuse_head(e).await,
                };
            }
            if self.client.buf.len() > self.settings.max_head {
                return self.refuse_head(HeadError::TooLarge).await;
            }
            // A head ended by bare LFs would never meet its CRLF end: say so now rather
            // than wait out the timeout (RFC 9112 lets a recipient reject bare LF).
            if parse::bare_lf_head(&self.client.buf) {
                let reason = "line ends must be CRLF, not a bare LF".to_string();
                return self.refuse_head(HeadError::Malformed(reason)).await;
            }
            // Between requests a keep-alive client may idle; once a head has begun it
            // must arrive in time.
            let limit = if waited_idle && self.client.buf.is_empty() {
                self.settings.idle_timeout
            } else {
                self.settings.timeout
            };
            waited_idle = false;
            let read = self.client.fill(&self.cx.chain, self.conn, self.hooks);
            match tokio::time::timeout(limit, read).await {
                Ok(Ok(0)) | Err(_) => return Ok(None),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Error::client_io(e)),
            }
        }
    }

    /// Writes `bytes` to the client and flushes them: TLS keeps what the socket did not
    /// take, and these bytes (a whole response, an interim one) must leave now.
    async fn send_client(&mut self, bytes: &[u8]) -> Result<()> {
        self.client
            .io
            .write_all(bytes)
            .await
            .map_err(Error::client_io)?;
        self.client.io.flush().await.map_err(Error::client_io)
    }

    /// Answers a bad head with 400 or 431 and ends the connection.
    async fn refuse_head(&mut self, e: HeadError) -> Result<Option<RequestHead>> {
        let response = match e {
            HeadError::TooLarge => text_response(
                431,
                format!(
                    "mitm refused the request: its head is larger than {} bytes (or has more \
                     than {} header fields). Send smaller headers (cookies are the usual \
                     cause), or raise the proxy's limit.\n",
                    self.settings.max_head, self.settings.max_headers
                ),
            ),
            HeadError::Malformed(reason) => text_response(
                400,
                format!("mitm could not understand the request: {reason}.\n"),
            ),
        };
        self.write_local(response, "", Version::Http11, false)
            .await?;
        Ok(None)
    }
}

/// The engine lost its upstream where it must have one: a bug, reported not panicked.
fn no_upstream() -> Error {
    Error::Io {
        side: crate::Side::Internal,
        source: std::io::Error::other("no upstream connection"),
    }
}

/// Whether a request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
fn wants_upgrade(headers: &Headers) -> bool {
    headers.has_token("connection", "upgrade") && headers.contains("upgrade")
}

pub(crate) fn join(pieces: &[Bytes]) -> Bytes {
    match pieces {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut all = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
            for p in many {
                all.extend_from_slice(p);
            }
            all.freeze()
        }
    }
}

/// A whole response made by the proxy, as bytes for the client: head, and body unless
/// the response to a `method` request has none (`HEAD`, 204, 304, 1xx).
pub(crate) fn response_bytes(
    response: &Response,
    method: &str,
    connection: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::new();
    write::response_head(&mut out, response.into(), ResponseBody::Local, connection);
    if let (Body::Full(b), true) = (&response.body, parse::has_body(method, response.status)) {
        out.extend_from_slice(b);
    }
    out
}

/// A plain-text response made by the proxy.
pub(crate) fn text_response(status: u16, body: String) -> Response {
    Response::new(status).with_body("text/plain; charset=utf-8", body)
}

/// The `Connection` field the proxy adds to a response, if any.
fn connection_header(keep: bool, client_10: bool) -> Option<&'static str> {
    match (keep, client_10) {
        (false, _) => Some("close"),
        (true, true) => Some("keep-alive"),
        (true, false) => None,
    }
}
