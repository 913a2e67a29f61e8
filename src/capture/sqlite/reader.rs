//! Reading a database back: [`SqliteReader`] (a page of the flows matching a filter,
//! newest first, beside a live writer), [`SqliteRecords`] (every flow, a page at a time),
//! [`read_sqlite`] (every flow at once); the SQL they run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OpenFlags, Row};

use super::schema::readable_version;
use super::store_err;
use crate::capture::record::spelled_version;
use crate::capture::{
    Filter, Prefilter, Record, RecordedBody, RecordedMessage, RecordedRequest, RecordedResponse,
    RecordedTimings,
};
use crate::core::TlsFacts;
use crate::error::{Error, Result};
use crate::http::message::Headers;

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
    let tls = format!("{tls}, {}", super::facts::select(version));
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

/// A read handle on a database this crate made, for a viewer such as a web UI: flows
/// with their ids, newest first, matching a [`Filter`], a page at a time.
///
/// It has a connection of its own, which reads what writers have committed, while they
/// write (WAL): open one on the file a [`Capture`](crate::capture::Capture) writes to. Reading
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
    /// database this crate made or its schema is newer than [`SCHEMA_VERSION`](super::SCHEMA_VERSION),
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

/// How many flows [`SqliteRecords`] reads in one query.
pub const READ_PAGE: usize = 500;

/// The flows of a database, one at a time, in the order they were saved (by id), with
/// their WebSocket messages, as an iterator: read a page of [`READ_PAGE`] flows at a
/// time ([`SqliteReader::query_after`]), so memory holds one page, however many flows
/// the database has.
///
/// No flow in it is changed (SQLite may still recover or checkpoint its WAL); it may
/// be one a capture is writing to, and flows committed while the iteration goes on are
/// read too. A database of schema version 1 is read as it is.
///
/// A page that fails to read (a damaged database, a row this crate did not write) is
/// read again a flow at a time: the flows before the damage come out, then the error
/// ([`Error::CaptureStore`] or [`Error::CaptureFormat`]), then nothing.
///
/// ```no_run
/// # fn run() -> mitm::Result<()> {
/// use mitm::capture::sqlite::SqliteRecords;
///
/// for record in SqliteRecords::open("session.sqlite")? {
///     let record = record?;
///     println!("{} {}", record.request.method, record.request.url());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SqliteRecords {
    reader: SqliteReader,
    /// The flows read and not yet handed out, oldest first.
    page: std::collections::VecDeque<Record>,
    /// The id of the last flow read.
    after: i64,
    /// How many flows the next query asks for: [`READ_PAGE`], or 1 after a failure.
    limit: usize,
    done: bool,
}

impl SqliteRecords {
    /// The flows of the database at `path`.
    ///
    /// # Errors
    ///
    /// As [`SqliteReader::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(SqliteReader::open(path)?.records())
    }
}

impl SqliteReader {
    /// Every flow, one at a time: see [`SqliteRecords`].
    pub fn records(self) -> SqliteRecords {
        SqliteRecords {
            reader: self,
            page: std::collections::VecDeque::new(),
            after: 0,
            limit: READ_PAGE,
            done: false,
        }
    }
}

impl Iterator for SqliteRecords {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.page.pop_front() {
                return Some(Ok(record));
            }
            if self.done {
                return None;
            }
            match self.reader.query_after(None, self.after, self.limit) {
                Ok(rows) => {
                    let Some(&(last, _)) = rows.last() else {
                        self.done = true;
                        return None;
                    };
                    self.after = last;
                    self.page.extend(rows.into_iter().map(|(_, record)| record));
                }
                // Again a flow at a time, to hand out those before the damage.
                Err(_) if self.limit > 1 => self.limit = 1,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Every flow of the database at `path`, in the order they were saved (by id), with
/// their WebSocket messages; [`SqliteRecords`] reads them a page at a time.
///
/// # Errors
///
/// [`Error::CaptureIo`] if it is not there, [`Error::CaptureFormat`] if it is not a
/// database this crate made, or one of a newer schema, [`Error::CaptureStore`] if
/// SQLite fails.
pub fn read_sqlite(path: impl AsRef<Path>) -> Result<Vec<Record>> {
    SqliteRecords::open(path)?.collect()
}

pub(super) fn query(
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

pub(super) fn get(conn: &Connection, path: &Path, id: i64) -> Result<Option<Record>> {
    let version = readable_version(conn, path)?;
    let flows = scan(conn, path, version, "WHERE f.id = ?1", [id], None, 1)?;
    Ok(flows.into_iter().next().map(|(_, record)| record))
}

pub(super) fn count(conn: &Connection, path: &Path) -> Result<u64> {
    readable_version(conn, path)?;
    let n: i64 = conn
        .query_row("SELECT count(*) FROM flows", [], |row| row.get(0))
        .map_err(store_err(path))?;
    Ok(n.max(0) as u64)
}

pub(super) fn last(conn: &Connection, path: &Path, n: usize) -> Result<Vec<Record>> {
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
        // A filter that matches bodies matches WebSocket messages too: they are read
        // first for it, as the bodies are joined.
        if websocket && join_bodies {
            record.websocket = Some(messages_of(conn, id).map_err(store_err(path))?);
        }
        if filter.is_some_and(|f| !f.matches(&record)) {
            continue;
        }
        if !join_bodies {
            bodies_of(conn, id, &mut record).map_err(store_err(path))?;
            if websocket {
                record.websocket = Some(messages_of(conn, id).map_err(store_err(path))?);
            }
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
                .map(|v| spelled_version(&v))
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
    let mut record = Record {
        annotations: Default::default(),
        started_at: time_of(row.get(0).map_err(err)?),
        client: addr(20)?,
        server: addr(21)?,
        client_tls: row.get(22).map_err(err)?,
        tls: TlsFacts {
            sni: row.get(27).map_err(err)?,
            alpn: row.get(28).map_err(err)?,
            version: row.get(29).map_err(err)?,
            ..TlsFacts::default()
        },
        // Read apart, by `messages_of`.
        websocket: None,
        facts: Default::default(),
        request: RecordedRequest {
            method: row.get(1).map_err(err)?,
            scheme: row.get(2).map_err(err)?,
            host: row.get(3).map_err(err)?,
            port: row.get(4).map_err(err)?,
            path: row.get(5).map_err(err)?,
            version: spelled_version(&row.get::<_, String>(9).map_err(err)?),
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
    super::facts::read(row, 30, &mut record)?;
    Ok((id, websocket, record))
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

/// The time `us` microseconds after (or before) the epoch.
fn time_of(us: i64) -> SystemTime {
    if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rusqlite::Connection;

    use super::*;
    use crate::capture::sqlite::tests::{record, websocket};
    use crate::capture::sqlite::SqliteStore;
    use crate::capture::Sink;

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
            // WebSocket messages are bodies to `~b`: read before the match.
            "~bq 'message 0'",
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
}
