//! Server replay: requests that match a recorded one are answered with its recorded
//! response, without contacting the origin.
//!
//! A request matches a record with the same method, scheme, host, port, path with
//! query, and body. Several recordings of one request are served in the order they
//! were recorded, each once; after that (and for requests never recorded) the
//! [`Unmatched`] policy decides: forward to the origin, or answer `404`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Record, RecordedRequest};
use crate::core::Connection;
use crate::http::message::{Body, HttpFlow, Response, Verdict, Version};
use crate::middleware::HttpHandler;

/// The most bytes of a request body compared when matching; requests whose bodies are
/// larger stream past and never match a recording with a body.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Header fields of a recorded response not served again: the framing is the
/// proxy's to set for the body it sends.
const NOT_REPLAYED: &[&str] = &["content-length", "transfer-encoding", "connection"];

/// What requests that match no recording get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Unmatched {
    /// They go on to their origins, as without replay.
    #[default]
    Forward,
    /// They get a `404` made by the proxy, and no origin is contacted.
    NotFound,
}

/// What identifies a request for replay.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    method: String,
    scheme: &'static str,
    host: String,
    port: u16,
    path: String,
    body: Bytes,
}

impl Key {
    fn of_record(r: &RecordedRequest) -> Self {
        Key {
            method: r.method.to_ascii_uppercase(),
            scheme: if r.scheme == "https" { "https" } else { "http" },
            host: r.host.to_ascii_lowercase(),
            port: r.port,
            path: r.path.clone(),
            // Its own copy: a record's body may be a slice of a larger buffer (a
            // flow file's whole flow), which the index must not keep alive.
            body: Bytes::copy_from_slice(&r.body.data),
        }
    }
}

/// The server-replay middleware, built from recorded flows.
///
/// ```
/// use mitm::capture::server_replay::{ServerReplay, Unmatched};
/// // Flows read one at a time with mitm::capture::open(path), or made by a program.
/// let replay = ServerReplay::new(Vec::new(), Unmatched::NotFound);
/// assert_eq!(replay.len(), 0);
/// ```
#[derive(Debug)]
pub struct ServerReplay {
    responses: Mutex<HashMap<Key, VecDeque<Response>>>,
    unmatched: Unmatched,
}

impl ServerReplay {
    /// Replays the responses of `records` (those without one, or whose response body
    /// the capture kept only in part, are left out), answering the rest as
    /// `unmatched` says. Records are taken one at a time and only what answers a
    /// request is kept of each (its key and response), so `records` may be a file
    /// read as it goes ([`capture::open`](super::open)).
    pub fn new(records: impl IntoIterator<Item = Record>, unmatched: Unmatched) -> Self {
        let mut responses: HashMap<Key, VecDeque<Response>> = HashMap::new();
        for record in records {
            let Some(recorded) = &record.response else {
                continue;
            };
            // A tunnel's answer is no response to replay.
            if record.request.is_connect() {
                continue;
            }
            if recorded.body.truncated || record.request.body.truncated {
                continue;
            }
            let mut response = Response::new(recorded.status);
            response.reason.clone_from(&recorded.reason);
            response.version = Version::Http11;
            for (name, value) in recorded.headers.iter() {
                if !NOT_REPLAYED.iter().any(|n| name.eq_ignore_ascii_case(n)) {
                    response.headers.insert(
                        Bytes::copy_from_slice(name.as_bytes()),
                        Bytes::copy_from_slice(value),
                    );
                }
            }
            // As the key's body: a copy of its own, not a slice of the record's buffer.
            response.body = Body::Full(Bytes::copy_from_slice(&recorded.body.data));
            responses
                .entry(Key::of_record(&record.request))
                // Most requests are recorded once: no room for three more (an empty
                // `VecDeque`'s first push makes room for four).
                .or_insert_with(|| VecDeque::with_capacity(1))
                .push_back(response);
        }
        ServerReplay {
            responses: Mutex::new(responses),
            unmatched,
        }
    }

    /// How many recorded responses are left to serve.
    pub fn len(&self) -> usize {
        self.lock().values().map(VecDeque::len).sum()
    }

    /// Whether every recorded response has been served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VecDeque<Response>>> {
        self.responses.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next recorded response for `flow`'s request, taken.
    fn take(&self, flow: &HttpFlow) -> Option<Response> {
        let request = &flow.request;
        let body = match &request.body {
            Body::Empty => Bytes::new(),
            Body::Full(data) => data.clone(),
            Body::Streaming => return None,
        };
        let key = Key {
            method: request.method.to_ascii_uppercase(),
            scheme: if request.target.tls { "https" } else { "http" },
            host: request.target.host.to_ascii_lowercase(),
            port: request.target.port,
            path: request.path.clone(),
            body,
        };
        self.lock().get_mut(&key)?.pop_front()
    }
}

#[async_trait]
impl HttpHandler for ServerReplay {
    async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if flow.request.is_connect() {
            return Verdict::Continue;
        }
        if let Some(response) = self.take(flow) {
            flow.is_replay = Some(crate::http::message::Replay::Response);
            return Verdict::Respond(response);
        }
        match self.unmatched {
            Unmatched::Forward => Verdict::Continue,
            Unmatched::NotFound => Verdict::Respond(Response::new(404).with_body(
                "text/plain; charset=utf-8",
                "mitm is replaying recorded responses, and this request matches none left.\n",
            )),
        }
    }

    fn body_limit(&self) -> usize {
        BODY_LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Host, Target};
    use crate::http::message::Request;

    fn flow(method: &str, path: &str, body: &'static [u8], status: u16) -> HttpFlow {
        let mut request = Request::new_to(
            method.into(),
            Target::new("api.localhost", 8080, false),
            path.into(),
        );
        if !body.is_empty() {
            request.body = Body::Full(Bytes::from_static(body));
        }
        let mut f = HttpFlow::new(1, request);
        f.response = Some(Response::new(status).with_body("text/plain", format!("{status}")));
        f.response_body_size = 3;
        f.request_body_size = body.len() as u64;
        f
    }

    fn record(f: &HttpFlow) -> Record {
        Record::from_flow(&Connection::new(1, Host::default()), f, 1 << 20)
    }

    async fn verdict(replay: &ServerReplay, mut f: HttpFlow) -> Option<u16> {
        f.response = None;
        let conn = Connection::new(1, Host::default());
        match replay.request(&conn, &mut f).await {
            Verdict::Respond(r) => Some(r.status),
            _ => None,
        }
    }

    #[tokio::test]
    async fn recordings_are_served_in_order_then_the_policy_decides() {
        let records = [
            record(&flow("GET", "/a?x=1", b"", 200)),
            record(&flow("GET", "/a?x=1", b"", 201)),
            record(&flow("POST", "/a?x=1", b"one", 202)),
        ];
        let replay = ServerReplay::new(records.clone(), Unmatched::Forward);
        assert_eq!(replay.len(), 3);
        assert_eq!(
            verdict(&replay, flow("GET", "/a?x=1", b"", 0)).await,
            Some(200)
        );
        assert_eq!(
            verdict(&replay, flow("GET", "/a?x=1", b"", 0)).await,
            Some(201)
        );
        // Served once each: then forwarded.
        assert_eq!(verdict(&replay, flow("GET", "/a?x=1", b"", 0)).await, None);
        // The body and the query are part of the match.
        assert_eq!(
            verdict(&replay, flow("POST", "/a?x=1", b"two", 0)).await,
            None
        );
        assert_eq!(
            verdict(&replay, flow("POST", "/a?x=2", b"one", 0)).await,
            None
        );
        assert_eq!(
            verdict(&replay, flow("POST", "/a?x=1", b"one", 0)).await,
            Some(202)
        );
        assert!(replay.is_empty());

        let strict = ServerReplay::new(records, Unmatched::NotFound);
        assert_eq!(verdict(&strict, flow("GET", "/b", b"", 0)).await, Some(404));
    }
}
