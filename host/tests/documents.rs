//! The documents backend (`polyhost:platform/documents`) against the real server: the
//! `documents-probe` plugin runs scripts of calls with their expected results, and each test
//! then reads back with the mongodb driver what the server really holds.
//!
//! Needs MongoDB (FerretDB here, `cargo xtask services up`) and the test plugins (`cargo
//! xtask plugins`); fails, rather than skips, without them. Each test works in a database of
//! its own, granted to its plugin, and drops it afterwards.

mod common;
mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use common::{Service, unique_name, with_cleanup, within};
use futures::{AsyncReadExt as _, TryStreamExt as _};
use harness::{runtime, test_plugin};
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::GridFsBucketOptions;
use polyhost::backends::{Settings, documents};
use polyhost::manifest::PluginSpec;
use polyhost::runtime::{LoadedPlugin, Runtime};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The collections and bucket every test's plugin is granted.
const COLLECTIONS: [&str; 2] = ["videos", "channels"];
const BUCKET: &str = "thumbnails";

/// A test's database, its native handle and the probe plugin granted it.
struct Fixture {
    mongodb: Service,
    db: mongodb::Database,
    plugin: Arc<LoadedPlugin>,
    // Keeps the engine and connections alive as long as the plugin.
    _runtime: Runtime,
}

impl Fixture {
    /// Runs `script`'s steps in the plugin and fails with its list of mismatches.
    async fn run(&self, script: Value) -> Result<()> {
        harness::run_script(&self.plugin, &script).await
    }

    /// The probe again, granted the same, with a host-call timeout of `ms`.
    async fn hasty_probe(&self, ms: u64) -> Result<Arc<LoadedPlugin>> {
        let mut spec = PluginSpec::new("documents-probe-hasty", test_plugin("documents-probe"));
        spec.subscribe = vec!["t".into()];
        spec.grants.documents = Some(documents::Grant {
            database: self.db.name().to_string(),
            collections: COLLECTIONS.iter().map(|c| c.to_string()).collect(),
            buckets: vec![BUCKET.to_string()],
        });
        spec.limits.host_call_timeout_ms = ms;
        spec.limits.call_timeout_ms = 60_000;
        self._runtime
            .load(&spec)
            .await
            .map_err(|e| anyhow::anyhow!("loading the probe: {e}"))
    }

    fn coll(&self, name: &str) -> mongodb::Collection<Document> {
        self.db.collection(name)
    }

    /// Natively, through the driver: every blob file of [`BUCKET`] by filename, each with
    /// its bytes, and how many chunks the bucket holds.
    async fn stored_blobs(
        &self,
    ) -> Result<(
        Vec<(mongodb::gridfs::FilesCollectionDocument, Vec<u8>)>,
        u64,
    )> {
        let bucket = self.db.gridfs_bucket(
            GridFsBucketOptions::builder()
                .bucket_name(BUCKET.to_string())
                .build(),
        );
        let files: Vec<_> = within(
            &self.mongodb,
            "listing blobs",
            bucket.find(doc! {}).sort(doc! { "filename": 1 }),
        )
        .await?
        .try_collect()
        .await?;
        let mut stored = Vec::new();
        for file in files {
            let mut stream = within(
                &self.mongodb,
                "opening a blob",
                bucket.open_download_stream(file.id.clone()),
            )
            .await?;
            let mut data = Vec::new();
            stream.read_to_end(&mut data).await?;
            stored.push((file, data));
        }
        let chunks = within(
            &self.mongodb,
            "counting chunks",
            self.coll(&format!("{BUCKET}.chunks"))
                .count_documents(doc! {}),
        )
        .await?;
        Ok((stored, chunks))
    }

    /// Every document of `name`, by `_id`.
    async fn all(&self, name: &str) -> Result<Vec<Document>> {
        let cursor = within(
            &self.mongodb,
            format!("reading {name}"),
            self.coll(name).find(doc! {}).sort(doc! { "_id": 1 }),
        )
        .await?;
        within(
            &self.mongodb,
            format!("reading {name}"),
            cursor.try_collect(),
        )
        .await
    }

    async fn collection_names(&self) -> Result<Vec<String>> {
        within(
            &self.mongodb,
            "listing collections",
            self.db.list_collection_names(),
        )
        .await
    }
}

/// Connects natively, loads the probe granted a fresh database, runs `body`, and drops the
/// database whatever happened.
async fn with_fixture(body: impl AsyncFnOnce(&mut Fixture) -> Result<()>) -> Result<()> {
    let mongodb = Service::mongodb();
    let client = common::mongodb().await?;
    let db = client.database(&unique_name("docs"));

    let rt = runtime();
    let mut spec = PluginSpec::new("documents-probe", test_plugin("documents-probe"));
    spec.subscribe = vec!["t".into()];
    spec.grants.documents = Some(documents::Grant {
        database: db.name().to_string(),
        collections: COLLECTIONS.iter().map(|c| c.to_string()).collect(),
        buckets: vec![BUCKET.to_string()],
    });
    spec.limits.host_call_timeout_ms = 10_000;
    spec.limits.call_timeout_ms = 60_000;
    let plugin = rt
        .load(&spec)
        .await
        .map_err(|e| anyhow::anyhow!("{mongodb}: loading the probe: {e}"))?;

    let mut fixture = Fixture {
        mongodb: mongodb.clone(),
        db,
        plugin,
        _runtime: rt,
    };
    with_cleanup(&mut fixture, body, async |f| {
        within(&f.mongodb, "dropping the test database", f.db.drop()).await
    })
    .await
}

#[tokio::test]
async fn crud_calls_store_and_return_what_they_say() -> Result<()> {
    with_fixture(async |f| {
        f.run(json!({"steps": [
            {"call": "insert", "collection": "videos",
             "doc": {"_id": "v1", "title": "Big Buck Bunny", "views": 10, "tags": ["animation"]},
             "expect": {"ok": "v1"}},
            {"call": "insert", "collection": "videos", "doc": {"title": "Sintel", "views": 5},
             "expect": {"ok": {"$oid": "*"}}},
            {"call": "insert", "collection": "videos",
             "doc": {"_id": "v3", "title": "Tears of Steel", "views": 7,
                     "at": {"$date": "2024-01-02T03:04:05Z"}},
             "expect": {"ok": "v3"}},
            {"call": "insert", "collection": "videos", "doc": {"_id": "v1"},
             "expect": {"err": "conflict", "transient": false}},
            {"call": "count", "collection": "videos", "filter": {}, "expect": {"ok": 3}},
            {"call": "count", "collection": "videos", "filter": {"views": {"$gte": 7}},
             "expect": {"ok": 2}},
            {"call": "find", "collection": "videos", "filter": {"views": {"$gte": 5}},
             "options": {"sort": {"views": -1}, "projection": {"title": 1, "_id": 0},
                         "skip": 1, "limit": 1},
             "expect": {"ok": [{"title": "Tears of Steel"}]}},
            {"call": "find", "collection": "videos", "filter": {},
             "options": {"sort": {"views": 1}, "projection": {"views": 1, "_id": 0}},
             "expect": {"ok": [{"views": 5}, {"views": 7}, {"views": 10}]}},
            {"call": "find", "collection": "videos", "filter": {}, "options": {"limit": 0},
             "expect": {"ok": []}},
            {"call": "find-one", "collection": "videos", "filter": {"_id": "v3"},
             "expect": {"ok": {"_id": "v3", "title": "Tears of Steel", "views": 7,
                               "at": {"$date": "2024-01-02T03:04:05Z"}}}},
            {"call": "find-one", "collection": "videos", "filter": {"_id": "nope"},
             "expect": {"ok": null}},
            {"call": "update", "collection": "videos", "filter": {"_id": "v1"},
             "update": {"$inc": {"views": 1}, "$addToSet": {"tags": "cc-by"}},
             "expect": {"ok": {"matched": 1, "modified": 1, "upserted_id": null}}},
            {"call": "update", "collection": "videos", "filter": {"views": {"$lt": 100}},
             "update": {"$set": {"public": true}}, "many": true,
             "expect": {"ok": {"matched": 3, "modified": 3, "upserted_id": null}}},
            {"call": "update", "collection": "videos", "filter": {"views": {"$lt": 100}},
             "update": {"$set": {"checked": true}},
             "expect": {"ok": {"matched": 1, "modified": 1, "upserted_id": null}}},
            {"call": "update", "collection": "videos", "filter": {"_id": "v4"},
             "update": {"$set": {"title": "Cosmos Laundromat"}}, "upsert": true,
             "expect": {"ok": {"matched": 0, "modified": 0, "upserted_id": "v4"}}},
            {"call": "upsert", "collection": "videos", "filter": {"_id": "v5"},
             "replacement": {"title": "Elephants Dream", "views": 1},
             "expect": {"ok": {"matched": 0, "modified": 0, "upserted_id": "v5"}}},
            {"call": "upsert", "collection": "videos", "filter": {"_id": "v5"},
             "replacement": {"title": "Elephants Dream", "views": 2},
             "expect": {"ok": {"matched": 1, "modified": 1, "upserted_id": null}}},
            {"call": "delete", "collection": "videos", "filter": {"_id": "v4"},
             "expect": {"ok": 1}},
            {"call": "delete", "collection": "videos", "filter": {"title": "Sintel"},
             "expect": {"ok": 1}},
            {"call": "delete", "collection": "videos", "filter": {"_id": "none"},
             "expect": {"ok": 0}},
            {"call": "insert", "collection": "channels", "doc": {"_id": 1, "kind": "x"}},
            {"call": "insert", "collection": "channels", "doc": {"_id": 2, "kind": "x"}},
            {"call": "insert", "collection": "channels", "doc": {"_id": 3, "kind": "y"}},
            {"call": "delete", "collection": "channels", "filter": {"kind": "x"}, "many": true,
             "expect": {"ok": 2}},
        ]}))
        .await?;

        let videos = f.all("videos").await?;
        let ids: Vec<_> = videos.iter().map(|d| d.get("_id").cloned()).collect();
        ensure!(
            ids == [Some("v1".into()), Some("v3".into()), Some("v5".into())],
            "videos: {videos:?}"
        );
        let v1 = &videos[0];
        ensure!(v1.get_i32("views")? == 11, "v1: {v1}");
        ensure!(
            v1.get_array("tags")? == &vec![Bson::from("animation"), Bson::from("cc-by")],
            "v1: {v1}"
        );
        ensure!(v1.get_bool("public")?, "v1: {v1}");
        let v3 = &videos[1];
        ensure!(
            v3.get_datetime("at")?.try_to_rfc3339_string()? == "2024-01-02T03:04:05Z",
            "the $date arrived as a BSON date: {v3}"
        );
        let v5 = &videos[2];
        ensure!(
            *v5 == doc! { "_id": "v5", "title": "Elephants Dream", "views": 2 },
            "the upsert replaced the whole document: {v5}"
        );
        let channels = f.all("channels").await?;
        ensure!(
            channels == [doc! { "_id": 3, "kind": "y" }],
            "channels: {channels:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn bulk_write_runs_ops_in_order_and_honours_ordered() -> Result<()> {
    with_fixture(async |f| {
        f.run(json!({"steps": [
            {"call": "bulk-write", "collection": "videos", "ordered": true, "ops": [
                {"insert": {"_id": "b1", "n": 0}},
                {"insert": {"_id": "b2", "n": 0}},
                {"update": {"filter": {"_id": "b1"}, "update": {"$set": {"n": 1}}}},
                {"replace": {"filter": {"_id": "b2"}, "replacement": {"x": 2}}},
                {"replace": {"filter": {"_id": "b3"}, "replacement": {"x": 3}, "upsert": true}},
                {"update": {"filter": {"_id": "b4"}, "update": {"$set": {"x": 4}},
                            "upsert": true}},
                {"delete": {"filter": {"_id": "b2"}}},
                {"insert": {"_id": "b5"}},
                {"update": {"filter": {}, "update": {"$set": {"seen": true}}, "many": true}},
                {"delete": {"filter": {"_id": {"$in": ["b5", "nope"]}}, "many": true}},
            ], "expect": {"ok": {"inserted": 3, "matched": 6, "modified": 6, "deleted": 2,
                                 "upserted": 2}}},
            // Ordered: stops at the duplicate, so c2 is never written.
            {"call": "bulk-write", "collection": "channels", "ordered": true, "ops": [
                {"insert": {"_id": "c1"}},
                {"insert": {"_id": "c1"}},
                {"insert": {"_id": "c2"}},
                {"delete": {"filter": {"_id": "c1"}}},
            ], "expect": {"err": "conflict"}},
            // Unordered: the duplicate fails, everything else runs.
            {"call": "bulk-write", "collection": "channels", "ordered": false, "ops": [
                {"insert": {"_id": "d1"}},
                {"insert": {"_id": "c1"}},
                {"insert": {"_id": "d2"}},
                {"update": {"filter": {"_id": "d1"}, "update": {"$set": {"ok": true}}}},
            ], "expect": {"err": "conflict"}},
            // Ordered, failing in a non-insert op (the server refuses to change an `_id`).
            {"call": "bulk-write", "collection": "channels", "ordered": true, "ops": [
                {"insert": {"_id": "f1"}},
                {"update": {"filter": {"_id": "d2"}, "update": {"$set": {"_id": "zz"}}}},
                {"insert": {"_id": "f2"}},
            ], "expect": {"err": "invalid"}},
            // A malformed op fails the whole call before anything is written.
            {"call": "bulk-write", "collection": "channels", "ordered": false, "ops": [
                {"insert": {"_id": "e1"}},
                {"update": {"filter": {"_id": "e1"}, "update": {"x": 1}}},
            ], "expect": {"err": "invalid"}},
            {"call": "bulk-write", "collection": "channels", "ordered": false, "ops": [
                {"insert": {"_id": "e2"}},
                {"delete": {"filter": {"$where": "true"}}},
            ], "expect": {"err": "denied"}},
            {"call": "bulk-write", "collection": "channels", "ordered": true, "ops": [],
             "expect": {"ok": {"inserted": 0, "matched": 0, "modified": 0, "deleted": 0,
                               "upserted": 0}}},
        ]}))
        .await?;

        let videos = f.all("videos").await?;
        let expected = [
            doc! { "_id": "b1", "n": 1, "seen": true },
            doc! { "_id": "b3", "x": 3, "seen": true },
            doc! { "_id": "b4", "x": 4, "seen": true },
        ];
        ensure!(videos == expected, "videos: {videos:?}");
        let channels = f.all("channels").await?;
        let expected = [
            doc! { "_id": "c1" },
            doc! { "_id": "d1", "ok": true },
            doc! { "_id": "d2" },
            doc! { "_id": "f1" },
        ];
        ensure!(channels == expected, "channels: {channels:?}");
        Ok(())
    })
    .await
}

/// `len` bytes that are not all alike, from `seed`.
fn bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[tokio::test]
async fn blobs_round_trip_their_bytes_and_sha256() -> Result<()> {
    with_fixture(async |f| {
        let first = bytes(6_000, 1);
        let second = bytes(300_000, 2); // more than one GridFS chunk (255 KiB)
        let small = bytes(700, 3);
        let info = |id: &str, ty: &str, data: &[u8], meta: Value| {
            json!({"id": id, "content_type": ty, "length": data.len(), "sha256": sha256(data),
                   "metadata": meta})
        };
        let v1_first = info("v1.png", "image/png", &first, json!({"w": 320, "h": 180}));
        let v1_second = info("v1.png", "image/webp", &second, json!({"w": 1280}));
        let v2 = info("v2.png", "image/png", &small, json!({}));
        let empty = info("empty", "text/plain", &[], json!({"note": "nothing"}));
        f.run(json!({"steps": [
            {"call": "stat-blob", "bucket": BUCKET, "id": "v1.png", "expect": {"ok": null}},
            {"call": "get-blob", "bucket": BUCKET, "id": "v1.png", "expect": {"ok": null}},
            {"call": "delete-blob", "bucket": BUCKET, "id": "v1.png", "expect": {"ok": false}},
            {"call": "put-blob", "bucket": BUCKET, "id": "v1.png", "content_type": "image/png",
             "data_hex": hex::encode(&first), "metadata": {"w": 320, "h": 180},
             "expect": {"ok": v1_first}},
            {"call": "stat-blob", "bucket": BUCKET, "id": "v1.png", "expect": {"ok": v1_first}},
            {"call": "get-blob", "bucket": BUCKET, "id": "v1.png",
             "expect": {"ok": {"info": v1_first, "data_hex": hex::encode(&first)}}},
            {"call": "put-blob", "bucket": BUCKET, "id": "v1.png", "content_type": "image/webp",
             "data_hex": hex::encode(&second), "metadata": {"w": 1280},
             "expect": {"ok": v1_second}},
            {"call": "get-blob", "bucket": BUCKET, "id": "v1.png",
             "expect": {"ok": {"info": v1_second, "data_hex": hex::encode(&second)}}},
            {"call": "put-blob", "bucket": BUCKET, "id": "v2.png", "content_type": "image/png",
             "data_hex": hex::encode(&small), "metadata": {}, "expect": {"ok": v2}},
            {"call": "put-blob", "bucket": BUCKET, "id": "empty", "content_type": "text/plain",
             "data_hex": "", "metadata": {"note": "nothing"}, "expect": {"ok": empty}},
            {"call": "get-blob", "bucket": BUCKET, "id": "empty",
             "expect": {"ok": {"info": empty, "data_hex": ""}}},
            {"call": "delete-blob", "bucket": BUCKET, "id": "v2.png", "expect": {"ok": true}},
            {"call": "delete-blob", "bucket": BUCKET, "id": "v2.png", "expect": {"ok": false}},
            {"call": "stat-blob", "bucket": BUCKET, "id": "v2.png", "expect": {"ok": null}},
            {"call": "put-blob", "bucket": BUCKET, "id": "bad", "content_type": "x/y",
             "data_hex": "00", "metadata": "[1]", "expect": {"err": "invalid"}},
        ]}))
        .await?;

        // Natively: one revision per live blob (the first v1.png was replaced), its bytes
        // and the host's fields as stored, and no chunk left of any removed revision.
        let (files, chunks) = f.stored_blobs().await?;
        let names: Vec<_> = files.iter().map(|(f, _)| f.filename.clone()).collect();
        ensure!(
            names == [Some("empty".to_string()), Some("v1.png".to_string())],
            "blob files: {names:?}"
        );
        for ((file, stored), data, ty) in [
            (&files[0], &[][..], "text/plain"),
            (&files[1], &second[..], "image/webp"),
        ] {
            ensure!(
                stored == data,
                "{:?}: the stored bytes differ",
                file.filename
            );
            let meta = file.metadata.clone().unwrap_or_default();
            ensure!(
                meta.get_str("sha256")? == sha256(data) && meta.get_str("contentType")? == ty,
                "{:?}: metadata {meta}",
                file.filename
            );
        }
        ensure!(
            chunks == second.len().div_ceil(255 * 1024) as u64,
            "{chunks} chunks"
        );
        Ok(())
    })
    .await
}

/// Unordered, a run of updates that each pin their own `_id` goes out several commands at
/// once and loses none; updates that may touch one document stay one command at a time,
/// so FerretDB (which loses one of two concurrent updates of a document) loses none either.
#[tokio::test]
async fn unordered_bulk_writes_lose_no_update() -> Result<()> {
    with_fixture(async |f| {
        let docs = 120;
        let inserts: Vec<Value> = (0..docs)
            .map(|i| json!({"insert": {"_id": format!("p{i}"), "n": 0, "group": "g"}}))
            .collect();
        // Distinct ids: many commands in flight.
        let distinct: Vec<Value> = (0..docs)
            .map(|i| {
                json!({"update": {"filter": {"_id": format!("p{i}")},
                                       "update": {"$inc": {"n": 1}}}})
            })
            .collect();
        // One document again and again: one command at a time.
        let same: Vec<Value> = (0..64)
            .map(|_| json!({"update": {"filter": {"_id": "p0"}, "update": {"$inc": {"n": 1}}}}))
            .collect();
        // Filters that are not ids: one command at a time too.
        let by_field: Vec<Value> = (0..24)
            .map(|_| json!({"update": {"filter": {"group": "g"}, "update": {"$inc": {"m": 1}}}}))
            .collect();
        f.run(json!({"steps": [
            {"call": "bulk-write", "collection": "videos", "ordered": false, "ops": inserts,
             "expect": {"ok": {"inserted": docs, "matched": 0, "modified": 0, "deleted": 0,
                               "upserted": 0}}},
            {"call": "bulk-write", "collection": "videos", "ordered": false, "ops": distinct,
             "expect": {"ok": {"inserted": 0, "matched": docs, "modified": docs, "deleted": 0,
                               "upserted": 0}}},
            {"call": "bulk-write", "collection": "videos", "ordered": false, "ops": same,
             "expect": {"ok": {"inserted": 0, "matched": 64, "modified": 64, "deleted": 0,
                               "upserted": 0}}},
            {"call": "bulk-write", "collection": "videos", "ordered": false, "ops": by_field,
             "expect": {"ok": {"inserted": 0, "matched": 24, "modified": 24, "deleted": 0,
                               "upserted": 0}}},
        ]}))
        .await?;
        let number = |d: &Document, key: &str| match d.get(key) {
            Some(Bson::Int32(v)) => i64::from(*v),
            Some(Bson::Int64(v)) => *v,
            Some(Bson::Double(v)) => *v as i64,
            _ => -1,
        };
        let stored = f.all("videos").await?;
        ensure!(stored.len() == docs, "{} documents", stored.len());
        for doc in &stored {
            let id = doc.get_str("_id")?;
            let want = if id == "p0" { 65 } else { 1 };
            ensure!(number(doc, "n") == want, "{id}: {doc}");
        }
        // Each of those updates changed the first document of the group, whichever it was.
        let m: i64 = stored.iter().map(|d| number(d, "m").max(0)).sum();
        ensure!(m == 24, "the group's updates add up to {m}");
        Ok(())
    })
    .await
}

/// `put-blobs` stores what `put-blob` would, in the same layout: each blob readable by
/// `get-blob` and by the driver, each id replacing its older revision (whichever call stored
/// it), and a call that cannot be taken whole stores nothing.
#[tokio::test]
async fn put_blobs_store_many_as_put_blob_would() -> Result<()> {
    with_fixture(async |f| {
        let big = bytes(600_000, 4); // three GridFS chunks
        let small = bytes(900, 5);
        let again = bytes(1_200, 6);
        let info = |id: &str, ty: &str, data: &[u8], meta: Value| {
            json!({"id": id, "content_type": ty, "length": data.len(), "sha256": sha256(data),
                   "metadata": meta})
        };
        let blob = |id: &str, ty: &str, data: &[u8], meta: Value| {
            json!({"id": id, "content_type": ty, "data_hex": hex::encode(data), "metadata": meta})
        };
        let get = |id: &str, info: &Value, data: &[u8]| {
            json!({"call": "get-blob", "bucket": BUCKET, "id": id,
                   "expect": {"ok": {"info": info, "data_hex": hex::encode(data)}}})
        };
        let too_many: Vec<Value> = (0..257)
            .map(|i| blob(&format!("n{i}"), "x/y", &[], json!({})))
            .collect();
        f.run(json!({"steps": [
            // One blob stored the single way first: put-blobs replaces it below.
            {"call": "put-blob", "bucket": BUCKET, "id": "a", "content_type": "image/png",
             "data_hex": hex::encode(&small), "metadata": {},
             "expect": {"ok": info("a", "image/png", &small, json!({}))}},
            {"call": "put-blobs", "bucket": BUCKET, "blobs": [
                blob("a", "image/webp", &big, json!({"w": 1920})),
                blob("b", "image/png", &small, json!({"w": 64})),
                blob("e", "text/plain", &[], json!({})),
             ], "expect": {"ok": [
                info("a", "image/webp", &big, json!({"w": 1920})),
                info("b", "image/png", &small, json!({"w": 64})),
                info("e", "text/plain", &[], json!({})),
             ]}},
            get("a", &info("a", "image/webp", &big, json!({"w": 1920})), &big),
            get("b", &info("b", "image/png", &small, json!({"w": 64})), &small),
            get("e", &info("e", "text/plain", &[], json!({})), &[]),
            // Again, over what put-blobs stored, with one new id.
            {"call": "put-blobs", "bucket": BUCKET, "blobs": [
                blob("b", "image/jpeg", &again, json!({})),
                blob("c", "image/png", &small, json!({})),
             ], "expect": {"ok": [
                info("b", "image/jpeg", &again, json!({})),
                info("c", "image/png", &small, json!({})),
             ]}},
            get("b", &info("b", "image/jpeg", &again, json!({})), &again),
            // Calls that cannot be taken whole store nothing.
            {"call": "put-blobs", "bucket": BUCKET, "expect": {"err": "invalid"}, "blobs": [
                blob("d", "x/y", &small, json!({})), blob("d", "x/y", &small, json!({}))]},
            {"call": "put-blobs", "bucket": BUCKET, "expect": {"err": "invalid"}, "blobs": [
                blob("d", "x/y", &small, json!({})), blob("f", "x/y", &small, json!([1]))]},
            {"call": "put-blobs", "bucket": BUCKET, "blobs": too_many,
             "expect": {"err": "invalid"}},
            {"call": "stat-blob", "bucket": BUCKET, "id": "d", "expect": {"ok": null}},
            {"call": "stat-blob", "bucket": BUCKET, "id": "n0", "expect": {"ok": null}},
            {"call": "put-blobs", "bucket": BUCKET, "blobs": [], "expect": {"ok": []}},
        ]}))
        .await?;

        // Natively: one revision per id, read back by the driver, and no chunk of a
        // replaced revision left.
        let (files, chunks) = f.stored_blobs().await?;
        let names: Vec<_> = files.iter().filter_map(|(f, _)| f.filename.clone()).collect();
        ensure!(names == ["a", "b", "c", "e"], "blob files: {names:?}");
        for ((file, stored), data) in files.iter().zip([&big[..], &again, &small, &[]]) {
            ensure!(stored == data, "{:?}: the stored bytes differ", file.filename);
        }
        ensure!(chunks == 3 + 1 + 1, "{chunks} chunks");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn put_blobs_keep_one_revision_of_each_id_even_when_the_call_is_abandoned() -> Result<()> {
    with_fixture(async |f| {
        const N: usize = 200;
        let blobs = |fill: u32| -> Vec<Value> {
            (0..N)
                .map(|i| {
                    json!({"id": format!("m{i}"), "content_type": "x/y",
                           "data_hex": hex::encode(bytes(4_000, fill)), "metadata": {}})
                })
                .collect()
        };
        // Stored, then stored over: one revision of each id, the second.
        for fill in [1, 2] {
            f.run(json!({"steps": [
                {"call": "put-blobs", "bucket": BUCKET, "blobs": blobs(fill), "expect": {"ok": "*"}},
            ]}))
            .await?;
        }
        let (files, chunks) = f.stored_blobs().await?;
        ensure!(
            files.len() == N && chunks == N as u64,
            "{} blob files and {chunks} chunks after storing {N} blobs twice",
            files.len()
        );

        // A third time by a plugin whose host-call timeout (5 ms) abandons the call midway:
        // the plugin hears `timeout`, and the writes still run to their end, so no id is
        // left with two revisions (nor any chunk without its file).
        let hasty = f.hasty_probe(5).await?;
        let script = json!({"steps": [{"call": "put-blobs", "bucket": BUCKET,
            "blobs": blobs(3), "expect": {"err": "timeout"}}]});
        harness::run_script(&hasty, &script).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Read while the writes may still be running: a blob removed under the read is
            // a look too early, not a failure.
            let seen = match f.stored_blobs().await {
                Ok((files, chunks)) => {
                    let third = files.iter().all(|(_, data)| *data == bytes(4_000, 3));
                    if files.len() == N && chunks == N as u64 && third {
                        break;
                    }
                    format!(
                        "{} blob files, {chunks} chunks, all of the third store: {third}",
                        files.len()
                    )
                }
                Err(e) => format!("{e:#}"),
            };
            ensure!(
                Instant::now() < deadline,
                "after the abandoned put-blobs: {seen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn calls_outside_the_grant_or_carrying_code_never_reach_the_server() -> Result<()> {
    with_fixture(async |f| {
        within(
            &f.mongodb,
            "seeding videos",
            f.coll("videos")
                .insert_one(doc! { "_id": "v1", "views": 1 }),
        )
        .await?;
        let where_filter = json!({"$where": "this.views == 1"});
        let function = json!({"$expr": {"$function": {
            "body": "function() { return true; }", "args": [], "lang": "js"}}});
        f.run(json!({"steps": [
            {"call": "insert", "collection": "secrets", "doc": {"a": 1},
             "expect": {"err": "denied", "transient": false}},
            {"call": "count", "collection": "secrets", "filter": {}, "expect": {"err": "denied"}},
            {"call": "find", "collection": "secrets", "filter": {}, "expect": {"err": "denied"}},
            {"call": "find-one", "collection": "secrets", "filter": {},
             "expect": {"err": "denied"}},
            {"call": "update", "collection": "secrets", "filter": {}, "upsert": true,
             "update": {"$set": {"a": 1}}, "expect": {"err": "denied"}},
            {"call": "upsert", "collection": "secrets", "filter": {}, "replacement": {},
             "expect": {"err": "denied"}},
            {"call": "delete", "collection": "secrets", "filter": {}, "expect": {"err": "denied"}},
            {"call": "bulk-write", "collection": "secrets", "ordered": true,
             "ops": [{"insert": {"a": 1}}], "expect": {"err": "denied"}},
            {"call": "put-blob", "bucket": "banners", "id": "b", "content_type": "image/png",
             "data_hex": "0001", "metadata": {}, "expect": {"err": "denied"}},
            {"call": "get-blob", "bucket": "banners", "id": "b", "expect": {"err": "denied"}},
            {"call": "stat-blob", "bucket": "banners", "id": "b", "expect": {"err": "denied"}},
            {"call": "delete-blob", "bucket": "banners", "id": "b", "expect": {"err": "denied"}},
            {"call": "put-blobs", "bucket": "banners", "expect": {"err": "denied"},
             "blobs": [{"id": "b", "content_type": "image/png", "data_hex": "00", "metadata": {}}]},
            // The bucket's collections are not collections the plugin was granted.
            {"call": "find", "collection": format!("{BUCKET}.files"), "filter": {},
             "expect": {"err": "denied"}},
            {"call": "find", "collection": "videos", "filter": where_filter,
             "expect": {"err": "denied"}},
            {"call": "count", "collection": "videos", "filter": function,
             "expect": {"err": "denied"}},
            {"call": "update", "collection": "videos", "filter": where_filter,
             "update": {"$set": {"views": 2}}, "expect": {"err": "denied"}},
            {"call": "delete", "collection": "videos",
             "filter": {"$or": [{"views": 1}, {"$where": "true"}]},
             "expect": {"err": "denied"}},
            {"call": "find", "collection": "videos", "filter": {},
             "options": {"sort": {"views": {"$accumulator": {}}}},
             "expect": {"err": "denied"}},
            {"call": "insert", "collection": "videos", "doc": "{not json",
             "expect": {"err": "invalid", "transient": false}},
            {"call": "insert", "collection": "videos", "doc": "[1, 2]",
             "expect": {"err": "invalid"}},
            {"call": "update", "collection": "videos", "filter": {}, "update": {"views": 2},
             "expect": {"err": "invalid"}},
            {"call": "upsert", "collection": "videos", "filter": {},
             "replacement": {"$set": {"views": 2}}, "expect": {"err": "invalid"}},
            {"call": "find", "collection": "videos", "filter": {"views": {"$nosuchop": 1}},
             "expect": {"err": "invalid"}},
            {"call": "count", "collection": "videos", "filter": {}, "expect": {"ok": 1}},
        ]}))
        .await?;

        let names = f.collection_names().await?;
        ensure!(names == ["videos"], "collections: {names:?}");
        let videos = f.all("videos").await?;
        ensure!(
            videos == [doc! { "_id": "v1", "views": 1 }],
            "videos: {videos:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn connecting_to_an_absent_server_fails_fast() {
    let mut settings = Settings::from_env().expect("connection settings");
    settings.mongodb.url = "mongodb://127.0.0.1:1".into();
    let started = Instant::now();
    let result = documents::Shared::connect(&settings).await;
    let error = result.expect_err("no server listens on port 1");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(format!("{error:#}").contains("pinging"), "{error:#}");
}

/// FerretDB 1.24 hangs for every client when one command carries more statements than its
/// PostgreSQL pool has connections, or when a collection is dropped or created under
/// updates that hold them all. The host sends `bulk-write` in commands of at most
/// `STATEMENTS_PER_COMMAND` statements on at most `MAX_POOL_SIZE` connections: here eight
/// plugin instances send bulk writes of 300 updates each of existing documents (far more
/// statements than the pool has connections) while a native client keeps creating and
/// dropping collections, and every call, and a native ping afterwards, answers within a
/// bound.
#[tokio::test]
async fn concurrent_bulk_writes_with_drops_and_creates_all_answer() -> Result<()> {
    const INSTANCES: usize = 8;
    const ROUNDS: usize = 3;
    const OPS: usize = 300;
    const BOUND: Duration = Duration::from_secs(90);
    with_fixture(async |f| {
        let mut spec = PluginSpec::new("documents-probe-wide", test_plugin("documents-probe"));
        spec.subscribe = vec!["t".into()];
        spec.grants.documents = Some(documents::Grant {
            database: f.db.name().to_string(),
            collections: COLLECTIONS.iter().map(|c| c.to_string()).collect(),
            buckets: vec![],
        });
        spec.limits.max_instances = INSTANCES as u32;
        spec.limits.host_call_timeout_ms = 60_000;
        spec.limits.call_timeout_ms = 120_000;
        let plugin = f
            ._runtime
            .load(&spec)
            .await
            .map_err(|e| anyhow::anyhow!("loading the probe: {e}"))?;

        // Every update finds its document: FerretDB holds a connection per matched
        // statement until the command ends, which is what exhausts its pool.
        let seeded: Vec<Document> = (0..INSTANCES)
            .flat_map(|w| (0..OPS).map(move |i| doc! {"_id": format!("w{w}-{i}"), "n": 0}))
            .collect();
        within(&f.mongodb, "seeding", f.coll("videos").insert_many(seeded)).await?;
        let started = Instant::now();
        let writers = (0..INSTANCES).map(|w| {
            let plugin = plugin.clone();
            async move {
                for round in 0..ROUNDS {
                    let collection = "videos";
                    let ops: Vec<Value> = (0..OPS)
                        .map(|i| {
                            json!({"update": {"filter": {"_id": format!("w{w}-{i}")},
                                "update": {"$inc": {"n": 1}}, "upsert": true}})
                        })
                        .collect();
                    // Any answer will do (a drop may race a write); no answer is the failure.
                    let script = json!({"steps": [{"call": "bulk-write", "collection": collection,
                        "ordered": false, "ops": ops, "expect": "*"}]});
                    tokio::time::timeout(BOUND, harness::run_script(&plugin, &script))
                        .await
                        .map_err(|_| {
                            anyhow::anyhow!("writer {w}, round {round}: no answer within {BOUND:?}")
                        })??;
                }
                Ok::<_, anyhow::Error>(())
            }
        });
        let churn = async {
            for i in 0..20 {
                let step = async {
                    f.coll("channels").insert_one(doc! {"i": i as i64}).await?;
                    f.coll("channels").drop().await?;
                    f.db.create_collection(format!("extra_{i}")).await?;
                    f.db.collection::<Document>(&format!("extra_{i}"))
                        .drop()
                        .await
                };
                tokio::time::timeout(BOUND, step)
                    .await
                    .map_err(|_| anyhow::anyhow!("drop/create {i}: no answer within {BOUND:?}"))?
                    .with_context(|| format!("drop/create {i}"))?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok::<_, anyhow::Error>(())
        };
        let (written, churned) = tokio::join!(futures::future::try_join_all(writers), churn);
        written?;
        churned?;
        within(
            &f.mongodb,
            "ping after the storm",
            f.db.run_command(doc! {"ping": 1}),
        )
        .await?;
        // A last bulk write lands whole: the server still takes writes.
        let ops: Vec<Value> = (0..OPS)
            .map(|i| json!({"insert": {"_id": format!("after-{i}")}}))
            .collect();
        f.run(
            json!({"steps": [{"call": "bulk-write", "collection": "videos", "ordered": true,
            "ops": ops, "expect": {"ok": {"inserted": OPS, "matched": 0, "modified": 0,
            "deleted": 0, "upserted": 0}}}]}),
        )
        .await?;
        let after = within(
            &f.mongodb,
            "counting",
            f.coll("videos")
                .count_documents(doc! {"_id": {"$regex": "^after-"}}),
        )
        .await?;
        ensure!(after == OPS as u64, "{after} of {OPS} documents stored");
        let updated = within(
            &f.mongodb,
            "counting updates",
            f.coll("videos").count_documents(doc! {"n": ROUNDS as i32}),
        )
        .await?;
        ensure!(
            updated == (INSTANCES * OPS) as u64,
            "{updated} of {} documents updated {ROUNDS} times",
            INSTANCES * OPS
        );
        eprintln!(
            "{INSTANCES} writers × {ROUNDS} bulk writes of {OPS} updates with 20 creates and \
             drops: {:?}",
            started.elapsed()
        );
        Ok(())
    })
    .await
}

/// Every read the host makes carries `maxTimeMS` = the host-call timeout, so that the
/// server stops a read the host no longer waits for. FerretDB 1.24 honours it on `find`
/// and `aggregate` (which `count` is): a scan of 20 000 documents with a filter it cannot
/// push down to PostgreSQL stops with MaxTimeMSExpired (50) at 1 ms. (Its timer covers the
/// command that runs the query; a cursor's later `getMore` is bounded by the host side.)
#[tokio::test]
async fn the_server_honours_max_time_ms_on_reads() -> Result<()> {
    with_fixture(async |f| {
        let docs: Vec<Document> = (0..20_000).map(|i| doc! {"n": i, "pad": "x"}).collect();
        within(&f.mongodb, "seeding", f.coll("videos").insert_many(docs)).await?;
        let stored = within(
            &f.mongodb,
            "counting",
            f.coll("videos").count_documents(doc! {}),
        )
        .await?;
        ensure!(stored == 20_000, "seeded {stored} of 20000 documents");
        // One batch for the whole answer: FerretDB's timer covers the command that runs
        // the query, not a later `getMore`.
        let slow = async {
            let cursor = f
                .coll("videos")
                .find(doc! {"n": {"$gt": -1}})
                .batch_size(100_000)
                .max_time(Duration::from_millis(1))
                .await?;
            cursor.try_collect::<Vec<_>>().await
        };
        let outcome = tokio::time::timeout(Duration::from_secs(30), slow)
            .await
            .context("the read was not stopped")?;
        match outcome {
            Err(e) => match &*e.kind {
                mongodb::error::ErrorKind::Command(c) => {
                    ensure!(c.code == 50, "expected MaxTimeMSExpired (50), got {c:?}")
                }
                other => anyhow::bail!("expected MaxTimeMSExpired, got {other:?}"),
            },
            // FerretDB 1.24 sometimes ends the cursor early at the deadline, answering with
            // the documents read so far instead of error 50: the work stopped all the same.
            Ok(found) => ensure!(
                found.len() < 20_000,
                "the read finished ({} documents) within 1 ms",
                found.len()
            ),
        }
        // `count` (an aggregation) too.
        let counted = within(&f.mongodb, "counting with maxTimeMS", async {
            Ok::<_, anyhow::Error>(
                f.coll("videos")
                    .count_documents(doc! {"n": {"$gt": -1}})
                    .max_time(Duration::from_millis(1))
                    .await,
            )
        })
        .await?;
        match counted {
            Err(e) => match &*e.kind {
                mongodb::error::ErrorKind::Command(c) => {
                    ensure!(c.code == 50, "expected MaxTimeMSExpired (50), got {c:?}")
                }
                other => anyhow::bail!("expected MaxTimeMSExpired, got {other:?}"),
            },
            Ok(n) => ensure!(n < 20_000, "the count finished ({n}) within 1 ms"),
        }
        // Through the host, a read the server cuts short is a `timeout`, never a shorter
        // answer taken for the whole one.
        let hasty = f.hasty_probe(1).await?;
        for call in ["find", "count"] {
            let script = json!({"steps": [{"call": call, "collection": "videos",
                "filter": {"n": {"$gt": -1}}, "expect": {"err": "timeout"}}]});
            harness::run_script(&hasty, &script)
                .await
                .with_context(|| format!("{call} with a 1 ms host-call timeout"))?;
        }
        Ok(())
    })
    .await
}

/// What PostgreSQL counts of the table under one FerretDB collection.
#[derive(Debug, Clone, Copy)]
struct TableCounts {
    /// Whole-table (sequential) scans begun.
    seq_scans: i64,
    /// Rows read by whole-table (sequential) scans.
    seq_read: i64,
    /// Index scans begun.
    idx_scans: i64,
    /// Rows updated.
    updated: i64,
}

/// The PostgreSQL table FerretDB keeps a collection in, with a connection to read its
/// statistics.
struct FerretTable {
    pg: sqlx::PgConnection,
    name: String,
}

impl FerretTable {
    /// The table of `f`'s collection `collection`; fails unless the server is FerretDB (what
    /// these checks are about is the FerretDB `cargo xtask services up` starts).
    async fn of(f: &Fixture, collection: &str) -> Result<FerretTable> {
        let info = within(
            &f.mongodb,
            "buildInfo",
            f.db.run_command(doc! {"buildInfo": 1}),
        )
        .await?;
        ensure!(
            info.contains_key("ferretdbVersion"),
            "{}: not FerretDB (this checks the FerretDB `cargo xtask services up` starts)",
            f.mongodb
        );
        // FerretDB keeps a collection in the table `<database>.<collection>_<hash>` of its
        // PostgreSQL database.
        use sqlx::Connection as _;
        let options = common::settings()
            .postgres
            .connect_options()?
            .database("ferretdb");
        let mut pg = sqlx::PgConnection::connect_with(&options)
            .await
            .context("connecting to FerretDB's PostgreSQL database")?;
        let name: String = sqlx::query_scalar(
            "select format('%I.%I', schemaname, tablename) from pg_tables \
             where schemaname = $1 and tablename like $2 || '\\_%'",
        )
        .bind(f.db.name())
        .bind(collection)
        .fetch_one(&mut pg)
        .await
        .context("finding the collection's table")?;
        Ok(FerretTable { pg, name })
    }

    /// The most statements seen waiting for a lock on the table at once, looking every
    /// 50 ms for `during`.
    async fn most_waiting(&mut self, during: Duration) -> Result<i64> {
        let (schema, table) = self.name.split_once('.').context("a table's full name")?;
        let (schema, table) = (schema.to_string(), table.to_string());
        let until = Instant::now() + during;
        let mut most = 0;
        while Instant::now() < until {
            let waiting: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' \
                 and position($1 in query) > 0 and position($2 in query) > 0",
            )
            .bind(&schema)
            .bind(&table)
            .fetch_one(&mut self.pg)
            .await?;
            most = most.max(waiting);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(most)
    }

    /// Locks the table exclusively (every statement on it waits) from when this returns
    /// until `hold` has passed, on a connection of its own; the task ends with the lock.
    async fn lock_for(&self, hold: Duration) -> Result<tokio::task::JoinHandle<Result<()>>> {
        use sqlx::Connection as _;
        let options = common::settings()
            .postgres
            .connect_options()?
            .database("ferretdb");
        let mut pg = sqlx::PgConnection::connect_with(&options).await?;
        sqlx::query("begin").execute(&mut pg).await?;
        sqlx::query(&format!(
            "lock table {} in access exclusive mode",
            self.name
        ))
        .execute(&mut pg)
        .await?;
        Ok(tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            sqlx::query("commit").execute(&mut pg).await?;
            Ok(())
        }))
    }

    /// The table's counts once `ready` holds of them. Statistics reach
    /// pg_stat_user_tables within about 10 s of a session going idle, so this polls, for
    /// up to 30 s.
    async fn counts_when(
        &mut self,
        what: &str,
        ready: impl Fn(&TableCounts) -> bool,
    ) -> Result<TableCounts> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (seq_scans, seq_read, idx_scans, updated): (i64, i64, i64, i64) = sqlx::query_as(
                "select seq_scan, coalesce(seq_tup_read, 0), coalesce(idx_scan, 0), n_tup_upd \
                 from pg_stat_user_tables where relid = $1::regclass",
            )
            .bind(&self.name)
            .fetch_one(&mut self.pg)
            .await?;
            let counts = TableCounts {
                seq_scans,
                seq_read,
                idx_scans,
                updated,
            };
            if ready(&counts) {
                return Ok(counts);
            }
            ensure!(
                Instant::now() < deadline,
                "{}: {what} not counted after 30 s ({counts:?})",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// `n` documents `{_id: "d<i>", rev: 1, n: i, pad: <1 KiB>}` in `videos`, inserted in order.
async fn seed_videos(f: &Fixture, n: usize) -> Result<()> {
    let pad = "x".repeat(1024);
    let seeded: Vec<Document> = (0..n)
        .map(|i| doc! {"_id": format!("d{i}"), "rev": 1, "n": i as i64, "pad": &pad})
        .collect();
    within(&f.mongodb, "seeding", f.coll("videos").insert_many(seeded)).await?;
    Ok(())
}

/// The FerretDB that `cargo xtask services up` starts finds a document by `_id` through an
/// index: FerretDB 1.24 filters by `_id` with JSON containment, which its own btree index
/// cannot serve, so each update by `_id` used to read the whole collection; `services up`
/// gives every collection table a GIN index that serves it (`ferretdb_id_index.sql`).
/// Counted by PostgreSQL: 50 updates by `_id` (and `rev`, as the catalog handler's) in a
/// collection of 2 000 documents read fewer rows in sequence than one whole-collection scan.
#[tokio::test]
async fn ferretdb_updates_by_id_do_not_read_the_collection() -> Result<()> {
    const DOCS: usize = 2_000;
    const UPDATES: usize = 50;
    with_fixture(async |f| {
        seed_videos(f, DOCS).await?;
        let mut table = FerretTable::of(f, "videos").await?;
        let before = table.counts_when("the seeding", |_| true).await?;
        for i in 0..UPDATES {
            let id = format!("d{}", i * 37 % DOCS);
            let done = within(
                &f.mongodb,
                "an update by _id",
                f.coll("videos")
                    .update_one(doc! {"_id": &id, "rev": 1}, doc! {"$inc": {"n": 1}}),
            )
            .await?;
            ensure!(done.modified_count == 1, "{id}: {done:?}");
        }
        let after = table
            .counts_when("the updates", |c| c.updated >= UPDATES as i64)
            .await?;
        let read = after.seq_read - before.seq_read;
        ensure!(
            read < DOCS as i64,
            "{UPDATES} updates by _id read {read} rows of {} in sequence \
             (one whole scan is {DOCS})",
            table.name
        );
        Ok(())
    })
    .await
}

/// A `find` that looks documents up by a list of `_id`s answers the same whether the host
/// reads them with one `$in` or one query per id, and once the host has seen both cost,
/// it stops reading the whole collection for them: FerretDB 1.24 scans the collection for
/// `$in` (a scan of 4 000 documents against ten lookups through the `_id` index). The
/// first find takes `$in`, the second one query per id (each way tried once), the next
/// ones the cheaper; all four answer exactly the ids asked for (a repeated id once, an
/// absent one not at all), with the projection applied. Counted by PostgreSQL: the last
/// two began an index scan per id and read no rows in sequence.
#[tokio::test]
async fn finds_by_ids_answer_alike_and_stop_reading_the_whole_collection() -> Result<()> {
    const DOCS: usize = 4_000;
    with_fixture(async |f| {
        seed_videos(f, DOCS).await?;
        let mut table = FerretTable::of(f, "videos").await?;
        let before = table.counts_when("the seeding", |_| true).await?;
        // Ten ids to read, in the order they were inserted (the order of a whole scan),
        // one of them twice and one absent.
        let wanted = [3, 5, 17, 17, 230, 404, 999, 1200, 1500, 1777, 1999];
        let mut ids: Vec<String> = wanted.iter().map(|i| format!("d{i}")).collect();
        ids.insert(5, "absent".into());
        let expected: Vec<Value> = [3, 5, 17, 230, 404, 999, 1200, 1500, 1777, 1999]
            .iter()
            .map(|i| json!({"_id": format!("d{i}"), "n": i}))
            .collect();
        let find = json!({"call": "find", "collection": "videos",
                          "filter": {"_id": {"$in": ids}},
                          "options": {"projection": {"n": 1}},
                          "expect": {"ok": expected}});
        let per_find = expected.len() as i64 + 1; // the ids, the absent one included

        // The host's connection pool opened first, on another collection (whose own two
        // finds are `$in` then one query per id): otherwise the first reads per id of
        // `videos` also pay for opening a connection each, which over TLS with a login
        // checked by PostgreSQL (the secured pass) can cost more than the whole scan, and
        // the host rightly takes `$in` until that estimate fades.
        let warm = json!({"call": "find", "collection": "channels",
                          "filter": {"_id": {"$in": ids}},
                          "options": {},
                          "expect": {"ok": []}});
        f.run(json!({"steps": [warm, warm]})).await?;

        f.run(json!({"steps": [find, find]})).await?;
        // Both ways tried: the `$in` scanned the collection, the reads by id used the index.
        let learnt = table
            .counts_when("the first two finds", |c| {
                c.seq_read >= before.seq_read + DOCS as i64
                    && c.idx_scans >= before.idx_scans + per_find
            })
            .await?;

        f.run(json!({"steps": [find, find]})).await?;
        let after = table
            .counts_when("the last two finds", |c| {
                c.idx_scans >= learnt.idx_scans + 2 * per_find
            })
            .await?;
        let read = after.seq_read - learnt.seq_read;
        ensure!(
            read < DOCS as i64,
            "the last two finds by ids read {read} rows of {} in sequence \
             (one whole scan is {DOCS})",
            table.name
        );
        Ok(())
    })
    .await
}

/// A list of ids read one query per id is bounded by the host-call timeout: the call ends
/// at its limit, and no read begins on the server after it. The host reads by one `$in`
/// or by one query per id, whichever it has found cheaper for the number of ids (see
/// `keyed`); so that 100 ids are read one by one, the first `$in` is made dear, held 1 s
/// by a lock on the collection's table, and the reads one by one are learnt cheap; then the
/// table is locked again, the reads wait, and the call fails as a timeout at 2 s.
/// Seen by PostgreSQL: while the lock is held, several statements wait on the table at once
/// (the reads in flight, one per id: a `$in` is one statement); once it is gone, no row is
/// read in sequence (no `$in`), at most the reads that were in flight (5) are counted as
/// index scans, and none is in the 12 s after.
#[tokio::test]
async fn a_long_list_of_ids_read_one_by_one_stops_with_the_call() -> Result<()> {
    const IDS: i64 = 100;
    with_fixture(async |f| {
        seed_videos(f, 2_000).await?;
        let hasty = f.hasty_probe(2_000).await?;
        let mut table = FerretTable::of(f, "videos").await?;
        let small = json!({"call": "find", "collection": "videos",
                           "filter": {"_id": {"$in": ["d1", "d2"]}},
                           "options": {"projection": {"n": 1}},
                           "expect": {"ok": [{"_id": "d1", "n": 1}, {"_id": "d2", "n": 2}]}});
        // The first read of a list of ids is one `$in`: it waits out a 1 s lock.
        let held = table.lock_for(Duration::from_secs(1)).await?;
        harness::run_script(&hasty, &json!({"steps": [small.clone()]})).await?;
        held.await??;
        // The second reads one id at a time (not tried yet), the third too (cheaper).
        harness::run_script(&hasty, &json!({"steps": [small.clone(), small]})).await?;
        let before = table
            .counts_when("the small finds", |c| c.idx_scans >= 4)
            .await?;
        let held = table.lock_for(Duration::from_secs(5)).await?;
        let ids: Vec<String> = (0..IDS).map(|i| format!("d{i}")).collect();
        let long = json!({"steps": [{"call": "find", "collection": "videos",
                                     "filter": {"_id": {"$in": ids}},
                                     "expect": {"err": "timeout"}}]});
        let (called, waiting) = tokio::join!(
            harness::run_script(&hasty, &long),
            table.most_waiting(Duration::from_millis(1_500)),
        );
        called?;
        let waiting = waiting?;
        ensure!(
            waiting >= 2,
            "the find of {IDS} ids had {waiting} statements waiting at once: not one per id"
        );
        held.await??;
        tokio::time::sleep(Duration::from_secs(12)).await;
        let read = table.counts_when("the long find", |_| true).await?;
        tokio::time::sleep(Duration::from_secs(12)).await;
        let later = table.counts_when("after the long find", |_| true).await?;
        let scans = read.idx_scans - before.idx_scans;
        ensure!(
            scans <= 5,
            "the find of {IDS} ids made {scans} index scans: more than the 5 in flight"
        );
        ensure!(
            read.seq_read == before.seq_read,
            "the find of {IDS} ids read {} rows in sequence, not id by id",
            read.seq_read - before.seq_read
        );
        ensure!(
            later.idx_scans == read.idx_scans,
            "reads went on after the call ended: {} index scans, then {}",
            read.idx_scans,
            later.idx_scans
        );
        Ok(())
    })
    .await
}

/// A `$in` read taken again while the keys read one by one are known is given a time limit
/// (twice what they cost one by one, at least 20 ms). Here the first find of 40 ids is one
/// `$in`, the second reads them one by one, the third is a `$in` again (the cheaper); the
/// fourth, a `$in` too, is held by a lock on the collection's table: it is dropped at its
/// limit and the ids are read one by one, which answer once the lock is gone. PostgreSQL
/// counts the scans of the table: one for a `$in`, one per id read one by one (by index or
/// in sequence, as its planner finds a table this small cheaper to read). (Without the
/// limit the `$in` waited the lock out, then read the whole table: a `$in` estimated on a
/// small collection, taken again once it had grown, took 300 ms in the platform's paced
/// run.)
#[tokio::test]
async fn a_lookup_by_in_past_its_time_limit_reads_the_keys_one_by_one() -> Result<()> {
    const DOCS: usize = 60;
    const IDS: i64 = 40;
    with_fixture(async |f| {
        seed_videos(f, DOCS).await?;
        let probe = f.hasty_probe(5_000).await?;
        let mut table = FerretTable::of(f, "videos").await?;
        let scans = |c: &TableCounts| c.seq_scans + c.idx_scans;
        let ids: Vec<String> = (0..IDS).map(|i| format!("d{i}")).collect();
        let found: Vec<Value> = (0..IDS)
            .map(|i| json!({"_id": format!("d{i}"), "n": i}))
            .collect();
        let find = json!({"call": "find", "collection": "videos",
                          "filter": {"_id": {"$in": ids}},
                          "options": {"projection": {"n": 1}},
                          "expect": {"ok": found}});
        let start = table.counts_when("the seeding", |_| true).await?;
        let three = json!({"steps": [find.clone(), find.clone(), find.clone()]});
        harness::run_script(&probe, &three).await?;
        let before = table
            .counts_when("the three finds", |c| scans(c) >= scans(&start) + IDS + 2)
            .await?;
        ensure!(
            scans(&before) - scans(&start) < 2 * IDS,
            "the three finds made {} scans: the third read the ids one by one, not one `$in`",
            scans(&before) - scans(&start)
        );
        let held = table.lock_for(Duration::from_secs(1)).await?;
        harness::run_script(&probe, &json!({"steps": [find]})).await?;
        held.await??;
        // Counted within some 10 s; a `$in` that waited the lock out is one scan.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let after = table
            .counts_when("the find held by the lock", |c| scans(c) > scans(&before))
            .await?;
        let made = scans(&after) - scans(&before);
        ensure!(
            (IDS..=IDS + 5).contains(&made),
            "the find held by the lock made {made} scans of the table, not one per id: its \
             `$in` waited the lock out"
        );
        Ok(())
    })
    .await
}

/// A lookup by ids cut off by the host-call timeout counts as dear as it took: the first
/// read of a list of ids is one `$in` (nothing is known yet), here held past the call's
/// 500 ms limit by a lock on the collection's table; the next reads, with the lock gone,
/// go one id at a time, and PostgreSQL sees no row read in sequence for them. (A cut-off
/// read that was not counted left `$in` unknown, and so taken again by every read: on a
/// collection whose `$in` outlasts the limit, every lookup failed.)
#[tokio::test]
async fn a_lookup_cut_off_by_the_time_limit_is_counted() -> Result<()> {
    with_fixture(async |f| {
        seed_videos(f, 2_000).await?;
        let hasty = f.hasty_probe(500).await?;
        let mut table = FerretTable::of(f, "videos").await?;
        let find = |expect: Value| {
            json!({"call": "find", "collection": "videos",
                   "filter": {"_id": {"$in": ["d1", "d2"]}},
                   "options": {"projection": {"n": 1}},
                   "expect": expect})
        };
        let held = table.lock_for(Duration::from_millis(1_500)).await?;
        harness::run_script(&hasty, &json!({"steps": [find(json!({"err": "timeout"}))]})).await?;
        held.await??;
        // Whatever the cut-off read left running on the server has ended, and PostgreSQL
        // has counted it, by now.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let before = table.counts_when("the cut-off find", |_| true).await?;
        let ok = find(json!({"ok": [{"_id": "d1", "n": 1}, {"_id": "d2", "n": 2}]}));
        harness::run_script(&hasty, &json!({"steps": [ok.clone(), ok]})).await?;
        let after = table
            .counts_when("the next finds", |c| c.idx_scans >= before.idx_scans + 4)
            .await?;
        ensure!(
            after.seq_read == before.seq_read,
            "the finds after the cut-off one read {} rows in sequence: `$in` again",
            after.seq_read - before.seq_read
        );
        Ok(())
    })
    .await
}
