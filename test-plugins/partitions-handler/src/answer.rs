//! What the partitions-form test plugins answer (`partitions-handler`, and
//! `json-partitions-handler`, which takes this file as a module of its own): one event's
//! outcomes by its `type`, as `partitions-handler`'s crate docs list them.

use crate::polyhost::platform::records;
use crate::polyhost::platform::types::Outcome;

/// Where an event is: its partition's `batch-info` and its offset.
pub struct At<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub attempt: u32,
    pub offset: i64,
}

/// What a call carries: `partitions` partitions and `events` events in all.
pub fn call(partitions: usize, events: usize) -> String {
    format!("call of {partitions} partitions and {events} events")
}

/// Whether the call is to be answered with one list of outcomes too many.
pub fn wrong_partitions<'a>(mut types: impl Iterator<Item = &'a str>) -> bool {
    types.any(|t| t == "fault.wrong-partitions")
}

fn text(key: Option<Vec<u8>>) -> String {
    key.map_or_else(
        || "-".to_owned(),
        |k| String::from_utf8_lossy(&k).into_owned(),
    )
}

/// Pushes the outcomes of the event of type `type_` at `at` to `out` (one, but for
/// `fault.wrong-length`); `call` is [`call`]'s text.
pub fn answer(type_: &str, at: &At<'_>, call: &str, out: &mut Vec<Outcome>) {
    let (t, p, o) = (at.topic, at.partition, at.offset);
    match type_ {
        "echo" => out.push(Outcome::Reject(format!(
            "{t}/{p}@{o} attempt {}; key-at {}; key {}; {call}",
            at.attempt,
            text(records::key_at(t, p, o)),
            text(records::key(o)),
        ))),
        "probe" => {
            let long = "t".repeat(1 << 20);
            let other = format!("{t}-other");
            let asks = [
                (other.as_str(), p, o),
                (t, p + 1_000, o),
                (t, p, o + 1_000_000),
                (long.as_str(), p, o),
            ];
            let headers: usize = asks
                .iter()
                .map(|&(t, p, o)| records::headers_at(t, p, o).len())
                .sum();
            let keys: Vec<String> = asks
                .iter()
                .map(|&(t, p, o)| text(records::key_at(t, p, o)))
                .collect();
            out.push(Outcome::Reject(format!(
                "other-topic {}; other-partition {}; other-offset {}; long-topic {}; headers {headers}; own headers {}",
                keys[0],
                keys[1],
                keys[2],
                keys[3],
                records::headers_at(t, p, o).len(),
            )));
        }
        "fault.panic" => panic!("the partitions handler was asked to panic"),
        "fault.wrong-length" => {
            out.push(Outcome::Ok);
            out.push(Outcome::Ok);
        }
        _ => out.push(Outcome::Ok),
    }
}
