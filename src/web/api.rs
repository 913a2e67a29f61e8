//! The web UI's HTTP endpoints: the page, its JSON API and the live socket.
//!
//! | endpoint | what it does |
//! | --- | --- |
//! | `GET /`, `/app.js`, `/app.css` | the page (embedded in the binary) |
//! | `GET /ca.pem` | the proxy's CA certificate, when the UI was given one |
//! | `GET /api/flows?filter=&after=&before=&limit=` | a page of flow summaries ([`FlowPage`]); `400 {error, position}` for a bad filter |
//! | `GET /api/flows/{id}` | one flow in detail: heads, body facts, timings, WebSocket messages, error |
//! | `GET /api/flows/{id}/{request\|response}/body[?raw=1]` | a body, decoded from its `Content-Encoding` unless `raw` |
//! | `POST /api/clear` | removes every flow |
//! | `GET /api/intercept`, `POST /api/intercept {"filter": …}` | the intercept filter, and the ids of the flows waiting |
//! | `POST /api/flows/{id}/resume [Edit]`, `POST /api/flows/{id}/kill` | decides for a waiting flow (`409` when it is not waiting) |
//! | `POST /api/flows/{id}/replay [Edit]` | sends the request again (edited); `{"id": new flow}` |
//! | `GET /api/export?format=har\|flows\|sqlite&filter=` | the flows matching as a capture file |
//! | `GET /api/live` (WebSocket) | batched changes; the page sends `{"filter": "…"}` |
//!
//! Every answer passes the checks of `auth.rs` first (token, `Host`, `Origin`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::feed::{Decision, Edit, Interceptor};
use super::store::{
    millis_since_epoch, FlowPage, FlowSource, FlowState, FlowSummary, ListQuery, MemoryStore,
    Phase, SummaryOf, SummaryRow, ROW_COLUMNS,
};
use super::Replayer;
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
    /// Where the list and details come from.
    pub source: Arc<dyn FlowSource>,
    /// Where replayed flows go.
    pub store: Arc<MemoryStore>,
    pub interceptor: Arc<Interceptor>,
    pub replayer: Option<Arc<dyn Replayer>>,
    /// The CA whose certificate `/ca.pem` offers.
    pub ca: Option<Arc<crate::tls::ca::CertificateAuthority>>,
}

type Shared = State<Arc<App>>;

pub(crate) fn routes(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/ca.pem", get(ca_pem))
        .route("/api/flows", get(list))
        .route("/api/flows/{id}", get(detail))
        .route("/api/flows/{id}/{side}/body", get(body))
        .route("/api/clear", post(clear))
        .route("/api/intercept", get(intercept_filter).post(set_intercept))
        .route("/api/flows/{id}/resume", post(resume))
        .route("/api/flows/{id}/kill", post(kill))
        .route("/api/flows/{id}/replay", post(replay))
        .route("/api/export", get(export))
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

/// The proxy's CA certificate, to download and trust.
async fn ca_pem(State(app): Shared) -> Response {
    let Some(ca) = &app.ca else {
        return error(
            StatusCode::NOT_FOUND,
            json!({"error": "this UI has no CA to offer"}),
        );
    };
    (
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"mitm-ca.pem\"",
            ),
        ],
        ca.cert_pem().to_string(),
    )
        .into_response()
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

/// The filter a request gives, or the `400` that says where it is wrong.
fn filter_param(text: Option<&str>) -> std::result::Result<Option<Filter>, Box<Response>> {
    parse_filter(text).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            json!({"error": e.message(), "position": e.position()}),
        ))
    })
}

async fn list(State(app): Shared, Query(p): Query<ListParams>) -> Response {
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

fn detail_json(id: u64, record: &Record, state: FlowState) -> Value {
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
        "summary": FlowSummary::of(id, record, state),
        "url": req.url(),
        "client": record.client.map(|a| a.to_string()),
        "server": record.server.map(|a| a.to_string()),
        "client_tls": record.client_tls,
        "tls": {
            "sni": record.tls.sni,
            "alpn": record.tls.alpn,
            "version": record.tls.version,
        },
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
        Some((record, state)) => Json(detail_json(id, &record, state)).into_response(),
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

#[derive(Debug, Deserialize)]
struct InterceptParams {
    filter: Option<String>,
}

async fn intercept_filter(State(app): Shared) -> Response {
    let filter = app.interceptor.filter().map(|f| f.to_string());
    Json(json!({"filter": filter, "waiting": app.interceptor.waiting_ids()})).into_response()
}

/// Sets the intercept filter (`{"filter": "…"}`, empty or null for none).
async fn set_intercept(State(app): Shared, Json(p): Json<InterceptParams>) -> Response {
    match parse_filter(p.filter.as_deref()) {
        Ok(filter) => {
            tracing::info!(
                filter = filter.as_ref().map(|f| f.as_str()),
                "web UI: intercept filter set"
            );
            app.interceptor.set_filter(filter);
            intercept_filter(State(app)).await
        }
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            json!({"error": e.message(), "position": e.position()}),
        ),
    }
}

/// An [`Edit`] from a request body: none when empty.
fn edit_of(body: &[u8]) -> Result<Edit, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Edit::default());
    }
    serde_json::from_slice(body)
}

fn bad_edit(e: &serde_json::Error) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        json!({"error": format!("invalid edit: {e}")}),
    )
}

/// Resumes an intercepted flow, changed by the edit in the body (if any).
async fn resume(State(app): Shared, Path(id): Path<u64>, body: Bytes) -> Response {
    let edit = match edit_of(&body) {
        Ok(e) => e,
        Err(e) => return bad_edit(&e),
    };
    let Some((_, state)) = app.source.get(id) else {
        return not_found(id);
    };
    let phase = state.intercepted.unwrap_or(Phase::Request);
    if let Err(e) = edit.check(phase) {
        return error(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}));
    }
    decided(&app, id, Decision::Resume(edit))
}

async fn kill(State(app): Shared, Path(id): Path<u64>) -> Response {
    decided(&app, id, Decision::Kill)
}

fn decided(app: &App, id: u64, decision: Decision) -> Response {
    if app.interceptor.decide(id, decision) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(
            StatusCode::CONFLICT,
            json!({"error": format!("flow {id} is not waiting (resumed, killed, or gone)")}),
        )
    }
}

/// Sends the request of a flow again (changed by the edit in the body, if any); the
/// new flow joins the list, and its id is the answer.
async fn replay(State(app): Shared, Path(id): Path<u64>, body: Bytes) -> Response {
    let Some(replayer) = app.replayer.clone() else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            json!({"error": "replay is off: this UI has no proxy to send with"}),
        );
    };
    let edit = match edit_of(&body) {
        Ok(e) => e,
        Err(e) => return bad_edit(&e),
    };
    let Some((record, _)) = app.source.get(id) else {
        return not_found(id);
    };
    let mut request = record.request.to_request();
    if let Err(e) = edit.apply_to_request(&mut request) {
        return error(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}));
    }
    let conn = crate::core::Connection::new(0, crate::core::Host::default());
    let mut flow = crate::http::message::HttpFlow::new(0, request.clone());
    flow.request_body_size = request.body.bytes().map_or(0, |b| b.len() as u64);
    let url = request.url();
    match replayer.replay(request).await {
        Ok(response) => {
            let now = std::time::Instant::now();
            flow.timings.request_end = Some(now);
            flow.timings.response_first_byte = Some(now);
            flow.timings.response_end = Some(now);
            flow.response_body_size = response.body.bytes().map_or(0, |b| b.len() as u64);
            flow.response = Some(response);
        }
        Err(e) => {
            tracing::warn!(%url, error = %crate::error::Report(&e), "web UI: replay failed");
            flow.error = Some(Arc::new(e));
        }
    }
    let record = Record::from_flow(&conn, &flow, super::DEFAULT_FEED_BODY_LIMIT);
    let failed = record.error.clone();
    let new = app.store.insert(record, FlowState::FINISHED);
    Json(json!({"id": new, "error": failed})).into_response()
}

#[derive(Debug, Deserialize)]
struct ExportParams {
    format: Option<String>,
    filter: Option<String>,
}

/// The flows matching `filter` as a capture file: `har` (default), `flows`
/// (mitmproxy's) or `sqlite`, streamed as it is written. An error before the first
/// bytes is a `500` with the cause; one after them cuts the download short (its end is
/// missing, so the client sees it incomplete).
async fn export(State(app): Shared, Query(p): Query<ExportParams>) -> Response {
    let filter = match filter_param(p.filter.as_deref()) {
        Ok(f) => f,
        Err(refused) => return *refused,
    };
    let format = match p
        .format
        .as_deref()
        .unwrap_or("har")
        .parse::<crate::capture::Format>()
    {
        Ok(format) => format,
        Err(e) => return error(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
    };
    // Written on a blocking thread, in chunks, to the response's body: a few chunks
    // wait at most, so a slow download slows the writer rather than filling memory.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let source = app.source.clone();
    let task = tokio::task::spawn_blocking(move || {
        let records = source.records(filter.as_ref());
        let out = std::io::BufWriter::with_capacity(EXPORT_CHUNK, ChunkSender(tx.clone()));
        let written = crate::capture::export(format, records.iter().map(|r| &**r), out)
            .and_then(|out| out.into_inner().map_err(|e| e.into_error()));
        if let Err(e) = written {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let failed = |e: &(dyn std::error::Error + 'static)| {
        tracing::warn!(error = %crate::error::Report(e), "web UI: export failed");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": format!("export failed: {}", crate::error::Report(e))}),
        )
    };
    let first = match rx.recv().await {
        Some(Ok(chunk)) => Some(Ok(chunk)),
        Some(Err(e)) => return failed(&e),
        None => None,
    };
    // Nothing written: the writer ended (an empty export), or it panicked.
    let task = match first {
        Some(_) => Some(task),
        None => match task.await {
            Ok(()) => None,
            Err(e) => return failed(&e),
        },
    };
    let rest = futures_util::stream::unfold((rx, task), |(mut rx, mut task)| async move {
        let chunk = match rx.recv().await {
            Some(chunk) => chunk,
            // Written to the end, or stopped by a panic: the download must not look
            // whole then.
            None => match task.take()?.await {
                Ok(()) => return None,
                Err(e) => Err(std::io::Error::other(format!("the export stopped: {e}"))),
            },
        };
        if let Err(e) = &chunk {
            tracing::warn!(error = %crate::error::Report(e), "web UI: export failed midway");
        }
        Some((chunk, (rx, task)))
    });
    let body = axum::body::Body::from_stream(futures_util::StreamExt::chain(
        futures_util::stream::iter(first),
        rest,
    ));
    let disposition = format!("attachment; filename=\"mitm.{}\"", format.extension());
    let mut answer = body.into_response();
    let h = answer.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    answer
}

/// The most bytes of an export gathered before they go to the response as a chunk.
const EXPORT_CHUNK: usize = 64 * 1024;

/// Hands what an export writes to its response, a chunk at a time, waiting while the
/// response has chunks enough; fails once the response is gone (the client left).
struct ChunkSender(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>);

impl std::io::Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the download was closed")
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
    /// Flows added or changed, each with whether it matches the socket's filter: one
    /// array of values per flow, named by `columns`.
    Flows {
        columns: &'static [&'static str],
        rows: Vec<LiveFlow>,
        count: usize,
    },
    /// Every flow was removed.
    Clear,
    /// The socket fell behind: the page should fetch the list again.
    Reload,
    /// The filter the page sent is bad.
    FilterError { error: String, position: usize },
}

/// A flow's row in a batch: its [`FlowSummary`]'s values and whether it matches the
/// socket's filter (else the page drops it from its list), as [`SummaryRow`].
#[derive(Debug)]
struct LiveFlow {
    id: u64,
    record: Arc<Record>,
    state: FlowState,
    matches: bool,
}

impl Serialize for LiveFlow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SummaryRow(SummaryOf {
            id: self.id,
            record: &self.record,
            state: self.state,
            matches: self.matches,
        })
        .serialize(s)
    }
}

/// Sends the changes of `app`'s source, batched, until the page goes away.
///
/// The first change of a batch wakes the socket's task; the rest of the batch is taken
/// after [`BATCH`], in one go, so a busy proxy wakes it once per batch, not once per
/// change, and the page's own messages (a new filter) are read between batches (each
/// look at the socket costs its reader a buffer).
async fn live_socket(app: Arc<App>, mut socket: WebSocket) {
    let changes = app.source.changes();
    let mut filter: Option<Filter> = None;
    loop {
        let mut events = Vec::new();
        tokio::select! {
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
            () = changes.changed() => {
                // A flow changing often is sent once a batch, as it is at its end.
                tokio::time::sleep(BATCH).await;
            }
        }
        let batch = changes.take();
        if batch.lagged {
            // Too far behind: the page fetches the list again.
            events.push(LiveEvent::Reload);
        } else if batch.cleared {
            events.push(LiveEvent::Clear);
        }
        for chunk in batch.flows.chunks(BATCH_MAX) {
            let rows = chunk
                .iter()
                .filter_map(|&id| {
                    let (record, state) = app.source.get(id)?;
                    Some(LiveFlow {
                        matches: filter.as_ref().is_none_or(|f| f.matches(&record)),
                        id,
                        record,
                        state,
                    })
                })
                .collect();
            events.push(LiveEvent::Flows {
                columns: &ROW_COLUMNS,
                rows,
                count: app.source.len(),
            });
        }
        for event in &events {
            if send(&mut socket, event).await.is_err() {
                return;
            }
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
