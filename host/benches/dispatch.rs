//! How much the sandbox costs per event: the no-op handler plugin against a native Rust
//! function doing the same, side by side in one run.
//!
//! `cargo bench -p polyhost --bench dispatch [-- N…]` (needs `cargo xtask plugins` first;
//! numbers pick batch sizes, by default 1, 16 and 256).
//!
//! For each batch size N it times whole calls — a fresh `Store`, instantiation from the
//! pool, the events crossing into the guest, the outcomes crossing back — and the native
//! baseline (the same events cloned, one outcome each), interleaved sample by sample, and
//! prints medians, the host overhead per event, and the ratio. The no-op handler runs twice,
//! built with two guest allocators: an arena (`noop-arena`, which frees nothing until the
//! batch's instance goes) and Rust's default (`noop-handler`, dlmalloc): each string or
//! list of an event is one allocation in the guest, so the allocator shows. It also times
//! instantiation alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use polyhost::backends::{Connections, Settings};
use polyhost::bindings::polyhost::platform::types::{BatchInfo, Event, Outcome};
use polyhost::manifest::PluginSpec;
use polyhost::runtime::{LoadedPlugin, RecordMeta, Records, Runtime, RuntimeConfig};

const SAMPLES: usize = 41;

/// The guests compared: (label, test plugin).
const GUESTS: [(&str, &str); 2] = [
    ("arena allocator", "noop_arena"),
    ("default allocator", "noop_handler"),
];

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugins");
    for (_, name) in GUESTS {
        let wasm = dir.join(format!("{name}.wasm"));
        assert!(
            wasm.is_file(),
            "{} missing: run `cargo xtask plugins` first",
            wasm.display()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(&dir));
}

/// A realistic event: CloudEvents attributes and a ~200-byte JSON payload.
fn event(i: usize) -> Event {
    let id = format!("7d9f1c2e-5b4a-4c3d-9e8f-{i:012}");
    let subject = format!("u-{:08}-4f2a-8c1d-6b5e3a9d7c0f", i % 5000);
    let data = format!(
        r#"{{"user_id":"{subject}","title_id":"t-{:06}","device":"smart-tv","position_s":{},"watched_s":{},"quality":"1080p","country":"BR","session_id":"s-{i:010}"}}"#,
        i % 977,
        i * 7 % 5400,
        i * 3 % 600
    );
    Event {
        id,
        source: "/polyhost/event-generator".into(),
        type_: "streaming.session.heartbeat".into(),
        subject: Some(subject),
        time: Some(1_790_000_000_000_000 + i as i64),
        data: data.into_bytes(),
        offset: i as i64,
    }
}

/// The Kafka records behind `events`: each keyed by its subject, as on the platform.
fn records(events: &[Event]) -> Records {
    Records::new(
        "t",
        0,
        events
            .iter()
            .map(|e| {
                Arc::new(RecordMeta {
                    offset: e.offset,
                    key: e.subject.clone().map(String::into_bytes),
                    headers: Vec::new(),
                    timestamp_ms: None,
                })
            })
            .collect(),
    )
}

/// The native baseline: what the guest does, without the sandbox (the events are cloned
/// because the guest, too, receives its own copy).
#[inline(never)]
fn native_handle(_batch: &BatchInfo, events: &[Event]) -> Vec<Outcome> {
    let owned: Vec<Event> = std::hint::black_box(events.to_vec());
    owned.iter().map(|_| Outcome::Ok).collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median time of one `handle` call of `plugin`, of one native call, in `SAMPLES`
/// interleaved samples of `iters` calls each.
async fn time_batch(plugin: &LoadedPlugin, events: &[Event], iters: u32) -> (Duration, Duration) {
    let batch = BatchInfo {
        topic: "streaming.sessions".into(),
        partition: 0,
        attempt: 0,
    };
    let records = records(events);
    // Warm up both.
    for _ in 0..iters {
        plugin
            .handle(&batch, events, records.clone())
            .await
            .unwrap();
        std::hint::black_box(native_handle(&batch, events));
    }
    let (mut host, mut native) = (Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(
                plugin
                    .handle(&batch, events, records.clone())
                    .await
                    .unwrap(),
            );
        }
        host.push(t.elapsed() / iters);
        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(native_handle(&batch, events));
        }
        native.push(t.elapsed() / iters);
    }
    (median(host), median(native))
}

async fn run(dir: &Path) {
    let config = RuntimeConfig {
        cache_dir: None,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(
        config,
        Arc::new(Connections::new(
            Settings::from_env().expect("connection settings"),
        )),
    )
    .unwrap();
    let mut plugins = Vec::new();
    for (label, name) in GUESTS {
        let mut spec = PluginSpec::new(name, dir.join(format!("{name}.wasm")));
        spec.subscribe = vec!["bench".into()];
        plugins.push((label, runtime.load(&spec).await.unwrap()));
    }

    // Instantiation alone.
    let plugin = &plugins[0].1;
    for _ in 0..200 {
        plugin.instantiate_only().await.unwrap();
    }
    let mut inst = Vec::new();
    for _ in 0..SAMPLES {
        let n = 200;
        let t = Instant::now();
        for _ in 0..n {
            plugin.instantiate_only().await.unwrap();
        }
        inst.push(t.elapsed() / n);
    }
    let inst = median(inst);

    println!("polyhost dispatch benchmark — median of {SAMPLES} samples");
    println!(
        "instantiation from the pool (fresh Store + instantiate, noop-arena): {:.2} µs (target ≤ 20 µs)",
        inst.as_secs_f64() * 1e6
    );
    println!();
    println!(
        "{:>5}  {:<18} {:>14} {:>14} {:>16} {:>8}",
        "N", "guest", "host/batch", "native/batch", "overhead/event", "ratio"
    );
    let only: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    for n in [1usize, 16, 256] {
        if !only.is_empty() && !only.contains(&n) {
            continue;
        }
        let events: Vec<Event> = (0..n).map(event).collect();
        let iters = (4096 / n).max(8) as u32;
        for (label, plugin) in &plugins {
            let (h, nat) = time_batch(plugin, &events, iters).await;
            let per_event = (h.as_secs_f64() - nat.as_secs_f64()) / n as f64;
            println!(
                "{n:>5}  {label:<18} {:>11.2} µs {:>11.2} µs {:>13.3} µs {:>7.1}x",
                h.as_secs_f64() * 1e6,
                nat.as_secs_f64() * 1e6,
                per_event * 1e6,
                h.as_secs_f64() / nat.as_secs_f64()
            );
        }
    }
    println!();
    println!(
        "overhead/event = (host − native) / N, Store creation and instantiation included; target at N = 256: ≤ 1 µs"
    );
}
