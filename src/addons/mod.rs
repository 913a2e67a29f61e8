//! mitmproxy's traffic-changing options as middlewares any embedder can add
//! ([`MitmBuilder::http_handler`](crate::MitmBuilder::http_handler)), each taking its
//! rules in mitmproxy's syntax ([`Spec`]: the first character separates the parts; the
//! filters are [`crate::filter`]'s language). The `mitm` command maps its flags and
//! `--set` options onto them.
//!
//! Each costs nothing for what it does not apply to: a rule's filter is matched only
//! when the rule could change the flow, and bodies are held for the hooks only by the
//! options that read them.

mod anticache;
mod anticomp;
mod block_list;
mod spec;
mod stickyauth;
mod stickycookie;

pub use anticache::{AntiCache, CONDITIONAL_HEADERS};
pub use anticomp::AntiComp;
pub use block_list::{BlockList, BlockRule, BlockRuleError, FILTER_BODY_LIMIT, NO_RESPONSE};
pub use spec::{Spec, SpecError};
pub use stickyauth::{StickyAuth, STICKYAUTH_MAX_ORIGINS, STICKYAUTH_MAX_VALUE};
pub use stickycookie::{
    StickyCookie, STICKYCOOKIE_MAX_COOKIE, STICKYCOOKIE_MAX_DOMAINS, STICKYCOOKIE_MAX_PER_DOMAIN,
};
