//! A record's connection facts ([`RecordedFacts`]) and mitmproxy's mark, comment and
//! replay ([`Annotations`](crate::capture::Annotations)) in the `flows` table: the
//! columns schema version 3 adds ([`V3`]), their values for an insert, and reading them
//! back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Row;

use crate::capture::{Record, RecordedFacts};
use crate::core::TlsFacts;
use crate::http::websocket::WebSocketClose;

/// Version 3: the connection facts mitmproxy's flows hold (both connections' local
/// addresses and times, the TLS of each side, the server's certificates), how a
/// WebSocket closed, and the mark, comment and replay of mitmproxy's flows (`marked`,
/// `comment`, `is_replay`). Columns without a default: no row is rewritten, and the flows of
/// older versions have `NULL`s, as records that know none of these facts.
pub(super) const V3: &str = "
ALTER TABLE flows ADD COLUMN client_local TEXT;
ALTER TABLE flows ADD COLUMN client_started_at INTEGER;
ALTER TABLE flows ADD COLUMN client_tls_setup_at INTEGER;
ALTER TABLE flows ADD COLUMN client_cipher TEXT;
ALTER TABLE flows ADD COLUMN client_alpn_offers TEXT;
ALTER TABLE flows ADD COLUMN server_local TEXT;
ALTER TABLE flows ADD COLUMN server_started_at INTEGER;
ALTER TABLE flows ADD COLUMN server_tcp_setup_at INTEGER;
ALTER TABLE flows ADD COLUMN server_tls_setup_at INTEGER;
ALTER TABLE flows ADD COLUMN server_sni TEXT;
ALTER TABLE flows ADD COLUMN server_alpn TEXT;
ALTER TABLE flows ADD COLUMN server_tls_version TEXT;
ALTER TABLE flows ADD COLUMN server_cipher TEXT;
ALTER TABLE flows ADD COLUMN server_alpn_offers TEXT;
ALTER TABLE flows ADD COLUMN server_certificates TEXT;
ALTER TABLE flows ADD COLUMN ws_close_code INTEGER;
ALTER TABLE flows ADD COLUMN ws_close_reason TEXT;
ALTER TABLE flows ADD COLUMN ws_closed_by_client INTEGER;
ALTER TABLE flows ADD COLUMN ws_closed_at INTEGER;
ALTER TABLE flows ADD COLUMN marked TEXT;
ALTER TABLE flows ADD COLUMN comment TEXT;
ALTER TABLE flows ADD COLUMN is_replay TEXT;
";

/// The columns of [`V3`], in the order of [`values`] and [`read`].
pub(super) const COLUMNS: &str = "client_local, client_started_at, client_tls_setup_at,
    client_cipher, client_alpn_offers, server_local, server_started_at,
    server_tcp_setup_at, server_tls_setup_at, server_sni, server_alpn, server_tls_version,
    server_cipher, server_alpn_offers, server_certificates, ws_close_code,
    ws_close_reason, ws_closed_by_client, ws_closed_at, marked, comment, is_replay";

/// How many columns [`COLUMNS`] names.
pub(super) const COUNT: usize = 22;

/// The columns of [`COLUMNS`] for a `SELECT … FROM flows f` of a database of schema
/// `version` (`NULL`s before version 3).
pub(super) fn select(version: u32) -> String {
    if version >= 3 {
        COLUMNS
            .split(',')
            .map(|c| format!("f.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        vec!["NULL"; COUNT].join(", ")
    }
}

fn micros(t: Option<SystemTime>) -> ToSqlOutput<'static> {
    t.map_or(NULL, |t| {
        let us = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros();
        ToSqlOutput::Borrowed(ValueRef::Integer(i64::try_from(us).unwrap_or(i64::MAX)))
    })
}

/// SQL's `NULL`, as a value to bind.
const NULL: ToSqlOutput<'static> = ToSqlOutput::Borrowed(ValueRef::Null);

/// `s`, borrowed, or `NULL`.
fn text(s: Option<&str>) -> ToSqlOutput<'_> {
    s.map_or(NULL, |s| {
        ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))
    })
}

fn integer(n: Option<i64>) -> ToSqlOutput<'static> {
    n.map_or(NULL, |n| ToSqlOutput::Borrowed(ValueRef::Integer(n)))
}

/// A list of ALPN ids as a JSON array (an id may hold any byte but NUL), made in
/// `out`; `NULL` when there is none.
fn offers<'a>(out: &'a mut Vec<u8>, tls: &TlsFacts) -> ToSqlOutput<'a> {
    out.clear();
    if tls.alpn_offers.is_empty() || serde_json::to_writer(&mut *out, &tls.alpn_offers).is_err() {
        return NULL;
    }
    // JSON is UTF-8.
    ToSqlOutput::Borrowed(ValueRef::Text(out))
}

/// A certificate chain as PEM blocks, its own certificate first, made in `out`;
/// `NULL` without one.
fn chain<'a>(out: &'a mut String, tls: &TlsFacts) -> ToSqlOutput<'a> {
    use base64::Engine as _;
    out.clear();
    if tls.certificates.is_empty() {
        return NULL;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut encoded = String::new();
    for der in &tls.certificates {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        encoded.clear();
        b64.encode_string(der, &mut encoded);
        for line in encoded.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    text(Some(out))
}

/// An address as stored (`127.0.0.1:5000`, `[::1]:5000`), kept from row to row: the
/// flows of a connection, one after another, share their addresses, which are then
/// not formatted again.
#[derive(Debug, Default)]
pub(super) struct Address {
    addr: Option<std::net::SocketAddr>,
    text: String,
}

impl Address {
    /// `addr` as stored; `NULL` without one.
    pub(super) fn text(&mut self, addr: Option<std::net::SocketAddr>) -> ToSqlOutput<'_> {
        let Some(addr) = addr else {
            return NULL;
        };
        if self.addr != Some(addr) {
            self.text.clear();
            self.text
                .push_str(&crate::capture::digits::AddrText::socket(addr));
            self.addr = Some(addr);
        }
        text(Some(&self.text))
    }
}

/// Where the text of the facts' values is made, kept from row to row: no allocation
/// per flow once they have grown.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    client_local: Address,
    server_local: Address,
    client_offers: Vec<u8>,
    server_offers: Vec<u8>,
    chain: String,
}

/// The values of [`COLUMNS`] for `record`, their text borrowed from it or made in
/// `scratch`.
pub(super) fn values<'a>(record: &'a Record, scratch: &'a mut Scratch) -> [ToSqlOutput<'a>; COUNT] {
    let f = &record.facts;
    let (client, server) = (&f.client, &f.server.socket);
    let tls = &f.server.tls;
    let close = f.websocket_close.as_ref();
    let nonempty = |s: &'a String| Some(s.as_str()).filter(|s| !s.is_empty());
    [
        scratch.client_local.text(client.local),
        micros(client.started),
        micros(client.tls_setup),
        text(record.tls.cipher.as_deref()),
        offers(&mut scratch.client_offers, &record.tls),
        scratch.server_local.text(server.local),
        micros(server.started),
        micros(server.tcp_setup),
        micros(server.tls_setup),
        text(tls.sni.as_deref()),
        text(tls.alpn.as_deref()),
        text(tls.version.as_deref()),
        text(tls.cipher.as_deref()),
        offers(&mut scratch.server_offers, tls),
        chain(&mut scratch.chain, tls),
        integer(close.map(|c| c.code.into())),
        text(close.map(|c| c.reason.as_str())),
        integer(close.map(|c| c.by_client.into())),
        micros(close.map(|c| c.at)),
        text(nonempty(&record.annotations.marked)),
        text(nonempty(&record.annotations.comment)),
        text(record.annotations.is_replay.as_deref()),
    ]
}

/// Reads the columns of [`COLUMNS`], from index `at` of `row`, into `record` (its
/// facts, the client's cipher and ALPN offers, its annotations).
pub(super) fn read(row: &Row<'_>, at: usize, record: &mut Record) -> Result<(), String> {
    let err = |e: rusqlite::Error| e.to_string();
    let text = |i: usize| row.get::<_, Option<String>>(at + i).map_err(err);
    let time = |i: usize| -> Result<Option<SystemTime>, String> {
        let us: Option<i64> = row.get(at + i).map_err(err)?;
        Ok(us.and_then(|us| UNIX_EPOCH.checked_add(Duration::from_micros(us.max(0) as u64))))
    };
    let addr = |i: usize| -> Result<_, String> {
        text(i)?
            .map(|t| t.parse().map_err(|_| format!("not an address: {t}")))
            .transpose()
    };
    let offers = |i: usize| -> Result<Vec<String>, String> {
        Ok(text(i)?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    };
    let mut facts = RecordedFacts::default();
    facts.client.local = addr(0)?;
    facts.client.started = time(1)?;
    facts.client.tls_setup = time(2)?;
    record.tls.cipher = text(3)?;
    record.tls.alpn_offers = offers(4)?;
    let server = &mut facts.server;
    server.socket.local = addr(5)?;
    server.socket.started = time(6)?;
    server.socket.tcp_setup = time(7)?;
    server.socket.tls_setup = time(8)?;
    server.tls.sni = text(9)?;
    server.tls.alpn = text(10)?;
    server.tls.version = text(11)?;
    server.tls.cipher = text(12)?;
    server.tls.alpn_offers = offers(13)?;
    server.tls.certificates = certificates(text(14)?.as_deref());
    let code: Option<i64> = row.get(at + 15).map_err(err)?;
    if let Some(code) = code {
        let by_client: Option<bool> = row.get(at + 17).map_err(err)?;
        facts.websocket_close = Some(WebSocketClose::recorded(
            u16::try_from(code).map_err(|_| format!("close code {code} out of range"))?,
            text(16)?.unwrap_or_default(),
            by_client.unwrap_or(false),
            time(18)?.unwrap_or(UNIX_EPOCH),
        ));
    }
    record.facts = facts;
    record.annotations.marked = text(19)?.unwrap_or_default();
    record.annotations.comment = text(20)?.unwrap_or_default();
    record.annotations.is_replay = text(21)?;
    Ok(())
}

/// The DER certificates of a PEM chain (blocks that do not decode are left out).
fn certificates(pem: Option<&str>) -> Vec<bytes::Bytes> {
    use rustls::pki_types::pem::PemObject as _;
    let Some(pem) = pem else {
        return Vec::new();
    };
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|der| bytes::Bytes::copy_from_slice(der.as_ref()))
        .collect()
}
