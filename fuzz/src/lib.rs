//! Helpers shared by the fuzz targets.

use std::path::PathBuf;
use std::sync::OnceLock;

/// A path of this process's own named `name`, in memory when the system has a tmpfs at
/// `/dev/shm` (the capture readers and writers take paths, and a HAR writer syncs its
/// file when it is dropped: on tmpfs that costs nothing). Nothing is at the path.
pub fn scratch_path(name: &str) -> PathBuf {
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
    path
}

/// [`scratch_path`], holding `data`.
pub fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch_path(name);
    std::fs::write(&path, data).expect("cannot write a scratch file");
    path
}
