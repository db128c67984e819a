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
        // Partitions of ratings last: a rating of a title published in the same call then
        // finds it (rather than being retried, and holding back the title's later ratings
        // of its partition). There is no order between partitions to keep.
        let mut indexed: Vec<(usize, PartitionEvents)> =
            partitions.into_iter().enumerate().collect();
        indexed.sort_by_key(|(_, p)| has_ratings(p));
        let (order, ordered): (Vec<usize>, Vec<PartitionEvents>) = indexed.into_iter().unzip();
        let call = Flattened::new(ordered, |p| (p.batch, p.events));
        let outcomes = handle(&call);
        let mut lists: Vec<Vec<Outcome>> = vec![Vec::new(); order.len()];
        for (i, list) in order.into_iter().zip(call.split(outcomes)) {
            lists[i] = list;
        }
        lists
    }
}

/// Whether a partition's events include a rating.
fn has_ratings(partition: &PartitionEvents) -> bool {
    partition
        .events
        .iter()
        .any(|e| e.type_ == event::RATING_SUBMITTED)
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
    let items: Vec<fold::Item<'_>> = events
        .iter()
        .zip(&parsed)
        .enumerate()
        .map(|(i, (e, p))| fold::Item {
            id: &e.id,
            key: keys[i].as_deref(),
            at: (call.partition(i).partition, e.offset),
            event: p.as_ref().map_err(String::as_str),
        })
        .collect();
    // A retry comes in a call of its own partition, so a call's attempt is its partitions'.
    let attempt = call.partitions.iter().map(|b| b.attempt).max().unwrap_or(0);
    let verdicts = store::apply_batch(&items, attempt, || started.elapsed() > budget);
    events
        .iter()
        .zip(verdicts)
        .map(|(event, verdict)| match verdict {
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
        })
        .collect()
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
