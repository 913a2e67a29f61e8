//! A web UI beside the proxy: a live, filterable list of flows, a detail pane, intercept
//! (pause, edit, resume or kill), replay and export, served to a browser by a small
//! HTTP server (axum) of its own. The page (HTML, CSS and JS written for it, no build
//! step) is embedded in the binary.
//!
//! [`WebUi`] is the server; its [`feed`](WebUi::feed) is a middleware to add to the
//! proxy, which puts every flow into the UI's [`MemoryStore`] as it starts and
//! finishes, and pauses the flows its [`Interceptor`]'s filter matches. A saved capture
//! can be shown instead, with no proxy at all: [`MemoryStore::extend`] it with
//! [`capture::read`](crate::capture::read), or give the UI a
//! [`source`](WebUi::source) that reads it page by page (`SqliteSource`, with the
//! `sqlite` feature), which keeps the replayed flows too. Replay needs a [`Replayer`] (a
//! [`Sender`](crate::Sender)). The endpoints, and the JSON types they take and return,
//! are in [`json`].
//!
//! ```no_run
//! # async fn run() -> mitm::Result<()> {
//! use std::sync::Arc;
//! use mitm::web::WebUi;
//!
//! let ui = WebUi::builder().port(0).bind().await?;
//! println!("web UI: {}", ui.url());
//! let proxy = mitm::Mitm::builder().http_handler(ui.feed()).bind().await?;
//! // Replays go out through the proxy: its hooks, routes and pool.
//! tokio::spawn(ui.replayer(Arc::new(proxy.sender())).run());
//! proxy.run().await
//! # }
//! ```
//!
//! # Safety
//!
//! The UI shows (and can change) everything that goes through the proxy, so it is
//! locked down: it listens on loopback unless told otherwise; every request needs the
//! random token of its [`url`](WebUi::url) (kept in an `HttpOnly; SameSite=Strict`
//! cookie after the first visit, or sent as `Authorization: Bearer`); a `Host` other
//! than the UI's own address or a loopback name is refused (DNS rebinding); requests
//! that change state and the live socket are refused when their `Origin` is another
//! site. The page loads nothing from elsewhere (a strict `Content-Security-Policy`
//! says so too), and captured bodies are served as opaque bytes (images excepted),
//! never as pages on the UI's origin.

mod api;
mod auth;
mod changes;
mod feed;
pub mod json;
mod packed;
mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use changes::{Batch, ChangeHub, Changes, MAX_PENDING};
pub use feed::{Decision, EditError, Feed, Interceptor, DEFAULT_FEED_BODY_LIMIT};
pub use json::{Edit, FlowPage, FlowState, FlowSummary, Phase};
#[cfg(feature = "sqlite")]
pub use store::SqliteSource;
pub use store::{
    FlowSource, ListQuery, MemoryStore, DEFAULT_MAX_BYTES, DEFAULT_MAX_FLOWS, MAX_PAGE,
};

use crate::error::{Error, Result};
use crate::http::message::{Request as HttpRequest, Response as HttpResponse};
use auth::{Asking, Guard};

/// Sends a request again, for the UI's replay. A [`Sender`](crate::Sender) does,
/// through a proxy's hooks, routes and pool: the running proxy's
/// ([`MitmHandle::sender`](crate::MitmHandle::sender)), or one with no listener
/// ([`MitmBuilder::sender`](crate::MitmBuilder::sender)); give the UI one with
/// [`WebUi::replayer`].
#[async_trait::async_trait]
pub trait Replayer: Send + Sync + 'static {
    /// Sends `request` to its origin and returns the response, body held.
    async fn replay(&self, request: HttpRequest) -> Result<HttpResponse>;
}

#[async_trait::async_trait]
impl Replayer for crate::Sender {
    async fn replay(&self, request: HttpRequest) -> Result<HttpResponse> {
        crate::Sender::replay(self, request).await
    }
}

/// The default of [`WebUiBuilder::port`]: 8081.
pub const DEFAULT_PORT: u16 = 8081;
/// The address the web UI listens on unless told otherwise: loopback, this machine only
/// (see [`WebUiBuilder::host`]).
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// Configures a [`WebUi`].
#[must_use]
#[derive(Debug)]
pub struct WebUiBuilder {
    host: String,
    port: u16,
    max_flows: usize,
    max_bytes: usize,
    body_limit: usize,
    token: Option<String>,
}

impl WebUiBuilder {
    /// The address to listen on. Default: [`DEFAULT_HOST`] (`127.0.0.1`). Anything but loopback lets
    /// other machines reach the UI (still needing the token), and shows them all the
    /// traffic: warn the user.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// The port to listen on; 0 picks a free one. Default: [`DEFAULT_PORT`] (8081).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The most flows kept in memory; past it, the oldest are dropped. Default:
    /// [`DEFAULT_MAX_FLOWS`] (50 000).
    pub fn max_flows(mut self, flows: usize) -> Self {
        self.max_flows = flows;
        self
    }

    /// About the most body bytes kept in memory, over all flows; past it, the oldest
    /// flows are dropped. Default: [`DEFAULT_MAX_BYTES`] (512 MiB).
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// The most bytes the [`feed`](WebUi::feed) keeps of each body (and WebSocket
    /// message); bodies up to it are held whole by the proxy before they go on.
    /// Default: [`DEFAULT_FEED_BODY_LIMIT`] (4 MiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The token the UI asks for, instead of a random one: for tests and for scripts
    /// that must know it in advance. Keep it secret and long.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Binds the listening socket; the UI serves once [`run`](WebUi::run).
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] when the address cannot be listened on.
    pub async fn bind(self) -> Result<WebUi> {
        let addr = format!("{}:{}", self.host, self.port);
        // An IPv6 address needs brackets before its port.
        let addr = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            addr
        };
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| Error::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let token = self.token.unwrap_or_else(auth::new_token);
        let store = Arc::new(MemoryStore::new(self.max_flows, self.max_bytes));
        let interceptor = Arc::new(Interceptor::default());
        Ok(WebUi {
            listener,
            addr: local,
            guard: Guard::new(token, local),
            source: store.clone(),
            feed: Arc::new(Feed::new(
                store.clone(),
                interceptor.clone(),
                self.body_limit,
            )),
            store,
            interceptor,
            replayer: None,
            ca: None,
        })
    }
}

/// The web UI's server, bound and ready to [`run`](Self::run).
pub struct WebUi {
    listener: tokio::net::TcpListener,
    /// The listener's address, read back once at bind.
    addr: SocketAddr,
    guard: Guard,
    store: Arc<MemoryStore>,
    source: Arc<dyn FlowSource>,
    feed: Arc<Feed>,
    interceptor: Arc<Interceptor>,
    replayer: Option<Arc<dyn Replayer>>,
    ca: Option<Arc<crate::tls::ca::CertificateAuthority>>,
}

impl std::fmt::Debug for WebUi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebUi")
            .field("addr", &self.local_addr())
            .field("flows", &self.store.len())
            .finish_non_exhaustive()
    }
}

impl WebUi {
    /// A builder with the defaults: `127.0.0.1:8081`, a random token.
    pub fn builder() -> WebUiBuilder {
        WebUiBuilder {
            host: DEFAULT_HOST.into(),
            port: DEFAULT_PORT,
            max_flows: DEFAULT_MAX_FLOWS,
            max_bytes: DEFAULT_MAX_BYTES,
            body_limit: DEFAULT_FEED_BODY_LIMIT,
            token: None,
        }
    }

    /// The address the UI listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to open, token included: `http://HOST:PORT/?token=…`. When the UI listens
    /// on all addresses, it names 127.0.0.1.
    pub fn url(&self) -> String {
        let addr = self.local_addr();
        let host = match addr.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        format!(
            "http://{host}:{}/?token={}",
            addr.port(),
            self.guard.token()
        )
    }

    /// The token every request needs.
    pub fn token(&self) -> &str {
        self.guard.token()
    }

    /// The middleware that shows the proxy's flows in this UI: add it to the
    /// [`Mitm`](crate::Mitm) (last, to show requests as they go upstream).
    pub fn feed(&self) -> Arc<Feed> {
        self.feed.clone()
    }

    /// The flows this UI shows: [`extend`](MemoryStore::extend) it with a saved
    /// capture, or [`clear`](FlowSource::clear) it.
    pub fn store(&self) -> &Arc<MemoryStore> {
        &self.store
    }

    /// The intercept filter and the flows waiting for the user (the UI sets the filter;
    /// an embedder may too).
    pub fn interceptor(&self) -> &Arc<Interceptor> {
        &self.interceptor
    }

    /// Lets the UI replay requests, sending them with `replayer`; the replayed flows
    /// join the list ([`FlowSource::add`] of its [`source`](Self::source)). Default: none (the replay button answers that replay is off).
    pub fn replayer(mut self, replayer: Arc<dyn Replayer>) -> Self {
        self.replayer = Some(replayer);
        self
    }

    /// Offers `ca`'s certificate for download at `/ca.pem` (linked from the page), so
    /// that the user can trust the proxy. Default: none.
    pub fn ca(mut self, ca: Arc<crate::tls::ca::CertificateAuthority>) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Serves flows from `source` instead of the UI's own store (a saved capture's
    /// `SqliteSource`, with the `sqlite` feature, or a database opened elsewhere);
    /// replayed flows are [`add`](FlowSource::add)ed to it. The [`feed`](Self::feed)
    /// still fills the own store.
    pub fn source(mut self, source: Arc<dyn FlowSource>) -> Self {
        self.source = source;
        self
    }

    /// Serves until the process ends (or the task is dropped).
    ///
    /// # Errors
    ///
    /// A failure of the listening socket, as [`Error::Bind`].
    pub async fn run(self) -> Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `shutdown` completes, then stops taking connections.
    ///
    /// # Errors
    ///
    /// A failure of the listening socket, as [`Error::Bind`].
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let addr = self.local_addr();
        let guard = Arc::new(self.guard);
        let app = api::routes(Arc::new(api::App {
            source: self.source,
            interceptor: self.interceptor,
            replayer: self.replayer,
            ca: self.ca,
        }))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let guard = guard.clone();
                async move { checked(&guard, req, next).await }
            },
        ));
        tracing::info!(%addr, "web UI listening");
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Bind {
                addr: addr.to_string(),
                source,
            })
    }
}

/// Lets `req` through [`Guard::check`], adding the headers every answer carries.
async fn checked(guard: &Guard, req: Request, next: Next) -> Response {
    let h = req.headers();
    let text = |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok());
    let cookies: Vec<&str> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let cookie = cookies.join("; ");
    let decision = guard.check(&Asking {
        method: req.method().as_str(),
        host: text(header::HOST).or(req.uri().authority().map(|a| a.as_str())),
        origin: text(header::ORIGIN),
        upgrade: text(header::UPGRADE).is_some_and(|u| u.eq_ignore_ascii_case("websocket")),
        cookie: (!cookies.is_empty()).then_some(cookie.as_str()),
        authorization: text(header::AUTHORIZATION),
        query: req.uri().query(),
    });
    let mut answer = match decision {
        auth::Decision::Refuse(why) => {
            tracing::warn!(
                method = %req.method(),
                path = req.uri().path(),
                host = text(header::HOST).unwrap_or(""),
                origin = text(header::ORIGIN).unwrap_or(""),
                "web UI: request refused: {why}"
            );
            (StatusCode::FORBIDDEN, format!("403 Forbidden: {why}\n")).into_response()
        }
        auth::Decision::Allow => next.run(req).await,
        auth::Decision::AllowAndRemember(cookie) => {
            let mut answer = next.run(req).await;
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                answer.headers_mut().append(header::SET_COOKIE, v);
            }
            answer
        }
    };
    let h = answer.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; \
             form-action 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // The token is in the first URL: never tell other sites about it.
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in fixed {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    answer
}
