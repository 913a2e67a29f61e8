//! A plain report, no statistics: the time to issue a leaf and to build a server
//! configuration, per host, over 1000 distinct host names.
//!
//! `cargo bench --bench leaf_report`

use std::time::{Duration, Instant};

use mitm::CertificateAuthority;

const NAMES: usize = 1000;
const ROUNDS: usize = 3;

/// Runs `f` once per name and returns the mean time per name, in microseconds.
fn per_name(names: &[String], mut f: impl FnMut(&str)) -> f64 {
    let start = Instant::now();
    for name in names {
        f(name);
    }
    micros(start.elapsed()) / names.len() as f64
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn best(figures: &[f64]) -> f64 {
    figures.iter().copied().fold(f64::INFINITY, f64::min)
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (`cargo test --benches`) gets a
    // quick smoke run of the same code.
    let full = std::env::args().any(|a| a == "--bench");
    let count = if full { NAMES } else { 10 };
    let (mut issue, mut cold, mut cached) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let names: Vec<String> = (0..count)
            .map(|i| format!("host-{i}.round-{round}.example.com"))
            .collect();
        // A fresh CA (default cache of 1024 hosts) per round: every name is a miss.
        let ca = CertificateAuthority::generate().expect("CA");
        issue.push(per_name(&names, |n| {
            ca.issue_leaf(n).expect("leaf");
        }));
        cold.push(per_name(&names, |n| {
            ca.server_config(n).expect("config");
        }));
        assert_eq!(ca.cached_hosts(), count);
        cached.push(per_name(&names, |n| {
            ca.server_config(n).expect("config");
        }));
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{ROUNDS} rounds over {count} distinct names each (best first, then every round, us):"
    );
    println!(
        "leaf issuance (issue_leaf):            {:>8.1} us per leaf   [{}]",
        best(&issue),
        show(&issue)
    );
    println!(
        "server_config, cold cache (new host):  {:>8.1} us per host   [{}]",
        best(&cold),
        show(&cold)
    );
    println!(
        "server_config, cached host:            {:>8.3} us per host   [{}]",
        best(&cached),
        show(&cached)
    );
}
