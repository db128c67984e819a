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
}

/// The records of one batch, in offset order (as a batch's events are). Each record is
/// shared, not copied: a batch handed over again (a retry, or one event at a time) shares
/// the same records.
#[derive(Debug, Clone, Default)]
pub struct Records(Arc<[Arc<RecordMeta>]>);

impl Records {
    /// The records of a batch; `records` must be in offset order.
    pub fn new(records: Vec<Arc<RecordMeta>>) -> Self {
        debug_assert!(records.is_sorted_by_key(|r| r.offset));
        Records(records.into())
    }

    /// The record at `offset`, if it is one of the batch's.
    pub fn get(&self, offset: i64) -> Option<&RecordMeta> {
        self.0
            .binary_search_by_key(&offset, |r| r.offset)
            .ok()
            .map(|i| &*self.0[i])
    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64) -> Arc<RecordMeta> {
        Arc::new(RecordMeta {
            offset,
            key: Some(format!("k{offset}").into_bytes()),
            headers: vec![("h".into(), offset.to_string().into_bytes())],
        })
    }

    #[test]
    fn finds_a_batch_record_by_offset_and_nothing_else() {
        let records = Records::new(vec![record(3), record(4), record(9)]);
        assert_eq!(records.get(4), Some(&*record(4)));
        assert_eq!(records.get(9), Some(&*record(9)));
        assert_eq!(records.get(5), None);
        assert_eq!(records.get(0), None);
        assert_eq!(Records::default().get(3), None);
    }
}
