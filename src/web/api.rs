//! The web UI's HTTP endpoints: the page, its JSON API and the live socket.
//!
//! | endpoint | what it does |
//! | --- | --- |
//! | `GET /`, `/app.js`, `/app.css` | the page (embedded in the binary) |
//! | `GET /api/flows?filter=&after=&before=&limit=` | a page of flow summaries ([`FlowPage`]); `400 {error, position}` for a bad filter |
//! | `GET /api/flows/{id}` | one flow in detail: heads, body facts, timings, WebSocket messages, error |
//! | `GET /api/flows/{id}/{request\|response}/body[?raw=1]` | a body, decoded from its `Content-Encoding` unless `raw` |
//! | `POST /api/clear` | removes every flow |
//! | `GET /api/live` (WebSocket) | batched changes; the page sends `{"filter": "…"}` |

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::store::{millis_since_epoch, Change, FlowPage, FlowSource, FlowSummary, ListQuery};
use crate::capture::{Filter, FilterError, Record, RecordedBody};
use crate::http::message::Headers;

/// Most bytes a body is decoded to for the UI.
const DECODE_LIMIT: usize = 64 * 1024 * 1024;
/// How long a live socket gathers changes before it sends them as one message: a
/// flood of flows becomes a few messages a second, not one per flow.
const BATCH: Duration = Duration::from_millis(150);
/// Most flows one live message carries; more make another message at once.
const BATCH_MAX: usize = 5_000;

/// What every handler shares.
pub(crate) struct App {
    pub source: Arc<dyn FlowSource>,
}

type Shared = State<Arc<App>>;

pub(crate) fn routes(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/api/flows", get(list))
        .route("/api/flows/{id}", get(detail))
        .route("/api/flows/{id}/{side}/body", get(body))
        .route("/api/clear", post(clear))
        .route("/api/live", get(live))
        .with_state(app)
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn page() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/app.css"))
}

/// A JSON error answer: `{"error": …}` plus what else is given.
fn error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// The filter of a query, empty meaning none.
fn parse_filter(text: Option<&str>) -> Result<Option<Filter>, FilterError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => Filter::parse(t).map(Some),
    }
}

#[derive(Debug, Deserialize)]
struct ListParams {
    filter: Option<String>,
    after: Option<u64>,
    before: Option<u64>,
    #[serde(default)]
    limit: usize,
}

async fn list(State(app): Shared, Query(p): Query<ListParams>) -> Response {
    let filter = match parse_filter(p.filter.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"error": e.message(), "position": e.position()}),
            )
        }
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
            json!({"error": "listing failed"}),
        ),
    }
}

fn not_found(id: u64) -> Response {
    error(
        StatusCode::NOT_FOUND,
        json!({"error": format!("no flow {id} (cleared, or dropped as too old)")}),
    )
}

fn heads(headers: &Headers) -> Vec<[String; 2]> {
    headers
        .iter()
        .map(|(n, v)| [n.to_string(), String::from_utf8_lossy(v).into_owned()])
        .collect()
}

/// What the page needs to know of a body before it fetches it.
fn body_facts(body: &RecordedBody, headers: &Headers) -> Value {
    let encoding = headers.get("content-encoding").unwrap_or("").trim();
    let mut facts = json!({
        "size": body.size,
        "kept": body.data.len(),
        "truncated": body.truncated,
        "encoding": encoding,
        "content_type": headers.get("content-type").unwrap_or(""),
    });
    if !encoding.is_empty() && !body.data.is_empty() {
        match crate::decode::decode(encoding, &body.data, DECODE_LIMIT) {
            Ok(plain) => facts["decoded"] = json!(plain.len()),
            Err(e) => facts["decode_error"] = json!(e.to_string()),
        }
    }
    facts
}

fn ms(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.as_secs_f64() * 1000.0))
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

fn detail_json(id: u64, record: &Record, pending: bool) -> Value {
    let req = &record.request;
    let response = record.response.as_ref().map(|r| {
        json!({
            "status": r.status,
            "reason": r.reason,
            "version": r.version,
            "headers": heads(&r.headers),
            "body": body_facts(&r.body, &r.headers),
        })
    });
    let messages = record.websocket.as_ref().map(|m| {
        m.iter()
            .map(|m| {
                json!({
                    "from_client": m.from_client,
                    "text": m.text,
                    "at": millis_since_epoch(m.at),
                    "size": m.data.len(),
                    "data": payload(m.text, &m.data),
                })
            })
            .collect::<Vec<_>>()
    });
    json!({
        "summary": FlowSummary::of(id, record, pending),
        "url": req.url(),
        "client": record.client.map(|a| a.to_string()),
        "server": record.server.map(|a| a.to_string()),
        "client_tls": record.client_tls,
        "request": {
            "method": req.method,
            "path": req.path,
            "version": req.version,
            "headers": heads(&req.headers),
            "body": body_facts(&req.body, &req.headers),
        },
        "response": response,
        "timings": {
            "request_end": ms(record.timings.request_end),
            "response_first_byte": ms(record.timings.response_first_byte),
            "response_end": ms(record.timings.response_end),
        },
        "error": record.error,
        "websocket": messages,
        "curl": record.to_curl(),
    })
}

async fn detail(State(app): Shared, Path(id): Path<u64>) -> Response {
    match app.source.get(id) {
        Some((record, pending)) => Json(detail_json(id, &record, pending)).into_response(),
        None => not_found(id),
    }
}

#[derive(Debug, Deserialize)]
struct BodyParams {
    /// `1` or `true`: the bytes as they went over the wire.
    raw: Option<String>,
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

async fn body(
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
                    json!({"error": format!("flow {id} has no response yet")}),
                )
            }
        },
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                json!({"error": "the side is `request` or `response`"}),
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

async fn clear(State(app): Shared) -> StatusCode {
    app.source.clear();
    tracing::info!("web UI: flows cleared");
    StatusCode::NO_CONTENT
}

async fn live(State(app): Shared, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| live_socket(app, socket))
}

/// What the page sends on the live socket.
#[derive(Debug, Deserialize)]
struct LiveRequest {
    filter: Option<String>,
}

/// What the live socket sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum LiveEvent {
    /// Flows added or changed, each with whether it matches the socket's filter.
    Flows { flows: Vec<LiveFlow>, count: usize },
    /// Every flow was removed.
    Clear,
    /// The socket fell behind: the page should fetch the list again.
    Reload,
    /// The filter the page sent is bad.
    FilterError { error: String, position: usize },
}

#[derive(Debug, Serialize)]
struct LiveFlow {
    #[serde(flatten)]
    summary: FlowSummary,
    /// Whether it matches the socket's filter (else the page drops it from its list).
    matches: bool,
}

/// Sends the changes of `app`'s source, batched, until the page goes away.
async fn live_socket(app: Arc<App>, mut socket: WebSocket) {
    let mut changes = app.source.changes();
    let mut filter: Option<Filter> = None;
    let mut pending = BTreeSet::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let flush = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            message = socket.recv() => {
                let Some(Ok(message)) = message else { return };
                let Message::Text(text) = message else { continue };
                let Ok(asked) = serde_json::from_str::<LiveRequest>(&text) else { continue };
                match parse_filter(asked.filter.as_deref()) {
                    Ok(f) => filter = f,
                    Err(e) => {
                        // The old filter stays.
                        let event = LiveEvent::FilterError { error: e.message(), position: e.position() };
                        if send(&mut socket, &event).await.is_err() { return; }
                    }
                }
                continue;
            }
            change = changes.recv() => match change {
                Ok(Change::Flow(id)) => {
                    pending.insert(id);
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + BATCH);
                    if pending.len() < BATCH_MAX { continue; }
                    None
                }
                Ok(Change::Cleared) => { pending.clear(); deadline = None; Some(LiveEvent::Clear) }
                Err(RecvError::Lagged(_)) => { pending.clear(); deadline = None; Some(LiveEvent::Reload) }
                Err(RecvError::Closed) => {
                    // A source that never changes: only the page's messages matter now.
                    changes = tokio::sync::broadcast::channel(1).1;
                    continue;
                }
            },
            () = flush => None,
        };
        let event = match event {
            Some(e) => e,
            None => {
                deadline = None;
                let ids = std::mem::take(&mut pending);
                let flows = ids
                    .into_iter()
                    .filter_map(|id| {
                        let (record, pending) = app.source.get(id)?;
                        Some(LiveFlow {
                            matches: filter.as_ref().is_none_or(|f| f.matches(&record)),
                            summary: FlowSummary::of(id, &record, pending),
                        })
                    })
                    .collect();
                LiveEvent::Flows {
                    flows,
                    count: app.source.len(),
                }
            }
        };
        if send(&mut socket, &event).await.is_err() {
            return;
        }
    }
}

async fn send(socket: &mut WebSocket, event: &LiveEvent) -> Result<(), axum::Error> {
    let text = serde_json::to_string(event).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
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
}
