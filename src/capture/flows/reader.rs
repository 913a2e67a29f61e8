//! [`FlowReader`]: mitmproxy's HTTP flows, of the format versions [`READ_VERSIONS`], as
//! records; flows of other kinds skipped and counted.

use std::fs::File;
use std::io::BufReader;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::READ_VERSIONS;
use crate::capture::record::spelled_version;
use crate::capture::tnetstring::{DecodeError, Decoder, Value};
use crate::capture::{
    Annotations, Record, RecordedBody, RecordedFacts, RecordedMessage, RecordedRequest,
    RecordedResponse, RecordedTimings,
};
use crate::core::{SocketFacts, TlsFacts};
use crate::error::{Error, Result};
use crate::http::message::Headers;
use crate::http::websocket::WebSocketClose;

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

/// The TLS facts of a connection's state: `sni`, `alpn` (bytes), `tls_version`,
/// `cipher`, `alpn_offers` and `certificate_list` (PEM; certificates that are not
/// PEM are left out).
fn tls_of(conn: &Value) -> TlsFacts {
    use rustls::pki_types::pem::PemObject as _;
    let text = |v: &Value| match v {
        Value::Str(s) => Some(s.clone()),
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    let field = |key: &str| conn.get(key).and_then(text);
    let list = |key: &str| match conn.get(key) {
        Some(Value::List(items)) => items.as_slice(),
        _ => &[],
    };
    TlsFacts {
        sni: field("sni"),
        alpn: field("alpn"),
        version: field("tls_version"),
        cipher: field("cipher"),
        alpn_offers: list("alpn_offers").iter().filter_map(text).collect(),
        certificates: list("certificate_list")
            .iter()
            .filter_map(|pem| {
                let der =
                    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()?).ok()?;
                Some(Bytes::copy_from_slice(der.as_ref()))
            })
            .collect(),
    }
}

/// A time in seconds since the epoch, as the flow format writes times.
fn system_time(t: f64) -> SystemTime {
    Duration::try_from_secs_f64(t.max(0.0))
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d))
        .unwrap_or(UNIX_EPOCH)
}

/// The times and local address of a connection's state.
fn socket_facts_of(conn: &Value) -> std::result::Result<SocketFacts, Reason> {
    let time = |key: &str| time_of(conn, key).map(|t| t.map(system_time));
    Ok(SocketFacts {
        // mitmproxy writes `("", 0)` for an unknown local address.
        local: socket_of(conn.get("sockname")).filter(|a| a.port() != 0),
        started: time("timestamp_start")?,
        tcp_setup: time("timestamp_tcp_setup")?,
        tls_setup: time("timestamp_tls_setup")?,
    })
}

/// The connection facts of a flow: both connections' times and local addresses, the
/// server's TLS, and how its WebSocket closed.
fn facts_of(flow: &Value) -> std::result::Result<RecordedFacts, Reason> {
    let mut facts = RecordedFacts::default();
    if let Some(client) = optional(flow, "client_conn") {
        facts.client = in_context("client_conn", socket_facts_of(client))?;
    }
    if let Some(server) = optional(flow, "server_conn") {
        facts.server.socket = in_context("server_conn", socket_facts_of(server))?;
        facts.server.tls = tls_of(server);
    }
    if let Some(ws) = optional(flow, "websocket") {
        if let Some(Value::Int(code)) = ws.get("close_code") {
            let reason = ws.get("close_reason").and_then(Value::as_bytes);
            let at = in_context("websocket", time_of(ws, "timestamp_end"))?;
            facts.websocket_close = Some(WebSocketClose::recorded(
                u16::try_from(*code).map_err(|_| format!("close code {code} out of range"))?,
                reason.map_or_else(String::new, |r| String::from_utf8_lossy(r).into_owned()),
                matches!(ws.get("closed_by_client"), Some(Value::Bool(true))),
                at.map_or(UNIX_EPOCH, system_time),
            ));
        }
    }
    Ok(facts)
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
        annotations: annotations_of(flow)?,
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
        facts: facts_of(flow)?,
    }))
}

/// The flow's mark, comment and `is_replay`; absent or null, they are empty.
fn annotations_of(flow: &Value) -> std::result::Result<Annotations, Reason> {
    let text = |name: &str| match optional(flow, name) {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.clone())),
        Some(Value::Bytes(b)) => Ok(Some(String::from_utf8_lossy(b).into_owned())),
        Some(other) => Err(wrong(name, "text", other)),
    };
    let marked = match optional(flow, "marked") {
        // mitmproxy before 9 marked flows with a boolean; it reads `true` as its
        // default mark.
        Some(Value::Bool(marked)) => if *marked { ":default:" } else { "" }.to_owned(),
        _ => text("marked")?.unwrap_or_default(),
    };
    Ok(Annotations {
        marked,
        comment: text("comment")?.unwrap_or_default(),
        is_replay: text("is_replay")?,
    })
}

fn recorded_request(req: &Value) -> std::result::Result<RecordedRequest, Reason> {
    let port = int_of(req, "port")?;
    Ok(RecordedRequest {
        method: string_of(req, "method")?,
        scheme: string_of(req, "scheme")?,
        host: string_of(req, "host")?,
        port: u16::try_from(port).map_err(|_| format!("port {port} out of range"))?,
        path: string_of(req, "path")?,
        version: spelled_version(&string_of(req, "http_version")?),
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
        version: spelled_version(&string_of(res, "http_version")?),
        headers: headers_of(res)?,
        body: body_of(res, meta, "response")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::flows::tests::record;
    use crate::capture::flows::writer::flow_state;
    use crate::capture::flows::FlowWriter;
    use crate::capture::Sink;

    fn dict(entries: Vec<(&str, Value)>) -> Value {
        Value::Dict(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    fn text(s: &str) -> Value {
        Value::from(s)
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
    fn marks_comments_and_replays_read_as_mitmproxy_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.flows");
        let with = |changes: &[(&str, Value)]| {
            let Value::Dict(mut entries) = flow_state(&record()) else {
                unreachable!("a flow is a dictionary")
            };
            for (name, value) in changes {
                let entry = entries
                    .iter_mut()
                    .find(|(k, _)| k.as_bytes() == Some(name.as_bytes()));
                entry.expect("a field of every flow").1 = value.clone();
            }
            let mut data = Vec::new();
            Value::Dict(entries).encode(&mut data).unwrap();
            std::fs::write(&path, &data).unwrap();
            read_flows(&path).map(|mut r| r.remove(0).annotations)
        };
        let none = with(&[
            ("marked", text("")),
            ("comment", text("")),
            ("is_replay", Value::Null),
        ])
        .unwrap();
        assert_eq!(none, Annotations::default());
        // Older mitmproxy marked with a boolean; bytes are text too.
        let old = with(&[
            ("marked", Value::Bool(true)),
            ("comment", Value::Bytes(Bytes::from_static(b"a note"))),
            ("is_replay", text("response")),
        ])
        .unwrap();
        assert_eq!(
            (
                old.marked.as_str(),
                old.comment.as_str(),
                old.is_replay.as_deref()
            ),
            (":default:", "a note", Some("response"))
        );
        assert_eq!(with(&[("marked", Value::Bool(false))]).unwrap().marked, "");
        let err = with(&[("comment", Value::Int(3))]).unwrap_err().to_string();
        assert!(err.contains("`comment` is a"), "{err}");
    }

    #[test]
    fn connection_facts_and_a_websocket_close_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ws.flows");
        let mut ws = record();
        ws.websocket = Some(vec![RecordedMessage {
            from_client: true,
            text: true,
            data: Bytes::from_static(b"hi"),
            at: UNIX_EPOCH + Duration::from_millis(1_700_000_001_500),
        }]);
        ws.facts.websocket_close = Some(crate::capture::record::example::close());
        let mut w = FlowWriter::create(&path).unwrap();
        w.write(&ws).unwrap();
        w.flush().unwrap();
        let back = read_flows(&path).unwrap();
        assert_eq!(back[0].facts, ws.facts);
        assert_eq!(back[0].tls, ws.tls);
        assert_eq!(back[0].websocket, ws.websocket);
        // Every fact is there: none was left at its default.
        let f = &back[0].facts;
        assert!(f.client.local.is_some() && f.client.tls_setup.is_some());
        assert!(f.server.socket.local.is_some() && f.server.socket.tcp_setup.is_some());
        assert_eq!(f.server.tls.certificates.len(), 2);
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
}
