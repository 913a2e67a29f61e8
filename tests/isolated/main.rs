//! Integration tests that need their process to themselves: they count its file
//! descriptors and install its global log subscriber, which the tests of `tests/it/`
//! running beside them would disturb. They share that crate's helpers.

// Each file uses a different part of the helpers.
#![allow(dead_code)]

#[path = "../it/common/mod.rs"]
mod common;

mod faults;
