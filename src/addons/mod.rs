//! mitmproxy's traffic-changing options as middlewares any embedder can add
//! ([`MitmBuilder::http_handler`](crate::MitmBuilder::http_handler)), each taking its
//! rules in mitmproxy's syntax ([`Spec`]: the first character separates the parts; the
//! filters are [`crate::filter`]'s language). The `mitm` command maps its flags and
//! `--set` options onto them.
//!
//! Each costs nothing for what it does not apply to: a rule's filter is matched only
//! when the rule could change the flow, and bodies are held for the hooks only by the
//! options that read them.

mod spec;

pub use spec::{Spec, SpecError};
