//! Test plugin: an attacker with a documents grant (one collection, one bucket) and a
//! messaging grant (one topic). Each event's `type` names one attack and its `data` names
//! what the attack aims at:
//!
//! ```json
//! {"collection": "videos", "secret": "secrets", "bucket": "thumbnails",
//!  "topic": "granted-topic", "secret_topic": "other-topic"}
//! ```
//!
//! The outcome is `ok` when the host let the attack through, else `reject` with
//! `<error kind>: <message>`, so the test reads what the host answered for each attack.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::documents::{self as docs, FindOptions, UpdateOp, WriteOp};
use polyhost::platform::messaging::{self, Message};
use polyhost::platform::types::{BatchInfo, Error, ErrorKind, Event, Outcome};
use serde_json::{Value, json};

struct Hostile;

impl Guest for Hostile {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        events.iter().map(attack).collect()
    }
}

export!(Hostile);

/// The names an attack aims at.
struct Target {
    collection: String,
    secret: String,
    bucket: String,
    topic: String,
    secret_topic: String,
}

impl Target {
    fn of(data: &[u8]) -> Target {
        let v: Value = serde_json::from_slice(data).unwrap_or_default();
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        Target {
            collection: s("collection"),
            secret: s("secret"),
            bucket: s("bucket"),
            topic: s("topic"),
            secret_topic: s("secret_topic"),
        }
    }
}

const MIB: usize = 1 << 20;

fn attack(event: &Event) -> Outcome {
    let t = Target::of(&event.data);
    let c = t.collection.as_str();
    let secret = t.secret.as_str();
    let lookup = json!({"from": secret, "localField": "_id", "foreignField": "_id", "as": "x"});
    let result: Result<(), Error> = match event.type_.as_str() {
        // Stages that read another collection, at the top and nested.
        "lookup-top" => find(c, json!({"$lookup": lookup})),
        "lookup-in-expr" => find(c, json!({"$expr": {"$lookup": lookup}})),
        "lookup-in-facet" => find(
            c,
            json!({"$expr": {"$facet": {"a": [{"$lookup": lookup}]}}}),
        ),
        "lookup-in-lookup-pipeline" => find(
            c,
            json!({"$expr": {"$lookup": {"from": c, "as": "y",
                "pipeline": [{"$lookup": lookup}]}}}),
        ),
        "union-with" => find(
            c,
            json!({"$and": [{"a": 1}, {"$expr": {"$unionWith": {"coll": secret}}}]}),
        ),
        "graph-lookup" => find(
            c,
            json!({"$expr": {"$graphLookup": {"from": secret, "startWith": "$a",
                "connectFromField": "a", "connectToField": "b", "as": "g"}}}),
        ),
        // Stages that write another collection.
        "out-in-filter" => count(c, json!({"$out": secret})),
        "merge-in-update" => docs::update(
            c,
            "{}",
            &json!({"$set": {"x": {"$merge": {"into": secret}}}}).to_string(),
            false,
            true,
        )
        .map(drop),
        "out-in-bulk" => docs::bulk_write(
            c,
            &[WriteOp::Update(UpdateOp {
                filter: json!({"$expr": {"$out": {"db": "admin", "coll": secret}}}).to_string(),
                update: json!({"$set": {"x": 1}}).to_string(),
                upsert: false,
                many: true,
            })],
            true,
        )
        .map(drop),
        "documents-stage" => find(c, json!({"$expr": {"$documents": [{"a": 1}]}})),
        "current-op" => find(c, json!({"$expr": {"$currentOp": {}}})),
        "coll-stats" => find(c, json!({"$collStats": {"count": {}}})),
        // Code, deep inside.
        "where-deep" => count(
            c,
            json!({"$and": [{"a": {"$exists": true}},
                {"$or": [{"$nor": [{"$where": "db.getSiblingDB('admin')"}]}]}]}),
        ),
        "function-deep" => find(
            c,
            json!({"$expr": {"$and": [{"$eq": [1, 1]},
                {"$not": [{"$function": {"body": "function() { return true; }",
                    "args": [], "lang": "js"}}]}]}}),
        ),
        "accumulator-in-sort" => docs::find(
            c,
            "{}",
            &FindOptions {
                sort: Some(json!({"a": {"$accumulator": {}}}).to_string()),
                projection: None,
                skip: None,
                limit: None,
            },
        )
        .map(drop),
        "code-value" => insert(c, json!({"f": {"$code": "db.secrets.drop()"}})),
        // References out of the grant, inside values.
        "dbref-other-collection" => insert(c, json!({"r": {"$ref": secret, "$id": 1}})),
        "dbref-other-database" => insert(c, json!({"r": {"$ref": c, "$id": 1, "$db": "admin"}})),
        // Collection names that reach elsewhere.
        "system-js" => insert("system.js", json!({"_id": "f", "value": 1})),
        "system-profile" => find("system.profile", json!({})),
        "other-database" => insert(&format!("admin.{c}"), json!({"a": 1})),
        "dotted-secret" => insert(&format!("{c}.{secret}"), json!({"a": 1})),
        "dollar-name" => count("$cmd", json!({})),
        "bucket-as-collection" => insert(&format!("{}.files", t.bucket), json!({"a": 1})),
        "collection-as-bucket" => docs::put_blob(secret, "b", "text/plain", b"x", "{}").map(drop),
        // Exhausting the host.
        "huge-result" => find(c, json!({})),
        "huge-document" => insert(c, json!({"_id": "huge", "pad": "x".repeat(20 * MIB)})),
        "huge-filter" => count(c, json!({"a": {"$in": vec!["x".repeat(1000); 4000]}})),
        "huge-blob" => docs::put_blob(
            &t.bucket,
            "huge",
            "application/octet-stream",
            &vec![7; 2 * MIB],
            "{}",
        )
        .map(drop),
        "huge-blob-read" => docs::get_blob(&t.bucket, "stored-huge").map(drop),
        // Many blobs at once: outside the grant, over the limits, code in the metadata. A
        // call is checked whole before anything is written, so its good blobs are not
        // stored either.
        "put-blobs-into-collection" => {
            docs::put_blobs(secret, &[blob("b", b"x".to_vec(), "{}")]).map(drop)
        }
        "huge-blobs" => docs::put_blobs(
            &t.bucket,
            &[
                blob("fine", b"x".to_vec(), "{}"),
                blob("huge", vec![7; 2 * MIB], "{}"),
            ],
        )
        .map(drop),
        "too-many-blobs" => {
            let blobs: Vec<_> = (0..257)
                .map(|i| blob(&format!("n{i}"), vec![], "{}"))
                .collect();
            docs::put_blobs(&t.bucket, &blobs).map(drop)
        }
        "code-in-blob-metadata" => docs::put_blobs(
            &t.bucket,
            &[blob(
                "c",
                b"x".to_vec(),
                r#"{"f": {"$code": "function() {}"}}"#,
            )],
        )
        .map(drop),
        // Blob writes run to their end even when their call is abandoned (its host-call
        // timeout): `put-blobs` called again and again under a timeout too short for any
        // write, so that every call is abandoned with its writes still running.
        "put-blobs-flood" => return flood(&t.bucket, &event.data),
        // Messaging.
        "publish-secret" => messaging::publish(&message(&t.secret_topic, 10, vec![])),
        "publish-batch-with-secret" => messaging::publish_batch(&[
            message(&t.topic, 10, vec![]),
            message(&t.secret_topic, 10, vec![]),
        ]),
        "publish-secret-in-header-and-key" => {
            let mut m = message(
                &t.topic,
                10,
                vec![
                    ("topic".to_string(), t.secret_topic.as_bytes().to_vec()),
                    (
                        "kafka_topic".to_string(),
                        t.secret_topic.as_bytes().to_vec(),
                    ),
                ],
            );
            m.key = Some(t.secret_topic.as_bytes().to_vec());
            messaging::publish(&m)
        }
        "publish-huge" => messaging::publish(&message(&t.topic, 5 * MIB, vec![])),
        "publish-huge-headers" => messaging::publish(&message(
            &t.topic,
            10,
            (0..64)
                .map(|i| (format!("h{i}"), vec![0; 64 * 1024]))
                .collect(),
        )),
        "publish-over-broker-limit" => messaging::publish(&message(&t.topic, 1_500_000, vec![])),
        other => {
            return Outcome::Reject(format!("unknown attack `{other}`"));
        }
    };
    match result {
        Ok(()) => Outcome::Ok,
        Err(e) => Outcome::Reject(format!("{}: {}", kind_name(e.kind), e.message)),
    }
}

/// `put-blobs-flood`: `rounds` calls of `blobs` blobs of `blob_bytes` bytes each (from the
/// event's data). Its outcome is a report, always `reject`: `flood: <calls> calls:
/// <n> ok, <n> timeout, <n> other`, then the first other error.
fn flood(bucket: &str, data: &[u8]) -> Outcome {
    let v: Value = serde_json::from_slice(data).unwrap_or_default();
    let n = |k: &str| v[k].as_u64().unwrap_or(1) as usize;
    let (rounds, per_call, size) = (n("rounds"), n("blobs"), n("blob_bytes"));
    let (mut ok, mut timeout, mut other, mut first) = (0, 0, 0, String::new());
    for round in 0..rounds {
        let blobs: Vec<_> = (0..per_call)
            .map(|k| blob(&format!("flood-{round}-{k}"), vec![round as u8; size], "{}"))
            .collect();
        match docs::put_blobs(bucket, &blobs) {
            Ok(_) => ok += 1,
            Err(e) if e.kind == ErrorKind::Timeout => timeout += 1,
            Err(e) => {
                other += 1;
                if first.is_empty() {
                    first = format!("{}: {}", kind_name(e.kind), e.message);
                }
            }
        }
    }
    Outcome::Reject(format!(
        "flood: {rounds} calls: {ok} ok, {timeout} timeout, {other} other {first}"
    ))
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

fn find(collection: &str, filter: Value) -> Result<(), Error> {
    let options = FindOptions {
        sort: None,
        projection: None,
        skip: None,
        limit: None,
    };
    docs::find(collection, &filter.to_string(), &options).map(drop)
}

fn count(collection: &str, filter: Value) -> Result<(), Error> {
    docs::count(collection, &filter.to_string()).map(drop)
}

fn insert(collection: &str, doc: Value) -> Result<(), Error> {
    docs::insert(collection, &doc.to_string()).map(drop)
}

fn message(topic: &str, size: usize, headers: Vec<(String, Vec<u8>)>) -> Message {
    Message {
        topic: topic.to_string(),
        key: None,
        value: vec![b'x'; size],
        headers,
    }
}

/// A blob for `put-blobs`.
fn blob(id: &str, data: Vec<u8>, metadata: &str) -> docs::NewBlob {
    docs::NewBlob {
        id: id.to_string(),
        content_type: "application/octet-stream".to_string(),
        data,
        metadata: metadata.to_string(),
    }
}
