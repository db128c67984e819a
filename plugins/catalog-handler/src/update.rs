//! The documents, filters and updates the handler sends to the `titles` and `ratings`
//! collections, built as JSON (relaxed Extended JSON is plain JSON for these values). Pure,
//! so tested natively.
//!
//! A title document:
//!
//! ```json
//! {"_id": "t-1", "kind": "movie", "name": "…", "genres": ["…"], "year": 2021,
//!  "maturity_rating": "14", "cast": ["…"], "published_by": "evt-42-1",
//!  "duration_min": 155,                                    // a movie
//!  "seasons": [{"number": 1, "episodes": [{"number": 1, "name": "…", "duration_min": 50}]}],
//!  "episode_count": 10,                                    // a series
//!  "relations": [{"title_id": "t-2", "relation": "sequel"}],
//!  "assets": [{"asset_id": "a-1", "role": "thumbnail", "content_type": "image/png",
//!              "sha256": "…", "size": 1234, "width": 320, "height": 180}],
//!  "rating": {"count": 2, "sum": 9, "average": 4.5, "last": "evt-42-17",
//!             "last_partition": 1, "last_offset": 311},
//!  "rev": 4}
//! ```
//!
//! and one document per counted rating in `ratings`:
//! `{"_id": <event id>, "title_id": "t-1", "user_id": "u-3", "stars": 4}`.
//!
//! `rev` counts the writes of the title: every update matches the `rev` it was computed
//! from and sets the next one, so an update computed from a document that another writer
//! has changed since matches nothing, and the batch is retried from a fresh read. That is
//! what lets the handler keep the titles it wrote in memory between batches
//! ([`crate::store`]) instead of reading them again.
//!
//! Idempotency, per event id, without a list of applied ids in the title (which grows with
//! every event and makes every read and write of a popular title slower):
//! - `published` inserts the document with `published_by`; a duplicate-key error on a
//!   document published by this very event means it was applied before.
//! - `updated` (`$set`), `related` (`$addToSet`) and `asset_uploaded` (the blob stored
//!   under its asset id, its reference replaced) give the same document however often
//!   they are applied, and a title's events are applied in their partition's order (the
//!   trigger and [`polyhost_guest::in_key_order`] keep it), so applying one again changes
//!   nothing.
//! - A rating is counted once. A title's ratings are keyed by the title, so they come from
//!   one partition, in offset order, one at a time: the summary records where the last
//!   rating it counted is (`last_partition`, `last_offset`), and a rating of that partition
//!   at or before that offset was counted. The summary is written first, then the
//!   `ratings` document, so a retry between the two finds the rating counted and only
//!   inserts the document. A summary written before `last_offset` was kept (or a rating
//!   from another partition, should the topic be repartitioned) falls back to the older
//!   rule: an event whose `ratings` document exists was counted, and so was every rating
//!   up to the one named `last`.

use serde_json::{Value, json};

use crate::event::{Asset, Body, Changes, Relation, Title};

/// The collection of titles.
pub const TITLES: &str = "titles";
/// The collection of counted ratings, one document per rating event.
pub const RATINGS: &str = "ratings";
/// The GridFS bucket of the titles' assets.
pub const ASSETS_BUCKET: &str = "title_assets";

/// The new document of a published title, published by `event_id`.
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
        "published_by": event_id,
        "rev": 0,
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

/// Matches the title `title_id` only.
pub fn by_id(title_id: &str) -> Value {
    json!({"_id": title_id})
}

/// Sets the changed fields.
pub fn apply_changes(changes: &Changes) -> Value {
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
    json!({"$set": set})
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

/// The title's rating summary as stored: (count, sum, the last event counted); `None` when
/// malformed.
pub fn rating_of(title_doc: &Value) -> Option<(i64, i64, Option<&str>)> {
    let rating = &title_doc["rating"];
    Some((
        rating["count"].as_i64()?,
        rating["sum"].as_i64()?,
        rating["last"].as_str(),
    ))
}

/// Where the last rating the summary counted is: (partition, offset); `None` for a summary
/// written before this was kept, or one that counted nothing.
pub fn counted_through(title_doc: &Value) -> Option<(i64, i64)> {
    let rating = &title_doc["rating"];
    Some((
        rating["last_partition"].as_i64()?,
        rating["last_offset"].as_i64()?,
    ))
}

/// The title's write count (`rev`); `None` for a document written before it was kept.
pub fn revision(title_doc: &Value) -> Option<i64> {
    title_doc["rev"].as_i64()
}

/// The `ratings` document of a counted rating.
pub fn rating_document(event_id: &str, title_id: &str, user_id: &str, stars: u8) -> Value {
    json!({"_id": event_id, "title_id": title_id, "user_id": user_id, "stars": stars})
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
        assert_eq!(movie["published_by"], "e1");
        assert!(movie.get("applied").is_none());
        assert_eq!(movie["rev"], 0);
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
    fn changes_set_only_what_changed() {
        let changes = Changes {
            genres: Some(vec!["comedy".into()]),
            cast: Some(vec![]),
            ..Changes::default()
        };
        assert_eq!(
            apply_changes(&changes),
            json!({"$set": {"genres": ["comedy"], "cast": []}})
        );
    }

    #[test]
    fn a_relation_is_added_as_a_set_entry() {
        assert_eq!(
            relation_entry("t-2", Relation::Prequel),
            json!({"title_id": "t-2", "relation": "prequel"})
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
    }

    #[test]
    fn a_rating_summary_reads_back() {
        let doc =
            json!({"_id": "t-1", "rating": {"count": 2, "sum": 9, "average": 4.5, "last": "e4"}});
        let (count, sum, last) = rating_of(&doc).unwrap();
        assert_eq!((count, sum, last), (2, 9, Some("e4")));
        assert_eq!(rating_of(&json!({"rating": {"count": 1}})), None);
        assert_eq!(
            rating_of(&json!({"rating": {"count": 0, "sum": 0}})),
            Some((0, 0, None))
        );
        assert_eq!(counted_through(&doc), None);
        let doc = json!({"rating": {"count": 1, "sum": 4, "last_partition": 2, "last_offset": 7}});
        assert_eq!(counted_through(&doc), Some((2, 7)));
        assert_eq!(revision(&json!({"rev": 3})), Some(3));
        assert_eq!(revision(&doc), None);
        assert_eq!(average(0, 0), 0.0);
        assert_eq!(
            rating_document("e5", "t-1", "u-2", 3),
            json!({"_id": "e5", "title_id": "t-1", "user_id": "u-2", "stars": 3})
        );
    }
}
