//! Replay: a flow's request sent again (changed by an [`Edit`](crate::web::json::Edit),
//! or not) through the UI's [`Replayer`](crate::web::Replayer); the new flow joins the
//! list: it is added to the UI's [`FlowSource`](crate::web::FlowSource) (the proxy's
//! store, or a saved capture's own copy).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::intercept::{bad_edit, edit_of};
use super::{error, not_found, sorted, Shared};
use crate::capture::Record;
use crate::web::json::{ApiError, Replayed};

/// Sends the request of a flow again (changed by the edit in the body, if any); the
/// new flow joins the list, and its id is the answer.
pub(super) async fn replay(State(app): Shared, Path(id): Path<u64>, body: Bytes) -> Response {
    let Some(replayer) = app.replayer.clone() else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            ApiError::new("replay is off: this UI has no proxy to send with"),
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
        return error(StatusCode::BAD_REQUEST, ApiError::new(e.to_string()));
    }
    let conn = crate::core::Connection::new(0, crate::core::Host::default());
    let mut flow = crate::http::message::HttpFlow::new(0, request.clone());
    flow.is_replay = Some(crate::http::message::Replay::Request);
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
    let record = Record::from_flow(&conn, &flow, crate::web::DEFAULT_FEED_BODY_LIMIT);
    let failed = record.error.clone();
    // Into the flows the UI shows (the proxy's store, or a saved capture's copy),
    // off the async workers: a source may write to a disk, or first copy a file.
    let source = app.source.clone();
    match tokio::task::spawn_blocking(move || source.add(record)).await {
        Ok(Some(new)) => sorted(&Replayed {
            id: new,
            error: failed,
        })
        .into_response(),
        Ok(None) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::new(format!(
                "the request to {url} was sent again, but this UI's flows could not keep the new one"
            )),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::new(format!("the new flow could not be kept: {e}")),
        ),
    }
}
