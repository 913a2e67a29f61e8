//! [`Filter`]: a subset of mitmproxy's filter language, parsed once and matched against
//! [`Record`]s (`mitm read --filter`, `--save-filter`, the web UI). The language and
//! its grammar are described on [`Filter`].

use std::fmt;
use std::str::FromStr;

use regex_lite::{Regex, RegexBuilder};

use super::{Record, RecordedBody};
use crate::http::message::Headers;

/// The longest filter [`Filter::parse`] accepts, in bytes.
pub const MAX_FILTER_LEN: usize = 64 * 1024;
/// The deepest nesting of parentheses [`Filter::parse`] accepts.
pub const MAX_FILTER_DEPTH: usize = 64;

/// The most bytes a content-encoded body is decoded to for `~b`; past that (or when
/// decoding fails, as it does for a truncated body) the raw bytes are matched.
const DECODE_LIMIT: usize = 64 * 1024 * 1024;

/// A parsed filter expression: a subset of mitmproxy's filter language.
///
/// | expression | matches a flow whose … |
/// | --- | --- |
/// | `~d REGEX` | host (or `Host` field) matches |
/// | `~m REGEX` | method matches |
/// | `~c CODE` | response status is `CODE` |
/// | `~u REGEX`, `REGEX` | URL matches |
/// | `~h REGEX`, `~hq`, `~hs` | header fields (`name: value` lines) of either side, the request, the response match |
/// | `~b REGEX`, `~bq`, `~bs` | body of either side, the request, the response matches (decoded when content-encoded) |
/// | `~t REGEX` | `Content-Type` of either side matches |
/// | `~q` | request has no response |
/// | `~s` | request has a response |
/// | `~websocket` | flow is a WebSocket handshake (a `101` with `Upgrade: websocket`, or, with no response yet, a request asking for one) |
/// | `!F`, `F & G`, `F \| G`, `(F)`, `F G` | not, and, or, grouping, and again |
///
/// Regexes are case-insensitive (ASCII), searched anywhere in the text (anchor them
/// with `^` and `$`), and bodies are matched as text (invalid UTF-8 replaced).
///
/// The grammar, as in mitmproxy:
///
/// ```text
/// filter   := or+                     several in a row are all required (`&`)
/// or       := and ( '|' and )*
/// and      := not ( '&' not )*
/// not      := '!'* atom
/// atom     := '(' filter ')' | '~' OPERATOR [ARGUMENT] | WORD | QUOTED
/// ```
///
/// So `!` binds tightest, then `&`, then `|`, and expressions written side by side are
/// joined by `&` last of all: `a | b c` is `(a | b) & c`, as in mitmproxy. A `WORD` runs
/// up to white space or one of `( ) ~ ' "`, so `a|b` is one word (a regex with an
/// alternation): operators between words need spaces around them, and a regex with a
/// space must be quoted (`~h 'x-token: 1'`). A `QUOTED` string is
/// in single or double quotes; a backslash escapes the next character, and only the
/// quote's own escape is removed (`\"` is `"`), so regex escapes such as `\d` or `\\`
/// reach the regex as written. A word or quoted string on its own matches the URL.
///
/// ```
/// use mitm::capture::Filter;
///
/// let filter: Filter = "~d example\\.com & !~m POST | ~c 404".parse()?;
/// assert_eq!(filter.to_string(), "~d example\\.com & !~m POST | ~c 404");
///
/// let error = Filter::parse("~m GET & ~x").unwrap_err();
/// assert_eq!(error.position(), 9);
/// assert_eq!(error.to_string(), "unknown operator ~x at position 9");
/// # Ok::<(), mitm::capture::FilterError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Filter {
    text: String,
    expr: Expr,
}

impl Filter {
    /// Parses `text`.
    ///
    /// # Errors
    ///
    /// A [`FilterError`] with the byte offset of the problem in `text`: an unknown
    /// operator, a missing argument or expression, an unbalanced parenthesis, an
    /// unterminated quoted string, an invalid regex or status code, a filter longer than
    /// [`MAX_FILTER_LEN`] or nested deeper than [`MAX_FILTER_DEPTH`].
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        if text.len() > MAX_FILTER_LEN {
            return Err(FilterError::new(
                0,
                FilterErrorKind::TooLong(MAX_FILTER_LEN),
            ));
        }
        let mut parser = Parser {
            text,
            pos: 0,
            depth: 0,
        };
        let expr = parser.filter()?;
        // `filter` stops only at the end or at a `)`; inside no parenthesis, the latter
        // is the only input that can be left over.
        if parser.peek().is_some() {
            return Err(parser.error(FilterErrorKind::UnexpectedClose));
        }
        Ok(Filter {
            text: text.to_owned(),
            expr,
        })
    }

    /// Whether `record` matches.
    pub fn matches(&self, record: &Record) -> bool {
        self.expr.matches(record)
    }

    /// Whether matching looks at bodies (`~b`, `~bq`, `~bs` anywhere in the filter,
    /// negated or not): a store can match a filter that does not without loading them.
    pub fn needs_bodies(&self) -> bool {
        self.expr.needs_bodies()
    }

    /// Conditions every flow the filter matches meets, simple enough for a store to
    /// check before it decodes a flow (an SQL `WHERE`): those of the operators joined
    /// by `&` at the top of the filter that are `~c`, `~q`, `~s`, or `~d`, `~m` with a
    /// regex that is plain text. Necessary, not sufficient: the flows that meet them
    /// must still be [`matches`](Self::matches)ed. None for many filters.
    pub fn prefilters(&self) -> Vec<Prefilter> {
        let mut out = Vec::new();
        self.expr.prefilters(&mut out);
        out
    }

    /// The text the filter was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Filter::parse(text)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A condition every flow a [`Filter`] matches meets ([`Filter::prefilters`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Prefilter {
    /// The response's status is this (`~c`).
    Status(u16),
    /// There is no response (`~q`).
    NoResponse,
    /// There is a response (`~s`).
    HasResponse,
    /// The host, or the request's header fields as `name: value` lines, contain this
    /// ASCII text, ignoring ASCII case; it is lowercase (`~d` with plain text).
    HostOrRequestHead(String),
    /// The method contains this ASCII text, ignoring ASCII case; it is lowercase (`~m`
    /// with plain text).
    Method(String),
}

/// Why a filter could not be parsed, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at position {position}")]
pub struct FilterError {
    position: usize,
    kind: FilterErrorKind,
}

impl FilterError {
    fn new(position: usize, kind: FilterErrorKind) -> Self {
        FilterError { position, kind }
    }

    /// Where the problem is: a byte offset into the filter's text (its length when the
    /// filter ended too soon).
    pub fn position(&self) -> usize {
        self.position
    }

    /// What the problem is.
    pub fn kind(&self) -> &FilterErrorKind {
        &self.kind
    }

    /// What the problem is, as a sentence without the position.
    pub fn message(&self) -> String {
        self.kind.to_string()
    }
}

/// What is wrong with a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterErrorKind {
    /// `~` followed by a name this filter language does not have (as written).
    #[error("unknown operator {0}")]
    UnknownOperator(String),
    /// An operator that takes an argument (named) has none.
    #[error("{0} needs an argument")]
    MissingArgument(String),
    /// An expression was expected (at the start, after `!`, `&`, `|` or `(`), but the
    /// filter ended or went on with what is described.
    #[error("expected an expression, found {0}")]
    MissingExpression(String),
    /// A `(` that is never closed (the position is the `(`'s).
    #[error("unbalanced parenthesis: '(' is never closed")]
    UnclosedParenthesis,
    /// A `)` with no `(` to close.
    #[error("unbalanced parenthesis: ')' has no '(' to close")]
    UnexpectedClose,
    /// A quoted string with no closing quote (the position is the opening quote's).
    #[error("unterminated quoted string")]
    UnterminatedString,
    /// An argument that is not a valid regex.
    #[error("invalid regex {pattern:?}: {error}")]
    BadRegex {
        /// The regex, as the operator received it.
        pattern: String,
        /// What the regex parser said.
        error: String,
    },
    /// An argument of `~c` that is not a status code.
    #[error("invalid status code {0:?} (expected a number up to 65535)")]
    BadStatus(String),
    /// The filter is longer than this many bytes.
    #[error("filter is longer than {0} bytes")]
    TooLong(usize),
    /// Parentheses are nested deeper than this.
    #[error("parentheses are nested deeper than {0}")]
    TooDeep(usize),
}

/// Which side's headers or body an operator looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sides {
    Both,
    Request,
    Response,
}

impl Sides {
    fn request(self) -> bool {
        self != Sides::Response
    }

    fn response(self) -> bool {
        self != Sides::Request
    }
}

/// A parsed expression. `!` chains are folded when parsed, so nesting (and with it the
/// recursion of matching and dropping) is bounded by [`MAX_FILTER_DEPTH`].
#[derive(Debug, Clone)]
enum Expr {
    Domain(Regex),
    Method(Regex),
    Status(u16),
    Url(Regex),
    Header(Sides, Regex),
    Body(Sides, Regex),
    ContentType(Regex),
    NoResponse,
    HasResponse,
    WebSocket,
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    fn prefilters(&self, out: &mut Vec<Prefilter>) {
        match self {
            Expr::And(all) => all.iter().for_each(|e| e.prefilters(out)),
            Expr::Status(code) => out.push(Prefilter::Status(*code)),
            Expr::NoResponse => out.push(Prefilter::NoResponse),
            Expr::HasResponse => out.push(Prefilter::HasResponse),
            // The host field's host is part of the request's head.
            Expr::Domain(re) => {
                out.extend(plain_text(re.as_str()).map(Prefilter::HostOrRequestHead))
            }
            Expr::Method(re) => out.extend(plain_text(re.as_str()).map(Prefilter::Method)),
            _ => {}
        }
    }

    fn needs_bodies(&self) -> bool {
        match self {
            Expr::Body(..) => true,
            Expr::Not(e) => e.needs_bodies(),
            Expr::And(all) | Expr::Or(all) => all.iter().any(Expr::needs_bodies),
            _ => false,
        }
    }

    fn matches(&self, r: &Record) -> bool {
        let request = &r.request;
        let response = r.response.as_ref();
        match self {
            Expr::Domain(re) => {
                re.is_match(&request.host)
                    || host_field(&request.headers).is_some_and(|h| re.is_match(h))
            }
            Expr::Method(re) => re.is_match(&request.method),
            Expr::Status(code) => response.is_some_and(|s| s.status == *code),
            Expr::Url(re) => re.is_match(&request.url()),
            Expr::Header(sides, re) => {
                (sides.request() && re.is_match(&header_lines(&request.headers)))
                    || (sides.response()
                        && response.is_some_and(|s| re.is_match(&header_lines(&s.headers))))
            }
            Expr::Body(sides, re) => {
                (sides.request() && re.is_match(&body_text(&request.headers, &request.body)))
                    || (sides.response()
                        && response.is_some_and(|s| re.is_match(&body_text(&s.headers, &s.body))))
            }
            Expr::ContentType(re) => {
                content_type(&request.headers).is_some_and(|t| re.is_match(&t))
                    || response
                        .and_then(|s| content_type(&s.headers))
                        .is_some_and(|t| re.is_match(&t))
            }
            Expr::NoResponse => response.is_none(),
            Expr::HasResponse => response.is_some(),
            Expr::WebSocket => match response {
                Some(s) => s.status == 101 && s.headers.has_token("upgrade", "websocket"),
                None => request.headers.has_token("upgrade", "websocket"),
            },
            Expr::Not(e) => !e.matches(r),
            Expr::And(all) => all.iter().all(|e| e.matches(r)),
            Expr::Or(any) => any.iter().any(|e| e.matches(r)),
        }
    }
}

/// The text a regex `pattern` matches when it is plain text, lowercase: ASCII letters,
/// digits, `-`, `_`, `/`, `:`, and `.` escaped (`\.`). `None` for any other pattern,
/// the empty one included. (Matched ignoring ASCII case, the regex finds the text
/// wherever it occurs, and only there.)
fn plain_text(pattern: &str) -> Option<String> {
    let mut text = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '/' | ':' => {
                text.push(c.to_ascii_lowercase());
            }
            '\\' if chars.next()? == '.' => text.push('.'),
            _ => return None,
        }
    }
    (!text.is_empty()).then_some(text)
}

/// The host of a `Host` field, without its port (and an IPv6 address without
/// brackets), as mitmproxy's `pretty_host`.
fn host_field(headers: &Headers) -> Option<&str> {
    let value = headers.get("host")?.trim();
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split_once(']').map(|(host, _)| host);
    }
    match value.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => Some(host),
        _ => Some(value),
    }
}

/// The fields as `name: value` lines, one per field, each ending in `\n`.
fn header_lines(headers: &Headers) -> String {
    let mut text = String::new();
    for (name, value) in headers.iter() {
        text.push_str(name);
        text.push_str(": ");
        text.push_str(&String::from_utf8_lossy(value));
        text.push('\n');
    }
    text
}

fn content_type(headers: &Headers) -> Option<String> {
    headers
        .get_bytes("content-type")
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The body as text: decoded by its `Content-Encoding` when it has one and it decodes,
/// else the raw bytes.
fn body_text(headers: &Headers, body: &RecordedBody) -> String {
    let codings = headers
        .get_all("content-encoding")
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(",");
    let decoded = if codings.trim().is_empty() {
        None
    } else {
        crate::decode::decode(&codings, &body.data, DECODE_LIMIT).ok()
    };
    String::from_utf8_lossy(decoded.as_deref().unwrap_or(&body.data)).into_owned()
}

/// A recursive-descent parser over `text`, at byte offset `pos`. Every token it looks
/// for is ASCII, so `pos` always sits on a character boundary.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// Parentheses open around `pos`.
    depth: usize,
}

impl Parser<'_> {
    /// The next character after white space (skipped).
    fn peek(&mut self) -> Option<char> {
        let rest = &self.text[self.pos..];
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        trimmed.chars().next()
    }

    fn error(&self, kind: FilterErrorKind) -> FilterError {
        FilterError::new(self.pos, kind)
    }

    /// `or+`, joined by `&`: up to the end or a `)`.
    fn filter(&mut self) -> Result<Expr, FilterError> {
        let mut all = vec![self.or()?];
        while !matches!(self.peek(), None | Some(')')) {
            all.push(self.or()?);
        }
        Ok(joined(all, Expr::And))
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut any = vec![self.and()?];
        while self.peek() == Some('|') {
            self.pos += 1;
            any.push(self.and()?);
        }
        Ok(joined(any, Expr::Or))
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut all = vec![self.not()?];
        while self.peek() == Some('&') {
            self.pos += 1;
            all.push(self.not()?);
        }
        Ok(joined(all, Expr::And))
    }

    /// `!`s are counted, not nested: `!!!a` is `!a`.
    fn not(&mut self) -> Result<Expr, FilterError> {
        let mut negate = false;
        while self.peek() == Some('!') {
            self.pos += 1;
            negate = !negate;
        }
        let atom = self.atom()?;
        Ok(if negate {
            Expr::Not(Box::new(atom))
        } else {
            atom
        })
    }

    fn atom(&mut self) -> Result<Expr, FilterError> {
        match self.peek() {
            None => Err(self.error(FilterErrorKind::MissingExpression("the end".into()))),
            Some(c @ (')' | '&' | '|')) => {
                Err(self.error(FilterErrorKind::MissingExpression(format!("'{c}'"))))
            }
            Some('(') => {
                if self.depth == MAX_FILTER_DEPTH {
                    return Err(self.error(FilterErrorKind::TooDeep(MAX_FILTER_DEPTH)));
                }
                let open = self.pos;
                self.pos += 1;
                self.depth += 1;
                let inner = self.filter()?;
                self.depth -= 1;
                if self.peek() != Some(')') {
                    return Err(FilterError::new(open, FilterErrorKind::UnclosedParenthesis));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some('~') => self.operator(),
            Some(c) => {
                let Some(word) = self.argument() else {
                    return Err(self.error(FilterErrorKind::MissingExpression(format!("'{c}'"))));
                };
                let (at, word) = word?;
                Ok(Expr::Url(regex(&word, at, false)?))
            }
        }
    }

    /// `~NAME` and its argument.
    fn operator(&mut self) -> Result<Expr, FilterError> {
        let text = self.text;
        let start = self.pos;
        let rest = &text[start + 1..];
        let len = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        self.pos = start + 1 + len;
        let name = &text[start..self.pos];
        let sides = |s: &str| match s {
            "" => Sides::Both,
            "q" => Sides::Request,
            _ => Sides::Response,
        };
        Ok(match name {
            "~q" => Expr::NoResponse,
            "~s" => Expr::HasResponse,
            "~websocket" => Expr::WebSocket,
            "~c" => {
                let (at, code) = self.required(name)?;
                // Digits only: `u16::from_str` would also take a `+`.
                match code.parse() {
                    Ok(status) if code.bytes().all(|b| b.is_ascii_digit()) => Expr::Status(status),
                    _ => return Err(FilterError::new(at, FilterErrorKind::BadStatus(code))),
                }
            }
            "~d" | "~m" | "~u" | "~t" | "~h" | "~hq" | "~hs" | "~b" | "~bq" | "~bs" => {
                let (at, pattern) = self.required(name)?;
                let re = regex(&pattern, at, name.starts_with("~h"))?;
                match name {
                    "~d" => Expr::Domain(re),
                    "~m" => Expr::Method(re),
                    "~u" => Expr::Url(re),
                    "~t" => Expr::ContentType(re),
                    _ if name.starts_with("~h") => Expr::Header(sides(&name[2..]), re),
                    _ => Expr::Body(sides(&name[2..]), re),
                }
            }
            _ => {
                return Err(FilterError::new(
                    start,
                    FilterErrorKind::UnknownOperator(name.into()),
                ))
            }
        })
    }

    /// The argument `operator` needs, with its position.
    fn required(&mut self, operator: &str) -> Result<(usize, String), FilterError> {
        self.argument()
            .unwrap_or_else(|| Err(self.error(FilterErrorKind::MissingArgument(operator.into()))))
    }

    /// A word or a quoted string at the next token, with its position; `None` when the
    /// next token is neither.
    fn argument(&mut self) -> Option<Result<(usize, String), FilterError>> {
        let next = self.peek()?;
        let text = self.text;
        let start = self.pos;
        let quote = match next {
            q @ ('"' | '\'') => q,
            c if is_word_char(c) => {
                let rest = &text[start..];
                let len = rest.find(|c: char| !is_word_char(c)).unwrap_or(rest.len());
                self.pos += len;
                return Some(Ok((start, rest[..len].to_owned())));
            }
            _ => return None,
        };
        let mut value = String::new();
        let mut chars = text[start + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) if e == quote => value.push(e),
                    Some((_, e)) => {
                        value.push('\\');
                        value.push(e);
                    }
                    None => break,
                },
                _ if c == quote => {
                    self.pos = start + 1 + i + 1;
                    return Some(Ok((start, value)));
                }
                _ => value.push(c),
            }
        }
        Some(Err(FilterError::new(
            start,
            FilterErrorKind::UnterminatedString,
        )))
    }
}

/// Whether `c` may be part of an unquoted word (as in mitmproxy: anything but white
/// space, parentheses, `~` and quotes).
fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '~' | '"' | '\'')
}

/// One expression, or `join` of several.
fn joined(mut parts: Vec<Expr>, join: fn(Vec<Expr>) -> Expr) -> Expr {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        join(parts)
    }
}

/// `pattern`, case-insensitive (and with `^`/`$` at line ends when `lines`), found at
/// `at`.
fn regex(pattern: &str, at: usize, lines: bool) -> Result<Regex, FilterError> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .multi_line(lines)
        .build()
        .map_err(|e| {
            FilterError::new(
                at,
                FilterErrorKind::BadRegex {
                    pattern: pattern.into(),
                    error: e.to_string(),
                },
            )
        })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::SystemTime;

    use bytes::Bytes;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::capture::{RecordedRequest, RecordedResponse, RecordedTimings};

    /// A record of `method url` (`scheme://host[:port]/path`) with no response.
    pub(crate) fn record(method: &str, url: &str) -> Record {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().unwrap()),
            None => (authority, if scheme == "https" { 443 } else { 80 }),
        };
        let mut headers = Headers::new();
        headers.append("Host", authority.to_owned());
        Record {
            websocket: None,
            facts: Default::default(),
            started_at: SystemTime::UNIX_EPOCH,
            client: None,
            server: None,
            client_tls: scheme == "https",
            tls: Default::default(),
            request: RecordedRequest {
                method: method.into(),
                scheme: scheme.into(),
                host: host.into(),
                port,
                path: if path.is_empty() { "/" } else { path }.into(),
                version: "HTTP/1.1".into(),
                headers,
                body: RecordedBody::default(),
            },
            response: None,
            timings: RecordedTimings::default(),
            error: None,
        }
    }

    /// `r` with a response of `status`, `headers` and `body`.
    pub(crate) fn answered(
        mut r: Record,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Record {
        let mut h = Headers::new();
        for (n, v) in headers {
            h.append(n.to_string(), v.to_string());
        }
        r.response = Some(RecordedResponse {
            status,
            reason: String::new(),
            version: "HTTP/1.1".into(),
            headers: h,
            body: RecordedBody::whole(Bytes::copy_from_slice(body)),
        });
        r
    }

    fn get() -> Record {
        record("GET", "https://www.example.com/search?q=rust")
    }

    fn post() -> Record {
        let mut r = record("POST", "http://api.test.localhost:8080/upload");
        r.request.headers.append("Content-Type", "application/json");
        r.request.headers.append("X-Token", "Secret");
        r.request.body = RecordedBody::whole(Bytes::from_static(b"{\"name\":\"Ferris\"}"));
        answered(
            r,
            201,
            &[("Content-Type", "text/plain; charset=utf-8")],
            b"created",
        )
    }

    fn is(filter: &str, r: &Record) -> bool {
        Filter::parse(filter)
            .unwrap_or_else(|e| panic!("{filter:?}: {e}"))
            .matches(r)
    }

    fn error(filter: &str) -> (usize, FilterErrorKind) {
        let e = Filter::parse(filter).expect_err(filter);
        (e.position(), e.kind().clone())
    }

    #[test]
    fn domain_matches_the_host_or_the_host_field_without_its_port() {
        assert!(is("~d example.com", &get()));
        assert!(is("~d ^www\\.EXAMPLE\\.com$", &get()));
        assert!(!is("~d ^example", &get()));
        assert!(is("~d ^api\\.test\\.localhost$", &post()));
        let mut r = record("GET", "http://10.0.0.1/");
        r.request.headers.insert("Host", "named.localhost:8080");
        assert!(is("~d ^named\\.localhost$", &r));
        r.request.headers.insert("Host", "[::1]:8080");
        assert!(is("~d ^::1$", &r));
    }

    #[test]
    fn only_body_operators_need_bodies() {
        let needs = |f: &str| Filter::parse(f).unwrap().needs_bodies();
        assert!(!needs(
            "~d a & ~m GET | ~c 200 ~h x ~t json ~u y ~q ~s ~websocket"
        ));
        assert!(needs("~b x"));
        assert!(needs("~d a & !(~m GET | ~bs x)"));
        assert!(needs("~bq x | ~c 200"));
    }

    #[test]
    fn prefilters_are_the_simple_conditions_joined_by_and_at_the_top() {
        let pre = |f: &str| Filter::parse(f).unwrap().prefilters();
        use Prefilter::*;
        assert_eq!(
            pre("~d Rare\\.Host ~m POST & ~c 200 & ~s & !~q & ~u x"),
            [
                HostOrRequestHead("rare.host".into()),
                Method("post".into()),
                Status(200),
                HasResponse
            ]
        );
        assert_eq!(
            pre("~q & (~c 200 & ~d a-b_c:8/x)"),
            [
                NoResponse,
                Status(200),
                HostOrRequestHead("a-b_c:8/x".into())
            ]
        );
        for none in [
            "~c 200 | ~c 404",
            "!~c 200",
            "~d ^a",
            "~d a.b",
            "~d a\\d",
            "~m GET|POST",
            "~d ''",
            "~h host",
        ] {
            assert_eq!(pre(none), [], "{none}");
        }
    }

    #[test]
    fn method_matches_case_insensitively() {
        assert!(is("~m GET", &get()));
        assert!(is("~m get", &get()));
        assert!(!is("~m POST", &get()));
        assert!(is("~m ^p", &post()));
    }

    #[test]
    fn code_matches_the_response_status_only() {
        assert!(is("~c 201", &post()));
        assert!(!is("~c 200", &post()));
        assert!(!is("~c 200", &get()), "no response, no status");
        assert_eq!(error("~c 2x").1, FilterErrorKind::BadStatus("2x".into()));
        assert_eq!(
            error("~c 70000"),
            (3, FilterErrorKind::BadStatus("70000".into()))
        );
    }

    #[test]
    fn url_matches_the_whole_url_and_bare_words_are_urls() {
        assert!(is("~u ^https://www\\.example\\.com/search", &get()));
        assert!(is("~u q=RUST", &get()));
        assert!(is("search", &get()));
        assert!(is("\"example\\.com/search\"", &get()));
        assert!(is("'search\\?q='", &get()));
        assert!(is(":8080/upload$", &post()));
        assert!(!is("nothing", &get()));
        // As in mitmproxy, `|` inside a word belongs to the word's regex.
        assert!(is("nothing|search", &get()));
    }

    #[test]
    fn headers_are_name_value_lines_of_either_or_one_side() {
        let r = post();
        assert!(is("~h '^x-token: secret$'", &r));
        // Unquoted, the space ends the regex: `secret$` is a second filter, on the URL.
        assert!(!is("~h ^x-token: secret$", &r));
        assert!(is("~hq x-token", &r));
        assert!(!is("~hs x-token", &r));
        assert!(is("~h text/plain", &r));
        assert!(is("~hs '^content-type: text/plain'", &r));
        assert!(!is("~hq text/plain", &r));
        assert!(!is("~hs host", &get()), "no response, no response headers");
    }

    #[test]
    fn bodies_match_decoded_when_encoded_and_raw_when_decoding_fails() {
        let r = post();
        assert!(is("~b ferris", &r));
        assert!(is("~bq ferris", &r));
        assert!(!is("~bs ferris", &r));
        assert!(is("~bs ^created$", &r));
        assert!(is("~b created", &r));
        assert!(!is("~bq created", &r));

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"hello compressed world").unwrap();
        let gz = gz.finish().unwrap();
        let zipped = answered(get(), 200, &[("Content-Encoding", "gzip")], &gz);
        assert!(is("~bs compressed", &zipped));
        // Cut short, it does not decode: the raw bytes are matched.
        let cut = answered(
            get(),
            200,
            &[("Content-Encoding", "gzip")],
            b"not gzip at all",
        );
        assert!(is("~bs gzip", &cut));
        // Invalid UTF-8 is matched as text, replaced.
        let binary = answered(get(), 200, &[], b"\xff\xfeab\x00cd");
        assert!(is("~bs ab.cd", &binary));
    }

    #[test]
    fn content_type_matches_either_side() {
        let r = post();
        assert!(is("~t json", &r));
        assert!(is("~t ^TEXT/plain", &r));
        assert!(!is("~t html", &r));
        assert!(!is("~t .", &get()));
    }

    #[test]
    fn q_and_s_tell_whether_there_is_a_response() {
        assert!(is("~q", &get()));
        assert!(!is("~s", &get()));
        assert!(is("~s", &post()));
        assert!(!is("~q", &post()));
    }

    #[test]
    fn websocket_is_a_101_upgrade_or_a_request_for_one_still_unanswered() {
        let mut asked = record("GET", "http://ws.localhost/chat");
        asked.request.headers.append("Connection", "Upgrade");
        asked.request.headers.append("Upgrade", "websocket");
        assert!(is("~websocket", &asked));
        let switched = answered(asked.clone(), 101, &[("Upgrade", "WebSocket")], b"");
        assert!(is("~websocket", &switched));
        let refused = answered(asked, 403, &[], b"");
        assert!(!is("~websocket", &refused));
        assert!(!is("~websocket", &get()));
        assert!(!is(
            "~websocket",
            &answered(get(), 101, &[("Upgrade", "h2c")], b"")
        ));
    }

    #[test]
    fn not_binds_tightest_then_and_then_or() {
        let (g, p) = (get(), post());
        assert!(is("!~m POST", &g));
        assert!(!is("!~m GET", &g));
        assert!(is("!!~m GET", &g));
        assert!(is("! ! ! ~m POST", &g));
        // `!a & b` is `(!a) & b`.
        assert!(!is("!~m POST & ~q", &p));
        assert!(is("!(~m POST & ~q)", &p));
        // `a | b & c` is `a | (b & c)`.
        assert!(is("~m GET | ~m POST & ~c 404", &g));
        assert!(!is("(~m GET | ~m POST) & ~c 404", &g));
        // `a & b | c` is `(a & b) | c`.
        assert!(is("~m PUT & ~q | ~s", &p));
        assert!(is("((~m GET))", &g));
        assert!(is("( ~m GET | ~m PUT ) & ~q", &g));
    }

    #[test]
    fn side_by_side_means_and_loosest_of_all_as_in_mitmproxy() {
        let (g, p) = (get(), post());
        assert!(is("~m GET ~q", &g));
        assert!(!is("~m GET ~s", &g));
        // `a | b c` is `(a | b) & c`, not `a | (b & c)`.
        assert!(!is("~m GET | ~m PUT ~s", &g));
        assert!(is("~m GET | ~m POST ~s", &p));
        assert!(is("(~m GET ~q) | ~s", &p));
        assert!(is("example search", &g));
    }

    #[test]
    fn quoted_strings_keep_regex_escapes_and_drop_only_the_quotes_own() {
        let mut r = get();
        r.request.path = "/say?it=\"it's\"&b=a\\b (x)".into();
        assert!(is(r#""\"it's\"""#, &r));
        assert!(is(r"'it\'s'", &r));
        assert!(is(r#""a\\b \(x\)""#, &r));
        assert!(
            is(r#"~u "b=a\\""#, &r),
            "an escaped backslash does not escape the quote"
        );
        assert!(is("\"\\d\"", &record("GET", "http://h.localhost/7")));
        assert!(!is("\"\\d\"", &record("GET", "http://h.localhost/x")));
        assert!(
            is("\"s  \\(x\" | ~q", &get()),
            "spaces and parentheses inside quotes"
        );
    }

    #[test]
    fn errors_name_the_problem_and_where_it_is() {
        use FilterErrorKind::*;
        assert_eq!(error("~m GET & ~x"), (9, UnknownOperator("~x".into())));
        assert_eq!(error("~dfoo"), (0, UnknownOperator("~dfoo".into())));
        assert_eq!(error("~ GET"), (0, UnknownOperator("~".into())));
        assert_eq!(error("~d"), (2, MissingArgument("~d".into())));
        assert_eq!(error("~m GET & ~h )"), (12, MissingArgument("~h".into())));
        assert_eq!(error("~c ~q"), (3, MissingArgument("~c".into())));
        assert_eq!(error(""), (0, MissingExpression("the end".into())));
        assert_eq!(error("   "), (3, MissingExpression("the end".into())));
        assert_eq!(error("~q &"), (4, MissingExpression("the end".into())));
        assert_eq!(error("~q & | ~s"), (5, MissingExpression("'|'".into())));
        assert_eq!(error("!"), (1, MissingExpression("the end".into())));
        assert_eq!(error("()"), (1, MissingExpression("')'".into())));
        assert_eq!(error("& ~q"), (0, MissingExpression("'&'".into())));
        assert_eq!(error("(~q | (~s)"), (0, UnclosedParenthesis));
        assert_eq!(error("~q)"), (2, UnexpectedClose));
        assert_eq!(error("(~q) ) ~s"), (5, UnexpectedClose));
        assert_eq!(error("~u 'abc"), (3, UnterminatedString));
        assert_eq!(error(r#"~u "abc\"#), (3, UnterminatedString));
        assert_eq!(error(r#""abc\"#), (0, UnterminatedString));
        let (at, kind) = error("~q & ~u a[b");
        assert_eq!(at, 8);
        let BadRegex { pattern, error } = kind else {
            panic!("{kind:?}")
        };
        assert_eq!(pattern, "a[b");
        assert!(!error.is_empty());
        let e = Filter::parse("~q & ~u a[b").unwrap_err();
        assert!(e.to_string().starts_with("invalid regex \"a[b\": "), "{e}");
        assert!(e.to_string().ends_with(" at position 8"), "{e}");
        assert_eq!(e.message(), e.kind().to_string());
    }

    #[test]
    fn long_and_deep_filters_are_refused_without_overflowing_the_stack() {
        let long = "a".repeat(MAX_FILTER_LEN + 1);
        assert_eq!(error(&long), (0, FilterErrorKind::TooLong(MAX_FILTER_LEN)));
        assert!(Filter::parse(&"a".repeat(MAX_FILTER_LEN)).is_ok());

        let deep = "(".repeat(MAX_FILTER_LEN);
        assert_eq!(
            error(&deep),
            (MAX_FILTER_DEPTH, FilterErrorKind::TooDeep(MAX_FILTER_DEPTH))
        );
        let ok = format!("{}~q{}", "(".repeat(64), ")".repeat(64));
        assert!(is(&ok, &get()));
        let too_deep = format!("{}~q{}", "(".repeat(65), ")".repeat(65));
        assert_eq!(
            error(&too_deep).1,
            FilterErrorKind::TooDeep(MAX_FILTER_DEPTH)
        );
        let nots = format!("{}~q", "!(".repeat(64)) + &")".repeat(64);
        assert!(is(&nots, &get()));

        // Many `!` fold into one; many operands make a flat list.
        assert!(is(&format!("{}~s", "!".repeat(MAX_FILTER_LEN - 3)), &get()));
        let wide = "~q | ".repeat(MAX_FILTER_LEN / 5 - 1) + "~q";
        assert!(is(&wide, &get()));
        let side_by_side = "~q ".repeat(MAX_FILTER_LEN / 3);
        assert!(is(&side_by_side, &get()));
        // A deeply nested regex is the regex engine's to refuse, also without overflow.
        let regex = format!("'{}'", "(".repeat(MAX_FILTER_LEN - 2));
        assert!(matches!(error(&regex).1, FilterErrorKind::BadRegex { .. }));
    }

    /// Parses `text`; when it parses, matches it against a few records. Either way the
    /// error position lies inside the text, on a character boundary.
    fn exercise(text: &str, records: &[Record]) {
        match Filter::parse(text) {
            Ok(f) => {
                assert_eq!(f.as_str(), text);
                for r in records {
                    f.matches(r);
                }
            }
            Err(e) => {
                assert!(e.position() <= text.len(), "{text:?}: {e}");
                assert!(text.is_char_boundary(e.position()), "{text:?}: {e}");
                assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn tricky_inputs_never_panic() {
        let records = [
            get(),
            post(),
            answered(get(), 101, &[("Upgrade", "websocket")], b""),
        ];
        let tricky = [
            "~",
            "~~",
            "~~~",
            "!",
            "!!",
            "&",
            "|",
            "(",
            ")",
            ")(",
            "((",
            "))",
            "'",
            "\"",
            "\\",
            "'\\",
            "\"\\\"",
            "~d '",
            "~c",
            "~c -1",
            "~c 0",
            "~c 65535",
            "~c 99999999999999999999",
            "~h ~hq ~hs",
            "~b(",
            "~b (",
            "~q(",
            "~q()",
            "(~q)(~s)",
            "! (",
            "a & (",
            "a | )",
            "~websocket~q",
            "~websocketx",
            "~Q",
            "~D x",
            "é",
            "~d é",
            "~é",
            "'é",
            "\u{0}",
            "~u \u{0}",
            "a\u{3000}b",
            "~u [",
            "~u \\",
            "~u (?",
            "~u a{99999}",
            "~u a{5}{5}{5}{5}{5}",
            "~u \\p{Greek}",
            "\"(\"",
            "' '",
            "''",
            "\"\"",
            "~d ''",
            "!~q!~s",
            "~q&~s|~q",
            "~q &&",
            "~q || ~s",
            "~q & !",
            "x!y",
            "x&y",
            "~u !&|",
        ];
        for text in tricky {
            exercise(text, &records);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let records = [get(), post()];
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d69_746d);
        const PIECES: [&str; 24] = [
            "~d ",
            "~m ",
            "~c ",
            "~u ",
            "~h ",
            "~hq ",
            "~hs ",
            "~b ",
            "~bq ",
            "~bs ",
            "~t ",
            "~q",
            "~s",
            "~websocket",
            "!",
            "&",
            "|",
            "(",
            ")",
            "'",
            "\"",
            "\\",
            " ",
            "a",
        ];
        for _ in 0..20_000 {
            let mut text = Vec::new();
            for _ in 0..rng.random_range(0..24) {
                if rng.random_bool(0.5) {
                    text.extend_from_slice(PIECES[rng.random_range(0..PIECES.len())].as_bytes());
                } else {
                    text.push(rng.random());
                }
            }
            exercise(&String::from_utf8_lossy(&text), &records);
        }
    }
}
