//! S3 auditor: every event of every platform topic → Elasticsearch.
//!
//! For now it acknowledges every event; the domain logic comes with the platform.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::types::{BatchInfo, Event, Outcome};

struct Auditor;

impl Guest for Auditor {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        events.iter().map(|_| Outcome::Ok).collect()
    }
}

export!(Auditor);
