//! The tokio runtime every server of the process runs on, made on first use.
//!
//! Each of its threads keeps one Python thread state for its whole life, detached
//! (the GIL released) whenever the thread is not running Python. Without it, every
//! `Python::attach` on an engine thread would make a thread state and delete it again,
//! and CPython gives each new thread state a fresh frame stack: an `mmap` at the first
//! call and an `munmap` (with the TLB shootdown it brings) at the end. Measured with
//! `perf` on scripts/py-bench.sh's load, that churn was a fifth of the Python proxy's
//! CPU time; kept, an attach only takes and gives back the GIL.

use std::cell::RefCell;
use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::PyResult;
use tokio::runtime::Runtime;

/// The process's runtime: as many workers as cores (at least two, so that a hook that
/// blocks one worker leaves the other serving).
pub(crate) fn runtime() -> PyResult<&'static Runtime> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    let built = RUNTIME.get_or_init(|| {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("mitm-engine")
            .on_thread_start(keep_thread_state)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    built
        .as_ref()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the engine's threads: {e}")))
}

thread_local! {
    /// This thread's Python thread state, kept detached between attaches.
    static KEPT: RefCell<Option<Kept>> = const { RefCell::new(None) };
}

/// A thread state made for this thread by `PyGILState_Ensure`, with the GIL released:
/// later `PyGILState_Ensure`s (PyO3's `Python::attach`) find it and only take the GIL.
struct Kept {
    gil: ffi::PyGILState_STATE,
    state: *mut ffi::PyThreadState,
}

/// Makes this thread's Python thread state and keeps it, detached. Runs first thing on
/// every thread of the runtime, before it runs any task: the thread is not attached,
/// and holds nothing that a thread waiting on it while holding the GIL could need
/// (the runtime is made by code that releases the GIL before it waits on the engine).
#[allow(unsafe_code)]
pub(crate) fn keep_thread_state() {
    // SAFETY: `Py_IsInitialized` may be called at any time. The runtime is only made
    // from Python (the interpreter runs), on a thread of its own that has no thread
    // state yet, so `PyGILState_Ensure` makes one and takes the GIL (`UNLOCKED`: it was
    // not held); `PyEval_SaveThread` then releases the GIL while the thread state stays
    // this thread's (its gilstate counter at 1), which is what PyO3's later
    // `PyGILState_Ensure`/`PyGILState_Release` pairs rely on. Should the thread hold the
    // GIL already (`LOCKED`, never expected here), the call is undone at once and
    // nothing is kept. Both pyo3-ffi wrappers hang the thread instead of unwinding
    // should the interpreter be finalizing.
    unsafe {
        if ffi::Py_IsInitialized() == 0 {
            return;
        }
        let gil = ffi::PyGILState_Ensure();
        if matches!(gil, ffi::PyGILState_STATE::PyGILState_LOCKED) {
            ffi::PyGILState_Release(gil);
            return;
        }
        let state = ffi::PyEval_SaveThread();
        KEPT.with(|kept| *kept.borrow_mut() = Some(Kept { gil, state }));
    }
}

impl Drop for Kept {
    /// When the thread ends (a blocking-pool thread let go after idling), its thread
    /// state is given back.
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: `state` is this thread's thread state, detached by `keep_thread_state`
        // and never attached since except inside balanced Ensure/Release pairs; restoring
        // it takes the GIL, and the matching `PyGILState_Release` (counter back to 0)
        // deletes it and releases the GIL. Skipped once the interpreter is gone.
        unsafe {
            if ffi::Py_IsInitialized() == 0 {
                return;
            }
            ffi::PyEval_RestoreThread(self.state);
            ffi::PyGILState_Release(self.gil);
        }
    }
}

/// Set when the interpreter is about to finalize ([`at_exit`]): engine threads no
/// longer enter Python.
static FINALIZING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Engine threads inside [`attach`] now (or about to be).
static IN_PYTHON: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `f` with the GIL on an engine thread, unless the interpreter is exiting
/// (`None` then). Once Python finalizes, a thread that waits for the GIL is ended
/// with `pthread_exit`, whose unwinding through the engine's frames aborts the
/// process: [`at_exit`] lets the threads inside leave and keeps the others out
/// first.
pub(crate) fn attach<R>(f: impl for<'py> FnOnce(pyo3::Python<'py>) -> R) -> Option<R> {
    use std::sync::atomic::Ordering::SeqCst;
    IN_PYTHON.fetch_add(1, SeqCst);
    let out = if FINALIZING.load(SeqCst) {
        None
    } else {
        pyo3::Python::try_attach(f)
    };
    IN_PYTHON.fetch_sub(1, SeqCst);
    out
}

/// As [`attach`], for a call that gives a `PyResult`: an exiting interpreter is an
/// error.
pub(crate) fn attach_result<R>(
    f: impl for<'py> FnOnce(pyo3::Python<'py>) -> PyResult<R>,
) -> PyResult<R> {
    attach(f).unwrap_or_else(|| Err(PyRuntimeError::new_err("the Python interpreter is exiting")))
}

/// Registered with `atexit` (by `mitm/__init__.py`): from now on engine threads stay
/// out of Python, and those inside (an inline hook, a future being settled, a log
/// record) get up to two seconds, without the GIL, to leave.
#[pyo3::pyfunction]
pub(crate) fn at_exit(py: pyo3::Python<'_>) {
    use std::sync::atomic::Ordering::SeqCst;
    FINALIZING.store(true, SeqCst);
    py.detach(|| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while IN_PYTHON.load(SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
}
