//! The live socket (`/api/live`): the changes of the UI's flows, batched, each flow
//! marked as matching the page's filter or not.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;

use super::{parse_filter, App, Shared};
use crate::capture::Filter;
use crate::web::json::{LiveMessage, SetFilter, LIVE_COLUMNS};

/// How long a live socket gathers changes before it sends them as one message: a
/// flood of flows becomes a few messages a second, not one per flow.
const BATCH: Duration = Duration::from_millis(150);
/// Most flows one live message carries; more make another message at once.
const BATCH_MAX: usize = 5_000;

pub(super) async fn live(State(app): Shared, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| live_socket(app, socket))
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
                let Ok(asked) = serde_json::from_str::<SetFilter>(&text) else { continue };
                match parse_filter(asked.filter.as_deref()) {
                    Ok(f) => filter = f,
                    Err(e) => {
                        // The old filter stays.
                        let event = LiveMessage::FilterError { error: e.message(), position: e.position() };
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
            events.push(LiveMessage::Reload);
        } else if batch.cleared {
            events.push(LiveMessage::Clear);
        }
        for event in &events {
            if send(&mut socket, event).await.is_err() {
                return;
            }
        }
        for chunk in batch.flows.chunks(BATCH_MAX) {
            // Each row written by the source, from the flow as it keeps it.
            let mut rows = Vec::with_capacity(chunk.len() * 256);
            for &id in chunk {
                let at = rows.len();
                if at > 0 {
                    rows.push(b',');
                }
                if !app.source.write_row(id, filter.as_ref(), &mut rows) {
                    rows.truncate(at);
                }
            }
            let Some(text) = flows_message(&rows, app.source.len()) else {
                continue;
            };
            if socket.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
    }
}

/// A `flows` message ([`LiveMessage::Flows`]) around `rows`, JSON arrays joined by
/// commas; `None` if they are not UTF-8 (a source's rows are JSON, which is).
fn flows_message(rows: &[u8], count: usize) -> Option<String> {
    static COLUMNS: LazyLock<String> =
        LazyLock::new(|| serde_json::to_string(&LIVE_COLUMNS).unwrap_or_default());
    let mut text = String::with_capacity(rows.len() + COLUMNS.len() + 64);
    text.push_str(r#"{"type":"flows","columns":"#);
    text.push_str(&COLUMNS);
    text.push_str(r#","rows":["#);
    text.push_str(std::str::from_utf8(rows).ok()?);
    text.push_str(r#"],"count":"#);
    text.push_str(itoa::Buffer::new().format(count));
    text.push('}');
    Some(text)
}

async fn send(socket: &mut WebSocket, event: &LiveMessage) -> Result<(), axum::Error> {
    let text = serde_json::to_string(event).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Record, RecordedResponse};
    use crate::core::{Connection, Host, Target};
    use crate::http::message::{HttpFlow, Request};
    use crate::web::json::{FlowState, FlowSummary, LiveRow, Phase};
    use crate::web::store::{FlowSource, MemoryStore, SummaryOf, SummaryRow};

    #[test]
    fn a_batch_as_sent_reads_back_as_the_flows_summaries() {
        let request = Request::new_to(
            "GET".into(),
            Target::new("a.localhost", 8080, false),
            "/x".into(),
        );
        let mut record = Record::from_flow(
            &Connection::new(1, Host::default()),
            &HttpFlow::new(1, request),
            1024,
        );
        // Whole milliseconds: serde_json reads some floats back a bit off.
        record.started_at = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        record.response = Some(RecordedResponse {
            status: 201,
            reason: "Created".into(),
            version: "HTTP/1.1".into(),
            headers: crate::http::message::Headers::new(),
            body: crate::capture::RecordedBody::default(),
        });
        let state = FlowState {
            pending: true,
            intercepted: Some(Phase::Response),
        };
        // Two rows, one of them matching, as a source writes them.
        let store = MemoryStore::new(10, 1 << 20);
        let mut rows = Vec::new();
        for (id, matches) in [(3, false), (4, true)] {
            if !rows.is_empty() {
                rows.push(b',');
            }
            let row = SummaryRow(SummaryOf {
                id,
                record: &record,
                state,
                matches,
            });
            serde_json::to_writer(&mut rows, &row).unwrap();
        }
        let text = flows_message(&rows, 2).unwrap();
        // What serde writes of the same message.
        let rows = [(3, false), (4, true)].map(|(id, matches)| {
            SummaryRow(SummaryOf {
                id,
                record: &record,
                state,
                matches,
            })
        });
        let sent = LiveMessage::Flows {
            columns: LIVE_COLUMNS.iter().map(|c| c.to_string()).collect(),
            rows: rows.into(),
            count: 2,
        };
        assert_eq!(text, serde_json::to_string(&sent).unwrap());
        let read: LiveMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(
            read.named_rows().unwrap(),
            [(3, false), (4, true)].map(|(id, matches)| LiveRow {
                summary: FlowSummary::of(id, &record, state),
                matches,
            })
        );
        // Read as values, it writes the same bytes again.
        assert_eq!(serde_json::to_string(&read).unwrap(), text);
        // A flow the source does not have writes nothing.
        let mut out = Vec::new();
        assert!(!store.write_row(99, None, &mut out));
        assert!(out.is_empty());
    }
}
