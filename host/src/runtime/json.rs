//! The events of a batch as the JSON text `polyhost:platform/json-handler` receives: one
//! object per event, `data` embedded as it is when it is JSON text, else `data_base64`;
//! and those of several partitions as `json-partitions-handler` receives them.

use base64::Engine as _;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::bindings::polyhost::platform::types::Event;

/// One event as `json-handler` documents it.
#[derive(Serialize)]
struct JsonEvent<'a> {
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    type_: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<i64>,
    offset: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
}

impl<'a> From<&'a Event> for JsonEvent<'a> {
    fn from(e: &'a Event) -> Self {
        // Valid JSON text is embedded as it is (checked, not parsed into values); anything
        // else (no data, bytes that are not JSON or not UTF-8) travels as base64.
        let data = serde_json::from_slice::<&RawValue>(&e.data).ok();
        JsonEvent {
            id: &e.id,
            source: &e.source,
            type_: &e.type_,
            subject: e.subject.as_deref(),
            time: e.time,
            offset: e.offset,
            data,
            data_base64: data
                .is_none()
                .then(|| base64::engine::general_purpose::STANDARD.encode(&e.data)),
        }
    }
}

/// `events` as a JSON array, in their order.
pub(crate) fn events_json(events: &[Event]) -> String {
    let events: Vec<JsonEvent<'_>> = events.iter().map(JsonEvent::from).collect();
    serde_json::to_string(&events).expect("strings and numbers always serialise")
}

/// The events of several partitions as `json-partitions-handler` receives them: a JSON
/// array with one array per partition, in order, each as [`events_json`] makes it.
pub(crate) fn partitions_json<'a>(partitions: impl IntoIterator<Item = &'a [Event]>) -> String {
    let partitions: Vec<Vec<JsonEvent<'_>>> = partitions
        .into_iter()
        .map(|events| events.iter().map(JsonEvent::from).collect())
        .collect();
    serde_json::to_string(&partitions).expect("strings and numbers always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn event(data: &[u8]) -> Event {
        Event {
            id: "e-1".into(),
            source: "/s".into(),
            type_: "t.x".into(),
            subject: None,
            time: None,
            data: data.to_vec(),
            offset: 7,
        }
    }

    #[test]
    fn json_data_is_embedded_and_anything_else_is_base64() {
        let mut full = event(br#"{"user":"u1","n":[1,2.5,"\u00e9"]}"#);
        full.subject = Some("u1".into());
        full.time = Some(1_700_000_000_123_456);
        let text = events_json(&[
            full,
            event(b"not json"),
            event(b""),
            event(&[0xff, 0xfe]),
            event(b" 42 "),
        ]);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!([
                {"id": "e-1", "source": "/s", "type": "t.x", "subject": "u1",
                 "time": 1_700_000_000_123_456_i64, "offset": 7,
                 "data": {"user": "u1", "n": [1, 2.5, "é"]}},
                {"id": "e-1", "source": "/s", "type": "t.x", "offset": 7,
                 "data_base64": "bm90IGpzb24="},
                {"id": "e-1", "source": "/s", "type": "t.x", "offset": 7, "data_base64": ""},
                {"id": "e-1", "source": "/s", "type": "t.x", "offset": 7, "data_base64": "//4="},
                {"id": "e-1", "source": "/s", "type": "t.x", "offset": 7, "data": 42},
            ])
        );
        // The data's own text is kept as it was, not re-serialised.
        assert!(
            text.contains(r#""data":{"user":"u1","n":[1,2.5,"\u00e9"]}"#),
            "{text}"
        );
    }

    #[test]
    fn strings_are_escaped_and_an_empty_batch_is_an_empty_array() {
        let mut e = event(b"null");
        e.id = "a\"b\\c\n\u{2028}".into();
        let v: Value = serde_json::from_str(&events_json(&[e])).unwrap();
        assert_eq!(v[0]["id"], "a\"b\\c\n\u{2028}");
        assert_eq!(v[0]["data"], Value::Null);
        assert!(v[0].get("data_base64").is_none());
        assert_eq!(events_json(&[]), "[]");
    }

    #[test]
    fn partitions_are_an_array_of_their_events_arrays_in_order() {
        let a = [event(b"1"), event(b"x")];
        let b = [event(br#"{"k":"v"}"#)];
        let text = partitions_json([&a[..], &b[..], &[]]);
        let v: Value = serde_json::from_str(&text).unwrap();
        let each = |events: &[Event]| serde_json::from_str::<Value>(&events_json(events)).unwrap();
        assert_eq!(v, json!([each(&a), each(&b), []]));
        assert_eq!(partitions_json([]), "[]");
    }
}
