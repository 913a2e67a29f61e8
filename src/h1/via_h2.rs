//! An HTTP/1 client's request to an origin that speaks HTTP/2: the exchange goes over
//! the origin's shared HTTP/2 connection and comes back framed for HTTP/1 (with a
//! `Content-Length` when known, chunked otherwise, until close for HTTP/1.0 clients).

use h2::client::SendRequest;

use super::*;
use crate::http2::{self, convert, Link};

impl Session<'_> {
    /// The HTTP/2 connection to use for `target`, if its origin speaks HTTP/2.
    /// Connecting anew offers HTTP/2 over TLS; an HTTP/1.1 answer becomes the current
    /// upstream as usual. Upgrades (WebSocket) always go over HTTP/1.1.
    pub(super) async fn h2_link(
        &mut self,
        target: &Target,
        upgrade: bool,
    ) -> Result<Option<SendRequest<Bytes>>> {
        if !target.tls || upgrade {
            return Ok(None);
        }
        if let Some(send) = self.cx.pool.h2(target) {
            return Ok(Some(send));
        }
        if self.upstream.as_ref().is_some_and(|u| &u.target == target) {
            return Ok(None);
        }
        if let Some(up) = self.cx.pool.take(target) {
            self.release(true).await;
            self.install(up, true).await;
            return Ok(None);
        }
        self.release(true).await;
        match http2::connect(self.cx, self.conn, target, self.settings, true).await? {
            Link::H2(send) => {
                self.cx.announce_server(self.conn).await;
                Ok(Some(send))
            }
            Link::H1(up) => {
                self.install(up, false).await;
                Ok(None)
            }
        }
    }

    /// One exchange over HTTP/2 for an HTTP/1 client.
    pub(super) async fn exchange_via_h2(
        &mut self,
        mut flow: HttpFlow,
        incoming: &mut Incoming,
        ahead: Vec<Bytes>,
        body_changed: bool,
        client_keeps: bool,
        send: SendRequest<Bytes>,
    ) -> Result<Next> {
        let target = flow.request.target.clone();
        let sent = self
            .send_via_h2(&mut flow, incoming, ahead, body_changed, send)
            .await;
        let (parts, recv) = match sent {
            Ok(answer) => answer,
            Err(e @ Error::BadRequest { .. }) => return self.refuse_body(flow, e).await,
            Err(e) if e.side() == crate::Side::Client => return Err(e),
            Err(e) => {
                self.cx.pool.drop_h2(&target);
                tracing::warn!(error = %crate::error::Report(&e), url = %flow.request.url(), "request failed");
                let keep = client_keeps && incoming.decoder.is_done();
                return self.answer_locally(flow, error_response(&e), keep).await;
            }
        };
        flow.timings.response_first_byte = Some(Instant::now());
        let mut response = convert::response_from(&parts);
        let mut recv = (!recv.is_end_stream()).then_some(recv);
        let mut ahead = Vec::new();
        match recv.as_mut() {
            None => response.body = Body::Empty,
            Some(r) if self.body_limit > 0 => {
                let (pieces, done) = http2::read_ahead(r, self.body_limit).await?;
                if done {
                    response.body = Body::Full(join(&pieces));
                    recv = None;
                } else {
                    ahead = pieces;
                }
            }
            Some(_) => {}
        }
        flow.response = Some(response);
        let original = flow.response.as_ref().map(|r| r.body.clone());
        if let Verdict::Kill = self.cx.chain.response(self.conn, &mut flow).await {
            return Ok(Next::Close);
        }
        let Some(mut response) = flow.response.take() else {
            return Ok(Next::Close);
        };
        let changed = Some(&response.body) != original.as_ref();
        let streaming = !changed && matches!(response.body, Body::Streaming);
        let bodiless = !parse::has_body(&flow.request.method, response.status);
        let client_10 = flow.request.version == Version::Http10;
        // HTTP/2 needs no length; HTTP/1 does: keep the origin's, or chunk, or (for
        // HTTP/1.0) end the body by closing.
        let (mode, encoder, close) = if bodiless {
            (ResponseBody::AsIs, Encoder::Plain, false)
        } else if !streaming {
            (ResponseBody::Replaced, Encoder::Plain, false)
        } else if response.headers.contains("content-length") {
            (ResponseBody::AsIs, Encoder::Plain, false)
        } else if client_10 {
            (ResponseBody::AsIs, Encoder::Plain, true)
        } else {
            response.headers.append("transfer-encoding", "chunked");
            (ResponseBody::AsIs, Encoder::Chunked, false)
        };
        let keep = self.settings.keep_alive && client_keeps && !close;
        let mut out = Vec::new();
        write::response_head(
            &mut out,
            (&response).into(),
            mode,
            connection_header(keep, client_10),
        );
        self.client
            .io
            .write_all(&out)
            .await
            .map_err(Error::client_io)?;
        if !bodiless {
            if !streaming {
                if let Some(b) = response.body.bytes() {
                    flow.response_body_size = b.len() as u64;
                    self.client
                        .io
                        .write_all(b)
                        .await
                        .map_err(Error::client_io)?;
                }
            } else {
                for piece in ahead {
                    flow.response_body_size += piece.len() as u64;
                    encoder
                        .write(&mut self.client.io, &mut self.scratch, &piece)
                        .await
                        .map_err(Error::client_io)?;
                }
                if let Some(mut r) = recv {
                    while let Some(piece) = http2::next_h2(&mut r).await? {
                        flow.response_body_size += piece.len() as u64;
                        encoder
                            .write(&mut self.client.io, &mut self.scratch, &piece)
                            .await
                            .map_err(Error::client_io)?;
                    }
                }
                encoder
                    .finish(&mut self.client.io, &[])
                    .await
                    .map_err(Error::client_io)?;
            }
        }
        self.client.io.flush().await.map_err(Error::client_io)?;
        flow.timings.response_end = Some(Instant::now());
        flow.response = Some(response);
        self.cx.chain.flow_finished(self.conn, &flow).await;
        if keep {
            Ok(Next::Continue)
        } else {
            let _ = self.client.io.shutdown().await;
            Ok(Next::Close)
        }
    }

    /// Sends the request (head and body) over HTTP/2 and waits for the response head.
    async fn send_via_h2(
        &mut self,
        flow: &mut HttpFlow,
        incoming: &mut Incoming,
        ahead: Vec<Bytes>,
        body_changed: bool,
        send: SendRequest<Bytes>,
    ) -> Result<(http::response::Parts, h2::RecvStream)> {
        let target = flow.request.target.to_string();
        let up = |e: h2::Error| Error::Io {
            side: crate::Side::Server,
            source: std::io::Error::other(format!("HTTP/2 with upstream {target}: {e}")),
        };
        let head = convert::http_request(&flow.request, body_changed).ok_or_else(|| {
            Error::BadRequest {
                reason: "the request cannot be expressed in HTTP/2".into(),
            }
        })?;
        let streaming = !body_changed && matches!(flow.request.body, Body::Streaming);
        let full = if streaming {
            Bytes::new()
        } else {
            flow.request.body.bytes().cloned().unwrap_or_default()
        };
        let mut send = send.ready().await.map_err(up)?;
        let end = !streaming && full.is_empty();
        let (response, mut out) = send.send_request(head, end).map_err(up)?;
        let server = crate::Side::Server;
        if streaming {
            for piece in ahead {
                flow.request_body_size += piece.len() as u64;
                http2::send_all(&mut out, piece, false, server).await?;
            }
            self.send_continue(incoming).await?;
            while let Some(piece) = self.next_request_piece(incoming).await? {
                flow.request_body_size += piece.len() as u64;
                http2::send_all(&mut out, piece, false, server).await?;
            }
            http2::send_all(&mut out, Bytes::new(), true, server).await?;
        } else {
            if !full.is_empty() {
                flow.request_body_size = full.len() as u64;
                http2::send_all(&mut out, full, true, server).await?;
            }
            // A replaced body: what is left of the original is read and dropped.
            while self.next_request_piece(incoming).await?.is_some() {}
        }
        flow.timings.request_end = Some(Instant::now());
        let timeout = self.settings.response_timeout;
        let response = tokio::time::timeout(timeout, response)
            .await
            .map_err(|_| Error::ResponseTimeout {
                target: flow.request.target.to_string(),
                after: timeout,
            })?
            .map_err(up)?;
        Ok(response.into_parts())
    }
}
