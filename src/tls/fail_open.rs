//! TLS fail-open: hosts whose clients refused the proxy's certificate, passed through
//! untouched for a while.
//!
//! A client that pins its server's certificate (or ships its own roots) aborts the
//! handshake with any leaf the proxy makes: intercepting it only breaks it. With
//! [`MitmBuilder::tls_fail_open`](crate::MitmBuilder::tls_fail_open) on, the tunnel
//! learns such a host from the client's refusal ([`abort_of`]) and relays later
//! connections to it as they are ([`FailOpen::should_pass`]), so the client talks to the
//! origin end to end, until the entry expires.
//!
//! A host is keyed by the name the leaf was for (the SNI name, else the `CONNECT`
//! target's host), lowercased, **and the port**: a refusal vouches only for the origin
//! that was reached (and verified) on that port, not for other services of the same
//! name.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The most hosts remembered at once; learning one more forgets the oldest.
pub(crate) const MAX_HOSTS: usize = 10_000;

/// What a client's failed TLS handshake with the proxy's leaf says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abort {
    /// The client refused the certificate: it sent an alert, or closed the connection
    /// once the proxy's flight (certificate included) had gone out.
    Refused,
    /// Anything else (a malformed message, a version or cipher the two sides do not
    /// share, an I/O error of the proxy's own): nothing to learn.
    Other,
}

/// Classifies the error of the client's handshake, read after the ClientHello was
/// accepted. The server writes its whole flight before it reads again, so an end of
/// stream or a reset seen by that handshake came after the certificate was sent.
pub(crate) fn abort_of(e: &io::Error) -> Abort {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::AlertReceived(_)) => Abort::Refused,
        Some(_) => Abort::Other,
        None => match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => Abort::Refused,
            _ => Abort::Other,
        },
    }
}

/// A learned host: the leaf's name, lowercased, and the port.
type Key = (String, u16);

/// The hosts passed through, each until its entry expires.
#[derive(Debug)]
pub(crate) struct FailOpen {
    /// How long a refusal is remembered.
    ttl: Duration,
    /// The most hosts remembered.
    cap: usize,
    learned: Mutex<Learned>,
}

/// The entries, in the order they were learned. Every entry lives as long as the
/// others, so that is also the order they expire in: the oldest are at the front.
#[derive(Debug, Default)]
struct Learned {
    until: HashMap<Key, Instant>,
    order: VecDeque<(Key, Instant)>,
}

impl Learned {
    /// Forgets the entries expired at `now`.
    fn expire(&mut self, now: Instant) {
        while let Some((key, until)) = self.order.front() {
            if *until > now {
                break;
            }
            self.until.remove(key);
            self.order.pop_front();
        }
    }
}

impl FailOpen {
    /// Remembers each refusal for `ttl`, and [`MAX_HOSTS`] hosts at most.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self::with_capacity(ttl, MAX_HOSTS)
    }

    /// As [`new`](Self::new), remembering `cap` hosts at most (at least one).
    pub(crate) fn with_capacity(ttl: Duration, cap: usize) -> Self {
        FailOpen {
            ttl,
            cap: cap.max(1),
            learned: Mutex::new(Learned::default()),
        }
    }

    /// How long a refusal is remembered.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether `host:port` was learned and has not expired.
    pub(crate) fn should_pass(&self, host: &str, port: u16) -> bool {
        let key = key(host, port);
        let now = Instant::now();
        let mut learned = self.lock();
        learned.expire(now);
        learned.until.contains_key(&key)
    }

    /// Records that a client refused the leaf for `host:port`, from now for the
    /// configured time. True when the host was not already passed through, so the
    /// caller logs each host once per time it is learned.
    pub(crate) fn learn(&self, host: &str, port: u16) -> bool {
        let key = key(host, port);
        let now = Instant::now();
        let mut learned = self.lock();
        learned.expire(now);
        if learned.until.contains_key(&key) {
            return false;
        }
        let until = now + self.ttl;
        learned.until.insert(key.clone(), until);
        learned.order.push_back((key, until));
        while learned.order.len() > self.cap {
            if let Some((oldest, _)) = learned.order.pop_front() {
                learned.until.remove(&oldest);
            }
        }
        true
    }

    /// How many hosts are remembered (expired ones included until the next call).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().until.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Learned> {
        // The lock is never held across a panic-prone call or an `.await`; a poisoned
        // map is still a valid map.
        self.learned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The key of `host:port`: the name lowercased, without a trailing dot.
fn key(host: &str, port: u16) -> Key {
    (host.trim_end_matches('.').to_ascii_lowercase(), port)
}

/// `d` the way people write it in a log line: `10m`, `90s`, `2h`, `1h30m`.
pub(crate) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        return format!("{d:?}");
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_error(e: rustls::Error) -> io::Error {
        // As tokio-rustls reports what `process_new_packets` returns.
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn an_alert_or_a_close_after_the_server_flight_is_a_refusal() {
        use rustls::AlertDescription as A;
        for alert in [A::BadCertificate, A::UnknownCA, A::CertificateUnknown] {
            let e = tls_error(rustls::Error::AlertReceived(alert));
            assert_eq!(abort_of(&e), Abort::Refused, "{alert:?}");
        }
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(abort_of(&eof), Abort::Refused);
        assert_eq!(
            abort_of(&io::ErrorKind::ConnectionReset.into()),
            Abort::Refused
        );
    }

    #[test]
    fn other_handshake_failures_teach_nothing() {
        let bad = tls_error(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert_eq!(abort_of(&bad), Abort::Other);
        let incompatible = tls_error(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::NoCipherSuitesInCommon,
        ));
        assert_eq!(abort_of(&incompatible), Abort::Other);
        for kind in [
            io::ErrorKind::TimedOut,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::InvalidData,
        ] {
            assert_eq!(abort_of(&kind.into()), Abort::Other, "{kind:?}");
        }
    }

    #[test]
    fn a_host_is_learned_once_per_name_and_port_whatever_its_case() {
        let store = FailOpen::new(Duration::from_secs(600));
        assert!(!store.should_pass("pinned.example", 443));
        assert!(store.learn("Pinned.Example.", 443));
        assert!(!store.learn("pinned.example", 443), "logged twice");
        assert!(store.should_pass("PINNED.example", 443));
        assert!(!store.should_pass("pinned.example", 8443));
        assert!(!store.should_pass("other.example", 443));
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_expires_after_its_time_and_can_be_learned_again() {
        let ttl = Duration::from_secs(600);
        let store = FailOpen::new(ttl);
        assert!(store.learn("pinned.example", 443));
        tokio::time::advance(ttl - Duration::from_millis(1)).await;
        assert!(store.should_pass("pinned.example", 443));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!store.should_pass("pinned.example", 443));
        assert_eq!(store.len(), 0, "the expired entry is forgotten");
        assert!(
            store.learn("pinned.example", 443),
            "learned (and logged) anew"
        );
        assert!(store.should_pass("pinned.example", 443));
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_host_makes_room_past_the_cap() {
        let store = FailOpen::with_capacity(Duration::from_secs(600), 2);
        assert!(store.learn("a.example", 443));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(store.learn("b.example", 443));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(store.learn("c.example", 443));
        assert_eq!(store.len(), 2);
        assert!(!store.should_pass("a.example", 443));
        assert!(store.should_pass("b.example", 443));
        assert!(store.should_pass("c.example", 443));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(7200)), "2h");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human(Duration::ZERO), "0ns");
    }
}
