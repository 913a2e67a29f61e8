//! [`Filter`]: mitmproxy's filter language, parsed once and matched with mitmproxy's
//! rules against flows on their way ([`Live`], in hooks: the traffic-changing addons)
//! and saved ones (a capture's records: `mitm read --filter`, `--save-filter`, the web
//! UI), both seen through [`Subject`]. The language and its grammar are described on
//! [`Filter`].

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use regex_lite::Regex;

use crate::http::message::{Headers, Replay};

mod parse;
mod subject;
#[cfg(all(test, feature = "capture"))]
mod tests;

use parse::Parser;
pub use subject::{Live, RequestView, ResponseView, Subject};

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
/// | `~all`, `~http` | any (every flow here is an HTTP flow) |
/// | `~tcp`, `~udp`, `~dns` | none (no flow here is such a flow) |
/// | `~q` | with no response |
/// | `~s` | with a response |
/// | `~e` | with an error |
/// | `~a` | whose response is an asset: a `Content-Type` containing `text/javascript`, `application/x-javascript`, `application/javascript`, `text/css`, `image/`, `font/` or `application/font` |
/// | `~websocket` | that became a WebSocket |
/// | `~marked` | that is marked ([`Subject::marked`]: a record's annotations) |
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
/// use mitm::filter::Filter;
///
/// let filter: Filter = "~d example\\.com & !~m POST | ~c 404".parse()?;
/// assert_eq!(filter.to_string(), "~d example\\.com & !~m POST | ~c 404");
///
/// let error = Filter::parse("~m GET & ~x").unwrap_err();
/// assert_eq!(error.position(), 9);
/// assert_eq!(error.to_string(), "unknown operator ~x at position 9");
/// # Ok::<(), mitm::filter::FilterError>(())
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

    /// Whether `flow` matches: a flow in a hook ([`Live`]) or a capture's record.
    pub fn matches<S: Subject + ?Sized>(&self, flow: &S) -> bool {
        self.expr.matches(flow)
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

    fn matches<S: Subject + ?Sized>(&self, r: &S) -> bool {
        match self {
            Expr::Always => true,
            Expr::Never => false,
            Expr::Asset => r.response().is_some_and(|s| {
                content_types(s.headers).any(|t| ASSET_TYPES.iter().any(|a| t.contains(a)))
            }),
            Expr::Failed => r.failed(),
            Expr::Marked => !r.marked().is_empty(),
            Expr::Replay(which) => {
                let replay = r.replay();
                match which {
                    Replayed::Any => replay.is_some(),
                    Replayed::Request => replay == Some(Replay::Request),
                    Replayed::Response => replay == Some(Replay::Response),
                }
            }
            Expr::Domain(re) => {
                let request = r.request();
                re.is_match(request.host)
                    || host_field(request.headers).is_some_and(|h| re.is_match(authority(h).0))
            }
            Expr::Method(re) => re.is_match(r.request().method),
            Expr::Status(code) => r.response().is_some_and(|s| s.status == *code),
            Expr::Url(re) => re.is_match(&pretty_url(&r.request())),
            Expr::Header(sides, re) => {
                (sides.request() && re.is_match(&header_lines(r.request().headers)))
                    || (sides.response()
                        && r.response()
                            .is_some_and(|s| re.is_match(&header_lines(s.headers))))
            }
            Expr::Body(sides, re) => {
                (sides.request() && {
                    let q = r.request();
                    re.is_match(&body_text(q.headers, q.body))
                }) || (sides.response()
                    && r.response()
                        .is_some_and(|s| re.is_match(&body_text(s.headers, s.body))))
                    || r.any_message(&mut |from_client, data| {
                        (if from_client {
                            sides.request()
                        } else {
                            sides.response()
                        }) && re.is_match(&String::from_utf8_lossy(data))
                    })
            }
            Expr::ContentType(sides, re) => {
                (sides.request() && content_types(r.request().headers).any(|t| re.is_match(&t)))
                    || (sides.response()
                        && r.response()
                            .is_some_and(|s| content_types(s.headers).any(|t| re.is_match(&t))))
            }
            Expr::Source(re) => r.client().is_some_and(|a| re.is_match(&address(a))),
            Expr::Destination(re) => r.server().is_some_and(|a| re.is_match(&address(a))),
            Expr::Marker(re) => re.is_match(r.marked()),
            Expr::Comment(re) => re.is_match(r.comment()),
            Expr::NoResponse => r.response().is_none(),
            Expr::HasResponse => r.response().is_some(),
            Expr::WebSocket => r.is_websocket(),
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
fn host_field(headers: &Headers) -> Option<&str> {
    headers.get("host").filter(|h| !h.is_empty())
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
fn pretty_url(request: &RequestView<'_>) -> String {
    if request.method.eq_ignore_ascii_case("CONNECT") {
        return format!("{}:{}", request.host, request.port);
    }
    let scheme = request.scheme;
    let default = match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    let (host, port) = match host_field(request.headers) {
        Some(field) => {
            let (host, port) = authority(field);
            (host, port.or(default).unwrap_or(443))
        }
        None => (request.host, request.port),
    };
    let path = if request.path == "*" {
        ""
    } else {
        request.path
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
fn body_text(headers: &Headers, body: &[u8]) -> String {
    let codings = headers
        .get_all("content-encoding")
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(",");
    let decoded = if codings.trim().is_empty() {
        None
    } else {
        crate::decode::decode(&codings, body, DECODE_LIMIT).ok()
    };
    String::from_utf8_lossy(decoded.as_deref().unwrap_or(body)).into_owned()
}
