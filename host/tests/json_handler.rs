//! The handler contract's JSON forms (`polyhost:platform/json-handler`, and
//! `json-partitions-handler` for calls of several partitions): a plugin exporting one gets
//! the events as the JSON text the contract documents, per batch and on a reused instance,
//! and its failures are the typed form's; a component exporting no form, or two, is refused
//! at load naming them.
//!
//! Needs the test plugins (`cargo xtask plugins`); the last test needs Kafka too
//! (`cargo xtask services up`), the others connect to no service.

mod common;
mod harness;

use harness::{batch, event, events, runtime, test_plugin};
use polyhost::backends::messaging;
use polyhost::bindings::polyhost::platform::types::{BatchInfo, Event, Outcome};
use polyhost::manifest::{InstanceMode, PluginSpec};
use polyhost::runtime::{BatchFailure, LoadError, LoadedPlugin, Records, Runtime};
use serde_json::{Value, json};

fn spec(plugin: &str, mode: InstanceMode) -> PluginSpec {
    let mut s = PluginSpec::new(plugin, test_plugin(plugin));
    s.subscribe = vec!["t".into()];
    s.limits.instance = mode;
    s
}

async fn load(rt: &Runtime, mode: InstanceMode) -> std::sync::Arc<LoadedPlugin> {
    let mut s = spec("json-handler", mode);
    // Long enough that a trap on a loaded machine ends before it; the loop runs into it.
    s.limits.call_timeout_ms = 2_000;
    rt.load(&s).await.expect("load json-handler")
}

/// The events of the echo batch and the JSON object the contract says each becomes.
fn echo_batch() -> (Vec<Event>, Vec<Value>) {
    let mut full = event("e-full", "echo", &json!({"user": "u1", "n": [1, 2.5, "é"]}));
    full.subject = Some("u1".into());
    full.time = Some(1_767_225_600_123_456);
    full.offset = 40;

    let mut bare = event("e-bare", "echo", &json!(null));
    bare.subject = None;
    bare.time = None;
    bare.data = b"7".to_vec();
    bare.offset = 41;

    let mut bytes = event("e-bytes", "echo", &json!({}));
    bytes.data = vec![0, 1, 2, 0xff];
    bytes.offset = 42;

    let mut text = event("e-text", "echo", &json!({}));
    text.data = b"plain text".to_vec();
    text.offset = 43;

    let mut empty = event("e-empty", "echo", &json!({}));
    empty.data = Vec::new();
    empty.offset = 44;

    let mut quoted = event("e-\"quoted\"\n", "echo", &json!("a \"string\""));
    quoted.source = "/polyhost/tests/é".into();
    quoted.offset = 45;

    let expected = vec![
        json!({"id": "e-full", "source": "/polyhost/tests", "type": "echo", "subject": "u1",
               "time": 1_767_225_600_123_456_i64, "offset": 40,
               "data": {"user": "u1", "n": [1, 2.5, "é"]}}),
        json!({"id": "e-bare", "source": "/polyhost/tests", "type": "echo", "offset": 41,
               "data": 7}),
        json!({"id": "e-bytes", "source": "/polyhost/tests", "type": "echo",
               "subject": "subject-e-bytes", "time": 1_700_000_000_000_000_i64, "offset": 42,
               "data_base64": "AAEC/w=="}),
        json!({"id": "e-text", "source": "/polyhost/tests", "type": "echo",
               "subject": "subject-e-text", "time": 1_700_000_000_000_000_i64, "offset": 43,
               "data_base64": "cGxhaW4gdGV4dA=="}),
        json!({"id": "e-empty", "source": "/polyhost/tests", "type": "echo",
               "subject": "subject-e-empty", "time": 1_700_000_000_000_000_i64, "offset": 44,
               "data_base64": ""}),
        json!({"id": "e-\"quoted\"\n", "source": "/polyhost/tests/é", "type": "echo",
               "subject": "subject-e-\"quoted\"\n", "time": 1_700_000_000_000_000_i64,
               "offset": 45, "data": "a \"string\""}),
    ];
    (vec![full, bare, bytes, text, empty, quoted], expected)
}

#[tokio::test]
async fn a_json_handler_gets_exactly_the_events_per_batch_and_reused() {
    let rt = runtime();
    for mode in [InstanceMode::PerBatch, InstanceMode::Reused] {
        let p = load(&rt, mode).await;
        let (evs, expected) = echo_batch();
        // Twice: the second time on the kept instance when reused.
        for round in 0..2 {
            let out = p
                .handle(&batch("t"), &evs, Records::default())
                .await
                .expect("handle");
            assert_eq!(out.len(), evs.len(), "{mode:?}");
            for (o, want) in out.iter().zip(&expected) {
                let Outcome::Reject(got) = o else {
                    panic!("{mode:?}: not an echo: {o:?}");
                };
                let got: Value = serde_json::from_str(got).expect("the echo is JSON");
                assert_eq!(&got, want, "{mode:?}, round {round}");
            }
        }
        if mode == InstanceMode::Reused {
            assert_eq!(p.idle_instances(), 1, "one instance kept across batches");
        }

        // Big batches in offset order, one outcome each.
        let many = events("m", "ok", 256);
        let out = p
            .handle(&batch("t"), &many, Records::default())
            .await
            .expect("handle 256");
        assert_eq!(out.len(), 256);
        assert!(out.iter().all(|o| matches!(o, Outcome::Ok)));
        let mut echoed = events("o", "echo", 5);
        echoed.reverse();
        let out = p
            .handle(&batch("t"), &echoed, Records::default())
            .await
            .expect("handle");
        let offsets: Vec<i64> = out
            .iter()
            .map(|o| match o {
                Outcome::Reject(r) => serde_json::from_str::<Value>(r).unwrap()["offset"]
                    .as_i64()
                    .unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(offsets, [4, 3, 2, 1, 0], "in the order handed over");
    }
}

/// A trap, a wrong number of outcomes and a timeout fail the call as they do for the typed
/// form; the plugin's next batch runs, and a reused instance that failed is not kept.
#[tokio::test]
async fn a_json_handler_fails_like_a_typed_one() {
    let rt = runtime();
    type Expected = fn(&BatchFailure) -> bool;
    let cases: [(&str, Expected); 3] = [
        (
            "fault.panic",
            |f| matches!(f, BatchFailure::Trap(r) if r.contains("unreachable")),
        ),
        ("fault.wrong-length", |f| {
            matches!(
                f,
                BatchFailure::WrongLength {
                    events: 2,
                    outcomes: 3
                }
            )
        }),
        ("fault.loop", |f| matches!(f, BatchFailure::Timeout(2_000))),
    ];
    for mode in [InstanceMode::PerBatch, InstanceMode::Reused] {
        let p = load(&rt, mode).await;
        for (ty, expected) in cases {
            let failure = p
                .handle(
                    &batch("t"),
                    &[event("a", "ok", &json!({})), event("x", ty, &json!({}))],
                    Records::default(),
                )
                .await
                .expect_err(ty);
            assert!(expected(&failure), "{mode:?} {ty}: {failure:?}");
            assert!(failure.is_permanent(), "{ty} must dead-letter, not retry");
            assert_eq!(p.idle_instances(), 0, "{mode:?} {ty}: not kept");

            let again = p
                .handle(&batch("t"), &events("after", "ok", 3), Records::default())
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: after {ty}, the plugin failed: {e}"));
            assert_eq!(again.len(), 3);
        }
    }
}

/// The JSON partitions form (`json-partitions-handler`): a call of several partitions
/// carries each partition's `batch-info` and its events as the JSON text the contract
/// documents, one array per partition in the call's order, and the outcomes go back per
/// partition; a batch of one partition is a call of one; a wrong number of lists fails the
/// call.
#[tokio::test]
async fn a_json_partitions_handler_gets_each_partitions_events_as_json() {
    use polyhost::bindings::partitions::exports::polyhost::platform::partitions_handler::PartitionEvents;
    let rt = runtime();
    let p = rt
        .load(&spec("json-partitions-handler", InstanceMode::Reused))
        .await
        .expect("load json-partitions-handler");
    assert!(p.takes_partitions());
    let (mut evs, expected) = echo_batch();
    for e in &mut evs {
        e.type_ = "echo.json".into();
    }
    let info = |topic: &str, partition: i32, attempt: u32| BatchInfo {
        topic: topic.into(),
        partition,
        attempt,
    };
    let with_type = |want: &Value| {
        let mut want = want.clone();
        want["type"] = json!("echo.json");
        want
    };
    // Three partitions of two topics: the echo batch split in two, and an empty one.
    let parts = vec![
        PartitionEvents {
            batch: info("a", 2, 0),
            events: evs[..4].to_vec(),
        },
        PartitionEvents {
            batch: info("b", 0, 3),
            events: evs[4..].to_vec(),
        },
        PartitionEvents {
            batch: info("a", 5, 0),
            events: Vec::new(),
        },
    ];
    let lists = p
        .handle_partitions_holding(p.instance().await, parts, Records::default())
        .await
        .expect("handle_partitions");
    assert_eq!(lists.iter().map(Vec::len).collect::<Vec<_>>(), [4, 2, 0]);
    let echoes = lists.concat();
    for (i, (o, want)) in echoes.iter().zip(&expected).enumerate() {
        let Outcome::Reject(got) = o else {
            panic!("not an echo: {o:?}");
        };
        let got: Value = serde_json::from_str(got).expect("the echo is JSON");
        let (topic, partition, attempt) = if i < 4 { ("a", 2, 0) } else { ("b", 0, 3) };
        assert_eq!(
            got,
            json!({"topic": topic, "partition": partition, "attempt": attempt,
                   "event": with_type(want)}),
        );
    }

    // One partition's batch, as the trigger hands a retry over: a call of one partition.
    let out = p
        .handle(&info("c", 1, 2), &evs[..1], Records::default())
        .await
        .expect("handle");
    let Outcome::Reject(got) = &out[0] else {
        panic!("not an echo: {out:?}");
    };
    assert_eq!(
        serde_json::from_str::<Value>(got).unwrap(),
        json!({"topic": "c", "partition": 1, "attempt": 2, "event": with_type(&expected[0])})
    );

    let failure = p
        .handle(
            &batch("t"),
            &[event("w", "fault.wrong-partitions", &json!({}))],
            Records::default(),
        )
        .await
        .expect_err("a list too many");
    assert!(
        matches!(
            failure,
            BatchFailure::WrongPartitions {
                partitions: 1,
                lists: 2
            }
        ),
        "{failure:?}"
    );
}

#[tokio::test]
async fn a_handler_exporting_both_forms_or_neither_is_refused_naming_them() {
    let rt = runtime();
    let err = rt
        .check(&spec("two-handlers", InstanceMode::PerBatch))
        .await
        .expect_err("both forms must be refused");
    let msg = err.to_string();
    assert!(matches!(err, LoadError::Link { .. }), "{msg}");
    assert!(
        msg.contains(
            "exports `polyhost:platform/handler@0.2.0` (world `minimal-handler`), `polyhost:platform/json-handler@0.2.0` (world `json-minimal-handler`): a handler exports exactly one of them"
        ),
        "{msg}"
    );
    assert!(msg.contains("exactly one of them"), "{msg}");

    // The generator exports `generator`, neither handler form.
    let mut s = PluginSpec::new("gen", harness::platform_plugin("event-generator"));
    s.subscribe = vec!["t".into()];
    s.grants.messaging = Some(messaging::Grant {
        publish: vec!["t".into()],
    });
    let err = rt
        .check(&s)
        .await
        .expect_err("neither form must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains(
            "does not export a handler: a handler exports exactly one of `polyhost:platform/handler@0.2.0` (world `minimal-handler`), `polyhost:platform/json-handler@0.2.0` (world `json-minimal-handler`), `polyhost:platform/partitions-handler@0.2.0` (world `partitions-minimal-handler`), `polyhost:platform/json-partitions-handler@0.2.0` (world `json-partitions-minimal-handler`)"
        ),
        "{msg}"
    );
    assert!(msg.contains("`json-minimal-handler`"), "{msg}");
}

/// Through the real trigger: CloudEvents from Kafka reach a JSON-form plugin as the
/// contract says (`echo` rejects with what it got, so the dead letter's reason shows it); a
/// trap in a batch hands its events over one at a time and dead-letters only the event that
/// traps, as does a wrong number of outcomes; the rest are `ok` and committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_kafka_a_json_handler_is_dead_lettered_like_a_typed_one() -> anyhow::Result<()> {
    use polyhost::trigger::{Disposition, Trigger, TriggerConfig, dlq};
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use std::collections::BTreeMap;
    use std::time::Duration;

    const N: usize = 30;
    let topic = common::unique_name("jsonform");
    let admin: AdminClient<DefaultClientContext> = common::kafka_config().create()?;
    let options = AdminOptions::new().operation_timeout(Some(common::CLIENT_TIMEOUT));
    for r in admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &options,
        )
        .await?
    {
        r.map_err(|(name, code)| anyhow::anyhow!("creating topic {name}: {code}"))?;
    }
    let cloudevent = |i: usize| {
        let ty = match i {
            5 => "fault.panic",
            12 => "fault.wrong-length",
            20 => "echo",
            _ => "test.ok",
        };
        let mut e = json!({
            "specversion": "1.0",
            "id": format!("e{i}"),
            "source": "/polyhost/tests",
            "type": ty,
            "data": {"n": i, "text": "é \"q\""},
        });
        if i == 20 {
            e["subject"] = json!("u-20");
            e["time"] = json!("2026-01-01T00:00:00.000001Z");
        }
        serde_json::to_vec(&e).unwrap()
    };
    let producer: FutureProducer = common::kafka_config().create()?;
    for i in 0..N {
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(format!("k{i}").as_bytes())
                    .payload(&cloudevent(i)),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }

    let rt = runtime();
    let mut s = PluginSpec::new(common::unique_name("plugin"), test_plugin("json-handler"));
    s.subscribe = vec![topic.clone()];
    s.limits.batch_size = 8;
    s.limits.instance = InstanceMode::Reused;
    s.limits.call_timeout_ms = 2_000;
    let plugin = rt.load(&s).await?;
    let dlq_topic = dlq::topic_for(&s.name);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let trigger = Trigger::start(
        TriggerConfig::new(common::settings().kafka.clone()),
        vec![(s, plugin)],
        Some(tx),
    )
    .await?;
    let mut seen = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < N {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(p)) => {
                seen.insert(p.offset, p.disposition);
            }
            _ => break,
        }
    }
    trigger.shutdown().await?;
    let _ = admin
        .delete_topics(&[topic.as_str(), dlq_topic.as_str()], &options)
        .await;
    assert_eq!(seen.len(), N, "every event settled: {seen:?}");

    for (offset, disposition) in &seen {
        match (*offset, disposition) {
            (5, Disposition::DeadLettered(r)) => assert!(r.contains("trapped"), "{r}"),
            (12, Disposition::DeadLettered(r)) => {
                assert!(r.contains("2 outcomes for 1 events"), "{r}")
            }
            (20, Disposition::DeadLettered(r)) => {
                let echoed: Value = serde_json::from_str(&r[r.find('{').expect("an echo")..])?;
                assert_eq!(
                    echoed,
                    json!({"id": "e20", "source": "/polyhost/tests", "type": "echo",
                           "subject": "u-20", "time": 1_767_225_600_000_001_i64,
                           "offset": 20, "data": {"n": 20, "text": "é \"q\""}})
                );
            }
            (_, Disposition::Ok) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    Ok(())
}
