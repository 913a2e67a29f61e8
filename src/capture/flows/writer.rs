//! [`FlowWriter`]: records as mitmproxy's HTTP flows, format version
//! [`FLOW_FORMAT_VERSION`], to a file or any stream.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::FLOW_FORMAT_VERSION;
use crate::capture::tnetstring::Encoder;
use crate::capture::{Record, RecordedBody, Sink};
use crate::core::TlsFacts;
use crate::error::{Error, Result};
use crate::http::message::Headers;

/// Writes each [`Record`] as one of mitmproxy's HTTP flows, to a new file
/// ([`create`](FlowWriter::create)) or to any stream ([`new`](Self::new)): flow files
/// are flows one after another.
///
/// Each flow is encoded straight into the writer's own buffer, which goes to `out` in
/// one `write_all` once it holds 128 KiB (only whole flows), and on
/// [`Sink::flush`] (which the capture's writer calls whenever its queue is empty, and
/// every [`FLUSH_AFTER`](crate::capture::FLUSH_AFTER) when busy) and
/// [`finish`](Self::finish), which flushes and gives the stream back. A file made by
/// `create` is behind a [`BufWriter`], which a whole batch goes past.
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
    /// The stream; `None` only once [`finish`](Self::finish) has taken it.
    out: Option<W>,
    /// The file written, when `create` made it: named in errors.
    path: Option<PathBuf>,
    /// Whether `CONNECT` flows are written ([`keep_connects`](Self::keep_connects)).
    keep_connects: bool,
    /// The flows encoded and not yet handed to `out` (whole flows only): kept from
    /// one batch to the next, so that a flow costs no allocation (given back after a
    /// large one).
    buf: Vec<u8>,
}

/// How many bytes of flows [`FlowWriter`] gathers before it hands them to its stream
/// in one write: one system call for dozens of flows, each copied once.
const BATCH: usize = 128 * 1024;
/// The most [`FlowWriter`]'s buffer keeps between batches; a larger one (a batch that
/// ends with a large flow) is freed once written.
const KEPT_BUFFER: usize = 4 * BATCH;

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
            out: Some(BufWriter::new(file)),
            path: Some(path),
            keep_connects: false,
            buf: Vec::new(),
        })
    }
}

impl<W: Write> FlowWriter<W> {
    /// A writer of flows to `out`.
    pub fn new(out: W) -> Self {
        FlowWriter {
            out: Some(out),
            path: None,
            keep_connects: false,
            buf: Vec::new(),
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
    /// [kept](Self::keep_connects)): into the writer's buffer, handed to the stream
    /// with the flows before it once the buffer is full.
    ///
    /// # Errors
    ///
    /// What writing to the stream returns (naming the file, for one `create` made),
    /// when this flow filled the buffer; the flows in it are then dropped.
    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        if record.request.is_connect() && !self.keep_connects {
            return Ok(());
        }
        encode_flow(&mut self.buf, record, &Ids::random());
        if self.buf.len() >= BATCH {
            self.write_batch()?;
        }
        Ok(())
    }

    /// Hands the buffered flows to the stream and flushes it, then gives it back.
    ///
    /// # Errors
    ///
    /// What writing to or flushing the stream returns.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_all()?;
        self.out
            .take()
            .ok_or_else(|| io::Error::other("the flow writer was finished already"))
    }

    /// Hands the buffered flows to the stream (emptying the buffer, even on an
    /// error: flows that cannot be written are not kept to grow without end).
    fn write_batch(&mut self) -> io::Result<()> {
        let Some(out) = self.out.as_mut().filter(|_| !self.buf.is_empty()) else {
            return Ok(());
        };
        let written = out.write_all(&self.buf);
        self.buf.clear();
        if self.buf.capacity() > KEPT_BUFFER {
            self.buf = Vec::new();
        }
        written.map_err(|e| self.named(e))
    }

    /// Hands the buffered flows to the stream and flushes it.
    fn flush_all(&mut self) -> io::Result<()> {
        self.write_batch()?;
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        out.flush().map_err(|e| self.named(e))
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

impl<W: Write> Drop for FlowWriter<W> {
    /// Hands the buffered flows to the stream, as a [`BufWriter`] does when dropped
    /// (errors are lost: call [`finish`](Self::finish) or [`Sink::flush`] to see them).
    fn drop(&mut self) {
        let _ = self.write_batch();
    }
}

impl<W: Write + Send + 'static> Sink for FlowWriter<W> {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        FlowWriter::write(self, record)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_all()
    }
}

/// A UUID as text, `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`.
type Uuid = [u8; 36];

std::thread_local! {
    /// The random bits of this thread's UUIDs: a small fast generator (xoshiro),
    /// seeded from the thread's cryptographic one. Ids must not repeat, not be
    /// unguessable; three a flow from ChaCha cost a tenth of the writer's time a flow.
    static IDS: std::cell::RefCell<rand::rngs::SmallRng> =
        std::cell::RefCell::new(rand::SeedableRng::from_rng(&mut rand::rng()));
}

/// A random (version 4) UUID, as mitmproxy names flows and connections.
fn uuid() -> Uuid {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = IDS.with(|rng| rand::Rng::random(&mut *rng.borrow_mut()));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    out
}

/// The ids of one flow and of its two connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ids {
    flow: Uuid,
    client: Uuid,
    server: Uuid,
}

impl Ids {
    /// New random ids.
    pub(super) fn random() -> Self {
        Ids {
            flow: uuid(),
            client: uuid(),
            server: uuid(),
        }
    }
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn float_or_null(e: &mut Encoder<'_>, t: Option<f64>) {
    match t {
        Some(t) => e.float(t),
        None => e.null(),
    }
}

fn str_or_null(e: &mut Encoder<'_>, s: Option<&str>) {
    match s {
        Some(s) => e.str(s),
        None => e.null(),
    }
}

/// `(host, port)`, as mitmproxy keeps addresses.
fn address(e: &mut Encoder<'_>, host: &str, port: u16) {
    e.list(|e| {
        e.str(host);
        e.int(i64::from(port));
    });
}

/// A socket address as `(host, port)`, or what `none` writes for none.
fn socket(e: &mut Encoder<'_>, addr: Option<SocketAddr>, none: fn(&mut Encoder<'_>)) {
    let Some(a) = addr else {
        none(e);
        return;
    };
    // An IP address as text is at most 45 bytes: written on the stack.
    let mut ip = [0u8; 64];
    let len = match a.ip() {
        // The common case, by hand: what `Display` writes, without its machinery.
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    ip[len] = b'.';
                    len += 1;
                }
                for (digit, place) in [(octet / 100, 100), ((octet / 10) % 10, 10), (octet % 10, 1)]
                {
                    if octet >= place || place == 1 {
                        ip[len] = b'0' + digit;
                        len += 1;
                    }
                }
            }
            len
        }
        IpAddr::V6(v6) => {
            let mut cursor = io::Cursor::new(&mut ip[..]);
            // Cannot fail: the buffer is long enough for any address.
            let _ = write!(cursor, "{v6}");
            usize::try_from(cursor.position()).unwrap_or(0)
        }
    };
    let host = std::str::from_utf8(&ip[..len]).unwrap_or_default();
    address(e, host, a.port());
}

fn headers(e: &mut Encoder<'_>, h: &Headers) {
    e.list(|e| {
        for (name, value) in h.iter() {
            e.list(|e| {
                e.bytes(name.as_bytes());
                e.bytes(value);
            });
        }
    });
}

/// The fields every connection's state has: its TLS as `facts` says (the server name
/// `sni` when the facts have none; the certificates as PEM, as mitmproxy keeps them),
/// its times.
fn connection_fields(
    e: &mut Encoder<'_>,
    id: &Uuid,
    tls: bool,
    facts: &TlsFacts,
    sni: Option<&str>,
    start: Option<f64>,
    tls_setup: Option<SystemTime>,
) {
    e.key("id").ascii(id);
    e.key("transport_protocol").str("tcp");
    e.key("error").null();
    e.key("tls").bool(tls);
    e.key("certificate_list").list(|e| {
        for der in &facts.certificates {
            pem(e, der);
        }
    });
    e.key("alpn");
    match &facts.alpn {
        Some(a) => e.bytes(a.as_bytes()),
        None => e.null(),
    }
    e.key("alpn_offers").list(|e| {
        for offer in &facts.alpn_offers {
            e.bytes(offer.as_bytes());
        }
    });
    e.key("cipher");
    str_or_null(e, facts.cipher.as_deref());
    e.key("cipher_list").list(|_| {});
    e.key("tls_version");
    str_or_null(e, facts.version.as_deref());
    e.key("sni");
    str_or_null(e, facts.sni.as_deref().or(sni));
    e.key("timestamp_start");
    float_or_null(e, start);
    e.key("timestamp_end").null();
    e.key("timestamp_tls_setup");
    float_or_null(e, tls_setup.map(seconds));
}

/// A DER certificate as PEM text (bytes), as mitmproxy keeps certificates.
fn pem(e: &mut Encoder<'_>, der: &[u8]) {
    use base64::Engine as _;
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----\n";
    const END: &[u8] = b"-----END CERTIFICATE-----\n";
    // 48 bytes are one line of 64 characters: only the last line is padded.
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut text = Vec::with_capacity(BEGIN.len() + der.len() * 4 / 3 + der.len() / 48 + 40);
    text.extend_from_slice(BEGIN);
    for line in der.chunks(48) {
        let at = text.len();
        text.resize(at + 64, 0);
        let written = b64.encode_slice(line, &mut text[at..]).unwrap_or(0);
        text.truncate(at + written);
        text.push(b'\n');
    }
    text.extend_from_slice(END);
    e.bytes(&text);
}

/// What this crate keeps in a flow's `metadata` beside mitmproxy's own fields.
fn body_metadata(e: &mut Encoder<'_>, body: &RecordedBody, prefix: &str) {
    let (size, truncated) = match prefix {
        "request" => ("request_body_size", "request_body_truncated"),
        _ => ("response_body_size", "response_body_truncated"),
    };
    e.key(size)
        .int(i64::try_from(body.size).unwrap_or(i64::MAX));
    e.key(truncated).bool(body.truncated);
}

/// The dictionary-size hint for a message: its body and its headers, and room for
/// the rest.
fn message_hint(body: &Bytes, headers: &Headers) -> usize {
    body.len() + headers.len() * 40 + 250
}

/// Appends `record` to `out` as one of mitmproxy's HTTP flows, format
/// [`FLOW_FORMAT_VERSION`], named by `ids`.
pub(super) fn encode_flow(out: &mut Vec<u8>, record: &Record, ids: &Ids) {
    let start = seconds(record.started_at);
    let at = |d: Option<Duration>| d.map(|d| start + d.as_secs_f64());
    let t = &record.timings;
    let req = &record.request;
    let https = req.scheme == "https";
    let facts = &record.facts;
    let notes = &record.annotations;

    let mut hint = message_hint(&req.body.data, &req.headers) + 2000;
    if let Some(res) = &record.response {
        hint += message_hint(&res.body.data, &res.headers);
    }
    Encoder::new(out).dict_sized(hint, |e| {
        e.key("version").int(FLOW_FORMAT_VERSION);
        e.key("type").str("http");
        e.key("id").ascii(&ids.flow);
        e.key("error");
        match &record.error {
            Some(msg) => {
                let when = at(t.response_end)
                    .or(at(t.response_first_byte))
                    .or(at(t.request_end))
                    .unwrap_or(start);
                e.dict(|e| {
                    e.key("msg").str(msg);
                    e.key("timestamp").float(when);
                });
            }
            None => e.null(),
        }

        e.key("client_conn").dict(|e| {
            // The name the client asked for; a record made before TLS facts were kept
            // says only that it spoke TLS, to the request's host.
            let sni = record.client_tls.then_some(req.host.as_str());
            // A record made before connection facts were kept: the request's start.
            let client_start = facts.client.started.map_or(start, seconds);
            connection_fields(
                e,
                &ids.client,
                record.client_tls,
                &record.tls,
                sni,
                Some(client_start),
                facts.client.tls_setup,
            );
            e.key("peername");
            socket(e, record.client, |e| address(e, "", 0));
            e.key("sockname");
            socket(e, facts.client.local, |e| address(e, "", 0));
            e.key("mitmcert").null();
            e.key("proxy_mode").str("regular");
        });

        e.key("server_conn").dict(|e| {
            let up = &facts.server;
            let server_start = match up.socket.started {
                Some(t) => Some(seconds(t)),
                None => record.server.map(|_| start),
            };
            let sni = https.then_some(req.host.as_str());
            connection_fields(
                e,
                &ids.server,
                https,
                &up.tls,
                sni,
                server_start,
                up.socket.tls_setup,
            );
            e.key("peername");
            socket(e, record.server, |e| e.null());
            e.key("sockname");
            socket(e, up.socket.local, |e| e.null());
            e.key("address");
            address(e, &req.host, req.port);
            e.key("timestamp_tcp_setup");
            float_or_null(e, up.socket.tcp_setup.map(seconds));
            e.key("via").null();
        });

        e.key("intercepted").bool(false);
        e.key("is_replay");
        str_or_null(e, notes.is_replay.as_deref());
        e.key("marked").str(&notes.marked);
        e.key("metadata").dict(|e| {
            e.key("mitm").dict(|e| {
                body_metadata(e, &req.body, "request");
                if let Some(res) = &record.response {
                    body_metadata(e, &res.body, "response");
                }
            });
        });
        e.key("comment").str(&notes.comment);
        e.key("timestamp_created").float(start);
        e.key("backup").null();

        e.key("request")
            .dict_sized(message_hint(&req.body.data, &req.headers), |e| {
                e.key("http_version").bytes(req.version.as_bytes());
                e.key("headers");
                headers(e, &req.headers);
                e.key("content").bytes(&req.body.data);
                e.key("trailers").null();
                e.key("timestamp_start").float(start);
                e.key("timestamp_end");
                float_or_null(e, at(t.request_end));
                e.key("host").str(&req.host);
                e.key("port").int(i64::from(req.port));
                e.key("method").bytes(req.method.as_bytes());
                e.key("scheme").bytes(req.scheme.as_bytes());
                // CONNECT and HTTP/2 requests carry their authority (`:authority`);
                // other HTTP/1 ones leave it empty, as mitmproxy does.
                e.key("authority");
                let default = if https { 443 } else { 80 };
                if req.method == "CONNECT" || (req.version == "HTTP/2.0" && req.port != default) {
                    authority(e, &req.host, req.port);
                } else if req.version == "HTTP/2.0" {
                    e.bytes(req.host.as_bytes());
                } else {
                    e.bytes(b"");
                }
                e.key("path").bytes(req.path.as_bytes());
            });

        e.key("response");
        match &record.response {
            Some(res) => {
                let first = at(t.response_first_byte)
                    .or(at(t.request_end))
                    .unwrap_or(start);
                e.dict_sized(message_hint(&res.body.data, &res.headers), |e| {
                    e.key("http_version").bytes(res.version.as_bytes());
                    e.key("headers");
                    headers(e, &res.headers);
                    e.key("content").bytes(&res.body.data);
                    e.key("trailers").null();
                    e.key("timestamp_start").float(first);
                    e.key("timestamp_end");
                    float_or_null(e, at(t.response_end));
                    e.key("status_code").int(i64::from(res.status));
                    e.key("reason").bytes(res.reason.as_bytes());
                });
            }
            None => e.null(),
        }
        e.key("websocket");
        websocket_state(e, record);
    });
}

/// `host:port` as bytes.
fn authority(e: &mut Encoder<'_>, host: &str, port: u16) {
    let mut text = Vec::with_capacity(host.len() + 6);
    text.extend_from_slice(host.as_bytes());
    // Writing to a Vec cannot fail.
    let _ = write!(text, ":{port}");
    e.bytes(&text);
}

/// The WebSocket state of a flow: its messages as `[opcode, from_client, content,
/// timestamp, dropped, injected]`, as mitmproxy keeps them; null for other flows.
fn websocket_state(e: &mut Encoder<'_>, record: &Record) {
    let Some(messages) = &record.websocket else {
        e.null();
        return;
    };
    let close = record.facts.websocket_close.as_ref();
    let hint = messages.iter().map(|m| m.data.len() + 60).sum::<usize>() + 200;
    e.dict_sized(hint, |e| {
        let list_hint = hint;
        e.key("messages");
        e.list_sized(list_hint, |e| {
            for m in messages {
                e.list(|e| {
                    e.int(if m.text { 1 } else { 2 });
                    e.bool(m.from_client);
                    e.bytes(&m.data);
                    e.float(seconds(m.at));
                    e.bool(false);
                    e.bool(false);
                });
            }
        });
        e.key("closed_by_client");
        match close {
            Some(c) => e.bool(c.by_client),
            None => e.null(),
        }
        e.key("close_code");
        match close {
            Some(c) => e.int(i64::from(c.code)),
            None => e.null(),
        }
        e.key("close_reason");
        str_or_null(e, close.map(|c| c.reason.as_str()));
        e.key("timestamp_end");
        float_or_null(e, close.map(|c| seconds(c.at)));
    });
}

/// The flow `record` is written as, decoded (for tests that change a field).
#[cfg(test)]
pub(super) fn flow_state(record: &Record) -> crate::capture::tnetstring::Value {
    let mut out = Vec::new();
    encode_flow(&mut out, record, &Ids::random());
    let mut decoder = crate::capture::tnetstring::Decoder::new(&out[..]);
    let value = decoder.next_value().expect("a flow written decodes");
    value.expect("a flow was written")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::flows::read_flows;
    use crate::capture::flows::tests::record;
    use crate::capture::tnetstring::Value;
    use crate::capture::RecordedMessage;

    fn uuid_str(id: &Uuid) -> &str {
        std::str::from_utf8(id).unwrap()
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
        let id = uuid_str(&uuid()).to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!("89ab".contains(&id[19..20]), "{id}");
        let dashes: Vec<usize> = id.match_indices('-').map(|(i, _)| i).collect();
        assert_eq!(dashes, [8, 13, 18, 23]);
        assert!(id
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(uuid_str(&uuid()), id);
    }

    #[test]
    fn ipv4_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "9.10.99.100",
            "127.0.0.1",
            "255.250.205.199",
        ] {
            let addr: SocketAddr = format!("{ip}:8").parse().unwrap();
            let mut out = Vec::new();
            socket(&mut Encoder::new(&mut out), Some(addr), |e| e.null());
            let mut want = Vec::new();
            Value::List(vec![Value::from(ip), Value::Int(8)])
                .encode(&mut want)
                .unwrap();
            assert_eq!(out, want, "{ip}");
        }
    }

    /// A stream that keeps each write apart.
    #[derive(Clone, Default)]
    struct Writes(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// How many values `data` holds, all whole.
    fn whole_values(data: &[u8]) -> usize {
        let mut decoder = crate::capture::tnetstring::Decoder::new(data);
        let mut n = 0;
        while decoder.next_value().unwrap().is_some() {
            n += 1;
        }
        n
    }

    #[test]
    fn flows_reach_the_stream_in_batches_of_whole_flows() {
        let writes = Writes::default();
        let mut w = FlowWriter::new(writes.clone());
        let mut one = Vec::new();
        encode_flow(&mut one, &record(), &Ids::random());
        let count = 3 * BATCH / one.len() + 1;
        for _ in 0..count {
            w.write(&record()).unwrap();
        }
        let batches = writes.0.lock().unwrap().clone();
        assert!(batches.len() >= 2, "{} batches", batches.len());
        assert!(batches.iter().all(|b| b.len() >= BATCH));
        let mut seen: usize = batches.iter().map(|b| whole_values(b)).sum();
        assert!(seen < count, "the last flows wait for a flush");
        Sink::flush(&mut w).unwrap();
        let after = writes.0.lock().unwrap().clone();
        assert_eq!(after.len(), batches.len() + 1);
        seen += whole_values(&after[batches.len()]);
        assert_eq!(seen, count);
        // Nothing is left to write, so nothing is written.
        drop(w.finish().unwrap());
        assert_eq!(writes.0.lock().unwrap().len(), after.len());
    }

    #[test]
    fn a_writer_dropped_unfinished_writes_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dropped.flows");
        let mut w = FlowWriter::create(&path).unwrap();
        w.write(&record()).unwrap();
        w.write(&record()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        drop(w);
        assert_eq!(read_flows(&path).unwrap().len(), 2);
    }

    /// Records unlike each other in every way a flow's bytes depend on.
    fn varied() -> Vec<Record> {
        let mut all = vec![record()];
        let mut r = record();
        r.response = None;
        r.error = None;
        all.push(r);
        let mut r = record();
        r.request.method = "CONNECT".into();
        r.request.scheme = String::new();
        r.request.path = String::new();
        all.push(r);
        for port in [443, 8443] {
            let mut r = record();
            r.request.version = "HTTP/2.0".into();
            r.request.port = port;
            all.push(r);
        }
        // Plain HTTP, nothing known of the connections, nothing annotated.
        let mut r = record();
        r.request.scheme = "http".into();
        r.request.port = 80;
        r.request.version = "HTTP/2.0".into();
        r.client_tls = false;
        r.tls = TlsFacts::default();
        r.facts = Default::default();
        r.client = None;
        r.server = None;
        r.annotations = Default::default();
        r.timings = Default::default();
        r.error = Some("ünïcode; \"quoted\"".into());
        all.push(r);
        // A TLS client that sent no name; certificates of every length of last line.
        let mut r = record();
        r.tls.sni = None;
        r.tls.alpn = None;
        r.facts.server.tls.sni = None;
        r.facts.server.tls.certificates = [0, 1, 47, 48, 49, 96, 1000, 4000]
            .map(|n| Bytes::from((0..n).map(|i| (i * 7) as u8).collect::<Vec<u8>>()))
            .to_vec();
        all.push(r);
        // Bodies whose lengths cross the powers of ten, headers in numbers.
        for len in [0, 9, 10, 999, 1000, 1024, 9_000, 99_999, 100_000, 300_000] {
            let mut r = record();
            let body = Bytes::from(vec![b'b'; len]);
            r.request.body = RecordedBody::whole(body.clone());
            let res = r.response.as_mut().unwrap();
            res.body = RecordedBody {
                data: body.slice(..len / 2),
                size: len as u64,
                truncated: len % 2 == 1,
            };
            for i in 0..len % 37 {
                res.headers.append("X-Many", format!("value {i}"));
            }
            all.push(r);
        }
        let mut r = record();
        r.request.headers = Headers::new();
        r.response.as_mut().unwrap().headers = Headers::new();
        all.push(r);
        // WebSockets: messages, none, with and without a close.
        for (count, closed) in [(0, false), (3, true), (300, true), (2, false)] {
            let mut r = record();
            r.websocket = Some(
                (0..count)
                    .map(|i| RecordedMessage {
                        from_client: i % 2 == 0,
                        text: i % 3 == 0,
                        data: Bytes::from(vec![b'm'; i * 5]),
                        at: UNIX_EPOCH + Duration::from_micros(1_700_000_001_000_123 + i as u64),
                    })
                    .collect(),
            );
            if closed {
                r.facts.websocket_close = Some(crate::capture::record::example::close());
            }
            all.push(r);
        }
        all
    }

    /// Ids that do not change from one run to the next: the `n`th flow's.
    fn fixed_ids(n: usize) -> Ids {
        let id = |k: usize| -> Uuid {
            let text = format!("00000000-0000-4000-8000-{k:012x}");
            text.as_bytes().try_into().unwrap()
        };
        Ids {
            flow: id(3 * n),
            client: id(3 * n + 1),
            server: id(3 * n + 2),
        }
    }

    /// The flows of [`varied`]'s records shorter than 10 000 bytes, with fixed ids.
    fn golden_flows(encode: impl Fn(&Record, &Ids) -> Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, r) in varied().iter().enumerate() {
            let flow = encode(r, &fixed_ids(n));
            if flow.len() < 10_000 {
                out.extend(flow);
            }
        }
        out
    }

    #[test]
    fn writes_the_bytes_the_value_tree_wrote() {
        // Written by the writer that built a `Value` tree per flow, before flows were
        // encoded in place; mitmproxy 10 and 11 open such files (tests/it/flows.rs).
        let golden = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/flows-writer.flows"
        ));
        let new = golden_flows(|r, ids| {
            let mut out = Vec::new();
            encode_flow(&mut out, r, ids);
            out
        });
        assert_eq!(whole_values(golden), 17);
        if new != golden {
            let at = new.iter().zip(golden).take_while(|(a, b)| a == b).count();
            let around = |d: &[u8]| {
                String::from_utf8_lossy(&d[at.saturating_sub(80)..(at + 80).min(d.len())])
                    .into_owned()
            };
            panic!(
                "differs at byte {at}:\n{}\n{}",
                around(&new),
                around(golden)
            );
        }
    }

    #[test]
    fn every_flow_is_framed_as_its_value_encodes() {
        for (i, r) in varied().iter().enumerate() {
            let mut new = Vec::new();
            encode_flow(&mut new, r, &Ids::random());
            let mut decoder = crate::capture::tnetstring::Decoder::new(&new[..]);
            let value = decoder.next_value().unwrap().unwrap();
            assert_eq!(decoder.offset(), new.len() as u64, "record {i}");
            let mut again = Vec::new();
            value.encode(&mut again).unwrap();
            assert!(again == new, "record {i}");
        }
    }
}
