//! `--capture FLOWS`: what saving flows costs. The `http-ka` load (plain HTTP, 1 KiB
//! responses, 32 keep-alive connections), FLOWS requests in all, through the `mitm`
//! binary without `--save`, then with `--save` to each format (HAR, mitmproxy's flow
//! file, SQLite), `repeat` times interleaved. For each: requests/s and its ratio to no
//! capture, the proxy's CPU per 1000 requests and peak RSS, how long the proxy took to
//! exit after SIGTERM once the load was done (the writer's lag: it writes what is still
//! queued before the process ends), the flows found in the file afterwards (read back
//! with the library; fewer than sent means flows were dropped) and the file's size.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tokio::task::JoinSet;

use crate::client::Endpoint;
use crate::origin::Origin;
use crate::proxy::{Launcher, Proxy};
use crate::scenarios::mib;

/// Keep-alive connections, as `http-ka`.
const CONNECTIONS: usize = 32;
/// How long a proxy may take to write what is queued and exit.
const EXIT_PATIENCE: Duration = Duration::from_secs(300);
/// The most a capture may cost of `http-ka`'s throughput, for SQLite (issue 12).
const SQLITE_MAX_COST: f64 = 0.20;

/// What is measured: a row's label, and the extension of the file saved to (`None`:
/// no `--save`). `kept none` saves with a filter no flow matches: each flow is made
/// into a record and filtered out, nothing is written, which tells what capturing
/// costs the proxy's own threads from what the writer costs.
const FORMATS: [(&str, Option<&str>); 5] = [
    ("none", None),
    ("kept none", Some("flows")),
    ("har", Some("har")),
    ("flows", Some("flows")),
    ("sqlite", Some("sqlite")),
];

/// A filter no flow matches.
const NOTHING: &str = "~m NO-SUCH-METHOD";

/// One run of one format.
struct Run {
    rate: f64,
    cpu_per_1k: Option<Duration>,
    peak_rss: Option<u64>,
    exit: Duration,
    saved: Option<usize>,
    file_size: Option<u64>,
    errors: u64,
}

/// Runs the measurement and prints its table; false when the SQLite target is missed
/// or flows went missing.
pub async fn run(
    launcher: &Launcher,
    origin: &Origin,
    flows: u64,
    repeat: u32,
    dir: &Path,
) -> Result<bool> {
    let mut runs: Vec<Vec<Run>> = FORMATS.iter().map(|_| Vec::new()).collect();
    for round in 1..=repeat {
        for (i, (label, format)) in FORMATS.iter().enumerate() {
            let file = format.map(|ext| dir.join(format!("capture-{round}-{i}.{ext}")));
            let mut args = Vec::new();
            if let Some(file) = &file {
                args.push("--save".to_string());
                args.push(file.display().to_string());
            }
            if *label == "kept none" {
                args.push("--save-filter".to_string());
                args.push(NOTHING.to_string());
            }
            let proxy = launcher.start_child_with(args).await?;
            let endpoint = Endpoint::plain_proxy(proxy.addr(), origin.plain);
            let loaded = load(&endpoint, flows).await;
            let cpu = proxy.cpu();
            let peak_rss = proxy.peak_rss();
            let Proxy::Child(child) = proxy else {
                bail!("not a child process");
            };
            let exit =
                tokio::task::spawn_blocking(move || child.terminate(EXIT_PATIENCE)).await??;
            let (done, elapsed, errors) = loaded?;
            let (saved, file_size) = match &file {
                Some(file) => {
                    let size = std::fs::metadata(file)?.len();
                    let path = file.clone();
                    let records = tokio::task::spawn_blocking(move || mitm::capture::read(&path))
                        .await?
                        .with_context(|| format!("reading {} back", file.display()))?;
                    std::fs::remove_file(file)?;
                    for extra in ["-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{extra}", file.display()));
                    }
                    (Some(records.len()), Some(size))
                }
                None => (None, None),
            };
            let run = Run {
                rate: done as f64 / elapsed.as_secs_f64(),
                cpu_per_1k: cpu.map(|c| c.mul_f64(1000.0 / done.max(1) as f64)),
                peak_rss,
                exit,
                saved,
                file_size,
                errors,
            };
            eprintln!(
                "capture {round}/{repeat} {label:>9}: {:>8.0} req/s, exit {:>7.1} ms, saved {}",
                run.rate,
                exit.as_secs_f64() * 1e3,
                saved.map_or("-".into(), |n| n.to_string())
            );
            runs[i].push(run);
        }
    }
    Ok(print(&runs, flows))
}

/// `flows` requests over [`CONNECTIONS`] keep-alive connections: how many succeeded,
/// how long it all took, and how many failed.
async fn load(endpoint: &Endpoint, flows: u64) -> Result<(u64, Duration, u64)> {
    let budget = Arc::new(AtomicI64::new(flows as i64));
    let request: Arc<[u8]> = endpoint.request("/1k").into();
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        conns.push(endpoint.open().await.context("opening a connection")?);
    }
    let began = Instant::now();
    let mut workers = JoinSet::new();
    for mut conn in conns {
        let (budget, request) = (budget.clone(), request.clone());
        workers.spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while budget.fetch_sub(1, Ordering::Relaxed) > 0 {
                match conn.get(&request).await {
                    Ok(_) => ok += 1,
                    Err(_) => {
                        failed += 1;
                        break;
                    }
                }
            }
            (ok, failed)
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(done) = workers.join_next().await {
        let (o, f) = done?;
        ok += o;
        failed += f;
    }
    Ok((ok, began.elapsed(), failed))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Prints the table (medians over the runs); whether the targets were met.
fn print(runs: &[Vec<Run>], flows: u64) -> bool {
    let base = median(runs[0].iter().map(|r| r.rate).collect());
    println!(
        "\ncapture of {flows} flows (http-ka load through the `mitm` binary), medians of {} run(s):",
        runs[0].len()
    );
    println!(
        "{:<9} {:>10} {:>9} {:>11} {:>9} {:>12} {:>10} {:>10} {:>7}",
        "save",
        "req/s",
        "vs none",
        "CPU/1k req",
        "peak RSS",
        "exit lag",
        "in file",
        "file MiB",
        "errors"
    );
    let mut ok = true;
    for ((label, _), runs) in FORMATS.iter().zip(runs) {
        let rate = median(runs.iter().map(|r| r.rate).collect());
        let cpu = median(
            runs.iter()
                .map(|r| r.cpu_per_1k.map_or(f64::NAN, |c| c.as_secs_f64() * 1e3))
                .collect(),
        );
        let rss = median(
            runs.iter()
                .map(|r| r.peak_rss.map_or(f64::NAN, mib))
                .collect(),
        );
        let exit = median(runs.iter().map(|r| r.exit.as_secs_f64() * 1e3).collect());
        let saved = median(
            runs.iter()
                .map(|r| r.saved.map_or(f64::NAN, |n| n as f64))
                .collect(),
        );
        let size = median(
            runs.iter()
                .map(|r| r.file_size.map_or(f64::NAN, mib))
                .collect(),
        );
        let errors: u64 = runs.iter().map(|r| r.errors).sum();
        let expected = if *label == "kept none" { 0 } else { flows };
        let missing = runs
            .iter()
            .any(|r| r.saved.is_some_and(|n| n as u64 != expected));
        if missing || errors > 0 {
            ok = false;
        }
        println!(
            "{:<9} {:>10.0} {:>9.3} {:>8.2} ms {:>5.1} MiB {:>9.1} ms {:>10} {:>10} {:>7}",
            label,
            rate,
            rate / base,
            cpu,
            rss,
            exit,
            if saved.is_nan() {
                "-".into()
            } else {
                format!("{saved:.0}")
            },
            if size.is_nan() {
                "-".into()
            } else {
                format!("{size:.1}")
            },
            errors
        );
        if *label == "sqlite" {
            let cost = 1.0 - rate / base;
            let met = cost <= SQLITE_MAX_COST;
            ok &= met;
            println!(
                "sqlite costs {:.1} % of the throughput without capture (target: at most {:.0} %): {}",
                cost * 100.0,
                SQLITE_MAX_COST * 100.0,
                if met { "met" } else { "MISSED" }
            );
        }
    }
    ok
}
