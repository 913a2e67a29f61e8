//! A bounded load test of the `mitm` command: 2000 client connections, at most
//! [`CONCURRENCY`] at a time, half plain HTTP and half HTTPS through `CONNECT`, one in
//! ten abandoned by its client at some point. Every answered request must get its own
//! answer, and afterwards the proxy's descriptors must be back where they were and its
//! memory near where it was.
//!
//! The proxy is the real binary, run as a child process, so that its descriptors and
//! memory (`/proc/PID`) are its own; origins and clients live in this process. Linux
//! only: it reads `/proc`.
#![cfg(target_os = "linux")]

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Client connections in all.
const CONNECTIONS: usize = 2000;
/// Client connections open at once, at most.
const CONCURRENCY: usize = 100;
/// One connection in this many is abandoned by its client.
const ABORT_EVERY: usize = 10;
/// How far above its baseline the proxy's resident memory may stay after the load.
const RSS_SLACK_KIB: u64 = 16 * 1024;
/// Idle upstream connections the proxy's pool keeps per origin (`src/h1/pool.rs`):
/// right after the load, these may still hold descriptors.
const POOL_PER_ORIGIN: usize = 32;

/// Samples the child's descriptors and memory while the load runs: the peaks.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak_fds: Arc<AtomicUsize>,
    peak_rss: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(proxy: &ChildProxy) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_fds = Arc::new(AtomicUsize::new(0));
        let peak_rss = Arc::new(AtomicU64::new(0));
        let (s, f, r) = (stop.clone(), peak_fds.clone(), peak_rss.clone());
        let pid = proxy.pid;
        let thread = std::thread::spawn(move || {
            let fd_dir = format!("/proc/{pid}/fd");
            let status = format!("/proc/{pid}/status");
            while !s.load(Ordering::SeqCst) {
                if let Ok(d) = std::fs::read_dir(&fd_dir) {
                    f.fetch_max(d.count(), Ordering::SeqCst);
                }
                let rss = std::fs::read_to_string(&status).ok().and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
                });
                if let Some(rss) = rss {
                    r.fetch_max(rss, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Sampler {
            stop,
            peak_fds,
            peak_rss,
            thread: Some(thread),
        }
    }

    /// Stops sampling: the peak descriptor count and the peak RSS seen (KiB).
    fn finish(mut self) -> (usize, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (
            self.peak_fds.load(Ordering::SeqCst),
            self.peak_rss.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Where a client abandons its connection.
#[derive(Debug, Clone, Copy)]
enum Abort {
    /// Right after the TCP connection is up, before sending anything.
    AfterConnect,
    /// In the middle of a request head.
    MidHead,
    /// Right after the proxy's `200` to a `CONNECT`.
    AfterConnectReply,
    /// After half of a TLS ClientHello.
    MidHello,
    /// After a whole ClientHello and the first bytes of the proxy's answer.
    MidHandshake,
    /// After the head of a large response, with its body still coming.
    MidResponse,
}

const ABORTS: [Abort; 6] = [
    Abort::AfterConnect,
    Abort::MidHead,
    Abort::AfterConnectReply,
    Abort::MidHello,
    Abort::MidHandshake,
    Abort::MidResponse,
];

/// What connection `i` does.
#[derive(Debug, Clone, Copy)]
enum Job {
    /// A plain absolute-form GET.
    Plain,
    /// A GET inside TLS through `CONNECT`.
    Https,
    Abort(Abort),
}

fn job(i: usize) -> Job {
    if i % ABORT_EVERY == ABORT_EVERY - 1 {
        Job::Abort(ABORTS[(i / ABORT_EVERY) % ABORTS.len()])
    } else if (i + i / ABORT_EVERY).is_multiple_of(2) {
        // Alternating, with the parity flipped every ten: as many of each kind.
        Job::Plain
    } else {
        Job::Https
    }
}

/// What the clients need to know.
struct Setup {
    proxy: SocketAddr,
    plain_port: u16,
    tls_port: u16,
    /// Trusts the proxy's CA only.
    tls: Arc<rustls::ClientConfig>,
}

impl Setup {
    /// A request head for connection `i`: every fourth asks to close, the others
    /// leave the connection open (and the client then just goes away).
    fn request(&self, target: &str, host: &str, i: usize) -> String {
        let close = if i.is_multiple_of(4) {
            "Connection: close\r\n"
        } else {
            ""
        };
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: load/{i}\r\n{close}\r\n")
    }

    /// The path connection `i` asks for, and the body it must get back: mostly a
    /// greeting naming the path (so answers cannot be swapped unnoticed), one in four
    /// a patterned body of 1 to 60 KB.
    fn path_and_body(i: usize) -> (String, Vec<u8>) {
        if i % 8 == 1 || i % 8 == 2 {
            let n = 1000 + (i * 997) % 60_000;
            (format!("/bytes/{n}"), pattern(n))
        } else {
            let path = format!("/load/{i}");
            let body = format!("hello from origin: GET {path}").into_bytes();
            (path, body)
        }
    }

    fn plain_host(&self) -> String {
        format!("127.0.0.1:{}", self.plain_port)
    }

    fn tls_host(&self) -> String {
        format!("localhost:{}", self.tls_port)
    }

    /// `CONNECT` to the TLS origin; the TCP stream once the proxy said 200.
    async fn connect_tunnel(&self) -> TcpStream {
        let host = self.tls_host();
        let mut wire = Wire::connect(self.proxy).await;
        wire.send(format!("CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n"))
            .await;
        let reply = wire.response_to("CONNECT").await;
        assert_eq!(reply.status, 200, "CONNECT refused: {reply:?}");
        let (tcp, rest) = wire.into_parts();
        assert!(rest.is_empty(), "bytes after the CONNECT reply: {rest:?}");
        tcp
    }

    /// A TLS stream to the TLS origin through the proxy.
    async fn tls_stream(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = self.connect_tunnel().await;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
            .await
            .expect("TLS handshake with the proxy timed out")
            .expect("TLS handshake with the proxy failed")
    }

    /// The bytes of a ClientHello for `localhost`.
    fn client_hello(&self) -> Vec<u8> {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = rustls::ClientConnection::new(self.tls.clone(), name).unwrap();
        let mut hello = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut hello).unwrap();
        }
        hello
    }

    /// Runs connection `i`; panics (caught by the task) when an answer is wrong.
    async fn run(&self, i: usize) -> Job {
        let job = job(i);
        match job {
            Job::Plain => {
                let (path, body) = Self::path_and_body(i);
                let host = self.plain_host();
                let mut wire = Wire::connect(self.proxy).await;
                wire.send(self.request(&format!("http://{host}{path}"), &host, i))
                    .await;
                check(i, &wire.response().await, &body);
            }
            Job::Https => {
                let (path, body) = Self::path_and_body(i);
                let mut wire = Wire::new(self.tls_stream().await);
                wire.send(self.request(&path, &self.tls_host(), i)).await;
                check(i, &wire.response().await, &body);
            }
            Job::Abort(Abort::AfterConnect) => {
                drop(TcpStream::connect(self.proxy).await.unwrap());
            }
            Job::Abort(Abort::MidHead) => {
                let host = self.plain_host();
                let head = self.request(&format!("http://{host}/abandoned"), &host, i);
                let mut s = TcpStream::connect(self.proxy).await.unwrap();
                s.write_all(&head.as_bytes()[..head.len() / 2])
                    .await
                    .unwrap();
            }
            Job::Abort(Abort::AfterConnectReply) => {
                drop(self.connect_tunnel().await);
            }
            Job::Abort(Abort::MidHello) => {
                let hello = self.client_hello();
                let mut tcp = self.connect_tunnel().await;
                tcp.write_all(&hello[..hello.len() / 2]).await.unwrap();
            }
            Job::Abort(Abort::MidHandshake) => {
                let hello = self.client_hello();
                let mut tcp = self.connect_tunnel().await;
                tcp.write_all(&hello).await.unwrap();
                // The proxy reached the handshake: its first bytes are here.
                let mut first = [0u8; 16];
                let n = tokio::time::timeout(PATIENCE, tcp.read(&mut first))
                    .await
                    .expect("no handshake bytes from the proxy in time")
                    .expect("reading the handshake failed");
                assert!(n > 0, "the proxy closed instead of answering a ClientHello");
            }
            Job::Abort(Abort::MidResponse) => {
                let host = self.plain_host();
                let mut wire = Wire::connect(self.proxy).await;
                let target = format!("http://{host}/bytes/{}", 8 << 20);
                wire.send(self.request(&target, &host, i)).await;
                let head = wire.response_head().await;
                assert_eq!(head.status, 200, "{head:?}");
            }
        }
        job
    }
}

#[track_caller]
fn check(i: usize, reply: &Reply, body: &[u8]) {
    assert_eq!(reply.status, 200, "connection {i}: {reply:?}");
    if reply.body != body {
        panic!(
            "connection {i}: wrong body: {:?}",
            String::from_utf8_lossy(&reply.body[..reply.body.len().min(100)])
        );
    }
}

/// How the connections went.
#[derive(Default, Debug)]
struct Tally {
    plain: usize,
    https: usize,
    aborted: usize,
    failures: Vec<String>,
}

/// Runs every connection, at most [`CONCURRENCY`] at a time.
async fn load(setup: Arc<Setup>) -> Tally {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = JoinSet::new();
    let mut tally = Tally::default();
    let record = |tally: &mut Tally, done: Result<Job, tokio::task::JoinError>| match done {
        Ok(Job::Plain) => tally.plain += 1,
        Ok(Job::Https) => tally.https += 1,
        Ok(Job::Abort(_)) => tally.aborted += 1,
        Err(e) => {
            let why = match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into()),
                Err(e) => e.to_string(),
            };
            tally.failures.push(why);
        }
    };
    for i in 0..CONNECTIONS {
        let slot = slots.clone().acquire_owned().await.unwrap();
        let setup = setup.clone();
        tasks.spawn(async move {
            let job = setup.run(i).await;
            drop(slot);
            job
        });
        while let Some(done) = tasks.try_join_next() {
            record(&mut tally, done);
        }
    }
    while let Some(done) = tasks.join_next().await {
        record(&mut tally, done);
    }
    tally
}

/// A few connections of each kind, with origins that close after answering (so no
/// upstream stays pooled): the proxy's lazy set-up (leaf, TLS configs, buffers) is
/// done before the baseline is taken.
async fn warm_up(setup: &Setup) {
    for _ in 0..10 {
        let host = setup.plain_host();
        let mut wire = Wire::connect(setup.proxy).await;
        wire.send(format!(
            "GET http://{host}/close HTTP/1.1\r\nHost: {host}\r\n\r\n"
        ))
        .await;
        assert_eq!(wire.response().await.text(), "closing");
        let mut wire = Wire::new(setup.tls_stream().await);
        let host = setup.tls_host();
        wire.send(format!("GET /close HTTP/1.1\r\nHost: {host}\r\n\r\n"))
            .await;
        assert_eq!(wire.response().await.text(), "closing");
    }
}

/// With the origins gone, one request to each: the proxy finds its pooled upstreams
/// closed and drops them all, then answers 502 (it cannot connect; for the `CONNECT`,
/// before any tunnel).
async fn drain_pool(setup: &Setup) {
    let host = setup.plain_host();
    let mut wire = Wire::connect(setup.proxy).await;
    wire.send(format!(
        "GET http://{host}/drain HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    let reply = wire.response().await;
    assert_eq!(reply.status, 502, "{reply:?}");
    let host = setup.tls_host();
    let mut wire = Wire::connect(setup.proxy).await;
    wire.send(format!("CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n"))
        .await;
    let reply = wire.response_to("CONNECT").await;
    assert_eq!(reply.status, 502, "{reply:?}");
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[test]
fn two_thousand_connections_with_aborts_lose_nothing_and_leak_nothing() {
    let started = Instant::now();
    // Origins on a runtime of their own, so that they can be stopped all at once
    // (every connection closed) at the end; clients on another.
    let origin_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (plain, tls) =
        origin_rt.block_on(async { (start_origin().await, start_tls_origin().await) });

    let proxy = ChildProxy::start();
    let ca =
        mitm::CertificateAuthority::load(&proxy.ca_pem, proxy.ca_pem.with_file_name("mitm.key"))
            .expect("the proxy's CA");
    let setup = Arc::new(Setup {
        proxy: proxy.addr,
        plain_port: plain.port(),
        tls_port: tls.port(),
        tls: Arc::new(tls_client_config(&ca)),
    });
    let (fresh_fds, fresh_rss) = (proxy.fds(), proxy.rss_kib());

    client_rt.block_on(warm_up(&setup));
    // The warm-up's connections are all closed (nothing pooled): back to the start.
    let base_fds = proxy.fds_down_to(fresh_fds, "after the warm-up");
    let base_rss = proxy.rss_kib();

    let sampler = Sampler::start(&proxy);
    let load_started = Instant::now();
    let tally = client_rt.block_on(load(setup.clone()));
    let load_time = load_started.elapsed();

    // Every client connection closes; only idle upstreams may stay, in the pool.
    let pooled_bound = base_fds + 2 * POOL_PER_ORIGIN;
    let after_load_fds = proxy.fds_down_to(pooled_bound, "after the load");

    // The origins go away, closing every connection; the pool then empties.
    drop((plain, tls));
    origin_rt.shutdown_timeout(PATIENCE);
    client_rt.block_on(drain_pool(&setup));
    let after_fds = proxy.fds_down_to(base_fds, "after draining the pool");
    let after_rss = proxy.rss_kib();
    let (peak_fds, peak_rss) = sampler.finish();
    let hwm = proxy.status_kib("VmHWM");
    let stderr = proxy.stderr.lock().unwrap().clone();

    let expected_aborts = CONNECTIONS / ABORT_EVERY;
    eprintln!(
        "load: {} connections ({} plain, {} https, {} aborted, {} failed) at most {} at a \
         time in {:.2?} ({:.0} conn/s), test {:.2?}; proxy fds fresh {} / baseline {} / peak {} / \
         after load {} / after drain {}; RSS MiB fresh {:.1} / baseline {:.1} / peak {:.1} \
         (VmHWM {:.1}) / after {:.1}; {} stderr lines",
        CONNECTIONS,
        tally.plain,
        tally.https,
        tally.aborted,
        tally.failures.len(),
        CONCURRENCY,
        load_time,
        CONNECTIONS as f64 / load_time.as_secs_f64(),
        started.elapsed(),
        fresh_fds,
        base_fds,
        peak_fds,
        after_load_fds,
        after_fds,
        mib(fresh_rss),
        mib(base_rss),
        mib(peak_rss),
        mib(hwm),
        mib(after_rss),
        stderr.len(),
    );

    assert!(
        tally.failures.is_empty(),
        "{} of {} connections failed; first ones: {:#?}",
        tally.failures.len(),
        CONNECTIONS,
        &tally.failures[..tally.failures.len().min(5)]
    );
    assert_eq!(tally.aborted, expected_aborts);
    assert_eq!(tally.plain + tally.https, CONNECTIONS - expected_aborts);
    assert!(
        stderr.iter().all(|l| !l.contains("panicked")),
        "the proxy panicked: {stderr:#?}"
    );
    let mut child = proxy;
    assert!(
        child.child.try_wait().unwrap().is_none(),
        "the proxy exited during the test"
    );
    assert!(
        after_rss <= base_rss + RSS_SLACK_KIB,
        "the proxy's RSS stayed at {:.1} MiB after the load, from {:.1} MiB before",
        mib(after_rss),
        mib(base_rss)
    );
}
