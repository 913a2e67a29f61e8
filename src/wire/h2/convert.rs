//! Between the `http` types HTTP/2 speaks and the crate's own messages, so that hooks
//! see the same [`Request`] and [`Response`] whatever the version.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use crate::http::message::{Body, Headers, Request, Response, Version};
use crate::http::target::host_value;

/// Fields that are about one HTTP/1 connection and are forbidden in HTTP/2 (RFC 9113
/// section 8.2.2); `te` is allowed only as `trailers`.
const CONNECTION_SPECIFIC: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// The crate's [`Headers`] from an HTTP/2 header map (names are lowercase there).
pub(crate) fn headers_from(map: &HeaderMap) -> Headers {
    let mut headers = Headers::with_capacity(map.len());
    for (name, value) in map {
        headers.append(
            Bytes::copy_from_slice(name.as_str().as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        );
    }
    headers
}

/// An HTTP/2 header map from the crate's [`Headers`], without the fields HTTP/2
/// forbids and without those `skip` names. Invalid names or values are dropped.
pub(crate) fn map_from(headers: &Headers, skip: &[&str]) -> HeaderMap {
    let listed: Vec<Vec<u8>> = headers
        .tokens("connection")
        .map(<[u8]>::to_ascii_lowercase)
        .collect();
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers.raw_iter() {
        let lower = name.to_ascii_lowercase();
        let drop = CONNECTION_SPECIFIC.iter().any(|h| h.as_bytes() == lower)
            || skip.iter().any(|h| h.as_bytes() == lower)
            || listed.contains(&lower)
            || (lower == b"te" && !value.eq_ignore_ascii_case(b"trailers"));
        if drop {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&lower),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    map
}

/// The crate's request from an HTTP/2 request head, going to `target` (routed from
/// its `:authority` by the caller), with `path` in origin-form.
pub(crate) fn request_from(
    parts: &http::request::Parts,
    target: crate::core::Target,
    path: String,
) -> Request {
    let mut request = Request::new_to(parts.method.as_str().to_string(), target, path);
    request.version = Version::Http2;
    request.headers = headers_from(&parts.headers);
    request.body = Body::Streaming;
    request
}

/// An HTTP/2 request head for the origin from the crate's request (whose framing
/// fields the exchange has set). Its `:authority` is the request's `Host` field when it
/// has a valid one (as RFC 9113 section 8.3.1 asks of an HTTP/1.1 request converted,
/// and how a reverse proxy keeps its client's), else the target's.
pub(crate) fn http_request(req: &Request) -> Option<http::Request<()>> {
    let scheme = if req.target.tls { "https" } else { "http" };
    let authority = req
        .headers
        .get("host")
        .map(str::trim)
        // No userinfo: `:authority` must not carry any (RFC 9113 section 8.3.1).
        .filter(|h| !h.contains('@') && http::uri::Authority::try_from(*h).is_ok())
        .map_or_else(|| host_value(&req.target), str::to_string);
    let uri = format!("{scheme}://{authority}{}", req.path);
    let mut builder = http::Request::builder()
        .method(req.method.as_str())
        .uri(uri)
        .version(http::Version::HTTP_2);
    if let Some(h) = builder.headers_mut() {
        *h = map_from(&req.headers, &[]);
    }
    builder.body(()).ok()
}

/// The crate's response from an HTTP/2 response head.
pub(crate) fn response_from(parts: &http::response::Parts) -> Response {
    Response {
        status: parts.status.as_u16(),
        reason: parts.status.canonical_reason().unwrap_or("").to_string(),
        version: Version::Http2,
        headers: headers_from(&parts.headers),
        body: Body::Streaming,
    }
}

/// An HTTP/2 response head for the client from the crate's response (whose framing
/// fields the exchange has set; `content-length` is dropped when the length is not
/// known, as for a chunked HTTP/1 body).
pub(crate) fn http_response(res: &Response, length_known: bool) -> http::Response<()> {
    let skip: &[&str] = if length_known {
        &[]
    } else {
        &["content-length"]
    };
    let mut out = http::Response::new(());
    *out.status_mut() =
        http::StatusCode::from_u16(res.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    *out.headers_mut() = map_from(&res.headers, skip);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_specific_fields_do_not_cross_into_http2() {
        let mut h = Headers::new();
        for (n, v) in [
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("Transfer-Encoding", "chunked"),
            ("TE", "gzip"),
            ("Host", "a"),
            ("X-Keep", "2"),
        ] {
            h.append(n, v);
        }
        let map = map_from(&h, &[]);
        let names: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-keep"]);
    }

    #[test]
    fn the_authority_is_the_host_field_when_valid_else_the_target() {
        let target = crate::core::Target::new("origin.localhost", 8443, true);
        let authority = |host: Option<&str>| {
            let mut req = Request::new_to("GET".into(), target.clone(), "/a".into());
            if let Some(host) = host {
                req.headers.append("Host", host.to_string());
            }
            let head = http_request(&req).unwrap();
            assert!(!head.headers().contains_key("host"));
            head.uri().authority().unwrap().to_string()
        };
        assert_eq!(authority(None), "origin.localhost:8443");
        assert_eq!(authority(Some("front.localhost")), "front.localhost");
        assert_eq!(authority(Some("a b")), "origin.localhost:8443");
        assert_eq!(
            authority(Some("u@front.localhost")),
            "origin.localhost:8443"
        );
    }
}
