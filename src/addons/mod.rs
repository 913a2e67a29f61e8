//! mitmproxy's traffic-changing options as middlewares any embedder can add
//! ([`MitmBuilder::http_handler`](crate::MitmBuilder::http_handler)), each taking its
//! rules in mitmproxy's syntax ([`Spec`]: the first character separates the parts; the
//! filters are [`crate::filter`]'s language). The `mitm` command maps its flags and
//! `--set` options onto them.
//!
//! Each costs nothing for what it does not apply to: a rule's filter is matched only
//! when the rule could change the flow, and bodies are held for the hooks only by the
//! options that read them.
//!
//! | option | middleware | what it does |
//! | --- | --- | --- |
//! | `block_list` | [`BlockList`] | answers matching requests with a status (444: closes) |
//! | `anticache` | [`AntiCache`] | removes conditional request headers |
//! | `anticomp` | [`AntiComp`] | asks origins for uncompressed bodies |
//! | `modify_headers` | [`ModifyHeaders`] | sets or removes header fields |
//! | `map_remote` | [`MapRemote`] | sends requests to another URL |
//! | `map_local` | [`MapLocal`] | answers requests from local files |
//! | `modify_body` | [`ModifyBody`] | replaces text in decoded bodies |
//! | `stickyauth` | [`StickyAuth`] | adds the last `Authorization` seen to requests without one |
//! | `stickycookie` | [`StickyCookie`] | adds the cookies origins set to later requests |
//!
//! The `mitm` command adds them in this order, as mitmproxy runs them, before the
//! capture and the web UI, so what is saved and shown is the flow as changed.

mod anticache;
mod anticomp;
mod block_list;
mod map_local;
mod map_remote;
mod modify_body;
mod modify_headers;
mod rule;
mod spec;
mod stickyauth;
mod stickycookie;

pub use anticache::{AntiCache, CONDITIONAL_HEADERS};
pub use anticomp::AntiComp;
pub use block_list::{BlockList, BlockRule, BlockRuleError, FILTER_BODY_LIMIT, NO_RESPONSE};
pub use map_local::{MapLocal, DEFAULT_MAX_FILE};
pub use map_remote::MapRemote;
pub use modify_body::{ModifyBody, DEFAULT_BODY_LIMIT};
pub use modify_headers::ModifyHeaders;
pub use rule::RuleError;
pub use spec::{Spec, SpecError};
pub use stickyauth::{StickyAuth, STICKYAUTH_MAX_ORIGINS, STICKYAUTH_MAX_VALUE};
pub use stickycookie::{
    StickyCookie, STICKYCOOKIE_MAX_COOKIE, STICKYCOOKIE_MAX_DOMAINS, STICKYCOOKIE_MAX_PER_DOMAIN,
};
