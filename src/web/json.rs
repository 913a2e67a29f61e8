//! What the web UI's API takes and returns, as types: the JSON of its answers, request
//! bodies and live socket, and its query strings. Each is `Serialize` and
//! `Deserialize`, so a Rust client can read what the UI answers (and build what it
//! asks) with `serde_json`; the bytes on the wire are those the page reads. Times and
//! durations are milliseconds, as `f64` (`serde_json` reads some back a unit in the
//! last place off, unless its `float_roundtrip` feature is on).
//!
//! # Endpoints
//!
//! Every request needs the UI's token and passes its checks first (see
//! [the module's safety notes](super#safety)): without them the answer is
//! `403 Forbidden` with a line of text. A failed call answers an [`ApiError`] with the
//! status given; `{id}` is a flow's [`FlowSummary::id`].
//!
//! | method | path | query | request body | answer |
//! | --- | --- | --- | --- | --- |
//! | `GET` | `/` | | | the page (HTML); it loads `/app.css` and its modules from `/js/` |
//! | `GET` | `/ca.pem` | | | the proxy's CA certificate, PEM; `404` when the UI has none |
//! | `GET` | `/api/flows` | [`ListParams`] | | [`FlowPage`]; `400` for a bad filter (with its `position`) |
//! | `GET` | `/api/flows/{id}` | | | [`FlowDetail`]; `404` |
//! | `GET` | `/api/flows/{id}/request/body`, `/api/flows/{id}/response/body` | [`BodyParams`] | | the body's bytes (decoded unless `raw`): images as themselves, anything else as `application/octet-stream`; `404` |
//! | `POST` | `/api/clear` | | | `204 No Content` |
//! | `GET` | `/api/intercept` | | | [`InterceptState`] |
//! | `POST` | `/api/intercept` | | [`SetFilter`] | [`InterceptState`]; `400` for a bad filter (with its `position`) |
//! | `POST` | `/api/flows/{id}/resume` | | [`Edit`], or empty for none | `204`; `400` for a bad edit, `404`, `409` when the flow is not waiting |
//! | `POST` | `/api/flows/{id}/kill` | | | `204`; `409` when the flow is not waiting |
//! | `POST` | `/api/flows/{id}/replay` | | [`Edit`], or empty for none | [`Replayed`] (the new flow is in the list); `400`, `404`, `501` when the UI has no [`Replayer`](super::Replayer), `500` when its [`FlowSource`](super::FlowSource) could not keep the new flow |
//! | `GET` | `/api/export` | [`ExportParams`] | | the flows matching as a capture file (`Content-Disposition: attachment`); `400`, `500` |
//! | `GET`, WebSocket | `/api/live` | | [`SetFilter`] messages | [`LiveMessage`]s |
//!
//! ```
//! use mitm::web::json::{FlowPage, LiveMessage};
//!
//! let page: FlowPage = serde_json::from_str(r#"{"flows":[],"more":false,"count":0}"#)?;
//! assert!(page.flows.is_empty());
//! let batch: LiveMessage = serde_json::from_str(
//!     r#"{"type":"flows","columns":["id","matches"],"rows":[[1,true]],"count":1}"#,
//! )?;
//! assert!(matches!(batch, LiveMessage::Flows { count: 1, .. }));
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::capture::RecordedTimings;

/// One row of the flow list: what the list shows of a flow. A page of them is a
/// [`FlowPage`]; the live socket sends them as arrays ([`LiveMessage::Flows`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FlowSummary {
    /// The flow's id in its store.
    pub id: u64,
    /// When the request started, in milliseconds since the Unix epoch.
    pub time: f64,
    /// The method.
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The origin's host.
    pub host: String,
    /// The origin's port.
    pub port: u16,
    /// Path and query.
    pub path: String,
    /// The response's status, once there is one.
    pub status: Option<u16>,
    /// The response's `Content-Type` without parameters, or empty.
    pub content_type: String,
    /// Bytes of the response body on the wire (0 without a response).
    pub size: u64,
    /// From the start to the end of the response, in milliseconds, once known.
    pub duration: Option<f64>,
    /// Whether the flow is still going (no `flow_finished` yet).
    pub pending: bool,
    /// Where the flow waits for the user, when it was intercepted.
    pub intercepted: Option<Phase>,
    /// Whether the flow failed (see the detail for why).
    pub error: bool,
    /// Whether the flow became a WebSocket.
    pub websocket: bool,
    /// The flow's mark (mitmproxy's `marked`), empty when not marked.
    #[serde(default)]
    pub marked: String,
    /// The flow's comment, empty for none.
    #[serde(default)]
    pub comment: String,
}

/// Where an intercepted flow waits: `"request"` or `"response"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Phase {
    /// Before its request goes upstream.
    Request,
    /// Before its response goes back to the client.
    Response,
}

/// One page of the flow list (`GET /api/flows`), oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FlowPage {
    /// The rows, in id order.
    pub flows: Vec<FlowSummary>,
    /// Whether more flows match beyond this page, in the direction paged.
    pub more: bool,
    /// Flows in the source, matching or not.
    pub count: usize,
}

/// The query of `GET /api/flows`: which flows, as [`ListQuery`](super::ListQuery) says.
/// Only `after` pages forwards (the oldest first); otherwise the newest come.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ListParams {
    /// Only flows matching this filter expression (mitmproxy's language); empty for all.
    pub filter: Option<String>,
    /// Only flows with a larger id.
    pub after: Option<u64>,
    /// Only flows with a smaller id.
    pub before: Option<u64>,
    /// At most this many; 0 or left out for the most a page has
    /// ([`MAX_PAGE`](super::MAX_PAGE)).
    #[serde(default)]
    pub limit: usize,
}

/// One flow in detail (`GET /api/flows/{id}`): both heads, what is known of the
/// bodies (their bytes are fetched on their own), timings, TLS, the error, and a
/// WebSocket's messages.
///
/// On the wire its objects' keys come in alphabetical order, at every depth (see
/// [`summary`](Self::summary)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FlowDetail {
    /// The flow's row, as the list has it. Its keys come in alphabetical order, not in
    /// the order of a live row's columns: the page, which compares the two to know
    /// whether to redraw the detail, redraws it at each change of the flow (which is
    /// how a WebSocket's new messages show).
    pub summary: FlowSummary,
    /// The request's URL: `scheme://host[:port]path`; a `CONNECT`'s is the authority
    /// it asked for, `host:port`.
    pub url: String,
    /// The client's address, when known.
    pub client: Option<String>,
    /// The address of the server that answered, when one did.
    pub server: Option<String>,
    /// Whether the client spoke TLS with the proxy.
    pub client_tls: bool,
    /// What the client's TLS with the proxy settled.
    pub tls: TlsDetail,
    /// The request, as it went to the origin.
    pub request: RequestDetail,
    /// The response, as it went to the client, once there is one.
    pub response: Option<ResponseDetail>,
    /// When each later point was reached.
    pub timings: TimingsDetail,
    /// What went wrong, when the flow failed.
    pub error: Option<String>,
    /// A WebSocket's messages so far, in order; `null` for other flows.
    pub websocket: Option<Vec<MessageDetail>>,
    /// The request as a `curl` command line.
    pub curl: String,
}

/// What the client's TLS with the proxy settled, each `null` when not known (or
/// without TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TlsDetail {
    /// The server name the client asked for (SNI).
    pub sni: Option<String>,
    /// The application protocol chosen (ALPN), e.g. `h2`.
    pub alpn: Option<String>,
    /// The TLS version, e.g. `TLSv1.3`.
    pub version: Option<String>,
}

/// A request's head, and what is known of its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RequestDetail {
    /// The method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The header fields in order, as `[name, value]`.
    pub headers: Vec<(String, String)>,
    /// The body's facts.
    pub body: BodyFacts,
}

/// A response's head, and what is known of its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResponseDetail {
    /// The status code.
    pub status: u16,
    /// The reason phrase (empty for HTTP/2).
    pub reason: String,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The header fields in order, as `[name, value]`.
    pub headers: Vec<(String, String)>,
    /// The body's facts.
    pub body: BodyFacts,
}

/// What the page needs to know of a body before it fetches its bytes
/// (`GET /api/flows/{id}/{side}/body`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BodyFacts {
    /// Bytes the body had on the wire.
    pub size: u64,
    /// Bytes of it the UI kept.
    pub kept: u64,
    /// Whether the UI kept less than the whole body.
    pub truncated: bool,
    /// Its `Content-Encoding`, or empty.
    pub encoding: String,
    /// Its `Content-Type` as sent, or empty.
    pub content_type: String,
    /// Bytes the kept body decodes to; there only for an encoded body that decodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoded: Option<u64>,
    /// Why the kept body does not decode (it is served as it came); there only then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_error: Option<String>,
}

/// Milliseconds from the start of a flow to each later point, `null` until reached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TimingsDetail {
    /// The request (with its body) was sent on.
    pub request_end: Option<f64>,
    /// The first byte of the response arrived.
    pub response_first_byte: Option<f64>,
    /// The response (with its body) was passed to the client.
    pub response_end: Option<f64>,
}

/// One WebSocket message of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MessageDetail {
    /// Sent by the client (else by the server).
    pub from_client: bool,
    /// A text message (else binary).
    pub text: bool,
    /// When the proxy passed it on, in milliseconds since the Unix epoch.
    pub at: f64,
    /// Bytes of payload the UI kept.
    pub size: u64,
    /// The payload: a text message as it is; a binary one as hex (`"00 ff "`), its
    /// first 4 KiB, with `…` after when there is more.
    pub data: String,
}

/// The query of `GET /api/flows/{id}/{side}/body`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BodyParams {
    /// `1` or `true`: the bytes as they went over the wire, not decoded from their
    /// `Content-Encoding`.
    pub raw: Option<String>,
}

/// A filter to set: the body of `POST /api/intercept`, and what the page sends on the
/// live socket (only the flows matching it come, the others as not matching).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SetFilter {
    /// A filter expression (mitmproxy's language); empty, `null` or left out for
    /// none.
    pub filter: Option<String>,
}

/// The intercept filter and the flows waiting for the user (`GET /api/intercept`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InterceptState {
    /// The filter the flows that wait matched, `null` for none.
    pub filter: Option<String>,
    /// The ids of the flows waiting, in order.
    pub waiting: Vec<u64>,
}

/// Changes the user made to an intercepted message (`POST /api/flows/{id}/resume`), or
/// to a request to replay (`POST /api/flows/{id}/replay`). Every field is optional:
/// what is left out (or `null`) stays as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Edit {
    /// A request's new method.
    pub method: Option<String>,
    /// A request's new absolute URL (`http://host[:port]/path?query`).
    pub url: Option<String>,
    /// A response's new status code.
    pub status: Option<u16>,
    /// A response's new reason phrase.
    pub reason: Option<String>,
    /// The new header fields, in order, as `[name, value]`, replacing all of them.
    pub headers: Option<Vec<(String, String)>>,
    /// The new body, as text; encoded again by the message's `Content-Encoding`.
    pub body: Option<String>,
}

/// What a replay made (`POST /api/flows/{id}/replay`): a new flow, in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Replayed {
    /// The new flow's id.
    pub id: u64,
    /// Why the replay failed, when it did (the new flow says so too).
    pub error: Option<String>,
}

/// The query of `GET /api/export`: which flows, in which format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExportParams {
    /// `har` (left out: the default), `flows` (mitmproxy's) or `sqlite`.
    pub format: Option<String>,
    /// Only flows matching this filter expression; empty for all.
    pub filter: Option<String>,
}

/// A failed call's answer: why, and for a bad filter expression, where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApiError {
    /// What went wrong, in a sentence.
    pub error: String,
    /// For a bad filter: the (character) position in it where it goes wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
}

impl ApiError {
    /// An error that says `error`.
    pub fn new(error: impl Into<String>) -> Self {
        ApiError {
            error: error.into(),
            position: None,
        }
    }
}

/// The names of the values of a live row, in order: the fields of a [`FlowSummary`],
/// then `matches`. Each [`LiveMessage::Flows`] names its rows' values itself too.
pub const LIVE_COLUMNS: [&str; 18] = [
    "id",
    "time",
    "method",
    "scheme",
    "host",
    "port",
    "path",
    "status",
    "content_type",
    "size",
    "duration",
    "pending",
    "intercepted",
    "error",
    "websocket",
    "marked",
    "comment",
    "matches",
];

/// A message of the live socket (`/api/live`), tagged by its `"type"`: `flows`,
/// `clear`, `reload` or `filtererror`.
///
/// Changes come in batches, a few a second at most. A batch's rows are arrays of
/// values named once by its `columns` (not once a row: half the bytes, and less to
/// escape); `R` is how a row is read, a list of JSON values by default (name them with
/// [`named_rows`](LiveMessage::named_rows)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[non_exhaustive]
pub enum LiveMessage<R = Vec<Value>> {
    /// Flows added or changed since the last batch.
    Flows {
        /// The names of the values of each row, in order (see [`LIVE_COLUMNS`]).
        columns: Vec<String>,
        /// One row per flow: its [`FlowSummary`]'s values, and whether it matches the
        /// socket's filter (else the page drops it from its list).
        rows: Vec<R>,
        /// Flows in the source, matching or not.
        count: usize,
    },
    /// Every flow was removed.
    Clear,
    /// The socket fell behind: list the flows again.
    Reload,
    /// The filter the page sent is bad (the socket keeps the one it had).
    FilterError {
        /// What is wrong.
        error: String,
        /// The (character) position in the filter where it goes wrong.
        position: usize,
    },
}

/// A live row with its values named: the flow's summary, and whether it matches the
/// socket's filter. As JSON, the summary's fields and `matches`, in one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LiveRow {
    /// The flow's row.
    #[serde(flatten)]
    pub summary: FlowSummary,
    /// Whether it matches the socket's filter.
    pub matches: bool,
}

impl LiveMessage {
    /// The rows of a `flows` batch, each named by the batch's columns (no rows for the
    /// other messages).
    ///
    /// # Errors
    ///
    /// When a row does not make a [`LiveRow`]: a value is missing or of another type.
    pub fn named_rows(&self) -> Result<Vec<LiveRow>, serde_json::Error> {
        let LiveMessage::Flows { columns, rows, .. } = self else {
            return Ok(Vec::new());
        };
        rows.iter()
            .map(|row| {
                let named: serde_json::Map<String, Value> =
                    columns.iter().cloned().zip(row.iter().cloned()).collect();
                serde_json::from_value(Value::Object(named))
            })
            .collect()
    }
}

/// Where a stored flow is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlowState {
    /// Still going (no `flow_finished` yet).
    pub pending: bool,
    /// Waiting for the user, and where.
    pub intercepted: Option<Phase>,
}

impl FlowState {
    /// A flow that is over.
    pub const FINISHED: FlowState = FlowState {
        pending: false,
        intercepted: None,
    };
    /// A flow still going, not waiting for the user.
    pub const PENDING: FlowState = FlowState {
        pending: true,
        intercepted: None,
    };
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub(crate) fn millis_since_epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// From the start to the end of the response, in milliseconds, once known.
pub(crate) fn duration_ms(timings: &RecordedTimings) -> Option<f64> {
    timings.response_end.map(|d| d.as_secs_f64() * 1000.0)
}

/// A `Content-Type` value (`None`: none, or not UTF-8) without parameters, in lower
/// case, or empty.
pub(crate) fn media_type(value: Option<&str>) -> Cow<'_, str> {
    let Some(t) = value else {
        return Cow::Borrowed("");
    };
    let t = t.split(';').next().unwrap_or("").trim();
    if t.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(t.to_ascii_lowercase())
    } else {
        Cow::Borrowed(t)
    }
}

/// The values of a live row, borrowed from wherever the flow is kept (a [`Record`],
/// or a packed flow, `Packed::row`), written as the JSON array a live socket sends:
/// the values named by [`LIVE_COLUMNS`], in order.
pub(crate) struct RowValues<'a> {
    pub id: u64,
    pub time: f64,
    pub method: Cow<'a, str>,
    pub scheme: &'a str,
    pub host: Cow<'a, str>,
    pub port: u16,
    pub path: Cow<'a, str>,
    pub status: Option<u16>,
    pub content_type: Cow<'a, str>,
    pub size: u64,
    pub duration: Option<f64>,
    pub state: FlowState,
    pub error: bool,
    pub websocket: bool,
    pub marked: &'a str,
    pub comment: &'a str,
    pub matches: bool,
}

impl Serialize for RowValues<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut row = s.serialize_tuple(LIVE_COLUMNS.len())?;
        row.serialize_element(&self.id)?;
        row.serialize_element(&self.time)?;
        row.serialize_element(&self.method)?;
        row.serialize_element(self.scheme)?;
        row.serialize_element(&self.host)?;
        row.serialize_element(&self.port)?;
        row.serialize_element(&self.path)?;
        row.serialize_element(&self.status)?;
        row.serialize_element(&self.content_type)?;
        row.serialize_element(&self.size)?;
        row.serialize_element(&self.duration)?;
        row.serialize_element(&self.state.pending)?;
        row.serialize_element(&self.state.intercepted)?;
        row.serialize_element(&self.error)?;
        row.serialize_element(&self.websocket)?;
        row.serialize_element(self.marked)?;
        row.serialize_element(self.comment)?;
        row.serialize_element(&self.matches)?;
        row.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use std::fmt::Debug;

    /// `value` as JSON, read back: the same value, and the same JSON again.
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: T) -> String {
        let text = serde_json::to_string(&value).unwrap();
        let back: T =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text} does not read: {e}"));
        assert_eq!(back, value, "{text}");
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        text
    }

    fn summary() -> FlowSummary {
        FlowSummary {
            id: 7,
            time: 1_700_000_000_123.5,
            method: "POST".into(),
            scheme: "https".into(),
            host: "a.localhost".into(),
            port: 8443,
            path: "/x?q=1".into(),
            status: Some(404),
            content_type: "text/html".into(),
            size: 999,
            duration: Some(7.25),
            pending: false,
            intercepted: Some(Phase::Response),
            error: true,
            websocket: false,
            marked: ":star:".into(),
            comment: "seen".into(),
        }
    }

    fn body() -> BodyFacts {
        BodyFacts {
            size: 999,
            kept: 28,
            truncated: true,
            encoding: "gzip".into(),
            content_type: "text/html".into(),
            decoded: Some(11),
            decode_error: None,
        }
    }

    #[test]
    fn every_type_reads_back_what_it_writes() {
        round_trip(summary());
        round_trip(Phase::Request);
        round_trip(FlowPage {
            flows: vec![summary()],
            more: true,
            count: 3,
        });
        round_trip(ListParams {
            filter: Some("~m POST".into()),
            after: Some(3),
            before: None,
            limit: 10,
        });
        round_trip(FlowDetail {
            summary: summary(),
            url: "https://a.localhost:8443/x?q=1".into(),
            client: Some("127.0.0.1:5555".into()),
            server: None,
            client_tls: true,
            tls: TlsDetail {
                sni: Some("a.localhost".into()),
                alpn: Some("h2".into()),
                version: None,
            },
            request: RequestDetail {
                method: "POST".into(),
                path: "/x?q=1".into(),
                version: "HTTP/1.1".into(),
                headers: vec![("Host".into(), "a.localhost".into())],
                body: BodyFacts::default(),
            },
            response: Some(ResponseDetail {
                status: 404,
                reason: "Not Found".into(),
                version: "HTTP/1.1".into(),
                headers: vec![],
                body: body(),
            }),
            timings: TimingsDetail {
                request_end: Some(0.3),
                response_first_byte: None,
                response_end: Some(7.0),
            },
            error: Some("boom".into()),
            websocket: Some(vec![MessageDetail {
                from_client: true,
                text: false,
                at: 1234.5,
                size: 2,
                data: "00 ff ".into(),
            }]),
            curl: "curl 'https://a.localhost:8443/x?q=1'".into(),
        });
        round_trip(BodyFacts {
            decoded: None,
            decode_error: Some("invalid br data".into()),
            ..body()
        });
        round_trip(BodyParams {
            raw: Some("1".into()),
        });
        round_trip(SetFilter {
            filter: Some("~u /echo".into()),
        });
        round_trip(InterceptState {
            filter: None,
            waiting: vec![3, 5],
        });
        round_trip(Edit {
            method: Some("PUT".into()),
            headers: Some(vec![("X-Edited".into(), "yes".into())]),
            body: Some("edited".into()),
            ..Edit::default()
        });
        round_trip(Replayed {
            id: 9,
            error: Some("connection refused".into()),
        });
        round_trip(ExportParams {
            format: Some("sqlite".into()),
            filter: None,
        });
        round_trip(ApiError {
            error: "unknown operator ~x".into(),
            position: Some(9),
        });
        round_trip(LiveRow {
            summary: summary(),
            matches: true,
        });
        round_trip::<LiveMessage>(LiveMessage::Clear);
        round_trip::<LiveMessage>(LiveMessage::Reload);
        round_trip::<LiveMessage>(LiveMessage::FilterError {
            error: "unknown operator ~x".into(),
            position: 3,
        });
    }

    #[test]
    fn the_json_is_what_the_page_reads() {
        assert_eq!(
            round_trip(ApiError::new("no flow 3")),
            r#"{"error":"no flow 3"}"#
        );
        assert_eq!(
            round_trip(BodyFacts::default()),
            r#"{"size":0,"kept":0,"truncated":false,"encoding":"","content_type":""}"#
        );
        assert_eq!(round_trip(Phase::Response), r#""response""#);
        assert_eq!(
            round_trip::<LiveMessage>(LiveMessage::Reload),
            r#"{"type":"reload"}"#
        );
        assert_eq!(
            round_trip::<LiveMessage>(LiveMessage::FilterError {
                error: "bad".into(),
                position: 1
            }),
            r#"{"type":"filtererror","error":"bad","position":1}"#
        );
        // Nothing, or `null`, for every field left as it was.
        let edit: Edit = serde_json::from_str(r#"{"status":418,"body":null}"#).unwrap();
        assert_eq!((edit.status, edit.body), (Some(418), None));
        let none: SetFilter = serde_json::from_str("{}").unwrap();
        assert_eq!(none.filter, None);
    }

    #[test]
    fn a_live_batch_names_its_rows_by_its_columns() {
        let row = LiveRow {
            summary: summary(),
            matches: false,
        };
        let named = serde_json::to_value(&row).unwrap();
        let values: Vec<Value> = LIVE_COLUMNS.iter().map(|c| named[c].clone()).collect();
        let batch: LiveMessage = LiveMessage::Flows {
            columns: LIVE_COLUMNS.iter().map(|c| c.to_string()).collect(),
            rows: vec![values],
            count: 12,
        };
        let text = round_trip(batch.clone());
        assert!(
            text.starts_with(r#"{"type":"flows","columns":["id","time","#),
            "{text}"
        );
        assert_eq!(batch.named_rows().unwrap(), [row]);
        // In another order, or with a column more, the names still say which is which.
        let reordered: LiveMessage = serde_json::from_str(
            r#"{"type":"flows","columns":["matches","new","id","time","method","scheme","host",
                "port","path","status","content_type","size","duration","pending",
                "intercepted","error","websocket"],
                "rows":[[true,1,7,1.0,"GET","http","h",80,"/",null,"",0,null,true,null,false,false]],
                "count":1}"#,
        )
        .unwrap();
        let rows = reordered.named_rows().unwrap();
        assert_eq!((rows[0].summary.id, rows[0].matches), (7, true));
        assert!(LiveMessage::Clear.named_rows().unwrap().is_empty());
    }
}
