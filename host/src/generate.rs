//! The generator driver: runs a generator plugin at its rate and publishes what it returns
//! with an idempotent producer (`enable.idempotence`, `acks=all`), in order, keyed as the
//! plugin keys each message (the entity id).
//!
//! `polyhost run` drives every generator of its manifest with the manifest's `rate`,
//! `total` and `seed` (`[plugin.config]`); `polyhost generate` runs one alone until its
//! total is acknowledged.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connections::Kafka;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use tokio::sync::watch;

use crate::manifest::PluginSpec;
use crate::runtime::LoadedPlugin;

/// How one generation run goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Events per second; `None` publishes as fast as the broker acknowledges.
    pub rate: Option<f64>,
    /// Stop after this many events; `0` runs until the generator ends or the host stops.
    pub total: u64,
}

impl Pace {
    /// The pace `spec`'s `[plugin.config]` asks for: `rate` (events/s, 0 or absent = as
    /// fast as possible) and `total` (0 or absent = endless).
    pub fn from_config(spec: &PluginSpec) -> Pace {
        let number = |k: &str| {
            spec.config
                .get(k)
                .and_then(|v| v.to_string().parse::<f64>().ok())
        };
        Pace {
            rate: number("rate").filter(|r| *r > 0.0),
            total: number("total").map(|t| t.max(0.0) as u64).unwrap_or(0),
        }
    }
}

/// Why a generation run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The generator trapped or timed out.
    #[error("plugin `{plugin}`: {reason}")]
    Plugin { plugin: String, reason: String },
    /// The generator returned a message for a topic its grants do not name.
    #[error(
        "plugin `{plugin}`: produced a message for topic `{topic}`, not in grants.messaging.publish"
    )]
    NotGranted { plugin: String, topic: String },
    /// Kafka refused or lost a message.
    #[error("plugin `{plugin}`: kafka: {source}")]
    Kafka {
        plugin: String,
        #[source]
        source: KafkaError,
    },
}

/// How long a generator's producer may take to connect before its run starts anyway.
const WARM_UP: Duration = Duration::from_secs(5);

/// Connects `producer` and learns the leaders of `topics` before the generator's clock
/// starts (within [`WARM_UP`] in all), so that its first records do not carry the broker
/// connection, the topics' metadata and the idempotent producer id (asked for on the first
/// connection) in their latency: without it the events of a paced run's first 50 ms took
/// 100–550 ms from produce to their partition's worker, with it mostly under 100 ms. A
/// failure is left to the first send to report.
async fn warm_up(producer: &FutureProducer, topics: &[String]) {
    let (producer, topics) = (producer.clone(), topics.to_vec());
    let deadline = Instant::now() + WARM_UP;
    let _ = tokio::task::spawn_blocking(move || {
        for topic in &topics {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Err(e) = producer.client().fetch_metadata(Some(topic), left) {
                tracing::debug!(topic, error = %e, "generator warm-up: no metadata yet");
            }
        }
    })
    .await;
}

/// How many messages one call to the generator asks for, at most.
const CHUNK: u32 = 256;

/// Runs `plugin` (a generator) until `pace.total` events are acknowledged, the generator
/// returns an empty list, or `stop` turns true; returns how many events the broker
/// acknowledged. Topics the generator writes are created (with `partitions`) if missing.
pub async fn run(
    connection: &Kafka,
    spec: &PluginSpec,
    plugin: Arc<LoadedPlugin>,
    pace: Pace,
    partitions: i32,
    mut stop: watch::Receiver<bool>,
) -> Result<u64, GenerateError> {
    let name = spec.name.clone();
    let kafka = |source| GenerateError::Kafka {
        plugin: name.clone(),
        source,
    };
    let granted: HashSet<String> = spec
        .grants
        .messaging
        .as_ref()
        .map(|g| g.publish.iter().cloned().collect())
        .unwrap_or_default();
    let topics: Vec<String> = granted.iter().cloned().collect();
    crate::trigger::ensure_topics(connection, &topics, partitions)
        .await
        .map_err(kafka)?;
    let producer: FutureProducer = connection
        .client_config()
        .set("client.id", format!("polyhost-{name}"))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .create()
        .map_err(kafka)?;
    warm_up(&producer, &topics).await;
    let mut generator = plugin
        .generator()
        .await
        .map_err(|e| GenerateError::Plugin {
            plugin: name.clone(),
            reason: e.to_string(),
        })?;
    let metric = crate::metrics::global()
        .generated
        .get_or_create(&crate::metrics::Metrics::plugin(&name))
        .clone();
    let started = Instant::now();
    let mut acked: u64 = 0;
    tracing::info!(plugin = %name, rate = ?pace.rate, total = pace.total, "generating");
    loop {
        if *stop.borrow() {
            break;
        }
        let mut want = CHUNK as u64;
        if pace.total > 0 {
            want = want.min(pace.total - acked);
            if want == 0 {
                break;
            }
        }
        if let Some(rate) = pace.rate {
            // Ask for a tenth of a second's worth, and wait until they are due.
            want = want.min(((rate / 10.0).ceil() as u64).max(1));
            let due = started + Duration::from_secs_f64(acked as f64 / rate);
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        let messages = generator
            .next(want as u32)
            .await
            .map_err(|e| GenerateError::Plugin {
                plugin: name.clone(),
                reason: e.to_string(),
            })?;
        if messages.is_empty() {
            tracing::info!(plugin = %name, acked, "the generator ended its run");
            break;
        }
        let mut deliveries = Vec::with_capacity(messages.len());
        for m in &messages {
            if !granted.contains(&m.topic) {
                return Err(GenerateError::NotGranted {
                    plugin: name.clone(),
                    topic: m.topic.clone(),
                });
            }
            let mut headers = OwnedHeaders::new();
            for (k, v) in &m.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(&m.topic)
                .payload(&m.value)
                .headers(headers);
            if let Some(k) = &m.key {
                record = record.key(k);
            }
            // The queue is bounded: when it is full, let deliveries drain and try again.
            loop {
                match producer.send_result(record) {
                    Ok(d) => {
                        deliveries.push(d);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(kafka(e)),
                }
            }
        }
        for d in deliveries {
            match d.await {
                Ok(Ok(_)) => {
                    acked += 1;
                    metric.inc();
                }
                Ok(Err((e, _))) => return Err(kafka(e)),
                Err(_) => return Err(kafka(KafkaError::Canceled)),
            }
        }
    }
    producer.flush(Duration::from_secs(30)).map_err(kafka)?;
    tracing::info!(plugin = %name, acked, seconds = started.elapsed().as_secs_f64(), "generation run done");
    Ok(acked)
}
