//! The SQLite store: [`SqliteStore`] saves records in an SQLite database (bundled SQLite,
//! WAL mode), one row per flow, made to answer "the last N flows matching a filter"
//! quickly at a million flows; [`SqliteReader`] answers it ([`SqliteReader::query`]),
//! a page at a time, while a capture writes; [`SqliteRecords`] reads all flows back,
//! a page at a time ([`read_sqlite`]: at once).
//!
//! ```no_run
//! # fn run() -> mitm::Result<()> {
//! use mitm::capture::sqlite::{read_sqlite, SqliteStore};
//! use mitm::capture::Capture;
//!
//! let capture = Capture::builder()
//!     .sink(Box::new(SqliteStore::create("session.sqlite")?))
//!     .start();
//! // … the proxy runs with `capture` as a middleware, then:
//! capture.finish();
//! for record in read_sqlite("session.sqlite")? {
//!     println!("{} {}", record.request.method, record.request.url());
//! }
//! # Ok(()) }
//! ```
//!
//! | file | what it holds |
//! | --- | --- |
//! | `schema.rs` | the schema: its version, the steps that make it ([`migrate`]) |
//! | `store.rs` | [`SqliteStore`], the writer |
//! | `export.rs` | [`export`]: a database to any stream, by way of a temporary file |
//! | `reader.rs` | [`SqliteReader`], [`SqliteRecords`], [`read_sqlite`] |
//!
//! # Durability
//!
//! The database is in WAL mode with `synchronous=NORMAL`, with [`PAGE_SIZE`] pages.
//! Records are inserted in one transaction that is committed on every
//! [`Sink::flush`](super::Sink::flush) (the capture's writer flushes at most
//! [`FLUSH_AFTER`](super::FLUSH_AFTER) after a flow was written) and after every
//! [`BATCH`] records, so thousands of flows a second cost one commit per batch. A crash
//! of the process, even `SIGKILL`, loses at most the flows of the open transaction; a
//! power loss may also lose the last commits before the next checkpoint (what
//! `synchronous=NORMAL` trades for speed), never the database.
//!
//! # Tables
//!
//! Schema version [`SCHEMA_VERSION`], in `PRAGMA user_version`: `flows` (one row per
//! flow: its request and response heads, sizes, timings, addresses, error, the client's
//! TLS), `bodies` (a flow's request and response bodies, as on the wire up to the
//! capture's body limit) and `messages` (a WebSocket flow's messages, in order). The
//! schema column by column is in the repository's `ARCHITECTURE.md` ("The SQLite
//! store"), which a test checks against what [`migrate`] makes; `sqlite3 FILE .schema`
//! prints it from a file.
//!
//! Heads are their fields in order, one `name: value` line each, joined by `\n`; a
//! head with bytes that are not UTF-8 is stored as a BLOB of the same lines. Only
//! non-empty bodies have a row in `bodies`. A WebSocket flow (a
//! [`Record`](super::Record) whose `websocket` is `Some`) has `websocket = 1` and its
//! messages in `messages`, none when it had none; its row, bodies and messages go in the
//! same transaction, and a flow whose bodies or messages fail to go in is taken out
//! again, so a flow is saved whole or not at all. The last flows of a host, say (the
//! flows walked newest first, by the index on `started_at`, until 50 match; the only
//! other index is the tables' primary keys, so that saving a flow stays cheap):
//!
//! ```sql
//! SELECT id, method, path, status FROM flows
//! WHERE host = 'example.com' ORDER BY started_at DESC LIMIT 50;
//! ```
//!
//! Older versions of the schema, and how a database is brought up to date: see
//! [`migrate`].

use std::path::Path;

use crate::error::Error;

mod export;
mod facts;
mod reader;
mod schema;
mod store;

pub use export::export;
// The web UI copies captures into databases of its own.
#[cfg(feature = "web")]
pub(crate) use export::{copy_database, TempDir};
pub use reader::{read_sqlite, SqliteReader, SqliteRecords, READ_PAGE};
pub use schema::{migrate, SCHEMA_VERSION};
pub use store::{SqliteStore, BATCH, PAGE_SIZE};

/// Turns a SQLite error on the database at `path` into [`Error::CaptureStore`].
pub(super) fn store_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::CaptureStore {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;
    use rusqlite::Connection;

    use super::schema::V1;
    use super::*;
    use crate::capture::{
        Filter, Record, RecordedBody, RecordedMessage, RecordedRequest, RecordedResponse,
        RecordedTimings, Sink,
    };
    use crate::core::TlsFacts;
    use crate::http::message::Headers;

    pub(super) fn record(path: &str, response: Option<(u16, &'static [u8])>) -> Record {
        let mut request_headers = Headers::new();
        request_headers.append("Host", "a.localhost:8080");
        request_headers.append("X-Empty", "");
        request_headers.append("X-Bytes", Bytes::from_static(b"caf\xe9"));
        Record {
            annotations: Default::default(),
            websocket: None,
            facts: crate::capture::record::example::facts(),
            started_at: UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            client: Some("127.0.0.1:5000".parse().unwrap()),
            server: Some("[::1]:8080".parse().unwrap()),
            client_tls: true,
            tls: crate::capture::record::example::client_tls(),
            request: RecordedRequest {
                method: "POST".into(),
                scheme: "https".into(),
                host: "a.localhost".into(),
                port: 8080,
                path: path.into(),
                version: "HTTP/2.0".into(),
                headers: request_headers,
                body: RecordedBody {
                    data: Bytes::from_static(b"he"),
                    size: 5,
                    truncated: true,
                },
            },
            response: response.map(|(status, body)| {
                let mut headers = Headers::new();
                headers.append("Content-Type", "text/plain");
                headers.append("Set-Cookie", "a=b: c");
                RecordedResponse {
                    status,
                    reason: "OK".into(),
                    version: "HTTP/1.1".into(),
                    headers,
                    body: RecordedBody::whole(Bytes::from_static(body)),
                }
            }),
            timings: RecordedTimings {
                request_end: Some(Duration::from_micros(2_001)),
                response_first_byte: None,
                response_end: Some(Duration::from_millis(10)),
            },
            error: None,
        }
    }

    /// A WebSocket flow of `n` messages, alternately from the client and the server.
    pub(super) fn websocket(n: usize) -> Record {
        let mut r = record("/chat", Some((101, b"")));
        r.request.method = "GET".into();
        r.request.body = RecordedBody::default();
        r.request.headers.append("Upgrade", "websocket");
        let response = r.response.as_mut().unwrap();
        response.reason = "Switching Protocols".into();
        response.headers = Headers::new();
        response.headers.append("Upgrade", "websocket");
        response.headers.append("Connection", "Upgrade");
        r.websocket = Some(
            (0..n)
                .map(|i| RecordedMessage {
                    from_client: i % 2 == 0,
                    text: i % 3 != 2,
                    data: Bytes::from(format!("message {i}")),
                    at: UNIX_EPOCH + Duration::from_micros(1_700_000_001_000_000 + i as u64),
                })
                .collect(),
        );
        r.facts.websocket_close = Some(crate::capture::record::example::close());
        r
    }

    /// A database as version 1 of the schema made it, with one flow.
    pub(super) fn version_1(path: &Path) {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(&format!("{V1}\nPRAGMA user_version = 1;"))
            .unwrap();
        conn.execute_batch(
            "INSERT INTO flows (started_at, method, scheme, host, port, path, status, reason,
                 request_version, response_version, request_headers, response_headers,
                 request_size, response_size, request_truncated, response_truncated,
                 response_end_us, client_tls)
             VALUES (1700000000000000, 'GET', 'http', 'old.localhost', 80, '/old', 200, 'OK',
                 'HTTP/1.1', 'HTTP/1.1', 'Host: old.localhost', 'Content-Length: 3',
                 0, 3, 0, 0, 1500, 0);
             INSERT INTO bodies (flow_id, side, data) VALUES (1, 'response', X'6F6C64');",
        )
        .unwrap();
    }

    /// The speed of `query` at a million flows; run with
    /// `cargo test --release --lib capture::sqlite::tests::query_at_a_million_flows -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark: a million flows, a minute in release (the database is 400 MB)"]
    fn query_at_a_million_flows() {
        use std::time::Instant;
        const FLOWS: usize = 1_000_000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("million.sqlite");
        let mut store = SqliteStore::create(&path).unwrap();
        let started = Instant::now();
        for i in 0..FLOWS {
            let mut r = record(&format!("/item/{i}?page=1"), Some((200, b"")));
            r.request.host = match i {
                _ if i % 100_000 == 7 => "rare.host".into(),
                _ if i % 2 == 0 => "common.host".into(),
                _ => format!("host{}.example", i % 1000),
            };
            r.request.headers = Headers::new();
            r.request.headers.append("Host", r.request.host.clone());
            r.request.headers.append("User-Agent", "bench/1.0");
            r.request.body = RecordedBody::default();
            let body = if i % 100_000 == 3 {
                "a needle in it".to_owned()
            } else {
                format!("{{\"id\":{i},\"text\":\"hello world\"}}")
            };
            r.response.as_mut().unwrap().body = RecordedBody::whole(Bytes::from(body));
            store.write(&r).unwrap();
        }
        store.flush().unwrap();
        drop(store);
        let size = std::fs::metadata(&path).unwrap().len();
        eprintln!(
            "filled {FLOWS} flows in {:.1?} ({} MB)",
            started.elapsed(),
            size / 1_000_000
        );
        let reader = SqliteReader::open(&path).unwrap();
        let time = |what: &str, f: &dyn Fn() -> usize| {
            f(); // warm the page cache
            let started = Instant::now();
            let n = f();
            eprintln!("{what:<40} {n:>4} flows in {:.1?}", started.elapsed());
        };
        time("count()", &|| reader.count().unwrap() as usize);
        time("query(None, None, 100)", &|| {
            reader.query(None, None, 100).unwrap().len()
        });
        time("query(None, Some(500_000), 100)", &|| {
            reader.query(None, Some(500_000), 100).unwrap().len()
        });
        time("get(500_000)", &|| {
            reader.get(500_000).unwrap().iter().len()
        });
        for filter in [
            "~d common\\.host",
            "~d rare\\.host",
            "~d nowhere\\.host",
            // No prefilter: every flow decoded and matched.
            "~d ^rare\\.host$",
            "~u /item/7\\?",
            "~m POST & ~c 200",
            "~b hello",
            "~b needle",
        ] {
            let parsed = Filter::parse(filter).unwrap();
            time(&format!("query(Some({filter:?}), None, 100)"), &|| {
                reader.query(Some(&parsed), None, 100).unwrap().len()
            });
        }
    }

    /// The writer's own cost, apart from the proxy: `cargo test --release --lib
    /// capture::sqlite::tests::write_speed -- --ignored --nocapture`. The flows are
    /// made first; what is timed is writing them (committed every 2000, as a busy
    /// capture does) and dropping them, as the capture's writer thread does.
    #[test]
    #[ignore = "a benchmark: the writer's time per flow, for flows like mitm-bench's"]
    fn write_speed() {
        use std::time::Instant;
        const FLOWS: usize = 100_000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("speed.sqlite");
        let mut store = SqliteStore::create(&path).unwrap();
        let body = Bytes::from(vec![b'x'; 1024]);
        let records: Vec<Record> = (0..FLOWS)
            .map(|i| {
                let mut r = record("/1k", Some((200, b"")));
                r.request.method = "GET".into();
                r.request.scheme = "http".into();
                r.request.host = "127.0.0.1".into();
                r.client_tls = false;
                r.tls = TlsFacts::default();
                r.started_at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_000 + i as u64);
                r.request.headers = Headers::new();
                r.request.headers.append("Host", "127.0.0.1:40000");
                r.request.headers.append("User-Agent", "mitm-bench");
                r.request.body = RecordedBody::default();
                let response = r.response.as_mut().unwrap();
                response.headers = Headers::new();
                response
                    .headers
                    .append("Content-Type", "application/octet-stream");
                response.headers.append("Content-Length", "1024");
                response.body = RecordedBody::whole(body.clone());
                r
            })
            .collect();
        // This thread's time on a CPU so far.
        let cpu = || {
            let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
            Duration::from_nanos(stat.split(' ').next().unwrap().parse().unwrap())
        };
        let (cpu_started, started) = (cpu(), Instant::now());
        // In the writer's bursts, flushed every 2000 flows (a commit every 1000).
        for (i, burst) in records.chunks(crate::capture::BURST).enumerate() {
            store.write_each(&mut burst.iter(), &mut |e| panic!("{e}"));
            if i % 32 == 31 {
                store.flush().unwrap();
            }
        }
        store.flush().unwrap();
        let (took, cpu_took) = (started.elapsed(), cpu() - cpu_started);
        drop(store);
        let size = std::fs::metadata(&path).unwrap().len();
        let per_flow = |d: Duration| d.as_secs_f64() * 1e6 / FLOWS as f64;
        eprintln!(
            "wrote {FLOWS} flows in {took:.2?}: {:.2} µs a flow, {:.2} µs of CPU ({} MB)",
            per_flow(took),
            per_flow(cpu_took),
            size / 1_000_000
        );
    }
}
