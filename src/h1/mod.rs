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
pub(crate) mod parse;
pub(crate) mod pool;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use self::body::{Decoder, Encoder, Peer, Piece};
use self::parse::{Framing, HeadError, RequestHead};
use self::pool::Upstream;
use crate::core::{Connection, Flow, Host, Target};
use crate::error::{Error, Result};
use crate::io::BoxIo;
use crate::message::{Body, Headers, HttpFlow, Request, Response, Timings, Verdict, Version};
use crate::protocol::http::{error_response, parse_authority};
use crate::protocol::Context;

/// The engine's limits and timeouts (set on [`crate::Http`]).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Time for a request head once it has begun, for connecting upstream and for TLS
    /// handshakes.
    pub timeout: Duration,
    /// Time an origin has to start its response (504 after).
    pub response_timeout: Duration,
    /// Time a keep-alive client may stay silent between requests.
    pub idle_timeout: Duration,
    /// Whether client connections are kept open between requests.
    pub keep_alive: bool,
    /// Largest request head accepted (431 beyond).
    pub max_head: usize,
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
    /// Whether the upstream in use finished its last exchange cleanly.
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
                return match parse::parse_request(&raw) {
                    Ok(head) => Ok(Some(head)),
                    Err(e) => self.refuse_head(e).await,
                };
            }
            if self.client.buf.len() > self.settings.max_head {
                return self.refuse_head(HeadError::TooLarge).await;
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

    /// Answers a bad head with 400 or 431 and ends the connection.
    async fn refuse_head(&mut self, e: HeadError) -> Result<Option<RequestHead>> {
        let response = match e {
            HeadError::TooLarge => text_response(
                431,
                format!(
                    "mitm refused the request: its head is larger than {} bytes (or has more \
                     than {} header fields). Send smaller headers (cookies are the usual \
                     cause), or raise the proxy's limit.\n",
                    self.settings.max_head,
                    parse::MAX_HEADERS
                ),
            ),
            HeadError::Malformed(reason) => text_response(
                400,
                format!("mitm could not understand the request: {reason}.\n"),
            ),
        };
        self.write_local(response, Version::Http11, false).await?;
        Ok(None)
    }

    /// One request and its response.
    async fn exchange(&mut self, head: RequestHead) -> Result<Next> {
        let (target, path) = match self.route(&head) {
            Ok(route) => route,
            Err(reason) => {
                let r = text_response(
                    400,
                    format!("mitm could not route the request: {reason}.\n"),
                );
                self.write_local(r, head.version, false).await?;
                return Ok(Next::Close);
            }
        };
        let framing = match parse::request_framing(&head.headers) {
            Ok(f) => f,
            Err(e) => {
                self.refuse_head(e).await?;
                return Ok(Next::Close);
            }
        };
        self.conn.target = Some(target.clone());
        self.flows += 1;
        let expects_continue = head.headers.has_token("expect", "100-continue");
        let client_keeps = parse::keeps_alive(head.version, &head.headers);
        let upgrade = wants_upgrade(&head.headers);
        let mut incoming = Incoming {
            decoder: Decoder::new(framing),
            framing,
            expects_continue,
        };
        let mut flow = HttpFlow {
            id: self.flows,
            request: Request {
                method: head.method,
                target,
                path,
                version: head.version,
                headers: head.headers,
                body: if framing == Framing::Empty {
                    Body::Empty
                } else {
                    Body::Streaming
                },
            },
            response: None,
            timings: Timings::now(),
            request_body_size: 0,
            response_body_size: 0,
        };
        let mut ahead = Vec::new();
        if framing != Framing::Empty && self.body_limit > 0 {
            ahead = self.read_ahead(&mut incoming, framing).await?;
            if incoming.decoder.is_done() {
                flow.request.body = Body::Full(join(&ahead));
                ahead.clear();
            }
        }
        let original = flow.request.body.clone();

        let local = match self.cx.chain.request(self.conn, &mut flow).await {
            Verdict::Continue => None,
            Verdict::Respond(r) => Some(r),
            Verdict::Kill => return Ok(Next::Close),
        };
        let body_changed = flow.request.body != original;
        if let Some(response) = local {
            // The request body is not wanted; the client connection can go on only if
            // nothing of it is left unread.
            let unread = !incoming.decoder.is_done();
            return self
                .answer_locally(flow, response, client_keeps && !unread)
                .await;
        }

        let sent = self
            .send_request(&mut flow, &mut incoming, ahead, body_changed, upgrade)
            .await;
        if let Err(e) = sent {
            let fatal = e.side() == crate::Side::Client;
            self.drop_upstream().await;
            if fatal {
                return Err(e);
            }
            let keep = client_keeps && incoming.decoder.is_done();
            let response = error_response(&e);
            tracing::warn!(error = %crate::error::Report(&e), url = %flow.request.url(), "request failed");
            return self.answer_locally(flow, response, keep).await;
        }
        self.receive_response(flow, client_keeps, upgrade).await
    }

    /// Where a request goes, and its origin-form target.
    fn route(&self, head: &RequestHead) -> std::result::Result<(Target, String), String> {
        let t = head.target.as_str();
        for (scheme, tls, port) in [("http://", false, 80), ("https://", true, 443)] {
            let Some(rest) = strip_prefix_ignore_case(t, scheme) else {
                continue;
            };
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let authority = &rest[..end];
            let authority = authority.rsplit('@').next().unwrap_or(authority);
            let (host, port) =
                parse_authority(authority, port).ok_or("invalid host in the request URI")?;
            let path = match &rest[end..] {
                "" => "/".to_string(),
                p if p.starts_with('?') => format!("/{p}"),
                p => p.to_string(),
            };
            return Ok((Target::new(host, port, tls), path));
        }
        if !(t.starts_with('/') || t == "*") {
            return Err(format!("unsupported request target {t:?}"));
        }
        let (tls, default_port) = match &self.scope {
            Scope::Proxy => (false, 80),
            Scope::Tunnel(origin) => (true, origin.port),
        };
        let host = head.headers.get("host").map(str::trim);
        let target = match (host, &self.scope) {
            (Some(h), _) if !h.is_empty() => {
                let (host, port) = parse_authority(h, default_port).ok_or("invalid Host header")?;
                Target::new(host, port, tls)
            }
            (_, Scope::Tunnel(origin)) => origin.clone(),
            (_, Scope::Proxy) => return Err("no Host header and no absolute URI".into()),
        };
        Ok((target, t.to_string()))
    }

    /// Reads the request body ahead for the hooks, up to the body limit: the pieces
    /// read (all of it when the decoder is done).
    async fn read_ahead(
        &mut self,
        incoming: &mut Incoming,
        framing: Framing,
    ) -> Result<Vec<Bytes>> {
        if matches!(framing, Framing::Length(n) if n > self.body_limit as u64) {
            return Ok(Vec::new());
        }
        self.send_continue(incoming).await?;
        let mut pieces = Vec::new();
        let mut total = 0usize;
        while total <= self.body_limit {
            match self.next_request_piece(incoming).await? {
                Some(piece) => {
                    total += piece.len();
                    pieces.push(piece);
                }
                None => break,
            }
        }
        Ok(pieces)
    }

    /// Sends `100 Continue` once, if the client waits for it.
    async fn send_continue(&mut self, incoming: &mut Incoming) -> Result<()> {
        if incoming.expects_continue {
            incoming.expects_continue = false;
            self.client
                .io
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(Error::client_io)?;
        }
        Ok(())
    }

    /// The next piece of the request body, `None` at its end.
    async fn next_request_piece(&mut self, incoming: &mut Incoming) -> Result<Option<Bytes>> {
        loop {
            let piece = incoming
                .decoder
                .next(&mut self.client.buf, false)
                .map_err(Error::client_io)?;
            match piece {
                Piece::Data(b) => return Ok(Some(b)),
                Piece::End => return Ok(None),
                Piece::NeedMore => {}
            }
            let read = self.client.fill(&self.cx.chain, self.conn, self.hooks);
            let n = tokio::time::timeout(self.settings.idle_timeout, read)
                .await
                .map_err(|_| Error::ClientTimeout)?
                .map_err(Error::client_io)?;
            if n == 0 {
                return Err(Error::client_io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "client closed the connection in the middle of a request body",
                )));
            }
        }
    }

    /// Connects (or reuses) the upstream for `target`, firing the server hooks when
    /// the upstream changes.
    async fn ensure_upstream(&mut self, target: &Target) -> Result<()> {
        if self.upstream.as_ref().is_some_and(|u| &u.target == target) {
            return Ok(());
        }
        self.release(true).await;
        let (up, reused) = match self.cx.pool.take(target) {
            Some(up) => (up, true),
            None => (self.connect_upstream(target).await?, false),
        };
        self.conn.server = Host::new(up.addr);
        self.upstream = Some(Current {
            peer: Peer::new(up.io, Flow::ServerToClient, Bytes::new()),
            addr: up.addr,
            target: up.target,
            reused,
        });
        self.cx.announce_server(self.conn).await;
        Ok(())
    }

    async fn connect_upstream(&mut self, target: &Target) -> Result<Upstream> {
        let timeout = self.settings.timeout;
        let io: BoxIo = if target.tls {
            let alpn = [b"http/1.1".to_vec()];
            Box::new(
                self.cx
                    .connect_tls(self.conn, target, &target.host, &alpn, timeout)
                    .await?,
            )
        } else {
            Box::new(self.cx.connect(self.conn, target, timeout).await?)
        };
        let addr = self.conn.server.addr.ok_or_else(|| Error::Connect {
            target: target.to_string(),
            source: std::io::Error::other("no peer address"),
        })?;
        Ok(Upstream {
            io,
            addr,
            target: target.clone(),
        })
    }

    /// Gives the current upstream back to the pool (when `reusable` and it is clean),
    /// or closes it, firing `server_disconnected` for the connection's view.
    async fn release(&mut self, reusable: bool) {
        let Some(current) = self.upstream.take() else {
            return;
        };
        if reusable && current.peer.buf.is_empty() {
            self.cx.pool.put(Upstream {
                io: current.peer.io,
                addr: current.addr,
                target: current.target,
            });
        }
        self.cx.retire_server(self.conn).await;
    }

    /// At the end of the session: pools the upstream if it is clean, without hooks.
    fn park_upstream(&mut self) {
        let Some(current) = self.upstream.take() else {
            return;
        };
        if current.peer.buf.is_empty() && self.reusable_at_end {
            self.cx.pool.put(Upstream {
                io: current.peer.io,
                addr: current.addr,
                target: current.target,
            });
        }
    }

    /// Closes the current upstream: it cannot be reused.
    async fn drop_upstream(&mut self) {
        self.release(false).await;
    }

    /// Sends the request head and body upstream, retrying once on a fresh connection
    /// when a pooled one turns out to be closed before anything was sent.
    async fn send_request(
        &mut self,
        flow: &mut HttpFlow,
        incoming: &mut Incoming,
        ahead: Vec<Bytes>,
        body_changed: bool,
        upgrade: bool,
    ) -> Result<()> {
        let target = flow.request.target.clone();
        self.ensure_upstream(&target).await?;
        let mut head = Vec::with_capacity(512);
        write_request_head(&mut head, &flow.request, body_changed, upgrade);
        let up = self.upstream.as_mut().ok_or_else(no_upstream)?;
        if let Err(e) = up.peer.io.write_all(&head).await {
            if !up.reused {
                return Err(Error::server_io(e));
            }
            // A pooled connection the server had closed: try a fresh one.
            self.drop_upstream().await;
            let fresh = self.connect_upstream(&target).await?;
            self.conn.server = Host::new(fresh.addr);
            self.upstream = Some(Current {
                peer: Peer::new(fresh.io, Flow::ServerToClient, Bytes::new()),
                addr: fresh.addr,
                target: fresh.target,
                reused: false,
            });
            self.cx.announce_server(self.conn).await;
            let up = self.upstream.as_mut().ok_or_else(no_upstream)?;
            up.peer
                .io
                .write_all(&head)
                .await
                .map_err(Error::server_io)?;
        }
        self.send_request_body(flow, incoming, ahead, body_changed)
            .await?;
        flow.timings.request_end = Some(Instant::now());
        Ok(())
    }

    async fn send_request_body(
        &mut self,
        flow: &mut HttpFlow,
        incoming: &mut Incoming,
        ahead: Vec<Bytes>,
        body_changed: bool,
    ) -> Result<()> {
        let Some(up) = self.upstream.as_mut() else {
            return Ok(());
        };
        if body_changed || !matches!(flow.request.body, Body::Streaming) {
            if let Body::Full(b) = &flow.request.body {
                up.peer.io.write_all(b).await.map_err(Error::server_io)?;
                flow.request_body_size = b.len() as u64;
            }
            // A replaced body: what is left of the original is read and dropped.
            while self.next_request_piece(incoming).await?.is_some() {}
            return Ok(());
        }
        let encoder = match incoming.framing {
            Framing::Chunked => Encoder::Chunked,
            _ => Encoder::Plain,
        };
        for piece in &ahead {
            encoder
                .write(&mut up.peer.io, &mut self.scratch, piece)
                .await
                .map_err(Error::server_io)?;
            flow.request_body_size += piece.len() as u64;
        }
        self.send_continue(incoming).await?;
        while let Some(piece) = self.next_request_piece(incoming).await? {
            let up = self.upstream.as_mut().ok_or_else(no_upstream)?;
            encoder
                .write(&mut up.peer.io, &mut self.scratch, &piece)
                .await
                .map_err(Error::server_io)?;
            flow.request_body_size += piece.len() as u64;
        }
        let up = self.upstream.as_mut().ok_or_else(no_upstream)?;
        encoder
            .finish(&mut up.peer.io, &incoming.decoder.trailers)
            .await
            .map_err(Error::server_io)
    }

    /// Reads the response (skipping interim ones, which are passed on), runs the
    /// response hooks and passes it to the client.
    async fn receive_response(
        &mut self,
        mut flow: HttpFlow,
        client_keeps: bool,
        upgrade: bool,
    ) -> Result<Next> {
        let head = loop {
            let head = match self.read_response_head().await {
                Ok(head) => head,
                Err(e) => {
                    self.drop_upstream().await;
                    let response = error_response(&e);
                    tracing::warn!(error = %crate::error::Report(&e), url = %flow.request.url(), "no response");
                    return self.answer_locally(flow, response, client_keeps).await;
                }
            };
            if flow.timings.response_first_byte.is_none() {
                flow.timings.response_first_byte = Some(Instant::now());
            }
            match head.status {
                // We answered `Expect` ourselves; the origin's 100 is not news.
                100 => continue,
                101 if upgrade => return self.upgraded(flow, head).await,
                102..=199 => {
                    let mut interim = Vec::new();
                    write_response_head(&mut interim, (&head).into(), ResponseBody::AsIs, None);
                    self.client
                        .io
                        .write_all(&interim)
                        .await
                        .map_err(Error::client_io)?;
                }
                _ => break head,
            }
        };
        let framing =
            match parse::response_framing(&flow.request.method, head.status, &head.headers) {
                Ok(f) => f,
                Err(HeadError::Malformed(reason)) => {
                    self.drop_upstream().await;
                    let r = text_response(
                        502,
                        format!(
                            "mitm got an invalid response from the upstream server: {reason}.\n"
                        ),
                    );
                    return self.answer_locally(flow, r, client_keeps).await;
                }
                Err(HeadError::TooLarge) => {
                    self.drop_upstream().await;
                    let r = text_response(
                        502,
                        "mitm got a response head that is too large from the upstream server.\n"
                            .into(),
                    );
                    return self.answer_locally(flow, r, client_keeps).await;
                }
            };
        let upstream_keeps = parse::keeps_alive(head.version, &head.headers);
        let mut decoder = Decoder::new(framing);
        let mut body = if framing == Framing::Empty {
            Body::Empty
        } else {
            Body::Streaming
        };
        let mut ahead = Vec::new();
        if framing != Framing::Empty && self.body_limit > 0 {
            ahead = self.read_response_ahead(&mut decoder, framing).await?;
            if decoder.is_done() {
                body = Body::Full(join(&ahead));
                ahead.clear();
            }
        }
        flow.response = Some(Response {
            status: head.status,
            reason: head.reason,
            version: head.version,
            headers: head.headers,
            body,
        });
        let original = flow.response.as_ref().map(|r| r.body.clone());
        if let Verdict::Kill = self.cx.chain.response(self.conn, &mut flow).await {
            self.drop_upstream().await;
            return Ok(Next::Close);
        }
        let Some(mut response) = flow.response.take() else {
            return Ok(Next::Close);
        };
        let body_changed = Some(&response.body) != original.as_ref();
        // A 1.0 client cannot take chunked framing: send the body until close instead.
        let client_10 = flow.request.version == Version::Http10;
        let until_close = framing == Framing::UntilClose
            || (framing == Framing::Chunked && client_10 && !body_changed);
        let keep = self.settings.keep_alive && client_keeps && !until_close;
        let mode = if body_changed {
            ResponseBody::Replaced
        } else if framing == Framing::Chunked && client_10 {
            ResponseBody::Dechunked
        } else {
            ResponseBody::AsIs
        };
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        response.version = Version::Http11;
        let connection = connection_header(keep, client_10);
        write_response_head(&mut out, (&response).into(), mode, connection);
        self.client
            .io
            .write_all(&out)
            .await
            .map_err(Error::client_io)?;
        self.scratch = out;

        let encoder = if framing == Framing::Chunked && !client_10 {
            Encoder::Chunked
        } else {
            Encoder::Plain
        };
        let streamed = if body_changed {
            if let Body::Full(b) = &response.body {
                self.client
                    .io
                    .write_all(b)
                    .await
                    .map_err(Error::client_io)?;
                flow.response_body_size = b.len() as u64;
            }
            // The origin's own body is not passed on; the connection cannot be reused
            // unless it was already read whole.
            decoder.is_done()
        } else {
            self.relay_response_body(&mut flow, &response, &mut decoder, ahead, encoder)
                .await?
        };
        flow.timings.response_end = Some(Instant::now());
        flow.response = Some(response);
        self.cx.chain.flow_finished(self.conn, &flow).await;

        let reusable = streamed && upstream_keeps && framing != Framing::UntilClose;
        if !reusable {
            self.drop_upstream().await;
        }
        self.reusable_at_end = reusable;
        if keep {
            Ok(Next::Continue)
        } else {
            let _ = self.client.io.shutdown().await;
            Ok(Next::Close)
        }
    }

    /// Reads a response body ahead for the hooks, up to the body limit.
    async fn read_response_ahead(
        &mut self,
        decoder: &mut Decoder,
        framing: Framing,
    ) -> Result<Vec<Bytes>> {
        if matches!(framing, Framing::Length(n) if n > self.body_limit as u64) {
            return Ok(Vec::new());
        }
        let mut pieces = Vec::new();
        let mut total = 0usize;
        while total <= self.body_limit {
            match self.next_response_piece(decoder).await? {
                Some(piece) => {
                    total += piece.len();
                    pieces.push(piece);
                }
                None => break,
            }
        }
        Ok(pieces)
    }

    /// Streams the rest of the response body to the client. Returns whether the body
    /// was read whole (so the upstream connection is clean).
    async fn relay_response_body(
        &mut self,
        flow: &mut HttpFlow,
        response: &Response,
        decoder: &mut Decoder,
        ahead: Vec<Bytes>,
        encoder: Encoder,
    ) -> Result<bool> {
        if let Body::Full(b) = &response.body {
            self.client
                .io
                .write_all(b)
                .await
                .map_err(Error::client_io)?;
            flow.response_body_size = b.len() as u64;
            return Ok(decoder.is_done());
        }
        for piece in &ahead {
            encoder
                .write(&mut self.client.io, &mut self.scratch, piece)
                .await
                .map_err(Error::client_io)?;
            flow.response_body_size += piece.len() as u64;
        }
        if matches!(response.body, Body::Empty) {
            return Ok(decoder.is_done());
        }
        while let Some(piece) = self.next_response_piece(decoder).await? {
            encoder
                .write(&mut self.client.io, &mut self.scratch, &piece)
                .await
                .map_err(Error::client_io)?;
            flow.response_body_size += piece.len() as u64;
        }
        encoder
            .finish(&mut self.client.io, &decoder.trailers)
            .await
            .map_err(Error::client_io)?;
        Ok(true)
    }

    /// The next piece of the response body, `None` at its end.
    async fn next_response_piece(&mut self, decoder: &mut Decoder) -> Result<Option<Bytes>> {
        let timeout = self.settings.response_timeout;
        let Some(up) = self.upstream.as_mut() else {
            return Ok(None);
        };
        let mut eof = false;
        loop {
            match decoder
                .next(&mut up.peer.buf, eof)
                .map_err(Error::server_io)?
            {
                Piece::Data(b) => return Ok(Some(b)),
                Piece::End => return Ok(None),
                Piece::NeedMore => {}
            }
            let read = up.peer.fill(&self.cx.chain, self.conn, self.hooks);
            let n = tokio::time::timeout(timeout, read)
                .await
                .map_err(|_| Error::ResponseTimeout {
                    target: up.target.to_string(),
                    after: timeout,
                })?
                .map_err(Error::server_io)?;
            eof = n == 0;
        }
    }

    /// Reads a response head from the upstream.
    async fn read_response_head(&mut self) -> Result<parse::ResponseHead> {
        let timeout = self.settings.response_timeout;
        let max = self.settings.max_head.max(64 * 1024);
        let Some(up) = self.upstream.as_mut() else {
            return Err(no_upstream());
        };
        loop {
            if let Some(end) = parse::head_end(&up.peer.buf) {
                let raw = up.peer.buf.split_to(end).freeze();
                return parse::parse_response(&raw).map_err(|e| Error::BadResponse {
                    target: up.target.to_string(),
                    reason: match e {
                        HeadError::Malformed(r) => r,
                        HeadError::TooLarge => "too many header fields".into(),
                    },
                });
            }
            if up.peer.buf.len() > max {
                return Err(Error::BadResponse {
                    target: up.target.to_string(),
                    reason: "response head too large".into(),
                });
            }
            let read = up.peer.fill(&self.cx.chain, self.conn, self.hooks);
            match tokio::time::timeout(timeout, read).await {
                Err(_) => {
                    return Err(Error::ResponseTimeout {
                        target: up.target.to_string(),
                        after: timeout,
                    })
                }
                Ok(Err(e)) => return Err(Error::server_io(e)),
                Ok(Ok(0)) => {
                    return Err(Error::server_io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the upstream server closed the connection without a response",
                    )))
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// A `101 Switching Protocols`: pass it on and relay both ways from now on.
    async fn upgraded(&mut self, mut flow: HttpFlow, head: parse::ResponseHead) -> Result<Next> {
        let mut out = Vec::new();
        write_response_head(&mut out, (&head).into(), ResponseBody::AsIs, None);
        self.client
            .io
            .write_all(&out)
            .await
            .map_err(Error::client_io)?;
        flow.response = Some(Response {
            status: head.status,
            reason: head.reason,
            version: head.version,
            headers: head.headers,
            body: Body::Empty,
        });
        flow.timings.response_end = Some(Instant::now());
        self.cx.chain.flow_finished(self.conn, &flow).await;
        let Some(up) = self.upstream.take() else {
            return Ok(Next::Close);
        };
        let client = std::mem::replace(&mut self.client.io, Box::new(tokio::io::empty()));
        let client = crate::io::rewound(client, self.client.buf.split().freeze());
        let server = crate::io::rewound(up.peer.io, up.peer.buf.freeze());
        let websocket = flow
            .request
            .headers
            .get("upgrade")
            .is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket"));
        let tunnel = crate::protocol::Tunnel::new(client, server);
        let result = if websocket {
            crate::websocket::relay(self.cx, self.conn, tunnel).await
        } else {
            self.cx.relay(self.conn, tunnel, 16 * 1024, None).await
        };
        self.cx.retire_server(self.conn).await;
        result.map(|()| Next::Close)
    }

    /// A request a hook (or the proxy) answered: the response goes through the
    /// response hooks, then to the client.
    async fn answer_locally(
        &mut self,
        mut flow: HttpFlow,
        response: Response,
        keep: bool,
    ) -> Result<Next> {
        flow.response = Some(response);
        if let Verdict::Kill = self.cx.chain.response(self.conn, &mut flow).await {
            return Ok(Next::Close);
        }
        let Some(response) = flow.response.take() else {
            return Ok(Next::Close);
        };
        let keep = keep && self.settings.keep_alive;
        flow.response_body_size = response.body.bytes().map_or(0, |b| b.len() as u64);
        self.write_local(response.clone(), flow.request.version, keep)
            .await?;
        flow.timings.response_end = Some(Instant::now());
        flow.response = Some(response);
        self.cx.chain.flow_finished(self.conn, &flow).await;
        Ok(if keep { Next::Continue } else { Next::Close })
    }

    /// Writes a response made here (whole body) to the client.
    async fn write_local(
        &mut self,
        response: Response,
        version: Version,
        keep: bool,
    ) -> Result<()> {
        let mut out = Vec::new();
        let connection = connection_header(keep, version == Version::Http10);
        write_response_head(
            &mut out,
            (&response).into(),
            ResponseBody::Replaced,
            connection,
        );
        if let Body::Full(b) = &response.body {
            out.extend_from_slice(b);
        }
        self.client
            .io
            .write_all(&out)
            .await
            .map_err(Error::client_io)?;
        if !keep {
            let _ = self.client.io.shutdown().await;
        }
        Ok(())
    }

    /// `CONNECT host:port`: hooks may refuse it; otherwise the tunnel is set up by the
    /// protocol (TLS interception or raw relay).
    async fn connect(&mut self, head: RequestHead) -> Result<()> {
        let Some((host, port)) = parse_authority(&head.target, 443) else {
            let r = text_response(
                400,
                format!(
                    "mitm could not understand the CONNECT target {:?}; expected host:port.\n",
                    head.target
                ),
            );
            return self.write_local(r, head.version, false).await;
        };
        if let Scope::Tunnel(_) = self.scope {
            let r = text_response(
                405,
                "mitm does not accept CONNECT inside a tunnel.\n".into(),
            );
            return self.write_local(r, head.version, false).await;
        }
        let target = Target::new(host, port, true);
        self.conn.target = Some(target.clone());
        self.flows += 1;
        let mut flow = HttpFlow {
            id: self.flows,
            request: Request {
                method: head.method,
                target: target.clone(),
                path: head.target,
                version: head.version,
                headers: head.headers,
                body: Body::Empty,
            },
            response: None,
            timings: Timings::now(),
            request_body_size: 0,
            response_body_size: 0,
        };
        match self.cx.chain.request(self.conn, &mut flow).await {
            Verdict::Continue => {}
            Verdict::Respond(r) => {
                self.answer_locally(flow, r, false).await?;
                return Ok(());
            }
            Verdict::Kill => return Ok(()),
        }
        let client = std::mem::replace(&mut self.client.io, Box::new(tokio::io::empty()));
        let rest = self.client.buf.split().freeze();
        crate::protocol::http::tunnel(self.cx, self.conn, self.settings, client, rest, target).await
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

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn join(pieces: &[Bytes]) -> Bytes {
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

/// Writes a request head for the origin: origin-form target, no hop-by-hop fields,
/// framing fields that match the body to be sent.
fn write_request_head(out: &mut Vec<u8>, req: &Request, body_changed: bool, upgrade: bool) {
    let mut headers = req.headers.clone();
    parse::strip_hop_by_hop(&mut headers, upgrade);
    // `Expect: 100-continue` was answered by the proxy.
    headers.remove("expect");
    if upgrade {
        // Hooks see WebSocket messages only uncompressed.
        headers.remove("sec-websocket-extensions");
    }
    if body_changed {
        headers.remove("transfer-encoding");
        headers.remove("content-length");
        let len = req.body.bytes().map_or(0, Bytes::len);
        if len > 0 || carries_body(&req.method) {
            headers.append("Content-Length", Bytes::from(len.to_string()));
        }
    }
    if !headers.contains("host") {
        headers.append("Host", Bytes::from(host_value(&req.target)));
    }
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    headers.write_to(out);
    if upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `host[:port]` for a `Host` field, the port only when not the scheme's default.
fn host_value(t: &Target) -> String {
    let default = if t.tls { 443 } else { 80 };
    let host = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host.clone()
    };
    if t.port == default {
        host
    } else {
        format!("{host}:{}", t.port)
    }
}

fn carries_body(method: &str) -> bool {
    ["POST", "PUT", "PATCH"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

/// How the body of a response head being written relates to its framing fields.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ResponseBody {
    /// The body goes as the fields say.
    AsIs,
    /// A new whole body: `Content-Length` is set to it.
    Replaced,
    /// Chunked framing removed (for an HTTP/1.0 client): the body runs until close.
    Dechunked,
}

/// The parts of a response head that are written out.
struct ResponseHeadRef<'a> {
    status: u16,
    reason: &'a str,
    headers: &'a Headers,
    body: Option<&'a Body>,
}

impl<'a> From<&'a Response> for ResponseHeadRef<'a> {
    fn from(r: &'a Response) -> Self {
        ResponseHeadRef {
            status: r.status,
            reason: &r.reason,
            headers: &r.headers,
            body: Some(&r.body),
        }
    }
}

impl<'a> From<&'a parse::ResponseHead> for ResponseHeadRef<'a> {
    fn from(r: &'a parse::ResponseHead) -> Self {
        ResponseHeadRef {
            status: r.status,
            reason: &r.reason,
            headers: &r.headers,
            body: None,
        }
    }
}

fn write_response_head(
    out: &mut Vec<u8>,
    head: ResponseHeadRef<'_>,
    mode: ResponseBody,
    connection: Option<&str>,
) {
    let mut headers = head.headers.clone();
    let upgrade = head.status == 101;
    parse::strip_hop_by_hop(&mut headers, upgrade);
    match mode {
        ResponseBody::AsIs => {}
        ResponseBody::Replaced => {
            headers.remove("transfer-encoding");
            headers.remove("content-length");
            let len = head.body.and_then(Body::bytes).map_or(0, Bytes::len);
            if !(head.status == 204 || head.status == 304 || (100..200).contains(&head.status)) {
                headers.append("Content-Length", Bytes::from(len.to_string()));
            }
        }
        ResponseBody::Dechunked => {
            headers.remove("transfer-encoding");
        }
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(head.status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    headers.write_to(out);
    if upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
    if let Some(c) = connection {
        out.extend_from_slice(b"Connection: ");
        out.extend_from_slice(c.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
