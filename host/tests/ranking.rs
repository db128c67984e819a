//! The ranking-handler, loaded in-process against a Redis database of its own (13), handed
//! a batch that exercises each of its paths: the batch's writes land as the events say, a
//! replay of the batch changes nothing, and a batch costs a handful of Redis round trips
//! whatever its size (the Redis calls counted by `polyhost_backend_calls_total{backend="keyvalue"}`).
//!
//! Needs Redis and Kafka (`cargo xtask services up`) and the plugin
//! (`cargo xtask plugins -p ranking-handler`). Its `streaming.leaderboard.changed` events
//! are not published: the test grants a topic of its own, so the publish is refused (and
//! logged) rather than reaching the platform's `streaming.derived`.

mod common;
mod harness;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, ensure};
use common::{Service, unique_name, within};
use polyhost::backends::{Connections, keyvalue, messaging};
use polyhost::bindings::polyhost::platform::types::{Event, Outcome};
use polyhost::manifest::PluginSpec;
use polyhost::runtime::{Records, Runtime, RuntimeConfig};
use serde_json::{Value, json};

/// The Redis databases these tests own (emptied before and after), one per test so that
/// they can run in parallel.
const DB: u32 = 13;
const DB_LOAD: u32 = 14;

/// The tests count Redis calls on the process's one metrics registry: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PREFIXES: &[&str] = &[
    "session:",
    "viewers:",
    "leaderboard:",
    "cache:",
    "var:",
    "ratings:",
    "genres:",
    "ranking:",
];

fn plugin_path() -> PathBuf {
    harness::platform_plugin("ranking-handler")
}

/// The host's Redis settings for this run (TLS and ACL user when secured), on database `db`.
fn redis_settings(db: u32) -> polyhost::connections::Redis {
    let mut redis = common::settings().redis.clone();
    redis.url = redis_url(db).into();
    redis
}

/// The Redis URL with database `db`.
fn redis_url(db: u32) -> String {
    let base = Service::redis().url;
    let base = match base.rsplit_once('/') {
        Some((head, db)) if !db.is_empty() && db.chars().all(|c| c.is_ascii_digit()) => {
            head.to_string()
        }
        _ => base.trim_end_matches('/').to_string(),
    };
    format!("{base}/{db}")
}

fn ev(offset: i64, id: &str, subject: &str, ty: &str, data: Value) -> Event {
    let mut e = harness::event(id, ty, &data);
    e.subject = Some(subject.to_string());
    e.offset = offset;
    e
}

/// The sum of every series of `metric` whose labels include `backend="keyvalue"` (one per
/// plugin label), read from the process's metrics registry.
fn kv_metric(metric: &str) -> f64 {
    polyhost::metrics::global()
        .encode()
        .lines()
        .filter_map(|l| {
            let labels_and_value = l.strip_prefix(metric)?.strip_prefix('{')?;
            let (labels, value) = labels_and_value.split_once("} ")?;
            labels
                .split(',')
                .any(|label| label == "backend=\"keyvalue\"")
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// `polyhost_backend_call_duration_seconds_sum{backend="keyvalue"}` so far: time spent in Redis
/// calls.
fn kv_seconds() -> f64 {
    kv_metric("polyhost_backend_call_duration_seconds_sum")
}

/// `polyhost_backend_calls_total{backend="keyvalue"}` so far.
fn kv_calls() -> u64 {
    kv_metric("polyhost_backend_calls_total") as u64
}

/// The ranking-handler loaded against Redis database `db`, and the runtime holding it.
async fn load(db: u32) -> Result<(Runtime, Arc<polyhost::runtime::LoadedPlugin>)> {
    let rt = Runtime::new(
        RuntimeConfig {
            max_instances: 4,
            max_memory_mb: 128,
            ..RuntimeConfig::default()
        },
        Arc::new(Connections::new({
            let mut settings = common::settings().clone();
            settings.redis = redis_settings(db);
            settings
        })),
    )?;
    let mut spec = PluginSpec::new("ranking-handler", plugin_path());
    spec.subscribe = vec!["t".into()];
    spec.grants.keyvalue = Some(keyvalue::Grant {
        prefixes: PREFIXES.iter().map(|p| p.to_string()).collect(),
    });
    spec.grants.messaging = Some(messaging::Grant {
        publish: vec![unique_name("ranking")],
    });
    spec.limits.host_call_timeout_ms = 20_000;
    spec.limits.call_timeout_ms = 60_000;
    let plugin = rt
        .load(&spec)
        .await
        .map_err(|e| anyhow::anyhow!("loading the ranking-handler: {e}"))?;
    Ok((rt, plugin))
}

/// A connection to Redis database `db`, emptied.
async fn fresh(db: u32) -> Result<redis::aio::MultiplexedConnection> {
    let redis = Service::redis();
    let client = redis_settings(db).client()?;
    let mut conn = within(
        &redis,
        "connecting",
        client.get_multiplexed_async_connection(),
    )
    .await?;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await?;
    Ok(conn)
}

#[tokio::test]
async fn a_batch_applies_once_in_a_few_round_trips() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut conn = fresh(DB).await?;
    let (_rt, plugin) = load(DB).await?;
    let started = |o, id: &str, s: &str, t: &str| {
        ev(
            o,
            id,
            s,
            "streaming.session.started",
            json!({"session_id": s, "user_id": "u-1", "title_id": t, "device": "tv"}),
        )
    };
    let rating = |o, id: &str, stars: i64| {
        ev(
            o,
            id,
            id,
            "streaming.rating.submitted",
            json!({"title_id": "t-1", "user_id": "u-1", "stars": stars}),
        )
    };
    let events = vec![
        ev(
            0,
            "e0",
            "t-1",
            "streaming.title.published",
            json!({"title_id": "t-1", "kind": "movie", "name": "One", "genres": ["drama", "comedy"]}),
        ),
        ev(
            1,
            "e1",
            "t-2",
            "streaming.title.published",
            json!({"title_id": "t-2", "kind": "movie", "name": "Two", "genres": ["comedy"]}),
        ),
        started(2, "e2", "s-1", "t-1"),
        started(3, "e3", "s-2", "t-2"),
        // t-3 was never published: its start waits, and so does its session's next event.
        started(4, "e4", "s-3", "t-3"),
        ev(
            5,
            "e5",
            "s-3",
            "streaming.session.heartbeat",
            json!({"session_id": "s-3", "user_id": "u-1", "title_id": "t-3", "position_s": 1, "watched_s": 1}),
        ),
        rating(6, "e6", 5),
        rating(7, "e7", 4),
        rating(8, "e8", 3),
        ev(
            9,
            "e9",
            "s-2",
            "streaming.session.ended",
            json!({"session_id": "s-2", "title_id": "t-2", "position_s": 3, "watched_s": 3}),
        ),
        ev(
            10,
            "e10",
            "t-2",
            "streaming.title.updated",
            json!({"title_id": "t-2", "changes": {"genres": ["drama"]}}),
        ),
        ev(
            11,
            "e11",
            "x",
            "streaming.variable.set",
            json!({"name": "x", "value": "y"}),
        ),
        ev(
            12,
            "e12",
            "s-1",
            "streaming.session.heartbeat",
            json!({"session_id": "s-1", "user_id": "u-1", "title_id": "t-1", "position_s": 30, "watched_s": 25}),
        ),
        ev(
            13,
            "e13",
            "u-1",
            "streaming.user.registered",
            json!({"user_id": "u-1"}),
        ),
        rating(14, "e14", 9),
    ];
    let want = |o: &Outcome, i: usize| match i {
        4 | 5 => matches!(o, Outcome::Retry(_)),
        14 => matches!(o, Outcome::Reject(_)),
        _ => matches!(o, Outcome::Ok),
    };

    let mut per_batch = Vec::new();
    for pass in ["first", "replay"] {
        let before = kv_calls();
        let outcomes = plugin
            .handle(&harness::batch("t"), &events, Records::default())
            .await
            .map_err(|e| anyhow::anyhow!("{pass}: {e}"))?;
        per_batch.push(kv_calls() - before);
        for (i, o) in outcomes.iter().enumerate() {
            ensure!(want(o, i), "{pass}: event {i}: {o:?}");
        }

        let zall = async |conn: &mut redis::aio::MultiplexedConnection,
                          key: &str|
               -> Result<BTreeMap<String, f64>> {
            let pairs: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(conn)
                .await?;
            Ok(pairs.into_iter().collect())
        };
        let board = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
            pairs.iter().map(|(m, s)| (m.to_string(), *s)).collect()
        };
        let views = board(&[("t-1", 1.0), ("t-2", 1.0)]);
        ensure!(
            zall(&mut conn, "leaderboard:views:all").await? == views,
            "{pass}: views"
        );
        ensure!(
            zall(&mut conn, "leaderboard:views:2023-11-14").await? == views,
            "{pass}: day"
        );
        ensure!(
            zall(&mut conn, "leaderboard:views:genre:drama").await? == views,
            "{pass}: drama: {:?}",
            zall(&mut conn, "leaderboard:views:genre:drama").await?
        );
        ensure!(
            zall(&mut conn, "leaderboard:views:genre:comedy").await? == board(&[("t-1", 1.0)]),
            "{pass}: comedy: {:?}",
            zall(&mut conn, "leaderboard:views:genre:comedy").await?
        );
        ensure!(
            zall(&mut conn, "leaderboard:top_rated").await? == board(&[("t-1", 4.0)]),
            "{pass}: top rated"
        );
        let ratings: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg("ratings:t-1")
            .query_async(&mut conn)
            .await?;
        ensure!(
            ratings.get("sum").map(String::as_str) == Some("12")
                && ratings.get("count").map(String::as_str) == Some("3"),
            "{pass}: ratings {ratings:?}"
        );
        let s1: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg("session:s-1")
            .query_async(&mut conn)
            .await?;
        ensure!(
            s1.get("watched_s").map(String::as_str) == Some("25"),
            "{pass}: session:s-1 {s1:?}"
        );
        for gone in [
            "session:s-2",
            "session:s-3",
            "viewers:t-2",
            "viewers:t-3",
            "cache:title:t-2",
        ] {
            let e: bool = redis::cmd("EXISTS")
                .arg(gone)
                .query_async(&mut conn)
                .await?;
            ensure!(!e, "{pass}: {gone} exists");
        }
        ensure!(
            zall(&mut conn, "viewers:t-1")
                .await?
                .keys()
                .collect::<Vec<_>>()
                == ["s-1"],
            "{pass}: viewers:t-1"
        );
        let x: Option<String> = redis::cmd("GET")
            .arg("var:x")
            .query_async(&mut conn)
            .await?;
        ensure!(x.as_deref() == Some("y"), "{pass}: var:x {x:?}");
        let cached: bool = redis::cmd("EXISTS")
            .arg("cache:title:t-1")
            .query_async(&mut conn)
            .await?;
        ensure!(cached, "{pass}: cache:title:t-1 missing");
    }
    eprintln!(
        "kv round trips per batch of {}: {per_batch:?}",
        events.len()
    );
    ensure!(
        per_batch.iter().all(|n| (1..=5).contains(n)),
        "kv calls per batch: {per_batch:?}"
    );
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await?;
    Ok(())
}

#[tokio::test]
async fn full_batches_cost_a_fraction_of_a_round_trip_per_event() -> Result<()> {
    let _serial = SERIAL.lock().await;
    const TITLES: usize = 40;
    const BATCH: usize = 256;
    const BATCHES: usize = 8;
    let mut conn = fresh(DB_LOAD).await?;
    let (_rt, plugin) = load(DB_LOAD).await?;
    // The titles first, then batches of session starts, heartbeats and ratings over them.
    let titles: Vec<Event> = (0..TITLES)
        .map(|t| {
            ev(
                t as i64,
                &format!("title-{t}"),
                &format!("t-{t}"),
                "streaming.title.published",
                json!({"title_id": format!("t-{t}"), "genres": [format!("g{}", t % 5)]}),
            )
        })
        .collect();
    let outcomes = plugin
        .handle(&harness::batch("t"), &titles, Records::default())
        .await
        .map_err(|e| anyhow::anyhow!("titles: {e}"))?;
    ensure!(
        outcomes.iter().all(|o| matches!(o, Outcome::Ok)),
        "titles: {outcomes:?}"
    );
    let mut n = 0usize;
    let mut calls = 0;
    let kv_before = kv_seconds();
    let clock = std::time::Instant::now();
    for b in 0..BATCHES {
        let events: Vec<Event> = (0..BATCH)
            .map(|i| {
                let k = b * BATCH + i;
                let t = format!("t-{}", k % TITLES);
                let s = format!("s-{}", k / 3);
                match k % 3 {
                    0 => ev(k as i64, &format!("e{k}"), &s, "streaming.session.started",
                        json!({"session_id": s, "user_id": "u", "title_id": t, "device": "tv"})),
                    1 => ev(k as i64, &format!("e{k}"), &s, "streaming.session.heartbeat",
                        json!({"session_id": s, "user_id": "u", "title_id": format!("t-{}", (k - 1) % TITLES),
                               "position_s": 10, "watched_s": 10})),
                    _ => ev(k as i64, &format!("e{k}"), &format!("r{k}"), "streaming.rating.submitted",
                        json!({"title_id": t, "user_id": "u", "stars": (k % 5 + 1) as i64})),
                }
            })
            .collect();
        let before = kv_calls();
        let outcomes = plugin
            .handle(&harness::batch("t"), &events, Records::default())
            .await
            .map_err(|e| anyhow::anyhow!("batch {b}: {e}"))?;
        calls += kv_calls() - before;
        n += events.len();
        ensure!(
            outcomes.iter().all(|o| matches!(o, Outcome::Ok)),
            "batch {b}: {:?}",
            outcomes.iter().find(|o| !matches!(o, Outcome::Ok))
        );
    }
    let took = clock.elapsed().as_secs_f64();
    let in_kv = kv_seconds() - kv_before;
    let per_event = calls as f64 / n as f64;
    eprintln!(
        "{n} events in batches of {BATCH}: {:.0} events/s, {calls} kv round trips ({per_event:.3} \
         per event), {:.0} % of the time in kv calls",
        n as f64 / took,
        100.0 * in_kv / took
    );
    let views: f64 = redis::cmd("ZSCORE")
        .arg("leaderboard:views:all")
        .arg("t-0")
        .query_async(&mut conn)
        .await?;
    ensure!(views > 0.0, "t-0 has no views");
    // At least one round trip per batch: a count of none means the metric was not read.
    ensure!(
        calls as usize >= n / BATCH,
        "{calls} kv round trips counted for {n} events"
    );
    ensure!(per_event <= 0.05, "{per_event} kv round trips per event");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await?;
    Ok(())
}
