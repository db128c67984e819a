//! Test plugin: a plugin written to break out of its search grant. Each event's `data`
//! names its targets:
//!
//! ```json
//! {"granted": "p-a-x", "other": "p-c", "prefix": "p", "component": "p-comp"}
//! ```
//!
//! `granted` is an index inside the grant holding a document, `other` an index outside it
//! holding a secret, `component` a component template the plugin does not own (with an
//! alias outside the grant). The plugin tries every attack class it knows (scope bypass
//! through nested and encoded query forms, lookups into other indices, scripts in every
//! place, templates reaching outside the pattern, index names the server reads specially)
//! and answers `reject` with its report, a JSON list of
//! `{"attack", "result": "ok" | <error kind>, "message", "leaked"}`: `leaked` says whether
//! the answer held the secret document's text.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

use base64::Engine as _;
use exports::polyhost::platform::handler::Guest;
use polyhost::platform::search;
use polyhost::platform::types::{BatchInfo, Error, ErrorKind, Event, Outcome};
use serde_json::{Value, json};

/// The text of the secret document in `other`; an answer holding it leaked.
const SECRET: &str = "s3cr3t-payload";

struct Hostile;

impl Guest for Hostile {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        events
            .iter()
            .map(|event| match serde_json::from_slice::<Value>(&event.data) {
                Ok(targets) => Outcome::Reject(Value::Array(attack(&targets)).to_string()),
                Err(e) => Outcome::Reject(format!("the targets are not JSON: {e}")),
            })
            .collect()
    }
}

export!(Hostile);

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

fn wrapper(inner: &Value) -> Value {
    json!({"wrapper": {"query": b64(inner)}})
}

/// One attempt's line of the report.
fn report<T: std::fmt::Debug>(attack: &str, result: Result<T, Error>) -> Value {
    match result {
        Ok(v) => {
            let text = format!("{v:?}");
            json!({"attack": attack, "result": "ok", "message": text, "leaked": text.contains(SECRET)})
        }
        Err(e) => json!({
            "attack": attack,
            "result": kind_name(e.kind),
            "message": e.message,
            "leaked": e.message.contains(SECRET),
        }),
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

/// Every attack, in order, with what it got.
fn attack(t: &Value) -> Vec<Value> {
    let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
    let (granted, other, p, component) = (s("granted"), s("other"), s("prefix"), s("component"));
    let mut out = Vec::new();
    let mut search = |name: &str, index: &str, body: Value| {
        out.push(report(name, search::search(index, &body.to_string())));
    };

    // Scope bypass through nested and encoded query forms.
    let lookup = json!({"terms": {"tag": {"index": other, "id": "1", "path": "tags"}}});
    let script = json!({"script": {"script": {"source": "true"}}});
    search(
        "wrapper: terms lookup into another index",
        &granted,
        json!({"query": wrapper(&lookup)}),
    );
    search(
        "wrapper: script",
        &granted,
        json!({"query": wrapper(&script)}),
    );
    search(
        "wrapper in wrapper: terms lookup",
        &granted,
        json!({"query": wrapper(&wrapper(&lookup))}),
    );
    search(
        "wrapper in wrapper: script",
        &granted,
        json!({"query": wrapper(&wrapper(&script))}),
    );
    search(
        "wrapper inside bool.filter: lookup",
        &granted,
        json!({"query": {"bool": {"filter": [{"match_all": {}}, wrapper(&lookup)]}}}),
    );
    search(
        "wrapper in post_filter: lookup",
        &granted,
        json!({"post_filter": wrapper(&lookup)}),
    );
    search(
        "wrapper in an aggregation filter: lookup",
        &granted,
        json!({"size": 0, "aggs": {"a": {"filter": wrapper(&lookup)}}}),
    );
    search(
        "wrapper holding YAML",
        &granted,
        json!({"query": {"wrapper": {"query": base64::engine::general_purpose::STANDARD.encode("match_all: {}")}}}),
    );

    // Lookups naming another index.
    search("terms lookup", &granted, json!({"query": lookup}));
    search(
        "terms lookup inside nested",
        &granted,
        json!({"query": {"nested": {"path": "n", "query": lookup}}}),
    );
    search(
        "terms lookup in a filters aggregation",
        &granted,
        json!({"size": 0, "aggs": {"f": {"filters": {"filters": {"x": lookup}}}}}),
    );
    search(
        "terms lookup in a knn filter",
        &granted,
        json!({"knn": {"field": "v", "query_vector": [1.0], "k": 1, "num_candidates": 1, "filter": lookup}}),
    );
    search(
        "terms lookup in a rescore query",
        &granted,
        json!({"rescore": {"query": {"rescore_query": lookup}}}),
    );
    search(
        "terms lookup in a highlight query",
        &granted,
        json!({"highlight": {"highlight_query": lookup, "fields": {"title": {}}}}),
    );
    search(
        "terms lookup in a nested sort filter",
        &granted,
        json!({"sort": [{"n.x": {"nested": {"path": "n", "filter": lookup}}}]}),
    );
    search(
        "percolate a document of another index",
        &granted,
        json!({"query": {"percolate": {"field": "q", "index": other, "id": "1"}}}),
    );
    search(
        "more_like_this a document of another index",
        &granted,
        json!({"query": {"more_like_this": {"fields": ["secret"], "like": [{"_index": other, "_id": "1"}], "min_term_freq": 1, "min_doc_freq": 1}}}),
    );
    search(
        "geo_shape with an indexed shape of another index",
        &granted,
        json!({"query": {"geo_shape": {"loc": {"indexed_shape": {"index": other, "id": "1", "path": "loc"}}}}}),
    );
    search(
        "geo_shape with an indexed shape of `shapes`",
        &granted,
        json!({"query": {"geo_shape": {"loc": {"indexed_shape": {"id": "1"}}}}}),
    );
    search(
        "pinned documents of another index",
        &granted,
        json!({"query": {"pinned": {"docs": [{"_index": other, "_id": "1"}], "organic": {"match_all": {}}}}}),
    );
    search(
        "indices_boost naming another index",
        &granted,
        json!({"indices_boost": [{other.as_str(): 2.0}]}),
    );

    // Scripts in every place.
    search("script query", &granted, json!({"query": script}));
    search(
        "script_score query",
        &granted,
        json!({"query": {"script_score": {"query": {"match_all": {}}, "script": {"source": "1"}}}}),
    );
    search(
        "function_score with a script function",
        &granted,
        json!({"query": {"function_score": {"functions": [{"script_score": {"script": {"source": "1"}}}]}}}),
    );
    search(
        "sort by _script",
        &granted,
        json!({"sort": {"_script": {"type": "number", "script": {"source": "1"}}}}),
    );
    search(
        "aggregation with a script",
        &granted,
        json!({"size": 0, "aggs": {"a": {"terms": {"script": {"source": "1"}}}}}),
    );
    search(
        "bucket_script",
        &granted,
        json!({"size": 0, "aggs": {"a": {"terms": {"field": "tag"}, "aggs": {"b": {"bucket_script": {"buckets_path": {"c": "_count"}, "script": "params.c"}}}}}}),
    );
    search(
        "bucket_selector",
        &granted,
        json!({"size": 0, "aggs": {"a": {"terms": {"field": "tag"}, "aggs": {"b": {"bucket_selector": {"buckets_path": {"c": "_count"}, "script": "true"}}}}}}),
    );
    search(
        "scripted_metric",
        &granted,
        json!({"size": 0, "aggs": {"a": {"scripted_metric": {"map_script": "1", "combine_script": "1", "reduce_script": "1"}}}}),
    );
    search(
        "runtime_mappings",
        &granted,
        json!({"runtime_mappings": {"r": {"type": "keyword", "script": {"source": "emit('x')"}}}}),
    );
    search(
        "runtime_mappings lookup field into another index",
        &granted,
        json!({"runtime_mappings": {"r": {"type": "lookup", "target_index": other, "input_field": "tag", "target_field": "tags", "fetch_fields": ["secret"]}}, "fields": ["r"]}),
    );
    search(
        "script_fields",
        &granted,
        json!({"script_fields": {"f": {"script": {"source": "1"}}}}),
    );
    search(
        "script_fields in collapse inner_hits",
        &granted,
        json!({"collapse": {"field": "tag", "inner_hits": {"name": "i", "script_fields": {"f": {"script": "1"}}}}}),
    );
    search(
        "phrase suggester collate (a template)",
        &granted,
        json!({"suggest": {"s": {"text": "x", "phrase": {"field": "title", "collate": {"query": {"source": {"match_all": {}}}}}}}}),
    );
    search(
        "unknown top-level key (pit)",
        &granted,
        json!({"pit": {"id": "x"}}),
    );
    search(
        "unknown query kind (rule)",
        &granted,
        json!({"query": {"rule": {"ruleset_ids": ["r"], "match_criteria": {}, "organic": {"match_all": {}}}}}),
    );
    out.push(report(
        "count: wrapper with a terms lookup",
        search::count(&granted, &json!({"query": wrapper(&lookup)}).to_string()),
    ));

    // Index names the server reads specially.
    let names = [
        "_all".to_string(),
        "*".to_string(),
        format!("{p}*"),
        format!("{granted},{other}"),
        format!("{granted},_all"),
        format!("<{p}-c-{{now/d}}>"),
        format!("remote:{granted}"),
        format!("{p}-a-%2e%2e"),
        format!("{p}-a-x%2C{other}"),
        "..".to_string(),
        format!("{granted}/../{other}"),
        format!("{granted}?q=secret"),
        format!("-{granted}"),
        other.clone(),
    ];
    for name in &names {
        out.push(report(
            &format!("search index `{name}`"),
            search::search(name, "{}"),
        ));
        out.push(report(
            &format!("count index `{name}`"),
            search::count(name, "{}"),
        ));
    }
    for name in [
        &other,
        &format!("<{p}-a-{{now/d}}>"),
        &format!("{p}-a-%2e%2e"),
        &"..".to_string(),
        &format!("{granted}/_doc/1?refresh=true"),
    ] {
        out.push(report(&format!("get `{name}`/1"), search::get(name, "1")));
        out.push(report(
            &format!("index into `{name}`"),
            search::index(name, "1", r#"{"x":1}"#),
        ));
        out.push(report(
            &format!("prepare-index `{name}`"),
            search::prepare_index(name),
        ));
    }
    for name in [
        "*".to_string(),
        format!("{p}-a-*"),
        format!("{granted},{other}"),
    ] {
        out.push(report(
            &format!("prepare-index `{name}`"),
            search::prepare_index(&name),
        ));
    }
    out.push(report("refresh `_all`", search::refresh("_all")));

    // Writes that try to land elsewhere.
    let item = |index: &str, id: &str, document: &str| search::BulkItem {
        index: index.to_string(),
        id: id.to_string(),
        document: document.to_string(),
    };
    out.push(report(
        "bulk-index an item into another index",
        search::bulk_index(&[
            item(&granted, "2", "{}"),
            item(&other, "1", r#"{"secret":"gone"}"#),
        ]),
    ));
    let injected = format!(
        "{{\"x\":1}}\n{{\"index\":{{\"_index\":\"{other}\",\"_id\":\"1\"}}}}\n{{\"secret\":\"gone\"}}"
    );
    out.push(report(
        "bulk-index a document carrying a second action line",
        search::bulk_index(&[item(&granted, "3", &injected)]),
    ));
    out.push(report(
        "index a document carrying a second action line",
        search::index(&granted, "3", &injected),
    ));
    out.push(report(
        "delete id `..` (the index itself)",
        search::delete(&granted, ".."),
    ));
    let climbing = format!("../{other}/_doc/1");
    out.push(report(
        "get an id climbing into another index: it stays one id (allowed)",
        search::get(&granted, &climbing),
    ));
    out.push(report(
        "index an id climbing into another index: it stays one id (allowed)",
        search::index(&granted, &climbing, r#"{"secret":"gone"}"#),
    ));
    out.push(report("delete the secret", search::delete(&other, "1")));

    // Templates reaching outside the pattern.
    let tpl = format!("{p}-evil");
    let pattern = format!("{p}-a-tpl-*");
    let mut put = |name: &str, body: Value| {
        out.push(report(
            name,
            search::put_index_template(&tpl, &body.to_string()),
        ));
    };
    put(
        "template composed_of a foreign component",
        json!({"index_patterns": [pattern], "composed_of": [component]}),
    );
    put(
        "template with a data_stream",
        json!({"index_patterns": [pattern], "data_stream": {}}),
    );
    put(
        "template with an alias outside the grant",
        json!({"index_patterns": [pattern], "template": {"aliases": {(format!("{p}-c-alias")): {}}}}),
    );
    put(
        "template with an alias inside the grant",
        json!({"index_patterns": [pattern], "template": {"aliases": {(format!("{p}-a-alias")): {}}}}),
    );
    put(
        "template with a default_pipeline",
        json!({"index_patterns": [pattern], "template": {"settings": {"index.default_pipeline": "p"}}}),
    );
    put(
        "template with a final_pipeline",
        json!({"index_patterns": [pattern], "template": {"settings": {"index": {"final_pipeline": "p"}}}}),
    );
    put(
        "template with a lifecycle",
        json!({"index_patterns": [pattern], "template": {"lifecycle": {"data_retention": "1d"}}}),
    );
    put(
        "template with a lifecycle policy setting",
        json!({"index_patterns": [pattern], "template": {"settings": {"index.lifecycle.name": "p"}}}),
    );
    put(
        "template with an allocation setting",
        json!({"index_patterns": [pattern], "template": {"settings": {"index.routing.allocation.require._name": "x"}}}),
    );
    put(
        "template with a runtime field",
        json!({"index_patterns": [pattern], "template": {"mappings": {"runtime": {"r": {"type": "long", "script": "emit(1)"}}}}}),
    );
    put(
        "template with an unknown key",
        json!({"index_patterns": [pattern], "allow_auto_create": true}),
    );
    put(
        "template for a pattern outside the grant",
        json!({"index_patterns": [format!("{p}-c-*")]}),
    );
    put("template for `*`", json!({"index_patterns": ["*"]}));
    put(
        "template for a comma list",
        json!({"index_patterns": [format!("{pattern},{p}-c")]}),
    );
    // A document where the templates would have applied: nothing must follow from it.
    out.push(report(
        "index into the templates' pattern (allowed)",
        search::index(&format!("{p}-a-tpl-1"), "1", r#"{"x":1}"#),
    ));
    out
}
