//! mitmproxy's flow files (what `mitmdump -w FILE` saves and `mitmdump -r FILE`,
//! mitmweb and mitmproxy open): one [tnetstring](super::tnetstring) dictionary per
//! flow, the flow's state as mitmproxy keeps it, with the version of that layout in
//! its `version` field.
//!
//! [`FlowWriter`] is a [`Sink`] that writes each [`Record`] as an HTTP flow in format
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

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::tnetstring::{DecodeError, Decoder, Value};
use super::{
    Record, RecordedBody, RecordedMessage, RecordedRequest, RecordedResponse, RecordedTimings, Sink,
};
use crate::core::TlsFacts;
use crate::error::{Error, Result};
use crate::http::message::Headers;

/// The flow format version [`FlowWriter`] writes: mitmproxy 10's, the newest that
/// both mitmproxy 10 and 11 open (mitmproxy 10 refuses a newer file; 21 differs from
/// 20 only in how a QUIC connection's TLS version is named, which HTTP flows over TCP
/// never have).
pub const FLOW_FORMAT_VERSION: i64 = 20;
/// The flow format versions [`FlowReader`] reads: 20 (mitmproxy 10) and 21 (mitmproxy
/// 11), and 19, which differs from 20 only in a field this crate does not read.
pub const READ_VERSIONS: RangeInclusive<i64> = 19..=21;

/// Writes each [`Record`] to a new file as one of mitmproxy's HTTP flows.
///
/// Records go through a buffer; [`Sink::flush`] (which the capture's writer calls
/// whenever its queue is empty) hands them to the file.
#[derive(Debug)]
pub struct FlowWriter {
    path: PathBuf,
    out: BufWriter<File>,
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
            path,
            out: BufWriter::new(file),
        })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An I/O error that names the file.
    fn named(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))
    }
}

impl Sink for FlowWriter {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        flow_state(record)
            .encode(&mut self.out)
            .map_err(|e| self.named(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush().map_err(|e| self.named(e))
    }
}

/// Reads the HTTP flows of a mitmproxy flow file, one [`Record`] at a time.
///
/// Flows of other kinds are skipped and counted ([`skipped`](Self::skipped)). The
/// first error ends the iteration: a damaged file cannot be read past the damage.
#[derive(Debug)]
pub struct FlowReader {
    path: PathBuf,
    decoder: Decoder<BufReader<File>>,
    skipped: u64,
    done: bool,
}

impl FlowReader {
    /// Opens `path`; fails with [`Error::CaptureIo`] if it cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::CaptureIo {
            path: path.clone(),
            source,
        })?;
        Ok(FlowReader {
            path,
            decoder: Decoder::new(BufReader::new(file)),
            skipped: 0,
            done: false,
        })
    }

    /// How many flows were skipped so far because they are not HTTP flows.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn format_error(&self, reason: String) -> Error {
        Error::CaptureFormat {
            path: self.path.clone(),
            reason,
        }
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            let start = self.decoder.offset();
            let value = match self.decoder.next_value() {
                Ok(Some(value)) => value,
                Ok(None) => return Ok(None),
                Err(DecodeError::Io(source)) => {
                    return Err(Error::CaptureIo {
                        path: self.path.clone(),
                        source,
                    })
                }
                Err(e) => return Err(self.format_error(e.to_string())),
            };
            match record_of(&value) {
                Ok(Some(record)) => return Ok(Some(record)),
                Ok(None) => self.skipped += 1,
                Err(reason) => {
                    return Err(self.format_error(format!("the flow at byte {start}: {reason}")))
                }
            }
        }
    }
}

impl Iterator for FlowReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_record();
        if !matches!(next, Ok(Some(_))) {
            self.done = true;
        }
        next.transpose()
    }
}

/// Every HTTP flow in the mitmproxy flow file at `path`, as records; flows of other
/// kinds are skipped (their number is logged). See [`FlowReader`] to read one at a
/// time.
pub fn read_flows(path: impl AsRef<Path>) -> Result<Vec<Record>> {
    let mut reader = FlowReader::open(path)?;
    let records = reader.by_ref().collect::<Result<Vec<_>>>()?;
    if reader.skipped() > 0 {
        tracing::info!(
            path = %reader.path.display(),
            skipped = reader.skipped(),
            "flows that are not HTTP flows were skipped"
        );
    }
    Ok(records)
}

// Writing.

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

fn dict(entries: Vec<(&str, Value)>) -> Value {
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

fn text(s: &str) -> Value {
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

/// The fields every connection's state has, TLS details unknown.
fn connection_fields(
    tls: bool,
    facts: &TlsFacts,
    start: Option<f64>,
) -> Vec<(&'static str, Value)> {
    let sni = facts.sni.as_deref();
    vec![
        ("id", Value::Str(uuid())),
        ("transport_protocol", text("tcp")),
        ("error", Value::Null),
        ("tls", Value::Bool(tls)),
        ("certificate_list", Value::List(vec![])),
        (
            "alpn",
            facts
                .alpn
                .as_ref()
                .map_or(Value::Null, |a| bytes(a.clone().into_bytes())),
        ),
        ("alpn_offers", Value::List(vec![])),
        ("cipher", Value::Null),
        ("cipher_list", Value::List(vec![])),
        (
            "tls_version",
            facts.version.as_deref().map_or(Value::Null, text),
        ),
        ("sni", sni.map_or(Value::Null, text)),
        ("timestamp_start", float_or_null(start)),
        ("timestamp_end", Value::Null),
        ("timestamp_tls_setup", Value::Null),
    ]
}

/// The TLS facts of a connection's state (`client_conn`): `sni`, `alpn` (bytes) and
/// `tls_version`.
fn tls_of(conn: &Value) -> TlsFacts {
    let text = |key: &str| match conn.get(key) {
        Some(Value::Str(s)) => Some(s.clone()),
        Some(Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    TlsFacts {
        sni: text("sni"),
        alpn: text("alpn"),
        version: text("tls_version"),
    }
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
fn flow_state(record: &Record) -> Value {
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
    let mut client = connection_fields(record.client_tls, &client_tls, Some(start));
    client.push((
        "peername",
        socket(record.client).unwrap_or_else(|| address("", 0)),
    ));
    client.push(("sockname", address("", 0)));
    client.push(("mitmcert", Value::Null));
    client.push(("proxy_mode", text("regular")));

    let server_start = record.server.map(|_| start);
    let server_tls = TlsFacts {
        sni: https.then(|| req.host.clone()),
        ..TlsFacts::default()
    };
    let mut server = connection_fields(https, &server_tls, server_start);
    server.push(("peername", socket(record.server).unwrap_or(Value::Null)));
    server.push(("sockname", Value::Null));
    server.push(("address", address(&req.host, req.port)));
    server.push(("timestamp_tcp_setup", Value::Null));
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

    dict(vec![
        ("version", Value::Int(FLOW_FORMAT_VERSION)),
        ("type", text("http")),
        ("id", Value::Str(uuid())),
        ("error", error),
        ("client_conn", dict(client)),
        ("server_conn", dict(server)),
        ("intercepted", Value::Bool(false)),
        ("is_replay", Value::Null),
        ("marked", text("")),
        ("metadata", metadata),
        ("comment", text("")),
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
    dict(vec![
        ("messages", Value::List(messages)),
        ("closed_by_client", Value::Null),
        ("close_code", Value::Null),
        ("close_reason", Value::Null),
        ("timestamp_end", Value::Null),
    ])
}

/// The messages of a flow's WebSocket state, if it has one.
fn messages_of(flow: &Value) -> std::result::Result<Option<Vec<RecordedMessage>>, Reason> {
    let Some(ws) = optional(flow, "websocket") else {
        return Ok(None);
    };
    let Some(Value::List(list)) = ws.get("messages") else {
        return Err("`messages` is not a list".into());
    };
    let mut messages = Vec::with_capacity(list.len());
    for m in list {
        let Value::List(parts) = m else {
            return Err(wrong("messages", "a list", m));
        };
        let (Some(Value::Int(opcode)), Some(Value::Bool(from_client)), Some(content), Some(at)) =
            (parts.first(), parts.get(1), parts.get(2), parts.get(3))
        else {
            return Err("a message is not [opcode, from_client, content, timestamp, ...]".into());
        };
        let at = match at {
            Value::Float(t) => *t,
            Value::Int(t) => *t as f64,
            _ => 0.0,
        };
        messages.push(RecordedMessage {
            from_client: *from_client,
            text: *opcode == 1,
            data: Bytes::copy_from_slice(content.as_bytes().unwrap_or_default()),
            at: Duration::try_from_secs_f64(at.max(0.0))
                .ok()
                .and_then(|d| UNIX_EPOCH.checked_add(d))
                .unwrap_or(UNIX_EPOCH),
        });
    }
    Ok(Some(messages))
}

// Reading.

/// What went wrong in one flow, naming the field.
type Reason = String;

fn field<'a>(v: &'a Value, name: &str) -> std::result::Result<&'a Value, Reason> {
    v.get(name).ok_or_else(|| format!("no field `{name}`"))
}

/// A field that may be null or absent.
fn optional<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.get(name).filter(|v| **v != Value::Null)
}

fn wrong(name: &str, want: &str, got: &Value) -> Reason {
    format!("`{name}` is a {}, not {want}", got.kind())
}

fn string_of(v: &Value, name: &str) -> std::result::Result<String, Reason> {
    let f = field(v, name)?;
    f.as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(|| wrong(name, "text", f))
}

fn bytes_of(v: &Value, name: &str) -> std::result::Result<Bytes, Reason> {
    match optional(v, name) {
        None => Ok(Bytes::new()),
        Some(Value::Bytes(b)) => Ok(b.clone()),
        Some(Value::Str(s)) => Ok(Bytes::from(s.clone().into_bytes())),
        Some(other) => Err(wrong(name, "bytes", other)),
    }
}

fn int_of(v: &Value, name: &str) -> std::result::Result<i64, Reason> {
    match field(v, name)? {
        Value::Int(i) => Ok(*i),
        other => Err(wrong(name, "an integer", other)),
    }
}

fn time_of(v: &Value, name: &str) -> std::result::Result<Option<f64>, Reason> {
    match optional(v, name) {
        None => Ok(None),
        Some(Value::Float(f)) => Ok(Some(*f)),
        Some(Value::Int(i)) => Ok(Some(*i as f64)),
        Some(other) => Err(wrong(name, "a time", other)),
    }
}

fn in_context<T>(
    context: &str,
    r: std::result::Result<T, Reason>,
) -> std::result::Result<T, Reason> {
    r.map_err(|e| format!("{context}: {e}"))
}

/// An IP address and port from mitmproxy's `(host, port, …)`; `None` for names.
fn socket_of(v: Option<&Value>) -> Option<SocketAddr> {
    let Some(Value::List(parts)) = v else {
        return None;
    };
    let ip: IpAddr = std::str::from_utf8(parts.first()?.as_bytes()?)
        .ok()?
        .parse()
        .ok()?;
    let Value::Int(port) = parts.get(1)? else {
        return None;
    };
    Some(SocketAddr::new(ip, u16::try_from(*port).ok()?))
}

fn headers_of(v: &Value) -> std::result::Result<Headers, Reason> {
    let mut out = Headers::new();
    let Some(list) = optional(v, "headers") else {
        return Ok(out);
    };
    let Value::List(fields) = list else {
        return Err(wrong("headers", "a list", list));
    };
    for f in fields {
        let pair = match f {
            Value::List(pair) if pair.len() == 2 => pair,
            other => return Err(format!("a header field is a {}, not a pair", other.kind())),
        };
        let (Some(name), Some(value)) = (pair[0].as_bytes(), pair[1].as_bytes()) else {
            return Err("a header field's name or value is not text".into());
        };
        out.append(Bytes::copy_from_slice(name), Bytes::copy_from_slice(value));
    }
    Ok(out)
}

/// A body and what the flow's metadata says of it (when this crate wrote the file).
fn body_of(
    message: &Value,
    meta: Option<&Value>,
    prefix: &str,
) -> std::result::Result<RecordedBody, Reason> {
    let data = bytes_of(message, "content")?;
    let mut body = RecordedBody::whole(data);
    if let Some(meta) = meta {
        if let Some(Value::Int(size)) = meta.get(&format!("{prefix}_body_size")) {
            body.size = u64::try_from(*size).unwrap_or(0).max(body.size);
        }
        if let Some(Value::Bool(cut)) = meta.get(&format!("{prefix}_body_truncated")) {
            body.truncated = *cut;
        }
    }
    Ok(body)
}

/// The record of one flow's state; `None` for a flow that is not an HTTP flow.
fn record_of(flow: &Value) -> std::result::Result<Option<Record>, Reason> {
    if !matches!(flow, Value::Dict(_)) {
        return Err(format!("a {}, not a flow", flow.kind()));
    }
    match field(flow, "version")? {
        Value::Int(v) if READ_VERSIONS.contains(v) => {}
        Value::Int(v) => {
            return Err(format!(
                "flow format version {v}; this reads versions {} to {} (mitmproxy 10 and \
                 11): open the file in mitmproxy and save it again",
                READ_VERSIONS.start(),
                READ_VERSIONS.end()
            ))
        }
        _ => {
            return Err(
                "a flow format from before mitmproxy 7; open the file in mitmproxy \
                        and save it again"
                    .into(),
            )
        }
    }
    if string_of(flow, "type")? != "http" {
        return Ok(None);
    }
    let req = field(flow, "request")?;
    let request = in_context("request", recorded_request(req))?;
    let start = in_context("request", time_of(req, "timestamp_start"))?.unwrap_or(0.0);
    let since =
        |t: Option<f64>| t.and_then(|t| Duration::try_from_secs_f64((t - start).max(0.0)).ok());
    let meta = optional(flow, "metadata").and_then(|m| m.get("mitm"));
    let request = RecordedRequest {
        body: in_context("request", body_of(req, meta, "request"))?,
        ..request
    };
    let mut timings = RecordedTimings {
        request_end: since(in_context("request", time_of(req, "timestamp_end"))?),
        ..RecordedTimings::default()
    };
    let response = match optional(flow, "response") {
        None => None,
        Some(res) => {
            timings.response_first_byte =
                since(in_context("response", time_of(res, "timestamp_start"))?);
            timings.response_end = since(in_context("response", time_of(res, "timestamp_end"))?);
            Some(in_context("response", recorded_response(res, meta))?)
        }
    };
    let error = match optional(flow, "error") {
        None => None,
        Some(e) => Some(in_context("error", string_of(e, "msg"))?),
    };
    let client = optional(flow, "client_conn");
    let server = optional(flow, "server_conn");
    Ok(Some(Record {
        started_at: Duration::try_from_secs_f64(start.max(0.0))
            .ok()
            .and_then(|d| UNIX_EPOCH.checked_add(d))
            .unwrap_or(UNIX_EPOCH),
        client: client.and_then(|c| socket_of(c.get("peername"))),
        server: server.and_then(|s| socket_of(s.get("peername"))),
        client_tls: matches!(client.and_then(|c| c.get("tls")), Some(Value::Bool(true))),
        tls: client.map(tls_of).unwrap_or_default(),
        request,
        response,
        timings,
        error,
        websocket: in_context("websocket", messages_of(flow))?,
    }))
}

fn recorded_request(req: &Value) -> std::result::Result<RecordedRequest, Reason> {
    let port = int_of(req, "port")?;
    Ok(RecordedRequest {
        method: string_of(req, "method")?,
        scheme: string_of(req, "scheme")?,
        host: string_of(req, "host")?,
        port: u16::try_from(port).map_err(|_| format!("port {port} out of range"))?,
        path: string_of(req, "path")?,
        version: string_of(req, "http_version")?,
        headers: headers_of(req)?,
        body: RecordedBody::default(),
    })
}

fn recorded_response(
    res: &Value,
    meta: Option<&Value>,
) -> std::result::Result<RecordedResponse, Reason> {
    let status = int_of(res, "status_code")?;
    Ok(RecordedResponse {
        status: u16::try_from(status).map_err(|_| format!("status {status} out of range"))?,
        reason: string_of(res, "reason")?,
        version: string_of(res, "http_version")?,
        headers: headers_of(res)?,
        body: body_of(res, meta, "response")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut headers = Headers::new();
        headers.append("Host", "a.localhost:8080");
        headers.append("X-Two", "1");
        headers.append("X-Two", "2");
        Record {
            websocket: None,
            started_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
            client: Some("127.0.0.1:5000".parse().unwrap()),
            server: Some("[::1]:8080".parse().unwrap()),
            client_tls: true,
            tls: TlsFacts {
                sni: Some("a.localhost".into()),
                alpn: Some("h2".into()),
                version: Some("TLSv1.3".into()),
            },
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

    /// Times survive as float seconds: equal to within a microsecond.
    fn close(a: Option<Duration>, b: Option<Duration>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => a.abs_diff(b) < Duration::from_micros(1),
            (a, b) => a == b,
        }
    }

    #[test]
    fn a_written_record_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.flows");
        let mut w = FlowWriter::create(&path).unwrap();
        let mut failed = record();
        failed.response = None;
        failed.server = None;
        failed.timings = RecordedTimings::default();
        w.write(&record()).unwrap();
        w.write(&failed).unwrap();
        w.flush().unwrap();
        let back = read_flows(&path).unwrap();
        assert_eq!(back.len(), 2);
        for (got, want) in back.iter().zip([record(), failed]) {
            let dt = got
                .started_at
                .duration_since(want.started_at)
                .unwrap_or_else(|e| e.duration());
            assert!(dt < Duration::from_micros(1), "{dt:?}");
            let (g, w) = (got.timings, want.timings);
            assert!(close(g.request_end, w.request_end));
            assert!(close(g.response_first_byte, w.response_first_byte));
            assert!(close(g.response_end, w.response_end));
            let same = Record {
                started_at: want.started_at,
                timings: want.timings,
                ..got.clone()
            };
            assert_eq!(same, want);
        }
    }

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
    fn other_flows_are_skipped_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.flows");
        let mut data = Vec::new();
        dict(vec![("version", Value::Int(21)), ("type", text("tcp"))])
            .encode(&mut data)
            .unwrap();
        flow_state(&record()).encode(&mut data).unwrap();
        std::fs::write(&path, &data).unwrap();
        let mut reader = FlowReader::open(&path).unwrap();
        assert_eq!(reader.by_ref().count(), 1);
        assert_eq!(reader.skipped(), 1);

        let bad: &[(Value, &str)] = &[
            (
                dict(vec![("version", Value::Int(17)), ("type", text("http"))]),
                "version 17",
            ),
            (
                dict(vec![("version", Value::Int(21)), ("type", text("http"))]),
                "no field `request`",
            ),
            (Value::Int(3), "not a flow"),
        ];
        for (value, want) in bad {
            let mut data = Vec::new();
            value.encode(&mut data).unwrap();
            std::fs::write(&path, &data).unwrap();
            let err = read_flows(&path).unwrap_err();
            assert!(matches!(err, Error::CaptureFormat { .. }), "{err}");
            assert!(err.to_string().contains(want), "{err}");
        }
        std::fs::write(&path, &b"12:not a flow"[..]).unwrap();
        let err = read_flows(&path).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
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
