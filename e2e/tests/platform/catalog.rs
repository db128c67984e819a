//! MongoDB, the catalog-handler's store (S2.2): the collections `titles` and `ratings` and
//! the GridFS bucket `title_assets` of the database `streaming`, checked against the
//! `streaming.catalog` and `streaming.ratings` events.
//!
//! The expectations are computed here from the events alone, following docs/events.md: a
//! title is what its `published` event says, with each `updated` event's changes applied in
//! the title's (partition) order; `related` adds the relation to the title and its reverse
//! (`sequel` ↔ `prequel`, the others symmetric) to the related title; an uploaded asset's
//! bytes are the decoded `data_base64`, stored whole; ratings sum per title, and each counted
//! rating is one `ratings` document (id = event id). An event
//! whose data is malformed (or whose asset bytes do not hash to its `sha256`) is expected to
//! be rejected, so it counts for nothing.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use futures::{AsyncReadExt as _, TryStreamExt as _};
use mongodb::bson::{Bson, doc};
use mongodb::gridfs::GridFsBucket;
use mongodb::options::GridFsBucketOptions;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::events::{Ev, Urls};

const DATABASE: &str = "streaming";
const TITLES: &str = "titles";
const RATINGS: &str = "ratings";
const BUCKET: &str = "title_assets";

/// How many mismatches the error lists.
const EXAMPLES: usize = 20;

/// Drops the titles, the ratings and the asset bucket.
pub async fn reset(urls: &Urls) -> Result<()> {
    let db = connect(urls).await?;
    for collection in [TITLES, RATINGS] {
        db.collection::<mongodb::bson::Document>(collection)
            .drop()
            .await
            .with_context(|| format!("dropping streaming.{collection}"))?;
    }
    bucket(&db)
        .drop()
        .await
        .context("dropping the GridFS bucket streaming.title_assets")?;
    Ok(())
}

/// Compares the catalog-handler's titles and blobs with what the events say they must be.
pub async fn check(events: &[Ev], urls: &Urls) -> Result<()> {
    let expected = Expected::from_events(events);
    let db = connect(urls).await?;
    let mut report = Vec::new();

    let titles = read_titles(&db).await?;
    if titles.len() != expected.titles.len() {
        report.push(format!(
            "titles: expected {} documents, found {}",
            expected.titles.len(),
            titles.len()
        ));
    }
    for (id, want) in &expected.titles {
        match titles.get(id) {
            None => report.push(format!("title {id}: missing")),
            Some(doc) => want.compare(id, doc, &mut report),
        }
    }
    for id in titles
        .keys()
        .filter(|id| !expected.titles.contains_key(*id))
    {
        report.push(format!("title {id}: stored but never published"));
    }

    check_blobs(&db, &expected.assets, &mut report).await?;
    check_ratings(&db, &expected.titles, &mut report).await?;

    if report.is_empty() {
        return Ok(());
    }
    let total = report.len();
    report.truncate(EXAMPLES);
    bail!(
        "catalog (MongoDB): {total} mismatches, the first {}:\n  {}",
        report.len(),
        report.join("\n  ")
    )
}

/// The `ratings` documents agree, title by title, with the ratings counted in the titles.
async fn check_ratings(
    db: &mongodb::Database,
    titles: &BTreeMap<String, TitleExp>,
    report: &mut Vec<String>,
) -> Result<()> {
    let mut found: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for json in read_all(db, RATINGS).await? {
        let title = json["title_id"].as_str().unwrap_or_default().to_string();
        let entry = found.entry(title).or_default();
        entry.0 += 1;
        entry.1 += json["stars"].as_i64().unwrap_or(-100);
    }
    for (id, t) in titles {
        let got = found.remove(id).unwrap_or_default();
        if got != (t.ratings, t.stars) {
            report.push(format!(
                "title {id}: {} `ratings` documents with {} stars, expected {} with {}",
                got.0, got.1, t.ratings, t.stars
            ));
        }
    }
    for (id, (n, _)) in found {
        report.push(format!(
            "ratings: {n} documents of title {id:?}, which has none"
        ));
    }
    Ok(())
}

async fn connect(urls: &Urls) -> Result<mongodb::Database> {
    let client = mongodb::Client::with_uri_str(&urls.mongodb_uri)
        .await
        .with_context(|| format!("connecting to MongoDB at {}", urls.mongodb_uri))?;
    Ok(client.database(DATABASE))
}

fn bucket(db: &mongodb::Database) -> GridFsBucket {
    db.gridfs_bucket(
        GridFsBucketOptions::builder()
            .bucket_name(BUCKET.to_string())
            .build(),
    )
}

/// Every document of `collection`, as relaxed Extended JSON.
async fn read_all(db: &mongodb::Database, collection: &str) -> Result<Vec<Value>> {
    let docs: Vec<mongodb::bson::Document> = db
        .collection(collection)
        .find(doc! {})
        .await
        .with_context(|| format!("reading streaming.{collection}"))?
        .try_collect()
        .await
        .with_context(|| format!("reading streaming.{collection}"))?;
    Ok(docs
        .into_iter()
        .map(|doc| Bson::Document(doc).into_relaxed_extjson())
        .collect())
}

/// Every title document, as relaxed Extended JSON, by `_id`.
async fn read_titles(db: &mongodb::Database) -> Result<BTreeMap<String, Value>> {
    let mut titles = BTreeMap::new();
    for json in read_all(db, TITLES).await? {
        let id = json["_id"]
            .as_str()
            .with_context(|| format!("a title whose _id is not a string: {}", json["_id"]))?
            .to_string();
        titles.insert(id, json);
    }
    Ok(titles)
}

/// Every expected asset has exactly one blob, whose bytes hash to the event's SHA-256, and
/// no other blob is stored.
async fn check_blobs(
    db: &mongodb::Database,
    assets: &BTreeMap<String, AssetExp>,
    report: &mut Vec<String>,
) -> Result<()> {
    let bucket = bucket(db);
    let files: Vec<_> = bucket
        .find(doc! {})
        .await
        .context("listing the blobs of title_assets")?
        .try_collect()
        .await
        .context("listing the blobs of title_assets")?;
    let mut by_name: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for file in files {
        by_name
            .entry(file.filename.clone().unwrap_or_default())
            .or_default()
            .push(file);
    }
    for (id, want) in assets {
        let revisions = by_name.get(id).map(Vec::as_slice).unwrap_or_default();
        let [file] = revisions else {
            report.push(format!(
                "asset {id}: expected one blob, found {}",
                revisions.len()
            ));
            continue;
        };
        let mut data = Vec::new();
        bucket
            .open_download_stream(file.id.clone())
            .await
            .with_context(|| format!("opening the blob {id}"))?
            .read_to_end(&mut data)
            .await
            .with_context(|| format!("reading the blob {id}"))?;
        let sha = hex::encode(Sha256::digest(&data));
        if sha != want.sha256 || data.len() != want.size {
            report.push(format!(
                "asset {id}: blob of {} bytes with SHA-256 {sha}, expected {} bytes with {}",
                data.len(),
                want.size,
                want.sha256
            ));
        }
        let meta = file.metadata.clone().unwrap_or_default();
        let content_type = meta.get_str("contentType").unwrap_or("");
        let title = meta
            .get_document("metadata")
            .ok()
            .and_then(|m| m.get_str("title_id").ok())
            .unwrap_or("");
        if content_type != want.content_type || title != want.title_id {
            report.push(format!(
                "asset {id}: blob content type {content_type:?} of title {title:?}, expected \
                 {:?} of {:?}",
                want.content_type, want.title_id
            ));
        }
    }
    for id in by_name.keys().filter(|id| !assets.contains_key(*id)) {
        report.push(format!("asset {id}: a blob no event uploaded"));
    }
    Ok(())
}

/// What the store must hold.
#[derive(Debug, Default)]
struct Expected {
    titles: BTreeMap<String, TitleExp>,
    /// By asset id.
    assets: BTreeMap<String, AssetExp>,
}

#[derive(Debug, Clone, PartialEq)]
struct TitleExp {
    kind: String,
    name: String,
    genres: Vec<String>,
    year: i64,
    maturity: String,
    cast: Vec<String>,
    /// A movie's.
    duration_min: Option<i64>,
    /// A series' seasons: (number, episode count).
    seasons: Vec<(i64, usize)>,
    /// (other title, relation).
    relations: BTreeSet<(String, String)>,
    /// Its asset references, by asset id.
    assets: BTreeMap<String, AssetExp>,
    ratings: i64,
    stars: i64,
}

#[derive(Debug, Clone, PartialEq)]
struct AssetExp {
    title_id: String,
    role: String,
    content_type: String,
    sha256: String,
    size: usize,
}

impl Expected {
    fn from_events(events: &[Ev]) -> Expected {
        // A title's events are in offset order on its partition; the first copy of an id
        // is the one that counts.
        let mut sorted: Vec<&Ev> = events
            .iter()
            .filter(|e| {
                (e.topic == "streaming.catalog" && e.ty.starts_with("streaming.title."))
                    || (e.topic == "streaming.ratings" && e.ty == "streaming.rating.submitted")
            })
            .collect();
        sorted.sort_by(|a, b| {
            (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset))
        });
        let mut seen = HashSet::new();
        sorted.retain(|e| seen.insert(e.id.as_str()));

        let mut model = Expected::default();
        // Titles first: a reference to a title published on another partition waits for it.
        for e in sorted
            .iter()
            .filter(|e| e.ty == "streaming.title.published")
        {
            if let Some(title) = published(&e.data) {
                let id = text(&e.data, "title_id").unwrap_or_default();
                model.titles.entry(id).or_insert(title);
            }
        }
        for e in sorted {
            model.apply(e);
        }
        model
    }

    fn apply(&mut self, e: &Ev) {
        let d = &e.data;
        let Some(title_id) = text(d, "title_id") else {
            return;
        };
        if !self.titles.contains_key(&title_id) {
            return;
        }
        match e.ty.as_str() {
            "streaming.title.updated" => {
                let c = &d["changes"];
                let name = c.get("name").map(|v| v.as_str().map(str::to_string));
                let genres = c.get("genres").map(strings);
                let maturity = c.get("maturity_rating").map(maturity);
                let cast = c.get("cast").map(strings);
                let fields = [
                    name.is_some(),
                    genres.is_some(),
                    maturity.is_some(),
                    cast.is_some(),
                ];
                let malformed = matches!(name, Some(None))
                    || matches!(genres, Some(None))
                    || matches!(maturity, Some(None))
                    || matches!(cast, Some(None));
                if malformed || !fields.contains(&true) {
                    return;
                }
                let t = self.titles.get_mut(&title_id).expect("checked above");
                if let Some(Some(name)) = name {
                    t.name = name;
                }
                if let Some(Some(genres)) = genres {
                    t.genres = genres;
                }
                if let Some(Some(maturity)) = maturity {
                    t.maturity = maturity;
                }
                if let Some(Some(cast)) = cast {
                    t.cast = cast;
                }
            }
            "streaming.title.related" => {
                let (Some(other), Some(relation)) =
                    (text(d, "related_title_id"), text(d, "relation"))
                else {
                    return;
                };
                let reverse = match relation.as_str() {
                    "sequel" => "prequel",
                    "prequel" => "sequel",
                    "similar" | "same_franchise" => relation.as_str(),
                    _ => return,
                };
                if other == title_id || !self.titles.contains_key(&other) {
                    return;
                }
                let reverse = reverse.to_string();
                let t = self.titles.get_mut(&title_id).expect("checked above");
                t.relations.insert((other.clone(), relation));
                let o = self.titles.get_mut(&other).expect("checked above");
                o.relations.insert((title_id, reverse));
            }
            "streaming.title.asset_uploaded" => {
                let fields = ["asset_id", "role", "content_type", "sha256"].map(|f| text(d, f));
                let [Some(asset_id), Some(role), Some(content_type), Some(sha256)] = fields else {
                    return;
                };
                let Some(bytes) = text(d, "data_base64")
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                else {
                    return;
                };
                if hex::encode(Sha256::digest(&bytes)) != sha256.to_lowercase()
                    || d["width"].as_u64().is_none()
                    || d["height"].as_u64().is_none()
                {
                    return;
                }
                let asset = AssetExp {
                    title_id: title_id.clone(),
                    role,
                    content_type,
                    sha256: sha256.to_lowercase(),
                    size: bytes.len(),
                };
                self.titles
                    .get_mut(&title_id)
                    .expect("checked above")
                    .assets
                    .insert(asset_id.clone(), asset.clone());
                self.assets.insert(asset_id, asset);
            }
            "streaming.rating.submitted" => {
                let Some(stars) = d["stars"].as_i64().filter(|s| (1..=5).contains(s)) else {
                    return;
                };
                if text(d, "user_id").is_none() {
                    return;
                }
                let t = self.titles.get_mut(&title_id).expect("checked above");
                t.ratings += 1;
                t.stars += stars;
            }
            _ => {}
        }
    }
}

/// The title a `published` event's data describes, if well formed.
fn published(d: &Value) -> Option<TitleExp> {
    let kind = text(d, "kind")?;
    let (duration_min, seasons) = match kind.as_str() {
        "movie" if d.get("seasons").is_none() => (Some(d["duration_min"].as_i64()?), Vec::new()),
        "series" if d.get("duration_min").is_none() => {
            let seasons = d["seasons"]
                .as_array()?
                .iter()
                .map(|s| Some((s["number"].as_i64()?, s["episodes"].as_array()?.len())))
                .collect::<Option<Vec<_>>>()?;
            if seasons.is_empty() {
                return None;
            }
            (None, seasons)
        }
        _ => return None,
    };
    Some(TitleExp {
        kind,
        name: text(d, "name")?,
        genres: strings(&d["genres"])?,
        year: d["year"].as_i64()?,
        maturity: maturity(&d["maturity_rating"])?,
        cast: strings(&d["cast"])?,
        duration_min,
        seasons,
        relations: BTreeSet::new(),
        assets: BTreeMap::new(),
        ratings: 0,
        stars: 0,
    })
}

impl TitleExp {
    /// Adds to `report` each way the stored document `doc` differs from this title.
    fn compare(&self, id: &str, doc: &Value, report: &mut Vec<String>) {
        let field = |report: &mut Vec<String>, name: &str, want: Value, got: &Value| {
            if &want != got {
                report.push(format!("title {id}: {name} is {got}, expected {want}"));
            }
        };
        field(report, "kind", Value::from(self.kind.clone()), &doc["kind"]);
        field(report, "name", Value::from(self.name.clone()), &doc["name"]);
        field(
            report,
            "genres",
            Value::from(self.genres.clone()),
            &doc["genres"],
        );
        field(report, "year", Value::from(self.year), &doc["year"]);
        field(
            report,
            "maturity_rating",
            Value::from(self.maturity.clone()),
            &doc["maturity_rating"],
        );
        field(report, "cast", Value::from(self.cast.clone()), &doc["cast"]);
        match self.duration_min {
            Some(minutes) => field(
                report,
                "duration_min",
                Value::from(minutes),
                &doc["duration_min"],
            ),
            None => {
                let seasons: Option<Vec<(i64, usize)>> = doc["seasons"].as_array().map(|ss| {
                    ss.iter()
                        .map(|s| {
                            let episodes = s["episodes"].as_array().map_or(0, Vec::len);
                            (s["number"].as_i64().unwrap_or(-1), episodes)
                        })
                        .collect()
                });
                if seasons.as_ref() != Some(&self.seasons) {
                    report.push(format!(
                        "title {id}: seasons (number, episodes) are {seasons:?}, expected {:?}",
                        self.seasons
                    ));
                }
                let episodes: usize = self.seasons.iter().map(|s| s.1).sum();
                field(
                    report,
                    "episode_count",
                    Value::from(episodes),
                    &doc["episode_count"],
                );
            }
        }

        let relations: Vec<(String, String)> = entries(doc, "relations")
            .map(|r| (str_of(r, "title_id"), str_of(r, "relation")))
            .collect();
        let relation_set: BTreeSet<_> = relations.iter().cloned().collect();
        if relation_set != self.relations || relation_set.len() != relations.len() {
            report.push(format!(
                "title {id}: relations are {relations:?}, expected {:?}",
                self.relations
            ));
        }

        let assets: Vec<String> = entries(doc, "assets")
            .map(|a| str_of(a, "asset_id"))
            .collect();
        let asset_set: BTreeSet<_> = assets.iter().collect();
        if !asset_set.iter().copied().eq(self.assets.keys()) || asset_set.len() != assets.len() {
            report.push(format!(
                "title {id}: asset references are {assets:?}, expected {:?}",
                self.assets.keys()
            ));
        }
        for entry in entries(doc, "assets") {
            let asset_id = str_of(entry, "asset_id");
            let Some(want) = self.assets.get(&asset_id) else {
                continue;
            };
            let got = (
                str_of(entry, "role"),
                str_of(entry, "content_type"),
                str_of(entry, "sha256"),
                entry["size"].as_u64(),
            );
            let expected = (
                want.role.clone(),
                want.content_type.clone(),
                want.sha256.clone(),
                Some(want.size as u64),
            );
            if got != expected {
                report.push(format!(
                    "title {id}: asset {asset_id} (role, type, sha256, size) is {got:?}, \
                     expected {expected:?}"
                ));
            }
        }

        let rating = &doc["rating"];
        let average = if self.ratings == 0 {
            0.0
        } else {
            self.stars as f64 / self.ratings as f64
        };
        let count = rating["count"].as_i64();
        let sum = rating["sum"].as_i64();
        let got_average = rating["average"].as_f64();
        if count != Some(self.ratings)
            || sum != Some(self.stars)
            || got_average.is_none_or(|a| (a - average).abs() > 1e-9)
        {
            report.push(format!(
                "title {id}: rating is {rating}, expected count {}, sum {}, average {average}",
                self.ratings, self.stars
            ));
        }
    }
}

/// The elements of the array `doc[field]` (none when it is not an array).
fn entries<'a>(doc: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    doc[field].as_array().into_iter().flatten()
}

fn str_of(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or("<missing>").to_string()
}

fn text(d: &Value, field: &str) -> Option<String> {
    d[field]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string)
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// A maturity rating as text (`"16"` and `16` are the same rating).
fn maturity(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    }
}
