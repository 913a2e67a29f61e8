//! `block_list`: requests matching a filter answered with a status and an empty body,
//! or dropped (444), without contacting their origin.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;

use crate::core::Connection;
use crate::filter::{Filter, FilterError, Live};
use crate::http::message::{HttpFlow, Response, Verdict};
use crate::middleware::HttpHandler;

/// The most body bytes held for the hooks of an option whose filter reads bodies
/// (`~b`, `~bq`, `~bs`), so that it sees them whole; larger bodies stream past and are
/// matched as empty. Options whose filters do not read bodies hold none.
pub const FILTER_BODY_LIMIT: usize = 1024 * 1024;

/// The body limit a handler matching `filters` asks for: [`FILTER_BODY_LIMIT`] when one
/// of them reads bodies, else 0.
pub(super) fn body_limit_for<'a>(filters: impl IntoIterator<Item = &'a Filter>) -> usize {
    if filters.into_iter().any(Filter::needs_bodies) {
        FILTER_BODY_LIMIT
    } else {
        0
    }
}

/// The status that closes the client's connection without any answer (nginx's "no
/// response", as mitmproxy uses it).
pub const NO_RESPONSE: u16 = 444;

/// One `block_list` rule in mitmproxy's syntax: `/FILTER/STATUS`, where the first
/// character separates the two parts (any character: `|~d ads|403`). The status is a
/// final status (200–599), or [`NO_RESPONSE`] (444) to close the connection without
/// answering.
///
/// mitmproxy also lower-cases the whole rule before parsing it (so there `~h X-Token`,
/// whose regex is case-sensitive, can never match a field named `X-Token`) and accepts
/// only the status codes it has a name for (1xx among them); here the filter is kept as
/// written and any final status is accepted.
///
/// ```
/// use mitm::addons::{BlockRule, BlockRuleError};
///
/// let rule: BlockRule = "/~d ads\\.example/403".parse()?;
/// assert_eq!((rule.filter.as_str(), rule.status), ("~d ads\\.example", 403));
///
/// let rule: BlockRule = ":~u /track:444".parse()?;
/// assert!(rule.closes());
///
/// assert_eq!(
///     "/~q/abc".parse::<BlockRule>().unwrap_err(),
///     BlockRuleError::Status { status: "abc".into() }
/// );
/// # Ok::<(), BlockRuleError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BlockRule {
    /// The requests the rule blocks.
    pub filter: Filter,
    /// The status they are answered with; [`NO_RESPONSE`] (444) for none.
    pub status: u16,
    text: String,
}

impl BlockRule {
    /// Whether the rule closes the connection without answering (status 444).
    pub fn closes(&self) -> bool {
        self.status == NO_RESPONSE
    }

    /// The text the rule was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for BlockRule {
    type Err = BlockRuleError;

    fn from_str(text: &str) -> Result<Self, BlockRuleError> {
        let mut chars = text.chars();
        let separator = chars.next().ok_or(BlockRuleError::Empty)?;
        let parts: Vec<&str> = chars.as_str().split(separator).collect();
        let [filter, status] = parts[..] else {
            return Err(BlockRuleError::Parts { separator });
        };
        let filter = Filter::parse(filter).map_err(|error| BlockRuleError::Filter {
            filter: filter.to_owned(),
            error,
        })?;
        let bad_status = || BlockRuleError::Status {
            status: status.to_owned(),
        };
        let status: u16 = status.trim().parse().map_err(|_| bad_status())?;
        if !(200..=599).contains(&status) {
            return Err(bad_status());
        }
        Ok(BlockRule {
            filter,
            status,
            text: text.to_owned(),
        })
    }
}

impl fmt::Display for BlockRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a `block_list` rule ([`BlockRule`]) could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockRuleError {
    /// The rule is empty.
    #[error("empty rule: expected /filter/status")]
    Empty,
    /// The rule does not have exactly two parts.
    #[error(
        "expected 2 parts separated by {separator:?} (the rule's first character): \
         {separator}filter{separator}status"
    )]
    Parts {
        /// The separator: the rule's first character.
        separator: char,
    },
    /// The status is not a number from 200 to 599.
    #[error("invalid status {status:?}: expected 200 to 599, or 444 to close without answering")]
    Status {
        /// The status part, as written.
        status: String,
    },
    /// The filter part is not a valid filter.
    #[error("invalid filter {filter:?}: {error}")]
    Filter {
        /// The filter part, as written.
        filter: String,
        /// What is wrong with it.
        error: FilterError,
    },
}

/// mitmproxy's `block_list`: requests matching a rule's filter are answered with the
/// rule's status and an empty body, without contacting their origin; a rule with status
/// 444 ([`NO_RESPONSE`]) closes the client's connection without answering
/// ([`Verdict::Kill`]; over HTTP/2, the request's stream is reset and the connection's
/// other streams go on). As in mitmproxy, every rule is tried: when several match, a
/// 444 among them wins, else the last one's status. `CONNECT` requests are not
/// blocked (mitmproxy's `request` hook does not see them): the requests inside an
/// intercepted tunnel are.
///
/// ```
/// use std::sync::Arc;
/// use mitm::addons::BlockList;
///
/// let block = BlockList::new(["/~d ads\\.example/404".parse()?, "|~u /beacon|444".parse()?]);
/// let builder = mitm::Mitm::builder().http_handler(Arc::new(block));
/// # Ok::<(), mitm::addons::BlockRuleError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BlockList {
    rules: Vec<BlockRule>,
    body_limit: usize,
}

impl BlockList {
    /// The handler for `rules`, tried in order.
    pub fn new(rules: impl IntoIterator<Item = BlockRule>) -> Self {
        let rules: Vec<BlockRule> = rules.into_iter().collect();
        let body_limit = body_limit_for(rules.iter().map(|r| &r.filter));
        BlockList { rules, body_limit }
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[BlockRule] {
        &self.rules
    }

    /// What the rules say of `flow`: `None` when none matches.
    fn verdict(&self, conn: &Connection, flow: &HttpFlow) -> Option<Verdict> {
        let live = Live::new(conn, flow);
        let mut status = None;
        for rule in self.rules.iter().filter(|r| r.filter.matches(&live)) {
            if rule.closes() {
                return Some(Verdict::Kill);
            }
            status = Some(rule.status);
        }
        status.map(|status| Verdict::Respond(Response::new(status)))
    }
}

#[async_trait]
impl HttpHandler for BlockList {
    async fn request(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if flow.request.is_connect() {
            return Verdict::Continue;
        }
        self.verdict(conn, flow).unwrap_or(Verdict::Continue)
    }

    /// 0 unless a rule's filter reads bodies ([`FILTER_BODY_LIMIT`]).
    fn body_limit(&self) -> usize {
        self.body_limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Host;
    use crate::http::message::Request;

    /// What `rules` do to a GET of `url`: the status answered, 444 for a kill, 0 for
    /// none.
    async fn outcome(rules: &[&str], method: &str, url: &str) -> u16 {
        let block = BlockList::new(rules.iter().map(|r| r.parse().unwrap()));
        let conn = Connection::new(1, Host::default());
        let mut flow = HttpFlow::new(1, Request::new(method, url).unwrap());
        match block.request(&conn, &mut flow).await {
            Verdict::Respond(r) => {
                assert!(r.body.bytes().is_none_or(|b| b.is_empty()));
                r.status
            }
            Verdict::Kill => NO_RESPONSE,
            Verdict::Continue => 0,
        }
    }

    #[tokio::test]
    async fn of_several_matching_rules_a_444_wins_else_the_last() {
        let rules = ["/~u a/403", "/~u ab/404", "/~u kill/444", "/~u kill2/410"];
        assert_eq!(outcome(&rules, "GET", "http://h/a").await, 403);
        assert_eq!(outcome(&rules, "GET", "http://h/ab").await, 404);
        assert_eq!(outcome(&rules, "GET", "http://h/kill2").await, 444);
        assert_eq!(outcome(&rules, "GET", "http://h/other").await, 0);
        // A CONNECT is not blocked: the requests inside its tunnel are.
        assert_eq!(outcome(&["/~q/403"], "CONNECT", "http://h:443/").await, 0);
        assert_eq!(outcome(&["/~q/403"], "GET", "http://h:443/").await, 403);
    }

    #[test]
    fn bodies_are_held_only_for_filters_that_read_them() {
        let plain = BlockList::new(["/~u a/403".parse().unwrap()]);
        assert_eq!(plain.body_limit(), 0);
        let bodies = BlockList::new(["/~u a/403".parse().unwrap(), "/~bq x/403".parse().unwrap()]);
        assert_eq!(bodies.body_limit(), FILTER_BODY_LIMIT);
    }

    #[test]
    fn two_parts_split_on_the_first_character() {
        let r: BlockRule = "/~q/404".parse().unwrap();
        assert_eq!((r.filter.as_str(), r.status), ("~q", 404));
        let r: BlockRule = "|~u /a/b|444".parse().unwrap();
        assert_eq!(r.filter.as_str(), "~u /a/b");
        assert!(r.closes());
        assert_eq!(r.to_string(), "|~u /a/b|444");
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        assert_eq!("".parse::<BlockRule>().unwrap_err(), BlockRuleError::Empty);
        for text in ["/~q", "/~q/404/x", "/"] {
            assert_eq!(
                text.parse::<BlockRule>().unwrap_err(),
                BlockRuleError::Parts { separator: '/' },
                "{text}"
            );
        }
        for status in ["abc", "", "99", "199", "600", "-1", "70000"] {
            let e = format!("/~q/{status}").parse::<BlockRule>().unwrap_err();
            assert_eq!(
                e,
                BlockRuleError::Status {
                    status: status.into()
                }
            );
            assert!(e.to_string().starts_with("invalid status"), "{e}");
        }
        let e = "/~x/404".parse::<BlockRule>().unwrap_err();
        assert!(matches!(e, BlockRuleError::Filter { ref filter, .. } if filter == "~x"));
        assert!(e.to_string().starts_with("invalid filter \"~x\""), "{e}");
    }
}
