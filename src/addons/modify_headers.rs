//! `modify_headers`: mitmproxy's `[/filter]/name/[@]value`, setting or removing a
//! header on the requests and responses a rule's filter matches.

use async_trait::async_trait;
use bytes::Bytes;

use super::rule::{self, RuleError};
use crate::core::Connection;
use crate::filter::Filter;
use crate::http::message::{Headers, HttpFlow, Verdict};
use crate::middleware::HttpHandler;

const OPTION: &str = "modify_headers";

/// mitmproxy's `modify_headers` option: each rule `[/filter]/name/[@]value` sets the
/// header `name` to `value` on every request and every response its filter matches
/// (a rule without a filter matches all; `~q` only requests, `~s` only responses). An
/// empty value removes the header; `@path` takes the value from a file, read once
/// here (mitmproxy reads it again for each message). Names and values take Python's
/// escapes (`\r`, `\x41`), as mitmproxy's do.
///
/// As in mitmproxy, every rule's filter is first matched against the message as it
/// came, then every matching rule's header is removed, then each matching rule with
/// a value adds its own, in order: two rules for one name give two fields.
///
/// It runs on the request before any other rule of mitmproxy's options and on every
/// response the client gets that is not the proxy's error page (mitmproxy leaves out
/// the responses `map_local` makes; this changes them too).
///
/// ```
/// use std::sync::Arc;
/// use mitm::addons::ModifyHeaders;
///
/// let headers = ModifyHeaders::new(["/~q/User-Agent/curl/8", "/X-Frame-Options/"])?;
/// let builder = mitm::Mitm::builder().http_handler(Arc::new(headers));
/// # let _ = builder;
/// # Ok::<(), mitm::addons::RuleError>(())
/// ```
#[derive(Debug)]
pub struct ModifyHeaders {
    rules: Vec<Rule>,
    /// Whether any rule has a filter: without, every rule matches and nothing is
    /// matched.
    filtered: bool,
}

#[derive(Debug)]
struct Rule {
    filter: Option<Filter>,
    name: String,
    /// `name` again, shared by every message it is added to.
    raw_name: Bytes,
    /// Empty: the header is only removed.
    value: Bytes,
}

impl ModifyHeaders {
    /// The option with these rules, in mitmproxy's syntax.
    ///
    /// # Errors
    ///
    /// [`RuleError`] for the first rule that does not parse, names a header no
    /// message may carry, has a value with a line break or NUL, or names an `@file`
    /// that cannot be read.
    pub fn new<I, S>(rules: I) -> Result<Self, RuleError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let rules = rule::parse_all(rules, Rule::parse)?;
        let filtered = rules.iter().any(|r| r.filter.is_some());
        Ok(ModifyHeaders { rules, filtered })
    }

    /// Applies the rules whose filters match `flow` to `headers` (the request's or
    /// the response's).
    fn run(&self, conn: &Connection, flow: &mut HttpFlow, response: bool) {
        // The filters look at the message as it came, before any rule changed it.
        let matched: Vec<bool> = if self.filtered {
            self.rules
                .iter()
                .map(|r| rule::applies(r.filter.as_ref(), conn, flow))
                .collect()
        } else {
            Vec::new()
        };
        let headers: &mut Headers = match (response, flow.response.as_mut()) {
            (true, Some(r)) => &mut r.headers,
            (true, None) => return,
            (false, _) => &mut flow.request.headers,
        };
        self.apply(headers, |i| !self.filtered || matched[i]);
    }

    /// Removes the header of every rule that `applies`, then adds the values.
    fn apply(&self, headers: &mut Headers, applies: impl Fn(usize) -> bool) {
        for (i, r) in self.rules.iter().enumerate() {
            if applies(i) {
                headers.remove(&r.name);
            }
        }
        for (i, r) in self.rules.iter().enumerate() {
            if applies(i) && !r.value.is_empty() {
                headers.append(r.raw_name.clone(), r.value.clone());
            }
        }
    }
}

impl Rule {
    fn parse(text: &str) -> Result<Rule, RuleError> {
        let spec = rule::parse(OPTION, text)?;
        let bad = |what: String| RuleError::Header {
            option: OPTION,
            rule: text.to_owned(),
            what,
        };
        let name = String::from_utf8(rule::unescape(&spec.subject))
            .ok()
            .filter(|n| http::HeaderName::from_bytes(n.as_bytes()).is_ok())
            .ok_or_else(|| bad(format!("{:?} is not a header name", spec.subject)))?;
        let value = match spec.replacement.strip_prefix('@') {
            Some(path) => std::fs::read(path).map_err(rule::file_error(OPTION, text, path))?,
            None => rule::unescape(&spec.replacement),
        };
        if value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(bad(format!(
                "the value of {name} holds a line break or NUL"
            )));
        }
        Ok(Rule {
            filter: spec.filter,
            raw_name: Bytes::copy_from_slice(name.as_bytes()),
            name,
            value: Bytes::from(value),
        })
    }
}

#[async_trait]
impl HttpHandler for ModifyHeaders {
    async fn request(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if !flow.request.is_connect() {
            self.run(conn, flow, false);
        }
        Verdict::Continue
    }

    async fn response(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        // Not the proxy's own error pages, nor the answer to a CONNECT.
        if flow.error.is_none() && !flow.request.is_connect() {
            self.run(conn, flow, true);
        }
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rules_are_refused_with_what_is_wrong() {
        let e = ModifyHeaders::new(["/bad name/x"]).unwrap_err();
        assert!(e.to_string().contains("is not a header name"), "{e}");
        let e = ModifyHeaders::new([r"/x-a/1\r\nx-b: 2"]).unwrap_err();
        assert!(e.to_string().contains("line break"), "{e}");
        let e = ModifyHeaders::new(["|x-a|@/nonexistent/file"]).unwrap_err();
        assert!(
            matches!(&e, RuleError::File { path, .. } if path.ends_with("file")),
            "{e}"
        );
        assert!(e.to_string().contains("/nonexistent/file"), "{e}");
        let e = ModifyHeaders::new(["/~bad/x-a/1"]).unwrap_err();
        assert!(matches!(e, RuleError::Spec { .. }), "{e}");
    }

    #[test]
    fn removes_every_named_header_then_adds_each_value() {
        let m = ModifyHeaders::new(["/X-A/1", "/x-a/2", "/x-b/", r"/x-c/a\x41"]).unwrap();
        assert!(!m.filtered);
        let mut h = Headers::new();
        h.append("x-a", "0");
        h.append("X-A", "0");
        h.append("x-b", "gone");
        h.append("keep", "k");
        let mut flow_headers = h;
        m.apply(&mut flow_headers, |_| true);
        let all: Vec<_> = flow_headers.iter().collect();
        assert_eq!(
            all,
            [
                ("keep", &b"k"[..]),
                ("X-A", b"1"),
                ("x-a", b"2"),
                ("x-c", b"aA")
            ]
        );
    }

    #[test]
    fn a_value_from_a_file_is_read_once() {
        let dir = std::env::temp_dir().join(format!("mitm-mh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("v");
        std::fs::write(&file, "from file").unwrap();
        let m = ModifyHeaders::new([format!("|x-v|@{}", file.display())]).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(m.rules[0].value, "from file");
    }
}
