//! Leaf certificate micro-benchmarks: signing a leaf, and `server_config` for a host
//! seen for the first time (cache miss) against one already cached.
//!
//! `cargo bench --bench leaves`; `cargo bench --bench leaf_report` prints the plain
//! per-leaf figure over 1000 names.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mitm::CertificateAuthority;

fn leaves(c: &mut Criterion) {
    let ca = CertificateAuthority::generate().expect("CA");
    let mut group = c.benchmark_group("leaf");
    group.throughput(Throughput::Elements(1));

    // A distinct name every iteration: issue_leaf never caches, but this keeps any
    // per-name work honest.
    let mut n = 0u64;
    group.bench_function("issue_leaf/distinct_names", |b| {
        b.iter(|| {
            n += 1;
            ca.issue_leaf(&format!("h{n}.issue.example.com"))
                .expect("leaf")
        });
    });

    // Cold cache: a name never seen before every iteration (the LRU, 1024 hosts by
    // default, evicts as it goes, so every call signs a leaf and builds a config).
    let mut n = 0u64;
    group.bench_function("server_config/cold_distinct_names", |b| {
        b.iter(|| {
            n += 1;
            ca.server_config(&format!("h{n}.cold.example.com"))
                .expect("config")
        });
    });

    // Warm cache: the same host every time.
    ca.server_config("www.example.com").expect("config");
    group.bench_function("server_config/cached_name", |b| {
        b.iter(|| {
            ca.server_config(black_box("www.example.com"))
                .expect("config")
        });
    });
    group.finish();
}

criterion_group!(benches, leaves);
criterion_main!(benches);
