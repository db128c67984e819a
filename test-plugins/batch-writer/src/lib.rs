//! Test plugin (benchmarks): one batched write per batch — `wasi:keyvalue/batch.set-many`,
//! which the host runs as one Redis `MSET` — of `<prefix>ev:<event id>` = the event data.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::types::{BatchInfo, Event, Outcome};
use wasi::config::store as config;
use wasi::keyvalue::{batch, store};

struct BatchWriter;

impl Guest for BatchWriter {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        let prefix = config::get("prefix").ok().flatten().unwrap_or_default();
        let pairs: Vec<(String, Vec<u8>)> = events
            .iter()
            .map(|e| (format!("{prefix}ev:{}", e.id), e.data.clone()))
            .collect();
        let written = store::open("default").and_then(|b| batch::set_many(&b, &pairs));
        let outcome = match written {
            Ok(()) => Outcome::Ok,
            Err(e) => Outcome::Retry(format!("{e:?}")),
        };
        events.iter().map(|_| outcome.clone()).collect()
    }
}

export!(BatchWriter);
