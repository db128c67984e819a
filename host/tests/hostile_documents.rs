//! The `hostile-documents` plugin tries to reach past a grant of one collection, one blob
//! bucket and one topic, and to exhaust the host with large results and values; every
//! attack must be refused (`denied` or `invalid`), and the services, read natively with
//! the `mongodb` driver and rdkafka, must show that nothing outside the grant changed.
//!
//! Needs MongoDB (FerretDB here) and Kafka (`cargo xtask services up`) and the test plugins
//! (`cargo xtask plugins -p hostile-documents`); fails, rather than skips, without them.

mod common;
mod harness;

use anyhow::{Context as _, Result, bail, ensure};
use common::{CLIENT_TIMEOUT, Service, unique_name, with_cleanup, within};
use futures::{AsyncWriteExt as _, TryStreamExt as _};
use harness::{batch, event, runtime, test_plugin};
use mongodb::bson::{Document, doc};
use mongodb::options::GridFsBucketOptions;
use polyhost::backends::{documents, messaging};
use polyhost::bindings::polyhost::platform::types::Outcome;
use polyhost::manifest::PluginSpec;
use polyhost::runtime::Records;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _};
use serde_json::json;

const MIB: usize = 1 << 20;
const GRANTED: &str = "videos";
const SECRET: &str = "secrets";
const BUCKET: &str = "thumbnails";

/// Each attack and what the host must answer: `denied`, `invalid`, or `ok` (an attack the
/// host lets through because it reaches nothing outside the grant; the checks afterwards
/// show it did not).
const ATTACKS: &[(&str, &str)] = &[
    ("lookup-top", "denied"),
    ("lookup-in-expr", "denied"),
    ("lookup-in-facet", "denied"),
    ("lookup-in-lookup-pipeline", "denied"),
    ("union-with", "denied"),
    ("graph-lookup", "denied"),
    ("out-in-filter", "denied"),
    ("merge-in-update", "denied"),
    ("out-in-bulk", "denied"),
    ("documents-stage", "denied"),
    ("current-op", "denied"),
    ("coll-stats", "denied"),
    ("where-deep", "denied"),
    ("function-deep", "denied"),
    ("accumulator-in-sort", "denied"),
    ("code-value", "denied"),
    ("dbref-other-collection", "denied"),
    ("dbref-other-database", "denied"),
    ("system-js", "denied"),
    ("system-profile", "denied"),
    ("other-database", "denied"),
    ("dotted-secret", "denied"),
    ("dollar-name", "denied"),
    ("bucket-as-collection", "denied"),
    ("collection-as-bucket", "denied"),
    ("huge-result", "invalid"),
    ("huge-document", "invalid"),
    ("huge-filter", "invalid"),
    ("huge-blob", "invalid"),
    ("huge-blob-read", "invalid"),
    ("put-blobs-into-collection", "denied"),
    ("huge-blobs", "invalid"),
    ("too-many-blobs", "invalid"),
    ("code-in-blob-metadata", "denied"),
    ("publish-secret", "denied"),
    ("publish-batch-with-secret", "denied"),
    // A topic named in a header or the key is only bytes: the record goes to the granted
    // topic, and the other topic stays untouched (checked below).
    ("publish-secret-in-header-and-key", "ok"),
    ("publish-huge", "invalid"),
    ("publish-huge-headers", "invalid"),
];

/// The host's Kafka settings for this run; asking about a topic never creates it.
fn kafka_config() -> ClientConfig {
    let mut config = common::kafka_config();
    config.set("allow.auto.create.topics", "false");
    config
}

/// What the test's database holds: every collection's documents, by name.
async fn snapshot(
    mongodb: &Service,
    db: &mongodb::Database,
) -> Result<Vec<(String, Vec<Document>)>> {
    let mut names = within(mongodb, "listing collections", db.list_collection_names()).await?;
    names.sort();
    let mut all = Vec::new();
    for name in names {
        let coll = db.collection::<Document>(&name);
        let cursor = within(
            mongodb,
            format!("reading {name}"),
            coll.find(doc! {}).sort(doc! {"_id": 1}),
        )
        .await?;
        let docs: Vec<Document> =
            within(mongodb, format!("reading {name}"), cursor.try_collect()).await?;
        all.push((name, docs));
    }
    Ok(all)
}

/// The hostile plugin as `name`, granted the collection [`GRANTED`] and the bucket
/// [`BUCKET`] of `db`, and publishing to `topic`.
fn hostile_spec(name: &str, db: &mongodb::Database, topic: &str) -> PluginSpec {
    let mut spec = PluginSpec::new(name, test_plugin("hostile-documents"));
    spec.subscribe = vec!["t".into()];
    spec.grants.documents = Some(documents::Grant {
        database: db.name().to_string(),
        collections: vec![GRANTED.to_string()],
        buckets: vec![BUCKET.to_string()],
    });
    spec.grants.messaging = Some(messaging::Grant {
        publish: vec![topic.to_string()],
    });
    spec
}

#[tokio::test]
async fn every_attack_is_refused_and_nothing_outside_the_grant_changes() -> Result<()> {
    let mongodb = Service::mongodb();
    let client = common::mongodb().await?;
    let db = client.database(&unique_name("hostile"));

    let kafka = Service::kafka();
    let admin: AdminClient<DefaultClientContext> = kafka_config().create()?;
    let admin_options = AdminOptions::new()
        .request_timeout(Some(CLIENT_TIMEOUT))
        .operation_timeout(Some(CLIENT_TIMEOUT));
    let topic = unique_name("hostile");
    let secret_topic = unique_name("hostilesecret");
    for result in within(
        &kafka,
        "creating the topic",
        admin.create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &admin_options,
        ),
    )
    .await?
    {
        if let Err((name, code)) = result {
            bail!("{kafka}: creating topic {name}: {code}");
        }
    }

    let mut state = (db.clone(), admin);
    with_cleanup(
        &mut state,
        async |(db, _)| {
            // What the attacks aim at: a secret collection, data in the granted collection
            // larger than max_result_bytes (1 MiB), and a stored blob larger than it.
            within(
                &mongodb,
                "seeding secrets",
                db.collection::<Document>(SECRET)
                    .insert_one(doc! {"_id": 1, "secret": "s"}),
            )
            .await?;
            let pad = "p".repeat(300 * 1024);
            let seeded: Vec<Document> = (0..5).map(|i| doc! {"_id": i, "pad": &pad}).collect();
            within(
                &mongodb,
                "seeding videos",
                db.collection::<Document>(GRANTED).insert_many(seeded),
            )
            .await?;
            let bucket = db.gridfs_bucket(
                GridFsBucketOptions::builder()
                    .bucket_name(BUCKET.to_string())
                    .build(),
            );
            let mut upload = within(
                &mongodb,
                "opening an upload",
                bucket.open_upload_stream("stored-huge"),
            )
            .await?;
            upload.write_all(&vec![1; 3 * MIB]).await?;
            upload.close().await?;
            let before = snapshot(&mongodb, db).await?;

            let rt = runtime();
            let mut spec = hostile_spec("hostile-documents", db, &topic);
            spec.limits.max_result_bytes = MIB as u64;
            spec.limits.max_value_bytes = MIB as u64;
            spec.limits.memory_mb = 128;
            spec.limits.host_call_timeout_ms = 20_000;
            spec.limits.call_timeout_ms = 120_000;
            let plugin = rt
                .load(&spec)
                .await
                .map_err(|e| anyhow::anyhow!("loading the plugin: {e}"))?;

            let target = json!({"collection": GRANTED, "secret": SECRET, "bucket": BUCKET,
                                "topic": topic, "secret_topic": secret_topic});
            let events: Vec<_> = ATTACKS
                .iter()
                .enumerate()
                .map(|(i, (attack, _))| event(&format!("a{i}"), attack, &target))
                .collect();
            let outcomes = plugin
                .handle(&batch("t"), &events, Records::default())
                .await
                .map_err(|e| anyhow::anyhow!("the plugin failed: {e}"))?;
            let mut wrong = Vec::new();
            for ((attack, expected), outcome) in ATTACKS.iter().zip(&outcomes) {
                let got = match outcome {
                    Outcome::Ok => "ok".to_string(),
                    Outcome::Reject(why) => why.clone(),
                    other => format!("{other:?}"),
                };
                let kind = got.split(':').next().unwrap_or_default();
                if kind != *expected {
                    wrong.push(format!(
                        "{attack}: expected {expected}, got {}",
                        got.chars().take(300).collect::<String>()
                    ));
                }
                if *expected == "invalid"
                    && attack.starts_with("huge")
                    && !attack.contains("filter")
                {
                    ensure!(
                        got.contains("limits.max_"),
                        "{attack}: the refusal names no limit: {got}"
                    );
                }
            }
            ensure!(
                wrong.is_empty(),
                "attacks not refused as expected:\n{}",
                wrong.join("\n")
            );

            // Nothing in the database changed, and no other collection appeared.
            let after = snapshot(&mongodb, db).await?;
            ensure!(
                before == after,
                "the database changed: {:?}",
                after.iter().map(|(n, d)| (n, d.len())).collect::<Vec<_>>()
            );
            let admin_db = client.database("admin");
            let admin_names =
                within(&mongodb, "listing admin", admin_db.list_collection_names()).await?;
            ensure!(
                !admin_names.iter().any(|n| n == GRANTED || n == SECRET),
                "admin holds {admin_names:?}"
            );

            // Kafka: the other topic was never created; the granted one holds exactly the
            // message whose header and key named the other topic.
            let base: BaseConsumer = kafka_config().create()?;
            let (t, st) = (topic.clone(), secret_topic.clone());
            let (metadata, watermarks, record) =
                tokio::task::spawn_blocking(move || -> Result<_> {
                    let metadata = base.fetch_metadata(None, CLIENT_TIMEOUT)?;
                    let names: Vec<String> = metadata
                        .topics()
                        .iter()
                        .map(|m| m.name().to_string())
                        .collect();
                    let watermarks = base.fetch_watermarks(&t, 0, CLIENT_TIMEOUT)?;
                    let mut partitions = rdkafka::TopicPartitionList::new();
                    partitions.add_partition_offset(&t, 0, rdkafka::Offset::Beginning)?;
                    let consumer: BaseConsumer = base_config_for_read()?;
                    consumer.assign(&partitions)?;
                    let record = consumer
                        .poll(CLIENT_TIMEOUT)
                        .context("no record in the granted topic")??
                        .detach();
                    Ok((names.contains(&st), watermarks, record))
                })
                .await??;
            ensure!(!metadata, "the other topic {secret_topic} exists");
            ensure!(
                watermarks == (0, 1),
                "the granted topic holds {watermarks:?} records, not one"
            );
            ensure!(
                record.key() == Some(secret_topic.as_bytes()),
                "the record's key"
            );
            let header = record
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "topic"))
                .and_then(|h| h.value);
            ensure!(
                header == Some(secret_topic.as_bytes()),
                "the record's header"
            );
            Ok(())
        },
        async |(db, admin)| {
            within(&mongodb, "dropping the test database", db.drop()).await?;
            let _ = within(
                &kafka,
                "deleting topics",
                admin.delete_topics(&[&topic, &secret_topic], &admin_options),
            )
            .await;
            Ok(())
        },
    )
    .await
}

fn base_config_for_read() -> Result<BaseConsumer> {
    Ok(kafka_config()
        .set("group.id", unique_name("hostile"))
        .set("enable.auto.commit", "false")
        .create()?)
}

/// A message over the broker's own size limit (librdkafka's `message.max.bytes`, 1 000 000)
/// but under `max_value_bytes` is refused as `invalid` before it is sent.
#[tokio::test]
async fn a_message_over_the_broker_limit_is_invalid() -> Result<()> {
    let kafka = Service::kafka();
    let admin: AdminClient<DefaultClientContext> = kafka_config().create()?;
    let admin_options = AdminOptions::new()
        .request_timeout(Some(CLIENT_TIMEOUT))
        .operation_timeout(Some(CLIENT_TIMEOUT));
    let topic = unique_name("hostilebig");
    within(
        &kafka,
        "creating the topic",
        admin.create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &admin_options,
        ),
    )
    .await?;
    let mut admin = admin;
    with_cleanup(
        &mut admin,
        async |_| {
            let rt = runtime();
            let mut spec = PluginSpec::new("hostile-documents", test_plugin("hostile-documents"));
            spec.subscribe = vec!["t".into()];
            spec.grants.messaging = Some(messaging::Grant {
                publish: vec![topic.clone()],
            });
            // The plugin imports documents too; a grant of nothing in particular.
            spec.grants.documents = Some(documents::Grant {
                database: unique_name("unused"),
                collections: vec![],
                buckets: vec![],
            });
            spec.limits.max_value_bytes = 4 * MIB as u64;
            spec.limits.host_call_timeout_ms = 20_000;
            spec.limits.call_timeout_ms = 60_000;
            let plugin = rt
                .load(&spec)
                .await
                .map_err(|e| anyhow::anyhow!("loading the plugin: {e}"))?;
            let target = json!({"topic": topic});
            let outcomes = plugin
                .handle(
                    &batch("t"),
                    &[event("a", "publish-over-broker-limit", &target)],
                    Records::default(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("the plugin failed: {e}"))?;
            match &outcomes[..] {
                [Outcome::Reject(why)] if why.starts_with("invalid:") => {}
                other => bail!("expected invalid, got {other:?}"),
            }
            let base: BaseConsumer = kafka_config().create()?;
            let t = topic.clone();
            let marks =
                tokio::task::spawn_blocking(move || base.fetch_watermarks(&t, 0, CLIENT_TIMEOUT))
                    .await??;
            ensure!(marks == (0, 0), "the topic holds {marks:?}");
            Ok(())
        },
        async |admin| {
            let _ = within(
                &kafka,
                "deleting the topic",
                admin.delete_topics(&[&topic], &admin_options),
            )
            .await;
            Ok(())
        },
    )
    .await
}

/// Blob writes run to their end even when their call is abandoned, so that no blob is left
/// half stored. A plugin that keeps calling `put-blobs` under a host-call timeout too short
/// for any write would then make the host hold the bytes of every abandoned call at once,
/// were they not bounded. Here the plugin makes 40 calls of 1 MiB each (4 blobs of its
/// `max_value_bytes`, 256 KiB) under a 1 ms timeout, while the test reads
/// `polyhost_blob_bytes_in_flight` every 2 ms: it must never exceed the plugin's blob budget
/// (`BLOB_VALUES_IN_FLIGHT` values, 4 MiB), must have been above zero (the attack did make
/// the host write), and must come back to zero once the writes end.
#[tokio::test]
async fn abandoned_blob_writes_hold_at_most_the_plugins_blob_budget() -> Result<()> {
    const PLUGIN: &str = "hostile-flood";
    const METRIC: &str = "polyhost_blob_bytes_in_flight";
    const VALUE: usize = 256 * 1024;
    const WRITES_END: std::time::Duration = std::time::Duration::from_secs(60);
    let client = common::mongodb().await?;
    let mut db = client.database(&unique_name("hostileflood"));
    with_cleanup(
        &mut db,
        async |db| {
            // The flood publishes nothing: the granted topic need not exist.
            let mut spec = hostile_spec(PLUGIN, db, &unique_name("unused"));
            spec.limits.max_value_bytes = VALUE as u64;
            spec.limits.host_call_timeout_ms = 1;
            spec.limits.call_timeout_ms = 120_000;
            let plugin = runtime()
                .load(&spec)
                .await
                .map_err(|e| anyhow::anyhow!("loading the plugin: {e}"))?;
            let budget = documents::BLOB_VALUES_IN_FLIGHT as f64 * VALUE as f64;

            let flood = json!({"bucket": BUCKET, "rounds": 40, "blobs": 4, "blob_bytes": VALUE});
            let events = vec![event("flood", "put-blobs-flood", &flood)];
            let done = std::sync::atomic::AtomicBool::new(false);
            let call = async {
                let outcomes = plugin.handle(&batch("t"), &events, Records::default()).await;
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                outcomes
            };
            let sample = async {
                let mut most: f64 = 0.0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    most = most.max(harness::plugin_series(METRIC, PLUGIN));
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                most
            };
            let (outcomes, most) = tokio::join!(call, sample);
            let outcomes = outcomes.map_err(|e| anyhow::anyhow!("the plugin failed: {e}"))?;
            let report = match &outcomes[..] {
                [Outcome::Reject(report)] if report.starts_with("flood:") => report.clone(),
                other => bail!("unexpected outcomes {other:?}"),
            };
            ensure!(
                !report.contains(" 0 timeout"),
                "no call was abandoned: {report}"
            );
            ensure!(most > 0.0, "no blob write was ever in flight: {report}");
            ensure!(
                most <= budget,
                "{most} bytes of blob writes in flight, over the plugin's budget of {budget}: {report}"
            );

            // The abandoned writes end, and give their bytes back.
            let left = bytes_left_after(METRIC, PLUGIN, WRITES_END).await;
            ensure!(
                left == 0.0,
                "{left} bytes of blob writes still in flight after {WRITES_END:?}"
            );
            Ok(())
        },
        async |db| {
            // Writes still running would make the database again after the drop.
            bytes_left_after(METRIC, PLUGIN, WRITES_END).await;
            within(&Service::mongodb(), "dropping the database", db.drop())
                .await
                .map(drop)
        },
    )
    .await
}

/// The value of `metric` for `plugin` once it is zero, or after `limit`.
async fn bytes_left_after(metric: &str, plugin: &str, limit: std::time::Duration) -> f64 {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = harness::plugin_series(metric, plugin);
        if left == 0.0 || std::time::Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
