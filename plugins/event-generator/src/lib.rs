//! S1 event-generator: a coherent, seeded stream of platform events.
//!
//! For now it ends the run at once; the generator proper comes with the platform.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/event-generator",
    generate_all,
});

use exports::polyhost::platform::generator::Guest;
use polyhost::platform::messaging::Message;

struct EventGenerator;

impl Guest for EventGenerator {
    fn next(_max: u32) -> Vec<Message> {
        Vec::new()
    }
}

export!(EventGenerator);
