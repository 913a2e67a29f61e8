//! HTTP/2 client connections (inside an intercepted tunnel, or to a reverse proxy):
//! each stream is one exchange, run concurrently with the others in this task, so they
//! share `&Connection`. The server handshake announces the proxy's limits (streams at
//! once, header list size); streams that need an HTTP/1.1 origin connection of their
//! own hold one of a bounded number, so one client cannot open upstream connections
//! without end.
//!
//! The raw data hooks are not called on HTTP/2 connections (their bytes are binary
//! frames), and the server hooks fire only for the tunnel's own upstream: streams run
//! at once, to any number of origins.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{BodyOut, Client, Head, Outcome};
use crate::core::{Connection, Target};
use crate::engine::context::Context;
use crate::error::{Error, Report, Result, Side};
use crate::http::message::{Body, Headers, HttpFlow, Response};
use crate::http::page;
use crate::http::settings::Settings;
use crate::http::target::{route, Routed, Scope};
use crate::net::io::BoxIo;
use crate::upstream::{Link, Route, Want};
use crate::wire::h2::{self as http2, convert};

/// Serves an HTTP/2 client connection until it ends, routing its streams in `scope`
/// (a tunnel's origin, or a reverse proxy's). `spare` is an upstream link made during
/// the setup, for the first stream to its origin.
pub(crate) async fn serve(
    cx: &Context,
    settings: &Settings,
    conn: &Connection,
    client: BoxIo,
    scope: Scope,
    spare: Option<Link>,
) -> Result<()> {
    let mut h2conn = http2::serve(client, settings).await?;
    let streams = Streams {
        cx,
        settings,
        conn,
        scope,
        spare: Mutex::new(spare),
        upstreams: Arc::new(Semaphore::new(settings.max_upstreams.max(1))),
    };
    let mut running = FuturesUnordered::new();
    let mut next_id = 0u64;
    let mut stopped = cx.stopped();
    let mut going_away = false;
    loop {
        tokio::select! {
            accepted = h2conn.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    next_id += 1;
                    running.push(streams.stream(request, respond, next_id));
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "HTTP/2 client connection ended with an error");
                    break;
                }
                None => break,
            },
            Some(done) = running.next(), if !running.is_empty() => {
                if let Err(e) = done {
                    tracing::debug!(error = %Report(&e), "HTTP/2 stream failed");
                }
            }
            () = stopped.as_mut(), if !going_away => {
                // The server stops: no new streams (GOAWAY); those in flight finish.
                h2conn.graceful_shutdown();
                going_away = true;
            }
        }
    }
    // Streams still in flight finish while the connection keeps being driven.
    let drain = async { while running.next().await.is_some() {} };
    let closed = std::future::poll_fn(|c| h2conn.poll_closed(c));
    let _ = tokio::join!(drain, closed);
    if let Some(link) = lock(&streams.spare).take() {
        super::give_back(cx, link);
    }
    Ok(())
}

/// What the streams of one connection share.
struct Streams<'a> {
    cx: &'a Context,
    settings: &'a Settings,
    conn: &'a Connection,
    scope: Scope,
    /// An upstream made during the tunnel's setup, for the first stream to its origin.
    spare: Mutex<Option<Link>>,
    /// Places for HTTP/1.1 upstream connections held by this client's streams.
    upstreams: Arc<Semaphore>,
}

impl Streams<'_> {
    /// Runs the exchange of one stream.
    async fn stream(
        &self,
        request: http::Request<RecvStream>,
        respond: SendResponse<Bytes>,
        id: u64,
    ) -> Result<()> {
        let (parts, body) = request.into_parts();
        let authority = parts.uri.authority().map(|a| a.as_str());
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        // A request the proxy refuses before its exchange still makes a flow: the
        // response hooks and `flow_finished` see it.
        let (target, path, host, refused) = match route(path, authority, &self.scope) {
            Ok(Routed { target, path, host }) if self.cx.is_self(&target) => {
                let e = Error::LoopDetected {
                    target: target.to_string(),
                };
                (target, path, host, Some((page::loop_detected(), e)))
            }
            Ok(Routed { target, path, host }) => (target, path, host, None),
            Err(reason) => {
                let r = page::unroutable(&reason);
                let target = Target::new("", 0, false);
                (
                    target,
                    path.to_string(),
                    None,
                    Some((r, Error::BadRequest { reason })),
                )
            }
        };
        let mut request = convert::request_from(&parts, target, path);
        if let Some(host) = host {
            // Carried as a `Host` field: an HTTP/1.1 origin gets it as it is, an
            // HTTP/2 one as its `:authority`.
            request.headers.insert("host", host);
        }
        let expects_continue = request.headers.has_token("expect", "100-continue");
        let recv = if body.is_end_stream() {
            request.body = Body::Empty;
            None
        } else {
            Some(body)
        };
        let mut client = Stream {
            streams: self,
            respond,
            recv,
            trailers: None,
            expects_continue,
            send: None,
            ended: false,
            permit: None,
        };
        let flow = HttpFlow::new(id, request);
        let done = match refused {
            Some((response, error)) => {
                super::refuse(
                    self.cx,
                    self.settings,
                    &mut client,
                    flow,
                    response,
                    error,
                    false,
                )
                .await
            }
            None => super::run(self.cx, self.settings, &mut client, flow).await,
        };
        match done {
            Ok(Outcome::Done | Outcome::Close) | Err(Error::Killed) => Ok(()),
            Err(e) => {
                client.reset();
                Err(e)
            }
        }
    }
}

/// One stream, as the exchange's client.
struct Stream<'s, 'a> {
    streams: &'s Streams<'a>,
    respond: SendResponse<Bytes>,
    /// The request body, until read to its end.
    recv: Option<RecvStream>,
    trailers: Option<Headers>,
    /// Whether `100 Continue` is still owed.
    expects_continue: bool,
    /// The response body, once the head is sent.
    send: Option<SendStream<Bytes>>,
    /// Whether the response stream has ended.
    ended: bool,
    /// The place held by an HTTP/1.1 upstream connection in use.
    permit: Option<OwnedSemaphorePermit>,
}

impl Stream<'_, '_> {
    /// Ends the stream abruptly (the exchange broke off).
    fn reset(&mut self) {
        match self.send.as_mut() {
            Some(send) if !self.ended => send.send_reset(h2::Reason::INTERNAL_ERROR),
            Some(_) => {}
            None => self.respond.send_reset(h2::Reason::INTERNAL_ERROR),
        }
    }
}

/// How long, and for how many bytes, the rest of a request body nobody reads is taken
/// in and dropped after its response is complete ([`Stream`]'s `Drop`).
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);
const LINGER_BYTES: usize = 1024 * 1024;

impl Drop for Stream<'_, '_> {
    /// A stream whose response is complete while the client is still sending its
    /// request body (a request refused before it was read: `413`). Dropped here, `h2`
    /// would reset it at once, which can discard response frames not yet written and
    /// so the response itself. The rest of the body is read and dropped instead, on a
    /// task of its own, for up to [`LINGER`] and [`LINGER_BYTES`]; only then is the
    /// stream let go (reset, if the client still sends).
    fn drop(&mut self) {
        if !self.ended || self.body_done() {
            return;
        }
        let Some(mut recv) = self.recv.take() else {
            return;
        };
        tokio::spawn(async move {
            let drain = async {
                let mut taken = 0;
                while let Ok(Some(piece)) = http2::next_data(&mut recv, Side::Client).await {
                    taken += piece.len();
                    if taken > LINGER_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
        });
    }
}

impl Client for Stream<'_, '_> {
    fn conn(&self) -> &Connection {
        self.streams.conn
    }

    fn data_hooks(&self) -> bool {
        false
    }

    async fn body(&mut self) -> Result<Option<Bytes>> {
        let Some(recv) = self.recv.as_mut() else {
            return Ok(None);
        };
        if std::mem::take(&mut self.expects_continue) {
            let mut cont = http::Response::new(());
            *cont.status_mut() = http::StatusCode::CONTINUE;
            // A client gone shows on the next read.
            let _ = self.respond.send_informational(cont);
        }
        if let Some(piece) = http2::next_data(recv, Side::Client).await? {
            return Ok(Some(piece));
        }
        let trailers = recv
            .trailers()
            .await
            .map_err(|e| http2::error(Side::Client, e))?;
        self.trailers = trailers.map(|t| convert::headers_from(&t));
        self.recv = None;
        Ok(None)
    }

    fn body_done(&self) -> bool {
        self.recv.as_ref().is_none_or(RecvStream::is_end_stream)
    }

    fn trailers(&mut self) -> Option<Headers> {
        self.trailers.take()
    }

    async fn interim(&mut self, response: &Response) -> Result<()> {
        let Ok(status) = http::StatusCode::from_u16(response.status) else {
            return Ok(());
        };
        let mut head = convert::http_response(response, false);
        *head.status_mut() = status;
        // 101 has no place in HTTP/2; the others go on.
        if response.status != 101 {
            let _ = self.respond.send_informational(head);
        }
        Ok(())
    }

    async fn start(&mut self, head: Head<'_>) -> Result<()> {
        let known = !matches!(head.body, BodyOut::Stream(None));
        let end = matches!(head.body, BodyOut::None | BodyOut::Full(0));
        let response = convert::http_response(head.response, known);
        let send = self
            .respond
            .send_response(response, end)
            .map_err(|e| http2::error(Side::Client, e))?;
        self.send = Some(send);
        self.ended = end;
        Ok(())
    }

    async fn send(&mut self, data: Bytes) -> Result<()> {
        match self.send.as_mut() {
            Some(send) if !self.ended => http2::send_all(send, data, false, Side::Client).await,
            _ => Ok(()),
        }
    }

    async fn finish(&mut self, trailers: Option<&Headers>) -> Result<()> {
        let Some(send) = self.send.as_mut() else {
            return Ok(());
        };
        if std::mem::replace(&mut self.ended, true) {
            return Ok(());
        }
        match trailers {
            Some(t) => send
                .send_trailers(convert::map_from(t, &[]))
                .map_err(|e| http2::error(Side::Client, e)),
            None => http2::send_all(send, Bytes::new(), true, Side::Client).await,
        }
    }

    async fn origin(
        &mut self,
        cx: &Context,
        route: &Route,
        target: &Target,
        want: Want,
    ) -> Result<Link> {
        if !want.fresh {
            let spare = lock(&self.streams.spare).take();
            match spare {
                Some(link) if link.target() == target && link.route() == route => return Ok(link),
                Some(link) => super::give_back(cx, link),
                None => {}
            }
            if want.h2 {
                if let Some(link) = cx.upstreams.shared(route, target) {
                    return Ok(link);
                }
            }
        }
        // An HTTP/1.1 connection (or a new one of either kind) takes one of this
        // client's places, waiting for one if all are taken.
        let permit = self
            .streams
            .upstreams
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::ConnectionLimit {
                limit: self.streams.settings.max_upstreams,
            })?;
        let timeout = self.streams.settings.connect_timeout;
        let link = cx.upstreams.link(route, target, want, timeout).await?;
        if let Link::H1 { .. } = link {
            self.permit = Some(permit);
        }
        Ok(link)
    }

    fn release(&mut self, cx: &Context, link: Link, reusable: bool) {
        if reusable {
            super::give_back(cx, link);
        }
        self.permit = None;
    }

    fn kill(&mut self) {
        match self.send.as_mut() {
            Some(send) => send.send_reset(h2::Reason::CANCEL),
            None => self.respond.send_reset(h2::Reason::CANCEL),
        }
        self.ended = true;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
