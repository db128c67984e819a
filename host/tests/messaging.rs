//! The messaging backend (`polyhost:platform/messaging`) against the real broker: the
//! `messaging-probe` plugin publishes with keys and headers, and each test then consumes
//! natively what Kafka really holds, and checks that a denied topic got nothing.
//!
//! Needs Kafka (`cargo xtask services up`) and the test plugins (`cargo xtask plugins`);
//! fails, rather than skips, without them. Each test publishes to a topic of its own and
//! deletes it afterwards.

mod common;
mod harness;

use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use common::{CLIENT_TIMEOUT, Service, unique_name, with_cleanup, within};
use harness::{runtime, test_plugin};
use polyhost::backends::messaging;
use polyhost::manifest::PluginSpec;
use polyhost::runtime::{LoadedPlugin, Runtime};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};

/// A test's topic (granted), a topic it is not granted, and the probe.
struct Fixture {
    kafka: Service,
    admin: AdminClient<DefaultClientContext>,
    topic: String,
    denied: String,
    plugin: Option<Arc<LoadedPlugin>>,
    // Keeps the engine and the producer alive as long as the plugin.
    runtime: Option<Runtime>,
}

impl Fixture {
    /// Runs `script`'s steps in the plugin and fails with its list of mismatches.
    async fn run(&self, script: Value) -> Result<()> {
        let plugin = self.plugin.as_ref().expect("the fixture holds the probe");
        harness::run_script(plugin, &script).await
    }

    /// Every record of the test topic's one partition, read from the start.
    async fn records(&self) -> Result<Vec<OwnedMessage>> {
        let consumer: StreamConsumer = config()
            // Assigned, not subscribed, and nothing committed: no group is left behind.
            .set("group.id", unique_name("kafka"))
            .set("enable.auto.commit", "false")
            .create()
            .with_context(|| format!("{}: building the consumer", self.kafka))?;
        let (_, high) = self.watermarks().await?;
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition_offset(&self.topic, 0, Offset::Beginning)?;
        consumer.assign(&partitions)?;
        let mut records = Vec::new();
        while (records.len() as i64) < high {
            let record = within(
                &self.kafka,
                format!("consuming from {}", self.topic),
                consumer.recv(),
            )
            .await?;
            records.push(record.detach());
        }
        Ok(records)
    }

    /// The partition's low and high watermarks: the high one counts every record ever
    /// appended, so a record that should not be there shows even if nothing reads it.
    async fn watermarks(&self) -> Result<(i64, i64)> {
        let topic = self.topic.clone();
        let base: BaseConsumer = config()
            .create()
            .with_context(|| format!("{}: building a metadata client", self.kafka))?;
        tokio::task::spawn_blocking(move || base.fetch_watermarks(&topic, 0, CLIENT_TIMEOUT))
            .await?
            .with_context(|| format!("{}: reading the watermarks of {}", self.kafka, self.topic))
    }

    /// Whether the broker knows a topic named `name`; asked without creating it.
    async fn topic_exists(&self, name: &str) -> Result<bool> {
        let base: BaseConsumer = config()
            .create()
            .with_context(|| format!("{}: building a metadata client", self.kafka))?;
        let metadata =
            tokio::task::spawn_blocking(move || base.fetch_metadata(None, CLIENT_TIMEOUT))
                .await?
                .with_context(|| format!("{}: listing topics", self.kafka))?;
        Ok(metadata.topics().iter().any(|t| t.name() == name))
    }
}

fn config() -> ClientConfig {
    let mut config = common::kafka_config();
    config
        // Asking about a topic must never create it (librdkafka's consumers default to
        // this; said here because the denied topic's absence is what a test checks).
        .set("allow.auto.create.topics", "false");
    config
}

/// Creates the test's topic (one partition, so the order of all its records is one),
/// loads the probe granted only that topic, runs `body`, and deletes the topics.
async fn with_fixture(body: impl AsyncFnOnce(&mut Fixture) -> Result<()>) -> Result<()> {
    let kafka = Service::kafka();
    let admin: AdminClient<DefaultClientContext> = config()
        .create()
        .with_context(|| format!("{kafka}: building the admin client"))?;
    let options = AdminOptions::new()
        .request_timeout(Some(CLIENT_TIMEOUT))
        .operation_timeout(Some(CLIENT_TIMEOUT));
    let topic = unique_name("msg");
    let created = within(
        &kafka,
        format!("creating topic {topic}"),
        admin.create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &options,
        ),
    )
    .await?;
    for result in created {
        if let Err((name, code)) = result {
            bail!("{kafka}: creating topic {name}: {code}");
        }
    }

    let mut fixture = Fixture {
        kafka: kafka.clone(),
        admin,
        topic: topic.clone(),
        denied: unique_name("msgdenied"),
        plugin: None,
        runtime: None,
    };
    with_cleanup(
        &mut fixture,
        async |f| {
            let rt = runtime();
            let mut spec = PluginSpec::new("messaging-probe", test_plugin("messaging-probe"));
            spec.subscribe = vec!["t".into()];
            spec.grants.messaging = Some(messaging::Grant {
                publish: vec![f.topic.clone()],
            });
            spec.limits.host_call_timeout_ms = 20_000;
            spec.limits.call_timeout_ms = 60_000;
            f.plugin = Some(
                rt.load(&spec)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: loading the probe: {e}", f.kafka))?,
            );
            f.runtime = Some(rt);
            body(f).await
        },
        async |f| {
            f.plugin = None;
            f.runtime = None;
            // The denied topic is deleted too, in case a failing test let it be created.
            let deleted = within(
                &f.kafka,
                format!("deleting topic {}", f.topic),
                f.admin.delete_topics(&[&f.topic, &f.denied], &options),
            )
            .await?;
            for result in deleted {
                match result {
                    Ok(_) => {}
                    Err((name, _)) if name == f.denied => {}
                    Err((name, code)) => bail!("{}: deleting topic {name}: {code}", f.kafka),
                }
            }
            Ok(())
        },
    )
    .await
}

fn header<'a>(record: &'a OwnedMessage, name: &str) -> Vec<&'a [u8]> {
    record
        .headers()
        .map(|h| {
            h.iter()
                .filter(|h| h.key == name)
                .map(|h| h.value.unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn publishes_keys_values_and_headers_in_order() -> Result<()> {
    with_fixture(async |f| {
        let topic = f.topic.clone();
        f.run(json!({"steps": [
            {"call": "publish", "message": {
                "topic": topic, "key": "user-1", "value": "{\"n\":1}",
                "headers": [["trace-id", "abc"], ["bin", [0, 255]]]}},
            {"call": "publish-batch", "messages": [
                {"topic": topic, "key": "user-2", "value": "two", "headers": [["h", "1"]]},
                {"topic": topic, "value": "three"},
                {"topic": topic, "key": [0, 1, 2], "value": [255, 0],
                 "headers": [["h", "a"], ["h", "b"]]},
            ]},
            {"call": "publish-batch", "messages": []},
        ]}))
        .await?;

        let records = f.records().await?;
        type KeyAndValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);
        let seen: Vec<KeyAndValue> = records.iter().map(|r| (r.key(), r.payload())).collect();
        assert_eq!(
            seen,
            [
                (Some(&b"user-1"[..]), Some(&b"{\"n\":1}"[..])),
                (Some(&b"user-2"[..]), Some(&b"two"[..])),
                (None, Some(&b"three"[..])),
                (Some(&[0, 1, 2][..]), Some(&[255, 0][..])),
            ]
        );
        assert_eq!(header(&records[0], "trace-id"), [b"abc"]);
        assert_eq!(header(&records[0], "bin"), [&[0, 255][..]]);
        assert_eq!(header(&records[1], "h"), [b"1"]);
        assert!(records[2].headers().is_none_or(|h| h.count() == 0));
        assert_eq!(header(&records[3], "h"), [b"a", b"b"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_ungranted_topic_is_refused_and_gets_nothing() -> Result<()> {
    with_fixture(async |f| {
        let (topic, denied) = (f.topic.clone(), f.denied.clone());
        f.run(json!({"steps": [
            {"call": "publish", "message": {"topic": denied, "key": "k", "value": "x"},
             "expect": {"err": "denied", "transient": false}},
            // One denied topic in a batch: nothing of the batch is sent, granted ones neither.
            {"call": "publish-batch", "messages": [
                {"topic": topic, "value": "never"},
                {"topic": denied, "value": "x"},
            ], "expect": {"err": "denied", "transient": false}},
            // A name that only looks like the granted one.
            {"call": "publish", "message": {"topic": format!("{topic}.x"), "value": "x"},
             "expect": {"err": "denied"}},
            {"call": "publish", "message": {"topic": "", "value": "x"}, "expect": {"err": "denied"}},
        ]}))
        .await?;

        assert!(!f.topic_exists(&f.denied).await?, "the denied topic was created");
        assert!(!f.topic_exists(&format!("{}.x", f.topic)).await?);
        let records = f.records().await?;
        assert!(records.is_empty(), "the granted topic got {} record(s)", records.len());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_message_too_large_is_invalid_and_not_sent() -> Result<()> {
    with_fixture(async |f| {
        let topic = f.topic.clone();
        f.run(json!({"steps": [
            {"call": "publish", "message": {"topic": topic, "value_size": 2_000_000},
             "expect": {"err": "invalid", "transient": false}},
            {"call": "publish", "message": {"topic": topic, "value": "small"}},
        ]}))
        .await?;
        let records = f.records().await?;
        let payloads: Vec<Option<&[u8]>> = records.iter().map(|r| r.payload()).collect();
        assert_eq!(payloads, [Some(&b"small"[..])]);
        Ok(())
    })
    .await
}
