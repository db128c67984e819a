//! The auditor's Elasticsearch indices, checked against the events: one document per
//! distinct event id, in the daily index of the event's time, with the event's attributes;
//! the indices made from the auditor's template (strict mapping, `data` flattened); and
//! "every event of a user" answered exactly by one term query on the lifted `user_id`.
//!
//! Expectations are computed here from the events alone. Documents of dead letters (topic
//! `polyhost.dlq.*`) are not platform events: they are checked for their shape only, and
//! do not count against the platform's ids.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use chrono::{DateTime, Utc};
use elasticsearch::http::Url;
use elasticsearch::http::response::Response;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::{
    IndicesDeleteIndexTemplateParts, IndicesDeleteParts, IndicesGetMappingParts,
    IndicesRefreshParts,
};
use elasticsearch::{CountParts, Elasticsearch, SearchParts};
use serde_json::{Value, json};

use super::events::{Ev, Urls};

/// Every index the auditor writes.
const PATTERN: &str = "audit-events-*";
/// The auditor's index template.
const TEMPLATE: &str = "audit-events";
/// The index of events without a time.
const UNDATED: &str = "audit-events-undated";
/// The topics of dead letters, which the auditor indexes too.
const DLQ_PREFIX: &str = "polyhost.dlq.";
/// The type a dead letter is indexed as.
const DEAD_LETTER: &str = "polyhost.dead_letter";
/// Documents per search page.
const PAGE: usize = 5000;
/// How many mismatches an error lists.
const SHOWN: usize = 20;

fn client(urls: &Urls) -> anyhow::Result<Elasticsearch> {
    let url = Url::parse(&urls.elasticsearch_url).context("Elasticsearch url")?;
    let transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .timeout(Duration::from_secs(60))
        .disable_proxy()
        .build()
        .context("Elasticsearch transport")?;
    Ok(Elasticsearch::new(transport))
}

/// The status and JSON body of a request.
async fn call(
    what: &str,
    sent: Result<Response, elasticsearch::Error>,
) -> anyhow::Result<(u16, Value)> {
    let response = sent.with_context(|| format!("{what}: no answer from Elasticsearch"))?;
    let status = response.status_code().as_u16();
    let text = response
        .text()
        .await
        .with_context(|| format!("{what}: reading the answer"))?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// The JSON body of a request that must succeed.
async fn ok(what: &str, sent: Result<Response, elasticsearch::Error>) -> anyhow::Result<Value> {
    let (status, body) = call(what, sent).await?;
    ensure!(
        (200..300).contains(&status),
        "{what}: HTTP {status}: {body}"
    );
    Ok(body)
}

/// The names of the audit indices (resolved here: Elasticsearch may refuse to delete by
/// wildcard).
async fn audit_indices(es: &Elasticsearch) -> anyhow::Result<Vec<String>> {
    let mapping = ok(
        "get the audit mappings",
        es.indices()
            .get_mapping(IndicesGetMappingParts::Index(&[PATTERN]))
            .send()
            .await,
    )
    .await?;
    Ok(mapping
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default())
}

/// Deletes every audit index and the auditor's template (the auditor puts it again before
/// its first write, which the mapping check below then proves).
pub async fn reset(urls: &Urls) -> anyhow::Result<()> {
    let es = client(urls)?;
    let names = audit_indices(&es).await?;
    if !names.is_empty() {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        ok(
            "delete the audit indices",
            es.indices()
                .delete(IndicesDeleteParts::Index(&names))
                .send()
                .await,
        )
        .await?;
    }
    let (status, body) = call(
        "delete the audit template",
        es.indices()
            .delete_index_template(IndicesDeleteIndexTemplateParts::Name(TEMPLATE))
            .send()
            .await,
    )
    .await?;
    ensure!(
        (200..300).contains(&status) || status == 404,
        "delete the audit template: HTTP {status}: {body}"
    );
    Ok(())
}

/// The index an event belongs in: the UTC day of its time.
fn index_of(ev: &Ev) -> anyhow::Result<String> {
    match &ev.time {
        None => Ok(UNDATED.to_string()),
        Some(t) => Ok(format!(
            "audit-events-{}",
            parse_time(t)
                .with_context(|| format!("event {}", ev.id))?
                .format("%Y.%m.%d")
        )),
    }
}

fn parse_time(t: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(t)
        .with_context(|| format!("`{t}` is not RFC 3339"))?
        .with_timezone(&Utc))
}

/// One stored document, as much of it as is checked.
#[derive(Debug)]
struct Doc {
    index: String,
    source: Value,
}

impl Doc {
    fn field(&self, name: &str) -> Option<&str> {
        self.source.get(name).and_then(Value::as_str)
    }
}

/// Every audit document, by id (an id stored in two indices is reported).
async fn all_documents(
    es: &Elasticsearch,
    bad: &mut Vec<String>,
) -> anyhow::Result<HashMap<String, Doc>> {
    let mut docs = HashMap::new();
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({
            "size": PAGE,
            "query": { "match_all": {} },
            "sort": [{ "id": "asc" }, { "_doc": "asc" }],
            "_source": ["id", "type", "subject", "key", "topic", "time", "source", "user_id", "title_id", "data.original_topic"],
        });
        if let Some(after) = &after {
            body["search_after"] = after.clone();
        }
        let page = ok(
            "search the audit indices",
            es.search(SearchParts::Index(&[PATTERN]))
                .body(body)
                .send()
                .await,
        )
        .await?;
        let hits = page["hits"]["hits"]
            .as_array()
            .context("a search answer without hits")?;
        for hit in hits {
            let id = hit["_id"]
                .as_str()
                .context("a hit without `_id`")?
                .to_string();
            let doc = Doc {
                index: hit["_index"].as_str().unwrap_or_default().to_string(),
                source: hit["_source"].clone(),
            };
            if let Some(other) = docs.get(&id) {
                let other: &Doc = other;
                bad.push(format!(
                    "`{id}` is stored twice: in {} and in {}",
                    other.index, doc.index
                ));
                continue;
            }
            docs.insert(id, doc);
        }
        if hits.len() < PAGE {
            return Ok(docs);
        }
        after = hits.last().map(|h| h["sort"].clone());
    }
}

/// The ids a `term` query on `field` = `value` finds, every page of them.
async fn ids_where(
    es: &Elasticsearch,
    field: &str,
    value: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({
            "size": PAGE,
            "query": { "term": { field: value } },
            "sort": [{ "id": "asc" }, { "_doc": "asc" }],
            "_source": false,
        });
        if let Some(after) = &after {
            body["search_after"] = after.clone();
        }
        let page = ok(
            &format!("search `{field}` = `{value}`"),
            es.search(SearchParts::Index(&[PATTERN]))
                .body(body)
                .send()
                .await,
        )
        .await?;
        let hits = page["hits"]["hits"]
            .as_array()
            .context("a search answer without hits")?;
        ids.extend(
            hits.iter()
                .filter_map(|h| h["_id"].as_str().map(str::to_string)),
        );
        if hits.len() < PAGE {
            return Ok(ids);
        }
        after = hits.last().map(|h| h["sort"].clone());
    }
}

/// Lists `bad` (the first [`SHOWN`]) as the error, if any.
fn finish(what: &str, bad: &[String]) -> anyhow::Result<()> {
    if bad.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = bad.iter().take(SHOWN).map(String::as_str).collect();
    bail!(
        "{what}: {} mismatches, the first:\n  {}",
        bad.len(),
        shown.join("\n  ")
    )
}

/// The events' expectations on one document: any of the events with its id (a republished
/// event may differ in partition and offset, not in what is checked).
fn matches(ev: &Ev, doc: &Doc) -> Result<(), String> {
    let index = index_of(ev).map_err(|e| format!("{e:#}"))?;
    if doc.index != index {
        return Err(format!("in {} rather than {index}", doc.index));
    }
    for (field, want) in [
        ("type", Some(ev.ty.as_str())),
        ("subject", ev.subject.as_deref()),
        // The Kafka key, which the auditor reads through `polyhost:platform/records`.
        ("key", ev.key.as_deref()),
        ("topic", Some(ev.topic.as_str())),
        ("source", Some(ev.source.as_str())),
    ] {
        if doc.field(field) != want {
            return Err(format!("{field} {:?}, expected {want:?}", doc.field(field)));
        }
    }
    let got_time = doc
        .field("time")
        .map(parse_time)
        .transpose()
        .map_err(|e| format!("{e:#}"))?;
    let want_time = ev
        .time
        .as_deref()
        .map(parse_time)
        .transpose()
        .map_err(|e| format!("{e:#}"))?;
    if got_time != want_time {
        return Err(format!("time {got_time:?}, expected {want_time:?}"));
    }
    for lifted in ["user_id", "title_id"] {
        let want = ev.data.get(lifted).and_then(Value::as_str);
        if doc.field(lifted) != want {
            return Err(format!(
                "{lifted} {:?}, expected {want:?}",
                doc.field(lifted)
            ));
        }
    }
    Ok(())
}

/// Checks the audit indices against `events`.
pub async fn check(events: &[Ev], urls: &Urls) -> anyhow::Result<()> {
    let es = client(urls)?;
    ok(
        "refresh the audit indices",
        es.indices()
            .refresh(IndicesRefreshParts::Index(&[PATTERN]))
            .send()
            .await,
    )
    .await?;

    // The expectations: every platform event by id (duplicates of an id count once).
    let mut by_id: HashMap<&str, Vec<&Ev>> = HashMap::new();
    for ev in events.iter().filter(|e| !e.topic.starts_with(DLQ_PREFIX)) {
        by_id.entry(ev.id.as_str()).or_default().push(ev);
    }
    ensure!(
        !by_id.is_empty(),
        "no platform events to check the audit indices against"
    );

    // Every index was made from the auditor's template.
    let mapping = ok(
        "get the audit mappings",
        es.indices()
            .get_mapping(IndicesGetMappingParts::Index(&[PATTERN]))
            .send()
            .await,
    )
    .await?;
    let mut bad = Vec::new();
    for (index, m) in mapping.as_object().into_iter().flatten() {
        let m = &m["mappings"];
        if m["dynamic"] != "strict"
            || m["properties"]["data"]["type"] != "flattened"
            || m["properties"]["user_id"]["type"] != "keyword"
        {
            bad.push(format!(
                "{index} was not made from the `{TEMPLATE}` template: its mapping is {m}"
            ));
        }
    }
    finish("audit index mappings", &bad)?;

    // Every document, against the events.
    let docs = all_documents(&es, &mut bad).await?;
    let mut dead_letters = 0;
    for (id, doc) in &docs {
        let from_dlq = doc
            .field("topic")
            .is_some_and(|t| t.starts_with(DLQ_PREFIX));
        if from_dlq {
            dead_letters += 1;
            if !id.starts_with("dlq-")
                || doc.field("type") != Some(DEAD_LETTER)
                || doc.source.pointer("/data/original_topic").is_none()
            {
                bad.push(format!(
                    "dead letter `{id}` is not shaped as one: {}",
                    doc.source
                ));
            }
            continue;
        }
        let Some(evs) = by_id.get(id.as_str()) else {
            bad.push(format!(
                "`{id}` is stored in {} but is no event's id",
                doc.index
            ));
            continue;
        };
        if let Err(first) = evs
            .iter()
            .map(|ev| matches(ev, doc))
            .find(Result::is_ok)
            .unwrap_or_else(|| matches(evs[0], doc))
        {
            bad.push(format!("`{id}`: {first}"));
        }
    }
    for id in by_id.keys() {
        if !docs.contains_key(*id) {
            bad.push(format!("`{id}` ({}) has no document", by_id[id][0].ty));
        }
    }
    finish("audit documents", &bad)?;

    // The count the server reports agrees (nothing hidden from a sorted search).
    let count = ok(
        "count the audit documents",
        es.count(CountParts::Index(&[PATTERN])).send().await,
    )
    .await?["count"]
        .as_u64()
        .context("a count answer without `count`")?;
    let want = (by_id.len() + dead_letters) as u64;
    ensure!(
        count == want,
        "the audit indices hold {count} documents; expected {} distinct event ids + {dead_letters} dead letters = {want}",
        by_id.len()
    );

    // Every event of the user with the most events: one term query, both on the lifted
    // keyword and on the flattened data.
    let mut per_user: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (id, evs) in &by_id {
        if let Some(user) = evs[0].data.get("user_id").and_then(Value::as_str) {
            per_user.entry(user).or_default().insert(id);
        }
    }
    let (user, want) = per_user
        .iter()
        .max_by_key(|(_, ids)| ids.len())
        .context("no event has a `user_id`")?;
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    for field in ["user_id", "data.user_id"] {
        let got = ids_where(&es, field, user).await?;
        if got != want {
            let missing: Vec<_> = want.difference(&got).take(SHOWN).collect();
            let extra: Vec<_> = got.difference(&want).take(SHOWN).collect();
            bail!(
                "`{field}` = `{user}` found {} documents, expected {}: missing {missing:?}, extra {extra:?}",
                got.len(),
                want.len()
            );
        }
    }
    Ok(())
}
