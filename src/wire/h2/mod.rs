//! The HTTP/2 wire format, over the `h2` crate: starting connections as a server (with
//! the proxy's limits) and as a client, moving body data with flow control, and
//! converting heads to and from the crate's messages (`convert`).
//!
//! What to do with a stream (routing, hooks, upstream connections) is the exchange's
//! business (`crate::engine::exchange`).

pub(crate) mod convert;

use std::future::poll_fn;

use bytes::Bytes;
use h2::{RecvStream, SendStream};

use crate::error::{Error, Result, Side};
use crate::http::settings::Settings;
use crate::net::io::BoxIo;

/// The server side of an HTTP/2 connection with a client.
pub(crate) type ServerConnection = h2::server::Connection<BoxIo, Bytes>;
/// The client side of an HTTP/2 connection with an origin, to be driven by a task.
pub(crate) type ClientConnection = h2::client::Connection<BoxIo, Bytes>;

/// Runs the server handshake with an HTTP/2 client, announcing the proxy's limits: at
/// most `max_streams` streams at once, and header lists of at most `max_head` bytes
/// (the HTTP/1 head limit).
pub(crate) async fn serve(io: BoxIo, settings: &Settings) -> Result<ServerConnection> {
    let header_list = u32::try_from(settings.max_head).unwrap_or(u32::MAX);
    h2::server::Builder::new()
        .max_concurrent_streams(settings.max_streams)
        .max_header_list_size(header_list)
        .handshake(io)
        .await
        .map_err(|e| error(Side::Client, e))
}

/// Runs the client handshake with an origin that chose HTTP/2; the connection must be
/// driven (awaited) for the streams to move.
pub(crate) async fn client_handshake(
    io: BoxIo,
) -> Result<(h2::client::SendRequest<Bytes>, ClientConnection)> {
    h2::client::handshake(io)
        .await
        .map_err(|e| error(Side::Server, e))
}

/// The next data frame's bytes from a peer on `side`, releasing their flow-control
/// window; `None` at the end of the stream.
pub(crate) async fn next_data(recv: &mut RecvStream, side: Side) -> Result<Option<Bytes>> {
    match recv.data().await {
        None => Ok(None),
        Some(Err(e)) => Err(error(side, e)),
        Some(Ok(b)) => {
            let _ = recv.flow_control().release_capacity(b.len());
            Ok(Some(b))
        }
    }
}

/// Sends `data` as the flow-control window allows, to the peer on `side`; `end` ends
/// the stream with the last of it.
pub(crate) async fn send_all(
    out: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    side: Side,
) -> Result<()> {
    let err = |e: h2::Error| error(side, e);
    if data.is_empty() {
        if end {
            out.send_data(data, true).map_err(err)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        out.reserve_capacity(data.len());
        let granted = match poll_fn(|c| out.poll_capacity(c)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(err(e)),
            None => return Err(err(h2::Error::from(h2::Reason::CANCEL))),
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        out.send_data(chunk, end && data.is_empty()).map_err(err)?;
    }
    Ok(())
}

/// An `h2` error as the crate's, from the peer on `side`.
pub(crate) fn error(side: Side, e: h2::Error) -> Error {
    Error::Io {
        side,
        source: std::io::Error::other(e),
    }
}
