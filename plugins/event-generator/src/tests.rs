//! Tests of whole runs: each walks the messages a run gives (parsing the CloudEvent JSON, as
//! a consumer would) and checks them against docs/events.md, independently of the model's
//! own state.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::events::{Settings, Stream};
use crate::image::PNG_SIGNATURE;
use crate::parse_settings;

/// A message as plain data: topic, key, value, headers.
type Plain = (String, Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

fn run(seed: u64, total: u64, batch: impl Fn(usize) -> u32) -> Vec<Plain> {
    let mut stream = Stream::new(Settings { seed, total });
    let mut out = Vec::new();
    for call in 0.. {
        let got = stream.next_batch(batch(call));
        if got.is_empty() {
            break;
        }
        out.extend(
            got.into_iter()
                .map(|m| (m.topic, m.key, m.value, m.headers)),
        );
    }
    out
}

/// The CloudEvents (topic, event) of a run of 20,000 events with seed 42, generated once
/// and shared by the tests that walk it.
fn cloud_events() -> &'static [(String, Value)] {
    static EVENTS: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        run(42, 20_000, |_| 500)
            .into_iter()
            .map(|(topic, _, value, _)| (topic, serde_json::from_slice(&value).unwrap()))
            .collect()
    })
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field} in {v}"))
}

#[test]
fn settings_default_parse_and_reject_garbage() {
    let none = |_: &str| Ok(None);
    assert_eq!(parse_settings(none), Ok(Settings { seed: 42, total: 0 }));
    let some = |k: &str| Ok(Some(if k == "seed" { " 7" } else { "20000" }.to_string()));
    assert_eq!(
        parse_settings(some),
        Ok(Settings {
            seed: 7,
            total: 20_000
        })
    );
    let bad = |k: &str| Ok((k == "total").then(|| "lots".to_string()));
    assert!(parse_settings(bad).unwrap_err().contains("total"));
    let failing = |_: &str| Err("store down".to_string());
    assert!(parse_settings(failing).is_err());
}

#[test]
fn same_seed_same_bytes_whatever_the_batch_sizes() {
    let one_go = run(42, 3000, |_| u32::MAX);
    let sizes = [1, 7, 100, 3, 250];
    let varied = run(42, 3000, |call| sizes[call % sizes.len()]);
    assert_eq!(one_go.len(), 3000);
    assert!(one_go == varied, "batch sizes changed the messages");
}

#[test]
fn different_seeds_differ() {
    let a = run(42, 200, |_| 50);
    let b = run(43, 200, |_| 50);
    let differing = a.iter().zip(&b).filter(|(x, y)| x.2 != y.2).count();
    assert!(differing > 190, "only {differing} of 200 messages differ");
}

/// Every entity id an event names (subject and `*_id` fields), with the event ids; variable
/// names are shared by design (`streaming.variable.set` sets a platform-wide value).
fn ids_of_run(seed: u64, total: u64) -> HashSet<String> {
    let mut ids = HashSet::new();
    for (_, _, value, _) in run(seed, total, |_| 500) {
        let ev: Value = serde_json::from_slice(&value).unwrap();
        ids.insert(s(&ev, "id").to_string());
        if s(&ev, "type") != "streaming.variable.set" {
            ids.insert(s(&ev, "subject").to_string());
        }
        for (field, v) in ev["data"].as_object().unwrap() {
            if field.ends_with("_id") {
                ids.insert(v.as_str().unwrap().to_string());
            }
        }
    }
    ids
}

#[test]
fn entity_ids_carry_the_seed_so_runs_of_two_seeds_share_none() {
    let a = ids_of_run(7, 3000);
    let b = ids_of_run(8, 3000);
    for prefix in ["u-7-", "sub-7-", "pay-7-", "t-7-", "a-7-", "s-7-", "evt-7-"] {
        assert!(
            a.iter().any(|id| id.starts_with(prefix)),
            "no id starts with {prefix}"
        );
    }
    assert!(a.contains("u-7-1") && a.contains("t-7-1") && a.contains("s-7-1"));
    // Every id is `<kind>-<seed>-<n>`.
    for id in &a {
        let mut parts = id.split('-');
        let (kind, tag, n) = (parts.next(), parts.next(), parts.next());
        assert!(
            kind.is_some_and(|k| !k.is_empty()) && tag == Some("7"),
            "{id}"
        );
        assert!(n.is_some_and(|n| n.parse::<u64>().is_ok()), "{id}");
        assert_eq!(parts.next(), None, "{id}");
    }
    let shared: Vec<_> = a.intersection(&b).take(5).collect();
    assert!(shared.is_empty(), "ids in both runs: {shared:?}");
    // The same seed names the same entities again.
    assert_eq!(a, ids_of_run(7, 3000));
}

#[test]
fn exactly_total_events_then_empty() {
    let mut stream = Stream::new(Settings {
        seed: 1,
        total: 250,
    });
    let sizes: Vec<usize> = (0..5).map(|_| stream.next_batch(100).len()).collect();
    assert_eq!(sizes, [100, 100, 50, 0, 0]);
    let mut endless = Stream::new(Settings { seed: 1, total: 0 });
    assert_eq!(endless.next_batch(1000).len(), 1000);
    assert_eq!(endless.next_batch(0).len(), 0);
    assert_eq!(endless.next_batch(7).len(), 7);
}

#[test]
fn envelope_ids_times_keys_and_headers() {
    let messages = run(42, 2000, |_| 300);
    let mut previous_ms = None;
    for (n, (topic, key, value, headers)) in messages.iter().enumerate() {
        let ev: Value = serde_json::from_slice(value).unwrap();
        assert_eq!(ev["specversion"], "1.0");
        assert_eq!(s(&ev, "id"), format!("evt-42-{}", n + 1));
        assert_eq!(ev["source"], "/polyhost/event-generator");
        assert_eq!(ev["datacontenttype"], "application/json");
        assert_eq!(key.as_deref(), Some(s(&ev, "subject").as_bytes()));
        assert_eq!(
            headers,
            &[(
                "content-type".to_string(),
                b"application/cloudevents+json".to_vec()
            )]
        );
        let ty = s(&ev, "type");
        let expected_topic = match ty.split('.').nth(1).unwrap() {
            "user" => "streaming.users",
            "subscription" | "payment" => "streaming.billing",
            "title" => "streaming.catalog",
            "rating" => "streaming.ratings",
            "session" | "variable" => "streaming.sessions",
            other => panic!("unexpected entity {other}"),
        };
        assert_eq!(topic, expected_topic, "{ty}");
        let time = s(&ev, "time");
        assert_eq!(time.len(), 24, "{time}");
        let ms = time_ms(time);
        if let Some(prev) = previous_ms {
            assert!(
                (1_000..=30_000).contains(&(ms - prev)),
                "{time} after {prev}"
            );
        } else {
            assert_eq!(time, "2026-01-01T00:00:00.000Z");
        }
        previous_ms = Some(ms);
    }
}

/// ms since 2026-01-01 of a time within January–March 2026 (enough for these runs).
fn time_ms(t: &str) -> i64 {
    let num = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    assert_eq!(&t[..5], "2026-");
    let days_before_month = [0, 31, 59][(num(5..7) - 1) as usize];
    let day = days_before_month + num(8..10) - 1;
    ((day * 24 + num(11..13)) * 60 + num(14..16)) * 60_000 + num(17..19) * 1000 + num(20..23)
}

/// The data fields docs/events.md names for each type.
fn required_fields(ty: &str) -> &'static [&'static str] {
    match ty {
        "streaming.user.registered" => {
            &["user_id", "email", "display_name", "country", "birth_year"]
        }
        "streaming.user.profile_updated" => &["user_id", "changes"],
        "streaming.user.preferences_updated" => &[
            "user_id",
            "language",
            "subtitles",
            "autoplay",
            "maturity_limit",
            "favourite_genres",
        ],
        "streaming.subscription.started" | "streaming.subscription.plan_changed" => &[
            "subscription_id",
            "user_id",
            "plan",
            "price",
            "currency",
            "period",
        ],
        "streaming.subscription.cancelled" => &["subscription_id", "user_id", "reason"],
        "streaming.payment.succeeded" => &[
            "payment_id",
            "subscription_id",
            "user_id",
            "amount",
            "currency",
            "method",
        ],
        "streaming.payment.failed" => &[
            "payment_id",
            "subscription_id",
            "user_id",
            "amount",
            "currency",
            "method",
            "failure_reason",
        ],
        "streaming.title.published" => &[
            "title_id",
            "kind",
            "name",
            "genres",
            "year",
            "maturity_rating",
            "cast",
        ],
        "streaming.title.updated" => &["title_id", "changes"],
        "streaming.title.related" => &["title_id", "related_title_id", "relation"],
        "streaming.title.asset_uploaded" => &[
            "title_id",
            "asset_id",
            "role",
            "content_type",
            "width",
            "height",
            "data_base64",
            "sha256",
        ],
        "streaming.rating.submitted" => &["user_id", "title_id", "stars"],
        "streaming.session.started" => &["session_id", "user_id", "title_id", "device"],
        "streaming.session.heartbeat" | "streaming.session.ended" => &[
            "session_id",
            "user_id",
            "title_id",
            "position_s",
            "watched_s",
        ],
        "streaming.variable.set" => &["name", "value"],
        other => panic!("the generator must not produce {other}"),
    }
}

#[test]
fn every_event_has_the_documented_fields() {
    let mut types = HashSet::new();
    for (_, ev) in cloud_events() {
        let ty = s(ev, "type").to_string();
        let data = &ev["data"];
        for field in required_fields(&ty) {
            assert!(!data[field].is_null(), "{ty} without {field}: {data}");
        }
        match ty.as_str() {
            "streaming.user.profile_updated" => {
                let changes = data["changes"].as_object().unwrap();
                assert!(!changes.is_empty());
                assert!(
                    changes
                        .keys()
                        .all(|k| ["email", "display_name", "country"].contains(&k.as_str()))
                );
            }
            "streaming.title.updated" => {
                let changes = data["changes"].as_object().unwrap();
                assert!(!changes.is_empty());
                let allowed = ["name", "genres", "maturity_rating", "cast"];
                assert!(changes.keys().all(|k| allowed.contains(&k.as_str())));
            }
            "streaming.title.published" => match s(data, "kind") {
                "movie" => assert!(data["duration_min"].is_u64()),
                "series" => {
                    let seasons = data["seasons"].as_array().unwrap();
                    assert!(!seasons.is_empty());
                    for season in seasons {
                        assert!(season["number"].is_u64());
                        for episode in season["episodes"].as_array().unwrap() {
                            for f in ["number", "name", "duration_min"] {
                                assert!(!episode[f].is_null(), "episode without {f}");
                            }
                        }
                    }
                }
                other => panic!("kind {other}"),
            },
            "streaming.subscription.started" | "streaming.subscription.plan_changed" => {
                let price = match s(data, "plan") {
                    "basic" => "19.90",
                    "standard" => "39.90",
                    "premium" => "55.90",
                    other => panic!("plan {other}"),
                };
                assert_eq!(s(data, "price"), price);
                assert_eq!(s(data, "currency"), "BRL");
            }
            "streaming.payment.succeeded" | "streaming.payment.failed" => {
                assert!(["card", "pix", "boleto"].contains(&s(data, "method")));
            }
            "streaming.rating.submitted" => {
                assert!((1..=5).contains(&data["stars"].as_u64().unwrap()));
            }
            _ => {}
        }
        types.insert(ty);
    }
    assert_eq!(types.len(), 17, "every non-derived type appears: {types:?}");
}

/// The walk of `every_reference_points_backwards`: what a consumer has seen so far.
#[derive(Default)]
struct Seen {
    users: HashSet<String>,
    /// subscription → (user, plan price, cancelled)
    subs: HashMap<String, (String, String, bool)>,
    /// users with a subscription that is not cancelled
    subscribed: HashSet<String>,
    titles: HashSet<String>,
    rated: HashSet<(String, String)>,
    /// session → (user, title, position, watched, ended)
    sessions: HashMap<String, (String, String, u64, u64, bool)>,
    ids: HashSet<String>,
}

#[test]
fn every_reference_points_backwards() {
    let mut seen = Seen::default();
    for (_, ev) in cloud_events() {
        let ty = s(ev, "type");
        let d = &ev["data"];
        let subject = s(ev, "subject").to_string();
        let known_user = |seen: &Seen, f: &str| {
            assert!(seen.users.contains(s(d, f)), "{ty} of unknown user: {d}");
        };
        let known_title = |seen: &Seen, f: &str| {
            assert!(seen.titles.contains(s(d, f)), "{ty} of unknown title: {d}");
        };
        match ty {
            "streaming.user.registered" => {
                assert_eq!(s(d, "user_id"), subject);
                assert!(seen.users.insert(subject), "registered twice");
            }
            "streaming.user.profile_updated" | "streaming.user.preferences_updated" => {
                assert_eq!(s(d, "user_id"), subject);
                known_user(&seen, "user_id");
            }
            "streaming.subscription.started" => {
                assert_eq!(s(d, "subscription_id"), subject);
                known_user(&seen, "user_id");
                let user = s(d, "user_id").to_string();
                assert!(
                    seen.subscribed.insert(user.clone()),
                    "second live subscription"
                );
                let entry = (user, s(d, "price").to_string(), false);
                assert!(seen.subs.insert(subject, entry).is_none(), "started twice");
            }
            "streaming.subscription.plan_changed"
            | "streaming.subscription.cancelled"
            | "streaming.payment.succeeded"
            | "streaming.payment.failed" => {
                assert_eq!(s(d, "subscription_id"), subject);
                let sub = seen
                    .subs
                    .get_mut(&subject)
                    .unwrap_or_else(|| panic!("{ty} of unknown {subject}"));
                assert_eq!(sub.0, s(d, "user_id"));
                assert!(!sub.2, "{ty} after cancellation of {subject}");
                match ty {
                    "streaming.subscription.plan_changed" => sub.1 = s(d, "price").to_string(),
                    "streaming.subscription.cancelled" => {
                        sub.2 = true;
                        seen.subscribed.remove(&sub.0);
                    }
                    _ => {
                        assert_eq!(sub.1, s(d, "amount"), "payment of the plan's price");
                        assert!(seen.ids.insert(s(d, "payment_id").to_string()));
                    }
                }
            }
            "streaming.title.published" => {
                assert_eq!(s(d, "title_id"), subject);
                assert!(seen.titles.insert(subject), "published twice");
            }
            "streaming.title.updated" | "streaming.title.asset_uploaded" => {
                assert_eq!(s(d, "title_id"), subject);
                known_title(&seen, "title_id");
                if ty.ends_with("asset_uploaded") {
                    assert!(seen.ids.insert(s(d, "asset_id").to_string()));
                }
            }
            "streaming.title.related" => {
                assert_eq!(s(d, "title_id"), subject);
                known_title(&seen, "title_id");
                known_title(&seen, "related_title_id");
                assert_ne!(s(d, "title_id"), s(d, "related_title_id"));
            }
            "streaming.rating.submitted" => {
                assert_eq!(s(d, "title_id"), subject);
                known_user(&seen, "user_id");
                known_title(&seen, "title_id");
                let pair = (s(d, "user_id").to_string(), subject);
                assert!(seen.rated.insert(pair), "rated twice: {d}");
            }
            "streaming.session.started" => {
                assert_eq!(s(d, "session_id"), subject);
                known_user(&seen, "user_id");
                known_title(&seen, "title_id");
                let entry = (s(d, "user_id").into(), s(d, "title_id").into(), 0, 0, false);
                assert!(seen.sessions.insert(subject, entry).is_none());
            }
            "streaming.session.heartbeat" | "streaming.session.ended" => {
                let session = seen
                    .sessions
                    .get_mut(&subject)
                    .unwrap_or_else(|| panic!("{ty} of unknown {subject}"));
                assert!(!session.4, "{ty} after the end of {subject}");
                assert_eq!(
                    (session.0.as_str(), session.1.as_str()),
                    (s(d, "user_id"), s(d, "title_id"))
                );
                let (position, watched) = (
                    d["position_s"].as_u64().unwrap(),
                    d["watched_s"].as_u64().unwrap(),
                );
                assert!(
                    position >= session.2 && watched >= session.3 && watched <= position,
                    "{d}"
                );
                (session.2, session.3) = (position, watched);
                session.4 = ty.ends_with("ended");
            }
            "streaming.variable.set" => {
                assert_eq!(s(d, "name"), subject);
                if subject == "homepage.featured_title" {
                    known_title(&seen, "value");
                }
            }
            other => panic!("unexpected {other}"),
        }
    }
}

#[test]
fn popularity_is_heavy_tailed() {
    let mut sessions: HashMap<String, usize> = HashMap::new();
    let mut titles: usize = 0;
    for (_, ev) in cloud_events() {
        match s(ev, "type") {
            "streaming.title.published" => titles += 1,
            "streaming.session.started" => {
                *sessions
                    .entry(s(&ev["data"], "title_id").into())
                    .or_default() += 1
            }
            _ => {}
        }
    }
    let mut counts: Vec<usize> = sessions.into_values().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let total: usize = counts.iter().sum();
    let top: usize = counts.iter().take(titles.div_ceil(10)).sum();
    println!("top 10% of {titles} titles: {top} of {total} sessions");
    assert!(
        top * 100 > total * 40,
        "top 10% of {titles} titles got {top} of {total} sessions"
    );
}

#[test]
fn some_sessions_never_end_and_some_payments_fail_then_succeed() {
    let events = cloud_events();
    // session → (index of its last event, ended)
    let mut sessions: HashMap<String, (usize, bool)> = HashMap::new();
    let mut failed: HashSet<String> = HashSet::new();
    let (mut failures, mut recovered) = (0, 0);
    for (i, (_, ev)) in events.iter().enumerate() {
        let subject = s(ev, "subject").to_string();
        match s(ev, "type") {
            "streaming.session.started" | "streaming.session.heartbeat" => {
                sessions.insert(subject, (i, false));
            }
            "streaming.session.ended" => {
                sessions.insert(subject, (i, true));
            }
            "streaming.payment.failed" => {
                failures += 1;
                failed.insert(subject);
            }
            "streaming.payment.succeeded" if failed.remove(&subject) => recovered += 1,
            _ => {}
        }
    }
    let ended = sessions.values().filter(|(_, e)| *e).count();
    // Sessions silent for the last 5,000 events were abandoned, not merely still open.
    let abandoned = sessions.values().filter(|(i, e)| !e && *i < 15_000).count();
    assert!(ended > 1000, "{ended} sessions ended");
    assert!(
        abandoned > 50,
        "{abandoned} sessions abandoned of {}",
        sessions.len()
    );
    assert!(failures > 30, "{failures} payments failed");
    assert!(
        recovered > 10,
        "{recovered} failed payments later succeeded"
    );
}

#[test]
fn assets_are_real_pngs_with_their_digest() {
    let mut roles: HashMap<String, HashSet<String>> = HashMap::new();
    let mut published = Vec::new();
    let events = cloud_events();
    for (i, (_, ev)) in events.iter().enumerate() {
        let d = &ev["data"];
        match s(ev, "type") {
            "streaming.title.published" => published.push((i, s(d, "title_id").to_string())),
            "streaming.title.asset_uploaded" => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s(d, "data_base64"))
                    .unwrap();
                assert_eq!(&bytes[..8], &PNG_SIGNATURE);
                assert_eq!(&bytes[12..16], b"IHDR");
                let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
                let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
                assert_eq!(
                    (d["width"].as_u64(), d["height"].as_u64()),
                    (Some(width.into()), Some(height.into()))
                );
                let expected = match s(d, "role") {
                    "thumbnail" => (48, 27),
                    "banner" => (96, 32),
                    other => panic!("role {other}"),
                };
                assert_eq!((width, height), expected);
                assert_eq!(s(d, "content_type"), "image/png");
                let digest: String = Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                assert_eq!(s(d, "sha256"), digest);
                let role = s(d, "role").to_string();
                assert!(
                    roles
                        .entry(s(d, "title_id").into())
                        .or_default()
                        .insert(role),
                    "second {d}"
                );
            }
            _ => {}
        }
    }
    // Every title published well before the end has both pictures.
    for (i, title) in published.iter().filter(|(i, _)| *i < 19_000) {
        assert_eq!(
            roles.get(title).map(HashSet::len),
            Some(2),
            "{title} (event {i})"
        );
    }
}

#[test]
fn the_mix_starts_with_creations_then_sessions_ratings_and_payments_dominate() {
    let events = cloud_events();
    let share = |range: std::ops::Range<usize>, kinds: &[&str]| {
        let n = events[range.clone()]
            .iter()
            .filter(|(_, ev)| kinds.iter().any(|k| s(ev, "type").starts_with(k)))
            .count();
        n as f64 / range.len() as f64
    };
    let early = share(
        0..100,
        &["streaming.user.registered", "streaming.title.published"],
    );
    assert!(early > 0.6, "early creations {early}");
    let steady = &[
        "streaming.session.",
        "streaming.rating.",
        "streaming.payment.",
    ];
    let later = share(5000..20_000, steady);
    assert!(later > 0.6, "steady sessions/ratings/payments {later}");
    let variables = share(0..20_000, &["streaming.variable.set"]);
    assert!(variables > 0.0005, "variables {variables}");

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, ev) in &events[5000..] {
        *counts.entry(ev["type"].as_str().unwrap()).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_unstable_by_key(|c| std::cmp::Reverse(c.1));
    for (ty, n) in counts {
        println!("{ty:40} {:5.1}%", n as f64 * 100.0 / 15_000.0);
    }
}
