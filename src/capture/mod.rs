//! Keeping flows: [`Record`] (one finished flow as plain data, what every capture
//! format writes and reads), [`Sink`] (where records go: a file format, a store), and
//! [`Capture`] (the middleware that turns each finished flow into a record and hands it
//! to a writer thread through a bounded queue, so that saving never slows the proxy).
//!
//! ```no_run
//! # async fn run() -> mitm::Result<()> {
//! use std::sync::Arc;
//! use mitm::capture::{Capture, Record, Sink};
//!
//! /// Prints one line per flow.
//! struct Lines;
//!
//! impl Sink for Lines {
//!     fn write(&mut self, record: &Record) -> std::io::Result<()> {
//!         let status = record.response.as_ref().map_or(0, |r| r.status);
//!         println!("{} {} {status}", record.request.method, record.request.url());
//!         Ok(())
//!     }
//! }
//!
//! let capture = Capture::builder().sink(Box::new(Lines)).start();
//! let proxy = mitm::Mitm::builder().http_handler(Arc::new(capture)).bind().await?;
//! # Ok(()) }
//! ```
//!
//! | file | what it holds |
//! | --- | --- |
//! | `mod.rs` | [`Format`]; [`create`] and [`read`] a file ([`SaveOptions`]), [`export`] to any stream |
//! | `records.rs` | [`Records`]: a file's flows one at a time, in any format ([`open`]) |
//! | `record.rs` | [`Record`] and its parts, made from a flow |
//! | `handler.rs` | [`Capture`] (the HTTP handler) and [`CaptureBuilder`] |
//! | `writer.rs` | [`Sink`], the writer thread and its bounded queue |
//! | `text.rs` | a record as a summary line or a `curl` command |
//! | `filter.rs` | [`Filter`]: mitmproxy's filter language |
//! | [`har`], [`flows`], [`sqlite`] | the capture formats, each a writer and a reader |
//! | [`tnetstring`] | the encoding of mitmproxy's flow files |
//! | [`server_replay`] | answering requests from recorded flows |

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::str::FromStr;

mod digits;
pub mod flows;
mod handler;
pub mod har;
mod record;
mod records;
pub mod server_replay;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod text;
pub mod tnetstring;
mod writer;

// The filter language has its own module (flows in hooks match it too); here for
// those who found it with captures.
pub use crate::filter::{
    Filter, FilterError, FilterErrorKind, Prefilter, MAX_FILTER_DEPTH, MAX_FILTER_LEN,
};
pub use handler::{Capture, CaptureBuilder, DEFAULT_BODY_LIMIT};
// The web UI makes records as flows start and finishes them in place.
#[cfg(feature = "web")]
pub(crate) use record::{
    differs, error_text, is_websocket, kept_body, recorded_reason, recorded_response,
    scheme_and_path, version_name, Ending,
};
pub use record::{
    Annotations, Record, RecordedBody, RecordedFacts, RecordedMessage, RecordedRequest,
    RecordedResponse, RecordedTimings,
};
pub use records::{open, Records};
pub use writer::{Sink, BURST, DEFAULT_QUEUE, DEFAULT_QUEUE_BYTES, FLUSH_AFTER};

/// The format of a capture: by its name (`"har"`, `"flows"`, `"sqlite"`: [`FromStr`]),
/// or by a file's ([`Format::of`]).
///
/// ```
/// use mitm::capture::Format;
///
/// let format: Format = "har".parse().unwrap();
/// assert_eq!(format, Format::Har);
/// assert_eq!(format!("mitm.{}", format.extension()), "mitm.har");
/// assert!("pcap".parse::<Format>().unwrap_err().to_string().contains("har, flows, sqlite"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// HAR 1.2 (`.har`).
    Har,
    /// mitmproxy's flow files (`.flows`, `.mitm`, anything else).
    Flows,
    /// An SQLite database (`.sqlite`, `.db`): the store of [`sqlite`].
    Sqlite,
}

impl Format {
    /// Every format, in the order their names are listed.
    pub const ALL: [Format; 3] = [Format::Har, Format::Flows, Format::Sqlite];

    /// The format a file's name says: `.har` is HAR 1.2; `.sqlite` and `.db` are the
    /// SQLite store; anything else is mitmproxy's flow format.
    pub fn of(path: &Path) -> Format {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("har") => Format::Har,
            Some("sqlite" | "db") => Format::Sqlite,
            _ => Format::Flows,
        }
    }

    /// Its name, which [`FromStr`] reads: `har`, `flows` or `sqlite`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Har => "har",
            Format::Flows => "flows",
            Format::Sqlite => "sqlite",
        }
    }

    /// The extension of its files, without the dot: `har`, `flows` or `sqlite`; a file
    /// named with it is read back in this format ([`Format::of`]).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Har => "har",
            Format::Flows => "flows",
            Format::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = ParseFormatError;

    /// A format by its [name](Format::name), in any case.
    fn from_str(name: &str) -> std::result::Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| ParseFormatError(name.to_owned()))
    }
}

/// A name that is no [`Format`]'s; its message lists the names there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFormatError(String);

impl fmt::Display for ParseFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
        write!(
            f,
            "unknown capture format {:?}: one of {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for ParseFormatError {}

/// A sink writing a new capture file at `path` in the format its name says, with the
/// default [`SaveOptions`]. Fails if the file exists: nothing saved is overwritten.
pub fn create(path: impl AsRef<Path>) -> crate::Result<Box<dyn Sink>> {
    create_with(path, SaveOptions::default())
}

/// What a capture file holds beyond the formats' defaults.
///
/// ```no_run
/// # fn run() -> mitm::Result<()> {
/// use mitm::capture::{create_with, SaveOptions};
/// let sink = create_with("all.flows", SaveOptions::default().keep_connects(true))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SaveOptions {
    /// Whether HAR and flow files hold `CONNECT` flows too. They leave them out by
    /// default, as mitmproxy's and browsers' files do (the requests inside a tunnel
    /// are flows of their own); SQLite stores keep them always.
    pub keep_connects: bool,
}

impl SaveOptions {
    /// Sets [`keep_connects`](Self::keep_connects).
    pub fn keep_connects(mut self, keep: bool) -> Self {
        self.keep_connects = keep;
        self
    }
}

/// A sink writing a new capture file at `path` in the format its name says, as
/// `options` say. Fails if the file exists: nothing saved is overwritten.
pub fn create_with(path: impl AsRef<Path>, options: SaveOptions) -> crate::Result<Box<dyn Sink>> {
    let path = path.as_ref();
    let keep = options.keep_connects;
    match Format::of(path) {
        Format::Har => Ok(Box::new(har::HarFile::create(path)?.keep_connects(keep))),
        Format::Flows => Ok(Box::new(
            flows::FlowWriter::create(path)?.keep_connects(keep),
        )),
        #[cfg(feature = "sqlite")]
        Format::Sqlite => Ok(Box::new(sqlite::SqliteStore::create(path)?)),
        #[cfg(not(feature = "sqlite"))]
        Format::Sqlite => Err(no_sqlite(path)),
    }
}

/// Every HTTP flow of the capture file at `path`, in the format its name says, all in
/// memory: [`open`] reads them one at a time.
///
/// # Errors
///
/// As [`open`] and its [`Records`]: the first error, the flows before it dropped.
pub fn read(path: impl AsRef<Path>) -> crate::Result<Vec<Record>> {
    open(path)?.collect()
}

/// Writes `records` to `out` as one capture in `format` (what a file of that format
/// holds), flushes `out` and gives it back: a download, a pipe, a `Vec<u8>`.
///
/// HAR ([`har::HarWriter`]) and flow files ([`flows::FlowWriter`]) are written record
/// by record as they go, nothing held back, and leave `CONNECT` flows out as their
/// writers do by default; `out` gets many writes, a buffer in front
/// of an unbuffered stream pays. SQLite writes databases only to files: the database
/// is made in a temporary file of its own and copied to `out` ([`sqlite::export`]).
///
/// ```
/// # fn run(records: &[mitm::capture::Record]) -> std::io::Result<()> {
/// use mitm::capture::{export, Format};
///
/// let har: Vec<u8> = export(Format::Har, records, Vec::new())?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// What writing to `out` returns; for SQLite, also the temporary database's errors,
/// and [`io::ErrorKind::Unsupported`] in a build without the `sqlite` feature.
pub fn export<'a, W: Write>(
    format: Format,
    records: impl IntoIterator<Item = &'a Record>,
    out: W,
) -> io::Result<W> {
    match format {
        Format::Har => {
            let mut writer = har::HarWriter::new(out)?;
            for record in records {
                writer.write(record)?;
            }
            writer.finish()
        }
        Format::Flows => {
            let mut writer = flows::FlowWriter::new(out);
            for record in records {
                writer.write(record)?;
            }
            writer.finish()
        }
        #[cfg(feature = "sqlite")]
        Format::Sqlite => sqlite::export(records, out),
        #[cfg(not(feature = "sqlite"))]
        Format::Sqlite => Err(io::Error::new(io::ErrorKind::Unsupported, NO_SQLITE)),
    }
}

/// Why a build without the `sqlite` feature has no SQLite captures.
#[cfg(not(feature = "sqlite"))]
const NO_SQLITE: &str = "this build of mitm has no SQLite support: build it with the \
                         `sqlite` feature, or use a .har or .flows file";

/// The error for an SQLite capture in a build without the `sqlite` feature.
#[cfg(not(feature = "sqlite"))]
pub(crate) fn no_sqlite(path: &Path) -> crate::Error {
    crate::Error::CaptureStore {
        path: path.to_path_buf(),
        reason: NO_SQLITE.into(),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::core::{Connection, Host, Target};
    use crate::http::message::{Body, HttpFlow, Request, Response};

    #[test]
    fn formats_are_named_parsed_back_and_known_by_their_extension() {
        for format in Format::ALL {
            assert_eq!(format.name().parse::<Format>(), Ok(format));
            assert_eq!(format.to_string(), format.name());
            let file = format!("x.{}", format.extension());
            assert_eq!(Format::of(Path::new(&file)), format);
        }
        assert_eq!("SQLite".parse::<Format>(), Ok(Format::Sqlite));
        for bad in ["pcap", "", "har "] {
            let err = bad.parse::<Format>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("unknown capture format {bad:?}: one of har, flows, sqlite")
            );
        }
    }

    #[test]
    fn an_export_reads_back_as_the_records_exported() {
        let conn = Connection::new(1, Host::default());
        let records: Vec<Record> = (0..3)
            .map(|i| {
                let target = Target::new("a.localhost", 8080, false);
                let mut flow =
                    HttpFlow::new(i, Request::new_to("GET".into(), target, format!("/{i}")));
                let mut response = Response::new(200);
                response.body = Body::Full(Bytes::from(format!("body {i}")));
                flow.response = Some(response);
                Record::from_flow(&conn, &flow, 1024)
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        for format in [Format::Har, Format::Flows] {
            let bytes = export(format, &records, Vec::new()).unwrap();
            let path = dir.path().join(format!("back.{}", format.extension()));
            std::fs::write(&path, bytes).unwrap();
            let back: Vec<String> = read(&path)
                .unwrap()
                .iter()
                .map(|r| {
                    format!(
                        "{} {}",
                        r.request.url(),
                        String::from_utf8_lossy(&r.response.as_ref().unwrap().body.data)
                    )
                })
                .collect();
            assert_eq!(
                back,
                ["/0", "/1", "/2"].map(|p| format!("http://a.localhost:8080{p} body {}", &p[1..])),
                "{format}"
            );
        }
    }
}
