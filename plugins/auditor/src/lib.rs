//! S3 auditor: every event of every platform topic, and every dead letter, as one
//! Elasticsearch document in the daily index `audit-events-<YYYY.MM.DD>` of its time.
//!
//! Its `setup` (called by the host once per loaded version, before the first event) puts
//! the index template (idempotent; see [`template`]) and creates the index of the first
//! day to come (config `first_day`, else today), so that no event waits for either.
//!
//! It exports the handler contract's partitions form: a call carries the events of several
//! of its many partitions, and every event of the call goes in one `bulk-index`. Each
//! document's `_id` is its event id, so a redelivered or replayed event replaces its own
//! document: the indices end the same however often an event comes.
//!
//! Then the index of the day after each day the call wrote into is prepared (created in
//! the background by the host) unless this instance has asked already: creating an index
//! takes Elasticsearch up to half a second on a loaded machine, and the first call of a
//! day, with every partition in it, would otherwise wait for it.

wit_bindgen::generate!({
    inline: "
        package polyhost:auditor;

        world auditor {
            include polyhost:platform/partitions-platform-handler@0.2.0;
            include polyhost:platform/plugin-setup@0.2.0;
        }
    ",
    path: "../../wit",
    world: "polyhost:auditor/auditor",
    generate_all,
});

pub mod document;
pub mod outcome;
pub mod template;

use std::collections::VecDeque;
use std::sync::Mutex;

use exports::polyhost::platform::partitions_handler::{Guest, PartitionEvents};
use polyhost::platform::records;
use polyhost::platform::search::{self, BulkItem};
use polyhost::platform::types::{BatchInfo, Error, ErrorKind, Event, Outcome};
use polyhost_guest::Flattened;
use wasi::logging::logging::{Level, log};

/// The next days' indices this instance has asked to prepare: the latest
/// [`PREPARED_KEPT`], so that a replay of old days does not grow it.
static PREPARED: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// How many prepared index names an instance remembers.
const PREPARED_KEPT: usize = 16;

struct Auditor;

impl exports::polyhost::platform::setup::Guest for Auditor {
    /// Puts the index template, then asks the host to create the index of the first day
    /// to come (the host waits for the creation before the first event): config
    /// `first_day` (`YYYY-MM-DD`), for a stream whose events are not of today (a replay, a
    /// simulated clock), else today's.
    fn setup() -> Result<(), String> {
        search::put_index_template(template::NAME, &template::body().to_string())
            .map_err(|e| format!("put-index-template: {}", e.message))?;
        let first = match wasi::config::store::get("first_day") {
            Ok(Some(day)) => {
                document::index_of_day(&day).map_err(|e| format!("config first_day: {e}"))?
            }
            _ => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .and_then(|d| i64::try_from(d.as_micros()).ok());
                document::index_for(now)
            }
        };
        search::prepare_index(&first)
            .map_err(|e| format!("prepare-index `{first}`: {}", e.message))?;
        Ok(())
    }
}

impl Guest for Auditor {
    fn handle(partitions: Vec<PartitionEvents>) -> Vec<Vec<Outcome>> {
        let call = Flattened::new(partitions, |p| (p.batch, p.events));
        let outcomes = handle(&call);
        call.split(outcomes)
    }
}

/// Indexes the events of a call, one outcome per event.
fn handle(call: &Flattened<BatchInfo, Event>) -> Vec<Outcome> {
    let events = &call.events;
    if events.is_empty() {
        return Vec::new();
    }
    let mut outcomes = vec![Outcome::Ok; events.len()];
    let mut items = Vec::with_capacity(events.len());
    // Where each item's event is in `events`.
    let mut positions = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let batch = call.partition(i);
        if let Some(problem) = document::id_problem(&event.id) {
            outcomes[i] = Outcome::Reject(problem);
            continue;
        }
        items.push(BulkItem {
            index: document::index_for(event.time),
            id: event.id.clone(),
            document: document::document(
                &batch.topic,
                batch.partition,
                event,
                records::key_at(&batch.topic, batch.partition, event.offset).as_deref(),
            )
            .to_string(),
        });
        positions.push(i);
    }
    for (i, o) in positions.into_iter().zip(index_all(&items)) {
        outcomes[i] = o;
    }
    prepare_next_days(events, &items);
    for (event, o) in events.iter().zip(&outcomes) {
        if let Outcome::Reject(why) = o {
            warn(&format!("event `{}` rejected: {why}", event.id));
        }
    }
    outcomes
}

/// Indexes `items` in one `bulk-index`, one outcome per item. When Elasticsearch refuses
/// the request as a whole as invalid (one bad item can do that), the items are split in
/// halves and each half indexed the same way, so that only the bad item is rejected, in
/// about 2·log₂(n) requests rather than n.
fn index_all(items: &[BulkItem]) -> Vec<Outcome> {
    if items.is_empty() {
        return Vec::new();
    }
    match search::bulk_index(items) {
        Ok(refusals) if refusals.len() == items.len() => {
            refusals.into_iter().map(outcome::from_item).collect()
        }
        Ok(refusals) => vec![
            Outcome::Retry(format!(
                "bulk-index answered {} results for {} documents",
                refusals.len(),
                items.len()
            ));
            items.len()
        ],
        Err(Error {
            kind: ErrorKind::Invalid,
            message,
            ..
        }) if items.len() > 1 => {
            warn(&format!(
                "bulk-index of {} documents refused as a whole ({message}); splitting it",
                items.len()
            ));
            let (first, second) = items.split_at(items.len() / 2);
            let mut outcomes = index_all(first);
            outcomes.extend(index_all(second));
            outcomes
        }
        Err(e) => vec![outcome::from_error(&e); items.len()],
    }
}

/// Asks the host to prepare the index of the day after each day of `events`, unless the call
/// wrote into it already or this instance asked before. One creation at a time: when the
/// host is still busy with the last one, the rest wait for a later call.
fn prepare_next_days(events: &[Event], written: &[BulkItem]) {
    let next = document::next_days(
        events.iter().map(|e| e.time),
        written.iter().map(|i| i.index.as_str()),
    );
    let mut prepared = PREPARED.lock().unwrap_or_else(|e| e.into_inner());
    for index in next {
        if prepared.contains(&index) {
            continue;
        }
        match search::prepare_index(&index) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => warn(&format!("prepare-index `{index}`: {}", e.message)),
        }
        if prepared.len() == PREPARED_KEPT {
            prepared.pop_front();
        }
        prepared.push_back(index);
    }
}

fn warn(message: &str) {
    log(Level::Warn, "auditor", message);
}

export!(Auditor);
