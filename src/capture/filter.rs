//! [`Filter`]: mitmproxy's filter language, parsed once and matched against
//! [`Record`]s (`mitm read --filter`, `--save-filter`, the web UI) with mitmproxy's
//! rules. The language and its grammar are described on [`Filter`].

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use regex_lite::{Regex, RegexBuilder};

use super::{Record, RecordedBody, RecordedRequest};
use crate::http::message::Headers;

/// The longest filter [`Filter::parse`] accepts, in bytes.
pub const MAX_FILTER_LEN: usize = 64 * 1024;
/// The deepest nesting of parentheses [`Filter::parse`] accepts.
pub const MAX_FILTER_DEPTH: usize = 64;

/// The most bytes a content-encoded body is decoded to for `~b`; past that (or when
/// decoding fails, as it does for a truncated body) the raw bytes are matched.
const DECODE_LIMIT: usize = 64 * 1024 * 1024;

/// What `~a` takes for an asset: a response `Content-Type` containing one of these
/// (mitmproxy's list: scripts, style sheets, images, fonts).
const ASSET_TYPES: [&str; 7] = [
    "text/javascript",
    "application/x-javascript",
    "application/javascript",
    "text/css",
    "image/",
    "font/",
    "application/font",
];

/// A parsed filter expression: mitmproxy's filter language, with the operators that
/// apply to HTTP and WebSocket flows.
///
/// | expression | matches a flow … |
/// | --- | --- |
/// | `~all`, `~http` | any (every record is an HTTP flow) |
/// | `~tcp`, `~udp`, `~dns` | none (no record is such a flow) |
/// | `~q` | with no response |
/// | `~s` | with a response |
/// | `~e` | with an error |
/// | `~a` | whose response is an asset: a `Content-Type` containing `text/javascript`, `application/x-javascript`, `application/javascript`, `text/css`, `image/`, `font/` or `application/font` |
/// | `~websocket` | that became a WebSocket |
/// | `~marked` | that is marked ([`Annotations`](super::Annotations)) |
/// | `~marker REGEX` | whose mark matches |
/// | `~comment REGEX` | whose comment matches (`^`, `$` match at line ends) |
/// | `~replay`, `~replayq`, `~replays` | that was replayed: at all, its request (a client replay), its response (a server replay) |
/// | `~d REGEX` | whose host, or `Host` field's host, matches |
/// | `~m REGEX` | whose method matches |
/// | `~c CODE` | whose response status is `CODE` |
/// | `~u REGEX`, `REGEX` | whose URL matches: scheme, then host and port of the `Host` field if the request has one (mitmproxy's `pretty_url`), the port only when not the scheme's default, an IPv6 address without brackets |
/// | `~h REGEX`, `~hq`, `~hs` | whose header fields, as `name: value\r\n` lines, of either side, the request, the response match (`^`, `$` match at line ends) |
/// | `~b REGEX`, `~bq`, `~bs` | whose body or WebSocket messages of either side, the request (and the client's messages), the response (and the server's) match; bodies decoded when content-encoded |
/// | `~t REGEX`, `~tq`, `~ts` | a `Content-Type` field of either side, the request, the response matches |
/// | `~src REGEX` | whose client's address, `IP:PORT`, matches |
/// | `~dst REGEX` | whose server's address, `IP:PORT`, matches (none for a flow that reached no server) |
/// | `!F`, `F & G`, `F \| G`, `(F)`, `F G` | not, and, or, grouping, and again |
///
/// As in mitmproxy, the regexes of `~d`, `~m` and `~u` ignore case (ASCII case here)
/// and the others do not (`(?i)` at the start of a quoted regex makes one ignore it:
/// `~h '(?i)x-token'`); all are searched anywhere in the text (anchor them with `^`
/// and `$`), and bodies and messages are matched as text (invalid UTF-8 replaced),
/// where mitmproxy matches bytes.
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
/// space must be quoted (`~h 'x-token: 1'`). The argument of `~c` is its digits alone
/// (`~c 200&~q` is `~c 200 & ~q`). A `QUOTED` string is
/// in single or double quotes; a backslash escapes the next character, and only the
/// quote's own escape is removed (`\"` is `"`), so regex escapes such as `\d` or `\\`
/// reach the regex as written (mitmproxy removes every such backslash: there `"\d"`
/// is `d`). A word or quoted string on its own matches the URL.
///
/// Where mitmproxy would take a lone `&` or `|` for a regex (`& ~q`), this refuses the
/// filter; it accepts some that mitmproxy refuses (`(~q)`, `~q&~s`), with the meaning
/// they have once spaced out.
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

/// Which side's headers, body or content type an operator looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sides {
    Both,
    Request,
    Response,
}

impl Sides {
    /// The sides of an operator named by its suffix: none, `q` or `s`.
    fn of(suffix: &str) -> Sides {
        match suffix {
            "" => Sides::Both,
            "q" => Sides::Request,
            _ => Sides::Response,
        }
    }

    fn request(self) -> bool {
        self != Sides::Response
    }

    fn response(self) -> bool {
        self != Sides::Request
    }
}

/// Which replayed flows `~replay`, `~replayq` and `~replays` match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replayed {
    Any,
    Request,
    Response,
}

/// A parsed expression. `!` chains are folded when parsed, so nesting (and with it the
/// recursion of matching and dropping) is bounded by [`MAX_FILTER_DEPTH`].
#[derive(Debug, Clone)]
enum Expr {
    /// `~all`, `~http`.
    Always,
    /// `~tcp`, `~udp`, `~dns`.
    Never,
    Asset,
    Failed,
    Marked,
    Replay(Replayed),
    Domain(Regex),
    Method(Regex),
    Status(u16),
    Url(Regex),
    Header(Sides, Regex),
    Body(Sides, Regex),
    ContentType(Sides, Regex),
    Source(Regex),
    Destination(Regex),
    Marker(Regex),
    Comment(Regex),
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
            Expr::Always => true,
            Expr::Never => false,
            Expr::Asset => response.is_some_and(|s| {
                content_types(&s.headers).any(|t| ASSET_TYPES.iter().any(|a| t.contains(a)))
            }),
            Expr::Failed => r.error.is_some(),
            Expr::Marked => !r.annotations.marked.is_empty(),
            Expr::Replay(which) => {
                let replay = r.annotations.is_replay.as_deref();
                match which {
                    Replayed::Any => replay.is_some(),
                    Replayed::Request => replay == Some("request"),
                    Replayed::Response => replay == Some("response"),
                }
            }
            Expr::Domain(re) => {
                re.is_match(&request.host)
                    || host_field(request).is_some_and(|h| re.is_match(authority(h).0))
            }
            Expr::Method(re) => re.is_match(&request.method),
            Expr::Status(code) => response.is_some_and(|s| s.status == *code),
            Expr::Url(re) => re.is_match(&pretty_url(request)),
            Expr::Header(sides, re) => {
                (sides.request() && re.is_match(&header_lines(&request.headers)))
                    || (sides.response()
                        && response.is_some_and(|s| re.is_match(&header_lines(&s.headers))))
            }
            Expr::Body(sides, re) => {
                (sides.request() && re.is_match(&body_text(&request.headers, &request.body)))
                    || (sides.response()
                        && response.is_some_and(|s| re.is_match(&body_text(&s.headers, &s.body))))
                    || r.websocket.iter().flatten().any(|m| {
                        (if m.from_client {
                            sides.request()
                        } else {
                            sides.response()
                        }) && re.is_match(&String::from_utf8_lossy(&m.data))
                    })
            }
            Expr::ContentType(sides, re) => {
                (sides.request() && content_types(&request.headers).any(|t| re.is_match(&t)))
                    || (sides.response()
                        && response
                            .is_some_and(|s| content_types(&s.headers).any(|t| re.is_match(&t))))
            }
            Expr::Source(re) => r.client.is_some_and(|a| re.is_match(&address(a))),
            Expr::Destination(re) => r.server.is_some_and(|a| re.is_match(&address(a))),
            Expr::Marker(re) => re.is_match(&r.annotations.marked),
            Expr::Comment(re) => re.is_match(&r.annotations.comment),
            Expr::NoResponse => response.is_none(),
            Expr::HasResponse => response.is_some(),
            Expr::WebSocket => {
                r.websocket.is_some()
                    // A record whose messages are not loaded (or not yet kept).
                    || response.is_some_and(|s| {
                        s.status == 101 && s.headers.has_token("upgrade", "websocket")
                    })
            }
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

/// An address as mitmproxy writes one for `~src` and `~dst`: `IP:PORT`, an IPv6
/// address without brackets.
fn address(addr: SocketAddr) -> String {
    format!("{}:{}", addr.ip(), addr.port())
}

/// The request's `Host` field, when it has a non-empty one: mitmproxy's `host_header`
/// (which for HTTP/2 prefers the `:authority`, a record's host and port, to the field;
/// the two seldom differ).
fn host_field(request: &RecordedRequest) -> Option<&str> {
    request.headers.get("host").filter(|h| !h.is_empty())
}

/// The host and port of an authority (`host`, `host:port`, `[v6]`, `[v6]:port`), the
/// host without brackets; the whole text and no port when it is none of these.
fn authority(text: &str) -> (&str, Option<u16>) {
    let (host, rest) = match text.strip_prefix('[') {
        Some(inner) => match inner.rfind(']') {
            Some(close) if close > 0 => (&inner[..close], &inner[close + 1..]),
            _ => return (text, None),
        },
        None => match text.find(':') {
            Some(colon) => text.split_at(colon),
            None => (text, ""),
        },
    };
    if host.is_empty() {
        return (text, None);
    }
    if rest.is_empty() {
        return (host, None);
    }
    match rest.strip_prefix(':') {
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            match port.parse() {
                Ok(port) => (host, Some(port)),
                Err(_) => (text, None),
            }
        }
        _ => (text, None),
    }
}

/// The URL `~u` matches, as mitmproxy's `pretty_url`: a `CONNECT`'s authority; else
/// the scheme, the host and port of the `Host` field when there is one (else the
/// request's), the port only when it is not the scheme's default, and the path; an
/// IPv6 address without brackets.
fn pretty_url(request: &RecordedRequest) -> String {
    if request.method.eq_ignore_ascii_case("CONNECT") {
        return format!("{}:{}", request.host, request.port);
    }
    let scheme = request.scheme.as_str();
    let default = match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    let (host, port) = match host_field(request) {
        Some(field) => {
            let (host, port) = authority(field);
            (host, port.or(default).unwrap_or(443))
        }
        None => (request.host.as_str(), request.port),
    };
    let path = if request.path == "*" {
        ""
    } else {
        &request.path
    };
    if default == Some(port) {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{host}:{port}{path}")
    }
}

/// The fields as `name: value\r\n` lines, one per field, as mitmproxy's `~h` sees
/// them.
fn header_lines(headers: &Headers) -> String {
    let mut text = String::new();
    for (name, value) in headers.iter() {
        text.push_str(name);
        text.push_str(": ");
        text.push_str(&String::from_utf8_lossy(value));
        text.push_str("\r\n");
    }
    text
}

/// The values of the `Content-Type` fields, each on its own.
fn content_types(headers: &Headers) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
    headers.get_all("content-type").map(String::from_utf8_lossy)
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
                Ok(Expr::Url(regex(&word, at, Flags::IgnoreCase)?))
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
        let flags = match name {
            "~d" | "~m" | "~u" => Flags::IgnoreCase,
            "~h" | "~hq" | "~hs" | "~comment" => Flags::Lines,
            "~b" | "~bq" | "~bs" => Flags::DotAll,
            "~t" | "~tq" | "~ts" | "~src" | "~dst" | "~marker" => Flags::Plain,
            _ => {
                return Ok(match name {
                    "~all" | "~http" => Expr::Always,
                    "~tcp" | "~udp" | "~dns" => Expr::Never,
                    "~a" => Expr::Asset,
                    "~e" => Expr::Failed,
                    "~marked" => Expr::Marked,
                    "~replay" => Expr::Replay(Replayed::Any),
                    "~replayq" => Expr::Replay(Replayed::Request),
                    "~replays" => Expr::Replay(Replayed::Response),
                    "~q" => Expr::NoResponse,
                    "~s" => Expr::HasResponse,
                    "~websocket" => Expr::WebSocket,
                    "~c" => self.status()?,
                    _ => {
                        return Err(FilterError::new(
                            start,
                            FilterErrorKind::UnknownOperator(name.into()),
                        ))
                    }
                })
            }
        };
        let (at, pattern) = self.required(name)?;
        let re = regex(&pattern, at, flags)?;
        Ok(match name {
            "~d" => Expr::Domain(re),
            "~m" => Expr::Method(re),
            "~u" => Expr::Url(re),
            "~src" => Expr::Source(re),
            "~dst" => Expr::Destination(re),
            "~marker" => Expr::Marker(re),
            "~comment" => Expr::Comment(re),
            _ => {
                let sides = Sides::of(&name[2..]);
                match &name[..2] {
                    "~h" => Expr::Header(sides, re),
                    "~b" => Expr::Body(sides, re),
                    _ => Expr::ContentType(sides, re),
                }
            }
        })
    }

    /// The argument of `~c`: the digits that follow (as in mitmproxy, what comes after
    /// them is the next expression: `~c 200&~q` is `~c 200 & ~q`).
    fn status(&mut self) -> Result<Expr, FilterError> {
        self.peek();
        let start = self.pos;
        let digits = self.text[start..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        if digits == 0 {
            let (at, word) = self.required("~c")?;
            return Err(FilterError::new(at, FilterErrorKind::BadStatus(word)));
        }
        self.pos += digits;
        let code = &self.text[start..self.pos];
        code.parse()
            .map(Expr::Status)
            .map_err(|_| FilterError::new(start, FilterErrorKind::BadStatus(code.into())))
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

/// How an operator's regex matches (as mitmproxy compiles it).
#[derive(Debug, Clone, Copy)]
enum Flags {
    Plain,
    /// Ignoring ASCII case.
    IgnoreCase,
    /// With `^` and `$` matching at line ends.
    Lines,
    /// With `.` matching a line end too.
    DotAll,
}

/// `pattern` compiled with `flags`, found at `at`.
fn regex(pattern: &str, at: usize, flags: Flags) -> Result<Regex, FilterError> {
    RegexBuilder::new(pattern)
        .case_insensitive(matches!(flags, Flags::IgnoreCase))
        .multi_line(matches!(flags, Flags::Lines))
        .dot_matches_new_line(matches!(flags, Flags::DotAll))
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
    use crate::capture::{RecordedMessage, RecordedResponse, RecordedTimings};

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
            annotations: Default::default(),
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
        assert_eq!(error("~c x2").1, FilterErrorKind::BadStatus("x2".into()));
        assert_eq!(error("~c +1").1, FilterErrorKind::BadStatus("+1".into()));
        assert_eq!(
            error("~c 70000"),
            (3, FilterErrorKind::BadStatus("70000".into()))
        );
        // As in mitmproxy, the code is its digits; what follows is the next filter.
        assert!(is("~c 201&~s", &post()));
        assert!(is("~c 201upload", &post()));
        assert!(!is("~c 201nothing", &post()));
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
    fn urls_take_the_host_field_as_mitmproxy_pretty_url_does() {
        let mut r = record("GET", "http://10.0.0.1:8080/x");
        r.request.headers.insert("Host", "named.localhost:8080");
        assert!(is("~u ^http://named\\.localhost:8080/x$", &r));
        assert!(!is("~u 10\\.0", &r));
        // The scheme's default port is left out, whether the field names it or not.
        r.request.headers.insert("Host", "named.localhost:80");
        assert!(is("~u ^http://named\\.localhost/x$", &r));
        r.request.headers.insert("Host", "named.localhost");
        assert!(is("~u ^http://named\\.localhost/x$", &r));
        // IPv6 addresses lose their brackets.
        r.request.headers.insert("Host", "[::1]:8080");
        assert!(is("~u '^http://::1:8080/x$'", &r));
        // Without a field (or with an empty one), the request's own host and port.
        r.request.headers.insert("Host", "");
        assert!(is("~u ^http://10\\.0\\.0\\.1:8080/x$", &r));
        // A field that is no authority is taken whole.
        r.request.headers.insert("Host", "a:b:c");
        assert!(is("~u '^http://a:b:c/x$'", &r));
    }

    #[test]
    fn authorities_split_as_mitmproxy_splits_them() {
        assert_eq!(authority("a.localhost"), ("a.localhost", None));
        assert_eq!(authority("a.localhost:81"), ("a.localhost", Some(81)));
        assert_eq!(authority("[::1]"), ("::1", None));
        assert_eq!(authority("[::1]:81"), ("::1", Some(81)));
        for whole in [
            "a:", ":81", "a:81x", "a:99999", "[]:1", "[::1", "[::1]x", "a:b:1",
        ] {
            assert_eq!(authority(whole), (whole, None), "{whole}");
        }
    }

    #[test]
    fn headers_are_name_value_lines_of_either_or_one_side() {
        let r = post();
        assert!(is("~h '^X-Token: Secret'", &r));
        // Lines end in CR LF, and `$` matches before the LF only, as in mitmproxy.
        assert!(!is("~h '^X-Token: Secret$'", &r));
        assert!(is("~h '^X-Token: Secret\r$'", &r));
        // Case counts, as in mitmproxy, unless the regex says otherwise.
        assert!(!is("~h x-token", &r));
        assert!(is("~h '(?i)x-token'", &r));
        // Unquoted, the space ends the regex: `Secret` is a second filter, on the URL.
        assert!(!is("~h ^X-Token: Secret", &r));
        assert!(is("~hq X-Token", &r));
        assert!(!is("~hs X-Token", &r));
        assert!(is("~h text/plain", &r));
        assert!(is("~hs '^Content-Type: text/plain'", &r));
        assert!(!is("~hq text/plain", &r));
        assert!(!is("~hs Host", &get()), "no response, no response headers");
    }

    #[test]
    fn bodies_match_decoded_when_encoded_and_raw_when_decoding_fails() {
        let r = post();
        assert!(is("~b Ferris", &r));
        assert!(!is("~b ferris", &r), "case counts, as in mitmproxy");
        assert!(is("~b '(?i)ferris'", &r));
        assert!(is("~bq Ferris", &r));
        assert!(!is("~bs Ferris", &r));
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
        // `.` matches a line end too.
        let lines = answered(get(), 200, &[], b"one\ntwo");
        assert!(is("~bs one.two", &lines));
    }

    #[test]
    fn bodies_include_websocket_messages_of_their_side() {
        let message = |from_client: bool, data: &'static [u8]| RecordedMessage {
            from_client,
            text: true,
            data: Bytes::from_static(data),
            at: SystemTime::UNIX_EPOCH,
        };
        let mut ws = answered(get(), 101, &[("Upgrade", "websocket")], b"");
        ws.websocket = Some(vec![
            message(true, b"ping from client"),
            message(false, b"pong\xff"),
        ]);
        assert!(is("~b ping", &ws));
        assert!(is("~b pong", &ws));
        assert!(is("~bq ping", &ws));
        assert!(!is("~bq pong", &ws));
        assert!(is("~bs pong", &ws));
        assert!(!is("~bs ping", &ws));
        assert!(!is("~b nothing", &ws));
        assert!(Filter::parse("~bq ping").unwrap().needs_bodies());
    }

    #[test]
    fn content_type_matches_either_side_or_one() {
        let r = post();
        assert!(is("~t json", &r));
        assert!(is("~t ^text/plain", &r));
        assert!(!is("~t ^TEXT/plain", &r), "case counts, as in mitmproxy");
        assert!(is("~t '(?i)^TEXT/plain'", &r));
        assert!(!is("~t html", &r));
        assert!(!is("~t .", &get()));
        assert!(is("~tq json", &r));
        assert!(!is("~tq plain", &r));
        assert!(is("~ts plain", &r));
        assert!(!is("~ts json", &r));
        // Each field on its own: a regex across two of them finds nothing.
        let mut two = post();
        two.request.headers.append("Content-Type", "text/extra");
        assert!(is("~tq ^text/extra$", &two));
        assert!(!is("~tq 'json.*extra'", &two));
    }

    #[test]
    fn assets_are_responses_of_scripts_styles_images_and_fonts() {
        let typed = |t: &str| answered(get(), 200, &[("Content-Type", t)], b"");
        for asset in [
            "text/javascript",
            "application/javascript; charset=utf-8",
            "application/x-javascript",
            "text/css",
            "image/png",
            "image/svg+xml",
            "font/woff2",
            "application/font-woff",
        ] {
            assert!(is("~a", &typed(asset)), "{asset}");
        }
        for other in ["text/html", "application/json", "Text/CSS", "text/plain"] {
            assert!(!is("~a", &typed(other)), "{other}");
        }
        assert!(!is("~a", &get()), "no response");
        // The request's content type does not count.
        let mut sent = record("POST", "http://a.localhost/");
        sent.request.headers.append("Content-Type", "image/png");
        assert!(!is("~a", &answered(sent, 200, &[], b"")));
    }

    #[test]
    fn errors_marks_comments_and_replays() {
        let mut r = get();
        assert!(!is("~e", &r));
        assert!(!is("~marked", &r));
        assert!(!is("~replay", &r));
        assert!(is("~marker ^$", &r));
        r.error = Some("connection refused".into());
        r.annotations.marked = ":default:".into();
        r.annotations.comment = "first\nSecond line".into();
        assert!(is("~e", &r));
        assert!(is("~marked", &r));
        assert!(is("~marker default", &r));
        assert!(!is("~marker star", &r));
        assert!(is("~comment ^Second", &r), "^ at each line's start");
        assert!(is("~comment first$", &r));
        assert!(!is("~comment second", &r), "case counts");
        assert!(!is("~replay", &r));
        r.annotations.is_replay = Some("request".into());
        assert!(is("~replay", &r));
        assert!(is("~replayq", &r));
        assert!(!is("~replays", &r));
        r.annotations.is_replay = Some("response".into());
        assert!(is("~replays & ~replay & !~replayq", &r));
    }

    #[test]
    fn every_flow_is_an_http_flow() {
        for r in [get(), post()] {
            assert!(is("~all", &r));
            assert!(is("~http", &r));
            assert!(!is("~tcp | ~udp | ~dns", &r));
        }
    }

    #[test]
    fn addresses_are_ip_colon_port() {
        let mut r = get();
        assert!(!is("~src .", &r), "no client address");
        assert!(!is("~dst .", &r), "no server reached");
        r.client = Some("127.0.0.1:5000".parse().unwrap());
        r.server = Some("[::1]:8443".parse().unwrap());
        assert!(is("~src ^127\\.0\\.0\\.1:5000$", &r));
        assert!(!is("~dst example", &r));
        assert!(is("~dst '^::1:8443$'", &r), "IPv6 without brackets");
        assert!(!is("~src 8443", &r));
    }

    #[test]
    fn q_and_s_tell_whether_there_is_a_response() {
        assert!(is("~q", &get()));
        assert!(!is("~s", &get()));
        assert!(is("~s", &post()));
        assert!(!is("~q", &post()));
    }

    #[test]
    fn websocket_is_a_flow_with_messages_or_a_101_upgrade() {
        let mut asked = record("GET", "http://ws.localhost/chat");
        asked.request.headers.append("Connection", "Upgrade");
        asked.request.headers.append("Upgrade", "websocket");
        assert!(!is("~websocket", &asked), "asked, not (yet) switched");
        let switched = answered(asked.clone(), 101, &[("Upgrade", "WebSocket")], b"");
        assert!(is("~websocket", &switched));
        let mut with_messages = answered(asked.clone(), 101, &[], b"");
        with_messages.websocket = Some(Vec::new());
        assert!(is("~websocket", &with_messages));
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
            "~c 200&~q",
            "~c 2x",
            "~c0",
            "~all~q",
            "~marker",
            "~comment ''",
            "~src ~dst",
            "~replayqs",
            "~a ~a",
            "~tq (",
        ];
        for text in tricky {
            exercise(text, &records);
        }
    }

    #[test]
    fn fuzz_seeds_keep_the_invariants_stores_rely_on() {
        use crate::internals::filter_records;
        // Panics if a filter breaks a prefilter, or looks at bodies it says it needs not.
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/filter");
        for entry in std::fs::read_dir(&seeds).unwrap() {
            filter_records(&std::fs::read(entry.unwrap().path()).unwrap());
        }
        // The fixtures: an answered GET (marked, commented), a replayed POST that failed,
        // a WebSocket flow.
        for (filter, want) in [
            ("~marked", 1),
            ("~comment ^twice", 1),
            ("~replayq", 1),
            ("~e", 1),
            ("~src ^127\\.0\\.0\\.1:50000$", 3),
            ("~dst ^93\\.", 1),
            ("~b hello", 1),
            ("~bs hello", 0),
            ("~a | ~tcp", 0),
            ("~all", 3),
        ] {
            assert_eq!(filter_records(filter.as_bytes()), Some(want), "{filter}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let records = [get(), post()];
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d69_746d);
        const PIECES: [&str; 40] = [
            "~a",
            "~all",
            "~http",
            "~tcp",
            "~e",
            "~marked",
            "~marker ",
            "~comment ",
            "~replay",
            "~replayq",
            "~replays",
            "~src ",
            "~dst ",
            "~tq ",
            "~ts ",
            "~c 2",
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
