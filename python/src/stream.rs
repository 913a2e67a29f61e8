//! A client's stream, held by the engine, given to a `Protocol` written in Python
//! (`mitm._native.Stream`): reads and writes run on the engine's threads, and Python
//! awaits asyncio futures they settle. `mitm._protocol` builds the asyncio-like reader
//! and writer on top of it.
//!
//! Reads go one at a time through the read half (a lock; Python's reader has one pump
//! reading). Writes are queued, in order, to one task that owns the write half:
//! `write` never waits, `drain` waits for what was queued before it. Closing ends
//! pending reads at once (they read as EOF) and gives queued writes [`GRACE`] to go
//! out; the socket is closed once both halves are dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mitm::BoxIo;
use pyo3::exceptions::{PyConnectionResetError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::IntoPyObjectExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

use crate::middleware::Shared;

/// How long queued writes may still take once the stream is closed.
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// What the writer task is asked to do.
enum Msg {
    /// Send these bytes.
    Data(Bytes),
    /// Tell when everything before this is sent (or the error that stopped it).
    Flush(oneshot::Sender<Result<(), String>>),
    /// Shut the sending direction down.
    Eof,
}

/// The state a stream shares with its tasks.
pub(crate) struct Inner {
    /// The read half, until closed.
    read: tokio::sync::Mutex<Option<ReadHalf<BoxIo>>>,
    /// The writer task's queue, until closed.
    tx: Mutex<Option<mpsc::UnboundedSender<Msg>>>,
    /// Turns true when the stream is closed.
    closed: watch::Sender<bool>,
    /// Turns true when the writer task is over (the write half dropped).
    written: watch::Sender<bool>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("closed", &*self.closed.borrow())
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Closes the stream: pending reads end as EOF, queued writes get [`GRACE`].
    /// Idempotent.
    pub(crate) fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        self.closed.send_replace(true);
        if let Ok(mut read) = self.read.try_lock() {
            read.take();
        }
        // A read in flight holds the lock: it sees `closed` and drops the half itself.
    }

    /// Whether the stream was closed.
    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Queues `msg` for the writer task; false once closed.
    fn send(&self, msg: Msg) -> bool {
        match self.tx.lock() {
            Ok(tx) => tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok()),
            Err(_) => false,
        }
    }
}

/// The writer task: sends what is queued, in order, until the queue is closed, then
/// shuts the write half down; stops early [`GRACE`] after the stream was closed.
async fn write_loop(
    mut half: WriteHalf<BoxIo>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    inner: Arc<Inner>,
) {
    let mut closed = inner.closed.subscribe();
    let work = async {
        let mut error: Option<String> = None;
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Data(bytes) if error.is_none() => {
                    if let Err(e) = half.write_all(&bytes).await {
                        error = Some(e.to_string());
                    }
                }
                Msg::Data(_) => {}
                Msg::Flush(done) => {
                    if error.is_none() {
                        if let Err(e) = half.flush().await {
                            error = Some(e.to_string());
                        }
                    }
                    let _ = done.send(error.clone().map_or(Ok(()), Err));
                }
                Msg::Eof => {
                    if error.is_none() {
                        let _ = half.shutdown().await;
                    }
                }
            }
        }
        let _ = half.shutdown().await;
    };
    let late = async {
        let _ = closed.wait_for(|c| *c).await;
        tokio::time::sleep(GRACE).await;
    };
    tokio::select! {
        _ = work => {}
        _ = late => {}
    }
    drop(half);
    inner.written.send_replace(true);
}

/// A client's stream, for `mitm._protocol` (not used directly by protocols: they get
/// its reader and writer on `connection.client`).
#[pyclass(module = "mitm._native", name = "Stream", frozen)]
#[derive(Debug)]
pub(crate) struct Stream {
    inner: Arc<Inner>,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    shared: Arc<Shared>,
}

impl Stream {
    /// Takes `io` over (starting its writer task); `peer` and `local` are what
    /// `get_extra_info` tells.
    pub(crate) fn new(
        io: BoxIo,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        shared: Arc<Shared>,
    ) -> PyResult<Stream> {
        let (read, write) = tokio::io::split(io);
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            read: tokio::sync::Mutex::new(Some(read)),
            tx: Mutex::new(Some(tx)),
            closed: watch::channel(false).0,
            written: watch::channel(false).0,
        });
        crate::rt::runtime()?.spawn(write_loop(write, rx, inner.clone()));
        Ok(Stream {
            inner,
            peer,
            local,
            shared,
        })
    }

    /// The shared state, for closing the stream from the engine's side.
    pub(crate) fn inner(&self) -> Arc<Inner> {
        self.inner.clone()
    }
}

/// `(ip, port)` for Python.
fn address(py: Python<'_>, addr: Option<SocketAddr>) -> PyResult<Py<PyAny>> {
    match addr {
        Some(a) => (a.ip().to_string(), a.port()).into_py_any(py),
        None => Ok(py.None()),
    }
}

#[pymethods]
impl Stream {
    /// A future of at most `n` bytes read, `b""` at EOF or once closed;
    /// ConnectionResetError if the socket failed.
    fn read<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyAny>> {
        if n == 0 {
            return Err(PyValueError::new_err("read(n) needs n > 0"));
        }
        let inner = self.inner.clone();
        self.shared.bridge.future(py, async move {
            let mut closed = inner.closed.subscribe();
            let mut half = inner.read.lock().await;
            let mut buf = vec![0u8; n.min(1 << 20)];
            let got = match half.as_mut() {
                None => None,
                Some(reader) => tokio::select! {
                    r = reader.read(&mut buf) => Some(r),
                    _ = closed.wait_for(|c| *c) => None,
                },
            };
            let got = got.unwrap_or_else(|| {
                half.take();
                Ok(0)
            });
            match got {
                Ok(k) => Python::attach(|py| Ok(PyBytes::new(py, &buf[..k]).into_any().unbind())),
                Err(e) => Err(PyConnectionResetError::new_err(e.to_string())),
            }
        })
    }

    /// Queues `data` to be sent (nothing once closed).
    fn write(&self, data: &[u8]) {
        if !data.is_empty() {
            self.inner.send(Msg::Data(Bytes::copy_from_slice(data)));
        }
    }

    /// A future done when everything queued so far is sent; ConnectionResetError if
    /// sending failed. Done at once after `close`.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (tx, rx) = oneshot::channel();
        let queued = self.inner.send(Msg::Flush(tx));
        self.shared.bridge.future(py, async move {
            if queued {
                if let Ok(Err(e)) = rx.await {
                    return Err(PyConnectionResetError::new_err(e));
                }
            }
            Python::attach(|py| Ok(py.None()))
        })
    }

    /// Sends what is queued, then shuts the sending direction down.
    fn write_eof(&self) {
        self.inner.send(Msg::Eof);
    }

    /// Closes the stream (queued bytes still go out).
    fn close(&self) {
        self.inner.close();
    }

    /// A future done when the stream is closed and its bytes are out.
    fn wait_closed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut written = self.inner.written.subscribe();
        let mut closed = self.inner.closed.subscribe();
        self.shared.bridge.future(py, async move {
            let _ = closed.wait_for(|c| *c).await;
            let _ = written.wait_for(|w| *w).await;
            Python::attach(|py| Ok(py.None()))
        })
    }

    /// Whether the stream was closed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The client's `(ip, port)`.
    #[getter]
    fn peername(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        address(py, self.peer)
    }

    /// The proxy's `(ip, port)` the client reached.
    #[getter]
    fn sockname(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        address(py, self.local)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Python let go of it: nobody can read or write any more.
        self.inner.close();
    }
}
