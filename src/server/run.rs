//! A bound server: [`Mitm`] accepts clients on all its listeners until it is told to
//! stop, and [`MitmHandle`] stops one running on a task of its own.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use super::block::Block;
use super::builder::MitmBuilder;
use super::connection::serve;
use super::sender::Sender;
use crate::engine::context::Context;
use crate::error::{Error, Result};
use crate::http::message::{Request, Response};
use crate::http::settings::Settings;
use crate::protocol::Protocol;
use crate::server::listener::Bound;
use crate::tls::ca::CertificateAuthority;

/// A bound listener, with what its clients are served with.
pub(super) struct Serving {
    pub(super) socket: TcpListener,
    pub(super) bound: Bound,
    /// The server's context with this listener's route.
    pub(super) cx: Context,
    pub(super) protocols: Arc<[Arc<dyn Protocol>]>,
}

/// A bound proxy server, ready to run.
pub struct Mitm {
    /// At least one.
    pub(super) listeners: Vec<Serving>,
    pub(super) cx: Context,
    /// The HTTP settings senders obey.
    pub(super) settings: Arc<Settings>,
    pub(super) grace: Duration,
    /// Places for open connections, clients and upstreams alike.
    pub(super) limit: Arc<Semaphore>,
    pub(super) max_connections: usize,
    /// Tells connections the server is stopping.
    pub(super) stop: watch::Sender<bool>,
    /// Which clients are refused by their address.
    pub(super) block: Block,
}

impl std::fmt::Debug for Mitm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mitm")
            .field("listeners", &self.listeners())
            .field("ca_cert_path", &self.ca_cert_path())
            .finish_non_exhaustive()
    }
}

impl Mitm {
    /// A builder with the original's defaults: `127.0.0.1:8888`, `[Http]`, `[Log]`, and
    /// the CA in the user data directory.
    pub fn builder() -> MitmBuilder {
        MitmBuilder::default()
    }

    /// The address the server listens on (with the real port when 0 was asked for);
    /// with several listeners, the first's.
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners[0].bound.addr
    }

    /// Every listener: its name and address, in the order they were added.
    pub fn listeners(&self) -> Vec<Bound> {
        self.listeners.iter().map(|l| l.bound.clone()).collect()
    }

    /// The certificate authority that signs leaves.
    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.cx.ca
    }

    /// The file of the CA certificate clients must trust: where the CA was loaded from
    /// (its directory, or a CA given to the builder that was loaded from files); `None`
    /// for a CA made in memory.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.cx.ca.cert_path()
    }

    /// A [`Sender`] of this server: requests through its hooks, routes and pool, with
    /// connection ids from the same count as its clients'. It works before, while and
    /// after the server runs; get one before [`spawn`](Self::spawn) or from the
    /// [`MitmHandle`].
    pub fn sender(&self) -> Sender {
        Sender::new(self.cx.clone(), self.settings.clone(), None)
    }

    /// Sends `request` to its origin as a client of this server would: the same as
    /// [`sender`](Self::sender)`().send(request)`.
    ///
    /// ```no_run
    /// # async fn run() -> mitm::Result<()> {
    /// let proxy = mitm::Mitm::builder().port(0).bind().await?;
    /// let request = mitm::Request::new("GET", "http://127.0.0.1:8080/health").unwrap();
    /// let response = proxy.send(request).await?;
    /// println!("{}", response.status);
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, request: Request) -> Result<Response> {
        self.sender().send(request).await
    }

    /// Serves clients until the task is dropped.
    pub async fn run(self) -> Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves clients until `shutdown` completes, then stops accepting, closes the
    /// connections idle between requests at once, and gives the exchanges and tunnels
    /// in flight the grace period to finish.
    ///
    /// A panic in one connection's task (in a hook, say) ends that connection only: it
    /// is logged at `error` and the server goes on. Accept errors (a client gone, file
    /// descriptors exhausted) are logged and retried.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Mitm {
            listeners,
            cx,
            grace,
            limit,
            max_connections,
            stop,
            block,
            ..
        } = self;
        for l in &listeners {
            cx.chain.mitm_started(l.bound.addr).await;
            tracing::info!(addr = %l.bound.addr, mode = %l.bound.name, "mitm listening");
        }

        let mut tasks = JoinSet::new();
        // Where the next round of accepts starts, so that no listener starves the
        // others.
        let mut first = 0usize;
        tokio::pin!(shutdown);
        loop {
            let accept = std::future::poll_fn(|task| {
                let n = listeners.len();
                for i in 0..n {
                    let at = (first + i) % n;
                    if let std::task::Poll::Ready(r) = listeners[at].socket.poll_accept(task) {
                        return std::task::Poll::Ready((at, r));
                    }
                }
                std::task::Poll::Pending
            });
            tokio::select! {
                () = &mut shutdown => break,
                (at, accepted) = accept => {
                    first = (at + 1) % listeners.len();
                    let serving = &listeners[at];
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            accept_failed(serving.bound.addr, e).await;
                            continue;
                        }
                    };
                    // Room for this client and for one connection to its origin.
                    let room = limit.available_permits() >= 2;
                    let permit = limit.clone().try_acquire_owned().ok().filter(|_| room);
                    let Some(permit) = permit else {
                        // Refused at once: a queue would only make every client wait.
                        tracing::warn!(client = %peer, max_connections, "too many connections, refusing one");
                        drop(stream);
                        continue;
                    };
                    let id = cx.next_id();
                    let span = tracing::info_span!("conn", id, client = %peer);
                    // The permit goes into `serve` itself: wrapping its future in another
                    // async block would store it twice (the capture and the awaited copy).
                    let job = serve(
                        serving.cx.clone(),
                        serving.protocols.clone(),
                        stream,
                        peer,
                        id,
                        permit,
                        block,
                    );
                    tasks.spawn(job.instrument(span));
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "connection task failed");
                    }
                }
            }
        }
        drop(listeners);
        tracing::info!(in_flight = tasks.len(), "mitm stopping");
        // Connections idle between requests close at once; exchanges in flight get
        // the grace period.
        let _ = stop.send(true);
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::info!(left = tasks.len(), "grace period over, closing connections");
        }
        tasks.shutdown().await;
        Ok(())
    }

    /// Runs the server on a task of its own, returning a handle that stops it.
    /// Dropping the handle stops the server too.
    pub fn spawn(self) -> MitmHandle {
        let listeners = self.listeners();
        let sender = self.sender();
        let (tx, rx) = oneshot::channel::<()>();
        let stopped = async move {
            // Either an explicit stop or the handle being dropped.
            let _ = rx.await;
        };
        let task = tokio::spawn(self.run_until(stopped));
        MitmHandle {
            listeners,
            sender,
            stop: Some(tx),
            task: Some(task),
        }
    }
}

/// Controls a server started with [`Mitm::spawn`], and knows what it is: its
/// listeners, its CA, and a [`Sender`] through it.
#[derive(Debug)]
pub struct MitmHandle {
    /// At least one.
    listeners: Vec<Bound>,
    sender: Sender,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

impl MitmHandle {
    /// The address the server listens on; with several listeners, the first's.
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners[0].addr
    }

    /// Every listener: its name and address, in the order they were added.
    pub fn listeners(&self) -> &[Bound] {
        &self.listeners
    }

    /// The certificate authority that signs leaves.
    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        self.sender.ca()
    }

    /// The path of the CA certificate file clients must trust, as
    /// [`Mitm::ca_cert_path`].
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.sender.ca().cert_path()
    }

    /// A [`Sender`] through the running server: its hooks, routes and pool.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Stops accepting, closes connections idle between requests, waits for
    /// exchanges in flight (up to the grace period) and returns once the server is
    /// down. Fails with [`Error::Stopped`] when the server's task panicked (or was
    /// cancelled), with the error it ended with if it failed.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result,
                Err(e) => Err(Error::Stopped {
                    reason: join_error(e),
                }),
            },
            None => Ok(()),
        }
    }

    /// Whether the server's task has ended (stopped, failed or panicked) without being
    /// asked to.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_some_and(JoinHandle::is_finished)
    }
}

/// What a failed task says: its panic message when it panicked.
fn join_error(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let panic = e.into_panic();
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .map_or_else(
            || "it panicked".to_string(),
            |m| format!("it panicked: {m}"),
        )
}

/// Accept errors are per connection (the peer gave up) or resource exhaustion (out of
/// file descriptors); in the latter case back off briefly rather than spin.
async fn accept_failed(addr: SocketAddr, source: std::io::Error) {
    let e = Error::Accept { addr, source };
    tracing::warn!(error = %crate::error::Report(&e), "accept failed");
    tokio::time::sleep(Duration::from_millis(20)).await;
}
