//! Addresses as text, written digit by digit: the capture formats write two or three
//! a flow (`std`'s `Display` for them goes through the formatting machinery, a tenth
//! of a HAR writer's time a flow).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// An address as text, on the stack: what `Display` writes of it.
pub(crate) struct AddrText {
    bytes: [u8; 64],
    len: usize,
}

impl AddrText {
    /// `addr` as `Display` writes it (`192.0.2.1:8080`, `[2001:db8::1]:443`).
    pub(crate) fn socket(addr: SocketAddr) -> Self {
        let mut text = AddrText {
            bytes: [0; 64],
            len: 0,
        };
        match addr {
            SocketAddr::V4(v4) => {
                text.ipv4(*v4.ip());
                text.push(b':');
                text.extend(itoa::Buffer::new().format(v4.port()).as_bytes());
            }
            SocketAddr::V6(_) => text.display(addr),
        }
        text
    }

    /// `ip` as `Display` writes it.
    pub(crate) fn ip(ip: IpAddr) -> Self {
        let mut text = AddrText {
            bytes: [0; 64],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => text.ipv4(v4),
            IpAddr::V6(_) => text.display(ip),
        }
        text
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII is ever written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }

    fn push(&mut self, b: u8) {
        self.bytes[self.len] = b;
        self.len += 1;
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Dotted decimal.
    fn ipv4(&mut self, ip: Ipv4Addr) {
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                self.push(b'.');
            }
            if octet >= 100 {
                self.push(b'0' + octet / 100);
            }
            if octet >= 10 {
                self.push(b'0' + octet / 10 % 10);
            }
            self.push(b'0' + octet % 10);
        }
    }

    /// Through `Display`, for IPv6 (64 bytes hold the longest, with a scope id and a
    /// port: `[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535`).
    fn display(&mut self, value: impl std::fmt::Display) {
        use std::io::Write as _;
        let mut rest = &mut self.bytes[self.len..];
        let room = rest.len();
        // Cannot fail for an address: it fits.
        let _ = write!(rest, "{value}");
        self.len += room - rest.len();
    }
}

impl std::ops::Deref for AddrText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for a in [
            "0.0.0.0:0",
            "1.2.3.4:5",
            "10.20.30.40:8080",
            "255.255.255.255:65535",
            "100.9.99.109:443",
            "[::1]:8080",
            "[2001:db8::1]:443",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535",
            "[::ffff:255.255.255.255%4294967295]:65535",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(&*AddrText::socket(addr), addr.to_string());
            assert_eq!(&*AddrText::ip(addr.ip()), addr.ip().to_string());
        }
    }
}
