//! `map_remote`: mitmproxy's `[/filter]/url-regex/replacement`, sending a request to
//! another URL.

use async_trait::async_trait;
use bytes::Bytes;
use regex_lite::Regex;

use super::rule::{self, RuleError};
use crate::core::Connection;
use crate::filter::Filter;
use crate::http::message::{HttpFlow, Request, Verdict};
use crate::http::target::host_value;
use crate::middleware::HttpHandler;

const OPTION: &str = "map_remote";

/// mitmproxy's `map_remote` option: each rule `[/filter]/url-regex/replacement`
/// rewrites the URL of the requests its filter matches (every request without one)
/// by replacing each match of `url-regex` with `replacement` (which may name groups
/// as Python does: `\1`, `\g<name>`). The new scheme, host, port and path become the
/// request's target and path, and a `Host` field the request has says the new host,
/// as mitmproxy does it. Rules apply in order, each to the URL the one before left.
///
/// The URL is the one the request is going to (scheme, target host, port, path), as
/// [`Request::url`] writes it.
///
/// ```
/// use std::sync::Arc;
/// use mitm::addons::MapRemote;
///
/// // Every request to example.com's /api goes to a local server instead.
/// let map = MapRemote::new([r"|^https://example\.com/api/|http://127.0.0.1:8080/"])?;
/// let builder = mitm::Mitm::builder().http_handler(Arc::new(map));
/// # let _ = builder;
/// # Ok::<(), mitm::addons::RuleError>(())
/// ```
#[derive(Debug)]
pub struct MapRemote {
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    filter: Option<Filter>,
    regex: Regex,
    /// The replacement in the regex engine's syntax.
    replacement: String,
}

impl MapRemote {
    /// The option with these rules, in mitmproxy's syntax.
    ///
    /// # Errors
    ///
    /// [`RuleError`] for the first rule that does not parse or whose regex does not
    /// compile.
    pub fn new<I, S>(rules: I) -> Result<Self, RuleError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let rules = rule::parse_all(rules, Rule::parse)?;
        Ok(MapRemote { rules })
    }
}

impl Rule {
    fn parse(text: &str) -> Result<Rule, RuleError> {
        let spec = rule::parse(OPTION, text)?;
        Ok(Rule {
            regex: rule::regex(OPTION, &spec, "", &spec.subject)?,
            replacement: rule::template(&spec.replacement),
            filter: spec.filter,
        })
    }

    /// Rewrites the URL of `request`, if the regex matches and changes it.
    fn rewrite(&self, request: &mut Request) {
        let url = request.url();
        let new = self.regex.replace_all(&url, self.replacement.as_str());
        if new != url && !retarget(request, &new) {
            tracing::warn!(%url, new = %new, "map_remote: not an http(s) URL, left as it was");
        }
    }
}

/// Points `request` at `url` (absolute, `http` or `https`); false, leaving it as it
/// was, when `url` is not one.
fn retarget(request: &mut Request, url: &str) -> bool {
    let Some(Some((target, path))) = crate::http::target::split_absolute(url) else {
        return false;
    };
    if target.host.is_empty() {
        return false;
    }
    request.target = target;
    request.path = path;
    if request.headers.contains("host") {
        request.headers.insert(
            "Host",
            Bytes::from(host_value(&request.target).into_bytes()),
        );
    }
    true
}

#[async_trait]
impl HttpHandler for MapRemote {
    async fn request(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if flow.request.is_connect() {
            return Verdict::Continue;
        }
        for r in &self.rules {
            if !rule::applies(r.filter.as_ref(), conn, flow) {
                continue;
            }
            r.rewrite(&mut flow.request);
        }
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(rules: &[&str], url: &str, host: Option<&str>) -> Request {
        let m = MapRemote::new(rules).unwrap();
        let mut req = Request::new("GET", url).unwrap();
        if let Some(h) = host {
            req.headers.insert("Host", h.to_string());
        }
        for r in &m.rules {
            r.rewrite(&mut req);
        }
        req
    }

    #[test]
    fn the_url_is_rewritten_with_groups_and_the_host_field_follows() {
        let r = mapped(
            &[r"|^https://([a-z]+)\.example\.com/(.*)|http://127.0.0.1:8080/\1/\g<2>"],
            "https://api.example.com/v1?x=1",
            Some("api.example.com"),
        );
        assert_eq!(r.url(), "http://127.0.0.1:8080/api/v1?x=1");
        assert!(!r.target.tls);
        assert_eq!(r.headers.get("host"), Some("127.0.0.1:8080"));
        // No Host field: none is added.
        let r = mapped(&["/example.com/example.org"], "http://example.com/", None);
        assert_eq!(r.url(), "http://example.org/");
        assert!(!r.headers.contains("host"));
        // Rules apply one after another; one that makes no URL changes nothing.
        let r = mapped(
            &["/a.test/b.test", "/b.test/c.test", "/.*/nonsense"],
            "http://a.test/",
            None,
        );
        assert_eq!(r.url(), "http://c.test/");
    }

    #[test]
    fn a_bad_regex_is_refused_at_start() {
        let e = MapRemote::new(["/(unclosed/x"]).unwrap_err();
        assert!(
            matches!(&e, RuleError::Regex { regex, .. } if regex == "(unclosed"),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("map_remote rule \"/(unclosed/x\""),
            "{e}"
        );
    }
}
