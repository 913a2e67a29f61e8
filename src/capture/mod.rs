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
//! | `record.rs` | [`Record`] and its parts, made from a flow |
//! | `handler.rs` | [`Capture`] (the HTTP handler) and [`CaptureBuilder`] |
//! | `writer.rs` | [`Sink`], the writer thread and its bounded queue |
//! | `text.rs` | a record as a summary line or a `curl` command |
//! | `filter.rs` | [`Filter`]: mitmproxy's filter language |
//! | [`har`], [`flows`], [`sqlite`] | the capture formats, each a writer and a reader |
//! | [`tnetstring`] | the encoding of mitmproxy's flow files |
//! | [`server_replay`] | answering requests from recorded flows |

use std::path::Path;

mod filter;
pub mod flows;
mod handler;
pub mod har;
mod record;
pub mod server_replay;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod text;
pub mod tnetstring;
mod writer;

pub use filter::{
    Filter, FilterError, FilterErrorKind, Prefilter, MAX_FILTER_DEPTH, MAX_FILTER_LEN,
};
pub use handler::{Capture, CaptureBuilder, DEFAULT_BODY_LIMIT};
// The web UI makes records as flows start and finishes them in place.
#[cfg(feature = "web")]
pub(crate) use record::{recorded_response, Ending};
pub use record::{
    Record, RecordedBody, RecordedMessage, RecordedRequest, RecordedResponse, RecordedTimings,
};
pub use writer::{Sink, DEFAULT_QUEUE, DEFAULT_QUEUE_BYTES, FLUSH_AFTER};

/// The format of a capture file, from its name: `.har` is HAR 1.2; `.sqlite` and `.db`
/// are the SQLite store ([`sqlite`]); anything else is mitmproxy's flow format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// HAR 1.2 (`.har`).
    Har,
    /// mitmproxy's flow files (`.flows`, `.mitm`, anything else).
    Flows,
    /// An SQLite database (`.sqlite`, `.db`).
    Sqlite,
}

impl Format {
    /// The format a file's name says.
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
}

/// A sink writing a new capture file at `path` in the format its name says. Fails if
/// the file exists: nothing saved is overwritten.
pub fn create(path: impl AsRef<Path>) -> crate::Result<Box<dyn Sink>> {
    let path = path.as_ref();
    match Format::of(path) {
        Format::Har => Ok(Box::new(har::HarWriter::create(path)?)),
        Format::Flows => Ok(Box::new(flows::FlowWriter::create(path)?)),
        #[cfg(feature = "sqlite")]
        Format::Sqlite => Ok(Box::new(sqlite::SqliteStore::create(path)?)),
        #[cfg(not(feature = "sqlite"))]
        Format::Sqlite => Err(no_sqlite(path)),
    }
}

/// Every HTTP flow of the capture file at `path`, in the format its name says.
pub fn read(path: impl AsRef<Path>) -> crate::Result<Vec<Record>> {
    let path = path.as_ref();
    match Format::of(path) {
        Format::Har => har::read_har(path),
        Format::Flows => flows::read_flows(path),
        #[cfg(feature = "sqlite")]
        Format::Sqlite => sqlite::read_sqlite(path),
        #[cfg(not(feature = "sqlite"))]
        Format::Sqlite => Err(no_sqlite(path)),
    }
}

/// The error for an SQLite capture in a build without the `sqlite` feature.
#[cfg(not(feature = "sqlite"))]
pub(crate) fn no_sqlite(path: &Path) -> crate::Error {
    crate::Error::CaptureStore {
        path: path.to_path_buf(),
        reason: "this build of mitm has no SQLite support: build it with the `sqlite` \
                 feature, or use a .har or .flows file"
            .into(),
    }
}
