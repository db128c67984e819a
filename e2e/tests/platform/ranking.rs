//! The ranking-handler's Redis, checked against the events: sessions, viewers now, every
//! leaderboard (views all / per day / per genre, top rated), ratings, the title cache,
//! variables, and the `streaming.leaderboard.changed` events it published.
//!
//! Expectations are computed here from the events alone. The key layout is the plugin's
//! (plugins/ranking-handler/src/domain.rs); sessions and viewers are checked as of a run
//! shorter than `session_ttl_s` (so no session has expired), the cache only where it must
//! be absent (an updated title) or, when present, for its content.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context as _, bail};
use redis::aio::MultiplexedConnection;
use serde_json::Value;

use super::events::{Ev, Urls};

/// The plugin's key prefixes (its grant), and its `apply-once` dedupe keys in the host's
/// namespace (`polyhost:applied:<plugin>:`), which must go too or a rerun would apply nothing.
const PREFIXES: &[&str] = &[
    "session:",
    "viewers:",
    "leaderboard:",
    "cache:",
    "var:",
    "ratings:",
    "genres:",
    "ranking:",
    "polyhost:applied:ranking-handler:",
];
const VIEWS_ALL: &str = "leaderboard:views:all";
const TOP_RATED: &str = "leaderboard:top_rated";
const SOURCE: &str = "/polyhost/ranking-handler";
/// How many mismatches an error lists.
const SHOWN: usize = 20;

async fn connect(urls: &Urls) -> anyhow::Result<MultiplexedConnection> {
    let client = redis::Client::open(urls.redis_url.as_str()).context("redis url")?;
    client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to {}", urls.redis_url))
}

async fn scan(conn: &mut MultiplexedConnection, pattern: &str) -> anyhow::Result<Vec<String>> {
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .with_context(|| format!("SCAN {pattern}"))?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Deletes every key under the plugin's prefixes, and its dedupe keys.
pub async fn reset(urls: &Urls) -> anyhow::Result<()> {
    let mut conn = connect(urls).await?;
    for prefix in PREFIXES {
        let keys = scan(&mut conn, &format!("{prefix}*")).await?;
        for chunk in keys.chunks(500) {
            let _: u64 = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut conn)
                .await
                .context("DEL")?;
        }
    }
    Ok(())
}

/// `top_rated_min_votes` of the ranking-handler in the demo manifest (3 when absent).
fn min_votes() -> anyhow::Result<i64> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../polyhost.toml");
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let Some(entry) = text
        .split("[[plugin]]")
        .find(|p| p.contains("\"ranking-handler\""))
    else {
        return Ok(3);
    };
    for line in entry.lines() {
        if let Some(rest) = line.trim().strip_prefix("top_rated_min_votes") {
            let value = rest.trim_start().trim_start_matches('=');
            let value = value.split('#').next().unwrap_or("").trim();
            return value
                .parse()
                .with_context(|| format!("top_rated_min_votes = `{value}`"));
        }
    }
    Ok(3)
}

/// The UTC day of an RFC 3339 time.
fn day(ev: &Ev) -> anyhow::Result<String> {
    let t = ev
        .time
        .as_deref()
        .with_context(|| format!("{}: no time", ev.id))?;
    let t = chrono::DateTime::parse_from_rfc3339(t).with_context(|| format!("{}: time", ev.id))?;
    Ok(t.with_timezone(&chrono::Utc).format("%Y-%m-%d").to_string())
}

fn genres_of(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// An open session as the events left it.
#[derive(Debug, Clone, PartialEq)]
struct Session {
    user_id: String,
    title_id: String,
    device: String,
    started_at: String,
    position_s: i64,
    watched_s: i64,
}

/// Everything the events say Redis must hold.
#[derive(Debug, Default)]
struct Expected {
    /// Board key → member → score.
    boards: BTreeMap<String, BTreeMap<String, f64>>,
    /// Title → (sum, count).
    ratings: BTreeMap<String, (i64, i64)>,
    /// Title → final genres.
    genres: BTreeMap<String, BTreeSet<String>>,
    /// Title → its `title.published` data, for titles never updated.
    cacheable: BTreeMap<String, Value>,
    /// Titles updated at least once: their cache must be gone.
    updated: BTreeSet<String>,
    open: BTreeMap<String, Session>,
    ended: BTreeSet<String>,
    /// Title → open session ids.
    viewers: BTreeMap<String, BTreeSet<String>>,
    vars: BTreeMap<String, String>,
}

fn expected(events: &[Ev], min_votes: i64) -> anyhow::Result<Expected> {
    let mut sorted: Vec<&Ev> = events.iter().collect();
    sorted
        .sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    let mut seen = BTreeSet::new();
    let mut e = Expected::default();
    let mut views: BTreeMap<String, f64> = BTreeMap::new();
    for ev in sorted {
        // A record read twice (a producer retry) is one event.
        if !seen.insert((ev.source.clone(), ev.id.clone())) {
            continue;
        }
        match ev.ty.as_str() {
            "streaming.title.published" => {
                let t = ev.str("title_id").to_string();
                e.genres.insert(t.clone(), genres_of(&ev.data["genres"]));
                e.cacheable.insert(t, ev.data.clone());
            }
            "streaming.title.updated" => {
                let t = ev.str("title_id").to_string();
                if let Some(g) = ev.data["changes"].get("genres") {
                    e.genres.insert(t.clone(), genres_of(g));
                }
                e.cacheable.remove(&t);
                e.updated.insert(t);
            }
            "streaming.rating.submitted" => {
                let r = e.ratings.entry(ev.str("title_id").to_string()).or_default();
                r.0 += ev.int("stars");
                r.1 += 1;
            }
            "streaming.session.started" => {
                let t = ev.str("title_id").to_string();
                *views.entry(t.clone()).or_default() += 1.0;
                *e.boards
                    .entry(format!("leaderboard:views:{}", day(ev)?))
                    .or_default()
                    .entry(t.clone())
                    .or_default() += 1.0;
                let time = ev.time.clone().unwrap_or_default();
                e.open.insert(
                    ev.str("session_id").to_string(),
                    Session {
                        user_id: ev.str("user_id").to_string(),
                        title_id: t,
                        device: ev.str("device").to_string(),
                        started_at: time,
                        position_s: 0,
                        watched_s: 0,
                    },
                );
            }
            "streaming.session.heartbeat" => {
                if let Some(s) = e.open.get_mut(ev.str("session_id")) {
                    s.position_s = ev.int("position_s");
                    s.watched_s = ev.int("watched_s");
                }
            }
            "streaming.session.ended" => {
                let id = ev.str("session_id").to_string();
                e.open.remove(&id);
                e.ended.insert(id);
            }
            "streaming.variable.set" => {
                e.vars
                    .insert(ev.str("name").to_string(), ev.str("value").to_string());
            }
            _ => {}
        }
    }
    for (id, s) in &e.open {
        e.viewers
            .entry(s.title_id.clone())
            .or_default()
            .insert(id.clone());
    }
    for (t, v) in &views {
        for g in e.genres.get(t).into_iter().flatten() {
            e.boards
                .entry(format!("leaderboard:views:genre:{g}"))
                .or_default()
                .insert(t.clone(), *v);
        }
    }
    if !views.is_empty() {
        e.boards.insert(VIEWS_ALL.into(), views);
    }
    let top: BTreeMap<String, f64> = e
        .ratings
        .iter()
        .filter(|(_, (_, n))| *n >= min_votes && *n > 0)
        .map(|(t, (s, n))| (t.clone(), *s as f64 / *n as f64))
        .collect();
    if !top.is_empty() {
        e.boards.insert(TOP_RATED.into(), top);
    }
    Ok(e)
}

/// The top 10 as Redis orders a board read highest first: by score, ties by member, both
/// descending.
fn top10(board: &BTreeMap<String, f64>) -> Vec<String> {
    let mut all: Vec<(&String, f64)> = board.iter().map(|(m, s)| (m, *s)).collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(a.0)));
    all.into_iter().take(10).map(|(m, _)| m.clone()).collect()
}

/// Collects mismatches, and fails listing the first of them.
#[derive(Default)]
struct Mismatches(Vec<String>, usize);

impl Mismatches {
    fn add(&mut self, m: String) {
        self.1 += 1;
        if self.0.len() < SHOWN {
            self.0.push(m);
        }
    }
    fn finish(self) -> anyhow::Result<()> {
        if self.1 == 0 {
            return Ok(());
        }
        bail!(
            "ranking (Redis): {} mismatches, the first {}:\n  {}",
            self.1,
            self.0.len(),
            self.0.join("\n  ")
        )
    }
}

async fn hgetall(
    conn: &mut MultiplexedConnection,
    key: &str,
) -> anyhow::Result<HashMap<String, String>> {
    redis::cmd("HGETALL")
        .arg(key)
        .query_async(conn)
        .await
        .with_context(|| format!("HGETALL {key}"))
}

async fn zall(
    conn: &mut MultiplexedConnection,
    key: &str,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let pairs: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(conn)
        .await
        .with_context(|| format!("ZRANGE {key}"))?;
    Ok(pairs.into_iter().collect())
}

fn compare_board(
    bad: &mut Mismatches,
    key: &str,
    want: &BTreeMap<String, f64>,
    got: &BTreeMap<String, f64>,
) {
    for (m, s) in want {
        match got.get(m) {
            None => bad.add(format!("{key}: member {m} missing (expected score {s})")),
            Some(g) if g != s => bad.add(format!("{key}: {m} has score {g}, expected {s}")),
            Some(_) => {}
        }
    }
    for (m, s) in got {
        if !want.contains_key(m) {
            bad.add(format!("{key}: unexpected member {m} (score {s})"));
        }
    }
}

/// Compares the plugin's Redis with what the events imply.
pub async fn check(events: &[Ev], urls: &Urls) -> anyhow::Result<()> {
    let e = expected(events, min_votes()?)?;
    let mut conn = connect(urls).await?;
    let mut bad = Mismatches::default();

    // Leaderboards: exactly the expected keys, members and scores.
    let boards = scan(&mut conn, "leaderboard:*").await?;
    let want_keys: BTreeSet<&String> = e.boards.keys().collect();
    for key in &boards {
        if !want_keys.contains(key) {
            bad.add(format!("unexpected board {key}"));
        }
    }
    for (key, want) in &e.boards {
        let got = zall(&mut conn, key).await?;
        compare_board(&mut bad, key, want, &got);
    }

    // Ratings sums and counts.
    let rating_keys = scan(&mut conn, "ratings:*").await?;
    if rating_keys.len() != e.ratings.len() {
        bad.add(format!(
            "{} ratings:* keys, expected {}",
            rating_keys.len(),
            e.ratings.len()
        ));
    }
    for (t, (sum, count)) in &e.ratings {
        let h = hgetall(&mut conn, &format!("ratings:{t}")).await?;
        let got = (h.get("sum").cloned(), h.get("count").cloned());
        if got != (Some(sum.to_string()), Some(count.to_string())) {
            bad.add(format!(
                "ratings:{t}: {got:?}, expected sum {sum} count {count}"
            ));
        }
    }

    // Titles' genres.
    for (t, want) in &e.genres {
        let h = hgetall(&mut conn, &format!("genres:{t}")).await?;
        let got = h
            .get("current")
            .and_then(|j| serde_json::from_str::<Value>(j).ok())
            .map(|v| genres_of(&v));
        if got.as_ref() != Some(want) {
            bad.add(format!("genres:{t}: {got:?}, expected {want:?}"));
        }
    }

    // The cache: gone for updated titles; when present, the published summary, expiring.
    for t in &e.updated {
        let key = format!("cache:title:{t}");
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        if exists {
            bad.add(format!("{key} present, but the title was updated"));
        }
    }
    for key in scan(&mut conn, "cache:title:*").await? {
        let t = key.trim_start_matches("cache:title:");
        let Some(published) = e.cacheable.get(t) else {
            if !e.updated.contains(t) {
                bad.add(format!("{key}: no such title was published"));
            }
            continue;
        };
        let got: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await?;
        let Some(Ok(v)) = got.map(|g| serde_json::from_str::<Value>(&g)) else {
            continue; // expired between SCAN and GET
        };
        for f in ["title_id", "kind", "name", "year", "maturity_rating"] {
            if v[f] != published[f] {
                bad.add(format!("{key}: {f} = {}, expected {}", v[f], published[f]));
            }
        }
        if genres_of(&v["genres"]) != genres_of(&published["genres"]) {
            bad.add(format!(
                "{key}: genres {}, expected {}",
                v["genres"], published["genres"]
            ));
        }
        if ttl < 0 {
            bad.add(format!("{key}: no expiry (PTTL {ttl})"));
        }
    }

    // Sessions: the open ones with their last position, the ended ones gone.
    let session_keys = scan(&mut conn, "session:*").await?;
    if session_keys.len() != e.open.len() {
        bad.add(format!(
            "{} session:* keys, expected {} open sessions ({} ended)",
            session_keys.len(),
            e.open.len(),
            e.ended.len()
        ));
    }
    for (id, s) in &e.open {
        let key = format!("session:{id}");
        let h = hgetall(&mut conn, &key).await?;
        if h.is_empty() {
            bad.add(format!("{key}: missing (started, never ended)"));
            continue;
        }
        let started_same = match (
            h.get("started_at")
                .map(|t| chrono::DateTime::parse_from_rfc3339(t)),
            chrono::DateTime::parse_from_rfc3339(&s.started_at),
        ) {
            (Some(Ok(a)), Ok(b)) => a == b,
            _ => false,
        };
        let got = (
            h.get("user_id").map(String::as_str),
            h.get("title_id").map(String::as_str),
            h.get("device").map(String::as_str),
            h.get("position_s").and_then(|v| v.parse::<i64>().ok()),
            h.get("watched_s").and_then(|v| v.parse::<i64>().ok()),
        );
        let want = (
            Some(s.user_id.as_str()),
            Some(s.title_id.as_str()),
            Some(s.device.as_str()),
            Some(s.position_s),
            Some(s.watched_s),
        );
        if got != want || !started_same {
            bad.add(format!("{key}: {h:?}, expected {s:?}"));
        }
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await?;
        if ttl < 0 {
            bad.add(format!("{key}: no expiry (PTTL {ttl})"));
        }
    }
    for id in &e.ended {
        if !e.open.contains_key(id) && session_keys.contains(&format!("session:{id}")) {
            bad.add(format!("session:{id}: present, but the session ended"));
        }
    }

    // Viewers now: the open sessions of each title, none expired.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as f64;
    let viewer_keys = scan(&mut conn, "viewers:*").await?;
    for key in &viewer_keys {
        if !e.viewers.contains_key(key.trim_start_matches("viewers:")) {
            bad.add(format!("unexpected {key}"));
        }
    }
    for (t, want) in &e.viewers {
        let key = format!("viewers:{t}");
        let got = zall(&mut conn, &key).await?;
        let members: BTreeSet<String> = got.keys().cloned().collect();
        if &members != want {
            bad.add(format!("{key}: {members:?}, expected {want:?}"));
        }
        if let Some((m, s)) = got.iter().find(|(_, s)| **s <= now_ms) {
            bad.add(format!(
                "{key}: {m} already expired (score {s}, now {now_ms})"
            ));
        }
    }

    // Variables: the last value of each.
    let var_keys = scan(&mut conn, "var:*").await?;
    if var_keys.len() != e.vars.len() {
        bad.add(format!(
            "{} var:* keys, expected {}",
            var_keys.len(),
            e.vars.len()
        ));
    }
    for (name, value) in &e.vars {
        let got: Option<String> = redis::cmd("GET")
            .arg(format!("var:{name}"))
            .query_async(&mut conn)
            .await?;
        if got.as_deref() != Some(value.as_str()) {
            bad.add(format!("var:{name}: {got:?}, expected {value:?}"));
        }
    }

    check_announcements(events, &e, &mut conn, &mut bad).await?;
    bad.finish()
}

/// The `streaming.leaderboard.changed` events: well formed, caused by an event that can
/// change their board, and the final top 10 of each announced board among them (and
/// remembered as the last announced).
async fn check_announcements(
    events: &[Ev],
    e: &Expected,
    conn: &mut MultiplexedConnection,
    bad: &mut Mismatches,
) -> anyhow::Result<()> {
    let causes: HashMap<&str, &str> = events
        .iter()
        .filter(|ev| ev.source != SOURCE)
        .map(|ev| (ev.id.as_str(), ev.ty.as_str()))
        .collect();
    let mut announced: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    let mut ours: Vec<&Ev> = events
        .iter()
        .filter(|ev| ev.ty == "streaming.leaderboard.changed" && ev.source == SOURCE)
        .collect();
    ours.sort_by_key(|ev| (ev.partition, ev.offset));
    for ev in ours {
        let board = ev.data["board"].as_str().unwrap_or("");
        let cause_type = match board {
            VIEWS_ALL => "streaming.session.started",
            TOP_RATED => "streaming.rating.submitted",
            _ => {
                bad.add(format!("{}: announces board `{board}`", ev.id));
                continue;
            }
        };
        if ev.topic != "streaming.derived"
            || ev.subject.as_deref() != Some(board)
            || ev.key.as_deref() != Some(board)
        {
            bad.add(format!(
                "{}: topic {}, subject {:?}, key {:?} (board {board})",
                ev.id, ev.topic, ev.subject, ev.key
            ));
        }
        let cause = ev
            .id
            .strip_prefix(&format!("lb-{board}-"))
            .map(|c| {
                // A raced announcement adds `-<round>` to its cause.
                if causes.contains_key(c) {
                    c
                } else {
                    c.rsplit_once('-').map_or(c, |(head, _)| head)
                }
            })
            .unwrap_or("");
        if causes.get(cause) != Some(&cause_type) {
            bad.add(format!(
                "{}: its cause `{cause}` is not a {cause_type}",
                ev.id
            ));
        }
        let top: Vec<(String, f64)> = ev.data["top"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| {
                        (
                            m["title_id"].as_str().unwrap_or("").to_string(),
                            m["score"].as_f64().unwrap_or(f64::NAN),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if top.is_empty()
            || top.len() > 10
            || top.iter().any(|(_, s)| s.is_nan())
            || top.windows(2).any(|w| w[0].1 < w[1].1)
            || top.iter().any(|(m, _)| m.is_empty())
        {
            bad.add(format!(
                "{}: top is not 1 to 10 members best first: {}",
                ev.id, ev.data["top"]
            ));
        }
        announced
            .entry(board.to_string())
            .or_default()
            .push(top.into_iter().map(|(m, _)| m).collect());
    }
    for board in [VIEWS_ALL, TOP_RATED] {
        let Some(want) = e.boards.get(board).map(top10) else {
            continue;
        };
        let seen = announced.get(board).map(Vec::as_slice).unwrap_or(&[]);
        if !seen.contains(&want) {
            bad.add(format!(
                "{board}: the final top 10 {want:?} was never announced ({} announcements)",
                seen.len()
            ));
        }
        let remembered: Option<String> = redis::cmd("GET")
            .arg(format!("ranking:published:{board}"))
            .query_async(conn)
            .await?;
        let remembered: Option<Vec<String>> =
            remembered.and_then(|r| serde_json::from_str(&r).ok());
        if remembered.as_ref() != Some(&want) {
            bad.add(format!(
                "ranking:published:{board}: {remembered:?}, expected the final top 10 {want:?}"
            ));
        }
    }
    Ok(())
}
