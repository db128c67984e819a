//! Test plugin: a handler on the minimal world that uses every part of the guest helper
//! crate (`guest/`), so the host's tests can show that the crate adds no import that needs a
//! grant.
//!
//! Each event's `data` is `{}` (applied) or `{"fail": "transient" | "permanent"}` (a host
//! call that failed so); events are applied in subject order ([`in_key_order`]), and a
//! failure's reason names the event's time in RFC 3339.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/minimal-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::types::{BatchInfo, Event, Outcome};
use polyhost_guest::{Verdict, in_key_order, probe, time};
use serde_json::{Value, json};

struct GuestOnly;

impl Guest for GuestOnly {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        in_key_order(&events, |e| e.subject.as_deref(), apply)
            .into_iter()
            .map(|verdict| match verdict {
                Verdict::Ok => Outcome::Ok,
                Verdict::Retry(reason) => Outcome::Retry(reason),
                Verdict::Reject(reason) => Outcome::Reject(reason),
            })
            .collect()
    }
}

export!(GuestOnly);

fn apply(event: &Event) -> Verdict {
    let data = probe::parse(&String::from_utf8_lossy(&event.data));
    let at = event
        .time
        .and_then(time::rfc3339_millis)
        .unwrap_or_else(|| "no time".into());
    let fail = &data["fail"];
    if probe::matches(&json!("*"), fail) && *fail != Value::Null {
        let transient = fail == "transient";
        Verdict::after_host_error(transient, format!("{fail} failure at {at}"))
    } else {
        Verdict::Ok
    }
}
