//! Calling Python hooks from the engine's threads.
//!
//! A hook is a Python callable, usually an `async def`. Two ways to run one:
//!
//! - **inline**, on the engine thread that needs its answer, holding the GIL only for
//!   the call: for plain functions, and for coroutine functions whose code has no
//!   `await` (the package's `_bridge.plan` reads their bytecode). Such a coroutine
//!   cannot suspend, so it is driven to its end by one `send(None)`: the same result a
//!   task on the event loop would get, without a hop to the loop's thread. Should one
//!   yield after all, what is left of it is handed to the loop.
//! - **on the event loop** the server was started from (`asyncio.run_coroutine_threadsafe`),
//!   for coroutines that may await: the engine's task waits, without the GIL, for a
//!   callback that the loop's thread fires when the coroutine is done.
//!
//! Either way only the connection that called waits: other connections' hooks run.
//!
//! A plain function that may block (an addon script's hook, whose `time.sleep` must
//! hold up only its own flow) runs on a thread of the [`crate::pool`] when its caller
//! owns the arguments' makings ([`Hook::call_owned`]: the message and connection
//! hooks), else inline under `tokio::task::block_in_place` (`mitm_started`,
//! protocols, data hooks), which hands the engine thread's other tasks to another
//! thread for the call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::exceptions::PyStopIteration;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyTuple};

/// One hook of one Python object, with how to run it.
#[derive(Debug)]
pub(crate) struct Hook {
    /// The bound method (or function); shared with calls on the pool's threads.
    func: Arc<Py<PyAny>>,
    /// Whether calling it returns a coroutine.
    coroutine: bool,
    /// Whether it may run inline (see the module docs).
    inline: bool,
    /// Whether a plain function may block (an addon script's hook): it runs on the
    /// pool's threads, or inline in `tokio::task::block_in_place` (see the module docs).
    blocking: bool,
    /// A switch Python flips at run time: whether the hook is called at all, and
    /// whether it may block (the addon host's hooks, as scripts are reloaded).
    gate: Option<Py<HookGate>>,
}

/// `mitm._native.HookGate`: two switches a hook's plan may carry (its fourth item),
/// read by the engine without the GIL before each call: ``active`` (False: the hook is
/// not called, costing nothing) and ``blocking`` (True: it runs where a blocking call
/// holds up only its own flow: the pool's threads, see the module docs).
#[pyclass(module = "mitm._native", name = "HookGate", frozen)]
#[derive(Debug)]
pub(crate) struct HookGate {
    active: AtomicBool,
    blocking: AtomicBool,
}

#[pymethods]
impl HookGate {
    #[new]
    #[pyo3(signature = (active = true, blocking = true))]
    fn new(active: bool, blocking: bool) -> Self {
        HookGate {
            active: AtomicBool::new(active),
            blocking: AtomicBool::new(blocking),
        }
    }

    /// Sets both switches.
    fn set(&self, active: bool, blocking: bool) {
        self.active.store(active, Ordering::Relaxed);
        self.blocking.store(blocking, Ordering::Relaxed);
    }

    /// Whether the hook is called.
    #[getter]
    fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether the hook runs as one that may block.
    #[getter]
    fn blocking(&self) -> bool {
        self.blocking.load(Ordering::Relaxed)
    }

    fn __repr__(&self) -> String {
        format!(
            "HookGate(active={}, blocking={})",
            self.active(),
            self.blocking()
        )
    }
}

/// What the first step of a call gave.
enum Step<'py> {
    /// The hook's result.
    Done(Bound<'py, PyAny>),
    /// An awaitable to finish on the event loop.
    Pending(Py<PyAny>),
}

/// What [`Hook::call_with`] has after its first hold of the GIL.
enum First<T, C, D> {
    /// The hook finished inline and its result was read.
    Ready(T),
    /// What is left to await on the loop, and what reads its result then.
    Pending(Py<PyAny>, C, D),
}

/// The Python side a server's hooks run with: its event loop and the package's helpers.
#[derive(Debug)]
pub(crate) struct Bridge {
    /// The asyncio loop the server was started from.
    event_loop: Py<PyAny>,
    /// `mitm._bridge` (submit, resume, report).
    module: Py<PyModule>,
}

impl Hook {
    /// A hook from the package's plan: `(callable, is_coroutine_function, inline)`,
    /// optionally with a fourth item: `blocking` (a plain function that may block, run
    /// in `block_in_place`) or a [`HookGate`] switching that and the call itself at run
    /// time; or `None` for a hook the object does not define.
    pub(crate) fn from_plan(plan: &Bound<'_, PyAny>) -> PyResult<Option<Hook>> {
        if plan.is_none() {
            return Ok(None);
        }
        let (func, coroutine, inline, blocking, gate) =
            match plan.extract::<(Py<PyAny>, bool, bool, Bound<'_, PyAny>)>() {
                Ok((func, coroutine, inline, fourth)) => match fourth.cast::<HookGate>() {
                    Ok(gate) => (func, coroutine, inline, false, Some(gate.clone().unbind())),
                    Err(_) => (func, coroutine, inline, fourth.extract::<bool>()?, None),
                },
                Err(_) => {
                    let (func, coroutine, inline) = plan.extract()?;
                    (func, coroutine, inline, false, None)
                }
            };
        Ok(Some(Hook {
            func: Arc::new(func),
            coroutine,
            inline,
            blocking: blocking && !coroutine,
            gate: if coroutine { None } else { gate },
        }))
    }

    /// Whether the hook is to be called now (its gate, if any, is on).
    pub(crate) fn active(&self) -> bool {
        self.gate
            .as_ref()
            .is_none_or(|g| g.get().active.load(Ordering::Relaxed))
    }

    /// Whether this call may block.
    fn may_block(&self) -> bool {
        self.blocking
            || self
                .gate
                .as_ref()
                .is_some_and(|g| g.get().blocking.load(Ordering::Relaxed))
    }

    /// Starts a call with `args` (GIL held): its result, or what is left to await.
    fn start<'py>(
        &self,
        py: Python<'py>,
        bridge: &Bridge,
        args: Bound<'py, PyTuple>,
    ) -> PyResult<Step<'py>> {
        let out = self.func.bind(py).call1(args)?;
        if !self.coroutine {
            // A plain function; it may still have returned an awaitable.
            if out.hasattr(intern!(py, "__await__"))? {
                return Ok(Step::Pending(out.unbind()));
            }
            return Ok(Step::Done(out));
        }
        if !self.inline {
            return Ok(Step::Pending(out.unbind()));
        }
        match out.call_method1(intern!(py, "send"), (py.None(),)) {
            Ok(yielded) => {
                // It suspended after all: the loop finishes it from where it stopped.
                let resume = bridge.module.bind(py).getattr(intern!(py, "resume"))?;
                Ok(Step::Pending(resume.call1((out, yielded))?.unbind()))
            }
            Err(e) if e.is_instance_of::<PyStopIteration>(py) => {
                Ok(Step::Done(e.value(py).getattr(intern!(py, "value"))?))
            }
            Err(e) => Err(e),
        }
    }

    /// Calls the hook with the arguments `args` builds (under the GIL) and waits for
    /// its result without holding the GIL.
    pub(crate) async fn call<F>(&self, bridge: &Bridge, args: F) -> PyResult<Py<PyAny>>
    where
        F: for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>>,
    {
        self.call_with(
            bridge,
            |py| Ok((args(py)?, ())),
            |_py, value, ()| Ok(value.unbind()),
        )
        .await
    }

    /// Calls the hook with the arguments `args` builds, and reads its result with
    /// `done`, both under the GIL: for a hook that runs inline, under one hold of it
    /// (the engine's hot path: one GIL acquisition per call, nothing left for Python
    /// to free later). `args` also gives a context that `done` receives (e.g. the
    /// objects passed, to recognise one returned unchanged). A hook that awaits is
    /// finished on the event loop without the GIL, then read with `done`.
    pub(crate) async fn call_with<C, T, A, D>(
        &self,
        bridge: &Bridge,
        args: A,
        done: D,
    ) -> PyResult<T>
    where
        A: for<'py> FnOnce(Python<'py>) -> PyResult<(Bound<'py, PyTuple>, C)>,
        D: for<'py> FnOnce(Python<'py>, Bound<'py, PyAny>, C) -> PyResult<T>,
    {
        let run = || {
            crate::rt::attach_result(|py| -> PyResult<First<T, C, D>> {
                let (args, context) = args(py)?;
                Ok(match self.start(py, bridge, args)? {
                    Step::Done(value) => First::Ready(done(py, value, context)?),
                    Step::Pending(awaitable) => First::Pending(awaitable, context, done),
                })
            })
        };
        let first = if self.may_block() && on_worker() {
            // The hook may block: this worker's other tasks go to another thread.
            tokio::task::block_in_place(run)?
        } else {
            run()?
        };
        match first {
            First::Ready(value) => Ok(value),
            First::Pending(awaitable, context, done) => {
                bridge
                    .finish_with(awaitable, |py, value| done(py, value, context))
                    .await
            }
        }
    }
}

/// What [`Hook::call_owned`] gives: the context `args` made (if it got that far) and how
/// the call went.
pub(crate) struct Called<C, T> {
    /// What `args` gave beside the arguments; `None` if it failed (the hook did not run).
    pub(crate) context: Option<C>,
    /// What `done` read of the hook's result, or the hook's exception.
    pub(crate) result: PyResult<T>,
}

impl Hook {
    /// Calls the hook with the arguments `args` builds and reads its result with `done`,
    /// for callers that own what the arguments are made from: a hook that may block
    /// runs on a thread of the [`crate::pool`] (the engine's thread waits without the
    /// GIL, and a blocking call holds up only this flow), any other inline as
    /// [`Hook::call_with`] runs it. An awaitable returned is finished on the event loop.
    pub(crate) async fn call_owned<A, C, D, T>(
        &self,
        bridge: &Bridge,
        args: A,
        done: D,
    ) -> Called<C, T>
    where
        A: for<'py> FnOnce(Python<'py>) -> PyResult<(Bound<'py, PyTuple>, C)> + Send + 'static,
        C: Send + 'static,
        D: for<'py> FnOnce(Python<'py>, Bound<'py, PyAny>) -> PyResult<T> + Send + 'static,
        T: Send + 'static,
    {
        if !self.may_block() {
            let mut context = None;
            let result = self
                .call_with(
                    bridge,
                    |py| {
                        let (args, c) = args(py)?;
                        context = Some(c);
                        Ok((args, ()))
                    },
                    |py, value, ()| done(py, value),
                )
                .await;
            return Called { context, result };
        }
        /// What the pool's thread gives back.
        enum Ran<T, D> {
            /// `args` failed: the hook did not run.
            NoArgs(PyErr),
            /// The hook's result, read.
            Read(PyResult<T>),
            /// An awaitable to finish on the loop, and what reads its result.
            Pending(Py<PyAny>, D),
        }
        let func = Arc::clone(&self.func);
        let ran = crate::pool::run(move |py| {
            let (args, context) = match args(py) {
                Ok(made) => made,
                Err(e) => return (None, Ran::NoArgs(e)),
            };
            let out = match func.bind(py).call1(args) {
                Ok(out) => out,
                Err(e) => return (Some(context), Ran::Read(Err(e))),
            };
            // A plain function may still have returned an awaitable.
            let ran = match out.hasattr(intern!(py, "__await__")) {
                Ok(true) => Ran::Pending(out.unbind(), done),
                Ok(false) => Ran::Read(done(py, out)),
                Err(e) => Ran::Read(Err(e)),
            };
            (Some(context), ran)
        })
        .await;
        let Some((context, ran)) = ran else {
            return Called {
                context: None,
                result: Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "the Python interpreter is exiting",
                )),
            };
        };
        let result = match ran {
            Ran::NoArgs(e) => Err(e),
            Ran::Read(result) => result,
            Ran::Pending(awaitable, done) => bridge.finish_with(awaitable, done).await,
        };
        Called { context, result }
    }
}

/// A `done` for [`Hook::call_owned`] that drops the hook's result (under the GIL).
pub(crate) fn ignore(_py: Python<'_>, _value: Bound<'_, PyAny>) -> PyResult<()> {
    Ok(())
}

/// Whether this thread is a worker of a multi-threaded tokio runtime (where
/// `block_in_place` may be called).
fn on_worker() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

impl Bridge {
    /// The bridge to `event_loop`.
    pub(crate) fn new(py: Python<'_>, event_loop: Py<PyAny>) -> PyResult<Bridge> {
        Ok(Bridge {
            event_loop,
            module: py.import(intern!(py, "mitm._bridge"))?.unbind(),
        })
    }

    /// Runs `awaitable` on the event loop and waits for its result.
    #[allow(
        dead_code,
        reason = "for hooks whose result is read elsewhere (protocols)"
    )]
    pub(crate) async fn finish(&self, awaitable: Py<PyAny>) -> PyResult<Py<PyAny>> {
        self.finish_with(awaitable, |_py, value| Ok(value.unbind()))
            .await
    }

    /// Runs `awaitable` on the event loop, waits for its result, and reads it with
    /// `done` under the GIL.
    pub(crate) async fn finish_with<T, D>(&self, awaitable: Py<PyAny>, done: D) -> PyResult<T>
    where
        D: for<'py> FnOnce(Python<'py>, Bound<'py, PyAny>) -> PyResult<T>,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Py<PyAny>>();
        let tx = std::sync::Mutex::new(Some(tx));
        crate::rt::attach_result(|py| -> PyResult<()> {
            // Called on the loop's thread with the finished concurrent future.
            let done = PyCFunction::new_closure(py, None, None, move |args, _kwargs| {
                if let Ok(future) = args.get_item(0) {
                    if let Some(tx) = tx.lock().ok().and_then(|mut slot| slot.take()) {
                        let _ = tx.send(future.unbind());
                    }
                }
            })?;
            let submit = self.module.bind(py).getattr(intern!(py, "submit"))?;
            submit.call1((awaitable, self.event_loop.bind(py), done))?;
            Ok(())
        })?;
        let future = rx.await.map_err(|_| {
            pyo3::exceptions::PyRuntimeError::new_err(
                "the event loop closed before the hook finished",
            )
        })?;
        crate::rt::attach_result(|py| {
            let future = future.into_bound(py);
            done(py, future.call_method0(intern!(py, "result"))?)
        })
    }

    /// An asyncio future on the event loop, settled from the engine's threads with
    /// what `work` gives.
    pub(crate) fn future<'py, F>(&self, py: Python<'py>, work: F) -> PyResult<Bound<'py, PyAny>>
    where
        F: std::future::Future<Output = PyResult<Py<PyAny>>> + Send + 'static,
    {
        let future = self
            .event_loop
            .bind(py)
            .call_method0(intern!(py, "create_future"))?;
        let settle = self
            .module
            .bind(py)
            .getattr(intern!(py, "settle"))?
            .unbind();
        let event_loop = self.event_loop.clone_ref(py);
        let target = future.clone().unbind();
        crate::rt::runtime()?.spawn(async move {
            let out = work.await;
            crate::rt::attach(|py| {
                let (ok, value) = match out {
                    Ok(v) => (true, v),
                    Err(e) => (false, e.into_value(py).into_any()),
                };
                // A closed loop has no one waiting any more.
                let _ = event_loop.bind(py).call_method1(
                    intern!(py, "call_soon_threadsafe"),
                    (settle, target, ok, value),
                );
            });
        });
        Ok(future)
    }

    /// Logs `err`, with its traceback, as raised by `what` (e.g. `Count.client_data`).
    pub(crate) fn report(&self, what: &str, err: PyErr) {
        crate::rt::attach(|py| {
            let report = self.module.bind(py).getattr(intern!(py, "report"));
            // `into_value` puts the traceback on the exception (`__traceback__`): before
            // Python 3.12 a fetched error keeps it beside, and `value` alone loses it.
            let value = err.clone_ref(py).into_value(py);
            let logged = report.and_then(|f| f.call1((what, value)));
            if let Err(e) = logged {
                // Logging itself failed (a broken handler): stderr is what is left.
                e.print(py);
                err.print(py);
            }
        });
    }
}
