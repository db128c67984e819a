//! The Kafka trigger: delivers each handler plugin's topics to it in batches, with
//! at-least-once delivery, retries, dead letters, per-partition order and a graceful drain.
//!
//! - One consumer group per plugin ([`crate::manifest::PluginSpec::group_id`]), so one
//!   slow or failing plugin never holds another back.
//! - A dispatcher task reads the plugin's consumer and routes each record to its
//!   partition's worker (the private `partition` module); workers run concurrently, and
//!   the plugin's own semaphore (`max_instances`) bounds the instances in flight.
//! - A plugin of the `partitions-handler` form gets calls gathered across its partitions
//!   (the private `gather` module): the partitions whose records arrive within
//!   `batch_wait_ms` of each other share one call, each settling its own outcomes as
//!   after any call; its retries and one-at-a-time hand-overs are its own calls.
//! - Backpressure: a worker's queue holds a few batches. When it is full the dispatcher
//!   waits for room (librdkafka keeps prefetching meanwhile, within its own bounds), so a
//!   plugin that keeps up is never paused. Only a worker that makes no room for
//!   [`TriggerConfig::stuck_after`] (retrying with backoff, or a very slow plugin) gets
//!   its partition paused, so the others go on; it is resumed once the worker has caught
//!   up. Pausing is kept for that case because resuming costs a fetch round trip (up to
//!   `fetch.wait.max.ms` when another partition is idle) and librdkafka drops what it had
//!   prefetched for a paused partition.
//! - Offsets: `enable.auto.offset.store=false`; a worker stores an offset only when its
//!   event and every event fetched before it in the partition are final ([`offsets`]);
//!   `enable.auto.commit` commits stored offsets periodically; the rebalance callback
//!   lets the revoked partitions' in-flight batches finish and commits; shutdown drains
//!   (the batches in flight finish; queued records are left to be redelivered)
//!   and commits.
//! - Outcomes: `ok` is final; `reject`, an invalid CloudEvent ([`cloudevent`]) and a
//!   permanent batch failure go to `polyhost.dlq.<plugin>` ([`dlq`]) and are final once
//!   the broker acknowledges them; `retry` and transient failures are handed over again,
//!   with capped exponential backoff and jitter ([`backoff`]), for as long as it takes.
//!   Only the events not yet final are handed over again, in offset order. A batch of
//!   several events that fails permanently as a whole (a trap, a timeout) is handed over
//!   again one event at a time, so only the culprit is dead-lettered.
//! - Dead letters always fit ([`dlq`]): reasons are capped, a record too large for the
//!   dead-letter topic is written reduced, and one the broker refuses even reduced is
//!   dropped (logged, counted) rather than retried for ever, so a partition never stalls
//!   on its dead-letter topic. Only errors that are not about the record (the broker down)
//!   are retried for as long as it takes.
//! - A partition worker that dies (a panic) is restarted by the dispatcher: the partition
//!   is sought back to the offset after the last one stored, so nothing is lost or
//!   skipped, and the restart is logged and counted (`polyhost_partition_worker_restarts`).
//! - The plugin version is read at each batch ([`Trigger::replace`] swaps it at a batch
//!   boundary without touching the consumer). Its batch limits (`batch_size`,
//!   `batch_wait_ms`) are not: a partition's worker reads them once, when it starts, so a
//!   swap that changes them reaches a partition when its worker next starts (a rebalance,
//!   a worker restart, the host's restart). The dispatcher's queue bound follows the
//!   version in place.
//!
//! This module holds the trigger's API; the private `consumer` module, a plugin's consumer
//! and dispatcher; `gather`, calls across partitions; `rebalance`, the consumer's
//! callbacks; `topics`, topic creation; `signal`, stopping on SIGINT or SIGTERM.

pub mod backoff;
pub mod cloudevent;
mod consumer;
pub mod dlq;
mod gather;
pub mod offsets;
mod partition;
mod rebalance;
mod signal;
mod topics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::connections::Kafka;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use tokio::sync::{mpsc, watch};

use self::backoff::Backoff;
use self::consumer::PluginConsumer;
use self::dlq::DeadLetters;
use self::partition::WorkerHandle;
pub use self::rebalance::RebalanceContext;
pub use self::signal::wait_for_signal;
pub use self::topics::ensure_topics;
use crate::manifest::{Kind, PluginSpec};
use crate::runtime::LoadedPlugin;

/// How the trigger runs, beyond each plugin's manifest limits.
#[derive(Debug, Clone)]
pub struct TriggerConfig {
    /// The Kafka connection (brokers, TLS, SASL, librdkafka settings).
    pub kafka: Kafka,
    /// How often stored offsets are committed (`auto.commit.interval.ms`).
    pub commit_interval: Duration,
    /// The consumer's `session.timeout.ms`: how soon a dead host's partitions move on.
    pub session_timeout: Duration,
    /// Waits between retries of an event, and of an unacknowledged dead letter.
    pub backoff: Backoff,
    /// How long a revocation waits for the revoked partitions' batches to finish.
    pub revoke_timeout: Duration,
    /// How long shutdown waits for the batches in flight before giving up on them (they
    /// are not stored, so they are redelivered after a restart).
    pub drain_timeout: Duration,
    /// A partition's queue is full once this many batches' worth of records (and at
    /// least [`TriggerConfig::queued_records`]) wait for its worker; a paused partition is
    /// resumed once half as many do.
    pub queued_batches: usize,
    /// The fewest records a partition's queue holds before it is full.
    pub queued_records: usize,
    /// How long the dispatcher waits for room in a full queue before pausing its
    /// partition (so that one stuck partition does not hold the plugin's others back).
    pub stuck_after: Duration,
    /// How many partitions a subscribed topic that does not exist yet is created with.
    pub topic_partitions: i32,
    /// How often librdkafka reports statistics, from which the consumer lag is read.
    pub stats_interval: Duration,
    /// For tests: called in the partition worker with each event's topic, partition and
    /// offset just before it is handed to the plugin, so a test can make a worker die (a
    /// panic in the hook is a panic of the worker). `None` in production.
    pub before_hand_over: Option<Hook>,
}

/// What a [`Hook`] calls: with an event's topic, partition and offset.
pub type HookFn = dyn Fn(&str, i32, i64) + Send + Sync;

/// A test hook of [`TriggerConfig::before_hand_over`].
#[derive(Clone)]
pub struct Hook(pub Arc<HookFn>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

impl TriggerConfig {
    /// Defaults for `kafka` (or plain bootstrap servers).
    pub fn new(kafka: impl Into<Kafka>) -> Self {
        TriggerConfig {
            kafka: kafka.into(),
            commit_interval: Duration::from_secs(1),
            session_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            revoke_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
            queued_batches: 4,
            queued_records: 1024,
            stuck_after: Duration::from_millis(500),
            topic_partitions: 3,
            stats_interval: Duration::from_secs(2),
            before_hand_over: None,
        }
    }
}

/// What became of one event: reported to the observer, if any (tests, metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    /// Where the record was.
    pub topic: String,
    /// Where the record was.
    pub partition: i32,
    /// Where the record was.
    pub offset: i64,
    /// The CloudEvent id, when the record was a valid CloudEvent.
    pub id: Option<String>,
    /// Its final outcome.
    pub disposition: Disposition,
    /// How many times it was handed to the plugin.
    pub attempts: u32,
}

/// An event's final outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The plugin answered `ok`.
    Ok,
    /// Sent to the dead-letter topic, for this reason (capped at
    /// [`crate::text::MAX_REASON_BYTES`]).
    DeadLettered(String),
    /// To be dead-lettered for this reason, but the broker refused the dead letter even
    /// reduced to its headers: logged and counted, and final all the same, so that the
    /// partition goes on (the record is still in its topic while retention keeps it).
    Dropped(String),
}

/// Why the trigger could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// A Kafka client failed.
    #[error("plugin `{plugin}`: kafka: {source}")]
    Kafka {
        plugin: String,
        #[source]
        source: KafkaError,
    },
    /// A generator has no topics to consume.
    #[error("plugin `{0}` is a generator: the trigger delivers only to handlers")]
    NotAHandler(String),
}

type Registry = Arc<Mutex<HashMap<(String, i32), WorkerHandle>>>;

/// What a plugin's dispatcher and workers share.
pub(crate) struct Shared {
    pub(crate) name: String,
    plugin: RwLock<Arc<LoadedPlugin>>,
    pub(crate) consumer: Arc<StreamConsumer<RebalanceContext>>,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) config: TriggerConfig,
    pub(crate) observer: Option<mpsc::UnboundedSender<Processed>>,
    /// The plugin's metric series, resolved once.
    pub(crate) series: crate::metrics::PluginSeries,
    /// The consumer lag from the last statistics; -1 before the first.
    lag: Arc<AtomicI64>,
    /// Becomes `true` at the consumer's first assignment.
    first_assignment: watch::Receiver<bool>,
    /// The window of calls gathered across partitions (`partitions-handler` plugins).
    pub(crate) gather: gather::Gather,
}

impl Shared {
    /// The plugin version the next batch runs on (a hot swap replaces it between batches).
    pub(crate) fn plugin(&self) -> Arc<LoadedPlugin> {
        self.plugin
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn queue_limit(&self) -> usize {
        (self.plugin().limits.batch_size.max(1) as usize * self.config.queued_batches.max(1))
            .max(self.config.queued_records)
    }

    pub(crate) fn resume_below(&self) -> usize {
        self.queue_limit() / 2
    }
}

/// One plugin's running consumer.
#[derive(Debug)]
struct Running {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), TriggerError>>,
}

/// The trigger of every handler plugin of a host.
#[derive(Debug)]
pub struct Trigger {
    config: TriggerConfig,
    observer: Option<mpsc::UnboundedSender<Processed>>,
    plugins: HashMap<String, Running>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Trigger {
    /// Starts consuming for every handler plugin with topics to subscribe to.
    pub async fn start(
        config: TriggerConfig,
        plugins: Vec<(PluginSpec, Arc<LoadedPlugin>)>,
        observer: Option<mpsc::UnboundedSender<Processed>>,
    ) -> Result<Trigger, TriggerError> {
        let mut trigger = Trigger {
            config,
            observer,
            plugins: HashMap::new(),
        };
        // The consumers are made together: each costs a few broker round trips (its
        // dead-letter producer, its topics ensured), which would otherwise add up plugin
        // by plugin before the last one starts.
        let handlers: Vec<_> = plugins
            .into_iter()
            .filter(|(spec, _)| spec.kind == Kind::Handler && !spec.subscribe.is_empty())
            .collect();
        let consumers = futures::future::try_join_all(handlers.iter().map(|(spec, plugin)| {
            PluginConsumer::new(
                &trigger.config,
                spec,
                plugin.clone(),
                trigger.observer.clone(),
            )
        }))
        .await?;
        for ((spec, _), consumer) in handlers.iter().zip(consumers) {
            trigger.run(spec, consumer);
        }
        Ok(trigger)
    }

    /// Starts consuming for one more handler plugin (a manifest reload added it).
    pub async fn add(
        &mut self,
        spec: &PluginSpec,
        plugin: Arc<LoadedPlugin>,
    ) -> Result<(), TriggerError> {
        let consumer =
            PluginConsumer::new(&self.config, spec, plugin, self.observer.clone()).await?;
        self.run(spec, consumer);
        Ok(())
    }

    /// Runs `consumer`, made for `spec`, until it is removed or the trigger shuts down.
    fn run(&mut self, spec: &PluginSpec, consumer: PluginConsumer) {
        let (stop, stopping) = watch::channel(false);
        let shared = consumer.shared.clone();
        let task = tokio::spawn(consumer.run(stopping));
        self.plugins
            .insert(spec.name.clone(), Running { shared, stop, task });
    }

    /// Stops one plugin's consumer: drains it and commits, as a shutdown does.
    pub async fn remove(&mut self, name: &str) -> Result<bool, TriggerError> {
        let Some(running) = self.plugins.remove(name) else {
            return Ok(false);
        };
        let _ = running.stop.send(true);
        match running.task.await {
            Ok(r) => r.map(|()| true),
            Err(e) => {
                tracing::error!(plugin = %name, error = %e, "a plugin consumer panicked");
                Ok(true)
            }
        }
    }

    /// Hot swap: the next batch of `plugin.name`'s partitions runs on `plugin`; batches in
    /// flight finish on the version they started with. The consumer is untouched: no
    /// rebalance, no gap, no repeat. Returns the version replaced, or `None` (and changes
    /// nothing) when the trigger runs no plugin of that name.
    pub fn replace(&self, plugin: Arc<LoadedPlugin>) -> Option<Arc<LoadedPlugin>> {
        let running = self.plugins.get(&plugin.name)?;
        let mut slot = running
            .shared
            .plugin
            .write()
            .unwrap_or_else(|e| e.into_inner());
        Some(std::mem::replace(&mut *slot, plugin))
    }

    /// The consumer-group lag of `name` on its assigned partitions, as librdkafka's last
    /// statistics (every [`TriggerConfig::stats_interval`]) put it: for each partition,
    /// the high watermark minus the committed offset (minus the low watermark when
    /// nothing is committed yet). No broker call: `None` when the trigger runs no such
    /// plugin or has no statistics yet.
    pub fn lag(&self, name: &str) -> Option<i64> {
        let lag = self.plugins.get(name)?.shared.lag.load(Ordering::Relaxed);
        (lag >= 0).then_some(lag)
    }

    /// Waits until every plugin's consumer has had its first assignment (it has joined its
    /// group and knows its partitions), for at most `limit`; `false` if some had not.
    pub async fn wait_assigned(&self, limit: Duration) -> bool {
        let all = self.plugins.values().map(|running| {
            let mut assigned = running.shared.first_assignment.clone();
            async move { assigned.wait_for(|a| *a).await.is_ok() }
        });
        tokio::time::timeout(limit, futures::future::join_all(all))
            .await
            .is_ok_and(|done| done.into_iter().all(|ok| ok))
    }

    /// Stops fetching, lets the batches in flight finish, commits, and returns
    /// the first error any plugin's consumer met.
    pub async fn shutdown(mut self) -> Result<(), TriggerError> {
        for running in self.plugins.values() {
            let _ = running.stop.send(true);
        }
        let mut first = Ok(());
        for (name, running) in self.plugins.drain() {
            match running.task.await {
                Ok(Err(e)) if first.is_ok() => first = Err(e),
                Err(e) => tracing::error!(plugin = %name, error = %e, "a plugin consumer panicked"),
                _ => {}
            }
        }
        first
    }
}
