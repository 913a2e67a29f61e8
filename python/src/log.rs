//! The engine's `tracing` events as records of Python's `logging`, on the logger
//! `mitm.engine`: upstream failures, refused clients, capture errors … reach Python
//! programs the way their own log lines do.
//!
//! Cheap when quiet: the levels the logger is enabled for are kept in an atomic, given
//! to `tracing` as its maximum level (events below it cost one comparison, and the
//! engine's spans are never made), and brought up to date whenever Python's logging
//! levels change (the package wraps `logging.Logger.manager._clear_cache`, which every
//! `setLevel` and `logging.disable` call) and when a server starts. Events that pass
//! are formatted on the engine's thread and handed, through a bounded queue, to one
//! thread of their own that takes the GIL to log them: an engine thread never waits for
//! the GIL to log, and a full queue drops records (counted, and said) rather than
//! slowing the proxy.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyTuple};
use pyo3::{intern, IntoPyObjectExt};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// The Python logger the engine's events go to.
pub(crate) const LOGGER: &str = "mitm.engine";

/// Records waiting for the logging thread; more are dropped.
const QUEUE: usize = 4096;

/// The most verbose `tracing` level the logger is enabled for: 0 none, 1 error, 2 warn,
/// 3 info, 4 debug, 5 trace.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// Records dropped because the queue was full, not said yet.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The queue to the logging thread, once installed.
static QUEUE_TX: OnceLock<SyncSender<Record>> = OnceLock::new();

/// `level` as 1 (error) to 5 (trace).
fn rank(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// The Python level of rank `rank` (`logging.ERROR` … and 5 for trace).
fn python_level(rank: u8) -> u8 {
    match rank {
        1 => 40,
        2 => 30,
        3 => 20,
        4 => 10,
        _ => 5,
    }
}

/// One event, formatted.
struct Record {
    rank: u8,
    /// The module it came from, e.g. `mitm::engine::exchange::respond`.
    target: String,
    /// Its message, then its fields as `name=value`.
    message: String,
    fields: Vec<(&'static str, String)>,
}

/// Collects an event's message and fields.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields.push((field.name(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields.push((field.name(), format!("{value:?}")));
        }
    }
}

/// The layer that forwards events to the logging thread.
struct Forward;

impl<S: Subscriber> Layer<S> for Forward {
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        metadata.is_event() && rank(metadata.level()) <= LEVEL.load(Ordering::Relaxed)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(match LEVEL.load(Ordering::Relaxed) {
            0 => LevelFilter::OFF,
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            4 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        })
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(tx) = QUEUE_TX.get() else { return };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let mut message = fields.message;
        if !fields.fields.is_empty() {
            let list: Vec<String> = fields
                .fields
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if message.is_empty() {
                message = list.join(", ");
            } else {
                let _ = write!(message, " ({})", list.join(", "));
            }
        }
        let record = Record {
            rank: rank(metadata.level()),
            target: metadata.target().to_owned(),
            message,
            fields: fields.fields,
        };
        if tx.try_send(record).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Installs the layer (once per process) and the watch on Python's logging levels.
/// Called when the native module is imported.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let logging = py.import(intern!(py, "logging"))?;
    let logger = logging.call_method1(intern!(py, "getLogger"), (LOGGER,))?;
    // Quiet by default: the engine's warnings and errors, not every listener it opens.
    // A level the program set first is kept.
    if logger.getattr(intern!(py, "level"))?.extract::<u32>()? == 0 {
        logger.call_method1(intern!(py, "setLevel"), (30,))?;
    }
    watch_levels(&logging)?;
    let (tx, rx) = sync_channel(QUEUE);
    if QUEUE_TX.set(tx).is_err() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("mitm-log".into())
        .spawn(move || drain(rx))
        .map_err(|e| {
            pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start the log thread: {e}"))
        })?;
    // Another library of the process may have set a global subscriber first: then the
    // engine's events go there, not to Python.
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Forward));
    refresh(py);
    let _ = INSTALLED.set(());
    Ok(())
}

/// Wraps the logging manager's `_clear_cache` (which `Logger.setLevel` and
/// `logging.disable` call whenever a level changes) so that the engine learns the new
/// level at once. Without it (another Python's logging), levels are read again when a
/// server starts.
fn watch_levels(logging: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = logging.py();
    let manager = logging
        .getattr(intern!(py, "Logger"))?
        .getattr(intern!(py, "manager"))?;
    let Ok(original) = manager.getattr(intern!(py, "_clear_cache")) else {
        return Ok(());
    };
    let original = original.unbind();
    let wrapper = PyCFunction::new_closure(
        py,
        Some(c"_clear_cache"),
        Some(c"Clears the loggers' level caches and tells the mitm engine the new levels."),
        move |args: &Bound<'_, PyTuple>,
              kwargs: Option<&Bound<'_, PyDict>>|
              -> PyResult<Py<PyAny>> {
            let py = args.py();
            let out = original.bind(py).call(args, kwargs)?;
            refresh(py);
            Ok(out.unbind())
        },
    )?;
    manager.setattr(intern!(py, "_clear_cache"), wrapper)
}

/// Reads which levels the `mitm.engine` logger is enabled for now, and tells `tracing`
/// if that changed.
pub(crate) fn refresh(py: Python<'_>) {
    let enabled = |logger: &Bound<'_, PyAny>, level: u8| -> bool {
        logger
            .call_method1(intern!(py, "isEnabledFor"), (level,))
            .and_then(|b| b.extract::<bool>())
            .unwrap_or(false)
    };
    let Ok(logger) = py
        .import(intern!(py, "logging"))
        .and_then(|l| l.call_method1(intern!(py, "getLogger"), (LOGGER,)))
    else {
        return;
    };
    let level = (1..=5u8)
        .take_while(|&r| enabled(&logger, python_level(r)))
        .last()
        .unwrap_or(0);
    if LEVEL.swap(level, Ordering::Relaxed) != level {
        tracing::callsite::rebuild_interest_cache();
    }
}

/// The logging thread: logs each record, with the GIL, until the queue or the
/// interpreter goes away.
fn drain(rx: Receiver<Record>) {
    let mut logger: Option<Py<PyAny>> = None;
    while let Ok(record) = rx.recv() {
        let logged = crate::rt::attach(|py| {
            let dropped = DROPPED.swap(0, Ordering::Relaxed);
            let logger = match &logger {
                Some(l) => l.clone_ref(py),
                None => {
                    let l = py
                        .import(intern!(py, "logging"))?
                        .call_method1(intern!(py, "getLogger"), (LOGGER,))?
                        .unbind();
                    logger = Some(l.clone_ref(py));
                    l
                }
            };
            let logger = logger.bind(py);
            if dropped > 0 {
                logger.call_method1(
                    intern!(py, "warning"),
                    (format!(
                        "{dropped} engine log records were dropped: the log could not keep up"
                    ),),
                )?;
            }
            emit(py, logger, record)
        });
        match logged {
            None => break,
            Some(Ok(())) => {}
            // A handler that raised: logging's own error handling did not catch it.
            Some(Err(e)) => Python::try_attach(|py| e.print(py)).unwrap_or(()),
        }
    }
}

/// Logs `record` on `logger`; its target and fields go in the record's `extra`
/// (`engine_target`, `engine_fields`).
fn emit(py: Python<'_>, logger: &Bound<'_, PyAny>, record: Record) -> PyResult<()> {
    let extra = PyDict::new(py);
    extra.set_item(intern!(py, "engine_target"), record.target)?;
    let fields = PyDict::new(py);
    for (k, v) in record.fields {
        fields.set_item(k, v)?;
    }
    extra.set_item(intern!(py, "engine_fields"), fields)?;
    let kwargs = PyDict::new(py);
    kwargs.set_item(intern!(py, "extra"), extra)?;
    logger.call_method(
        intern!(py, "log"),
        (
            python_level(record.rank).into_bound_py_any(py)?,
            intern!(py, "%s"),
            record.message,
        ),
        Some(&kwargs),
    )?;
    Ok(())
}
