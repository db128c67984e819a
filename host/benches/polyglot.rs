//! What a batch costs a Python or JavaScript plugin: a no-op handler per language, with a
//! fresh instance per batch and with a reused instance, side by side, at N = 1 and N = 256.
//!
//! `cargo bench -p polyhost --bench polyglot` (needs `cargo xtask plugins` first, which
//! builds `examples/noop-py` and `examples/noop-js`). A Rust no-op handler runs as the
//! baseline. Compiled components are cached under `target/polyglot-test-cache`.
//!
//! Each figure is the median of whole `handle` calls: for a per-batch instance a fresh
//! `Store`, instantiation (the language runtime's start included), the events crossing
//! into the guest and the outcomes back; for a reused instance the call alone.
//!
//! The Rust and Python handlers export `handler` (the events as a `list<event>`); the
//! JavaScript one exports `json-handler` (the events as one JSON text, which the host
//! serialises inside the timed call, and the guest parses with one `JSON.parse`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use polyhost::backends::{Connections, Settings};
use polyhost::bindings::polyhost::platform::types::{BatchInfo, Event};
use polyhost::manifest::{InstanceMode, PluginSpec};
use polyhost::runtime::{LoadedPlugin, Records, Runtime, RuntimeConfig};

/// The guests compared: (label, component under `target/`).
const GUESTS: [(&str, &str); 3] = [
    ("Rust", "test-plugins/noop_handler.wasm"),
    ("Python", "plugins/noop_py.wasm"),
    ("JavaScript", "plugins/noop_js.wasm"),
];

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

fn event(i: usize) -> Event {
    Event {
        id: format!("7d9f1c2e-5b4a-4c3d-9e8f-{i:012}"),
        source: "/polyhost/bench".into(),
        type_: "streaming.session.heartbeat".into(),
        subject: Some(format!("u-{:08}", i % 5000)),
        time: Some(1_700_000_000_000_000 + i as i64),
        data: format!(
            r#"{{"title_id":"t-{:06}","position_s":{}}}"#,
            i % 977,
            i * 7 % 5400
        )
        .into_bytes(),
        offset: i as i64,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median of `samples` whole batches of `events`, after `warm` unmeasured ones.
async fn time_batches(plugin: &LoadedPlugin, events: &[Event], samples: usize) -> Duration {
    let batch = BatchInfo {
        topic: "bench".into(),
        partition: 0,
        attempt: 0,
    };
    for _ in 0..3 {
        plugin
            .handle(&batch, events, Records::default())
            .await
            .unwrap();
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let out = plugin
            .handle(&batch, events, Records::default())
            .await
            .unwrap();
        times.push(t.elapsed());
        assert_eq!(out.len(), events.len());
    }
    median(times)
}

async fn run() {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    let config = RuntimeConfig {
        max_instances: 8,
        max_memory_mb: 256,
        cache_dir: Some(target.join("polyglot-test-cache")),
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(
        config,
        Arc::new(Connections::new(
            Settings::from_env().expect("connection settings"),
        )),
    )
    .unwrap();
    let samples: usize = std::env::var("POLYGLOT_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(21);

    println!("polyhost polyglot benchmark — no-op handler, median of {samples} batches");
    println!("(Rust and Python: `handler`; JavaScript: `json-handler`, the events as JSON)");
    println!(
        "{:<11} {:>5} {:>16} {:>16} {:>9}",
        "language", "N", "per-batch", "reused", "speed-up"
    );
    for (label, file) in GUESTS {
        let wasm = target.join(file);
        assert!(
            wasm.is_file(),
            "{} missing: run `cargo xtask plugins` first",
            wasm.display()
        );
        let mut loaded = Vec::new();
        for mode in [InstanceMode::PerBatch, InstanceMode::Reused] {
            let mut spec = PluginSpec::new(label.to_lowercase(), wasm.clone());
            spec.subscribe = vec!["bench".into()];
            spec.limits.instance = mode;
            spec.limits.memory_mb = 256;
            spec.limits.max_instances = 1;
            spec.limits.call_timeout_ms = 60_000;
            loaded.push(runtime.load(&spec).await.unwrap());
        }
        for n in [1usize, 256] {
            let events: Vec<Event> = (0..n).map(event).collect();
            let per_batch = time_batches(&loaded[0], &events, samples).await;
            let reused = time_batches(&loaded[1], &events, samples).await;
            println!(
                "{label:<11} {n:>5} {:>13.3} ms {:>13.3} ms {:>8.0}x",
                per_batch.as_secs_f64() * 1e3,
                reused.as_secs_f64() * 1e3,
                per_batch.as_secs_f64() / reused.as_secs_f64()
            );
        }
    }
    println!();
    println!("targets: Python and JavaScript reused ≤ 2 ms per batch of 256");
}
