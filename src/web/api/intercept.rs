//! Intercept: the filter whose flows wait for the user, and the user's decision for a
//! waiting flow (resume, changed by an [`Edit`] or not, or kill).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;

use super::{bad_filter, error, not_found, parse_filter, sorted, App, Shared};
use crate::web::feed::Decision;
use crate::web::json::{ApiError, Edit, InterceptState, Phase, SetFilter};

pub(super) async fn filter(State(app): Shared) -> Response {
    let state = InterceptState {
        filter: app.interceptor.filter().map(|f| f.to_string()),
        waiting: app.interceptor.waiting_ids(),
    };
    sorted(&state).into_response()
}

/// Sets the intercept filter (`{"filter": "…"}`, empty or null for none).
pub(super) async fn set_filter(State(app): Shared, Json(p): Json<SetFilter>) -> Response {
    match parse_filter(p.filter.as_deref()) {
        Ok(filter) => {
            tracing::info!(
                filter = filter.as_ref().map(|f| f.as_str()),
                "web UI: intercept filter set"
            );
            app.interceptor.set_filter(filter);
            self::filter(State(app)).await
        }
        Err(e) => bad_filter(&e),
    }
}

/// An [`Edit`] from a request body: none when empty.
pub(super) fn edit_of(body: &[u8]) -> Result<Edit, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Edit::default());
    }
    serde_json::from_slice(body)
}

pub(super) fn bad_edit(e: &serde_json::Error) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        ApiError::new(format!("invalid edit: {e}")),
    )
}

/// Resumes an intercepted flow, changed by the edit in the body (if any).
pub(super) async fn resume(State(app): Shared, Path(id): Path<u64>, body: Bytes) -> Response {
    let edit = match edit_of(&body) {
        Ok(e) => e,
        Err(e) => return bad_edit(&e),
    };
    let Some((_, state)) = app.source.get(id) else {
        return not_found(id);
    };
    let phase = state.intercepted.unwrap_or(Phase::Request);
    if let Err(e) = edit.check(phase) {
        return error(StatusCode::BAD_REQUEST, ApiError::new(e.to_string()));
    }
    decided(&app, id, Decision::Resume(edit))
}

pub(super) async fn kill(State(app): Shared, Path(id): Path<u64>) -> Response {
    decided(&app, id, Decision::Kill)
}

fn decided(app: &App, id: u64, decision: Decision) -> Response {
    if app.interceptor.decide(id, decision) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(
            StatusCode::CONFLICT,
            ApiError::new(format!(
                "flow {id} is not waiting (resumed, killed, or gone)"
            )),
        )
    }
}
