// The no-op handler's code, shared by `noop-handler` and `noop-arena`, which differ only in
// the guest's allocator.

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
