//! Where a client meant to connect before the firewall redirected it to the proxy
//! (transparent mode): the `SO_ORIGINAL_DST` socket option, which Linux's connection
//! tracking answers for connections that an iptables or nftables `REDIRECT` (or `DNAT`)
//! rule rewrote.
//!
//! The option is read through `rustix`, which wraps the `getsockopt` call safely, so the
//! crate keeps `forbid(unsafe_code)`.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;

/// The address `stream`'s client was connecting to before a firewall rule redirected
/// the connection to the proxy: `getsockopt(SOL_IP, SO_ORIGINAL_DST)` for IPv4
/// connections (IPv4-mapped ones on a dual-stack socket included),
/// `getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST)` for IPv6 ones.
///
/// A connection that no rule rewrote has no such entry (`ENOENT`) or, when connection
/// tracking saw it anyway, its own local address: see [`redirected_from`].
#[cfg(target_os = "linux")]
pub(crate) fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    use rustix::net::sockopt;
    let ipv4 = match stream.local_addr()? {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(local) => local.ip().to_ipv4_mapped().is_some(),
    };
    let found = if ipv4 {
        sockopt::ip_original_dst(stream).map(SocketAddr::V4)
    } else {
        sockopt::ipv6_original_dst(stream).map(SocketAddr::V6)
    };
    found.map_err(io::Error::from)
}

/// Elsewhere there is no such option: always [`io::ErrorKind::Unsupported`].
#[cfg(not(target_os = "linux"))]
pub(crate) fn original_dst(_stream: &TcpStream) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the original destination of a redirected connection is known only on Linux",
    ))
}

/// The original destination of `stream` when a firewall rule redirected it to the
/// proxy; `None` when it came straight to the proxy (no entry, or the destination is
/// the connection's own local address or one of `listening`, where the proxy listens:
/// serving it would loop).
pub(crate) fn redirected_from(stream: &TcpStream, listening: &[SocketAddr]) -> Option<SocketAddr> {
    let original = original_dst(stream).ok()?;
    let local = stream.local_addr().ok()?;
    is_elsewhere(original, local, listening).then_some(original)
}

/// Whether `original` is another address than the connection's `local` one and the
/// proxy's `listening` ones (IPv4-mapped addresses compared as IPv4).
fn is_elsewhere(original: SocketAddr, local: SocketAddr, listening: &[SocketAddr]) -> bool {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let original = canonical(original);
    original != canonical(local) && !listening.iter().any(|&l| canonical(l) == original)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_proxys_own_addresses_are_not_destinations() {
        let local = addr("[::ffff:10.0.0.1]:8080");
        assert!(!is_elsewhere(addr("10.0.0.1:8080"), local, &[]));
        assert!(!is_elsewhere(
            addr("192.0.2.7:8080"),
            local,
            &[addr("127.0.0.1:1"), addr("192.0.2.7:8080")]
        ));
        assert!(is_elsewhere(addr("10.0.0.1:80"), local, &[]));
        assert!(is_elsewhere(
            addr("[fd00::2]:443"),
            addr("[fd00::1]:8080"),
            &[addr("[::]:8080")]
        ));
    }

    #[tokio::test]
    async fn a_direct_connection_was_not_redirected() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let _client = TcpStream::connect(at).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert_eq!(redirected_from(&accepted, &[at]), None);
    }
}
