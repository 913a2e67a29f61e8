//! The SOCKS5 wire format (RFC 1928) with username/password authentication
//! (RFC 1929), for both sides: the server side parses what a client sends and encodes
//! the answers; the client side ([`connect`]) asks an upstream SOCKS5 proxy for a
//! connection.
//!
//! A SOCKS5 client speaks in three steps, each answered before the next:
//!
//! ```text
//! greeting   05 NMETHODS METHODS...          → 05 METHOD  (FF: none acceptable)
//! [auth]     01 ULEN USER PLEN PASS          → 01 STATUS  (00: success)
//! request    05 CMD 00 ATYP ADDR PORT        → 05 REP 00 ATYP BND.ADDR BND.PORT
//! ```
//!
//! The server-side parsers work on whatever bytes have arrived: each returns
//! [`Step::NeedMore`] while a message is incomplete, [`Step::Done`] with the message and
//! how many bytes it took, or [`Step::Refuse`] with the answer the RFC gives for that
//! mistake, after which the server closes the connection.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version, first byte of a greeting, a request and a reply.
pub(crate) const VERSION: u8 = 0x05;
/// The version of the username/password sub-negotiation (RFC 1929).
pub(crate) const AUTH_VERSION: u8 = 0x01;

/// Authentication method: none.
pub(crate) const NO_AUTH: u8 = 0x00;
/// Authentication method: username and password (RFC 1929).
pub(crate) const USER_PASS: u8 = 0x02;
/// The server's answer when it accepts none of the methods offered.
pub(crate) const NO_ACCEPTABLE: u8 = 0xFF;

/// Address types.
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// The reply codes of RFC 1928 §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `00` succeeded.
    Succeeded,
    /// `01` general SOCKS server failure.
    GeneralFailure,
    /// `02` connection not allowed by ruleset.
    NotAllowed,
    /// `03` network unreachable.
    NetworkUnreachable,
    /// `04` host unreachable.
    HostUnreachable,
    /// `05` connection refused.
    ConnectionRefused,
    /// `06` TTL expired.
    TtlExpired,
    /// `07` command not supported.
    CommandNotSupported,
    /// `08` address type not supported.
    AddressTypeNotSupported,
    /// `09` to `FF`: unassigned (only ever read from a server).
    Unassigned(u8),
}

impl Reply {
    /// The code on the wire.
    pub(crate) fn code(self) -> u8 {
        match self {
            Reply::Succeeded => 0x00,
            Reply::GeneralFailure => 0x01,
            Reply::NotAllowed => 0x02,
            Reply::NetworkUnreachable => 0x03,
            Reply::HostUnreachable => 0x04,
            Reply::ConnectionRefused => 0x05,
            Reply::TtlExpired => 0x06,
            Reply::CommandNotSupported => 0x07,
            Reply::AddressTypeNotSupported => 0x08,
            Reply::Unassigned(code) => code,
        }
    }

    /// The reply a code on the wire stands for.
    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            0x00 => Reply::Succeeded,
            0x01 => Reply::GeneralFailure,
            0x02 => Reply::NotAllowed,
            0x03 => Reply::NetworkUnreachable,
            0x04 => Reply::HostUnreachable,
            0x05 => Reply::ConnectionRefused,
            0x06 => Reply::TtlExpired,
            0x07 => Reply::CommandNotSupported,
            0x08 => Reply::AddressTypeNotSupported,
            other => Reply::Unassigned(other),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Succeeded => f.write_str("succeeded"),
            Reply::GeneralFailure => f.write_str("general SOCKS server failure"),
            Reply::NotAllowed => f.write_str("connection not allowed by ruleset"),
            Reply::NetworkUnreachable => f.write_str("network unreachable"),
            Reply::HostUnreachable => f.write_str("host unreachable"),
            Reply::ConnectionRefused => f.write_str("connection refused"),
            Reply::TtlExpired => f.write_str("TTL expired"),
            Reply::CommandNotSupported => f.write_str("command not supported"),
            Reply::AddressTypeNotSupported => f.write_str("address type not supported"),
            Reply::Unassigned(code) => write!(f, "unassigned reply code {code:#04x}"),
        }
    }
}

/// What a server-side parser made of the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step<T> {
    /// A valid beginning: wait for more bytes.
    NeedMore,
    /// A whole message, and how many bytes of the buffer it took.
    Done(T, usize),
    /// Invalid: send this answer, then close.
    Refuse(Refusal),
}

/// The answer to an invalid message, and what was wrong (for the logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The bytes to send before closing.
    pub answer: Vec<u8>,
    /// What was wrong, e.g. `unknown address type 0x09`.
    pub reason: String,
}

impl Refusal {
    /// A refused greeting: no acceptable method.
    fn greeting(reason: impl Into<String>) -> Self {
        Refusal {
            answer: method_selection(NO_ACCEPTABLE).to_vec(),
            reason: reason.into(),
        }
    }

    /// A refused sub-negotiation: failure status.
    fn auth(reason: impl Into<String>) -> Self {
        Refusal {
            answer: auth_status(false).to_vec(),
            reason: reason.into(),
        }
    }

    /// A refused request: a reply with `code` and no bound address.
    fn request(code: Reply, reason: impl Into<String>) -> Self {
        Refusal {
            answer: reply(code, None),
            reason: reason.into(),
        }
    }
}

/// A client's greeting: the authentication methods it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Greeting {
    pub methods: Vec<u8>,
}

impl Greeting {
    /// Whether the client offers `method`.
    pub(crate) fn offers(&self, method: u8) -> bool {
        self.methods.contains(&method)
    }
}

/// Parses a greeting: `05 NMETHODS METHODS...`.
pub(crate) fn parse_greeting(buf: &[u8]) -> Step<Greeting> {
    let Some(&version) = buf.first() else {
        return Step::NeedMore;
    };
    if version != VERSION {
        return Step::Refuse(Refusal::greeting(format!(
            "not SOCKS version 5 (version byte {version:#04x})"
        )));
    }
    let Some(&count) = buf.get(1) else {
        return Step::NeedMore;
    };
    if count == 0 {
        return Step::Refuse(Refusal::greeting("no authentication method offered"));
    }
    let end = 2 + usize::from(count);
    let Some(methods) = buf.get(2..end) else {
        return Step::NeedMore;
    };
    Step::Done(
        Greeting {
            methods: methods.to_vec(),
        },
        end,
    )
}

/// The server's choice of method: `05 METHOD`.
pub(crate) fn method_selection(method: u8) -> [u8; 2] {
    [VERSION, method]
}

/// A username and password (RFC 1929), as bytes: the RFC does not say they are text.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub user: Vec<u8>,
    pub password: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Passwords stay out of logs.
        f.debug_struct("Credentials")
            .field("user", &String::from_utf8_lossy(&self.user))
            .finish_non_exhaustive()
    }
}

/// Parses a username/password sub-negotiation: `01 ULEN USER PLEN PASS`.
pub(crate) fn parse_auth(buf: &[u8]) -> Step<Credentials> {
    let Some(&version) = buf.first() else {
        return Step::NeedMore;
    };
    if version != AUTH_VERSION {
        return Step::Refuse(Refusal::auth(format!(
            "not username/password version 1 (version byte {version:#04x})"
        )));
    }
    let Some(&user_len) = buf.get(1) else {
        return Step::NeedMore;
    };
    let user_end = 2 + usize::from(user_len);
    let Some(&password_len) = buf.get(user_end) else {
        return Step::NeedMore;
    };
    let end = user_end + 1 + usize::from(password_len);
    let Some(password) = buf.get(user_end + 1..end) else {
        return Step::NeedMore;
    };
    let credentials = Credentials {
        user: buf[2..user_end].to_vec(),
        password: password.to_vec(),
    };
    Step::Done(credentials, end)
}

/// The sub-negotiation's status: `01 00` on success, `01 01` on failure (after which
/// the server closes).
pub(crate) fn auth_status(success: bool) -> [u8; 2] {
    [AUTH_VERSION, if success { 0x00 } else { 0x01 }]
}

/// What a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// `01`: a TCP connection to the address.
    Connect,
    /// `02`: a listening socket for a connection from the address.
    Bind,
    /// `03`: UDP relaying.
    UdpAssociate,
}

/// An address in a request or a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Address {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A name for the server to resolve.
    Domain(String),
}

impl Address {
    /// The host as a `Target` names it: the address (IPv6 without brackets) or the name.
    pub(crate) fn host(&self) -> String {
        match self {
            Address::Ip(ip) => ip.to_string(),
            Address::Domain(name) => name.clone(),
        }
    }
}

/// A client's request: `05 CMD 00 ATYP ADDR PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub command: Command,
    pub address: Address,
    pub port: u16,
}

/// Parses a request. A wrong version gets a general failure, an unknown command
/// "command not supported", an unknown address type "address type not supported".
pub(crate) fn parse_request(buf: &[u8]) -> Step<Request> {
    let Some(&version) = buf.first() else {
        return Step::NeedMore;
    };
    if version != VERSION {
        return Step::Refuse(Refusal::request(
            Reply::GeneralFailure,
            format!("request is not SOCKS version 5 (version byte {version:#04x})"),
        ));
    }
    let Some(&command) = buf.get(1) else {
        return Step::NeedMore;
    };
    let command = match command {
        0x01 => Command::Connect,
        0x02 => Command::Bind,
        0x03 => Command::UdpAssociate,
        other => {
            return Step::Refuse(Refusal::request(
                Reply::CommandNotSupported,
                format!("unknown command {other:#04x}"),
            ))
        }
    };
    // buf[2] is reserved; what a client puts there does not matter.
    let Some(&atyp) = buf.get(3) else {
        return Step::NeedMore;
    };
    let (address, end) = match parse_address(atyp, &buf[4..]) {
        Step::Done(address, len) => (address, 4 + len),
        Step::NeedMore => return Step::NeedMore,
        Step::Refuse(refusal) => return Step::Refuse(refusal),
    };
    let Some(port) = buf.get(end..end + 2) else {
        return Step::NeedMore;
    };
    let request = Request {
        command,
        address,
        port: u16::from_be_bytes([port[0], port[1]]),
    };
    Step::Done(request, end + 2)
}

/// Parses the address of type `atyp` at the start of `buf` (after the type byte).
fn parse_address(atyp: u8, buf: &[u8]) -> Step<Address> {
    match atyp {
        ATYP_IPV4 => match buf.get(..4) {
            Some(b) => {
                let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
                Step::Done(Address::Ip(ip.into()), 4)
            }
            None => Step::NeedMore,
        },
        ATYP_IPV6 => match buf.get(..16).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
            Some(b) => Step::Done(Address::Ip(Ipv6Addr::from(b).into()), 16),
            None => Step::NeedMore,
        },
        ATYP_DOMAIN => {
            let Some(&len) = buf.first() else {
                return Step::NeedMore;
            };
            let Some(name) = buf.get(1..1 + usize::from(len)) else {
                return Step::NeedMore;
            };
            match domain(name) {
                Some(name) => Step::Done(Address::Domain(name), 1 + usize::from(len)),
                None => Step::Refuse(Refusal::request(
                    Reply::HostUnreachable,
                    "invalid domain name",
                )),
            }
        }
        other => Step::Refuse(Refusal::request(
            Reply::AddressTypeNotSupported,
            format!("unknown address type {other:#04x}"),
        )),
    }
}

/// A domain name from a request: non-empty, printable ASCII without spaces (an IDN
/// comes in its `xn--` form), lowercased as routing and the pool expect.
fn domain(name: &[u8]) -> Option<String> {
    let valid = !name.is_empty() && name.iter().all(|b| b.is_ascii_graphic());
    valid.then(|| String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// A reply: `05 REP 00 ATYP BND.ADDR BND.PORT`, with `0.0.0.0:0` when there is no
/// bound address to tell.
pub(crate) fn reply(code: Reply, bound: Option<SocketAddr>) -> Vec<u8> {
    let bound = bound.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut out = Vec::with_capacity(22);
    out.extend_from_slice(&[VERSION, code.code(), 0x00]);
    match bound.ip() {
        IpAddr::V4(ip) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&bound.port().to_be_bytes());
    out
}

/// Why a SOCKS5 server did not give the connection asked for.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Socks5Error {
    /// The server's answers are not SOCKS5.
    #[error("not a SOCKS5 server")]
    NotSocks5,
    /// The server accepts none of the methods offered (it wants credentials that were
    /// not given, or others).
    #[error("no acceptable authentication method")]
    NoAcceptableMethod,
    /// The server chose a method that was not offered.
    #[error("the server chose authentication method {0:#04x}, which was not offered")]
    UnexpectedMethod(u8),
    /// The server turned the username and password down.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// A username or password longer than RFC 1929 allows.
    #[error("the username and password must be 1 to 255 bytes each")]
    CredentialsTooLong,
    /// A host name longer than a request can carry.
    #[error("the host name {0:?} is too long for SOCKS5 (255 bytes at most)")]
    NameTooLong(String),
    /// The server could not make the connection: its reply code.
    #[error("{0}")]
    Refused(Reply),
    /// The connection to the server failed or ended during the handshake.
    #[error("the connection failed during the SOCKS5 handshake: {0}")]
    Io(#[from] std::io::Error),
}

/// Asks the SOCKS5 server on `io` for a connection to `host:port` (`CONNECT`), logging
/// in with `credentials` if the server asks for them. Names go as names (the server
/// resolves them), IP literals as addresses. Reads exactly the server's answers, so
/// what follows on `io` is the target's.
pub(crate) async fn connect<S>(
    io: &mut S,
    host: &str,
    port: u16,
    credentials: Option<(&str, &str)>,
) -> Result<(), Socks5Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = request_bytes(host, port)?;
    let greeting: &[u8] = match credentials {
        Some(_) => &[VERSION, 2, NO_AUTH, USER_PASS],
        None => &[VERSION, 1, NO_AUTH],
    };
    io.write_all(greeting).await?;
    io.flush().await?;
    let mut chosen = [0u8; 2];
    io.read_exact(&mut chosen).await?;
    if chosen[0] != VERSION {
        return Err(Socks5Error::NotSocks5);
    }
    match (chosen[1], credentials) {
        (NO_AUTH, _) => {}
        (USER_PASS, Some((user, password))) => authenticate(io, user, password).await?,
        (NO_ACCEPTABLE, _) => return Err(Socks5Error::NoAcceptableMethod),
        (other, _) => return Err(Socks5Error::UnexpectedMethod(other)),
    }
    io.write_all(&request).await?;
    io.flush().await?;
    read_reply(io).await
}

/// The RFC 1929 sub-negotiation, client side.
async fn authenticate<S>(io: &mut S, user: &str, password: &str) -> Result<(), Socks5Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (user, password) = (user.as_bytes(), password.as_bytes());
    let fits = |s: &[u8]| (1..=255).contains(&s.len());
    if !fits(user) || !fits(password) {
        return Err(Socks5Error::CredentialsTooLong);
    }
    let mut out = Vec::with_capacity(3 + user.len() + password.len());
    out.push(AUTH_VERSION);
    // Both lengths were checked to fit in a byte above.
    out.push(user.len() as u8);
    out.extend_from_slice(user);
    out.push(password.len() as u8);
    out.extend_from_slice(password);
    io.write_all(&out).await?;
    io.flush().await?;
    let mut status = [0u8; 2];
    io.read_exact(&mut status).await?;
    // Some servers answer with version 5 here; only the status matters.
    if status[1] != 0x00 {
        return Err(Socks5Error::AuthenticationFailed);
    }
    Ok(())
}

/// The `CONNECT` request for `host:port`.
fn request_bytes(host: &str, port: u16) -> Result<Vec<u8>, Socks5Error> {
    let mut out = vec![VERSION, 0x01, 0x00];
    let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    match literal.unwrap_or(host).parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&ip.octets());
        }
        Ok(IpAddr::V6(ip)) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            let len = u8::try_from(host.len())
                .ok()
                .filter(|&l| l > 0)
                .ok_or_else(|| Socks5Error::NameTooLong(host.to_string()))?;
            out.push(ATYP_DOMAIN);
            out.push(len);
            out.extend_from_slice(host.as_bytes());
        }
    }
    out.extend_from_slice(&port.to_be_bytes());
    Ok(out)
}

/// Reads the server's reply to a request, to its last byte when it succeeded.
async fn read_reply<S: AsyncRead + Unpin>(io: &mut S) -> Result<(), Socks5Error> {
    let mut head = [0u8; 4];
    io.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Err(Socks5Error::NotSocks5);
    }
    let code = Reply::from_code(head[1]);
    if code != Reply::Succeeded {
        // The server closes after a failure: the rest of its reply does not matter.
        return Err(Socks5Error::Refused(code));
    }
    let address_len = match head[3] {
        ATYP_IPV4 => 4,
        ATYP_IPV6 => 16,
        ATYP_DOMAIN => usize::from(io.read_u8().await?),
        _ => return Err(Socks5Error::NotSocks5),
    };
    // The bound address and port: read so that nothing of the reply is left in front
    // of the target's bytes.
    let mut rest = vec![0u8; address_len + 2];
    io.read_exact(&mut rest).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that every prefix of `whole` needs more, and `whole` is done with all of
    /// its bytes (and the same with junk after it).
    fn whole<T: fmt::Debug + PartialEq>(parse: fn(&[u8]) -> Step<T>, whole: &[u8]) -> T {
        for cut in 0..whole.len() {
            assert_eq!(
                parse(&whole[..cut]),
                Step::NeedMore,
                "prefix of {cut} bytes"
            );
        }
        let mut more = whole.to_vec();
        more.extend_from_slice(b"\x16\x03\x01rest");
        let Step::Done(after, used) = parse(&more) else {
            panic!("not done with junk after it")
        };
        assert_eq!(used, whole.len());
        match parse(whole) {
            Step::Done(value, used) if used == whole.len() => {
                assert_eq!(value, after);
                value
            }
            other => panic!("not done: {other:?}"),
        }
    }

    fn refused<T: fmt::Debug>(step: Step<T>) -> Refusal {
        match step {
            Step::Refuse(refusal) => refusal,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn greetings_are_parsed_incrementally() {
        let g = whole(parse_greeting, &[5, 2, NO_AUTH, USER_PASS]);
        assert!(g.offers(NO_AUTH) && g.offers(USER_PASS) && !g.offers(0x01));
        let g = whole(parse_greeting, &[5, 1, USER_PASS]);
        assert_eq!(g.methods, [USER_PASS]);
    }

    #[test]
    fn bad_greetings_get_no_acceptable_method() {
        let r = refused(parse_greeting(&[4, 1, 0]));
        assert_eq!(r.answer, [5, 0xFF]);
        assert!(r.reason.contains("0x04"), "{}", r.reason);
        // A wrong version is refused at its first byte.
        assert_eq!(refused(parse_greeting(b"G")).answer, [5, 0xFF]);
        let r = refused(parse_greeting(&[5, 0]));
        assert_eq!(r.answer, [5, 0xFF]);
        assert_eq!(method_selection(USER_PASS), [5, 2]);
    }

    #[test]
    fn credentials_are_parsed_and_never_shown() {
        let c = whole(parse_auth, b"\x01\x05alice\x06s3cr3t");
        assert_eq!(
            (&c.user[..], &c.password[..]),
            (&b"alice"[..], &b"s3cr3t"[..])
        );
        assert!(!format!("{c:?}").contains("s3cr3t"));
        // Empty fields parse (and match no configured credentials).
        let c = whole(parse_auth, b"\x01\x00\x00");
        assert!(c.user.is_empty() && c.password.is_empty());
        let r = refused(parse_auth(b"\x05\x01\x00"));
        assert_eq!(r.answer, [1, 1]);
        assert_eq!((auth_status(true), auth_status(false)), ([1, 0], [1, 1]));
    }

    #[test]
    fn requests_of_each_address_type_are_parsed() {
        let r = whole(parse_request, &[5, 1, 0, 1, 127, 0, 0, 1, 0x1F, 0x90]);
        assert_eq!(r.command, Command::Connect);
        assert_eq!(r.address, Address::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!((r.port, r.address.host().as_str()), (8080, "127.0.0.1"));

        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&443u16.to_be_bytes());
        let r = whole(parse_request, &v6);
        assert_eq!(r.address.host(), "::1");

        let r = whole(parse_request, b"\x05\x02\x00\x03\x0bExample.COM\x00\x50");
        assert_eq!(r.command, Command::Bind);
        assert_eq!(r.address, Address::Domain("example.com".into()));
        assert_eq!(r.port, 80);

        let r = whole(parse_request, &[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.command, Command::UdpAssociate);
    }

    #[test]
    fn bad_requests_get_the_rfc_reply_codes() {
        let failure = |code: u8| vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0];
        let r = refused(parse_request(&[4, 1, 0, 1]));
        assert_eq!(r.answer, failure(0x01));
        let r = refused(parse_request(&[5, 9]));
        assert_eq!(r.answer, failure(0x07));
        let r = refused(parse_request(&[5, 1, 0, 9, 1, 2]));
        assert_eq!(r.answer, failure(0x08));
        assert!(r.reason.contains("address type 0x09"), "{}", r.reason);
        // Empty names and names with spaces or control bytes are no names.
        for name in [&b""[..], b"a b", b"a\0b", b"\xff"] {
            let mut req = vec![5, 1, 0, 3, name.len() as u8];
            req.extend_from_slice(name);
            req.extend_from_slice(&[0, 80]);
            assert_eq!(refused(parse_request(&req)).answer, failure(0x04));
        }
    }

    #[test]
    fn replies_carry_the_bound_address() {
        let ok = reply(Reply::Succeeded, Some("10.0.0.2:1080".parse().unwrap()));
        assert_eq!(ok, [5, 0, 0, 1, 10, 0, 0, 2, 0x04, 0x38]);
        let v6 = reply(Reply::ConnectionRefused, Some("[::1]:1".parse().unwrap()));
        assert_eq!(&v6[..4], [5, 5, 0, 4]);
        assert_eq!(v6.len(), 4 + 16 + 2);
        for code in 0..=0xFF {
            assert_eq!(Reply::from_code(code).code(), code);
        }
        assert_eq!(Reply::HostUnreachable.to_string(), "host unreachable");
        assert_eq!(
            Reply::from_code(0x42).to_string(),
            "unassigned reply code 0x42"
        );
    }

    /// Runs the client against a scripted server: `answers` are what the server sends,
    /// all at once; returns the result and what the client wrote.
    async fn scripted(
        host: &str,
        credentials: Option<(&str, &str)>,
        answers: &[u8],
    ) -> (Result<(), Socks5Error>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(4096);
        server.write_all(answers).await.unwrap();
        // The server says no more than that: a client wanting more meets the end.
        server.shutdown().await.unwrap();
        let connecting = connect(&mut client, host, 443, credentials);
        let result = tokio::time::timeout(std::time::Duration::from_secs(10), connecting)
            .await
            .expect("the client waits for bytes that will never come");
        drop(client);
        let mut written = Vec::new();
        server.read_to_end(&mut written).await.unwrap();
        (result, written)
    }

    #[tokio::test]
    async fn client_sends_names_as_names_and_literals_as_addresses() {
        let ok = [5, 0, 5, 0, 0, 1, 127, 0, 0, 1, 0, 80];
        let (r, sent) = scripted("example.com", None, &ok).await;
        r.unwrap();
        assert_eq!(&sent[..3], [5, 1, 0]);
        assert_eq!(&sent[3..], b"\x05\x01\x00\x03\x0bexample.com\x01\xbb");

        let (r, sent) = scripted("192.0.2.1", None, &ok).await;
        r.unwrap();
        assert_eq!(&sent[3..], [5, 1, 0, 1, 192, 0, 2, 1, 1, 0xbb]);

        let (r, sent) = scripted("::1", None, &ok).await;
        r.unwrap();
        assert_eq!(&sent[3..7], [5, 1, 0, 4]);
        assert_eq!(sent.len(), 3 + 4 + 16 + 2);
        let (r, bracketed) = scripted("[::1]", None, &ok).await;
        r.unwrap();
        assert_eq!(bracketed, sent);
    }

    #[tokio::test]
    async fn client_reads_exactly_the_reply() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        // A reply with a domain bound address, then the target's first bytes.
        server
            .write_all(b"\x05\x00\x05\x00\x00\x03\x04host\x00\x50SSH-2.0")
            .await
            .unwrap();
        connect(&mut client, "h", 22, None).await.unwrap();
        let mut banner = [0u8; 7];
        client.read_exact(&mut banner).await.unwrap();
        assert_eq!(&banner, b"SSH-2.0");
    }

    #[tokio::test]
    async fn client_logs_in_when_asked() {
        let answers = [5, 2, 1, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let (r, sent) = scripted("h", Some(("alice", "pw")), &answers).await;
        r.unwrap();
        assert_eq!(&sent[..4], [5, 2, 0, 2]);
        assert_eq!(&sent[4..14], b"\x01\x05alice\x02pw");
        assert_eq!(&sent[14..18], [5, 1, 0, 3]);
        // Credentials given, but the server wants none: no sub-negotiation.
        let (r, sent) = scripted(
            "h",
            Some(("alice", "pw")),
            &[5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0],
        )
        .await;
        r.unwrap();
        assert_eq!(&sent[4..8], [5, 1, 0, 3]);
    }

    #[tokio::test]
    async fn client_failures_say_what_happened() {
        /// Credentials given, what the server answers, what the error says.
        type Case<'a> = (Option<(&'a str, &'a str)>, &'a [u8], &'a str);
        let cases: [Case<'_>; 8] = [
            (None, b"HTTP/1.1 400 Bad Request\r\n", "not a SOCKS5 server"),
            (None, &[5, 0xFF], "no acceptable authentication method"),
            (
                None,
                &[5, 2],
                "the server chose authentication method 0x02, which was not offered",
            ),
            (Some(("u", "p")), &[5, 2, 1, 1], "authentication failed"),
            (None, &[5, 0, 5, 4, 0, 1], "host unreachable"),
            (None, &[5, 0, 5, 5, 0, 1], "connection refused"),
            (None, &[5, 0, 4, 0, 0, 1], "not a SOCKS5 server"),
            (None, &[5, 0, 5, 0, 0, 7], "not a SOCKS5 server"),
        ];
        for (credentials, answers, said) in cases {
            let (r, _) = scripted("h", credentials, answers).await;
            assert_eq!(r.unwrap_err().to_string(), said, "{answers:?}");
        }
        // The server hangs up half way.
        let (r, _) = scripted("h", None, &[5]).await;
        assert!(matches!(r, Err(Socks5Error::Io(_))), "{r:?}");
        // What cannot be sent fails before anything is.
        let (r, sent) = scripted(&"a".repeat(256), None, &[]).await;
        assert!(matches!(r, Err(Socks5Error::NameTooLong(_))), "{r:?}");
        assert!(sent.is_empty());
        let long = "p".repeat(256);
        let (r, _) = scripted("h", Some(("u", &long)), &[5, 2]).await;
        assert!(matches!(r, Err(Socks5Error::CredentialsTooLong)), "{r:?}");
    }
}
