//! A request body streaming to its origin, once for both kinds of origin: the pieces
//! read ahead for the hooks, then the rest from the client (moved with `splice(2)` when
//! nothing needs to see it and both ends allow it), then its trailers.

use std::future::Future;

use bytes::Bytes;
use h2::SendStream;

use super::client::Client;
use super::origin::H1Origin;
use super::prefix::Prefix;
use crate::error::{Result, Side};
use crate::http::message::Headers;
use crate::wire::h2 as http2;

/// Where a request body goes: an HTTP/1.1 connection or an HTTP/2 stream.
pub(super) trait BodySink: Send {
    /// Sends one piece.
    fn piece(&mut self, piece: Bytes) -> impl Future<Output = Result<()>> + Send;

    /// Ends the body, with its trailers if the client sent any.
    fn end(&mut self, trailers: Option<Headers>) -> impl Future<Output = Result<()>> + Send;

    /// Moves the rest of the body from `client` without looking at it, when both ends
    /// allow it; the bytes moved (0: nothing done).
    fn splice_rest<C: Client>(
        &mut self,
        _client: &mut C,
    ) -> impl Future<Output = Result<u64>> + Send {
        async { Ok(0) }
    }
}

/// What [`pump`] needs of the exchange besides the body's destination.
pub(super) struct Pumped<'a, C> {
    pub client: &'a mut C,
    /// Keeps the body's first bytes for `flow_finished`.
    pub prefix: &'a mut Prefix,
    /// Set once a piece is taken from the client past those read ahead: the request
    /// can then not be sent again.
    pub pulled: &'a mut bool,
    /// Whether the rest may be moved with `splice(2)` (zero copy is on).
    pub may_splice: bool,
}

/// Streams a request body to `sink`: `ahead` (the pieces the hooks saw), the rest from
/// the client, then the end with the client's trailers. Returns the bytes sent. The
/// prefix starts again from the first byte: a request sent again on a fresh connection
/// is kept again from its start.
pub(super) async fn pump<C: Client, S: BodySink>(
    from: Pumped<'_, C>,
    ahead: &[Bytes],
    sink: &mut S,
) -> Result<u64> {
    let Pumped {
        client,
        prefix,
        pulled,
        may_splice,
    } = from;
    prefix.clear();
    let mut sent = 0u64;
    for piece in ahead {
        prefix.keep(piece);
        sink.piece(piece.clone()).await?;
        sent += piece.len() as u64;
    }
    *pulled = true;
    if may_splice && !client.data_hooks() && !prefix.wants_more() && client.worth_splicing() {
        sent += sink.splice_rest(client).await?;
    }
    while let Some(piece) = client.body().await? {
        prefix.keep(&piece);
        sent += piece.len() as u64;
        sink.piece(piece).await?;
    }
    sink.end(client.trailers()).await?;
    Ok(sent)
}

/// An HTTP/1.1 origin connection, framing the body as its head said.
pub(super) struct H1Sink<'a>(pub &'a mut H1Origin);

impl BodySink for H1Sink<'_> {
    async fn piece(&mut self, piece: Bytes) -> Result<()> {
        self.0.send(&piece).await
    }

    async fn end(&mut self, trailers: Option<Headers>) -> Result<()> {
        self.0.end(trailers.as_ref()).await
    }

    #[cfg(target_os = "linux")]
    async fn splice_rest<C: Client>(&mut self, client: &mut C) -> Result<u64> {
        let Some(sink) = self.0.raw_sink().await? else {
            return Ok(0);
        };
        let moved = client.splice_body(sink).await?;
        self.0.moved(moved);
        Ok(moved)
    }
}

/// An HTTP/2 stream to the origin.
pub(super) struct H2Sink<'a>(pub &'a mut SendStream<Bytes>);

impl BodySink for H2Sink<'_> {
    async fn piece(&mut self, piece: Bytes) -> Result<()> {
        http2::send_all(self.0, piece, false, Side::Server).await
    }

    async fn end(&mut self, trailers: Option<Headers>) -> Result<()> {
        match trailers {
            Some(t) => self
                .0
                .send_trailers(http2::convert::map_from(&t, &[]))
                .map_err(|e| http2::error(Side::Server, e)),
            None => http2::send_all(self.0, Bytes::new(), true, Side::Server).await,
        }
    }
}
