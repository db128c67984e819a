//! The catalog's events, parsed from a CloudEvent's type and `data` into typed values
//! (docs/events.md). Everything here is pure: a malformed event is an `Err` with the reason
//! the handler rejects it with.

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// `streaming.title.published`.
pub const PUBLISHED: &str = "streaming.title.published";
/// `streaming.title.updated`.
pub const UPDATED: &str = "streaming.title.updated";
/// `streaming.title.related`.
pub const RELATED: &str = "streaming.title.related";
/// `streaming.title.asset_uploaded`.
pub const ASSET_UPLOADED: &str = "streaming.title.asset_uploaded";
/// `streaming.rating.submitted`.
pub const RATING_SUBMITTED: &str = "streaming.rating.submitted";

/// One event this handler applies.
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogEvent {
    Published(Title),
    Updated {
        title_id: String,
        changes: Changes,
    },
    Related {
        title_id: String,
        related_title_id: String,
        relation: Relation,
    },
    AssetUploaded(Asset),
    Rated {
        title_id: String,
        user_id: String,
        stars: u8,
    },
}

impl CatalogEvent {
    /// The title whose document the event changes first (the event's subject).
    pub fn title_id(&self) -> &str {
        match self {
            CatalogEvent::Published(t) => &t.title_id,
            CatalogEvent::Updated { title_id, .. }
            | CatalogEvent::Related { title_id, .. }
            | CatalogEvent::Rated { title_id, .. } => title_id,
            CatalogEvent::AssetUploaded(a) => &a.title_id,
        }
    }
}

/// A movie or a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Movie,
    Series,
}

impl Kind {
    /// The name stored and published (`movie`, `series`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Movie => "movie",
            Kind::Series => "series",
        }
    }
}

/// What a title is made of: a movie's running time, or a series' seasons.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Movie { duration_min: u32 },
    Series { seasons: Vec<Season> },
}

/// A season of a series.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Season {
    pub number: u32,
    pub episodes: Vec<Episode>,
}

/// An episode of a season.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Episode {
    pub number: u32,
    pub name: String,
    pub duration_min: u32,
}

/// A published title.
#[derive(Debug, Clone, PartialEq)]
pub struct Title {
    pub title_id: String,
    pub name: String,
    pub genres: Vec<String>,
    pub year: i32,
    pub maturity_rating: String,
    pub cast: Vec<String>,
    pub body: Body,
}

impl Title {
    /// `movie` or `series`.
    pub fn kind(&self) -> Kind {
        match self.body {
            Body::Movie { .. } => Kind::Movie,
            Body::Series { .. } => Kind::Series,
        }
    }
}

/// The fields a `title.updated` changes; at least one is set.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Changes {
    pub name: Option<String>,
    pub genres: Option<Vec<String>>,
    #[serde(default, deserialize_with = "maturity_opt")]
    pub maturity_rating: Option<String>,
    pub cast: Option<Vec<String>>,
}

/// How one title relates to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    Similar,
    Sequel,
    Prequel,
    SameFranchise,
}

impl Relation {
    /// The name stored (`similar`, `sequel`, `prequel`, `same_franchise`).
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Similar => "similar",
            Relation::Sequel => "sequel",
            Relation::Prequel => "prequel",
            Relation::SameFranchise => "same_franchise",
        }
    }

    /// The relation seen from the other title: if B is A's sequel, A is B's prequel;
    /// `similar` and `same_franchise` are symmetric.
    pub fn reverse(self) -> Relation {
        match self {
            Relation::Sequel => Relation::Prequel,
            Relation::Prequel => Relation::Sequel,
            symmetric => symmetric,
        }
    }
}

/// An uploaded asset, its bytes decoded and their SHA-256 verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Asset {
    pub title_id: String,
    pub asset_id: String,
    pub role: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    /// Lowercase hex, equal to the SHA-256 of `bytes`.
    pub sha256: String,
    pub bytes: Vec<u8>,
}

/// Parses an event of type `ty` with JSON `data`; `subject`, when present, must name the
/// same title as the data (the per-title order relies on it). `Ok(None)` for a type this
/// handler does not know.
pub fn parse(ty: &str, subject: Option<&str>, data: &[u8]) -> Result<Option<CatalogEvent>, String> {
    let event = match ty {
        PUBLISHED => CatalogEvent::Published(parse_published(data)?),
        UPDATED => {
            let d: UpdatedData = from_json(data)?;
            let c = &d.changes;
            if c.name.is_none()
                && c.genres.is_none()
                && c.maturity_rating.is_none()
                && c.cast.is_none()
            {
                return Err(
                    "`changes` holds none of `name`, `genres`, `maturity_rating`, `cast`".into(),
                );
            }
            CatalogEvent::Updated {
                title_id: id("title_id", d.title_id)?,
                changes: d.changes,
            }
        }
        RELATED => {
            let d: RelatedData = from_json(data)?;
            let title_id = id("title_id", d.title_id)?;
            let related_title_id = id("related_title_id", d.related_title_id)?;
            if title_id == related_title_id {
                return Err(format!("title {title_id} cannot be related to itself"));
            }
            CatalogEvent::Related {
                title_id,
                related_title_id,
                relation: d.relation,
            }
        }
        ASSET_UPLOADED => CatalogEvent::AssetUploaded(parse_asset(data)?),
        RATING_SUBMITTED => {
            let d: RatingData = from_json(data)?;
            let user_id = id("user_id", d.user_id)?;
            if !(1..=5).contains(&d.stars) {
                return Err(format!("`stars` must be 1 to 5, not {}", d.stars));
            }
            CatalogEvent::Rated {
                title_id: id("title_id", d.title_id)?,
                user_id,
                stars: d.stars,
            }
        }
        _ => return Ok(None),
    };
    if let Some(subject) = subject
        && subject != event.title_id()
    {
        return Err(format!(
            "the subject `{subject}` is not the title `{}` of the data",
            event.title_id()
        ));
    }
    Ok(Some(event))
}

fn parse_published(data: &[u8]) -> Result<Title, String> {
    let d: PublishedData = from_json(data)?;
    let title_id = id("title_id", d.title_id)?;
    let body = match (d.kind, d.duration_min, d.seasons) {
        (Kind::Movie, Some(duration_min), None) => Body::Movie { duration_min },
        (Kind::Series, None, Some(seasons)) if !seasons.is_empty() => Body::Series { seasons },
        (Kind::Movie, _, _) => {
            return Err("a movie has a `duration_min` and no `seasons`".into());
        }
        (Kind::Series, _, _) => {
            return Err("a series has a non-empty `seasons` and no `duration_min`".into());
        }
    };
    Ok(Title {
        title_id,
        name: d.name,
        genres: d.genres,
        year: d.year,
        maturity_rating: d.maturity_rating.0,
        cast: d.cast,
        body,
    })
}

fn parse_asset(data: &[u8]) -> Result<Asset, String> {
    let d: AssetData = from_json(data)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(d.data_base64.as_bytes())
        .map_err(|e| format!("`data_base64` is not base64: {e}"))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if !actual.eq_ignore_ascii_case(&d.sha256) {
        return Err(format!(
            "the SHA-256 of the decoded bytes is {actual}, not the event's {}",
            d.sha256
        ));
    }
    Ok(Asset {
        title_id: id("title_id", d.title_id)?,
        asset_id: id("asset_id", d.asset_id)?,
        role: id("role", d.role)?,
        content_type: id("content_type", d.content_type)?,
        width: d.width,
        height: d.height,
        sha256: actual,
        bytes,
    })
}

fn from_json<'a, T: Deserialize<'a>>(data: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(data).map_err(|e| format!("malformed data: {e}"))
}

/// A required identifier (or name) must not be empty.
fn id(field: &str, value: String) -> Result<String, String> {
    if value.trim().is_empty() {
        Err(format!("`{field}` is empty"))
    } else {
        Ok(value)
    }
}

/// A maturity rating: `L`, `10`, … — a string, though an integer is accepted (and stored as
/// its decimal text) so that `16` and `"16"` mean the same.
#[derive(Debug)]
struct Maturity(String);

impl<'de> Deserialize<'de> for Maturity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u32),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) if !s.trim().is_empty() => Ok(Maturity(s)),
            Raw::Text(_) => Err(serde::de::Error::custom("`maturity_rating` is empty")),
            Raw::Number(n) => Ok(Maturity(n.to_string())),
        }
    }
}

fn maturity_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Maturity>::deserialize(d)?.map(|m| m.0))
}

#[derive(Deserialize)]
struct PublishedData {
    title_id: String,
    kind: Kind,
    name: String,
    genres: Vec<String>,
    year: i32,
    maturity_rating: Maturity,
    cast: Vec<String>,
    duration_min: Option<u32>,
    seasons: Option<Vec<Season>>,
}

#[derive(Deserialize)]
struct UpdatedData {
    title_id: String,
    changes: Changes,
}

#[derive(Deserialize)]
struct RelatedData {
    title_id: String,
    related_title_id: String,
    relation: Relation,
}

#[derive(Deserialize)]
struct AssetData {
    title_id: String,
    asset_id: String,
    role: String,
    content_type: String,
    width: u32,
    height: u32,
    data_base64: String,
    sha256: String,
}

#[derive(Deserialize)]
struct RatingData {
    user_id: String,
    title_id: String,
    stars: u8,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(ty: &str, data: serde_json::Value) -> Result<Option<CatalogEvent>, String> {
        parse(ty, None, data.to_string().as_bytes())
    }

    #[test]
    fn a_movie_and_a_series_parse() {
        let movie = parse_json(
            PUBLISHED,
            json!({"title_id": "t-1", "kind": "movie", "name": "Dune", "genres": ["sci-fi"],
                   "year": 2021, "maturity_rating": "14", "cast": ["A", "B"], "duration_min": 155}),
        )
        .unwrap()
        .unwrap();
        let CatalogEvent::Published(t) = movie else {
            panic!("not published: {movie:?}")
        };
        assert_eq!(t.kind(), Kind::Movie);
        assert_eq!(t.body, Body::Movie { duration_min: 155 });
        assert_eq!(t.maturity_rating, "14");

        let series = parse_json(
            PUBLISHED,
            json!({"title_id": "t-2", "kind": "series", "name": "S", "genres": [], "year": 2020,
                   "maturity_rating": 16, "cast": [],
                   "seasons": [{"number": 1, "episodes": [{"number": 1, "name": "Pilot", "duration_min": 50}]}]}),
        )
        .unwrap()
        .unwrap();
        let CatalogEvent::Published(t) = series else {
            panic!("not published: {series:?}")
        };
        assert_eq!(t.kind(), Kind::Series);
        assert_eq!(
            t.maturity_rating, "16",
            "an integer rating is kept as its text"
        );
        let Body::Series { seasons } = &t.body else {
            panic!("not a series")
        };
        assert_eq!(seasons[0].episodes[0].name, "Pilot");
    }

    #[test]
    fn a_movie_without_duration_or_a_series_without_seasons_is_malformed() {
        let base = json!({"title_id": "t-1", "name": "X", "genres": [], "year": 2000,
                          "maturity_rating": "L", "cast": []});
        let mut movie = base.clone();
        movie["kind"] = json!("movie");
        assert!(
            parse_json(PUBLISHED, movie)
                .unwrap_err()
                .contains("duration_min")
        );
        let mut series = base.clone();
        series["kind"] = json!("series");
        series["seasons"] = json!([]);
        assert!(
            parse_json(PUBLISHED, series)
                .unwrap_err()
                .contains("seasons")
        );
        let mut odd = base;
        odd["kind"] = json!("podcast");
        assert!(parse_json(PUBLISHED, odd).is_err());
    }

    #[test]
    fn an_update_needs_a_known_change() {
        let ok = parse_json(
            UPDATED,
            json!({"title_id": "t-1", "changes": {"name": "New", "other": 1}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            ok,
            CatalogEvent::Updated {
                title_id: "t-1".into(),
                changes: Changes {
                    name: Some("New".into()),
                    ..Changes::default()
                }
            }
        );
        let err = parse_json(UPDATED, json!({"title_id": "t-1", "changes": {"other": 1}}));
        assert!(err.unwrap_err().contains("none of"));
    }

    #[test]
    fn relations_reverse() {
        assert_eq!(Relation::Sequel.reverse(), Relation::Prequel);
        assert_eq!(Relation::Prequel.reverse(), Relation::Sequel);
        assert_eq!(Relation::Similar.reverse(), Relation::Similar);
        assert_eq!(Relation::SameFranchise.reverse(), Relation::SameFranchise);
        let related = parse_json(
            RELATED,
            json!({"title_id": "t-1", "related_title_id": "t-2", "relation": "same_franchise"}),
        )
        .unwrap()
        .unwrap();
        assert!(matches!(
            related,
            CatalogEvent::Related {
                relation: Relation::SameFranchise,
                ..
            }
        ));
        let to_itself =
            json!({"title_id": "t-1", "related_title_id": "t-1", "relation": "similar"});
        assert!(parse_json(RELATED, to_itself).is_err());
        let unknown = json!({"title_id": "t-1", "related_title_id": "t-2", "relation": "remake"});
        assert!(parse_json(RELATED, unknown).is_err());
    }

    #[test]
    fn an_asset_is_decoded_and_its_digest_verified() {
        let bytes = b"\x89PNG fake";
        let sha = hex::encode(Sha256::digest(bytes));
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let data = json!({"title_id": "t-1", "asset_id": "a-1", "role": "thumbnail",
                          "content_type": "image/png", "width": 4, "height": 3,
                          "data_base64": b64, "sha256": sha.to_uppercase()});
        let CatalogEvent::AssetUploaded(asset) =
            parse_json(ASSET_UPLOADED, data.clone()).unwrap().unwrap()
        else {
            panic!("not an asset")
        };
        assert_eq!(asset.bytes, bytes);
        assert_eq!(asset.sha256, sha, "stored lowercase");

        let mut wrong = data.clone();
        wrong["sha256"] = json!(hex::encode(Sha256::digest(b"other")));
        assert!(
            parse_json(ASSET_UPLOADED, wrong)
                .unwrap_err()
                .contains("SHA-256")
        );
        let mut not_b64 = data;
        not_b64["data_base64"] = json!("!!!");
        assert!(
            parse_json(ASSET_UPLOADED, not_b64)
                .unwrap_err()
                .contains("base64")
        );
    }

    #[test]
    fn ratings_are_one_to_five_stars() {
        let ok = parse_json(
            RATING_SUBMITTED,
            json!({"user_id": "u-1", "title_id": "t-1", "stars": 5}),
        );
        assert_eq!(
            ok.unwrap(),
            Some(CatalogEvent::Rated {
                title_id: "t-1".into(),
                user_id: "u-1".into(),
                stars: 5
            })
        );
        for stars in [0, 6] {
            let bad = json!({"user_id": "u-1", "title_id": "t-1", "stars": stars});
            assert!(parse_json(RATING_SUBMITTED, bad).is_err());
        }
    }

    #[test]
    fn the_subject_must_be_the_title_and_unknown_types_are_none() {
        let data = json!({"user_id": "u-1", "title_id": "t-1", "stars": 3}).to_string();
        assert!(parse(RATING_SUBMITTED, Some("t-1"), data.as_bytes()).is_ok());
        assert!(parse(RATING_SUBMITTED, Some("t-9"), data.as_bytes()).is_err());
        assert_eq!(parse("streaming.title.deleted", None, b"{}"), Ok(None));
        assert!(parse(PUBLISHED, None, b"not json").is_err());
    }
}
