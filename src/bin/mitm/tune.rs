//! glibc's copies made fast on AMD processors, by one `exec` of the binary at start.
//!
//! glibc before 2.39 copies blocks of 8 KiB and more with `rep movsb` on processors
//! that announce fast string moves; on AMD Zen that instruction is several times slower
//! than glibc's vector loop when source and destination are not aligned alike (glibc's
//! bug 30994, fixed in 2.39 by not using it there). rustls copies the plaintext of every
//! TLS record it receives out of its frame buffer, from 5 bytes past a record's start,
//! into a new allocation: on HTTPS bulk transfers that one copy was a fifth of the
//! proxy's CPU (docs/performance.md, "HTTPS bulk"). The threshold is a glibc tunable
//! read only when a program starts, so the binary runs itself again, once, with it
//! raised, when it is on such a processor and `GLIBC_TUNABLES` is not set (set it, even
//! empty, to keep glibc's choice). Nothing else changes: same process id, arguments,
//! environment and descriptors.

/// The tunable: `rep movsb` only from 4 MiB, where glibc's non-temporal copies take
/// over anyway.
pub(crate) const TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold=4194304";

/// Whether to run again with [`TUNABLE`]: `GLIBC_TUNABLES` unset and an AMD processor
/// (`vendor_id` in `/proc/cpuinfo`).
pub(crate) fn wanted(tunables_set: bool, cpuinfo: &str) -> bool {
    !tunables_set
        && cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("vendor_id"))
            .and_then(|rest| rest.split(':').nth(1))
            .is_some_and(|v| v.trim() == "AuthenticAMD")
}

/// Runs this binary again with [`TUNABLE`] when [`wanted`]; returns (and the program goes
/// on as it is) when not, or when that fails.
#[cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]
pub(crate) fn apply() {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let tunables_set = std::env::var_os("GLIBC_TUNABLES").is_some();
    if tunables_set {
        return;
    }
    // The vendor is on the first lines: no need to read every core's block.
    let mut head = [0u8; 512];
    let n = std::fs::File::open("/proc/cpuinfo")
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    if !wanted(tunables_set, &String::from_utf8_lossy(&head[..n])) {
        return;
    }
    let mut args = std::env::args_os();
    let Some(arg0) = args.next() else { return };
    // `exec` returns only when it failed.
    let _ = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", TUNABLE)
        .exec();
}

/// Elsewhere: nothing to do.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu")))]
pub(crate) fn apply() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_amd_processors_without_tunables_are_tuned() {
        let amd = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n";
        let intel = "processor\t: 0\nvendor_id\t: GenuineIntel\n";
        assert!(wanted(false, amd));
        assert!(!wanted(true, amd), "the user's GLIBC_TUNABLES are kept");
        assert!(!wanted(false, intel));
        assert!(!wanted(false, ""));
        assert!(!wanted(false, "vendor_id AuthenticAMD"));
    }
}
