//! The schema and its versions: [`SCHEMA_VERSION`], the steps that make each version
//! from the one before ([`migrate`]), and the version check of every reader.
//!
//! The steps are the truth for files that exist: a new database is made by running
//! them all from version 0, as an old one is brought up to date by running those it
//! lacks. The schema they make, with a comment for each column, is written out once,
//! in `ARCHITECTURE.md`; a test here checks it against what the steps make.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::store_err;
use crate::error::{Error, Result};

/// The schema version this crate writes, kept in the database's `PRAGMA user_version`.
pub const SCHEMA_VERSION: u32 = 4;

/// The steps of [`migrate`]: `MIGRATIONS[v]` takes a database from version `v` to
/// `v + 1`. Version 0 is a new, empty database.
const MIGRATIONS: &[&str] = &[V1, V2, super::facts::V3, V4];

/// Version 1: the first schema, as released (a file of version 1 has exactly this).
pub(super) const V1: &str = "
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

/// Version 4: the indexes no query of this crate uses go. `flows_host`,
/// `flows_status` and `flows_method` cost every flow saved an insert into a B-tree of
/// its own (a quarter of SQLite's work per flow), and no reader takes them: flows are
/// read by id (`NOT INDEXED`), and filters are checked on the rows walked.
/// `flows_started_at` stays: `count(*)` reads it (the smallest B-tree of the table),
/// and it orders flows by time for queries people write. No row is touched.
const V4: &str = "
DROP INDEX IF EXISTS flows_host;
DROP INDEX IF EXISTS flows_status;
DROP INDEX IF EXISTS flows_method;
";

/// Upgrades the database at `path` to [`SCHEMA_VERSION`], one version at a time, each
/// step in a transaction of its own; returns the version it had. A new, empty database
/// (version 0) gets the whole schema.
///
/// # Versions
///
/// A version of this crate that changes the schema raises the version and adds a step
/// here, each step in a transaction of its own (a step that fails leaves the database
/// as it was, at the version before). A database of a newer version than
/// [`SCHEMA_VERSION`] is refused by everything in [the module](super).
///
/// - Version 1 had no WebSocket messages and no TLS facts: `flows` without its
///   `websocket`, `client_sni`, `client_alpn` and `client_tls_version` columns, no
///   `messages` table.
/// - Version 1 to 2: `ALTER TABLE flows ADD COLUMN websocket INTEGER NOT NULL DEFAULT
///   0`, the three `client_sni`, `client_alpn`, `client_tls_version` columns (`TEXT`,
///   `NULL` in the flows of version 1), and `CREATE TABLE messages (…)`. No row is
///   rewritten or removed (the column's default is constant, so the step takes no
///   longer at a million flows): the flows of version 1 read back as before, as flows
///   that are not WebSocket flows and whose TLS facts are unknown.
/// - Version 2 to 3: the connection-fact columns (`client_local` on), `NULL` in older
///   flows; no row is rewritten.
/// - Version 3 to 4: `DROP INDEX` of `flows_host`, `flows_status` and `flows_method`,
///   which no query of this crate used; every flow is kept as it is. A query by host,
///   status or method walks the flows (newest first by `id`, or by `started_at` with
///   the index kept on it) instead.
///
/// [`SqliteStore::open`](super::SqliteStore::open), to append to a database, upgrades
/// it first: a file of an older version is migrated to this one, after which a mitm
/// that knows only the older version refuses it as newer. [`read_sqlite`](super::read_sqlite) and
/// [`SqliteReader`](super::SqliteReader) read a version-1 file as it is, changing
/// nothing; this upgrades one without a store to append to it.
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

pub(super) fn migrate_conn(conn: &Connection, path: &Path) -> Result<u32> {
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

/// The schema version of a database to read: one this crate made, of
/// [`SCHEMA_VERSION`] or older.
pub(super) fn readable_version(conn: &Connection, path: &Path) -> Result<u32> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::sqlite::tests::{record, version_1, websocket};
    use crate::capture::sqlite::{read_sqlite, SqliteReader, SqliteStore};
    use crate::capture::{Record, Sink};

    #[test]
    fn migrate_brings_an_empty_database_to_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.sqlite");
        std::fs::write(&path, b"").unwrap();
        assert_eq!(migrate(&path).unwrap(), 0);
        assert_eq!(migrate(&path).unwrap(), SCHEMA_VERSION);
        assert_eq!(read_sqlite(&path).unwrap(), Vec::new());
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
        assert_eq!(version(&conn), i64::from(SCHEMA_VERSION));
        store.write(&websocket(3)).unwrap();
        drop(store);
        let all = read_sqlite(&path).unwrap();
        assert_eq!(all, vec![old[0].clone(), websocket(3)]);
        // The reader opened on version 1 reads the newest version as well.
        assert_eq!(reader.last(2).unwrap(), all);
        assert_eq!(migrate(&path).unwrap(), SCHEMA_VERSION);

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

    /// The indexes of the database at `path`, by name (SQLite's own for primary keys
    /// left out).
    fn indexes(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut statement = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' \
                 AND name NOT LIKE 'sqlite_autoindex_%' ORDER BY name",
            )
            .unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// A database of schema version 3, as the steps up to 3 make it (its four
    /// indexes), holding `records`: written by a store into a database of the current
    /// version, then copied row by row (the columns are the same) into one of version 3.
    fn version_3(dir: &Path, records: &[Record]) -> std::path::PathBuf {
        let current = dir.join("current.sqlite");
        let mut store = SqliteStore::create(&current).unwrap();
        for r in records {
            store.write(r).unwrap();
        }
        drop(store);
        let path = dir.join("v3.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute("ATTACH ?1 AS current", [current.to_str().unwrap()])
            .unwrap();
        conn.execute_batch(
            "PRAGMA user_version = 3;
             INSERT INTO flows SELECT * FROM current.flows;
             INSERT INTO bodies SELECT * FROM current.bodies;
             INSERT INTO messages SELECT * FROM current.messages;
             DETACH current;",
        )
        .unwrap();
        path
    }

    #[test]
    fn a_version_3_database_is_migrated_to_4_and_keeps_every_flow() {
        let dir = tempfile::tempdir().unwrap();
        let mut failed = record("/failed", None);
        failed.error = Some("connection refused".into());
        let written = vec![
            record("/a?q=1", Some((200, b"hello"))),
            websocket(3),
            failed,
            record("/missing", Some((404, b"not here"))),
        ];
        let path = version_3(dir.path(), &written);
        let user_version = |path: &Path| -> i64 {
            Connection::open(path)
                .unwrap()
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(user_version(&path), 3);
        assert_eq!(
            indexes(&path),
            [
                "flows_host",
                "flows_method",
                "flows_started_at",
                "flows_status"
            ]
        );
        // Read as it is, unchanged.
        assert_eq!(read_sqlite(&path).unwrap(), written);
        assert_eq!(user_version(&path), 3);

        // Appending migrates it: the three indexes go, every flow stays.
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&path), 4);
        assert_eq!(indexes(&path), ["flows_started_at"]);
        let more = record("/after", Some((201, b"new")));
        store.write(&more).unwrap();
        drop(store);
        let mut all = written.clone();
        all.push(more);
        assert_eq!(read_sqlite(&path).unwrap(), all);
        let reader = SqliteReader::open(&path).unwrap();
        assert_eq!(reader.count().unwrap(), 5);
        let filter: crate::capture::Filter = "~c 404".parse().unwrap();
        assert_eq!(
            reader.query(Some(&filter), None, 10).unwrap(),
            vec![(4, written[3].clone())]
        );
        assert_eq!(reader.get(2).unwrap().as_ref(), Some(&written[1]));
        // It is now what the steps make from nothing.
        let new = dir.path().join("new.sqlite");
        drop(SqliteStore::create(&new).unwrap());
        assert_eq!(schema_of(&path), schema_of(&new));

        // `migrate` alone does the same, and says it found version 3.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let path = version_3(&other, &written);
        assert_eq!(migrate(&path).unwrap(), 3);
        assert_eq!(indexes(&path), ["flows_started_at"]);
        assert_eq!(read_sqlite(&path).unwrap(), written);
        assert_eq!(migrate(&path).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn the_version_after_this_one_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v5.sqlite");
        let mut store = SqliteStore::create(&path).unwrap();
        store.write(&record("/kept", None)).unwrap();
        drop(store);
        let next = SCHEMA_VERSION + 1;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", next)
            .unwrap();
        let before = schema_of(&path);
        for err in [
            read_sqlite(&path).unwrap_err(),
            SqliteReader::open(&path).unwrap_err(),
            SqliteStore::open(&path).unwrap_err(),
            migrate(&path).unwrap_err(),
        ] {
            assert!(matches!(err, Error::CaptureFormat { .. }), "{err:?}");
            let text = err.to_string();
            assert!(
                text.contains(&format!(
                    "its schema version is {next}, newer than this mitm knows \
                     ({SCHEMA_VERSION}); read it with a newer mitm"
                )),
                "{text}"
            );
        }
        assert_eq!(schema_of(&path), before);
        let version: i64 = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, i64::from(next));
    }

    /// `ARCHITECTURE.md`, where the schema is written out for people.
    const ARCHITECTURE: &str = include_str!("../../../ARCHITECTURE.md");

    /// The section of `ARCHITECTURE.md` on the store, and the SQL block in it.
    fn documented() -> (&'static str, &'static str) {
        let start = ARCHITECTURE
            .find("\n## The SQLite store\n")
            .expect("ARCHITECTURE.md has a section \"## The SQLite store\"");
        let section = &ARCHITECTURE[start + 1..];
        let section = section.find("\n## ").map_or(section, |end| &section[..end]);
        let sql = section
            .split_once("```sql\n")
            .and_then(|(_, rest)| rest.split_once("\n```"))
            .expect("the section on the SQLite store has a ```sql block")
            .0;
        (section, sql)
    }

    /// The statements of `sql`, sorted, each without its comments and with its spacing
    /// made plain: one space between words, none around parentheses and commas.
    fn statements(sql: &str) -> Vec<String> {
        let code: String = sql
            .lines()
            .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
            .collect::<Vec<_>>()
            .join("\n");
        let mut statements: Vec<String> = code
            .split(';')
            .map(|s| {
                let words = s.split_whitespace().collect::<Vec<_>>().join(" ");
                let mut plain = String::with_capacity(words.len());
                for c in words.chars() {
                    if matches!(c, '(' | ')' | ',') && plain.ends_with(' ') {
                        plain.pop();
                    }
                    if c == ' ' && plain.ends_with(['(', ')', ',']) {
                        continue;
                    }
                    plain.push(c);
                }
                plain
            })
            .filter(|s| !s.is_empty())
            .collect();
        statements.sort();
        statements
    }

    /// The statements that made the tables and indexes of the database at `path`.
    fn schema_of(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut statement = conn
            .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")
            .unwrap();
        let sql: Vec<String> = statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        statements(&sql.join(";\n"))
    }

    /// What differs between the statements of `made` and those `documented`.
    fn differences(made: &[String], documented: &[String]) -> String {
        let only = |a: &[String], b: &[String]| {
            a.iter()
                .filter(|s| !b.contains(s))
                .map(|s| format!("\n    {s}"))
                .collect::<String>()
        };
        format!(
            "made by the migrations, not in ARCHITECTURE.md:{}\nin ARCHITECTURE.md, not made \
             by the migrations:{}",
            only(made, documented),
            only(documented, made)
        )
    }

    #[test]
    fn architecture_md_shows_the_schema_the_migrations_make() {
        let (section, sql) = documented();
        let documented = statements(sql);
        assert!(
            section.contains(&format!("The schema, version {SCHEMA_VERSION} ")),
            "ARCHITECTURE.md does not give the schema's version as {SCHEMA_VERSION}"
        );
        let dir = tempfile::tempdir().unwrap();
        // A new database: every step from nothing.
        let new = dir.path().join("new.sqlite");
        drop(SqliteStore::create(&new).unwrap());
        let made = schema_of(&new);
        assert!(made == documented, "{}", differences(&made, &documented));
        // One of version 1, brought up to date.
        let old = dir.path().join("old.sqlite");
        version_1(&old);
        assert_eq!(migrate(&old).unwrap(), 1);
        let made = schema_of(&old);
        assert!(made == documented, "{}", differences(&made, &documented));
    }

    #[test]
    fn the_schema_check_sees_what_differs_and_nothing_else() {
        let (_, sql) = documented();
        let documented = statements(sql);
        // Spacing and comments are not the schema.
        let respaced = sql
            .replace("    ", " ")
            .replace(" (", "(")
            .replace('\n', " -- a comment; with a semicolon\n");
        assert_eq!(statements(&respaced), documented);
        // A column's type, a column left out, a column more, an index renamed are.
        for changed in [
            sql.replacen("TEXT NOT NULL", "BLOB NOT NULL", 1),
            sql.replacen("    client_alpn            TEXT,", "", 1),
            sql.replacen(
                "PRIMARY KEY (flow_id, seq)",
                "extra TEXT, PRIMARY KEY (flow_id, seq)",
                1,
            ),
            sql.replacen("flows_started_at ", "flows_by_time ", 1),
        ] {
            assert_ne!(&changed, sql, "the change was not made");
            assert_ne!(statements(&changed), documented, "{changed}");
        }
    }
}
