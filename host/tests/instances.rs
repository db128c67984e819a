//! Instances across batches (`[plugin.limits] instance = "reused"`), engine limits as
//! settings, and every ungranted import reported at once.
//!
//! Needs the test plugins (`cargo xtask plugins`); connects to no service.

mod harness;

use std::sync::Arc;

use harness::{batch, event, events, runtime, test_plugin};
use polyhost::backends::{Connections, Settings};
use polyhost::bindings::polyhost::platform::types::Outcome;
use polyhost::manifest::{InstanceMode, PluginSpec};
use polyhost::runtime::{BatchFailure, LoadError, Records, Runtime, RuntimeConfig};
use serde_json::json;

fn counter(mode: InstanceMode, reuse_batches: u32) -> PluginSpec {
    let mut s = PluginSpec::new("counter", test_plugin("call-counter"));
    s.subscribe = vec!["t".into()];
    s.limits.instance = mode;
    s.limits.reuse_batches = reuse_batches;
    s.limits.max_instances = 1;
    s
}

/// The call number the counter's instance answered with (`reject("call <n>")`).
async fn call_number(p: &polyhost::runtime::LoadedPlugin) -> u32 {
    let out = p
        .handle(&batch("t"), &events("e", "count", 3), Records::default())
        .await
        .expect("handle");
    assert_eq!(out.len(), 3);
    match &out[0] {
        Outcome::Reject(r) => r
            .strip_prefix("call ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected reason {r}")),
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[tokio::test]
async fn a_per_batch_instance_starts_fresh_every_batch() {
    let rt = runtime();
    let p = rt
        .load(&counter(InstanceMode::PerBatch, 1000))
        .await
        .expect("load");
    for _ in 0..3 {
        assert_eq!(call_number(&p).await, 1);
    }
    assert_eq!(p.idle_instances(), 0);
}

#[tokio::test]
async fn a_reused_instance_keeps_guest_state_across_batches() {
    let rt = runtime();
    let p = rt
        .load(&counter(InstanceMode::Reused, 1000))
        .await
        .expect("load");
    for n in 1..=5 {
        assert_eq!(call_number(&p).await, n);
    }
    assert_eq!(p.idle_instances(), 1);
}

#[tokio::test]
async fn a_reused_instance_is_discarded_after_a_trap() {
    let rt = runtime();
    let p = rt
        .load(&counter(InstanceMode::Reused, 1000))
        .await
        .expect("load");
    assert_eq!(call_number(&p).await, 1);
    assert_eq!(call_number(&p).await, 2);
    let failed = p
        .handle(
            &batch("t"),
            &[event("boom", "trap", &json!({}))],
            Records::default(),
        )
        .await
        .expect_err("the call traps");
    assert!(matches!(failed, BatchFailure::Trap(_)), "{failed}");
    assert_eq!(p.idle_instances(), 0, "the trapped instance is not kept");
    assert_eq!(call_number(&p).await, 1, "a fresh instance after the trap");
    assert_eq!(call_number(&p).await, 2);
}

#[tokio::test]
async fn a_reused_instance_is_replaced_after_reuse_batches() {
    let rt = runtime();
    let p = rt
        .load(&counter(InstanceMode::Reused, 2))
        .await
        .expect("load");
    let seen = [
        call_number(&p).await,
        call_number(&p).await,
        call_number(&p).await,
        call_number(&p).await,
        call_number(&p).await,
    ];
    assert_eq!(seen, [1, 2, 1, 2, 1]);
}

#[tokio::test]
async fn a_hot_swapped_version_starts_with_fresh_instances() {
    let rt = runtime();
    let spec = counter(InstanceMode::Reused, 1000);
    let old = rt.load(&spec).await.expect("load");
    assert_eq!(call_number(&old).await, 1);
    assert_eq!(call_number(&old).await, 2);
    // A hot swap loads the version again and drops the old one with its kept instances.
    let new = rt.load(&spec).await.expect("reload");
    drop(old);
    assert_eq!(call_number(&new).await, 1);
}

#[tokio::test]
async fn a_component_over_an_engine_limit_is_refused_naming_the_setting() {
    let config = RuntimeConfig {
        max_instances: 4,
        max_memory_mb: 64,
        cache_dir: None,
        max_core_instances_per_component: 1,
        ..RuntimeConfig::default()
    };
    let rt = Runtime::new(
        config,
        Arc::new(Connections::new(
            Settings::from_env().expect("connection settings"),
        )),
    )
    .expect("runtime");
    let mut spec = PluginSpec::new("small-engine", test_plugin("noop-handler"));
    spec.subscribe = vec!["t".into()];
    let err = rt.check(&spec).await.expect_err("must be refused");
    let msg = err.to_string();
    assert!(matches!(err, LoadError::EngineLimit { .. }), "{msg}");
    assert!(msg.contains("max_core_instances_per_component"), "{msg}");
    assert!(msg.contains("--max-core-instances"), "{msg}");
    assert!(!msg.contains("not a valid"), "{msg}");
}

#[tokio::test]
async fn every_ungranted_import_is_reported_with_the_line_that_grants_it() {
    let rt = runtime();
    let mut spec = PluginSpec::new("sneaky", test_plugin("sneaky-handler"));
    spec.subscribe = vec!["t".into()];
    let err = rt.check(&spec).await.expect_err("must be refused");
    let msg = err.to_string();
    let LoadError::NotGranted { missing, .. } = &err else {
        panic!("{msg}");
    };
    assert!(!missing.is_empty());
    for m in missing {
        assert!(msg.contains(&m.interface), "{msg}");
        assert!(msg.contains(&m.manifest_line), "{msg}");
    }
    assert!(msg.contains(r#"keyvalue = { prefixes = ["#), "{msg}");
}

#[tokio::test]
async fn every_batch_s_wait_for_an_instance_is_measured() {
    let rt = runtime();
    let mut spec = counter(InstanceMode::PerBatch, 1000);
    spec.name = "waiting-counter".into();
    let p = rt.load(&spec).await.expect("load");
    // One instance, two batches at once: the second waits for the first.
    let (a, b) = tokio::join!(call_number(&p), call_number(&p));
    assert_eq!((a, b), (1, 1));
    let waits = harness::plugin_series("polyhost_instance_wait_seconds_count", "waiting-counter");
    assert_eq!(waits, 2.0);
}
