//! The SQLite store: [`SqliteStore`] saves records in an SQLite database (bundled SQLite,
//! WAL mode), one row per flow, made to answer "the last N flows matching a filter"
//! quickly at a million flows; [`read_sqlite`] reads them back.
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
//! # Durability
//!
//! The database is in WAL mode with `synchronous=NORMAL`. Records are inserted in one
//! transaction that is committed on every [`Sink::flush`] (the capture's writer flushes
//! whenever its queue is empty) and after every [`BATCH`] records, so thousands of flows
//! a second cost one commit per batch. A crash of the process, even `SIGKILL`, loses at
//! most the flows of the open transaction; a power loss may also lose the last commits
//! before the next checkpoint (what `synchronous=NORMAL` trades for speed), never the
//! database.
//!
//! # Schema (version 1, in `PRAGMA user_version`)
//!
//! ```sql
//! CREATE TABLE flows (
//!     id                     INTEGER PRIMARY KEY,  -- in the order flows finished
//!     started_at             INTEGER NOT NULL,     -- unix time, microseconds
//!     method                 TEXT NOT NULL,        -- GET
//!     scheme                 TEXT NOT NULL,        -- http, https
//!     host                   TEXT NOT NULL,        -- a name, or an IP without brackets
//!     port                   INTEGER NOT NULL,
//!     path                   TEXT NOT NULL,        -- path and query
//!     status                 INTEGER,              -- NULL without a response
//!     reason                 TEXT,                 -- NULL without a response
//!     error                  TEXT,                 -- why the flow failed, if it did
//!     request_version        TEXT NOT NULL,        -- HTTP/1.1, HTTP/2.0 …
//!     response_version       TEXT,
//!     request_headers        TEXT NOT NULL,        -- "name: value" lines
//!     response_headers       TEXT,
//!     request_size           INTEGER NOT NULL,     -- body bytes on the wire
//!     response_size          INTEGER,
//!     request_truncated      INTEGER NOT NULL,     -- 1 when the body kept is cut
//!     response_truncated     INTEGER,
//!     request_end_us         INTEGER,              -- microseconds after started_at,
//!     response_first_byte_us INTEGER,              -- NULL when not reached
//!     response_end_us        INTEGER,
//!     client_addr            TEXT,                 -- 127.0.0.1:5000, [::1]:5000
//!     server_addr            TEXT,
//!     client_tls             INTEGER NOT NULL      -- 1 when the client spoke TLS
//! );
//! CREATE TABLE bodies (
//!     flow_id INTEGER NOT NULL REFERENCES flows(id),
//!     side    TEXT NOT NULL CHECK (side IN ('request', 'response')),
//!     data    BLOB NOT NULL,                       -- as on the wire, up to the limit
//!     PRIMARY KEY (flow_id, side)
//! );
//! CREATE INDEX flows_started_at ON flows (started_at);
//! CREATE INDEX flows_host       ON flows (host, started_at);
//! CREATE INDEX flows_status     ON flows (status, started_at);
//! CREATE INDEX flows_method     ON flows (method, started_at);
//! ```
//!
//! Heads are their fields in order, one `name: value` line each, joined by `\n`; a
//! head with bytes that are not UTF-8 is stored as a BLOB of the same lines. Only
//! non-empty bodies have a row in `bodies`. The last flows of a host, say:
//!
//! ```sql
//! SELECT id, method, path, status FROM flows
//! WHERE host = 'example.com' ORDER BY started_at DESC LIMIT 50;
//! ```
//!
//! A later version of this crate that changes the schema raises the version and adds a
//! step to [`migrate`]; [`SqliteStore::open`] upgrades an older database step by step,
//! and a database of a newer version than [`SCHEMA_VERSION`] is refused.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags, Row};

use super::{Record, RecordedBody, RecordedRequest, RecordedResponse, RecordedTimings, Sink};
use crate::error::{Error, Result};
use crate::http::message::Headers;

/// The schema version this crate writes, kept in the database's `PRAGMA user_version`.
pub const SCHEMA_VERSION: u32 = 1;

/// The most records in one transaction: a longer burst is committed in batches of this
/// many, so that a crash in it loses no more.
pub const BATCH: usize = 1000;

/// The steps of [`migrate`]: `MIGRATIONS[v]` takes a database from version `v` to
/// `v + 1`. Version 0 is a new, empty database.
const MIGRATIONS: &[&str] = &[V1];

/// Version 1: the first schema.
const V1: &str = "
CREATE TABLE flows (
    id INTEGER PRIMARY KEY,
    started_at INTEGER NOT NULL,
    method TEXT NOT NULL,
    scheme TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    path TEXT NOT NULL,
    status INTEGER,
    reason TEXT,
    error TEXT,
    request_version TEXT NOT NULL,
    response_version TEXT,
    request_headers TEXT NOT NULL,
    response_headers TEXT,
    request_size INTEGER NOT NULL,
    response_size INTEGER,
    request_truncated INTEGER NOT NULL,
    response_truncated INTEGER,
    request_end_us INTEGER,
    response_first_byte_us INTEGER,
    response_end_us INTEGER,
    client_addr TEXT,
    server_addr TEXT,
    client_tls INTEGER NOT NULL
);
CREATE TABLE bodies (
    flow_id INTEGER NOT NULL REFERENCES flows(id),
    side TEXT NOT NULL CHECK (side IN ('request', 'response')),
    data BLOB NOT NULL,
    PRIMARY KEY (flow_id, side)
);
CREATE INDEX flows_started_at ON flows (started_at);
CREATE INDEX flows_host ON flows (host, started_at);
CREATE INDEX flows_status ON flows (status, started_at);
CREATE INDEX flows_method ON flows (method, started_at);
";

const INSERT_FLOW: &str = "INSERT INTO flows (
    started_at, method, scheme, host, port, path, status, reason, error,
    request_version, response_version, request_headers, response_headers,
    request_size, response_size, request_truncated, response_truncated,
    request_end_us, response_first_byte_us, response_end_us,
    client_addr, server_addr, client_tls
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
          ?18, ?19, ?20, ?21, ?22, ?23)";

const INSERT_BODY: &str = "INSERT INTO bodies (flow_id, side, data) VALUES (?1, ?2, ?3)";

/// The columns [`record_of`] reads, flows joined with their bodies.
const SELECT: &str = "SELECT f.started_at, f.method, f.scheme, f.host, f.port, f.path,
    f.status, f.reason, f.error, f.request_version, f.response_version,
    f.request_headers, f.response_headers, f.request_size, f.response_size,
    f.request_truncated, f.response_truncated,
    f.request_end_us, f.response_first_byte_us, f.response_end_us,
    f.client_addr, f.server_addr, f.client_tls, q.data, r.data
FROM flows f
LEFT JOIN bodies q ON q.flow_id = f.id AND q.side = 'request'
LEFT JOIN bodies r ON r.flow_id = f.id AND r.side = 'response'";

/// Saves records in an SQLite database, one row per flow. A [`Sink`] for
/// [`Capture`](super::Capture); see [the module](self) for the schema and what a crash
/// loses.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Records in the open transaction (none open when 0).
    pending: usize,
}

impl SqliteStore {
    /// A new database at `path`, in WAL mode, with the schema and no flows yet.
    ///
    /// # Errors
    ///
    /// [`Error::CaptureIo`] if the file cannot be made, and (with
    /// [`io::ErrorKind::AlreadyExists`]) if it exists: a capture never overwrites a
    /// file; [`open`](Self::open) continues one. [`Error::CaptureStore`] if SQLite
    /// fails.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        // An empty file is an empty database to SQLite; making it first is what makes
        // sure nothing is overwritten.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| Error::CaptureIo {
                path: path.clone(),
                source,
            })?;
        Self::open_at(path)
    }

    /// Continues the database at `path`, one this crate made: new flows go after those
    /// it holds. An older schema is upgraded first ([`migrate`]).
    ///
    /// # Errors
    ///
    /// [`Error::CaptureIo`] if it is not there, [`Error::CaptureFormat`] if it is not
    /// such a database or its schema is newer than [`SCHEMA_VERSION`],
    /// [`Error::CaptureStore`] if SQLite fails.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        std::fs::metadata(&path).map_err(|source| Error::CaptureIo {
            path: path.clone(),
            source,
        })?;
        Self::open_at(path)
    }

    fn open_at(path: PathBuf) -> Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(store_err(&path))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(store_err(&path))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::CaptureStore {
                path,
                reason: format!("SQLite would not use WAL mode (journal_mode is {mode})"),
            });
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(store_err(&path))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(store_err(&path))?;
        migrate_conn(&conn, &path)?;
        Ok(SqliteStore {
            conn,
            path,
            pending: 0,
        })
    }

    /// The database written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The newest `n` flows (those not yet committed included), oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::CaptureStore`] if SQLite fails, [`Error::CaptureFormat`] if a row is
    /// not what this crate writes.
    pub fn last(&self, n: usize) -> Result<Vec<Record>> {
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let sql = format!("{SELECT} ORDER BY f.id DESC LIMIT ?1");
        let mut records = query(&self.conn, &self.path, &sql, [limit])?;
        records.reverse();
        Ok(records)
    }

    /// Commits the open transaction, if any.
    fn commit(&mut self) -> rusqlite::Result<()> {
        if self.pending > 0 {
            self.conn.execute_batch("COMMIT")?;
            self.pending = 0;
        }
        Ok(())
    }

    /// Inserts `record` (its flow row and its bodies) in the open transaction.
    fn insert(&mut self, record: &Record) -> rusqlite::Result<()> {
        let r = &record.request;
        let response = record.response.as_ref();
        let id = self.conn.prepare_cached(INSERT_FLOW)?.insert(params![
            micros_since_epoch(record.started_at),
            r.method,
            r.scheme,
            r.host,
            r.port,
            r.path,
            response.map(|r| r.status),
            response.map(|r| &r.reason),
            record.error,
            r.version,
            response.map(|r| &r.version),
            head(&r.headers),
            response.map(|r| head(&r.headers)),
            size(r.body.size),
            response.map(|r| size(r.body.size)),
            r.body.truncated,
            response.map(|r| r.body.truncated),
            record.timings.request_end.map(micros),
            record.timings.response_first_byte.map(micros),
            record.timings.response_end.map(micros),
            record.client.map(|a| a.to_string()),
            record.server.map(|a| a.to_string()),
            record.client_tls,
        ])?;
        let mut body = self.conn.prepare_cached(INSERT_BODY)?;
        if !r.body.data.is_empty() {
            body.execute(params![id, "request", &r.body.data[..]])?;
        }
        if let Some(data) = response.map(|r| &r.body.data).filter(|d| !d.is_empty()) {
            body.execute(params![id, "response", &data[..]])?;
        }
        Ok(())
    }
}

impl Sink for SqliteStore {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        if self.pending == 0 {
            self.conn.execute_batch("BEGIN").map_err(io::Error::other)?;
        }
        // A savepoint per record: one that fails leaves nothing of itself behind, and
        // the others of the transaction stay.
        let saved = self
            .conn
            .execute_batch("SAVEPOINT record")
            .and_then(|()| self.insert(record));
        match saved {
            Ok(()) => {
                self.conn
                    .execute_batch("RELEASE record")
                    .map_err(io::Error::other)?;
                self.pending += 1;
            }
            Err(e) => {
                let _ = self
                    .conn
                    .execute_batch("ROLLBACK TO record; RELEASE record");
                if self.pending == 0 {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                return Err(io::Error::other(e));
            }
        }
        if self.pending >= BATCH {
            self.commit().map_err(io::Error::other)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.commit().map_err(io::Error::other)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Err(e) = self.commit() {
            tracing::warn!(error = %e, path = %self.path.display(), "capture: the last flows could not be saved");
        }
    }
}

/// Upgrades the database at `path` to [`SCHEMA_VERSION`], one version at a time, each
/// step in a transaction of its own; returns the version it had. A new, empty database
/// (version 0) gets the whole schema.
///
/// # Errors
///
/// [`Error::CaptureIo`] if it is not there, [`Error::CaptureFormat`] if its version is
/// newer than this crate knows or it is some other database, [`Error::CaptureStore`]
/// if SQLite fails.
pub fn migrate(path: impl AsRef<Path>) -> Result<u32> {
    let path = path.as_ref();
    std::fs::metadata(path).map_err(|source| Error::CaptureIo {
        path: path.to_path_buf(),
        source,
    })?;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(store_err(path))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(store_err(path))?;
    migrate_conn(&conn, path)
}

fn migrate_conn(conn: &Connection, path: &Path) -> Result<u32> {
    let from = version(conn, path)?;
    if from == 0 {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(store_err(path))?;
        if tables > 0 {
            return Err(Error::CaptureFormat {
                path: path.to_path_buf(),
                reason: "an SQLite database, but not one mitm made (user_version 0, with tables)"
                    .into(),
            });
        }
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        let to = step + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {to};\nCOMMIT;"
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            Error::CaptureStore {
                path: path.to_path_buf(),
                reason: format!("upgrading the schema to version {to}: {e}"),
            }
        })?;
    }
    Ok(from)
}

/// The database's schema version, refused when newer than [`SCHEMA_VERSION`].
fn version(conn: &Connection, path: &Path) -> Result<u32> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(store_err(path))?;
    match u32::try_from(version) {
        Ok(v) if v <= SCHEMA_VERSION => Ok(v),
        _ => Err(Error::CaptureFormat {
            path: path.to_path_buf(),
            reason: format!(
                "its schema version is {version}, newer than this mitm knows \
                 ({SCHEMA_VERSION}); read it with a newer mitm"
            ),
        }),
    }
}

/// Every flow of the database at `path`, in the order they were saved (by id).
///
/// No flow in it is changed (SQLite may still recover or checkpoint its WAL); it may
/// be one a capture is writing to.
///
/// # Errors
///
/// [`Error::CaptureIo`] if it is not there, [`Error::CaptureFormat`] if it is not a
/// database this crate made, or one of a newer or older schema (upgrade an older one
/// with [`migrate`]), [`Error::CaptureStore`] if SQLite fails.
pub fn read_sqlite(path: impl AsRef<Path>) -> Result<Vec<Record>> {
    let path = path.as_ref();
    std::fs::metadata(path).map_err(|source| Error::CaptureIo {
        path: path.to_path_buf(),
        source,
    })?;
    // Read-write without create, so that a WAL left by a killed writer can be
    // recovered; read-only when that is all the file allows.
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .or_else(|_| Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY))
        .map_err(store_err(path))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(store_err(path))?;
    let version = version(&conn, path).map_err(|e| match e {
        // "file is not a database" comes from the first read.
        Error::CaptureStore { path, reason } => Error::CaptureFormat { path, reason },
        e => e,
    })?;
    if version != SCHEMA_VERSION {
        return Err(Error::CaptureFormat {
            path: path.to_path_buf(),
            reason: format!(
                "its schema version is {version}, this mitm reads {SCHEMA_VERSION}{}",
                if version == 0 {
                    " (not a database mitm made)"
                } else {
                    "; upgrade it with mitm::capture::sqlite::migrate"
                }
            ),
        });
    }
    query(&conn, path, &format!("{SELECT} ORDER BY f.id"), [])
}

/// The records `sql` (a [`SELECT`]) selects.
fn query(
    conn: &Connection,
    path: &Path,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Record>> {
    let mut statement = conn.prepare(sql).map_err(store_err(path))?;
    let mut rows = statement.query(params).map_err(store_err(path))?;
    let mut records = Vec::new();
    while let Some(row) = rows.next().map_err(store_err(path))? {
        let record = record_of(row).map_err(|reason| Error::CaptureFormat {
            path: path.to_path_buf(),
            reason,
        })?;
        records.push(record);
    }
    Ok(records)
}

/// The record of one row of [`SELECT`].
fn record_of(row: &Row<'_>) -> std::result::Result<Record, String> {
    let err = |e: rusqlite::Error| e.to_string();
    let status: Option<u16> = row.get(6).map_err(err)?;
    let request_data: Option<Vec<u8>> = row.get(23).map_err(err)?;
    let response_data: Option<Vec<u8>> = row.get(24).map_err(err)?;
    let body = |data: Option<Vec<u8>>, size: Option<i64>, truncated: Option<bool>| RecordedBody {
        data: data.map(Bytes::from).unwrap_or_default(),
        size: size.map_or(0, |s| s.max(0) as u64),
        truncated: truncated.unwrap_or(false),
    };
    let response = match status {
        None => None,
        Some(status) => Some(RecordedResponse {
            status,
            reason: row
                .get::<_, Option<String>>(7)
                .map_err(err)?
                .unwrap_or_default(),
            version: row
                .get::<_, Option<String>>(10)
                .map_err(err)?
                .unwrap_or_default(),
            headers: headers_of(row.get_ref(12).map_err(err)?)?,
            body: body(
                response_data,
                row.get(14).map_err(err)?,
                row.get(16).map_err(err)?,
            ),
        }),
    };
    let duration = |i: usize| -> std::result::Result<Option<Duration>, String> {
        let us: Option<i64> = row.get(i).map_err(err)?;
        Ok(us.map(|us| Duration::from_micros(us.max(0) as u64)))
    };
    let addr = |i: usize| -> std::result::Result<Option<SocketAddr>, String> {
        let text: Option<String> = row.get(i).map_err(err)?;
        text.map(|t| t.parse().map_err(|_| format!("not an address: {t}")))
            .transpose()
    };
    let started_us: i64 = row.get(0).map_err(err)?;
    Ok(Record {
        started_at: if started_us >= 0 {
            UNIX_EPOCH + Duration::from_micros(started_us as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(started_us.unsigned_abs())
        },
        client: addr(20)?,
        server: addr(21)?,
        client_tls: row.get(22).map_err(err)?,
        // Not stored yet: the store keeps no WebSocket messages.
        websocket: None,
        request: RecordedRequest {
            method: row.get(1).map_err(err)?,
            scheme: row.get(2).map_err(err)?,
            host: row.get(3).map_err(err)?,
            port: row.get(4).map_err(err)?,
            path: row.get(5).map_err(err)?,
            version: row.get(9).map_err(err)?,
            headers: headers_of(row.get_ref(11).map_err(err)?)?,
            body: body(
                request_data,
                row.get(13).map_err(err)?,
                row.get(15).map_err(err)?,
            ),
        },
        response,
        timings: RecordedTimings {
            request_end: duration(17)?,
            response_first_byte: duration(18)?,
            response_end: duration(19)?,
        },
        error: row.get(8).map_err(err)?,
    })
}

/// A head as stored: `name: value` lines joined by `\n`, text when it is UTF-8, else a
/// BLOB of the same bytes.
fn head(headers: &Headers) -> rusqlite::types::Value {
    let mut out = Vec::new();
    for (i, (name, value)) in headers.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
    }
    match String::from_utf8(out) {
        Ok(text) => rusqlite::types::Value::Text(text),
        Err(e) => rusqlite::types::Value::Blob(e.into_bytes()),
    }
}

/// The header fields of a stored head (text or BLOB; NULL is none).
fn headers_of(value: ValueRef<'_>) -> std::result::Result<Headers, String> {
    let bytes = match value {
        ValueRef::Null => return Ok(Headers::new()),
        ValueRef::Text(b) | ValueRef::Blob(b) => b,
        _ => return Err("a head that is neither text nor a BLOB".into()),
    };
    let mut headers = Headers::new();
    if bytes.is_empty() {
        return Ok(headers);
    }
    for line in bytes.split(|&b| b == b'\n') {
        let at = memchr::memmem::find(line, b": ").ok_or_else(|| {
            format!(
                "a header line without ': ': {}",
                String::from_utf8_lossy(line)
            )
        })?;
        headers.append(
            Bytes::copy_from_slice(&line[..at]),
            Bytes::copy_from_slice(&line[at + 2..]),
        );
    }
    Ok(headers)
}

fn micros_since_epoch(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => micros(d),
        Err(e) => -micros(e.duration()),
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn size(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Turns a SQLite error on the database at `path` into [`Error::CaptureStore`].
fn store_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::CaptureStore {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, response: Option<(u16, &'static [u8])>) -> Record {
        let mut request_headers = Headers::new();
        request_headers.append("Host", "a.localhost:8080");
        request_headers.append("X-Empty", "");
        request_headers.append("X-Bytes", Bytes::from_static(b"caf\xe9"));
        Record {
            websocket: None,
            started_at: UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            client: Some("127.0.0.1:5000".parse().unwrap()),
            server: Some("[::1]:8080".parse().unwrap()),
            client_tls: true,
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

    #[test]
    fn records_read_back_are_those_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let mut failed = record("/failed", None);
        failed.error = Some("connection refused".into());
        failed.request.body = RecordedBody::default();
        let written = vec![
            record("/a?q=1", Some((200, b"hello"))),
            failed,
            record("/empty", Some((204, b""))),
        ];
        let mut store = SqliteStore::create(&path).unwrap();
        for r in &written {
            store.write(r).unwrap();
        }
        // Not committed yet, but the store's own connection sees them.
        assert_eq!(store.last(2).unwrap(), written[1..]);
        store.flush().unwrap();
        assert_eq!(read_sqlite(&path).unwrap(), written);
        // A second flush, with nothing open, is nothing.
        store.flush().unwrap();
        drop(store);
        // Only non-empty bodies have rows.
        let conn = Connection::open(&path).unwrap();
        let bodies: i64 = conn
            .query_row("SELECT count(*) FROM bodies", [], |r| r.get(0))
            .unwrap();
        assert_eq!(bodies, 3);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");

        // Continued: new flows after the old ones.
        let mut store = SqliteStore::open(&path).unwrap();
        store.write(&record("/more", Some((404, b"")))).unwrap();
        drop(store);
        let all = read_sqlite(&path).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[3].request.path, "/more");
        assert_eq!(super::super::read(&path).unwrap(), all);
    }

    #[test]
    fn uncommitted_flows_are_committed_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = SqliteStore::create(&path).unwrap();
        for i in 0..BATCH + 5 {
            store.write(&record(&format!("/{i}"), None)).unwrap();
        }
        // A full batch is committed without a flush; the rest waits for one.
        assert_eq!(read_sqlite(&path).unwrap().len(), BATCH);
        store.flush().unwrap();
        assert_eq!(read_sqlite(&path).unwrap().len(), BATCH + 5);
        // `forget` stands for a kill: nothing is committed on the way out.
        store.write(&record("/lost", None)).unwrap();
        std::mem::forget(store);
        assert_eq!(read_sqlite(&path).unwrap().len(), BATCH + 5);
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kept.sqlite");
        std::fs::write(&path, b"precious").unwrap();
        match SqliteStore::create(&path) {
            Err(Error::CaptureIo { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::AlreadyExists);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        // Not a database: reading says so.
        let err = read_sqlite(&path).unwrap_err();
        assert!(matches!(err, Error::CaptureFormat { .. }), "{err:?}");
        assert!(matches!(
            read_sqlite(dir.path().join("none.sqlite")),
            Err(Error::CaptureIo { .. })
        ));
    }

    #[test]
    fn a_newer_schema_is_refused_and_a_foreign_database_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.sqlite");
        drop(SqliteStore::create(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        for err in [
            read_sqlite(&path).unwrap_err(),
            SqliteStore::open(&path).unwrap_err(),
            migrate(&path).unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(matches!(err, Error::CaptureFormat { .. }), "{err:?}");
            assert!(
                text.contains("schema version is 99, newer than this mitm knows (1)"),
                "{text}"
            );
        }

        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        assert!(matches!(
            SqliteStore::open(&other),
            Err(Error::CaptureFormat { .. })
        ));
        let text = read_sqlite(&other).unwrap_err().to_string();
        assert!(text.contains("not a database mitm made"), "{text}");
    }

    #[test]
    fn migrate_brings_an_empty_database_to_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.sqlite");
        std::fs::write(&path, b"").unwrap();
        assert_eq!(migrate(&path).unwrap(), 0);
        assert_eq!(migrate(&path).unwrap(), SCHEMA_VERSION);
        assert_eq!(read_sqlite(&path).unwrap(), Vec::new());
    }
}
