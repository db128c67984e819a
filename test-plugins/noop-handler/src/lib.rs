//! Test plugin: acknowledges every event and does nothing else (the benchmark's handler).

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/minimal-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::types::{BatchInfo, Event, Outcome};

struct Noop;

impl Guest for Noop {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        events.iter().map(|_| Outcome::Ok).collect()
    }
}

export!(Noop);
