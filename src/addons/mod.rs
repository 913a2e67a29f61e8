//! mitmproxy's traffic-changing options as middlewares any embedder can add
//! ([`MitmBuilder::http_handler`](crate::MitmBuilder::http_handler)), each taking its
//! rules in mitmproxy's syntax ([`Spec`]: the first character separates the parts; the
//! filters are [`crate::filter`]'s language). The `mitm` command maps its flags and
//! `--set` options onto them.
//!
//! Each costs nothing for what it does not apply to: a rule's filter is matched only
//! when the rule could change the flow, and bodies are held for the hooks only by the
//! options that read them.

mod map_local;
mod map_remote;
mod modify_body;
mod modify_headers;
mod rule;
mod spec;

pub use map_local::{MapLocal, DEFAULT_MAX_FILE};
pub use map_remote::MapRemote;
pub use modify_body::{ModifyBody, DEFAULT_BODY_LIMIT};
pub use modify_headers::ModifyHeaders;
pub use rule::RuleError;
pub use spec::{Spec, SpecError};
