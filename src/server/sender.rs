//! [`Sender`]: requests the proxy sends itself, with no client connection and no
//! listener, through the same hooks, routes and upstream pool as a client's.

use std::sync::Arc;

use tokio::sync::watch;

use crate::core::{Connection, Host};
use crate::engine::context::Context;
use crate::engine::exchange::direct;
use crate::error::Result;
use crate::http::message::{Body, Request, Response};
use crate::http::settings::Settings;

/// Sends requests as a client of the proxy would, without one: each goes through the
/// [`HttpHandler`](crate::HttpHandler) hooks (a `flow_finished` included, so a capture
/// keeps it), the routers' routes and the upstream pool, obeying the connect and
/// response timeouts of the [`Http`](crate::Http) settings it was made with. For
/// replaying recorded requests (`mitm replay`, the web UI's replay), health checks, or
/// warming the pool.
///
/// Made by [`MitmBuilder::sender`](crate::MitmBuilder::sender) (no listener at all), or
/// from a server, bound or running: [`Mitm::sender`](crate::Mitm::sender),
/// [`MitmHandle::sender`](crate::MitmHandle::sender), sharing its hooks, pool and
/// connection ids. Cheap to clone.
///
/// ```no_run
/// # async fn run() -> mitm::Result<()> {
/// let sender = mitm::Mitm::builder().sender().await?;
/// let mut request = mitm::Request::new("POST", "https://api.example/items").unwrap();
/// request.body = mitm::Body::Full("{}".into());
/// let response = sender.send(request).await?;
/// let length = response.body.bytes().map_or(0, |b| b.len());
/// println!("{} ({length} bytes)", response.status);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sender {
    cx: Context,
    settings: Arc<Settings>,
    /// For a sender with no server: keeps the channel its context's "stopping" signal
    /// listens to open.
    _stop: Option<Arc<watch::Sender<bool>>>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("connect_timeout", &self.settings.connect_timeout)
            .field("response_timeout", &self.settings.response_timeout)
            .finish_non_exhaustive()
    }
}

impl Sender {
    pub(crate) fn new(
        cx: Context,
        settings: Arc<Settings>,
        stop: Option<Arc<watch::Sender<bool>>>,
    ) -> Self {
        Sender {
            cx,
            settings,
            _stop: stop,
        }
    }

    /// The certificate authority of the server this sender belongs to.
    pub fn ca(&self) -> &Arc<crate::tls::ca::CertificateAuthority> {
        &self.cx.ca
    }

    /// Sends `request` to its origin and returns the response the client would have
    /// got, its body held (up to 64 MiB). The request's body is sent as it holds it (a
    /// streaming one as empty). Each request is a connection of its own for the hooks,
    /// with an id unique among the server's. Fails when the origin cannot be reached
    /// or answer in time (the error says which), or when a hook kills the request. A
    /// `CONNECT` asks for a tunnel, not a response: it fails at once with
    /// [`Error::BadRequest`](crate::Error::BadRequest).
    pub async fn send(&self, request: Request) -> Result<Response> {
        self.send_marked(request, None).await
    }

    /// As [`send`](Self::send), for a request sent again: its flow is marked a replayed
    /// request ([`HttpFlow::is_replay`](crate::HttpFlow::is_replay)), as mitmproxy's
    /// client replay marks them, so that hooks and captures can tell it (`~replayq`).
    /// `mitm replay` and the web UI's replay send with it.
    pub async fn replay(&self, request: Request) -> Result<Response> {
        self.send_marked(request, Some(crate::http::message::Replay::Request))
            .await
    }

    async fn send_marked(
        &self,
        request: Request,
        replay: Option<crate::http::message::Replay>,
    ) -> Result<Response> {
        if request.is_connect() {
            return Err(crate::Error::BadRequest {
                reason: format!(
                    "CONNECT {} asks for a tunnel: there is no request to send again",
                    request.target
                ),
            });
        }
        let id = self.cx.next_id();
        let mut conn = Connection::new(id, Host::default());
        conn.target = Some(request.target.clone());
        let (mut response, body, _length) =
            direct::send(&self.cx, &self.settings, conn, request, 1, replay).await?;
        response.body = Body::Full(body);
        Ok(response)
    }
}
