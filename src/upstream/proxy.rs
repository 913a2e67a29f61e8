//! Reaching an origin through an upstream proxy: TCP to the proxy (TLS with it for an
//! HTTPS proxy), then a tunnel to the origin: `CONNECT` for an HTTP proxy, the SOCKS5
//! handshake for a SOCKS5 one. Plain HTTP through an HTTP proxy needs no tunnel: the
//! connection to the proxy carries the requests in absolute form.
//!
//! Errors say which hop failed: the proxy unreachable is [`Error::Connect`] naming the
//! proxy, the proxy refusing or failing the tunnel is [`Error::UpstreamProxy`] with what
//! it answered.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Upstreams, HTTP11};
use crate::core::Target;
use crate::error::{Error, Result};
use crate::net::io::{rewound, BoxIo};
use crate::upstream::route::{ProxyScheme, UpstreamProxy};

/// The most bytes a proxy's answer to `CONNECT` may take.
const MAX_CONNECT_RESPONSE: usize = 16 * 1024;

/// A connection to `target` through `proxy`, with the address of the proxy reached: a
/// tunnel, or (`tunnel` false, an HTTP proxy, a plain target) the proxy itself.
pub(super) async fn open(
    upstreams: &Upstreams,
    proxy: &UpstreamProxy,
    target: &Target,
    tunnel: bool,
) -> Result<(BoxIo, SocketAddr)> {
    let (tcp, addr) = upstreams
        .connect_tcp(proxy.address())
        .await
        .map_err(|e| match e {
            Error::Connect { source, .. } => Error::Connect {
                target: format!("proxy {proxy}"),
                source,
            },
            other => other,
        })?;
    let io: BoxIo = match proxy.scheme() {
        ProxyScheme::Https => {
            let host = &proxy.address().host;
            let tls = upstreams
                .tls
                .connect(tcp, proxy.address(), host, &[HTTP11.to_vec()])
                .await?;
            Box::new(tls)
        }
        _ => Box::new(tcp),
    };
    let io = match proxy.scheme() {
        ProxyScheme::Socks5 => socks5(io, proxy, target).await?,
        _ if tunnel || target.tls => http_connect(io, proxy, target).await?,
        _ => io,
    };
    Ok((io, addr))
}

/// Asks an HTTP proxy for a tunnel to `target` with `CONNECT`.
async fn http_connect(mut io: BoxIo, proxy: &UpstreamProxy, target: &Target) -> Result<BoxIo> {
    // `host:port`, an IPv6 literal in brackets.
    let authority = target.to_string();
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(credentials) = proxy.basic_authorization() {
        head.push_str(&format!("Proxy-Authorization: {credentials}\r\n"));
    }
    head.push_str("\r\n");
    let failed = |reason: String| Error::UpstreamProxy {
        proxy: proxy.to_string(),
        reason,
    };
    io.write_all(head.as_bytes())
        .await
        .map_err(|e| failed(format!("the connection failed while sending CONNECT: {e}")))?;
    let (status, reason, rest) = read_connect_response(&mut io)
        .await
        .map_err(|e| failed(format!("no valid answer to CONNECT: {e}")))?;
    if !(200..300).contains(&status) {
        let mut said = format!("refused CONNECT to {authority}: {status}");
        if !reason.is_empty() {
            said.push(' ');
            said.push_str(&reason);
        }
        return Err(failed(said));
    }
    // Bytes past the answer are the origin's (a server that speaks first).
    Ok(rewound(io, rest))
}

/// Reads a proxy's answer to `CONNECT`: its status, reason, and any bytes after it.
async fn read_connect_response<S: AsyncRead + Unpin>(
    io: &mut S,
) -> std::io::Result<(u16, String, Bytes)> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            let parsed = response.parse(&buf[..end + 4]);
            let (Ok(httparse::Status::Complete(_)), Some(status)) = (parsed, response.code) else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not an HTTP response",
                ));
            };
            let reason = response.reason.unwrap_or_default().to_string();
            let rest = buf.split_off(end + 4).freeze();
            return Ok((status, reason, rest));
        }
        if buf.len() >= MAX_CONNECT_RESPONSE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the response head is too large",
            ));
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Asks a SOCKS5 proxy for a connection to `target`, logging in with the proxy's
/// credentials if it asks for them.
async fn socks5<S>(mut io: S, proxy: &UpstreamProxy, target: &Target) -> Result<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    crate::wire::socks5::connect(&mut io, &target.host, target.port, proxy.credentials())
        .await
        .map_err(|e| Error::UpstreamProxy {
            proxy: proxy.to_string(),
            reason: e.to_string(),
        })?;
    // The client reads exactly the proxy's answers: what follows is the target's.
    Ok(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_answers_are_parsed_with_what_follows() {
        let mut answer: &[u8] = b"HTTP/1.1 200 Connection established\r\nX: y\r\n\r\nSSH-2.0";
        let (status, reason, rest) = read_connect_response(&mut answer).await.unwrap();
        assert_eq!((status, reason.as_str()), (200, "Connection established"));
        assert_eq!(&rest[..], b"SSH-2.0");
        let mut refused: &[u8] = b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n";
        let (status, _, _) = read_connect_response(&mut refused).await.unwrap();
        assert_eq!(status, 407);
        let mut cut: &[u8] = b"HTTP/1.1 200 OK\r\n";
        assert!(read_connect_response(&mut cut).await.is_err());
        let mut junk: &[u8] = b"SSH-2.0-OpenSSH\r\n\r\n";
        assert!(read_connect_response(&mut junk).await.is_err());
    }
}
