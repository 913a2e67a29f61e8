//! The SQLite store: [`SqliteStore`] saves records in an SQLite database (bundled SQLite,
//! WAL mode), one row per flow, made to answer "the last N flows matching a filter"
//! quickly at a million flows; [`SqliteReader`] answers it ([`SqliteReader::query`]),
//! a page at a time, while a capture writes; [`read_sqlite`] reads all flows back.
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
//! The database is in WAL mode with `synchronous=NORMAL`, with [`PAGE_SIZE`] pages.
//! Records are inserted in one transaction that is committed on every [`Sink::flush`]
//! (the capture's writer flushes at most [`FLUSH_AFTER`](super::FLUSH_AFTER) after a
//! flow was written) and after every [`BATCH`] records, so thousands of flows a second
//! cost one commit per batch. A crash of the process, even `SIGKILL`, loses at most the
//! flows of the open transaction; a power loss may also lose the last commits before
//! the next checkpoint (what `synchronous=NORMAL` trades for speed), never the database.
//!
//! # Schema (version 2, in `PRAGMA user_version`)
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
//!     client_tls             INTEGER NOT NULL,     -- 1 when the client spoke TLS
//!     websocket              INTEGER NOT NULL DEFAULT 0, -- 1 for a WebSocket flow
//!     client_sni             TEXT,                 -- the client's TLS with the proxy:
//!     client_alpn            TEXT,                 -- name asked for, protocol chosen,
//!     client_tls_version     TEXT                  -- version (TLSv1.3); NULL if unknown
//! );
//! CREATE TABLE bodies (
//!     flow_id INTEGER NOT NULL REFERENCES flows(id),
//!     side    TEXT NOT NULL CHECK (side IN ('request', 'response')),
//!     data    BLOB NOT NULL,                       -- as on the wire, up to the limit
//!     PRIMARY KEY (flow_id, side)
//! );
//! CREATE TABLE messages (                          -- of WebSocket flows
//!     flow_id     INTEGER NOT NULL REFERENCES flows(id),
//!     seq         INTEGER NOT NULL,                -- 0, 1, … in the flow's order
//!     from_client INTEGER NOT NULL,                -- 1 when the client sent it
//!     text        INTEGER NOT NULL,                -- 1 for text, 0 for binary
//!     data        BLOB NOT NULL,                   -- the payload, up to the limit
//!     at          INTEGER NOT NULL,                -- unix time, microseconds
//!     PRIMARY KEY (flow_id, seq)
//! );
//! CREATE INDEX flows_started_at ON flows (started_at);
//! CREATE INDEX flows_host       ON flows (host, started_at);
//! CREATE INDEX flows_status     ON flows (status, started_at);
//! CREATE INDEX flows_method     ON flows (method, started_at);
//! ```
//!
//! Heads are their fields in order, one `name: value` line each, joined by `\n`; a
//! head with bytes that are not UTF-8 is stored as a BLOB of the same lines. Only
//! non-empty bodies have a row in `bodies`. A WebSocket flow (a [`Record`] whose
//! `websocket` is `Some`) has `websocket = 1` and its messages in `messages`, none
//! when it had none; its row, bodies and messages go in the same transaction, and a
//! flow whose bodies or messages fail to go in is taken out again, so a flow is saved
//! whole or not at all. The last flows of a host,
//! say:
//!
//! ```sql
//! SELECT id, method, path, status FROM flows
//! WHERE host = 'example.com' ORDER BY started_at DESC LIMIT 50;
//! ```
//!
//! # Versions and migration
//!
//! A version of this crate that changes the schema raises the version and adds a step
//! to [`migrate`], each step in a transaction of its own (a step that fails leaves the
//! database as it was, at the version before). A database of a newer version than
//! [`SCHEMA_VERSION`] is refused by everything here.
//!
//! - Version 1 had no WebSocket messages: `flows` without its `websocket` column, no
//!   `messages` table.
//! - Version 1 to 2: `ALTER TABLE flows ADD COLUMN websocket INTEGER NOT NULL DEFAULT
//!   0`, the three `client_sni`, `client_alpn`, `client_tls_version` columns (`TEXT`,
//!   `NULL` in the flows of version 1) and `CREATE TABLE messages (…)` as above. No row is rewritten or removed (the
//!   column's default is constant, so the step takes no longer at a million flows): the
//!   flows of version 1 read back as before, as flows that are not WebSocket flows.
//!
//! [`SqliteStore::open`], to append to a database, upgrades it first: a version-1 file
//! is migrated to version 2, after which a mitm that knows only version 1 refuses it
//! as newer. [`read_sqlite`] and [`SqliteReader`] read a version-1 file as it is,
//! changing nothing; [`migrate`] upgrades one without a store to append to it.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, Connection, OpenFlags, Row};

use super::{
    Filter, Prefilter, Record, RecordedBody, RecordedMessage, RecordedRequest, RecordedResponse,
    RecordedTimings, Sink,
};
use crate::core::TlsFacts;
use crate::error::{Error, Result};
use crate::http::message::Headers;

/// The schema version this crate writes, kept in the database's `PRAGMA user_version`.
pub const SCHEMA_VERSION: u32 = 2;

/// The page size of a new database: SQLite's default is 4096.
pub const PAGE_SIZE: u32 = 16_384;

/// The most records in one transaction: a longer burst is committed in batches of this
/// many, so that a crash in it loses no more.
pub const BATCH: usize = 1000;

/// The steps of [`migrate`]: `MIGRATIONS[v]` takes a database from version `v` to
/// `v + 1`. Version 0 is a new, empty database.
const MIGRATIONS: &[&str] = &[V1, V2];

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

/// Version 2: WebSocket messages. Adding a column with a constant default rewrites no
/// row, so the step is quick at any size; flows of version 1 are not WebSocket flows.
const V2: &str = "
ALTER TABLE flows ADD COLUMN websocket INTEGER NOT NULL DEFAULT 0;
ALTER TABLE flows ADD COLUMN client_sni TEXT;
ALTER TABLE flows ADD COLUMN client_alpn TEXT;
ALTER TABLE flows ADD COLUMN client_tls_version TEXT;
CREATE TABLE messages (
    flow_id INTEGER NOT NULL REFERENCES flows(id),
    seq INTEGER NOT NULL,
    from_client INTEGER NOT NULL,
    text INTEGER NOT NULL,
    data BLOB NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (flow_id, seq)
);
";

const INSERT_FLOW: &str = "INSERT INTO flows (
    started_at, method, scheme, host, port, path, status, reason, error,
    request_version, response_version, request_headers, response_headers,
    request_size, response_size, request_truncated, response_truncated,
    request_end_us, response_first_byte_us, response_end_us,
    client_addr, server_addr, client_tls, websocket,
    client_sni, client_alpn, client_tls_version
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
          ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)";

/// Takes a flow out again (a record whose bodies or messages failed to go in).
const DELETE_FLOW: [&str; 3] = [
    "DELETE FROM messages WHERE flow_id = ?1",
    "DELETE FROM bodies WHERE flow_id = ?1",
    "DELETE FROM flows WHERE id = ?1",
];

const INSERT_BODY: &str = "INSERT INTO bodies (flow_id, side, data) VALUES (?1, ?2, ?3)";

const INSERT_MESSAGE: &str = "INSERT INTO messages (flow_id, seq, from_client, text, data, at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

const SELECT_BODIES: &str = "SELECT side, data FROM bodies WHERE flow_id = ?1";

const SELECT_MESSAGES: &str =
    "SELECT from_client, text, data, at FROM messages WHERE flow_id = ?1 ORDER BY seq";

/// The columns of `flows` [`record_of`] reads first, in its order.
const FLOW_COLUMNS: &str = "f.started_at, f.method, f.scheme, f.host, f.port, f.path,
    f.status, f.reason, f.error, f.request_version, f.response_version,
    f.request_headers, f.response_headers, f.request_size, f.response_size,
    f.request_truncated, f.response_truncated,
    f.request_end_us, f.response_first_byte_us, f.response_end_us,
    f.client_addr, f.server_addr, f.client_tls";

/// The `SELECT … FROM flows f …` whose rows [`record_of`] reads, for a database of
/// schema `version`: with the bodies joined, or `NULL` for them (loaded later, for the
/// rows kept). Flows are read by id alone (`NOT INDEXED`: SQLite may not take the
/// index of a column a condition names, and then sort all the flows by id).
fn select(version: u32, bodies: bool) -> String {
    let (websocket, tls) = if version >= 2 {
        (
            "f.websocket",
            "f.client_sni, f.client_alpn, f.client_tls_version",
        )
    } else {
        ("0", "NULL, NULL, NULL")
    };
    if bodies {
        format!(
            "SELECT {FLOW_COLUMNS}, q.data, r.data, {websocket}, f.id, {tls} FROM flows f NOT INDEXED
LEFT JOIN bodies q ON q.flow_id = f.id AND q.side = 'request'
LEFT JOIN bodies r ON r.flow_id = f.id AND r.side = 'response'"
        )
    } else {
        format!(
            "SELECT {FLOW_COLUMNS}, NULL, NULL, {websocket}, f.id, {tls} FROM flows f NOT INDEXED"
        )
    }
}

/// The `AND …` conditions of the [`Filter::prefilters`] of `filter` on `flows f`, their
/// values pushed to `params` (numbered after those already there).
fn prefilter_sql(filter: &Filter, params: &mut Vec<Value>) -> String {
    let mut sql = String::new();
    let param = |params: &mut Vec<Value>, value: Value| {
        params.push(value);
        params.len()
    };
    for prefilter in filter.prefilters() {
        match prefilter {
            Prefilter::Status(code) => {
                let n = param(params, Value::Integer(code.into()));
                sql.push_str(&format!(" AND f.status = ?{n}"));
            }
            Prefilter::NoResponse => sql.push_str(" AND f.status IS NULL"),
            Prefilter::HasResponse => sql.push_str(" AND f.status IS NOT NULL"),
            // SQLite's lower() folds ASCII only, as the filter's regexes do; a head that
            // is not UTF-8 (a BLOB) is left to the filter.
            Prefilter::HostOrRequestHead(text) => {
                let n = param(params, Value::Text(text));
                sql.push_str(&format!(
                    " AND (instr(lower(f.host), ?{n}) > 0 \
                     OR typeof(f.request_headers) <> 'text' \
                     OR instr(lower(f.request_headers), ?{n}) > 0)"
                ));
            }
            Prefilter::Method(text) => {
                let n = param(params, Value::Text(text));
                sql.push_str(&format!(" AND instr(lower(f.method), ?{n}) > 0"));
            }
        }
    }
    sql
}

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
    /// it holds. An older schema is upgraded first ([`migrate`]): a database of
    /// version 1 becomes one of version 2, its flows kept as they are (see
    /// [the module](self#versions-and-migration)).
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
        // 16 KiB pages for a new database (an existing one keeps its own): a quarter of
        // the system calls 4 KiB pages cost to append flows, the writer's largest cost.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(store_err(&path))?;
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
        last(&self.conn, &self.path, n)
    }

    /// As [`SqliteReader::query`], on the store's own connection (which sees the flows
    /// not yet committed too). A [`Capture`](super::Capture) owns its sinks: to query
    /// a database a capture is writing to, open a [`SqliteReader`] on it.
    ///
    /// # Errors
    ///
    /// As [`SqliteReader::query`].
    pub fn query(
        &self,
        filter: Option<&Filter>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(i64, Record)>> {
        query(&self.conn, &self.path, filter, before, limit)
    }

    /// As [`SqliteReader::get`], on the store's own connection.
    ///
    /// # Errors
    ///
    /// As [`SqliteReader::get`].
    pub fn get(&self, id: i64) -> Result<Option<Record>> {
        get(&self.conn, &self.path, id)
    }

    /// As [`SqliteReader::count`], on the store's own connection.
    ///
    /// # Errors
    ///
    /// As [`SqliteReader::count`].
    pub fn count(&self) -> Result<u64> {
        count(&self.conn, &self.path)
    }

    /// Commits the open transaction, if any.
    fn commit(&mut self) -> rusqlite::Result<()> {
        if self.pending > 0 {
            self.conn.execute_batch("COMMIT")?;
            self.pending = 0;
        }
        Ok(())
    }

    /// Inserts `record` (its flow row, bodies and messages) in the open transaction.
    /// On an error, what was inserted of it is taken out again; the `bool` says
    /// whether that failed too (something of the record is left in the transaction).
    fn insert(&mut self, record: &Record) -> std::result::Result<(), (rusqlite::Error, bool)> {
        // One statement: when it fails, nothing of the record is in.
        let id = self.insert_flow(record).map_err(|e| (e, false))?;
        let Err(e) = self.insert_parts(id, record) else {
            return Ok(());
        };
        // Only the failed statement was undone: the row and the parts before it are in
        // (unless SQLite rolled the whole transaction back).
        let left = !self.conn.is_autocommit() && self.forget(id).is_err();
        Err((e, left))
    }

    /// Takes the flow `id`, its bodies and messages out of the open transaction.
    fn forget(&mut self, id: i64) -> rusqlite::Result<()> {
        for sql in DELETE_FLOW {
            self.conn.prepare_cached(sql)?.execute(params![id])?;
        }
        Ok(())
    }

    /// Inserts the row of `record`; returns its id.
    fn insert_flow(&mut self, record: &Record) -> rusqlite::Result<i64> {
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
            record.websocket.is_some(),
            record.tls.sni,
            record.tls.alpn,
            record.tls.version,
        ])?;
        Ok(id)
    }

    /// Inserts the bodies and WebSocket messages of `record`, whose row is `id`.
    fn insert_parts(&mut self, id: i64, record: &Record) -> rusqlite::Result<()> {
        let r = &record.request;
        let response = record.response.as_ref();
        let mut body = self.conn.prepare_cached(INSERT_BODY)?;
        if !r.body.data.is_empty() {
            body.execute(params![id, "request", &r.body.data[..]])?;
        }
        if let Some(data) = response.map(|r| &r.body.data).filter(|d| !d.is_empty()) {
            body.execute(params![id, "response", &data[..]])?;
        }
        if let Some(messages) = &record.websocket {
            let mut message = self.conn.prepare_cached(INSERT_MESSAGE)?;
            for (seq, m) in messages.iter().enumerate() {
                message.execute(params![
                    id,
                    size(seq as u64),
                    m.from_client,
                    m.text,
                    &m.data[..],
                    micros_since_epoch(m.at),
                ])?;
            }
        }
        Ok(())
    }
}

impl Sink for SqliteStore {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        if self.pending == 0 {
            self.conn.execute_batch("BEGIN").map_err(io::Error::other)?;
        }
        // A record that fails leaves nothing of itself behind, and the others of the
        // transaction stay: `insert` takes out what it inserted. (Not a savepoint per
        // record: that costs a quarter of the writer's time, copying the pages every
        // record touches into a statement journal.) After some errors (a full disk, an
        // I/O error) SQLite rolls the whole transaction back by itself; the flows of
        // the batch are then lost, and the error says how many.
        match self.insert(record) {
            Ok(()) => self.pending += 1,
            Err((e, left)) => {
                let lost = if self.conn.is_autocommit() || left {
                    // The transaction is gone, or holds part of the record: give the
                    // batch up.
                    std::mem::take(&mut self.pending)
                } else {
                    0
                };
                if self.pending == 0 && !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                let e = if lost > 0 {
                    let flows = if lost == 1 { "flow" } else { "flows" };
                    format!(
                        "{e} (the {lost} {flows} saved since the last commit were lost with it)"
                    )
                } else {
                    e.to_string()
                };
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

/// A read handle on a database this crate made, for a viewer such as a web UI: flows
/// with their ids, newest first, matching a [`Filter`], a page at a time.
///
/// It has a connection of its own, which reads what writers have committed, while they
/// write (WAL): open one on the file a [`Capture`](super::Capture) writes to. Reading
/// changes no flow. A database of schema version 1 is read as it is (its flows have no
/// WebSocket messages); it is not upgraded.
///
/// ```no_run
/// # fn run() -> mitm::Result<()> {
/// use mitm::capture::sqlite::SqliteReader;
/// use mitm::capture::Filter;
///
/// let reader = SqliteReader::open("session.sqlite")?;
/// let filter: Filter = "~d example\\.com & ~c 404".parse().unwrap();
/// let page = reader.query(Some(&filter), None, 50)?;
/// // The next page: the flows before the oldest of this one.
/// let next = reader.query(Some(&filter), page.last().map(|(id, _)| *id), 50)?;
/// # Ok(()) }
/// ```
///
/// # Speed
///
/// [`query`](Self::query) walks the flows by id (the table's primary key) from the
/// newest, and stops at `limit` matches: the newest flows come at once, and a filter
/// that few flows match reads the whole table to say so. SQLite skips the flows that
/// fail the filter's [`prefilters`](Filter::prefilters) (`~c`, `~q`, `~s`, and `~d`,
/// `~m` with plain text, joined by `&`) without their being decoded, which makes such
/// a walk several times faster; the others are decoded and matched. Bodies are read
/// only for the flows returned, unless the filter matches bodies
/// ([`Filter::needs_bodies`]).
#[derive(Debug)]
pub struct SqliteReader {
    conn: Connection,
    path: PathBuf,
}

impl SqliteReader {
    /// A reader of the database at `path`.
    ///
    /// # Errors
    ///
    /// [`Error::CaptureIo`] if it is not there, [`Error::CaptureFormat`] if it is not a
    /// database this crate made or its schema is newer than [`SCHEMA_VERSION`],
    /// [`Error::CaptureStore`] if SQLite fails.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        std::fs::metadata(&path).map_err(|source| Error::CaptureIo {
            path: path.clone(),
            source,
        })?;
        // Read-write without create, so that a WAL left by a killed writer can be
        // recovered; read-only when that is all the file allows.
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .or_else(|_| Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY))
            .map_err(store_err(&path))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(store_err(&path))?;
        readable_version(&conn, &path)?;
        Ok(SqliteReader { conn, path })
    }

    /// The database read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Up to `limit` flows matching `filter` (all flows without one), with their ids,
    /// newest first; only those with an id below `before`, when given. The next page
    /// of a listing is the one `before` the smallest id of the last.
    ///
    /// # Errors
    ///
    /// [`Error::CaptureStore`] if SQLite fails, [`Error::CaptureFormat`] if a row is
    /// not what this crate writes or the schema has become one this crate does not
    /// know.
    pub fn query(
        &self,
        filter: Option<&Filter>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(i64, Record)>> {
        query(&self.conn, &self.path, filter, before, limit)
    }

    /// Up to `limit` flows matching `filter` (all flows without one), with their ids,
    /// oldest first, from the first id above `after`: paging forwards, the next page
    /// is the one `after` the largest id of the last.
    ///
    /// # Errors
    ///
    /// As [`query`](Self::query).
    pub fn query_after(
        &self,
        filter: Option<&Filter>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Record)>> {
        let version = readable_version(&self.conn, &self.path)?;
        let mut params = vec![Value::Integer(after)];
        let conditions = filter.map_or_else(String::new, |f| prefilter_sql(f, &mut params));
        scan(
            &self.conn,
            &self.path,
            version,
            &format!("WHERE f.id > ?1{conditions} ORDER BY f.id ASC"),
            rusqlite::params_from_iter(params),
            filter,
            limit,
        )
    }

    /// The flow of id `id`, if there is one.
    ///
    /// # Errors
    ///
    /// As [`query`](Self::query).
    pub fn get(&self, id: i64) -> Result<Option<Record>> {
        get(&self.conn, &self.path, id)
    }

    /// How many flows the database holds.
    ///
    /// # Errors
    ///
    /// As [`query`](Self::query).
    pub fn count(&self) -> Result<u64> {
        count(&self.conn, &self.path)
    }

    /// The newest `n` flows, oldest first.
    ///
    /// # Errors
    ///
    /// As [`query`](Self::query).
    pub fn last(&self, n: usize) -> Result<Vec<Record>> {
        last(&self.conn, &self.path, n)
    }
}

/// Every flow of the database at `path`, in the order they were saved (by id), with
/// their WebSocket messages.
///
/// No flow in it is changed (SQLite may still recover or checkpoint its WAL); it may
/// be one a capture is writing to. A database of schema version 1 is read as it is.
///
/// # Errors
///
/// [`Error::CaptureIo`] if it is not there, [`Error::CaptureFormat`] if it is not a
/// database this crate made, or one of a newer schema, [`Error::CaptureStore`] if
/// SQLite fails.
pub fn read_sqlite(path: impl AsRef<Path>) -> Result<Vec<Record>> {
    let reader = SqliteReader::open(path)?;
    let version = readable_version(&reader.conn, &reader.path)?;
    let flows = scan(
        &reader.conn,
        &reader.path,
        version,
        "ORDER BY f.id",
        [],
        None,
        usize::MAX,
    )?;
    Ok(flows.into_iter().map(|(_, record)| record).collect())
}

/// The schema version of a database to read: one this crate made, of
/// [`SCHEMA_VERSION`] or older.
fn readable_version(conn: &Connection, path: &Path) -> Result<u32> {
    let version = version(conn, path).map_err(|e| match e {
        // "file is not a database" comes from the first read.
        Error::CaptureStore { path, reason } => Error::CaptureFormat { path, reason },
        e => e,
    })?;
    if version == 0 {
        return Err(Error::CaptureFormat {
            path: path.to_path_buf(),
            reason: format!(
                "its schema version is 0, this mitm reads 1 to {SCHEMA_VERSION} \
                 (not a database mitm made)"
            ),
        });
    }
    Ok(version)
}

fn query(
    conn: &Connection,
    path: &Path,
    filter: Option<&Filter>,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<(i64, Record)>> {
    let version = readable_version(conn, path)?;
    let mut params = vec![Value::Integer(before.unwrap_or(i64::MAX))];
    let conditions = filter.map_or_else(String::new, |f| prefilter_sql(f, &mut params));
    scan(
        conn,
        path,
        version,
        &format!("WHERE f.id < ?1{conditions} ORDER BY f.id DESC"),
        rusqlite::params_from_iter(params),
        filter,
        limit,
    )
}

fn get(conn: &Connection, path: &Path, id: i64) -> Result<Option<Record>> {
    let version = readable_version(conn, path)?;
    let flows = scan(conn, path, version, "WHERE f.id = ?1", [id], None, 1)?;
    Ok(flows.into_iter().next().map(|(_, record)| record))
}

fn count(conn: &Connection, path: &Path) -> Result<u64> {
    readable_version(conn, path)?;
    let n: i64 = conn
        .query_row("SELECT count(*) FROM flows", [], |row| row.get(0))
        .map_err(store_err(path))?;
    Ok(n.max(0) as u64)
}

fn last(conn: &Connection, path: &Path, n: usize) -> Result<Vec<Record>> {
    let mut records: Vec<Record> = query(conn, path, None, None, n)?
        .into_iter()
        .map(|(_, record)| record)
        .collect();
    records.reverse();
    Ok(records)
}

/// Up to `limit` flows of `SELECT … tail` ([`select`]) that match `filter`, with their
/// ids, bodies and messages. Rows are decoded one at a time and the statement stops
/// at `limit`; bodies are joined in the statement only when the filter needs them,
/// else read for the flows kept alone. `tail` may have cut the rows down with the
/// filter's [prefilters](prefilter_sql); the filter is matched all the same.
fn scan(
    conn: &Connection,
    path: &Path,
    version: u32,
    tail: &str,
    params: impl rusqlite::Params,
    filter: Option<&Filter>,
    limit: usize,
) -> Result<Vec<(i64, Record)>> {
    let join_bodies = match filter {
        None => true,
        Some(filter) => filter.needs_bodies(),
    };
    let sql = format!("{} {tail}", select(version, join_bodies));
    let format_err = |reason: String| Error::CaptureFormat {
        path: path.to_path_buf(),
        reason,
    };
    let mut statement = conn.prepare_cached(&sql).map_err(store_err(path))?;
    let mut rows = statement.query(params).map_err(store_err(path))?;
    let mut flows = Vec::new();
    while flows.len() < limit {
        let Some(row) = rows.next().map_err(store_err(path))? else {
            break;
        };
        let (id, websocket, mut record) = record_of(row).map_err(format_err)?;
        if filter.is_some_and(|f| !f.matches(&record)) {
            continue;
        }
        if !join_bodies {
            bodies_of(conn, id, &mut record).map_err(store_err(path))?;
        }
        if websocket {
            record.websocket = Some(messages_of(conn, id).map_err(store_err(path))?);
        }
        flows.push((id, record));
    }
    Ok(flows)
}

/// Reads the bodies of flow `id` into `record` (as the join of [`select`] does: a
/// response body of a flow without a response is not read).
fn bodies_of(conn: &Connection, id: i64, record: &mut Record) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(SELECT_BODIES)?;
    let mut rows = statement.query([id])?;
    while let Some(row) = rows.next()? {
        let side: String = row.get(0)?;
        let data = Bytes::from(row.get::<_, Vec<u8>>(1)?);
        match (side.as_str(), record.response.as_mut()) {
            ("request", _) => record.request.body.data = data,
            ("response", Some(response)) => response.body.data = data,
            _ => {}
        }
    }
    Ok(())
}

/// The WebSocket messages of flow `id`, in order.
fn messages_of(conn: &Connection, id: i64) -> rusqlite::Result<Vec<RecordedMessage>> {
    let mut statement = conn.prepare_cached(SELECT_MESSAGES)?;
    let rows = statement.query_map([id], |row| {
        Ok(RecordedMessage {
            from_client: row.get(0)?,
            text: row.get(1)?,
            data: Bytes::from(row.get::<_, Vec<u8>>(2)?),
            at: time_of(row.get(3)?),
        })
    })?;
    rows.collect()
}

/// The flow of one row of [`select`]: its id, whether it is a WebSocket flow (whose
/// messages are read apart), and its record, without messages.
fn record_of(row: &Row<'_>) -> std::result::Result<(i64, bool, Record), String> {
    let err = |e: rusqlite::Error| e.to_string();
    let id: i64 = row.get(26).map_err(err)?;
    let websocket: bool = row.get(25).map_err(err)?;
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
    let record = Record {
        started_at: time_of(row.get(0).map_err(err)?),
        client: addr(20)?,
        server: addr(21)?,
        client_tls: row.get(22).map_err(err)?,
        tls: TlsFacts {
            sni: row.get(27).map_err(err)?,
            alpn: row.get(28).map_err(err)?,
            version: row.get(29).map_err(err)?,
        },
        // Read apart, by `messages_of`.
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
    };
    Ok((id, websocket, record))
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
    // One copy of the head, its names and values slices of it.
    let head = Bytes::copy_from_slice(bytes);
    let mut start = 0;
    while start <= head.len() {
        let end = memchr::memchr(b'\n', &head[start..]).map_or(head.len(), |i| start + i);
        let line = &head[start..end];
        let at = memchr::memmem::find(line, b": ").ok_or_else(|| {
            format!(
                "a header line without ': ': {}",
                String::from_utf8_lossy(line)
            )
        })?;
        headers.append(
            head.slice(start..start + at),
            head.slice(start + at + 2..end),
        );
        start = end + 1;
    }
    Ok(headers)
}

fn micros_since_epoch(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => micros(d),
        Err(e) => -micros(e.duration()),
    }
}

/// The time `us` microseconds after (or before) the epoch.
fn time_of(us: i64) -> SystemTime {
    if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
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
    fn a_record_that_fails_leaves_nothing_and_the_batch_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = SqliteStore::create(&path).unwrap();
        // Refuses one response body (the statement alone is undone, after the flow's
        // row and its request body went in).
        store
            .conn
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON bodies WHEN NEW.data = X'6661696C'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        store.write(&record("/a", Some((200, b"ok")))).unwrap();
        let e = store
            .write(&record("/b", Some((200, b"fail"))))
            .unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
        assert!(!e.to_string().contains("lost"), "{e}");
        store.write(&record("/c", Some((200, b"ok")))).unwrap();
        store.flush().unwrap();
        let paths: Vec<String> = read_sqlite(&path)
            .unwrap()
            .into_iter()
            .map(|r| r.request.path)
            .collect();
        assert_eq!(paths, ["/a", "/c"]);
        let bodies: i64 = store
            .conn
            .query_row("SELECT count(*) FROM bodies", [], |r| r.get(0))
            .unwrap();
        assert_eq!(bodies, 4, "no body of /b is left");

        // A failure that rolls the whole transaction back says what it lost.
        store
            .conn
            .execute_batch(
                "DROP TRIGGER refuse;
                 CREATE TRIGGER doom BEFORE INSERT ON bodies WHEN NEW.data = X'6661696C'
                 BEGIN SELECT RAISE(ROLLBACK, 'doomed'); END;",
            )
            .unwrap();
        store.write(&record("/d", Some((200, b"ok")))).unwrap();
        let e = store
            .write(&record("/e", Some((200, b"fail"))))
            .unwrap_err();
        assert!(e.to_string().contains("the 1 flow saved"), "{e}");
        store.write(&record("/f", Some((200, b"ok")))).unwrap();
        store.flush().unwrap();
        let paths: Vec<String> = read_sqlite(&path)
            .unwrap()
            .into_iter()
            .map(|r| r.request.path)
            .collect();
        assert_eq!(paths, ["/a", "/c", "/f"]);
    }

    #[test]
    fn a_new_database_has_large_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = SqliteStore::create(&path).unwrap();
        store.write(&record("/a", Some((200, b"ok")))).unwrap();
        store.flush().unwrap();
        let size: u32 = store
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(size, PAGE_SIZE);
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
                text.contains(&format!(
                    "schema version is 99, newer than this mitm knows ({SCHEMA_VERSION})"
                )),
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

    /// A WebSocket flow of `n` messages, alternately from the client and the server.
    fn websocket(n: usize) -> Record {
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
        r
    }

    #[test]
    fn websocket_messages_are_read_back_with_their_flow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ws.sqlite");
        let mut binary = websocket(2);
        binary.websocket.as_mut().unwrap()[1].data = Bytes::from_static(b"\x00\xff");
        let written = vec![
            websocket(5),
            record("/plain", Some((200, b"ok"))),
            websocket(0),
            binary,
        ];
        let mut store = SqliteStore::create(&path).unwrap();
        for r in &written {
            store.write(r).unwrap();
        }
        assert_eq!(store.last(4).unwrap(), written);
        drop(store);
        assert_eq!(read_sqlite(&path).unwrap(), written);
        // No messages is not no WebSocket: the third is `Some(vec![])`.
        assert_eq!(read_sqlite(&path).unwrap()[2].websocket, Some(Vec::new()));
        let reader = SqliteReader::open(&path).unwrap();
        assert_eq!(reader.get(1).unwrap().as_ref(), Some(&written[0]));
        let conn = Connection::open(&path).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 7);
    }

    /// A database as version 1 of the schema made it, with one flow.
    fn version_1(path: &Path) {
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

    #[test]
    fn a_version_1_database_is_read_as_it_is_and_migrated_to_append() {
        // V1 is the first step of MIGRATIONS, the DDL of version 1 as it was released.
        assert!(V1.contains("client_tls INTEGER NOT NULL\n);") && !V1.contains("websocket"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.sqlite");
        version_1(&path);
        let old = read_sqlite(&path).unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].request.url(), "http://old.localhost/old");
        assert_eq!(&old[0].response.as_ref().unwrap().body.data[..], b"old");
        assert_eq!(old[0].websocket, None);
        let reader = SqliteReader::open(&path).unwrap();
        assert_eq!(reader.count().unwrap(), 1);
        assert_eq!(
            reader.query(None, None, 10).unwrap(),
            vec![(1, old[0].clone())]
        );
        // Reading changed nothing.
        let conn = Connection::open(&path).unwrap();
        let version = |conn: &Connection| -> i64 {
            conn.query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(version(&conn), 1);

        // Appending upgrades it, and keeps the old flow.
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(version(&conn), 2);
        store.write(&websocket(3)).unwrap();
        drop(store);
        let all = read_sqlite(&path).unwrap();
        assert_eq!(all, vec![old[0].clone(), websocket(3)]);
        // The reader opened on version 1 reads version 2 as well.
        assert_eq!(reader.last(2).unwrap(), all);
        assert_eq!(migrate(&path).unwrap(), 2);

        // migrate alone, step by step.
        let other = dir.path().join("v1-again.sqlite");
        version_1(&other);
        assert_eq!(migrate(&other).unwrap(), 1);
        assert_eq!(read_sqlite(&other).unwrap(), old);
        let mut store = SqliteStore::open(&other).unwrap();
        store.write(&websocket(1)).unwrap();
        drop(store);
        assert_eq!(read_sqlite(&other).unwrap()[1], websocket(1));
    }

    #[test]
    fn query_pages_through_the_flows_matching_a_filter_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite");
        let mut store = SqliteStore::create(&path).unwrap();
        let mut written = Vec::new();
        for i in 0..25 {
            let mut r = record(&format!("/{i}"), Some((200 + i % 2, b"body")));
            if i % 5 == 0 {
                r.request.host = "five.localhost".into();
                r.response.as_mut().unwrap().body = RecordedBody::whole(Bytes::from("needle"));
            }
            store.write(&r).unwrap();
            written.push(r);
        }
        store.write(&websocket(2)).unwrap();
        written.push(websocket(2));
        // The store's connection sees them before the commit.
        assert_eq!(store.count().unwrap(), 26);
        assert_eq!(store.query(None, None, 1).unwrap()[0], (26, websocket(2)));
        drop(store);

        let reader = SqliteReader::open(&path).unwrap();
        assert_eq!(reader.count().unwrap(), 26);
        assert_eq!(reader.get(0).unwrap(), None);
        assert_eq!(reader.get(27).unwrap(), None);
        assert_eq!(reader.get(3).unwrap().as_ref(), Some(&written[2]));
        let ids = |page: &[(i64, Record)]| page.iter().map(|(id, _)| *id).collect::<Vec<_>>();

        // All flows, 10 a page.
        let page = reader.query(None, None, 10).unwrap();
        assert_eq!(ids(&page), (17..=26).rev().collect::<Vec<_>>());
        for (id, r) in &page {
            assert_eq!(r, &written[*id as usize - 1]);
        }
        let page = reader.query(None, Some(17), 10).unwrap();
        assert_eq!(ids(&page), (7..=16).rev().collect::<Vec<_>>());
        let page = reader.query(None, Some(7), 10).unwrap();
        assert_eq!(ids(&page), (1..=6).rev().collect::<Vec<_>>());
        assert!(reader.query(None, Some(1), 10).unwrap().is_empty());
        assert!(reader.query(None, None, 0).unwrap().is_empty());

        // A filter without bodies: those matched still have theirs.
        let five = Filter::parse("~d five").unwrap();
        assert!(!five.needs_bodies());
        let page = reader.query(Some(&five), None, 3).unwrap();
        assert_eq!(ids(&page), [21, 16, 11]);
        for (id, r) in &page {
            assert_eq!(r, &written[*id as usize - 1]);
        }
        let page = reader.query(Some(&five), Some(11), 3).unwrap();
        assert_eq!(ids(&page), [6, 1]);
        // Filters on bodies, and on the rest.
        let needle = Filter::parse("~bs needle").unwrap();
        assert!(needle.needs_bodies());
        assert_eq!(
            ids(&reader.query(Some(&needle), None, 100).unwrap()),
            [21, 16, 11, 6, 1]
        );
        let not_needle = Filter::parse("!~b needle & ~c 201").unwrap();
        assert_eq!(
            ids(&reader.query(Some(&not_needle), None, 3).unwrap()),
            [24, 22, 20]
        );
        let ws = Filter::parse("~websocket").unwrap();
        let page = reader.query(Some(&ws), None, 10).unwrap();
        assert_eq!(page, vec![(26, websocket(2))]);

        // Forwards, oldest first.
        assert_eq!(
            ids(&reader.query_after(None, 0, 10).unwrap()),
            (1..=10).collect::<Vec<_>>()
        );
        assert_eq!(
            ids(&reader.query_after(None, 20, 10).unwrap()),
            (21..=26).collect::<Vec<_>>()
        );
        let page = reader.query_after(Some(&five), 6, 2).unwrap();
        assert_eq!(ids(&page), [11, 16]);
        assert_eq!(page[0].1, written[10]);
        assert_eq!(
            ids(&reader.query_after(Some(&needle), 11, 10).unwrap()),
            [16, 21]
        );
    }

    #[test]
    fn query_finds_what_the_filter_matches_prefilters_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oracle.sqlite");
        let mut store = SqliteStore::create(&path).unwrap();
        let mut written = Vec::new();
        for i in 0..60 {
            let status = [200, 201, 404][i % 3];
            let mut r = record(&format!("/{i}"), (i % 4 != 0).then_some((status, b"x")));
            if i % 2 == 0 {
                // A head that is text (the others have a byte that is not UTF-8).
                r.request.headers = Headers::new();
                r.request.headers.append("Host", "a.localhost:8080");
            }
            if i % 5 == 0 {
                r.request.host = "10.0.0.1".into();
                r.request.headers.insert("Host", "Seven.LOCALHOST:8080");
            }
            if i % 7 == 0 {
                r.request.method = "get".into();
            }
            store.write(&r).unwrap();
            written.push(r);
        }
        store.write(&websocket(1)).unwrap();
        written.push(websocket(1));
        drop(store);
        let reader = SqliteReader::open(&path).unwrap();
        for text in [
            "~d seven",
            "~d SEVEN\\.localhost ~c 200",
            "~d 10\\.0 & ~m GET",
            "~d a\\.localhost & ~s",
            "~d localhost:8080",
            "~m get",
            "~m pos",
            "~c 404 & ~d seven",
            "~q",
            "~q & ~d seven",
            "~s & !~c 200",
            "~c 101 ~websocket",
            "~d seven | ~c 404",
            "~d nowhere",
        ] {
            let filter = Filter::parse(text).unwrap();
            let expected: Vec<i64> = (1..=written.len() as i64)
                .rev()
                .filter(|id| filter.matches(&written[*id as usize - 1]))
                .collect();
            let found = reader.query(Some(&filter), None, 1000).unwrap();
            let ids: Vec<i64> = found.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, expected, "{text}");
            for (id, r) in &found {
                assert_eq!(r, &written[*id as usize - 1], "{text}");
            }
        }
        // Not every filter finds nothing.
        let seven = Filter::parse("~d seven\\.localhost ~c 200").unwrap();
        assert!(!seven.prefilters().is_empty());
        assert_eq!(reader.query(Some(&seven), None, 1000).unwrap().len(), 3);
    }

    #[test]
    fn a_corrupt_row_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.sqlite");
        let mut store = SqliteStore::create(&path).unwrap();
        store.write(&record("/a", None)).unwrap();
        drop(store);
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("UPDATE flows SET request_headers = 'no colon' WHERE id = 1")
            .unwrap();
        let reader = SqliteReader::open(&path).unwrap();
        let filter = Filter::parse("~m POST").unwrap();
        for err in [
            reader.query(None, None, 10).unwrap_err(),
            reader.query(Some(&filter), None, 10).unwrap_err(),
            read_sqlite(&path).unwrap_err(),
        ] {
            assert!(matches!(err, Error::CaptureFormat { .. }), "{err:?}");
        }
        // A table missing.
        conn.execute_batch(
            "UPDATE flows SET request_headers = 'Host: a', websocket = 1 WHERE id = 1;
             DROP TABLE messages;",
        )
        .unwrap();
        let err = reader.get(1).unwrap_err();
        assert!(matches!(err, Error::CaptureStore { .. }), "{err:?}");
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
        for (i, r) in records.into_iter().enumerate() {
            store.write(&r).unwrap();
            drop(r);
            if i % 2000 == 1999 {
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
