//! The consumer's rebalance callback and statistics: what a revocation waits for and
//! commits, and the consumer lag read from librdkafka's statistics.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;

use super::Registry;

/// The consumer's context: on revocation, stops the revoked partitions' workers, waits
/// (bounded) for their in-flight batches, and commits what they stored.
pub struct RebalanceContext {
    pub(super) plugin: String,
    pub(super) registry: Registry,
    pub(super) revoke_timeout: Duration,
    pub(super) lag: Arc<AtomicI64>,
    /// Set at the consumer's first assignment (of any partitions, or none).
    pub(super) assigned: tokio::sync::watch::Sender<bool>,
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
                self.assigned.send_replace(true);
            }
            Rebalance::Error(e) => {
                tracing::warn!(plugin = %self.plugin, error = %e, "rebalance error")
            }
        }
    }
}
