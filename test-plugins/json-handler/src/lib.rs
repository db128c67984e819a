//! Test plugin: exports `polyhost:platform/json-handler` (world `json-minimal-handler`).
//! It parses the batch's JSON text and answers per event, by the event's `type`:
//!
//! - `echo` — rejects the event with, as the reason, the event's JSON object as received
//!   (so a test sees exactly what the plugin got);
//! - `fault.panic` — panics (a trap);
//! - `fault.loop` — loops forever (stopped by the epoch deadline);
//! - `fault.wrong-length` — returns one outcome too many;
//! - anything else — `ok`.
//!
//! A text that is not a JSON array of objects is a panic.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/json-minimal-handler",
    generate_all,
});

use exports::polyhost::platform::json_handler::Guest;
use polyhost::platform::types::{BatchInfo, Outcome};
use serde_json::Value;

struct JsonHandler;

impl Guest for JsonHandler {
    fn handle(_batch: BatchInfo, events: String) -> Vec<Outcome> {
        let events: Vec<serde_json::Map<String, Value>> =
            serde_json::from_str(&events).expect("events are a JSON array of objects");
        let mut out = Vec::with_capacity(events.len());
        for e in &events {
            match e.get("type").and_then(Value::as_str).unwrap_or_default() {
                "echo" => out.push(Outcome::Reject(Value::Object(e.clone()).to_string())),
                "fault.panic" => panic!("json-handler was asked to panic"),
                "fault.loop" => {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                "fault.wrong-length" => {
                    out.push(Outcome::Ok);
                    out.push(Outcome::Ok);
                }
                _ => out.push(Outcome::Ok),
            }
        }
        out
    }
}

export!(JsonHandler);
