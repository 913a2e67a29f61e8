//! Upstream connections kept for reuse, shared by every client of a server: idle
//! HTTP/1.1 connections (one exchange at a time, so a list per origin) and HTTP/2
//! connections (any number of exchanges at once, so one per origin).
//!
//! An HTTP/1.1 connection comes back only after an exchange that leaves it reusable
//! (framed response read whole, no `Connection: close`). Taking one checks that the
//! server has not closed it meanwhile; an HTTP/2 connection is checked for a `GOAWAY`
//! (or any connection error) the same way, and a dead one makes room for a new one.
//! Both kinds expire after a while unused, and the pool is capped per origin and in
//! all, so that a client visiting many sites cannot exhaust the proxy's descriptors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::io::{AsyncRead, ReadBuf};

use super::{Route, Upstream};
use crate::core::Target;
use crate::net::io::BoxIo;

/// Idle HTTP/1.1 connections kept per origin.
pub(crate) const MAX_IDLE_PER_ORIGIN: usize = 32;
/// Idle HTTP/1.1 connections kept in all.
const MAX_IDLE: usize = 256;
/// Idle HTTP/1.1 connections older than this are not reused (servers commonly close
/// after 60 s or more).
const IDLE_TIME: Duration = Duration::from_secs(30);
/// HTTP/2 connections kept in all.
const MAX_SHARED: usize = 128;
/// An HTTP/2 connection with no exchange in flight for this long is let go.
const SHARED_IDLE_TIME: Duration = Duration::from_secs(90);

/// Where a pooled connection goes: the same origin through another route is another
/// connection.
pub(crate) type Key = (Route, Target);

struct Idle {
    up: Upstream,
    since: Instant,
}

/// One HTTP/2 connection to an origin, shared by the exchanges of every client.
#[derive(Clone)]
pub(crate) struct Shared {
    /// Opens streams on it.
    pub send: SendRequest<Bytes>,
    /// The address it reached.
    pub addr: SocketAddr,
    /// Its times, local address and TLS, for the flows that go over it.
    pub facts: Arc<crate::core::ServerFacts>,
    usage: Arc<Usage>,
}

/// How a shared connection is used, for expiry.
struct Usage {
    /// Exchanges in flight on it.
    active: AtomicUsize,
    /// When the last exchange on it ended (or it was made).
    idle_since: Mutex<Instant>,
    /// Set by the task driving the connection when it ends.
    closed: AtomicBool,
}

impl Shared {
    pub(crate) fn new(
        send: SendRequest<Bytes>,
        addr: SocketAddr,
        facts: Arc<crate::core::ServerFacts>,
    ) -> Self {
        Shared {
            send,
            addr,
            facts,
            usage: Arc::new(Usage {
                active: AtomicUsize::new(0),
                idle_since: Mutex::new(Instant::now()),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Marks the connection ended (its driving task is done).
    pub(crate) fn closed_flag(&self) -> impl FnOnce() + Send + 'static {
        let usage = self.usage.clone();
        move || usage.closed.store(true, Ordering::Relaxed)
    }

    /// Counts an exchange in flight on it until the guard drops.
    pub(crate) fn in_use(&self) -> InUse {
        self.usage.active.fetch_add(1, Ordering::Relaxed);
        InUse(self.usage.clone())
    }

    /// Whether it can take a new stream: not closed, no `GOAWAY` or error received.
    /// A connection merely at its stream limit is alive (the exchange waits its turn).
    fn alive(&self) -> bool {
        if self.usage.closed.load(Ordering::Relaxed) {
            return false;
        }
        let mut probe = self.send.clone();
        let mut cx = Context::from_waker(Waker::noop());
        !matches!(probe.poll_ready(&mut cx), Poll::Ready(Err(_)))
    }

    fn idle_for(&self, now: Instant) -> Option<Duration> {
        if self.usage.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = *lock(&self.usage.idle_since);
        Some(now.saturating_duration_since(since))
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// An exchange in flight on a shared connection.
#[derive(Debug)]
pub(crate) struct InUse(Arc<Usage>);

impl Drop for InUse {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            *lock(&self.0.idle_since) = Instant::now();
        }
    }
}

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usage").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    idle: HashMap<Key, Vec<Idle>>,
    idle_count: usize,
    shared: HashMap<Key, Shared>,
}

/// The pool of one server.
#[derive(Default)]
pub(crate) struct Pool {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Pool")
            .field("idle", &inner.idle_count)
            .field("shared", &inner.shared.len())
            .finish()
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// An idle HTTP/1.1 connection to `key` that still looks alive, the most recently
    /// used first. Dead or expired ones met on the way are dropped.
    pub(crate) fn take(&self, key: &Key) -> Option<Upstream> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let list = inner.idle.get_mut(key)?;
        let mut found = None;
        while let Some(mut entry) = list.pop() {
            inner.idle_count -= 1;
            if entry.since.elapsed() < IDLE_TIME && still_open(&mut entry.up.io) {
                found = Some(entry.up);
                break;
            }
        }
        if list.is_empty() {
            inner.idle.remove(key);
        }
        found
    }

    /// Keeps `up` for the next exchange to its origin.
    pub(crate) fn put(&self, key: Key, up: Upstream) {
        let mut inner = self.lock();
        if inner.idle_count >= MAX_IDLE {
            evict_oldest(&mut inner);
        }
        let inner = &mut *inner;
        let list = inner.idle.entry(key).or_default();
        if list.len() >= MAX_IDLE_PER_ORIGIN {
            list.remove(0);
            inner.idle_count -= 1;
        }
        list.push(Idle {
            up,
            since: Instant::now(),
        });
        inner.idle_count += 1;
    }

    /// The HTTP/2 connection to `key`, if one is up and can take a stream. One that
    /// received a `GOAWAY` or failed is forgotten, so the next exchange makes a new one.
    pub(crate) fn shared(&self, key: &Key) -> Option<Shared> {
        let mut inner = self.lock();
        let shared = inner.shared.get(key)?;
        if shared.alive() {
            return Some(shared.clone());
        }
        inner.shared.remove(key);
        None
    }

    /// Shares an HTTP/2 connection to `key` with every client, in place of a dead one.
    /// Returns whether it was kept (at the cap, with every connection busy, it serves
    /// only the exchange that made it).
    pub(crate) fn put_shared(&self, key: Key, shared: Shared) -> bool {
        let mut inner = self.lock();
        if !inner.shared.contains_key(&key) && inner.shared.len() >= MAX_SHARED {
            match idlest_shared(&inner) {
                Some(k) => {
                    inner.shared.remove(&k);
                }
                None => return false,
            }
        }
        inner.shared.insert(key, shared);
        true
    }

    /// Closes the connection idle the longest, to make room under the connection
    /// limit. Returns whether there was one.
    pub(crate) fn evict_one(&self) -> bool {
        let mut inner = self.lock();
        if inner.idle_count > 0 {
            evict_oldest(&mut inner);
            return true;
        }
        match idlest_shared(&inner) {
            Some(k) => inner.shared.remove(&k).is_some(),
            None => false,
        }
    }

    /// Lets go of what expired, died or is no longer reusable.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut dropped = 0;
        inner.idle.retain(|_, list| {
            let before = list.len();
            list.retain_mut(|i| {
                now.saturating_duration_since(i.since) < IDLE_TIME && still_open(&mut i.up.io)
            });
            dropped += before - list.len();
            !list.is_empty()
        });
        inner.idle_count -= dropped;
        inner
            .shared
            .retain(|_, s| s.alive() && s.idle_for(now).is_none_or(|d| d < SHARED_IDLE_TIME));
    }
}

/// The shared connection with no exchange in flight that has been idle the longest.
fn idlest_shared(inner: &Inner) -> Option<Key> {
    let now = Instant::now();
    inner
        .shared
        .iter()
        .filter_map(|(k, s)| s.idle_for(now).map(|d| (d, k)))
        .max_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

/// Drops the connection idle the longest, and its origin's entry if that empties.
fn evict_oldest(inner: &mut Inner) {
    let oldest = inner
        .idle
        .iter()
        .filter_map(|(k, list)| list.first().map(|i| (i.since, k.clone())))
        .min_by_key(|(since, _)| *since);
    let Some((_, key)) = oldest else {
        return;
    };
    if let Some(list) = inner.idle.get_mut(&key) {
        list.remove(0);
        inner.idle_count -= 1;
        if list.is_empty() {
            inner.idle.remove(&key);
        }
    }
}

/// Whether an idle connection is still open: a read that would block means yes; an
/// end of stream, an error or unexpected bytes mean it cannot be reused.
fn still_open(io: &mut BoxIo) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(
        std::pin::Pin::new(io).poll_read(&mut cx, &mut buf),
        Poll::Pending
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The pool's maps stay consistent through a panic elsewhere: every change is one
    // insert or removal.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
