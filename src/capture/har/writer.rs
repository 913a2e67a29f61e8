//! [`HarWriter`]: HAR to any stream, one entry at a time, closed at the end; and the
//! layout of the document every HAR writer here writes.

use std::io::{self, Write};

use serde_json::json;

use super::entry::write_entry;
use super::facts::{self, Seen};
use super::TAIL;
use crate::capture::{Record, Sink};

/// Writes records as a HAR 1.2 document to any stream: the document's start at once,
/// each record's entry as it is written, and the closing tail by
/// [`finish`](Self::finish) (or, failing that, when the writer is dropped). Nothing
/// is held back, so an export of any size streams; the document is whole once
/// finished.
///
/// The bytes are those a [`HarFile`](super::HarFile) holds after the same records:
/// a file kept whole after every record needs to write over its tail, which a stream
/// cannot do.
///
/// ```
/// # fn run(records: &[mitm::capture::Record]) -> std::io::Result<()> {
/// use mitm::capture::har::HarWriter;
///
/// let mut writer = HarWriter::new(Vec::new())?;
/// for record in records {
///     writer.write(record)?;
/// }
/// let har: Vec<u8> = writer.finish()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HarWriter<W: Write> {
    /// The stream; `None` once the document is closed.
    out: Option<W>,
    /// Entries written.
    entries: u64,
    /// Whether `CONNECT` flows are written ([`keep_connects`](Self::keep_connects)).
    keep_connects: bool,
    /// The server connections that have had their entry with `connect` and `ssl`.
    seen: Seen,
}

impl<W: Write> HarWriter<W> {
    /// Starts a HAR document on `out`.
    ///
    /// # Errors
    ///
    /// What writing the document's start to `out` returns.
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(head().as_bytes())?;
        Ok(HarWriter {
            out: Some(out),
            entries: 0,
            keep_connects: false,
            seen: Seen::default(),
        })
    }

    /// Whether to write `CONNECT` flows too (as entries whose URL is the authority).
    /// They are left out by default, as browsers and mitmproxy leave them out of
    /// their HAR files, whose readers expect a URL with a scheme.
    pub fn keep_connects(mut self, keep: bool) -> Self {
        self.keep_connects = keep;
        self
    }

    /// Writes the entry of `record`, in one `write_all` (nothing for a `CONNECT`,
    /// unless [kept](Self::keep_connects)).
    ///
    /// # Errors
    ///
    /// What writing to the stream returns.
    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        if record.request.is_connect() && !self.keep_connects {
            return Ok(());
        }
        let mut line = Vec::with_capacity(line_capacity(record));
        entry_line(&mut line, record, self.entries == 0, &mut self.seen);
        let Some(out) = self.out.as_mut() else {
            // `finish` takes the writer, and `drop` is last: never reached.
            return Err(io::Error::other("the HAR document is closed"));
        };
        out.write_all(&line)?;
        self.entries += 1;
        Ok(())
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Closes the document, flushes the stream and gives it back.
    ///
    /// # Errors
    ///
    /// What writing the tail or flushing returns.
    pub fn finish(mut self) -> io::Result<W> {
        let Some(mut out) = self.out.take() else {
            return Err(io::Error::other("the HAR document is closed"));
        };
        out.write_all(TAIL)?;
        out.flush()?;
        Ok(out)
    }
}

impl<W: Write> Drop for HarWriter<W> {
    /// A writer not finished closes its document all the same, so that a [`Sink`]
    /// dropped by its capture leaves a whole document.
    fn drop(&mut self) {
        if let Some(mut out) = self.out.take() {
            if let Err(e) = out.write_all(TAIL).and_then(|()| out.flush()) {
                tracing::warn!(error = %e, "capture: the HAR document could not be closed");
            }
        }
    }
}

impl<W: Write + Send + 'static> Sink for HarWriter<W> {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        HarWriter::write(self, record)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().map_or(Ok(()), Write::flush)
    }
}

/// The first line of a document: the document up to the entries array.
pub(super) fn head() -> String {
    let log = json!({
        "version": "1.2",
        "creator": {"name": "mitm", "version": env!("CARGO_PKG_VERSION")},
        "pages": [],
    });
    // A `Value` always serializes.
    let log = serde_json::to_string(&log).unwrap_or_default();
    // `{"version":…,"pages":[]}` becomes `{"log":{"version":…,"pages":[],"entries":[`.
    format!(
        "{{\"log\":{},\"entries\":[",
        log.strip_suffix('}').unwrap_or(&log)
    )
}

/// Appends the line of `record`'s entry in a document to `out`, with the separator
/// before it (none before the `first`): entries are one per line, a line break inside
/// one escaped.
pub(super) fn entry_line(out: &mut Vec<u8>, record: &Record, first: bool, seen: &mut Seen) {
    let separator: &[u8] = if first { b"\n" } else { b",\n" };
    out.reserve(line_capacity(record));
    out.extend_from_slice(separator);
    let (connect, ssl) = facts::connect_ssl(record, seen);
    write_entry(out, record, connect, ssl);
}

/// Room for the line of `record` (a guess: its bodies, a third more for base64, and
/// room for the rest).
pub(super) fn line_capacity(record: &Record) -> usize {
    2048 + record_body_bytes(record) * 4 / 3
}

/// The bytes of `record`'s bodies: what its line holds most of.
fn record_body_bytes(record: &Record) -> usize {
    record.request.body.data.len() + record.response.as_ref().map_or(0, |r| r.body.data.len())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::capture::har::tests::record;
    use crate::capture::har::{read_har, HarFile};

    #[test]
    fn a_stream_gets_the_bytes_a_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> = (0..3)
            .map(|n| record(&format!("/{n}"), Some((200, &[], Bytes::from("hi")))))
            .collect();
        for n in [0, 1, 3] {
            let path = dir.path().join(format!("{n}.har"));
            let mut file = HarFile::create(&path).unwrap();
            let mut stream = HarWriter::new(Vec::new()).unwrap();
            for r in &records[..n] {
                file.write(r).unwrap();
                stream.write(r).unwrap();
            }
            assert_eq!(stream.entries(), n as u64);
            drop(file);
            let streamed = stream.finish().unwrap();
            assert_eq!(
                String::from_utf8(streamed).unwrap(),
                std::fs::read_to_string(&path).unwrap()
            );
            assert_eq!(read_har(&path).unwrap(), records[..n]);
        }
    }

    #[test]
    fn a_writer_dropped_unfinished_closes_its_document() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dropped.har");
        let file = std::fs::File::create(&path).unwrap();
        let mut sink: Box<dyn Sink> = Box::new(HarWriter::new(file).unwrap());
        sink.write(&record("/a", None)).unwrap();
        sink.flush().unwrap();
        drop(sink);
        let paths: Vec<_> = read_har(&path)
            .unwrap()
            .into_iter()
            .map(|r| r.request.path)
            .collect();
        assert_eq!(paths, ["/a"]);
    }
}
