//! Python threads for hooks that may block (an addon script's plain `def request`).
//!
//! Such a hook cannot run on an engine thread: a `time.sleep` in it would hold up every
//! connection that thread serves. `tokio::task::block_in_place` avoids that by handing
//! the thread's other work to another thread for the call, but costs two thread
//! handoffs per call, and the engine's threads then contend for the GIL: on the
//! http-ka load with a two-hook script, nine tenths of the proxy's CPU went to context
//! switches. Here the engine's task hands the call to the pool and awaits the answer,
//! never taking the GIL; one thread of the pool, the *lead*, runs the calls one after
//! the other as they come, so under load the GIL stays on one thread and no thread
//! waits for another.
//!
//! When a call blocks, a watcher thread sees the lead make no progress for
//! [`STALL`] while calls wait, and makes another thread the lead: the blocked call
//! holds up only its own flow. Threads beyond the first leave after [`IDLE`] without
//! work.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use pyo3::Python;

/// How long the lead may run one call while others wait before another thread takes
/// over the queue.
const STALL: Duration = Duration::from_millis(2);
/// How long a thread beyond the first waits for work before it leaves.
const IDLE: Duration = Duration::from_secs(10);
/// The most threads the pool keeps (calls blocked at once, plus one).
const MAX_THREADS: usize = 256;

/// One call, run with the GIL; dropped unrun if the interpreter is exiting.
type Job = Box<dyn for<'py> FnOnce(Python<'py>) + Send>;

/// The pool's shared state.
struct State {
    queue: VecDeque<Job>,
    /// The ticket of the call the lead runs now (`None`: no lead; the next thread to
    /// look takes the queue).
    lead: Option<u64>,
    /// The last ticket given out.
    ticket: u64,
    /// Threads alive, and those waiting for work.
    threads: usize,
    idle: usize,
    /// Whether the watcher waits for a call to watch (and needs waking for one).
    watcher_waits: bool,
}

struct Pool {
    state: Mutex<State>,
    /// Threads wait here for work.
    work: Condvar,
    /// The watcher waits here for a call to watch.
    watch: Condvar,
}

fn lock(pool: &Pool) -> MutexGuard<'_, State> {
    // A job never panics while holding the lock (jobs run without it).
    pool.state.lock().unwrap_or_else(|e| e.into_inner())
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool = Pool {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                lead: None,
                ticket: 0,
                threads: 0,
                idle: 0,
                watcher_waits: false,
            }),
            work: Condvar::new(),
            watch: Condvar::new(),
        };
        let _ = std::thread::Builder::new()
            .name("mitm-py-watch".into())
            .spawn(watcher);
        pool
    })
}

/// Runs `job` with the GIL on a thread of the pool and gives its result; `None` if it
/// could not run (the interpreter is exiting, or no thread could be started).
pub(crate) async fn run<R, F>(job: F) -> Option<R>
where
    F: for<'py> FnOnce(Python<'py>) -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    submit(Box::new(move |py| {
        // An answer nobody waits for any more is dropped here, with the GIL.
        let _ = tx.send(job(py));
    }));
    rx.await.ok()
}

fn submit(job: Job) {
    let pool = pool();
    let mut s = lock(pool);
    s.queue.push_back(job);
    if s.lead.is_some() {
        // The lead takes it after its call; the watcher makes sure it does not wait
        // behind a call that blocks.
        if s.watcher_waits {
            s.watcher_waits = false;
            pool.watch.notify_one();
        }
    } else if s.idle > 0 {
        pool.work.notify_one();
    } else if s.threads < MAX_THREADS {
        s.threads += 1;
        drop(s);
        spawn_thread();
    }
}

fn spawn_thread() {
    let started = std::thread::Builder::new()
        .name("mitm-py-hook".into())
        .spawn(|| {
            crate::rt::keep_thread_state();
            thread_main();
        });
    if started.is_err() {
        let pool = pool();
        let mut s = lock(pool);
        s.threads -= 1;
        if s.threads == 0 {
            // Nothing can run the calls: their flows get an error rather than a hang.
            s.queue.clear();
        }
    }
}

/// A thread of the pool: takes the queue when there is no lead, runs calls while it
/// stays the lead, waits for work otherwise.
fn thread_main() {
    let pool = pool();
    let mut s = lock(pool);
    loop {
        if s.lead.is_none() {
            if let Some(job) = s.queue.pop_front() {
                s.ticket += 1;
                let ticket = s.ticket;
                s.lead = Some(ticket);
                drop(s);
                let _ = crate::rt::attach(job);
                s = lock(pool);
                if s.lead == Some(ticket) {
                    // Still the lead (the call did not stall): go on with the queue.
                    s.lead = None;
                }
                continue;
            }
        }
        s.idle += 1;
        let (next, timeout) = if s.threads > 1 {
            let (next, t) = pool
                .work
                .wait_timeout(s, IDLE)
                .unwrap_or_else(|e| e.into_inner());
            (next, t.timed_out())
        } else {
            (pool.work.wait(s).unwrap_or_else(|e| e.into_inner()), false)
        };
        s = next;
        s.idle -= 1;
        if timeout && s.threads > 1 && (s.lead.is_some() || s.queue.is_empty()) {
            s.threads -= 1;
            return;
        }
    }
}

/// Watches the lead while calls wait: one that runs a call for longer than [`STALL`]
/// is relieved (another thread becomes the lead; the blocked one goes back to waiting
/// for work when its call ends).
fn watcher() {
    let pool = pool();
    let mut s = lock(pool);
    loop {
        let Some(ticket) = s.lead.filter(|_| !s.queue.is_empty()) else {
            s.watcher_waits = true;
            s = pool.watch.wait(s).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        drop(s);
        std::thread::sleep(STALL);
        s = lock(pool);
        if s.lead == Some(ticket) && !s.queue.is_empty() {
            s.lead = None;
            if s.idle > 0 {
                pool.work.notify_one();
            } else if s.threads < MAX_THREADS {
                s.threads += 1;
                drop(s);
                spawn_thread();
                s = lock(pool);
            }
        }
    }
}
