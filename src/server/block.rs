//! Who may use the proxy, by the address a client comes from: mitmproxy's
//! `block_global` (on by default) and `block_private` (off), decided at accept before
//! any protocol, and the classification they rest on ([`is_global`], [`is_private`]).
//!
//! The ranges are those of Python's `ipaddress` module as CPython keeps it today, which
//! mitmproxy's block addon asks: IANA's special-purpose registries, IPv4 and IPv6, with
//! an IPv4-mapped IPv6 address judged as its IPv4 address (as mitmproxy does before
//! asking). Older Pythons differ at the edges: 3.13.0 lacks `3fff::/20`; 3.12.3 and
//! before call `192.0.0.9`, `192.0.0.10` and the globally reachable blocks inside
//! `2001::/23` private, and `192.0.0.8` … `192.0.0.255`, `2002::/16` global.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A network as its first address and prefix length.
type V4Net = (u32, u8);
type V6Net = (u128, u8);

/// IPv4 blocks that are not globally reachable (Python's `_private_networks`).
const V4_PRIVATE: &[V4Net] = &[
    (0x0000_0000, 8),  // 0.0.0.0/8 "this network"
    (0x0a00_0000, 8),  // 10.0.0.0/8
    (0x7f00_0000, 8),  // 127.0.0.0/8 loopback
    (0xa9fe_0000, 16), // 169.254.0.0/16 link-local
    (0xac10_0000, 12), // 172.16.0.0/12
    (0xc000_0000, 24), // 192.0.0.0/24 IETF protocol assignments
    (0xc000_00aa, 31), // 192.0.0.170/31 NAT64 discovery
    (0xc000_0200, 24), // 192.0.2.0/24 TEST-NET-1
    (0xc0a8_0000, 16), // 192.168.0.0/16
    (0xc612_0000, 15), // 198.18.0.0/15 benchmarking
    (0xc633_6400, 24), // 198.51.100.0/24 TEST-NET-2
    (0xcb00_7100, 24), // 203.0.113.0/24 TEST-NET-3
    (0xf000_0000, 4),  // 240.0.0.0/4 reserved
    (0xffff_ffff, 32), // 255.255.255.255 broadcast
];

/// Globally reachable addresses inside [`V4_PRIVATE`]'s blocks.
const V4_PRIVATE_EXCEPTIONS: &[V4Net] = &[
    (0xc000_0009, 32), // 192.0.0.9 PCP anycast
    (0xc000_000a, 32), // 192.0.0.10 TURN anycast
];

/// Shared address space (carrier-grade NAT): neither private nor global.
const V4_SHARED: V4Net = (0x6440_0000, 10); // 100.64.0.0/10

/// IPv6 blocks that are not globally reachable.
const V6_PRIVATE: &[V6Net] = &[
    (1, 128),                     // ::1 loopback
    (0, 128),                     // :: unspecified
    (0xffff_0000_0000, 96),       // ::ffff:0:0/96 IPv4-mapped
    (0x0064_ff9b_0001 << 80, 48), // 64:ff9b:1::/48 local NAT64
    (0x0100 << 112, 64),          // 100::/64 discard-only
    (0x2001 << 112, 23),          // 2001::/23 IETF protocol assignments
    (0x2001_0db8 << 96, 32),      // 2001:db8::/32 documentation
    (0x2002 << 112, 16),          // 2002::/16 6to4
    (0x3fff << 112, 20),          // 3fff::/20 documentation
    (0xfc00 << 112, 7),           // fc00::/7 unique local
    (0xfe80 << 112, 10),          // fe80::/10 link-local
];

/// Globally reachable addresses inside [`V6_PRIVATE`]'s blocks.
const V6_PRIVATE_EXCEPTIONS: &[V6Net] = &[
    ((0x2001_0001 << 96) | 1, 128), // 2001:1::1 PCP anycast
    ((0x2001_0001 << 96) | 2, 128), // 2001:1::2 TURN anycast
    (0x2001_0003 << 96, 32),        // 2001:3::/32 AMT
    (0x2001_0004_0112 << 80, 48),   // 2001:4:112::/48 AS112-v6
    (0x2001_0020 << 96, 28),        // 2001:20::/28 ORCHIDv2
    (0x2001_0030 << 96, 28),        // 2001:30::/28 drone remote ID
];

fn in_v4(ip: u32, (net, len): V4Net) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    ip & mask == net
}

fn in_v6(ip: u128, (net, len): V6Net) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    ip & mask == net
}

fn v4_private(ip: Ipv4Addr) -> bool {
    let ip = u32::from(ip);
    V4_PRIVATE.iter().any(|n| in_v4(ip, *n)) && !V4_PRIVATE_EXCEPTIONS.iter().any(|n| in_v4(ip, *n))
}

fn v6_private(ip: Ipv6Addr) -> bool {
    let ip = u128::from(ip);
    V6_PRIVATE.iter().any(|n| in_v6(ip, *n)) && !V6_PRIVATE_EXCEPTIONS.iter().any(|n| in_v6(ip, *n))
}

/// `ip` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) turned into its IPv4 one.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is in a block IANA lists as not globally reachable: private networks,
/// loopback, link-local, documentation and benchmarking ranges, unique local IPv6 …
/// (Python's `ipaddress.ip_address(ip).is_private`). An IPv4-mapped IPv6 address is
/// judged as its IPv4 address. `100.64.0.0/10` (carrier-grade NAT) is neither private
/// nor global.
///
/// ```
/// use mitm::server::block::is_private;
/// assert!(is_private("192.168.1.10".parse().unwrap()));
/// assert!(is_private("fd00::1".parse().unwrap()));
/// assert!(!is_private("100.64.0.1".parse().unwrap()));
/// assert!(!is_private("1.2.3.4".parse().unwrap()));
/// ```
pub fn is_private(ip: IpAddr) -> bool {
    match unmapped(ip) {
        IpAddr::V4(v4) => v4_private(v4),
        IpAddr::V6(v6) => v6_private(v6),
    }
}

/// Whether `ip` is globally reachable (Python's `ipaddress.ip_address(ip).is_global`):
/// not private, and for IPv4 not in `100.64.0.0/10` either. An IPv4-mapped IPv6 address
/// is judged as its IPv4 address.
///
/// ```
/// use mitm::server::block::is_global;
/// assert!(is_global("1.2.3.4".parse().unwrap()));
/// assert!(is_global("::ffff:8.8.8.8".parse().unwrap()));
/// assert!(!is_global("198.18.0.1".parse().unwrap()));
/// assert!(!is_global("2001:db8::1".parse().unwrap()));
/// ```
pub fn is_global(ip: IpAddr) -> bool {
    match unmapped(ip) {
        IpAddr::V4(v4) => !in_v4(u32::from(v4), V4_SHARED) && !v4_private(v4),
        IpAddr::V6(v6) => !v6_private(v6),
    }
}

/// The option that refused a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// `block_global`: a public address.
    Global,
    /// `block_private`: a private one.
    Private,
}

impl Blocked {
    /// mitmproxy's name of the option.
    fn option(self) -> &'static str {
        match self {
            Blocked::Global => "block_global",
            Blocked::Private => "block_private",
        }
    }

    /// What kind of address it refuses.
    fn kind(self) -> &'static str {
        match self {
            Blocked::Global => "a public",
            Blocked::Private => "a private",
        }
    }
}

/// Which clients a server refuses at accept, by their address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    /// Refuse clients from public addresses.
    pub(crate) global: bool,
    /// Refuse clients from private ones.
    pub(crate) private: bool,
}

impl Block {
    /// The policy a server applies: `block_global` has no effect while proxy
    /// authentication is on (then strangers must log in; mitmproxy 11 refuses them
    /// anyway), `block_private` always applies.
    pub(crate) fn effective(global: bool, private: bool, proxy_auth: bool) -> Block {
        Block {
            global: global && !proxy_auth,
            private,
        }
    }

    /// Whether the client at `peer` is refused, and by which option. Loopback is
    /// always served.
    pub(crate) fn refuses(self, peer: IpAddr) -> Option<Blocked> {
        if !self.global && !self.private {
            return None;
        }
        let peer = unmapped(peer);
        if peer.is_loopback() {
            return None;
        }
        if self.private && is_private(peer) {
            return Some(Blocked::Private);
        }
        if self.global && is_global(peer) {
            return Some(Blocked::Global);
        }
        None
    }
}

/// How long a refused client has to send its first bytes (to be answered in its
/// protocol) and to read the answer.
const REFUSAL_PATIENCE: Duration = Duration::from_secs(2);

/// Refuses a client by `blocked`: one log line naming the option, then an answer in the
/// client's protocol where one exists (HTTP: `403 Forbidden` with the reason; SOCKS5:
/// "no acceptable methods"), else the connection is closed.
pub(super) async fn refuse(mut stream: TcpStream, peer: std::net::SocketAddr, blocked: Blocked) {
    let option = blocked.option();
    let kind = blocked.kind();
    let allow = match blocked {
        Blocked::Global => {
            "set block_global to false (`--block-global false`) or ask for credentials \
             (`--proxy-auth`) to serve it"
        }
        Blocked::Private => "set block_private to false to serve it",
    };
    tracing::warn!(client = %peer, "refused a client from {kind} address ({option}): {allow}");
    let mut first = [0u8; 512];
    let read = tokio::time::timeout(REFUSAL_PATIENCE, stream.read(&mut first)).await;
    let answer = match read {
        Ok(Ok(n)) if n > 0 && first[0] == crate::wire::socks5::VERSION => {
            vec![
                crate::wire::socks5::VERSION,
                crate::wire::socks5::NO_ACCEPTABLE,
            ]
        }
        Ok(Ok(n)) if n > 0 && first[0].is_ascii_uppercase() => {
            let text = format!(
                "This proxy does not serve clients from {kind} address ({peer_ip}): its \
                 {option} option refuses them.\n",
                peer_ip = peer.ip()
            );
            let page = crate::http::page::text(403, text);
            crate::wire::h1::write::local_response(&page, "GET", Some("close"))
        }
        _ => return,
    };
    let _ = stream.write_all(&answer).await;
    let _ = stream.shutdown().await;
    // Reading to the client's end before closing keeps unread bytes from turning the
    // close into a reset that could destroy the answer before it is read.
    let drain = async {
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(REFUSAL_PATIENCE, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Addresses with Python's verdicts (`ipaddress.ip_address(a).is_global`,
    /// `.is_private`, CPython 3.13.0, but for `3fff::/20` which it lacks and an IPv4-mapped
    /// address it judges as IPv6): (address, global, private).
    const TABLE: &[(&str, bool, bool)] = &[
        ("1.2.3.4", true, false),
        ("8.8.8.8", true, false),
        ("0.0.0.0", false, true),
        ("0.1.2.3", false, true),
        ("10.0.0.1", false, true),
        ("10.255.255.255", false, true),
        ("11.0.0.1", true, false),
        ("100.63.255.255", true, false),
        ("100.64.0.1", false, false),
        ("100.127.255.255", false, false),
        ("100.128.0.0", true, false),
        ("127.0.0.1", false, true),
        ("127.255.0.9", false, true),
        ("169.254.1.1", false, true),
        ("172.15.255.255", true, false),
        ("172.16.0.1", false, true),
        ("172.31.255.255", false, true),
        ("172.32.0.0", true, false),
        ("192.0.0.1", false, true),
        ("192.0.0.8", false, true),
        ("192.0.0.9", true, false),
        ("192.0.0.10", true, false),
        ("192.0.0.11", false, true),
        ("192.0.0.170", false, true),
        ("192.0.0.255", false, true),
        ("192.0.1.1", true, false),
        ("192.0.2.1", false, true),
        ("192.88.99.1", true, false),
        ("192.168.1.1", false, true),
        ("198.17.255.255", true, false),
        ("198.18.0.1", false, true),
        ("198.19.255.255", false, true),
        ("198.20.0.0", true, false),
        ("198.51.100.7", false, true),
        ("203.0.113.200", false, true),
        ("224.0.0.1", true, false),
        ("239.255.255.255", true, false),
        ("240.0.0.1", false, true),
        ("255.255.255.255", false, true),
        ("::", false, true),
        ("::1", false, true),
        ("::2", true, false),
        ("::ffff:1.2.3.4", true, false),
        ("::ffff:10.0.0.1", false, true),
        ("::ffff:127.0.0.1", false, true),
        ("::ffff:100.64.0.1", false, false),
        ("64:ff9b::808:808", true, false),
        ("64:ff9b:1::1", false, true),
        ("100::1", false, true),
        ("100:0:0:1::1", true, false),
        ("2001::1", false, true),
        ("2001:1::1", true, false),
        ("2001:1::2", true, false),
        ("2001:1::3", false, true),
        ("2001:2::1", false, true),
        ("2001:3::1", true, false),
        ("2001:4:112::1", true, false),
        ("2001:4:113::1", false, true),
        ("2001:10::1", false, true),
        ("2001:20::1", true, false),
        ("2001:30::1", true, false),
        ("2001:1ff::1", false, true),
        ("2001:200::1", true, false),
        ("2001:db8::1", false, true),
        ("2001:db9::1", true, false),
        ("2002::1", false, true),
        ("2606:4700::1111", true, false),
        ("3fff::1", false, true),
        ("3fff:1000::1", true, false),
        ("fc00::1", false, true),
        ("fd12:3456::1", false, true),
        ("fe80::1", false, true),
        ("febf::1", false, true),
        ("fec0::1", true, false),
        ("ff02::1", true, false),
    ];

    #[test]
    fn addresses_are_global_or_private_as_pythons_ipaddress_says() {
        for (addr, global, private) in TABLE {
            assert_eq!(is_global(ip(addr)), *global, "{addr} is_global");
            assert_eq!(is_private(ip(addr)), *private, "{addr} is_private");
        }
    }

    #[test]
    fn block_global_refuses_public_clients_and_serves_the_rest() {
        let block = Block::effective(true, false, false);
        assert_eq!(block.refuses(ip("1.2.3.4")), Some(Blocked::Global));
        assert_eq!(block.refuses(ip("::ffff:1.2.3.4")), Some(Blocked::Global));
        assert_eq!(block.refuses(ip("2606:4700::1")), Some(Blocked::Global));
        for served in [
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "10.0.0.1",
            "100.64.0.1",
            "fe80::1",
        ] {
            assert_eq!(block.refuses(ip(served)), None, "{served}");
        }
    }

    #[test]
    fn proxy_authentication_lifts_block_global_only() {
        let block = Block::effective(true, true, true);
        assert_eq!(block.refuses(ip("1.2.3.4")), None);
        assert_eq!(block.refuses(ip("192.168.0.2")), Some(Blocked::Private));
    }

    #[test]
    fn block_private_refuses_private_clients_but_never_loopback() {
        let block = Block::effective(false, true, false);
        assert_eq!(block.refuses(ip("10.1.2.3")), Some(Blocked::Private));
        assert_eq!(block.refuses(ip("fd00::5")), Some(Blocked::Private));
        assert_eq!(
            block.refuses(ip("::ffff:192.168.1.1")),
            Some(Blocked::Private)
        );
        assert_eq!(block.refuses(ip("169.254.3.3")), Some(Blocked::Private));
        assert_eq!(block.refuses(ip("127.0.0.1")), None);
        assert_eq!(block.refuses(ip("::1")), None);
        assert_eq!(block.refuses(ip("1.2.3.4")), None);
    }

    #[test]
    fn nothing_is_refused_with_both_off() {
        let block = Block::effective(false, false, false);
        assert_eq!(block.refuses(ip("1.2.3.4")), None);
        assert_eq!(block.refuses(ip("10.0.0.1")), None);
    }
}
