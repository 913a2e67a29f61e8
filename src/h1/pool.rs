//! Idle upstream connections, kept per origin for the next request to any client.
//!
//! A connection goes back to the pool only after a complete exchange that leaves it
//! reusable (framed response, no `Connection: close`). Taking one checks that the
//! server has not closed it meanwhile; one that has is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};

use crate::core::Target;
use crate::io::BoxIo;

/// Idle connections kept per origin.
const MAX_IDLE_PER_ORIGIN: usize = 32;
/// Idle connections kept in all: each holds a socket (and TLS state), and a client that
/// visits many sites once must not exhaust the proxy's file descriptors.
const MAX_IDLE: usize = 256;
/// Idle connections older than this are not reused (servers commonly close after
/// 60 s or more).
const MAX_IDLE_TIME: Duration = Duration::from_secs(30);

/// An upstream connection with the address it reached.
pub(crate) struct Upstream {
    pub io: BoxIo,
    pub addr: SocketAddr,
    pub target: Target,
}

struct Idle {
    up: Upstream,
    since: Instant,
}

/// The pool of idle upstream connections, shared by all clients of a server, and the
/// HTTP/2 upstream connections, which serve any number of exchanges at once.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<Target, Vec<Idle>>>,
    h2: Mutex<HashMap<Target, h2::client::SendRequest<bytes::Bytes>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    /// An idle connection to `target` that still looks alive, if there is one.
    pub(crate) fn take(&self, target: &Target) -> Option<Upstream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(target)?;
        let mut found = None;
        while let Some(mut entry) = list.pop() {
            if entry.since.elapsed() < MAX_IDLE_TIME && still_open(&mut entry.up.io) {
                found = Some(entry.up);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(target);
        }
        found
    }

    /// Keeps `up` for reuse.
    pub(crate) fn put(&self, up: Upstream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = idle.values().map(Vec::len).sum();
        if total >= MAX_IDLE {
            evict_oldest(&mut idle);
        }
        let list = idle.entry(up.target.clone()).or_default();
        if list.len() >= MAX_IDLE_PER_ORIGIN {
            list.remove(0);
        }
        list.push(Idle {
            up,
            since: Instant::now(),
        });
    }
}

impl Pool {
    /// The HTTP/2 connection to `target`, if one is up.
    pub(crate) fn h2(&self, target: &Target) -> Option<h2::client::SendRequest<bytes::Bytes>> {
        let map = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        map.get(target).cloned()
    }

    /// Shares an HTTP/2 connection to `target` with every client.
    pub(crate) fn put_h2(&self, target: &Target, send: h2::client::SendRequest<bytes::Bytes>) {
        let mut map = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(target.clone(), send);
    }

    /// Forgets a broken HTTP/2 connection.
    pub(crate) fn drop_h2(&self, target: &Target) {
        let mut map = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(target);
    }
}

/// Drops the connection idle the longest, and its origin's entry if that empties.
fn evict_oldest(idle: &mut HashMap<Target, Vec<Idle>>) {
    let oldest = idle
        .iter()
        .filter_map(|(t, list)| list.first().map(|i| (i.since, t.clone())))
        .min_by_key(|(since, _)| *since);
    let Some((_, target)) = oldest else {
        return;
    };
    if let Some(list) = idle.get_mut(&target) {
        list.remove(0);
        if list.is_empty() {
            idle.remove(&target);
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
