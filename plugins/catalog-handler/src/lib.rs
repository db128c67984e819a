//! S2.2 catalog-handler: titles, their relations, assets and ratings → MongoDB.
//!
//! Handles `streaming.title.*` (topic `streaming.catalog`) and `streaming.rating.submitted`
//! (topic `streaming.ratings`): one document per title in the collection `titles`, the
//! assets' bytes in the GridFS bucket `title_assets`. [`event`] parses, [`update`] builds
//! the documents and explains the idempotency scheme, [`fold`] applies a batch in memory
//! into one write per title, [`store`] makes the calls (a fixed number per batch);
//! [`polyhost_guest::in_key_order`] keeps each title's events in order within a batch.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

mod event;
mod fold;
mod store;
mod update;

use std::time::{Duration, Instant};

use event::CatalogEvent;
use exports::polyhost::platform::handler::Guest;
use polyhost::platform::types::{BatchInfo, Event, Outcome};
use polyhost_guest::Verdict;
use wasi::logging::logging::{Level, log};

/// How long a batch may spend applying events before the rest are handed back (`retry`),
/// so that a batch of slow writes (blobs, a busy server) ends well within the host's
/// `call_timeout_ms` instead of being cut off. Config key `batch_budget_ms`.
const DEFAULT_BUDGET: Duration = Duration::from_millis(2_000);

struct CatalogHandler;

impl Guest for CatalogHandler {
    fn handle(batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        let started = Instant::now();
        let budget = budget();
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
        let items: Vec<fold::Item<'_>> = events
            .iter()
            .zip(&parsed)
            .map(|(e, p)| fold::Item {
                id: &e.id,
                key: e.subject.as_deref(),
                at: (batch.partition, e.offset),
                event: p.as_ref().map_err(String::as_str),
            })
            .collect();
        let verdicts = store::apply_batch(&items, batch.attempt, || started.elapsed() > budget);
        events
            .iter()
            .zip(verdicts)
            .map(|(event, verdict)| match verdict {
                Verdict::Ok => Outcome::Ok,
                Verdict::Retry(reason) => {
                    let message = format!(
                        "{} ({}): retry (attempt {}): {reason}",
                        event.id, event.type_, batch.attempt
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
