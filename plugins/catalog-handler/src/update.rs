//! The documents, filters and updates the handler sends to the `titles` collection, built
//! as JSON (relaxed Extended JSON is plain JSON for these values). Pure, so tested natively.
//!
//! A title document:
//!
//! ```json
//! {"_id": "t-1", "kind": "movie", "name": "…", "genres": ["…"], "year": 2021,
//!  "maturity_rating": "14", "cast": ["…"],
//!  "duration_min": 155,                                    // a movie
//!  "seasons": [{"number": 1, "episodes": [{"number": 1, "name": "…", "duration_min": 50}]}],
//!  "episode_count": 10,                                    // a series
//!  "relations": [{"title_id": "t-2", "relation": "sequel"}],
//!  "assets": [{"asset_id": "a-1", "role": "thumbnail", "content_type": "image/png",
//!              "sha256": "…", "size": 1234, "width": 320, "height": 180}],
//!  "rating": {"count": 2, "sum": 9, "average": 4.5},
//!  "applied": ["evt-42-1", "evt-42-17", …]}
//! ```
//!
//! Idempotency: `applied` lists the ids of the events applied to the document. Every change
//! is one update whose filter is `{_id, applied: {$ne: event_id}}` and which pushes the id
//! in the same update, so it happens at most once however often the event is handed over.
//! `published` inserts the document with its id already in `applied` (a duplicate-key error
//! on a document that lists the id means it was applied before). A rating reads the
//! summary and writes `{count, sum, average}` whole, on the condition that the summary is
//! still the one read and the event not yet applied.

use serde_json::{Value, json};

use crate::event::{Asset, Body, Changes, Relation, Title};

/// The collection of titles.
pub const TITLES: &str = "titles";
/// The GridFS bucket of the titles' assets.
pub const ASSETS_BUCKET: &str = "title_assets";

/// The new document of a published title, `event_id` already applied.
pub fn title_document(title: &Title, event_id: &str) -> Value {
    let mut doc = json!({
        "_id": title.title_id,
        "kind": title.kind().as_str(),
        "name": title.name,
        "genres": title.genres,
        "year": title.year,
        "maturity_rating": title.maturity_rating,
        "cast": title.cast,
        "relations": [],
        "assets": [],
        "rating": {"count": 0, "sum": 0, "average": 0.0},
        "applied": [event_id],
    });
    match &title.body {
        Body::Movie { duration_min } => doc["duration_min"] = json!(duration_min),
        Body::Series { seasons } => {
            let episodes: usize = seasons.iter().map(|s| s.episodes.len()).sum();
            doc["seasons"] = Value::Array(
                seasons
                    .iter()
                    .map(|s| {
                        json!({
                            "number": s.number,
                            "episodes": s.episodes.iter().map(|e| json!({
                                "number": e.number,
                                "name": e.name,
                                "duration_min": e.duration_min,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect(),
            );
            doc["episode_count"] = json!(episodes);
        }
    }
    doc
}

/// Matches the title `title_id` unless `event_id` was already applied to it.
pub fn not_applied(title_id: &str, event_id: &str) -> Value {
    json!({"_id": title_id, "applied": {"$ne": event_id}})
}

/// Matches the title `title_id` only.
pub fn by_id(title_id: &str) -> Value {
    json!({"_id": title_id})
}

/// Sets the changed fields.
pub fn apply_changes(changes: &Changes, event_id: &str) -> Value {
    let mut set = serde_json::Map::new();
    if let Some(name) = &changes.name {
        set.insert("name".into(), json!(name));
    }
    if let Some(genres) = &changes.genres {
        set.insert("genres".into(), json!(genres));
    }
    if let Some(maturity) = &changes.maturity_rating {
        set.insert("maturity_rating".into(), json!(maturity));
    }
    if let Some(cast) = &changes.cast {
        set.insert("cast".into(), json!(cast));
    }
    json!({"$set": set, "$push": {"applied": event_id}})
}

/// Adds the relation `{title_id: other, relation}` to a title (a set: relating the same
/// pair twice the same way keeps one entry).
pub fn add_relation(other: &str, relation: Relation, event_id: &str) -> Value {
    json!({
        "$addToSet": {"relations": relation_entry(other, relation)},
        "$push": {"applied": event_id},
    })
}

/// One entry of `relations`; its fields always in this order, as `$addToSet` and `$pull`
/// compare documents field by field.
pub fn relation_entry(other: &str, relation: Relation) -> Value {
    json!({"title_id": other, "relation": relation.as_str()})
}

/// The reference to an asset kept in its title's document.
pub fn asset_entry(asset: &Asset) -> Value {
    json!({
        "asset_id": asset.asset_id,
        "role": asset.role,
        "content_type": asset.content_type,
        "sha256": asset.sha256,
        "size": asset.bytes.len(),
        "width": asset.width,
        "height": asset.height,
    })
}

/// The metadata stored with an asset's blob.
pub fn blob_metadata(asset: &Asset) -> Value {
    json!({
        "title_id": asset.title_id,
        "role": asset.role,
        "sha256": asset.sha256,
        "width": asset.width,
        "height": asset.height,
    })
}

/// Adds an asset's reference.
pub fn push_asset(asset: &Asset, event_id: &str) -> Value {
    json!({"$push": {"assets": asset_entry(asset), "applied": event_id}})
}

/// The entries of `title_doc`'s `assets` that have the id `asset_id` (an asset uploaded
/// again replaces its earlier reference), as the exact documents stored.
pub fn stale_asset_entries(title_doc: &Value, asset_id: &str) -> Vec<Value> {
    title_doc["assets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["asset_id"] == asset_id)
        .cloned()
        .collect()
}

/// Removes `entries` from `assets` (without marking the event applied: the push that
/// follows does). `$pullAll` of exact documents: FerretDB 1.24's `$pull` ignores conditions
/// such as `{asset_id: …}` or `{$in: …}` on array elements.
pub fn pull_assets(entries: &[Value]) -> Value {
    json!({"$pullAll": {"assets": entries}})
}

/// The title's rating summary as stored: (count, sum); `None` when malformed.
pub fn rating_of(title_doc: &Value) -> Option<(i64, i64)> {
    let rating = &title_doc["rating"];
    Some((rating["count"].as_i64()?, rating["sum"].as_i64()?))
}

/// Counts a rating into the summary `(count, sum)` read from the title: the filter matches
/// only while the title still has that summary and has not had this event applied, so the
/// rating is counted once and the average always agrees with the count and sum.
pub fn add_rating(
    title_id: &str,
    (count, sum): (i64, i64),
    stars: u8,
    event_id: &str,
) -> (Value, Value) {
    let filter = json!({
        "_id": title_id,
        "applied": {"$ne": event_id},
        "rating.count": count,
        "rating.sum": sum,
    });
    let (count, sum) = (count + 1, sum + i64::from(stars));
    let update = json!({
        "$set": {"rating": {"count": count, "sum": sum, "average": average(count, sum)}},
        "$push": {"applied": event_id},
    });
    (filter, update)
}

/// Whether `title_doc` lists `event_id` as applied.
pub fn is_applied(title_doc: &Value, event_id: &str) -> bool {
    title_doc["applied"]
        .as_array()
        .is_some_and(|ids| ids.iter().any(|id| id == event_id))
}

/// The mean of `count` ratings summing to `sum`; 0 when there are none.
pub fn average(count: i64, sum: i64) -> f64 {
    if count == 0 {
        0.0
    } else {
        sum as f64 / count as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Episode, Season};

    fn title(body: Body) -> Title {
        Title {
            title_id: "t-1".into(),
            name: "N".into(),
            genres: vec!["drama".into()],
            year: 2001,
            maturity_rating: "12".into(),
            cast: vec!["A".into()],
            body,
        }
    }

    #[test]
    fn a_title_document_has_its_kind_and_parts() {
        let movie = title_document(&title(Body::Movie { duration_min: 90 }), "e1");
        assert_eq!(movie["_id"], "t-1");
        assert_eq!(movie["kind"], "movie");
        assert_eq!(movie["duration_min"], 90);
        assert!(movie.get("seasons").is_none());
        assert_eq!(movie["applied"], json!(["e1"]));
        assert_eq!(
            movie["rating"],
            json!({"count": 0, "sum": 0, "average": 0.0})
        );

        let episode = |n| Episode {
            number: n,
            name: format!("E{n}"),
            duration_min: 40,
        };
        let seasons = vec![
            Season {
                number: 1,
                episodes: vec![episode(1), episode(2)],
            },
            Season {
                number: 2,
                episodes: vec![episode(1)],
            },
        ];
        let series = title_document(&title(Body::Series { seasons }), "e1");
        assert_eq!(series["kind"], "series");
        assert_eq!(series["episode_count"], 3);
        assert_eq!(series["seasons"][0]["episodes"][1]["name"], "E2");
        assert!(series.get("duration_min").is_none());
    }

    #[test]
    fn changes_set_only_what_changed_and_mark_the_event() {
        let changes = Changes {
            genres: Some(vec!["comedy".into()]),
            cast: Some(vec![]),
            ..Changes::default()
        };
        assert_eq!(
            apply_changes(&changes, "e7"),
            json!({"$set": {"genres": ["comedy"], "cast": []}, "$push": {"applied": "e7"}})
        );
        assert_eq!(
            not_applied("t-1", "e7"),
            json!({"_id": "t-1", "applied": {"$ne": "e7"}})
        );
    }

    #[test]
    fn a_relation_is_added_as_a_set_entry() {
        assert_eq!(
            add_relation("t-2", Relation::Prequel, "e3"),
            json!({"$addToSet": {"relations": {"title_id": "t-2", "relation": "prequel"}},
                   "$push": {"applied": "e3"}})
        );
    }

    #[test]
    fn a_reuploaded_asset_replaces_its_reference() {
        let doc = json!({"assets": [
            {"asset_id": "a-1", "role": "banner"},
            {"asset_id": "a-2", "role": "thumbnail"},
        ]});
        let stale = stale_asset_entries(&doc, "a-1");
        assert_eq!(stale, vec![json!({"asset_id": "a-1", "role": "banner"})]);
        assert!(stale_asset_entries(&doc, "a-3").is_empty());
        assert!(stale_asset_entries(&json!({}), "a-1").is_empty());
    }

    #[test]
    fn an_asset_entry_records_size_and_digest() {
        let asset = Asset {
            title_id: "t-1".into(),
            asset_id: "a-1".into(),
            role: "thumbnail".into(),
            content_type: "image/png".into(),
            width: 2,
            height: 1,
            sha256: "ab".into(),
            bytes: vec![1, 2, 3],
        };
        let entry = asset_entry(&asset);
        assert_eq!(entry["size"], 3);
        assert_eq!(entry["sha256"], "ab");
        assert_eq!(blob_metadata(&asset)["title_id"], "t-1");
        assert_eq!(push_asset(&asset, "e9")["$push"]["applied"], "e9");
    }

    #[test]
    fn a_rating_is_counted_against_the_summary_it_was_read_with() {
        let doc = json!({"_id": "t-1", "rating": {"count": 2, "sum": 9, "average": 4.5}});
        let summary = rating_of(&doc).unwrap();
        assert_eq!(summary, (2, 9));
        let (filter, update) = add_rating("t-1", summary, 3, "e5");
        assert_eq!(
            filter,
            json!({"_id": "t-1", "applied": {"$ne": "e5"}, "rating.count": 2, "rating.sum": 9})
        );
        assert_eq!(
            update,
            json!({"$set": {"rating": {"count": 3, "sum": 12, "average": 4.0}},
                   "$push": {"applied": "e5"}})
        );
        assert_eq!(rating_of(&json!({"rating": {"count": 1}})), None);
        assert_eq!(average(0, 0), 0.0);
    }

    #[test]
    fn applied_events_are_found() {
        let doc = json!({"applied": ["e1", "e2"]});
        assert!(is_applied(&doc, "e2"));
        assert!(!is_applied(&doc, "e3"));
        assert!(!is_applied(&json!({}), "e1"));
    }
}
