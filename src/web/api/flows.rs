//! The flows: a page of the list, one flow in detail, its bodies, and clearing them all.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{error, filter_param, not_found, sorted, Shared, DECODE_LIMIT};
use crate::capture::{Record, RecordedBody};
use crate::http::message::Headers;
use crate::web::json::{millis_since_epoch, FlowState};
use crate::web::json::{
    ApiError, BodyFacts, BodyParams, FlowDetail, FlowPage, FlowSummary, ListParams, MessageDetail,
    RequestDetail, ResponseDetail, TimingsDetail, TlsDetail,
};
use crate::web::store::ListQuery;

pub(super) async fn list(State(app): Shared, Query(p): Query<ListParams>) -> Response {
    let filter = match filter_param(p.filter.as_deref()) {
        Ok(f) => f,
        Err(refused) => return *refused,
    };
    let query = ListQuery {
        filter,
        after: p.after,
        before: p.before,
        limit: p.limit,
    };
    // Filtering a large store takes a while: off the async workers.
    let source = app.source.clone();
    match tokio::task::spawn_blocking(move || source.list(&query)).await {
        Ok(page) => Json::<FlowPage>(page).into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::new("listing failed"),
        ),
    }
}

fn heads(headers: &Headers) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

/// What the page needs to know of a body before it fetches it.
fn body_facts(body: &RecordedBody, headers: &Headers) -> BodyFacts {
    let encoding = headers.get("content-encoding").unwrap_or("").trim();
    let mut facts = BodyFacts {
        size: body.size,
        kept: body.data.len() as u64,
        truncated: body.truncated,
        encoding: encoding.to_string(),
        content_type: headers.get("content-type").unwrap_or("").to_string(),
        decoded: None,
        decode_error: None,
    };
    if !encoding.is_empty() && !body.data.is_empty() {
        match crate::decode::decode(encoding, &body.data, DECODE_LIMIT) {
            Ok(plain) => facts.decoded = Some(plain.len() as u64),
            Err(e) => facts.decode_error = Some(e.to_string()),
        }
    }
    facts
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

/// A WebSocket message's payload for the page: text as it is, binary as hex (the
/// first 4 KiB).
fn payload(text: bool, data: &[u8]) -> String {
    if text {
        return String::from_utf8_lossy(data).into_owned();
    }
    let shown = &data[..data.len().min(4096)];
    let mut hex: String = shown.iter().map(|b| format!("{b:02x} ")).collect();
    if shown.len() < data.len() {
        hex.push('…');
    }
    hex
}

/// The flow stored as `id`, in detail.
fn detail_of(id: u64, record: &Record, state: FlowState) -> FlowDetail {
    let req = &record.request;
    let response = record.response.as_ref().map(|r| ResponseDetail {
        status: r.status,
        reason: r.reason.clone(),
        version: r.version.clone(),
        headers: heads(&r.headers),
        body: body_facts(&r.body, &r.headers),
    });
    let messages = record.websocket.as_ref().map(|m| {
        m.iter()
            .map(|m| MessageDetail {
                from_client: m.from_client,
                text: m.text,
                at: millis_since_epoch(m.at),
                size: m.data.len() as u64,
                data: payload(m.text, &m.data),
            })
            .collect()
    });
    FlowDetail {
        summary: FlowSummary::of(id, record, state),
        url: req.url(),
        client: record.client.map(|a| a.to_string()),
        server: record.server.map(|a| a.to_string()),
        client_tls: record.client_tls,
        tls: TlsDetail {
            sni: record.tls.sni.clone(),
            alpn: record.tls.alpn.clone(),
            version: record.tls.version.clone(),
        },
        request: RequestDetail {
            method: req.method.clone(),
            path: req.path.clone(),
            version: req.version.clone(),
            headers: heads(&req.headers),
            body: body_facts(&req.body, &req.headers),
        },
        response,
        timings: TimingsDetail {
            request_end: ms(record.timings.request_end),
            response_first_byte: ms(record.timings.response_first_byte),
            response_end: ms(record.timings.response_end),
        },
        error: record.error.clone(),
        websocket: messages,
        curl: record.to_curl(),
    }
}

pub(super) async fn detail(State(app): Shared, Path(id): Path<u64>) -> Response {
    match app.source.get(id) {
        // Keys sorted, as the page has always had them (see `FlowDetail::summary`).
        Some((record, state)) => sorted(&detail_of(id, &record, state)).into_response(),
        None => not_found(id),
    }
}

/// The type a body is served as: images as themselves (so an `<img>` can show them),
/// everything else as opaque bytes, so that no captured page or script ever runs on
/// the UI's origin. SVG counts as a script here.
fn served_type(content_type: &str) -> &'static str {
    let t = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match t.as_str() {
        "image/png" => "image/png",
        "image/jpeg" => "image/jpeg",
        "image/gif" => "image/gif",
        "image/webp" => "image/webp",
        "image/avif" => "image/avif",
        "image/bmp" => "image/bmp",
        "image/x-icon" | "image/vnd.microsoft.icon" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

pub(super) async fn body(
    State(app): Shared,
    Path((id, side)): Path<(u64, String)>,
    Query(p): Query<BodyParams>,
) -> Response {
    let Some((record, _)) = app.source.get(id) else {
        return not_found(id);
    };
    let (body, headers) = match side.as_str() {
        "request" => (&record.request.body, &record.request.headers),
        "response" => match &record.response {
            Some(r) => (&r.body, &r.headers),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    ApiError::new(format!("flow {id} has no response yet")),
                )
            }
        },
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                ApiError::new("the side is `request` or `response`"),
            )
        }
    };
    let encoding = headers.get("content-encoding").unwrap_or("").trim();
    let raw = matches!(p.raw.as_deref(), Some("1" | "true"));
    let data = if raw || encoding.is_empty() {
        body.data.to_vec()
    } else {
        // An undecodable body is shown as it came, which the detail says.
        crate::decode::decode(encoding, &body.data, DECODE_LIMIT)
            .unwrap_or_else(|_| body.data.to_vec())
    };
    let content_type = served_type(headers.get("content-type").unwrap_or(""));
    let mut answer = data.into_response();
    let h = answer.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Even an image is not allowed to run anything, or to be read as something else.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    answer
}

pub(super) async fn clear(State(app): Shared) -> StatusCode {
    app.source.clear();
    tracing::info!("web UI: flows cleared");
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_images_are_served_as_what_they_are() {
        assert_eq!(served_type("image/PNG; q=1"), "image/png");
        for other in ["text/html", "image/svg+xml", "application/javascript", ""] {
            assert_eq!(served_type(other), "application/octet-stream", "{other}");
        }
    }

    #[test]
    fn binary_messages_show_as_hex_cut_at_4_kib() {
        assert_eq!(payload(false, &[0, 255]), "00 ff ");
        assert_eq!(payload(true, b"hi"), "hi");
        assert!(payload(false, &[0; 5000]).ends_with('…'));
    }

    /// A flow with everything the detail shows: bodies (one gzip, one that does not
    /// decode), TLS, timings, an error, WebSocket messages.
    fn rich_record() -> Record {
        use crate::capture::{RecordedMessage, RecordedResponse};
        use crate::core::{Connection, Host, Target};
        use crate::http::message::{HttpFlow, Request};
        use bytes::Bytes;
        use std::time::UNIX_EPOCH;
        let request = Request::new_to(
            "POST".into(),
            Target::new("a.localhost", 8443, true),
            "/x?q=1".into(),
        );
        let conn = Connection::new(1, Host::default());
        let mut r = Record::from_flow(&conn, &HttpFlow::new(1, request), 1024);
        r.request.headers.append("Content-Encoding", "br");
        r.request.body = RecordedBody::whole(Bytes::from_static(b"not brotli"));
        let mut headers = Headers::new();
        headers.append("Content-Type", "Text/HTML; charset=utf-8");
        headers.append("Content-Encoding", "gzip");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b"hello hello").unwrap();
        r.response = Some(RecordedResponse {
            status: 404,
            reason: "Not Found".into(),
            version: "HTTP/1.1".into(),
            headers,
            body: RecordedBody {
                data: Bytes::from(gz.finish().unwrap()),
                size: 999,
                truncated: true,
            },
        });
        // Whole milliseconds: serde_json reads some floats back a bit off.
        r.started_at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        r.timings.request_end = Some(Duration::from_micros(300));
        r.timings.response_end = Some(Duration::from_millis(7));
        r.client = Some("127.0.0.1:5555".parse().unwrap());
        r.client_tls = true;
        r.tls.sni = Some("a.localhost".into());
        r.error = Some("boom".into());
        r.websocket = Some(vec![RecordedMessage {
            from_client: false,
            text: false,
            data: Bytes::from_static(&[0, 255]),
            at: UNIX_EPOCH + Duration::from_millis(1_234_567),
        }]);
        r
    }

    #[test]
    fn the_detail_is_sent_with_sorted_keys_and_reads_back_as_a_flow_detail() {
        use crate::web::json::Phase;
        let state = FlowState {
            pending: false,
            intercepted: Some(Phase::Response),
        };
        let detail = detail_of(7, &rich_record(), state);
        let text = serde_json::to_string(&sorted(&detail).0).unwrap();
        let back: FlowDetail = serde_json::from_str(&text).unwrap();
        assert_eq!(back, detail);
        let response = detail.response.as_ref().unwrap();
        assert_eq!(response.body.decoded, Some(11));
        assert!(detail.request.body.decode_error.is_some());
        assert_eq!(detail.websocket.as_ref().unwrap()[0].data, "00 ff ");
        // As the page has always read it: keys in alphabetical order at every depth,
        // the facts of a body that does not decode (or needs no decoding) left out.
        assert!(text.starts_with(r#"{"client":"127.0.0.1:5555","client_tls":true,"curl":"#));
        assert!(
            text.contains(r#""summary":{"comment":"","content_type":"text/html","duration":7.0,"error":true,"host":"a.localhost","id":7,"intercepted":"response","marked":"","#),
            "{text}"
        );
        assert!(
            text.contains(r#""body":{"content_type":"","decode_error":"#),
            "{text}"
        );
        assert!(
            text.contains(r#""timings":{"request_end":0.3,"response_end":7.0,"response_first_byte":null},"tls":{"alpn":null,"sni":"a.localhost","version":null}"#),
            "{text}"
        );
        assert!(
            text.ends_with(r#""websocket":[{"at":1234567.0,"data":"00 ff ","from_client":false,"size":2,"text":false}]}"#),
            "{text}"
        );
    }
}
