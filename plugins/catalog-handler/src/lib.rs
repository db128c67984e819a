//! S2.2 catalog-handler: titles, their relations, assets and ratings → MongoDB.
//!
//! Handles `streaming.title.*` (topic `streaming.catalog`) and `streaming.rating.submitted`
//! (topic `streaming.ratings`): one document per title in the collection `titles`, the
//! assets' bytes in the GridFS bucket `title_assets`. [`event`] parses, [`update`] builds
//! the documents and explains the idempotency scheme, [`fold`] applies a batch in memory
//! into one write per title, [`store`] makes the calls (a fixed number per batch);
//! [`polyhost_guest::in_key_order`] keeps each title's events in order within a batch.
//!
//! It exports the handler contract's partitions form: a call carries the events of several
//! partitions of both topics and is folded as one batch, so that the backend calls (and a
//! popular title's writes) are per call rather than per partition. A title's events come
//! from one partition of each topic, so each partition's order is all the order there is
//! to keep; a rating's `(partition, offset)` is its place in the platform's one topic of
//! ratings.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/partitions-platform-handler",
    generate_all,
});

mod event;
mod fold;
mod store;
mod update;

use std::time::{Duration, Instant};

use event::CatalogEvent;
use exports::polyhost::platform::partitions_handler::{Guest, PartitionEvents};
use polyhost::platform::types::{BatchInfo, Event, Outcome};
use polyhost_guest::{Flattened, Verdict};
use wasi::logging::logging::{Level, log};

/// How long a batch may spend applying events before the rest are handed back (`retry`),
/// so that a batch of slow writes (blobs, a busy server) ends well within the host's
/// `call_timeout_ms` instead of being cut off. Config key `batch_budget_ms`.
const DEFAULT_BUDGET: Duration = Duration::from_millis(2_000);

struct CatalogHandler;

impl Guest for CatalogHandler {
    fn handle(partitions: Vec<PartitionEvents>) -> Vec<Vec<Outcome>> {
        // The call is applied in time order across its partitions (`in_time_order`).
        let call = Flattened::new(partitions, |p| (p.batch, p.events));
        let outcomes = handle(&call);
        call.split(outcomes)
    }
}

/// Applies the events of a call, one outcome per event.
fn handle(call: &Flattened<BatchInfo, Event>) -> Vec<Outcome> {
    let started = Instant::now();
    let budget = budget();
    let events = &call.events;
    let parsed: Vec<Result<CatalogEvent, String>> = events
        .iter()
        .map(
            |e| match event::parse(&e.type_, e.subject.as_deref(), &e.data) {
                Ok(Some(parsed)) => Ok(parsed),
                Ok(None) => Err(format!(
                    "catalog-handler does not handle events of type `{}`",
                    e.type_
                )),
                Err(reason) => Err(reason),
            },
        )
        .collect();
    // Order is kept per partition: a title's events of one partition wait for each other,
    // but not for its events of another (its ratings for its publication, say).
    let keys: Vec<Option<String>> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            Some(format!(
                "{}/{}",
                call.partition_of[i],
                e.subject.as_deref()?
            ))
        })
        .collect();
    // Applied in time order across partitions: a title's relation to a title published
    // in another partition, earlier, in the same call then finds it.
    let order = in_time_order(call);
    let items: Vec<fold::Item<'_>> = order
        .iter()
        .map(|&i| {
            let e = &events[i];
            fold::Item {
                id: &e.id,
                key: keys[i].as_deref(),
                at: (call.partition(i).partition, e.offset),
                event: parsed[i].as_ref().map_err(String::as_str),
            }
        })
        .collect();
    // A retry comes in a call of its own partition, so a call's attempt is its partitions'.
    let attempt = call.partitions.iter().map(|b| b.attempt).max().unwrap_or(0);
    let mut verdicts: Vec<Option<Verdict>> = vec![None; events.len()];
    for (i, verdict) in order
        .into_iter()
        .zip(store::apply_batch(&items, attempt, || {
            started.elapsed() > budget
        }))
    {
        verdicts[i] = Some(verdict);
    }
    events
        .iter()
        .zip(verdicts)
        .map(|(event, verdict)| {
            match verdict
                .unwrap_or_else(|| Verdict::Retry("a bug: the event was not applied".to_string()))
            {
                Verdict::Ok => Outcome::Ok,
                Verdict::Retry(reason) => {
                    let message = format!(
                        "{} ({}): retry (attempt {attempt}): {reason}",
                        event.id, event.type_
                    );
                    log(Level::Debug, "catalog-handler", &message);
                    Outcome::Retry(reason)
                }
                Verdict::Reject(reason) => {
                    let message = format!("{} ({}): rejected: {reason}", event.id, event.type_);
                    log(Level::Warn, "catalog-handler", &message);
                    Outcome::Reject(reason)
                }
            }
        })
        .collect()
}

/// The events of `call` (their indices) merged in time order: each partition's in its
/// own order, the partition whose next event is the earliest first (an event without a
/// time after every timed one). Between equal times, a partition holding ratings comes
/// after one holding none, so that a rating of a title published in the same call finds
/// it (rather than being retried, and holding back the title's later ratings of its
/// partition); then the partition first in the call.
fn in_time_order(call: &Flattened<BatchInfo, Event>) -> Vec<usize> {
    let mut of_partition: Vec<(bool, std::collections::VecDeque<usize>)> =
        vec![Default::default(); call.partitions.len()];
    for (i, &p) in call.partition_of.iter().enumerate() {
        of_partition[p].0 |= call.events[i].type_ == event::RATING_SUBMITTED;
        of_partition[p].1.push_back(i);
    }
    let time = |i: usize| call.events[i].time.unwrap_or(i64::MAX);
    let mut order = Vec::with_capacity(call.events.len());
    while let Some((_, next)) = of_partition
        .iter_mut()
        .filter(|(_, q)| !q.is_empty())
        .min_by_key(|(ratings, q)| (q.front().map(|&i| time(i)), *ratings))
    {
        order.extend(next.pop_front());
    }
    order
}

/// The batch time budget: `batch_budget_ms` from the config, else [`DEFAULT_BUDGET`].
fn budget() -> Duration {
    match wasi::config::store::get("batch_budget_ms") {
        Ok(Some(text)) => match text.trim().parse::<u64>() {
            Ok(ms) => Duration::from_millis(ms),
            Err(_) => {
                let message = format!("config batch_budget_ms = {text:?} is not a number");
                log(Level::Warn, "catalog-handler", &message);
                DEFAULT_BUDGET
            }
        },
        _ => DEFAULT_BUDGET,
    }
}

export!(CatalogHandler);

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(partition: i32, times: &[Option<i64>]) -> (BatchInfo, Vec<Event>) {
        let events = times
            .iter()
            .enumerate()
            .map(|(i, &time)| Event {
                id: format!("{partition}-{i}"),
                source: "s".into(),
                type_: "t".into(),
                subject: None,
                time,
                data: Vec::new(),
                offset: i as i64,
            })
            .collect();
        let batch = BatchInfo {
            topic: "topic".into(),
            partition,
            attempt: 0,
        };
        (batch, events)
    }

    #[test]
    fn a_call_is_applied_in_time_order_each_partition_in_its_own() {
        let call = Flattened::new(
            vec![
                partition(0, &[Some(10), Some(30), Some(31), None]),
                // Out of time order within the partition: its own order is kept.
                partition(1, &[Some(5), Some(40), Some(20)]),
                partition(2, &[Some(30), Some(50)]),
            ],
            |p| p,
        );
        let ids: Vec<&str> = in_time_order(&call)
            .into_iter()
            .map(|i| call.events[i].id.as_str())
            .collect();
        assert_eq!(
            ids,
            [
                "1-0", "0-0", "0-1", "2-0", "0-2", "1-1", "1-2", "2-1", "0-3"
            ]
        );
    }
}
