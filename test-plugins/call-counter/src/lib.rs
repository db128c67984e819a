//! Test plugin: counts the calls its instance has handled, to tell a reused instance from
//! a fresh one. Every event is rejected with the reason `call <n>` (`n` counts from 1 per
//! instance); an event of type `trap` panics instead.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/minimal-handler",
    generate_all,
});

use std::sync::atomic::{AtomicU32, Ordering};

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::types::{BatchInfo, Event, Outcome};

/// Calls this instance has handled: guest state that lives as long as the instance.
static CALLS: AtomicU32 = AtomicU32::new(0);

struct Counter;

impl Guest for Counter {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        if events.iter().any(|e| e.type_ == "trap") {
            panic!("asked to trap on call {n}");
        }
        events
            .iter()
            .map(|_| Outcome::Reject(format!("call {n}")))
            .collect()
    }
}

export!(Counter);
