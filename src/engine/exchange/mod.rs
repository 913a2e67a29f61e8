//! One HTTP exchange, for every version: request hooks, an origin from the upstream
//! layer, the request sent, the response read, response hooks, the response written,
//! `flow_finished`. The same code runs for an HTTP/1 client and for each stream of an
//! HTTP/2 client, whatever the origin speaks; the wire formats are behind [`Client`]
//! (`serve_h1`, `serve_h2`) and [`Origin`] (`origin`).
//!
//! What lives here, once:
//! - bodies held whole for the hooks up to the middlewares' `body_limit`, streamed past
//!   otherwise (`splice(2)` when nothing reads them);
//! - the framing fields of a body held whole (`Content-Length`, set after the hooks);
//! - which origin link to use, and sending a request once more on a fresh connection
//!   when a pooled one turns out stale: only when the origin cannot have acted on it
//!   (nothing of it sent, or an HTTP/2 stream it refused), or the method is idempotent
//!   and the body can be sent again (RFC 9110 §9.2.2);
//! - error pages, with [`HttpFlow::error`] set for the response hooks;
//! - timings, body sizes, and `flow_finished`, exactly once per flow;
//! - `CONNECT`: the request hooks, the upstream connection made before answering, the
//!   `200` or the error page (`connect`); the tunnel itself is `crate::engine::tunnel`'s.

mod client;
pub(crate) mod direct;
mod origin;
pub(crate) mod serve_h1;
pub(crate) mod serve_h2;
pub(crate) mod upgrade;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

pub(crate) use self::client::{BodyOut, Client, Head};
use self::origin::{H1Origin, H2Origin, Origin};
use crate::core::{Connection, Target};
use crate::engine::context::Context;
use crate::error::{Error, Report, Result, Side};
use crate::http::message::{join, Body, Headers, HttpFlow, Request, Response, Verdict};
use crate::http::settings::Settings;
use crate::http::websocket::WebSocketEnd;
use crate::http::{magic, page};
use crate::middleware::TunnelVerdict;
use crate::upstream::{Link, Route, Tcp, Want};
use crate::wire::h1::parse::has_body;
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

/// What a `CONNECT` came to.
pub(crate) enum Connect {
    /// Answered `200`: the tunnel may start, with what was reached of the target and
    /// the route to it.
    Open(Ahead, Route),
    /// Answered otherwise (refused, or the target unreachable); the client is done.
    Refused,
}

/// What a `CONNECT` reached of its target before it was answered.
#[derive(Debug)]
pub(crate) enum Ahead {
    /// Nothing: the magic host, which the proxy answers itself.
    Nothing,
    /// Nothing, and nothing will be: a request hook answered the `CONNECT`, and the
    /// requests inside the tunnel get its answer ([`TunnelAnswer`]).
    Answered,
    /// A new TCP connection.
    Tcp(Tcp),
    /// A live pooled connection to the target (proof enough that it is up), taken for
    /// this tunnel.
    Pooled(Link),
}

/// Runs a `CONNECT` to `target`: the request hooks, then a connection to the target
/// (unless the pool proves it up), answered `200 Connection established`, or the error
/// page (`502` and the cause) when it cannot be reached.
pub(crate) async fn connect<C: Client>(
    cx: &Context,
    settings: &Settings,
    client: &mut C,
    flow: HttpFlow,
) -> Result<Connect> {
    let target = flow.request.target.clone();
    let mut x = Exchange::new(cx, settings, client, flow);
    let mut opened = None;
    let result = x.connect(&target, &mut opened).await;
    let outcome = x.finished(result).await;
    match (outcome, opened) {
        (Ok(Outcome::Done), Some((ahead, route))) => Ok(Connect::Open(ahead, route)),
        (outcome, opened) => {
            if let Some((Ahead::Pooled(link), _)) = opened {
                give_back(cx, link);
            }
            outcome.map(|_| Connect::Refused)
        }
    }
}

/// The response a request hook answered a `CONNECT` with, kept in the connection's
/// state: the requests the client sends through that tunnel are answered with it.
#[derive(Debug)]
pub(crate) struct TunnelAnswer(pub Response);

/// The answer for every request of `conn`'s tunnel, when a hook gave one.
fn tunnel_answer(conn: &Connection) -> Option<Response> {
    if !conn.tunnel_answered {
        return None;
    }
    conn.state().get::<TunnelAnswer>().map(|a| a.0.clone())
}

/// The first bytes of a body streaming past, kept for `flow_finished` up to the
/// middlewares' `streamed_body_prefix` (a clone of the first piece when it is enough,
/// else a copy).
struct Prefix {
    limit: usize,
    kept: Kept,
    len: usize,
}

enum Kept {
    Nothing,
    One(Bytes),
    Joined(BytesMut),
}

impl Prefix {
    fn new(limit: usize) -> Self {
        Prefix {
            limit,
            kept: Kept::Nothing,
            len: 0,
        }
    }

    /// Whether a middleware wants more bytes than are kept.
    fn wants_more(&self) -> bool {
        self.len < self.limit
    }

    /// Keeps what fits of the next `piece`.
    fn keep(&mut self, piece: &Bytes) {
        let room = self.limit - self.len;
        if room == 0 || piece.is_empty() {
            return;
        }
        let piece = piece.slice(..room.min(piece.len()));
        self.len += piece.len();
        self.kept = match std::mem::replace(&mut self.kept, Kept::Nothing) {
            Kept::Nothing => Kept::One(piece),
            Kept::One(first) => {
                let mut joined = BytesMut::with_capacity(first.len() + piece.len());
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&piece);
                Kept::Joined(joined)
            }
            Kept::Joined(mut joined) => {
                joined.extend_from_slice(&piece);
                Kept::Joined(joined)
            }
        };
    }

    /// Forgets what was kept (the body is sent again from its start).
    fn clear(&mut self) {
        self.kept = Kept::Nothing;
        self.len = 0;
    }

    /// What was kept.
    fn take(&mut self) -> Bytes {
        self.len = 0;
        match std::mem::replace(&mut self.kept, Kept::Nothing) {
            Kept::Nothing => Bytes::new(),
            Kept::One(b) => b,
            Kept::Joined(b) => b.freeze(),
        }
    }
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
    async fn read_request_ahead(&mut self) -> Result<Vec<Bytes>> {
        if !matches!(self.flow.request.body, Body::Streaming)
            || self.limit == 0
            || declared_length(&self.flow.request.headers) > Some(self.limit as u64)
        {
            return Ok(Vec::new());
        }
        let mut pieces = Vec::new();
        let mut total = 0;
        while total <= self.limit {
            match self.client.body().await? {
                Some(piece) => {
                    total += piece.len();
                    pieces.push(piece);
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
                let mut sent = 0u64;
                // Sent again on a fresh connection: kept again from the start.
                self.request_prefix.clear();
                for piece in ahead.iter() {
                    self.request_prefix.keep(piece);
                    o.send(piece).await.map_err(|e| stale(e, o))?;
                    sent += piece.len() as u64;
                }
                self.pulled = true;
                #[cfg(target_os = "linux")]
                if self.settings.zero_copy
                    && !self.client.data_hooks()
                    && !self.request_prefix.wants_more()
                    && self.client.worth_splicing()
                {
                    let written = o.written();
                    let sink = o.raw_sink().await.map_err(|e| failure(e, written))?;
                    if let Some(sink) = sink {
                        let moved = self.client.splice_body(sink).await?;
                        o.moved(moved);
                        sent += moved;
                    }
                }
                while let Some(piece) = self.client.body().await? {
                    self.request_prefix.keep(&piece);
                    o.send(&piece).await.map_err(|e| stale(e, o))?;
                    sent += piece.len() as u64;
                }
                self.flow.request_body_size = sent;
                let trailers = self.client.trailers();
                o.end(trailers.as_ref()).await.map_err(|e| stale(e, o))?;
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
        let client = &mut *self.client;
        let pulled = &mut self.pulled;
        let prefix = &mut self.request_prefix;
        let send = async {
            match outgoing {
                Outgoing::Held(body) if !body.is_empty() => {
                    crate::wire::h2::send_all(&mut tx, body.clone(), true, server).await?;
                    Ok::<u64, Error>(body.len() as u64)
                }
                Outgoing::Held(_) => Ok(0),
                Outgoing::Stream(ahead) => {
                    let mut sent = 0u64;
                    prefix.clear();
                    for piece in ahead.iter() {
                        sent += piece.len() as u64;
                        prefix.keep(piece);
                        crate::wire::h2::send_all(&mut tx, piece.clone(), false, server).await?;
                    }
                    *pulled = true;
                    while let Some(piece) = client.body().await? {
                        sent += piece.len() as u64;
                        prefix.keep(&piece);
                        crate::wire::h2::send_all(&mut tx, piece, false, server).await?;
                    }
                    match client.trailers() {
                        Some(t) => tx
                            .send_trailers(crate::wire::h2::convert::map_from(&t, &[]))
                            .map_err(|e| crate::wire::h2::error(server, e))?,
                        None => {
                            crate::wire::h2::send_all(&mut tx, Bytes::new(), true, server).await?
                        }
                    }
                    Ok(sent)
                }
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

    /// The origin's response (its body of `length` bytes when the head says): hooks,
    /// then the client.
    async fn respond(
        &mut self,
        origin: &mut Origin,
        head: Response,
        length: Option<u64>,
    ) -> Result<Outcome> {
        self.flow.response = Some(head);
        let ahead = self.read_response_ahead(origin, length).await?;
        let original = self.flow.response.as_ref().map(|r| r.body.clone());
        let mut response = self.response_hooks().await?;
        let streaming =
            matches!(response.body, Body::Streaming) && Some(&response.body) == original.as_ref();
        let body = if !has_body(&self.flow.request.method, response.status) {
            BodyOut::None
        } else if streaming {
            BodyOut::Stream(length)
        } else {
            // Held whole (or empty): its own `Content-Length`, whatever framing it came
            // with (chunked; or none at all, from an HTTP/2 origin).
            let len = response.body.bytes().map_or(0, Bytes::len);
            set_response_length(&mut response, len);
            BodyOut::Full(len as u64)
        };
        let head = Head {
            response: &response,
            body,
            local: false,
            close: false,
            error: None,
        };
        let written = self.write_response(head, Some(origin), ahead).await;
        self.flow.response = Some(response);
        written.map(|()| Outcome::Done)
    }

    /// Runs the `response` hooks on `flow.response` and takes the response they leave;
    /// a hook's `Kill` drops the client.
    async fn response_hooks(&mut self) -> Result<Response> {
        let verdict = self
            .cx
            .chain
            .response(self.client.conn(), &mut self.flow)
            .await;
        match (verdict, self.flow.response.take()) {
            (Verdict::Kill, _) | (_, None) => Err(self.kill()),
            (_, Some(response)) => Ok(response),
        }
    }

    /// Reads the response body ahead for the hooks, up to the body limit.
    async fn read_response_ahead(
        &mut self,
        origin: &mut Origin,
        length: Option<u64>,
    ) -> Result<Vec<Bytes>> {
        let Some(response) = self.flow.response.as_ref() else {
            return Ok(Vec::new());
        };
        if !matches!(response.body, Body::Streaming)
            || self.limit == 0
            || length > Some(self.limit as u64)
        {
            return Ok(Vec::new());
        }
        let mut pieces = Vec::new();
        let mut total = 0;
        while total <= self.limit {
            match self.origin_body(origin).await? {
                Some(piece) => {
                    total += piece.len();
                    pieces.push(piece);
                }
                None => {
                    if let Some(r) = self.flow.response.as_mut() {
                        r.body = Body::Full(join(&pieces));
                    }
                    return Ok(Vec::new());
                }
            }
        }
        Ok(pieces)
    }

    /// The next piece of the response body.
    async fn origin_body(&mut self, origin: &mut Origin) -> Result<Option<Bytes>> {
        match origin {
            Origin::H1(o) => {
                o.body(self.settings, &self.cx.chain, self.client.conn())
                    .await
            }
            Origin::H2(o) => o.body().await,
        }
    }

    /// Writes a response to the client: its head, then its body (held, or streamed
    /// from `origin`: `ahead` first, then the rest), then its end.
    async fn write_response(
        &mut self,
        head: Head<'_>,
        mut origin: Option<&mut Origin>,
        ahead: Vec<Bytes>,
    ) -> Result<()> {
        self.client.start(head).await?;
        let mut sent = 0u64;
        match head.body {
            BodyOut::None => {}
            BodyOut::Full(_) => {
                if let Some(b) = head.response.body.bytes().filter(|b| !b.is_empty()) {
                    sent = b.len() as u64;
                    self.client.send(b.clone()).await?;
                }
            }
            BodyOut::Stream(_) => {
                for piece in ahead {
                    sent += piece.len() as u64;
                    self.response_prefix.keep(&piece);
                    self.client.send(piece).await?;
                }
                self.flow.response_body_size = sent;
                if let Some(origin) = origin.as_deref_mut() {
                    sent += self.stream_body(origin).await?;
                }
            }
        }
        self.flow.response_body_size = sent;
        let trailers = match origin {
            Some(Origin::H1(o)) => o.trailers(),
            Some(Origin::H2(o)) if matches!(head.body, BodyOut::Stream(_)) => o.trailers().await?,
            _ => None,
        };
        self.client.finish(trailers.as_ref()).await?;
        self.flow.timings.response_end = Some(Instant::now());
        Ok(())
    }

    /// Streams the rest of the response body from `origin` to the client: with
    /// `splice(2)` when nothing reads it and it is worth it, else piece by piece.
    /// Returns the bytes sent (`flow.response_body_size` follows along).
    async fn stream_body(&mut self, origin: &mut Origin) -> Result<u64> {
        let base = self.flow.response_body_size;
        let mut sent = 0u64;
        // Piece by piece while a middleware wants more of its first bytes.
        while self.response_prefix.wants_more() {
            let Some(piece) = self.origin_body(origin).await? else {
                return Ok(sent);
            };
            sent += piece.len() as u64;
            self.response_prefix.keep(&piece);
            self.client.send(piece).await?;
            self.flow.response_body_size = base + sent;
        }
        #[cfg(target_os = "linux")]
        if self.settings.zero_copy && !self.client.data_hooks() {
            if let Origin::H1(o) = &mut *origin {
                if o.worth_splicing() {
                    if let Some(sink) = self.client.raw_sink().await? {
                        sent += o.splice_to(sink, self.settings).await?;
                        self.flow.response_body_size = base + sent;
                    }
                }
            }
        }
        while let Some(piece) = self.origin_body(origin).await? {
            sent += piece.len() as u64;
            self.response_prefix.keep(&piece);
            self.client.send(piece).await?;
            self.flow.response_body_size = base + sent;
        }
        Ok(sent)
    }

    /// A `101 Switching Protocols`: passed on, then both streams are relayed, as
    /// WebSocket messages when a middleware wants them, else as bytes.
    async fn switch(&mut self, origin: Origin, head: Response) -> Result<Outcome> {
        let Origin::H1(o) = origin else {
            return Ok(Outcome::Close);
        };
        self.write_head_only(&head, false).await?;
        let websocket = head.status == 101
            && self
                .flow
                .request
                .headers
                .get("upgrade")
                .is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket"));
        self.flow.response = Some(head);
        let Some(client_io) = self.client.upgraded() else {
            return Ok(Outcome::Close);
        };
        let server_io = o.into_io();
        // The relay outlives the exchange: `flow_finished` fires now, not at its end.
        self.cx
            .chain
            .flow_finished(self.client.conn(), &self.flow)
            .await;
        self.reported = true;
        let relayed = upgrade::relay(
            self.cx,
            self.settings,
            self.client.conn(),
            client_io,
            server_io,
            websocket,
        )
        .await;
        if !websocket {
            return relayed.map(|()| Outcome::Close);
        }
        let error = relayed.err().map(Arc::new);
        let end = WebSocketEnd {
            at: std::time::SystemTime::now(),
            error: error.clone(),
        };
        self.cx.chain.websocket_end(self.client.conn(), &end).await;
        drop(end);
        match error {
            None => Ok(Outcome::Close),
            Some(e) => Err(Error::unshare(e)),
        }
    }

    /// Answers the request with a response made here: through the response hooks, then
    /// to the client. `error` (what went wrong, if anything) is on the flow for the
    /// hooks to see. `close` ends the client connection after it.
    async fn answer(
        &mut self,
        response: Response,
        error: Option<Error>,
        close: bool,
    ) -> Result<Outcome> {
        self.flow.error = error.map(Arc::new);
        self.flow.response = Some(response);
        let response = self.response_hooks().await?;
        self.write_local(response, close).await
    }

    /// Writes a response made here, after its hooks ran, and keeps it on the flow.
    async fn write_local(&mut self, mut response: Response, close: bool) -> Result<Outcome> {
        let len = response.body.bytes().map_or(0, Bytes::len);
        let has_body = has_body(&self.flow.request.method, response.status);
        // A `HEAD` gets the length the body would have had.
        if has_body || matches!(response.body, Body::Full(_)) {
            set_response_length(&mut response, len);
        }
        let error = self.flow.error.clone();
        let head = Head {
            response: &response,
            body: if has_body {
                BodyOut::Full(len as u64)
            } else {
                BodyOut::None
            },
            local: true,
            close,
            error: error.as_ref(),
        };
        self.write_response(head, None, Vec::new()).await?;
        self.flow.response = Some(response);
        // An error is the flow's record of why the proxy answered; the exchange itself
        // went through.
        Ok(if close { Outcome::Close } else { Outcome::Done })
    }

    /// The request could not reach its origin (or its body was malformed): an error
    /// page says why. A client gone is not answered.
    async fn fail(&mut self, e: Error) -> Result<Outcome> {
        let malformed = matches!(e, Error::BadRequest { .. });
        if e.side() == Side::Client && !malformed {
            return Err(e);
        }
        let url = self.flow.request.url();
        if malformed {
            tracing::warn!(error = %Report(&e), url, "request refused");
        } else {
            tracing::warn!(error = %Report(&e), url, "request failed");
        }
        let page = page::error(&e);
        // After a malformed body, where the next request would start is unknown.
        self.answer(page, Some(e), malformed).await
    }

    /// Drops the client at a hook's word.
    fn kill(&mut self) -> Error {
        self.client.kill();
        Error::Killed
    }

    /// The `CONNECT` exchange.
    async fn connect(
        &mut self,
        target: &Target,
        opened: &mut Option<(Ahead, Route)>,
    ) -> Result<Outcome> {
        let conn = self.client.conn();
        let answered = match self.cx.chain.request(conn, &mut self.flow).await {
            Verdict::Continue => false,
            Verdict::Respond(r) => {
                // Answered inside the tunnel, where the client reads it: nothing is
                // connected, and every request the client sends through it gets `r`.
                conn.state().insert(TunnelAnswer(r));
                true
            }
            Verdict::Kill => return Err(self.kill()),
        };
        if !answered {
            if let TunnelVerdict::Refuse(reason) = self.cx.chain.tunnel(conn, target).await {
                let e = Error::TunnelRefused {
                    target: target.to_string(),
                    reason,
                };
                tracing::info!(error = %Report(&e), "CONNECT refused");
                let page = page::error(&e);
                return self.answer(page, Some(e), true).await;
            }
        }
        let route = self.cx.route_for(self.client.conn(), target).await;
        let ahead = if answered {
            Ahead::Answered
        } else if self.settings.is_magic(&target.host) {
            Ahead::Nothing
        } else if let Some(link) = self.cx.upstreams.pooled(&route, target) {
            Ahead::Pooled(link)
        } else {
            let tcp = self
                .cx
                .upstreams
                .tcp(&route, target, self.settings.connect_timeout)
                .await;
            match tcp {
                Ok(tcp) => Ahead::Tcp(tcp),
                Err(e) => {
                    tracing::warn!(error = %Report(&e), %target, "CONNECT failed");
                    let page = page::error(&e);
                    return self.answer(page, Some(e), true).await;
                }
            }
        };
        // Held from here, so that a refusal below gives a pooled connection back.
        *opened = Some((ahead, route));
        self.flow.timings.request_end = Some(Instant::now());
        self.flow.timings.response_first_byte = self.flow.timings.request_end;
        let mut established = Response::new(200);
        established.reason = "Connection established".into();
        self.flow.response = Some(established);
        let response = self.response_hooks().await?;
        if !(200..300).contains(&response.status) {
            // A hook turned the tunnel down after all: its answer goes as it is (the
            // hooks have seen it).
            return self.write_local(response, true).await;
        }
        self.write_head_only(&response, true).await?;
        self.flow.response = Some(response);
        Ok(Outcome::Done)
    }

    /// Writes a response that is a head alone, after which the connection is another
    /// protocol's (`200` to `CONNECT`, `101`).
    async fn write_head_only(&mut self, response: &Response, local: bool) -> Result<()> {
        let head = Head {
            response,
            body: BodyOut::None,
            local,
            close: false,
            error: None,
        };
        self.write_response(head, None, Vec::new()).await
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
