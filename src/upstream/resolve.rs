//! Name lookup for upstream hosts: the [`Resolve`] trait and the [`SystemResolver`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use async_trait::async_trait;

/// Turns a host name into socket addresses. The proxy asks it for every upstream it
/// connects; plug in your own to pin names, resolve test hosts, or use another DNS
/// client.
///
/// ```
/// use mitm::{async_trait, Resolve};
/// use std::net::SocketAddr;
///
/// /// Sends every name to one local address.
/// struct Everything(SocketAddr);
///
/// #[async_trait]
/// impl Resolve for Everything {
///     async fn resolve(&self, _host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
///         Ok(vec![SocketAddr::new(self.0.ip(), port)])
///     }
/// }
/// ```
#[async_trait]
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host` (a name or an IP literal without brackets), with `port`.
    /// They are tried in order.
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The default resolver: IP literals as they are; `localhost` and `*.localhost` to the
/// loopback addresses without asking DNS (RFC 6761 reserves them, and not every system
/// resolver answers for subdomains); everything else through the system resolver.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let lower = host.trim_end_matches('.').to_ascii_lowercase();
        if lower == "localhost" || lower.ends_with(".localhost") {
            return Ok(vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
            ]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no addresses"));
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_localhost_subdomains_without_dns() {
        let addrs = SystemResolver.resolve("a.b.localhost", 81).await.unwrap();
        assert!(!addrs.is_empty(), "no address for a localhost name");
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 81));
        let upper = SystemResolver.resolve("A.LocalHost.", 82).await.unwrap();
        assert_eq!(upper.len(), addrs.len());
    }

    #[tokio::test]
    async fn ip_literals_are_not_looked_up() {
        let addrs = SystemResolver.resolve("::1", 443).await.unwrap();
        assert_eq!(addrs, vec!["[::1]:443".parse::<SocketAddr>().unwrap()]);
    }
}
