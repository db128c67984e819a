//! Test plugin: exports both `polyhost:platform/handler` and
//! `polyhost:platform/json-handler`. A handler exports exactly one of them, so the host
//! refuses it at load.

wit_bindgen::generate!({
    path: "../../wit",
    inline: "
        package polyhost-test:two-handlers;
        world two-handlers {
            export polyhost:platform/handler@0.2.0;
            export polyhost:platform/json-handler@0.2.0;
        }
    ",
    world: "polyhost-test:two-handlers/two-handlers",
    generate_all,
});

use exports::polyhost::platform::{handler, json_handler};
use polyhost::platform::types::{BatchInfo, Event, Outcome};

struct Both;

impl handler::Guest for Both {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        events.iter().map(|_| Outcome::Ok).collect()
    }
}

impl json_handler::Guest for Both {
    fn handle(_batch: BatchInfo, _events: String) -> Vec<Outcome> {
        Vec::new()
    }
}

export!(Both);
