//! Writing heads out: the request head an origin gets (origin-form, no hop-by-hop
//! fields, framing fields that match the body sent) and the response head a client
//! gets. Fields are written straight from the message, in their order and case,
//! skipping those that must not be forwarded; nothing is copied first.

use bytes::Bytes;

use crate::core::Target;
use crate::message::{Body, Headers, Request, Response};

use super::parse::ResponseHead;

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

/// Writes a request head for the origin. With `body_changed`, the framing fields are
/// replaced by a `Content-Length` of the new body; with `upgrade`, the protocol switch
/// is asked for again (without WebSocket extensions, so hooks see plain messages).
pub(crate) fn request_head(out: &mut Vec<u8>, req: &Request, body_changed: bool, upgrade: bool) {
    // `Expect: 100-continue` was answered by the proxy.
    let mut extra: Vec<&str> = vec!["expect"];
    if upgrade {
        extra.push("sec-websocket-extensions");
    }
    if body_changed {
        extra.extend(["transfer-encoding", "content-length"]);
    }
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_fields(out, &req.headers, &Skip::new(&req.headers, upgrade, &extra));
    if body_changed {
        let len = req.body.bytes().map_or(0, Bytes::len);
        if len > 0 || carries_body(&req.method) {
            field(out, b"Content-Length", len.to_string().as_bytes());
        }
    }
    if !req.headers.contains("host") {
        field(out, b"Host", host_value(&req.target).as_bytes());
    }
    if upgrade {
        field(out, b"Connection", b"upgrade");
    }
    out.extend_from_slice(b"\r\n");
}

/// `host[:port]` for a `Host` field, the port only when not the scheme's default.
pub(crate) fn host_value(t: &Target) -> String {
    let default = if t.tls { 443 } else { 80 };
    let host = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host.clone()
    };
    if t.port == default {
        host
    } else {
        format!("{host}:{}", t.port)
    }
}

fn carries_body(method: &str) -> bool {
    ["POST", "PUT", "PATCH"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

/// How the body of a response head being written relates to its framing fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseBody {
    /// The body goes as the fields say.
    AsIs,
    /// A new whole body: `Content-Length` is set to it.
    Replaced,
    /// Chunked framing removed (for an HTTP/1.0 client): the body runs until close.
    Dechunked,
    /// A response the proxy made itself (whole body, own `Content-Length`): its fields
    /// are the proxy's own, so `Proxy-Authenticate` and the like stay.
    Local,
}

/// The parts of a response head that are written out.
pub(crate) struct ResponseHeadRef<'a> {
    status: u16,
    reason: &'a str,
    headers: &'a Headers,
    body: Option<&'a Body>,
}

impl<'a> From<&'a Response> for ResponseHeadRef<'a> {
    fn from(r: &'a Response) -> Self {
        ResponseHeadRef {
            status: r.status,
            reason: &r.reason,
            headers: &r.headers,
            body: Some(&r.body),
        }
    }
}

impl<'a> From<&'a ResponseHead> for ResponseHeadRef<'a> {
    fn from(r: &'a ResponseHead) -> Self {
        ResponseHeadRef {
            status: r.status,
            reason: &r.reason,
            headers: &r.headers,
            body: None,
        }
    }
}

/// Writes a response head for the client, adding `Connection: {connection}` if given.
pub(crate) fn response_head(
    out: &mut Vec<u8>,
    head: ResponseHeadRef<'_>,
    mode: ResponseBody,
    connection: Option<&str>,
) {
    let upgrade = head.status == 101;
    let extra: &[&str] = match mode {
        ResponseBody::AsIs => &[],
        ResponseBody::Replaced | ResponseBody::Local => &["transfer-encoding", "content-length"],
        ResponseBody::Dechunked => &["transfer-encoding"],
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(head.status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    if mode == ResponseBody::Local {
        for (name, value) in head.headers.raw_iter() {
            if !extra
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
            {
                field(out, name, value);
            }
        }
    } else {
        write_fields(out, head.headers, &Skip::new(head.headers, upgrade, extra));
    }
    let bodiless = head.status == 204 || head.status == 304 || (100..200).contains(&head.status);
    if matches!(mode, ResponseBody::Replaced | ResponseBody::Local) && !bodiless {
        let len = head.body.and_then(Body::bytes).map_or(0, Bytes::len);
        field(out, b"Content-Length", len.to_string().as_bytes());
    }
    if upgrade {
        field(out, b"Connection", b"upgrade");
    }
    if let Some(c) = connection {
        field(out, b"Connection", c.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
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
        request_head(&mut out, &req, false, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /x HTTP/1.1\r\nX-Keep: 2\r\nHost: a.localhost\r\n\r\n"
        );
    }

    #[test]
    fn a_replaced_body_gets_its_own_length() {
        let mut res = Response::new(200).with_body("text/plain", "four");
        res.headers.append("Transfer-Encoding", "chunked");
        let mut out = Vec::new();
        response_head(
            &mut out,
            (&res).into(),
            ResponseBody::Replaced,
            Some("close"),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
        );
    }
}
