//! Test plugin: each event's `data` is a JSON script of `polyhost:platform/documents` calls,
//! each with the result it expects; the plugin runs them in order and answers `ok` when
//! every result matched, else `reject` listing the mismatches.
//!
//! ```json
//! {"steps": [
//!   {"call": "insert", "collection": "videos", "doc": {"_id": "v1"}, "expect": {"ok": "v1"}},
//!   {"call": "count", "collection": "other", "filter": {}, "expect": {"err": "denied"}}
//! ]}
//! ```
//!
//! A document argument is a JSON value, sent as its JSON text; a JSON string is sent as is,
//! so a script can send text that is not JSON. Results come back as JSON: documents parsed,
//! records as objects with the WIT field names (`upserted_id`, `content_type`), blob bytes
//! as `data_hex`. An error is `{"err": "<kind>"}`. In an expectation the string `"*"`
//! matches any value.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::documents as docs;
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
    let flag = |key: &str| step[key].as_bool().unwrap_or(false);
    let call = s("call")?;
    Ok(match call.as_str() {
        "insert" => outcome(docs::insert(&s("collection")?, &d("doc")), |id| parse(&id)),
        "upsert" => outcome(
            docs::upsert(&s("collection")?, &d("filter"), &d("replacement")),
            update_json,
        ),
        "update" => outcome(
            docs::update(
                &s("collection")?,
                &d("filter"),
                &d("update"),
                flag("upsert"),
                flag("many"),
            ),
            update_json,
        ),
        "delete" => outcome(
            docs::delete(&s("collection")?, &d("filter"), flag("many")),
            |n| json!(n),
        ),
        "find" => {
            let o = &step["options"];
            let options = docs::FindOptions {
                sort: o.get("sort").map(doc_text),
                projection: o.get("projection").map(doc_text),
                skip: o["skip"].as_u64(),
                limit: o["limit"].as_u64(),
            };
            outcome(
                docs::find(&s("collection")?, &d("filter"), &options),
                |found| Value::Array(found.iter().map(|doc| parse(doc)).collect()),
            )
        }
        "find-one" => outcome(docs::find_one(&s("collection")?, &d("filter")), |found| {
            found.map_or(Value::Null, |doc| parse(&doc))
        }),
        "count" => outcome(docs::count(&s("collection")?, &d("filter")), |n| json!(n)),
        "bulk-write" => {
            let ops = step["ops"]
                .as_array()
                .ok_or("`ops` must be an array")?
                .iter()
                .map(write_op)
                .collect::<Result<Vec<_>, _>>()?;
            outcome(
                docs::bulk_write(&s("collection")?, &ops, flag("ordered")),
                |r| {
                    json!({
                        "inserted": r.inserted, "matched": r.matched, "modified": r.modified,
                        "deleted": r.deleted, "upserted": r.upserted,
                    })
                },
            )
        }
        "put-blob" => {
            let data = from_hex(&s("data_hex")?)?;
            outcome(
                docs::put_blob(
                    &s("bucket")?,
                    &s("id")?,
                    &s("content_type")?,
                    &data,
                    &d("metadata"),
                ),
                info_json,
            )
        }
        "put-blobs" => {
            let blobs = step["blobs"]
                .as_array()
                .ok_or("`blobs` must be an array")?
                .iter()
                .map(|b| {
                    let text = |key: &str| b[key].as_str().map(str::to_string);
                    Ok(docs::NewBlob {
                        id: text("id").ok_or("a blob's `id` must be a string")?,
                        content_type: text("content_type").unwrap_or_default(),
                        data: from_hex(&text("data_hex").unwrap_or_default())?,
                        metadata: doc_text(&b["metadata"]),
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            outcome(docs::put_blobs(&s("bucket")?, &blobs), |infos| {
                Value::Array(infos.into_iter().map(info_json).collect())
            })
        }
        "get-blob" => outcome(docs::get_blob(&s("bucket")?, &s("id")?), |blob| {
            blob.map_or(
                Value::Null,
                |b| json!({ "info": info_json(b.info), "data_hex": to_hex(&b.data) }),
            )
        }),
        "stat-blob" => outcome(docs::stat_blob(&s("bucket")?, &s("id")?), |info| {
            info.map_or(Value::Null, info_json)
        }),
        "delete-blob" => outcome(docs::delete_blob(&s("bucket")?, &s("id")?), |existed| {
            json!(existed)
        }),
        other => return Err(format!("unknown call `{other}`")),
    })
}

fn write_op(op: &Value) -> Result<docs::WriteOp, String> {
    let flag = |v: &Value, key: &str| v[key].as_bool().unwrap_or(false);
    if let Some(doc) = op.get("insert") {
        Ok(docs::WriteOp::Insert(doc_text(doc)))
    } else if let Some(r) = op.get("replace") {
        Ok(docs::WriteOp::Replace(docs::ReplaceOp {
            filter: doc_text(&r["filter"]),
            replacement: doc_text(&r["replacement"]),
            upsert: flag(r, "upsert"),
        }))
    } else if let Some(u) = op.get("update") {
        Ok(docs::WriteOp::Update(docs::UpdateOp {
            filter: doc_text(&u["filter"]),
            update: doc_text(&u["update"]),
            upsert: flag(u, "upsert"),
            many: flag(u, "many"),
        }))
    } else if let Some(d) = op.get("delete") {
        Ok(docs::WriteOp::Delete(docs::DeleteOp {
            filter: doc_text(&d["filter"]),
            many: flag(d, "many"),
        }))
    } else {
        Err(format!("unknown write op {op}"))
    }
}

fn update_json(r: docs::UpdateResult) -> Value {
    json!({
        "matched": r.matched,
        "modified": r.modified,
        "upserted_id": r.upserted_id.as_deref().map_or(Value::Null, parse),
    })
}

fn info_json(info: docs::BlobInfo) -> Value {
    json!({
        "id": info.id,
        "content_type": info.content_type,
        "length": info.length,
        "sha256": info.sha256,
        "metadata": parse(&info.metadata),
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

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err("`data_hex` has an odd length".to_string());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| format!("`data_hex`: {e}")))
        .collect()
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
            &json!({"err": "invalid", "transient": false})
        ));
        assert!(!matches(
            &json!({"ok": {"a": 1}}),
            &json!({"ok": {"a": 1, "b": 2}})
        ));
        assert!(matches(
            &json!({"ok": [{"_id": "*", "n": 1}]}),
            &json!({"ok": [{"_id": {"$oid": "x"}, "n": 1.0}]})
        ));
        assert!(!matches(&json!({"ok": [1]}), &json!({"ok": [1, 2]})));
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&bytes)).unwrap(), bytes);
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
    }

    #[test]
    fn document_arguments_are_json_text_or_raw_strings() {
        assert_eq!(doc_text(&json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(doc_text(&json!("{not json")), "{not json");
        assert_eq!(doc_text(&Value::Null), "{}");
    }
}
