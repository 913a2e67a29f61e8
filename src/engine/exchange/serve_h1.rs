//! HTTP/1 client connections: request heads read one after another, each routed on its
//! own (one keep-alive client may address several origins) and run through the
//! exchange. Pipelined requests are answered in order, since each exchange completes
//! before the next head is read. `CONNECT` is answered here (through the exchange's
//! hooks) and its connection handed back to the caller, which runs the tunnel.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::{Ahead, BodyOut, Client, Connect, Head, Outcome};
use crate::core::{Connection, Flow, Host, ServerFacts, Target};
use crate::engine::context::Context;
use crate::error::{Error, Result};
use crate::http::message::{Body, Headers, HttpFlow, Request, Response, Version};
use crate::http::page;
use crate::http::settings::Settings;
use crate::http::target::{origin_url, parse_authority, route, Routed, Scope};
use crate::net::io::{rewound, BoxIo};
use crate::upstream::{Link, Route, Upstream, Want};
use crate::wire::h1::body::{Decoder, Encoder, Piece};
use crate::wire::h1::parse::{self, Framing, HeadError, RequestHead};
use crate::wire::h1::write;
use crate::wire::h1::Peer;

/// Most body bytes sent in the same write as the response head.
const COALESCE_LIMIT: usize = 64 * 1024;

/// How an HTTP/1 client connection ended.
#[derive(Debug)]
pub(crate) enum Served {
    /// The client closed, or was answered and let go.
    Closed,
    /// A `CONNECT` was answered `200`: the tunnel starts.
    Connect(Box<Opened>),
}

/// A `CONNECT` tunnel, answered and ready to start.
pub(crate) struct Opened {
    /// The client's stream, with bytes it sent past the `CONNECT` head in front.
    pub client: BoxIo,
    /// The target, as the `CONNECT` named it.
    pub target: Target,
    /// How the tunnel reaches it.
    pub route: Route,
    /// What was reached of the target before answering.
    pub ahead: Ahead,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("target", &self.target)
            .field("ahead", &self.ahead)
            .finish_non_exhaustive()
    }
}

/// The upstream a session starts with (inside a tunnel, the one its setup made).
#[derive(Debug, Default)]
pub(crate) enum Start {
    /// None yet.
    #[default]
    Nothing,
    /// An HTTP/1.1 connection to the tunnel's origin, announced already.
    H1(Upstream),
    /// The origin's shared HTTP/2 connection, announced already.
    H2(Target),
}

/// Serves HTTP/1 requests from `client` until it closes or sends a `CONNECT`. `first`
/// holds bytes already read from it.
pub(crate) async fn serve(
    cx: &Context,
    settings: &Settings,
    conn: &mut Connection,
    client: BoxIo,
    first: Bytes,
    scope: Scope,
    start: Start,
) -> Result<Served> {
    let (held, current) = match start {
        Start::Nothing => (None, Current::None),
        Start::H1(up) => {
            let target = up.target.clone();
            (Some(up), Current::H1(target))
        }
        Start::H2(target) => (None, Current::H2(target)),
    };
    let mut session = Session {
        cx,
        settings,
        hooks: cx.chain.wants_data(),
        conn,
        peer: Peer::new(client, first),
        scope,
        flows: 0,
        stopped: cx.stopped(),
        held,
        current,
        req: RequestState::default(),
        out: Vec::new(),
        encoder: Encoder::Plain,
        plain_body: false,
        keep: false,
        hang_up: false,
    };
    let served = session.run().await;
    // A clean upstream goes back to the pool. `server_disconnected` is left to the
    // server, which fires it before `client_disconnected`, in the original's order.
    if let Some(up) = session.held.take() {
        cx.upstreams.give_back(up);
    }
    served
}

/// Which upstream the connection's hooks know about.
#[derive(Debug, PartialEq, Eq)]
enum Current {
    /// None announced.
    None,
    /// An HTTP/1.1 connection to this origin: the one held, or in use.
    H1(Target),
    /// The shared HTTP/2 connection to this origin.
    H2(Target),
    /// The announced connection was closed; the next one replaces it.
    Closed,
}

/// The request in flight.
#[derive(Debug)]
struct RequestState {
    decoder: Decoder,
    /// Whether `100 Continue` must be sent before reading the body.
    expects_continue: bool,
    /// Whether the client keeps the connection open after this exchange.
    keeps: bool,
    version: Version,
    /// A `CONNECT`: a `2xx` is a bare head.
    connect: bool,
}

impl Default for RequestState {
    fn default() -> Self {
        RequestState {
            decoder: Decoder::new(Framing::Empty),
            expects_continue: false,
            keeps: false,
            version: Version::Http11,
            connect: false,
        }
    }
}

struct Session<'a> {
    cx: &'a Context,
    settings: &'a Settings,
    /// Whether the raw data hooks run.
    hooks: bool,
    conn: &'a mut Connection,
    peer: Peer,
    scope: Scope,
    flows: u64,
    /// Completes when the server stops: made once, polled while idle between requests.
    stopped: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// A clean HTTP/1.1 upstream kept between exchanges (not pooled: the next request
    /// most often goes to the same origin).
    held: Option<Upstream>,
    current: Current,
    req: RequestState,
    /// Response bytes not written yet: the head waits for the first body bytes.
    out: Vec<u8>,
    /// How the response body is framed for this client.
    encoder: Encoder,
    /// Whether the response body goes as it is (no chunk framing), so it may be
    /// written around the buffers.
    plain_body: bool,
    /// Whether the connection goes on after this response (as HTTP).
    keep: bool,
    /// Whether the stream is shut once the response is out (not when it goes on as a
    /// tunnel or another protocol).
    hang_up: bool,
}

impl Session<'_> {
    async fn run(&mut self) -> Result<Served> {
        let mut first = true;
        loop {
            let Some(head) = self.read_head(first).await? else {
                return Ok(Served::Closed);
            };
            first = false;
            // Credentials are asked of proxy requests (and CONNECT), not of requests
            // inside a tunnel the CONNECT already opened, nor of a reverse proxy's
            // clients (to them it is the origin).
            if matches!(self.scope, Scope::Proxy) && !self.cx.authorized(&head.headers) {
                // A body the request may carry is not read: the connection ends then.
                let keep = parse::request_framing(&head.headers) == Ok(Framing::Empty);
                let r = page::proxy_auth_required();
                match self.refuse(head, r, Error::ProxyAuthRequired, keep).await? {
                    Outcome::Done if self.keep => continue,
                    _ => return Ok(Served::Closed),
                }
            }
            if head.method.eq_ignore_ascii_case("CONNECT") {
                return self.connect(head).await;
            }
            match self.request(head).await? {
                Outcome::Done if self.keep => {}
                _ => return Ok(Served::Closed),
            }
        }
    }

    /// Routes a request and runs its exchange.
    async fn request(&mut self, head: RequestHead) -> Result<Outcome> {
        let host = head.headers.get("host");
        let routed = match route(&head.target, host, &self.scope) {
            Ok(routed) => routed,
            Err(reason) => {
                let r = page::unroutable(&reason);
                return self
                    .refuse(head, r, Error::BadRequest { reason }, false)
                    .await;
            }
        };
        let framing = match parse::request_framing(&head.headers) {
            Ok(f) => f,
            Err(e) => {
                let (r, reason) = match e {
                    HeadError::TooLarge => (
                        page::head_too_large(self.settings.max_head, self.settings.max_headers),
                        "the request head is too large".to_string(),
                    ),
                    HeadError::Malformed(reason) => (page::malformed(&reason), reason),
                };
                return self
                    .refuse(head, r, Error::BadRequest { reason }, false)
                    .await;
            }
        };
        let Routed { target, path, host } = routed;
        if self.cx.is_self(&target) {
            let e = Error::LoopDetected {
                target: target.to_string(),
            };
            return self.refuse(head, page::loop_detected(), e, false).await;
        }
        self.conn.target = Some(target.clone());
        self.flows += 1;
        self.req = RequestState {
            decoder: Decoder::new(framing),
            expects_continue: head.headers.has_token("expect", "100-continue"),
            keeps: parse::keeps_alive(head.version, &head.headers),
            version: head.version,
            connect: false,
        };
        let mut request = Request::new_to(head.method, target, path);
        request.version = head.version;
        request.headers = head.headers;
        if let Some(host) = host {
            request.headers.insert("Host", host);
        }
        request.body = match framing {
            Framing::Empty => Body::Empty,
            _ => Body::Streaming,
        };
        self.keep = false;
        let (cx, settings) = (self.cx, self.settings);
        let flow = HttpFlow::new(self.flows, request);
        match super::run(cx, settings, self, flow).await {
            Err(Error::Killed) => Ok(Outcome::Close),
            other => other,
        }
    }

    /// `CONNECT host:port`: the hooks may refuse it; otherwise the target is reached and
    /// the client answered `200`, and the tunnel is the caller's.
    async fn connect(&mut self, head: RequestHead) -> Result<Served> {
        if let Scope::Reverse { target, .. } = &self.scope {
            // Its clients take the proxy for the origin: a CONNECT is not for it.
            let r = page::text(
                405,
                format!(
                    "mitm is a reverse proxy for {} here, not a forward proxy: it does not \
                     accept CONNECT. Send requests to it as to the origin itself.\n",
                    origin_url(target)
                ),
            );
            let reason = "CONNECT to a reverse proxy".to_string();
            self.refuse(head, r, Error::BadRequest { reason }, false)
                .await?;
            return Ok(Served::Closed);
        }
        let Some((host, port)) = parse_authority(&head.target, 443) else {
            let reason = format!("the CONNECT target {:?} is not host:port", head.target);
            let r = page::text(
                400,
                format!(
                    "mitm could not understand the CONNECT target {:?}; expected host:port.\n",
                    head.target
                ),
            );
            self.refuse(head, r, Error::BadRequest { reason }, false)
                .await?;
            return Ok(Served::Closed);
        };
        let refused = match self.scope {
            Scope::Proxy => None,
            Scope::Tunnel(_) => Some("mitm does not accept CONNECT inside a tunnel.\n"),
            // The connection has its destination already (a firewall's redirect, or a
            // tunnel's target); a tunnel from there would go elsewhere.
            Scope::Destination(_) => Some(
                "mitm does not accept CONNECT on a connection that has a destination already \
                 (a tunnel, or a redirected connection).\n",
            ),
            // Refused above, with the origin's name.
            Scope::Reverse { .. } => Some("mitm is a reverse proxy: it does not accept CONNECT.\n"),
        };
        if let Some(refused) = refused {
            let r = page::text(405, refused.into());
            let reason = refused.trim_end().trim_end_matches('.').to_string();
            self.refuse(head, r, Error::BadRequest { reason }, false)
                .await?;
            return Ok(Served::Closed);
        }
        let target = Target::new(host, port, true);
        if self.cx.is_self(&target) {
            let e = Error::LoopDetected {
                target: target.to_string(),
            };
            self.refuse(head, page::loop_detected(), e, false).await?;
            return Ok(Served::Closed);
        }
        self.conn.target = Some(target.clone());
        self.flows += 1;
        self.req = RequestState {
            version: head.version,
            connect: true,
            ..RequestState::default()
        };
        let mut request = Request::new_to(head.method, target.clone(), head.target);
        request.version = head.version;
        request.headers = head.headers;
        let (cx, settings) = (self.cx, self.settings);
        let flow = HttpFlow::new(self.flows, request);
        match super::connect(cx, settings, self, flow).await {
            Ok(Connect::Open(ahead, route)) => {
                let io = std::mem::replace(&mut self.peer.io, Box::new(tokio::io::empty()));
                let rest = self.peer.buf.split().freeze();
                Ok(Served::Connect(Box::new(Opened {
                    client: rewound(io, rest),
                    target,
                    route,
                    ahead,
                })))
            }
            Ok(Connect::Refused) | Err(Error::Killed) => Ok(Served::Closed),
            Err(e) => Err(e),
        }
    }

    /// Answers a request refused before its exchange with `response` (`error` saying
    /// why), as a flow of its own: the response hooks and `flow_finished` see it, a
    /// capture keeps it. Its body is not read, so the connection goes on only when
    /// `keep` (it has none) and the client keeps it.
    async fn refuse(
        &mut self,
        head: RequestHead,
        response: Response,
        error: Error,
        keep: bool,
    ) -> Result<Outcome> {
        let connect = head.method.eq_ignore_ascii_case("CONNECT");
        // The best the head says of where it was going: a CONNECT's authority, the
        // routed target, else nothing known (the raw target kept as the path).
        let routed = if connect {
            parse_authority(&head.target, 443)
                .map(|(host, port)| (Target::new(host, port, true), head.target.clone()))
        } else {
            route(&head.target, head.headers.get("host"), &self.scope)
                .ok()
                .map(|r| (r.target, r.path))
        };
        let (target, path) =
            routed.unwrap_or_else(|| (Target::new("", 0, false), head.target.clone()));
        self.conn.target = Some(target.clone());
        self.flows += 1;
        self.req = RequestState {
            keeps: keep && parse::keeps_alive(head.version, &head.headers),
            version: head.version,
            connect,
            ..RequestState::default()
        };
        let mut request = Request::new_to(head.method, target, path);
        request.version = head.version;
        request.headers = head.headers;
        request.body = Body::Empty;
        self.keep = false;
        let (cx, settings) = (self.cx, self.settings);
        let flow = HttpFlow::new(self.flows, request);
        let close = !self.req.keeps;
        match super::refuse(cx, settings, self, flow, response, error, close).await {
            Err(Error::Killed) => Ok(Outcome::Close),
            other => other,
        }
    }

    /// Reads the next request head. `None` when the client closed (or idled out, or the
    /// server is stopping) between requests, or was answered with an error page.
    async fn read_head(&mut self, first: bool) -> Result<Option<RequestHead>> {
        let mut idle = !first;
        loop {
            match self.peer.head(self.settings.max_head) {
                Ok(Some(raw)) => {
                    return match parse::parse_request(&raw, self.settings.max_headers) {
                        Ok(head) => Ok(Some(head)),
                        Err(e) => self.refuse_head(e).await.map(|()| None),
                    };
                }
                Ok(None) => {}
                Err(e) => return self.refuse_head(e).await.map(|()| None),
            }
            // Between requests a keep-alive client may idle (until the server stops);
            // once a head has begun it must arrive in time.
            let between = idle && self.peer.buf.is_empty();
            idle = false;
            if between && self.cx.is_stopping() {
                return Ok(None);
            }
            let limit = if between {
                self.settings.idle_timeout
            } else {
                self.settings.timeout
            };
            let hooks = self
                .hooks
                .then(|| self.cx.chain.data_hooks(self.conn, Flow::ClientToServer));
            let read = self.peer.fill(hooks.as_ref());
            let read = tokio::time::timeout(limit, read);
            let read = tokio::select! {
                biased;
                read = read => read,
                () = self.stopped.as_mut(), if between => return Ok(None),
            };
            match read {
                Ok(Ok(0)) | Err(_) => return Ok(None),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Error::client_io(e)),
            }
        }
    }

    /// Answers a bad head with 400 or 431; the connection ends.
    async fn refuse_head(&mut self, e: HeadError) -> Result<()> {
        let response = match e {
            HeadError::TooLarge => {
                page::head_too_large(self.settings.max_head, self.settings.max_headers)
            }
            HeadError::Malformed(reason) => page::malformed(&reason),
        };
        self.write_plain(response, "", Version::Http11, false).await
    }

    /// Writes a response the proxy makes before any exchange (no hooks: there is no
    /// flow yet), and ends the connection unless `keep`.
    async fn write_plain(
        &mut self,
        response: Response,
        method: &str,
        version: Version,
        keep: bool,
    ) -> Result<()> {
        let connection = connection_header(keep, version == Version::Http10);
        let out = write::local_response(&response, method, connection);
        self.send_now(&out).await?;
        if !keep {
            let _ = self.peer.io.shutdown().await;
        }
        Ok(())
    }

    /// Writes `bytes` to the client and flushes them: TLS keeps what the socket did not
    /// take, and these bytes must leave now.
    async fn send_now(&mut self, bytes: &[u8]) -> Result<()> {
        self.peer
            .io
            .write_all(bytes)
            .await
            .map_err(Error::client_io)?;
        self.peer.io.flush().await.map_err(Error::client_io)
    }

    /// Writes what is queued.
    async fn write_out(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = self.peer.io.write_all(&self.out).await;
        self.out.clear();
        written.map_err(Error::client_io)
    }

    /// Sends `100 Continue` once, if the client waits for it.
    async fn send_continue(&mut self) -> Result<()> {
        if std::mem::take(&mut self.req.expects_continue) {
            self.send_now(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        Ok(())
    }

    /// Makes the hooks' view of the server follow the connection in use: the one
    /// announced before goes (`server_disconnected`), this one comes
    /// (`server_connected`), unless it is the same shared HTTP/2 connection.
    async fn announce(
        &mut self,
        target: &Target,
        addr: SocketAddr,
        facts: Arc<ServerFacts>,
        shared: bool,
    ) {
        let next = if shared {
            Current::H2(target.clone())
        } else {
            Current::H1(target.clone())
        };
        if shared && self.current == next {
            return;
        }
        self.cx.retire_server(self.conn).await;
        self.conn.server = Host::new(addr);
        self.conn.server_facts = Some(facts);
        self.cx.announce_server(self.conn).await;
        self.current = next;
    }
}

impl Client for Session<'_> {
    fn conn(&self) -> &Connection {
        self.conn
    }

    fn data_hooks(&self) -> bool {
        self.hooks
    }

    async fn body(&mut self) -> Result<Option<Bytes>> {
        if self.req.decoder.is_done() {
            return Ok(None);
        }
        self.send_continue().await?;
        loop {
            let piece = self
                .req
                .decoder
                .next(&mut self.peer.buf, false)
                .map_err(bad_body)?;
            match piece {
                Piece::Data(b) => return Ok(Some(b)),
                Piece::End => return Ok(None),
                Piece::NeedMore => {}
            }
            let hooks = self
                .hooks
                .then(|| self.cx.chain.data_hooks(self.conn, Flow::ClientToServer));
            let read = self.peer.fill(hooks.as_ref());
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

    fn body_done(&self) -> bool {
        self.req.decoder.is_done()
    }

    fn trailers(&mut self) -> Option<Headers> {
        parse::trailers(&std::mem::take(&mut self.req.decoder.trailers))
    }

    #[cfg(target_os = "linux")]
    fn worth_splicing(&self) -> bool {
        crate::wire::h1::body::worth_splicing(&self.peer, &self.req.decoder)
    }

    #[cfg(target_os = "linux")]
    async fn splice_body(&mut self, to: &mut BoxIo) -> Result<u64> {
        if self.req.decoder.is_done() {
            return Ok(0);
        }
        self.send_continue().await?;
        let idle = self.settings.idle_timeout;
        let spliced =
            crate::wire::h1::body::splice_rest(&mut self.peer, to, &mut self.req.decoder, idle)
                .await;
        spliced.map_err(|e| match e.error.kind() {
            _ if e.writing => Error::server_io(e.error),
            std::io::ErrorKind::TimedOut => Error::ClientTimeout,
            _ => Error::client_io(e.error),
        })
    }

    async fn interim(&mut self, response: &Response) -> Result<()> {
        let mut out = Vec::new();
        write::response_head(&mut out, response, write::Framing::AsIs, false, None);
        self.send_now(&out).await
    }

    async fn start(&mut self, head: Head<'_>) -> Result<()> {
        let response = head.response;
        self.out.clear();
        if self.req.connect && (200..300).contains(&response.status) {
            // `200 Connection established`: a bare head; the tunnel follows.
            write::response_head(&mut self.out, response, write::Framing::AsIs, true, None);
            self.encoder = Encoder::Plain;
            self.plain_body = false;
            self.keep = false;
            self.hang_up = false;
            return Ok(());
        }
        let client_10 = self.req.version == Version::Http10;
        // A body of unknown length goes chunked, or until close for a 1.0 client,
        // which cannot take chunks.
        let (framing, encoder) = match head.body {
            BodyOut::Stream(None) if client_10 => (write::Framing::UntilClose, Encoder::Plain),
            BodyOut::Stream(None) => (write::Framing::Chunked, Encoder::Chunked),
            _ => (write::Framing::AsIs, Encoder::Plain),
        };
        let switching = response.status == 101;
        self.keep = self.settings.keep_alive
            && self.req.keeps
            && !head.close
            && !switching
            && framing != write::Framing::UntilClose
            && self.req.decoder.is_done();
        self.hang_up = !self.keep && !switching;
        let connection = if switching {
            None
        } else {
            connection_header(self.keep, client_10)
        };
        write::response_head(&mut self.out, response, framing, head.local, connection);
        self.encoder = encoder;
        self.plain_body = matches!(head.body, BodyOut::Stream(_)) && encoder == Encoder::Plain;
        Ok(())
    }

    async fn send(&mut self, data: Bytes) -> Result<()> {
        let direct = self.encoder == Encoder::Plain
            && (self.out.is_empty() || self.out.len() + data.len() > COALESCE_LIMIT);
        if direct {
            // No copy: what is queued (the head) goes first, then the piece as it is.
            self.write_out().await?;
            self.peer
                .io
                .write_all(&data)
                .await
                .map_err(Error::client_io)?;
        } else {
            self.encoder.encode(&mut self.out, &data);
            self.write_out().await?;
        }
        // TLS keeps what the socket did not take: a streamed body must not wait for
        // the next piece.
        self.peer.io.flush().await.map_err(Error::client_io)
    }

    async fn finish(&mut self, trailers: Option<&Headers>) -> Result<()> {
        if self.encoder == Encoder::Chunked {
            let raw = trailers.map(write::trailer_lines).unwrap_or_default();
            self.encoder.finish(&mut self.out, &raw);
            self.encoder = Encoder::Plain;
        }
        if !self.out.is_empty() {
            self.write_out().await?;
            self.peer.io.flush().await.map_err(Error::client_io)?;
        }
        if self.hang_up {
            let _ = self.peer.io.shutdown().await;
        }
        Ok(())
    }

    async fn raw_sink(&mut self) -> Result<Option<&mut BoxIo>> {
        if !self.plain_body {
            return Ok(None);
        }
        self.write_out().await?;
        Ok(Some(&mut self.peer.io))
    }

    fn upgraded(&mut self) -> Option<BoxIo> {
        let io = std::mem::replace(&mut self.peer.io, Box::new(tokio::io::empty()));
        Some(rewound(io, self.peer.buf.split().freeze()))
    }

    fn can_upgrade(&self) -> bool {
        true
    }

    async fn origin(
        &mut self,
        cx: &Context,
        route: &Route,
        target: &Target,
        want: Want,
    ) -> Result<Link> {
        if !want.fresh {
            if let Some(up) = self
                .held
                .take_if(|up| &up.target == target && &up.route == route)
            {
                // The connection of the last exchange, kept alive: the origin may have
                // closed it since (caught when the answer does not come).
                return Ok(Link::H1 { up, reused: true });
            }
        }
        if let Some(up) = self.held.take() {
            cx.upstreams.give_back(up);
        }
        let timeout = self.settings.connect_timeout;
        let link = cx.upstreams.link(route, target, want, timeout).await?;
        let shared = matches!(link, Link::H2 { .. });
        self.announce(target, link.addr(), link.facts().clone(), shared)
            .await;
        Ok(link)
    }

    fn release(&mut self, cx: &Context, link: Link, reusable: bool) {
        match link {
            Link::H1 { up, .. } if reusable => {
                if let Some(old) = self.held.replace(up) {
                    cx.upstreams.give_back(old);
                }
            }
            Link::H1 { .. } => {
                // Closed: the next exchange's connection replaces it for the hooks.
                if matches!(self.current, Current::H1(_)) {
                    self.current = Current::Closed;
                }
            }
            Link::H2 { .. } => {}
        }
    }

    fn kill(&mut self) {
        self.keep = false;
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

/// The `Connection` field the proxy adds to a response, if any.
fn connection_header(keep: bool, client_10: bool) -> Option<&'static str> {
    match (keep, client_10) {
        (false, _) => Some("close"),
        (true, true) => Some("keep-alive"),
        (true, false) => None,
    }
}
