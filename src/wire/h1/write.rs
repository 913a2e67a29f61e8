//! Writing heads out: the request head an origin gets (origin-form, no hop-by-hop
//! fields) and the response head a client gets. Fields are written straight from the
//! message, in their order and case, skipping those that must not be forwarded;
//! nothing is copied first. The framing fields are the exchange's: it has set them to
//! match the body sent, and these writers only add or drop what HTTP/1 framing needs.

use crate::http::message::{Headers, Request, Response};
use crate::http::target::host_value;

/// Header fields that concern one connection only and are not forwarded (RFC 9110
/// section 7.6.1), besides those the `Connection` field lists.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Which fields of a head are not forwarded.
struct Skip<'a> {
    /// Fields named in `Connection`.
    listed: Vec<&'a [u8]>,
    /// `Upgrade` is forwarded on a protocol switch.
    keep_upgrade: bool,
    /// Fields the caller replaces or drops.
    extra: &'a [&'a str],
}

impl<'a> Skip<'a> {
    fn new(headers: &'a Headers, keep_upgrade: bool, extra: &'a [&'a str]) -> Self {
        let listed = headers.tokens("connection").collect();
        Skip {
            listed,
            keep_upgrade,
            extra,
        }
    }

    fn skips(&self, name: &[u8]) -> bool {
        if self.keep_upgrade && name.eq_ignore_ascii_case(b"upgrade") {
            return false;
        }
        HOP_BY_HOP
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
            || self
                .extra
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
            || self.listed.iter().any(|l| name.eq_ignore_ascii_case(l))
    }
}

fn write_fields(out: &mut Vec<u8>, headers: &Headers, skip: &Skip<'_>) {
    for (name, value) in headers.raw_iter() {
        if skip.skips(name) {
            continue;
        }
        field(out, name, value);
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How the framing fields of a head are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// As the message has them.
    AsIs,
    /// The body is sent chunked: `Transfer-Encoding: chunked` is added (any
    /// `Content-Length` dropped) unless the fields already end in chunked.
    Chunked,
    /// The body runs until the connection closes: `Transfer-Encoding` and
    /// `Content-Length` are dropped.
    UntilClose,
    /// The body is this many bytes: `Content-Length` says so (for a status that has a
    /// body), `Transfer-Encoding` is dropped.
    Length(u64),
}

/// What the request head an origin gets should say besides the message's fields.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestOptions {
    /// Ask for the protocol switch again (`Upgrade` is kept, `Connection: upgrade`
    /// added).
    pub upgrade: bool,
    /// Drop `Sec-WebSocket-Extensions`, so that no compression is negotiated and hooks
    /// see WebSocket messages as sent.
    pub plain_websocket: bool,
    /// Send the body chunked.
    pub chunked: bool,
}

/// Where a request head goes: straight to its origin, or to an HTTP proxy.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) enum Form<'a> {
    /// Origin-form (`GET /path`), for the origin itself.
    #[default]
    Origin,
    /// Absolute form (`GET http://host/path`) for an HTTP proxy, with the
    /// `Proxy-Authorization` value it wants, if any.
    Proxy {
        /// The whole field value (`Basic …`).
        authorization: Option<&'a str>,
    },
}

/// Writes a request head for the origin, in origin-form; or for an HTTP proxy in
/// absolute form, with the proxy's credentials.
pub(crate) fn request_head(out: &mut Vec<u8>, req: &Request, opts: RequestOptions, form: Form<'_>) {
    // `Expect: 100-continue` was answered by the proxy.
    let mut extra: Vec<&str> = vec!["expect"];
    if opts.plain_websocket {
        extra.push("sec-websocket-extensions");
    }
    let add_chunked = opts.chunked && !ends_chunked(&req.headers);
    if add_chunked {
        extra.extend(["content-length", "transfer-encoding"]);
    }
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    if matches!(form, Form::Proxy { .. }) && req.path.starts_with('/') {
        out.extend_from_slice(if req.target.tls {
            b"https://"
        } else {
            b"http://"
        });
        out.extend_from_slice(host_value(&req.target).as_bytes());
    }
    out.extend_from_slice(req.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_fields(
        out,
        &req.headers,
        &Skip::new(&req.headers, opts.upgrade, &extra),
    );
    if add_chunked {
        field(out, b"Transfer-Encoding", b"chunked");
    }
    if !req.headers.contains("host") {
        field(out, b"Host", host_value(&req.target).as_bytes());
    }
    if opts.upgrade {
        field(out, b"Connection", b"upgrade");
    }
    if let Form::Proxy {
        authorization: Some(credentials),
    } = form
    {
        field(out, b"Proxy-Authorization", credentials.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether the fields frame the body chunked already.
fn ends_chunked(headers: &Headers) -> bool {
    headers
        .tokens("transfer-encoding")
        .last()
        .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
}

/// Writes a response head for the client. `local` marks a response the proxy made
/// itself: its fields are the proxy's own, so `Proxy-Authenticate` and the like stay.
/// `connection`, when given, is added as a `Connection` field.
pub(crate) fn response_head(
    out: &mut Vec<u8>,
    res: &Response,
    framing: Framing,
    local: bool,
    connection: Option<&str>,
) {
    let upgrade = res.status == 101;
    let add_chunked = framing == Framing::Chunked && !ends_chunked(&res.headers);
    let extra: &[&str] = match framing {
        Framing::UntilClose | Framing::Length(_) => &["transfer-encoding", "content-length"],
        Framing::Chunked if add_chunked => &["transfer-encoding", "content-length"],
        _ => &[],
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(res.status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(res.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    if local {
        for (name, value) in res.headers.raw_iter() {
            let dropped = extra
                .iter()
                .chain(&["connection"])
                .any(|h| name.eq_ignore_ascii_case(h.as_bytes()));
            if !dropped {
                field(out, name, value);
            }
        }
    } else {
        write_fields(out, &res.headers, &Skip::new(&res.headers, upgrade, extra));
    }
    if add_chunked {
        field(out, b"Transfer-Encoding", b"chunked");
    }
    if let (Framing::Length(n), false) = (framing, matches!(res.status, 100..=199 | 204 | 304)) {
        field(out, b"Content-Length", n.to_string().as_bytes());
    }
    if upgrade {
        field(out, b"Connection", b"upgrade");
    }
    if let Some(c) = connection {
        field(out, b"Connection", c.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// A whole response the proxy makes, as bytes: its head (with a `Content-Length` of its
/// body, and `connection` when given), then the body unless the response to a `method`
/// request has none (`HEAD`, 204, 304, 1xx).
pub(crate) fn local_response(
    response: &Response,
    method: &str,
    connection: Option<&str>,
) -> Vec<u8> {
    let body = response.body.bytes().map_or(&[][..], |b| &b[..]);
    let mut out = Vec::with_capacity(256 + body.len());
    response_head(
        &mut out,
        response,
        Framing::Length(body.len() as u64),
        true,
        connection,
    );
    if super::parse::has_body(method, response.status) {
        out.extend_from_slice(body);
    }
    out
}

/// Header fields as raw HTTP/1 lines (`Name: value\r\n`), for chunked trailers.
pub(crate) fn trailer_lines(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers.raw_iter() {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_and_those_listed_are_not_forwarded() {
        let mut req = Request::new("GET", "http://a.localhost/x").unwrap();
        for (n, v) in [
            ("Connection", "close, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "5"),
            ("Proxy-Authorization", "b"),
            ("TE", "trailers"),
            ("Upgrade", "x"),
            ("X-Keep", "2"),
            ("Host", "a.localhost"),
        ] {
            req.headers.append(n, v);
        }
        let mut out = Vec::new();
        request_head(&mut out, &req, RequestOptions::default(), Form::Origin);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /x HTTP/1.1\r\nX-Keep: 2\r\nHost: a.localhost\r\n\r\n"
        );
    }

    #[test]
    fn a_body_of_unknown_length_is_chunked_or_runs_until_close() {
        let mut res = Response::new(200);
        res.headers.append("Content-Type", "text/plain");
        res.headers.append("Content-Length", "4");
        let mut out = Vec::new();
        response_head(&mut out, &res, Framing::Chunked, false, None);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        res.headers.insert("Transfer-Encoding", "chunked");
        res.headers.remove("Content-Length");
        let mut out = Vec::new();
        response_head(&mut out, &res, Framing::UntilClose, false, Some("close"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
        );
    }
}
