//! [`Log`]: one log line per connection event, as the original's `Log` middleware.

use std::net::SocketAddr;

use async_trait::async_trait;
use bytes::Bytes;

use super::{DataHooks, Middleware};
use crate::core::Connection;

/// Logs every event of every connection, with client and server addresses, through
/// `tracing` (target `mitm::log`): connections and disconnections at `info`, relayed
/// data at `debug` (size and the first bytes, escaped).
///
/// It keeps no state of its own, so one value serves all connections.
#[derive(Debug, Default, Clone, Copy)]
pub struct Log;

/// How many bytes of each chunk the data lines show.
const PREVIEW: usize = 256;

#[async_trait]
impl Middleware for Log {
    /// On only when its data lines would be written: otherwise the relay skips the
    /// hooks.
    fn data_hooks(&self) -> DataHooks {
        if tracing::enabled!(target: "mitm::log", tracing::Level::DEBUG) {
            DataHooks::On
        } else {
            DataHooks::Off
        }
    }

    async fn mitm_started(&self, addr: SocketAddr) {
        tracing::info!(target: "mitm::log", "MITM server started on {addr}.");
    }

    async fn client_connected(&self, conn: &Connection) {
        tracing::info!(target: "mitm::log", "Client {} has connected.", conn.client);
    }

    async fn server_connected(&self, conn: &Connection) {
        tracing::info!(
            target: "mitm::log",
            "Client {} has connected to server {}.",
            conn.client,
            conn.server
        );
    }

    async fn client_data(&self, conn: &Connection, data: Bytes) -> Bytes {
        tracing::debug!(
            target: "mitm::log",
            "Client {} to {}: {} bytes: {}",
            conn.client,
            if conn.server.is_connected() { "server" } else { "mitm" },
            data.len(),
            preview(&data)
        );
        data
    }

    async fn server_data(&self, conn: &Connection, data: Bytes) -> Bytes {
        tracing::debug!(
            target: "mitm::log",
            "Server {} to client {}: {} bytes: {}",
            conn.server,
            conn.client,
            data.len(),
            preview(&data)
        );
        data
    }

    async fn client_disconnected(&self, conn: &Connection) {
        tracing::info!(target: "mitm::log", "Client {} has disconnected.", conn.client);
    }

    async fn server_disconnected(&self, conn: &Connection) {
        tracing::info!(target: "mitm::log", "Server {} has disconnected.", conn.server);
    }
}

/// The first bytes of `data`, escaped like a byte string literal.
fn preview(data: &[u8]) -> String {
    let shown = &data[..data.len().min(PREVIEW)];
    let mut s: String = shown.escape_ascii().to_string();
    if data.len() > PREVIEW {
        s.push_str("...");
    }
    s
}
