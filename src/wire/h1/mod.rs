//! The HTTP/1.x wire format, and nothing else: finding and parsing heads (`parse`),
//! the framing of bodies as they stream (`body`), writing heads out (`write`), and the
//! buffered stream of one side of a connection (`peer`).
//!
//! What to do with a message (routing, hooks, upstream connections) is the exchange's
//! business (`crate::engine::exchange`); this module only turns bytes into messages and back.

pub(crate) mod body;
pub(crate) mod parse;
pub(crate) mod peer;
pub(crate) mod write;

pub(crate) use self::peer::{Buffers, Peer};
