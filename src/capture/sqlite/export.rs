//! [`export`]: records as an SQLite database written to any stream, by way of a
//! temporary file.
//!
//! SQLite reads and writes databases in files; the way around that, an in-memory
//! database serialized to bytes (`sqlite3_serialize`), needs rusqlite's `serialize`
//! feature, which this crate does not build. So an export is a database made in a
//! temporary directory of its own, copied to the stream, and removed.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{store_err, SqliteStore};
use crate::capture::{Record, Sink};
use crate::error::{Error, Result};

/// Writes `records` to `out` as the file of an SQLite database of this crate's schema
/// (what [`SqliteStore`] would have saved), flushes `out` and gives it back.
///
/// The database is made in a directory of its own in the system's temporary directory
/// (only its owner may enter it, on Unix), then copied to `out`; both are removed
/// whatever happens.
///
/// # Errors
///
/// What making the temporary database, writing a record to it, reading it back or
/// writing to `out` returns.
pub fn export<'a, W: Write>(
    records: impl IntoIterator<Item = &'a Record>,
    mut out: W,
) -> io::Result<W> {
    let dir = TempDir::new("export")?;
    let path = dir.path.join("export.sqlite");
    let mut store = SqliteStore::create(&path).map_err(io::Error::other)?;
    for record in records {
        store.write(record)?;
    }
    store.flush()?;
    // The last connection to close checkpoints the WAL into the file and removes it:
    // the file alone is the database.
    drop(store);
    io::copy(&mut File::open(&path)?, &mut out)?;
    out.flush()?;
    Ok(out)
}

/// Copies the database at `from` into `to` (a new file, or an empty one) as one
/// consistent snapshot, with SQLite's `VACUUM INTO`. `from` is opened read-only: it
/// is never written to. Each flow keeps its id (`flows.id` is the table's `INTEGER
/// PRIMARY KEY`, which a vacuum keeps); the copy is in rollback-journal mode, as
/// `VACUUM INTO` makes it ([`SqliteStore::open`] turns it to WAL).
///
/// # Errors
///
/// [`Error::CaptureStore`] if SQLite fails (`to` exists and is not empty, say);
/// [`Error::CaptureIo`] if `to` is not UTF-8, which SQLite takes file names in.
// Only the web UI copies databases.
#[cfg_attr(not(feature = "web"), allow(dead_code))]
pub(crate) fn copy_database(from: &Path, to: &Path) -> Result<()> {
    let Some(name) = to.to_str() else {
        return Err(Error::CaptureIo {
            path: to.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path is not UTF-8"),
        });
    };
    let conn = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(store_err(from))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(store_err(from))?;
    conn.execute("VACUUM INTO ?1", [name])
        .map_err(store_err(from))?;
    Ok(())
}

/// A new, private directory in the system's temporary directory, removed with what is
/// in it when dropped.
#[derive(Debug)]
pub(crate) struct TempDir {
    pub(crate) path: PathBuf,
}

impl TempDir {
    /// A directory named `mitm-{what}-…`.
    pub(crate) fn new(what: &str) -> io::Result<Self> {
        let name = format!(
            "mitm-{what}-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let path = std::env::temp_dir().join(name);
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        // Fails if it exists: no one else's directory is used.
        builder.create(&path)?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(error = %e, path = %self.path.display(), "capture: a temporary export could not be removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::sqlite::read_sqlite;
    use crate::capture::sqlite::tests::{record, websocket};
    use crate::capture::Format;

    #[test]
    fn an_export_is_a_database_of_the_records_and_leaves_nothing_behind() {
        let records = vec![
            record("/a", Some((200, b"hello"))),
            websocket(3),
            record("/b", None),
        ];
        let before = exports_left();
        let bytes = export(&records, Vec::new()).unwrap();
        assert_eq!(exports_left(), before);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("back.sqlite");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_sqlite(&path).unwrap(), records);
        // No records: a database with none; through `capture::export` too.
        let bytes = crate::capture::export(Format::Sqlite, [], Vec::new()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_sqlite(&path).unwrap(), Vec::new());
    }

    #[test]
    fn a_database_copy_is_the_same_flows_and_never_writes_over_a_file() {
        let records = vec![record("/a", Some((200, b"hello"))), websocket(2)];
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from.sqlite");
        let mut store = SqliteStore::create(&from).unwrap();
        for r in &records {
            store.write(r).unwrap();
        }
        drop(store);
        let before = std::fs::read(&from).unwrap();
        let to = dir.path().join("to.sqlite");
        copy_database(&from, &to).unwrap();
        assert_eq!(read_sqlite(&to).unwrap(), records);
        assert!(
            std::fs::read(&from).unwrap() == before,
            "the original changed"
        );
        // A file there already (not an empty one) is left alone.
        let taken = dir.path().join("taken");
        std::fs::write(&taken, b"someone's file").unwrap();
        let err = copy_database(&from, &taken).unwrap_err();
        assert!(matches!(err, Error::CaptureStore { .. }), "{err}");
        assert_eq!(std::fs::read(&taken).unwrap(), b"someone's file");
    }

    /// This process's temporary exports.
    fn exports_left() -> usize {
        let prefix = format!("mitm-export-{}-", std::process::id());
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            })
            .count()
    }
}
