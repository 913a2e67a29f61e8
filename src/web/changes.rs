//! What changed in a store of flows, for the UI's live sockets: a [`ChangeHub`] the
//! store tells of each change, and a [`Changes`] per socket that takes them a batch at
//! a time.
//!
//! Each subscriber has its own list of the flows changed since it last looked: a
//! change appends an id to a short list that stays in the cache, and wakes the
//! subscriber only when its list was empty (once per batch, however busy the proxy).
//! A ring of changes shared by all (a broadcast channel) costs a cold write per change
//! instead, three times per flow.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The most flow ids a subscriber's list holds; past that it is told to reload.
pub const MAX_PENDING: usize = 64 * 1024;

/// Where a store tells its subscribers what changed. Cheap to call for every change.
#[derive(Debug, Default)]
pub struct ChangeHub {
    subscribers: Mutex<Vec<Arc<Subscription>>>,
    /// How many `subscribers` holds: with none (no page open), a change costs one
    /// load, not the lock.
    count: AtomicUsize,
}

#[derive(Debug, Default)]
struct Subscription {
    pending: Mutex<Batch>,
    notify: Notify,
}

impl Subscription {
    fn pending(&self) -> MutexGuard<'_, Batch> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What changed since a subscriber last looked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Batch {
    /// Every flow was removed (before the flows of `flows` changed).
    pub cleared: bool,
    /// The subscriber fell more than [`MAX_PENDING`] changes behind and their ids were
    /// dropped: it should list the flows again.
    pub lagged: bool,
    /// The flows added or changed, each once, in id order.
    pub flows: Vec<u64>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        !self.cleared && !self.lagged && self.flows.is_empty()
    }
}

impl ChangeHub {
    /// A hub with no subscribers.
    pub fn new() -> Self {
        ChangeHub::default()
    }

    fn subscribers(&self) -> MutexGuard<'_, Vec<Arc<Subscription>>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells every subscriber `change` (through `apply`), waking those that had
    /// nothing pending; forgets those gone.
    fn tell(&self, apply: impl Fn(&mut Batch)) {
        // A subscriber counted before it lists the store sees this change either way:
        // in its list (the store was changed before this), or here.
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut subscribers = self.subscribers();
        subscribers.retain(|sub| {
            if Arc::strong_count(sub) == 1 {
                return false;
            }
            let mut pending = sub.pending();
            let was_empty = pending.is_empty();
            apply(&mut pending);
            drop(pending);
            if was_empty {
                sub.notify.notify_one();
            }
            true
        });
        self.count.store(subscribers.len(), Ordering::SeqCst);
    }

    /// The flow `id` was added or changed.
    pub fn flow(&self, id: u64) {
        self.tell(|batch| {
            if batch.flows.last() == Some(&id) {
                return;
            }
            if batch.flows.len() >= MAX_PENDING {
                batch.flows = Vec::new();
                batch.lagged = true;
            } else if !batch.lagged {
                batch.flows.push(id);
            }
        });
    }

    /// Every flow was removed.
    pub fn cleared(&self) {
        self.tell(|batch| {
            batch.flows.clear();
            batch.cleared = true;
        });
    }

    /// A new subscriber, told of the changes from now on.
    pub fn subscribe(&self) -> Changes {
        let sub = Arc::new(Subscription::default());
        let mut subscribers = self.subscribers();
        subscribers.push(sub.clone());
        self.count.store(subscribers.len(), Ordering::SeqCst);
        drop(subscribers);
        Changes { sub: Some(sub) }
    }
}

/// The changes of a store for one subscriber (a live socket), a batch at a time. Made
/// by [`ChangeHub::subscribe`]; dropping it unsubscribes.
#[derive(Debug)]
pub struct Changes {
    /// `None` for a store that never changes.
    sub: Option<Arc<Subscription>>,
}

impl Changes {
    /// Changes of a store that never changes: [`changed`](Self::changed) never returns.
    pub fn never() -> Self {
        Changes { sub: None }
    }

    /// Waits until something changed since the last [`take`](Self::take) (at once if
    /// something did already); never returns for a store that never changes.
    pub async fn changed(&self) {
        match &self.sub {
            Some(sub) => loop {
                // Registered before looking, so a change made in between still wakes.
                let notified = sub.notify.notified();
                if !sub.pending().is_empty() {
                    return;
                }
                notified.await;
            },
            None => std::future::pending().await,
        }
    }

    /// Everything changed since the last call, and no longer pending.
    pub fn take(&self) -> Batch {
        let Some(sub) = &self.sub else {
            return Batch::default();
        };
        let mut batch = std::mem::take(&mut *sub.pending());
        batch.flows.sort_unstable();
        batch.flows.dedup();
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_takes_the_changes_since_it_last_looked() {
        let hub = ChangeHub::new();
        hub.flow(1); // before subscribing: not seen
        let changes = hub.subscribe();
        hub.flow(3);
        hub.flow(2);
        hub.flow(3);
        hub.flow(2);
        changes.changed().await;
        assert_eq!(
            changes.take(),
            Batch {
                flows: vec![2, 3],
                ..Batch::default()
            }
        );
        assert_eq!(changes.take(), Batch::default(), "taken");

        hub.flow(4);
        hub.cleared();
        hub.flow(5);
        assert_eq!(
            changes.take(),
            Batch {
                cleared: true,
                lagged: false,
                flows: vec![5],
            }
        );
    }

    #[tokio::test]
    async fn a_waiting_subscriber_is_woken_by_a_change() {
        let hub = Arc::new(ChangeHub::new());
        let changes = hub.subscribe();
        let waiter = tokio::spawn(async move {
            changes.changed().await;
            changes.take()
        });
        tokio::task::yield_now().await;
        hub.flow(7);
        assert_eq!(waiter.await.unwrap().flows, vec![7]);
    }

    #[test]
    fn a_subscriber_far_behind_is_told_to_reload_and_a_gone_one_is_forgotten() {
        let hub = ChangeHub::new();
        let changes = hub.subscribe();
        for id in 0..=MAX_PENDING as u64 {
            hub.flow(id);
        }
        let batch = changes.take();
        assert!(batch.lagged);
        assert!(batch.flows.is_empty());
        drop(changes);
        hub.flow(1);
        assert!(hub.subscribers().is_empty());
    }
}
