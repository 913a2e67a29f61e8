//! `--proxy-cmd LABEL=COMMAND`: proxies that are not the `mitm` binary, measured beside
//! it in one run (the Python package with a Python middleware, the original Python
//! `mitm`, hudsucker, ...). Each selected scenario's load (`--only`; `http-ka` when
//! none is given: plain HTTP, 1 KiB responses, 32 keep-alive connections,
//! absolute-form requests), directly, through the `mitm` binary, and through a fresh
//! process of each command, in that order in every round, `repeat` rounds: a table per
//! scenario shows medians of the throughput, latency, the proxy's CPU (per 1000
//! requests, or per GiB for bulk) and its peak RSS, and each path's throughput against
//! direct and against the `mitm` binary. `--goal [SCENARIO:]A/B>=X` checks that path A
//! reaches X times path B's throughput (in that scenario, else in every one measured).
//!
//! A command runs through `sh -c 'exec COMMAND'` (so that the process measured is the
//! proxy itself, not a shell), with `MITM_BENCH_DIR` set to a private directory of its
//! own (removed with the bench's), and must print `mitm listening on http://ADDR` on
//! stdout once it accepts connections, as the `mitm` binary does. For the HTTPS loads
//! an intercepting proxy finds there what it needs: `ca.pem` and `ca.key` (PEM, the CA
//! the bench's clients trust through a proxy, the one the `mitm` binary is given) and
//! `upstream-ca.pem` (the origin's CA, to trust towards `name.localhost`, a name it
//! must resolve to 127.0.0.1 itself); the CA is there as `mitm.pem` and `mitm.key` too,
//! so that another build of `mitm` runs as `OLD --host 127.0.0.1 --port 0 -q --log none
//! --ca-dir $MITM_BENCH_DIR --upstream-ca $MITM_BENCH_DIR/upstream-ca.pem`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::ValueEnum;

use crate::load::{Sample, Unit};
use crate::proxy::{ChildProxy, Mode, Proxy};
use crate::report::{self, summarize, Summary};
use crate::scenarios::{Bench, Scenario, Via};

/// The `mitm` binary's row.
const MITM: &str = "mitm";
/// The direct row.
const DIRECT: &str = "direct";
/// The scenarios a proxy command can be measured on: one proxy, regular mode.
pub const SCENARIOS: [Scenario; 6] = [
    Scenario::HttpKa,
    Scenario::HttpsKa,
    Scenario::HttpsNewconn,
    Scenario::HttpsResume,
    Scenario::HttpBulk,
    Scenario::HttpsBulk,
];

/// The files put in each command's `MITM_BENCH_DIR`, and where they come from.
#[derive(Clone, Debug)]
pub struct CaFiles {
    /// The proxy's CA certificate (PEM), which the bench's clients trust.
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// The origin's CA certificate (PEM).
    pub upstream: PathBuf,
}

impl CaFiles {
    /// Copies the files into `dir` as `ca.pem`, `ca.key` and `upstream-ca.pem`, and the
    /// CA again as `mitm --ca-dir DIR` reads it (another build of `mitm` as a command).
    fn copy_into(&self, dir: &Path) -> Result<()> {
        use mitm::tls::ca::{CA_CERT_FILE, CA_KEY_FILE};
        for (from, name) in [
            (&self.cert, "ca.pem"),
            (&self.key, "ca.key"),
            (&self.cert, CA_CERT_FILE),
            (&self.key, CA_KEY_FILE),
            (&self.upstream, "upstream-ca.pem"),
        ] {
            let to = dir.join(name);
            std::fs::copy(from, &to)
                .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        }
        Ok(())
    }
}

/// A proxy command: `LABEL=COMMAND`.
#[derive(Clone, Debug)]
pub struct External {
    pub label: String,
    pub command: String,
}

impl FromStr for External {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (label, command) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected LABEL=COMMAND"))?;
        let (label, command) = (label.trim(), command.trim());
        if label.is_empty() || command.is_empty() {
            return Err(format!("{s:?}: expected LABEL=COMMAND, both non-empty"));
        }
        if [MITM, DIRECT].contains(&label) || label.contains(['/', '>', ' ']) {
            return Err(format!(
                "{label:?}: a label may not be {MITM:?} or {DIRECT:?}, nor contain '/', '>' or spaces"
            ));
        }
        Ok(External {
            label: label.to_owned(),
            command: command.to_owned(),
        })
    }
}

/// A throughput goal: path `path` reaches `min` times path `other`'s throughput, in
/// `scenario` (every scenario measured when `None`).
#[derive(Clone, Debug)]
pub struct Goal {
    pub scenario: Option<Scenario>,
    pub path: String,
    pub other: String,
    pub min: f64,
}

impl FromStr for Goal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?}: expected [SCENARIO:]A/B>=X, e.g. python/original>=20 or https-bulk:mitm/hudsucker>=1.2")
        };
        let (scenario, rest) = match s.split_once(':') {
            Some((name, rest)) => (
                Some(<Scenario as ValueEnum>::from_str(name.trim(), true).map_err(|_| bad())?),
                rest,
            ),
            None => (None, s),
        };
        let (pair, min) = rest.split_once(">=").ok_or_else(bad)?;
        let (path, other) = pair.split_once('/').ok_or_else(bad)?;
        let min: f64 = min.trim().parse().map_err(|_| bad())?;
        if !(min.is_finite() && min > 0.0) {
            return Err(bad());
        }
        Ok(Goal {
            scenario,
            path: path.trim().to_owned(),
            other: other.trim().to_owned(),
            min,
        })
    }
}

/// Runs the measurement of each of `scenarios` and prints its table; false when a goal
/// is missed or a path had failed requests.
pub async fn run(
    bench: &Bench,
    scenarios: &[Scenario],
    externals: &[External],
    goals: &[Goal],
    files: &CaFiles,
    dir: &Path,
) -> Result<bool> {
    if let Some(s) = scenarios.iter().find(|s| !SCENARIOS.contains(s)) {
        let can: Vec<&str> = SCENARIOS.iter().map(|s| s.name()).collect();
        bail!(
            "--proxy-cmd cannot run {}: only {}",
            s.name(),
            can.join(", ")
        );
    }
    let mut labels = vec![DIRECT.to_owned(), MITM.to_owned()];
    labels.extend(externals.iter().map(|e| e.label.clone()));
    for goal in goals {
        for label in [&goal.path, &goal.other] {
            if !labels.contains(label) {
                bail!(
                    "--goal names {label:?}, which is none of {}",
                    labels.join(", ")
                );
            }
        }
        if let Some(s) = goal.scenario.filter(|s| !scenarios.contains(s)) {
            bail!("--goal names {}, which is not measured", s.name());
        }
    }
    let mut ok = true;
    for &scenario in scenarios {
        let samples = measure(bench, scenario, &labels, externals, files, dir).await?;
        let summaries: Vec<Summary> = samples.iter().map(|s| summarize(s)).collect();
        print_table(bench, scenario, &labels, &summaries);
        for ((label, s), all) in labels.iter().zip(&summaries).zip(&samples) {
            if s.errors > 0 {
                let first = all
                    .iter()
                    .find_map(|s| s.first_error.clone())
                    .unwrap_or_default();
                println!(
                    "{}: {label}: {} failed request(s); first: {first}",
                    scenario.name(),
                    s.errors
                );
                ok = false;
            }
        }
        let rate = |label: &str| {
            labels
                .iter()
                .position(|l| l == label)
                .and_then(|i| summaries[i].rate)
        };
        for goal in goals
            .iter()
            .filter(|g| g.scenario.is_none_or(|s| s == scenario))
        {
            let ratio = rate(&goal.path)
                .zip(rate(&goal.other))
                .filter(|(_, o)| *o > 0.0)
                .map(|(p, o)| p / o);
            let met = ratio.is_some_and(|r| r >= goal.min);
            println!(
                "goal: {}: {} / {} >= {}: {} ({})",
                scenario.name(),
                goal.path,
                goal.other,
                goal.min,
                ratio.map_or("-".into(), |r| format!("{r:.2}")),
                if met { "MET" } else { "MISSED" }
            );
            ok &= met;
        }
    }
    Ok(ok)
}

/// `repeat` rounds of `scenario`: direct, the `mitm` binary, then each command; the
/// samples of each path, in the order of `labels`.
async fn measure(
    bench: &Bench,
    scenario: Scenario,
    labels: &[String],
    externals: &[External],
    files: &CaFiles,
    dir: &Path,
) -> Result<Vec<Vec<Sample>>> {
    let repeat = bench.plan.repeat;
    let unit = unit(scenario);
    let mut samples: Vec<Vec<Sample>> = labels.iter().map(|_| Vec::new()).collect();
    for round in 1..=repeat {
        let mut got = vec![bench.load(scenario, Via::Direct).await?];
        let proxy = bench.launcher.start(Mode::Regular).await?;
        got.push(through(bench, scenario, proxy, MITM).await?);
        for (i, external) in externals.iter().enumerate() {
            let own = dir.join(format!("proxy-{}-{i}-{round}", scenario.name()));
            std::fs::create_dir_all(&own)
                .with_context(|| format!("cannot create {}", own.display()))?;
            files.copy_into(&own)?;
            let command = external.command.clone();
            let started =
                tokio::task::spawn_blocking(move || ChildProxy::start_command(&command, &own))
                    .await??;
            let label = &external.label;
            got.push(through(bench, scenario, Proxy::Child(started), label).await?);
        }
        let line: Vec<String> = labels
            .iter()
            .zip(&got)
            .map(|(label, s)| format!("{label} {}", brief(s.rate, unit)))
            .collect();
        eprintln!(
            "{} round {round}/{repeat}: {}",
            scenario.name(),
            line.join(" | ")
        );
        for (all, sample) in samples.iter_mut().zip(got) {
            all.push(sample);
        }
    }
    Ok(samples)
}

/// One measurement of `scenario` through `proxy`, which is stopped afterwards; what it
/// wrote on stderr goes to ours.
async fn through(bench: &Bench, scenario: Scenario, proxy: Proxy, label: &str) -> Result<Sample> {
    let sample = bench.load(scenario, Via::Mitm(&proxy)).await;
    let said = proxy.stop().await;
    if !said.is_empty() {
        eprintln!("{label} wrote on stderr: {}", said.join(" / "));
    }
    sample.map_err(|e| anyhow!("{label}: {e:#}"))
}

fn unit(scenario: Scenario) -> Unit {
    match scenario {
        Scenario::HttpBulk | Scenario::HttpsBulk => Unit::Bytes,
        _ => Unit::Requests,
    }
}

fn brief(rate: f64, unit: Unit) -> String {
    match unit {
        Unit::Requests => format!("{rate:.0} req/s"),
        Unit::Bytes => format!("{rate:.0} MiB/s"),
    }
}

fn print_table(bench: &Bench, scenario: Scenario, labels: &[String], summaries: &[Summary]) {
    let plan = &bench.plan;
    let unit = unit(scenario);
    println!(
        "\n{}: {}; {} s windows after {} s warm-up; medians of {} round(s)",
        scenario.name(),
        scenario.load(),
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        plan.repeat
    );
    let widths = [10, 14, 10, 10, 13, 10, 8, 8];
    let header = [
        "path",
        "throughput",
        "p50",
        "p99",
        "proxy CPU",
        "peak RSS",
        "/direct",
        "/mitm",
    ];
    let row = |cells: [String; 8]| -> String {
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                line.push_str(&format!("{cell:<width$}  "));
            } else {
                line.push_str(&format!("{cell:>width$}  "));
            }
        }
        line.trim_end().to_owned()
    };
    println!("{}", row(header.map(str::to_owned)));
    println!(
        "{}",
        widths
            .iter()
            .map(|&w| "-".repeat(w))
            .collect::<Vec<_>>()
            .join("  ")
    );
    let (direct, mitm) = (summaries[0].rate, summaries[1].rate);
    let ratio = |rate: Option<f64>, of: Option<f64>| match (rate, of) {
        (Some(r), Some(o)) if o > 0.0 => format!("{:.3}", r / o),
        _ => "-".into(),
    };
    let (per, rate_unit) = match unit {
        Unit::Requests => ("/1k", "req/s"),
        Unit::Bytes => ("/GiB", "MiB/s"),
    };
    for (label, s) in labels.iter().zip(summaries) {
        let proxied = label != DIRECT;
        println!(
            "{}",
            row([
                label.clone(),
                s.rate.map_or("-".into(), |r| format!(
                    "{} {rate_unit}",
                    report::thousands(r)
                )),
                s.p50.map_or("-".into(), report::ms),
                s.p99.map_or("-".into(), report::ms),
                s.cpu
                    .filter(|_| proxied)
                    .map_or("-".into(), |c| format!("{} {per}", report::ms(c))),
                s.peak_rss
                    .filter(|_| proxied)
                    .map_or("-".into(), |b| format!(
                        "{:.1} MiB",
                        crate::scenarios::mib(b)
                    )),
                ratio(s.rate, direct),
                ratio(s.rate, mitm),
            ])
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_goals_parse() {
        let e: External = "python=python3 proxy.py --x=1".parse().unwrap();
        assert_eq!(
            (e.label.as_str(), e.command.as_str()),
            ("python", "python3 proxy.py --x=1")
        );
        assert!("python".parse::<External>().is_err());
        assert!("mitm=foo".parse::<External>().is_err());
        assert!("=foo".parse::<External>().is_err());
        let g: Goal = "python/original>=20".parse().unwrap();
        assert_eq!(
            (g.path.as_str(), g.other.as_str(), g.min),
            ("python", "original", 20.0)
        );
        assert_eq!(g.scenario, None);
        let g: Goal = "python/mitm>=0.5".parse().unwrap();
        assert_eq!(g.min, 0.5);
        let g: Goal = "https-bulk:mitm/hudsucker>=1.2".parse().unwrap();
        assert_eq!(
            (g.scenario, g.path.as_str(), g.other.as_str(), g.min),
            (Some(Scenario::HttpsBulk), "mitm", "hudsucker", 1.2)
        );
        assert!("no-such:mitm/hudsucker>=1.2".parse::<Goal>().is_err());
        assert!("python/mitm>=x".parse::<Goal>().is_err());
        assert!("python>=2".parse::<Goal>().is_err());
        assert!("python/mitm>=-1".parse::<Goal>().is_err());
    }
}
