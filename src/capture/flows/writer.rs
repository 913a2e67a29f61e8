//! [`FlowWriter`]: records as mitmproxy's HTTP flows, format version
//! [`FLOW_FORMAT_VERSION`], to a file or any stream.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::FLOW_FORMAT_VERSION;
use crate::capture::tnetstring::Value;
use crate::capture::{Record, RecordedBody, Sink};
use crate::core::TlsFacts;
use crate::error::{Error, Result};
use crate::http::message::Headers;

/// Writes each [`Record`] as one of mitmproxy's HTTP flows, to a new file
/// ([`create`](FlowWriter::create)) or to any stream ([`new`](Self::new)): flow files
/// are flows one after another, so every record is whole in `out` once written.
///
/// Each record is one `write_all` of its encoded flow. A file made by `create` is
/// behind a buffer; [`Sink::flush`] (which the capture's writer calls whenever its
/// queue is empty) hands it the records. [`finish`](Self::finish) flushes and gives
/// the stream back.
///
/// ```
/// # fn run(records: &[mitm::capture::Record]) -> std::io::Result<()> {
/// use mitm::capture::flows::FlowWriter;
///
/// let mut writer = FlowWriter::new(Vec::new());
/// for record in records {
///     writer.write(record)?;
/// }
/// let bytes: Vec<u8> = writer.finish()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FlowWriter<W: Write = BufWriter<File>> {
    out: W,
    /// The file written, when `create` made it: named in errors.
    path: Option<PathBuf>,
    /// Whether `CONNECT` flows are written ([`keep_connects`](Self::keep_connects)).
    keep_connects: bool,
}

impl FlowWriter {
    /// Creates `path` for writing; fails with [`Error::CaptureIo`] if it exists, so
    /// that nothing saved before is overwritten.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| Error::CaptureIo {
                path: path.clone(),
                source,
            })?;
        Ok(FlowWriter {
            out: BufWriter::new(file),
            path: Some(path),
            keep_connects: false,
        })
    }
}

impl<W: Write> FlowWriter<W> {
    /// A writer of flows to `out`.
    pub fn new(out: W) -> Self {
        FlowWriter {
            out,
            path: None,
            keep_connects: false,
        }
    }

    /// Whether to write `CONNECT` flows too. They are left out by default, as
    /// mitmproxy leaves them out of its files: what matters is the requests inside the
    /// tunnel, each a flow of its own.
    pub fn keep_connects(mut self, keep: bool) -> Self {
        self.keep_connects = keep;
        self
    }

    /// Writes `record` as one flow (nothing for a `CONNECT`, unless
    /// [kept](Self::keep_connects)).
    ///
    /// # Errors
    ///
    /// What writing to the stream returns (naming the file, for one `create` made).
    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        if record.request.is_connect() && !self.keep_connects {
            return Ok(());
        }
        flow_state(record)
            .encode(&mut self.out)
            .map_err(|e| self.named(e))
    }

    /// Flushes the stream and gives it back.
    ///
    /// # Errors
    ///
    /// What flushing the stream returns.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush().map_err(|e| self.named(e))?;
        Ok(self.out)
    }

    /// The file written, when [`create`](FlowWriter::create) made it.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// An I/O error that names the file, if there is one.
    fn named(&self, e: io::Error) -> io::Error {
        match &self.path {
            Some(path) => io::Error::new(e.kind(), format!("{}: {e}", path.display())),
            None => e,
        }
    }
}

impl<W: Write + Send + 'static> Sink for FlowWriter<W> {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        FlowWriter::write(self, record)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush().map_err(|e| self.named(e))
    }
}

/// A random (version 4) UUID, as mitmproxy names flows and connections.
fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

pub(super) fn dict(entries: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

fn bytes(b: impl Into<Bytes>) -> Value {
    Value::Bytes(b.into())
}

pub(super) fn text(s: &str) -> Value {
    Value::from(s)
}

fn float_or_null(t: Option<f64>) -> Value {
    t.map_or(Value::Null, Value::Float)
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `(host, port)`, as mitmproxy keeps addresses.
fn address(host: &str, port: u16) -> Value {
    Value::List(vec![text(host), Value::Int(i64::from(port))])
}

fn socket(addr: Option<SocketAddr>) -> Option<Value> {
    addr.map(|a| address(&a.ip().to_string(), a.port()))
}

fn headers(h: &Headers) -> Value {
    Value::List(
        h.iter()
            .map(|(n, v)| {
                Value::List(vec![
                    bytes(Bytes::copy_from_slice(n.as_bytes())),
                    bytes(Bytes::copy_from_slice(v)),
                ])
            })
            .collect(),
    )
}

/// The fields every connection's state has: its TLS as `facts` says (the
/// certificates as PEM, as mitmproxy keeps them), its times.
fn connection_fields(
    tls: bool,
    facts: &TlsFacts,
    start: Option<f64>,
    tls_setup: Option<SystemTime>,
) -> Vec<(&'static str, Value)> {
    let sni = facts.sni.as_deref();
    let certificates = facts.certificates.iter().map(|der| bytes(pem(der)));
    let offers = facts.alpn_offers.iter().map(|a| bytes(a.clone()));
    vec![
        ("id", Value::Str(uuid())),
        ("transport_protocol", text("tcp")),
        ("error", Value::Null),
        ("tls", Value::Bool(tls)),
        ("certificate_list", Value::List(certificates.collect())),
        (
            "alpn",
            facts
                .alpn
                .as_ref()
                .map_or(Value::Null, |a| bytes(a.clone().into_bytes())),
        ),
        ("alpn_offers", Value::List(offers.collect())),
        ("cipher", facts.cipher.as_deref().map_or(Value::Null, text)),
        ("cipher_list", Value::List(vec![])),
        (
            "tls_version",
            facts.version.as_deref().map_or(Value::Null, text),
        ),
        ("sni", sni.map_or(Value::Null, text)),
        ("timestamp_start", float_or_null(start)),
        ("timestamp_end", Value::Null),
        ("timestamp_tls_setup", float_or_null(tls_setup.map(seconds))),
    ]
}

/// A DER certificate as PEM text, as mitmproxy keeps certificates.
fn pem(der: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = b"-----BEGIN CERTIFICATE-----\n".to_vec();
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END CERTIFICATE-----\n");
    out
}

/// What this crate keeps in a flow's `metadata` beside mitmproxy's own fields.
fn body_metadata(body: &RecordedBody, prefix: &str) -> [(String, Value); 2] {
    [
        (
            format!("{prefix}_body_size"),
            Value::Int(i64::try_from(body.size).unwrap_or(i64::MAX)),
        ),
        (
            format!("{prefix}_body_truncated"),
            Value::Bool(body.truncated),
        ),
    ]
}

/// The state of `record` as one of mitmproxy's HTTP flows, format
/// [`FLOW_FORMAT_VERSION`].
pub(super) fn flow_state(record: &Record) -> Value {
    let start = seconds(record.started_at);
    let at = |d: Option<Duration>| d.map(|d| start + d.as_secs_f64());
    let t = &record.timings;
    let req = &record.request;
    let https = req.scheme == "https";

    // The name the client asked for; a record made before TLS facts were kept says
    // only that it spoke TLS, to the request's host.
    let mut client_tls = record.tls.clone();
    if record.client_tls && client_tls.sni.is_none() {
        client_tls.sni = Some(req.host.clone());
    }
    let facts = &record.facts;
    // A record made before connection facts were kept: the request's start.
    let client_start = facts.client.started.map_or(start, seconds);
    let mut client = connection_fields(
        record.client_tls,
        &client_tls,
        Some(client_start),
        facts.client.tls_setup,
    );
    client.push((
        "peername",
        socket(record.client).unwrap_or_else(|| address("", 0)),
    ));
    client.push((
        "sockname",
        socket(facts.client.local).unwrap_or_else(|| address("", 0)),
    ));
    client.push(("mitmcert", Value::Null));
    client.push(("proxy_mode", text("regular")));

    let up = &facts.server;
    let server_start = match up.socket.started {
        Some(t) => Some(seconds(t)),
        None => record.server.map(|_| start),
    };
    let mut server_tls = up.tls.clone();
    if https && server_tls.sni.is_none() {
        server_tls.sni = Some(req.host.clone());
    }
    let mut server = connection_fields(https, &server_tls, server_start, up.socket.tls_setup);
    server.push(("peername", socket(record.server).unwrap_or(Value::Null)));
    server.push(("sockname", socket(up.socket.local).unwrap_or(Value::Null)));
    server.push(("address", address(&req.host, req.port)));
    server.push((
        "timestamp_tcp_setup",
        float_or_null(up.socket.tcp_setup.map(seconds)),
    ));
    server.push(("via", Value::Null));

    // CONNECT and HTTP/2 requests carry their authority (`:authority`); other HTTP/1
    // ones leave it empty, as mitmproxy does.
    let authority = if req.method == "CONNECT" {
        format!("{}:{}", req.host, req.port)
    } else if req.version == "HTTP/2.0" {
        let default = if https { 443 } else { 80 };
        if req.port == default {
            req.host.clone()
        } else {
            format!("{}:{}", req.host, req.port)
        }
    } else {
        String::new()
    };
    let request = dict(vec![
        ("http_version", bytes(req.version.clone())),
        ("headers", headers(&req.headers)),
        ("content", bytes(req.body.data.clone())),
        ("trailers", Value::Null),
        ("timestamp_start", Value::Float(start)),
        ("timestamp_end", float_or_null(at(t.request_end))),
        ("host", text(&req.host)),
        ("port", Value::Int(i64::from(req.port))),
        ("method", bytes(req.method.clone())),
        ("scheme", bytes(req.scheme.clone())),
        ("authority", bytes(authority)),
        ("path", bytes(req.path.clone())),
    ]);

    let mut metadata = body_metadata(&req.body, "request").to_vec();
    let response = record.response.as_ref().map_or(Value::Null, |res| {
        metadata.extend(body_metadata(&res.body, "response"));
        let first = at(t.response_first_byte)
            .or(at(t.request_end))
            .unwrap_or(start);
        dict(vec![
            ("http_version", bytes(res.version.clone())),
            ("headers", headers(&res.headers)),
            ("content", bytes(res.body.data.clone())),
            ("trailers", Value::Null),
            ("timestamp_start", Value::Float(first)),
            ("timestamp_end", float_or_null(at(t.response_end))),
            ("status_code", Value::Int(i64::from(res.status))),
            ("reason", bytes(res.reason.clone())),
        ])
    });
    let metadata = Value::Dict(vec![(
        text("mitm"),
        Value::Dict(
            metadata
                .into_iter()
                .map(|(k, v)| (Value::Str(k), v))
                .collect(),
        ),
    )]);

    let error = record.error.as_ref().map_or(Value::Null, |msg| {
        let when = at(t.response_end)
            .or(at(t.response_first_byte))
            .or(at(t.request_end))
            .unwrap_or(start);
        dict(vec![("msg", text(msg)), ("timestamp", Value::Float(when))])
    });

    let notes = &record.annotations;
    dict(vec![
        ("version", Value::Int(FLOW_FORMAT_VERSION)),
        ("type", text("http")),
        ("id", Value::Str(uuid())),
        ("error", error),
        ("client_conn", dict(client)),
        ("server_conn", dict(server)),
        ("intercepted", Value::Bool(false)),
        (
            "is_replay",
            notes.is_replay.as_deref().map_or(Value::Null, text),
        ),
        ("marked", text(&notes.marked)),
        ("metadata", metadata),
        ("comment", text(&notes.comment)),
        ("timestamp_created", Value::Float(start)),
        ("backup", Value::Null),
        ("request", request),
        ("response", response),
        ("websocket", websocket_state(record)),
    ])
}

/// The WebSocket state of a flow: its messages as `[opcode, from_client, content,
/// timestamp, dropped, injected]`, as mitmproxy keeps them; null for other flows.
fn websocket_state(record: &Record) -> Value {
    let Some(messages) = &record.websocket else {
        return Value::Null;
    };
    let messages = messages
        .iter()
        .map(|m| {
            Value::List(vec![
                Value::Int(if m.text { 1 } else { 2 }),
                Value::Bool(m.from_client),
                Value::Bytes(m.data.clone()),
                Value::Float(seconds(m.at)),
                Value::Bool(false),
                Value::Bool(false),
            ])
        })
        .collect();
    let close = record.facts.websocket_close.as_ref();
    dict(vec![
        ("messages", Value::List(messages)),
        (
            "closed_by_client",
            close.map_or(Value::Null, |c| Value::Bool(c.by_client)),
        ),
        (
            "close_code",
            close.map_or(Value::Null, |c| Value::Int(i64::from(c.code))),
        ),
        (
            "close_reason",
            close.map_or(Value::Null, |c| text(&c.reason)),
        ),
        (
            "timestamp_end",
            close.map_or(Value::Null, |c| Value::Float(seconds(c.at))),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::flows::read_flows;
    use crate::capture::flows::tests::record;

    #[test]
    fn create_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.flows");
        std::fs::write(&path, b"saved before").unwrap();
        let err = FlowWriter::create(&path).unwrap_err();
        assert!(matches!(err, Error::CaptureIo { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"saved before");
    }

    #[test]
    fn a_stream_gets_the_flows_a_file_gets() {
        let dir = tempfile::tempdir().unwrap();
        let mut failed = record();
        failed.response = None;
        let records = [record(), failed];
        let file = dir.path().join("file.flows");
        let mut to_file = FlowWriter::create(&file).unwrap();
        assert_eq!(to_file.path(), Some(file.as_path()));
        let mut to_vec = FlowWriter::new(Vec::new());
        assert_eq!(to_vec.path(), None);
        for r in &records {
            to_file.write(r).unwrap();
            to_vec.write(r).unwrap();
        }
        drop(to_file.finish().unwrap());
        let streamed = dir.path().join("streamed.flows");
        std::fs::write(&streamed, to_vec.finish().unwrap()).unwrap();
        let from_file = read_flows(&file).unwrap();
        assert_eq!(from_file.len(), 2);
        assert_eq!(read_flows(&streamed).unwrap(), from_file);
    }

    #[test]
    fn connects_are_left_out_unless_kept() {
        let mut connect = record();
        connect.request.method = "CONNECT".into();
        connect.request.scheme = String::new();
        connect.request.path = String::new();
        let records = [connect, record()];
        let dir = tempfile::tempdir().unwrap();
        for (keep, expected) in [(false, vec!["POST"]), (true, vec!["CONNECT", "POST"])] {
            let mut w = FlowWriter::new(Vec::new()).keep_connects(keep);
            for r in &records {
                w.write(r).unwrap();
            }
            let path = dir.path().join(format!("{keep}.flows"));
            std::fs::write(&path, w.finish().unwrap()).unwrap();
            let back = read_flows(&path).unwrap();
            let methods: Vec<&str> = back.iter().map(|r| r.request.method.as_str()).collect();
            assert_eq!(methods, expected);
            if keep {
                assert_eq!(back[0].request.url(), "a.localhost:8080");
            }
        }
    }

    #[test]
    fn http2_requests_carry_their_authority() {
        let mut r = record();
        r.request.version = "HTTP/2.0".into();
        let flow = flow_state(&r);
        let authority = flow.get("request").and_then(|q| q.get("authority"));
        assert_eq!(
            authority.and_then(Value::as_bytes),
            Some(&b"a.localhost:8080"[..])
        );
    }

    #[test]
    fn ids_are_v4_uuids() {
        let id = uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!("89ab".contains(&id[19..20]), "{id}");
        assert_ne!(uuid(), id);
    }
}
