//! `--proxy-cmd LABEL=COMMAND`: proxies that are not the `mitm` binary, measured beside
//! it in one run (the Python package with a Python middleware, the original Python
//! `mitm`, ...). The `http-ka` load (plain HTTP, 1 KiB responses, 32 keep-alive
//! connections, absolute-form requests), directly, through the `mitm` binary, and
//! through a fresh process of each command, in that order in every round, `repeat`
//! rounds: the table shows medians of requests/s, latency, the proxy's CPU per 1000
//! requests and its peak RSS, and each path's throughput against direct and against
//! the `mitm` binary. `--goal A/B>=X` checks that path A reaches X times path B's
//! requests/s.
//!
//! A command runs through `sh -c 'exec COMMAND'` (so that the process measured is the
//! proxy itself, not a shell), with `MITM_BENCH_DIR` set to a private directory of its
//! own (removed with the bench's), and must print `mitm listening on http://ADDR` on
//! stdout once it accepts connections, as the `mitm` binary does.

use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::client::Endpoint;
use crate::load::{self, Sample};
use crate::origin::Origin;
use crate::proxy::{ChildProxy, Launcher, Mode, Proxy};
use crate::report::{self, summarize, Summary};
use crate::scenarios::Plan;

/// Keep-alive connections, as `http-ka`.
const CONNECTIONS: usize = 32;
/// The `mitm` binary's row.
const MITM: &str = "mitm";
/// The direct row.
const DIRECT: &str = "direct";

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

/// A throughput goal: path `path` reaches `min` times path `other`'s requests/s.
#[derive(Clone, Debug)]
pub struct Goal {
    pub path: String,
    pub other: String,
    pub min: f64,
}

impl FromStr for Goal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected A/B>=X, e.g. python/original>=20");
        let (pair, min) = s.split_once(">=").ok_or_else(bad)?;
        let (path, other) = pair.split_once('/').ok_or_else(bad)?;
        let min: f64 = min.trim().parse().map_err(|_| bad())?;
        if !(min.is_finite() && min > 0.0) {
            return Err(bad());
        }
        Ok(Goal {
            path: path.trim().to_owned(),
            other: other.trim().to_owned(),
            min,
        })
    }
}

/// Runs the measurement and prints its table; false when a goal is missed or a path
/// had failed requests.
pub async fn run(
    launcher: &Launcher,
    origin: &Origin,
    plan: &Plan,
    externals: &[External],
    goals: &[Goal],
    dir: &Path,
) -> Result<bool> {
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
    }
    let window = (plan.warmup, plan.duration);
    let mut samples: Vec<Vec<Sample>> = labels.iter().map(|_| Vec::new()).collect();
    for round in 1..=plan.repeat {
        let direct = Endpoint::plain_direct(origin.plain);
        let mut got = vec![load::keep_alive(&direct, CONNECTIONS, window, None).await?];
        let proxy = launcher.start(Mode::Regular).await?;
        got.push(through(proxy, origin, window, MITM).await?);
        for (i, external) in externals.iter().enumerate() {
            let own = dir.join(format!("proxy-{i}-{round}"));
            std::fs::create_dir_all(&own)
                .with_context(|| format!("cannot create {}", own.display()))?;
            let command = external.command.clone();
            let started =
                tokio::task::spawn_blocking(move || ChildProxy::start_command(&command, &own))
                    .await??;
            got.push(through(Proxy::Child(started), origin, window, &external.label).await?);
        }
        let line: Vec<String> = labels
            .iter()
            .zip(&got)
            .map(|(label, s)| format!("{label} {:.0} req/s", s.rate))
            .collect();
        eprintln!("round {round}/{}: {}", plan.repeat, line.join(" | "));
        for (all, sample) in samples.iter_mut().zip(got) {
            all.push(sample);
        }
    }
    let summaries: Vec<Summary> = samples.iter().map(|s| summarize(s)).collect();
    print_table(&labels, &summaries, plan);
    let mut ok = true;
    for (label, s) in labels.iter().zip(&summaries) {
        if s.errors > 0 {
            let first = samples[labels.iter().position(|l| l == label).unwrap_or(0)]
                .iter()
                .find_map(|s| s.first_error.clone())
                .unwrap_or_default();
            println!("{label}: {} failed request(s); first: {first}", s.errors);
            ok = false;
        }
    }
    let rate = |label: &str| {
        labels
            .iter()
            .position(|l| l == label)
            .and_then(|i| summaries[i].rate)
    };
    for goal in goals {
        let ratio = rate(&goal.path)
            .zip(rate(&goal.other))
            .filter(|(_, o)| *o > 0.0)
            .map(|(p, o)| p / o);
        let met = ratio.is_some_and(|r| r >= goal.min);
        println!(
            "goal: {} / {} >= {}: {} ({})",
            goal.path,
            goal.other,
            goal.min,
            ratio.map_or("-".into(), |r| format!("{r:.2}")),
            if met { "MET" } else { "MISSED" }
        );
        ok &= met;
    }
    Ok(ok)
}

/// One measurement through `proxy`, which is stopped afterwards; what it wrote on
/// stderr goes to ours.
async fn through(
    proxy: Proxy,
    origin: &Origin,
    window: (std::time::Duration, std::time::Duration),
    label: &str,
) -> Result<Sample> {
    let endpoint = Endpoint::plain_proxy(proxy.addr(), origin.plain);
    let sample = load::keep_alive(&endpoint, CONNECTIONS, window, Some(&proxy)).await;
    let said = proxy.stop().await;
    if !said.is_empty() {
        eprintln!("{label} wrote on stderr: {}", said.join(" / "));
    }
    sample.map_err(|e| anyhow!("{label}: {e:#}"))
}

fn print_table(labels: &[String], summaries: &[Summary], plan: &Plan) {
    println!(
        "\nhttp-ka load: 1 KiB responses on {CONNECTIONS} keep-alive connections; {} s windows \
         after {} s warm-up; medians of {} round(s)",
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
    for (label, s) in labels.iter().zip(summaries) {
        let proxied = label != DIRECT;
        println!(
            "{}",
            row([
                label.clone(),
                s.rate
                    .map_or("-".into(), |r| format!("{} req/s", report::thousands(r))),
                s.p50.map_or("-".into(), report::ms),
                s.p99.map_or("-".into(), report::ms),
                s.cpu
                    .filter(|_| proxied)
                    .map_or("-".into(), |c| format!("{} /1k", report::ms(c))),
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
        let g: Goal = "python/mitm>=0.5".parse().unwrap();
        assert_eq!(g.min, 0.5);
        assert!("python/mitm>=x".parse::<Goal>().is_err());
        assert!("python>=2".parse::<Goal>().is_err());
        assert!("python/mitm>=-1".parse::<Goal>().is_err());
    }
}
