//! Flow-file micro-benchmark: what writing one flow as `--save FILE.flows` writes it
//! costs (a GET answered with 1 KiB, as `mitm-bench --capture` sends), the encoder
//! alone, without the proxy, the queue or the file.
//!
//! `cargo bench --bench flows`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mitm::internals::write_flows;

fn flows(c: &mut Criterion) {
    let mut group = c.benchmark_group("flows");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("write 1000 flows", |b| {
        b.iter(|| black_box(write_flows(black_box(1000))))
    });
    group.finish();
}

criterion_group!(benches, flows);
criterion_main!(benches);
