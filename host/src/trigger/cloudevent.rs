//! CloudEvents 1.0, JSON structured mode: a Kafka record's value parsed into the WIT
//! [`Event`] a handler receives. Anything that is not a valid CloudEvent is refused with a
//! reason, and the trigger dead-letters it before a plugin sees it.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::bindings::polyhost::platform::types::Event;

/// The attributes the trigger reads, borrowed from the record where JSON allows; `data` is
/// kept as its original JSON text, so it is neither built into a tree nor re-serialised.
/// Other (extension) attributes are skipped without being built.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    specversion: Attr<'a>,
    #[serde(borrow, default)]
    id: Attr<'a>,
    #[serde(borrow, default)]
    source: Attr<'a>,
    #[serde(borrow, default, rename = "type")]
    type_: Attr<'a>,
    #[serde(borrow, default)]
    subject: Attr<'a>,
    #[serde(borrow, default)]
    time: Attr<'a>,
    #[serde(borrow, default)]
    datacontenttype: Attr<'a>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data_base64: Attr<'a>,
}

/// One attribute's value, as far as validation needs to tell.
#[derive(Default)]
enum Attr<'a> {
    /// Absent.
    #[default]
    Missing,
    Null,
    Str(Cow<'a, str>),
    /// A number, a boolean, an object or an array.
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Attr<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<Attr<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Attr<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Attr<'a>, E> {
                Ok(Attr::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Attr<'a>, E> {
                Ok(Attr::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Attr<'a>, E> {
                Ok(Attr::Str(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Attr<'a>, E> {
                Ok(Attr::Null)
            }
            fn visit_none<E>(self) -> Result<Attr<'a>, E> {
                Ok(Attr::Null)
            }
            fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Attr<'a>, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Attr<'a>, E> {
                Ok(Attr::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Attr<'a>, E> {
                Ok(Attr::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Attr<'a>, E> {
                Ok(Attr::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Attr<'a>, E> {
                Ok(Attr::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Attr<'a>, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Attr::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Attr<'a>, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Attr::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Parses a structured-mode CloudEvent. `Err` holds the reason for the dead-letter header.
pub fn parse(value: Option<&[u8]>, offset: i64) -> Result<Event, String> {
    let value = value.ok_or("not a CloudEvent: the record has no value")?;
    let not_json = |e: serde_json::Error| format!("not a CloudEvent: the value is not JSON ({e})");
    if value.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        // (A derived struct would also accept a JSON array, field by field.)
        serde_json::from_slice::<IgnoredAny>(value).map_err(not_json)?;
        return Err("not a CloudEvent: the value is not a JSON object".into());
    }
    let env: Envelope<'_> = serde_json::from_slice(value).map_err(|e| {
        if e.is_data() {
            format!("invalid CloudEvent: {e}")
        } else {
            not_json(e)
        }
    })?;
    match &env.specversion {
        Attr::Str(v) if v == "1.0" => {}
        Attr::Str(v) => {
            return Err(format!(
                "not a CloudEvent 1.0: `specversion` is `{v}`, not `1.0`"
            ));
        }
        Attr::Missing | Attr::Null => {
            return Err("not a CloudEvent: `specversion` is missing".into());
        }
        Attr::Other => return Err("not a CloudEvent: `specversion` is not a string".into()),
    }
    let id = required(env.id, "id")?;
    let source = required(env.source, "source")?;
    let type_ = required(env.type_, "type")?;
    let subject = optional(env.subject, "subject")?.map(Cow::into_owned);
    let time = optional(env.time, "time")?
        .map(|t| rfc3339_micros(&t).map_err(|e| format!("invalid CloudEvent `time` `{t}`: {e}")))
        .transpose()?;
    let content_type = optional(env.datacontenttype, "datacontenttype")?;
    let data = data_bytes(env.data, env.data_base64, content_type.as_deref())?;
    Ok(Event {
        id,
        source,
        type_,
        subject,
        time,
        data,
        offset,
    })
}

fn required(attr: Attr<'_>, name: &str) -> Result<String, String> {
    match attr {
        Attr::Str(s) if !s.is_empty() => Ok(s.into_owned()),
        Attr::Str(_) => Err(format!("invalid CloudEvent: `{name}` is empty")),
        Attr::Missing => Err(format!("invalid CloudEvent: `{name}` is missing")),
        Attr::Null | Attr::Other => Err(format!("invalid CloudEvent: `{name}` is not a string")),
    }
}

fn optional<'a>(attr: Attr<'a>, name: &str) -> Result<Option<Cow<'a, str>>, String> {
    match attr {
        Attr::Missing | Attr::Null => Ok(None),
        Attr::Str(s) => Ok(Some(s)),
        Attr::Other => Err(format!("invalid CloudEvent: `{name}` is not a string")),
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

/// `data` as its JSON text, or a non-JSON string's own bytes, or `data_base64` decoded.
fn data_bytes(
    data: Option<&RawValue>,
    data_base64: Attr<'_>,
    content_type: Option<&str>,
) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let data = data.map(RawValue::get).filter(|d| *d != "null");
    match (data, data_base64) {
        (Some(_), Attr::Str(_) | Attr::Other) => {
            Err("invalid CloudEvent: both `data` and `data_base64` are present".into())
        }
        (None, Attr::Str(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map_err(|e| format!("invalid CloudEvent: `data_base64` is not base64 ({e})")),
        (None, Attr::Other) => Err("invalid CloudEvent: `data_base64` is not a string".into()),
        (None, Attr::Missing | Attr::Null) => Ok(Vec::new()),
        (Some(d), _) if d.starts_with('"') && !is_json(content_type) => {
            let s: String = serde_json::from_str(d).expect("a JSON string parses");
            Ok(s.into_bytes())
        }
        (Some(d), _) => Ok(d.as_bytes().to_vec()),
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
    use serde_json::{Value, json};

    fn ev(v: Value) -> Result<Event, String> {
        parse(Some(&serde_json::to_vec(&v).unwrap()), 7)
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
        assert_eq!(e.offset, 7);
    }

    #[test]
    fn extensions_are_skipped_and_escapes_decoded() {
        let raw = br#"{"specversion":"1.0","id":"e\u00e9","source":"/t","type":"x",
            "traceparent":{"a":[1,{"b":null}]},"seq":[1,2],"n":3.5,"data":{"k": [1, "v"]}}"#;
        let e = parse(Some(raw), 0).unwrap();
        assert_eq!(e.id, "e\u{e9}");
        assert_eq!(
            serde_json::from_slice::<Value>(&e.data).unwrap(),
            json!({"k": [1, "v"]})
        );
        let null_data = br#"{"specversion":"1.0","id":"e","source":"/t","type":"x","data":null}"#;
        assert!(parse(Some(null_data), 0).unwrap().data.is_empty());
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
            let err = parse(raw, 0).unwrap_err();
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
