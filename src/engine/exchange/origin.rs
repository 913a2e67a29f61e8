//! The origin end of an exchange: an HTTP/1.1 connection (one exchange at a time) or a
//! stream of a shared HTTP/2 connection, over the wire engines. Each sends a request
//! head and body, and reads a response head and body; the exchange drives them.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::{RecvStream, SendStream};
use tokio::io::AsyncWriteExt;

use super::Failure;
use crate::core::{Connection, Flow, Target};
use crate::error::{Error, Result, Side};
use crate::http::message::{Headers, Request, Response};
use crate::http::settings::{Settings, DEFAULT_MAX_HEADERS};
use crate::middleware::Chain;
use crate::net::io::{rewound, BoxIo};
use crate::upstream::pool::{InUse, Shared};
use crate::upstream::route::{ProxyScheme, Route};
use crate::upstream::{Link, Permit, Upstream};
use crate::wire::h1::body::{Decoder, Encoder, Piece};
use crate::wire::h1::parse::{self, HeadError, ResponseHead};
use crate::wire::h1::write::{self, RequestOptions};
use crate::wire::h1::{Buffers, Peer};
use crate::wire::h2::{self as http2, convert};

/// Most response head accepted from an origin, whatever the client limit.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// One exchange's origin.
pub(crate) enum Origin {
    H1(H1Origin),
    H2(H2Origin),
}

impl Origin {
    /// The origin end over `link`. `hooks` says whether its bytes go through the data
    /// hooks.
    pub(crate) fn new(link: Link, hooks: bool) -> Self {
        match link {
            Link::H1 { up, reused } => Origin::H1(H1Origin::new(up, reused, hooks)),
            Link::H2 {
                shared,
                target,
                route,
                reused,
            } => Origin::H2(H2Origin::new(shared, target, route, reused)),
        }
    }

    /// Whether it came from the pool (its origin may have closed it meanwhile).
    pub(crate) fn reused(&self) -> bool {
        match self {
            Origin::H1(o) => o.reused,
            Origin::H2(o) => o.reused,
        }
    }

    /// The link back, to release.
    pub(crate) fn into_link(self) -> Link {
        match self {
            Origin::H1(o) => o.into_link(),
            Origin::H2(o) => o.into_link(),
        }
    }
}

/// An HTTP/1.1 connection used for one exchange.
pub(crate) struct H1Origin {
    peer: Peer,
    addr: std::net::SocketAddr,
    target: Target,
    route: Route,
    facts: std::sync::Arc<crate::core::ServerFacts>,
    /// The request went to an HTTP proxy in absolute form: a `407` is the proxy's.
    via_proxy: bool,
    permit: Permit,
    reused: bool,
    /// Whether its bytes go through the data hooks.
    hooks: bool,
    /// Request bytes not written yet: the head waits for the first body bytes.
    out: Vec<u8>,
    /// Request bytes handed to the socket in this exchange.
    written: u64,
    /// How the request body is framed.
    encoder: Encoder,
    /// The response body's framing, once its head is read.
    decoder: Decoder,
    /// Whether the origin keeps the connection open after this response.
    keeps: bool,
}

impl H1Origin {
    fn new(up: Upstream, reused: bool, hooks: bool) -> Self {
        let Buffers { read, mut write } = up.buffers;
        write.clear();
        H1Origin {
            peer: Peer::with_buffer(up.io, read),
            addr: up.addr,
            target: up.target,
            route: up.route,
            facts: up.facts,
            via_proxy: false,
            permit: up.permit,
            reused,
            hooks,
            out: write,
            written: 0,
            encoder: Encoder::Plain,
            decoder: Decoder::new(parse::Framing::Empty),
            keeps: false,
        }
    }

    /// Request bytes written to the socket so far in this exchange: 0 means the origin
    /// saw nothing of it.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Queues the request head (written with the first body bytes, or at the end).
    /// A body of unknown length is sent chunked.
    pub(crate) fn head(&mut self, req: &Request, opts: RequestOptions) {
        self.out.clear();
        self.written = 0;
        self.encoder = if opts.chunked {
            Encoder::Chunked
        } else {
            Encoder::Plain
        };
        // Plain HTTP through an HTTP proxy: absolute form, and the proxy's credentials
        // (a tunnel through it is a connection to the origin like any other).
        let proxy = match self.route.upstream_proxy() {
            Some(p) if !self.target.tls && p.scheme() != ProxyScheme::Socks5 && !opts.upgrade => {
                Some(p)
            }
            _ => None,
        };
        self.via_proxy = proxy.is_some();
        let authorization = proxy.and_then(|p| p.basic_authorization());
        let form = match proxy {
            Some(_) => write::Form::Proxy {
                authorization: authorization.as_deref(),
            },
            None => write::Form::Origin,
        };
        write::request_head(&mut self.out, req, opts, form);
    }

    /// Writes what is queued plus `data` (framed), now.
    pub(crate) async fn send(&mut self, data: &[u8]) -> Result<()> {
        if self.encoder == Encoder::Plain && data.len() > 16 * 1024 {
            // A large piece goes as it is, after what is queued: no copy.
            self.write_out().await?;
            self.write(data).await?;
        } else {
            self.encoder.encode(&mut self.out, data);
            self.write_out().await?;
        }
        self.flush().await
    }

    /// Ends the request body (the last chunk and `trailers`, for chunked) and sends
    /// everything queued.
    pub(crate) async fn end(&mut self, trailers: Option<&Headers>) -> Result<()> {
        if self.encoder == Encoder::Chunked {
            let raw = trailers.map(write::trailer_lines).unwrap_or_default();
            self.encoder.finish(&mut self.out, &raw);
        }
        if self.out.is_empty() {
            // Everything went with the last piece, flushed then.
            return Ok(());
        }
        self.write_out().await?;
        self.flush().await
    }

    /// Where a plain request body may be written directly, once what is queued is out.
    pub(crate) async fn raw_sink(&mut self) -> Result<Option<&mut BoxIo>> {
        if self.encoder != Encoder::Plain {
            return Ok(None);
        }
        self.write_out().await?;
        Ok(Some(&mut self.peer.io))
    }

    /// Counts bytes moved around the proxy's buffers as written.
    pub(crate) fn moved(&mut self, n: u64) {
        self.written += n;
    }

    async fn write_out(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let result = self.write(&out).await;
        self.out = out;
        self.out.clear();
        result
    }

    async fn write(&mut self, data: &[u8]) -> Result<()> {
        // `write_all` may fail after part of the bytes went out: count what did.
        let mut rest = data;
        while !rest.is_empty() {
            match self.peer.io.write(rest).await {
                Ok(0) => return Err(Error::server_io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.written += n as u64;
                    rest = &rest[n..];
                }
                Err(e) => return Err(Error::server_io(e)),
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        // TLS keeps what the socket did not take: the request must leave now.
        self.peer.io.flush().await.map_err(Error::server_io)
    }

    /// Reads the next response head (an interim one included), within the response
    /// timeout.
    pub(crate) async fn read_head(
        &mut self,
        settings: &Settings,
        chain: &Chain,
        conn: &Connection,
    ) -> Result<ResponseHead> {
        let timeout = settings.response_timeout;
        loop {
            let head = self.peer.head(MAX_RESPONSE_HEAD).map_err(|e| self.bad(e))?;
            if let Some(raw) = head {
                let fields = settings.max_headers.max(DEFAULT_MAX_HEADERS);
                let head = parse::parse_response(&raw, fields).map_err(|e| self.bad(e))?;
                if self.via_proxy && head.status == 407 {
                    // The upstream proxy's refusal, not the origin's answer: passed on,
                    // it would ask the client for the wrong proxy's credentials.
                    let proxy = self.route.upstream_proxy().map(ToString::to_string);
                    return Err(Error::UpstreamProxy {
                        proxy: proxy.unwrap_or_default(),
                        reason: format!("refused the request: 407 {}", head.reason),
                    });
                }
                return Ok(head);
            }
            let hooks = self
                .hooks
                .then(|| chain.data_hooks(conn, Flow::ServerToClient));
            let read = self.peer.fill(hooks.as_ref());
            match tokio::time::timeout(timeout, read).await {
                Err(_) => return Err(self.timed_out(timeout)),
                Ok(Err(e)) => return Err(Error::server_io(e)),
                Ok(Ok(0)) => {
                    return Err(Error::server_io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream server closed the connection without a response",
                    )))
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Takes the final response head: sets up reading its body. Refuses a response
    /// whose framing is ambiguous.
    pub(crate) fn start_body(&mut self, method: &str, head: &ResponseHead) -> Result<Option<u64>> {
        let framing =
            parse::response_framing(method, head.status, &head.headers).map_err(|e| self.bad(e))?;
        self.keeps = parse::keeps_alive(head.version, &head.headers)
            && framing != parse::Framing::UntilClose;
        self.decoder = Decoder::new(framing);
        Ok(match framing {
            parse::Framing::Length(n) => Some(n),
            parse::Framing::Empty => Some(0),
            _ => None,
        })
    }

    /// The next piece of the response body, `None` at its end.
    pub(crate) async fn body(
        &mut self,
        settings: &Settings,
        chain: &Chain,
        conn: &Connection,
    ) -> Result<Option<Bytes>> {
        let timeout = settings.response_timeout;
        let mut eof = false;
        loop {
            match self
                .decoder
                .next(&mut self.peer.buf, eof)
                .map_err(Error::server_io)?
            {
                Piece::Data(b) => return Ok(Some(b)),
                Piece::End => return Ok(None),
                Piece::NeedMore => {}
            }
            let hooks = self
                .hooks
                .then(|| chain.data_hooks(conn, Flow::ServerToClient));
            let read = self.peer.fill(hooks.as_ref());
            let n = tokio::time::timeout(timeout, read)
                .await
                .map_err(|_| self.timed_out(timeout))?
                .map_err(Error::server_io)?;
            eof = n == 0;
        }
    }

    /// The response body's trailers, once it has been read to its end.
    pub(crate) fn trailers(&mut self) -> Option<Headers> {
        parse::trailers(&std::mem::take(&mut self.decoder.trailers))
    }

    /// Whether the rest of the response body is worth moving with `splice(2)`.
    #[cfg(target_os = "linux")]
    pub(crate) fn worth_splicing(&self) -> bool {
        crate::wire::h1::body::worth_splicing(&self.peer, &self.decoder)
    }

    /// Moves the rest of a plain response body to `to` with `splice(2)` when both are
    /// TCP sockets; returns the bytes moved (0: nothing done).
    #[cfg(target_os = "linux")]
    pub(crate) async fn splice_to(&mut self, to: &mut BoxIo, settings: &Settings) -> Result<u64> {
        let timeout = settings.response_timeout;
        let spliced =
            crate::wire::h1::body::splice_rest(&mut self.peer, to, &mut self.decoder, timeout)
                .await;
        match spliced {
            Ok(moved) => Ok(moved),
            Err(e) => Err(match e.error.kind() {
                _ if e.writing => Error::client_io(e.error),
                io::ErrorKind::TimedOut => self.timed_out(timeout),
                _ => Error::server_io(e.error),
            }),
        }
    }

    /// Whether the connection can carry another exchange: the response was read whole,
    /// the origin keeps it open, and nothing unexpected follows.
    pub(crate) fn reusable(&self) -> bool {
        self.keeps && self.decoder.is_done() && self.peer.buf.is_empty()
    }

    /// The connection as a plain stream (after a protocol switch), with what was read
    /// past the response head put back in front.
    pub(crate) fn into_io(self) -> BoxIo {
        let (io, buf) = self.peer.into_parts();
        rewound(io, buf.freeze())
    }

    fn into_link(self) -> Link {
        let reused = self.reused;
        let (io, read) = self.peer.into_parts();
        Link::H1 {
            up: Upstream {
                io,
                addr: self.addr,
                target: self.target,
                route: self.route,
                permit: self.permit,
                buffers: Buffers {
                    read,
                    write: self.out,
                },
                facts: self.facts,
            },
            reused,
        }
    }

    fn bad(&self, e: HeadError) -> Error {
        Error::BadResponse {
            target: self.target.to_string(),
            reason: match e {
                HeadError::Malformed(r) => r,
                HeadError::TooLarge => "response head too large".into(),
            },
        }
    }

    fn timed_out(&self, after: Duration) -> Error {
        Error::ResponseTimeout {
            target: self.target.to_string(),
            after,
        }
    }
}

/// A stream of a shared HTTP/2 connection used for one exchange.
pub(crate) struct H2Origin {
    shared: Shared,
    target: Target,
    route: Route,
    reused: bool,
    /// Counts the exchange as in flight on the connection.
    _in_use: InUse,
    recv: Option<RecvStream>,
}

impl H2Origin {
    fn new(shared: Shared, target: Target, route: Route, reused: bool) -> Self {
        let in_use = shared.in_use();
        H2Origin {
            shared,
            target,
            route,
            reused,
            _in_use: in_use,
            recv: None,
        }
    }

    /// Opens a stream with the request head; `end` when there is no body.
    pub(crate) async fn open(
        &mut self,
        req: &Request,
        end: bool,
    ) -> std::result::Result<(ResponseFuture, SendStream<Bytes>), Failure> {
        let head = convert::http_request(req).ok_or_else(|| Failure {
            error: Error::BadRequest {
                reason: "the request cannot be expressed in HTTP/2".into(),
            },
            unprocessed: false,
        })?;
        let not_sent = |e| Failure {
            error: self.error(e),
            unprocessed: true,
        };
        let mut send = self.shared.send.clone().ready().await.map_err(not_sent)?;
        send.send_request(head, end).map_err(not_sent)
    }

    /// Waits for the response head, within the response timeout.
    pub(crate) async fn response(
        target: &Target,
        answer: ResponseFuture,
        timeout: Duration,
    ) -> std::result::Result<(Response, RecvStream), Failure> {
        let got = tokio::time::timeout(timeout, answer)
            .await
            .map_err(|_| Failure {
                error: Error::ResponseTimeout {
                    target: target.to_string(),
                    after: timeout,
                },
                unprocessed: false,
            })?;
        let response = got.map_err(|e| {
            // RFC 9113 §8.7: a refused stream, or one above a GOAWAY's last stream id,
            // was not processed.
            let unprocessed =
                e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote());
            Failure {
                error: h2_error(target, e),
                unprocessed,
            }
        })?;
        let (parts, recv) = response.into_parts();
        Ok((convert::response_from(&parts), recv))
    }

    /// Takes the response body's stream.
    pub(crate) fn set_body(&mut self, recv: RecvStream) {
        self.recv = Some(recv);
    }

    /// The next piece of the response body, `None` at its end.
    pub(crate) async fn body(&mut self) -> Result<Option<Bytes>> {
        match self.recv.as_mut() {
            None => Ok(None),
            Some(recv) => http2::next_data(recv, Side::Server).await,
        }
    }

    /// The response body's trailers, once it has been read to its end.
    pub(crate) async fn trailers(&mut self) -> Result<Option<Headers>> {
        let Some(recv) = self.recv.as_mut() else {
            return Ok(None);
        };
        let trailers = recv
            .trailers()
            .await
            .map_err(|e| h2_error(&self.target, e))?;
        Ok(trailers.map(|t| convert::headers_from(&t)))
    }

    /// Whether the response body has been read to its end.
    pub(crate) fn body_done(&self) -> bool {
        self.recv.as_ref().is_none_or(RecvStream::is_end_stream)
    }

    fn error(&self, e: h2::Error) -> Error {
        h2_error(&self.target, e)
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    fn into_link(self) -> Link {
        Link::H2 {
            shared: self.shared.clone(),
            target: self.target.clone(),
            route: self.route.clone(),
            reused: self.reused,
        }
    }
}

/// An HTTP/2 failure with the origin `target`.
pub(crate) fn h2_error(target: &Target, e: h2::Error) -> Error {
    Error::Io {
        side: Side::Server,
        source: io::Error::other(format!("HTTP/2 with upstream {target}: {e}")),
    }
}
