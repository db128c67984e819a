//! The Kafka trigger against the real broker: records produced to a fresh topic reach the
//! plugin through its own consumer group, every event ends final exactly once as far as
//! the host can tell, offsets are committed, and permanent failures land in the plugin's
//! dead-letter topic with their headers.
//!
//! Needs Kafka (`cargo xtask services up`) and the test plugins (`cargo xtask plugins`).
//! Each test uses topics, a plugin name and a group of its own, and deletes its topics.

mod common;
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use common::{CLIENT_TIMEOUT, Service, unique_name, within};
use harness::{runtime, test_plugin};
use polyhost::manifest::PluginSpec;
use polyhost::trigger::{Disposition, Hook, Processed, Trigger, TriggerConfig, dlq};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use tokio::sync::mpsc;

/// Logs to the test's output when `POLYHOST_LOG` is set (e.g. `polyhost=debug`).
fn logs() {
    if let Ok(filter) = std::env::var("POLYHOST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// The host's Kafka settings for this run (TLS and SASL when secured).
fn kafka() -> polyhost::connections::Kafka {
    common::settings().kafka.clone()
}

/// A test's topic and plugin name, deleted (with the dead-letter topic) on drop of the
/// body's result.
struct Fixture {
    kafka: Service,
    admin: AdminClient<DefaultClientContext>,
    topic: String,
    plugin: String,
    partitions: i32,
}

impl Fixture {
    async fn new(partitions: i32) -> Result<Fixture> {
        let kafka = Service::kafka();
        let admin: AdminClient<DefaultClientContext> = common::kafka_config().create()?;
        let topic = unique_name("trig");
        let created = within(
            &kafka,
            format!("creating topic {topic}"),
            admin.create_topics(
                &[NewTopic::new(
                    &topic,
                    partitions,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT)),
            ),
        )
        .await?;
        for r in created {
            if let Err((name, code)) = r {
                bail!("{kafka}: creating topic {name}: {code}");
            }
        }
        Ok(Fixture {
            kafka,
            admin,
            plugin: unique_name("plugin"),
            topic,
            partitions,
        })
    }

    async fn cleanup(&self) -> Result<()> {
        let dlq = dlq::topic_for(&self.plugin);
        let _ = self
            .admin
            .delete_topics(
                &[self.topic.as_str(), dlq.as_str()],
                &AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT)),
            )
            .await?;
        Ok(())
    }

    /// Produces `(key, value)` records and waits for every acknowledgement.
    async fn produce(&self, records: &[(String, Vec<u8>)]) -> Result<()> {
        let producer: FutureProducer = common::kafka_config()
            .set("enable.idempotence", "true")
            .create()?;
        let sends = records.iter().map(|(k, v)| {
            producer.send(
                FutureRecord::to(&self.topic).key(k.as_bytes()).payload(v),
                Duration::from_secs(10),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e).context("producing")?;
        }
        Ok(())
    }

    fn spec(&self, plugin: &str, batch_size: u32) -> PluginSpec {
        let mut spec = PluginSpec::new(&self.plugin, test_plugin(plugin));
        spec.subscribe = vec![self.topic.clone()];
        spec.limits.batch_size = batch_size;
        spec.limits.max_instances = 2;
        spec.limits.call_timeout_ms = 1_000;
        spec
    }

    /// The group's committed offsets, per partition.
    async fn committed(&self, group: &str) -> Result<Vec<i64>> {
        let consumer: BaseConsumer = common::kafka_config().set("group.id", group).create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let tpl =
            tokio::task::spawn_blocking(move || consumer.committed_offsets(tpl, CLIENT_TIMEOUT))
                .await??;
        Ok(tpl
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            })
            .collect())
    }

    /// Every record of the dead-letter topic, once it holds `n` (and checks it holds no more).
    async fn dead_letters(&self, n: usize) -> Result<Vec<OwnedMessage>> {
        let topic = dlq::topic_for(&self.plugin);
        let consumer: StreamConsumer = common::kafka_config()
            .set("group.id", unique_name("dlqreader"))
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let mut out = Vec::new();
        while out.len() < n {
            let m = within(&self.kafka, format!("reading {topic}"), consumer.recv()).await?;
            out.push(m.detach());
        }
        let extra = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await;
        ensure!(extra.is_err(), "more than {n} dead letters");
        Ok(out)
    }
}

fn cloudevent(id: &str, ty: &str, n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "specversion": "1.0",
        "id": id,
        "source": "/polyhost/tests",
        "type": ty,
        "subject": format!("k{}", n % 10),
        "time": "2026-01-01T00:00:00Z",
        "data": {"n": n},
    }))
    .unwrap()
}

/// Collects what the trigger reports until `done` says enough, or fails after `limit`.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Processed>,
    limit: Duration,
    done: impl Fn(&[Processed]) -> bool,
) -> Result<Vec<Processed>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(p)) => seen.push(p),
            Ok(None) => bail!("the trigger stopped reporting"),
            Err(_) => bail!("timed out with {} events reported", seen.len()),
        }
    }
    Ok(seen)
}

async fn with_fixture(
    partitions: i32,
    body: impl AsyncFnOnce(&Fixture) -> Result<()>,
) -> Result<()> {
    logs();
    let fixture = Fixture::new(partitions).await?;
    let outcome = body(&fixture).await;
    let cleaned = fixture.cleanup().await;
    outcome.and(cleaned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_is_processed_and_committed() -> Result<()> {
    with_fixture(3, async |f| {
        const N: usize = 300;
        let records: Vec<(String, Vec<u8>)> = (0..N)
            .map(|i| {
                (
                    format!("k{}", i % 10),
                    cloudevent(&format!("e{i}"), "test.ok", i),
                )
            })
            .collect();
        f.produce(&records).await?;

        let spec = f.spec("noop-handler", 16);
        let group = spec.group_id();
        let rt = runtime();
        let plugin = rt.load(&spec).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let trigger =
            Trigger::start(TriggerConfig::new(kafka()), vec![(spec, plugin)], Some(tx)).await?;
        let seen = collect(&mut rx, Duration::from_secs(60), |s| {
            s.iter()
                .filter_map(|p| p.id.clone())
                .collect::<BTreeSet<_>>()
                .len()
                >= N
        })
        .await;
        trigger.shutdown().await?;
        let seen = seen?;

        let ids: BTreeSet<_> = seen.iter().filter_map(|p| p.id.clone()).collect();
        assert_eq!(ids.len(), N);
        assert!(ids.iter().all(|id| {
            records
                .iter()
                .any(|(_, v)| v == &cloudevent(id, "test.ok", id[1..].parse().unwrap()))
        }));
        assert!(seen.iter().all(|p| p.disposition == Disposition::Ok));
        // Per partition, offsets were reported in order.
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        for p in &seen {
            let prev = last.insert(p.partition, p.offset);
            assert!(
                prev.is_none_or(|o| o < p.offset),
                "out of order in partition {}",
                p.partition
            );
        }
        let committed = f.committed(&group).await?;
        assert_eq!(
            committed.iter().sum::<i64>(),
            N as i64,
            "committed {committed:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_rejects_and_traps_are_dead_lettered_and_the_rest_go_on() -> Result<()> {
    with_fixture(1, async |f| {
        const N: usize = 40;
        let mut expected_dead = BTreeMap::new();
        let records: Vec<(String, Vec<u8>)> = (0..N)
            .map(|i| {
                let id = format!("e{i}");
                let value = match i {
                    7 => {
                        expected_dead.insert(i as i64, "not JSON");
                        b"{not json".to_vec()
                    }
                    15 => {
                        expected_dead.insert(i as i64, "`id` is missing");
                        br#"{"specversion":"1.0","source":"/t","type":"x"}"#.to_vec()
                    }
                    22 => {
                        expected_dead.insert(i as i64, "trap");
                        cloudevent(&id, "fault.panic", i)
                    }
                    i if i % 10 == 3 => {
                        expected_dead.insert(i as i64, "rejected");
                        cloudevent(&id, "fault.reject", i)
                    }
                    _ => cloudevent(&id, "test.ok", i),
                };
                (format!("k{}", i % 10), value)
            })
            .collect();
        f.produce(&records).await?;

        let spec = f.spec("fault-handler", 8);
        let group = spec.group_id();
        let rt = runtime();
        let plugin = rt.load(&spec).await?;
        let digest = plugin.digest.clone();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let trigger =
            Trigger::start(TriggerConfig::new(kafka()), vec![(spec, plugin)], Some(tx)).await?;
        let seen = collect(&mut rx, Duration::from_secs(60), |s| s.len() >= N).await;
        trigger.shutdown().await?;
        let seen = seen?;

        let offsets: BTreeSet<i64> = seen.iter().map(|p| p.offset).collect();
        assert_eq!(offsets.len(), N, "every record settled once");
        let dead: BTreeSet<i64> = seen
            .iter()
            .filter(|p| matches!(p.disposition, Disposition::DeadLettered(_)))
            .map(|p| p.offset)
            .collect();
        assert_eq!(dead, expected_dead.keys().copied().collect());

        let letters = f.dead_letters(expected_dead.len()).await?;
        for m in &letters {
            let headers: BTreeMap<String, String> = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let offset: i64 = headers[dlq::ORIGINAL_OFFSET].parse()?;
            let why = expected_dead
                .get(&offset)
                .context("an unexpected dead letter")?;
            assert!(headers[dlq::REASON].contains(why), "{offset}: {headers:?}");
            if *why == "rejected" {
                // The plugin read the record's key through `records`: in whole batches, and
                // (offset 23, when it shares a batch with the trap at 22) handed over alone.
                let key = format!("(key Some(\"k{}\"))", offset % 10);
                assert!(headers[dlq::REASON].contains(&key), "{offset}: {headers:?}");
            }
            assert_eq!(headers[dlq::PLUGIN], f.plugin);
            assert_eq!(headers[dlq::VERSION], digest);
            assert_eq!(headers[dlq::ORIGINAL_TOPIC], f.topic);
            assert_eq!(headers[dlq::ORIGINAL_PARTITION], "0");
            assert_eq!(m.payload(), Some(&records[offset as usize].1[..]));
        }
        assert_eq!(f.committed(&group).await?, vec![N as i64]);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retried_events_are_handed_over_again_and_never_dead_lettered() -> Result<()> {
    with_fixture(1, async |f| {
        const N: usize = 20;
        let records: Vec<(String, Vec<u8>)> = (0..N)
            .map(|i| {
                let ty = match i {
                    4 | 11 => "flaky.retry-3",
                    9 => "flaky.retry-then-reject-2",
                    _ => "test.ok",
                };
                (format!("k{}", i % 10), cloudevent(&format!("e{i}"), ty, i))
            })
            .collect();
        f.produce(&records).await?;

        let spec = f.spec("flaky-handler", 8);
        let group = spec.group_id();
        let rt = runtime();
        let plugin = rt.load(&spec).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut config = TriggerConfig::new(kafka());
        config.backoff.base = Duration::from_millis(10);
        config.backoff.cap = Duration::from_millis(100);
        let trigger = Trigger::start(config, vec![(spec, plugin)], Some(tx)).await?;
        let seen = collect(&mut rx, Duration::from_secs(60), |s| s.len() >= N).await;
        trigger.shutdown().await?;
        let seen = seen?;

        let by_offset: BTreeMap<i64, &Processed> = seen.iter().map(|p| (p.offset, p)).collect();
        assert_eq!(by_offset.len(), N);
        for o in [4, 11] {
            assert_eq!(by_offset[&o].disposition, Disposition::Ok);
            assert_eq!(by_offset[&o].attempts, 4, "three retries, then ok");
        }
        assert!(matches!(
            by_offset[&9].disposition,
            Disposition::DeadLettered(_)
        ));
        assert_eq!(by_offset[&9].attempts, 3);
        let others = by_offset
            .values()
            .filter(|p| ![4, 9, 11].contains(&p.offset))
            .filter(|p| p.disposition != Disposition::Ok)
            .count();
        assert_eq!(others, 0);
        let letters = f.dead_letters(1).await?;
        let attempts = letters[0]
            .headers()
            .and_then(|hs| hs.iter().find(|h| h.key == dlq::ATTEMPTS))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        assert_eq!(attempts.as_deref(), Some("3"));
        assert_eq!(f.committed(&group).await?, vec![N as i64]);
        Ok(())
    })
    .await
}

/// Ids of the events reported final.
fn ids(seen: &[Processed]) -> BTreeSet<String> {
    seen.iter().filter_map(|p| p.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_trigger_commits_what_it_finished_and_a_restart_loses_nothing() -> Result<()> {
    with_fixture(2, async |f| {
        const N: usize = 3000;
        let records: Vec<(String, Vec<u8>)> = (0..N)
            .map(|i| {
                (
                    format!("k{}", i % 10),
                    cloudevent(&format!("e{i}"), "test.ok", i),
                )
            })
            .collect();
        f.produce(&records).await?;
        let spec = f.spec("noop-handler", 8);
        let group = spec.group_id();
        let rt = runtime();
        let plugin = rt.load(&spec).await?;

        let (tx, mut rx) = mpsc::unbounded_channel();
        let config = TriggerConfig::new(kafka());
        let first = Trigger::start(
            config.clone(),
            vec![(spec.clone(), plugin.clone())],
            Some(tx),
        )
        .await?;
        let early = collect(&mut rx, Duration::from_secs(60), |s| s.len() >= 200).await;
        first.shutdown().await?;
        let mut before = early?;
        // What was reported after the stop signal was finished during the drain.
        while let Ok(p) = rx.try_recv() {
            before.push(p);
        }
        // Every partition's committed offset covers exactly the contiguous prefix reported.
        let committed = f.committed(&group).await?;
        for (p, &c) in committed.iter().enumerate() {
            let offsets: BTreeSet<i64> = before
                .iter()
                .filter(|x| x.partition == p as i32)
                .map(|x| x.offset)
                .collect();
            let prefix = (0..).take_while(|o| offsets.contains(o)).count() as i64;
            assert_eq!(
                c.max(0),
                prefix,
                "partition {p}: committed {c}, reported prefix {prefix}"
            );
        }
        let first_ids = ids(&before);
        assert!(first_ids.len() < N, "the first run should stop mid-stream");

        let (tx, mut rx) = mpsc::unbounded_channel();
        let second = Trigger::start(config, vec![(spec, plugin)], Some(tx)).await?;
        let rest = N - committed.iter().map(|c| c.max(&0)).sum::<i64>() as usize;
        let after = collect(&mut rx, Duration::from_secs(60), |s| s.len() >= rest).await;
        second.shutdown().await?;
        let after = after?;
        assert_eq!(
            after.len(),
            rest,
            "the restart starts at the committed offsets"
        );
        let all: BTreeSet<String> = first_ids.union(&ids(&after)).cloned().collect();
        assert_eq!(all.len(), N, "nothing lost");
        assert_eq!(f.committed(&group).await?.iter().sum::<i64>(), N as i64);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_triggers_share_the_partitions_and_one_leaving_loses_nothing() -> Result<()> {
    with_fixture(4, async |f| {
        const N: usize = 4000;
        let records: Vec<(String, Vec<u8>)> = (0..N)
            .map(|i| {
                (
                    format!("k{}", i % 10),
                    cloudevent(&format!("e{i}"), "test.ok", i),
                )
            })
            .collect();
        f.produce(&records[..N / 2]).await?;
        let spec = f.spec("noop-handler", 4);
        let group = spec.group_id();
        let rt = runtime();
        let plugin = rt.load(&spec).await?;
        let config = TriggerConfig::new(kafka());

        let (tx_a, mut rx_a) = mpsc::unbounded_channel();
        let (tx_b, mut rx_b) = mpsc::unbounded_channel();
        let a = Trigger::start(
            config.clone(),
            vec![(spec.clone(), plugin.clone())],
            Some(tx_a),
        )
        .await?;
        let mut seen = collect(&mut rx_a, Duration::from_secs(60), |s| s.len() >= 100).await?;
        // B joins: the group rebalances while A is consuming the second half, which
        // arrives in chunks; once B has processed something, A leaves mid-stream.
        let b = Trigger::start(config, vec![(spec, plugin)], Some(tx_b)).await?;
        let production = async {
            for chunk in records[N / 2..].chunks(200) {
                f.produce(chunk).await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            anyhow::Ok(())
        };
        let handover = async {
            let by_b = collect(&mut rx_b, Duration::from_secs(60), |s| !s.is_empty()).await;
            a.shutdown().await?;
            by_b
        };
        let (produced, by_b) = tokio::join!(production, handover);
        produced?;
        seen.extend(by_b?);
        while let Ok(p) = rx_a.try_recv() {
            seen.push(p);
        }
        // Until every id was seen (a set kept as we go: recounting would be quadratic).
        let mut all = ids(&seen);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let mut after_a = 0;
        let rest = async {
            while all.len() < N {
                match tokio::time::timeout_at(deadline, rx_b.recv()).await {
                    Ok(Some(p)) => {
                        all.extend(p.id.clone());
                        seen.push(p);
                        after_a += 1;
                    }
                    _ => bail!("timed out with {} of {N} ids", all.len()),
                }
            }
            Ok(())
        }
        .await;
        b.shutdown().await?;
        rest?;
        assert_eq!(ids(&seen).len(), N, "nothing lost");
        assert!(after_a > 0, "A should leave mid-stream");
        assert_eq!(f.committed(&group).await?.iter().sum::<i64>(), N as i64);
        eprintln!(
            "{} reports for {N} events ({} redelivered)",
            seen.len(),
            seen.len() - N
        );
        Ok(())
    })
    .await
}

// --- A hostile plugin cannot jam its partition -------------------------------------------

/// A record's headers, by name (the last of a repeated name wins).
fn headers_of(m: &OwnedMessage) -> BTreeMap<String, String> {
    m.headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Fixture {
    /// Creates the plugin's dead-letter topic before the trigger does, accepting records of
    /// at most `max_message_bytes`.
    async fn small_dead_letter_topic(&self, max_message_bytes: usize) -> Result<()> {
        let topic = dlq::topic_for(&self.plugin);
        let limit = max_message_bytes.to_string();
        let created = within(
            &self.kafka,
            format!("creating topic {topic}"),
            self.admin.create_topics(
                &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))
                    .set("max.message.bytes", &limit)],
                &AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT)),
            ),
        )
        .await?;
        for r in created {
            if let Err((name, code)) = r {
                bail!("creating topic {name}: {code}");
            }
        }
        Ok(())
    }

    /// Runs `plugin` on the fixture's topic until `n` events are final; returns what was
    /// reported, in order.
    async fn run_until(
        &self,
        plugin: &str,
        config: TriggerConfig,
        n: usize,
    ) -> Result<(Vec<Processed>, String)> {
        let spec = self.spec(plugin, 8);
        let group = spec.group_id();
        let loaded = runtime().load(&spec).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let trigger = Trigger::start(config, vec![(spec, loaded)], Some(tx)).await?;
        let seen = collect(&mut rx, Duration::from_secs(60), |s| s.len() >= n).await;
        trigger.shutdown().await?;
        let mut seen = seen?;
        while let Ok(p) = rx.try_recv() {
            seen.push(p);
        }
        Ok((seen, group))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_5mb_reject_reason_is_dead_lettered_capped_and_the_partition_goes_on() -> Result<()> {
    with_fixture(1, async |f| {
        const N: usize = 30;
        let records: Vec<(String, Vec<u8>)> = (0..N)
            .map(|i| {
                let ty = match i {
                    5 => "hostile.huge-reason",
                    9 => "hostile.multibyte-reason",
                    12 => "hostile.forge-log",
                    13 => "hostile.huge-log",
                    _ => "test.ok",
                };
                (format!("k{i}"), cloudevent(&format!("e{i}"), ty, i))
            })
            .collect();
        f.produce(&records).await?;
        let (seen, group) = f
            .run_until("hostile-handler", TriggerConfig::new(kafka()), N)
            .await?;

        let by_offset: BTreeMap<i64, &Processed> = seen.iter().map(|p| (p.offset, p)).collect();
        assert_eq!(seen.len(), N, "every event final exactly once");
        assert_eq!(by_offset.len(), N);
        for (o, p) in &by_offset {
            match (o, &p.disposition) {
                (5 | 9, Disposition::DeadLettered(reason)) => {
                    assert!(reason.len() <= dlq::MAX_REASON_BYTES, "{}", reason.len())
                }
                (5 | 9, other) => bail!("offset {o}: {other:?}"),
                (_, Disposition::Ok) => {}
                (_, other) => bail!("offset {o}: {other:?}"),
            }
        }
        // The partition went on past the huge reason: later events were processed, and
        // the committed offset covers all of them.
        assert_eq!(f.committed(&group).await?, vec![N as i64]);

        let letters = f.dead_letters(2).await?;
        for m in &letters {
            let h = headers_of(m);
            let offset: i64 = h[dlq::ORIGINAL_OFFSET].parse()?;
            assert_eq!(h[dlq::ORIGINAL_TOPIC], f.topic);
            assert_eq!(h[dlq::ORIGINAL_PARTITION], "0");
            assert_eq!(h[dlq::PLUGIN], f.plugin);
            assert_eq!(h[dlq::TRUNCATED], "reason", "{offset}");
            assert_eq!(h.get(dlq::ORIGINAL_SIZE), None, "the value is whole");
            assert_eq!(m.payload(), Some(&records[offset as usize].1[..]));
            assert_eq!(m.key(), Some(format!("k{offset}").as_bytes()));
            // The header is valid UTF-8 (a cut inside a character would not be).
            let reason = m
                .headers()
                .and_then(|hs| hs.iter().find(|x| x.key == dlq::REASON))
                .and_then(|x| x.value)
                .context("no reason")?;
            let reason = std::str::from_utf8(reason)?;
            assert!(reason.len() <= dlq::MAX_REASON_BYTES, "{}", reason.len());
            match offset {
                5 => {
                    assert!(
                        reason.starts_with("huge reason for e5: xxx"),
                        "{reason:.80}"
                    );
                    assert!(
                        reason.ends_with("… [truncated, 5242880 bytes]"),
                        "{reason:.80}"
                    );
                }
                9 => {
                    assert!(reason.starts_with("m€€€"), "{reason:.80}");
                    assert!(reason.ends_with("€… [truncated, 15001 bytes]"));
                }
                o => bail!("an unexpected dead letter at {o}"),
            }
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_too_large_for_the_dead_letter_topic_is_dead_lettered_reduced() -> Result<()> {
    with_fixture(1, async |f| {
        const N: usize = 10;
        const LIMIT: usize = 100_000;
        f.small_dead_letter_topic(LIMIT).await?;
        let big = "p".repeat(300_000);
        let records: Vec<(String, Vec<u8>)> = (0..N)
            .map(|i| {
                let id = format!("e{i}");
                let value = match i {
                    3 => serde_json::to_vec(&json!({
                        "specversion": "1.0", "id": id, "source": "/t",
                        "type": "hostile.reject", "data": {"padding": big},
                    }))
                    .unwrap(),
                    6 => cloudevent(&id, "hostile.reject", i),
                    _ => cloudevent(&id, "test.ok", i),
                };
                (format!("k{i}"), value)
            })
            .collect();
        f.produce(&records).await?;
        let (seen, group) = f
            .run_until("hostile-handler", TriggerConfig::new(kafka()), N)
            .await?;
        assert_eq!(seen.len(), N);
        let dead: BTreeSet<i64> = seen
            .iter()
            .filter(|p| matches!(p.disposition, Disposition::DeadLettered(_)))
            .map(|p| p.offset)
            .collect();
        assert_eq!(dead, BTreeSet::from([3, 6]));
        assert_eq!(f.committed(&group).await?, vec![N as i64]);

        let letters = f.dead_letters(2).await?;
        let by_offset: BTreeMap<i64, &OwnedMessage> = letters
            .iter()
            .map(|m| Ok((headers_of(m)[dlq::ORIGINAL_OFFSET].parse()?, m)))
            .collect::<Result<_>>()?;
        // The small one is whole.
        let small = headers_of(by_offset[&6]);
        assert_eq!(small.get(dlq::TRUNCATED), None);
        assert_eq!(by_offset[&6].payload(), Some(&records[6].1[..]));
        // The large one carries what fits, and says so.
        let large = by_offset[&3];
        let h = headers_of(large);
        assert_eq!(h[dlq::TRUNCATED], "value");
        assert_eq!(h[dlq::ORIGINAL_SIZE], records[3].1.len().to_string());
        assert_eq!(h[dlq::REASON], "rejected e3");
        assert_eq!(h[dlq::ORIGINAL_TOPIC], f.topic);
        assert_eq!(h[dlq::ORIGINAL_PARTITION], "0");
        let kept = large.payload().context("no value")?;
        assert!(
            kept.len() < LIMIT && kept.len() > LIMIT / 2,
            "{}",
            kept.len()
        );
        assert!(records[3].1.starts_with(kept), "the kept value is a prefix");
        assert_eq!(large.key(), Some(&b"k3"[..]));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_refused_even_reduced_is_dropped_and_the_partition_goes_on() -> Result<()> {
    with_fixture(1, async |f| {
        const N: usize = 8;
        // So small that even the envelope (a 1 KiB reason and the headers) is refused.
        f.small_dead_letter_topic(1000).await?;
        let records: Vec<(String, Vec<u8>)> = (0..N)
            .map(|i| {
                let ty = if i == 2 {
                    "hostile.multibyte-reason"
                } else {
                    "test.ok"
                };
                (format!("k{i}"), cloudevent(&format!("e{i}"), ty, i))
            })
            .collect();
        f.produce(&records).await?;
        let mut config = TriggerConfig::new(kafka());
        config.backoff.base = Duration::from_millis(10);
        let (seen, group) = f.run_until("hostile-handler", config, N).await?;
        assert_eq!(seen.len(), N);
        for p in &seen {
            match (p.offset, &p.disposition) {
                (2, Disposition::Dropped(reason)) => assert!(reason.starts_with("m€€")),
                (2, other) => bail!("offset 2: {other:?}"),
                (_, Disposition::Ok) => {}
                (o, other) => bail!("offset {o}: {other:?}"),
            }
        }
        assert_eq!(f.committed(&group).await?, vec![N as i64]);
        assert_eq!(
            polyhost::metrics::global().events_of(&f.plugin, "dropped"),
            1
        );
        f.dead_letters(0).await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_the_broker_refuses_is_sent_once_more_as_an_envelope() -> Result<()> {
    with_fixture(1, async |f| {
        const LIMIT: usize = 100_000;
        f.small_dead_letter_topic(LIMIT).await?;
        let dlq_topic = dlq::topic_for(&f.plugin);
        // (`connect` first: it waits for a topic created a moment ago to be known.)
        let learned = dlq::DeadLetters::connect(&kafka(), &f.plugin).await?;
        assert_eq!(learned.limit(), LIMIT);
        assert_eq!(dlq::max_message_bytes(&kafka(), &dlq_topic).await?, LIMIT);
        // A producer that believes the broker takes 10 MB: the broker itself refuses.
        let wrong = dlq::DeadLetters::new(&kafka(), &f.plugin, 10_000_000)?;
        let record = OwnedMessage::new(
            Some(vec![b'v'; 300_000]),
            Some(b"k".to_vec()),
            f.topic.clone(),
            rdkafka::Timestamp::NotAvailable,
            0,
            41,
            None,
        );
        let letter = dlq::Letter {
            reason: "too big",
            plugin: &f.plugin,
            version: "v",
            topic: &f.topic,
            partition: 0,
            offset: 41,
            attempts: 1,
        };
        // As the trigger does, transient errors are retried (an idempotent producer may
        // report one while it recovers from the broker's refusal).
        let publish = async |record: &OwnedMessage, letter: &dlq::Letter<'_>| {
            for _ in 0..5 {
                match wrong.publish(record, letter).await {
                    Err(dlq::PublishError::Transient(e)) => {
                        eprintln!("transient, retrying: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    other => return other,
                }
            }
            wrong.publish(record, letter).await
        };
        assert_eq!(publish(&record, &letter).await?, dlq::Written::Envelope);
        // The producer is still usable afterwards.
        let small = OwnedMessage::new(
            Some(b"small".to_vec()),
            None,
            f.topic.clone(),
            rdkafka::Timestamp::NotAvailable,
            0,
            42,
            None,
        );
        let letter42 = dlq::Letter {
            offset: 42,
            ..letter.clone()
        };
        assert_eq!(publish(&small, &letter42).await?, dlq::Written::Whole);

        let letters = f.dead_letters(2).await?;
        let h = headers_of(&letters[0]);
        assert_eq!(letters[0].payload(), None);
        assert_eq!(letters[0].key(), None);
        assert_eq!(h[dlq::TRUNCATED], "key,value");
        assert_eq!(h[dlq::ORIGINAL_SIZE], "300000");
        assert_eq!(h[dlq::ORIGINAL_OFFSET], "41");
        assert_eq!(h[dlq::REASON], "too big");
        assert_eq!(letters[1].payload(), Some(&b"small"[..]));
        Ok(())
    })
    .await
}

/// How many partition workers of `plugin` were restarted.
fn restarts(plugin: &str) -> u64 {
    polyhost::metrics::global()
        .worker_restarts
        .get_or_create(&polyhost::metrics::Metrics::plugin(plugin))
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_worker_that_dies_is_restarted_and_nothing_is_lost_or_repeated() -> Result<()> {
    with_fixture(2, async |f| {
        const N: usize = 120;
        let records: Vec<(String, Vec<u8>)> = (0..N)
            .map(|i| {
                (
                    format!("k{}", i % 10),
                    cloudevent(&format!("e{i}"), "test.ok", i),
                )
            })
            .collect();
        f.produce(&records).await?;
        let mut config = TriggerConfig::new(kafka());
        let fired = Arc::new(AtomicBool::new(false));
        let (topic, once) = (f.topic.clone(), fired.clone());
        // One worker dies once, at offset 20 of its partition, before handing it over.
        config.before_hand_over = Some(Hook(Arc::new(move |t, _, o| {
            if t == topic && o == 20 && !once.swap(true, Ordering::SeqCst) {
                panic!("test: a partition worker dies at offset 20");
            }
        })));
        let (seen, group) = f.run_until("noop-handler", config, N).await?;
        assert!(fired.load(Ordering::SeqCst), "the worker never died");
        assert_eq!(restarts(&f.plugin), 1);
        assert_eq!(ids(&seen).len(), N, "nothing lost");
        assert_eq!(seen.len(), N, "nothing reported twice");
        assert!(seen.iter().all(|p| p.disposition == Disposition::Ok));
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        for p in &seen {
            let prev = last.insert(p.partition, p.offset);
            assert!(
                prev.is_none_or(|o| o < p.offset),
                "order in {}",
                p.partition
            );
        }
        assert_eq!(f.committed(&group).await?.iter().sum::<i64>(), N as i64);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_the_host_keeps_dying_on_is_dead_lettered_and_the_partition_goes_on() -> Result<()>
{
    with_fixture(1, async |f| {
        const N: usize = 20;
        let records: Vec<(String, Vec<u8>)> = (0..N)
            .map(|i| (format!("k{i}"), cloudevent(&format!("e{i}"), "test.ok", i)))
            .collect();
        f.produce(&records).await?;
        let mut config = TriggerConfig::new(kafka());
        let topic = f.topic.clone();
        config.before_hand_over = Some(Hook(Arc::new(move |t, _, o| {
            if t == topic && o == 7 {
                panic!("test: the host always dies on offset 7");
            }
        })));
        let (seen, group) = f.run_until("noop-handler", config, N).await?;
        assert_eq!(seen.len(), N);
        for p in &seen {
            match (p.offset, &p.disposition) {
                (7, Disposition::DeadLettered(reason)) => assert!(
                    reason.contains("(panicked) 3 times")
                        && reason.contains("the host always dies on offset 7"),
                    "{reason}"
                ),
                (7, other) => bail!("offset 7: {other:?}"),
                (_, Disposition::Ok) => {}
                (o, other) => bail!("offset {o}: {other:?}"),
            }
        }
        // Three times on offset 7 handed over alone, and once more before that when 7 was
        // not the first of its batch (the restart then began at the batch's first event).
        assert!(
            (3..=4).contains(&restarts(&f.plugin)),
            "{}",
            restarts(&f.plugin)
        );
        assert_eq!(f.committed(&group).await?, vec![N as i64]);
        let letters = f.dead_letters(1).await?;
        assert_eq!(headers_of(&letters[0])[dlq::ORIGINAL_OFFSET], "7");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_that_dies_with_its_partition_paused_is_restarted_and_loses_nothing() -> Result<()>
{
    with_fixture(1, async |f| {
        const N: usize = 80;
        let records: Vec<(String, Vec<u8>)> = (0..N)
            .map(|i| (format!("k{i}"), cloudevent(&format!("e{i}"), "test.ok", i)))
            .collect();
        f.produce(&records).await?;
        let mut config = TriggerConfig::new(kafka());
        // A tiny queue and a slow worker, so its partition is paused when it dies.
        config.queued_records = 4;
        config.queued_batches = 1;
        config.stuck_after = Duration::from_millis(20);
        let fired = Arc::new(AtomicBool::new(false));
        let (topic, once) = (f.topic.clone(), fired.clone());
        config.before_hand_over = Some(Hook(Arc::new(move |t, _, o| {
            if t != topic {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
            if o == 30 && !once.swap(true, Ordering::SeqCst) {
                panic!("test: the worker dies at offset 30 with its partition paused");
            }
        })));
        let (seen, group) = f.run_until("noop-handler", config, N).await?;
        assert!(fired.load(Ordering::SeqCst));
        assert_eq!(restarts(&f.plugin), 1);
        assert_eq!(ids(&seen).len(), N, "nothing lost");
        assert_eq!(seen.len(), N, "nothing reported twice");
        let offsets: Vec<i64> = seen.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, (0..N as i64).collect::<Vec<_>>(), "in order");
        assert_eq!(f.committed(&group).await?, vec![N as i64]);
        Ok(())
    })
    .await
}

/// `polyhost_batch_duration_seconds_count{plugin}`: the plugin's hand-overs so far.
fn hand_overs(plugin: &str) -> u64 {
    harness::plugin_series("polyhost_batch_duration_seconds_count", plugin) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_waiting_for_an_instance_takes_the_records_that_arrive_meanwhile() -> Result<()> {
    with_fixture(2, async |f| {
        let producer: FutureProducer = common::kafka_config().create()?;
        let send = async |partition: i32, ids: std::ops::Range<usize>| -> Result<()> {
            for i in ids {
                let value = cloudevent(&format!("e{i}"), "test.ok", i);
                producer
                    .send(
                        FutureRecord::<(), _>::to(&f.topic)
                            .partition(partition)
                            .payload(&value),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .context("producing")?;
            }
            Ok(())
        };
        // Partition 0's first hand-over holds the one instance until released.
        let (handed, released) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let mut config = TriggerConfig::new(kafka());
        let (topic, h, r) = (f.topic.clone(), handed.clone(), released.clone());
        config.before_hand_over = Some(Hook(Arc::new(move |t, p, o| {
            if t == topic && p == 0 && o == 0 {
                h.store(true, Ordering::SeqCst);
                while !r.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        })));
        let mut spec = f.spec("noop-handler", 100);
        spec.limits.max_instances = 1;
        spec.limits.batch_wait_ms = 0;
        let rt = runtime();
        let plugin = rt.load(&spec).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let trigger = Trigger::start(config, vec![(spec, plugin)], Some(tx)).await?;
        let outcome = async {
            send(0, 0..1).await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while !handed.load(Ordering::SeqCst) {
                ensure!(
                    Instant::now() < deadline,
                    "partition 0 was never handed over"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // Partition 1's first record makes a batch of one (no wait to fill it), which
            // waits for the instance; four more arrive while it waits.
            send(1, 1..2).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            send(1, 2..6).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            released.store(true, Ordering::SeqCst);
            let seen = collect(&mut rx, Duration::from_secs(30), |s| s.len() >= 6).await?;
            ensure!(seen.iter().all(|p| p.disposition == Disposition::Ok));
            Ok(())
        }
        .await;
        released.store(true, Ordering::SeqCst);
        trigger.shutdown().await?;
        outcome?;
        assert_eq!(
            hand_overs(&f.plugin),
            2,
            "partition 0's batch, then partition 1's five records in one batch"
        );
        // Each event's wait before its hand-over is measured once; partition 1's five
        // waited for the instance, a second or more.
        let waits = "polyhost_event_wait_seconds";
        assert_eq!(
            harness::plugin_series(&format!("{waits}_count"), &f.plugin),
            6.0
        );
        assert!(harness::plugin_observations_over(waits, &f.plugin, 0.9) >= 5.0);
        assert_eq!(
            harness::plugin_observations_over(waits, &f.plugin, 60.0),
            0.0
        );
        let latencies = "polyhost_event_latency_seconds";
        assert!(
            harness::plugin_series(&format!("{waits}_sum"), &f.plugin)
                <= harness::plugin_series(&format!("{latencies}_sum"), &f.plugin),
            "an event waits for its hand-over within its whole latency"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_started_trigger_says_when_every_consumer_has_its_partitions() -> Result<()> {
    with_fixture(2, async |f| {
        let spec = f.spec("noop-handler", 16);
        let rt = runtime();
        let plugin = rt.load(&spec).await?;
        let trigger =
            Trigger::start(TriggerConfig::new(kafka()), vec![(spec, plugin)], None).await?;
        let assigned = trigger.wait_assigned(Duration::from_secs(30)).await;
        trigger.shutdown().await?;
        ensure!(
            assigned,
            "the consumer was not assigned its partitions within 30 s"
        );
        Ok(())
    })
    .await
}
