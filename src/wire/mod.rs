//! Wire formats, and nothing else: each module turns bytes into messages and back.
//! What to do with a message (routing, hooks, upstream connections) is the engine's
//! business (`crate::engine`); when a wire engine must call out (the data hooks on raw
//! reads), the caller hands it what to call.
//!
//! - `h1`: HTTP/1.x heads, bodies, and one side's buffered stream;
//! - `h2`: HTTP/2 over the `h2` crate, and conversion to the crate's messages;
//! - `websocket`: the RFC 6455 frame codec;
//! - `socks5`: the SOCKS5 handshake (RFC 1928, RFC 1929), both sides;
//! - `client_hello`: SNI and ALPN read from a raw TLS ClientHello.

pub(crate) mod client_hello;
pub(crate) mod h1;
pub(crate) mod h2;
pub(crate) mod socks5;
pub(crate) mod websocket;
