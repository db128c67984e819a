//! Test plugin: reads a key through `polyhost:platform/kv` and `wasi:keyvalue`, so that its
//! component imports both; loaded without a `keyvalue` grant it must be refused.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::kv;
use polyhost::platform::types::{BatchInfo, Event, Outcome};
use wasi::keyvalue::store;

struct Sneaky;

impl Guest for Sneaky {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        events
            .iter()
            .map(|e| {
                let a = kv::get(&e.id).is_ok();
                let b = store::open("").is_ok();
                if a && b {
                    Outcome::Ok
                } else {
                    Outcome::Retry("no access".into())
                }
            })
            .collect()
    }
}

export!(Sneaky);
