//! Prometheus metrics, served at `GET /metrics` by the admin API.
//!
//! One process-wide registry ([`global`]) built on `prometheus-client` (the Prometheus
//! project's own Rust client, OpenMetrics text format). Per plugin: events by final outcome,
//! retries, batch latency, consumer lag, instances in flight, generated events, swaps (and
//! what they changed) and the swap pause, blob bytes being written; per backend: calls,
//! errors, latency.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::runtime::RecordMeta;

/// Labels naming a plugin.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    /// The plugin's manifest name.
    pub plugin: String,
}

/// Labels naming a plugin and what became of its events.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The plugin's manifest name.
    pub plugin: String,
    /// `ok`, `dead_lettered` or `dropped` (the dead letter was refused even reduced).
    pub outcome: String,
}

/// Labels naming a backend and the plugin that called it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    /// The backend's grant: `sql`, `documents`, `keyvalue` (`wasi:keyvalue` and
    /// `polyhost:platform/kv` alike), `search`, `messaging`.
    pub backend: String,
    /// The calling plugin's manifest name (empty for a call outside any plugin's batch).
    pub plugin: String,
}

tokio::task_local! {
    /// The plugin whose call is running in this task: set around each call into a
    /// plugin, so a host call counts against the plugin that made it (round trips per
    /// plugin) without every backend passing the name along.
    pub static CALLING_PLUGIN: std::sync::Arc<str>;
}

/// Labels of a swap.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SwapLabels {
    /// The plugin's manifest name.
    pub plugin: String,
    /// `ok`, `refused` (the new version failed a load check) or `rollback`.
    pub result: String,
}

/// Labels of one thing a swap changed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SwapChangeLabels {
    /// The plugin's manifest name.
    pub plugin: String,
    /// `component`, `kind`, `config`, `grants` or `limits`.
    pub change: String,
}

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    /// Events whose outcome is final, by outcome.
    pub events: Family<OutcomeLabels, Counter>,
    /// Events handed over again after a `retry` or a transient failure.
    pub retries: Family<PluginLabel, Counter>,
    /// Time one batch spends in the plugin's call (one hand-over).
    pub batch_seconds: Family<PluginLabel, Histogram>,
    /// Time a batch waits for a free instance (`max_instances`) before its call.
    pub instance_wait_seconds: Family<PluginLabel, Histogram>,
    /// Time from a record's Kafka timestamp (when it was produced) to its event's final
    /// outcome: end-to-end latency, queueing and retries included.
    pub event_latency_seconds: Family<PluginLabel, Histogram>,
    /// Time from a record's Kafka timestamp to its event's first hand-over to the plugin:
    /// the part of `event_latency_seconds` spent before the plugin saw the event.
    pub event_wait_seconds: Family<PluginLabel, Histogram>,
    /// Records on the plugin's assigned partitions not yet final (high watermark minus
    /// the consumer's position, summed).
    pub lag: Family<PluginLabel, Gauge>,
    /// Instances of the plugin running now.
    pub in_flight: Family<PluginLabel, Gauge>,
    /// Events a generator produced and the broker acknowledged.
    pub generated: Family<PluginLabel, Counter>,
    /// Host calls into a backend, by backend and calling plugin.
    pub backend_calls: Family<BackendLabel, Counter>,
    /// Host calls into a backend that returned an error.
    pub backend_errors: Family<BackendLabel, Counter>,
    /// Latency of host calls into a backend.
    pub backend_seconds: Family<BackendLabel, Histogram>,
    /// Hot swaps, by result.
    pub swaps: Family<SwapLabels, Counter>,
    /// Swaps and rollbacks, by what they changed (one swap may count under several).
    pub swap_changes: Family<SwapChangeLabels, Counter>,
    /// Time between the last batch started on the old version and the first on the new.
    pub swap_pause_seconds: Family<PluginLabel, Histogram>,
    /// Dead letters written reduced (value cut, or only headers) to fit the broker's limit.
    pub dead_letters_reduced: Family<PluginLabel, Counter>,
    /// Partition workers that died (panicked) and were restarted.
    pub worker_restarts: Family<PluginLabel, Counter>,
    /// Bytes of blobs the plugin's `put-blob`/`put-blobs` writes hold now, their calls
    /// answered or abandoned (bounded per plugin: see the documents backend).
    pub blob_bytes_in_flight: Family<PluginLabel, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency() -> Histogram {
    // 100 µs … ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

fn end_to_end() -> Histogram {
    // 1 ms … ~9 min, 4 buckets per doubling
    Histogram::new(exponential_buckets(0.001, 2f64.powf(0.25), 77))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("polyhost");
        let m = Metrics {
            events: Family::default(),
            retries: Family::default(),
            batch_seconds: Family::new_with_constructor(latency),
            instance_wait_seconds: Family::new_with_constructor(latency),
            event_latency_seconds: Family::new_with_constructor(end_to_end),
            event_wait_seconds: Family::new_with_constructor(end_to_end),
            lag: Family::default(),
            in_flight: Family::default(),
            generated: Family::default(),
            backend_calls: Family::default(),
            backend_errors: Family::default(),
            backend_seconds: Family::new_with_constructor(latency),
            swaps: Family::default(),
            swap_changes: Family::default(),
            swap_pause_seconds: Family::new_with_constructor(latency),
            dead_letters_reduced: Family::default(),
            worker_restarts: Family::default(),
            blob_bytes_in_flight: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "events",
            "Events whose outcome is final, by outcome",
            m.events.clone(),
        );
        registry.register(
            "retries",
            "Events handed to the plugin again after a retry outcome or a transient failure",
            m.retries.clone(),
        );
        registry.register(
            "batch_duration_seconds",
            "Time one batch spends in the plugin's call (its wait for a free instance is instance_wait_seconds)",
            m.batch_seconds.clone(),
        );
        registry.register(
            "instance_wait_seconds",
            "Time a batch waits for a free instance of the plugin (max_instances) before its call",
            m.instance_wait_seconds.clone(),
        );
        registry.register(
            "event_latency_seconds",
            "Time from a record's Kafka timestamp to its event's final outcome",
            m.event_latency_seconds.clone(),
        );
        registry.register(
            "event_wait_seconds",
            "Time from a record's Kafka timestamp to its event's first hand-over to the plugin (the broker, the consumer, the partition's queue, the batch window and the wait for an instance)",
            m.event_wait_seconds.clone(),
        );
        registry.register(
            "consumer_lag",
            "Records on the plugin's assigned partitions past its consumer position",
            m.lag.clone(),
        );
        registry.register(
            "instances_in_flight",
            "Instances of the plugin running now",
            m.in_flight.clone(),
        );
        registry.register(
            "generated_events",
            "Events a generator produced that the broker acknowledged",
            m.generated.clone(),
        );
        registry.register(
            "backend_calls",
            "Host calls into a backend",
            m.backend_calls.clone(),
        );
        registry.register(
            "backend_errors",
            "Host calls into a backend that returned an error",
            m.backend_errors.clone(),
        );
        registry.register(
            "backend_call_duration_seconds",
            "Latency of host calls into a backend",
            m.backend_seconds.clone(),
        );
        registry.register("swaps", "Hot swaps, by result", m.swaps.clone());
        registry.register(
            "swap_changes",
            "Hot swaps and rollbacks, by what they changed: component, kind, config, grants, limits",
            m.swap_changes.clone(),
        );
        registry.register(
            "swap_pause_seconds",
            "Time between the last batch started on the old version and the first on the new",
            m.swap_pause_seconds.clone(),
        );
        registry.register(
            "dead_letters_reduced",
            "Dead letters written reduced (value cut, or headers only) to fit the broker's limit",
            m.dead_letters_reduced.clone(),
        );
        registry.register(
            "partition_worker_restarts",
            "Partition workers that died (panicked) and were restarted from the stored offset",
            m.worker_restarts.clone(),
        );
        registry.register(
            "blob_bytes_in_flight",
            "Bytes of blobs the plugin's put-blob(s) writes hold now, their calls answered or abandoned",
            m.blob_bytes_in_flight.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Records one host call into `backend`, by the plugin in [`CALLING_PLUGIN`].
    pub fn backend_call(&self, backend: &str, took: Duration, failed: bool) {
        let label = BackendLabel {
            backend: backend.to_string(),
            plugin: CALLING_PLUGIN
                .try_with(|p| p.to_string())
                .unwrap_or_default(),
        };
        self.backend_calls.get_or_create(&label).inc();
        if failed {
            self.backend_errors.get_or_create(&label).inc();
        }
        self.backend_seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    /// The count of `plugin`'s final outcomes of kind `outcome` (0 when there were none;
    /// reading creates no series).
    pub fn events_of(&self, plugin: &str, outcome: &str) -> u64 {
        self.events
            .get(&OutcomeLabels {
                plugin: plugin.to_string(),
                outcome: outcome.to_string(),
            })
            .map_or(0, |c| c.get())
    }

    /// A plugin label.
    pub fn plugin(plugin: &str) -> PluginLabel {
        PluginLabel {
            plugin: plugin.to_string(),
        }
    }
}

/// One handler plugin's series, resolved once (the trigger updates them per event, so it
/// must not look labels up each time).
#[derive(Clone, Debug)]
pub struct PluginSeries {
    /// Final `ok` outcomes.
    pub ok: Counter,
    /// Final dead-lettered outcomes.
    pub dead_lettered: Counter,
    /// Final outcomes of events whose dead letter the broker refused even as an envelope:
    /// dropped (logged) so that the partition goes on.
    pub dropped: Counter,
    /// Dead letters written reduced to fit the broker's limit.
    pub dead_letters_reduced: Counter,
    /// Partition workers restarted after dying.
    pub worker_restarts: Counter,
    /// Events handed over again.
    pub retries: Counter,
    /// Time one batch spends in the plugin's call.
    pub batch_seconds: Histogram,
    /// Time from a record's Kafka timestamp to its event's final outcome.
    pub event_latency_seconds: Histogram,
    /// Time from a record's Kafka timestamp to its event's first hand-over.
    pub event_wait_seconds: Histogram,
}

impl PluginSeries {
    /// Observes, for records whose events are being handed to the plugin for the first
    /// time, how long they waited since they were produced.
    pub fn first_hand_over(&self, records: &[Arc<RecordMeta>]) {
        let now = now_ms();
        for produced in records.iter().filter_map(|r| r.timestamp_ms) {
            self.event_wait_seconds
                .observe(seconds_between(produced, now));
        }
    }

    /// Observes the latency of an event (its record's Kafka timestamp) made final now.
    pub fn settled(&self, produced_ms: Option<i64>) {
        if let Some(produced) = produced_ms {
            self.event_latency_seconds
                .observe(seconds_between(produced, now_ms()));
        }
    }
}

/// Now, in milliseconds since the epoch (Kafka's timestamps).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Seconds from `from` to `to` (milliseconds since the epoch); never negative, as clocks of
/// the producer's machine and this one may differ.
fn seconds_between(from: i64, to: i64) -> f64 {
    (to - from).max(0) as f64 / 1000.0
}

impl Metrics {
    /// `plugin`'s series.
    pub fn series(&self, plugin: &str) -> PluginSeries {
        let outcome = |o: &str| {
            self.events
                .get_or_create(&OutcomeLabels {
                    plugin: plugin.to_string(),
                    outcome: o.to_string(),
                })
                .clone()
        };
        let label = Metrics::plugin(plugin);
        PluginSeries {
            ok: outcome("ok"),
            dead_lettered: outcome("dead_lettered"),
            dropped: outcome("dropped"),
            dead_letters_reduced: self.dead_letters_reduced.get_or_create(&label).clone(),
            worker_restarts: self.worker_restarts.get_or_create(&label).clone(),
            retries: self.retries.get_or_create(&label).clone(),
            batch_seconds: self.batch_seconds.get_or_create(&label).clone(),
            event_latency_seconds: self.event_latency_seconds.get_or_create(&label).clone(),
            event_wait_seconds: self.event_wait_seconds.get_or_create(&label).clone(),
        }
    }
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_backend_call_counts_against_the_plugin_whose_call_made_it() {
        let m = Metrics::new();
        CALLING_PLUGIN
            .scope(std::sync::Arc::from("p1"), async {
                m.backend_call("sql", Duration::from_millis(1), false);
                m.backend_call("sql", Duration::from_millis(1), true);
            })
            .await;
        m.backend_call("keyvalue", Duration::from_millis(1), false);
        let text = m.encode();
        assert!(
            text.contains(r#"polyhost_backend_calls_total{backend="sql",plugin="p1"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"polyhost_backend_errors_total{backend="sql",plugin="p1"} 1"#),
            "{text}"
        );
        // Outside any plugin's call: an empty plugin label.
        assert!(
            text.contains(r#"polyhost_backend_calls_total{backend="keyvalue",plugin=""} 1"#),
            "{text}"
        );
    }
}
