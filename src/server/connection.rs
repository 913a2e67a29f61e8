//! The life of one client connection: its first bytes pick a protocol, which connects
//! and relays; the connection hooks fire around it, and a failure is logged by whose
//! fault it was.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::block::Block;
use crate::core::{Connection, Flow, Host, Target};
use crate::engine::context::Context;
use crate::error::{Error, Result, Side};
use crate::protocol::{Connected, Protocol, Resolution};

/// The life of one client connection, hooks included. `permit` is its place under the
/// connection limit, given back at the end. A client `block` refuses is answered and
/// closed before any hook or protocol sees it.
pub(super) async fn serve(
    cx: Context,
    protocols: Arc<[Arc<dyn Protocol>]>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    permit: OwnedSemaphorePermit,
    block: Block,
) {
    if let Some(blocked) = block.refuses(peer.ip()) {
        super::block::refuse(stream, peer, blocked).await;
        drop(permit);
        return;
    }
    // The proxy writes whole chunks; Nagle's algorithm would only delay them.
    let _ = stream.set_nodelay(true);
    let mut conn = Connection::new(id, Host::new(peer));
    conn.client_socket.started = Some(std::time::SystemTime::now());
    conn.client_socket.local = stream.local_addr().ok();
    if protocols.iter().any(|p| p.wants_original_destination()) {
        conn.original_dst = crate::net::original_dst::redirected_from(&stream, &cx.local_addrs);
    }
    cx.chain.client_connected(&conn).await;
    let driven = if conn.is_aborted() {
        Err(Error::Aborted)
    } else {
        drive(&cx, &protocols, &mut conn, stream).await
    };
    if let Err(e) = driven {
        report(&cx, &conn, &e);
    }
    // The original's order at the end: the server's side first, then the client's.
    // Only a server whose `server_connected` fired gets its `server_disconnected`.
    if conn.server_announced {
        cx.chain.server_disconnected(&conn).await;
    }
    cx.chain.client_disconnected(&conn).await;
    drop(permit);
}

/// Picks a protocol, connects, relays.
async fn drive(
    cx: &Context,
    protocols: &[Arc<dyn Protocol>],
    conn: &mut Connection,
    mut stream: TcpStream,
) -> Result<()> {
    let sniffed = match sniff(protocols, conn, &mut stream).await {
        // Nobody took a client that came straight to a transparent listener: the
        // firewall's redirect rules are what is missing, so say that.
        Err(Error::NoProtocol)
            if conn.original_dst.is_none()
                && protocols.iter().any(|p| p.wants_original_destination()) =>
        {
            return Err(match stream.local_addr() {
                Ok(local) => Error::NotRedirected { local },
                Err(_) => Error::NoProtocol,
            });
        }
        other => other?,
    };
    let Some((protocol, target, first)) = sniffed else {
        return Ok(());
    };
    conn.protocol = Some(protocol.name());
    conn.target = Some(target.clone());
    let data = cx.chain.data(conn, Flow::ClientToServer, first).await;
    if conn.is_aborted() {
        return Err(Error::Aborted);
    }
    match protocol
        .connect(cx, conn, Box::new(stream), target, data)
        .await?
    {
        Connected::Tunnel(tunnel) => {
            cx.announce_server(conn).await;
            protocol.handle(cx, conn, tunnel).await
        }
        Connected::Handled => Ok(()),
    }
}

/// Reads the client's first bytes until a protocol accepts them. `None` when the
/// client closed without sending anything (not worth an error).
async fn sniff(
    protocols: &[Arc<dyn Protocol>],
    conn: &Connection,
    stream: &mut TcpStream,
) -> Result<Option<(Arc<dyn Protocol>, Target, Bytes)>> {
    let most = protocols
        .iter()
        .map(|p| p.bytes_needed())
        .max()
        .unwrap_or(0);
    let wait = protocols
        .iter()
        .map(|p| p.timeout())
        .max()
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + wait;
    let mut candidates: Vec<&Arc<dyn Protocol>> = protocols.iter().collect();
    let mut buf = BytesMut::with_capacity(most.clamp(512, 16 * 1024));
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await;
        let n = match read {
            Ok(r) => r.map_err(Error::client_io)?,
            Err(_) if buf.is_empty() => return Ok(None),
            Err(_) => return Err(Error::ClientTimeout),
        };
        if n == 0 && buf.is_empty() {
            return Ok(None);
        }
        let mut kept = Vec::with_capacity(candidates.len());
        for p in candidates {
            match p.resolve(conn, &buf).await {
                Resolution::Accept(target) => return Ok(Some((p.clone(), target, buf.freeze()))),
                Resolution::NeedMore if n > 0 && buf.len() < p.bytes_needed() => kept.push(p),
                _ => {}
            }
        }
        candidates = kept;
        if candidates.is_empty() {
            return Err(Error::NoProtocol);
        }
    }
}

/// Logs how a connection failed, at a level that matches whose fault it was.
fn report(cx: &Context, conn: &Connection, e: &Error) {
    let chain = crate::error::Report(e);
    let target = conn.target.as_ref().map(ToString::to_string);
    match e {
        // A client that just left mid-handshake (reset, EOF) said nothing about trust.
        Error::ClientTls { source, .. } if !is_tls_failure(source) => {
            tracing::debug!(error = %chain, "client went away during the TLS handshake")
        }
        // The tunnel has said already whether it learned the host.
        Error::ClientTls { .. } if cx.fail_open.is_some() => tracing::warn!(
            error = %chain,
            "client refused the TLS handshake; does it trust the mitm CA certificate? \
             (TLS fail-open passes its host through for a while if its origin verified)"
        ),
        Error::ClientTls { .. } => tracing::warn!(
            error = %chain,
            "client refused the TLS handshake; does it trust the mitm CA certificate?"
        ),
        _ if e.side() == Side::Client => tracing::debug!(error = %chain, "client failed"),
        _ => tracing::warn!(error = %chain, target, "connection failed"),
    }
}

/// Whether a handshake error came from TLS itself (an alert, a bad message) rather than
/// from the connection going away under it.
fn is_tls_failure(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        || e.kind() == std::io::ErrorKind::InvalidData
}
