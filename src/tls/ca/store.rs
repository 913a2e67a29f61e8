//! The CA's two files on disk: loading the pair from a directory or publishing a new one
//! there atomically, for starts racing on one directory (see the [module
//! documentation](super) for how), and saving a pair without replacing anything.
//!
//! Nothing here knows what a certificate is: the pair is PEM text to write, and loading
//! is the caller's.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{read_err, write_err, CA_CERT_FILE, CA_KEY_FILE};
use crate::error::{Error, Result};

/// A temporary file or staging directory of ours in a CA directory older than this was
/// left by a start that crashed (making a CA takes milliseconds), and is removed.
const STALE_TEMP: Duration = Duration::from_secs(10 * 60);
/// How many times [`load_or_publish`] looks at the directory. Racing others, a start
/// looks at most three times: it finds nothing and creates, finds the winner's key
/// alone and finishes it, finds the pair and loads it. More means someone is moving the
/// files about.
const INIT_ATTEMPTS: usize = 8;

/// A root certificate and its private key as the PEM text of their files.
pub(super) struct PemPair {
    pub(super) cert: String,
    pub(super) key: String,
}

/// Loads the pair kept in `dir` ([`CA_CERT_FILE`] and [`CA_KEY_FILE`]) with `load`, or,
/// when neither file is there, creates `dir` (mode 0700) and publishes a pair made by
/// `create` (key 0600, certificate 0644), unless another start publishes first; then
/// loads what was published. One file alone, with no start publishing or crashed while
/// publishing that very file, is [`Error::CaIncomplete`].
pub(super) fn load_or_publish<T>(
    dir: &Path,
    load: impl Fn(&Path, &Path) -> Result<T>,
    create: impl Fn() -> Result<PemPair>,
) -> Result<T> {
    let (cert, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    for _ in 0..INIT_ATTEMPTS {
        // The certificate is looked at first: it is published after the key, and
        // neither is ever removed, so a certificate seen without its key is never
        // a start at work.
        let cert_exists = exists(&cert).map_err(read_err(&cert))?;
        let key_exists = exists(&key).map_err(read_err(&key))?;
        match (cert_exists, key_exists) {
            (true, true) => {
                let loaded = load(&cert, &key)?;
                remove_stale_temps(dir);
                return Ok(loaded);
            }
            (true, false) => return Err(incomplete(cert, key)),
            (false, true) => {
                finish_publishing(dir)?;
                // Published now, by us or by the start at work; or a user's key.
                if !exists(&cert).map_err(read_err(&cert))? {
                    return Err(incomplete(key, cert));
                }
            }
            (false, false) => {
                create_private_dir(dir).map_err(read_err(dir))?;
                publish_new(dir, &create()?)?;
            }
        }
    }
    // Only someone moving the files about as fast as we look gets here.
    let source = io::Error::other("the CA files kept changing while being loaded");
    Err(read_err(dir)(source))
}

/// Writes `pair` to `cert_path` and `key_path`, refusing with [`Error::CaExists`] if
/// either is there. Each file appears complete or not at all and never replaces one;
/// the key comes first and is removed again if the certificate cannot be written.
pub(super) fn save(pair: &PemPair, cert_path: &Path, key_path: &Path) -> Result<()> {
    for path in [cert_path, key_path] {
        if exists(path).map_err(write_err(path))? {
            return Err(Error::CaExists {
                path: path.to_owned(),
            });
        }
    }
    write_new(key_path, pair.key.as_bytes(), 0o600)?;
    if let Err(e) = write_new(cert_path, pair.cert.as_bytes(), 0o644) {
        // A lone key would make the next `init` fail as incomplete; the key is ours.
        let _ = fs::remove_file(key_path);
        return Err(e);
    }
    Ok(())
}

/// Publishes `pair` in `dir`, unless another start publishes one first.
/// `Ok` says only that `dir` changed: the caller looks again and loads what is there.
///
/// The pair is staged in a private directory of our own, then the key is linked into
/// place (the link fails if a key is there: the one winner is decided here), then the
/// certificate. From the key's link on nothing is undone: a start that finds the key
/// alone finishes the publication from the staging directory ([`finish_publishing`]).
fn publish_new(dir: &Path, pair: &PemPair) -> Result<()> {
    let staging = dir.join(format!(".mitm.{}.tmp", unique()));
    let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    if let Err(e) = stage(&staging, pair) {
        let _ = fs::remove_dir_all(&staging);
        return Err(write_err(&staging)(e));
    }
    match link_staged(&staging.join(CA_KEY_FILE), &key_path) {
        Ok(Link::Made) => {}
        // Another start won: the caller loads its CA.
        Ok(Link::Beaten) => {
            let _ = fs::remove_dir_all(&staging);
            return Ok(());
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(write_err(&key_path)(e));
        }
    }
    // Beaten here means another start finished for us. On an error the staging
    // directory stays, for the next start to finish from.
    link_staged(&staging.join(CA_CERT_FILE), &cert_path).map_err(write_err(&cert_path))?;
    sync_dir(dir).map_err(write_err(dir))?;
    let _ = fs::remove_dir_all(&staging);
    Ok(())
}

/// What linking a staged file into place came to.
enum Link {
    Made,
    /// Another start got there first: the target was there already, or the staging
    /// directory is gone (removed by a start that finished from it, or, long after, as
    /// a crash's leftover once a CA is there).
    Beaten,
}

/// Hard-links the staged file `from` to `to`; a link never replaces `to`.
fn link_staged(from: &Path, to: &Path) -> io::Result<Link> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(Link::Made),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::AlreadyExists | io::ErrorKind::NotFound
            ) =>
        {
            Ok(Link::Beaten)
        }
        Err(e) => Err(e),
    }
}

/// Writes the pair into the new private directory `staging`, files and entries synced,
/// so that once the key is linked out of it the certificate is surely there too.
fn stage(staging: &Path, pair: &PemPair) -> io::Result<()> {
    private_dir_builder().create(staging)?;
    write_temp(&staging.join(CA_KEY_FILE), pair.key.as_bytes(), 0o600)?;
    write_temp(&staging.join(CA_CERT_FILE), pair.cert.as_bytes(), 0o644)?;
    sync_dir(staging)
}

/// `dir` holds a key without its certificate: a start is between its two links, or
/// crashed there, or the key is a user's. A start's staging directory holds the very
/// same key beside its certificate; that certificate is linked into place (never
/// replacing one) and the staging directory removed. A key with no such twin is left
/// alone for the caller to report.
fn finish_publishing(dir: &Path) -> Result<()> {
    let cert_path = dir.join(CA_CERT_FILE);
    // Unreadable here means no twin can be proven: the caller reports the key as alone.
    let Ok(published) = fs::read(dir.join(CA_KEY_FILE)) else {
        return Ok(());
    };
    let twin = temp_entries(dir)
        .into_iter()
        .find(|staging| fs::read(staging.join(CA_KEY_FILE)).is_ok_and(|key| key == published));
    let Some(staging) = twin else {
        return Ok(());
    };
    // Beaten means its own start or another finished first.
    link_staged(&staging.join(CA_CERT_FILE), &cert_path).map_err(write_err(&cert_path))?;
    sync_dir(dir).map_err(write_err(dir))?;
    let _ = fs::remove_dir_all(&staging);
    Ok(())
}

/// Our temporary files and staging directories in `dir`, named `.mitm.*.tmp` (those of
/// [`write_new`] for the CA files, and of [`publish_new`]). An unreadable `dir` has none.
fn temp_entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let ours = |name: &str| name.starts_with(".mitm.") && name.ends_with(".tmp");
    let entries = entries.filter_map(|entry| entry.ok());
    let entries = entries.filter(|entry| entry.file_name().to_str().is_some_and(ours));
    entries.map(|entry| entry.path()).collect()
}

/// Removes what crashed starts left in `dir`. Called only when `dir` holds a complete
/// CA, so nothing removed can be the only copy of a published key's certificate; and
/// only older than [`STALE_TEMP`], so a start at work keeps its own (should it lose it
/// anyway, its link fails and it loads the CA that is there). Failures are ignored: a
/// leftover is clutter, not an error.
fn remove_stale_temps(dir: &Path) {
    for path in temp_entries(dir) {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let age = meta.modified().ok().and_then(|m| m.elapsed().ok());
        if age.is_none_or(|age| age < STALE_TEMP) {
            continue;
        }
        let _ = if meta.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
    }
}

/// Makes the entries just created in `dir` durable. Only Unix opens a directory to
/// sync it; elsewhere this does nothing.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_: &Path) -> io::Result<()> {
    Ok(())
}

/// Creates `path` with `contents` without ever replacing an existing file: written to
/// a temporary file, then hard-linked into place (which fails if `path` exists).
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let write_err = |source| Error::CaWrite {
        path: path.to_owned(),
        source,
    };
    let tmp = temp_path(path).map_err(write_err)?;
    if let Err(e) = write_temp(&tmp, contents, mode) {
        let _ = fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::CaExists {
            path: path.to_owned(),
        }),
        Err(e) => Err(write_err(e)),
    }
}

fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        ));
    };
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.tmp", unique()));
    Ok(path.with_file_name(tmp))
}

/// A name part no other thread or process picks: our process id and 64 random bits.
fn unique() -> String {
    format!("{}.{:016x}", std::process::id(), rand::random::<u64>())
}

fn write_temp(tmp: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(tmp)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn exists(path: &Path) -> io::Result<bool> {
    // symlink_metadata, so that a dangling link also counts as something not to replace.
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    private_dir_builder().recursive(true).create(dir)
}

fn private_dir_builder() -> fs::DirBuilder {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
}

fn incomplete(present: PathBuf, missing: PathBuf) -> Error {
    Error::CaIncomplete { present, missing }
}
