//! The Kafka trigger against native Rust consumers, side by side in one run on the same
//! topic, and the pause a hot swap causes.
//!
//! `cargo bench -p polyhost --bench trigger` (needs the services up and `cargo xtask
//! plugins`). `POLYHOST_BENCH_EVENTS` sets the stream length (default 100 000).
//!
//! 1. **noop**: the host with the no-op handler (batches of 256, CloudEvents parsed,
//!    offsets stored when final) against a native `rdkafka` consumer reading the same
//!    records (and storing offsets the same way) — events/s and the ratio.
//! 2. **batched write**: the host with `batch-writer` (one `wasi:keyvalue` set-many — a
//!    Redis `MSET` — per batch) against a native consumer doing the identical `MSET`s of
//!    up to 256 records.
//! 3. **swap pause**: the no-op handler under a full-speed stream (three times as long,
//!    on a topic of its own), swapped 10 times; the time between the last batch started
//!    on the old version and the first on the new (p50/p99/max), and the throughput of
//!    that window against a window without swaps (new versions are loaded beforehand).
//!
//! Each comparison runs three rounds, alternating host and native, and reports medians.
//! Rates are timed from each side's first event to its last, so the consumer-group join
//! (and the host's topic and dead-letter producer set-up) is left out of both.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use polyhost::backends::keyvalue;
use polyhost::backends::{Connections, Grants, Settings};
use polyhost::connections::Kafka;
use polyhost::manifest::PluginSpec;
use polyhost::runtime::{LoadedPlugin, Runtime, RuntimeConfig};
use polyhost::trigger::{Processed, Trigger, TriggerConfig, dlq};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;

const PARTITIONS: i32 = 3;
const BATCH: usize = 256;
const ROUNDS: usize = 3;
/// The swap part reads a stream this many times as long as the others.
const SWAP_STREAM: usize = 3;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

fn plugin_file(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-plugins")
        .join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} missing: run `cargo xtask plugins`",
        p.display()
    );
    p
}

fn unique(kind: &str) -> String {
    format!(
        "bench-{kind}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

async fn run() -> anyhow::Result<()> {
    let n: usize = std::env::var("POLYHOST_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let settings = Settings::from_env()?;
    let kafka = settings.kafka.clone();
    let runtime = Runtime::new(
        RuntimeConfig {
            max_instances: 64,
            max_memory_mb: 64,
            ..RuntimeConfig::default()
        },
        Arc::new(Connections::new(settings.clone())),
    )?;
    let noop = plugin_file("noop_handler");
    // `POLYHOST_BENCH_ONLY=swap` runs the third part alone.
    if std::env::var("POLYHOST_BENCH_ONLY").as_deref() == Ok("swap") {
        return swap_pause(&runtime, &kafka, &noop, n).await;
    }
    let topic = unique("topic");
    create_topic(&kafka, &topic).await?;
    produce(&kafka, &topic, n).await?;
    println!(
        "trigger benchmark: {n} CloudEvents (~300 B) on {PARTITIONS} partitions, batches of {BATCH}, medians of {ROUNDS} rounds\n"
    );

    // 1. no-op
    let mut host = Vec::new();
    let mut native = Vec::new();
    for _ in 0..ROUNDS {
        let spec = spec("bench-noop", &noop, &topic);
        let plugin = runtime.load(&spec).await?;
        host.push(host_rate(&kafka, spec, plugin, n).await?);
        native.push(native_rate(&kafka, &topic, n, None).await?);
    }
    report("no-op handler", &host, &native, 0.50);

    // 2. batched write
    let writer = plugin_file("batch_writer");
    let redis = settings.redis.client()?;
    let mut conn = redis::aio::ConnectionManager::new(redis).await?;
    let prefix = unique("kv") + ":";
    let mut host = Vec::new();
    let mut native = Vec::new();
    for _ in 0..ROUNDS {
        let mut spec = spec("bench-writer", &writer, &topic);
        spec.grants.keyvalue = Some(keyvalue::Grant {
            prefixes: vec![prefix.clone()],
        });
        spec.config.insert(
            "prefix".into(),
            polyhost::manifest::ConfigValue::String(format!("{prefix}host:")),
        );
        let plugin = runtime.load(&spec).await?;
        host.push(host_rate(&kafka, spec, plugin, n).await?);
        native.push(
            native_rate(
                &kafka,
                &topic,
                n,
                Some((&mut conn, &format!("{prefix}native:"))),
            )
            .await?,
        );
    }
    report("batched Redis write (MSET per batch)", &host, &native, 0.85);
    // Remove the written keys, a page at a time.
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }

    // 3. swap pause
    delete_topic(&kafka, &topic).await;
    swap_pause(&runtime, &kafka, &noop, n).await
}

async fn delete_topic(kafka: &Kafka, topic: &str) {
    let admin: Result<AdminClient<DefaultClientContext>, _> = kafka.client_config().create();
    if let Ok(admin) = admin {
        let _ = admin.delete_topics(&[topic], &AdminOptions::new()).await;
    }
}

fn spec(name: &str, wasm: &PathBuf, topic: &str) -> PluginSpec {
    let mut spec = PluginSpec::new(unique(name), wasm);
    spec.subscribe = vec![topic.to_string()];
    spec.limits.batch_size = BATCH as u32;
    spec.limits.max_instances = PARTITIONS as u32;
    spec.grants = Grants::default();
    spec
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn report(what: &str, host: &[f64], native: &[f64], target: f64) {
    let (h, n) = (median(host), median(native));
    println!("{what}");
    println!("  host    {h:>10.0} events/s   rounds {host:.0?}");
    println!("  native  {n:>10.0} events/s   rounds {native:.0?}");
    println!(
        "  ratio   {:>10.1} %  (target ≥ {:.0} %)\n",
        h / n * 100.0,
        target * 100.0
    );
}

async fn create_topic(kafka: &Kafka, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
    admin
        .create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    Ok(())
}

async fn produce(kafka: &Kafka, topic: &str, n: usize) -> anyhow::Result<()> {
    let producer: FutureProducer = kafka
        .client_config()
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()?;
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let sends = chunk.iter().map(|&i| {
            let key = format!("u-{}", i % 5000);
            let value = format!(
                r#"{{"specversion":"1.0","id":"evt-{i}","source":"/bench","type":"streaming.session.heartbeat","subject":"{key}","time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","data":{{"session_id":"s-{i}","user_id":"{key}","title_id":"t-{}","position_s":{},"watched_s":{}}}}}"#,
                i % 977,
                i % 5400,
                i % 600
            );
            let producer = producer.clone();
            let topic = topic.to_string();
            async move {
                producer
                    .send(
                        FutureRecord::to(&topic).key(key.as_bytes()).payload(value.as_bytes()),
                        Duration::from_secs(30),
                    )
                    .await
            }
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e)?;
        }
    }
    Ok(())
}

/// The host's rate: a trigger with `plugin` in a fresh group reads the whole topic.
async fn host_rate(
    kafka: &Kafka,
    spec: PluginSpec,
    plugin: Arc<LoadedPlugin>,
    n: usize,
) -> anyhow::Result<f64> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Processed>();
    let dead_letters = dlq::topic_for(&spec.name);
    let trigger = Trigger::start(
        TriggerConfig::new(kafka.clone()),
        vec![(spec, plugin)],
        Some(tx),
    )
    .await?;
    let mut started = None;
    let mut done = 0;
    while done < n {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(_)) => done += 1,
            _ => anyhow::bail!("the host stalled after {done} of {n} events"),
        }
        started.get_or_insert_with(Instant::now);
    }
    let rate = rate_since(started, n);
    trigger.shutdown().await?;
    // Every round's plugin has a name (a group, a dead-letter topic) of its own.
    delete_topic(kafka, &dead_letters).await;
    Ok(rate)
}

/// A native consumer in a fresh group: reads the whole topic, storing offsets as it goes;
/// with `redis`, writes each run of up to 256 records with one `MSET`.
async fn native_rate(
    kafka: &Kafka,
    topic: &str,
    n: usize,
    mut redis: Option<(&mut redis::aio::ConnectionManager, &str)>,
) -> anyhow::Result<f64> {
    let mut started = None;
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", unique("native"))
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut stream = consumer.stream();
    let mut pending: Vec<(String, Vec<u8>)> = Vec::with_capacity(BATCH);
    let mut done = 0;
    while done < n {
        let m = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
        started.get_or_insert_with(Instant::now);
        let value: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
        consumer.store_offset(m.topic(), m.partition(), m.offset())?;
        done += 1;
        if let Some((_, prefix)) = &redis {
            let data = serde_json::to_vec(&value["data"])?;
            pending.push((
                format!("{prefix}ev:{}", value["id"].as_str().unwrap_or("")),
                data,
            ));
            if pending.len() == BATCH || done == n {
                let (conn, _) = redis.as_mut().expect("some");
                let mut cmd = redis::cmd("MSET");
                for (k, v) in pending.drain(..) {
                    cmd.arg(k).arg(v);
                }
                let _: () = cmd.query_async(&mut **conn).await?;
            }
        }
    }
    Ok(rate_since(started, n))
}

/// Events per second over a run of `n` events that began (its first event) at `started`:
/// both sides are timed from their first event, so consumer-group joins are left out.
fn rate_since(started: Option<Instant>, n: usize) -> f64 {
    let elapsed = started.expect("at least one event").elapsed().as_secs_f64();
    (n - 1) as f64 / elapsed
}

/// Ten swaps under a full-speed stream against a window with none.
async fn swap_pause(
    runtime: &Runtime,
    kafka: &Kafka,
    noop: &PathBuf,
    n: usize,
) -> anyhow::Result<()> {
    // A longer stream of its own, so that the window lasts long enough to compare rates.
    let n = n * SWAP_STREAM;
    let topic = &unique("swap-topic");
    create_topic(kafka, topic).await?;
    produce(kafka, topic, n).await?;
    let mut pauses = Vec::new();
    let mut rates = Vec::new();
    for swaps in [0usize, 10] {
        let spec = spec("bench-swap", noop, topic);
        let first = runtime.load(&spec).await?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Processed>();
        let trigger = Trigger::start(
            TriggerConfig::new(kafka.clone()),
            vec![(spec.clone(), first)],
            Some(tx),
        )
        .await?;
        // Warm up: wait for the first tenth, then time the window.
        let mut done = 0;
        while done < n / 10 {
            rx.recv().await.ok_or_else(|| anyhow::anyhow!("stalled"))?;
            done += 1;
        }
        // The versions swapped in are loaded beforehand: the window measures the swaps.
        let mut versions = Vec::new();
        for _ in 0..swaps {
            versions.push(runtime.load(&spec).await?);
        }
        let window = n - n / 10 - n / 20;
        let every = window / (swaps + 1);
        let started = Instant::now();
        let mut counted = 0;
        let mut next_swap = every;
        let mut swapped = Vec::new();
        while counted < window {
            rx.recv().await.ok_or_else(|| anyhow::anyhow!("stalled"))?;
            counted += 1;
            if swaps > 0 && counted == next_swap && swapped.len() < swaps {
                next_swap += every;
                let new = versions.pop().expect("one per swap");
                let old = trigger.replace(new.clone()).expect("running");
                swapped.push((old, new));
            }
        }
        rates.push(window as f64 / started.elapsed().as_secs_f64());
        for (old, new) in &swapped {
            let first = new.first_batch_at().expect("the new version ran");
            let last = old.last_batch_at().expect("the old version ran").min(first);
            pauses.push(first.duration_since(last).as_secs_f64() * 1000.0);
        }
        trigger.shutdown().await?;
        delete_topic(kafka, &dlq::topic_for(&spec.name)).await;
    }
    delete_topic(kafka, topic).await;
    pauses.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| pauses[((pauses.len() - 1) as f64 * p).round() as usize];
    println!("hot swap under a full-speed stream of {n} events (no-op handler, 10 swaps)");
    println!(
        "  pause   p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms   (target p99 ≤ 10 ms)",
        pct(0.5),
        pct(0.99),
        pauses.last().copied().unwrap_or_default()
    );
    println!(
        "  window  {:.0} events/s without swaps, {:.0} with 10: {:.1} % lost   (target ≤ 5 %)\n",
        rates[0],
        rates[1],
        (1.0 - rates[1] / rates[0]) * 100.0
    );
    Ok(())
}
