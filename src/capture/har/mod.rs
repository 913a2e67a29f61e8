//! HAR 1.2 (the HTTP Archive format browsers' devtools export and import): [`HarFile`]
//! saves records to a file as they come, [`HarWriter`] to any stream, [`HarReader`]
//! reads a HAR file back into records one entry at a time ([`read_har`]: all of them).
//!
//! Both writers write the same document: its start up to the entries array on the
//! first line, then one entry per line, then the closing `]}}`. [`HarFile`] keeps the
//! file a complete HAR document after every write: the entries of the records written
//! since the last one (a [`Capture`](crate::capture::Capture) flushes at most 50 ms
//! after a flow finished; a batch also goes when it reaches 128 KiB) are written over
//! that closing tail, with a new tail after them, in one positioned write; so a crash,
//! even `SIGKILL`, loses only the flows not yet written. (A kill in the middle of that
//! one write can leave a torn last line; [`HarReader`] reads the entries before it,
//! then says where it is torn. A write that fails, on a full disk say, is undone, and
//! the error says how many flows it lost.) A stream cannot be written over:
//! [`HarWriter`] writes each entry after the last and the tail once, at the end.
//!
//! What goes into an entry, beyond what HAR 1.2 requires:
//! - bodies as text when they are text (valid UTF-8 that is not binary by its media
//!   type), else base64 (`"encoding": "base64"`); a content-encoded body decoded (its
//!   `Content-Encoding` kept in the headers, `content.size` the decoded length,
//!   `compression` the bytes the coding saved), or kept as sent, with
//!   `"_contentEncoded": true`, when it cannot be decoded or was cut;
//! - a body the capture cut: `"_truncated": true` and `"_size"` (its length on the
//!   wire), with a `comment`;
//! - a failed flow: `"_error"` (on the entry, and on the `status: 0` response browsers
//!   write when there is none);
//! - `"_clientAddress"`, `"_serverPort"`, `"_clientTls"` and `"_tls"` (the client's
//!   SNI, ALPN and TLS version), so that reading the file back gives the record that
//!   was written;
//! - a WebSocket flow: `"_resourceType": "websocket"` and its messages in
//!   `"_webSocketMessages"`, as Chromium's devtools save them;
//! - the connection facts: `timings.connect` and `timings.ssl` measured on the first
//!   entry of each server connection (`-1` on later ones, and when unknown; `connect`
//!   includes `ssl`, as HAR 1.2 says), `connection` (the proxy's local port on it), and
//!   `"_facts"`: both connections' times and local addresses, the server's TLS with its
//!   certificates (base64 DER), and how a WebSocket closed (`websocketClose`); `"_tls"`
//!   also holds the client's cipher and ALPN offers. A HAR without `_facts` (a
//!   browser's) gives the server connection's times from its `blocked`, `dns`,
//!   `connect` and `ssl`, which are so written back as they were.
//!
//! Request bodies go in `postData.text`, base64 with `"_encoding": "base64"` when they
//! are binary (HAR has no encoding for `postData`).
//!
//! | file | what it holds |
//! | --- | --- |
//! | `entry.rs` | a record as a HAR entry |
//! | `facts.rs` | a record's connection facts in its entry, and read back |
//! | `writer.rs` | [`HarWriter`]; the document's start and its entry lines |
//! | `file.rs` | [`HarFile`] |
//! | `model.rs` | the parts of HAR this crate reads, as types |
//! | `scan.rs` | the entries of a document one at a time, as bytes, the rest skipped |
//! | `reader.rs` | [`HarReader`], [`read_har`]: an entry as a record |

mod entry;
mod facts;
mod file;
mod json;
mod model;
mod reader;
mod scan;
mod writer;

pub use entry::DECODED_LIMIT;
pub use file::HarFile;
pub use reader::{read_har, HarReader};
pub use writer::HarWriter;

/// The end of every document the writers leave: the entries array, `log`, the root.
pub(crate) const TAIL: &[u8] = b"\n]}}\n";

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use serde_json::Value;

    use crate::capture::{
        Record, RecordedBody, RecordedRequest, RecordedResponse, RecordedTimings,
    };
    use crate::http::message::Headers;

    /// A response for [`record`]: status, header fields, body.
    pub(super) type Answer<'a> = (u16, &'a [(&'a str, &'a str)], Bytes);

    pub(super) fn record(path: &str, response: Option<Answer<'_>>) -> Record {
        let mut request_headers = Headers::new();
        request_headers.append("Host", "a.localhost");
        request_headers.append("Cookie", "s=1; t=two");
        Record {
            annotations: Default::default(),
            websocket: None,
            facts: Default::default(),
            started_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            client: Some("127.0.0.1:5000".parse().unwrap()),
            server: Some("127.0.0.1:8080".parse().unwrap()),
            client_tls: false,
            tls: Default::default(),
            request: RecordedRequest {
                method: "GET".into(),
                scheme: "http".into(),
                host: "a.localhost".into(),
                port: 8080,
                path: path.into(),
                version: "HTTP/1.1".into(),
                headers: request_headers,
                body: RecordedBody::default(),
            },
            response: response.map(|(status, fields, body)| {
                let mut headers = Headers::new();
                for (n, v) in fields {
                    headers.append(n.to_string(), v.to_string());
                }
                RecordedResponse {
                    status,
                    reason: "OK".into(),
                    version: "HTTP/1.1".into(),
                    headers,
                    body: RecordedBody::whole(body),
                }
            }),
            timings: RecordedTimings {
                request_end: Some(Duration::from_millis(2)),
                response_first_byte: Some(Duration::from_millis(7)),
                response_end: Some(Duration::from_millis(10)),
            },
            error: None,
        }
    }

    pub(super) fn gzip(data: &[u8]) -> Bytes {
        Bytes::from(crate::decode::encode("gzip", data).unwrap())
    }

    pub(super) fn parse(path: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }
}
