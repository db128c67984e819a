//! Shared by the tests that load plugins: where test plugins are, events and batches to
//! hand them, and a runtime to load them with.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use polyhost::backends::{Connections, Settings};
use polyhost::bindings::polyhost::platform::types::{BatchInfo, Event};
use polyhost::runtime::{Records, Runtime, RuntimeConfig};

/// The component of a test plugin built by `cargo xtask plugins`
/// (`test-plugins/<name>` → `target/test-plugins/<name_with_underscores>.wasm`).
pub fn test_plugin(name: &str) -> PathBuf {
    built("test-plugins", &format!("{}.wasm", name.replace('-', "_")))
}

/// The component of a platform plugin or an example built by `cargo xtask plugins`
/// (`plugins/<name>` → `target/plugins/<name_with_underscores>.wasm`).
pub fn platform_plugin(name: &str) -> PathBuf {
    built("plugins", &format!("{}.wasm", name.replace('-', "_")))
}

/// `target/<dir>/<file>`, a component `cargo xtask plugins` builds; panics naming that
/// step when it is missing, so a test run before it fails at once saying what to do.
fn built(dir: &str, file: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(dir)
        .join(file);
    assert!(
        path.is_file(),
        "{} is missing: build the plugins first with `cargo xtask plugins`",
        path.display()
    );
    path
}

/// A runtime with an engine sized for tests and no on-disk cache (unless `cache` is given).
pub fn runtime_with_cache(cache: Option<PathBuf>) -> Runtime {
    let config = RuntimeConfig {
        max_instances: 16,
        max_memory_mb: 128,
        cache_dir: cache,
        ..RuntimeConfig::default()
    };
    Runtime::new(
        config,
        Arc::new(Connections::new(
            Settings::from_env().expect("connection settings"),
        )),
    )
    .expect("runtime")
}

/// A runtime with no on-disk cache.
pub fn runtime() -> Runtime {
    runtime_with_cache(None)
}

/// A platform-looking event of type `ty` with JSON `data`.
pub fn event(id: &str, ty: &str, data: &serde_json::Value) -> Event {
    Event {
        id: id.to_string(),
        source: "/polyhost/tests".to_string(),
        type_: ty.to_string(),
        subject: Some(format!("subject-{id}")),
        time: Some(1_700_000_000_000_000),
        data: serde_json::to_vec(data).expect("json"),
        offset: 0,
    }
}

/// `n` events of type `ty`, ids `<prefix>-0`…, offsets 0….
pub fn events(prefix: &str, ty: &str, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut e = event(&format!("{prefix}-{i}"), ty, &serde_json::json!({ "n": i }));
            e.offset = i as i64;
            e
        })
        .collect()
}

/// The batch info of a test batch on `topic`, partition 0, first attempt.
pub fn batch(topic: &str) -> BatchInfo {
    BatchInfo {
        topic: topic.to_string(),
        partition: 0,
        attempt: 0,
    }
}

/// Hands a probe plugin one event whose data is `script` (its steps and their expected
/// results) and fails with the probe's list of mismatches when it rejects.
pub async fn run_script(
    plugin: &polyhost::runtime::LoadedPlugin,
    script: &serde_json::Value,
) -> anyhow::Result<()> {
    use polyhost::bindings::polyhost::platform::types::Outcome;
    let events = [event("e1", "probe", script)];
    let outcomes = plugin
        .handle(&batch("t"), &events, Records::default())
        .await
        .map_err(|e| anyhow::anyhow!("the probe failed: {e}"))?;
    match &outcomes[..] {
        [Outcome::Ok] => Ok(()),
        [Outcome::Reject(why)] => anyhow::bail!("the probe found mismatches: {why}"),
        other => anyhow::bail!("unexpected outcomes {other:?}"),
    }
}

/// The value of the series `<metric>{plugin="<plugin>"}` in the process's metrics
/// registry; 0 when there is none yet.
pub fn plugin_series(metric: &str, plugin: &str) -> f64 {
    let prefix = format!("{metric}{{plugin=\"{plugin}\"}} ");
    polyhost::metrics::global()
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// How many observations of the histogram `<metric>{plugin="<plugin>"}` were over `bound`
/// seconds, as far as its buckets tell (those above the largest bucket bound at or under
/// `bound`).
pub fn plugin_observations_over(metric: &str, plugin: &str, bound: f64) -> f64 {
    let text = polyhost::metrics::global().encode();
    let label = format!("plugin=\"{plugin}\"");
    let bucket = format!("{metric}_bucket{{");
    let mut at_or_under = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&bucket) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if !labels.split(',').any(|l| l == label) {
            continue;
        }
        let le = labels
            .split(',')
            .find_map(|l| l.strip_prefix("le=\""))
            .and_then(|l| l.trim_end_matches('"').parse::<f64>().ok());
        if le.is_some_and(|le| le <= bound) {
            at_or_under = value.trim().parse().unwrap_or(0.0);
        }
    }
    plugin_series(&format!("{metric}_count"), plugin) - at_or_under
}
