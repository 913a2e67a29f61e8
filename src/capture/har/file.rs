//! [`HarFile`]: a HAR file that is a whole document after every record written.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::writer::{entry_line, head};
use super::TAIL;
use crate::capture::{Record, Sink};
use crate::error::{Error, Result};

/// Writes records to a HAR 1.2 file, which is a complete HAR document after every
/// [flush](Sink::flush): the entries written since the last one go over the
/// document's closing tail, with a new tail after them, in one write (see [the
/// module](super)); so does a batch that reaches 128 KiB (`BATCH_BYTES`), and what is left when
/// the writer is dropped. A [`Sink`] for
/// [`Capture`](crate::capture::Capture). A stream that cannot be written over takes a
/// [`HarWriter`](super::HarWriter), closed once at the end; both write the same bytes.
///
/// ```no_run
/// # fn run() -> mitm::Result<()> {
/// use mitm::capture::{har::HarFile, Capture};
/// let capture = Capture::builder()
///     .sink(Box::new(HarFile::create("flows.har")?))
///     .start();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HarFile {
    file: File,
    path: PathBuf,
    /// Where the tail starts: the next batch is written here.
    tail_at: u64,
    /// Entries written (those of an appended file, and those waiting in `batch`,
    /// included).
    entries: u64,
    /// Entries in the file.
    in_file: u64,
    /// The lines of the entries written since the last write to the file.
    batch: Vec<u8>,
    /// The server connections that have had their entry with `connect` and `ssl`.
    seen: super::facts::Seen,
    /// Written since the last `sync_data`.
    dirty: bool,
    /// When the file was last synced to disk.
    synced: Instant,
    /// Whether `CONNECT` flows are written ([`keep_connects`](Self::keep_connects)).
    keep_connects: bool,
}

impl HarFile {
    /// A new HAR file at `path`, with no entries yet.
    ///
    /// # Errors
    ///
    /// [`Error::CaptureIo`] if the file cannot be made, and (with
    /// [`io::ErrorKind::AlreadyExists`]) if it exists: a capture never overwrites a
    /// file; [`append`](Self::append) continues one.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| Error::CaptureIo {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err)?;
        let head = head();
        file.write_all(head.as_bytes())
            .and_then(|()| file.write_all(TAIL))
            .map_err(io_err)?;
        Ok(HarFile {
            file,
            path,
            tail_at: head.len() as u64,
            entries: 0,
            in_file: 0,
            batch: Vec::new(),
            seen: Default::default(),
            dirty: true,
            synced: Instant::now(),
            keep_connects: false,
        })
    }

    /// Continues the HAR file at `path`, one this writer made (its entries one per
    /// line, ending in `]}}`): new entries go after those it holds.
    ///
    /// # Errors
    ///
    /// [`Error::CaptureIo`] if it cannot be opened, [`Error::CaptureFormat`] if it
    /// does not end as this writer leaves its files.
    pub fn append(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| Error::CaptureIo {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io_err)?;
        let not_ours = |reason: &str| Error::CaptureFormat {
            path: path.clone(),
            reason: format!("cannot append: {reason}"),
        };
        let body = text
            .strip_suffix(TAIL)
            .ok_or_else(|| not_ours("it does not end as a HAR file mitm wrote"))?;
        let first = body.split(|&b| b == b'\n').next().unwrap_or_default();
        if !first.starts_with(b"{\"log\":") || !first.ends_with(b"\"entries\":[") {
            return Err(not_ours("it does not start as a HAR file mitm wrote"));
        }
        // One entry per line after the first: a line break in an entry is escaped.
        let entries = body.iter().filter(|&&b| b == b'\n').count() as u64;
        Ok(HarFile {
            file,
            path,
            tail_at: body.len() as u64,
            entries,
            in_file: entries,
            batch: Vec::new(),
            seen: Default::default(),
            dirty: false,
            synced: Instant::now(),
            keep_connects: false,
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries written so far (those of an appended file included): in the file after
    /// the next [flush](Sink::flush).
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Whether to write `CONNECT` flows too; left out by default, as by
    /// [`HarWriter::keep_connects`](super::HarWriter::keep_connects).
    pub fn keep_connects(mut self, keep: bool) -> Self {
        self.keep_connects = keep;
        self
    }
}

impl Sink for HarFile {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        if record.request.is_connect() && !self.keep_connects {
            return Ok(());
        }
        entry_line(&mut self.batch, record, self.entries == 0, &mut self.seen);
        self.entries += 1;
        if self.batch.len() >= BATCH_BYTES {
            self.write_batch()?;
        }
        Ok(())
    }

    /// Puts the entries written since the last flush in the file (a crash of the
    /// proxy loses only those not flushed: a [`Capture`](crate::capture::Capture)
    /// flushes at most [`FLUSH_AFTER`](crate::capture::FLUSH_AFTER) after a flow was
    /// written); this also asks the system to put them on the disk (against a crash
    /// of the machine), at most once a second: a sync costs milliseconds, and a busy
    /// writer flushes twenty times a second.
    fn flush(&mut self) -> io::Result<()> {
        self.write_batch()?;
        if self.dirty && self.synced.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }
}

impl HarFile {
    /// Writes the batch over the document's tail, with the tail after it, in one
    /// positioned write: the file only grows, so nothing of the old tail is left
    /// behind it. On an error the batch's entries are lost (the error says how many).
    fn write_batch(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let lines = self.batch.len() as u64;
        self.batch.extend_from_slice(TAIL);
        let written = self.file.write_all_at(&self.batch, self.tail_at);
        self.batch.clear();
        if let Err(e) = written {
            // Part of the batch may be in the file: cut it off and close the document
            // again after the entries before it (which may fail too, on a full disk;
            // the next batch written tries again).
            let _ = self
                .file
                .set_len(self.tail_at)
                .and_then(|()| self.file.write_all_at(TAIL, self.tail_at));
            let lost = self.entries - self.in_file;
            self.entries = self.in_file;
            let flows = if lost == 1 { "flow" } else { "flows" };
            return Err(io::Error::new(
                e.kind(),
                format!("{e} (the {lost} {flows} written since the last flush were lost with it)"),
            ));
        }
        self.tail_at += lines;
        self.in_file = self.entries;
        self.dirty = true;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        self.dirty = false;
        self.synced = Instant::now();
        Ok(())
    }
}

impl Drop for HarFile {
    fn drop(&mut self) {
        if let Err(e) = self.write_batch() {
            tracing::warn!(error = %e, path = %self.path.display(), "capture: the last entries could not be written to the HAR file");
        }
        if self.dirty {
            if let Err(e) = self.sync() {
                tracing::warn!(error = %e, path = %self.path.display(), "capture: the HAR file could not be synced to disk");
            }
        }
    }
}

/// How often a HAR file being written is synced to disk, at most.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The most bytes of entries a [`HarFile`] holds before writing them to the file, flush
/// or not: one system call for dozens of entries, as the flow file's writer.
pub const BATCH_BYTES: usize = 128 * 1024;

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::capture::har::read_har;
    use crate::capture::har::tests::{parse, record};

    #[test]
    fn the_file_is_a_whole_har_document_after_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.har");
        let mut w = HarFile::create(&path).unwrap();
        let doc = parse(&path);
        assert_eq!(doc["log"]["version"], "1.2");
        assert_eq!(doc["log"]["creator"]["name"], "mitm");
        assert_eq!(doc["log"]["entries"].as_array().unwrap().len(), 0);
        for n in 1..=3 {
            let r = record(&format!("/{n}"), Some((200, &[], Bytes::from("hi"))));
            w.write(&r).unwrap();
            w.flush().unwrap();
            let entries = parse(&path)["log"]["entries"].as_array().unwrap().clone();
            assert_eq!(entries.len(), n);
            assert_eq!(
                entries[n - 1]["request"]["url"],
                format!("http://a.localhost:8080/{n}")
            );
        }
        w.flush().unwrap();
    }

    #[test]
    fn an_existing_file_is_never_overwritten_but_can_be_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.har");
        std::fs::write(&path, "precious").unwrap();
        let Err(Error::CaptureIo { source, .. }) = HarFile::create(&path) else {
            panic!("create overwrote a file");
        };
        assert_eq!(source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        assert!(matches!(
            HarFile::append(&path),
            Err(Error::CaptureFormat { .. })
        ));

        let path = dir.path().join("b.har");
        let mut w = HarFile::create(&path).unwrap();
        w.write(&record("/1", None)).unwrap();
        drop(w);
        let mut w = HarFile::append(&path).unwrap();
        assert_eq!(w.entries(), 1);
        w.write(&record("/2", None)).unwrap();
        w.flush().unwrap();
        let urls: Vec<_> = read_har(&path)
            .unwrap()
            .iter()
            .map(|r| r.request.path.clone())
            .collect();
        assert_eq!(urls, ["/1", "/2"]);
    }

    #[test]
    fn a_writer_that_never_closes_leaves_every_record_it_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crash.har");
        let mut w = HarFile::create(&path).unwrap();
        for n in 0..5 {
            w.write(&record(
                &format!("/{n}"),
                Some((200, &[], Bytes::from("x"))),
            ))
            .unwrap();
        }
        w.flush().unwrap();
        assert_eq!(parse(&path)["log"]["entries"].as_array().unwrap().len(), 5);
        // Written, not flushed: not in the file yet, which is whole all the same.
        w.write(&record("/5", None)).unwrap();
        assert_eq!(parse(&path)["log"]["entries"].as_array().unwrap().len(), 5);
        // As a crash would: no flush, no drop.
        std::mem::forget(w);
        assert_eq!(parse(&path)["log"]["entries"].as_array().unwrap().len(), 5);
        assert_eq!(read_har(&path).unwrap().len(), 5);
    }

    #[test]
    fn a_batch_reaching_its_size_is_written_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.har");
        let mut w = HarFile::create(&path).unwrap();
        let body = Bytes::from(vec![b'a'; 10_000]);
        let mut n = 0;
        while parse(&path)["log"]["entries"]
            .as_array()
            .unwrap()
            .is_empty()
        {
            assert!(
                n * 10_000 < 2 * BATCH_BYTES,
                "no batch written after {n} records"
            );
            w.write(&record(&format!("/{n}"), Some((200, &[], body.clone()))))
                .unwrap();
            n += 1;
        }
        assert_eq!(read_har(&path).unwrap().len(), n);
        // Dropped: the rest goes in.
        for m in n..n + 3 {
            w.write(&record(&format!("/{m}"), None)).unwrap();
        }
        drop(w);
        assert_eq!(read_har(&path).unwrap().len(), n + 3);
    }
}
