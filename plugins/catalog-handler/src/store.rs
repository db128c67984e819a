//! The glue: reads what a batch needs, folds the batch ([`crate::fold`]) and writes the
//! result through the `documents` imports, in a fixed number of calls per batch whatever
//! its size: one `find` of the titles it names, one `put-blobs` of the assets it stores,
//! one `bulk-write` of the titles (one insert or update per title), one `bulk-write` of the
//! ratings counted; one `find` of its ratings already counted only for titles whose summary
//! cannot tell (`update`'s module docs).
//!
//! **What is kept between batches.** When the host reuses the instance
//! (`instance = "reused"`), the titles it read and wrote stay in memory ([`CACHE`]) and are
//! not read again: every update matches the `rev` it was computed from, so a document
//! another writer changed since (a second host, a version being swapped out) makes the
//! write match less than it should; the batch is then retried and the memory dropped, so
//! the retry reads afresh. A title published in the batch is not read at all on a first
//! attempt: should it exist after all (a replay), its insert fails on the duplicate key
//! and the retry reads it. A per-batch instance starts empty every time and reads
//! everything it needs.
//!
//! Which assets a batch stores is what the fold decides, event by event (an asset already
//! referenced is not stored again; an event of a title not stored yet is retried), so the
//! batch is folded twice: once with every upload answering the digest its event names, to
//! learn the assets the fold stores, which are then stored in one call; then for real, each
//! upload answered by that call (an upload that call did not make, e.g. the second upload of
//! one asset id in a batch, is made then, alone, in order).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{Value, json};

use crate::event::{Asset, CatalogEvent};
use crate::fold::{self, Item, Loaded, Plan};
use crate::polyhost::platform::documents::{self as docs, FindOptions, NewBlob, UpdateOp, WriteOp};
use crate::polyhost::platform::types::{Error, ErrorKind};
use crate::update::{ASSETS_BUCKET, RATINGS, TITLES};
use polyhost_guest::Verdict;

/// At most this many titles are kept between batches; past it, the memory starts over.
const CACHE_MAX: usize = 5_000;

thread_local! {
    /// The titles as this instance last read or wrote them, by id (see the module docs).
    static CACHE: RefCell<HashMap<String, Value>> = RefCell::new(HashMap::new());
}

/// Keeps `docs` (titles as stored) for the next batches.
fn remember(docs: impl IntoIterator<Item = Value>) {
    CACHE.with_borrow_mut(|cache| {
        for doc in docs {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            if let Some(id) = doc["_id"].as_str() {
                cache.insert(id.to_string(), doc);
            }
        }
    });
}

/// Drops every title kept: the store may differ from them.
fn forget_all() {
    CACHE.with_borrow_mut(HashMap::clear);
}

/// Applies the batch `items`, handed over for the `attempt`-th time (0 the first);
/// one verdict per item, in order.
pub fn apply_batch(
    items: &[Item<'_>],
    attempt: u32,
    out_of_time: impl Fn() -> bool,
) -> Vec<Verdict> {
    let loaded = match load(items, attempt) {
        Ok(loaded) => loaded,
        Err(verdict) => {
            // Nothing was applied: every event is retried (or rejected) as a whole.
            return items
                .iter()
                .map(|item| match item.event {
                    Ok(_) => verdict.clone(),
                    Err(reason) => Verdict::Reject(reason.to_string()),
                })
                .collect();
        }
    };
    let mut wanted = Vec::new();
    fold::fold(
        items,
        loaded.clone(),
        |asset| {
            wanted.push(asset.clone());
            Ok(asset.sha256.clone())
        },
        || false,
    );
    let mut stored = upload_all(wanted);
    let mut plan = fold::fold(
        items,
        loaded,
        |asset| {
            let key = (asset.asset_id.clone(), asset.sha256.clone());
            stored.remove(&key).unwrap_or_else(|| upload(asset))
        },
        out_of_time,
    );
    match write(&plan) {
        Ok(()) => remember(std::mem::take(&mut plan.titles)),
        Err(verdict) => {
            // Some writes may have happened: every event applied in memory is handed back
            // (a reject stays one), to be applied again from a fresh read. Applying them
            // again is idempotent (`update`'s module docs).
            forget_all();
            for v in &mut plan.verdicts {
                if *v == Verdict::Ok {
                    *v = verdict.clone();
                }
            }
        }
    }
    plan.verdicts
}

/// The titles the batch names (kept ones from memory, the others read, but for titles
/// published in the batch on a first attempt), and which of its ratings were counted
/// before, read for the titles whose summary cannot tell.
fn load(items: &[Item<'_>], attempt: u32) -> Result<Loaded, Verdict> {
    let mut title_ids = BTreeSet::new();
    let mut published = HashSet::new();
    for item in items {
        let Ok(event) = item.event else { continue };
        title_ids.insert(event.title_id());
        match event {
            CatalogEvent::Related {
                related_title_id, ..
            } => {
                title_ids.insert(related_title_id);
            }
            CatalogEvent::Published(title) => {
                published.insert(title.title_id.as_str());
            }
            _ => {}
        }
    }
    let mut loaded = Loaded::default();
    let mut unknown = BTreeSet::new();
    CACHE.with_borrow(|cache| {
        for &id in &title_ids {
            match cache.get(id) {
                Some(doc) => {
                    loaded.titles.insert(id.to_string(), doc.clone());
                }
                None if attempt == 0 && published.contains(id) => {}
                None => {
                    unknown.insert(id);
                }
            }
        }
    });
    let read = find_in(TITLES, &unknown, None)?;
    for doc in &read {
        if let Some(id) = doc["_id"].as_str() {
            loaded.titles.insert(id.to_string(), doc.clone());
        }
    }
    remember(read);
    let rating_ids: BTreeSet<&str> = items
        .iter()
        .filter(|item| match item.event {
            Ok(CatalogEvent::Rated { title_id, .. }) => loaded
                .titles
                .get(title_id)
                .is_some_and(|doc| summary_cannot_tell(doc, item.at.0)),
            _ => false,
        })
        .map(|item| item.id)
        .collect();
    let counted = find_in(RATINGS, &rating_ids, Some(json!({"_id": 1})))?;
    loaded.counted = counted
        .iter()
        .filter_map(|d| d["_id"].as_str().map(str::to_string))
        .collect();
    Ok(loaded)
}

/// Whether the title's stored summary cannot tell which ratings of `partition` it counted:
/// it counted some, but does not say where the last one is, or says it of another
/// partition.
fn summary_cannot_tell(title: &Value, partition: i32) -> bool {
    let counted_some = crate::update::rating_of(title).is_none_or(|(count, ..)| count > 0);
    counted_some
        && crate::update::counted_through(title).is_none_or(|(p, _)| p != i64::from(partition))
}

/// The documents of `collection` whose `_id` is one of `ids`, in one call (the host reads
/// them whichever way the server answers faster: FerretDB 1.24 reads the whole collection
/// for `$in`, so there the host looks the ids up one by one).
fn find_in(
    collection: &str,
    ids: &BTreeSet<&str>,
    projection: Option<Value>,
) -> Result<Vec<Value>, Verdict> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let filter = json!({"_id": {"$in": ids}}).to_string();
    let options = FindOptions {
        sort: None,
        projection: projection.map(|p| p.to_string()),
        skip: None,
        limit: None,
    };
    docs::find(collection, &filter, &options)
        .map_err(host)?
        .iter()
        .map(|text| {
            serde_json::from_str(text).map_err(|e| {
                Verdict::Retry(format!(
                    "a document of {collection} read back as bad JSON: {e}"
                ))
            })
        })
        .collect()
}

/// The most blobs one `put-blobs` takes (the host's bound).
const BLOBS_PER_CALL: usize = 256;

/// Stores `assets` (the first of each id) in one `put-blobs` call per
/// [`BLOBS_PER_CALL`]; answers, by (asset id, declared SHA-256), the SHA-256 the host
/// computed, or the verdict of the call that failed.
fn upload_all(assets: Vec<Asset>) -> HashMap<(String, String), Result<String, Verdict>> {
    let mut ids = HashSet::new();
    let firsts: Vec<Asset> = assets
        .into_iter()
        .filter(|a| ids.insert(a.asset_id.clone()))
        .collect();
    let mut answers = HashMap::new();
    for call in firsts.chunks(BLOBS_PER_CALL) {
        let blobs: Vec<NewBlob> = call
            .iter()
            .map(|asset| NewBlob {
                id: asset.asset_id.clone(),
                content_type: asset.content_type.clone(),
                data: asset.bytes.clone(),
                metadata: crate::update::blob_metadata(asset).to_string(),
            })
            .collect();
        let answer = docs::put_blobs(ASSETS_BUCKET, &blobs).map_err(host);
        for (i, asset) in call.iter().enumerate() {
            let key = (asset.asset_id.clone(), asset.sha256.clone());
            let one = match &answer {
                Ok(infos) => infos
                    .get(i)
                    .map(|info| info.sha256.clone())
                    .ok_or_else(|| Verdict::Retry("put-blobs answered fewer blobs".into())),
                Err(verdict) => Err(verdict.clone()),
            };
            answers.insert(key, one);
        }
    }
    answers
}

/// Stores an asset's bytes under its id; answers the SHA-256 the host computed.
fn upload(asset: &Asset) -> Result<String, Verdict> {
    let metadata = crate::update::blob_metadata(asset).to_string();
    docs::put_blob(
        ASSETS_BUCKET,
        &asset.asset_id,
        &asset.content_type,
        &asset.bytes,
        &metadata,
    )
    .map(|info| info.sha256)
    .map_err(host)
}

/// The plan's writes: the titles first, then the ratings documents (see `fold`'s docs for
/// why in this order).
fn write(plan: &Plan) -> Result<(), Verdict> {
    let mut ops: Vec<WriteOp> = plan
        .inserts
        .iter()
        .map(|doc| WriteOp::Insert(doc.to_string()))
        .collect();
    ops.extend(plan.updates.iter().map(|(filter, update)| {
        WriteOp::Update(UpdateOp {
            filter: filter.to_string(),
            update: update.to_string(),
            upsert: false,
            many: false,
        })
    }));
    if !ops.is_empty() {
        let done = docs::bulk_write(TITLES, &ops, false).map_err(write_failure)?;
        if done.inserted != plan.inserts.len() as u64 || done.matched != plan.updates.len() as u64 {
            return Err(Verdict::Retry(format!(
                "a title changed while the batch was applied (inserted {} of {}, matched {} \
                 of {})",
                done.inserted,
                plan.inserts.len(),
                done.matched,
                plan.updates.len()
            )));
        }
    }
    if !plan.ratings.is_empty() {
        let ops: Vec<WriteOp> = plan
            .ratings
            .iter()
            .map(|doc| WriteOp::Insert(doc.to_string()))
            .collect();
        match docs::bulk_write(RATINGS, &ops, false) {
            Ok(_) => {}
            // Some were inserted before (a retry after the titles were written): fine if
            // every one is there now.
            Err(e) if e.kind == ErrorKind::Conflict => {
                let ids: BTreeSet<&str> = plan
                    .ratings
                    .iter()
                    .filter_map(|d| d["_id"].as_str())
                    .collect();
                let found: HashSet<String> = find_in(RATINGS, &ids, Some(json!({"_id": 1})))?
                    .iter()
                    .filter_map(|d| d["_id"].as_str().map(str::to_string))
                    .collect();
                if found.len() != ids.len() {
                    return Err(write_failure(e));
                }
            }
            Err(e) => return Err(write_failure(e)),
        }
    }
    Ok(())
}

/// A failed write: `retry` when trying again may succeed (a conflict means another writer
/// got there first: the next attempt reads afresh), else `reject`.
fn write_failure(e: Error) -> Verdict {
    if e.kind == ErrorKind::Conflict {
        Verdict::Retry(format!("documents: {:?}: {}", e.kind, e.message))
    } else {
        host(e)
    }
}

/// A host error: `retry` when trying again may succeed, else `reject`.
fn host(e: Error) -> Verdict {
    let reason = format!("documents: {:?}: {}", e.kind, e.message);
    Verdict::after_host_error(e.transient, reason)
}
