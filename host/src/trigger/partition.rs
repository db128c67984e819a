//! One partition's worker: takes the records the dispatcher routes to it, in order, makes
//! batches of them (up to the plugin's `batch_size`, waiting up to `batch_wait_ms`, and
//! taking what arrives while the batch waits for a free instance), hands each batch to the
//! plugin, settles every event (ok, dead-lettered, or retried with
//! backoff until it is one of the two), and stores the offset of the contiguous final
//! prefix. Partitions run concurrently; the plugin's own semaphore bounds instances.
//!
//! A worker that dies (a panic in the host) is restarted by the dispatcher from the offset
//! after the last one it stored ([`WorkerHandle::resume`]); the first batch of a restarted
//! worker is handed over one event at a time, so a second death pins the event, and an
//! event the host died on [`MAX_PANICS`] times in a row is dead-lettered without being
//! handed over again, so the partition goes on.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::{Headers as _, Message as _, OwnedMessage};
use tokio::sync::{Notify, mpsc, watch};

use super::cloudevent;
use super::dlq::{self, Letter, PublishError, Written};
use super::gather;
use super::offsets::PartitionProgress;
use super::{Disposition, Processed, Shared};
use crate::bindings::partitions::exports::polyhost::platform::partitions_handler::PartitionEvents;
use crate::bindings::polyhost::platform::types::{BatchInfo, Event, Outcome};
use crate::runtime::{InstancePermit, RecordMeta, Records};
use crate::text::{MAX_REASON_BYTES, cap_bytes, for_log};

/// How many times in a row the host may die on the same event before it is dead-lettered
/// without being handed over again.
pub(crate) const MAX_PANICS: u32 = 3;

/// Why a worker is a restart: where its predecessor died, how often in a row, and why.
#[derive(Debug, Clone)]
pub(crate) struct Restart {
    /// The offset the worker starts at (the first not stored).
    pub(crate) offset: i64,
    /// Consecutive deaths at that offset.
    pub(crate) panics: u32,
    /// The last panic's message.
    pub(crate) message: String,
}

/// Set when a worker ends, however it ends; the rebalance callback waits on it.
#[derive(Debug, Default)]
pub(crate) struct Done {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Done {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Waits up to `limit` for the worker to end; `false` if it did not.
    pub(crate) fn wait(&self, limit: Duration) -> bool {
        let guard = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, limit, |done| !*done)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// What the dispatcher and the rebalance callback hold of a worker.
#[derive(Debug)]
pub(crate) struct WorkerHandle {
    pub(crate) tx: mpsc::UnboundedSender<OwnedMessage>,
    /// Records routed to the worker and not yet taken into a batch.
    pub(crate) queued: Arc<AtomicUsize>,
    /// Notified whenever the worker takes records from its queue.
    pub(crate) room: Arc<Notify>,
    /// Whether the partition is paused because the worker is behind.
    pub(crate) paused: Arc<Mutex<bool>>,
    /// Set on revocation: take no new batch, give up retrying, end.
    pub(crate) revoked: watch::Sender<bool>,
    pub(crate) done: Arc<Done>,
    /// The offset a restarted worker would start at: the first one not stored yet.
    pub(crate) resume: Arc<AtomicI64>,
    /// The worker's task, to tell which partition a dead task served.
    pub(crate) task: tokio::task::Id,
    /// Set when this worker is itself a restart.
    pub(crate) restart: Option<Restart>,
    /// Set by the dispatcher once this worker died and its partition was sought back to
    /// [`WorkerHandle::resume`]: the next record routed here starts a successor.
    pub(crate) dead: Option<Restart>,
}

/// Sets [`Done`] when dropped, so a panicking or aborted worker still reports.
struct DoneGuard(Arc<Done>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.set();
    }
}

pub(crate) struct Worker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) rx: mpsc::UnboundedReceiver<OwnedMessage>,
    pub(crate) queued: Arc<AtomicUsize>,
    pub(crate) room: Arc<Notify>,
    pub(crate) paused: Arc<Mutex<bool>>,
    pub(crate) revoked: watch::Receiver<bool>,
    pub(crate) stopping: watch::Receiver<bool>,
    pub(crate) done: Arc<Done>,
    pub(crate) progress: PartitionProgress,
    pub(crate) resume: Arc<AtomicI64>,
    pub(crate) restart: Option<Restart>,
}

/// One record of a batch and where it stands.
struct Slot {
    record: OwnedMessage,
    /// Its key and headers, which the plugin reads through `polyhost:platform/records`.
    meta: Arc<RecordMeta>,
    /// `Err(reason)` when it is not a valid CloudEvent.
    event: Result<Event, String>,
    settled: bool,
    /// How many times it was handed to the plugin.
    handed: u32,
}

/// What one hand-over left to do.
enum Round {
    /// Every event of it is final.
    Settled,
    /// Some are to be retried, after a backoff.
    Retry,
    /// It failed permanently as a whole: hand its events over one at a time.
    Split,
}

/// Why a batch was left unsettled.
enum Abandon {
    Revoked,
    Stopping,
}

impl Worker {
    pub(crate) async fn run(mut self) {
        let _done = DoneGuard(self.done.clone());
        // Read once: a swap's new batch limits reach this partition when its worker next
        // starts (the trigger's module comment says when).
        let limits = self.shared.plugin().limits;
        let size = limits.batch_size.max(1) as usize;
        let wait = Duration::from_millis(limits.batch_wait_ms);
        loop {
            let Some(first) = self.rx.recv().await else {
                break; // the dispatcher is done with this partition: drained
            };
            // A plugin of the `partitions-handler` form: the batch joins a call gathered
            // across partitions (a restarted worker's first batch goes alone).
            if self.shared.plugin().takes_partitions() && self.restart.is_none() {
                let ticket = self.shared.gather.join(&self.shared, size, wait);
                let batch = self.fill(first, size, &ticket).await;
                self.took(batch.len());
                if *self.revoked.borrow() || *self.stopping.borrow() {
                    tracing::debug!(plugin = %self.shared.name, topic = %self.topic, partition = self.partition, left = batch.len(), "partition revoked or stopping: worker ends");
                    break;
                }
                if self.process(batch, None, Some(ticket)).await.is_err() {
                    break;
                }
                continue;
            }
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + wait;
            while batch.len() < size {
                match self.rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                            Ok(Some(m)) => batch.push(m),
                            _ => break,
                        }
                    }
                }
            }
            // The batch waits for a free instance, and the records that arrive meanwhile
            // join it (up to `batch_size`): when the plugin's instances are all busy, its
            // partitions hand over fewer, fuller batches instead of queueing more of them.
            // A revocation or a stop ends the wait (the checks below then end the worker).
            let plugin = self.shared.plugin();
            let permit = tokio::select! {
                permit = plugin.instance() => Some(permit),
                _ = self.revoked.wait_for(|r| *r) => None,
                _ = self.stopping.wait_for(|s| *s) => None,
            };
            if permit.is_some() {
                while batch.len() < size {
                    match self.rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
            }
            self.took(batch.len());
            if *self.revoked.borrow() {
                tracing::debug!(plugin = %self.shared.name, topic = %self.topic, partition = self.partition, "partition revoked: worker ends");
                break;
            }
            if *self.stopping.borrow() {
                // Draining: the batch in flight (if any) was finished; queued records are
                // not stored, so they are redelivered to whoever consumes next.
                tracing::debug!(plugin = %self.shared.name, topic = %self.topic, partition = self.partition, left = batch.len(), "stopping: worker ends");
                break;
            }
            if self.process(batch, permit, None).await.is_err() {
                break;
            }
        }
    }

    /// A batch for a gathered call: `first` and the records that arrive until the window
    /// of `ticket` closes or is full, up to `size` (or the partition is revoked, or the
    /// host stops).
    async fn fill(
        &mut self,
        first: OwnedMessage,
        size: usize,
        ticket: &gather::Ticket,
    ) -> Vec<OwnedMessage> {
        let mut batch = vec![first];
        let mut closed = ticket.clone_closed();
        while batch.len() < size && ticket.reserve() {
            let next = match self.rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    m = self.rx.recv() => m,
                    _ = closed.wait_for(|c| *c) => None,
                    _ = self.revoked.wait_for(|r| *r) => None,
                    _ = self.stopping.wait_for(|s| *s) => None,
                },
            };
            match next {
                Some(m) => batch.push(m),
                None => {
                    ticket.unreserve();
                    break;
                }
            }
        }
        batch
    }

    /// Counts records out of the queue, and resumes the partition once the worker caught up.
    fn took(&self, n: usize) {
        let left = self.queued.fetch_sub(n, Ordering::AcqRel) - n;
        self.room.notify_one();
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        if *paused && left <= self.shared.resume_below() {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.topic, self.partition);
            match self.shared.consumer.resume(&tpl) {
                Ok(()) => *paused = false,
                Err(e) => {
                    tracing::warn!(plugin = %self.shared.name, topic = %self.topic, partition = self.partition, error = %e, "cannot resume partition")
                }
            }
        }
    }

    /// Settles every event of `records`, the first hand-over on the instance `permit`
    /// holds (if any): `Err` when the worker must stop with some unsettled.
    /// With a `ticket`, the first hand-over is part of a call gathered across partitions.
    async fn process(
        &mut self,
        records: Vec<OwnedMessage>,
        permit: Option<InstancePermit>,
        mut ticket: Option<gather::Ticket>,
    ) -> Result<(), Abandon> {
        let restart = self.restart.take();
        let mut slots: Vec<Slot> = records
            .into_iter()
            // A restarted worker starts at its predecessor's first unstored offset.
            .filter(|m| restart.as_ref().is_none_or(|r| m.offset() >= r.offset))
            .filter(|m| self.progress.fetched(m.offset()))
            .map(|record| {
                let meta = Arc::new(meta(&record));
                let event = if self.topic.starts_with(dlq::TOPIC_PREFIX) {
                    Ok(dlq::as_event(
                        record.payload(),
                        record.timestamp().to_millis(),
                        &meta,
                    ))
                } else {
                    cloudevent::parse(record.payload(), meta.offset)
                };
                Slot {
                    record,
                    meta,
                    event,
                    settled: false,
                    handed: 0,
                }
            })
            .collect();

        // The instance is not held while dead letters are written (which may take as long
        // as the broker does): the first hand-over then waits for one.
        let mut permit =
            permit.filter(|_| restart.is_none() && slots.iter().all(|s| s.event.is_ok()));
        // Not CloudEvents: dead-lettered without reaching the plugin.
        for slot in &mut slots {
            if let Err(reason) = &slot.event {
                let reason = reason.clone();
                let disposition = self.dead_letter(&slot.record, &reason, 0).await?;
                slot.settled = true;
                self.settle(slot, disposition, 0);
            }
        }
        // The host died on this event again and again: it is not handed over once more.
        if let Some(r) = restart.as_ref().filter(|r| r.panics >= MAX_PANICS)
            && let Some(slot) = slots.iter_mut().find(|s| s.record.offset() == r.offset)
            && !slot.settled
        {
            let reason = format!(
                "the host failed (panicked) {} times handling this event: {}",
                r.panics, r.message
            );
            tracing::error!(plugin = %self.shared.name, topic = %self.topic, partition = self.partition, offset = r.offset, reason = %for_log(&reason, MAX_REASON_BYTES), "dead-lettering an event the host keeps dying on");
            let handed = slot.handed;
            let disposition = self.dead_letter(&slot.record, &reason, handed).await?;
            slot.settled = true;
            self.settle(slot, disposition, handed);
        }

        let mut attempt: u32 = 0;
        // After a permanent failure of a batch of several events (a trap, a timeout, a
        // wrong-length result), the events are handed over one at a time, so that only the
        // culprit is dead-lettered and the rest of the batch goes on.
        // A restarted worker's first batch goes one event at a time too, so that if the
        // host dies again, it dies on (and points at) the event that kills it.
        let mut isolate = restart.is_some();
        let mut delay_next = false;
        loop {
            let pending: Vec<usize> = (0..slots.len()).filter(|&i| !slots[i].settled).collect();
            if pending.is_empty() {
                return Ok(());
            }
            if delay_next {
                let delay = self.shared.config.backoff.delay_jittered(attempt);
                self.pause_for(delay).await?;
            }
            let groups: Vec<Vec<usize>> = if isolate {
                pending.iter().map(|&i| vec![i]).collect()
            } else {
                vec![pending]
            };
            let mut split = false;
            delay_next = false;
            for group in groups {
                let round = match ticket.take() {
                    Some(ticket) if !isolate => {
                        self.hand_over_gathered(&mut slots, &group, ticket).await?
                    }
                    _ => {
                        self.hand_over(&mut slots, &group, attempt, permit.take())
                            .await?
                    }
                };
                match round {
                    Round::Settled => {}
                    Round::Retry => delay_next = true,
                    Round::Split => split = true,
                }
            }
            if split {
                isolate = true;
            }
            attempt += 1;
        }
    }

    /// The events `group` of `slots` as a hand-over carries them, counted as handed over
    /// once more: the batch, its events, and their records.
    fn prepare(
        &self,
        slots: &mut [Slot],
        group: &[usize],
        attempt: u32,
    ) -> (BatchInfo, Vec<Event>, Vec<Arc<RecordMeta>>) {
        let events: Vec<Event> = group
            .iter()
            .map(|&i| slots[i].event.clone().expect("only events are pending"))
            .collect();
        let records = group.iter().map(|&i| slots[i].meta.clone()).collect();
        let info = BatchInfo {
            topic: self.topic.clone(),
            partition: self.partition,
            attempt,
        };
        for &i in group {
            slots[i].handed += 1;
        }
        if let Some(hook) = &self.shared.config.before_hand_over {
            for &i in group {
                (hook.0)(&self.topic, self.partition, slots[i].record.offset());
            }
        }
        tracing::trace!(plugin = %self.shared.name, topic = %self.topic, partition = self.partition, first = slots[group[0]].record.offset(), events = group.len(), attempt, "handing over");
        (info, events, records)
    }

    /// Hands the events `group` of `slots` to the plugin once (on the instance `permit`
    /// holds, if any) and settles what it can.
    async fn hand_over(
        &mut self,
        slots: &mut [Slot],
        group: &[usize],
        attempt: u32,
        permit: Option<InstancePermit>,
    ) -> Result<Round, Abandon> {
        let plugin = self.shared.plugin();
        let (info, events, records) = self.prepare(slots, group, attempt);
        // Waited for here, so that the batch's time below is its call alone.
        let permit = match permit {
            Some(permit) => permit,
            None => plugin.instance().await,
        };
        let series = &self.shared.series;
        if attempt == 0 {
            series.first_hand_over(&records);
        }
        let records = Records::new(&self.topic, self.partition, records);
        let started = std::time::Instant::now();
        let handled = plugin.handle_holding(permit, &info, &events, records).await;
        series
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        if attempt > 0 {
            series.retries.inc_by(group.len() as u64);
        }
        let handled = handled.map_err(|failure| (failure, group.len()));
        self.answered(slots, group, attempt, handled).await
    }

    /// Hands the events `group` of `slots` (their first hand-over) to the call `ticket` is
    /// part of, gathered across partitions, and settles what it can.
    async fn hand_over_gathered(
        &mut self,
        slots: &mut [Slot],
        group: &[usize],
        ticket: gather::Ticket,
    ) -> Result<Round, Abandon> {
        let (batch, events, records) = self.prepare(slots, group, 0);
        match ticket
            .submit(PartitionEvents { batch, events }, records)
            .await
        {
            Some(handled) => self.answered(slots, group, 0, handled).await,
            None => {
                tracing::error!(plugin = %self.shared.name, topic = %self.topic, partition = self.partition, events = group.len(), "a gathered call ended without an answer: retrying its events");
                Ok(Round::Retry)
            }
        }
    }

    /// Settles what a hand-over of the events `group` of `slots` answered: their outcomes,
    /// or the failure of the call and how many events it carried in all.
    async fn answered(
        &mut self,
        slots: &mut [Slot],
        group: &[usize],
        attempt: u32,
        handled: gather::Answer,
    ) -> Result<Round, Abandon> {
        let plugin = self.shared.plugin();
        match handled {
            Ok(outcomes) => {
                let mut round = Round::Settled;
                for (&i, outcome) in group.iter().zip(outcomes) {
                    let handed = slots[i].handed;
                    match outcome {
                        Outcome::Ok => {
                            slots[i].settled = true;
                            self.settle(&slots[i], Disposition::Ok, handed);
                        }
                        Outcome::Reject(reason) => {
                            let disposition =
                                self.dead_letter(&slots[i].record, &reason, handed).await?;
                            slots[i].settled = true;
                            self.settle(&slots[i], disposition, handed);
                        }
                        Outcome::Retry(reason) => {
                            round = Round::Retry;
                            let reason = for_log(&reason, MAX_REASON_BYTES);
                            tracing::debug!(plugin = %plugin.name, topic = %self.topic, partition = self.partition, offset = slots[i].record.offset(), attempt, %reason, "event will be retried");
                        }
                    }
                }
                Ok(round)
            }
            // A call of several events (this partition's, or several partitions') failed:
            // which one is at fault is found by handing them over one at a time.
            Err((failure, called)) if failure.is_permanent() && called > 1 => {
                let reason = for_log(&failure.to_string(), MAX_REASON_BYTES).into_owned();
                tracing::info!(plugin = %plugin.name, topic = %self.topic, partition = self.partition, events = group.len(), called, %reason, "batch failed permanently: handing its events over one at a time");
                Ok(Round::Split)
            }
            Err((failure, _)) if failure.is_permanent() => {
                let reason = failure.to_string();
                let i = group[0];
                tracing::warn!(plugin = %plugin.name, topic = %self.topic, partition = self.partition, offset = slots[i].record.offset(), reason = %for_log(&reason, MAX_REASON_BYTES), "event failed permanently: dead-lettering it");
                let handed = slots[i].handed;
                let disposition = self.dead_letter(&slots[i].record, &reason, handed).await?;
                slots[i].settled = true;
                self.settle(&slots[i], disposition, handed);
                Ok(Round::Settled)
            }
            Err((failure, _)) => {
                tracing::warn!(plugin = %plugin.name, topic = %self.topic, partition = self.partition, attempt, reason = %for_log(&failure.to_string(), MAX_REASON_BYTES), "batch failed transiently: retrying");
                Ok(Round::Retry)
            }
        }
    }

    /// Publishes a dead letter, retrying with backoff while the broker does not acknowledge
    /// it (for as long as it takes); returns the event's final disposition: dead-lettered,
    /// with the reason capped at [`MAX_REASON_BYTES`], or dropped when the broker refuses
    /// the dead letter even reduced to its headers (logged and counted: the partition goes
    /// on rather than stall on one record for ever).
    async fn dead_letter(
        &self,
        record: &OwnedMessage,
        reason: &str,
        attempts: u32,
    ) -> Result<Disposition, Abandon> {
        let plugin = self.shared.plugin();
        let capped = cap_bytes(reason, MAX_REASON_BYTES).into_owned();
        if self.topic == self.shared.dead_letters.topic() {
            // A record of the plugin's own dead-letter topic is a dead letter already:
            // sending it there again would loop.
            tracing::error!(plugin = %plugin.name, topic = %self.topic, partition = self.partition, offset = record.offset(), reason = %for_log(reason, MAX_REASON_BYTES), "a dead letter of this plugin failed again; it stays where it is");
            return Ok(Disposition::DeadLettered(capped));
        }
        let letter = Letter {
            reason,
            plugin: &plugin.name,
            version: &plugin.digest,
            topic: &self.topic,
            partition: self.partition,
            offset: record.offset(),
            attempts,
        };
        let mut tries = 0;
        loop {
            match self.shared.dead_letters.publish(record, &letter).await {
                Ok(Written::Whole) => return Ok(Disposition::DeadLettered(capped)),
                Ok(written) => {
                    self.shared.series.dead_letters_reduced.inc();
                    tracing::warn!(plugin = %plugin.name, topic = %self.topic, partition = self.partition, offset = record.offset(), form = ?written, limit = self.shared.dead_letters.limit(), "dead letter too large for the broker: written reduced (see its polyhost.truncated header)");
                    return Ok(Disposition::DeadLettered(capped));
                }
                Err(PublishError::Refused(e)) => {
                    tracing::error!(plugin = %plugin.name, topic = %self.topic, partition = self.partition, offset = record.offset(), dead_letter_topic = self.shared.dead_letters.topic(), error = %e, reason = %for_log(reason, MAX_REASON_BYTES), "DEAD LETTER DROPPED: the broker refused it even reduced to its headers; the event is final without one (it is still in its own topic at this offset while retention keeps it)");
                    return Ok(Disposition::Dropped(capped));
                }
                Err(PublishError::Transient(e)) => {
                    tries += 1;
                    tracing::warn!(plugin = %plugin.name, topic = self.shared.dead_letters.topic(), error = %e, tries, "dead letter not acknowledged: retrying");
                    self.pause_for(self.shared.config.backoff.delay_jittered(tries))
                        .await?;
                }
            }
        }
    }

    /// Marks an event final, stores the offset if the final prefix grew, and reports it.
    fn settle(&mut self, slot: &Slot, disposition: Disposition, attempts: u32) {
        let offset = slot.record.offset();
        if let Some(store) = self.progress.finalize(offset) {
            // A restart (after this worker dies) starts after what is final.
            self.resume.store(store + 1, Ordering::Release);
            if let Err(e) = self
                .shared
                .consumer
                .store_offset(&self.topic, self.partition, store)
            {
                // After a revocation the partition is someone else's: they will redo it.
                tracing::warn!(plugin = %self.shared.name, topic = %self.topic, partition = self.partition, offset = store, error = %e, "cannot store offset");
            }
        }
        match &disposition {
            Disposition::Ok => self.shared.series.ok.inc(),
            Disposition::DeadLettered(_) => self.shared.series.dead_lettered.inc(),
            Disposition::Dropped(_) => self.shared.series.dropped.inc(),
        };
        self.shared
            .series
            .settled(slot.record.timestamp().to_millis());
        if let Some(observer) = &self.shared.observer {
            let _ = observer.send(Processed {
                topic: self.topic.clone(),
                partition: self.partition,
                offset,
                id: slot.event.as_ref().ok().map(|e| e.id.clone()),
                disposition,
                attempts,
            });
        }
    }

    /// Waits `delay`, unless the partition is revoked or the host stops first.
    async fn pause_for(&self, delay: Duration) -> Result<(), Abandon> {
        let mut revoked = self.revoked.clone();
        let mut stopping = self.stopping.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = revoked.wait_for(|r| *r) => Err(Abandon::Revoked),
            _ = stopping.wait_for(|s| *s) => Err(Abandon::Stopping),
        }
    }
}

fn meta(m: &OwnedMessage) -> RecordMeta {
    RecordMeta {
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        headers: m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default(),
        timestamp_ms: m.timestamp().to_millis(),
    }
}
