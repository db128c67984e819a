//! Test plugin: exports `polyhost:platform/json-partitions-handler` (world
//! `json-partitions-minimal-handler`). It parses the call's JSON text and answers each
//! event as the `partitions-handler` test plugin does (the same module, `answer.rs`), plus:
//!
//! - `echo.json` — rejects the event with, as the reason, its partition's `batch-info` and
//!   the event's JSON object as received: `{"topic", "partition", "attempt", "event"}`.
//!
//! A text that is not a JSON array of arrays of objects, one per partition, is a panic.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/json-partitions-minimal-handler",
    generate_all,
});

#[path = "../../partitions-handler/src/answer.rs"]
mod answer;

use answer::At;
use exports::polyhost::platform::json_partitions_handler::Guest;
use polyhost::platform::types::{BatchInfo, Outcome};
use serde_json::{Map, Value, json};

struct JsonPartitionsHandler;

impl Guest for JsonPartitionsHandler {
    fn handle(partitions: Vec<BatchInfo>, events: String) -> Vec<Vec<Outcome>> {
        let events: Vec<Vec<Map<String, Value>>> =
            serde_json::from_str(&events).expect("a JSON array of arrays of events");
        assert_eq!(events.len(), partitions.len(), "one array per partition");
        let all = events.iter().flatten();
        let wrong_partitions = answer::wrong_partitions(all.clone().map(type_of));
        let call = answer::call(partitions.len(), all.count());
        partitions
            .iter()
            .zip(&events)
            .map(|(b, events)| {
                let mut out = Vec::with_capacity(events.len());
                for e in events {
                    let ty = type_of(e);
                    if ty == "echo.json" {
                        let echo = json!({"topic": b.topic, "partition": b.partition,
                                          "attempt": b.attempt, "event": e});
                        out.push(Outcome::Reject(echo.to_string()));
                        continue;
                    }
                    let at = At {
                        topic: &b.topic,
                        partition: b.partition,
                        attempt: b.attempt,
                        offset: e["offset"].as_i64().expect("an event's offset"),
                    };
                    answer::answer(ty, &at, &call, &mut out);
                }
                out
            })
            .chain(wrong_partitions.then(Vec::new))
            .collect()
    }
}

/// An event's `type`, `""` when it has none.
fn type_of(event: &Map<String, Value>) -> &str {
    event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

export!(JsonPartitionsHandler);
