//! The engine: what happens to a connection once a protocol has taken it.
//!
//! - `context`: the services protocols use (CA, upstreams, hooks, relay);
//! - `relay`: bytes both ways, spliced, copied, or through the data hooks;
//! - `exchange`: one request/response exchange for every HTTP version, the HTTP/1 and
//!   HTTP/2 client sessions, and what follows a `101`;
//! - `tunnel`: after `CONNECT`: who speaks first, TLS interception or pass-through.

pub(crate) mod context;
pub(crate) mod exchange;
pub(crate) mod relay;
pub(crate) mod tunnel;
