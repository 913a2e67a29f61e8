//! What identifies a request for server replay: the parts mitmproxy's server replay
//! compares, less those the options leave out.
//!
//! The parts: the method (as sent: methods are case-sensitive), the scheme, the path
//! without its query, the query as a list of decoded `name=value` pairs (in order,
//! less the ignored names), the body (raw, or its form fields less the ignored ones),
//! the host, the port, and the values of the headers named by `use_headers`.
//!
//! Where mitmproxy differs (noted, not copied):
//! - it takes the path from Python's `urlparse`, which cuts a `;params` suffix off
//!   the last segment, so `/a;x=1` and `/a;x=2` match there; here they do not;
//! - it keys on the `Host` header's name when there is one (`pretty_host`); here the
//!   host is where the request goes (the same but for a client naming one host in
//!   its request line and another in `Host`);
//! - its multipart reader joins a field's lines without their line breaks; here a
//!   field's value is its bytes as sent.

use bytes::Bytes;

use crate::http::message::Headers;

use super::ServerReplayOptions;

/// A request as matching sees it, recorded or arriving.
pub(super) struct Parts<'a> {
    pub(super) method: &'a str,
    pub(super) https: bool,
    pub(super) host: &'a str,
    pub(super) port: u16,
    /// Path and query.
    pub(super) path: &'a str,
    pub(super) headers: &'a Headers,
    pub(super) body: Bytes,
}

/// The key of a request in the replay's index: equal keys match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    method: String,
    https: bool,
    path: String,
    query: Vec<(String, String)>,
    content: Content,
    host: Option<String>,
    port: Option<u16>,
    /// The values of `use_headers`' names, in the option's order (all of a name's
    /// values joined by `, `; `None` when absent).
    headers: Vec<Option<Vec<u8>>>,
}

/// What of a body counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Content {
    /// Nothing (`ignore_content`).
    Ignored,
    /// Every byte, as sent (still content-encoded).
    Raw(Bytes),
    /// A form's fields, in order, less `ignore_payload_params`, and its kind (a
    /// multipart form never matches an urlencoded one with the same fields).
    Form(FormKind, Fields),
}

/// A form's fields: name and value, in order.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The kinds of form bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FormKind {
    Urlencoded,
    Multipart,
}

impl Key {
    /// The key of `parts` under `options`.
    pub(super) fn new(parts: Parts<'_>, options: &ServerReplayOptions) -> Key {
        let (path, query) = parts.path.split_once('?').unwrap_or((parts.path, ""));
        let query = url_pairs(query.as_bytes())
            .filter(|(name, _)| !options.ignore_params.iter().any(|p| p == name))
            .collect();
        let content = if options.ignore_content {
            Content::Ignored
        } else if options.ignore_payload_params.is_empty() {
            Content::Raw(parts.body)
        } else {
            match form_fields(parts.headers, &parts.body) {
                Some((kind, fields)) => Content::Form(
                    kind,
                    fields
                        .into_iter()
                        .filter(|(name, _)| {
                            let name = String::from_utf8_lossy(name);
                            !options.ignore_payload_params.iter().any(|p| *p == name)
                        })
                        .collect(),
                ),
                None => Content::Raw(parts.body),
            }
        };
        let headers = options
            .use_headers
            .iter()
            .map(|name| joined(parts.headers, name))
            .collect();
        Key {
            method: parts.method.to_string(),
            https: parts.https,
            path: path.to_string(),
            query,
            content,
            host: (!options.ignore_host).then(|| parts.host.to_ascii_lowercase()),
            port: (!options.ignore_port).then_some(parts.port),
            headers,
        }
    }
}

/// Every value of `name`, joined by `, ` (as one folded field); `None` without any.
fn joined(headers: &Headers, name: &str) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name);
    let mut all = values.next()?.to_vec();
    for value in values {
        all.extend_from_slice(b", ");
        all.extend_from_slice(value);
    }
    Some(all)
}

/// The `name=value` pairs of a query or an urlencoded form: split on `&`, empty
/// pieces skipped, a piece without `=` a name with an empty value, `+` a space and
/// `%XX` a byte (a `%` not followed by two hex digits kept as it is), read as UTF-8
/// with bad sequences replaced.
pub(super) fn url_pairs(text: &[u8]) -> impl Iterator<Item = (String, String)> + '_ {
    text.split(|&b| b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(i) => (&piece[..i], &piece[i + 1..]),
                None => (piece, &b""[..]),
            };
            (url_decode(name), url_decode(value))
        })
}

fn url_decode(text: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                text.get(i + 1).and_then(|&b| hex(b)),
                text.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(high), Some(low)) => {
                    // Two hex digits: below 256.
                    out.push((high * 16 + low) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The fields of a form body, by its `Content-Type`: `multipart/form-data` (with its
/// boundary) or `application/x-www-form-urlencoded`. `None` for any other body, or a
/// form with no field (matched by its bytes then, as mitmproxy does).
fn form_fields(headers: &Headers, body: &[u8]) -> Option<(FormKind, Fields)> {
    let content_type = headers.get("content-type")?;
    let lower = content_type.to_ascii_lowercase();
    let (kind, fields) = if lower.contains("multipart/form-data") {
        (
            FormKind::Multipart,
            multipart_fields(&boundary(content_type)?, body),
        )
    } else if lower.contains("application/x-www-form-urlencoded") {
        let fields = url_pairs(body)
            .map(|(n, v)| (n.into_bytes(), v.into_bytes()))
            .collect();
        (FormKind::Urlencoded, fields)
    } else {
        return None;
    };
    (!fields.is_empty()).then_some((kind, fields))
}

/// The `boundary` parameter of a `multipart/…` content type, unquoted.
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// The named parts of a `multipart/form-data` body: each part's `name` (from its
/// `Content-Disposition`) and its bytes. Parts without a name, and a body that is not
/// multipart, give nothing.
fn multipart_fields(boundary: &str, body: &[u8]) -> Fields {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut fields = Vec::new();
    // The preamble before the first delimiter is no part.
    let mut pieces = split_on(body, delimiter).skip(1);
    for piece in pieces.by_ref() {
        // `--` after a delimiter closes the body.
        if piece.starts_with(b"--") {
            break;
        }
        let piece = strip_line_end_prefix(piece);
        let Some((head, value)) = split_head(piece) else {
            continue;
        };
        let Some(name) = disposition_name(head) else {
            continue;
        };
        // The line break before the next delimiter belongs to the delimiter.
        let value = value
            .strip_suffix(b"\r\n")
            .or_else(|| value.strip_suffix(b"\n"))
            .unwrap_or(value);
        fields.push((name.to_vec(), value.to_vec()));
    }
    fields
}

/// `data` cut at every `delimiter` (which is not part of any piece).
fn split_on<'a>(data: &'a [u8], delimiter: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let data = rest?;
        match memchr::memmem::find(data, delimiter) {
            Some(i) => {
                rest = Some(&data[i + delimiter.len()..]);
                Some(&data[..i])
            }
            None => {
                rest = None;
                Some(data)
            }
        }
    })
}

fn strip_line_end_prefix(data: &[u8]) -> &[u8] {
    data.strip_prefix(b"\r\n")
        .or_else(|| data.strip_prefix(b"\n"))
        .unwrap_or(data)
}

/// A part's header lines and its content, cut at the first empty line.
fn split_head(part: &[u8]) -> Option<(&[u8], &[u8])> {
    if let Some(i) = memchr::memmem::find(part, b"\r\n\r\n") {
        return Some((&part[..i], &part[i + 4..]));
    }
    let i = memchr::memmem::find(part, b"\n\n")?;
    Some((&part[..i], &part[i + 2..]))
}

/// The `name="…"` of a part's `Content-Disposition` line.
fn disposition_name(head: &[u8]) -> Option<&[u8]> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let (field, value) = line.split_at(line.iter().position(|&b| b == b':')?);
        if !field
            .trim_ascii()
            .eq_ignore_ascii_case(b"content-disposition")
        {
            return None;
        }
        // `name="` not inside `filename="`.
        let mut at = 0;
        while let Some(i) = memchr::memmem::find(&value[at..], b"name=\"") {
            let start = at + i;
            let before = start.checked_sub(1).map(|j| value[j]);
            let value_start = start + 6;
            if before.is_none_or(|b| b == b';' || b == b' ' || b == b'\t' || b == b':') {
                let len = value[value_start..].iter().position(|&b| b == b'"')?;
                return Some(&value[value_start..value_start + len]);
            }
            at = value_start;
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        url_pairs(q.as_bytes()).collect()
    }

    #[test]
    fn query_pairs_are_decoded_as_python_parse_qsl_keeping_blanks() {
        let p = |n: &str, v: &str| (n.to_string(), v.to_string());
        assert_eq!(
            pairs("a=1&&b&c=&d=x+y%2B%41%zz%4"),
            [p("a", "1"), p("b", ""), p("c", ""), p("d", "x y+A%zz%4")]
        );
        assert_eq!(pairs("a=b=c"), [p("a", "b=c")]);
        assert_eq!(pairs(""), []);
        // Bad UTF-8 is replaced, not refused.
        assert_eq!(pairs("n=%ff"), [p("n", "\u{fffd}")]);
    }

    fn headers(content_type: &str) -> Headers {
        let mut h = Headers::new();
        h.append("Content-Type", content_type.to_string());
        h
    }

    #[test]
    fn multipart_fields_are_read_by_name_with_their_bytes() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\none\r\ntwo\r\n--XyZ\r\nContent-Disposition: form-data; filename=\"f.txt\"; name=\"file\"\r\nContent-Type: text/plain\r\n\r\nbytes\r\n--XyZ\r\nContent-Type: text/plain\r\n\r\nnameless\r\n--XyZ--\r\n";
        let (kind, fields) =
            form_fields(&headers("multipart/form-data; boundary=\"XyZ\""), body).unwrap();
        assert_eq!(kind, FormKind::Multipart);
        assert_eq!(
            fields,
            [
                (b"a".to_vec(), b"one\r\ntwo".to_vec()),
                (b"file".to_vec(), b"bytes".to_vec())
            ]
        );
        // No boundary, no part, or another type: no form.
        assert_eq!(form_fields(&headers("multipart/form-data"), body), None);
        assert_eq!(
            form_fields(&headers("multipart/form-data; boundary=Q"), body),
            None
        );
        assert_eq!(form_fields(&headers("text/plain"), b"a=1"), None);
        assert_eq!(
            form_fields(
                &headers("application/x-www-form-urlencoded; charset=utf-8"),
                b"a=1&b=%32"
            ),
            Some((
                FormKind::Urlencoded,
                vec![
                    (b"a".to_vec(), b"1".to_vec()),
                    (b"b".to_vec(), b"2".to_vec())
                ]
            ))
        );
        assert_eq!(
            form_fields(&headers("application/x-www-form-urlencoded"), b""),
            None
        );
    }
}
