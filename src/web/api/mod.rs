//! The web UI's HTTP endpoints: the router, what every handler shares, and the
//! answers they have in common. What each endpoint takes and returns is in
//! [`json`](super::json), with a table; here is which file serves which:
//!
//! | endpoint | file |
//! | --- | --- |
//! | `GET /`, `/app.css`, `/js/{module}`, `/ca.pem` | `page.rs`: the page and its modules, embedded in the binary; the CA certificate |
//! | `GET /api/flows`, `/api/flows/{id}`, `/api/flows/{id}/{side}/body`; `POST /api/clear` | `flows.rs`: the list, a flow in detail, its bodies, clearing |
//! | `GET`/`POST /api/intercept`; `POST /api/flows/{id}/resume`, `/kill` | `intercept.rs`: the intercept filter, and the decisions for a waiting flow |
//! | `POST /api/flows/{id}/replay` | `replay.rs` |
//! | `GET /api/export` | `export.rs`: the flows as a capture file |
//! | `GET /api/live` (WebSocket) | `live.rs`: batched changes |
//!
//! Every request passes the checks of `auth.rs` first (token, `Host`, `Origin`): the
//! layer [`WebUi::run_until`](super::WebUi::run_until) puts around this router.

mod export;
mod flows;
mod intercept;
mod live;
mod page;
mod replay;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;

use super::feed::Interceptor;
use super::json::ApiError;
use super::store::FlowSource;
use super::Replayer;
use crate::capture::{Filter, FilterError};

/// Most bytes a body is decoded to for the UI.
const DECODE_LIMIT: usize = 64 * 1024 * 1024;

/// What every handler shares.
pub(crate) struct App {
    /// Where the list and details come from, and where replayed flows go.
    pub source: Arc<dyn FlowSource>,
    pub interceptor: Arc<Interceptor>,
    pub replayer: Option<Arc<dyn Replayer>>,
    /// The CA whose certificate `/ca.pem` offers.
    pub ca: Option<Arc<crate::tls::ca::CertificateAuthority>>,
}

type Shared = State<Arc<App>>;

pub(crate) fn routes(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page::page))
        .route("/app.css", get(page::style))
        .route("/js/{module}", get(page::module))
        .route("/ca.pem", get(page::ca_pem))
        .route("/api/flows", get(flows::list))
        .route("/api/flows/{id}", get(flows::detail))
        .route("/api/flows/{id}/{side}/body", get(flows::body))
        .route("/api/clear", post(flows::clear))
        .route(
            "/api/intercept",
            get(intercept::filter).post(intercept::set_filter),
        )
        .route("/api/flows/{id}/resume", post(intercept::resume))
        .route("/api/flows/{id}/kill", post(intercept::kill))
        .route("/api/flows/{id}/replay", post(replay::replay))
        .route("/api/export", export::route())
        .route("/api/live", get(live::live))
        .with_state(app)
}

/// `body` as a JSON answer, its objects' keys in alphabetical order at every depth:
/// the order these answers have always had (they were built as `serde_json` values,
/// whose maps are sorted), kept so that the bytes on the wire stay the same.
fn sorted(body: &impl Serialize) -> Json<Value> {
    // Cannot fail: the API's types have no maps with keys other than strings.
    Json(serde_json::to_value(body).unwrap_or(Value::Null))
}

/// A JSON error answer: an [`ApiError`] (or a `serde_json` value of its shape).
fn error(status: StatusCode, body: impl Serialize) -> Response {
    (status, sorted(&body)).into_response()
}

/// The `404` for a flow that is not (or no longer) there.
fn not_found(id: u64) -> Response {
    error(
        StatusCode::NOT_FOUND,
        ApiError::new(format!("no flow {id} (cleared, or dropped as too old)")),
    )
}

/// The filter of a query, empty meaning none.
fn parse_filter(text: Option<&str>) -> Result<Option<Filter>, FilterError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => Filter::parse(t).map(Some),
    }
}

/// The `400` for a bad filter: what is wrong, and where.
fn bad_filter(e: &FilterError) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        ApiError {
            error: e.message(),
            position: Some(e.position()),
        },
    )
}

/// The filter a request gives, or the `400` that says where it is wrong.
fn filter_param(text: Option<&str>) -> std::result::Result<Option<Filter>, Box<Response>> {
    parse_filter(text).map_err(|e| Box::new(bad_filter(&e)))
}
