//! The ranking-handler's domain logic, free of host calls so that it tests natively: reading
//! events, key names, the writes each event makes, the genre boards of a title, top-10
//! diffing and the `streaming.leaderboard.changed` event.

use std::collections::{BTreeMap, BTreeSet};

use polyhost_guest::time;
use serde_json::{Value, json};

/// The board of every view, all time.
pub const BOARD_VIEWS_ALL: &str = "leaderboard:views:all";
/// The board of average stars, titles with enough votes only.
pub const BOARD_TOP_RATED: &str = "leaderboard:top_rated";
/// How many members a `leaderboard.changed` event carries, and whose order it watches.
pub const TOP_N: usize = 10;
/// The CloudEvents `source` of the events this plugin publishes.
pub const SOURCE: &str = "/polyhost/ranking-handler";
/// Where derived events go.
pub const DERIVED_TOPIC: &str = "streaming.derived";
/// The type of the event published when a board's top 10 changes.
pub const LEADERBOARD_CHANGED: &str = "streaming.leaderboard.changed";
/// How long `apply-once` remembers an event id (and the last published top 10 lives).
pub const DEDUPE_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// Redis key names. Every prefix here is granted in the manifest.
pub mod keys {
    /// A session's hash.
    pub fn session(id: &str) -> String {
        format!("session:{id}")
    }
    /// The sessions watching a title now: a sorted set, score = expiry (Unix ms).
    pub fn viewers(title: &str) -> String {
        format!("viewers:{title}")
    }
    /// The views of one day (`YYYY-MM-DD`, UTC, from the event's time).
    pub fn views_day(day: &str) -> String {
        format!("leaderboard:views:{day}")
    }
    /// The all-time views of the titles of one genre.
    pub fn views_genre(genre: &str) -> String {
        format!("leaderboard:views:genre:{genre}")
    }
    /// A title's ratings: hash `sum`, `count`.
    pub fn ratings(title: &str) -> String {
        format!("ratings:{title}")
    }
    /// A title's cached summary (expires after `cache_ttl_s`).
    pub fn title_cache(title: &str) -> String {
        format!("cache:title:{title}")
    }
    /// A title's genres: hash `current` (JSON list) and `g:<genre>` for every genre it ever had.
    pub fn genres(title: &str) -> String {
        format!("genres:{title}")
    }
    /// A dynamic variable.
    pub fn variable(name: &str) -> String {
        format!("var:{name}")
    }
    /// The members of the top 10 last published for `board` (JSON list).
    pub fn published(board: &str) -> String {
        format!("ranking:published:{board}")
    }
}

/// The plugin's configuration (`[plugin.config]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `cache_ttl_s`: how long a title summary stays cached.
    pub cache_ttl_ms: u64,
    /// `top_rated_min_votes`: the fewest votes a title needs to be on `leaderboard:top_rated`.
    pub top_rated_min_votes: i64,
    /// `session_ttl_s`: how long a session lives after its last start or heartbeat.
    pub session_ttl_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cache_ttl_ms: 300_000,
            top_rated_min_votes: 3,
            session_ttl_ms: 1_800_000,
        }
    }
}

impl Config {
    /// Reads the configuration through `get`; a missing key keeps its default.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let num = |key: &str, default: u64| -> Result<u64, String> {
            match get(key) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("config `{key}`: `{v}` is not a positive integer")),
            }
        };
        let d = Config::default();
        Ok(Config {
            cache_ttl_ms: num("cache_ttl_s", d.cache_ttl_ms / 1000)? * 1000,
            top_rated_min_votes: i64::try_from(num(
                "top_rated_min_votes",
                d.top_rated_min_votes as u64,
            )?)
            .map_err(|_| "config `top_rated_min_votes`: too large".to_string())?,
            session_ttl_ms: num("session_ttl_s", d.session_ttl_ms / 1000)? * 1000,
        })
    }
}

/// One Redis write, as `kv.apply-once` takes it (converted in the WIT glue).
#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    /// `SET key value [PX ttl]`.
    Set {
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    },
    /// `DEL key`.
    Del(String),
    /// `PEXPIRE key ttl`.
    Expire(String, u64),
    /// `HSET key field value`.
    Hset(String, String, Vec<u8>),
    /// `HINCRBY key field delta`.
    HincrBy(String, String, i64),
    /// `ZADD key score member`.
    Zadd(String, String, f64),
    /// `ZINCRBY key delta member`.
    ZincrBy(String, String, f64),
    /// `ZREM key member`.
    Zrem(String, String),
}

/// What an event asks of this plugin.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Not this plugin's business (users, relations, assets, unknown types).
    Ignore,
    /// `title.published` (with a summary) or `title.updated` (invalidating the cache).
    Title {
        title_id: String,
        /// The title's genres, when the event sets them.
        genres: Option<Vec<String>>,
        /// The summary to cache (`title.published`).
        summary: Option<Vec<u8>>,
        /// Whether the cached summary is stale (`title.updated`).
        invalidate: bool,
    },
    /// `rating.submitted`.
    Rating { title_id: String, stars: i64 },
    /// `session.started`.
    Started {
        session_id: String,
        user_id: String,
        title_id: String,
        device: String,
        /// The event's time, Unix microseconds.
        time: i64,
    },
    /// `session.heartbeat`.
    Heartbeat {
        session_id: String,
        user_id: String,
        title_id: String,
        position_s: i64,
        watched_s: i64,
    },
    /// `session.ended`.
    Ended {
        session_id: String,
        title_id: String,
    },
    /// `variable.set`.
    Variable { name: String, value: String },
}

impl Action {
    /// The board whose top 10 this action may change, among those announced.
    pub fn announced_board(&self) -> Option<&'static str> {
        match self {
            Action::Started { .. } => Some(BOARD_VIEWS_ALL),
            Action::Rating { .. } => Some(BOARD_TOP_RATED),
            _ => None,
        }
    }
}

fn text(data: &Value, field: &str) -> Result<String, String> {
    match data.get(field).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(format!("`{field}` is missing or not a non-empty string")),
    }
}

fn int(data: &Value, field: &str) -> Result<i64, String> {
    data.get(field)
        .and_then(Value::as_i64)
        .ok_or_else(|| format!("`{field}` is missing or not an integer"))
}

fn genres(v: &Value) -> Result<Vec<String>, String> {
    let list = v.as_array().ok_or("`genres` is not a list")?;
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for g in list {
        match g.as_str() {
            Some(s) if !s.is_empty() => {
                if !out.iter().any(|o| o == s) {
                    out.push(s.to_string());
                }
            }
            _ => return Err("`genres` holds something other than a non-empty string".into()),
        }
    }
    Ok(out)
}

/// Reads an event (`type`, `data`, `time` in Unix µs); `Err` is why it can never apply.
pub fn parse(ty: &str, data: &[u8], time: Option<i64>) -> Result<Action, String> {
    let known = matches!(
        ty,
        "streaming.title.published"
            | "streaming.title.updated"
            | "streaming.rating.submitted"
            | "streaming.session.started"
            | "streaming.session.heartbeat"
            | "streaming.session.ended"
            | "streaming.variable.set"
    );
    if !known {
        return Ok(Action::Ignore);
    }
    let data: Value =
        serde_json::from_slice(data).map_err(|e| format!("{ty}: data is not JSON: {e}"))?;
    if !data.is_object() {
        return Err(format!("{ty}: data is not an object"));
    }
    let at = |e: String| format!("{ty}: {e}");
    Ok(match ty {
        "streaming.title.published" => {
            let title_id = text(&data, "title_id").map_err(at)?;
            let genres = genres(&data["genres"]).map_err(at)?;
            let summary = json!({
                "title_id": title_id,
                "kind": data["kind"],
                "name": data["name"],
                "genres": genres,
                "year": data["year"],
                "maturity_rating": data["maturity_rating"],
            });
            Action::Title {
                title_id,
                genres: Some(genres),
                summary: Some(summary.to_string().into_bytes()),
                invalidate: false,
            }
        }
        "streaming.title.updated" => {
            let title_id = text(&data, "title_id").map_err(at)?;
            let changes = data
                .get("changes")
                .filter(|c| c.is_object())
                .ok_or_else(|| at("`changes` is missing or not an object".into()))?;
            let genres = match changes.get("genres") {
                None => None,
                Some(g) => Some(genres(g).map_err(at)?),
            };
            Action::Title {
                title_id,
                genres,
                summary: None,
                invalidate: true,
            }
        }
        "streaming.rating.submitted" => {
            let title_id = text(&data, "title_id").map_err(at)?;
            let stars = int(&data, "stars").map_err(at)?;
            if !(1..=5).contains(&stars) {
                return Err(at(format!("`stars` is {stars}, not 1 to 5")));
            }
            Action::Rating { title_id, stars }
        }
        "streaming.session.started" => Action::Started {
            session_id: text(&data, "session_id").map_err(at)?,
            user_id: text(&data, "user_id").map_err(at)?,
            title_id: text(&data, "title_id").map_err(at)?,
            device: text(&data, "device").map_err(at)?,
            time: time.ok_or_else(|| at("the event has no `time`".into()))?,
        },
        "streaming.session.heartbeat" => Action::Heartbeat {
            session_id: text(&data, "session_id").map_err(at)?,
            user_id: text(&data, "user_id").map_err(at)?,
            title_id: text(&data, "title_id").map_err(at)?,
            position_s: int(&data, "position_s").map_err(at)?,
            watched_s: int(&data, "watched_s").map_err(at)?,
        },
        "streaming.session.ended" => Action::Ended {
            session_id: text(&data, "session_id").map_err(at)?,
            title_id: text(&data, "title_id").map_err(at)?,
        },
        _ => Action::Variable {
            name: text(&data, "name").map_err(at)?,
            value: data
                .get("value")
                .and_then(Value::as_str)
                .ok_or_else(|| at("`value` is missing or not a string".into()))?
                .to_string(),
        },
    })
}

/// The writes an action makes, all in one `apply-once` keyed by the event id.
/// `now_ms` (wall clock) dates the viewers' expiry.
pub fn commands(action: &Action, cfg: &Config, now_ms: u64) -> Vec<Cmd> {
    let b = |s: &str| s.as_bytes().to_vec();
    let expiry = (now_ms + cfg.session_ttl_ms) as f64;
    match action {
        Action::Ignore => vec![],
        Action::Title {
            title_id,
            genres,
            summary,
            invalidate,
        } => {
            let mut cmds = Vec::new();
            if let Some(genres) = genres {
                let key = keys::genres(title_id);
                cmds.push(Cmd::Hset(
                    key.clone(),
                    "current".into(),
                    json!(genres).to_string().into_bytes(),
                ));
                for g in genres {
                    cmds.push(Cmd::Hset(key.clone(), format!("g:{g}"), b("1")));
                }
            }
            if let Some(summary) = summary {
                cmds.push(Cmd::Set {
                    key: keys::title_cache(title_id),
                    value: summary.clone(),
                    ttl_ms: Some(cfg.cache_ttl_ms),
                });
            }
            if *invalidate {
                cmds.push(Cmd::Del(keys::title_cache(title_id)));
            }
            cmds
        }
        Action::Rating { title_id, stars } => {
            let key = keys::ratings(title_id);
            vec![
                Cmd::HincrBy(key.clone(), "sum".into(), *stars),
                Cmd::HincrBy(key, "count".into(), 1),
            ]
        }
        Action::Started {
            session_id,
            user_id,
            title_id,
            device,
            time,
        } => {
            let key = keys::session(session_id);
            let viewers = keys::viewers(title_id);
            let field = |f: &str, v: &str| Cmd::Hset(key.clone(), f.into(), b(v));
            vec![
                field("user_id", user_id),
                field("title_id", title_id),
                field("device", device),
                field("position_s", "0"),
                field("watched_s", "0"),
                field("started_at", &rfc3339(*time)),
                Cmd::Expire(key.clone(), cfg.session_ttl_ms),
                Cmd::ZincrBy(BOARD_VIEWS_ALL.into(), title_id.clone(), 1.0),
                Cmd::ZincrBy(keys::views_day(&day(*time)), title_id.clone(), 1.0),
                Cmd::Zadd(viewers.clone(), session_id.clone(), expiry),
                Cmd::Expire(viewers, cfg.session_ttl_ms),
            ]
        }
        Action::Heartbeat {
            session_id,
            user_id,
            title_id,
            position_s,
            watched_s,
        } => {
            let key = keys::session(session_id);
            let viewers = keys::viewers(title_id);
            let field = |f: &str, v: &str| Cmd::Hset(key.clone(), f.into(), b(v));
            vec![
                field("user_id", user_id),
                field("title_id", title_id),
                field("position_s", &position_s.to_string()),
                field("watched_s", &watched_s.to_string()),
                Cmd::Expire(key.clone(), cfg.session_ttl_ms),
                Cmd::Zadd(viewers.clone(), session_id.clone(), expiry),
                Cmd::Expire(viewers, cfg.session_ttl_ms),
            ]
        }
        Action::Ended {
            session_id,
            title_id,
        } => vec![
            Cmd::Del(keys::session(session_id)),
            Cmd::Zrem(keys::viewers(title_id), session_id.clone()),
        ],
        Action::Variable { name, value } => vec![Cmd::Set {
            key: keys::variable(name),
            value: b(value),
            ttl_ms: None,
        }],
    }
}

fn field_text(fields: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(f, _)| f == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// A title's `ratings:<id>` hash as (sum, count); an absent hash is (0, 0).
pub fn parse_ratings(fields: &[(String, Vec<u8>)]) -> Result<(i64, i64), String> {
    let get = |name: &str| -> Result<i64, String> {
        match field_text(fields, name) {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| format!("ratings field `{name}` is `{v}`, not an integer")),
        }
    };
    Ok((get("sum")?, get("count")?))
}

/// A title's `leaderboard:top_rated` score: the average, once it has `min_votes` votes.
pub fn top_rated_score(sum: i64, count: i64, min_votes: i64) -> Option<f64> {
    (count > 0 && count >= min_votes).then(|| sum as f64 / count as f64)
}

/// A title's genres as stored in `genres:<id>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TitleGenres {
    /// The genres it has now; `None` until its `title.published` is stored.
    pub current: Option<Vec<String>>,
    /// Every genre it ever had (so that a genre it lost can be cleaned).
    pub known: BTreeSet<String>,
}

/// Reads the `genres:<id>` hash.
pub fn parse_genres(fields: &[(String, Vec<u8>)]) -> Result<TitleGenres, String> {
    let current = match field_text(fields, "current") {
        None => None,
        Some(j) => {
            let v: Value = serde_json::from_str(&j)
                .map_err(|e| format!("genres field `current` is not JSON: {e}"))?;
            Some(genres(&v)?)
        }
    };
    let known = fields
        .iter()
        .filter_map(|(f, _)| f.strip_prefix("g:").map(str::to_string))
        .collect();
    Ok(TitleGenres { current, known })
}

/// The writes that make a title's place on every genre board match its current genres and
/// its all-time views: on each current genre's board with its views, off every other.
/// Idempotent, so it may run again after a replay or a race.
pub fn genre_board_cmds(title: &str, genres: &TitleGenres, views: Option<f64>) -> Vec<Cmd> {
    let current = genres.current.as_deref().unwrap_or(&[]);
    genres
        .known
        .iter()
        .map(|g| {
            let board = keys::views_genre(g);
            match views {
                Some(v) if current.iter().any(|c| c == g) => Cmd::Zadd(board, title.into(), v),
                _ => Cmd::Zrem(board, title.into()),
            }
        })
        .collect()
}

/// Whether `top` (best first) differs, in members or order, from the members last published
/// (`published`, a JSON list; `None` when nothing was).
pub fn top_changed(published: Option<&[u8]>, top: &[(String, f64)]) -> bool {
    let now: Vec<&str> = top.iter().take(TOP_N).map(|(m, _)| m.as_str()).collect();
    match published.and_then(|p| serde_json::from_slice::<Vec<String>>(p).ok()) {
        Some(before) => before != now,
        None => !now.is_empty(),
    }
}

/// The members of `top` as stored under [`keys::published`].
pub fn published_value(top: &[(String, f64)]) -> Vec<u8> {
    let members: Vec<&str> = top.iter().take(TOP_N).map(|(m, _)| m.as_str()).collect();
    json!(members).to_string().into_bytes()
}

/// The `streaming.leaderboard.changed` CloudEvent for `board` now at `top`, caused by the
/// event `cause_id` (at `time`, Unix µs), announced in the `round`-th look (0 but when a
/// concurrent batch raced it): its id and its JSON. The id depends only on the board, the
/// cause and the round, so a reprocessed batch publishes the same id.
pub fn leaderboard_changed(
    board: &str,
    top: &[(String, f64)],
    cause_id: &str,
    round: u32,
    time: Option<i64>,
) -> (String, Vec<u8>) {
    let id = match round {
        0 => format!("lb-{board}-{cause_id}"),
        n => format!("lb-{board}-{cause_id}-{n}"),
    };
    let top: Vec<Value> = top
        .iter()
        .take(TOP_N)
        .map(|(m, s)| json!({"title_id": m, "score": s}))
        .collect();
    let mut ev = json!({
        "specversion": "1.0",
        "id": id,
        "source": SOURCE,
        "type": LEADERBOARD_CHANGED,
        "subject": board,
        "datacontenttype": "application/json",
        "data": {"board": board, "top": top},
    });
    if let Some(t) = time {
        ev["time"] = json!(rfc3339(t));
    }
    (id, ev.to_string().into_bytes())
}

/// The titles whose genres the batch must read before its `session.started` events apply:
/// those started in the batch that no earlier `title.published`/`title.updated` with genres
/// in the same batch stores first. Sorted, each once.
pub fn genre_checks(actions: &[Result<Action, String>]) -> Vec<String> {
    let mut stored: BTreeSet<&str> = BTreeSet::new();
    let mut check: BTreeSet<String> = BTreeSet::new();
    for a in actions.iter().flatten() {
        match a {
            Action::Title {
                title_id,
                genres: Some(_),
                ..
            } => {
                stored.insert(title_id);
            }
            Action::Started { title_id, .. } if !stored.contains(title_id.as_str()) => {
                check.insert(title_id.clone());
            }
            _ => {}
        }
    }
    check.into_iter().collect()
}

/// What a batch must recompute from the stored state once its events applied, per title,
/// with the events (their indices in the batch) that asked for it.
#[derive(Debug, Default, PartialEq)]
pub struct Derived {
    /// `leaderboard:top_rated` from `ratings:<title>`.
    pub top_rated: BTreeMap<String, Vec<usize>>,
    /// The title's place on the genre boards.
    pub genre_boards: BTreeMap<String, Vec<usize>>,
    /// Its expired viewers dropped.
    pub prune: BTreeMap<String, Vec<usize>>,
}

impl Derived {
    /// Notes what event `i`, `action`, asks for.
    pub fn add(&mut self, i: usize, action: &Action) {
        let note = |map: &mut BTreeMap<String, Vec<usize>>, title: &str| {
            map.entry(title.to_string()).or_default().push(i);
        };
        match action {
            Action::Rating { title_id, .. } => note(&mut self.top_rated, title_id),
            Action::Started { title_id, .. } => {
                note(&mut self.genre_boards, title_id);
                note(&mut self.prune, title_id);
            }
            Action::Heartbeat { title_id, .. } => note(&mut self.prune, title_id),
            Action::Title {
                title_id,
                genres: Some(_),
                ..
            } => note(&mut self.genre_boards, title_id),
            _ => {}
        }
    }

    /// Whether there is nothing to recompute.
    pub fn is_empty(&self) -> bool {
        self.top_rated.is_empty() && self.genre_boards.is_empty() && self.prune.is_empty()
    }
}

/// The `leaderboard:top_rated` write of a title with ratings `fields`: `Zadd` with its
/// average once it has enough votes, else `Zrem`.
pub fn top_rated_cmd(
    title: &str,
    fields: &[(String, Vec<u8>)],
    min_votes: i64,
) -> Result<Cmd, String> {
    let (sum, count) = parse_ratings(fields)?;
    Ok(match top_rated_score(sum, count, min_votes) {
        Some(score) => Cmd::Zadd(BOARD_TOP_RATED.into(), title.into(), score),
        None => Cmd::Zrem(BOARD_TOP_RATED.into(), title.into()),
    })
}

/// `YYYY-MM-DD` (UTC) of a time in Unix µs.
pub fn day(micros: i64) -> String {
    time::day(micros).unwrap_or_default()
}

/// RFC 3339 UTC with milliseconds of a time in Unix µs.
pub fn rfc3339(micros: i64) -> String {
    time::rfc3339_millis(micros).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

    fn cfg() -> Config {
        Config::default()
    }

    #[test]
    fn times_format_as_the_generator_writes_them() {
        assert_eq!(rfc3339(T0), "2026-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(T0 + 86_399_123_456), "2026-01-01T23:59:59.123Z");
        assert_eq!(day(T0 + 86_400_000_000), "2026-01-02");
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(951_782_400_000_000), "2000-02-29");
        assert_eq!(day(-1), "1969-12-31");
    }

    #[test]
    fn config_reads_seconds_and_keeps_defaults() {
        let c = Config::from_lookup(|k| match k {
            "cache_ttl_s" => Some("60".into()),
            "top_rated_min_votes" => Some("5".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.cache_ttl_ms, 60_000);
        assert_eq!(c.top_rated_min_votes, 5);
        assert_eq!(c.session_ttl_ms, Config::default().session_ttl_ms);
        assert!(Config::from_lookup(|_| Some("soon".into())).is_err());
        assert!(Config::from_lookup(|_| Some("0".into())).is_err());
    }

    #[test]
    fn a_session_start_counts_a_view_on_the_day_of_its_time() {
        let a = parse(
            "streaming.session.started",
            br#"{"session_id":"s-1","user_id":"u-1","title_id":"t-2","device":"tv"}"#,
            Some(T0 + 86_400_000_000 + 5),
        )
        .unwrap();
        assert_eq!(a.announced_board(), Some(BOARD_VIEWS_ALL));
        let cmds = commands(&a, &cfg(), 1000);
        assert!(cmds.contains(&Cmd::ZincrBy(BOARD_VIEWS_ALL.into(), "t-2".into(), 1.0)));
        assert!(cmds.contains(&Cmd::ZincrBy(
            "leaderboard:views:2026-01-02".into(),
            "t-2".into(),
            1.0
        )));
        assert!(cmds.contains(&Cmd::Zadd(
            "viewers:t-2".into(),
            "s-1".into(),
            (1000 + cfg().session_ttl_ms) as f64
        )));
        assert!(cmds.contains(&Cmd::Expire("session:s-1".into(), cfg().session_ttl_ms)));
        assert!(cmds.contains(&Cmd::Hset(
            "session:s-1".into(),
            "started_at".into(),
            b"2026-01-02T00:00:00.000Z".to_vec()
        )));
    }

    #[test]
    fn an_end_removes_the_session_and_its_viewer() {
        let a = parse(
            "streaming.session.ended",
            br#"{"session_id":"s-1","user_id":"u-1","title_id":"t-2","position_s":5,"watched_s":5}"#,
            Some(T0),
        )
        .unwrap();
        assert_eq!(
            commands(&a, &cfg(), 0),
            vec![
                Cmd::Del("session:s-1".into()),
                Cmd::Zrem("viewers:t-2".into(), "s-1".into())
            ]
        );
    }

    #[test]
    fn a_heartbeat_refreshes_the_session_and_its_viewer() {
        let a = parse(
            "streaming.session.heartbeat",
            br#"{"session_id":"s-1","user_id":"u-1","title_id":"t-2","position_s":30,"watched_s":25}"#,
            Some(T0),
        )
        .unwrap();
        let cmds = commands(&a, &cfg(), 10);
        assert!(cmds.contains(&Cmd::Hset(
            "session:s-1".into(),
            "watched_s".into(),
            b"25".to_vec()
        )));
        assert!(cmds.contains(&Cmd::Expire("session:s-1".into(), cfg().session_ttl_ms)));
        assert!(cmds.contains(&Cmd::Expire("viewers:t-2".into(), cfg().session_ttl_ms)));
        assert_eq!(a.announced_board(), None);
    }

    #[test]
    fn malformed_events_are_refused_and_foreign_ones_ignored() {
        let bad = [
            (
                "streaming.rating.submitted",
                r#"{"title_id":"t-1","stars":6}"#,
            ),
            ("streaming.rating.submitted", r#"{"title_id":"t-1"}"#),
            ("streaming.session.started", r#"{"session_id":"s-1"}"#),
            (
                "streaming.title.published",
                r#"{"title_id":"t-1","genres":"drama"}"#,
            ),
            ("streaming.title.updated", r#"{"title_id":"t-1"}"#),
            ("streaming.variable.set", r#"{"name":"x","value":3}"#),
            ("streaming.variable.set", "not json"),
        ];
        for (ty, data) in bad {
            assert!(parse(ty, data.as_bytes(), Some(T0)).is_err(), "{ty} {data}");
        }
        let started = r#"{"session_id":"s-1","user_id":"u","title_id":"t","device":"tv"}"#;
        assert!(parse("streaming.session.started", started.as_bytes(), None).is_err());
        assert_eq!(
            parse("streaming.user.registered", b"garbage", None),
            Ok(Action::Ignore)
        );
        assert_eq!(
            parse("streaming.title.related", b"{}", None),
            Ok(Action::Ignore)
        );
    }

    #[test]
    fn titles_store_genres_and_cache_and_updates_invalidate() {
        let p = parse(
            "streaming.title.published",
            br#"{"title_id":"t-1","kind":"movie","name":"N","genres":["drama","comedy"],"year":2001,"maturity_rating":"12","cast":[],"duration_min":90}"#,
            Some(T0),
        )
        .unwrap();
        let cmds = commands(&p, &cfg(), 0);
        assert_eq!(
            cmds[0],
            Cmd::Hset(
                "genres:t-1".into(),
                "current".into(),
                br#"["drama","comedy"]"#.to_vec()
            )
        );
        assert!(cmds.contains(&Cmd::Hset(
            "genres:t-1".into(),
            "g:comedy".into(),
            b"1".to_vec()
        )));
        let Some(Cmd::Set { key, value, ttl_ms }) = cmds.last() else {
            panic!("{cmds:?}")
        };
        assert_eq!((key.as_str(), *ttl_ms), ("cache:title:t-1", Some(300_000)));
        let v: Value = serde_json::from_slice(value).unwrap();
        assert_eq!(v["name"], "N");

        let u = parse(
            "streaming.title.updated",
            br#"{"title_id":"t-1","changes":{"name":"M"}}"#,
            Some(T0),
        )
        .unwrap();
        assert_eq!(
            commands(&u, &cfg(), 0),
            vec![Cmd::Del("cache:title:t-1".into())]
        );
    }

    #[test]
    fn ratings_average_once_there_are_enough_votes() {
        let fields = vec![
            ("sum".to_string(), b"7".to_vec()),
            ("count".to_string(), b"2".to_vec()),
        ];
        assert_eq!(parse_ratings(&fields), Ok((7, 2)));
        assert_eq!(parse_ratings(&[]), Ok((0, 0)));
        assert_eq!(top_rated_score(7, 2, 3), None);
        assert_eq!(top_rated_score(10, 3, 3), Some(10.0 / 3.0));
        assert_eq!(top_rated_score(0, 0, 0), None);
    }

    #[test]
    fn genre_boards_follow_the_current_genres() {
        let fields = vec![
            ("current".to_string(), br#"["drama"]"#.to_vec()),
            ("g:drama".to_string(), b"1".to_vec()),
            ("g:comedy".to_string(), b"1".to_vec()),
        ];
        let g = parse_genres(&fields).unwrap();
        assert_eq!(g.current.as_deref(), Some(&["drama".to_string()][..]));
        assert_eq!(
            genre_board_cmds("t-1", &g, Some(4.0)),
            vec![
                Cmd::Zrem("leaderboard:views:genre:comedy".into(), "t-1".into()),
                Cmd::Zadd("leaderboard:views:genre:drama".into(), "t-1".into(), 4.0),
            ]
        );
        // No view yet: on no board.
        assert!(
            genre_board_cmds("t-1", &g, None)
                .iter()
                .all(|c| matches!(c, Cmd::Zrem(..)))
        );
        assert_eq!(parse_genres(&[]).unwrap(), TitleGenres::default());
    }

    #[test]
    fn the_top_changes_on_members_and_order_only() {
        let top = |ms: &[&str]| -> Vec<(String, f64)> {
            ms.iter()
                .enumerate()
                .map(|(i, m)| (m.to_string(), 100.0 - i as f64))
                .collect()
        };
        assert!(!top_changed(None, &[]));
        assert!(top_changed(None, &top(&["a"])));
        let stored = published_value(&top(&["a", "b"]));
        assert!(!top_changed(Some(&stored), &top(&["a", "b"])));
        let mut rescored = top(&["a", "b"]);
        rescored[0].1 += 5.0;
        assert!(!top_changed(Some(&stored), &rescored));
        assert!(top_changed(Some(&stored), &top(&["b", "a"])));
        assert!(top_changed(Some(&stored), &top(&["a", "b", "c"])));
    }

    fn started(title: &str) -> Result<Action, String> {
        parse(
            "streaming.session.started",
            format!(
                r#"{{"session_id":"s-{title}","user_id":"u","title_id":"{title}","device":"tv"}}"#
            )
            .as_bytes(),
            Some(T0),
        )
    }

    fn published(title: &str) -> Result<Action, String> {
        parse(
            "streaming.title.published",
            format!(r#"{{"title_id":"{title}","genres":["drama"]}}"#).as_bytes(),
            Some(T0),
        )
    }

    #[test]
    fn a_batch_reads_the_genres_of_titles_it_does_not_publish_first() {
        let actions = vec![
            started("t-1"),
            published("t-2"),
            started("t-2"),
            started("t-3"),
            started("t-1"),
            Err("bad".into()),
            published("t-3"),
        ];
        // t-2 is published before its start; t-3 only after; t-1 never.
        assert_eq!(
            genre_checks(&actions),
            vec!["t-1".to_string(), "t-3".into()]
        );
        assert!(genre_checks(&[]).is_empty());
    }

    #[test]
    fn derived_work_is_grouped_per_title_with_its_events() {
        let rating = parse(
            "streaming.rating.submitted",
            br#"{"title_id":"t-1","stars":4}"#,
            Some(T0),
        )
        .unwrap();
        let mut d = Derived::default();
        assert!(d.is_empty());
        d.add(0, &rating);
        d.add(1, &started("t-2").unwrap());
        d.add(2, &rating);
        d.add(3, &published("t-2").unwrap());
        d.add(4, &Action::Ignore);
        assert_eq!(d.top_rated.get("t-1"), Some(&vec![0, 2]));
        assert_eq!(d.genre_boards.get("t-2"), Some(&vec![1, 3]));
        assert_eq!(d.prune.get("t-2"), Some(&vec![1]));
        assert_eq!(d.prune.len(), 1);
    }

    #[test]
    fn top_rated_follows_the_stored_ratings() {
        let fields = |s: &str, c: &str| {
            vec![
                ("sum".to_string(), s.as_bytes().to_vec()),
                ("count".to_string(), c.as_bytes().to_vec()),
            ]
        };
        assert_eq!(
            top_rated_cmd("t", &fields("9", "3"), 3),
            Ok(Cmd::Zadd(BOARD_TOP_RATED.into(), "t".into(), 3.0))
        );
        assert_eq!(
            top_rated_cmd("t", &fields("9", "2"), 3),
            Ok(Cmd::Zrem(BOARD_TOP_RATED.into(), "t".into()))
        );
        assert!(top_rated_cmd("t", &fields("x", "2"), 3).is_err());
    }

    #[test]
    fn leaderboard_events_have_deterministic_ids() {
        let top = vec![("t-1".to_string(), 3.0), ("t-2".to_string(), 2.5)];
        let (id, value) = leaderboard_changed(BOARD_TOP_RATED, &top, "evt-42-9", 0, Some(T0));
        assert_eq!(id, "lb-leaderboard:top_rated-evt-42-9");
        let v: Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(v["source"], SOURCE);
        assert_eq!(v["subject"], BOARD_TOP_RATED);
        assert_eq!(v["type"], LEADERBOARD_CHANGED);
        assert_eq!(v["time"], "2026-01-01T00:00:00.000Z");
        assert_eq!(
            v["data"],
            json!({"board": BOARD_TOP_RATED, "top": [
                {"title_id": "t-1", "score": 3.0}, {"title_id": "t-2", "score": 2.5}]})
        );
        assert_eq!(
            leaderboard_changed(BOARD_TOP_RATED, &top, "evt-42-9", 0, Some(T0)),
            (id, value)
        );
        let (raced, _) = leaderboard_changed(BOARD_TOP_RATED, &top, "evt-42-9", 2, None);
        assert_eq!(raced, "lb-leaderboard:top_rated-evt-42-9-2");
    }
}
