//! The handler contract's partitions form (`polyhost:platform/partitions-handler`),
//! through the real trigger: the partitions whose records are ready together share one
//! call, each partition's events in offset order with its own `batch-info`, and a record's
//! key is asked by topic, partition and offset; a failed call of several partitions hands
//! every partition's events over one at a time, so only the culprits are dead-lettered.
//! The same holds of the form with the events as JSON text (`json-partitions-handler`).
//!
//! Needs the test plugins (`cargo xtask plugins`) and Kafka (`cargo xtask services up`).

mod common;
mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::test_plugin;
use polyhost::manifest::{InstanceMode, PluginSpec};
use polyhost::trigger::{Disposition, Processed, Trigger, TriggerConfig, dlq};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

const PARTITIONS: i32 = 3;

/// Produces, to each partition `p` of `topic`, one CloudEvent per type of `types(p)`: the
/// `i`-th with id `<prefix><p>-<i>` and key `k<p>-<first + i>` (`first`: the partition's
/// next offset, so a key names its offset) and one header `h`.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    prefix: &str,
    first: usize,
    types: impl Fn(i32) -> Vec<&'static str>,
) -> anyhow::Result<()> {
    for p in 0..PARTITIONS {
        for (i, ty) in types(p).into_iter().enumerate() {
            let payload = json!({
                "specversion": "1.0", "id": format!("{prefix}{p}-{i}"),
                "source": "/polyhost/tests", "type": ty, "data": {"i": i},
            })
            .to_string();
            producer
                .send(
                    FutureRecord::to(topic)
                        .partition(p)
                        .key(format!("k{p}-{}", first + i).as_bytes())
                        .headers(OwnedHeaders::new().insert(Header {
                            key: "h",
                            value: Some("v"),
                        }))
                        .payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)?;
        }
    }
    Ok(())
}

/// Waits until `n` more events have settled; by (partition, offset).
async fn settled(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Processed>,
    n: usize,
) -> BTreeMap<(i32, i64), Disposition> {
    let mut seen = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(p)) => {
                seen.insert((p.partition, p.offset), p.disposition);
            }
            _ => break,
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_ready_together_share_a_call_and_a_failed_call_is_split_per_event()
-> anyhow::Result<()> {
    shared_calls_and_split_failures("partitions-handler").await
}

/// The same through the JSON partitions form (`json-partitions-handler`): a plugin that
/// answers alike from the call's JSON text gets the same calls and the same dispositions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_json_partitions_form_shares_calls_and_splits_failures_alike() -> anyhow::Result<()> {
    shared_calls_and_split_failures("json-partitions-handler").await
}

/// The partitions form's trip through the trigger, with the test plugin `plugin` (which
/// answers as `test-plugins/partitions-handler` documents).
async fn shared_calls_and_split_failures(plugin: &str) -> anyhow::Result<()> {
    let topic = common::unique_name("partitions");
    let admin: AdminClient<DefaultClientContext> = common::kafka_config().create()?;
    let options = AdminOptions::new().operation_timeout(Some(common::CLIENT_TIMEOUT));
    for r in admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &options,
        )
        .await?
    {
        r.map_err(|(name, code)| anyhow::anyhow!("creating topic {name}: {code}"))?;
    }
    let producer: FutureProducer = common::kafka_config().create()?;
    // Every partition's records are there before the plugin starts: the first call
    // gathers all three partitions. The window waits three seconds: under the load of the
    // whole suite, one partition's first fetch came more than half a second after the
    // others'.
    let first = ["echo", "test.ok", "test.ok", "echo"];
    produce(&producer, &topic, "e", 0, |_| first.to_vec()).await?;

    let rt = harness::runtime();
    let mut s = PluginSpec::new(common::unique_name("plugin"), test_plugin(plugin));
    s.subscribe = vec![topic.clone()];
    s.limits.batch_size = 64;
    s.limits.batch_wait_ms = 3_000;
    s.limits.instance = InstanceMode::Reused;
    s.limits.call_timeout_ms = 2_000;
    let plugin = rt.load(&s).await?;
    assert!(plugin.takes_partitions());
    let dlq_topic = dlq::topic_for(&s.name);
    let s_name = s.name.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let trigger = Trigger::start(
        TriggerConfig::new(common::settings().kafka.clone()),
        vec![(s, plugin)],
        Some(tx),
    )
    .await?;

    let n = first.len() * PARTITIONS as usize;
    let seen = settled(&mut rx, n).await;
    assert_eq!(seen.len(), n, "every event settled: {seen:?}");
    // One gathered call: each event's wait for its first hand-over, measured once.
    assert_eq!(
        harness::plugin_series("polyhost_event_wait_seconds_count", &s_name),
        n as f64
    );
    for ((p, offset), disposition) in &seen {
        match (first[*offset as usize], disposition) {
            ("echo", Disposition::DeadLettered(reason)) => assert_eq!(
                reason,
                &format!(
                    "{topic}/{p}@{offset} attempt 0; key-at k{p}-{offset}; key -; call of 3 partitions and 12 events"
                ),
            ),
            ("test.ok", Disposition::Ok) => {}
            other => panic!("partition {p} offset {offset}: unexpected {other:?}"),
        }
    }

    // A call of three partitions that traps: every partition's events are handed over
    // again one at a time, so the trap and the wrong answer are dead-lettered alone (an
    // echo then shows a call of one partition, whose key an offset alone names).
    let second = [
        "test.ok",
        "fault.panic",
        "echo",
        "fault.wrong-length",
        "test.ok",
    ];
    // Partition 1 gets the trap, partition 2 the wrong answer; the others `test.ok` there.
    let types = |p: i32| -> Vec<&'static str> {
        second
            .iter()
            .map(|&ty| match ty {
                "fault.panic" if p != 1 => "test.ok",
                "fault.wrong-length" if p != 2 => "test.ok",
                ty => ty,
            })
            .collect()
    };
    produce(&producer, &topic, "f", first.len(), types).await?;
    let n = second.len() * PARTITIONS as usize;
    let seen = settled(&mut rx, n).await;
    assert_eq!(seen.len(), n, "every event settled: {seen:?}");
    for ((p, offset), disposition) in &seen {
        let i = *offset as usize - first.len();
        match (types(*p)[i], disposition) {
            ("fault.panic", Disposition::DeadLettered(r)) => assert!(r.contains("trapped"), "{r}"),
            ("fault.wrong-length", Disposition::DeadLettered(r)) => {
                assert!(r.contains("2 outcomes for 1 events"), "{r}")
            }
            ("echo", Disposition::DeadLettered(reason)) => assert!(
                reason.starts_with(&format!("{topic}/{p}@{offset} attempt "))
                    && reason.ends_with(&format!(
                        "; key-at k{p}-{offset}; key k{p}-{offset}; call of 1 partitions and 1 events"
                    )),
                "{reason}"
            ),
            ("test.ok", Disposition::Ok) => {}
            other => panic!("partition {p} offset {offset}: unexpected {other:?}"),
        }
    }

    // A call answered with one list of outcomes too many fails as a whole, and a plugin
    // asking `records` for what its call does not hold gets nothing. The third partition's
    // `test.ok` makes the call one of several partitions.
    let third = |p: i32| -> Vec<&'static str> {
        vec![["probe", "fault.wrong-partitions", "test.ok"][p as usize]]
    };
    let from = first.len() + second.len();
    produce(&producer, &topic, "g", from, third).await?;
    let seen = settled(&mut rx, PARTITIONS as usize).await;
    trigger.shutdown().await?;
    let _ = admin
        .delete_topics(&[topic.as_str(), dlq_topic.as_str()], &options)
        .await;
    assert_eq!(
        seen.len(),
        PARTITIONS as usize,
        "every event settled: {seen:?}"
    );
    for ((p, offset), disposition) in &seen {
        assert_eq!(*offset as usize, from, "partition {p}");
        match (third(*p)[0], disposition) {
            ("probe", Disposition::DeadLettered(r)) => assert_eq!(
                r,
                "other-topic -; other-partition -; other-offset -; long-topic -; headers 0; own headers 1"
            ),
            ("fault.wrong-partitions", Disposition::DeadLettered(r)) => assert!(
                r.contains("returned 2 lists of outcomes for 1 partitions"),
                "{r}"
            ),
            ("test.ok", Disposition::Ok) => {}
            other => panic!("partition {p} offset {offset}: unexpected {other:?}"),
        }
    }
    Ok(())
}
