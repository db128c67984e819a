//! Test plugin: exports `polyhost:platform/partitions-handler` (world
//! `partitions-minimal-handler`). It answers per event, by the event's `type`:
//!
//! - `echo` — rejects the event with, as the reason, where it came from and what the call
//!   carried: `<topic>/<partition>@<offset> attempt <n>; key-at <key>; key <key>; call of
//!   <p> partitions and <e> events` (a key as its UTF-8 text, `-` when there is none), so a
//!   test sees what the plugin got;
//! - `fault.panic` — panics (a trap);
//! - `fault.wrong-length` — answers its partition one outcome too many;
//! - `fault.wrong-partitions` — answers the call one list of outcomes too many;
//! - `probe` — asks `records` for what is not in its call (another topic, a partition the
//!   topic lacks, an offset the partition's batch lacks, a topic name of 1 MiB) and
//!   rejects with what it got: `other-topic <key>; other-partition <key>; other-offset
//!   <key>; long-topic <key>; headers <n>; own headers <m>` (`<n>`: how many headers all
//!   of them gave; `<m>`: how many its own record has);
////! - anything else — `ok`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/partitions-minimal-handler",
    generate_all,
});

use exports::polyhost::platform::partitions_handler::{Guest, PartitionEvents};
use polyhost::platform::records;
use polyhost::platform::types::Outcome;

struct PartitionsHandler;

fn text(key: Option<Vec<u8>>) -> String {
    key.map_or_else(
        || "-".to_owned(),
        |k| String::from_utf8_lossy(&k).into_owned(),
    )
}

impl Guest for PartitionsHandler {
    fn handle(partitions: Vec<PartitionEvents>) -> Vec<Vec<Outcome>> {
        let wrong_partitions = partitions
            .iter()
            .flat_map(|p| &p.events)
            .any(|e| e.type_ == "fault.wrong-partitions");
        let total: usize = partitions.iter().map(|p| p.events.len()).sum();
        let call = format!("call of {} partitions and {total} events", partitions.len());
        partitions
            .iter()
            .map(|p| {
                let b = &p.batch;
                let mut out = Vec::with_capacity(p.events.len());
                for e in &p.events {
                    match e.type_.as_str() {
                        "echo" => out.push(Outcome::Reject(format!(
                            "{}/{}@{} attempt {}; key-at {}; key {}; {call}",
                            b.topic,
                            b.partition,
                            e.offset,
                            b.attempt,
                            text(records::key_at(&b.topic, b.partition, e.offset)),
                            text(records::key(e.offset)),
                        ))),
                        "probe" => {
                            let long = "t".repeat(1 << 20);
                            let (t, p, o) = (&b.topic, b.partition, e.offset);
                            let other = format!("{t}-other");
                            let asks = [
                                (other.as_str(), p, o),
                                (t.as_str(), p + 1_000, o),
                                (t.as_str(), p, o + 1_000_000),
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
                                keys[0], keys[1], keys[2], keys[3],
                                records::headers_at(t, p, o).len(),
                            )));
                        }
                        "fault.panic" => panic!("partitions-handler was asked to panic"),
                        "fault.wrong-length" => {
                            out.push(Outcome::Ok);
                            out.push(Outcome::Ok);
                        }
                        _ => out.push(Outcome::Ok),
                    }
                }
                out
            })
            .chain(wrong_partitions.then(Vec::new))
            .collect()
    }
}

export!(PartitionsHandler);
