//! A customizable man-in-the-middle proxy for HTTP and HTTPS.
//!
//! `mitm` listens for clients, reads their first bytes, asks pluggable
//! [protocols](Protocol) which of them speaks this connection and where it goes,
//! connects the upstream server, and relays bytes both ways, calling
//! [middleware](Middleware) hooks at each event. HTTPS requested with `CONNECT` is
//! intercepted with a leaf certificate signed, per host, by the proxy's own
//! [`CertificateAuthority`].
//!
//! It is a Rust rebuild of the Python package of the same name, keeping its shape
//! (`Host`, `Connection`, `Flow`, seven middleware hooks, `Protocol` with
//! `resolve` / `connect` / `handle`) and fixing its known defects.
//!
//! # Example
//!
//! A middleware that rewrites bytes of every response, on a proxy bound to an
//! ephemeral port:
//!
//! ```no_run
//! use mitm::{async_trait, Bytes, Connection, DataHooks, Middleware, Mitm};
//! use std::sync::Arc;
//!
//! struct Shout;
//!
//! #[async_trait]
//! impl Middleware for Shout {
//!     fn data_hooks(&self) -> DataHooks {
//!         DataHooks::On
//!     }
//!
//!     async fn server_data(&self, _conn: &Connection, data: Bytes) -> Bytes {
//!         Bytes::from(data.to_ascii_uppercase())
//!     }
//! }
//!
//! # async fn run() -> mitm::Result<()> {
//! let proxy = Mitm::builder()
//!     .port(0)
//!     .middleware(Arc::new(Shout))
//!     .bind()
//!     .await?;
//! println!("listening on {}", proxy.local_addr());
//! proxy.run().await
//! # }
//! ```
//!
//! # Where things are
//!
//! | items | what they are |
//! | --- | --- |
//! | [`Mitm`], [`MitmBuilder`], [`MitmHandle`], [`Sender`], [`Listener`], [`Bound`] | the server: bind, accept, shutdown; requests sent with no client (module [`server`], with [`server::mode`] for `--mode` specs) |
//! | [`Middleware`], [`DataHooks`], [`HttpHandler`], [`Router`], [`TunnelVerdict`], [`Interception`], [`Log`], [`HttpLog`], [`FlowDetail`], [`IgnoreHosts`] | hooks, one trait per concern (module [`middleware`]) |
//! | [`Protocol`], [`Http`], [`Socks5`], [`Reverse`], [`Transparent`], [`Context`], [`Tunnel`], [`Resolution`] | how a client's first bytes pick a protocol (module [`protocol`]) |
//! | [`Connection`], [`Host`], [`Flow`], [`Target`], [`State`], [`TlsFacts`], [`SocketFacts`], [`ServerFacts`] | what hooks know of a connection |
//! | [`Request`], [`Response`], [`Headers`], [`Body`], [`HttpFlow`], [`Verdict`] | HTTP messages as hooks see them |
//! | [`WebSocketMessage`], [`MessageVerdict`] | WebSocket messages (module [`websocket`]) |
//! | [`CertificateAuthority`] | the CA that signs a leaf per host (module [`tls`]: [`tls::ca`], [`tls::trust`], [`tls::crypto_provider`]) |
//! | [`Resolve`], [`SystemResolver`], [`UpstreamTls`], [`Route`], [`UpstreamProxy`] | reaching upstream servers, directly or through another proxy (module [`upstream`]) |
//! | [`Error`], [`Side`] | failures, and whose fault they were |
//! | [`decode`] | undoing gzip, deflate, br and zstd for inspection |
//! | [`filter`] | mitmproxy's filter language, matched against flows in hooks and saved ones |
//! | [`addons`] | mitmproxy's traffic-changing options (`map_remote`, `modify_headers`, …) as middlewares |
//! | [`capture`] | saving and reading flows: HAR, mitmproxy's flow files, SQLite, server replay (feature `capture`) |
//! | [`web::WebUi`] | a web UI beside the proxy: live flow list, filter, detail, its JSON API in [`web::json`] (feature `web`) |
//!
//! Inside, the modules are layers, each using only those below it: `core`, `error`,
//! `decode` (foundations); `net` (streams, `splice(2)`, the original destination);
//! `tls`; `http` (messages, routing of a target, error pages, settings); `wire` (the
//! HTTP/1, HTTP/2, WebSocket, SOCKS5 and ClientHello formats, nothing else);
//! `upstream`; `middleware`; `filter`; `addons`; `engine` (the context, the relay, the one HTTP exchange,
//! tunnels); `protocol`; `server`; `capture`; `web`.
//! `ARCHITECTURE.md` in the repository follows one connection through the modules.
//!
//! # Features
//!
//! | feature | what it adds | crates it builds |
//! | --- | --- | --- |
//! | `capture` | [`capture`]: records of finished flows, HAR, mitmproxy's flow files, server replay | serde, serde_json |
//! | `sqlite` | the SQLite store for captures (needs `capture`) | rusqlite, with SQLite compiled in |
//! | `web` | [`web`]: the web UI beside the proxy (needs `capture`) | axum |
//! | `cli` (default) | the `mitm` command, with all of the above | clap, anyhow, tracing-subscriber |
//!
//! The proxy itself (protocols, interception, hooks, modes, upstream proxies) needs none
//! of them: an embedder that depends on the library with `default-features = false`
//! builds only that, and adds the features it uses:
//!
//! ```toml
//! mitm = { version = "0.1", default-features = false, features = ["capture"] }
//! ```

#![forbid(unsafe_code)]
// A panic in the library takes a user's proxy down: `unwrap` needs a reason here.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

// The layers, lowest first: each module uses only those above it in this list
// (ARCHITECTURE.md draws them; scripts/layers.py checks every import).
mod core;
pub mod decode;
mod error;

mod net;

pub mod tls;

mod http;

mod wire;

pub mod upstream;

pub mod middleware;

pub mod filter;

pub mod addons;

mod engine;

pub mod protocol;

pub mod server;

#[cfg(feature = "capture")]
pub mod capture;

#[cfg(feature = "web")]
pub mod web;

#[doc(hidden)]
pub mod internals;

/// WebSocket messages as hooks see them.
pub use crate::http::websocket;

pub use crate::core::{Connection, Flow, Host, ServerFacts, SocketFacts, State, Target, TlsFacts};
pub use crate::engine::context::Context;
pub use crate::engine::relay::Tunnel;
pub use crate::error::{Error, Result, Side};
pub use crate::http::message::{
    Body, Headers, HttpFlow, Replay, Request, Response, Timings, Verdict, Version,
};
pub use crate::http::websocket::{MessageKind, MessageVerdict, WebSocketMessage};
pub use crate::middleware::{
    DataHooks, FlowDetail, HttpHandler, HttpLog, IgnoreHosts, Interception, Log, Middleware,
    Router, TunnelVerdict,
};
pub use crate::net::io::{BoxIo, Io, Rewind};
pub use crate::protocol::{Connected, Http, Protocol, Resolution, Reverse, Socks5, Transparent};
pub use crate::server::listener::{Bound, Listener};
pub use crate::server::DEFAULT_TLS_FAIL_OPEN;
pub use crate::server::{default_ca_dir, Mitm, MitmBuilder, MitmHandle, Sender};
pub use crate::server::{DEFAULT_GRACE, DEFAULT_HOST, DEFAULT_MAX_CONNECTIONS, DEFAULT_PORT};
pub use crate::tls::ca::CertificateAuthority;
pub use crate::upstream::route::{Route, UpstreamProxy};
pub use crate::upstream::{Resolve, SystemResolver, UpstreamTls};

/// Re-exported so that implementors of [`Middleware`] and [`Protocol`] use the same
/// attribute macro as the crate.
pub use async_trait::async_trait;
/// Re-exported: the byte buffer type of the data hooks.
pub use bytes::Bytes;
/// Re-exported: the certificate library the CA is built on.
pub use rcgen;
/// Re-exported: the TLS library, whose configs and certificates appear in the API.
pub use rustls;
/// Re-exported: the async TLS streams [`Context::connect_tls`] returns.
pub use tokio_rustls;
