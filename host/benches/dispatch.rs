//! How much the sandbox costs per event: the no-op handler plugin against a native Rust
//! function doing the same, side by side in one run.
//!
//! `cargo bench -p polyhost --bench dispatch` (needs `cargo xtask plugins` first).
//!
//! For each batch size N it times whole calls — a fresh `Store`, instantiation from the
//! pool, the events crossing into the guest, the outcomes crossing back — and the native
//! baseline (the same events cloned, one outcome each), and prints medians of many
//! samples, the host overhead per event, and the ratio. It also times instantiation alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use polyhost::backends::{Connections, Settings};
use polyhost::bindings::polyhost::platform::types::{BatchInfo, Event, Outcome};
use polyhost::manifest::PluginSpec;
use polyhost::runtime::{Runtime, RuntimeConfig};

const SAMPLES: usize = 41;

fn main() {
    let wasm =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugins/noop_handler.wasm");
    assert!(
        wasm.is_file(),
        "{} missing: run `cargo xtask plugins` first",
        wasm.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(wasm));
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
        subject: Some(subject.clone()),
        time: Some(1_790_000_000_000_000 + i as i64),
        data: data.into_bytes(),
        offset: i as i64,
        key: Some(subject.into_bytes()),
        headers: Vec::new(),
    }
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

async fn run(wasm: PathBuf) {
    let config = RuntimeConfig {
        cache_dir: None,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(config, Arc::new(Connections::new(Settings::default()))).unwrap();
    let mut spec = PluginSpec::new("noop", wasm);
    spec.subscribe = vec!["bench".into()];
    let plugin = runtime.load(&spec).await.unwrap();
    let batch = BatchInfo {
        topic: "streaming.sessions".into(),
        partition: 0,
        attempt: 0,
    };

    // Instantiation alone.
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
        "instantiation from the pool (fresh Store + instantiate): {:.2} µs (target ≤ 20 µs)",
        inst.as_secs_f64() * 1e6
    );
    println!();
    println!(
        "{:>5} {:>14} {:>14} {:>16} {:>8}",
        "N", "host/batch", "native/batch", "overhead/event", "ratio"
    );
    for n in [1usize, 16, 256] {
        let events: Vec<Event> = (0..n).map(event).collect();
        let iters = (4096 / n).max(8) as u32;
        // Warm up both.
        for _ in 0..iters {
            plugin.handle(&batch, &events).await.unwrap();
            std::hint::black_box(native_handle(&batch, &events));
        }
        let (mut host, mut native) = (Vec::new(), Vec::new());
        for _ in 0..SAMPLES {
            let t = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(plugin.handle(&batch, &events).await.unwrap());
            }
            host.push(t.elapsed() / iters);
            let t = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(native_handle(&batch, &events));
            }
            native.push(t.elapsed() / iters);
        }
        let (h, nat) = (median(host), median(native));
        let per_event = (h.as_secs_f64() - nat.as_secs_f64()) / n as f64;
        println!(
            "{n:>5} {:>11.2} µs {:>11.2} µs {:>13.3} µs {:>7.1}x",
            h.as_secs_f64() * 1e6,
            nat.as_secs_f64() * 1e6,
            per_event * 1e6,
            h.as_secs_f64() / nat.as_secs_f64()
        );
    }
    println!();
    println!(
        "overhead/event = (host − native) / N, Store creation and instantiation included; target at N = 256: ≤ 1 µs"
    );
}
