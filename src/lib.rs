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
//! use mitm::{async_trait, Bytes, Connection, Middleware, Mitm};
//! use std::sync::Arc;
//!
//! struct Shout;
//!
//! #[async_trait]
//! impl Middleware for Shout {
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
//! # Layout
//!
//! | module | what it holds |
//! | --- | --- |
//! | `core` | [`Host`], [`Connection`], [`Flow`], [`Target`], per-connection [`State`] |
//! | `error` | [`Error`], [`Side`], [`Result`] |
//! | `server` | [`Mitm`] and [`MitmBuilder`]: bind, accept, the life of one connection, shutdown |
//! | `protocol` | the [`Protocol`] trait, [`Resolution`], [`Context`]; `protocol::http` is [`Http`] |
//! | `middleware` | the [`Middleware`] trait; built-ins [`Log`] and [`HttpLog`] |
//! | `ca` | [`CertificateAuthority`]: the root, leaves per host, their cache |
//! | `upstream` | connecting upstream: [`Resolve`] (name lookup) and upstream TLS |
//! | `relay` | copying bytes both ways, through the data hooks when a middleware wants them |
//! | `io` | [`Io`], the boxed stream type protocols hand around, and [`Rewind`] |
//! | `h1` | the HTTP/1 engine: heads, body framing, the request loop, the upstream pool |
//! | `message` | [`Request`], [`Response`], [`Headers`], [`Body`], [`HttpFlow`], [`Verdict`] |
//! | `websocket` | WebSocket frames and message hooks after an upgrade |

#![forbid(unsafe_code)]
// A panic in the library takes a user's proxy down: `unwrap` needs a reason here.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod ca;
mod client_hello;
mod core;
pub mod decode;
mod error;
mod h1;
mod http2;
#[doc(hidden)]
pub mod internals;
mod io;
mod message;
pub mod middleware;
pub mod protocol;
mod relay;
mod server;
#[cfg(target_os = "linux")]
mod splice;
pub mod trust;
pub mod upstream;
pub mod websocket;

pub use crate::ca::CertificateAuthority;
pub use crate::core::{Connection, Flow, Host, State, Target};
pub use crate::error::{Error, Result, Side};
pub use crate::io::{BoxIo, Io, Rewind};
pub use crate::message::{Body, Headers, HttpFlow, Request, Response, Timings, Verdict, Version};
pub use crate::middleware::{HttpLog, Log, Middleware};
pub use crate::protocol::{Connected, Context, Http, Protocol, Resolution, Tunnel};
pub use crate::server::{default_ca_dir, Mitm, MitmBuilder, MitmHandle};
pub use crate::server::{DEFAULT_GRACE, DEFAULT_HOST, DEFAULT_MAX_CONNECTIONS, DEFAULT_PORT};
pub use crate::upstream::{Resolve, SystemResolver};
pub use crate::websocket::{MessageKind, MessageVerdict, WebSocketMessage};

/// The crypto provider of every TLS config the crate builds: rustls' `ring` provider,
/// made once.
pub(crate) fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<std::sync::Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Re-exported so that implementors of [`Middleware`] and [`Protocol`] use the same
/// attribute macro as the crate.
pub use async_trait::async_trait;
/// Re-exported: the byte buffer type of the data hooks.
pub use bytes::Bytes;
/// Re-exported: the certificate library the CA is built on.
pub use rcgen;
/// Re-exported: the TLS library, whose configs and certificates appear in the API.
pub use rustls;
