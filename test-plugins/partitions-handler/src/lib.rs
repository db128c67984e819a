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
//! - anything else — `ok`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/partitions-minimal-handler",
    generate_all,
});

mod answer;

use answer::At;
use exports::polyhost::platform::partitions_handler::{Guest, PartitionEvents};
use polyhost::platform::types::Outcome;

struct PartitionsHandler;

impl Guest for PartitionsHandler {
    fn handle(partitions: Vec<PartitionEvents>) -> Vec<Vec<Outcome>> {
        let events = partitions.iter().flat_map(|p| &p.events);
        let wrong_partitions = answer::wrong_partitions(events.clone().map(|e| e.type_.as_str()));
        let call = answer::call(partitions.len(), events.count());
        partitions
            .iter()
            .map(|p| {
                let mut out = Vec::with_capacity(p.events.len());
                for e in &p.events {
                    let at = At {
                        topic: &p.batch.topic,
                        partition: p.batch.partition,
                        attempt: p.batch.attempt,
                        offset: e.offset,
                    };
                    answer::answer(&e.type_, &at, &call, &mut out);
                }
                out
            })
            .chain(wrong_partitions.then(Vec::new))
            .collect()
    }
}

export!(PartitionsHandler);
