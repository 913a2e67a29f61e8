//! Export: the flows matching a filter as a capture file, in any format the crate
//! writes.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use serde_json::json;

use super::{error, filter_param, App, Shared};
use crate::capture::Record;
use crate::web::json::ExportParams;

/// `GET /api/export`, for the router.
pub(super) fn route() -> MethodRouter<Arc<App>> {
    get(export)
}

/// The flows matching `filter` as a capture file: `har` (default), `flows`
/// (mitmproxy's) or `sqlite`.
async fn export(State(app): Shared, Query(p): Query<ExportParams>) -> Response {
    let filter = match filter_param(p.filter.as_deref()) {
        Ok(f) => f,
        Err(refused) => return *refused,
    };
    let ext = match p.format.as_deref().unwrap_or("har") {
        "har" => "har",
        "flows" => "flows",
        "sqlite" => "sqlite",
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("unknown format {other:?}: har, flows or sqlite")}),
            )
        }
    };
    let source = app.source.clone();
    let made = tokio::task::spawn_blocking(move || {
        let records = source.records(filter.as_ref());
        write_capture(ext, &records)
    })
    .await;
    match made {
        Ok(Ok(data)) => {
            let disposition = format!("attachment; filename=\"mitm.{ext}\"");
            let mut answer = data.into_response();
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
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::error::Report(&e), "web UI: export failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": format!("export failed: {}", crate::error::Report(&e))}),
            )
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "export failed"}),
        ),
    }
}

/// `records` written as a capture file of type `ext` (through a temporary file, as
/// every format's writer writes files), and read back.
fn write_capture(ext: &str, records: &[Arc<Record>]) -> crate::Result<Vec<u8>> {
    let name = format!(
        "mitm-web-export-{}-{}.{ext}",
        std::process::id(),
        super::auth::new_token()
    );
    let path = std::env::temp_dir().join(name);
    let result = (|| {
        let mut sink = crate::capture::create(&path)?;
        let io = |source| crate::Error::CaptureIo {
            path: path.clone(),
            source,
        };
        for record in records {
            sink.write(record).map_err(io)?;
        }
        sink.flush().map_err(io)?;
        drop(sink);
        std::fs::read(&path).map_err(io)
    })();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    result
}
