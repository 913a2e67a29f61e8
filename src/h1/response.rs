//! The response half of an exchange: reading the head (interim responses passed on,
//! `101` switching to a relay), the response hooks, streaming the body to the client,
//! and responses the proxy makes itself.

use super::*;

/// Most body bytes sent in the same write as the response head.
const COALESCE_LIMIT: usize = 64 * 1024;

impl Session<'_> {
    /// Reads the response (skipping interim ones, which are passed on), runs the
    /// response hooks and passes it to the client.
    pub(super) async fn receive_response(
        &mut self,
        mut flow: HttpFlow,
        client_keeps: bool,
        upgrade: bool,
        first: Option<Result<parse::ResponseHead>>,
    ) -> Result<Next> {
        let mut first = first;
        let head = loop {
            let read = match first.take() {
                Some(head) => head,
                None => self.read_response_head().await,
            };
            let head = match read {
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
                    write::response_head(&mut interim, (&head).into(), ResponseBody::AsIs, None);
                    self.send_client(&interim).await?;
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
        // As for requests: a body held whole goes with its own Content-Length.
        let body_changed =
            Some(&response.body) != original.as_ref() || matches!(response.body, Body::Full(_));
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
        let encoder = if framing == Framing::Chunked && !client_10 {
            Encoder::Chunked
        } else {
            Encoder::Plain
        };
        let has_body = parse::has_body(&flow.request.method, response.status);
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        response.version = Version::Http11;
        let connection = connection_header(keep, client_10);
        write::response_head(&mut out, (&response).into(), mode, connection);
        // Body bytes already at hand go out with the head, in one write: a small
        // response then costs one syscall and one segment, not two.
        if has_body && body_changed {
            if let Body::Full(b) = &response.body {
                out.extend_from_slice(b);
                flow.response_body_size = b.len() as u64;
            }
        } else if has_body && encoder == Encoder::Plain {
            let up = self.upstream.as_mut().ok_or_else(no_upstream)?;
            for piece in ahead.drain(..) {
                flow.response_body_size += piece.len() as u64;
                out.extend_from_slice(&piece);
            }
            while out.len() < COALESCE_LIMIT {
                match decoder
                    .next(&mut up.peer.buf, false)
                    .map_err(Error::server_io)?
                {
                    Piece::Data(b) => {
                        flow.response_body_size += b.len() as u64;
                        out.extend_from_slice(&b);
                    }
                    Piece::NeedMore | Piece::End => break,
                }
            }
        }
        let written = self.client.io.write_all(&out).await;
        self.scratch = out;
        written.map_err(Error::client_io)?;

        let streamed = if !has_body || body_changed {
            // HEAD, 204, 304: whatever a hook put in the body stays out of the stream.
            // A replaced body went with the head; the origin's own is not passed on, so
            // the connection is reusable only if it was already read whole.
            decoder.is_done()
        } else {
            self.relay_response_body(&mut flow, &response, &mut decoder, ahead, encoder)
                .await?
        };
        // TLS buffers what the socket did not take yet: the response must leave now,
        // not with the next one.
        self.client.io.flush().await.map_err(Error::client_io)?;
        flow.timings.response_end = Some(Instant::now());
        flow.response = Some(response);
        self.cx.chain.flow_finished(self.conn, &flow).await;

        let reusable = streamed && upstream_keeps && framing != Framing::UntilClose;
        if !reusable {
            self.drop_upstream().await;
        }
        self.reusable_at_end = reusable;
        if let Some(current) = self.upstream.as_mut() {
            // From now on it is a kept-alive connection the origin may close.
            current.reused = true;
        }
        if keep {
            Ok(Next::Continue)
        } else {
            let _ = self.client.io.shutdown().await;
            Ok(Next::Close)
        }
    }

    /// Reads a response body ahead for the hooks, up to the body limit.
    pub(super) async fn read_response_ahead(
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
    pub(super) async fn relay_response_body(
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
        #[cfg(target_os = "linux")]
        if self.settings.zero_copy && !self.hooks && encoder == Encoder::Plain {
            self.splice_response_body(flow, decoder).await?;
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

    /// Moves a large plain body from a TCP origin to a TCP client with `splice(2)`,
    /// when nothing needs to see its bytes; leaves the decoder done. Does nothing (the
    /// buffered path then runs) where splicing does not apply.
    #[cfg(target_os = "linux")]
    async fn splice_response_body(
        &mut self,
        flow: &mut HttpFlow,
        decoder: &mut Decoder,
    ) -> Result<()> {
        let timeout = self.settings.response_timeout;
        let Some(up) = self.upstream.as_mut() else {
            return Ok(());
        };
        let spliced = body::splice_rest(&mut up.peer, &mut self.client.io, decoder, timeout).await;
        match spliced {
            Ok(moved) => {
                flow.response_body_size += moved;
                Ok(())
            }
            Err(e) => {
                flow.response_body_size += e.moved;
                Err(match e.error.kind() {
                    _ if e.writing => Error::client_io(e.error),
                    std::io::ErrorKind::TimedOut => Error::ResponseTimeout {
                        target: up.target.to_string(),
                        after: timeout,
                    },
                    _ => Error::server_io(e.error),
                })
            }
        }
    }

    /// The next piece of the response body, `None` at its end.
    pub(super) async fn next_response_piece(
        &mut self,
        decoder: &mut Decoder,
    ) -> Result<Option<Bytes>> {
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
    pub(super) async fn read_response_head(&mut self) -> Result<parse::ResponseHead> {
        let Some(up) = self.upstream.as_mut() else {
            return Err(no_upstream());
        };
        let hooks = (&self.cx.chain, &*self.conn, self.hooks);
        read_response_head(&mut up.peer, &up.target, self.settings, hooks).await
    }

    /// A `101 Switching Protocols`: pass it on and relay both ways from now on.
    pub(super) async fn upgraded(
        &mut self,
        mut flow: HttpFlow,
        head: parse::ResponseHead,
    ) -> Result<Next> {
        let mut out = Vec::new();
        write::response_head(&mut out, (&head).into(), ResponseBody::AsIs, None);
        self.send_client(&out).await?;
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
    pub(super) async fn answer_locally(
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
        if parse::has_body(&flow.request.method, response.status) {
            flow.response_body_size = response.body.bytes().map_or(0, |b| b.len() as u64);
        }
        let (method, version) = (flow.request.method.clone(), flow.request.version);
        self.write_local(response.clone(), &method, version, keep)
            .await?;
        flow.timings.response_end = Some(Instant::now());
        flow.response = Some(response);
        self.cx.chain.flow_finished(self.conn, &flow).await;
        Ok(if keep { Next::Continue } else { Next::Close })
    }

    /// Writes a response made here (whole body) to the client.
    pub(super) async fn write_local(
        &mut self,
        response: Response,
        method: &str,
        version: Version,
        keep: bool,
    ) -> Result<()> {
        let connection = connection_header(keep, version == Version::Http10);
        let out = response_bytes(&response, method, connection);
        self.send_client(&out).await?;
        if !keep {
            let _ = self.client.io.shutdown().await;
        }
        Ok(())
    }
}

/// Reads a response head from an upstream `peer` (through the data hooks when the
/// third part of `hooks` says so).
pub(crate) async fn read_response_head(
    peer: &mut Peer,
    target: &Target,
    settings: &Settings,
    hooks: (&crate::middleware::Chain, &Connection, bool),
) -> Result<parse::ResponseHead> {
    let timeout = settings.response_timeout;
    let max = settings.max_head.max(64 * 1024);
    let (chain, conn, use_hooks) = hooks;
    loop {
        if let Some(end) = parse::head_end(&peer.buf) {
            let raw = peer.buf.split_to(end).freeze();
            let fields = settings.max_headers.max(parse::DEFAULT_MAX_HEADERS);
            return parse::parse_response(&raw, fields).map_err(|e| Error::BadResponse {
                target: target.to_string(),
                reason: match e {
                    HeadError::Malformed(r) => r,
                    HeadError::TooLarge => "too many header fields".into(),
                },
            });
        }
        if peer.buf.len() > max {
            return Err(Error::BadResponse {
                target: target.to_string(),
                reason: "response head too large".into(),
            });
        }
        let read = peer.fill(chain, conn, use_hooks);
        match tokio::time::timeout(timeout, read).await {
            Err(_) => {
                return Err(Error::ResponseTimeout {
                    target: target.to_string(),
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
