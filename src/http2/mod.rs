//! HTTP/2 with clients that negotiate it inside an intercepted tunnel.
//!
//! Each stream is one exchange, handled concurrently with the others on the same
//! connection (in this task, so they share `&Connection`): the request becomes the
//! crate's [`Request`], goes through the same request hooks as HTTP/1, then to the
//! origin over HTTP/2 (multiplexed, one connection per origin) or HTTP/1.1 (a pooled
//! connection per exchange), whichever the origin negotiated. The response comes back
//! through the response hooks.
//!
//! The raw data hooks (`client_data` / `server_data`) are not called on HTTP/2
//! connections: their bytes are binary frames, not messages a hook could edit.

pub(crate) mod convert;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use tokio::io::AsyncWriteExt;

use crate::core::{Connection, Flow, Target};
use crate::error::{Error, Result, Side};
use crate::h1::body::{Decoder, Encoder, Peer, Piece};
use crate::h1::pool::Upstream;
use crate::h1::{self, parse, Settings};
use crate::io::BoxIo;
use crate::message::{Body, HttpFlow, Response, Timings, Verdict};
use crate::protocol::Context;

const H2: &[u8] = b"h2";

/// An upstream connection made before the client's handshake, with the protocol it
/// negotiated.
pub(crate) struct Preconnected {
    pub upstream: Upstream,
    pub h2: bool,
}

/// Serves an HTTP/2 client connection until it ends.
pub(crate) async fn serve(
    cx: &Context,
    conn: &Connection,
    settings: &Settings,
    client: BoxIo,
    origin: Target,
    preconnected: Option<Preconnected>,
) -> Result<()> {
    let mut h2conn = h2::server::handshake(client)
        .await
        .map_err(|e| io_error(Side::Client, e))?;
    let upstreams = Upstreams::default();
    if let Some(pre) = preconnected {
        upstreams.adopt(cx, pre).await?;
    }
    let mut streams = FuturesUnordered::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            accepted = h2conn.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    next_id += 1;
                    let stream = Stream { cx, conn, settings, origin: &origin, upstreams: &upstreams };
                    streams.push(stream.handle(request, respond, next_id));
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "HTTP/2 client connection ended with an error");
                    break;
                }
                None => break,
            },
            Some(done) = streams.next(), if !streams.is_empty() => {
                if let Err(e) = done {
                    tracing::debug!(error = %crate::error::Report(&e), "HTTP/2 stream failed");
                }
            }
        }
    }
    // Streams still in flight finish while the connection keeps being driven.
    let drain = async { while streams.next().await.is_some() {} };
    let closed = poll_fn(|c| h2conn.poll_closed(c));
    let _ = tokio::join!(drain, closed);
    Ok(())
}

/// What one stream needs from its session.
struct Stream<'a> {
    cx: &'a Context,
    conn: &'a Connection,
    settings: &'a Settings,
    origin: &'a Target,
    upstreams: &'a Upstreams,
}

/// A request body on its way.
enum Source {
    Empty,
    H2(RecvStream),
}

/// A response body on its way.
enum Sink {
    Empty,
    H2(RecvStream),
    H1 {
        peer: Peer,
        decoder: Decoder,
        addr: SocketAddr,
        target: Target,
        keeps: bool,
    },
}

impl Stream<'_> {
    async fn handle(
        self,
        request: http::Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        id: u64,
    ) -> Result<()> {
        let (parts, body) = request.into_parts();
        let mut flow = HttpFlow {
            id,
            request: convert::request_from(&parts, self.origin),
            response: None,
            timings: Timings::now(),
            request_body_size: 0,
            response_body_size: 0,
        };
        let mut source = if body.is_end_stream() {
            flow.request.body = Body::Empty;
            Source::Empty
        } else {
            Source::H2(body)
        };
        let limit = self.cx.chain.body_limit();
        let mut ahead = Vec::new();
        if let Source::H2(recv) = &mut source {
            if limit > 0 {
                let (pieces, done) = read_ahead(recv, limit).await?;
                if done {
                    flow.request.body = Body::Full(h1::join(&pieces));
                    source = Source::Empty;
                } else {
                    ahead = pieces;
                }
            }
        }
        let original = flow.request.body.clone();
        let magic = self.settings.magic_host.as_deref() == Some(flow.request.target.host.as_str());
        let local = if magic {
            Some(h1::magic_answer(&flow.request, &self.cx.ca))
        } else {
            match self.cx.chain.request(self.conn, &mut flow).await {
                Verdict::Continue => None,
                Verdict::Respond(r) => Some(r),
                Verdict::Kill => {
                    respond.send_reset(h2::Reason::CANCEL);
                    return Ok(());
                }
            }
        };
        if let Some(response) = local {
            return self.answer(flow, respond, response).await;
        }
        let body_changed =
            flow.request.body != original || matches!(flow.request.body, Body::Full(_));
        let sink = match self
            .upstreams
            .exchange(&self, &mut flow, body_changed, ahead, source)
            .await
        {
            Ok(sink) => sink,
            Err(e) => {
                tracing::warn!(error = %crate::error::Report(&e), url = %flow.request.url(), "request failed");
                let page = crate::protocol::http::error_response(&e);
                return self.answer(flow, respond, page).await;
            }
        };
        self.respond(flow, respond, sink).await
    }

    /// Runs the response hooks on the origin's response and streams it to the client.
    async fn respond(
        &self,
        mut flow: HttpFlow,
        mut respond: SendResponse<Bytes>,
        mut sink: Sink,
    ) -> Result<()> {
        flow.timings.response_first_byte = Some(Instant::now());
        let limit = self.cx.chain.body_limit();
        let mut ahead = Vec::new();
        if let Some(response) = flow.response.as_mut() {
            if matches!(sink, Sink::Empty) {
                response.body = Body::Empty;
            } else if limit > 0 {
                let (pieces, done) = sink.read_ahead(limit, self.settings).await?;
                if done {
                    response.body = Body::Full(h1::join(&pieces));
                    sink = sink.finish(&self.cx.pool);
                } else {
                    ahead = pieces;
                }
            }
        }
        let original = flow.response.as_ref().map(|r| r.body.clone());
        if let Verdict::Kill = self.cx.chain.response(self.conn, &mut flow).await {
            respond.send_reset(h2::Reason::CANCEL);
            return Ok(());
        }
        let Some(response) = flow.response.take() else {
            return Ok(());
        };
        let changed =
            Some(&response.body) != original.as_ref() || matches!(response.body, Body::Full(_));
        let head = convert::http_response(&response, changed);
        let bodiless = !parse::has_body(&flow.request.method, response.status);
        let streaming = !changed && !matches!(sink, Sink::Empty);
        let empty = bodiless || (!streaming && response.body.bytes().is_none_or(Bytes::is_empty));
        let mut out = respond
            .send_response(head, empty)
            .map_err(|e| io_error(Side::Client, e))?;
        if !empty {
            if changed || !streaming {
                if let Some(b) = response.body.bytes() {
                    flow.response_body_size = b.len() as u64;
                    send_all(&mut out, b.clone(), true, Side::Client).await?;
                }
            } else {
                for piece in ahead {
                    flow.response_body_size += piece.len() as u64;
                    send_all(&mut out, piece, false, Side::Client).await?;
                }
                flow.response_body_size +=
                    sink.pump(&mut out, &self.cx.pool, self.settings).await?;
            }
        }
        flow.timings.response_end = Some(Instant::now());
        flow.response = Some(response);
        self.cx.chain.flow_finished(self.conn, &flow).await;
        Ok(())
    }

    /// Answers the stream with a response made here (hooks, error pages, magic host).
    async fn answer(
        &self,
        mut flow: HttpFlow,
        mut respond: SendResponse<Bytes>,
        response: Response,
    ) -> Result<()> {
        flow.response = Some(response);
        if let Verdict::Kill = self.cx.chain.response(self.conn, &mut flow).await {
            respond.send_reset(h2::Reason::CANCEL);
            return Ok(());
        }
        let Some(response) = flow.response.take() else {
            return Ok(());
        };
        let body = response.body.bytes().cloned().unwrap_or_default();
        let bodiless = !parse::has_body(&flow.request.method, response.status);
        let head = convert::http_response(&response, true);
        let empty = bodiless || body.is_empty();
        let mut out = respond
            .send_response(head, empty)
            .map_err(|e| io_error(Side::Client, e))?;
        if !empty {
            flow.response_body_size = body.len() as u64;
            send_all(&mut out, body, true, Side::Client).await?;
        }
        flow.timings.response_end = Some(Instant::now());
        flow.response = Some(response);
        self.cx.chain.flow_finished(self.conn, &flow).await;
        Ok(())
    }
}

/// The origins one HTTP/2 session sends to: HTTP/2 connections (shared by all clients
/// through the server's pool) or HTTP/1.1 ones (from and back to the pool).
#[derive(Default)]
struct Upstreams {
    /// An HTTP/1.1 connection made during the TLS setup, for the first exchange.
    spare: Mutex<Option<Upstream>>,
}

/// A way to one origin.
pub(crate) enum Link {
    /// A multiplexed HTTP/2 connection.
    H2(h2::client::SendRequest<Bytes>),
    /// One HTTP/1.1 connection.
    H1(Upstream),
}

impl Upstreams {
    /// Takes over the connection made during the TLS setup.
    async fn adopt(&self, cx: &Context, pre: Preconnected) -> Result<()> {
        if pre.h2 {
            let target = pre.upstream.target.clone();
            let send = start_h2(pre.upstream.io).await?;
            cx.pool.put_h2(&target, send);
        } else {
            *lock(&self.spare) = Some(pre.upstream);
        }
        Ok(())
    }

    async fn link(&self, s: &Stream<'_>, target: &Target) -> Result<Link> {
        if let Some(send) = s.cx.pool.h2(target) {
            return Ok(Link::H2(send));
        }
        let spare = lock(&self.spare).take();
        match spare {
            Some(up) if &up.target == target => return Ok(Link::H1(up)),
            Some(up) => s.cx.pool.put(up),
            None => {}
        }
        if let Some(up) = s.cx.pool.take(target) {
            return Ok(Link::H1(up));
        }
        // A connection of our own: the session's `Connection` is shared by its streams,
        // so the connect helpers record the peer in a scratch one.
        let mut scratch = Connection::new(s.conn.id, s.conn.client.clone());
        connect(s.cx, &mut scratch, target, s.settings, true).await
    }

    /// Sends the request to its origin and returns the response head (in
    /// `flow.response`) and where its body comes from.
    async fn exchange(
        &self,
        s: &Stream<'_>,
        flow: &mut HttpFlow,
        body_changed: bool,
        ahead: Vec<Bytes>,
        source: Source,
    ) -> Result<Sink> {
        let target = flow.request.target.clone();
        match self.link(s, &target).await? {
            Link::H2(send) => {
                let result = exchange_h2(s, send, flow, body_changed, ahead, source).await;
                if result.is_err() {
                    // A broken connection is not offered to the next stream.
                    s.cx.pool.drop_h2(&target);
                }
                result
            }
            Link::H1(up) => exchange_h1(s, up, flow, body_changed, ahead, source).await,
        }
    }
}

async fn exchange_h2(
    s: &Stream<'_>,
    send: h2::client::SendRequest<Bytes>,
    flow: &mut HttpFlow,
    body_changed: bool,
    ahead: Vec<Bytes>,
    source: Source,
) -> Result<Sink> {
    let target = flow.request.target.to_string();
    let up_err = |e: h2::Error| Error::Io {
        side: Side::Server,
        source: std::io::Error::other(format!("HTTP/2 with upstream {target}: {e}")),
    };
    let head =
        convert::http_request(&flow.request, body_changed).ok_or_else(|| Error::BadRequest {
            reason: "the request cannot be expressed in HTTP/2".into(),
        })?;
    let mut send = send.ready().await.map_err(up_err)?;
    let full = if body_changed || matches!(source, Source::Empty) {
        flow.request.body.bytes().cloned().unwrap_or_default()
    } else {
        Bytes::new()
    };
    let streaming = !body_changed && matches!(source, Source::H2(_));
    let end = !streaming && full.is_empty();
    let (response, mut out) = send.send_request(head, end).map_err(up_err)?;
    let body = async {
        if streaming {
            let mut sent = 0u64;
            for piece in ahead {
                sent += piece.len() as u64;
                send_all(&mut out, piece, false, Side::Server).await?;
            }
            if let Source::H2(mut recv) = source {
                sent += relay_h2(&mut recv, &mut out, Side::Server).await?;
            }
            Ok::<u64, Error>(sent)
        } else {
            if !full.is_empty() {
                send_all(&mut out, full.clone(), true, Side::Server).await?;
            }
            Ok(full.len() as u64)
        }
    };
    let answer = async {
        tokio::time::timeout(s.settings.response_timeout, response)
            .await
            .map_err(|_| Error::ResponseTimeout {
                target: flow.request.target.to_string(),
                after: s.settings.response_timeout,
            })?
            .map_err(up_err)
    };
    let (sent, answer) = tokio::join!(body, answer);
    let response = answer?;
    flow.request_body_size = sent.unwrap_or(0);
    flow.timings.request_end = Some(Instant::now());
    let (parts, recv) = response.into_parts();
    flow.response = Some(convert::response_from(&parts));
    Ok(if recv.is_end_stream() {
        Sink::Empty
    } else {
        Sink::H2(recv)
    })
}

async fn exchange_h1(
    s: &Stream<'_>,
    up: Upstream,
    flow: &mut HttpFlow,
    body_changed: bool,
    ahead: Vec<Bytes>,
    source: Source,
) -> Result<Sink> {
    let Upstream { io, addr, target } = up;
    let mut peer = Peer::new(io, Flow::ServerToClient, Bytes::new());
    let streaming = !body_changed && matches!(source, Source::H2(_));
    // An HTTP/2 body of unknown length goes chunked to an HTTP/1.1 origin.
    let chunked = streaming && !flow.request.headers.contains("content-length");
    let mut request = flow.request.clone();
    if chunked {
        request.headers.append("transfer-encoding", "chunked");
    }
    if !streaming && !body_changed {
        // Empty: nothing announced.
        request.headers.remove("content-length");
    }
    let mut head = Vec::with_capacity(512);
    h1::write_request_head(&mut head, &request, body_changed, false);
    peer.io.write_all(&head).await.map_err(Error::server_io)?;
    let encoder = if chunked {
        Encoder::Chunked
    } else {
        Encoder::Plain
    };
    let mut scratch = Vec::new();
    if streaming {
        for piece in &ahead {
            flow.request_body_size += piece.len() as u64;
            encoder
                .write(&mut peer.io, &mut scratch, piece)
                .await
                .map_err(Error::server_io)?;
        }
        if let Source::H2(mut recv) = source {
            while let Some(piece) = next_h2(&mut recv).await? {
                flow.request_body_size += piece.len() as u64;
                encoder
                    .write(&mut peer.io, &mut scratch, &piece)
                    .await
                    .map_err(Error::server_io)?;
            }
        }
        encoder
            .finish(&mut peer.io, &[])
            .await
            .map_err(Error::server_io)?;
    } else if let Some(b) = flow.request.body.bytes() {
        flow.request_body_size = b.len() as u64;
        peer.io.write_all(b).await.map_err(Error::server_io)?;
    }
    peer.io.flush().await.map_err(Error::server_io)?;
    flow.timings.request_end = Some(Instant::now());
    let head = loop {
        let hooks = (&s.cx.chain, s.conn, false);
        let head = h1::read_response_head(&mut peer, &target, s.settings, hooks).await?;
        if !(100..200).contains(&head.status) {
            break head;
        }
    };
    let framing = parse::response_framing(&flow.request.method, head.status, &head.headers)
        .map_err(|e| Error::BadResponse {
            target: target.to_string(),
            reason: format!("{e:?}"),
        })?;
    let keeps =
        parse::keeps_alive(head.version, &head.headers) && framing != parse::Framing::UntilClose;
    flow.response = Some(Response {
        status: head.status,
        reason: head.reason,
        version: head.version,
        headers: head.headers,
        body: Body::Streaming,
    });
    let decoder = Decoder::new(framing);
    if decoder.is_done() {
        if keeps && peer.buf.is_empty() {
            s.cx.pool.put(Upstream {
                io: peer.io,
                addr,
                target,
            });
        }
        return Ok(Sink::Empty);
    }
    Ok(Sink::H1 {
        peer,
        decoder,
        addr,
        target,
        keeps,
    })
}

impl Sink {
    /// Reads the body ahead, up to `limit`: the pieces, and whether that was all.
    async fn read_ahead(
        &mut self,
        limit: usize,
        settings: &Settings,
    ) -> Result<(Vec<Bytes>, bool)> {
        let mut pieces = Vec::new();
        let mut total = 0;
        while total <= limit {
            match self.next(settings).await? {
                Some(p) => {
                    total += p.len();
                    pieces.push(p);
                }
                None => return Ok((pieces, true)),
            }
        }
        Ok((pieces, false))
    }

    /// The next piece of body, `None` at its end.
    async fn next(&mut self, settings: &Settings) -> Result<Option<Bytes>> {
        match self {
            Sink::Empty => Ok(None),
            Sink::H2(recv) => next_h2(recv).await,
            Sink::H1 {
                peer,
                decoder,
                target,
                ..
            } => {
                let mut eof = false;
                loop {
                    match decoder.next(&mut peer.buf, eof).map_err(Error::server_io)? {
                        Piece::Data(b) => return Ok(Some(b)),
                        Piece::End => return Ok(None),
                        Piece::NeedMore => {}
                    }
                    peer.buf.reserve(16 * 1024);
                    let read = tokio::io::AsyncReadExt::read_buf(&mut peer.io, &mut peer.buf);
                    let n = tokio::time::timeout(settings.response_timeout, read)
                        .await
                        .map_err(|_| Error::ResponseTimeout {
                            target: target.to_string(),
                            after: settings.response_timeout,
                        })?;
                    eof = crate::h1::body::end_is_eof(n).map_err(Error::server_io)? == 0;
                }
            }
        }
    }

    /// After the whole body was read: a clean HTTP/1.1 upstream goes back to the pool.
    fn finish(self, pool: &crate::h1::pool::Pool) -> Sink {
        if let Sink::H1 {
            peer,
            decoder,
            addr,
            target,
            keeps,
        } = self
        {
            if keeps && decoder.is_done() && peer.buf.is_empty() {
                pool.put(Upstream {
                    io: peer.io,
                    addr,
                    target,
                });
            }
        }
        Sink::Empty
    }

    /// Streams the rest of the body to the client; returns the bytes sent.
    async fn pump(
        mut self,
        out: &mut SendStream<Bytes>,
        pool: &crate::h1::pool::Pool,
        settings: &Settings,
    ) -> Result<u64> {
        if let Sink::H2(recv) = &mut self {
            let sent = relay_h2(recv, out, Side::Client).await?;
            return Ok(sent);
        }
        let mut sent = 0u64;
        while let Some(piece) = self.next(settings).await? {
            sent += piece.len() as u64;
            send_all(out, piece, false, Side::Client).await?;
        }
        out.send_data(Bytes::new(), true)
            .map_err(|e| io_error(Side::Client, e))?;
        self.finish(pool);
        Ok(sent)
    }
}

/// Copies an HTTP/2 body (and its trailers) from `recv` to `out`, whose peer is on
/// `to`.
async fn relay_h2(recv: &mut RecvStream, out: &mut SendStream<Bytes>, to: Side) -> Result<u64> {
    let mut sent = 0u64;
    while let Some(piece) = next_h2(recv).await? {
        sent += piece.len() as u64;
        send_all(out, piece, false, to).await?;
    }
    let trailers = recv
        .trailers()
        .await
        .map_err(|e| io_error(Side::Server, e))?;
    match trailers {
        Some(t) => out.send_trailers(t),
        None => out.send_data(Bytes::new(), true),
    }
    .map_err(|e| io_error(to, e))?;
    Ok(sent)
}

/// The next data frame's bytes, releasing their flow-control window.
pub(crate) async fn next_h2(recv: &mut RecvStream) -> Result<Option<Bytes>> {
    match recv.data().await {
        None => Ok(None),
        Some(Err(e)) => Err(io_error(Side::Client, e)),
        Some(Ok(b)) => {
            let _ = recv.flow_control().release_capacity(b.len());
            Ok(Some(b))
        }
    }
}

/// Reads a body ahead up to `limit`: the pieces, and whether that was all of it.
pub(crate) async fn read_ahead(recv: &mut RecvStream, limit: usize) -> Result<(Vec<Bytes>, bool)> {
    let mut pieces = Vec::new();
    let mut total = 0;
    while total <= limit {
        match next_h2(recv).await? {
            Some(p) => {
                total += p.len();
                pieces.push(p);
            }
            None => return Ok((pieces, true)),
        }
    }
    Ok((pieces, false))
}

/// Sends `data` as the flow-control window allows, to the peer on `side`.
pub(crate) async fn send_all(
    out: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    side: Side,
) -> Result<()> {
    let err = |e: h2::Error| io_error(side, e);
    if data.is_empty() {
        if end {
            out.send_data(data, true).map_err(err)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        out.reserve_capacity(data.len());
        let granted = match poll_fn(|c| out.poll_capacity(c)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(err(e)),
            None => return Err(err(h2::Error::from(h2::Reason::CANCEL))),
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        out.send_data(chunk, end && data.is_empty()).map_err(err)?;
    }
    Ok(())
}

/// Connects to `target` (recording the peer in `conn.server`), offering HTTP/2 as well
/// as HTTP/1.1 over TLS when `allow_h2`; an HTTP/2 connection is shared through the
/// pool from then on.
pub(crate) async fn connect(
    cx: &Context,
    conn: &mut Connection,
    target: &Target,
    settings: &Settings,
    allow_h2: bool,
) -> Result<Link> {
    let timeout = settings.connect_timeout;
    let (io, h2): (BoxIo, bool) = if target.tls {
        let alpn = if allow_h2 {
            vec![H2.to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let tls = cx
            .connect_tls(conn, target, &target.host, &alpn, timeout)
            .await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(H2);
        (Box::new(tls), h2)
    } else {
        (Box::new(cx.connect(conn, target, timeout).await?), false)
    };
    if h2 {
        let send = start_h2(io).await?;
        cx.pool.put_h2(target, send.clone());
        return Ok(Link::H2(send));
    }
    let addr = conn
        .server
        .addr
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    Ok(Link::H1(Upstream {
        io,
        addr,
        target: target.clone(),
    }))
}

/// Starts an HTTP/2 client connection over `io`, driven by a task of its own.
pub(crate) async fn start_h2(io: BoxIo) -> Result<h2::client::SendRequest<Bytes>> {
    let (send, connection) = h2::client::handshake(io)
        .await
        .map_err(|e| io_error(Side::Server, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "HTTP/2 upstream connection ended");
        }
    });
    Ok(send)
}

pub(crate) fn io_error(side: Side, e: h2::Error) -> Error {
    Error::Io {
        side,
        source: std::io::Error::other(e),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a negotiated ALPN protocol is HTTP/2.
pub(crate) fn is_h2(alpn: Option<&[u8]>) -> bool {
    alpn == Some(H2)
}
