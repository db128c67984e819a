//! The sandbox: plugins loaded and called in-process, faults contained, grants enforced at
//! load, compiled components cached.
//!
//! Needs the test plugins (`cargo xtask plugins`); connects to no service.

mod harness;

use std::sync::Arc;

use harness::{batch, event, events, runtime, runtime_with_cache, test_plugin};
use polyhost::backends::{ImportNeeds, import_needs};
use polyhost::bindings::polyhost::platform::types::Outcome;
use polyhost::manifest::PluginSpec;
use polyhost::runtime::{BatchFailure, CacheOutcome, LoadError, RecordMeta, Records};
use serde_json::json;

fn spec(name: &str, plugin: &str) -> PluginSpec {
    let mut s = PluginSpec::new(name, test_plugin(plugin));
    s.subscribe = vec!["t".into()];
    s
}

#[tokio::test]
async fn a_handler_returns_one_outcome_per_event() {
    let rt = runtime();
    let p = rt.load(&spec("noop", "noop-handler")).await.expect("load");
    for n in [1, 16, 256] {
        let evs = events("e", "streaming.test", n);
        let out = p
            .handle(&batch("t"), &evs, Records::default())
            .await
            .expect("handle");
        assert_eq!(out.len(), n);
        assert!(out.iter().all(|o| matches!(o, Outcome::Ok)));
    }
    assert_eq!(p.digest.len(), 64, "the version digest is a sha256");
}

#[tokio::test]
async fn reject_reaches_the_host_with_its_reason() {
    let rt = runtime();
    let p = rt
        .load(&spec("faulty", "fault-handler"))
        .await
        .expect("load");
    let mut evs = vec![
        event("a", "ok", &json!({})),
        event("b", "fault.reject", &json!({})),
        event("c", "ok", &json!({})),
    ];
    for (offset, e) in evs.iter_mut().enumerate() {
        e.offset = 10 + offset as i64;
    }
    // The reason names the key the plugin read through `polyhost:platform/records`.
    let records = Records::new(
        "t",
        0,
        evs.iter()
            .map(|e| {
                Arc::new(RecordMeta {
                    offset: e.offset,
                    key: Some(format!("key-{}", e.id).into_bytes()),
                    headers: Vec::new(),
                    timestamp_ms: None,
                })
            })
            .collect(),
    );
    let out = p.handle(&batch("t"), &evs, records).await.expect("handle");
    assert!(matches!(out[0], Outcome::Ok));
    assert!(
        matches!(&out[1], Outcome::Reject(r) if r == r#"rejected b (key Some("key-b"))"#),
        "{:?}",
        out[1]
    );
    assert!(matches!(out[2], Outcome::Ok));
    // Outside its batch, a record has no key.
    let out = p
        .handle(&batch("t"), &evs[1..2], Records::default())
        .await
        .expect("handle");
    assert!(
        matches!(&out[0], Outcome::Reject(r) if r == "rejected b (key None)"),
        "{:?}",
        out[0]
    );
}

/// Each fault ends its own call only: the same plugin's next batch and another plugin's
/// batch run normally afterwards.
#[tokio::test]
async fn faults_end_the_call_only() {
    let rt = runtime();
    let mut s = spec("faulty", "fault-handler");
    // Long enough that a trap under a loaded machine (debug build, a fresh instance per
    // batch) still ends before it; the loop runs into it.
    s.limits.call_timeout_ms = 2_000;
    s.limits.memory_mb = 32;
    let faulty = rt.load(&s).await.expect("load faulty");
    let healthy = rt
        .load(&spec("noop", "noop-handler"))
        .await
        .expect("load noop");

    type Expected = fn(&BatchFailure) -> bool;
    let cases: [(&str, Expected); 5] = [
        (
            "fault.panic",
            |f| matches!(f, BatchFailure::Trap(r) if r.contains("unreachable")),
        ),
        ("fault.loop", |f| matches!(f, BatchFailure::Timeout(2_000))),
        (
            "fault.memory",
            |f| matches!(f, BatchFailure::Trap(r) if r.contains("memory")),
        ),
        (
            "fault.stack",
            |f| matches!(f, BatchFailure::Trap(r) if r.contains("call stack exhausted")),
        ),
        ("fault.wrong-length", |f| {
            matches!(
                f,
                BatchFailure::WrongLength {
                    events: 1,
                    outcomes: 2
                }
            )
        }),
    ];
    for (ty, expected) in cases {
        let failure = faulty
            .handle(
                &batch("t"),
                &[event("x", ty, &json!({}))],
                Records::default(),
            )
            .await
            .expect_err(ty);
        assert!(expected(&failure), "{ty}: unexpected failure {failure:?}");
        assert!(failure.is_permanent(), "{ty} must dead-letter, not retry");

        let again = faulty
            .handle(&batch("t"), &events("after", "ok", 3), Records::default())
            .await
            .unwrap_or_else(|e| panic!("after {ty}, the same plugin failed: {e}"));
        assert_eq!(again.len(), 3);
        let other = healthy
            .handle(&batch("t"), &events("other", "ok", 3), Records::default())
            .await
            .unwrap_or_else(|e| panic!("after {ty}, another plugin failed: {e}"));
        assert_eq!(other.len(), 3);
    }
}

#[tokio::test]
async fn a_plugin_gets_the_memory_its_limit_says_and_no_more() {
    // The tests' runtime gives a memory slot 128 MiB: a limit of 128 lets a plugin hold
    // 96 MiB; one of 64 stops it; one over the slot is refused at load, naming the key,
    // rather than cut to the slot unseen.
    let rt = runtime();
    let allocate = [event("big", "fault.allocate", &json!(96))];
    let mut roomy = spec("roomy", "fault-handler");
    roomy.limits.memory_mb = 128;
    let p = rt.load(&roomy).await.expect("load roomy");
    let out = p
        .handle(&batch("t"), &allocate, Records::default())
        .await
        .expect("96 MiB within a limit of 128");
    assert!(matches!(out[..], [Outcome::Ok]), "{out:?}");

    let mut tight = spec("tight", "fault-handler");
    tight.limits.memory_mb = 64;
    let p = rt.load(&tight).await.expect("load tight");
    match p.handle(&batch("t"), &allocate, Records::default()).await {
        Err(BatchFailure::Trap(r)) => assert!(r.contains("memory"), "{r}"),
        other => panic!("96 MiB within a limit of 64: {other:?}"),
    }

    let mut over = spec("over", "fault-handler");
    over.limits.memory_mb = 256;
    let e = rt
        .load(&over)
        .await
        .expect_err("a limit over the pool's slot");
    assert!(matches!(e, LoadError::MemoryOverPool { .. }), "{e:?}");
    let text = e.to_string();
    for part in ["plugin `over`", "`limits.memory_mb` = 256", "128 MiB"] {
        assert!(text.contains(part), "{text}");
    }
}

/// No files, no environment, no sockets: the plugin itself tries each and reports.
#[tokio::test]
async fn a_plugin_reaches_no_file_environment_or_socket() {
    let rt = runtime();
    let p = rt
        .load(&spec("faulty", "fault-handler"))
        .await
        .expect("load");
    let out = p
        .handle(
            &batch("t"),
            &[event("s", "sandbox.escape", &json!({}))],
            Records::default(),
        )
        .await
        .expect("handle");
    assert!(matches!(&out[0], Outcome::Ok), "{out:?}");
}

#[tokio::test]
async fn an_ungranted_import_is_refused_at_load_naming_plugin_and_interface() {
    let rt = runtime();
    let err = rt
        .load(&spec("sneaky", "sneaky-handler"))
        .await
        .expect_err("must be refused");
    let msg = err.to_string();
    assert!(matches!(err, LoadError::NotGranted { .. }), "{msg}");
    assert!(msg.contains("plugin `sneaky`"), "{msg}");
    assert!(
        msg.contains("polyhost:platform/kv") || msg.contains("wasi:keyvalue/store"),
        "{msg}"
    );
    assert!(msg.contains("keyvalue"), "{msg}");
}

/// The guest helper crate (`guest/`) is grant-free: a plugin built on the minimal world and
/// that crate alone imports only interfaces that need no grant, loads with none, and its
/// helpers work inside the component (per-entity order, retry or reject after a host error,
/// RFC 3339 times).
#[tokio::test]
async fn a_plugin_on_the_guest_helper_crate_alone_needs_no_grant() {
    let wasm = test_plugin("guest-only");
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::from_file(&engine, &wasm).expect("compile");
    let imports: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(!imports.is_empty(), "a component imports at least WASI");
    for name in &imports {
        assert!(
            matches!(import_needs(name), ImportNeeds::Nothing),
            "{name} needs a grant (or is unknown): imports {imports:?}"
        );
    }

    let rt = runtime();
    let s = spec("guest-only", "guest-only");
    assert!(s.grants == Default::default(), "the plugin has no grant");
    let p = rt.load(&s).await.expect("loads with no grant");
    let mut batch_events = [
        event("a", "t", &json!({"fail": "transient"})),
        event("b", "t", &json!({})),
        event("c", "t", &json!({"fail": "permanent"})),
        event("d", "t", &json!({})),
    ];
    for (e, subject) in batch_events.iter_mut().zip(["s1", "s1", "s2", "s3"]) {
        e.subject = Some(subject.into());
    }
    let out = p
        .handle(&batch("t"), &batch_events, Records::default())
        .await
        .expect("handle");
    let at = "2023-11-14T22:13:20.000Z";
    assert!(
        matches!(&out[0], Outcome::Retry(r) if r == &format!("\"transient\" failure at {at}")),
        "{out:?}"
    );
    assert!(
        matches!(&out[1], Outcome::Retry(r) if r.contains("`s1`")),
        "a later event of a retried subject waits: {out:?}"
    );
    assert!(
        matches!(&out[2], Outcome::Reject(r) if r == &format!("\"permanent\" failure at {at}")),
        "{out:?}"
    );
    assert!(matches!(&out[3], Outcome::Ok), "{out:?}");
}

#[tokio::test]
async fn a_component_of_the_wrong_world_is_refused() {
    let rt = runtime();
    let mut s = spec("noop-as-generator", "noop-handler");
    s.kind = polyhost::manifest::Kind::Generator;
    s.subscribe.clear();
    let err = rt.check(&s).await.expect_err("must be refused");
    assert!(
        err.to_string().contains("polyhost:platform/generator"),
        "{err}"
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_component_is_refused_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("polyhost-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.wasm");
    std::fs::write(&path, b"\0asm this is not a component").unwrap();
    let rt = runtime();
    let mut s = PluginSpec::new("broken", &path);
    s.subscribe = vec!["t".into()];
    let err = rt.check(&s).await.expect_err("must be refused");
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
    assert!(err.to_string().contains("plugin `broken`"), "{err}");
    let missing = PluginSpec::new("missing", dir.join("nope.wasm"));
    let err = rt.check(&missing).await.expect_err("must be refused");
    assert!(matches!(err, LoadError::Read { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk() {
    let dir = std::env::temp_dir().join(format!("polyhost-cache-{}", uuid::Uuid::new_v4()));
    let first = runtime_with_cache(Some(dir.clone()));
    let a = first.check(&spec("noop", "noop-handler")).await.unwrap();
    assert_eq!(a.cache, CacheOutcome::Compiled);
    drop(first);
    // A new runtime, as after a restart: same engine settings, so the entry is reused.
    let second = runtime_with_cache(Some(dir.clone()));
    let b = second.check(&spec("noop", "noop-handler")).await.unwrap();
    assert_eq!(b.cache, CacheOutcome::Hit);
    let p = second.load(&spec("noop", "noop-handler")).await.unwrap();
    assert_eq!(
        p.handle(&batch("t"), &events("c", "ok", 2), Records::default())
            .await
            .unwrap()
            .len(),
        2
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
