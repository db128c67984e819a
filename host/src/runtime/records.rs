//! `polyhost:platform/records`: the Kafka records behind the batch a handler is handling —
//! their keys and headers, which the WIT `event` does not carry (each string or list an
//! event carries is one more allocation and copy into the guest, for every event).

use std::sync::Arc;

use crate::bindings::polyhost::platform::records::Host;
use crate::bindings::polyhost::platform::types::Header;
use crate::state::HostState;

/// What a Kafka record carries besides its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// The record's offset in its partition.
    pub offset: i64,
    /// The record key, if any.
    pub key: Option<Vec<u8>>,
    /// The record headers, in record order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record's Kafka timestamp (milliseconds since the epoch), if it has one.
    pub timestamp_ms: Option<i64>,
}

/// One partition's records in a call, in offset order (as its events are).
#[derive(Debug, Clone)]
struct Part {
    topic: Arc<str>,
    partition: i32,
    records: Arc<[Arc<RecordMeta>]>,
}

/// The records of one call: one partition's (the `handler` and `json-handler` forms), or
/// several partitions' (the `partitions-handler` form). Each record is shared, not copied:
/// a batch handed over again (a retry, or one event at a time) shares the same records.
#[derive(Debug, Clone, Default)]
pub struct Records(Arc<[Part]>);

impl Records {
    /// The records of a one-partition batch; `records` must be in offset order.
    pub fn new(topic: &str, partition: i32, records: Vec<Arc<RecordMeta>>) -> Self {
        Records::of_partitions(vec![(topic.into(), partition, records)])
    }

    /// The records of a call over several partitions, each partition's in offset order.
    pub fn of_partitions(parts: Vec<(Arc<str>, i32, Vec<Arc<RecordMeta>>)>) -> Self {
        Records(
            parts
                .into_iter()
                .map(|(topic, partition, records)| {
                    debug_assert!(records.is_sorted_by_key(|r| r.offset));
                    Part {
                        topic,
                        partition,
                        records: records.into(),
                    }
                })
                .collect(),
        )
    }

    /// The record at `offset`, if the call carries one partition and it is one of its.
    pub fn get(&self, offset: i64) -> Option<&RecordMeta> {
        match &*self.0 {
            [part] => find(&part.records, offset),
            _ => None,
        }
    }

    /// The record at `offset` of `partition` of `topic`, if it is one of the call's.
    pub fn get_at(&self, topic: &str, partition: i32, offset: i64) -> Option<&RecordMeta> {
        self.0
            .iter()
            .find(|p| p.partition == partition && &*p.topic == topic)
            .and_then(|p| find(&p.records, offset))
    }
}

fn find(records: &[Arc<RecordMeta>], offset: i64) -> Option<&RecordMeta> {
    records
        .binary_search_by_key(&offset, |r| r.offset)
        .ok()
        .map(|i| &*records[i])
}

impl Host for HostState {
    async fn key(&mut self, offset: i64) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.records.get(offset).and_then(|r| r.key.clone()))
    }

    async fn headers(&mut self, offset: i64) -> wasmtime::Result<Vec<Header>> {
        Ok(self
            .records
            .get(offset)
            .map(|r| r.headers.clone())
            .unwrap_or_default())
    }

    async fn key_at(
        &mut self,
        topic: String,
        partition: i32,
        offset: i64,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self
            .records
            .get_at(&topic, partition, offset)
            .and_then(|r| r.key.clone()))
    }

    async fn headers_at(
        &mut self,
        topic: String,
        partition: i32,
        offset: i64,
    ) -> wasmtime::Result<Vec<Header>> {
        Ok(self
            .records
            .get_at(&topic, partition, offset)
            .map(|r| r.headers.clone())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64) -> Arc<RecordMeta> {
        Arc::new(RecordMeta {
            offset,
            key: Some(format!("k{offset}").into_bytes()),
            headers: vec![("h".into(), offset.to_string().into_bytes())],
            timestamp_ms: None,
        })
    }

    #[test]
    fn finds_a_batch_record_by_offset_and_nothing_else() {
        let records = Records::new("t", 0, vec![record(3), record(4), record(9)]);
        assert_eq!(records.get(4), Some(&*record(4)));
        assert_eq!(records.get(9), Some(&*record(9)));
        assert_eq!(records.get(5), None);
        assert_eq!(records.get(0), None);
        assert_eq!(records.get_at("t", 0, 4), Some(&*record(4)));
        assert_eq!(records.get_at("t", 1, 4), None);
        assert_eq!(records.get_at("u", 0, 4), None);
        assert_eq!(Records::default().get(3), None);
    }

    #[test]
    fn a_call_over_partitions_names_a_record_by_topic_partition_and_offset() {
        let records = Records::of_partitions(vec![
            ("t".into(), 0, vec![record(3), record(4)]),
            ("t".into(), 1, vec![record(4), record(7)]),
            ("u".into(), 0, vec![record(9)]),
        ]);
        assert_eq!(records.get_at("t", 1, 7), Some(&*record(7)));
        assert_eq!(records.get_at("t", 0, 7), None);
        assert_eq!(records.get_at("u", 0, 9), Some(&*record(9)));
        assert_eq!(records.get_at("u", 1, 9), None);
        // An offset alone is ambiguous over several partitions: it names nothing.
        assert_eq!(records.get(4), None);
        assert_eq!(records.get(9), None);
    }
}
