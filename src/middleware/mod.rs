//! Hooks: what a program runs at each event of a proxied connection. Three traits, each
//! for one concern, every method with a default:
//!
//! | trait | hooks | registered with |
//! | --- | --- | --- |
//! | [`Middleware`] | the original's seven: `mitm_started`, `client_connected`, `server_connected`, `client_data`, `server_data`, `client_disconnected`, `server_disconnected` | [`MitmBuilder::middleware`](crate::MitmBuilder::middleware) |
//! | [`HttpHandler`] | HTTP messages of every version: `request`, `response`, `flow_finished`; WebSocket messages: `websocket_message` | [`MitmBuilder::http_handler`](crate::MitmBuilder::http_handler) |
//! | [`Router`] | where a connection goes: `route`, `tunnel`, `should_intercept`, `payload` | [`MitmBuilder::router`](crate::MitmBuilder::router) |
//!
//! A type implements the traits it needs and is added once for each. Only a
//! [`Middleware`] whose [`data_hooks`](Middleware::data_hooks) are
//! [`On`](DataHooks::On) makes the proxy copy relayed bytes through its memory;
//! everything else leaves the zero-copy relay on.
//!
//! # The life of a connection, as hooks see it
//!
//! 1. [`mitm_started`](Middleware::mitm_started): once per server, when it listens.
//! 2. [`client_connected`](Middleware::client_connected): a client's TCP connection is
//!    accepted; only `conn.client` is known.
//! 3. [`client_data`](Middleware::client_data) with the client's *first bytes* (those a
//!    protocol recognised, e.g. the `CONNECT` request), before any server is connected.
//! 4. [`server_connected`](Middleware::server_connected): the protocol reached the
//!    upstream (and finished TLS on both sides for an intercepted `CONNECT`).
//! 5. [`client_data`](Middleware::client_data) / [`server_data`](Middleware::server_data)
//!    for every chunk read, in each direction, as it arrives: the bytes of every
//!    protocol, HTTP/1 heads and bodies included (`conn.protocol` tells which protocol
//!    speaks). Bytes are plaintext: TLS handshakes never reach the hooks, and neither
//!    do HTTP/2 connections (binary frames, not something a hook could edit).
//!    For HTTP, the message hooks run in between:
//!    [`request`](HttpHandler::request), [`response`](HttpHandler::response),
//!    [`flow_finished`](HttpHandler::flow_finished), and
//!    [`websocket_message`](HttpHandler::websocket_message) after an upgrade.
//! 6. [`server_disconnected`](Middleware::server_disconnected) if a server was
//!    connected, then [`client_disconnected`](Middleware::client_disconnected), the
//!    original's order. They run however the connection ended, errors included.
//!
//! One client connection may reach several servers over its life: a keep-alive HTTP/1
//! client may send each request to another origin. Each time the origin changes,
//! `server_disconnected` fires for the old one and `server_connected` for the new one
//! (`conn.server` then names it). An HTTP/2 client's streams run at once and may go to
//! several origins at once: there, the server hooks fire only for the tunnel's own
//! upstream.
//!
//! Hooks of one trait run in the order their values were added to the server. For the
//! data hooks, the bytes one returns are what the next one receives, and what the last
//! one returns is what is sent.
//!
//! # State
//!
//! One value serves every connection at once, so hooks take `&self`. Keep
//! per-connection data in [`Connection::state`](crate::Connection::state), never in a
//! field of the value.

mod chain;
mod connection;
mod flow_detail;
mod handler;
mod http_log;
mod ignore;
mod log;
mod router;
mod tcp_hosts;

pub(crate) use self::chain::{Chain, Hooks};
pub use self::connection::{DataHooks, Middleware};
pub use self::flow_detail::{Detail, FlowDetail};
pub use self::handler::HttpHandler;
pub use self::http_log::HttpLog;
pub use self::ignore::{IgnoreHosts, PatternError};
pub use self::log::Log;
pub use self::router::{Interception, Payload, Router, TunnelVerdict};
pub use self::tcp_hosts::TcpHosts;
pub use crate::wire::client_hello::ClientHello;
