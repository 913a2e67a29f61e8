//! [`Records`] and [`open`]: the flows of a capture file of any format, one at a time.
//!
//! Each format has a reader that is an iterator of `Result<Record>`, holding one flow
//! (SQLite: one page of flows) at a time: [`FlowReader`] reads one tnetstring value
//! after another, [`HarReader`] cuts each entry out of the `log.entries` array and
//! skips the rest of the document, [`SqliteRecords`] pages through the rows by id.
//! [`Records`] is any of them, by the file's name; every command over a file (`read`,
//! `convert`, `replay`, `web FILE`, server replay) reads it through this.
//!
//! They share their rules for damage: every flow before it comes out, then one error
//! (typed, naming the file and where in it the damage is), then nothing.

use std::path::Path;

use super::flows::FlowReader;
use super::har::HarReader;
#[cfg(feature = "sqlite")]
use super::sqlite::SqliteRecords;
use super::{Format, Record};
use crate::error::Result;

/// The HTTP flows of a capture file, one [`Record`] at a time, whatever its format:
/// an iterator of `Result<Record>` ([`open`] makes one).
///
/// A damaged file yields every flow before the damage, then the error
/// ([`Error::CaptureFormat`](crate::Error::CaptureFormat) naming the file and the
/// byte, entry or flow where it is;
/// [`Error::CaptureIo`](crate::Error::CaptureIo),
/// [`Error::CaptureStore`](crate::Error::CaptureStore)), then `None`.
///
/// ```no_run
/// # fn run() -> mitm::Result<()> {
/// let mut shown = 0;
/// for record in mitm::capture::open("session.har")? {
///     let record = record?; // the flows before any damage were shown by then
///     println!("{}", record.summary());
///     shown += 1;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Records {
    inner: Inner,
    path: std::path::PathBuf,
    /// Whether the end was reached (and the flows skipped logged).
    ended: bool,
}

#[derive(Debug)]
enum Inner {
    Har(HarReader),
    Flows(FlowReader),
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteRecords),
}

/// The flows of the capture file at `path`, in the format its name says
/// ([`Format::of`]), read one at a time as the [`Records`] are iterated.
///
/// # Errors
///
/// [`Error::CaptureIo`](crate::Error::CaptureIo) if the file cannot be opened; for
/// SQLite, also those of [`SqliteReader::open`](super::sqlite::SqliteReader::open) (a
/// database that is not a capture). Other damage comes from the iterator, after the
/// flows before it.
pub fn open(path: impl AsRef<Path>) -> Result<Records> {
    let path = path.as_ref();
    let inner = match Format::of(path) {
        Format::Har => Inner::Har(HarReader::open(path)?),
        Format::Flows => Inner::Flows(FlowReader::open(path)?),
        #[cfg(feature = "sqlite")]
        Format::Sqlite => Inner::Sqlite(SqliteRecords::open(path)?),
        #[cfg(not(feature = "sqlite"))]
        Format::Sqlite => return Err(super::no_sqlite(path)),
    };
    Ok(Records {
        inner,
        path: path.to_path_buf(),
        ended: false,
    })
}

impl Records {
    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many flows were skipped so far because they are not HTTP flows (TCP, UDP,
    /// DNS flows of a mitmproxy flow file; 0 for the other formats).
    pub fn skipped(&self) -> u64 {
        match &self.inner {
            Inner::Flows(reader) => reader.skipped(),
            _ => 0,
        }
    }
}

impl Iterator for Records {
    type Item = Result<Record>;

    /// The next flow; at the end, the number of flows skipped is logged (once).
    fn next(&mut self) -> Option<Self::Item> {
        let next = match &mut self.inner {
            Inner::Har(reader) => reader.next(),
            Inner::Flows(reader) => reader.next(),
            #[cfg(feature = "sqlite")]
            Inner::Sqlite(reader) => reader.next(),
        };
        if next.is_none() && !self.ended {
            self.ended = true;
            if self.skipped() > 0 {
                tracing::info!(
                    path = %self.path.display(),
                    skipped = self.skipped(),
                    "flows that are not HTTP flows were skipped"
                );
            }
        }
        next
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::capture::create;
    use crate::core::{Connection, Host, Target};
    use crate::error::Error;
    use crate::http::message::{Body, HttpFlow, Request, Response};

    /// A flow to `/n` with a small body (made as the proxy makes records, so that it
    /// has every field a record has).
    fn record(n: usize) -> Record {
        let conn = Connection::new(1, Host::default());
        let target = Target::new("a.localhost", 8080, false);
        let mut flow = HttpFlow::new(
            n as u64,
            Request::new_to("GET".into(), target, format!("/{n}")),
        );
        let mut response = Response::new(200);
        response.body = Body::Full(Bytes::from(format!("body {n}")));
        flow.response = Some(response);
        Record::from_flow(&conn, &flow, 1024)
    }

    /// The paths of the records of `path` up to the first error, and the error.
    fn paths(path: &Path) -> (Vec<String>, Option<Error>) {
        let mut paths = Vec::new();
        for r in open(path).unwrap() {
            match r {
                Ok(r) => paths.push(r.request.path),
                Err(e) => return (paths, Some(e)),
            }
        }
        (paths, None)
    }

    #[test]
    fn every_format_streams_its_flows_and_stops_at_damage() {
        let dir = tempfile::tempdir().unwrap();
        let n = 1_203; // more than two pages of SQLite
        for format in Format::ALL {
            let path = dir.path().join(format!("x.{}", format.extension()));
            let mut sink = create(&path).unwrap();
            for i in 0..n {
                sink.write(&record(i)).unwrap();
            }
            sink.flush().unwrap();
            drop(sink);
            let (got, error) = paths(&path);
            assert!(error.is_none(), "{format}: {error:?}");
            assert_eq!(got.len(), n, "{format}");
            assert!(got.iter().enumerate().all(|(i, p)| *p == format!("/{i}")));
            if format == Format::Sqlite {
                continue;
            }
            // Cut in the middle of the file: the flows before the cut, then an error
            // that names the file.
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            let (got, error) = paths(&path);
            assert!(
                got.len() > n / 3 && got.len() < n / 2 + 10,
                "{format}: {}",
                got.len()
            );
            assert!(got.iter().enumerate().all(|(i, p)| *p == format!("/{i}")));
            let error = error.unwrap_or_else(|| panic!("{format}: no error"));
            assert!(matches!(error, Error::CaptureFormat { .. }), "{error}");
            assert!(error.to_string().contains("x."), "{error}");
        }
    }

    #[test]
    fn a_damaged_sqlite_page_gives_the_flows_before_the_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sqlite");
        let mut sink = create(&path).unwrap();
        for i in 0..10 {
            sink.write(&record(i)).unwrap();
        }
        sink.flush().unwrap();
        drop(sink);
        // A row this crate did not write: a method that is not text.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("UPDATE flows SET port = 'x' WHERE id = 7", [])
            .unwrap();
        drop(conn);
        let (got, error) = paths(&path);
        assert_eq!(got, (0..6).map(|i| format!("/{i}")).collect::<Vec<_>>());
        let error = error.unwrap();
        assert!(error.to_string().contains("x.sqlite"), "{error}");
    }
}
