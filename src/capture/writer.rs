//! The writer thread: records queued by a [`Capture`](super::Capture) go, in the
//! order flows finished, to its [`Sink`]s on a thread of their own, through a queue
//! bounded in flows and in bytes (flows past either bound are dropped and counted,
//! never waited for), flushed together at most [`FLUSH_AFTER`] after a flow was
//! written.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Record;

/// The default of [`CaptureBuilder::queue`](super::CaptureBuilder::queue): flows
/// waiting for the writer (a fifth of a second of them at 80 000 flows a second).
pub const DEFAULT_QUEUE: usize = 16_384;
/// The default of [`CaptureBuilder::queue_bytes`](super::CaptureBuilder::queue_bytes):
/// 64 MiB of flows waiting for the writer.
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// Where records go: a file format, a store. Called on the capture's writer thread,
/// one record at a time, in the order flows finished.
pub trait Sink: Send + 'static {
    /// Writes one record. An error is logged and counted; the capture goes on.
    fn write(&mut self, record: &Record) -> io::Result<()>;

    /// Writes `records`, in order, telling `failed` of each error (each is logged and
    /// counted; the capture goes on). The writer hands over what it took off the queue
    /// in one go (up to [`BURST`] records), so that a sink can do once per burst what
    /// it would otherwise do per record (an SQLite store looks its statements up once).
    /// By default, [`write`](Self::write) for each.
    fn write_each(
        &mut self,
        records: &mut dyn Iterator<Item = &Record>,
        failed: &mut dyn FnMut(io::Error),
    ) {
        for record in records {
            if let Err(e) = self.write(record) {
                failed(e);
            }
        }
    }

    /// Makes what was written durable, when the queue has nothing more for now.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How many written records may wait for the proxy's threads to make the next records
/// in ([`Writer::spare`], [`Record::remake`]): their storage is used again where it
/// was allocated, flow after flow, rather than freed on the writer's thread and made
/// anew on the proxy's. Past this (an idle proxy, or a burst), the writer drops them
/// itself. The writer writes in bursts (it naps between them, see [`NAP`]); this
/// holds a burst at a few tens of thousands of flows a second, so that the proxy's
/// threads seldom run out (each one they run out of is a record made and freed).
const RETURNED: usize = 256;

/// The largest record (its [`Record::weight`]) sent back to the proxy's threads:
/// larger ones are dropped by the writer, so that what waits in the return queue of
/// an idle proxy stays small (at most [`RETURNED`] of these).
const RETURNED_WEIGHT: usize = 16 * 1024;

/// The proxy's end of the queues to and from the writer thread.
struct Ends {
    /// Records to write.
    tx: SyncSender<Queued>,
    /// Records written, for the next records to be made in (see [`RETURNED`]).
    returned: Receiver<Box<Record>>,
    /// The way back into `returned`, for records made and not written
    /// ([`Writer::recycle`]).
    recycle: SyncSender<Box<Record>>,
}

/// A record on its way to the writer: boxed, so that the queues move a pointer rather
/// than the record (a kilobyte, copied from core to core at each move), with its
/// [`Record::weight`], measured once.
struct Queued {
    record: Box<Record>,
    weight: usize,
}

/// A writer thread and the queue to it: what a [`Capture`](super::Capture) hands its
/// records to.
///
/// Records are made on the proxy's threads, and made again there: the writer sends
/// each one it is done with back ([`RETURNED`]), and the next record is made in one
/// ([`spare`](Self::spare), [`Record::remake`]: its box, strings, heads and bodies'
/// buffers used again). Records go through the queues boxed: a pointer moved, where
/// the record is a kilobyte copied from core to core. A record is a dozen allocations
/// (its strings, heads and bodies); freed on the writer thread, they overflowed its
/// allocator cache into the arenas of the proxy's threads (a lock each) while those
/// threads, whose caches then stayed empty, took every new record's memory from their
/// arenas the slow way.
pub(crate) struct Writer {
    ends: Mutex<Option<Ends>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Stats>,
    queue_bytes: usize,
}

impl Writer {
    /// Starts the thread writing to `sinks`, with room for `queue` records of
    /// `queue_bytes` bytes in all.
    pub(crate) fn start(sinks: Vec<Box<dyn Sink>>, queue: usize, queue_bytes: usize) -> Self {
        let (tx, rx) = sync_channel::<Queued>(queue);
        let (give_back, returned) = sync_channel::<Box<Record>>(RETURNED);
        let stats = Arc::new(Stats::default());
        let thread_stats = stats.clone();
        // A thread that cannot be started drops `rx`: records pushed are then dropped
        // unwritten, as after `finish`.
        let thread = std::thread::Builder::new()
            .name("mitm-capture".into())
            .spawn({
                let give_back = give_back.clone();
                move || write_all(rx, sinks, &thread_stats, &give_back)
            })
            .ok();
        Writer {
            ends: Mutex::new(Some(Ends {
                tx,
                returned,
                recycle: give_back,
            })),
            thread: Mutex::new(thread),
            stats,
            queue_bytes,
        }
    }

    /// Flows written so far, and flushed: in every sink's file.
    pub(crate) fn written(&self) -> u64 {
        self.stats.written.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` flows are written (flushed into every sink).
    pub(crate) async fn wait_written(&self, n: u64) {
        let mut flushed = self.stats.flushed.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = flushed.wait_for(|&written| written >= n).await;
    }

    /// Writes that failed (a flow that could not be saved, or a flush), each logged.
    pub(crate) fn failed(&self) -> u64 {
        self.stats.failed.load(Ordering::Relaxed)
    }

    /// Flows dropped because the writer fell behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    /// A record written and given back, for the next record to be made in
    /// ([`Record::remake`]): its box and its bodies' buffers are used again.
    pub(crate) fn spare(&self) -> Option<Box<Record>> {
        let ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        ends.as_ref()?.returned.try_recv().ok()
    }

    /// Keeps `record`, made and not to be written (a flow the capture's filter left
    /// out), for the next record to be made in, as a written one would be (dropped
    /// when enough wait).
    pub(crate) fn recycle(&self, record: Box<Record>) {
        let ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        let refused = match ends.as_ref() {
            Some(ends) if record.weight() <= RETURNED_WEIGHT => ends.recycle.try_send(record).err(),
            _ => None,
        };
        // Dropped once the lock is let go.
        drop(ends);
        drop(refused);
    }

    /// Hands `record` to the thread, or drops (and counts) it when the queue is full.
    pub(crate) fn push(&self, record: Box<Record>) {
        let weight = record.weight();
        let ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        let Some(Ends { tx, .. }) = ends.as_ref() else {
            return;
        };
        let queued = &self.stats.queued_bytes;
        let before = queued.fetch_add(weight, Ordering::Relaxed);
        let queued_record = Queued { record, weight };
        let sent = if before > 0 && before + weight > self.queue_bytes {
            Err(TrySendError::Full(queued_record))
        } else {
            tx.try_send(queued_record)
        };
        if sent.is_err() {
            queued.fetch_sub(weight, Ordering::Relaxed);
        }
        // A record refused is dropped once the lock is let go.
        drop(ends);
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Said at once, then every 1000th, so a flood does not flood the log.
                if dropped == 1 || dropped.is_multiple_of(1000) {
                    tracing::warn!(
                        dropped,
                        "capture: the writer fell behind, flows were dropped"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Stops taking records, waits until the thread has written what is queued, and
    /// returns how many flows were written and dropped.
    pub(crate) fn finish(&self) -> (u64, u64) {
        drop(self.ends.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
        (self.written(), self.dropped())
    }
}

/// Counts of a capture's work.
#[derive(Debug)]
struct Stats {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// Bytes of the records queued (their [`Record::weight`]).
    queued_bytes: AtomicUsize,
    /// Told the new `written` count after each flush, for [`Writer::wait_written`].
    flushed: tokio::sync::watch::Sender<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
            flushed: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Stats {
    /// Counts `n` more flows as written (flushed) and tells the waiters.
    fn wrote(&self, n: u64) {
        let total = self.written.fetch_add(n, Ordering::Relaxed) + n;
        self.flushed.send_replace(total);
    }
}

/// How long a written flow may wait for its sinks' flush (an SQLite commit, a
/// buffered file's write): flows are flushed together, at most this long after the
/// first of them was written, and once the writer stops. One flush per flow would cost
/// more than the flows themselves under load (a commit rewrites the pages it touched).
pub const FLUSH_AFTER: Duration = Duration::from_millis(50);

/// The most records the writer takes off the queue before writing them
/// ([`Sink::write_each`]): a burst's records are written together, and the clock
/// read once for them.
pub const BURST: usize = 64;

/// How long the writer sleeps when it has caught up with the queue but has flows to
/// flush later: while it sleeps, a flow queued does not have to wake it.
const NAP: Duration = Duration::from_millis(5);

/// The writer thread: records from `rx` to every sink, flushing at most
/// [`FLUSH_AFTER`] after a flow was written, until every sender is gone.
/// `written` counts a flow once it is flushed: then it is in every sink's file.
///
/// Waiting for the next flow blocks only when everything is flushed: otherwise the
/// writer naps ([`NAP`]) and looks again. A blocked writer must be woken for each flow
/// queued (a system call on the proxy's thread, and a context switch, per flow); a
/// napping one takes the flows queued meanwhile in one go.
///
/// Each record written goes back on `give_back`, to be dropped by the proxy's threads
/// (see [`RETURNED`]), unless it is large or that queue is full.
fn write_all(
    rx: Receiver<Queued>,
    mut sinks: Vec<Box<dyn Sink>>,
    stats: &Stats,
    give_back: &SyncSender<Box<Record>>,
) {
    use std::sync::mpsc::TryRecvError;
    // Flows written since the last flush, and when they must be flushed.
    let mut pending = 0;
    let mut due: Option<std::time::Instant> = None;
    // The records taken off the queue in one go, written together.
    let mut burst: Vec<Queued> = Vec::with_capacity(BURST);
    loop {
        let first = match rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => match due {
                None => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
                Some(at) => {
                    let left = at.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        flush(&mut sinks, stats);
                        stats.wrote(std::mem::take(&mut pending));
                        due = None;
                    } else {
                        std::thread::sleep(left.min(NAP));
                    }
                    continue;
                }
            },
        };
        burst.push(first);
        while burst.len() < BURST {
            match rx.try_recv() {
                Ok(r) => burst.push(r),
                Err(_) => break,
            }
        }
        for sink in &mut sinks {
            sink.write_each(&mut burst.iter().map(|q| &*q.record), &mut |e| {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "capture: a flow could not be saved");
            });
        }
        pending += burst.len() as u64;
        for Queued { record, weight } in burst.drain(..) {
            stats.queued_bytes.fetch_sub(weight, Ordering::Relaxed);
            if weight <= RETURNED_WEIGHT {
                // Full, or the capture finished: dropped here.
                let _ = give_back.try_send(record);
            }
        }
        // The clock is read once a burst, not once a flow.
        let now = std::time::Instant::now();
        match due {
            // Busy: the queue may never be empty; flush on time anyway.
            Some(at) if now >= at => {
                flush(&mut sinks, stats);
                stats.wrote(std::mem::take(&mut pending));
                due = None;
            }
            Some(_) => {}
            None => due = Some(now + FLUSH_AFTER),
        }
    }
    flush(&mut sinks, stats);
    stats.wrote(pending);
}

fn flush(sinks: &mut [Box<dyn Sink>], stats: &Stats) {
    for sink in sinks {
        if let Err(e) = sink.flush() {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "capture: saved flows could not be flushed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Connection, Host, Target};
    use crate::http::message::{Body, HttpFlow, Request};
    use bytes::Bytes;

    /// Keeps what it is given, blocking until `gate` opens.
    struct Slow {
        seen: Arc<Mutex<Vec<String>>>,
        gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
    }

    impl Sink for Slow {
        fn write(&mut self, record: &Record) -> io::Result<()> {
            let (open, changed) = &*self.gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = changed.wait(open).unwrap();
            }
            self.seen.lock().unwrap().push(record.request.url());
            Ok(())
        }
    }

    /// A writer with room for `queue` records of `queue_bytes`, whose one sink blocks
    /// until the gate opens: the writer, the URLs written, and the gate's opener.
    fn gated(queue: usize, queue_bytes: usize) -> (Writer, Arc<Mutex<Vec<String>>>, impl Fn()) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let sink = Slow {
            seen: seen.clone(),
            gate: gate.clone(),
        };
        let open = move || {
            *gate.0.lock().unwrap() = true;
            gate.1.notify_all();
        };
        (
            Writer::start(vec![Box::new(sink)], queue, queue_bytes),
            seen,
            open,
        )
    }

    fn flow(path: &str) -> HttpFlow {
        let request = Request::new_to(
            "GET".into(),
            Target::new("a.localhost", 8080, false),
            path.into(),
        );
        HttpFlow::new(1, request)
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (writer, seen, open) = gated(2, DEFAULT_QUEUE_BYTES);
        let conn = Connection::new(1, Host::default());
        // The writer takes the first and blocks on it; two wait; the rest are dropped.
        for i in 0..10 {
            writer.push(Box::new(Record::from_flow(
                &conn,
                &flow(&format!("/{i}")),
                1024,
            )));
        }
        assert!(writer.dropped() >= 7, "dropped {}", writer.dropped());
        open();
        let (written, dropped) = writer.finish();
        assert_eq!(written + dropped, 10);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len() as u64, written);
        assert_eq!(seen[0], "http://a.localhost:8080/0");
    }

    #[test]
    fn the_queue_holds_at_most_its_bytes() {
        let (writer, seen, open) = gated(DEFAULT_QUEUE, 10_000);
        let conn = Connection::new(1, Host::default());
        let big = |i: usize| {
            let mut f = flow(&format!("/{i}"));
            f.request.body = Body::Full(Bytes::from(vec![b'x'; 4000]));
            Record::from_flow(&conn, &f, 1 << 20)
        };
        // One alone may be larger than the budget.
        let huge = |i: usize| {
            let mut f = flow(&format!("/{i}"));
            f.request.body = Body::Full(Bytes::from(vec![b'x'; 50_000]));
            Record::from_flow(&conn, &f, 1 << 20)
        };
        // A flow counts until it is written (the writer holds the first at the gate):
        // a small one and two of 4 KB fit in 10 KB, a third does not.
        writer.push(Box::new(Record::from_flow(&conn, &flow("/0"), 1 << 20)));
        for i in 1..=3 {
            writer.push(Box::new(big(i)));
        }
        assert_eq!(writer.dropped(), 1);
        open();
        assert_eq!(writer.finish(), (3, 1));
        assert_eq!(writer.stats.queued_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(seen.lock().unwrap().len(), 3);

        // One larger than the whole budget goes when nothing else waits (and counts
        // until it is written: the writer holds it at a closed gate again).
        let (writer, _, open) = gated(DEFAULT_QUEUE, 10_000);
        writer.push(Box::new(huge(4)));
        writer.push(Box::new(big(5)));
        assert_eq!(writer.dropped(), 1);
        open();
        assert_eq!(writer.finish(), (1, 1));
    }

    /// Records written, and records made but left out, come back for the next records
    /// to be made in; a large one does not, nor any past the return queue's room.
    #[test]
    fn records_written_or_left_out_come_back_to_be_made_again() {
        let (writer, _, open) = gated(DEFAULT_QUEUE, DEFAULT_QUEUE_BYTES);
        let conn = Connection::new(1, Host::default());
        assert!(writer.spare().is_none());
        let left_out = Box::new(Record::from_flow(&conn, &flow("/out"), 1024));
        let at = std::ptr::from_ref::<Record>(&left_out);
        writer.recycle(left_out);
        let spare = writer.spare().expect("the record left out is kept");
        assert_eq!(std::ptr::from_ref::<Record>(&spare), at);
        assert!(writer.spare().is_none());
        let mut f = flow("/large");
        f.request.body = Body::Full(Bytes::from(vec![b'x'; 2 * RETURNED_WEIGHT]));
        writer.recycle(Box::new(Record::from_flow(&conn, &f, 1 << 20)));
        assert!(writer.spare().is_none(), "a large record is dropped");
        for _ in 0..RETURNED + 10 {
            writer.recycle(Box::new(Record::from_flow(&conn, &flow("/many"), 1024)));
        }
        let kept = std::iter::from_fn(|| writer.spare()).count();
        assert_eq!(kept, RETURNED);

        // Written: given back once the sink is done with it.
        writer.push(spare);
        open();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let back = loop {
            if let Some(back) = writer.spare() {
                break back;
            }
            assert!(std::time::Instant::now() < deadline, "never given back");
            std::thread::yield_now();
        };
        assert_eq!(std::ptr::from_ref::<Record>(&back), at);
        writer.finish();
        // `finish` gave up the proxy's ends: nothing is taken any more.
        writer.recycle(back);
        assert!(writer.spare().is_none());
    }
}
