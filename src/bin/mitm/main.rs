//! The `mitm` binary: the command of `cli.rs` with no host, so `-s` (addon scripts,
//! which need Python) is refused with how to get the Python package's `mitm`, the same
//! command with them.

use std::process::ExitCode;

// Loaded by path so that its modules sit beside it here, as they do in the Python
// package's crate, which includes the same file.
#[path = "cli.rs"]
mod cli;
#[cfg(test)]
mod tests;
mod tune;

fn main() -> ExitCode {
    tune::apply();
    ExitCode::from(cli::run(std::env::args_os(), None))
}
