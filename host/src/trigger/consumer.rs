//! One plugin's consumer: the Kafka consumer it is built on, and the dispatcher that
//! routes each record to its partition's worker, waits for room in a full queue (pausing a
//! stuck partition), restarts a worker that died, and drains and commits at the end.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt as _;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use super::dlq::DeadLetters;
use super::offsets::PartitionProgress;
use super::partition::{Done, Restart, Worker, WorkerHandle};
use super::rebalance::RebalanceContext;
use super::topics::ensure_topics;
use super::{Processed, Registry, Shared, TriggerConfig, TriggerError};
use crate::manifest::{Kind, PluginSpec};
use crate::runtime::LoadedPlugin;

/// One plugin's consumer and its workers.
pub(super) struct PluginConsumer {
    pub(super) shared: Arc<Shared>,
    registry: Registry,
}

impl PluginConsumer {
    pub(super) async fn new(
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
        let (assigned, first_assignment) = tokio::sync::watch::channel(false);
        let context = RebalanceContext {
            plugin: spec.name.clone(),
            registry: registry.clone(),
            revoke_timeout: config.revoke_timeout,
            lag: lag.clone(),
            assigned,
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
                first_assignment,
                gather: Default::default(),
            }),
            registry,
        })
    }

    /// Routes records to partition workers until told to stop, then drains and commits.
    pub(super) async fn run(self, mut stopping: watch::Receiver<bool>) -> Result<(), TriggerError> {
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
