//! Data-hook chain micro-benchmarks: what passing a 16 KiB chunk through 0, 1 and 5
//! pass-through middlewares costs, on a current-thread tokio runtime.
//!
//! `cargo bench --bench hooks`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, Criterion};
use mitm::internals::HookChain;
use mitm::DataHooks;
use mitm::{async_trait, Bytes, Connection, Middleware};

/// Overrides the data hook and hands every chunk on unchanged.
struct PassThrough;

#[async_trait]
impl Middleware for PassThrough {
    fn data_hooks(&self) -> DataHooks {
        DataHooks::On
    }

    async fn client_data(&self, _conn: &Connection, data: Bytes) -> Bytes {
        data
    }
}

/// Watches events only, and says so: the relay needs no data hooks for it.
struct Watcher;

#[async_trait]
impl Middleware for Watcher {
    fn data_hooks(&self) -> DataHooks {
        DataHooks::Off
    }

    async fn client_connected(&self, _conn: &Connection) {}
}

fn chain(n: usize, make: fn() -> Arc<dyn Middleware>) -> HookChain {
    HookChain::new((0..n).map(|_| make()).collect())
}

fn pass_through() -> Arc<dyn Middleware> {
    Arc::new(PassThrough)
}

fn watcher() -> Arc<dyn Middleware> {
    Arc::new(Watcher)
}

/// The relay asks `wants_data` once per connection and, when it is false, copies bytes
/// without calling any data hook: checked here and printed, as it decides which path
/// the relay takes.
fn report_wants_data() {
    let cases = [
        ("0 middlewares", chain(0, pass_through), false),
        ("5 watchers (wants_data false)", chain(5, watcher), false),
        ("1 pass-through", chain(1, pass_through), true),
        (
            "5 watchers + 1 pass-through",
            {
                let mut list: Vec<_> = (0..5).map(|_| watcher()).collect();
                list.push(pass_through());
                HookChain::new(list)
            },
            true,
        ),
    ];
    for (name, chain, expected) in cases {
        let wants = chain.wants_data();
        assert_eq!(wants, expected, "{name}");
        let path = if wants {
            "data hooks"
        } else {
            "plain copy, hooks skipped"
        };
        println!("wants_data: {name}: {wants} -> {path}");
    }
}

fn hooks(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let data = Bytes::from(vec![0x61u8; 16 * 1024]);
    // No throughput: pass-through hooks never touch the bytes, so a GiB/s figure would
    // only restate the time per chunk, which is what matters.
    let mut group = c.benchmark_group("client_data/16KiB");
    for n in [0, 1, 5] {
        let chain = chain(n, pass_through);
        group.bench_function(format!("{n}_pass_through"), |b| {
            b.to_async(&rt)
                .iter(|| chain.client_data(black_box(data.clone())));
        });
    }
    group.finish();
}

criterion_group!(benches, hooks);

fn main() {
    report_wants_data();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
