//! The Python and JavaScript examples run by the host as a separate process, against real
//! Kafka, Redis and MongoDB: events in, the store checked, the poison event dead-lettered.
//!
//! Needs `cargo xtask plugins` (which builds `examples/leaderboard-py` and
//! `examples/watch-history-js` to `target/plugins/`). The compiled components are cached
//! under `target/polyglot-test-cache`, so only the first run compiles them.

mod common;
mod harness;
#[allow(unused_imports)]
mod process;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use common::{Service, unique_name};
use futures::TryStreamExt as _;
use process::{Fixture, Host, redis_conn, wait_for};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

fn cache_dir() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/polyglot-test-cache")
        .display()
        .to_string()
}

/// `polyhost check` on `manifest`, which must pass; it also fills the compiled-component
/// cache, so the host started next loads in seconds rather than compiling a runtime.
fn check(manifest: &std::path::Path) -> Result<()> {
    let out = std::process::Command::new(process::polyhost())
        .arg("check")
        .arg("--manifest")
        .arg(manifest)
        .arg("--cache-dir")
        .arg(cache_dir())
        .output()?;
    ensure!(
        out.status.success(),
        "check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Produces one CloudEvent per `(id, type, data)` to `topic` and waits for every ack.
async fn produce(topic: &str, events: &[(String, &str, Value)]) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &Service::kafka().url)
        .create()?;
    for (id, ty, data) in events {
        let value = serde_json::to_vec(&json!({
            "specversion": "1.0",
            "id": id,
            "source": "/tests/polyglot",
            "type": ty,
            "time": "2026-01-01T00:00:00Z",
            "data": data,
        }))?;
        producer
            .send(
                FutureRecord::to(topic).key(id.as_bytes()).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// The reasons of the dead letters of `plugin`, keyed by the dead event's id, once there
/// are `n` of them.
async fn dead_letters(plugin: &str, n: usize) -> Result<Vec<(String, String)>> {
    let topic = format!("polyhost.dlq.{plugin}");
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &Service::kafka().url)
        .set("group.id", unique_name("dlqreader"))
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .with_context(|| format!("waiting for a dead letter on {topic}"))??;
        let value: Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
        let reason = m
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == "polyhost.reason")
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
            .unwrap_or_default();
        out.push((value["id"].as_str().unwrap_or_default().to_string(), reason));
    }
    let extra = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await;
    ensure!(extra.is_err(), "more than {n} dead letters");
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_leaderboard_keeps_exact_scores_and_dead_letters_the_poison() -> Result<()> {
    let f = Fixture::new(1).await?;
    let board = unique_name("board").replace(['_', ':'], "-");
    let prefix = format!("{}:", f.plugin);
    let players = ["ana", "bo", "cy", "di"];
    let mut events: Vec<(String, &str, Value)> = (0..200)
        .map(|i| {
            (
                format!("{}-{i}", f.plugin),
                "game.score",
                json!({"board": board, "player": players[i % 4], "points": i % 7}),
            )
        })
        .collect();
    let poison = format!("{}-poison", f.plugin);
    events.insert(
        77,
        (
            poison.clone(),
            "game.score",
            json!({"board": board, "player": "ana", "points": "lots"}),
        ),
    );
    produce(&f.topic, &events).await?;
    let manifest = f.manifest(
        "py.toml",
        &format!(
            r#"
[[plugin]]
name = "{name}"
wasm = "{wasm}"
subscribe = ["{topic}"]

[plugin.grants]
keyvalue = {{ prefixes = ["{prefix}"] }}

[plugin.limits]
instance = "reused"
batch_size = 32
memory_mb = 128

[plugin.config]
key_prefix = "{prefix}"
"#,
            name = f.plugin,
            wasm = harness::platform_plugin("leaderboard-py").display(),
            topic = f.topic,
        ),
    )?;
    check(&manifest)?;
    let mut host = Host::start(&manifest, &["--cache-dir", &cache_dir()]).await?;

    let mut redis = redis_conn().await?;
    let key = format!("{prefix}{board}");
    let counted: i64 = wait_for(Duration::from_secs(120), "200 scores applied", || {
        let mut redis = redis.clone();
        let key = format!("{key}:events");
        async move {
            let n: Option<i64> = redis::cmd("GET").arg(&key).query_async(&mut redis).await?;
            Ok(n.filter(|n| *n >= 200))
        }
    })
    .await?;
    assert_eq!(counted, 200, "every score counted once");
    for (p, player) in players.iter().enumerate() {
        let expected: i64 = (0..200)
            .filter(|i| i % 4 == p)
            .map(|i| (i % 7) as i64)
            .sum();
        let score: f64 = redis::cmd("ZSCORE")
            .arg(&key)
            .arg(player)
            .query_async(&mut redis)
            .await?;
        assert_eq!(score, expected as f64, "{player}");
    }
    let dead = dead_letters(&f.plugin, 1).await?;
    assert_eq!(dead[0].0, poison);
    assert!(dead[0].1.contains("`points`"), "{dead:?}");

    let status = host.terminate(Duration::from_secs(30))?;
    assert!(status.success(), "exit status {status}:\n{}", host.logs());
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .arg(format!("{key}:events"))
        .query_async(&mut redis)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_watch_history_stores_each_view_once_and_dead_letters_the_poison()
-> Result<()> {
    let f = Fixture::new(1).await?;
    let collection = unique_name("watch");
    let mut events: Vec<(String, &str, Value)> = (0..100)
        .map(|i| {
            (
                format!("{}-{i}", f.plugin),
                "video.watched",
                json!({"user": format!("u{}", i % 5), "video": format!("v{i}"), "seconds": i}),
            )
        })
        .collect();
    let poison = format!("{}-poison", f.plugin);
    events.insert(
        40,
        (
            poison.clone(),
            "video.watched",
            json!({"user": "u1", "video": "", "seconds": 3}),
        ),
    );
    // A replay of an event already handed over: stored once.
    events.push(events[3].clone());
    produce(&f.topic, &events).await?;
    let manifest = f.manifest(
        "js.toml",
        &format!(
            r#"
[[plugin]]
name = "{name}"
wasm = "{wasm}"
subscribe = ["{topic}"]

[plugin.grants]
documents = {{ database = "streaming", collections = ["{collection}"] }}

[plugin.limits]
instance = "reused"
batch_size = 32
memory_mb = 128

[plugin.config]
collection = "{collection}"
"#,
            name = f.plugin,
            wasm = harness::platform_plugin("watch-history-js").display(),
            topic = f.topic,
        ),
    )?;
    check(&manifest)?;
    let mut host = Host::start(&manifest, &["--cache-dir", &cache_dir()]).await?;

    let client = mongodb::Client::with_uri_str(&Service::mongodb().url).await?;
    let coll = client
        .database("streaming")
        .collection::<mongodb::bson::Document>(&collection);
    wait_for(Duration::from_secs(120), "100 views stored", || {
        let coll = coll.clone();
        async move {
            let n = coll.count_documents(mongodb::bson::doc! {}).await?;
            Ok((n >= 100).then_some(()))
        }
    })
    .await?;
    let dead = dead_letters(&f.plugin, 1).await?;
    assert_eq!(dead[0].0, poison);
    assert!(dead[0].1.contains("`video`"), "{dead:?}");

    let docs: Vec<mongodb::bson::Document> = coll
        .find(mongodb::bson::doc! {})
        .await?
        .try_collect()
        .await?;
    assert_eq!(
        docs.len(),
        100,
        "one document per event, the replay included"
    );
    let ids: HashSet<String> = docs
        .iter()
        .map(|d| d.get_str("_id").unwrap_or_default().to_string())
        .collect();
    for i in 0..100 {
        let id = format!("{}-{i}", f.plugin);
        assert!(ids.contains(&id), "{id} stored");
    }
    let third = docs
        .iter()
        .find(|d| d.get_str("_id").ok() == Some(&format!("{}-3", f.plugin)))
        .expect("event 3");
    assert_eq!(third.get_str("user")?, "u3");
    assert_eq!(third.get_str("video")?, "v3");
    // The event's `time` (2026-01-01T00:00:00Z) reached the plugin as microseconds.
    let at = match third.get("at") {
        Some(mongodb::bson::Bson::Int64(n)) => *n,
        Some(mongodb::bson::Bson::Double(f)) => *f as i64,
        other => panic!("`at` is {other:?}"),
    };
    assert_eq!(at, 1_767_225_600_000_000);

    // One `bulk-write` per call, not a write per event: 102 events, in calls of up to 32.
    let (_, metrics) = host.get("/metrics").await?;
    let calls = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                r#"polyhost_backend_calls_total{{backend="documents",plugin="{}"}}"#,
                f.plugin
            ))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .context("the plugin's documents calls in /metrics")?;
    assert!(
        (1.0..=25.0).contains(&calls),
        "{calls} documents calls for 102 events"
    );

    let status = host.terminate(Duration::from_secs(30))?;
    assert!(status.success(), "exit status {status}:\n{}", host.logs());
    coll.drop().await?;
    Ok(())
}
