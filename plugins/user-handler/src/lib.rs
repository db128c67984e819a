//! S2.1 user-handler: users, preferences, subscriptions and payments → PostgreSQL.
//!
//! Consumes `streaming.user.*` (topic `streaming.users`) and `streaming.subscription.*` /
//! `streaming.payment.*` (topic `streaming.billing`), and publishes
//! `streaming.subscription.activated` to `streaming.derived` on a subscription's first
//! successful payment.
//!
//! - [`domain`]: parsing and validation, the subscription state machine, the derived
//!   event; plain functions, tested natively.
//! - [`store`]: one transaction per event, opened by the event's row in the ledger of
//!   processed events, so a replayed event changes nothing.
//!
//! Config (`[plugin.config]`): `derived_topic`, where the derived events go (default
//! `streaming.derived`).
//!
//! Outcomes: a malformed event is rejected with the reason; a transient host error, or an
//! event that names a user or subscription not stored yet, is retried. Once an event of
//! an entity is to be retried, the later events of that entity in the batch are retried
//! too, unapplied, so each entity's events apply in order.

mod domain;
mod store;

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

use std::collections::HashSet;

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::records;
use polyhost::platform::types::{BatchInfo, Event, Outcome};
use store::{Meta, Stop};
use wasi::logging::logging::{Level, log};

struct UserHandler;

impl Guest for UserHandler {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        let derived_topic = wasi::config::store::get("derived_topic")
            .ok()
            .flatten()
            .unwrap_or_else(|| domain::DERIVED_TOPIC.to_owned());
        // Entities with an event waiting for a retry in this batch.
        let mut waiting: HashSet<String> = HashSet::new();
        events
            .iter()
            .map(|event| {
                let entity = entity_of(event);
                if let Some(entity) = entity.as_ref().filter(|e| waiting.contains(*e)) {
                    return Outcome::Retry(format!(
                        "an earlier event of `{entity}` is waiting for a retry"
                    ));
                }
                let outcome = handle_one(event, &derived_topic);
                if let (Outcome::Retry(_), Some(entity)) = (&outcome, entity) {
                    waiting.insert(entity);
                }
                outcome
            })
            .collect()
    }
}

export!(UserHandler);

/// The entity an event is about: its subject, else its Kafka key.
fn entity_of(event: &Event) -> Option<String> {
    event
        .subject
        .clone()
        .or_else(|| records::key(event.offset).map(|k| String::from_utf8_lossy(&k).into_owned()))
}

fn handle_one(event: &Event, derived_topic: &str) -> Outcome {
    let result = domain::parse(&event.type_, event.subject.as_deref(), &event.data)
        .map_err(Stop::Reject)
        .and_then(|command| {
            let time = event
                .time
                .ok_or_else(|| Stop::Reject("the event has no `time`".into()))?;
            let meta = Meta {
                source: &event.source,
                id: &event.id,
                ty: &event.type_,
                time,
            };
            store::apply(&meta, &command, derived_topic)
        });
    match result {
        Ok(()) => Outcome::Ok,
        Err(Stop::Retry(reason)) => Outcome::Retry(reason),
        Err(Stop::Reject(reason)) => {
            log(
                Level::Warn,
                "user-handler",
                &format!("event `{}` ({}) rejected: {reason}", event.id, event.type_),
            );
            Outcome::Reject(reason)
        }
    }
}
