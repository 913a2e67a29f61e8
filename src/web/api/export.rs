//! Export: the flows matching a filter as a capture file, in any format the crate
//! writes, streamed to the response as it is written (no temporary file).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use serde_json::json;

use super::{error, filter_param, App, Shared};
use crate::web::json::ExportParams;
use bytes::Bytes;

/// `GET /api/export`, for the router.
pub(super) fn route() -> MethodRouter<Arc<App>> {
    get(export)
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
