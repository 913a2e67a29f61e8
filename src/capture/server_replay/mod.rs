//! Server replay: requests that match a recorded one are answered with its recorded
//! response, without contacting the origin; mitmproxy's `server_replay` and its
//! options.
//!
//! A request matches a record with the same method, scheme, host, port, path, query
//! (its `name=value` pairs decoded, in order) and body; [`ServerReplayOptions`] leaves
//! parts of that out (query parameters, the body or some of its form fields, the
//! host, the port) or adds request headers to it, as mitmproxy's options of the same
//! names do. Several recordings of one request are served in the order they were
//! recorded, each once (or the first again and again, with
//! [`reuse`](ServerReplayOptions::reuse)); after that, and for requests never
//! recorded, the [`Unmatched`] policy decides: forward to the origin, close the
//! connection, or answer a status.
//!
//! ```
//! use mitm::capture::server_replay::{ServerReplay, ServerReplayOptions, Unmatched};
//! let options = ServerReplayOptions::new()
//!     .extra(Unmatched::Status(404))
//!     .reuse(true)
//!     .ignore_params(["timestamp", "nonce"])
//!     .use_headers(["accept-language"]);
//! // Records read one at a time with mitm::capture::open(path), or made by a program.
//! let replay = ServerReplay::new(Vec::new(), options).unwrap();
//! assert_eq!(replay.len(), 0);
//! // The middleware goes on a proxy as an HTTP handler:
//! // MitmBuilder::new().http_handler(std::sync::Arc::new(replay))
//! ```

mod key;
mod refresh;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Record, RecordedRequest};
use crate::core::Connection;
use crate::http::message::{Body, HttpFlow, Replay, Response, Verdict, Version};
use crate::middleware::HttpHandler;
use key::{Key, Parts};

/// The most bytes of a request body compared when matching; requests whose bodies are
/// larger stream past and never match a recording with a body.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Header fields of a recorded response not served again: the framing is the
/// proxy's to set for the body it sends.
const NOT_REPLAYED: &[&str] = &["content-length", "transfer-encoding", "connection"];

/// What requests that match no recording get (mitmproxy's `server_replay_extra`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Unmatched {
    /// They go on to their origins, as without replay (`forward`).
    #[default]
    Forward,
    /// The client connection is closed without an answer (`kill`; on HTTP/2, as the
    /// proxy's [`Verdict::Kill`] does there).
    Kill,
    /// They get this status with an empty body, made by the proxy, and no origin is
    /// contacted (`204`, `400`, `404`, `500` in mitmproxy; any status from 200 to
    /// 599 here).
    Status(u16),
}

impl Unmatched {
    /// The status codes an [`Unmatched::Status`] may carry.
    pub const STATUSES: std::ops::RangeInclusive<u16> = 200..=599;
}

impl fmt::Display for Unmatched {
    /// mitmproxy's word for it: `forward`, `kill`, or the status.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmatched::Forward => f.write_str("forward"),
            Unmatched::Kill => f.write_str("kill"),
            Unmatched::Status(code) => write!(f, "{code}"),
        }
    }
}

impl FromStr for Unmatched {
    type Err = ServerReplayError;

    /// mitmproxy's values of `server_replay_extra`: `forward`, `kill`, or a status
    /// (any from 200 to 599, where mitmproxy takes `204`, `400`, `404` and `500`).
    ///
    /// ```
    /// use mitm::capture::server_replay::Unmatched;
    /// assert_eq!("kill".parse::<Unmatched>().unwrap(), Unmatched::Kill);
    /// assert_eq!("404".parse::<Unmatched>().unwrap(), Unmatched::Status(404));
    /// assert!("101".parse::<Unmatched>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Self, ServerReplayError> {
        let unmatched = match text.trim() {
            t if t.eq_ignore_ascii_case("forward") => Unmatched::Forward,
            t if t.eq_ignore_ascii_case("kill") => Unmatched::Kill,
            t => match t.parse::<u16>() {
                Ok(code) => Unmatched::Status(code),
                Err(_) => return Err(ServerReplayError::Extra(text.to_string())),
            },
        };
        unmatched.check()?;
        Ok(unmatched)
    }
}

impl Unmatched {
    fn check(self) -> Result<Self, ServerReplayError> {
        match self {
            Unmatched::Status(code) if !Self::STATUSES.contains(&code) => {
                Err(ServerReplayError::Status(code))
            }
            _ => Ok(self),
        }
    }
}

/// A server replay setting that cannot be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerReplayError {
    /// `server_replay_extra` is none of `forward`, `kill` or a status.
    #[error("server replay: {0:?} is not what to do with unmatched requests (forward, kill, or a status such as 404)")]
    Extra(String),
    /// A status outside 200 to 599 to answer unmatched requests with.
    #[error("server replay: {0} is no status to answer unmatched requests with (200 to 599)")]
    Status(u16),
}

/// How a [`ServerReplay`] matches requests and what it does with those it cannot
/// answer: mitmproxy's `server_replay_*` options. The default matches every part of a
/// request, serves each recording once with its dates refreshed, and forwards the
/// rest, as mitmproxy's defaults do.
///
/// ```
/// use mitm::capture::server_replay::{ServerReplayOptions, Unmatched};
/// // mitmdump -S recorded.flows --set server_replay_extra=kill \
/// //   --set server_replay_ignore_host=true --set server_replay_ignore_params=t
/// let options = ServerReplayOptions::new()
///     .extra(Unmatched::Kill)
///     .ignore_host(true)
///     .ignore_params(["t"]);
/// assert_eq!(options.unmatched(), Unmatched::Kill);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReplayOptions {
    extra: Unmatched,
    reuse: bool,
    refresh: bool,
    ignore_content: bool,
    ignore_host: bool,
    ignore_port: bool,
    ignore_params: Vec<String>,
    ignore_payload_params: Vec<String>,
    use_headers: Vec<String>,
}

impl Default for ServerReplayOptions {
    fn default() -> Self {
        ServerReplayOptions {
            extra: Unmatched::Forward,
            reuse: false,
            refresh: true,
            ignore_content: false,
            ignore_host: false,
            ignore_port: false,
            ignore_params: Vec::new(),
            ignore_payload_params: Vec::new(),
            use_headers: Vec::new(),
        }
    }
}

impl ServerReplayOptions {
    /// mitmproxy's defaults: every part matched, each recording served once and
    /// refreshed, the rest forwarded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Refresh replayed responses (`server_replay_refresh`): their `Date`, `Expires`
    /// and `Last-Modified` fields and their cookies' `Expires` moved forward by the
    /// time since the response was recorded (dates that cannot be read are left as
    /// they are). Default: on, as in mitmproxy.
    pub fn refresh(mut self, refresh: bool) -> Self {
        self.refresh = refresh;
        self
    }

    /// What requests with no recording (left) get (`server_replay_extra`). Default:
    /// [`Unmatched::Forward`].
    pub fn extra(mut self, extra: Unmatched) -> Self {
        self.extra = extra;
        self
    }

    /// The [`extra`](Self::extra) policy.
    pub fn unmatched(&self) -> Unmatched {
        self.extra
    }

    /// Keep every recording to serve again (`server_replay_reuse`, formerly
    /// `server_replay_nopop`): a request is answered with the first recording that
    /// matches it, every time. Default: off (each recording is served once, in order).
    pub fn reuse(mut self, reuse: bool) -> Self {
        self.reuse = reuse;
        self
    }

    /// Leave the body out of the match (`server_replay_ignore_content`). Default: off.
    pub fn ignore_content(mut self, ignore: bool) -> Self {
        self.ignore_content = ignore;
        self
    }

    /// Leave the host out of the match (`server_replay_ignore_host`): a recording
    /// answers the same request to any host. Default: off.
    pub fn ignore_host(mut self, ignore: bool) -> Self {
        self.ignore_host = ignore;
        self
    }

    /// Leave the port out of the match (`server_replay_ignore_port`). Default: off.
    pub fn ignore_port(mut self, ignore: bool) -> Self {
        self.ignore_port = ignore;
        self
    }

    /// Query parameters left out of the match, by name as decoded
    /// (`server_replay_ignore_params`): `/a?x=1&t=5` matches `/a?x=1&t=9` and
    /// `/a?x=1` with `t` ignored. Default: none.
    pub fn ignore_params<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.ignore_params = names.into_iter().map(Into::into).collect();
        self
    }

    /// Form fields left out of the match (`server_replay_ignore_payload_params`): for a
    /// body of type `application/x-www-form-urlencoded` or `multipart/form-data`, the
    /// match compares its fields but these, instead of its bytes. Other bodies are
    /// compared whole. Default: none.
    pub fn ignore_payload_params<S: Into<String>>(
        mut self,
        names: impl IntoIterator<Item = S>,
    ) -> Self {
        self.ignore_payload_params = names.into_iter().map(Into::into).collect();
        self
    }

    /// Request headers that must match too, by name, case-insensitively
    /// (`server_replay_use_headers`): all values of a name joined, and a header absent
    /// from both sides matching. Default: none.
    pub fn use_headers<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.use_headers = names.into_iter().map(Into::into).collect();
        self
    }
}

/// The server-replay middleware, built from recorded flows (see the
/// [module](self) for an example).
#[derive(Debug)]
pub struct ServerReplay {
    responses: Mutex<HashMap<Key, VecDeque<Recorded>>>,
    options: ServerReplayOptions,
}

/// A response to serve, and when it was recorded (for its refresh).
#[derive(Debug, Clone)]
struct Recorded {
    response: Response,
    at: SystemTime,
}

impl ServerReplay {
    /// Replays the responses of `records` (those without one, or whose response body
    /// the capture kept only in part, are left out), matching and answering as
    /// `options` say. Records are taken one at a time and only what answers a
    /// request is kept of each (its key and response), so `records` may be a file
    /// read as it goes ([`capture::open`](super::open)). Fails only on a status
    /// outside 200 to 599 in [`Unmatched::Status`].
    pub fn new(
        records: impl IntoIterator<Item = Record>,
        options: ServerReplayOptions,
    ) -> Result<Self, ServerReplayError> {
        options.extra.check()?;
        let mut responses: HashMap<Key, VecDeque<Recorded>> = HashMap::new();
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
                    // Appended: a name may come several times (`Set-Cookie`).
                    response.headers.append(
                        Bytes::copy_from_slice(name.as_bytes()),
                        Bytes::copy_from_slice(value),
                    );
                }
            }
            // As the key's body: a copy of its own, not a slice of the record's buffer.
            response.body = Body::Full(Bytes::copy_from_slice(&recorded.body.data));
            // mitmproxy's `timestamp_start` of the response: its first byte.
            let at = record.started_at + record.timings.response_first_byte.unwrap_or_default();
            responses
                .entry(key_of_record(&record.request, &options))
                // Most requests are recorded once: no room for three more (an empty
                // `VecDeque`'s first push makes room for four).
                .or_insert_with(|| VecDeque::with_capacity(1))
                .push_back(Recorded { response, at });
        }
        Ok(ServerReplay {
            responses: Mutex::new(responses),
            options,
        })
    }

    /// How many recorded responses are left to serve.
    pub fn len(&self) -> usize {
        self.lock().values().map(VecDeque::len).sum()
    }

    /// Whether every recorded response has been served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The options it matches and answers by.
    pub fn options(&self) -> &ServerReplayOptions {
        &self.options
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VecDeque<Recorded>>> {
        self.responses.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The response for `flow`'s request, refreshed unless the options say not to.
    fn answer(&self, flow: &HttpFlow) -> Option<Response> {
        let Recorded { mut response, at } = self.next(flow)?;
        if self.options.refresh {
            // Whole seconds, as dates have; a recording from the future moves back.
            let delta = match SystemTime::now().duration_since(at) {
                Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
                Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
            };
            refresh::refresh(&mut response.headers, delta);
        }
        Some(response)
    }

    /// The next recorded response for `flow`'s request: taken, or with
    /// [`reuse`](ServerReplayOptions::reuse) the first, copied.
    fn next(&self, flow: &HttpFlow) -> Option<Recorded> {
        let request = &flow.request;
        let body = match &request.body {
            Body::Empty => Bytes::new(),
            Body::Full(data) => data.clone(),
            Body::Streaming => return None,
        };
        let key = Key::new(
            Parts {
                method: &request.method,
                https: request.target.tls,
                host: &request.target.host,
                port: request.target.port,
                path: &request.path,
                headers: &request.headers,
                body,
            },
            &self.options,
        );
        let mut responses = self.lock();
        if self.options.reuse {
            return responses.get(&key)?.front().cloned();
        }
        let queue = responses.get_mut(&key)?;
        let response = queue.pop_front();
        if queue.is_empty() {
            responses.remove(&key);
        }
        response
    }
}

fn key_of_record(r: &RecordedRequest, options: &ServerReplayOptions) -> Key {
    Key::new(
        Parts {
            method: &r.method,
            https: r.scheme.eq_ignore_ascii_case("https"),
            host: &r.host,
            port: r.port,
            path: &r.path,
            headers: &r.headers,
            // Its own copy: a record's body may be a slice of a larger buffer (a flow
            // file's whole flow), which the index must not keep alive.
            body: Bytes::copy_from_slice(&r.body.data),
        },
        options,
    )
}

#[async_trait]
impl HttpHandler for ServerReplay {
    async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if flow.request.is_connect() {
            return Verdict::Continue;
        }
        if let Some(response) = self.answer(flow) {
            flow.is_replay = Some(Replay::Response);
            return Verdict::Respond(response);
        }
        match self.options.extra {
            Unmatched::Forward => Verdict::Continue,
            Unmatched::Kill => {
                tracing::warn!(
                    url = %flow.request.url(),
                    "server replay: no recording left for this request; connection closed (server_replay_extra=kill)"
                );
                Verdict::Kill
            }
            // mitmproxy marks these answers replayed responses too; they are the
            // proxy's own here, and left unmarked.
            Unmatched::Status(status) => {
                tracing::warn!(
                    url = %flow.request.url(),
                    status,
                    "server replay: no recording left for this request; answered with the status of server_replay_extra"
                );
                Verdict::Respond(Response::new(status))
            }
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

    fn flow_to(
        host: &str,
        port: u16,
        method: &str,
        path: &str,
        body: &'static [u8],
        status: u16,
    ) -> HttpFlow {
        let mut request =
            Request::new_to(method.into(), Target::new(host, port, false), path.into());
        if !body.is_empty() {
            request.body = Body::Full(Bytes::from_static(body));
        }
        let mut f = HttpFlow::new(1, request);
        f.response = Some(Response::new(status).with_body("text/plain", format!("{status}")));
        f.response_body_size = 3;
        f.request_body_size = body.len() as u64;
        f
    }

    fn flow(method: &str, path: &str, body: &'static [u8], status: u16) -> HttpFlow {
        flow_to("api.localhost", 8080, method, path, body, status)
    }

    fn record(f: &HttpFlow) -> Record {
        Record::from_flow(&Connection::new(1, Host::default()), f, 1 << 20)
    }

    fn replay(records: &[Record], options: ServerReplayOptions) -> ServerReplay {
        ServerReplay::new(records.to_vec(), options).unwrap()
    }

    /// The status it answers with, `None` to forward, `Some(0)` to kill.
    async fn verdict(replay: &ServerReplay, mut f: HttpFlow) -> Option<u16> {
        f.response = None;
        let conn = Connection::new(1, Host::default());
        match replay.request(&conn, &mut f).await {
            Verdict::Respond(r) => Some(r.status),
            Verdict::Kill => Some(0),
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
        let replay = replay(&records, ServerReplayOptions::new());
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

        for (extra, answer) in [
            (Unmatched::Status(404), Some(404)),
            (Unmatched::Status(204), Some(204)),
            (Unmatched::Kill, Some(0)),
        ] {
            let strict = super::tests::replay(&records, ServerReplayOptions::new().extra(extra));
            assert_eq!(
                verdict(&strict, flow("GET", "/b", b"", 0)).await,
                answer,
                "{extra}"
            );
        }
    }

    #[tokio::test]
    async fn reuse_serves_the_first_recording_every_time() {
        let records = [
            record(&flow("GET", "/a", b"", 200)),
            record(&flow("GET", "/a", b"", 201)),
        ];
        let replay = replay(&records, ServerReplayOptions::new().reuse(true));
        for _ in 0..3 {
            assert_eq!(verdict(&replay, flow("GET", "/a", b"", 0)).await, Some(200));
        }
        assert_eq!(replay.len(), 2);
    }

    #[tokio::test]
    async fn the_query_matches_by_decoded_pairs_less_the_ignored_names() {
        let records = [record(&flow("GET", "/s?q=a+b&t=1&lang=en", b"", 200))];
        let options = ServerReplayOptions::new().reuse(true);
        let plain = replay(&records, options.clone());
        // The same pairs, spelled otherwise.
        assert_eq!(
            verdict(&plain, flow("GET", "/s?q=a%20b&t=1&&lang=en", b"", 0)).await,
            Some(200)
        );
        // Order counts; so does every pair.
        assert_eq!(
            verdict(&plain, flow("GET", "/s?t=1&q=a+b&lang=en", b"", 0)).await,
            None
        );
        assert_eq!(
            verdict(&plain, flow("GET", "/s?q=a+b&t=2&lang=en", b"", 0)).await,
            None
        );
        let ignoring = replay(&records, options.ignore_params(["t"]));
        for path in [
            "/s?q=a+b&t=2&lang=en",
            "/s?q=a+b&lang=en",
            "/s?t=9&q=a+b&t=3&lang=en",
        ] {
            assert_eq!(
                verdict(&ignoring, flow("GET", path, b"", 0)).await,
                Some(200),
                "{path}"
            );
        }
        assert_eq!(
            verdict(&ignoring, flow("GET", "/s?q=a+b&lang=de", b"", 0)).await,
            None
        );
        // The path itself is no parameter.
        assert_eq!(
            verdict(&ignoring, flow("GET", "/t?q=a+b&lang=en", b"", 0)).await,
            None
        );
    }

    #[tokio::test]
    async fn host_port_and_content_are_left_out_when_asked() {
        let records = [record(&flow_to(
            "a.localhost",
            80,
            "POST",
            "/p",
            b"one",
            200,
        ))];
        let base = ServerReplayOptions::new().reuse(true);
        let cases: [(ServerReplayOptions, &str, u16, &'static [u8], bool); 7] = [
            (base.clone(), "a.localhost", 80, b"one", true),
            (base.clone(), "A.LOCALHOST", 80, b"one", true),
            (base.clone(), "b.localhost", 80, b"one", false),
            (
                base.clone().ignore_host(true),
                "b.localhost",
                80,
                b"one",
                true,
            ),
            (
                base.clone().ignore_host(true),
                "b.localhost",
                81,
                b"one",
                false,
            ),
            (
                base.clone().ignore_port(true),
                "a.localhost",
                81,
                b"one",
                true,
            ),
            (
                base.clone().ignore_content(true),
                "a.localhost",
                80,
                b"two",
                true,
            ),
        ];
        for (options, host, port, body, matches) in cases {
            let replay = replay(&records, options.clone());
            let got = verdict(&replay, flow_to(host, port, "POST", "/p", body, 0)).await;
            assert_eq!(got.is_some(), matches, "{options:?} {host}:{port}");
        }
    }

    #[tokio::test]
    async fn use_headers_match_named_headers_whatever_their_case() {
        let with = |lang: Option<&'static str>| {
            let mut f = flow("GET", "/h", b"", 200);
            if let Some(lang) = lang {
                f.request.headers.append("Accept-Language", lang);
            }
            f
        };
        let records = [record(&with(Some("en"))), record(&with(None))];
        let replay = replay(
            &records,
            ServerReplayOptions::new().use_headers(["accept-LANGUAGE"]),
        );
        assert_eq!(verdict(&replay, with(Some("de"))).await, None);
        assert_eq!(verdict(&replay, with(None)).await, Some(200));
        assert_eq!(verdict(&replay, with(Some("en"))).await, Some(200));
    }

    #[tokio::test]
    async fn ignored_form_fields_leave_the_rest_of_the_form_to_match() {
        let form = |body: &'static [u8]| {
            let mut f = flow("POST", "/f", body, 200);
            f.request
                .headers
                .append("Content-Type", "application/x-www-form-urlencoded");
            f
        };
        let records = [record(&form(b"user=ann&csrf=111"))];
        let replay = replay(
            &records,
            ServerReplayOptions::new()
                .reuse(true)
                .ignore_payload_params(["csrf"]),
        );
        assert_eq!(
            verdict(&replay, form(b"user=ann&csrf=222")).await,
            Some(200)
        );
        assert_eq!(verdict(&replay, form(b"user=bob&csrf=111")).await, None);
        // The same fields in a multipart form are another body.
        let mut multipart = flow(
            "POST",
            "/f",
            b"--B\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nann\r\n--B--\r\n",
            0,
        );
        multipart
            .request
            .headers
            .append("Content-Type", "multipart/form-data; boundary=B");
        assert_eq!(verdict(&replay, multipart).await, None);
        // Not a form: the bytes count.
        assert_eq!(
            verdict(&replay, flow("POST", "/f", b"user=ann&csrf=222", 0)).await,
            None
        );
    }

    #[tokio::test]
    async fn every_value_of_a_recorded_header_is_served() {
        let mut f = flow("GET", "/c", b"", 200);
        let response = f.response.as_mut().unwrap();
        response.headers.append("Set-Cookie", "a=1");
        response.headers.append("Set-Cookie", "b=2");
        let replay = replay(&[record(&f)], ServerReplayOptions::new());
        let conn = Connection::new(1, Host::default());
        let Verdict::Respond(r) = replay.request(&conn, &mut flow("GET", "/c", b"", 0)).await
        else {
            panic!("not answered");
        };
        let cookies: Vec<&[u8]> = r.headers.get_all("set-cookie").collect();
        assert_eq!(cookies, [&b"a=1"[..], b"b=2"]);
    }

    #[test]
    fn extra_takes_mitmproxys_words_and_refuses_what_no_response_can_be() {
        assert_eq!("forward".parse::<Unmatched>(), Ok(Unmatched::Forward));
        assert_eq!("500".parse::<Unmatched>(), Ok(Unmatched::Status(500)));
        assert_eq!(
            "1000".parse::<Unmatched>(),
            Err(ServerReplayError::Status(1000))
        );
        assert!(matches!(
            "drop".parse::<Unmatched>(),
            Err(ServerReplayError::Extra(_))
        ));
        let e = ServerReplay::new(
            Vec::new(),
            ServerReplayOptions::new().extra(Unmatched::Status(101)),
        )
        .unwrap_err();
        assert!(e.to_string().contains("101"), "{e}");
    }
}
