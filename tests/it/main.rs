//! The integration tests, in one crate so that the helpers in `common/` and the
//! library build once for all of them (`cargo test --test it http1::` runs one file). The few tests that need the process
//! to themselves are in `tests/isolated/`.
//! Every test talks only to loopback, or to network namespaces it makes itself.

// Each file uses a different part of the helpers.
#![allow(dead_code)]

mod common;

mod access;
mod addons_diff;
mod addons_modes;
mod block;
mod block_sticky_diff;
mod body_limit_diff;
mod browser;
mod ca;
mod capture_bodies;
mod capture_cli;
mod capture_connect;
mod capture_diff;
mod capture_ws;
mod certs;
mod cli;
mod connect;
mod curl;
mod exchange;
mod fail_open;
mod filter_compat;
mod flow_facts;
mod flows;
mod har;
mod hooks;
mod hosts;
mod hosts_diff;
mod http1;
mod http2;
mod http_log;
mod keylog;
mod load;
mod mitmdump_cli;
mod mitmproxy_ca;
mod modes;
mod proxy;
mod resumption;
mod reverse;
mod sender;
mod server_replay_diff;
mod socks5;
mod sqlite;
mod streaming;
mod tls;
mod transparent;
mod upstream;
mod web;
mod websocket;
