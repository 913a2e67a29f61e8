//! [`SqliteStore`]: records into an SQLite database, one row per flow (and one per body
//! and WebSocket message), in transactions of up to [`BATCH`] records.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params, Connection, OpenFlags, ToSql as _};

use super::facts;
use super::reader::{count, get, last, query};
use super::schema::migrate_conn;
use super::store_err;
use crate::capture::{Filter, Record, Sink};
use crate::error::{Error, Result};
use crate::http::message::Headers;

/// The page size of a new database: SQLite's default is 4096.
pub const PAGE_SIZE: u32 = 16_384;

/// The most records in one transaction: a longer burst is committed in batches of this
/// many, so that a crash in it loses no more.
pub const BATCH: usize = 1000;

/// The columns of a flow's row before its connection facts ([`facts::COLUMNS`]).
const FLOW_COLUMNS: &str = "started_at, method, scheme, host, port, path, status, reason, error,
    request_version, response_version, request_headers, response_headers,
    request_size, response_size, request_truncated, response_truncated,
    request_end_us, response_first_byte_us, response_end_us,
    client_addr, server_addr, client_tls, websocket,
    client_sni, client_alpn, client_tls_version";

/// How many columns [`FLOW_COLUMNS`] names.
const FLOW_COUNT: usize = 27;

/// The insert of a flow's row: [`FLOW_COLUMNS`], then [`facts::COLUMNS`].
static INSERT_FLOW: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let values: Vec<String> = (1..=FLOW_COUNT + facts::COUNT)
        .map(|i| format!("?{i}"))
        .collect();
    format!(
        "INSERT INTO flows ({FLOW_COLUMNS}, {}) VALUES ({})",
        facts::COLUMNS,
        values.join(", ")
    )
});

/// Takes a flow out again (a record whose bodies or messages failed to go in).
const DELETE_FLOW: [&str; 3] = [
    "DELETE FROM messages WHERE flow_id = ?1",
    "DELETE FROM bodies WHERE flow_id = ?1",
    "DELETE FROM flows WHERE id = ?1",
];

const INSERT_BODY: &str = "INSERT INTO bodies (flow_id, side, data) VALUES (?1, ?2, ?3)";

const INSERT_MESSAGE: &str = "INSERT INTO messages (flow_id, seq, from_client, text, data, at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Saves records in an SQLite database, one row per flow. A [`Sink`] for
/// [`Capture`](crate::capture::Capture); see [the module](super) for the tables and what a crash
/// loses.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Records in the open transaction (none open when 0).
    pending: usize,
    /// Where a row's text is made before SQLite copies it (the request's head, the
    /// response's, the client's address, the server's), kept from row to row.
    scratch: Scratch,
}

/// Buffers a row's values are written into, reused: no allocation or free per flow
/// for them once they have grown.
#[derive(Debug, Default)]
struct Scratch {
    request_head: Vec<u8>,
    response_head: Vec<u8>,
    client: facts::Address,
    server: facts::Address,
    facts: facts::Scratch,
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
    /// it holds. An older schema is upgraded first ([`migrate`](super::migrate)) to
    /// [`SCHEMA_VERSION`](super::SCHEMA_VERSION), its flows kept as they are (see
    /// [`migrate`](super::migrate#versions)).
    ///
    /// # Errors
    ///
    /// [`Error::CaptureIo`] if it is not there, [`Error::CaptureFormat`] if it is not
    /// such a database or its schema is newer than [`SCHEMA_VERSION`](super::SCHEMA_VERSION),
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
            scratch: Scratch::default(),
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

    /// As [`SqliteReader::query`](super::SqliteReader::query), on the store's own connection (which sees the flows
    /// not yet committed too). A [`Capture`](crate::capture::Capture) owns its sinks: to query
    /// a database a capture is writing to, open a [`SqliteReader`](super::SqliteReader) on it.
    ///
    /// # Errors
    ///
    /// As [`SqliteReader::query`](super::SqliteReader::query).
    pub fn query(
        &self,
        filter: Option<&Filter>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(i64, Record)>> {
        query(&self.conn, &self.path, filter, before, limit)
    }

    /// As [`SqliteReader::get`](super::SqliteReader::get), on the store's own connection.
    ///
    /// # Errors
    ///
    /// As [`SqliteReader::get`](super::SqliteReader::get).
    pub fn get(&self, id: i64) -> Result<Option<Record>> {
        get(&self.conn, &self.path, id)
    }

    /// As [`SqliteReader::count`](super::SqliteReader::count), on the store's own connection.
    ///
    /// # Errors
    ///
    /// As [`SqliteReader::count`](super::SqliteReader::count).
    pub fn count(&self) -> Result<u64> {
        count(&self.conn, &self.path)
    }

    /// Commits the open transaction, if any.
    fn commit(&mut self) -> rusqlite::Result<()> {
        commit(&self.conn, &mut self.pending)
    }
}

/// Commits the transaction open on `conn` with `pending` records, if any.
fn commit(conn: &Connection, pending: &mut usize) -> rusqlite::Result<()> {
    if *pending > 0 {
        conn.execute_batch("COMMIT")?;
        *pending = 0;
    }
    Ok(())
}

/// The store's statements, looked up in the connection's cache once per burst of
/// records ([`Sink::write_each`]) rather than once per record (each lookup hashes the
/// statement's text, the flow's insert a kilobyte of it).
struct Statements<'c> {
    conn: &'c Connection,
    flow: rusqlite::CachedStatement<'c>,
    body: rusqlite::CachedStatement<'c>,
}

impl<'c> Statements<'c> {
    fn of(conn: &'c Connection) -> rusqlite::Result<Self> {
        Ok(Statements {
            conn,
            flow: conn.prepare_cached(&INSERT_FLOW)?,
            body: conn.prepare_cached(INSERT_BODY)?,
        })
    }

    /// Inserts `record` (its flow row, bodies and messages) in the open transaction.
    /// On an error, what was inserted of it is taken out again; the `bool` says
    /// whether that failed too (something of the record is left in the transaction).
    fn insert(
        &mut self,
        s: &mut Scratch,
        record: &Record,
    ) -> std::result::Result<(), (rusqlite::Error, bool)> {
        // One statement: when it fails, nothing of the record is in.
        let id = self.insert_flow(s, record).map_err(|e| (e, false))?;
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
    fn insert_flow(&mut self, s: &mut Scratch, record: &Record) -> rusqlite::Result<i64> {
        let r = &record.request;
        let response = record.response.as_ref();
        let request_head = head(&mut s.request_head, &r.headers);
        let response_head = response.map(|r| head(&mut s.response_head, &r.headers));
        let client = s.client.text(record.client);
        let server = s.server.text(record.server);
        let row = params![
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
            request_head,
            response_head,
            size(r.body.size),
            response.map(|r| size(r.body.size)),
            r.body.truncated,
            response.map(|r| r.body.truncated),
            record.timings.request_end.map(micros),
            record.timings.response_first_byte.map(micros),
            record.timings.response_end.map(micros),
            client,
            server,
            record.client_tls,
            record.websocket.is_some(),
            record.tls.sni,
            record.tls.alpn,
            record.tls.version,
        ];
        let facts = facts::values(record, &mut s.facts);
        // On the stack: the row's values, then the facts'.
        let mut values: [&dyn rusqlite::ToSql; FLOW_COUNT + facts::COUNT] =
            [&rusqlite::types::Null; FLOW_COUNT + facts::COUNT];
        values[..FLOW_COUNT].copy_from_slice(row);
        for (slot, value) in values[FLOW_COUNT..].iter_mut().zip(&facts) {
            *slot = value;
        }
        // Only the values that are not NULL are bound, on bindings cleared (NULL):
        // most of a plain flow's facts are NULL.
        let insert = &mut self.flow;
        insert.clear_bindings();
        for (i, value) in values.iter().enumerate() {
            let value = value.to_sql()?;
            if !matches!(
                value,
                ToSqlOutput::Borrowed(ValueRef::Null) | ToSqlOutput::Owned(Value::Null)
            ) {
                insert.raw_bind_parameter(i + 1, value)?;
            }
        }
        insert.raw_execute()?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Inserts the bodies and WebSocket messages of `record`, whose row is `id`.
    fn insert_parts(&mut self, id: i64, record: &Record) -> rusqlite::Result<()> {
        let r = &record.request;
        let response = record.response.as_ref();
        if !r.body.data.is_empty() {
            self.body
                .execute(params![id, "request", &r.body.data[..]])?;
        }
        if let Some(data) = response.map(|r| &r.body.data).filter(|d| !d.is_empty()) {
            self.body.execute(params![id, "response", &data[..]])?;
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

/// Saves `record` in the open transaction (opening one first), committing every
/// [`BATCH`] records: [`SqliteStore`]'s [`Sink::write`], with its statements looked up
/// and its transaction's count (`pending`) passed in.
fn save(
    statements: &mut Statements<'_>,
    scratch: &mut Scratch,
    pending: &mut usize,
    record: &Record,
) -> io::Result<()> {
    let conn = statements.conn;
    if *pending == 0 {
        conn.execute_batch("BEGIN").map_err(io::Error::other)?;
    }
    // A record that fails leaves nothing of itself behind, and the others of the
    // transaction stay: `insert` takes out what it inserted. (Not a savepoint per
    // record: that costs a quarter of the writer's time, copying the pages every
    // record touches into a statement journal.) After some errors (a full disk, an
    // I/O error) SQLite rolls the whole transaction back by itself; the flows of the
    // batch are then lost, and the error says how many.
    match statements.insert(scratch, record) {
        Ok(()) => *pending += 1,
        Err((e, left)) => {
            let lost = if conn.is_autocommit() || left {
                // The transaction is gone, or holds part of the record: give the batch
                // up.
                std::mem::take(pending)
            } else {
                0
            };
            if *pending == 0 && !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            let e = if lost > 0 {
                let flows = if lost == 1 { "flow" } else { "flows" };
                format!("{e} (the {lost} {flows} saved since the last commit were lost with it)")
            } else {
                e.to_string()
            };
            return Err(io::Error::other(e));
        }
    }
    if *pending >= BATCH {
        commit(conn, pending).map_err(io::Error::other)?;
    }
    Ok(())
}

impl Sink for SqliteStore {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        let mut error = None;
        self.write_each(&mut std::iter::once(record), &mut |e| error = Some(e));
        error.map_or(Ok(()), Err)
    }

    fn write_each(
        &mut self,
        records: &mut dyn Iterator<Item = &Record>,
        failed: &mut dyn FnMut(io::Error),
    ) {
        let SqliteStore {
            conn,
            pending,
            scratch,
            ..
        } = self;
        let mut statements = match Statements::of(conn) {
            Ok(s) => s,
            Err(e) => {
                // Every record of the burst fails alike.
                let e = e.to_string();
                records.for_each(|_| failed(io::Error::other(e.clone())));
                return;
            }
        };
        for record in records {
            if let Err(e) = save(&mut statements, scratch, pending, record) {
                failed(e);
            }
        }
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

/// A head as stored, made in `out`: `name: value` lines joined by `\n`, text when it
/// is UTF-8, else a BLOB of the same bytes.
fn head<'a>(out: &'a mut Vec<u8>, headers: &Headers) -> rusqlite::types::ToSqlOutput<'a> {
    use rusqlite::types::{ToSqlOutput, ValueRef};
    out.clear();
    for (i, (name, value)) in headers.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
    }
    ToSqlOutput::Borrowed(if std::str::from_utf8(out).is_ok() {
        ValueRef::Text(out)
    } else {
        ValueRef::Blob(out)
    })
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::capture::sqlite::tests::{record, websocket};
    use crate::capture::sqlite::{read_sqlite, SqliteReader};
    use crate::capture::RecordedBody;

    #[test]
    fn records_read_back_are_those_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let mut failed = record("/failed", None);
        failed.error = Some("connection refused".into());
        failed.request.body = RecordedBody::default();
        // mitmproxy's mark, comment and replay are kept too.
        failed.annotations.marked = ":default:".into();
        failed.annotations.comment = "two\nlines".into();
        failed.annotations.is_replay = Some("request".into());
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
        assert_eq!(crate::capture::read(&path).unwrap(), all);
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

    /// Makes SQLite fail the insert of a body `fail`: `RAISE(ABORT)` undoes the
    /// statement alone, `RAISE(ROLLBACK)` the whole transaction.
    fn fail_bodies(store: &SqliteStore, raise: &str) {
        store
            .conn
            .execute_batch(&format!(
                "DROP TRIGGER IF EXISTS fail;
                 CREATE TRIGGER fail BEFORE INSERT ON bodies WHEN NEW.data = X'6661696C'
                 BEGIN SELECT RAISE({raise}); END;"
            ))
            .unwrap();
    }

    /// The paths of the flows committed at `path`.
    fn saved_paths(path: &Path) -> Vec<String> {
        read_sqlite(path)
            .unwrap()
            .into_iter()
            .map(|r| r.request.path)
            .collect()
    }

    #[test]
    fn a_record_that_fails_leaves_nothing_and_the_batch_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = SqliteStore::create(&path).unwrap();
        // Refuses one response body (the statement alone is undone, after the flow's
        // row and its request body went in).
        fail_bodies(&store, "ABORT, 'refused'");
        store.write(&record("/a", Some((200, b"ok")))).unwrap();
        let e = store
            .write(&record("/b", Some((200, b"fail"))))
            .unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
        assert!(!e.to_string().contains("lost"), "{e}");
        store.write(&record("/c", Some((200, b"ok")))).unwrap();
        store.flush().unwrap();
        assert_eq!(saved_paths(&path), ["/a", "/c"]);
        let bodies: i64 = store
            .conn
            .query_row("SELECT count(*) FROM bodies", [], |r| r.get(0))
            .unwrap();
        assert_eq!(bodies, 4, "no body of /b is left");

        // A failure that rolls the whole transaction back says what it lost.
        fail_bodies(&store, "ROLLBACK, 'doomed'");
        store.write(&record("/d", Some((200, b"ok")))).unwrap();
        let e = store
            .write(&record("/e", Some((200, b"fail"))))
            .unwrap_err();
        assert!(e.to_string().contains("the 1 flow saved"), "{e}");
        store.write(&record("/f", Some((200, b"ok")))).unwrap();
        store.flush().unwrap();
        assert_eq!(saved_paths(&path), ["/a", "/c", "/f"]);
    }

    #[test]
    fn a_burst_written_together_fails_record_by_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = SqliteStore::create(&path).unwrap();
        let burst = |store: &mut SqliteStore, records: &[Record]| {
            let mut errors = Vec::new();
            store.write_each(&mut records.iter(), &mut |e| errors.push(e.to_string()));
            errors
        };
        fail_bodies(&store, "ABORT, 'refused'");
        let records = ["/a", "/b", "/c"].map(|p| {
            let body: &[u8] = if p == "/b" { b"fail" } else { b"ok" };
            record(p, Some((200, body)))
        });
        let errors = burst(&mut store, &records);
        assert!(
            matches!(&errors[..], [e] if e.contains("refused") && !e.contains("lost")),
            "{errors:?}"
        );
        // A trigger that rolls the whole transaction back in the middle of a burst: the
        // flows of the batch are lost, said once, and the burst goes on in a new one.
        fail_bodies(&store, "ROLLBACK, 'doomed'");
        let records = ["/d", "/e", "/f"].map(|p| {
            let body: &[u8] = if p == "/e" { b"fail" } else { b"ok" };
            record(p, Some((200, body)))
        });
        let errors = burst(&mut store, &records);
        assert!(
            matches!(&errors[..], [e] if e.contains("the 3 flows saved")),
            "{errors:?}"
        );
        store.flush().unwrap();
        assert_eq!(saved_paths(&path), ["/f"]);
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
}
