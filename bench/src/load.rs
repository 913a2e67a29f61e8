//! Load patterns: keep-alive request loops, a new connection per request, bulk
//! downloads, sequential handshakes, and idle connections. Each is bounded in time (a
//! measuring window, or a cap) and in count, and returns one [`Sample`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::client::{Conn, Endpoint, Histogram, IO_TIMEOUT};
use crate::proxy::Proxy;

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;
/// Pause after a failed attempt, so that a broken path does not spin.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Connections being opened at once in [`idle`] ...
const IDLE_PARALLEL: usize = 32;
/// ... and opened before waiting for the proxy to accept them.
const IDLE_BATCH: usize = 64;

/// What a sample's rate counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Requests (or connections) per second; proxy CPU per 1000 of them.
    Requests,
    /// MiB per second of body; proxy CPU per GiB.
    Bytes,
}

/// One measurement of one path (direct or through the proxy).
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Requests/s or MiB/s (see [`Unit`]).
    pub rate: f64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub mean: Option<Duration>,
    /// Mean without the fastest and slowest 10 % (sequential loads only): steadier
    /// than the mean when a few connections hit a scheduling hiccup.
    pub trimmed_mean: Option<Duration>,
    /// Requests completed in the window.
    pub count: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Proxy CPU time per 1000 requests or per GiB; only through the proxy.
    pub proxy_cpu: Option<Duration>,
    /// The proxy's peak RSS over its life (it is started per measurement).
    pub proxy_peak_rss: Option<u64>,
}

/// The measuring window: requests before `start` warm up and are not counted; none
/// starts after `end`.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn after(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now() + warmup;
        Window {
            start,
            end: start + duration,
        }
    }

    fn counts(&self, began: Instant) -> bool {
        began >= self.start && began < self.end
    }
}

/// What one worker saw.
#[derive(Debug, Default)]
struct Tally {
    hist: Histogram,
    count: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, latency: Duration) {
        self.hist.record(latency);
        self.count += 1;
    }

    fn error(&mut self, e: anyhow::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{e:#}"));
    }

    fn merge(&mut self, other: Tally) {
        self.hist.merge(&other.hist);
        self.count += other.count;
        self.bytes += other.bytes;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn into_sample(self, rate: f64, proxy: Option<&Proxy>, cpu: Option<Duration>) -> Sample {
        Sample {
            rate,
            p50: self.hist.quantile(0.50),
            p99: self.hist.quantile(0.99),
            mean: self.hist.mean(),
            trimmed_mean: None,
            count: self.count,
            errors: self.errors,
            first_error: self.first_error,
            proxy_cpu: cpu,
            proxy_peak_rss: proxy.and_then(Proxy::peak_rss),
        }
    }
}

/// `conns` keep-alive connections, each sending `GET path` and waiting for the whole
/// response before the next (no pipelining), for the window.
pub async fn keep_alive(
    endpoint: &Endpoint,
    conns: usize,
    window: (Duration, Duration),
    proxy: Option<&Proxy>,
) -> Result<Sample> {
    let mut opened = Vec::with_capacity(conns);
    for _ in 0..conns {
        opened.push(endpoint.open().await.context("opening a connection")?);
    }
    let window = Window::after(window.0, window.1);
    let request: Arc<[u8]> = endpoint.request("/1k").into();
    let mut workers = JoinSet::new();
    for conn in opened {
        let (endpoint, request) = (endpoint.clone(), request.clone());
        workers.spawn(keep_alive_worker(conn, endpoint, request, window));
    }
    Ok(measure(window, proxy, workers, Unit::Requests).await)
}

async fn keep_alive_worker(
    conn: Conn,
    endpoint: Endpoint,
    request: Arc<[u8]>,
    window: Window,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn = Some(conn);
    loop {
        let began = Instant::now();
        if began >= window.end {
            return tally;
        }
        if conn.is_none() {
            match endpoint.open().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tally.error(e.context("reconnecting"));
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match c.get(&request).await {
            Ok(_) if window.counts(began) => tally.record(began.elapsed()),
            Ok(_) => {}
            Err(e) => {
                tally.error(e);
                conn = None;
            }
        }
    }
}

/// `parallel` loops, each making a new connection (with `CONNECT` and a TLS handshake
/// as `endpoint` says) for every request, for the window. Latency is the whole thing.
pub async fn new_connections(
    endpoint: &Endpoint,
    parallel: usize,
    window: (Duration, Duration),
    proxy: Option<&Proxy>,
) -> Result<Sample> {
    let window = Window::after(window.0, window.1);
    let request: Arc<[u8]> = endpoint.request("/1k").into();
    let mut workers = JoinSet::new();
    for _ in 0..parallel {
        let (endpoint, request) = (endpoint.clone(), request.clone());
        workers.spawn(async move {
            let mut tally = Tally::default();
            loop {
                let began = Instant::now();
                if began >= window.end {
                    return tally;
                }
                match one_shot(&endpoint, &request).await {
                    Ok(()) if window.counts(began) => tally.record(began.elapsed()),
                    Ok(()) => {}
                    Err(e) => {
                        tally.error(e);
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
        });
    }
    Ok(measure(window, proxy, workers, Unit::Requests).await)
}

/// Connects, makes one request, and closes.
async fn one_shot(endpoint: &Endpoint, request: &[u8]) -> Result<()> {
    let mut conn = endpoint.open().await?;
    conn.get(request).await?;
    Ok(())
}

/// One connection downloading `/big` again and again for the window; the rate counts
/// the body bytes received inside the window. A download still going at the end is cut
/// off there.
pub async fn bulk(
    endpoint: &Endpoint,
    window: (Duration, Duration),
    proxy: Option<&Proxy>,
) -> Result<Sample> {
    let mut conn = endpoint.open().await.context("opening a connection")?;
    let window = Window::after(window.0, window.1);
    let request = endpoint.request("/big");
    let endpoint = endpoint.clone();
    let mut workers = JoinSet::new();
    workers.spawn(async move {
        let mut tally = Tally::default();
        loop {
            let began = Instant::now();
            if began >= window.end {
                return tally;
            }
            match download(&mut conn, &request, window, &mut tally.bytes).await {
                Ok(true) if window.counts(began) => tally.record(began.elapsed()),
                Ok(true) => {}
                Ok(false) => return tally,
                Err(e) => {
                    tally.error(e);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    match endpoint.open().await {
                        Ok(c) => conn = c,
                        Err(e) => tally.error(e.context("reconnecting")),
                    }
                }
            }
        }
    });
    Ok(measure(window, proxy, workers, Unit::Bytes).await)
}

/// One download; adds the bytes that arrive inside the window to `counted`. False when
/// cut off at the window's end.
async fn download(
    conn: &mut Conn,
    request: &[u8],
    window: Window,
    counted: &mut u64,
) -> Result<bool> {
    conn.send(request).await?;
    let len = conn.read_ok_head().await?;
    conn.read_body(len, |n| {
        let now = Instant::now();
        if window.counts(now) {
            *counted += n as u64;
        }
        now < window.end
    })
    .await
}

/// One connection after another, each to its endpoint, with one request: the
/// handshake cost of each. Bounded by the count and by `cap`.
pub async fn sequential(
    endpoints: &[Endpoint],
    path: &str,
    cap: Duration,
    proxy: Option<&Proxy>,
) -> Sample {
    let cpu_before = proxy.and_then(Proxy::cpu);
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut latencies = Vec::with_capacity(endpoints.len());
    for (i, endpoint) in endpoints.iter().enumerate() {
        if start.elapsed() > cap {
            let left = endpoints.len() - i;
            tally.error(anyhow!(
                "stopped after {cap:?} with {left} connections to go"
            ));
            break;
        }
        let began = Instant::now();
        match one_shot(endpoint, &endpoint.request(path)).await {
            Ok(()) => {
                let latency = began.elapsed();
                tally.record(latency);
                latencies.push(latency);
            }
            Err(e) => tally.error(e),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_per(
        cpu_before,
        proxy.and_then(Proxy::cpu),
        tally.count as f64 / 1000.0,
    );
    let rate = tally.count as f64 / elapsed;
    Sample {
        trimmed_mean: trimmed_mean(latencies),
        ..tally.into_sample(rate, proxy, cpu)
    }
}

/// The mean of the middle 80 % of `values`.
fn trimmed_mean(mut values: Vec<Duration>) -> Option<Duration> {
    values.sort_unstable();
    let cut = values.len() / 10;
    let middle = values.get(cut..values.len() - cut)?;
    let n = u32::try_from(middle.len()).ok().filter(|&n| n > 0)?;
    Some(middle.iter().sum::<Duration>() / n)
}

/// Idle connections held open to the proxy and what they cost it.
#[derive(Clone, Debug, Default)]
pub struct IdleSample {
    /// Connections the proxy had accepted when its RSS was read.
    pub count: usize,
    pub rss_before: u64,
    pub rss_after: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Opens `count` connections to the proxy that send nothing, waits until the proxy has
/// accepted them all (its open file descriptors say so), and reads its RSS before and
/// after.
pub async fn idle(proxy: &Proxy, count: usize) -> Result<IdleSample> {
    const CAP: Duration = Duration::from_secs(30);
    // Let the fresh proxy settle before the baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = proxy.rss().context("cannot read the proxy's RSS")?;
    let fds_before = proxy.open_fds().context("cannot count the proxy's fds")?;
    let started = Instant::now();
    let mut sample = IdleSample {
        rss_before,
        ..IdleSample::default()
    };
    let held = open_idle(proxy, count, started + CAP, fds_before, &mut sample).await;
    let want = fds_before + held.len() * proxy.fds_per_client();
    wait_for_fds(proxy, want, started + CAP).await;
    let accepted = |fds: usize| fds.saturating_sub(fds_before) / proxy.fds_per_client();
    // Accepted connections' tasks run their first read; give them a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sample.rss_after = proxy.rss().context("cannot read the proxy's RSS")?;
    sample.count = accepted(proxy.open_fds().unwrap_or(fds_before)).min(held.len());
    drop(held);
    Ok(sample)
}

/// Opens up to `count` connections to the proxy, [`IDLE_PARALLEL`] at a time, until
/// `deadline` or the first failure (which goes in `sample`). Every [`IDLE_BATCH`]
/// connections it waits for the proxy to accept them (`fds_before` is its baseline):
/// a burst larger than its listen backlog would otherwise have SYNs dropped and
/// retried a second later, which only slows the run down.
async fn open_idle(
    proxy: &Proxy,
    count: usize,
    deadline: Instant,
    fds_before: usize,
    sample: &mut IdleSample,
) -> Vec<TcpStream> {
    let addr = proxy.addr();
    let mut held = Vec::with_capacity(count);
    let mut pending = JoinSet::new();
    let (mut launched, mut failed) = (0, false);
    loop {
        while !failed && launched < count && pending.len() < IDLE_PARALLEL {
            if Instant::now() >= deadline {
                break;
            }
            if launched % IDLE_BATCH == 0 && launched > 0 {
                let want = fds_before + launched * proxy.fds_per_client();
                wait_for_fds(proxy, want, deadline).await;
            }
            pending.spawn(tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr)));
            launched += 1;
        }
        let Some(done) = pending.join_next().await else {
            return held;
        };
        let error = match done {
            Ok(Ok(Ok(stream))) => {
                held.push(stream);
                continue;
            }
            Ok(Ok(Err(e))) => format!("connect: {e}"),
            Ok(Err(_)) => "connect timed out".to_owned(),
            Err(e) => format!("connect task: {e}"),
        };
        failed = true;
        sample.errors += 1;
        sample.first_error.get_or_insert(error);
    }
}

/// Waits until the proxy has at least `want` open descriptors, or `deadline`, or a
/// second without a new one (the proxy refused some).
async fn wait_for_fds(proxy: &Proxy, want: usize, deadline: Instant) {
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let fds = proxy.open_fds().unwrap_or(0);
        if fds >= want || Instant::now() >= deadline {
            return;
        }
        if fds != last {
            (last, since) = (fds, Instant::now());
        } else if since.elapsed() > Duration::from_secs(1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits for the workers (at most [`IO_TIMEOUT`] past the window, then they are
/// aborted and counted as failures), sampling the proxy's CPU time at the window's
/// edges.
async fn measure(
    window: Window,
    proxy: Option<&Proxy>,
    mut workers: JoinSet<Tally>,
    unit: Unit,
) -> Sample {
    tokio::time::sleep_until(window.start.into()).await;
    let cpu_before = proxy.and_then(Proxy::cpu);
    tokio::time::sleep_until(window.end.into()).await;
    let cpu_after = proxy.and_then(Proxy::cpu);

    let mut tally = Tally::default();
    let give_up = window.end + IO_TIMEOUT + Duration::from_secs(1);
    loop {
        match tokio::time::timeout_at(give_up.into(), workers.join_next()).await {
            Ok(Some(Ok(t))) => tally.merge(t),
            Ok(Some(Err(e))) => tally.error(anyhow!("worker failed: {e}")),
            Ok(None) => break,
            Err(_) => {
                let stuck = workers.len();
                workers.abort_all();
                tally.error(anyhow!("{stuck} workers stuck past the window; aborted"));
                break;
            }
        }
    }
    let secs = (window.end - window.start).as_secs_f64();
    let (rate, units) = match unit {
        Unit::Requests => (tally.count as f64 / secs, tally.count as f64 / 1000.0),
        Unit::Bytes => (tally.bytes as f64 / MIB / secs, tally.bytes as f64 / GIB),
    };
    let cpu = cpu_per(cpu_before, cpu_after, units);
    tally.into_sample(rate, proxy, cpu)
}

/// CPU time between two readings, per `units`.
fn cpu_per(before: Option<Duration>, after: Option<Duration>, units: f64) -> Option<Duration> {
    let used = after?.checked_sub(before?)?;
    (units > 0.0).then(|| used.div_f64(units))
}
