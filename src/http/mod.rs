//! The HTTP core, below every wire format: the messages hooks see ([`Request`],
//! [`Response`], [`Headers`], [`Body`], [`HttpFlow`]), where a request goes
//! (`target`), the pages the proxy answers with itself (`page`, `magic`), and the
//! settings every HTTP connection obeys (`settings`). Nothing here reads or writes a
//! socket; the engines (`h1`, `http2`) and the exchange build on it.
//!
//! [`Request`]: message::Request
//! [`Response`]: message::Response
//! [`Headers`]: message::Headers
//! [`Body`]: message::Body
//! [`HttpFlow`]: message::HttpFlow

pub(crate) mod magic;
pub(crate) mod message;
pub(crate) mod page;
pub(crate) mod settings;
pub(crate) mod target;
pub mod websocket;
