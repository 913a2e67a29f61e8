//! A record's connection facts in a HAR entry: the standard fields browsers write
//! (`timings.connect` and `timings.ssl` for the first entry of each server connection,
//! `connection`) and this crate's `_facts`, which keeps every fact so that a HAR
//! written here reads back whole.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;

use super::json::{Json, Object};
use super::model::Timings;
use crate::capture::{Record, RecordedFacts};
use crate::core::{ServerFacts, SocketFacts, TlsFacts};
use crate::http::websocket::WebSocketClose;

/// The server connections whose first entry was written, so that later entries on one
/// give `connect` and `ssl` as `-1`, as browsers and mitmproxy do. Forgotten past
/// [`Seen::MOST`] connections (a connection seen again after that gets its times again):
/// a capture of any length holds a bounded set.
#[derive(Debug, Default)]
pub(super) struct Seen(HashSet<(Option<SocketAddr>, SystemTime)>);

impl Seen {
    const MOST: usize = 1 << 16;

    /// Whether the connection that `facts` describes is new here (and now seen).
    fn first(&mut self, record: &Record) -> bool {
        let socket = &record.facts.server.socket;
        let Some(started) = socket.started else {
            return false;
        };
        if self.0.len() >= Self::MOST {
            self.0.clear();
        }
        self.0.insert((socket.local, started))
    }
}

/// A browser's connection phases as times: connecting begins after `blocked` and
/// `dns`, TCP is up `connect - ssl` later, TLS `ssl` after that (`connect` includes
/// `ssl`). Unknown (all `None`) when `connect` is.
fn phases(started: SystemTime, t: &Timings) -> SocketFacts {
    let known = |v: Option<f64>| v.filter(|v| v.is_finite() && *v >= 0.0);
    let Some(connect) = known(t.connect) else {
        return SocketFacts::default();
    };
    let after = |ms: f64| {
        Duration::try_from_secs_f64(ms / 1000.0)
            .ok()
            .and_then(|d| started.checked_add(d))
    };
    let before = known(t.blocked).unwrap_or(0.0) + known(t.dns).unwrap_or(0.0);
    let ssl = known(t.ssl).filter(|s| *s <= connect);
    SocketFacts {
        local: None,
        started: after(before),
        tcp_setup: after(before + connect - ssl.unwrap_or(0.0)),
        tls_setup: ssl.and_then(|_| after(before + connect)),
    }
}

/// Milliseconds from `a` to `b`.
fn ms_between(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).unwrap_or_default().as_secs_f64() * 1000.0
}

/// Seconds since the epoch, as this crate's HAR fields write times.
fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn time_of(secs: f64) -> Option<SystemTime> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d))
}

/// `timings.connect` and `timings.ssl` of `record`'s entry, in milliseconds: measured
/// for the first entry of a server connection, `-1` for later ones and when unknown.
/// As HAR 1.2 says, `connect` includes `ssl` (the time to a usable connection).
pub(super) fn connect_ssl(record: &Record, seen: &mut Seen) -> (f64, f64) {
    let socket = &record.facts.server.socket;
    let (Some(start), Some(tcp)) = (socket.started, socket.tcp_setup) else {
        return (-1.0, -1.0);
    };
    if !seen.first(record) {
        return (-1.0, -1.0);
    }
    let ssl = socket.tls_setup.map_or(-1.0, |tls| ms_between(tcp, tls));
    (ms_between(start, socket.tls_setup.unwrap_or(tcp)), ssl)
}

/// Writes `_facts` into the entry `e` being written, when there are any (the entry's
/// `connection` is written by the caller, in its place among the keys).
pub(super) fn write_facts(e: &mut Object<'_>, facts: &RecordedFacts) {
    let client = facts.client != SocketFacts::default();
    let server = facts.server != Default::default();
    if !client && !server && facts.websocket_close.is_none() {
        return;
    }
    e.key("_facts").object(|out| {
        if client {
            write_socket(out.key("client"), &facts.client, None);
        }
        if server {
            let tls = (!facts.server.tls.is_empty()).then_some(&facts.server.tls);
            write_socket(out.key("server"), &facts.server.socket, tls);
        }
        if let Some(close) = &facts.websocket_close {
            out.key("websocketClose").object(|c| {
                c.bool("byClient", close.by_client);
                c.u64("code", close.code.into());
                c.str("reason", &close.reason);
                c.f64("time", seconds(close.at));
            });
        }
    });
}

fn write_socket(json: &mut Json<'_>, s: &SocketFacts, tls: Option<&TlsFacts>) {
    let t = |t: Option<SystemTime>| t.map(seconds);
    json.object(|o| {
        match s.local {
            Some(local) => o.key("local").socket_addr(local),
            None => o.key("local").null(),
        }
        o.opt_f64("started", t(s.started));
        o.opt_f64("tcpSetup", t(s.tcp_setup));
        if let Some(tls) = tls {
            write_tls(o.key("tls"), tls);
        }
        o.opt_f64("tlsSetup", t(s.tls_setup));
    });
}

/// Writes a TLS handshake's facts; the certificates as base64 DER.
pub(super) fn write_tls(json: &mut Json<'_>, tls: &TlsFacts) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    json.object(|o| {
        o.opt_str("alpn", tls.alpn.as_deref());
        if !tls.alpn_offers.is_empty() {
            o.key("alpnOffers")
                .strs(tls.alpn_offers.iter().map(String::as_str));
        }
        if !tls.certificates.is_empty() {
            o.key("certificates").array(|a| {
                for c in &tls.certificates {
                    a.item().str(&b64.encode(c));
                }
            });
        }
        o.opt_str("cipher", tls.cipher.as_deref());
        o.opt_str("sni", tls.sni.as_deref());
        o.opt_str("version", tls.version.as_deref());
    });
}

/// This crate's `_facts`, as read (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Facts {
    client: Option<Socket>,
    server: Option<Socket>,
    #[serde(rename = "websocketClose")]
    websocket_close: Option<Close>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Socket {
    local: Option<String>,
    started: Option<f64>,
    #[serde(rename = "tcpSetup")]
    tcp_setup: Option<f64>,
    #[serde(rename = "tlsSetup")]
    tls_setup: Option<f64>,
    tls: Option<Tls>,
}

/// A TLS handshake's facts, as read (`_tls` and `_facts.server.tls`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Tls {
    sni: Option<String>,
    alpn: Option<String>,
    version: Option<String>,
    cipher: Option<String>,
    #[serde(rename = "alpnOffers")]
    alpn_offers: Vec<String>,
    certificates: Vec<String>,
}

impl Tls {
    /// The facts; certificates that are not base64 are left out.
    pub(super) fn facts(self) -> TlsFacts {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        TlsFacts {
            sni: self.sni,
            alpn: self.alpn,
            version: self.version,
            cipher: self.cipher,
            alpn_offers: self.alpn_offers,
            certificates: self
                .certificates
                .iter()
                .filter_map(|c| b64.decode(c).ok().map(bytes::Bytes::from))
                .collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Close {
    code: Option<u16>,
    reason: Option<String>,
    #[serde(rename = "byClient")]
    by_client: Option<bool>,
    time: Option<f64>,
}

impl Socket {
    fn facts(&self) -> SocketFacts {
        let t = |t: Option<f64>| t.and_then(time_of);
        SocketFacts {
            local: self.local.as_deref().and_then(|a| a.parse().ok()),
            started: t(self.started),
            tcp_setup: t(self.tcp_setup),
            tls_setup: t(self.tls_setup),
        }
    }
}

/// The facts of an entry: its `_facts` (a value that is not one reads as none); for an
/// entry without them (a browser's), the server connection's times from `timings`
/// (`connect` and `ssl` after `blocked` and `dns`, from `started`, when the entry set
/// up its connection), so that they are written back as they were read.
pub(super) fn read(value: Option<Value>, started: SystemTime, timings: &Timings) -> RecordedFacts {
    if value.is_none() {
        return RecordedFacts {
            server: ServerFacts {
                socket: phases(started, timings),
                ..ServerFacts::default()
            },
            ..RecordedFacts::default()
        };
    }
    let facts: Facts = value
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let mut out = RecordedFacts::default();
    if let Some(client) = &facts.client {
        out.client = client.facts();
    }
    if let Some(mut server) = facts.server {
        out.server.socket = server.facts();
        out.server.tls = server.tls.take().map(Tls::facts).unwrap_or_default();
    }
    if let Some(close) = facts.websocket_close {
        out.websocket_close = Some(WebSocketClose::recorded(
            close.code.unwrap_or(WebSocketClose::NO_STATUS),
            close.reason.unwrap_or_default(),
            close.by_client.unwrap_or(false),
            close.time.and_then(time_of).unwrap_or(UNIX_EPOCH),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::har::tests::record;
    use crate::capture::har::{read_har, HarWriter};
    use crate::capture::record::example;
    use serde_json::json;

    #[test]
    fn facts_read_back_and_connect_and_ssl_come_once_per_connection() {
        let mut first = record("/1", None);
        first.tls = example::client_tls();
        first.facts = example::facts();
        first.facts.websocket_close = Some(example::close());
        let second = first.clone();
        let mut w = HarWriter::new(Vec::new()).unwrap();
        w.write(&first).unwrap();
        w.write(&second).unwrap();
        let bytes = w.finish().unwrap();
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        let entries = doc["log"]["entries"].as_array().unwrap();
        // TCP 250 ms after connecting began, TLS 250 ms after that: `connect` holds
        // both.
        assert_eq!(entries[0]["timings"]["connect"], 500.0);
        assert_eq!(entries[0]["timings"]["ssl"], 250.0);
        assert_eq!(entries[1]["timings"]["connect"], -1.0);
        assert_eq!(entries[1]["timings"]["ssl"], -1.0);
        assert_eq!(entries[0]["connection"], "40000");
        assert_eq!(entries[0]["serverIPAddress"], "127.0.0.1");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.har");
        std::fs::write(&path, &bytes).unwrap();
        let back = read_har(&path).unwrap();
        assert_eq!(back[0].facts, first.facts);
        assert_eq!(back[0].tls, first.tls);
    }

    #[test]
    fn unknown_times_give_minus_one() {
        let r = record("/", None);
        assert_eq!(connect_ssl(&r, &mut Seen::default()), (-1.0, -1.0));
        let none = Timings::default();
        assert_eq!(
            read(Some(json!("junk")), UNIX_EPOCH, &none),
            RecordedFacts::default()
        );
        assert_eq!(read(None, UNIX_EPOCH, &none), RecordedFacts::default());
    }

    #[test]
    fn a_browsers_connect_and_ssl_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("browser.har");
        let entry = |connect: f64, ssl: f64| {
            json!({"startedDateTime": "2024-01-02T03:04:05.000Z",
                "request": {"method": "GET", "url": "https://a.localhost/", "httpVersion": "HTTP/1.1",
                    "headers": [], "cookies": [], "queryString": [], "headersSize": -1, "bodySize": 0},
                "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1",
                    "headers": [], "cookies": [], "content": {"size": 0, "mimeType": ""},
                    "redirectURL": "", "headersSize": -1, "bodySize": 0},
                "cache": {},
                "timings": {"blocked": 1.5, "dns": 2.0, "connect": connect, "ssl": ssl,
                    "send": 0.5, "wait": 10.0, "receive": 1.0}})
        };
        let doc = json!({"log": {"version": "1.2", "creator": {"name": "b", "version": "1"},
            "entries": [entry(30.0, 20.0), entry(-1.0, -1.0)]}});
        std::fs::write(&path, doc.to_string()).unwrap();
        let records = read_har(&path).unwrap();
        let mut w = HarWriter::new(Vec::new()).unwrap();
        for r in &records {
            w.write(r).unwrap();
        }
        let back: Value = serde_json::from_slice(&w.finish().unwrap()).unwrap();
        let timings = |i: usize| {
            let t = &back["log"]["entries"][i]["timings"];
            (t["connect"].as_f64().unwrap(), t["ssl"].as_f64().unwrap())
        };
        let (connect, ssl) = timings(0);
        assert!(
            (connect - 30.0).abs() < 0.01 && (ssl - 20.0).abs() < 0.01,
            "{connect} {ssl}"
        );
        assert_eq!(timings(1), (-1.0, -1.0));
    }
}
