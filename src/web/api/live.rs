//! The live socket (`/api/live`): the changes of the UI's flows, batched, each flow
//! marked as matching the page's filter or not.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use serde::Serialize;

use super::{parse_filter, App, Shared};
use crate::capture::{Filter, Record};
use crate::web::json::{LiveMessage, SetFilter, LIVE_COLUMNS};
use crate::web::store::{FlowState, SummaryOf, SummaryRow};

/// How long a live socket gathers changes before it sends them as one message: a
/// flood of flows becomes a few messages a second, not one per flow.
const BATCH: Duration = Duration::from_millis(150);
/// Most flows one live message carries; more make another message at once.
const BATCH_MAX: usize = 5_000;

pub(super) async fn live(State(app): Shared, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| live_socket(app, socket))
}

/// A flow's row in a batch, as it is stored: written as its [`SummaryRow`] (the
/// values of its summary, with no copies of them, and whether it matches the socket's
/// filter).
#[derive(Debug)]
struct Row {
    id: u64,
    record: Arc<Record>,
    state: FlowState,
    matches: bool,
}

impl Serialize for Row {
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
        for chunk in batch.flows.chunks(BATCH_MAX) {
            let rows = chunk
                .iter()
                .filter_map(|&id| {
                    let (record, state) = app.source.get(id)?;
                    Some(Row {
                        matches: filter.as_ref().is_none_or(|f| f.matches(record.as_ref())),
                        id,
                        record,
                        state,
                    })
                })
                .collect();
            events.push(LiveMessage::Flows {
                columns: LIVE_COLUMNS.iter().map(|c| c.to_string()).collect(),
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

async fn send(socket: &mut WebSocket, event: &LiveMessage<Row>) -> Result<(), axum::Error> {
    let text = serde_json::to_string(event).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::RecordedResponse;
    use crate::core::{Connection, Host, Target};
    use crate::http::message::{HttpFlow, Request};
    use crate::web::json::{FlowSummary, LiveRow, Phase};

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
        let sent = LiveMessage::Flows {
            columns: LIVE_COLUMNS.iter().map(|c| c.to_string()).collect(),
            rows: vec![Row {
                id: 3,
                record: Arc::new(record.clone()),
                state,
                matches: false,
            }],
            count: 1,
        };
        let text = serde_json::to_string(&sent).unwrap();
        let read: LiveMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(
            read.named_rows().unwrap(),
            [LiveRow {
                summary: FlowSummary::of(3, &record, state),
                matches: false,
            }]
        );
        // Read as values, it writes the same bytes again.
        assert_eq!(serde_json::to_string(&read).unwrap(), text);
    }
}
