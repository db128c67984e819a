//! One event as one audit document: which daily index it goes to, and what it holds.
//!
//! Plain functions over the event, so they test natively.

use std::collections::BTreeSet;

use chrono::DateTime;
use serde_json::{Map, Value};

use crate::polyhost::platform::types::Event;

/// Every audit index starts with this; the manifest grants `audit-events-*`.
pub const INDEX_PREFIX: &str = "audit-events-";

/// The index of events without a `time`. A fixed name rather than the day the batch
/// arrived, so that a replay puts such an event back into the same index: an event's
/// index must be a function of the event alone, or a replay would duplicate it.
pub const UNDATED_INDEX: &str = "audit-events-undated";

/// The `data` fields lifted to top-level keyword fields, so that "every event of a user"
/// (or of a title) is one `term` query.
pub const LIFTED: [&str; 2] = ["user_id", "title_id"];

/// The longest document id Elasticsearch takes, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// Why Elasticsearch could never store a document under `id`, if it could not. Such an
/// id fails the whole `_bulk` request rather than its item, so it is refused up front.
pub fn id_problem(id: &str) -> Option<String> {
    (id.len() > MAX_ID_BYTES).then(|| {
        format!(
            "the event id is {} bytes long; Elasticsearch takes document ids of at most {MAX_ID_BYTES}",
            id.len()
        )
    })
}

/// The daily index of an event at `time` (microseconds since the epoch, UTC):
/// `audit-events-YYYY.MM.DD`, or [`UNDATED_INDEX`] without a time (or with one beyond
/// what a calendar date can hold).
pub fn index_for(time: Option<i64>) -> String {
    match time.and_then(DateTime::from_timestamp_micros) {
        Some(t) => format!("{INDEX_PREFIX}{}", t.format("%Y.%m.%d")),
        None => UNDATED_INDEX.to_string(),
    }
}

/// A day, in the microseconds event times are in.
const DAY_MICROS: i64 = 86_400_000_000;

/// The daily index of `day` (`YYYY-MM-DD`, UTC), or why `day` is not one.
pub fn index_of_day(day: &str) -> Result<String, String> {
    let date = chrono::NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d")
        .map_err(|e| format!("`{day}` is not a day of the form YYYY-MM-DD ({e})"))?;
    Ok(format!("{INDEX_PREFIX}{}", date.format("%Y.%m.%d")))
}

/// The daily indices of the days after the days of `times`, but those in `written` (the
/// indices a call writes into exist once it has).
pub fn next_days<'a>(
    times: impl IntoIterator<Item = Option<i64>>,
    written: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    let written: BTreeSet<&str> = written.into_iter().collect();
    times
        .into_iter()
        .filter_map(|t| t?.checked_add(DAY_MICROS))
        .map(|t| index_for(Some(t)))
        .filter(|i| i != UNDATED_INDEX && !written.contains(i.as_str()))
        .collect()
}

/// `time` as RFC 3339 UTC: milliseconds when the time has no finer part (the platform's
/// case), else microseconds, so that no precision is lost either way.
pub use polyhost_guest::time::rfc3339;

/// The audit document of `event`, read from `partition` of `topic`, whose Kafka record had
/// the key `key`.
///
/// `data` is kept twice: as an object in `data` (mapped `flattened`: every leaf is a
/// keyword under one field, so no event type can grow the mapping) and as its text, as
/// the host handed it over, in `data_text` (full-text). Data that is not a JSON object
/// goes only to `data_text`, as (lossy) UTF-8 text. The string `user_id` and
/// `title_id` of an object `data` are lifted to top-level keywords.
pub fn document(topic: &str, partition: i32, event: &Event, key: Option<&[u8]>) -> Value {
    let mut doc = Map::new();
    let mut put = |k: &str, v: Value| {
        doc.insert(k.to_string(), v);
    };
    put("id", event.id.clone().into());
    put("type", event.type_.clone().into());
    put("source", event.source.clone().into());
    if let Some(subject) = &event.subject {
        put("subject", subject.clone().into());
    }
    if let Some(time) = event.time.and_then(rfc3339) {
        put("time", time.into());
    }
    put("topic", topic.into());
    put("partition", partition.into());
    put("offset", event.offset.into());
    if let Some(key) = key {
        put("key", String::from_utf8_lossy(key).into_owned().into());
    }
    let data = serde_json::from_slice::<Value>(&event.data);
    if data.is_ok() {
        // The WIT event does not carry `datacontenttype` (the host keeps only the decoded
        // data); JSON data is `application/json`, as every platform event's is.
        put("datacontenttype", "application/json".into());
    }
    if let Ok(Value::Object(data)) = data {
        for field in LIFTED {
            if let Some(Value::String(id)) = data.get(field) {
                put(field, id.clone().into());
            }
        }
        put("data", Value::Object(data));
    }
    if !event.data.is_empty() {
        put(
            "data_text",
            String::from_utf8_lossy(&event.data).into_owned().into(),
        );
    }
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_day_names_its_index_and_anything_else_is_refused() {
        assert_eq!(
            index_of_day("2026-01-01").unwrap(),
            "audit-events-2026.01.01"
        );
        assert_eq!(
            index_of_day(" 2026-12-31 ").unwrap(),
            "audit-events-2026.12.31"
        );
        for bad in ["2026.01.01", "2026-13-01", "yesterday", ""] {
            assert!(index_of_day(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_days_are_the_days_after_but_those_written() {
        // 2026-01-01 (twice) and the last microsecond of 2026-01-02, whose next day is
        // written; no time, and a time with no next day.
        let times = [NEW_YEAR, NEW_YEAR + 5, NEW_YEAR + 2 * DAY_MICROS - 1].map(Some);
        let next = next_days(
            times.into_iter().chain([None, Some(i64::MAX)]),
            ["audit-events-2026.01.02"],
        );
        assert_eq!(
            next.into_iter().collect::<Vec<_>>(),
            ["audit-events-2026.01.03"]
        );
    }

    fn event(time: Option<i64>, data: &str) -> Event {
        Event {
            id: "evt-42-7".into(),
            source: "/polyhost/event-generator".into(),
            type_: "streaming.session.started".into(),
            subject: Some("s-3".into()),
            time,
            data: data.as_bytes().to_vec(),
            offset: 12,
        }
    }

    /// The Kafka key of [`event`]'s record.
    const KEY: Option<&[u8]> = Some(b"s-3");

    /// 2026-01-01T00:00:00Z in microseconds.
    const NEW_YEAR: i64 = 1_767_225_600_000_000;

    #[test]
    fn the_index_is_the_utc_day_of_the_time() {
        assert_eq!(index_for(Some(NEW_YEAR)), "audit-events-2026.01.01");
        assert_eq!(index_for(Some(NEW_YEAR - 1)), "audit-events-2025.12.31");
        let last_micro_of_day = NEW_YEAR + 86_400_000_000 - 1;
        assert_eq!(
            index_for(Some(last_micro_of_day)),
            "audit-events-2026.01.01"
        );
        assert_eq!(index_for(Some(0)), "audit-events-1970.01.01");
        assert_eq!(index_for(Some(-1)), "audit-events-1969.12.31");
        assert_eq!(index_for(None), UNDATED_INDEX);
        assert_eq!(index_for(Some(i64::MAX)), UNDATED_INDEX);
        assert!(UNDATED_INDEX.starts_with(INDEX_PREFIX));
    }

    #[test]
    fn ids_beyond_elasticsearch_s_limit_are_refused() {
        assert_eq!(id_problem("evt-42-1"), None);
        assert_eq!(id_problem(&"é".repeat(256)), None);
        assert!(id_problem(&"é".repeat(257)).unwrap().contains("514 bytes"));
    }

    #[test]
    fn times_keep_their_precision() {
        assert_eq!(
            rfc3339(NEW_YEAR + 1_500_000).unwrap(),
            "2026-01-01T00:00:01.500Z"
        );
        assert_eq!(
            rfc3339(NEW_YEAR + 7).unwrap(),
            "2026-01-01T00:00:00.000007Z"
        );
        assert_eq!(
            rfc3339(NEW_YEAR - 1000).unwrap(),
            "2025-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn a_json_object_is_flattened_with_its_ids_lifted() {
        let data = r#"{"session_id":"s-3","user_id":"u-9","title_id":"t-2","device":"tv"}"#;
        let doc = document(
            "streaming.sessions",
            2,
            &event(Some(NEW_YEAR + 1_500_000), data),
            KEY,
        );
        assert_eq!(
            doc,
            json!({
                "id": "evt-42-7",
                "type": "streaming.session.started",
                "source": "/polyhost/event-generator",
                "subject": "s-3",
                "time": "2026-01-01T00:00:01.500Z",
                "topic": "streaming.sessions",
                "partition": 2,
                "offset": 12,
                "key": "s-3",
                "datacontenttype": "application/json",
                "user_id": "u-9",
                "title_id": "t-2",
                "data": {"session_id": "s-3", "user_id": "u-9", "title_id": "t-2", "device": "tv"},
                "data_text": data,
            })
        );
    }

    #[test]
    fn only_string_ids_are_lifted() {
        let doc = document("t", 0, &event(None, r#"{"user_id":7,"board":"b"}"#), KEY);
        assert!(doc.get("user_id").is_none());
        assert!(doc.get("title_id").is_none());
        assert!(doc.get("time").is_none());
        assert_eq!(doc["data"], json!({"user_id": 7, "board": "b"}));
    }

    #[test]
    fn a_dead_letter_is_indexed_like_any_event() {
        let data = json!({
            "reason": "boom", "plugin": "user-handler", "original_topic": "streaming.users",
            "original_partition": 1, "original_offset": 5, "attempts": 1,
            "value": "{\"id\":\"evt-1\",\"data\":{\"user_id\":\"u-1\"}}",
        });
        let mut e = event(Some(NEW_YEAR), &data.to_string());
        e.id = "dlq-user-handler-streaming.users-1-5".into();
        e.type_ = "polyhost.dead_letter".into();
        let doc = document("polyhost.dlq.user-handler", 0, &e, KEY);
        assert_eq!(doc["data"], data);
        assert_eq!(doc["type"], "polyhost.dead_letter");
        assert_eq!(doc["topic"], "polyhost.dlq.user-handler");
        // The original record is text: its ids are not lifted.
        assert!(doc.get("user_id").is_none());
    }

    #[test]
    fn other_data_goes_to_the_text_field_only() {
        let doc = document("t", 0, &event(None, "[1,2]"), KEY);
        assert_eq!(doc["data_text"], "[1,2]");
        assert!(doc.get("data").is_none());
        let doc = document("t", 0, &event(None, "not json"), KEY);
        assert_eq!(doc["data_text"], "not json");
        assert!(doc.get("datacontenttype").is_none());
        let doc = document("t", 0, &event(None, ""), KEY);
        assert!(doc.get("data_text").is_none());
    }

    #[test]
    fn absent_attributes_are_left_out() {
        let mut e = event(None, "{}");
        e.subject = None;
        let doc = document("t", 0, &e, None);
        assert!(doc.get("key").is_none());
        assert!(doc.get("subject").is_none());
        assert_eq!(doc["data"], json!({}));
    }
}
