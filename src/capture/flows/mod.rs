//! mitmproxy's flow files (what `mitmdump -w FILE` saves and `mitmdump -r FILE`,
//! mitmweb and mitmproxy open): one [tnetstring](super::tnetstring) dictionary per
//! flow, the flow's state as mitmproxy keeps it, with the version of that layout in
//! its `version` field.
//!
//! [`FlowWriter`] is a [`Sink`](super::Sink) that writes each [`Record`](super::Record) as an HTTP flow in format
//! version [`FLOW_FORMAT_VERSION`] (mitmproxy 10's: mitmproxy 10 opens it as it is,
//! and mitmproxy 11 and later upgrade it as they open it, as they do their own older
//! files). [`FlowReader`] reads the HTTP flows of files that
//! mitmproxy 10 and 11 wrote (versions [`READ_VERSIONS`]) back into records, skipping
//! (and counting) flows of other kinds (TCP, UDP, DNS).
//!
//! Bodies kept cut by the capture are saved as kept; their whole size and the mark
//! are saved in the flow's `metadata` (under `"mitm"`), which mitmproxy keeps and
//! shows but does not interpret, so that reading the file back gives the same record.
//!
//! ```no_run
//! # fn run() -> mitm::Result<()> {
//! use mitm::capture::flows::{read_flows, FlowWriter};
//! use mitm::capture::Capture;
//!
//! let capture = Capture::builder()
//!     .sink(Box::new(FlowWriter::create("session.flows")?))
//!     .start();
//! // … the proxy runs with `capture` as a middleware, then:
//! capture.finish();
//! for record in read_flows("session.flows")? {
//!     println!("{} {}", record.request.method, record.request.url());
//! }
//! # Ok(()) }
//! ```
//!
//! | file | what it holds |
//! | --- | --- |
//! | `writer.rs` | [`FlowWriter`]: a record as a flow's state |
//! | `reader.rs` | [`FlowReader`], [`read_flows`]: a flow's state as a record |

use std::ops::RangeInclusive;

mod reader;
mod writer;

pub use reader::{read_flows, FlowReader};
pub use writer::FlowWriter;

/// The flow format version [`FlowWriter`] writes: mitmproxy 10's, the newest that
/// both mitmproxy 10 and 11 open (mitmproxy 10 refuses a newer file; 21 differs from
/// 20 only in how a QUIC connection's TLS version is named, which HTTP flows over TCP
/// never have).
pub const FLOW_FORMAT_VERSION: i64 = 20;
/// The flow format versions [`FlowReader`] reads: 20 (mitmproxy 10) and 21 (mitmproxy
/// 11), and 19, which differs from 20 only in a field this crate does not read.
pub const READ_VERSIONS: RangeInclusive<i64> = 19..=21;

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;

    use crate::capture::{
        Annotations, Record, RecordedBody, RecordedRequest, RecordedResponse, RecordedTimings,
    };
    use crate::http::message::Headers;

    pub(super) fn record() -> Record {
        let mut headers = Headers::new();
        headers.append("Host", "a.localhost:8080");
        headers.append("X-Two", "1");
        headers.append("X-Two", "2");
        Record {
            annotations: Annotations {
                marked: ":star:".into(),
                comment: "first line\nsecond line".into(),
                is_replay: Some("request".into()),
            },
            websocket: None,
            facts: crate::capture::record::example::facts(),
            started_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
            client: Some("127.0.0.1:5000".parse().unwrap()),
            server: Some("[::1]:8080".parse().unwrap()),
            client_tls: true,
            tls: crate::capture::record::example::client_tls(),
            request: RecordedRequest {
                method: "POST".into(),
                scheme: "https".into(),
                host: "a.localhost".into(),
                port: 8080,
                path: "/p?q=1".into(),
                version: "HTTP/1.1".into(),
                headers: headers.clone(),
                body: RecordedBody::whole(Bytes::from_static(b"\0binary\xff")),
            },
            response: Some(RecordedResponse {
                status: 404,
                reason: "Not Found".into(),
                version: "HTTP/1.1".into(),
                headers,
                body: RecordedBody {
                    data: Bytes::from_static(b"cut"),
                    size: 1000,
                    truncated: true,
                },
            }),
            timings: RecordedTimings {
                request_end: Some(Duration::from_millis(10)),
                response_first_byte: Some(Duration::from_millis(20)),
                response_end: Some(Duration::from_millis(30)),
            },
            error: Some("the client went away".into()),
        }
    }
}
