//! Test plugin: each event's `data` is a JSON script of `polyhost:platform/messaging` calls,
//! each with the result it expects; the plugin runs them in order and answers `ok` when
//! every result matched, else `reject` listing the mismatches.
//!
//! ```json
//! {"steps": [
//!   {"call": "publish", "message": {"topic": "t", "key": "user-1", "value": "{}",
//!                                    "headers": [["trace-id", "abc"]]}},
//!   {"call": "publish-batch", "messages": [{"topic": "other", "value": "x"}],
//!    "expect": {"err": "denied"}}
//! ]}
//! ```
//!
//! Bytes (a key, a value, a header value) are a JSON string (its UTF-8) or an array of
//! numbers; `"value_size": n` instead of `value` sends `n` bytes of `x`. A missing `key` is
//! no key. An error is `{"err": "<kind>", "transient": <bool>}`; a step without `expect`
//! expects `{"ok": null}`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::messaging::{self, Message};
use polyhost::platform::types::{BatchInfo, Error, ErrorKind, Event, Outcome};
use polyhost_guest::probe::{self, Actual};
use serde_json::{Value, json};

struct Probe;

impl Guest for Probe {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        events
            .iter()
            .map(|event| match run_script(&event.data) {
                Ok(()) => Outcome::Ok,
                Err(mismatches) => Outcome::Reject(mismatches),
            })
            .collect()
    }
}

export!(Probe);

/// Runs every step of the script, and lists every step whose result did not match.
fn run_script(data: &[u8]) -> Result<(), String> {
    let run = |step: &Value| {
        Ok(match run_step(step)? {
            Ok(()) => Actual::ok(Value::Null),
            Err(e) => Actual::err(kind_name(e.kind), e.transient, e.message),
        })
    };
    probe::run_script(data, &json!({"ok": null}), run, matches)
}

/// Runs one step; the outer `Err` when the step itself is malformed.
fn run_step(step: &Value) -> Result<Result<(), Error>, String> {
    match step["call"].as_str().ok_or("no `call`")? {
        "publish" => Ok(messaging::publish(&message(&step["message"])?)),
        "publish-batch" => {
            let messages = step["messages"]
                .as_array()
                .ok_or("no `messages` array")?
                .iter()
                .map(message)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(messaging::publish_batch(&messages))
        }
        other => Err(format!("unknown call `{other}`")),
    }
}

fn message(m: &Value) -> Result<Message, String> {
    let value = match m.get("value_size") {
        Some(n) => vec![b'x'; n.as_u64().ok_or("`value_size` is not a count")? as usize],
        None => bytes(&m["value"])?,
    };
    Ok(Message {
        topic: m["topic"]
            .as_str()
            .ok_or("a message has no `topic`")?
            .to_string(),
        key: match &m["key"] {
            Value::Null => None,
            key => Some(bytes(key)?),
        },
        value,
        headers: match &m["headers"] {
            Value::Null => Vec::new(),
            Value::Array(headers) => headers
                .iter()
                .map(|h| match h.as_array().map(Vec::as_slice) {
                    Some([Value::String(name), value]) => Ok((name.clone(), bytes(value)?)),
                    _ => Err(format!("a header is `[name, bytes]`: {h}")),
                })
                .collect::<Result<_, _>>()?,
            other => return Err(format!("`headers` is not an array: {other}")),
        },
    })
}

/// A string's UTF-8, or an array of byte values.
fn bytes(v: &Value) -> Result<Vec<u8>, String> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Array(items) => items
            .iter()
            .map(|b| {
                b.as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .ok_or_else(|| format!("not a byte: {b}"))
            })
            .collect(),
        other => Err(format!(
            "bytes are a string or an array of numbers: {other}"
        )),
    }
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Denied => "denied",
        ErrorKind::Invalid => "invalid",
        ErrorKind::NotFound => "not-found",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Other => "other",
    }
}

/// Whether `actual` is what `expected` describes; an error's `transient` may be left out.
fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let optional = |k: &str| k == "transient" && e.contains_key("err");
            a.keys().all(|k| e.contains_key(k) || optional(k))
                && e.iter()
                    .all(|(k, v)| a.get(k).is_some_and(|a| matches(v, a)))
        }
        _ => expected == actual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_from_the_script_form() {
        let m = message(&json!({
            "topic": "t", "key": [0, 255], "value": "v", "headers": [["h", "x"], ["b", [1]]]
        }))
        .unwrap();
        assert_eq!(m.topic, "t");
        assert_eq!(m.key, Some(vec![0, 255]));
        assert_eq!(m.value, b"v");
        assert_eq!(
            m.headers,
            [("h".to_string(), b"x".to_vec()), ("b".to_string(), vec![1])]
        );
        let big = message(&json!({"topic": "t", "value_size": 3})).unwrap();
        assert_eq!((big.key, big.value), (None, b"xxx".to_vec()));
        assert!(message(&json!({"value": "v"})).is_err());
        assert!(message(&json!({"topic": "t", "value": [256]})).is_err());
    }

    #[test]
    fn transient_may_be_left_out() {
        assert!(matches(
            &json!({"err": "denied"}),
            &json!({"err": "denied", "transient": false})
        ));
        assert!(!matches(
            &json!({"ok": null}),
            &json!({"err": "denied", "transient": false})
        ));
    }
}
