//! [`KeyLogWriter`]: the TLS session secrets of both hops (client to proxy, proxy to
//! origin) appended to a file in the NSS key log format, the one `SSLKEYLOGFILE` names
//! and Wireshark reads to decrypt a capture.
//!
//! Each line is `LABEL CLIENT_RANDOM SECRET`, the last two in lowercase hex, e.g.
//! `CLIENT_TRAFFIC_SECRET_0 <64 hex digits> <96 hex digits>` for TLS 1.3 or
//! `CLIENT_RANDOM <64 hex digits> <96 hex digits>` (the master secret) for TLS 1.2.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};

/// Appends TLS session secrets to one file, for Wireshark and other tools that read
/// the NSS key log format. Give it to [`MitmBuilder::key_log`](crate::MitmBuilder::key_log)
/// (or set it as `key_log` on a rustls config of your own).
///
/// The file is opened once, in append mode: what it held before is kept, and several
/// writers (this proxy, a browser) can share it. Each secret is one line, written and
/// flushed whole under a lock, so lines of concurrent handshakes never mix.
///
/// The secrets decrypt the traffic they belong to: anyone who reads the file can read
/// the intercepted traffic too.
pub struct KeyLogWriter {
    path: PathBuf,
    file: Mutex<File>,
}

impl KeyLogWriter {
    /// Opens `path` for appending, creating it (and its missing parent directories) if
    /// needed; an existing file is never truncated.
    ///
    /// # Errors
    /// [`Error::KeyLog`] when the directory or the file cannot be created or opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Arc<Self>> {
        let path = path.as_ref();
        let err = |source| Error::KeyLog {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        }))
    }

    /// The file the secrets go to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::fmt::Debug for KeyLogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLogWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl rustls::KeyLog for KeyLogWriter {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let line = key_log_line(label, client_random, secret);
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        // A handshake must not fail because the log could not be written (a full disk):
        // the secret is lost, the connection goes on.
        let _ = file.write_all(line.as_bytes());
    }
}

/// One line of the NSS key log format, with its newline.
fn key_log_line(label: &str, client_random: &[u8], secret: &[u8]) -> String {
    let mut line =
        String::with_capacity(label.len() + 3 + 2 * (client_random.len() + secret.len()));
    line.push_str(label);
    line.push(' ');
    push_hex(&mut line, client_random);
    line.push(' ');
    push_hex(&mut line, secret);
    line.push('\n');
    line
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::KeyLog;

    #[test]
    fn lines_are_label_random_secret_in_hex() {
        assert_eq!(
            key_log_line("CLIENT_RANDOM", &[0x00, 0xab], &[0x0f, 0xff, 0x10]),
            "CLIENT_RANDOM 00ab 0fff10\n"
        );
    }

    #[test]
    fn appends_without_truncating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/keys.log");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "# kept\n").unwrap();
        let log = KeyLogWriter::open(&path).unwrap();
        log.log("CLIENT_TRAFFIC_SECRET_0", &[1; 32], &[2; 48]);
        let again = KeyLogWriter::open(&path).unwrap();
        again.log("SERVER_TRAFFIC_SECRET_0", &[1; 32], &[3; 48]);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "# kept");
        assert_eq!(
            lines[1],
            format!(
                "CLIENT_TRAFFIC_SECRET_0 {} {}",
                "01".repeat(32),
                "02".repeat(48)
            )
        );
        assert!(lines[2].starts_with("SERVER_TRAFFIC_SECRET_0 "));
    }

    #[test]
    fn unopenable_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory cannot be opened as the log file.
        let e = KeyLogWriter::open(dir.path()).unwrap_err();
        assert!(matches!(e, Error::KeyLog { .. }), "{e:?}");
        assert!(e.to_string().contains("TLS key log"), "{e}");
    }
}
