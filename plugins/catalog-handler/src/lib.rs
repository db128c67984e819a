//! S2.2 catalog-handler: titles, relations and display blobs → MongoDB.
//!
//! For now it acknowledges every event; the domain logic comes with the platform.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::types::{BatchInfo, Event, Outcome};

struct CatalogHandler;

impl Guest for CatalogHandler {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        events.iter().map(|_| Outcome::Ok).collect()
    }
}

export!(CatalogHandler);
