//! Test plugin: transient failures on demand, without state (the batch's `attempt` says how
//! many times it was handed over before). An event's type picks the behaviour:
//!
//! - `flaky.retry-<n>` — answers `retry` until the batch's attempt is `n`, then `ok`;
//! - `flaky.retry-then-reject-<n>` — `retry` until attempt `n`, then `reject`;
//! - anything else — `ok`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/minimal-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::types::{BatchInfo, Event, Outcome};

struct Flaky;

fn verdict(ty: &str, attempt: u32) -> Outcome {
    let (reject, n) = if let Some(n) = ty.strip_prefix("flaky.retry-then-reject-") {
        (true, n)
    } else if let Some(n) = ty.strip_prefix("flaky.retry-") {
        (false, n)
    } else {
        return Outcome::Ok;
    };
    let n: u32 = n.parse().unwrap_or(0);
    if attempt < n {
        Outcome::Retry(format!("attempt {attempt} of {n}"))
    } else if reject {
        Outcome::Reject(format!("rejected after {attempt} retries"))
    } else {
        Outcome::Ok
    }
}

impl Guest for Flaky {
    fn handle(batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        events
            .iter()
            .map(|e| verdict(&e.type_, batch.attempt))
            .collect()
    }
}

export!(Flaky);
