//! A record's connection facts ([`RecordedFacts`]) and mitmproxy's mark, comment and
//! replay ([`Annotations`](crate::capture::Annotations)) in the `flows` table: the
//! columns schema version 3 adds ([`V3`]), their values for an insert, and reading them
//! back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::Value;
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

fn micros(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| {
        let us = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros();
        Value::Integer(i64::try_from(us).unwrap_or(i64::MAX))
    })
}

fn text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, |s| Value::Text(s.to_owned()))
}

/// A list of ALPN ids as a JSON array (an id may hold any byte but NUL); `NULL` when
/// there is none.
fn offers(tls: &TlsFacts) -> Value {
    if tls.alpn_offers.is_empty() {
        return Value::Null;
    }
    serde_json::to_string(&tls.alpn_offers).map_or(Value::Null, Value::Text)
}

/// A certificate chain as PEM blocks, its own certificate first; `NULL` without one.
fn chain(tls: &TlsFacts) -> Value {
    use base64::Engine as _;
    if tls.certificates.is_empty() {
        return Value::Null;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut pem = String::new();
    for der in &tls.certificates {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let encoded = b64.encode(der);
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    Value::Text(pem)
}

/// The values of [`COLUMNS`] for `record`.
pub(super) fn values(record: &Record) -> [Value; COUNT] {
    let f = &record.facts;
    let (client, server) = (&f.client, &f.server.socket);
    let tls = &f.server.tls;
    let close = f.websocket_close.as_ref();
    [
        text(client.local.map(|a| a.to_string()).as_deref()),
        micros(client.started),
        micros(client.tls_setup),
        text(record.tls.cipher.as_deref()),
        offers(&record.tls),
        text(server.local.map(|a| a.to_string()).as_deref()),
        micros(server.started),
        micros(server.tcp_setup),
        micros(server.tls_setup),
        text(tls.sni.as_deref()),
        text(tls.alpn.as_deref()),
        text(tls.version.as_deref()),
        text(tls.cipher.as_deref()),
        offers(tls),
        chain(tls),
        close.map_or(Value::Null, |c| Value::Integer(c.code.into())),
        text(close.map(|c| c.reason.as_str())),
        close.map_or(Value::Null, |c| Value::Integer(c.by_client.into())),
        micros(close.map(|c| c.at)),
        text(
            Some(&record.annotations.marked)
                .filter(|m| !m.is_empty())
                .map(String::as_str),
        ),
        text(
            Some(&record.annotations.comment)
                .filter(|c| !c.is_empty())
                .map(String::as_str),
        ),
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
