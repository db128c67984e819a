//! Test plugin: each event's `data` is a JSON script of `polyhost:platform/search` calls,
//! each with the result it expects; the plugin runs them in order and answers `ok` when every
//! result matched, else `reject` listing the mismatches.
//!
//! ```json
//! {"steps": [
//!   {"call": "index", "index": "audit-x", "id": "1", "doc": {"a": 1}, "expect": {"ok": null}},
//!   {"call": "search", "index": "*", "body": {}, "expect": {"err": "denied"}}
//! ]}
//! ```
//!
//! A document or body argument is a JSON value, sent as its JSON text; a JSON string is sent
//! as is, so a script can send text that is not JSON. Results come back as JSON: documents
//! and aggregations parsed, a search as `{"total", "hits": [{"index", "id", "score",
//! "source"}], "aggregations"}`, a refused bulk item as `{"refused": reason}`. An error is
//! `{"err": "<kind>"}`. In an expectation the string `"*"` matches any value.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::search;
use polyhost::platform::types::{BatchInfo, Error, ErrorKind, Event, Outcome};
use polyhost_guest::probe::{self, Actual, doc_text, matches, parse};
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
    probe::run_script(data, &json!({"ok": "*"}), run_step, matches)
}

fn outcome<T>(result: Result<T, Error>, render: impl FnOnce(T) -> Value) -> Actual {
    match result {
        Ok(v) => Actual::ok(render(v)),
        Err(e) => Actual::err(kind_name(e.kind), e.transient, e.message),
    }
}

/// Runs one step; `Err` when the step itself is malformed.
fn run_step(step: &Value) -> Result<Actual, String> {
    let s = |key: &str| -> Result<String, String> {
        step[key]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("`{key}` must be a string"))
    };
    let d = |key: &str| doc_text(&step[key]);
    let call = s("call")?;
    Ok(match call.as_str() {
        "index" => outcome(search::index(&s("index")?, &s("id")?, &d("doc")), |()| {
            Value::Null
        }),
        "bulk-index" => {
            let items = step["items"]
                .as_array()
                .ok_or("`items` must be an array")?
                .iter()
                .map(|item| {
                    Ok(search::BulkItem {
                        index: item["index"].as_str().ok_or("item: `index`")?.to_string(),
                        id: item["id"].as_str().ok_or("item: `id`")?.to_string(),
                        document: doc_text(&item["doc"]),
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            // `times`: sent that many times in a row, whatever each answers (a flood); the
            // answer is then how many calls failed with `timeout`.
            if let Some(times) = step["times"].as_u64() {
                let timeouts = (0..times)
                    .filter(|_| {
                        matches!(
                            search::bulk_index(&items),
                            Err(Error {
                                kind: ErrorKind::Timeout,
                                ..
                            })
                        )
                    })
                    .count();
                return Ok(Actual::ok(json!(timeouts)));
            }
            outcome(search::bulk_index(&items), |results| {
                Value::Array(
                    results
                        .into_iter()
                        .map(|r| r.map_or(Value::Null, |why| json!({ "refused": why })))
                        .collect(),
                )
            })
        }
        "get" => outcome(search::get(&s("index")?, &s("id")?), |doc| {
            doc.map_or(Value::Null, |d| parse(&d))
        }),
        "delete" => outcome(search::delete(&s("index")?, &s("id")?), |existed| {
            json!(existed)
        }),
        "search" => outcome(search::search(&s("index")?, &d("body")), |r| {
            json!({
                "total": r.total,
                "hits": r.hits.iter().map(|h| json!({
                    "index": h.index,
                    "id": h.id,
                    "score": h.score,
                    "source": parse(&h.source),
                })).collect::<Vec<_>>(),
                "aggregations": r.aggregations.as_deref().map_or(Value::Null, parse),
            })
        }),
        "count" => outcome(search::count(&s("index")?, &d("body")), |n| json!(n)),
        "refresh" => outcome(search::refresh(&s("index")?), |()| Value::Null),
        "put-index-template" => {
            outcome(search::put_index_template(&s("name")?, &d("body")), |()| {
                Value::Null
            })
        }
        // `times`: asked that many times in a row; the answer is then how many were started.
        "prepare-index" => match step["times"].as_u64() {
            None => outcome(search::prepare_index(&s("index")?), |started| {
                json!(started)
            }),
            Some(times) => {
                let mut started = 0;
                let mut failed = None;
                for _ in 0..times {
                    match search::prepare_index(&s("index")?) {
                        Ok(true) => started += 1,
                        Ok(false) => {}
                        Err(e) => failed = Some(e),
                    }
                }
                outcome(failed.map_or(Ok(started), Err), |n| json!(n))
            }
        },
        other => return Err(format!("unknown call `{other}`")),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_errors_match() {
        assert!(matches(&json!({"ok": "*"}), &json!({"ok": [1, 2]})));
        assert!(matches(
            &json!({"err": "denied"}),
            &json!({"err": "denied", "transient": false})
        ));
        assert!(!matches(
            &json!({"err": "denied"}),
            &json!({"err": "invalid"})
        ));
        assert!(!matches(
            &json!({"ok": {"a": 1}}),
            &json!({"ok": {"a": 1, "b": 2}})
        ));
        assert!(matches(
            &json!({"ok": [{"refused": "*"}]}),
            &json!({"ok": [{"refused": "x"}]})
        ));
    }

    #[test]
    fn arguments_are_json_text_or_raw_strings() {
        assert_eq!(doc_text(&json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(doc_text(&json!("{not json")), "{not json");
        assert_eq!(doc_text(&Value::Null), "{}");
    }
}
