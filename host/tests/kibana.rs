//! The Kibana saved objects in `kibana/`, validated as far as this machine allows without a
//! Kibana: well-formed NDJSON, one data view over `audit-events-*` with the auditor's time
//! field, every reference resolving to an object of the file, every field a visualization
//! aggregates on defined by the auditor's index template (read from
//! `plugins/auditor/src/template.rs`, the source the template is put from), and the
//! compose service that imports them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The saved objects, one JSON object per line.
fn objects() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("kibana/audit.ndjson")).expect("the file");
    assert!(text.ends_with('\n'), "NDJSON ends with a newline");
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {}: not JSON: {e}", i + 1));
            assert!(v.is_object(), "line {}: not an object", i + 1);
            v
        })
        .collect()
}

/// The top-level properties of the auditor's index template, and which are `flattened`.
fn template_fields() -> (BTreeSet<String>, BTreeSet<String>) {
    let source = std::fs::read_to_string(root().join("plugins/auditor/src/template.rs"))
        .expect("the auditor's template");
    let start = source
        .find("\"properties\": {")
        .expect("a properties block");
    let block = &source[start + "\"properties\": {".len()..];
    let block = &block[..block.find("\n                },").expect("its end")];
    let mut fields = BTreeSet::new();
    let mut flattened = BTreeSet::new();
    for line in block.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('"')
            && let Some((name, value)) = rest.split_once("\":")
        {
            fields.insert(name.to_string());
            if value.contains("\"flattened\"") {
                flattened.insert(name.to_string());
            }
        }
    }
    (fields, flattened)
}

fn nested_json(v: &Value, pointer: &str) -> Value {
    let text = v
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{} has no {pointer}", v["id"]));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{} {pointer}: {e}", v["id"]))
}

#[test]
fn the_template_parser_finds_the_auditors_fields() {
    let (fields, flattened) = template_fields();
    for f in ["id", "type", "time", "topic", "user_id", "title_id", "data"] {
        assert!(fields.contains(f), "{f} in {fields:?}");
    }
    assert_eq!(flattened, BTreeSet::from(["data".to_string()]));
}

#[test]
fn the_saved_objects_reference_the_data_view_and_the_templates_fields() {
    let objects = objects();
    let by_id: BTreeMap<(String, String), &Value> = objects
        .iter()
        .map(|o| {
            (
                (
                    o["type"].as_str().unwrap().to_string(),
                    o["id"].as_str().unwrap().to_string(),
                ),
                o,
            )
        })
        .collect();
    assert_eq!(by_id.len(), objects.len(), "ids are unique");

    // One data view over the auditor's indices, timed by its `time` field.
    let (fields, flattened) = template_fields();
    let views: Vec<&Value> = objects
        .iter()
        .filter(|o| o["type"] == "index-pattern")
        .collect();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0]["attributes"]["title"], "audit-events-*");
    let time = views[0]["attributes"]["timeFieldName"].as_str().unwrap();
    assert!(fields.contains(time), "{time}");

    // Every reference resolves within the file.
    for o in &objects {
        for r in o["references"].as_array().expect("references") {
            let key = (
                r["type"].as_str().unwrap().to_string(),
                r["id"].as_str().unwrap().to_string(),
            );
            assert!(by_id.contains_key(&key), "{}: dangling {r}", o["id"]);
        }
    }

    // Every visualization reads the data view and aggregates on the template's fields
    // (a key of a flattened field counts as that field's).
    let known = |field: &str| {
        fields.contains(field)
            || field
                .split_once('.')
                .is_some_and(|(top, _)| flattened.contains(top))
    };
    let mut aggregated = BTreeSet::new();
    let visualizations: Vec<&Value> = objects
        .iter()
        .filter(|o| o["type"] == "visualization")
        .collect();
    assert_eq!(visualizations.len(), 4);
    for v in &visualizations {
        let search = nested_json(v, "/attributes/kibanaSavedObjectMeta/searchSourceJSON");
        let name = search["indexRefName"].as_str().expect("indexRefName");
        let r = v["references"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .expect("the index reference");
        assert_eq!(r["type"], "index-pattern");
        assert_eq!(r["id"], views[0]["id"]);
        let state = nested_json(v, "/attributes/visState");
        assert_eq!(state["title"], v["attributes"]["title"]);
        for agg in state["aggs"].as_array().unwrap() {
            if let Some(field) = agg["params"]["field"].as_str() {
                assert!(known(field), "{}: {field} is not in the template", v["id"]);
                aggregated.insert(field.to_string());
            }
        }
    }
    // What the dashboard promises: per type over time, top users and titles, dead
    // letters by reason.
    for f in ["time", "type", "user_id", "title_id", "data.reason"] {
        assert!(aggregated.contains(f), "{f} in {aggregated:?}");
    }
    let dead = by_id[&(
        "visualization".to_string(),
        "polyhost-audit-dead-letters-by-reason".to_string(),
    )];
    let query = nested_json(dead, "/attributes/kibanaSavedObjectMeta/searchSourceJSON");
    assert_eq!(query["query"]["query"], "type : \"polyhost.dead_letter\"");

    // The dashboard shows every visualization, each panel naming its reference.
    let dashboard = by_id[&("dashboard".to_string(), "polyhost-audit".to_string())];
    let panels = nested_json(dashboard, "/attributes/panelsJSON");
    let panels = panels.as_array().unwrap();
    assert_eq!(panels.len(), visualizations.len());
    let refs = dashboard["references"].as_array().unwrap();
    for p in panels {
        let name = p["panelRefName"].as_str().unwrap();
        assert!(
            refs.iter()
                .any(|r| r["name"] == name && r["type"] == "visualization"),
            "{name}"
        );
    }
}

#[test]
fn compose_imports_the_saved_objects_after_kibana_is_up() {
    let compose = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let setup = &compose[compose.find("  kibana-setup:").expect("the setup service")..];
    let setup = &setup[..setup.find("\nvolumes:").unwrap_or(setup.len())];
    assert!(setup.contains("./kibana:/polyhost-kibana:ro"), "{setup}");
    assert!(setup.contains("/polyhost-kibana/import.sh"), "{setup}");
    assert!(
        setup.contains("kibana:\n        condition: service_healthy"),
        "{setup}"
    );
    let script = std::fs::read_to_string(root().join("kibana/import.sh")).unwrap();
    assert!(script.contains("/api/saved_objects/_import?overwrite=true"));
    assert!(script.contains("kbn-xsrf"));
}
