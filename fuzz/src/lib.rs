//! Helpers shared by the fuzz targets.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A file of this process's own, for the capture readers and writers (they take
/// paths): in memory when the system has a tmpfs at `/dev/shm` (a HAR writer syncs its
/// file when it is dropped: on tmpfs that costs nothing). Removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A scratch path named `name`, with nothing at it yet.
    pub fn empty(name: &str) -> Scratch {
        static DIR: OnceLock<PathBuf> = OnceLock::new();
        let dir = DIR.get_or_init(|| {
            let shm = PathBuf::from("/dev/shm");
            if shm.is_dir() {
                shm
            } else {
                std::env::temp_dir()
            }
        });
        let path = dir.join(format!("mitm-fuzz-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Scratch { path }
    }

    /// A scratch file named `name` holding `data`.
    pub fn with(name: &str, data: &[u8]) -> Scratch {
        let scratch = Scratch::empty(name);
        std::fs::write(&scratch.path, data).expect("cannot write a scratch file");
        scratch
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
