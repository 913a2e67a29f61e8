//! The request half of an exchange: routing, the request hooks, reading the body
//! (ahead for the hooks, or streamed), sending it upstream, and `CONNECT`.

use super::*;

impl Session<'_> {
    /// One request and its response.
    pub(super) async fn exchange(&mut self, head: RequestHead) -> Result<Next> {
        let (target, path) = match self.route(&head) {
            Ok(route) => route,
            Err(reason) => {
                let r = text_response(
                    400,
                    format!("mitm could not route the request: {reason}.\n"),
                );
                self.write_local(r, &head.method, head.version, false)
                    .await?;
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
        if self.cx.is_self(&target) {
            return self.refuse_loop(&head.method, head.version).await;
        }
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
            ahead = match self.read_ahead(&mut incoming, framing).await {
                Ok(ahead) => ahead,
                Err(e @ Error::BadRequest { .. }) => return self.refuse_body(flow, e).await,
                Err(e) => return Err(e),
            };
            if incoming.decoder.is_done() {
                flow.request.body = Body::Full(join(&ahead));
                ahead.clear();
            }
        }
        let original = flow.request.body.clone();

        // The magic host is the proxy's own page; no origin behind it.
        let magic = self.settings.magic_host.as_deref() == Some(flow.request.target.host.as_str());
        let local = if magic {
            Some(magic::answer(&flow.request, &self.cx.ca))
        } else {
            match self.cx.chain.request(self.conn, &mut flow).await {
                Verdict::Continue => None,
                Verdict::Respond(r) => Some(r),
                Verdict::Kill => return Ok(Next::Close),
            }
        };
        // A body held whole (changed or not) is sent with a Content-Length of its own:
        // its original framing (chunked, say) no longer describes the bytes sent.
        let body_changed =
            flow.request.body != original || matches!(flow.request.body, Body::Full(_));
        if let Some(response) = local {
            // The request body is not wanted; the client connection can go on only if
            // nothing of it is left unread.
            let unread = !incoming.decoder.is_done();
            return self
                .answer_locally(flow, response, client_keeps && !unread)
                .await;
        }

        // An origin that speaks HTTP/2 gets the request over its HTTP/2 connection.
        let target = flow.request.target.clone();
        let h2 = match self.h2_link(&target, upgrade).await {
            Ok(link) => link,
            Err(e) => {
                tracing::warn!(error = %crate::error::Report(&e), url = %flow.request.url(), "request failed");
                let keep = client_keeps && incoming.decoder.is_done();
                return self.answer_locally(flow, error_response(&e), keep).await;
            }
        };
        if let Some(send) = h2 {
            return self
                .exchange_via_h2(flow, &mut incoming, ahead, body_changed, client_keeps, send)
                .await;
        }
        let sent = self
            .send_request(&mut flow, &mut incoming, ahead, body_changed, upgrade)
            .await;
        if let Err(e) = sent {
            self.drop_upstream().await;
            if let Error::BadRequest { .. } = e {
                return self.refuse_body(flow, e).await;
            }
            if e.side() == crate::Side::Client {
                return Err(e);
            }
            let keep = client_keeps && incoming.decoder.is_done();
            let response = error_response(&e);
            tracing::warn!(error = %crate::error::Report(&e), url = %flow.request.url(), "request failed");
            return self.answer_locally(flow, response, keep).await;
        }
        // A kept-alive upstream may have been closed by the origin just as the request
        // went out; a request that can be sent again is, once, on a fresh connection.
        let replayable = body_changed || !matches!(flow.request.body, Body::Streaming);
        let reused = self.upstream.as_ref().is_some_and(|u| u.reused);
        let mut first = None;
        if reused && replayable {
            let head = self.read_response_head().await;
            if head.as_ref().is_err_and(is_stale) {
                tracing::debug!("upstream closed a kept-alive connection; sending again");
                self.drop_upstream().await;
                let again = self
                    .send_request(&mut flow, &mut incoming, Vec::new(), body_changed, upgrade)
                    .await;
                if let Err(e) = again {
                    let response = error_response(&e);
                    return self.answer_locally(flow, response, client_keeps).await;
                }
            } else {
                first = Some(head);
            }
        }
        self.receive_response(flow, client_keeps, upgrade, first)
            .await
    }

    /// Answers a request whose body turned out malformed with a `400`; the connection
    /// ends, since where the next request would start is unknown.
    pub(super) async fn refuse_body(&mut self, flow: HttpFlow, e: Error) -> Result<Next> {
        tracing::warn!(error = %crate::error::Report(&e), url = %flow.request.url(), "request refused");
        self.answer_locally(flow, error_response(&e), false).await
    }

    /// Answers a request addressed to the proxy itself, which would come back around.
    pub(super) async fn refuse_loop(&mut self, method: &str, version: Version) -> Result<Next> {
        let r = text_response(
            508,
            "mitm refused a request addressed to the proxy itself: it would loop. Request \
             the real origin, or configure the client to use the proxy instead of calling it.\n"
                .into(),
        );
        self.write_local(r, method, version, false).await?;
        Ok(Next::Close)
    }

    /// Where a request goes, and its origin-form target.
    pub(super) fn route(
        &self,
        head: &RequestHead,
    ) -> std::result::Result<(Target, String), String> {
        let t = head.target.as_str();
        if let Some(absolute) = split_absolute(t) {
            return absolute.ok_or_else(|| "invalid host in the request URI".to_string());
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
    pub(super) async fn read_ahead(
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
    pub(super) async fn send_continue(&mut self, incoming: &mut Incoming) -> Result<()> {
        if incoming.expects_continue {
            incoming.expects_continue = false;
            self.send_client(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        Ok(())
    }

    /// The next piece of the request body, `None` at its end.
    pub(super) async fn next_request_piece(
        &mut self,
        incoming: &mut Incoming,
    ) -> Result<Option<Bytes>> {
        loop {
            let piece = incoming
                .decoder
                .next(&mut self.client.buf, false)
                .map_err(bad_body)?;
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

    /// Sends the request head and body upstream, retrying once on a fresh connection
    /// when a pooled one turns out to be closed before anything was sent.
    pub(super) async fn send_request(
        &mut self,
        flow: &mut HttpFlow,
        incoming: &mut Incoming,
        ahead: Vec<Bytes>,
        body_changed: bool,
        upgrade: bool,
    ) -> Result<()> {
        let target = flow.request.target.clone();
        self.ensure_upstream(&target).await?;
        // Until this exchange completes, the upstream is mid-message: if the session
        // ends before that, it must not go back to the pool.
        self.reusable_at_end = false;
        let mut head = Vec::with_capacity(512);
        write::request_head(&mut head, &flow.request, body_changed, upgrade);
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
        // TLS buffers what the socket did not take yet: the request must leave now.
        let up = self.upstream.as_mut().ok_or_else(no_upstream)?;
        up.peer.io.flush().await.map_err(Error::server_io)?;
        flow.timings.request_end = Some(Instant::now());
        Ok(())
    }

    pub(super) async fn send_request_body(
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
        #[cfg(target_os = "linux")]
        if self.settings.zero_copy && !self.hooks && encoder == Encoder::Plain {
            let up = self.upstream.as_mut().ok_or_else(no_upstream)?;
            let idle = self.settings.idle_timeout;
            let spliced = body::splice_rest(
                &mut self.client,
                &mut up.peer.io,
                &mut incoming.decoder,
                idle,
            )
            .await;
            match spliced {
                Ok(moved) => flow.request_body_size += moved,
                Err(e) => {
                    flow.request_body_size += e.moved;
                    return Err(match e.error.kind() {
                        _ if e.writing => Error::server_io(e.error),
                        std::io::ErrorKind::TimedOut => Error::ClientTimeout,
                        _ => Error::client_io(e.error),
                    });
                }
            }
        }
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

    /// `CONNECT host:port`: hooks may refuse it; otherwise the tunnel is set up by the
    /// protocol (TLS interception or raw relay).
    pub(super) async fn connect(&mut self, head: RequestHead) -> Result<()> {
        let Some((host, port)) = parse_authority(&head.target, 443) else {
            let r = text_response(
                400,
                format!(
                    "mitm could not understand the CONNECT target {:?}; expected host:port.\n",
                    head.target
                ),
            );
            return self.write_local(r, &head.method, head.version, false).await;
        };
        if let Scope::Tunnel(_) = self.scope {
            let r = text_response(
                405,
                "mitm does not accept CONNECT inside a tunnel.\n".into(),
            );
            return self.write_local(r, &head.method, head.version, false).await;
        }
        let target = Target::new(host, port, true);
        if self.cx.is_self(&target) {
            self.refuse_loop(&head.method, head.version).await?;
            return Ok(());
        }
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

/// Whether an upstream failure means the connection was closed before it answered
/// (so the request can go again on a fresh one).
fn is_stale(e: &Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    match e {
        Error::Io {
            side: crate::Side::Server,
            source,
        } => matches!(
            source.kind(),
            UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted
        ),
        _ => false,
    }
}

/// A request body the decoder cannot read: bad chunked framing is the client's fault
/// and gets a `400`; an early end stays an I/O error.
fn bad_body(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::InvalidData {
        Error::BadRequest {
            reason: format!("the request body's chunked framing is invalid ({e})"),
        }
    } else {
        Error::client_io(e)
    }
}
