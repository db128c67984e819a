//! The Kafka trigger: delivers each handler plugin's topics to it in batches, with
//! at-least-once delivery, retries, dead letters, per-partition order and a graceful drain.
//!
//! - One consumer group per plugin ([`crate::manifest::PluginSpec::group_id`]), so one
//!   slow or failing plugin never holds another back.
//! - A dispatcher task reads the plugin's consumer and routes each record to its
//!   partition's worker (the private `partition` module); workers run concurrently, and
//!   the plugin's own semaphore (`max_instances`) bounds the instances in flight.
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
//!   boundary without touching the consumer).

pub mod backoff;
pub mod cloudevent;
pub mod dlq;
pub mod offsets;
mod partition;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::connections::Kafka;
use futures::StreamExt as _;
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::statistics::Statistics;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use self::backoff::Backoff;
use self::dlq::DeadLetters;
use self::offsets::PartitionProgress;
use self::partition::{Done, Restart, Worker, WorkerHandle};
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

/// The consumer's context: on revocation, stops the revoked partitions' workers, waits
/// (bounded) for their in-flight batches, and commits what they stored.
pub struct RebalanceContext {
    plugin: String,
    registry: Registry,
    revoke_timeout: Duration,
    lag: Arc<AtomicI64>,
}

impl ClientContext for RebalanceContext {
    /// Sums the lag of the partitions assigned to this consumer.
    fn stats(&self, statistics: Statistics) {
        let mut lag = 0;
        for topic in statistics.topics.values() {
            for p in topic.partitions.values() {
                if p.partition < 0 || !p.desired || p.hi_offset < 0 {
                    continue; // librdkafka's internal partition, or one not (yet) ours
                }
                lag += if p.committed_offset >= 0 {
                    (p.hi_offset - p.committed_offset).max(0)
                } else {
                    (p.hi_offset - p.lo_offset.max(0)).max(0)
                };
            }
        }
        self.lag.store(lag, Ordering::Relaxed);
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let mut dones = Vec::new();
                {
                    let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
                    for e in tpl.elements() {
                        if let Some(h) = registry.remove(&(e.topic().to_string(), e.partition())) {
                            let _ = h.revoked.send(true);
                            dones.push(h.done.clone());
                            // Dropping the sender lets the worker see the end of its queue.
                        }
                    }
                }
                let limit = self.revoke_timeout;
                let wait = || {
                    let deadline = std::time::Instant::now() + limit;
                    for d in &dones {
                        let left = deadline.saturating_duration_since(std::time::Instant::now());
                        if !d.wait(left) {
                            tracing::warn!(plugin = %self.plugin, "a revoked partition's batch did not finish in time; it will be redelivered");
                        }
                    }
                };
                // The callback runs inside the dispatcher's poll: let the runtime move
                // other tasks (the workers being waited for) off this thread.
                match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                    Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                        tokio::task::block_in_place(wait)
                    }
                    _ => wait(),
                }
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
                    && !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
                {
                    tracing::warn!(plugin = %self.plugin, error = %e, "commit on revocation failed");
                }
                tracing::info!(plugin = %self.plugin, partitions = tpl.count(), "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(plugin = %self.plugin, partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Error(e) => {
                tracing::warn!(plugin = %self.plugin, error = %e, "rebalance error")
            }
        }
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
        for (spec, plugin) in plugins {
            if spec.kind != Kind::Handler || spec.subscribe.is_empty() {
                continue;
            }
            trigger.add(&spec, plugin).await?;
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
        let (stop, stopping) = watch::channel(false);
        let shared = consumer.shared.clone();
        let task = tokio::spawn(consumer.run(stopping));
        self.plugins
            .insert(spec.name.clone(), Running { shared, stop, task });
        Ok(())
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

    /// Whether the trigger runs a consumer for `name`.
    pub fn runs(&self, name: &str) -> bool {
        self.plugins.contains_key(name)
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

/// Runs the trigger until SIGINT or SIGTERM, then drains: stops fetching, lets the batches
/// in flight finish (bounded by [`TriggerConfig::drain_timeout`] per plugin), commits, and
/// returns; records queued but not yet handed over are redelivered on the next start. What `polyhost run` calls once every plugin is loaded.
pub async fn run_until_signalled(
    config: TriggerConfig,
    plugins: Vec<(PluginSpec, Arc<LoadedPlugin>)>,
) -> Result<(), TriggerError> {
    let trigger = Trigger::start(config, plugins, None).await?;
    wait_for_signal().await;
    tracing::info!("signal received: draining");
    trigger.shutdown().await
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One plugin's consumer and its workers.
struct PluginConsumer {
    shared: Arc<Shared>,
    registry: Registry,
}

impl PluginConsumer {
    async fn new(
        config: &TriggerConfig,
        spec: &PluginSpec,
        plugin: Arc<LoadedPlugin>,
        observer: Option<mpsc::UnboundedSender<Processed>>,
    ) -> Result<Self, TriggerError> {
        if spec.kind != Kind::Handler {
            return Err(TriggerError::NotAHandler(spec.name.clone()));
        }
        let kafka = |source| TriggerError::Kafka {
            plugin: spec.name.clone(),
            source,
        };
        let registry: Registry = Arc::default();
        let lag = Arc::new(AtomicI64::new(-1));
        let context = RebalanceContext {
            plugin: spec.name.clone(),
            registry: registry.clone(),
            revoke_timeout: config.revoke_timeout,
            lag: lag.clone(),
        };
        let consumer: StreamConsumer<RebalanceContext> = config
            .kafka
            .client_config()
            .set("group.id", spec.group_id())
            .set("client.id", format!("polyhost-{}", spec.name))
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set(
                "auto.commit.interval.ms",
                config.commit_interval.as_millis().to_string(),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            .set(
                "statistics.interval.ms",
                config.stats_interval.as_millis().to_string(),
            )
            .create_with_context(context)
            .map_err(kafka)?;
        let dead_letters = DeadLetters::connect(&config.kafka, &spec.name)
            .await
            .map_err(kafka)?;
        ensure_topics(&config.kafka, &spec.subscribe, config.topic_partitions)
            .await
            .map_err(kafka)?;
        let topics: Vec<&str> = spec.subscribe.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(kafka)?;
        tracing::info!(plugin = %spec.name, group = %spec.group_id(), topics = ?spec.subscribe, "consuming");
        Ok(PluginConsumer {
            shared: Arc::new(Shared {
                name: spec.name.clone(),
                plugin: RwLock::new(plugin),
                consumer: Arc::new(consumer),
                dead_letters,
                config: config.clone(),
                observer,
                series: crate::metrics::global().series(&spec.name),
                lag,
            }),
            registry,
        })
    }

    /// Routes records to partition workers until told to stop, then drains and commits.
    async fn run(self, mut stopping: watch::Receiver<bool>) -> Result<(), TriggerError> {
        let mut workers = JoinSet::new();
        let consumer = self.shared.consumer.clone();
        let for_workers = stopping.clone();
        {
            let mut stream = consumer.stream();
            loop {
                let record = tokio::select! {
                    biased;
                    // (The watch guard is dropped inside: it must not live across the
                    // await of another branch.)
                    _ = async { drop(stopping.wait_for(|s| *s).await) } => break,
                    Some(ended) = workers.join_next_with_id(), if !workers.is_empty() => {
                        self.reap(ended).await;
                        continue;
                    }
                    next = stream.next() => match next {
                        None => break,
                        Some(Err(e)) => {
                            tracing::warn!(plugin = %self.shared.name, error = %e, "kafka consumer error");
                            continue;
                        }
                        Some(Ok(m)) => m.detach(),
                    },
                };
                if let Some(full) = self.route(record, &for_workers, &mut workers) {
                    self.wait_for_room(full, for_workers.clone()).await;
                }
                // Reap ended workers (restarting the dead) so the set does not grow.
                while let Some(ended) = workers.try_join_next_with_id() {
                    self.reap(ended).await;
                }
            }
        }
        // Stop fetching: close every queue, so each worker finishes what it holds and ends.
        let handles: Vec<WorkerHandle> = self
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        drop(handles);
        let drained = tokio::time::timeout(self.shared.config.drain_timeout, async {
            while let Some(ended) = workers.join_next().await {
                if let Err(e) = ended
                    && e.is_panic()
                {
                    // Its unstored events are redelivered after the restart of the host.
                    tracing::error!(plugin = %self.shared.name, panic = %crate::text::for_log(&panic_message(e), crate::text::MAX_REASON_BYTES), "a partition worker died while draining");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(plugin = %self.shared.name, "drain timed out; unfinished events will be redelivered");
            workers.abort_all();
        }
        let result = match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(source) => Err(TriggerError::Kafka {
                plugin: self.shared.name.clone(),
                source,
            }),
        };
        tracing::info!(plugin = %self.shared.name, "consumer drained and committed");
        result
    }

    /// Handles a worker task that ended. A worker that died (panicked) while its partition
    /// is still this consumer's is replaced: the partition is sought back to the first
    /// offset the dead worker had not stored (what it held is fetched again, so nothing is
    /// lost or skipped), its handle is marked dead ([`WorkerHandle::dead`]), and the next
    /// record routed to it starts a new worker. (A revocation meanwhile removes the handle,
    /// and with it the restart.)
    async fn reap(&self, ended: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let Err(e) = ended else { return };
        let id = e.id();
        if !e.is_panic() {
            return; // aborted at the end of a drain
        }
        // A panic message may quote plugin text (a reason, a log line): escaped and capped.
        let message =
            crate::text::for_log(&panic_message(e), crate::text::MAX_REASON_BYTES).into_owned();
        let dead = {
            let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
            registry.iter().find(|(_, h)| h.task == id).map(|(k, h)| {
                (
                    k.clone(),
                    h.resume.load(Ordering::Acquire),
                    h.restart.clone(),
                    h.paused.clone(),
                )
            })
        };
        let Some(((topic, partition), offset, previous, paused)) = dead else {
            // Its partition was revoked (or the host is stopping): the next owner resumes
            // from the committed offset.
            tracing::error!(plugin = %self.shared.name, panic = %message, "a partition worker died after its partition was handed back");
            return;
        };
        let panics = match &previous {
            Some(r) if r.offset == offset => r.panics + 1,
            _ => 1,
        };
        self.shared.series.worker_restarts.inc();
        tracing::error!(plugin = %self.shared.name, topic = %topic, partition, offset, panics, panic = %message, "partition worker died: restarting it from the first offset not stored");
        let consumer = self.shared.consumer.clone();
        let (t, p) = (topic.clone(), partition);
        let sought = tokio::task::spawn_blocking(move || {
            consumer.seek(
                &t,
                p,
                rdkafka::Offset::Offset(offset),
                Duration::from_secs(10),
            )
        })
        .await;
        match sought {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(plugin = %self.shared.name, topic = %topic, partition, offset, error = %e, "cannot seek the partition of a dead worker back: records it held are redelivered only after a rebalance or restart")
            }
            Err(e) => {
                tracing::error!(plugin = %self.shared.name, topic = %topic, partition, offset, error = %e, "seeking the partition of a dead worker failed")
            }
        }
        let mut paused = paused.lock().unwrap_or_else(|e| e.into_inner());
        if *paused {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            match self.shared.consumer.resume(&tpl) {
                Ok(()) => *paused = false,
                Err(e) => {
                    tracing::warn!(plugin = %self.shared.name, topic = %topic, partition, error = %e, "cannot resume partition")
                }
            }
        }
        drop(paused);
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = registry.get_mut(&(topic, partition))
            && h.task == id
        {
            h.dead = Some(Restart {
                offset,
                panics,
                message,
            });
        }
    }

    /// Hands a record to its partition's worker, starting one if needed. Returns the
    /// worker's queue when that is now full.
    fn route(
        &self,
        m: rdkafka::message::OwnedMessage,
        stopping: &watch::Receiver<bool>,
        workers: &mut JoinSet<()>,
    ) -> Option<FullQueue> {
        let key = (m.topic().to_string(), m.partition());
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // The worker died and its partition was sought back: this record starts its successor.
        let restart = match registry.get(&key) {
            Some(h) if h.dead.is_some() => registry.remove(&key).and_then(|h| h.dead),
            _ => None,
        };
        let handle = registry.entry(key.clone()).or_insert_with(|| {
            tracing::debug!(plugin = %self.shared.name, topic = %key.0, partition = key.1, offset = m.offset(), "partition worker started");
            let (tx, rx) = mpsc::unbounded_channel();
            let (revoked_tx, revoked) = watch::channel(false);
            let queued = Arc::new(AtomicUsize::new(0));
            let room = Arc::new(Notify::new());
            let paused = Arc::new(Mutex::new(false));
            let done = Arc::new(Done::default());
            let resume = Arc::new(AtomicI64::new(
                restart.as_ref().map_or(m.offset(), |r| r.offset),
            ));
            let worker = Worker {
                shared: self.shared.clone(),
                topic: key.0.clone(),
                partition: key.1,
                rx,
                queued: queued.clone(),
                room: room.clone(),
                paused: paused.clone(),
                revoked,
                stopping: stopping.clone(),
                done: done.clone(),
                progress: PartitionProgress::default(),
                resume: resume.clone(),
                restart: restart.clone(),
            };
            let task = workers.spawn(worker.run()).id();
            WorkerHandle {
                tx,
                queued,
                room,
                paused,
                revoked: revoked_tx,
                done,
                resume,
                task,
                restart,
                dead: None,
            }
        });
        let queued = handle.queued.fetch_add(1, Ordering::AcqRel) + 1;
        if handle.tx.send(m).is_err() {
            handle.queued.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        (queued >= self.shared.queue_limit()).then(|| FullQueue {
            topic: key.0,
            partition: key.1,
            queued: handle.queued.clone(),
            room: handle.room.clone(),
            paused: handle.paused.clone(),
        })
    }

    /// Waits until the worker of a full queue has taken a batch from it; pauses its
    /// partition if it takes none within [`TriggerConfig::stuck_after`] (or the host stops).
    async fn wait_for_room(&self, full: FullQueue, mut stopping: watch::Receiver<bool>) {
        if *full.paused.lock().unwrap_or_else(|e| e.into_inner()) {
            return; // a record fetched before the pause took effect
        }
        let limit = self.shared.queue_limit();
        let deadline = tokio::time::Instant::now() + self.shared.config.stuck_after;
        while full.queued.load(Ordering::Acquire) >= limit {
            tokio::select! {
                biased;
                _ = stopping.wait_for(|s| *s) => return,
                _ = full.room.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    let mut paused = full.paused.lock().unwrap_or_else(|e| e.into_inner());
                    if !*paused {
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition(&full.topic, full.partition);
                        match self.shared.consumer.pause(&tpl) {
                            Ok(()) => {
                                *paused = true;
                                tracing::debug!(plugin = %self.shared.name, topic = %full.topic, partition = full.partition, "worker stuck: partition paused");
                            }
                            Err(e) => {
                                tracing::warn!(plugin = %self.shared.name, topic = %full.topic, partition = full.partition, error = %e, "cannot pause partition")
                            }
                        }
                    }
                    return;
                }
            }
        }
    }
}

/// What a panic said, for the log.
fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string()),
        Err(e) => e.to_string(),
    }
}

/// A worker's queue that the last routed record filled.
struct FullQueue {
    topic: String,
    partition: i32,
    queued: Arc<AtomicUsize>,
    room: Arc<Notify>,
    paused: Arc<Mutex<bool>>,
}

/// Creates each of `topics` with `partitions` partitions, unless it exists (then it is
/// left as it is). Topic patterns (starting with `^`) are skipped.
pub async fn ensure_topics(
    kafka: &Kafka,
    topics: &[String],
    partitions: i32,
) -> Result<(), KafkaError> {
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .filter(|t| !t.starts_with('^'))
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}
