//! `modify_body`: mitmproxy's `[/filter]/regex/[@]replacement`, replacing text in
//! the decoded bodies of requests and responses.

use async_trait::async_trait;
use bytes::Bytes;
use regex_lite::Regex;

use super::rule::{self, RuleError};
use crate::core::Connection;
use crate::decode;
use crate::filter::Filter;
use crate::http::message::{Body, Headers, HttpFlow, Verdict};
use crate::middleware::HttpHandler;

const OPTION: &str = "modify_body";

/// The largest body [`ModifyBody`] holds and changes by default: 16 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 16 << 20;

/// mitmproxy's `modify_body` option: each rule `[/filter]/regex/[@]replacement`
/// replaces every match of `regex` (`.` matching line breaks too, as mitmproxy
/// compiles it) with `replacement` (`@path` takes it from a file, read once here
/// where mitmproxy reads it for each message) in the body of
/// each request and each response its filter matches. The body is changed decoded:
/// a `Content-Encoding` (gzip, deflate, br, zstd) is undone first and done again
/// after, so the message keeps the encoding it came with.
///
/// As in mitmproxy, the regex and the replacement first have Python's string escapes
/// undone (`\n`, `\x41`), then the replacement is a Python template: a group is
/// `\g<1>`, `\g<name>` or `\\1` (a lone `\1` is the byte 1 by then).
///
/// Bodies are held for this only when rules exist, up to [`with_body_limit`]
/// (default [`DEFAULT_BODY_LIMIT`]): a larger body streams past unchanged, as a body
/// mitmproxy streams (`stream_large_bodies`) does. So does a body that is not UTF-8
/// once decoded (the regex engine works on text), and one whose encoding cannot be
/// undone.
///
/// [`with_body_limit`]: Self::with_body_limit
///
/// ```
/// use std::sync::Arc;
/// use mitm::addons::ModifyBody;
///
/// let body = ModifyBody::new([r"/~s & ~t html/<title>(.*?)</title>/<title>[proxied] \1</title>"])?;
/// let builder = mitm::Mitm::builder().http_handler(Arc::new(body));
/// # let _ = builder;
/// # Ok::<(), mitm::addons::RuleError>(())
/// ```
#[derive(Debug)]
pub struct ModifyBody {
    rules: Vec<Rule>,
    limit: usize,
}

#[derive(Debug)]
struct Rule {
    filter: Option<Filter>,
    regex: Regex,
    /// The replacement in the regex engine's syntax.
    replacement: String,
}

impl ModifyBody {
    /// The option with these rules, in mitmproxy's syntax.
    ///
    /// # Errors
    ///
    /// [`RuleError`] for the first rule that does not parse, whose regex does not
    /// compile (or is not UTF-8 once its escapes are undone), or whose `@file` cannot
    /// be read.
    pub fn new<I, S>(rules: I) -> Result<Self, RuleError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let rules = rule::parse_all(rules, Rule::parse)?;
        Ok(ModifyBody {
            rules,
            limit: DEFAULT_BODY_LIMIT,
        })
    }

    /// Holds and changes bodies of up to `limit` bytes (as they come, and again
    /// decoded); larger ones stream past unchanged. Default: [`DEFAULT_BODY_LIMIT`].
    pub fn with_body_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Runs the rules over the request's body, or the response's.
    fn run(&self, conn: &Connection, flow: &mut HttpFlow, response: bool) {
        // The decoded body, and whether a rule changed it (else it is not put back,
        // and an encoded body is not encoded again).
        let mut text: Option<(String, bool)> = None;
        for r in &self.rules {
            if let Some(filter) = &r.filter {
                // A filter that reads the body sees it as the rules before left it.
                if filter.needs_bodies() {
                    if let Some((t, true)) = text.take() {
                        store(message(flow, response), t);
                    }
                }
                if !rule::applies(Some(filter), conn, flow) {
                    continue;
                }
            }
            if text.is_none() {
                let Some((headers, body)) = message(flow, response) else {
                    return;
                };
                let Some(t) = decoded_text(headers, body, self.limit) else {
                    return;
                };
                text = Some((t, false));
            }
            if let Some((t, changed)) = text.as_mut() {
                if let std::borrow::Cow::Owned(new) = r.regex.replace_all(t, r.replacement.as_str())
                {
                    *t = new;
                    *changed = true;
                }
            }
        }
        if let Some((t, true)) = text {
            store(message(flow, response), t);
        }
    }
}

/// The headers and body of the request (or the response).
fn message(flow: &mut HttpFlow, response: bool) -> Option<(&mut Headers, &mut Body)> {
    if response {
        let r = flow.response.as_mut()?;
        Some((&mut r.headers, &mut r.body))
    } else {
        Some((&mut flow.request.headers, &mut flow.request.body))
    }
}

/// The body as text, decoded by its `Content-Encoding`; `None` when it streams, its
/// encoding cannot be undone within `limit`, or it is not UTF-8.
fn decoded_text(headers: &Headers, body: &Body, limit: usize) -> Option<String> {
    let bytes = body.bytes()?;
    let plain = match headers.get("content-encoding") {
        None => bytes.to_vec(),
        Some(coding) => match decode::decode(coding, bytes, limit) {
            Ok(plain) => plain,
            Err(e) => {
                tracing::debug!(error = %e, "modify_body: body left as it was");
                return None;
            }
        },
    };
    String::from_utf8(plain).ok()
}

/// Puts `text` back as the body, encoded as its `Content-Encoding` says (each coding
/// in the order listed). Left as it was if that fails.
fn store(message: Option<(&mut Headers, &mut Body)>, text: String) {
    let Some((headers, body)) = message else {
        return;
    };
    let mut data = text.into_bytes();
    if let Some(codings) = headers.get("content-encoding") {
        for coding in codings.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            match decode::encode(coding, &data) {
                Ok(encoded) => data = encoded,
                Err(e) => {
                    tracing::debug!(error = %e, "modify_body: body left as it was");
                    return;
                }
            }
        }
    }
    if data.is_empty() && matches!(body, Body::Empty) {
        return;
    }
    *body = Body::Full(Bytes::from(data));
}

impl Rule {
    fn parse(text: &str) -> Result<Rule, RuleError> {
        let spec = rule::parse(OPTION, text)?;
        let regex =
            String::from_utf8(rule::unescape(&spec.subject)).map_err(|_| RuleError::Regex {
                option: OPTION,
                rule: text.to_owned(),
                regex: spec.subject.clone(),
                error: "not UTF-8 once its escapes are undone".into(),
            })?;
        let regex = rule::regex(OPTION, &spec, "(?s)", &regex)?;
        let replacement = match spec.replacement.strip_prefix('@') {
            // A file's text is the replacement as it is, not a template.
            Some(path) => {
                let file =
                    std::fs::read_to_string(path).map_err(rule::file_error(OPTION, text, path))?;
                // As mitmproxy, a file's text is a template too (`\1`).
                rule::template(&file)
            }
            None => {
                let unescaped = rule::unescape(&spec.replacement);
                rule::template(&String::from_utf8_lossy(&unescaped))
            }
        };
        Ok(Rule {
            filter: spec.filter,
            regex,
            replacement,
        })
    }
}

#[async_trait]
impl HttpHandler for ModifyBody {
    async fn request(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if !flow.request.is_connect() {
            self.run(conn, flow, false);
        }
        Verdict::Continue
    }

    async fn response(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if flow.error.is_none() && !flow.request.is_connect() {
            self.run(conn, flow, true);
        }
        Verdict::Continue
    }

    fn body_limit(&self) -> usize {
        // No rules, nothing to hold bodies for.
        if self.rules.is_empty() {
            0
        } else {
            self.limit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request with `body` (encoded by `encoding`) through the option's request
    /// hook: its headers and body after.
    fn changed(rules: &[&str], encoding: Option<&str>, body: &[u8]) -> (Headers, Body) {
        let m = ModifyBody::new(rules).unwrap();
        let mut req = crate::Request::new("POST", "http://example.test/").unwrap();
        req.body = Body::Full(Bytes::copy_from_slice(body));
        if let Some(coding) = encoding {
            req.headers.insert("Content-Encoding", coding.to_string());
            req.body = Body::Full(decode::encode(coding, body).unwrap().into());
        }
        let mut flow = HttpFlow::new(1, req);
        let conn = Connection::new(1, crate::core::Host::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(m.request(&conn, &mut flow));
        (flow.request.headers, flow.request.body)
    }

    #[test]
    fn replaces_in_the_decoded_body_and_encodes_it_again() {
        for coding in [
            None,
            Some("gzip"),
            Some("deflate"),
            Some("br"),
            Some("zstd"),
        ] {
            let (headers, body) = changed(
                &[r"/wor(ld)/WOR\g<1>", "/a.b/X"],
                coding,
                b"hello world\na\nb",
            );
            let plain = decode::decode(
                headers.get("content-encoding").unwrap_or("identity"),
                body.bytes().unwrap(),
                1 << 20,
            )
            .unwrap();
            assert_eq!(plain, b"hello WORld\nX", "{coding:?}");
        }
    }

    #[test]
    fn dollar_signs_are_literal_and_files_are_templates() {
        let dir = std::env::temp_dir().join(format!("mitm-mb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("r");
        std::fs::write(&file, "$1 \\1 from file").unwrap();
        let (_, body) = changed(
            &["/(x)/$5", &format!("|(y)|@{}", file.display())],
            None,
            b"x y",
        );
        assert_eq!(body.bytes().unwrap().as_ref(), b"$5 $1 y from file");
        // Python's escapes come first, as in mitmproxy: `\1` is the byte 1, `\\1` the
        // group.
        let (_, body) = changed(&[r"/(x)/\1\\1"], None, b"x");
        assert_eq!(body.bytes().unwrap().as_ref(), b"\x01x");
        // A rule whose filter does not match changes nothing.
        let (_, body) = changed(&["/~s/x/z"], None, b"x");
        assert_eq!(body.bytes().unwrap().as_ref(), b"x");
    }

    #[test]
    fn bad_rules_are_refused_with_what_is_wrong() {
        let e = ModifyBody::new(["/a(/b"]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("modify_body rule \"/a(/b\": invalid regular expression \"a(\""),
            "{e}"
        );
        let e = ModifyBody::new(["|a|@/nonexistent/r"]).unwrap_err();
        assert!(matches!(e, RuleError::File { .. }), "{e}");
        let e = ModifyBody::new([r"/\xff/x"]).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }

    #[test]
    fn bodies_are_held_only_up_to_the_limit() {
        let m = ModifyBody::new(["/a/b"]).unwrap().with_body_limit(10);
        assert_eq!(m.body_limit(), 10);
        assert_eq!(
            ModifyBody::new(["/a/b"]).unwrap().body_limit(),
            DEFAULT_BODY_LIMIT
        );
        assert_eq!(ModifyBody::new([""; 0]).unwrap().body_limit(), 0);
        // Not UTF-8: left alone.
        assert!(decoded_text(
            &Headers::new(),
            &Body::Full(Bytes::from_static(b"\xff")),
            10
        )
        .is_none());
        assert!(decoded_text(&Headers::new(), &Body::Streaming, 10).is_none());
    }
}
