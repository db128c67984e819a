//! S2.1 user-handler: users, preferences, subscriptions and payments → PostgreSQL.
//!
//! Consumes `streaming.user.*` (topic `streaming.users`) and `streaming.subscription.*` /
//! `streaming.payment.*` (topic `streaming.billing`), and publishes
//! `streaming.subscription.activated` to `streaming.derived` on a subscription's first
//! successful payment.
//!
//! It exports the handler contract's partitions form: a call carries the events of several
//! partitions of its two topics, worked out as one batch (a user's events keep their order
//! within a partition, and between the two topics there is none to keep), so the round
//! trips below are per call, not per partition.
//!
//! - [`domain`]: parsing and validation, the subscription state machine, the derived
//!   event; plain functions, tested natively.
//! - [`batch`]: the batch worked out in the guest against the rows it touches: each
//!   event's outcome and one final row per entity; plain functions, tested natively.
//! - [`store`]: the batch in one transaction with a fixed number of round trips (begin,
//!   read, write, publish, commit), each applied event's row in the ledger of processed
//!   events so a replayed event changes nothing; when the batch's write fails, the batch is
//!   split in halves down to the event at fault, so a bad event is rejected alone.
//!
//! Config (`[plugin.config]`): `derived_topic`, where the derived events go (default
//! `streaming.derived`).
//!
//! Outcomes: a malformed event is rejected with the reason; a transient host error, or an
//! event that names a user or subscription not stored yet, is retried. Once an event of
//! an entity is to be retried, the later events of that entity in the batch are retried
//! too, unapplied, so each entity's events apply in order.

mod batch;
mod domain;
mod store;

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/partitions-platform-handler",
    generate_all,
});

use batch::{Decision, Incoming};
use exports::polyhost::platform::partitions_handler::{Guest, PartitionEvents};
use polyhost::platform::records;
use polyhost::platform::types::{BatchInfo, Event, Outcome};
use polyhost_guest::Flattened;
use wasi::logging::logging::{Level, log};

struct UserHandler;

impl Guest for UserHandler {
    fn handle(partitions: Vec<PartitionEvents>) -> Vec<Vec<Outcome>> {
        let derived_topic = wasi::config::store::get("derived_topic")
            .ok()
            .flatten()
            .unwrap_or_else(|| domain::DERIVED_TOPIC.to_owned());
        let call = Flattened::new(partitions, |p| {
            let events = p.events.iter().map(|e| incoming(e, &p.batch)).collect();
            (p.batch, events)
        });
        let decisions = store::handle(&call.events, &derived_topic);
        let outcomes = call
            .events
            .iter()
            .zip(decisions)
            .map(|(event, decision)| match decision {
                Decision::Ok => Outcome::Ok,
                Decision::Retry(reason) => Outcome::Retry(reason),
                Decision::Reject(reason) => {
                    log_warn(&format!(
                        "event `{}` ({}) rejected: {reason}",
                        event.id, event.ty
                    ));
                    Outcome::Reject(reason)
                }
            })
            .collect();
        call.split(outcomes)
    }
}

export!(UserHandler);

/// An event of `batch`'s partition, parsed for the batch.
fn incoming(event: &Event, batch: &BatchInfo) -> Incoming {
    let command =
        domain::parse(&event.type_, event.subject.as_deref(), &event.data).and_then(|command| {
            match event.time {
                Some(_) => Ok(command),
                None => Err("the event has no `time`".to_owned()),
            }
        });
    Incoming {
        source: event.source.clone(),
        id: event.id.clone(),
        ty: event.type_.clone(),
        time: event.time.unwrap_or_default(),
        entity: entity_of(event, batch),
        command,
    }
}

/// The entity an event is about: its subject, else its Kafka key.
fn entity_of(event: &Event, batch: &BatchInfo) -> Option<String> {
    event.subject.clone().or_else(|| {
        records::key_at(&batch.topic, batch.partition, event.offset)
            .map(|k| String::from_utf8_lossy(&k).into_owned())
    })
}

/// Logs a warning, tagged with the plugin.
fn log_warn(message: &str) {
    log(Level::Warn, "user-handler", message);
}
