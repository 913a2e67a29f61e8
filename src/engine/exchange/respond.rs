//! The way back of an exchange: the origin's response through the response hooks to
//! the client (its body held for the hooks or streamed, spliced when nothing reads it),
//! a protocol switch, and the responses the proxy makes itself (a hook's answer, an
//! error page).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::origin::Origin;
use super::upgrade;
use super::{check_size, hold, set_response_length, BodyOut, Client, Exchange, Head, Outcome};
use crate::error::{Error, Report, Result, Side};
use crate::http::message::{join, Body, Response, Verdict};
use crate::http::page;
use crate::http::websocket::WebSocketEnd;
use crate::wire::h1::parse::has_body;

impl<C: Client> Exchange<'_, C> {
    /// The origin's response (its body of `length` bytes when the head says): hooks,
    /// then the client.
    pub(super) async fn respond(
        &mut self,
        origin: &mut Origin,
        head: Response,
        length: Option<u64>,
    ) -> Result<Outcome> {
        self.flow.response = Some(head);
        let ahead = match self.read_response_ahead(origin, length).await {
            Ok(ahead) => ahead,
            Err(e @ Error::BodyTooLarge { .. }) => return self.too_large(e).await,
            Err(e) => return Err(e),
        };
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
    pub(super) async fn response_hooks(&mut self) -> Result<Response> {
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
        if !matches!(response.body, Body::Streaming) {
            return Ok(Vec::new());
        }
        let max_body = self.settings.max_body;
        let Some(hold) = hold(self.limit, max_body, length, true)? else {
            return Ok(Vec::new());
        };
        let mut pieces = Vec::new();
        let mut total = 0u64;
        while total <= hold {
            match self.origin_body(origin).await? {
                Some(piece) => {
                    total += piece.len() as u64;
                    pieces.push(piece);
                    check_size(max_body, total, true)?;
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
    pub(super) async fn switch(&mut self, origin: Origin, head: Response) -> Result<Outcome> {
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
        let closed = std::sync::OnceLock::new();
        let relayed = upgrade::relay(
            self.cx,
            self.settings,
            self.client.conn(),
            client_io,
            server_io,
            websocket,
            &closed,
        )
        .await;
        if !websocket {
            return relayed.map(|()| Outcome::Close);
        }
        let error = relayed.err().map(Arc::new);
        let end = WebSocketEnd {
            at: std::time::SystemTime::now(),
            error: error.clone(),
            close: closed.into_inner(),
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
    pub(super) async fn answer(
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
    pub(super) async fn write_local(
        &mut self,
        mut response: Response,
        close: bool,
    ) -> Result<Outcome> {
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
    pub(super) async fn fail(&mut self, e: Error) -> Result<Outcome> {
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
        self.flow.undelivered = !malformed;
        // After a malformed body, where the next request would start is unknown.
        self.answer(page, Some(e), malformed).await
    }

    /// A body over the body size limit (`max_body`): the request's is answered `413`
    /// (and the client connection ends: the rest of its body is unread), the
    /// response's `502` (the origin connection is not used again: the rest of its body
    /// is unread too). The origin never sees a refused request.
    pub(super) async fn too_large(&mut self, e: Error) -> Result<Outcome> {
        let request = e.side() == Side::Client;
        tracing::warn!(error = %Report(&e), url = self.flow.request.url(), "body size limit reached");
        let page = page::error(&e);
        self.flow.undelivered = request;
        self.flow.response = None;
        self.answer(page, Some(e), request).await
    }

    /// Writes a response that is a head alone, after which the connection is another
    /// protocol's (`200` to `CONNECT`, `101`).
    pub(super) async fn write_head_only(&mut self, response: &Response, local: bool) -> Result<()> {
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
