//! Reading a TLS ClientHello without answering it: the server name (SNI) and the ALPN
//! protocols a client offers, from the raw bytes it sent after `CONNECT`.
//!
//! The proxy decides from these whether to intercept a connection or let it through
//! untouched; when it lets it through, the very bytes read here go to the origin, so
//! they must be read without consuming them into a TLS library. The parser takes
//! untrusted input: every length is checked, and nothing panics.

/// The largest ClientHello accepted (a post-quantum key share makes them ~2 KiB; some
/// carry large session tickets).
pub(crate) const MAX_HELLO: usize = 64 * 1024;

/// What a client's TLS ClientHello offers, as a [`Router`](crate::middleware::Router)
/// sees it in [`tls_clienthello`](crate::middleware::Router::tls_clienthello).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientHello {
    /// The server name, lowercased, if the client sent one.
    pub server_name: Option<String>,
    /// The ALPN protocols offered, in the client's order.
    pub alpn: Vec<Vec<u8>>,
}

/// The outcome of looking at the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Peek {
    /// A whole ClientHello was found.
    Hello(ClientHello),
    /// A valid beginning: read more.
    NeedMore,
    /// Not a ClientHello (or a malformed one).
    Invalid,
}

const HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 0x01;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

/// Looks for a complete ClientHello at the start of `data`.
pub(crate) fn peek(data: &[u8]) -> Peek {
    // The handshake message may be split over several records: join their payloads.
    let mut message = Vec::new();
    let mut rest = data;
    loop {
        if rest.len() < 5 {
            return Peek::NeedMore;
        }
        if rest[0] != HANDSHAKE || rest[1] != 3 {
            return Peek::Invalid;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > 16 * 1024 + 2048 {
            return Peek::Invalid;
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            return Peek::NeedMore;
        };
        message.extend_from_slice(fragment);
        rest = &rest[5 + len..];
        if message.len() >= 4 {
            if message[0] != CLIENT_HELLO {
                return Peek::Invalid;
            }
            let body_len = (usize::from(message[1]) << 16)
                | (usize::from(message[2]) << 8)
                | usize::from(message[3]);
            if body_len + 4 > MAX_HELLO {
                return Peek::Invalid;
            }
            if message.len() >= body_len + 4 {
                return match parse_body(&message[4..4 + body_len]) {
                    Some(hello) => Peek::Hello(hello),
                    None => Peek::Invalid,
                };
            }
        }
        if data.len() - rest.len() > MAX_HELLO {
            return Peek::Invalid;
        }
    }
}

/// A cursor over a byte slice whose reads fail (with `None`) past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

fn parse_body(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    r.take(2)?; // legacy version
    r.take(32)?; // random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut hello = ClientHello::default();
    if r.0.is_empty() {
        return Some(hello); // no extensions at all
    }
    let mut extensions = Reader(r.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        match kind {
            EXT_SERVER_NAME => hello.server_name = server_name(data),
            EXT_ALPN => hello.alpn = alpn(data)?,
            _ => {}
        }
    }
    Some(hello)
}

fn server_name(data: &[u8]) -> Option<String> {
    let mut list = Reader(Reader(data).vec16()?);
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?;
        if kind == 0 {
            let name = std::str::from_utf8(name).ok()?;
            return Some(name.trim_end_matches('.').to_ascii_lowercase());
        }
    }
    None
}

fn alpn(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut list = Reader(Reader(data).vec16()?);
    let mut out = Vec::new();
    while !list.0.is_empty() {
        out.push(list.vec8()?.to_vec());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello with the given SNI and ALPN, in one record or split.
    fn hello(sni: Option<&str>, alpn: &[&[u8]], split: Option<usize>) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let mut entry = vec![0u8];
            entry.extend((name.len() as u16).to_be_bytes());
            entry.extend(name.as_bytes());
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend(entry);
            ext.extend(0u16.to_be_bytes());
            ext.extend((list.len() as u16).to_be_bytes());
            ext.extend(list);
        }
        if !alpn.is_empty() {
            let mut entries = Vec::new();
            for p in alpn {
                entries.push(p.len() as u8);
                entries.extend(*p);
            }
            let mut list = (entries.len() as u16).to_be_bytes().to_vec();
            list.extend(entries);
            ext.extend(16u16.to_be_bytes());
            ext.extend((list.len() as u16).to_be_bytes());
            ext.extend(list);
        }
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]); // one cipher suite
        body.extend([1, 0]); // null compression
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut msg = vec![CLIENT_HELLO];
        msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend(body);
        let record = |frag: &[u8]| {
            let mut r = vec![HANDSHAKE, 3, 1];
            r.extend((frag.len() as u16).to_be_bytes());
            r.extend(frag);
            r
        };
        match split {
            None => record(&msg),
            Some(at) => [record(&msg[..at]), record(&msg[at..])].concat(),
        }
    }

    #[test]
    fn finds_sni_and_alpn() {
        let raw = hello(Some("Example.COM."), &[b"h2", b"http/1.1"], None);
        assert_eq!(
            peek(&raw),
            Peek::Hello(ClientHello {
                server_name: Some("example.com".into()),
                alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            })
        );
    }

    #[test]
    fn a_hello_split_over_records_and_reads_is_whole_only_at_the_end() {
        let raw = hello(Some("a.localhost"), &[], Some(10));
        for cut in 0..raw.len() {
            assert_eq!(peek(&raw[..cut]), Peek::NeedMore, "cut at {cut}");
        }
        assert!(
            matches!(peek(&raw), Peek::Hello(h) if h.server_name.as_deref() == Some("a.localhost"))
        );
    }

    #[test]
    fn no_sni_is_fine_and_garbage_is_invalid() {
        assert!(matches!(peek(&hello(None, &[], None)), Peek::Hello(h) if h.server_name.is_none()));
        assert_eq!(peek(b"GET / HTTP/1.1\r\n\r\n"), Peek::Invalid);
        // A handshake message that is not a ClientHello (2: ServerHello).
        let mut server_hello = hello(Some("x"), &[], None);
        server_hello[5] = 2;
        assert_eq!(peek(&server_hello), Peek::Invalid);
        // A session id longer than what is left of the message.
        let mut long_session = hello(Some("x"), &[], None);
        long_session[5 + 4 + 2 + 32] = 0xff;
        assert_eq!(peek(&long_session), Peek::Invalid);
        // A message longer than its record: the rest is in the next record.
        let mut continued = hello(Some("x"), &[], None);
        continued[8] = continued[8].wrapping_add(10);
        assert_eq!(peek(&continued), Peek::NeedMore);
    }

    #[test]
    fn truncated_hellos_are_invalid_not_a_panic() {
        let raw = hello(Some("example.com"), &[b"h2"], None);
        // Record and message headers, then version, random, session id, suites and
        // compression: a hello that ends there simply has no extensions.
        let no_extensions = 5 + 4 + 2 + 32 + 1 + 4 + 2;
        for cut in 9..raw.len() {
            let mut t = raw[..cut].to_vec();
            // Claim the record and message end here.
            let rec = (t.len() - 5) as u16;
            t[3..5].copy_from_slice(&rec.to_be_bytes());
            let msg = (t.len() - 9) as u32;
            t[6..9].copy_from_slice(&msg.to_be_bytes()[1..]);
            let want = if cut == no_extensions {
                Peek::Hello(ClientHello::default())
            } else {
                Peek::Invalid
            };
            assert_eq!(peek(&t), want, "cut at {cut}");
        }
    }
}
