//! The client end of an exchange, whatever the version: what the exchange asks of an
//! HTTP/1 connection or an HTTP/2 stream. Implemented in `serve_h1` and `serve_h2`.

use std::future::Future;

use bytes::Bytes;

use crate::core::{Connection, Target};
use crate::engine::context::Context;
use crate::error::Result;
use crate::http::message::{Headers, Response};
use crate::net::io::BoxIo;
use crate::upstream::route::Route;
use crate::upstream::{Link, Want};

/// How a response body follows its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyOut {
    /// None at all: the method or status has none (`HEAD`, 1xx, 204, 304), whatever
    /// the head's fields say.
    None,
    /// A body held whole, of this many bytes; its `Content-Length` is set.
    Full(u64),
    /// A body that streams as it comes, of this length when the origin said.
    Stream(Option<u64>),
}

/// A response head on its way to the client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head<'a> {
    pub response: &'a Response,
    pub body: BodyOut,
    /// Made by the proxy (a hook's answer, an error page): its fields are its own.
    pub local: bool,
    /// The client connection must end after it (where the next request would start
    /// is unknown).
    pub close: bool,
    /// Why the proxy answered itself, for an error page (shared with the flow).
    pub error: Option<&'a std::sync::Arc<crate::error::Error>>,
}

/// The client end of one exchange.
///
/// Writes are buffered just enough that a head goes out with the first body bytes in
/// one write; everything is on the wire once [`finish`](Self::finish) returns.
pub(crate) trait Client: Send {
    /// The connection hooks are given.
    fn conn(&self) -> &Connection;

    /// Whether the raw data hooks see this client's bytes (and its origin's), so that
    /// bodies may not be moved around the proxy's buffers.
    fn data_hooks(&self) -> bool;

    /// The next piece of the request body, `None` at its end. Sends `100 Continue`
    /// first if the client waits for it.
    fn body(&mut self) -> impl Future<Output = Result<Option<Bytes>>> + Send;

    /// Whether the request body has been read to its end (or there is none).
    fn body_done(&self) -> bool;

    /// The request body's trailers, once it has been read to its end.
    fn trailers(&mut self) -> Option<Headers>;

    /// Whether the rest of the request body is large and plain enough to be worth
    /// [`splice_body`](Self::splice_body).
    fn worth_splicing(&self) -> bool {
        false
    }

    /// Moves the rest of the request body to `to` without looking at it, when both
    /// ends allow it (`splice(2)`); returns the bytes moved (0: nothing done, read it
    /// with [`body`](Self::body)).
    fn splice_body(&mut self, _to: &mut BoxIo) -> impl Future<Output = Result<u64>> + Send {
        async { Ok(0) }
    }

    /// Passes an interim (1xx) response on.
    fn interim(&mut self, response: &Response) -> impl Future<Output = Result<()>> + Send;

    /// Starts the response.
    fn start(&mut self, head: Head<'_>) -> impl Future<Output = Result<()>> + Send;

    /// Sends a piece of the response body.
    fn send(&mut self, data: Bytes) -> impl Future<Output = Result<()>> + Send;

    /// Ends the response, with trailers if there are.
    fn finish(&mut self, trailers: Option<&Headers>) -> impl Future<Output = Result<()>> + Send;

    /// Where the rest of a plainly framed response body may be written directly (an
    /// HTTP/1 client), once what is queued is out; `None` otherwise.
    fn raw_sink(&mut self) -> impl Future<Output = Result<Option<&mut BoxIo>>> + Send {
        async { Ok(None) }
    }

    /// The client's stream after a `101 Switching Protocols`, with what it sent past
    /// the request; `None` when this client cannot switch (HTTP/2). Default: `None`.
    fn upgraded(&mut self) -> Option<BoxIo> {
        None
    }

    /// Whether this client can switch protocols (HTTP/1 only). Default: false.
    fn can_upgrade(&self) -> bool {
        false
    }

    /// A link to `target` for this exchange: from what the connection holds, or the
    /// server's pool, or a new connection; announced to the hooks as the connection's
    /// view of its server requires.
    fn origin(
        &mut self,
        cx: &Context,
        route: &Route,
        target: &Target,
        want: Want,
    ) -> impl Future<Output = Result<Link>> + Send;

    /// The exchange is done with `link`; `reusable` when its last exchange left it
    /// clean for the next one.
    fn release(&mut self, cx: &Context, link: Link, reusable: bool);

    /// Drops the client without an answer (a hook's `Verdict::Kill`).
    fn kill(&mut self);
}
