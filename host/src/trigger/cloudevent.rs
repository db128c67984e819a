//! CloudEvents 1.0, JSON structured mode: a Kafka record's value parsed into the WIT
//! [`Event`] a handler receives. Anything that is not a valid CloudEvent is refused with a
//! reason, and the trigger dead-letters it before a plugin sees it.

use serde_json::{Map, Value};

use crate::bindings::polyhost::platform::types::Event;

/// Where a record came from, besides its value: copied into the [`Event`].
#[derive(Debug, Clone, Default)]
pub struct RecordMeta {
    /// The record's offset in its partition.
    pub offset: i64,
    /// The record key, if any.
    pub key: Option<Vec<u8>>,
    /// The record headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Parses a structured-mode CloudEvent. `Err` holds the reason for the dead-letter header.
pub fn parse(value: Option<&[u8]>, meta: RecordMeta) -> Result<Event, String> {
    let value = value.ok_or("not a CloudEvent: the record has no value")?;
    let json: Value = serde_json::from_slice(value)
        .map_err(|e| format!("not a CloudEvent: the value is not JSON ({e})"))?;
    let Value::Object(obj) = json else {
        return Err("not a CloudEvent: the value is not a JSON object".into());
    };
    match obj.get("specversion") {
        Some(Value::String(v)) if v == "1.0" => {}
        Some(Value::String(v)) => {
            return Err(format!(
                "not a CloudEvent 1.0: `specversion` is `{v}`, not `1.0`"
            ));
        }
        Some(_) => return Err("not a CloudEvent: `specversion` is not a string".into()),
        None => return Err("not a CloudEvent: `specversion` is missing".into()),
    }
    let id = required(&obj, "id")?;
    let source = required(&obj, "source")?;
    let type_ = required(&obj, "type")?;
    let subject = optional(&obj, "subject")?;
    let time = optional(&obj, "time")?
        .map(|t| rfc3339_micros(&t).map_err(|e| format!("invalid CloudEvent `time` `{t}`: {e}")))
        .transpose()?;
    let content_type = optional(&obj, "datacontenttype")?;
    let data = data_bytes(&obj, content_type.as_deref())?;
    Ok(Event {
        id,
        source,
        type_,
        subject,
        time,
        data,
        offset: meta.offset,
        key: meta.key,
        headers: meta.headers,
    })
}

fn required(obj: &Map<String, Value>, name: &str) -> Result<String, String> {
    match obj.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("invalid CloudEvent: `{name}` is empty")),
        Some(_) => Err(format!("invalid CloudEvent: `{name}` is not a string")),
        None => Err(format!("invalid CloudEvent: `{name}` is missing")),
    }
}

fn optional(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("invalid CloudEvent: `{name}` is not a string")),
    }
}

/// Whether a `datacontenttype` names JSON (absent means JSON in structured mode).
fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return true };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// `data` serialised as JSON, or a non-JSON string's own bytes, or `data_base64` decoded.
fn data_bytes(obj: &Map<String, Value>, content_type: Option<&str>) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    match (obj.get("data"), obj.get("data_base64")) {
        (Some(d), Some(b)) if !d.is_null() && !b.is_null() => {
            Err("invalid CloudEvent: both `data` and `data_base64` are present".into())
        }
        (_, Some(Value::String(b))) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| format!("invalid CloudEvent: `data_base64` is not base64 ({e})")),
        (_, Some(v)) if !v.is_null() => {
            Err("invalid CloudEvent: `data_base64` is not a string".into())
        }
        (None | Some(Value::Null), _) => Ok(Vec::new()),
        (Some(Value::String(s)), _) if !is_json(content_type) => Ok(s.as_bytes().to_vec()),
        (Some(d), _) => Ok(serde_json::to_vec(d).expect("a JSON value serialises")),
    }
}

/// An RFC 3339 timestamp as microseconds since the Unix epoch, UTC.
pub fn rfc3339_micros(t: &str) -> Result<i64, String> {
    let dt = chrono::DateTime::parse_from_rfc3339(t).map_err(|e| e.to_string())?;
    Ok(dt.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(v: Value) -> Result<Event, String> {
        parse(
            Some(&serde_json::to_vec(&v).unwrap()),
            RecordMeta {
                offset: 7,
                key: Some(b"k".to_vec()),
                headers: vec![("h".into(), b"v".to_vec())],
            },
        )
    }

    fn base() -> Value {
        json!({"specversion": "1.0", "id": "e1", "source": "/t", "type": "streaming.user.registered"})
    }

    #[test]
    fn a_full_event_parses() {
        let mut v = base();
        v["subject"] = json!("u1");
        v["time"] = json!("2026-01-02T03:04:05.123456Z");
        v["data"] = json!({"name": "ana"});
        let e = ev(v).unwrap();
        assert_eq!((e.id.as_str(), e.source.as_str()), ("e1", "/t"));
        assert_eq!(e.type_, "streaming.user.registered");
        assert_eq!(e.subject.as_deref(), Some("u1"));
        assert_eq!(e.time, Some(1_767_323_045_123_456));
        assert_eq!(
            serde_json::from_slice::<Value>(&e.data).unwrap(),
            json!({"name": "ana"})
        );
        assert_eq!((e.offset, e.key.as_deref()), (7, Some(&b"k"[..])));
        assert_eq!(e.headers, vec![("h".to_string(), b"v".to_vec())]);
    }

    #[test]
    fn minimal_event_has_empty_data() {
        let e = ev(base()).unwrap();
        assert!(e.data.is_empty() && e.subject.is_none() && e.time.is_none());
    }

    #[test]
    fn data_base64_is_decoded_and_text_data_kept_as_is() {
        let mut v = base();
        v["data_base64"] = json!("AAEC/w==");
        assert_eq!(ev(v).unwrap().data, vec![0, 1, 2, 255]);
        let mut v = base();
        v["datacontenttype"] = json!("text/plain");
        v["data"] = json!("hello");
        assert_eq!(ev(v).unwrap().data, b"hello");
        let mut v = base();
        v["datacontenttype"] = json!("application/cloudevents+json; charset=utf-8");
        v["data"] = json!("hello");
        assert_eq!(ev(v).unwrap().data, b"\"hello\"");
    }

    #[test]
    fn time_offsets_are_normalised_to_utc() {
        assert_eq!(rfc3339_micros("1970-01-01T01:00:00+01:00"), Ok(0));
        assert!(rfc3339_micros("yesterday").is_err());
    }

    #[test]
    fn invalid_events_give_a_reason() {
        let cases: Vec<(Option<&[u8]>, &str)> = vec![
            (None, "no value"),
            (Some(b"{not json"), "not JSON"),
            (Some(b"[1]"), "not a JSON object"),
        ];
        for (raw, why) in cases {
            let err = parse(raw, RecordMeta::default()).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let mut no_id = base();
        no_id.as_object_mut().unwrap().remove("id");
        assert!(ev(no_id).unwrap_err().contains("`id` is missing"));
        let mut bad_version = base();
        bad_version["specversion"] = json!("0.3");
        assert!(ev(bad_version).unwrap_err().contains("0.3"));
        let mut no_version = base();
        no_version.as_object_mut().unwrap().remove("specversion");
        assert!(ev(no_version).unwrap_err().contains("specversion"));
        let mut empty_type = base();
        empty_type["type"] = json!("");
        assert!(ev(empty_type).unwrap_err().contains("`type` is empty"));
        let mut bad_time = base();
        bad_time["time"] = json!("noon");
        assert!(ev(bad_time).unwrap_err().contains("time"));
        let mut both = base();
        both["data"] = json!(1);
        both["data_base64"] = json!("AA==");
        assert!(ev(both).unwrap_err().contains("both"));
        let mut bad_b64 = base();
        bad_b64["data_base64"] = json!("!!");
        assert!(ev(bad_b64).unwrap_err().contains("base64"));
        let mut num_subject = base();
        num_subject["subject"] = json!(5);
        assert!(ev(num_subject).unwrap_err().contains("subject"));
    }
}
