//! A batch folded into one write per title: the batch's events are applied, in order, to
//! the titles as read at the start of the batch, in memory; what changed is then written
//! with one insert (a title published in this batch) or one update (any other) per title,
//! and one insert per counted rating. Pure, so tested natively; [`crate::store`] does the
//! reads and writes.
//!
//! The in-memory application is exactly the per-event logic of `update`'s module docs,
//! event by event, so the stored result is the one applying the events one by one would
//! give: a `published` event of a title already published by another event is rejected; an
//! event of a title not stored yet is retried and holds back that title's later events
//! ([`polyhost_guest::in_key_order`]); a relation's forward side stays applied when its reverse side is
//! retried; an asset's blob is stored (through the `upload` callback) before its reference.
//!
//! A title's write is an update of only what changed: `$set` of the changed fields
//! (`name`, `genres`, `maturity_rating`, `cast`, `assets`, `rating`) and `$addToSet` with
//! `$each` of the new relations, so a reverse relation added by another title's event
//! needs no read-modify-write of the whole document. Every update matches the title's
//! `rev` as read and sets the next (`update`'s module docs), so one computed from a stale
//! document changes nothing, and [`Plan::titles`] holds each written title as the write
//! leaves it, for the next batch to start from.
//!
//! Ratings are counted once (`update`'s module docs): a rating at or before the summary's
//! `last_partition`/`last_offset` was counted; for a summary from before those were kept,
//! the summary's `last` is the last rating counted in the write that counted it, so on a
//! retry every rating of that title in the batch up to and including the one named `last`
//! was counted, and a rating whose `ratings` document exists ([`Loaded::counted`]) was
//! too.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use crate::event::{Asset, CatalogEvent};
use crate::update;
use polyhost_guest::{Verdict, in_key_order};

/// One event of the batch, as the fold sees it.
#[derive(Debug)]
pub struct Item<'a> {
    /// The event id.
    pub id: &'a str,
    /// Its key (the subject, the title, with its partition), which orders a title's events
    /// of one partition.
    pub key: Option<&'a str>,
    /// Where it is: (partition, offset).
    pub at: (i32, i64),
    /// The parsed event, or why it is rejected.
    pub event: Result<&'a CatalogEvent, &'a str>,
}

/// What was read before the fold.
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    /// The stored documents of the titles the batch names, by id.
    pub titles: HashMap<String, Value>,
    /// The rating events of the batch whose `ratings` document exists: counted before.
    pub counted: HashSet<String>,
}

/// The fold's result: a verdict per event and the writes that make the `ok` ones true.
#[derive(Debug, Default)]
pub struct Plan {
    /// One per event, in batch order.
    pub verdicts: Vec<Verdict>,
    /// Documents of titles published in this batch, with the batch's later changes.
    pub inserts: Vec<Value>,
    /// (filter, update) of each stored title that changed.
    pub updates: Vec<(Value, Value)>,
    /// `ratings` documents of the ratings counted.
    pub ratings: Vec<Value>,
    /// Every title inserted or updated, as the writes leave it (its `rev` the next one).
    pub titles: Vec<Value>,
}

/// A title in memory: as stored (if it is) and as the batch leaves it so far.
#[derive(Debug, Default)]
struct Working {
    stored: Option<Value>,
    current: Option<Value>,
}

/// Folds `items` (see the module docs). `upload` stores an asset's blob and answers its
/// SHA-256; `out_of_time` says when the batch's time budget is spent (the rest is retried).
pub fn fold(
    items: &[Item<'_>],
    loaded: Loaded,
    mut upload: impl FnMut(&Asset) -> Result<String, Verdict>,
    out_of_time: impl Fn() -> bool,
) -> Plan {
    let mut titles: HashMap<String, Working> = loaded
        .titles
        .into_iter()
        .map(|(id, doc)| {
            let working = Working {
                stored: Some(doc.clone()),
                current: Some(doc),
            };
            (id, working)
        })
        .collect();
    let mut counted = loaded.counted;
    let counted_by_summary = counted_by_summary(items, &titles);
    let mut ratings = Vec::new();

    let verdicts = in_key_order(
        items,
        |item| item.key,
        |item| {
            if out_of_time() {
                return Verdict::Retry("the batch's time budget is spent".to_string());
            }
            let event = match item.event {
                Ok(event) => event,
                Err(reason) => return Verdict::Reject(reason.to_string()),
            };
            match event {
                CatalogEvent::Published(title) => {
                    let w = working(&mut titles, &title.title_id);
                    match &w.current {
                        Some(doc) if doc["published_by"] == item.id => Verdict::Ok,
                        Some(_) => Verdict::Reject(format!(
                            "title {} was already published by another event",
                            title.title_id
                        )),
                        None => {
                            w.current = Some(update::title_document(title, item.id));
                            Verdict::Ok
                        }
                    }
                }
                CatalogEvent::Updated { title_id, changes } => {
                    let Some(doc) = working(&mut titles, title_id).current.as_mut() else {
                        return not_stored(title_id);
                    };
                    if let Value::Object(set) = &update::apply_changes(changes)["$set"] {
                        for (field, value) in set {
                            doc[field.as_str()] = value.clone();
                        }
                    }
                    Verdict::Ok
                }
                CatalogEvent::Related {
                    title_id,
                    related_title_id,
                    relation,
                } => {
                    let forward = update::relation_entry(related_title_id, *relation);
                    let Some(doc) = working(&mut titles, title_id).current.as_mut() else {
                        return not_stored(title_id);
                    };
                    add_to_set(doc, "relations", forward);
                    let reverse = update::relation_entry(title_id, relation.reverse());
                    let Some(doc) = working(&mut titles, related_title_id).current.as_mut() else {
                        return not_stored(related_title_id);
                    };
                    add_to_set(doc, "relations", reverse);
                    Verdict::Ok
                }
                CatalogEvent::AssetUploaded(asset) => {
                    let Some(doc) = working(&mut titles, &asset.title_id).current.as_ref() else {
                        return not_stored(&asset.title_id);
                    };
                    // The reference is written only after its blob was stored with this
                    // digest: the title holding exactly this entry means applied before.
                    let entry = update::asset_entry(asset);
                    if update::stale_asset_entries(doc, &asset.asset_id) == [entry] {
                        return Verdict::Ok;
                    }
                    let sha256 = match upload(asset) {
                        Ok(sha256) => sha256,
                        Err(verdict) => return verdict,
                    };
                    if sha256 != asset.sha256 {
                        return Verdict::Retry(format!(
                            "the blob {} was stored with the SHA-256 {sha256}, not {}",
                            asset.asset_id, asset.sha256
                        ));
                    }
                    let Some(doc) = working(&mut titles, &asset.title_id).current.as_mut() else {
                        return not_stored(&asset.title_id);
                    };
                    let entry = update::asset_entry(asset);
                    let stale = update::stale_asset_entries(doc, &asset.asset_id);
                    if stale != [entry.clone()] {
                        let mut assets: Vec<Value> = doc["assets"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|e| !stale.contains(e))
                            .collect();
                        assets.push(entry);
                        doc["assets"] = Value::Array(assets);
                    }
                    Verdict::Ok
                }
                CatalogEvent::Rated {
                    title_id,
                    user_id,
                    stars,
                } => {
                    if counted.contains(item.id) {
                        return Verdict::Ok;
                    }
                    let Some(doc) = working(&mut titles, title_id).current.as_mut() else {
                        return not_stored(title_id);
                    };
                    let Some((count, sum, _)) = update::rating_of(doc) else {
                        return Verdict::Reject(format!(
                            "title {title_id} has a malformed rating summary"
                        ));
                    };
                    if !counted_by_summary.contains(item.id) {
                        let (count, sum) = (count + 1, sum + i64::from(*stars));
                        doc["rating"] = json!({
                            "count": count, "sum": sum,
                            "average": update::average(count, sum), "last": item.id,
                            "last_partition": item.at.0, "last_offset": item.at.1,
                        });
                    }
                    counted.insert(item.id.to_string());
                    ratings.push(update::rating_document(item.id, title_id, user_id, *stars));
                    Verdict::Ok
                }
            }
        },
    );

    let mut plan = Plan {
        verdicts,
        ratings,
        ..Plan::default()
    };
    let mut ids: Vec<&String> = titles.keys().collect();
    // A stable order of writes, so that the same batch always writes the same way.
    ids.sort();
    for id in ids {
        let w = &titles[id];
        match (&w.stored, &w.current) {
            (None, Some(doc)) => {
                plan.inserts.push(doc.clone());
                plan.titles.push(doc.clone());
            }
            (Some(stored), Some(doc)) => {
                if let Some(write) = title_update(id, stored, doc) {
                    plan.updates.push(write);
                    let mut written = doc.clone();
                    written["rev"] = json!(update::revision(stored).unwrap_or(0) + 1);
                    plan.titles.push(written);
                }
            }
            _ => {}
        }
    }
    plan
}

/// The fields a title's events change with `$set`.
const SET_FIELDS: [&str; 6] = [
    "name",
    "genres",
    "maturity_rating",
    "cast",
    "assets",
    "rating",
];

/// The update that takes the stored title `stored` to `doc`; `None` when nothing changed.
fn title_update(id: &str, stored: &Value, doc: &Value) -> Option<(Value, Value)> {
    let mut set = serde_json::Map::new();
    for field in SET_FIELDS {
        if doc.get(field) != stored.get(field)
            && let Some(value) = doc.get(field)
        {
            set.insert(field.to_string(), value.clone());
        }
    }
    let before = stored["relations"].as_array().cloned().unwrap_or_default();
    let added: Vec<Value> = doc["relations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| !before.contains(r))
        .cloned()
        .collect();
    if set.is_empty() && added.is_empty() {
        return None;
    }
    let mut filter = update::by_id(id);
    let rev = update::revision(stored);
    filter["rev"] = rev.map_or_else(|| json!({"$exists": false}), |rev| json!(rev));
    set.insert("rev".into(), json!(rev.unwrap_or(0) + 1));
    let mut write = serde_json::Map::new();
    write.insert("$set".into(), Value::Object(set));
    if !added.is_empty() {
        write.insert("$addToSet".into(), json!({"relations": {"$each": added}}));
    }
    Some((filter, Value::Object(write)))
}

/// Appends `entry` to the array `field` of `doc` unless it is there (`$addToSet`).
fn add_to_set(doc: &mut Value, field: &str, entry: Value) {
    if !doc[field].is_array() {
        doc[field] = json!([]);
    }
    if let Some(items) = doc[field].as_array_mut()
        && !items.contains(&entry)
    {
        items.push(entry);
    }
}

/// The rating events of this batch its title's stored summary counted: a rating at or
/// before the summary's `last_partition`/`last_offset`, and the rating named `last` with
/// the title's ratings of this batch before it.
fn counted_by_summary<'a>(
    items: &[Item<'a>],
    titles: &HashMap<String, Working>,
) -> HashSet<&'a str> {
    let mut counted = HashSet::new();
    // Per title, its ratings of this batch not yet known to be counted.
    let mut earlier: HashMap<&str, Vec<&'a str>> = HashMap::new();
    for item in items {
        let Ok(CatalogEvent::Rated { title_id, .. }) = item.event else {
            continue;
        };
        let Some(stored) = titles.get(title_id).and_then(|w| w.stored.as_ref()) else {
            continue;
        };
        if update::counted_through(stored)
            .is_some_and(|(p, o)| p == i64::from(item.at.0) && item.at.1 <= o)
        {
            counted.insert(item.id);
        }
        let earlier = earlier.entry(title_id.as_str()).or_default();
        earlier.push(item.id);
        if update::rating_of(stored).and_then(|(_, _, last)| last) == Some(item.id) {
            counted.extend(earlier.drain(..));
        }
    }
    counted
}

/// The title `id` in memory (neither stored nor published yet when new).
fn working<'m>(titles: &'m mut HashMap<String, Working>, id: &str) -> &'m mut Working {
    titles.entry(id.to_string()).or_default()
}

fn not_stored(title_id: &str) -> Verdict {
    Verdict::Retry(format!("title {title_id} is not stored yet"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Body, Changes, Relation, Title};

    fn title(id: &str) -> CatalogEvent {
        CatalogEvent::Published(Title {
            title_id: id.into(),
            name: "N".into(),
            genres: vec![],
            year: 2000,
            maturity_rating: "12".into(),
            cast: vec![],
            body: Body::Movie { duration_min: 90 },
        })
    }

    fn rated(id: &str, stars: u8) -> CatalogEvent {
        CatalogEvent::Rated {
            title_id: id.into(),
            user_id: "u-1".into(),
            stars,
        }
    }

    fn renamed(id: &str, name: &str) -> CatalogEvent {
        CatalogEvent::Updated {
            title_id: id.into(),
            changes: Changes {
                name: Some(name.into()),
                ..Changes::default()
            },
        }
    }

    fn run(events: &[(&str, CatalogEvent)], loaded: Loaded) -> Plan {
        let items = items(events);
        fold(&items, loaded, |a| Ok(a.sha256.clone()), || false)
    }

    /// The items of `events`, at offsets 0, 1, … of partition 0.
    fn items<'a>(events: &'a [(&'a str, CatalogEvent)]) -> Vec<Item<'a>> {
        events
            .iter()
            .zip(0..)
            .map(|((id, e), offset)| Item {
                id,
                key: Some(e.title_id()),
                at: (0, offset),
                event: Ok(e),
            })
            .collect()
    }

    fn stored(id: &str, published_by: &str) -> Value {
        update::title_document(
            match &title(id) {
                CatalogEvent::Published(t) => t,
                _ => unreachable!(),
            },
            published_by,
        )
    }

    #[test]
    fn a_new_title_and_its_later_events_are_one_insert() {
        let plan = run(
            &[
                ("e1", title("t-1")),
                ("e2", renamed("t-1", "A")),
                ("e3", rated("t-1", 4)),
                ("e4", rated("t-1", 2)),
                ("e5", renamed("t-1", "B")),
            ],
            Loaded::default(),
        );
        assert!(plan.verdicts.iter().all(|v| *v == Verdict::Ok));
        assert_eq!(plan.inserts.len(), 1);
        assert!(plan.updates.is_empty());
        let doc = &plan.inserts[0];
        assert_eq!(doc["name"], "B");
        assert_eq!(
            doc["rating"],
            json!({"count": 2, "sum": 6, "average": 3.0, "last": "e4",
                   "last_partition": 0, "last_offset": 3})
        );
        assert_eq!(plan.ratings.len(), 2);
        assert_eq!(plan.ratings[1]["_id"], "e4");
    }

    #[test]
    fn a_stored_title_gets_one_update_of_what_changed() {
        let mut loaded = Loaded::default();
        loaded.titles.insert("t-1".into(), stored("t-1", "e0"));
        loaded.titles.insert("t-2".into(), stored("t-2", "e00"));
        let plan = run(
            &[
                ("e1", renamed("t-1", "A")),
                (
                    "e2",
                    CatalogEvent::Related {
                        title_id: "t-1".into(),
                        related_title_id: "t-2".into(),
                        relation: Relation::Sequel,
                    },
                ),
                ("e3", rated("t-1", 5)),
                ("e4", renamed("t-1", "B")),
            ],
            loaded,
        );
        assert!(plan.verdicts.iter().all(|v| *v == Verdict::Ok));
        assert!(plan.inserts.is_empty());
        assert_eq!(plan.updates.len(), 2);
        let (filter, write) = &plan.updates[0];
        assert_eq!(*filter, json!({"_id": "t-1", "rev": 0}));
        assert_eq!(write["$set"]["name"], "B");
        assert_eq!(write["$set"]["rev"], 1);
        assert_eq!(write["$set"]["rating"]["last"], "e3");
        assert_eq!(
            write["$addToSet"],
            json!({"relations": {"$each": [{"title_id": "t-2", "relation": "sequel"}]}})
        );
        assert!(write["$set"].get("assets").is_none());
        let (filter, write) = &plan.updates[1];
        assert_eq!(*filter, json!({"_id": "t-2", "rev": 0}));
        assert_eq!(
            *write,
            json!({"$set": {"rev": 1},
                   "$addToSet": {"relations": {"$each": [{"title_id": "t-1", "relation": "prequel"}]}}})
        );
        // What the next batch starts from: the documents as written.
        assert_eq!(plan.titles.len(), 2);
        assert_eq!(plan.titles[0]["name"], "B");
        assert_eq!(plan.titles[0]["rev"], 1);
        assert_eq!(
            plan.titles[1]["relations"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn unstored_titles_hold_their_later_events_and_others_go_on() {
        let plan = run(
            &[
                ("e1", renamed("t-9", "A")),
                ("e2", title("t-1")),
                ("e3", rated("t-9", 3)),
                ("e4", title("t-1")),
            ],
            Loaded::default(),
        );
        assert!(matches!(&plan.verdicts[0], Verdict::Retry(r) if r.contains("not stored")));
        assert_eq!(plan.verdicts[1], Verdict::Ok);
        assert!(matches!(&plan.verdicts[2], Verdict::Retry(_)));
        assert!(
            matches!(&plan.verdicts[3], Verdict::Reject(r) if r.contains("another event")),
            "a second publish by another event is rejected"
        );
        assert!(plan.ratings.is_empty());
        assert_eq!(plan.inserts.len(), 1);
    }

    #[test]
    fn events_past_the_spent_budget_are_handed_back_and_not_written() {
        // The budget runs out after two events: the rest are retried, and the writes hold
        // only what the first two did; e5 waits for its title's e3.
        let events = [
            ("e1", title("t-1")),
            ("e2", renamed("t-1", "A")),
            ("e3", title("t-2")),
            ("e4", rated("t-1", 5)),
            ("e5", rated("t-2", 3)),
        ];
        let items = items(&events);
        let asked = std::cell::Cell::new(0);
        let plan = fold(
            &items,
            Loaded::default(),
            |a| Ok(a.sha256.clone()),
            || {
                asked.set(asked.get() + 1);
                asked.get() > 2
            },
        );
        assert_eq!(plan.verdicts[..2], [Verdict::Ok, Verdict::Ok]);
        for v in &plan.verdicts[2..4] {
            assert!(
                matches!(v, Verdict::Retry(r) if r.contains("time budget")),
                "{v:?}"
            );
        }
        assert!(
            matches!(&plan.verdicts[4], Verdict::Retry(r) if r.contains("earlier event of `t-2`")),
            "{:?}",
            plan.verdicts[4]
        );
        assert_eq!(plan.inserts.len(), 1);
        assert_eq!(plan.inserts[0]["_id"], "t-1");
        assert_eq!(plan.inserts[0]["name"], "A");
        assert_eq!(plan.inserts[0]["rating"]["count"], 0, "e4 is not counted");
        assert!(plan.ratings.is_empty() && plan.updates.is_empty());
    }

    #[test]
    fn applying_a_batch_again_writes_nothing_new() {
        let events = [
            ("e1", title("t-1")),
            ("e2", renamed("t-1", "A")),
            ("e3", rated("t-1", 4)),
        ];
        let first = run(&events, Loaded::default());
        // Stored as the first run left it, ratings documents included.
        let mut loaded = Loaded::default();
        loaded.titles.insert("t-1".into(), first.inserts[0].clone());
        loaded.counted.insert("e3".into());
        let again = run(&events, loaded);
        assert!(again.verdicts.iter().all(|v| *v == Verdict::Ok));
        assert!(again.inserts.is_empty() && again.updates.is_empty() && again.ratings.is_empty());
    }

    #[test]
    fn ratings_up_to_the_summary_s_last_are_not_counted_again() {
        // The title was written with `last` = e3 (e2 and e3 counted in one write), but the
        // ratings documents were not: the retry counts only e4.
        let mut doc = stored("t-1", "e0");
        doc["rating"] = json!({"count": 2, "sum": 9, "average": 4.5, "last": "e3"});
        let mut loaded = Loaded::default();
        loaded.titles.insert("t-1".into(), doc);
        let plan = run(
            &[
                ("e2", rated("t-1", 4)),
                ("e3", rated("t-1", 5)),
                ("e4", rated("t-1", 1)),
            ],
            loaded,
        );
        assert!(plan.verdicts.iter().all(|v| *v == Verdict::Ok));
        assert_eq!(plan.ratings.len(), 3, "every rating's document is written");
        let (filter, write) = &plan.updates[0];
        assert_eq!(*filter, json!({"_id": "t-1", "rev": 0}));
        assert_eq!(
            write["$set"]["rating"],
            json!({"count": 3, "sum": 10, "average": 10.0 / 3.0, "last": "e4",
                   "last_partition": 0, "last_offset": 2})
        );
    }

    #[test]
    fn ratings_at_or_before_the_summary_s_offset_are_not_counted_again() {
        // Offsets 0 and 1 of partition 0 were counted (and the title written twice since).
        let mut doc = stored("t-1", "e0");
        doc["rating"] = json!({"count": 2, "sum": 9, "average": 4.5, "last": "e1",
                               "last_partition": 0, "last_offset": 1});
        doc["rev"] = json!(3);
        let mut loaded = Loaded::default();
        loaded.titles.insert("t-1".into(), doc);
        let events = [
            ("e0", rated("t-1", 4)),
            ("e1", rated("t-1", 5)),
            ("e2", rated("t-1", 1)),
        ];
        let plan = run(&events, loaded.clone());
        assert!(plan.verdicts.iter().all(|v| *v == Verdict::Ok));
        assert_eq!(plan.ratings.len(), 3, "every rating's document is written");
        let (filter, write) = &plan.updates[0];
        assert_eq!(*filter, json!({"_id": "t-1", "rev": 3}));
        assert_eq!(write["$set"]["rev"], 4);
        assert_eq!(write["$set"]["rating"]["count"], 3);
        assert_eq!(write["$set"]["rating"]["last_offset"], 2);

        // The same offsets of another partition are other ratings: all three are counted.
        loaded.titles.get_mut("t-1").unwrap()["rating"]["last_partition"] = json!(1);
        loaded.titles.get_mut("t-1").unwrap()["rating"]["last"] = json!("e-other");
        let plan = run(&events, loaded);
        assert_eq!(plan.updates[0].1["$set"]["rating"]["count"], 5);
    }

    #[test]
    fn a_title_stored_before_rev_was_kept_is_matched_by_its_absence() {
        let mut doc = stored("t-1", "e0");
        doc.as_object_mut().unwrap().remove("rev");
        let mut loaded = Loaded::default();
        loaded.titles.insert("t-1".into(), doc);
        let plan = run(&[("e1", renamed("t-1", "A"))], loaded);
        let (filter, write) = &plan.updates[0];
        assert_eq!(*filter, json!({"_id": "t-1", "rev": {"$exists": false}}));
        assert_eq!(write["$set"], json!({"name": "A", "rev": 1}));
        assert_eq!(plan.titles[0]["rev"], 1);
    }

    #[test]
    fn a_reuploaded_asset_replaces_its_entry_once() {
        let mut loaded = Loaded::default();
        loaded.titles.insert("t-1".into(), stored("t-1", "e0"));
        let asset = |sha: &str| {
            CatalogEvent::AssetUploaded(Asset {
                title_id: "t-1".into(),
                asset_id: "a-1".into(),
                role: "thumbnail".into(),
                content_type: "image/png".into(),
                width: 1,
                height: 1,
                sha256: sha.into(),
                bytes: vec![1],
            })
        };
        let plan = run(&[("e1", asset("aa")), ("e2", asset("bb"))], loaded);
        assert!(plan.verdicts.iter().all(|v| *v == Verdict::Ok));
        let assets = &plan.updates[0].1["$set"]["assets"];
        assert_eq!(assets.as_array().map(Vec::len), Some(1));
        assert_eq!(assets[0]["sha256"], "bb");
    }

    #[test]
    fn an_asset_already_referenced_is_not_uploaded_again() {
        let a = Asset {
            title_id: "t-1".into(),
            asset_id: "a-1".into(),
            role: "thumbnail".into(),
            content_type: "image/png".into(),
            width: 1,
            height: 1,
            sha256: "aa".into(),
            bytes: vec![1],
        };
        let mut doc = stored("t-1", "e0");
        doc["assets"] = json!([update::asset_entry(&a)]);
        let mut loaded = Loaded::default();
        loaded.titles.insert("t-1".into(), doc);
        let events = [("e1", CatalogEvent::AssetUploaded(a))];
        let items = items(&events);
        let plan = fold(&items, loaded, |_| panic!("uploaded again"), || false);
        assert_eq!(plan.verdicts, [Verdict::Ok]);
        assert!(plan.updates.is_empty());
    }

    #[test]
    fn a_failed_upload_retries_the_asset_and_holds_its_title() {
        let mut loaded = Loaded::default();
        loaded.titles.insert("t-1".into(), stored("t-1", "e0"));
        let events = [
            (
                "e1",
                CatalogEvent::AssetUploaded(Asset {
                    title_id: "t-1".into(),
                    asset_id: "a-1".into(),
                    role: "banner".into(),
                    content_type: "image/png".into(),
                    width: 1,
                    height: 1,
                    sha256: "aa".into(),
                    bytes: vec![1],
                }),
            ),
            ("e2", renamed("t-1", "A")),
        ];
        let items = items(&events);
        let plan = fold(
            &items,
            loaded,
            |_| Err(Verdict::Retry("blob store down".into())),
            || false,
        );
        assert!(matches!(&plan.verdicts[0], Verdict::Retry(r) if r == "blob store down"));
        assert!(matches!(&plan.verdicts[1], Verdict::Retry(_)));
        assert!(plan.updates.is_empty());
    }
}
