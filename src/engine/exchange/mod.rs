//! One HTTP exchange, for every version: request hooks, an origin from the upstream
//! layer, the request sent, the response read, response hooks, the response written,
//! `flow_finished`. The same code runs for an HTTP/1 client and for each stream of an
//! HTTP/2 client, whatever the origin speaks; the wire formats are behind [`Client`]
//! (`serve_h1`, `serve_h2`) and [`Origin`] (`origin`).
//!
//! What lives here, once:
//! - bodies held whole for the hooks up to the middlewares' `body_limit`, streamed past
//!   otherwise (`splice(2)` when nothing reads them);
//! - the body size limit (`Settings::max_body`): a request body over it answered `413`
//!   before the origin sees it, a response body over it a `502`;
//! - the framing fields of a body held whole (`Content-Length`, set after the hooks);
//! - which origin link to use, and sending a request once more on a fresh connection
//!   when a pooled one turns out stale: only when the origin cannot have acted on it
//!   (nothing of it sent, or an HTTP/2 stream it refused), or the method is idempotent
//!   and the body can be sent again (RFC 9110 §9.2.2);
//! - error pages, with [`HttpFlow::error`] set for the response hooks;
//! - timings, body sizes, and `flow_finished`, exactly once per flow;
//! - `CONNECT`: the request hooks, the upstream connection made before answering, the
//!   `200` or the error page (`connect`); the tunnel itself is `crate::engine::tunnel`'s.
//!
//! Files: this one has the way there (request hooks, the origin, sending, retries);
//! `pump` streams a request body to either kind of origin; `respond` the way back
//! (response hooks, writing to the client, a protocol switch, the proxy's own answers);
//! `connect` the `CONNECT` exchange; `prefix` the first bytes kept of streamed bodies;
//! `client` and `origin` the two ends; `serve_h1` and `serve_h2` the client sessions;
//! `upgrade` what follows a `101`; `direct` a request with no client (a `Sender`'s).

mod client;
mod connect;
pub(crate) mod direct;
mod origin;
mod prefix;
mod pump;
mod respond;
pub(crate) mod serve_h1;
pub(crate) mod serve_h2;
pub(crate) mod upgrade;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

pub(crate) use self::client::{BodyOut, Client, Head};
use self::connect::tunnel_answer;
pub(crate) use self::connect::{connect, Ahead, Connect};
use self::origin::{H1Origin, H2Origin, Origin};
use self::prefix::Prefix;
use self::pump::{pump, H1Sink, H2Sink, Pumped};
use crate::engine::context::Context;
use crate::error::{Error, Report, Result, Side};
use crate::http::magic;
use crate::http::message::{join, Body, Headers, HttpFlow, Request, Response, Verdict};
use crate::http::settings::Settings;
use crate::upstream::{Link, Want};
use crate::wire::h1::write::RequestOptions;

/// How an exchange ended, for the connection that carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The response went out whole; the connection may carry the next exchange.
    Done,
    /// The connection must end: the protocol was switched, or what follows on it is
    /// unknown.
    Close,
}

/// Runs the exchange of `flow` (its request head read, its body still with `client`).
///
/// `Err` when it broke off: the client or the origin went away midway, or a hook
/// killed it. `flow_finished` has fired either way.
pub(crate) async fn run<C: Client>(
    cx: &Context,
    settings: &Settings,
    client: &mut C,
    flow: HttpFlow,
) -> Result<Outcome> {
    let mut x = Exchange::new(cx, settings, client, flow);
    let result = x.go().await;
    x.finished(result).await
}

/// Answers a request the proxy refuses before its exchange (no valid proxy
/// credentials, a target it cannot route, one that would loop, a `CONNECT` where none
/// is taken) with `response`: no request hooks run and no origin is reached, but the
/// response hooks and `flow_finished` see it as a flow, with `error` saying why, so a
/// capture keeps it. `close` ends the client connection after it.
pub(crate) async fn refuse<C: Client>(
    cx: &Context,
    settings: &Settings,
    client: &mut C,
    flow: HttpFlow,
    response: Response,
    error: Error,
    close: bool,
) -> Result<Outcome> {
    let mut x = Exchange::new(cx, settings, client, flow);
    let result = x.answer(response, Some(error), close).await;
    x.finished(result).await
}

/// A request body on its way to the origin.
enum Outgoing {
    /// Held whole (or replaced, or empty): can be sent again.
    Held(Bytes),
    /// Streams from the client: the pieces read ahead for the hooks, then the rest.
    Stream(Vec<Bytes>),
}

/// Why sending a request to an origin failed.
#[derive(Debug)]
struct Failure {
    error: Error,
    /// The origin cannot have acted on the request (nothing of it sent, a refused
    /// stream, a stream above a `GOAWAY`'s last): sending it again elsewhere is safe.
    unprocessed: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            unprocessed: false,
        }
    }
}

struct Exchange<'a, C: Client> {
    cx: &'a Context,
    settings: &'a Settings,
    client: &'a mut C,
    flow: HttpFlow,
    /// The largest body a middleware wants to see whole.
    limit: usize,
    /// Whether a piece of the body was taken from the client for the origin (past what
    /// was read ahead): the request can then not be sent again.
    pulled: bool,
    /// Whether `flow_finished` fired already (before a protocol switch's relay).
    reported: bool,
    /// The first bytes of a request body streaming past, for `flow_finished`.
    request_prefix: Prefix,
    /// The same of a response body.
    response_prefix: Prefix,
}

impl<'a, C: Client> Exchange<'a, C> {
    fn new(cx: &'a Context, settings: &'a Settings, client: &'a mut C, flow: HttpFlow) -> Self {
        Exchange {
            cx,
            settings,
            client,
            flow,
            limit: cx.chain.body_limit(),
            pulled: false,
            reported: false,
            request_prefix: Prefix::new(cx.chain.streamed_body_prefix()),
            response_prefix: Prefix::new(cx.chain.streamed_body_prefix()),
        }
    }

    /// Fires `flow_finished` with the flow as it ended, and hands the result back.
    async fn finished(self, result: Result<Outcome>) -> Result<Outcome> {
        let Exchange {
            cx,
            client,
            mut flow,
            reported,
            mut request_prefix,
            mut response_prefix,
            ..
        } = self;
        if reported {
            return result;
        }
        flow.request_body_prefix = request_prefix.take();
        flow.response_body_prefix = response_prefix.take();
        if flow.timings.response_end.is_none() {
            flow.timings.response_end = Some(Instant::now());
        }
        let result = match result {
            Ok(outcome) => {
                cx.chain.flow_finished(client.conn(), &flow).await;
                return Ok(outcome);
            }
            Err(e) => e,
        };
        let shared = Arc::new(result);
        flow.error = Some(shared.clone());
        cx.chain.flow_finished(client.conn(), &flow).await;
        drop(flow);
        Err(Error::unshare(shared))
    }

    async fn go(&mut self) -> Result<Outcome> {
        let ahead = match self.read_request_ahead().await {
            Ok(ahead) => ahead,
            Err(e @ Error::BadRequest { .. }) => return self.fail(e).await,
            Err(e @ Error::BodyTooLarge { .. }) => return self.too_large(e).await,
            Err(e) => return Err(e),
        };
        let original = self.flow.request.body.clone();

        // The magic host is the proxy's own page; no origin behind it.
        let local = if self.settings.is_magic(&self.flow.request.target.host) {
            Some(magic::answer(&self.flow.request, &self.cx.ca))
        } else {
            match self
                .cx
                .chain
                .request(self.client.conn(), &mut self.flow)
                .await
            {
                Verdict::Continue => tunnel_answer(self.client.conn()),
                Verdict::Respond(r) => Some(r),
                Verdict::Kill => return Err(self.kill()),
            }
        };
        let outgoing = match &self.flow.request.body {
            Body::Streaming if self.flow.request.body == original => Outgoing::Stream(ahead),
            body => {
                let held = body.bytes().cloned().unwrap_or_default();
                if self.flow.request.body != original || matches!(original, Body::Full(_)) {
                    // Sent whole: its original framing (chunked, say) no longer
                    // describes the bytes.
                    set_request_length(&mut self.flow.request, held.len());
                }
                Outgoing::Held(held)
            }
        };
        if let Some(response) = local {
            return self.answer(response, None, false).await;
        }
        self.forward(outgoing).await
    }

    /// Reads the request body ahead for the hooks, up to the body limit: `Body::Full`
    /// when it all fits, else the pieces read (it streams on from there).
    /// [`Error::BodyTooLarge`] when it is larger than `max_body`.
    async fn read_request_ahead(&mut self) -> Result<Vec<Bytes>> {
        if !matches!(self.flow.request.body, Body::Streaming) {
            return Ok(Vec::new());
        }
        let length = declared_length(&self.flow.request.headers);
        let max_body = self.settings.max_body;
        let Some(hold) = hold(self.limit, max_body, length, false)? else {
            return Ok(Vec::new());
        };
        let mut pieces = Vec::new();
        let mut total = 0u64;
        while total <= hold {
            match self.client.body().await? {
                Some(piece) => {
                    total += piece.len() as u64;
                    pieces.push(piece);
                    check_size(max_body, total, false)?;
                }
                None => {
                    self.flow.request.body = Body::Full(join(&pieces));
                    return Ok(Vec::new());
                }
            }
        }
        Ok(pieces)
    }

    /// Sends the request to its origin and the response to the client.
    async fn forward(&mut self, mut outgoing: Outgoing) -> Result<Outcome> {
        let target = self.flow.request.target.clone();
        let route = self.cx.route_for(self.client.conn(), &target).await;
        let upgrade = self.client.can_upgrade() && wants_upgrade(&self.flow.request.headers);
        let mut want = Want {
            h2: !upgrade,
            fresh: false,
        };
        loop {
            let link = match self.client.origin(self.cx, &route, &target, want).await {
                Ok(link) => link,
                Err(e) => return self.fail(e).await,
            };
            let mut origin = Origin::new(link, self.client.data_hooks());
            let sent = match &mut origin {
                Origin::H1(o) => self.send_h1(o, &mut outgoing, upgrade).await,
                // Boxed: its future (body and answer at once) is large, and every
                // exchange would carry its size otherwise.
                Origin::H2(o) => Box::pin(self.send_h2(o, &mut outgoing)).await,
            };
            let (head, length) = match sent {
                Ok(sent) => sent,
                Err(f) => {
                    let again = !want.fresh && self.can_retry(&origin, &f, &outgoing);
                    self.client.release(self.cx, origin.into_link(), false);
                    if again {
                        tracing::debug!(error = %Report(&f.error), "upstream connection was stale; sending the request again");
                        want.fresh = true;
                        continue;
                    }
                    return self.fail(f.error).await;
                }
            };
            if head.status == 101 && upgrade {
                // Boxed, as the relay's future is large and rare.
                return Box::pin(self.switch(origin, head)).await;
            }
            let result = self.respond(&mut origin, head, length).await;
            let reusable = result.is_ok()
                && match &origin {
                    Origin::H1(o) => o.reusable(),
                    Origin::H2(o) => o.body_done(),
                };
            self.client.release(self.cx, origin.into_link(), reusable);
            return result;
        }
    }

    /// Whether a request that failed on `origin` goes once more, on a fresh connection.
    fn can_retry(&self, origin: &Origin, f: &Failure, outgoing: &Outgoing) -> bool {
        if f.error.side() == Side::Client {
            return false;
        }
        let replayable = match outgoing {
            Outgoing::Held(_) => true,
            Outgoing::Stream(_) => !self.pulled,
        };
        if !replayable {
            return false;
        }
        if f.unprocessed {
            return true;
        }
        origin.reused() && is_stale(&f.error) && idempotent(&self.flow.request.method)
    }

    /// Sends the request over HTTP/1.1 and reads the final response head (passing
    /// interim ones on).
    async fn send_h1(
        &mut self,
        o: &mut H1Origin,
        outgoing: &mut Outgoing,
        upgrade: bool,
    ) -> std::result::Result<(Response, Option<u64>), Failure> {
        let streaming = matches!(outgoing, Outgoing::Stream(_));
        let opts = RequestOptions {
            upgrade,
            plain_websocket: upgrade && self.cx.chain.websocket_message_limit() > 0,
            // A body of unknown length (from HTTP/2) goes chunked.
            chunked: streaming
                && !self.flow.request.headers.contains("content-length")
                && !matches!(self.flow.request.body, Body::Empty),
        };
        o.head(&self.flow.request, opts);
        let stale = |e: Error, o: &H1Origin| failure(e, o.written());
        match outgoing {
            Outgoing::Held(body) => {
                o.send(body).await.map_err(|e| stale(e, o))?;
                self.flow.request_body_size = body.len() as u64;
                if !self.client.body_done() {
                    self.drain_request().await?;
                }
            }
            Outgoing::Stream(ahead) => {
                let from = Pumped {
                    client: &mut *self.client,
                    prefix: &mut self.request_prefix,
                    pulled: &mut self.pulled,
                    may_splice: self.settings.zero_copy,
                };
                let sent = pump(from, ahead, &mut H1Sink(o)).await;
                self.flow.request_body_size = match sent {
                    Ok(n) => n,
                    // A client gone is nothing the origin saw: never a reason to retry.
                    Err(e) if e.side() == Side::Client => return Err(e.into()),
                    Err(e) => return Err(stale(e, o)),
                };
            }
        }
        self.flow.timings.request_end = Some(Instant::now());
        loop {
            let head = o
                .read_head(self.settings, &self.cx.chain, self.client.conn())
                .await?;
            if self.flow.timings.response_first_byte.is_none() {
                self.flow.timings.response_first_byte = Some(Instant::now());
            }
            match head.status {
                // The proxy answered `Expect` itself; the origin's 100 is not news.
                100 => continue,
                101 if upgrade => return Ok((head.into(), Some(0))),
                101..=199 => {
                    let interim: Response = head.into();
                    self.client.interim(&interim).await?;
                }
                _ => {
                    let length = o.start_body(&self.flow.request.method, &head)?;
                    let mut response: Response = head.into();
                    response.body = match length {
                        Some(0) => Body::Empty,
                        _ => Body::Streaming,
                    };
                    return Ok((response, length));
                }
            }
        }
    }

    /// Sends the request over an HTTP/2 stream, the body alongside waiting for the
    /// response head (the origin may answer before it has read it all).
    async fn send_h2(
        &mut self,
        o: &mut H2Origin,
        outgoing: &mut Outgoing,
    ) -> std::result::Result<(Response, Option<u64>), Failure> {
        let end = matches!(outgoing, Outgoing::Held(b) if b.is_empty());
        let (answer, mut tx) = o.open(&self.flow.request, end).await?;
        let server = Side::Server;
        let settings = self.settings;
        let target = o.target().clone();
        let from = Pumped {
            client: &mut *self.client,
            prefix: &mut self.request_prefix,
            pulled: &mut self.pulled,
            may_splice: false,
        };
        let send = async {
            match outgoing {
                Outgoing::Held(body) if !body.is_empty() => {
                    crate::wire::h2::send_all(&mut tx, body.clone(), true, server).await?;
                    Ok::<u64, Error>(body.len() as u64)
                }
                Outgoing::Held(_) => Ok(0),
                Outgoing::Stream(ahead) => pump(from, ahead, &mut H2Sink(&mut tx)).await,
            }
        };
        let head = H2Origin::response(&target, answer, settings.response_timeout);
        let (sent, head) = tokio::join!(send, head);
        let (mut response, recv) = head?;
        match sent {
            Ok(n) => self.flow.request_body_size = n,
            // The client went away: nothing more to do for it.
            Err(e) if e.side() == Side::Client => return Err(e.into()),
            // The origin stopped reading the body but answered: the answer stands.
            Err(e) => {
                tracing::debug!(error = %Report(&e), "origin answered before taking the whole request body")
            }
        }
        if let (Outgoing::Held(_), false) = (&outgoing, self.client.body_done()) {
            self.drain_request().await?;
        }
        let now = Instant::now();
        self.flow.timings.request_end = Some(now);
        self.flow.timings.response_first_byte = Some(now);
        let length = if recv.is_end_stream() {
            response.body = Body::Empty;
            Some(0)
        } else {
            response.body = Body::Streaming;
            declared_length(&response.headers)
        };
        o.set_body(recv);
        Ok((response, length))
    }

    /// Reads and drops what is left of a request body that was replaced, so that the
    /// client connection can go on.
    async fn drain_request(&mut self) -> Result<()> {
        while self.client.body().await?.is_some() {}
        Ok(())
    }

    /// Drops the client at a hook's word.
    fn kill(&mut self) -> Error {
        self.client.kill();
        Error::Killed
    }
}

/// A failure to send over HTTP/1.1, after `written` bytes of the request went out: the
/// origin saw nothing of it when none did.
fn failure(error: Error, written: u64) -> Failure {
    Failure {
        error,
        unprocessed: written == 0,
    }
}

/// Gives a link back for others to use: an HTTP/1.1 connection to the pool (an HTTP/2
/// one is shared there already).
pub(crate) fn give_back(cx: &Context, link: Link) {
    if let Link::H1 { up, .. } = link {
        cx.upstreams.give_back(up);
    }
}

/// Whether a request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
fn wants_upgrade(headers: &Headers) -> bool {
    headers.has_token("connection", "upgrade") && headers.contains("upgrade")
}

/// Methods a proxy may send again on its own (RFC 9110 §9.2.2).
fn idempotent(method: &str) -> bool {
    ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

/// Whether an upstream failure means the connection was closed before it answered.
fn is_stale(e: &Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    match e {
        Error::Io {
            side: Side::Server,
            source,
        } => matches!(
            source.kind(),
            UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted
        ),
        _ => false,
    }
}

/// How much of a body of `length` (when known) to read ahead: up to the hooks'
/// `limit`, or, under a body size limit and of unknown length, up to that limit, so that
/// it is judged before any of it goes on. `None`: nothing. [`Error::BodyTooLarge`] when
/// its length is over the body size limit already. Without a body size limit this is
/// the hooks' limit alone (one `Option` checked).
fn hold(
    limit: usize,
    max_body: Option<u64>,
    length: Option<u64>,
    response: bool,
) -> Result<Option<u64>> {
    let limit = limit as u64;
    if let Some(max) = max_body {
        match length {
            Some(n) if n > max => {
                return Err(Error::BodyTooLarge {
                    response,
                    limit: max,
                })
            }
            None => return Ok(Some(max.max(limit))),
            Some(_) => {}
        }
    }
    Ok((limit > 0 && length.is_none_or(|n| n <= limit)).then_some(limit))
}

/// [`Error::BodyTooLarge`] once `total` bytes of a body are over the body size limit.
fn check_size(max_body: Option<u64>, total: u64, response: bool) -> Result<()> {
    match max_body {
        Some(max) if total > max => Err(Error::BodyTooLarge {
            response,
            limit: max,
        }),
        _ => Ok(()),
    }
}

/// The body length a head declares (`Content-Length`), when it declares one validly.
fn declared_length(headers: &Headers) -> Option<u64> {
    if headers.contains("transfer-encoding") {
        return None;
    }
    headers.get("content-length")?.trim().parse().ok()
}

/// Frames a request body held whole: its own `Content-Length` (none for an empty body
/// of a method that does not carry one), no `Transfer-Encoding`.
fn set_request_length(request: &mut Request, len: usize) {
    let headers = &mut request.headers;
    headers.remove("transfer-encoding");
    let carries = ["POST", "PUT", "PATCH"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(&request.method));
    if len > 0 || carries {
        headers.insert("Content-Length", Bytes::from(len.to_string()));
    } else {
        headers.remove("content-length");
    }
}

/// Frames a response body held whole: its own `Content-Length`, no
/// `Transfer-Encoding` (statuses without a body keep their fields).
fn set_response_length(response: &mut Response, len: usize) {
    if matches!(response.status, 100..=199 | 204 | 304) {
        return;
    }
    response.headers.remove("transfer-encoding");
    response
        .headers
        .insert("Content-Length", Bytes::from(len.to_string()));
}
