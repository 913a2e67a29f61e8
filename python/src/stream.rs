//! A client's stream, held by the engine, given to a `Protocol` written in Python
//! (`mitm._native.Stream`). `mitm._protocol` builds the asyncio reader and writer on
//! top of it.
//!
//! - Reading: one task owns the read half and hands each chunk to the Python reader
//!   (`loop.call_soon_threadsafe`, so chunks arrive in order, then the EOF or the
//!   error). The reader pauses it when its buffer is full, as asyncio's transports are
//!   paused.
//! - Writing: one task owns the write half and sends what is queued, in order: `write`
//!   never waits, `drain` waits for what was queued before it.
//! - Closing ends reading at once (the reader sees EOF) and gives queued writes
//!   [`GRACE`] to go out; the socket is closed once both halves are dropped.
//! - `start_tls`: the reading task stops (`hold`, acknowledged after its last chunk),
//!   the writing task gives its half back, and the stream, with the bytes the reader
//!   had not consumed put back in front, becomes a TLS server stream presenting a leaf
//!   of the server's CA; both tasks then start again on it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mitm::{BoxIo, CertificateAuthority, Rewind};
use pyo3::exceptions::{PyConnectionResetError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::IntoPyObjectExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

use crate::middleware::Shared;

/// How long queued writes may still take once the stream is closed.
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// What the writing task is asked to do.
enum Msg {
    /// Send these bytes.
    Data(Bytes),
    /// Tell when everything before this is sent (or the error that stopped it).
    Flush(oneshot::Sender<Result<(), String>>),
    /// Shut the sending direction down.
    Eof,
    /// Give the write half back (for `start_tls`) and stop.
    GiveBack(oneshot::Sender<WriteHalf<BoxIo>>),
}

/// Where the reading task delivers: `call_soon_threadsafe(callback, kind, value)` on
/// the event loop, `kind` being [`DATA`], [`EOF`], [`ERROR`] or [`HELD`].
#[derive(Debug)]
struct Deliver {
    call_soon_threadsafe: Py<PyAny>,
    callback: Py<PyAny>,
}

/// A chunk read (`value`: bytes).
const DATA: u8 = 0;
/// The end of the stream.
const EOF: u8 = 1;
/// The socket failed (`value`: the message).
const ERROR: u8 = 2;
/// Reading stopped for `hold` (`value`: the future to settle).
const HELD: u8 = 3;

impl Deliver {
    /// Schedules `callback(kind, value)` on the loop (GIL taken here).
    fn send<F>(&self, kind: u8, value: F)
    where
        F: for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyAny>>,
    {
        Python::attach(|py| {
            let scheduled = value(py).and_then(|v| {
                self.call_soon_threadsafe
                    .bind(py)
                    .call1((self.callback.bind(py), kind, v))
            });
            // A closed loop has no one waiting any more.
            drop(scheduled);
        })
    }
}

/// The state a stream shares with its tasks.
pub(crate) struct Inner {
    /// The read half while no task reads it (before `start_reading`, while held).
    read: Mutex<Option<ReadHalf<BoxIo>>>,
    /// Asks the reading task to stop and give its half back.
    hold: Mutex<Option<mpsc::UnboundedSender<Py<PyAny>>>>,
    /// Where chunks go, once reading started.
    deliver: Mutex<Option<Arc<Deliver>>>,
    /// The writing task's queue, until closed.
    tx: Mutex<Option<mpsc::UnboundedSender<Msg>>>,
    /// Turns true when the stream is closed.
    closed: watch::Sender<bool>,
    /// True while the Python reader's buffer is full.
    paused: watch::Sender<bool>,
    /// Turns true when the writing task is over (the write half dropped).
    written: watch::Sender<bool>,
    /// Chunk size of reads.
    chunk: usize,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("closed", &*self.closed.borrow())
            .finish_non_exhaustive()
    }
}

/// Locks `m`, a poisoned lock included (its data is a plain slot).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// Closes the stream: the reader sees EOF, queued writes get [`GRACE`].
    /// Idempotent.
    pub(crate) fn close(&self) {
        lock(&self.tx).take();
        self.closed.send_replace(true);
        lock(&self.read).take();
        // The Python reader's callback refers back to this stream: let it go.
        lock(&self.deliver).take();
    }

    /// Whether the stream was closed.
    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Queues `msg` for the writing task; false once closed.
    fn send(&self, msg: Msg) -> bool {
        lock(&self.tx)
            .as_ref()
            .is_some_and(|tx| tx.send(msg).is_ok())
    }

    /// Starts the writing task on `half`.
    fn start_writing(self: &Arc<Self>, half: WriteHalf<BoxIo>) -> PyResult<()> {
        let (tx, rx) = mpsc::unbounded_channel();
        *lock(&self.tx) = Some(tx);
        crate::rt::runtime()?.spawn(write_loop(half, rx, self.clone()));
        Ok(())
    }

    /// Starts the reading task on the parked read half, delivering to `deliver`.
    fn start_reading(self: &Arc<Self>, deliver: Arc<Deliver>) -> PyResult<()> {
        let rt = crate::rt::runtime()?;
        let Some(half) = lock(&self.read).take() else {
            // Closed already: the reader still learns that.
            rt.spawn(async move { deliver.send(EOF, |py| Ok(py.None().into_bound(py))) });
            return Ok(());
        };
        let (tx, rx) = mpsc::unbounded_channel();
        *lock(&self.hold) = Some(tx);
        rt.spawn(read_loop(half, rx, deliver, self.clone()));
        Ok(())
    }
}

/// The reading task: delivers chunks until the end, an error, `close` or `hold`.
async fn read_loop(
    mut half: ReadHalf<BoxIo>,
    mut hold: mpsc::UnboundedReceiver<Py<PyAny>>,
    deliver: Arc<Deliver>,
    inner: Arc<Inner>,
) {
    let mut closed = inner.closed.subscribe();
    let mut paused = inner.paused.subscribe();
    let mut buf = vec![0u8; inner.chunk];
    loop {
        let is_paused = *paused.borrow_and_update();
        tokio::select! {
            biased;
            _ = closed.wait_for(|c| *c) => {
                deliver.send(EOF, |py| Ok(py.None().into_bound(py)));
                return;
            }
            ack = hold.recv() => {
                if let Some(ack) = ack {
                    *lock(&inner.read) = Some(half);
                    deliver.send(HELD, |py| Ok(ack.into_bound(py)));
                }
                return;
            }
            _ = paused.changed(), if is_paused => {}
            read = half.read(&mut buf), if !is_paused => match read {
                Ok(0) => {
                    deliver.send(EOF, |py| Ok(py.None().into_bound(py)));
                    return;
                }
                Ok(n) => deliver.send(DATA, |py| Ok(PyBytes::new(py, &buf[..n]).into_any())),
                Err(e) => {
                    let message = e.to_string();
                    deliver.send(ERROR, |py| message.into_bound_py_any(py));
                    return;
                }
            },
        }
    }
}

/// The writing task: sends what is queued, in order, until the queue is closed, then
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
                Msg::GiveBack(back) => return Some(back),
            }
        }
        let _ = half.shutdown().await;
        None
    };
    let late = async {
        let _ = closed.wait_for(|c| *c).await;
        tokio::time::sleep(GRACE).await;
    };
    let give_back = tokio::select! {
        back = work => back,
        _ = late => None,
    };
    if let Some(back) = give_back {
        if back.send(half).is_ok() {
            return;
        }
    } else {
        drop(half);
    }
    inner.written.send_replace(true);
}

/// A client's stream, for `mitm._protocol` (protocols get its reader and writer on
/// `connection.client`).
#[pyclass(module = "mitm._native", name = "Stream", frozen)]
#[derive(Debug)]
pub(crate) struct Stream {
    inner: Arc<Inner>,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    ca: Arc<CertificateAuthority>,
    shared: Arc<Shared>,
}

impl Stream {
    /// Takes `io` over (starting its writing task); `peer` and `local` are what
    /// `get_extra_info` tells, `ca` signs the leaf of `start_tls`, `chunk` is the
    /// size of reads.
    pub(crate) fn new(
        io: BoxIo,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        ca: Arc<CertificateAuthority>,
        chunk: usize,
        shared: Arc<Shared>,
    ) -> PyResult<Stream> {
        let (read, write) = tokio::io::split(io);
        let inner = Arc::new(Inner {
            read: Mutex::new(Some(read)),
            hold: Mutex::new(None),
            deliver: Mutex::new(None),
            tx: Mutex::new(None),
            closed: watch::channel(false).0,
            paused: watch::channel(false).0,
            written: watch::channel(false).0,
            chunk: chunk.clamp(512, 1 << 20),
        });
        inner.start_writing(write)?;
        Ok(Stream {
            inner,
            peer,
            local,
            ca,
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
    /// Starts reading: each chunk, then the EOF or the error, goes to
    /// `call_soon_threadsafe(callback, kind, value)` (kinds: 0 bytes, 1 EOF, 2 error
    /// message, 3 `hold`'s future).
    fn start_reading(&self, call_soon_threadsafe: Py<PyAny>, callback: Py<PyAny>) -> PyResult<()> {
        let deliver = Arc::new(Deliver {
            call_soon_threadsafe,
            callback,
        });
        *lock(&self.inner.deliver) = Some(deliver.clone());
        self.inner.start_reading(deliver)
    }

    /// Stops reading for a while (the reader's buffer is full).
    fn pause_reading(&self) {
        self.inner.paused.send_replace(true);
    }

    /// Reads again.
    fn resume_reading(&self) {
        self.inner.paused.send_replace(false);
    }

    /// Stops the reading task; `future` is delivered (kind 3) after its last chunk.
    fn hold(&self, future: Py<PyAny>) -> PyResult<()> {
        let sent = lock(&self.inner.hold)
            .take()
            .map(|tx| tx.send(future))
            .is_some_and(|r| r.is_ok());
        if sent {
            Ok(())
        } else {
            Err(PyConnectionResetError::new_err(
                "the client's stream is closed or not reading",
            ))
        }
    }

    /// A future: once held, the stream becomes a TLS server stream presenting the
    /// CA's leaf for `host`, `prefix` (bytes read but not consumed) read first; then
    /// reading starts again. Fails (and closes the stream) if the handshake does not
    /// finish within `timeout` seconds.
    fn start_tls<'py>(
        &self,
        py: Python<'py>,
        host: String,
        prefix: Vec<u8>,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let timeout = Duration::try_from_secs_f64(timeout)
            .map_err(|e| PyValueError::new_err(format!("ssl_handshake_timeout {timeout}: {e}")))?;
        let inner = self.inner.clone();
        let ca = self.ca.clone();
        self.shared.bridge.future(py, async move {
            // Made here, off the event loop's thread: a new leaf takes a key signing.
            let config = ca
                .server_config(&host)
                .map_err(|e| PyValueError::new_err(format!("no certificate for {host:?}: {e}")));
            let upgraded = match config {
                Ok(config) => upgrade(&inner, config, Bytes::from(prefix), timeout).await,
                Err(e) => Err(e),
            };
            if upgraded.is_err() {
                inner.close();
            }
            upgraded?;
            Python::attach(|py| Ok(py.None()))
        })
    }

    /// Queues `data` to be sent (nothing once closed).
    fn write(&self, data: &[u8]) {
        if !data.is_empty() {
            self.inner.send(Msg::Data(Bytes::copy_from_slice(data)));
        }
    }

    /// A future done when everything queued so far is sent; ConnectionResetError if
    /// sending failed or the stream is closed (as asyncio's once the connection is
    /// lost: a loop that writes and drains ends).
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (tx, rx) = oneshot::channel();
        if !self.inner.send(Msg::Flush(tx)) {
            return Err(PyConnectionResetError::new_err(
                "the client's connection is closed",
            ));
        }
        self.shared.bridge.future(py, async move {
            match rx.await {
                Ok(Ok(())) => Python::attach(|py| Ok(py.None())),
                Ok(Err(e)) => Err(PyConnectionResetError::new_err(e)),
                Err(_) => Err(PyConnectionResetError::new_err(
                    "the client's connection is closed",
                )),
            }
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

/// The TLS upgrade of a held stream (see [`Stream::start_tls`]).
async fn upgrade(
    inner: &Arc<Inner>,
    config: Arc<mitm::rustls::ServerConfig>,
    prefix: Bytes,
    timeout: Duration,
) -> PyResult<()> {
    let closed_err = || PyConnectionResetError::new_err("the client's stream is closed");
    let read = lock(&inner.read)
        .take()
        .ok_or_else(|| PyRuntimeError::new_err("start_tls on a stream that is not held"))?;
    let (back_tx, back_rx) = oneshot::channel();
    if !inner.send(Msg::GiveBack(back_tx)) {
        return Err(closed_err());
    }
    let write = back_rx.await.map_err(|_| closed_err())?;
    let io: BoxIo = read.unsplit(write);
    let io: BoxIo = if prefix.is_empty() {
        io
    } else {
        Box::new(Rewind::new(io, prefix))
    };
    let mut closed = inner.closed.subscribe();
    let accept = mitm::tokio_rustls::TlsAcceptor::from(config).accept(io);
    let handshake = tokio::select! {
        tls = tokio::time::timeout(timeout, accept) => tls,
        _ = closed.wait_for(|c| *c) => return Err(closed_err()),
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let message = format!("TLS handshake with the client failed: {e}");
            return Err(PyConnectionResetError::new_err(message));
        }
        Err(_) => {
            let message = "TLS handshake with the client timed out";
            return Err(PyConnectionResetError::new_err(message));
        }
    };
    let (read, write) = tokio::io::split(Box::new(tls) as BoxIo);
    *lock(&inner.read) = Some(read);
    inner.start_writing(write)?;
    if inner.is_closed() {
        inner.close();
        return Err(closed_err());
    }
    let deliver = lock(&inner.deliver).clone();
    match deliver {
        Some(deliver) => inner.start_reading(deliver),
        None => Ok(()),
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Python let go of it: nobody can read or write any more.
        self.inner.close();
    }
}
