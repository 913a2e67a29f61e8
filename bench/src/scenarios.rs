//! The scenarios: what each one runs directly and through the proxy, repeated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::ValueEnum;
use rustls::ClientConfig;

use crate::client::Endpoint;
use crate::load::{self, IdleSample, Sample, Unit};
use crate::origin::Origin;
use crate::proxy::{Launcher, Mode, Proxy};

/// Keep-alive connections of the `*-ka` scenarios.
const KA_CONNECTIONS: usize = 32;
/// Connections at a time in `https-newconn`.
const NEWCONN_PARALLEL: usize = 2;
/// The TLS name of the keep-alive, new-connection and bulk scenarios.
pub const NAME: &str = "name.localhost";

/// A benchmark scenario, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// HTTP, 1 KiB responses, 32 keep-alive connections.
    HttpKa,
    /// HTTPS (CONNECT + interception), 1 KiB, 32 keep-alive connections.
    HttpsKa,
    /// HTTP, 1 KiB, 32 keep-alive connections, through the proxy in upstream mode
    /// chained to a second, regular mitm.
    UpstreamKa,
    /// HTTP, 1 KiB, 32 keep-alive connections, through the proxy in SOCKS5 mode (the
    /// client's own handshake, then origin-form requests).
    Socks5Ka,
    /// HTTPS, a new connection (CONNECT + TLS handshake) per request, 2 at a time.
    HttpsNewconn,
    /// As `https-newconn`, the client resuming its TLS session on every connection after
    /// its first (as browsers do), with an origin that resumes too.
    HttpsResume,
    /// HTTP, large downloads on one connection.
    HttpBulk,
    /// HTTPS, large downloads on one connection.
    HttpsBulk,
    /// Handshakes to many new host names vs one cached name.
    HostsCold,
    /// Idle connections held open to the proxy: its memory per connection.
    Idle,
    /// As `http-ka`, through a proxy given three `--modify-headers` rules, each run
    /// paired with a plain proxy's (a note gives the two).
    HttpKaModify,
}

/// The rules of `http-ka-modify`: three, as a user might set them (a request header
/// set, one removed, a response header set), without filters.
pub const MODIFY_RULES: [&str; 3] = ["/X-Bench/1", "/Accept-Encoding/", "/X-Served-By/mitm"];

impl Scenario {
    pub const ALL: [Scenario; 11] = [
        Scenario::HttpKa,
        Scenario::HttpsKa,
        Scenario::UpstreamKa,
        Scenario::Socks5Ka,
        Scenario::HttpsNewconn,
        Scenario::HttpsResume,
        Scenario::HttpBulk,
        Scenario::HttpsBulk,
        Scenario::HostsCold,
        Scenario::Idle,
        Scenario::HttpKaModify,
    ];

    /// The load, in a few words (the tables of `--proxy-cmd`).
    pub fn load(self) -> &'static str {
        match self {
            Scenario::HttpKa => "HTTP, 1 KiB responses on 32 keep-alive connections",
            Scenario::HttpsKa => {
                "HTTPS (CONNECT, intercepted), 1 KiB responses on 32 keep-alive connections"
            }
            Scenario::UpstreamKa => "as http-ka, through two proxies",
            Scenario::Socks5Ka => "as http-ka, through a SOCKS5 proxy",
            Scenario::HttpsNewconn => {
                "HTTPS, a new connection and full handshake per request, 2 at a time"
            }
            Scenario::HttpsResume => "as https-newconn, the client resuming its TLS sessions",
            Scenario::HttpBulk => "HTTP, large downloads on one keep-alive connection",
            Scenario::HttpsBulk => {
                "HTTPS (intercepted), large downloads on one keep-alive connection"
            }
            Scenario::HostsCold => "handshakes to new host names",
            Scenario::Idle => "idle connections",
            Scenario::HttpKaModify => "as http-ka, with 3 --modify-headers rules",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::HttpKa => "http-ka",
            Scenario::HttpsKa => "https-ka",
            Scenario::UpstreamKa => "upstream-ka",
            Scenario::Socks5Ka => "socks5-ka",
            Scenario::HttpsNewconn => "https-newconn",
            Scenario::HttpsResume => "https-resume",
            Scenario::HttpBulk => "http-bulk",
            Scenario::HttpsBulk => "https-bulk",
            Scenario::HostsCold => "hosts-cold",
            Scenario::Idle => "idle",
            Scenario::HttpKaModify => "http-ka-modify",
        }
    }
}

/// Sizes and times of a run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Measuring window of each measurement.
    pub duration: Duration,
    /// Uncounted traffic before each window.
    pub warmup: Duration,
    pub repeat: u32,
    /// Distinct names in `hosts-cold` (and connections to the cached name).
    pub hosts: usize,
    /// Connections held in `idle`.
    pub idle: usize,
    /// Size of `/big`.
    pub bulk_bytes: u64,
}

impl Plan {
    fn window(&self) -> (Duration, Duration) {
        (self.warmup, self.duration)
    }

    /// The names of `hosts-cold`'s run `run`: new ones for every run, so that no run
    /// finds them cached even if the proxy's CA outlives it (in-process).
    pub fn host_names(&self, run: u32) -> impl Iterator<Item = String> {
        let first = run as usize * self.hosts;
        (first..first + self.hosts).map(|i| format!("h{i}.localhost"))
    }
}

/// Everything the scenarios share.
pub struct Bench {
    pub plan: Plan,
    pub origin: Origin,
    pub launcher: Launcher,
    /// Trusts the origin's CA (direct HTTPS).
    pub to_origin: Arc<ClientConfig>,
    /// Trusts the proxy's CA (HTTPS through the proxy).
    pub to_proxy: Arc<ClientConfig>,
    /// Things worth a look, printed after the table.
    pub notes: Vec<String>,
    started: Instant,
}

/// The results of one scenario, every repeat.
#[derive(Debug)]
pub enum Outcome {
    /// The same load direct and through the proxy.
    Compare {
        unit: Unit,
        direct: Vec<Sample>,
        mitm: Vec<Sample>,
        /// Through the upstream mitm alone, for the two-hop scenario (else empty): the
        /// report tells the second hop's cost from it.
        alone: Vec<Sample>,
    },
    /// Through the proxy: one cached name vs new names.
    HostsCold {
        cached: Vec<Sample>,
        cold: Vec<Sample>,
    },
    Idle(Vec<IdleSample>),
}

/// Which way a load goes.
#[derive(Clone, Copy)]
pub enum Via<'a> {
    Direct,
    Mitm(&'a Proxy),
}

impl Bench {
    pub fn new(
        plan: Plan,
        origin: Origin,
        launcher: Launcher,
        to_origin: Arc<ClientConfig>,
        to_proxy: Arc<ClientConfig>,
    ) -> Self {
        Bench {
            plan,
            origin,
            launcher,
            to_origin,
            to_proxy,
            notes: Vec::new(),
            started: Instant::now(),
        }
    }

    pub async fn run(&mut self, scenario: Scenario) -> Result<Outcome> {
        match scenario {
            Scenario::HostsCold => self.hosts_cold().await,
            Scenario::Idle => self.idle().await,
            Scenario::UpstreamKa => self.upstream_ka().await,
            Scenario::HttpKaModify => self.http_ka_modify().await,
            _ => self.compare(scenario).await,
        }
    }

    /// Direct, then through a fresh proxy, `repeat` times (interleaved, so that drift
    /// in the machine's speed hits both alike).
    async fn compare(&mut self, scenario: Scenario) -> Result<Outcome> {
        let unit = match scenario {
            Scenario::HttpBulk | Scenario::HttpsBulk => Unit::Bytes,
            _ => Unit::Requests,
        };
        let mode = match scenario {
            Scenario::Socks5Ka => Mode::Socks5,
            _ => Mode::Regular,
        };
        let (mut direct, mut mitm) = (Vec::new(), Vec::new());
        for run in 1..=self.plan.repeat {
            let d = self.load(scenario, Via::Direct).await?;
            let proxy = self.launcher.start(mode).await?;
            let m = self.load(scenario, Via::Mitm(&proxy)).await;
            self.stopped(scenario, run, "the proxy", proxy).await;
            let m = m?;
            self.progress(
                scenario,
                run,
                &format!("direct {} | mitm {}", brief(&d, unit), brief(&m, unit)),
            );
            self.note_errors(scenario, run, "direct", &d);
            self.note_errors(scenario, run, "mitm", &m);
            direct.push(d);
            mitm.push(m);
        }
        Ok(Outcome::Compare {
            unit,
            direct,
            mitm,
            alone: Vec::new(),
        })
    }

    /// As [`compare`](Self::compare), the proxy under test in upstream mode sending
    /// everything through a second mitm (regular mode, started alike): client → mitm →
    /// upstream mitm (absolute form) → origin. Each run also measures the upstream mitm
    /// alone (client → upstream mitm → origin), which a note sets beside the chain, so
    /// that what the second hop costs can be told from what one proxy costs. The table's
    /// CPU and RSS are the proxy under test's alone.
    async fn upstream_ka(&mut self) -> Result<Outcome> {
        let scenario = Scenario::UpstreamKa;
        let unit = Unit::Requests;
        let (mut direct, mut alone, mut mitm) = (Vec::new(), Vec::new(), Vec::new());
        for run in 1..=self.plan.repeat {
            let d = self.load(scenario, Via::Direct).await?;
            let upstream = self.launcher.start_upstream().await?;
            let a = self.load(scenario, Via::Mitm(&upstream)).await;
            self.stopped(scenario, run, "the upstream mitm (alone)", upstream)
                .await;
            let a = a?;
            let upstream = self.launcher.start_upstream().await?;
            let proxy = match self.launcher.start(Mode::Upstream(upstream.addr())).await {
                Ok(proxy) => proxy,
                Err(e) => {
                    self.stopped(scenario, run, "the upstream mitm", upstream)
                        .await;
                    return Err(e);
                }
            };
            let m = self.load(scenario, Via::Mitm(&proxy)).await;
            self.stopped(scenario, run, "the proxy", proxy).await;
            self.stopped(scenario, run, "the upstream mitm", upstream)
                .await;
            let m = m?;
            self.progress(
                scenario,
                run,
                &format!(
                    "direct {} | upstream mitm alone {} | mitm via upstream {}",
                    brief(&d, unit),
                    brief(&a, unit),
                    brief(&m, unit)
                ),
            );
            self.note_errors(scenario, run, "direct", &d);
            self.note_errors(scenario, run, "upstream mitm alone", &a);
            self.note_errors(scenario, run, "mitm", &m);
            direct.push(d);
            alone.push(a);
            mitm.push(m);
        }
        Ok(Outcome::Compare {
            unit,
            direct,
            mitm,
            alone,
        })
    }

    /// As [`compare`](Self::compare) for `http-ka`, the proxy under test given
    /// [`MODIFY_RULES`] as `--modify-headers`; each run also measures a plain proxy
    /// right before it, and a note sets the two medians side by side (what the rules
    /// cost, paired in time). The table's row is the proxy with the rules.
    async fn http_ka_modify(&mut self) -> Result<Outcome> {
        let scenario = Scenario::HttpKaModify;
        let unit = Unit::Requests;
        let args: Vec<String> = MODIFY_RULES
            .iter()
            .flat_map(|r| ["--modify-headers".to_owned(), (*r).to_owned()])
            .collect();
        let (mut direct, mut plain, mut mitm) = (Vec::new(), Vec::new(), Vec::new());
        for run in 1..=self.plan.repeat {
            let d = self.load(scenario, Via::Direct).await?;
            let proxy = self.launcher.start(Mode::Regular).await?;
            let p = self.load(scenario, Via::Mitm(&proxy)).await;
            self.stopped(scenario, run, "the plain proxy", proxy).await;
            let p = p?;
            let proxy = self.launcher.start_child_with(args.clone()).await?;
            let m = self.load(scenario, Via::Mitm(&proxy)).await;
            self.stopped(scenario, run, "the proxy with the rules", proxy)
                .await;
            let m = m?;
            self.progress(
                scenario,
                run,
                &format!(
                    "direct {} | mitm {} | mitm with 3 modify_headers rules {}",
                    brief(&d, unit),
                    brief(&p, unit),
                    brief(&m, unit)
                ),
            );
            self.note_errors(scenario, run, "direct", &d);
            self.note_errors(scenario, run, "plain mitm", &p);
            self.note_errors(scenario, run, "mitm with rules", &m);
            direct.push(d);
            plain.push(p);
            mitm.push(m);
        }
        let median = |samples: &[Sample]| {
            let mut rates: Vec<f64> = samples.iter().map(|s| s.rate).collect();
            rates.sort_by(f64::total_cmp);
            rates[rates.len() / 2]
        };
        let (p, m) = (median(&plain), median(&mitm));
        let cpu = |samples: &[Sample]| {
            let mut ms: Vec<f64> = samples
                .iter()
                .filter_map(|s| s.proxy_cpu)
                .map(|d| d.as_secs_f64() * 1000.0)
                .collect();
            ms.sort_by(f64::total_cmp);
            ms.get(ms.len() / 2).copied()
        };
        let cpu = match (cpu(&plain), cpu(&mitm)) {
            (Some(p), Some(m)) => {
                format!(
                    "; proxy CPU {p:.2} → {m:.2} ms /1k ({:+.1} %)",
                    (m / p - 1.0) * 100.0
                )
            }
            _ => String::new(),
        };
        self.notes.push(format!(
            "{}: plain mitm {p:.0} req/s, with 3 modify_headers rules {m:.0} req/s \
             ({:+.1} %){cpu}, medians of {} paired runs",
            scenario.name(),
            (m / p - 1.0) * 100.0,
            plain.len()
        ));
        Ok(Outcome::Compare {
            unit,
            direct,
            mitm,
            alone: Vec::new(),
        })
    }

    /// One measurement of `scenario` along `path` (any proxy: `--proxy-cmd` runs its
    /// commands' through this too).
    pub async fn load(&self, scenario: Scenario, path: Via<'_>) -> Result<Sample> {
        let tls = matches!(
            scenario,
            Scenario::HttpsKa
                | Scenario::HttpsNewconn
                | Scenario::HttpsResume
                | Scenario::HttpsBulk
        );
        let endpoint = match (scenario, path) {
            (Scenario::Socks5Ka, Via::Mitm(p)) => {
                Endpoint::socks5_proxy(p.addr(), self.origin.plain)
            }
            (Scenario::HttpsResume, path) => self.resuming_endpoint(path)?,
            _ => self.endpoint(tls, path, NAME)?,
        };
        let proxy = match path {
            Via::Direct => None,
            Via::Mitm(p) => Some(p),
        };
        let window = self.plan.window();
        match scenario {
            Scenario::HttpKa
            | Scenario::HttpsKa
            | Scenario::UpstreamKa
            | Scenario::Socks5Ka
            | Scenario::HttpKaModify => {
                load::keep_alive(&endpoint, KA_CONNECTIONS, window, proxy).await
            }
            Scenario::HttpsNewconn | Scenario::HttpsResume => {
                load::new_connections(&endpoint, NEWCONN_PARALLEL, window, proxy).await
            }
            _ => load::bulk(&endpoint, window, proxy).await,
        }
    }

    /// `https-resume`'s endpoint: the resuming origin, with a client session store made
    /// for this load alone (the proxy of each run is new: no session of an earlier
    /// one would resume).
    fn resuming_endpoint(&self, path: Via<'_>) -> Result<Endpoint> {
        let origin = self.origin.tls_resuming;
        Ok(match path {
            Via::Direct => {
                Endpoint::tls_direct(origin, NAME, crate::client::resuming(&self.to_origin))?
            }
            Via::Mitm(p) => Endpoint::tls_proxy(
                p.addr(),
                NAME,
                origin.port(),
                crate::client::resuming(&self.to_proxy),
            )?,
        })
    }

    fn endpoint(&self, tls: bool, path: Via<'_>, name: &str) -> Result<Endpoint> {
        let origin = &self.origin;
        Ok(match (tls, path) {
            (false, Via::Direct) => Endpoint::plain_direct(origin.plain),
            (false, Via::Mitm(p)) => Endpoint::plain_proxy(p.addr(), origin.plain),
            (true, Via::Direct) => Endpoint::tls_direct(origin.tls, name, self.to_origin.clone())?,
            (true, Via::Mitm(p)) => {
                Endpoint::tls_proxy(p.addr(), name, origin.tls.port(), self.to_proxy.clone())?
            }
        })
    }

    /// Per run: one proxy; `hosts` connections to one name whose leaf is cached, then
    /// `hosts` connections to new names. Every handshake is a full one (no resumption),
    /// and every request gets a new upstream connection (the origin closes each): the
    /// difference is what a new host costs on the path, its leaf above all.
    async fn hosts_cold(&mut self) -> Result<Outcome> {
        let scenario = Scenario::HostsCold;
        let cap = Duration::from_secs(60) + self.plan.duration * 6;
        let (mut cached, mut cold) = (Vec::new(), Vec::new());
        let hosts = self.plan.hosts;
        let leaf = tokio::task::spawn_blocking(move || leaf_cost(hosts)).await??;
        self.note(
            scenario,
            1,
            format!(
                "issuing a leaf alone (CertificateAuthority::server_config for a new name, \
             measured in the bench process) costs {leaf:.3} ms/host"
            ),
        );
        for run in 1..=self.plan.repeat {
            let proxy = self.launcher.start(Mode::Regular).await?;
            let result = self.hosts_run(run, &proxy, cap).await;
            // In-process, the count would include the bench's own descriptors.
            if let (true, Some(fds)) = (self.launcher.is_child(), proxy.open_fds()) {
                self.note(
                    scenario,
                    run,
                    format!(
                        "the proxy had {fds} open file descriptors after connecting to {} hosts \
                     (idle upstream connections it keeps)",
                        self.plan.hosts + 1
                    ),
                );
            }
            self.stopped(scenario, run, "the proxy", proxy).await;
            let (c, n) = result?;
            let extra = extra_per_host(&c, &n);
            self.progress(
                scenario,
                run,
                &format!(
                    "cached {:.0} conn/s | cold {:.0} conn/s | extra {}",
                    c.rate,
                    n.rate,
                    extra.map_or("?".into(), |e| format!("{e:.3} ms/host"))
                ),
            );
            self.note_errors(scenario, run, "cached", &c);
            self.note_errors(scenario, run, "cold", &n);
            cached.push(c);
            cold.push(n);
        }
        Ok(Outcome::HostsCold { cached, cold })
    }

    async fn hosts_run(&self, run: u32, proxy: &Proxy, cap: Duration) -> Result<(Sample, Sample)> {
        // The origin closes after each answer: both passes then pay for a new upstream
        // connection per request, and differ only by the leaf a new name needs.
        let path = crate::origin::CLOSING_PATH;
        let one = self.endpoint(true, Via::Mitm(proxy), NAME)?;
        // Warm the cached name's leaf, so the cached pass never issues one.
        load::sequential(std::slice::from_ref(&one), path, cap, None).await;
        let same = vec![one; self.plan.hosts];
        let cached = load::sequential(&same, path, cap, Some(proxy)).await;
        let names: Vec<Endpoint> = self
            .plan
            .host_names(run - 1)
            .map(|name| self.endpoint(true, Via::Mitm(proxy), &name))
            .collect::<Result<_>>()?;
        let cold = load::sequential(&names, path, cap, Some(proxy)).await;
        Ok((cached, cold))
    }

    async fn idle(&mut self) -> Result<Outcome> {
        let scenario = Scenario::Idle;
        let mut samples = Vec::new();
        for run in 1..=self.plan.repeat {
            let proxy = self.launcher.start(Mode::Regular).await?;
            let sample = load::idle(&proxy, self.plan.idle).await;
            self.stopped(scenario, run, "the proxy", proxy).await;
            let sample = sample?;
            if sample.count < self.plan.idle {
                self.note(
                    scenario,
                    run,
                    format!(
                        "only {} of {} connections were held ({})",
                        sample.count,
                        self.plan.idle,
                        sample
                            .first_error
                            .as_deref()
                            .unwrap_or("not all accepted in time")
                    ),
                );
            }
            self.progress(
                scenario,
                run,
                &format!(
                    "{} connections, proxy RSS {:.1} -> {:.1} MiB",
                    sample.count,
                    mib(sample.rss_before),
                    mib(sample.rss_after)
                ),
            );
            samples.push(sample);
        }
        Ok(Outcome::Idle(samples))
    }

    /// Stops `proxy` (named `who` in a note about its stderr).
    async fn stopped(&mut self, scenario: Scenario, run: u32, who: &str, proxy: Proxy) {
        let lines = proxy.stop().await;
        if !lines.is_empty() {
            let shown: Vec<&str> = lines.iter().take(3).map(String::as_str).collect();
            self.note(
                scenario,
                run,
                format!(
                    "{who} wrote {} stderr line(s): {}",
                    lines.len(),
                    shown.join(" / ")
                ),
            );
        }
    }

    fn note_errors(&mut self, scenario: Scenario, run: u32, side: &str, s: &Sample) {
        if s.errors > 0 {
            self.note(
                scenario,
                run,
                format!(
                    "{side}: {} failed request(s); first: {}",
                    s.errors,
                    s.first_error.as_deref().unwrap_or("?")
                ),
            );
        }
    }

    fn note(&mut self, scenario: Scenario, run: u32, text: String) {
        self.notes
            .push(format!("{} run {run}: {text}", scenario.name()));
    }

    fn progress(&self, scenario: Scenario, run: u32, text: &str) {
        let at = self.started.elapsed().as_secs_f64();
        let of = self.plan.repeat;
        eprintln!("[{at:6.1}s] {} {run}/{of}: {text}", scenario.name());
    }
}

/// What a leaf and its TLS config cost alone, in ms per new name: a fresh CA's
/// `server_config` for `hosts` names.
fn leaf_cost(hosts: usize) -> Result<f64> {
    let ca = mitm::CertificateAuthority::generate()?.with_cache_size(hosts.max(1));
    let start = Instant::now();
    for i in 0..hosts {
        ca.server_config(&format!("probe{i}.localhost"))?;
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0 / hosts.max(1) as f64)
}

/// Handshake cost a new name adds, in ms: the difference of the trimmed means (the
/// plain means when there are none).
pub fn extra_per_host(cached: &Sample, cold: &Sample) -> Option<f64> {
    let (c, n) = (
        cached.trimmed_mean.or(cached.mean)?,
        cold.trimmed_mean.or(cold.mean)?,
    );
    Some((n.as_secs_f64() - c.as_secs_f64()) * 1000.0)
}

fn brief(s: &Sample, unit: Unit) -> String {
    let p50 = s
        .p50
        .map_or("-".into(), |d| format!("{:.3} ms", d.as_secs_f64() * 1e3));
    match unit {
        Unit::Requests => format!("{:.0} req/s p50 {p50}", s.rate),
        Unit::Bytes => format!("{:.0} MiB/s", s.rate),
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
