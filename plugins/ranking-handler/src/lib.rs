//! S2.3 ranking-handler: sessions, viewers now, leaderboards, ratings, a title cache and
//! dynamic variables → Redis, and `streaming.leaderboard.changed` → `streaming.derived`.
//!
//! Every event's writes go in one `kv.apply-once` keyed by its id, so a replay changes
//! nothing. What depends on state several partitions write (a title's place on the genre
//! boards, its `top_rated` score) is recomputed afterwards from the stored state, which is
//! idempotent, so it runs on replays too. The domain logic is in [`domain`]; this file is the
//! WIT glue.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

pub mod domain;

use std::collections::{BTreeMap, HashSet};

use domain::{Action, Cmd, Config, TitleGenres, keys};
use exports::polyhost::platform::handler::Guest;
use polyhost::platform::kv::{self, Command, Scored, SetCommand};
use polyhost::platform::messaging::{self, Message};
use polyhost::platform::types::{BatchInfo, Error, Event, Outcome};
use wasi::logging::logging::{Level, log};

struct RankingHandler;

/// Why an event did not apply.
enum Failure {
    Retry(String),
    Reject(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        if e.transient {
            Failure::Retry(e.message)
        } else {
            Failure::Reject(e.message)
        }
    }
}

/// The last event of a batch that touched an announced board.
struct Touch {
    cause_id: String,
    time: Option<i64>,
    /// The batch's events that touched the board (retried if announcing fails transiently).
    events: Vec<usize>,
}

impl Guest for RankingHandler {
    fn handle(batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        let cfg = match Config::from_lookup(|k| wasi::config::store::get(k).ok().flatten()) {
            Ok(cfg) => cfg,
            Err(e) => {
                log(Level::Error, "ranking-handler", &e);
                return events.iter().map(|_| Outcome::Retry(e.clone())).collect();
            }
        };
        let mut outcomes = Vec::with_capacity(events.len());
        // Subjects with an event waiting for a retry: their later events wait too, so that
        // each entity's events apply in order.
        let mut waiting: HashSet<String> = HashSet::new();
        let mut touched: BTreeMap<&'static str, Touch> = BTreeMap::new();
        for (i, ev) in events.iter().enumerate() {
            let subject = ev.subject.clone().unwrap_or_default();
            if waiting.contains(&subject) {
                outcomes.push(Outcome::Retry(format!(
                    "an earlier event of `{subject}` waits for a retry"
                )));
                continue;
            }
            outcomes.push(match handle_event(ev, &cfg) {
                Ok(board) => {
                    if let Some(board) = board {
                        let t = touched.entry(board).or_insert_with(|| Touch {
                            cause_id: String::new(),
                            time: None,
                            events: Vec::new(),
                        });
                        t.cause_id.clone_from(&ev.id);
                        t.time = ev.time;
                        t.events.push(i);
                    }
                    Outcome::Ok
                }
                Err(Failure::Retry(reason)) => {
                    waiting.insert(subject);
                    Outcome::Retry(reason)
                }
                Err(Failure::Reject(reason)) => {
                    log(
                        Level::Warn,
                        "ranking-handler",
                        &format!(
                            "{}/{} offset {}: rejecting {}: {reason}",
                            batch.topic, batch.partition, ev.offset, ev.id
                        ),
                    );
                    Outcome::Reject(reason)
                }
            });
        }
        for (board, touch) in &touched {
            if let Err(e) = announce(board, touch) {
                log(
                    Level::Warn,
                    "ranking-handler",
                    &format!("cannot announce a change of `{board}`: {}", e.message),
                );
                if e.transient {
                    for &i in &touch.events {
                        outcomes[i] =
                            Outcome::Retry(format!("announcing `{board}`: {}", e.message));
                    }
                }
            }
        }
        outcomes
    }
}

export!(RankingHandler);

/// Applies one event; returns the announced board it may have changed.
fn handle_event(ev: &Event, cfg: &Config) -> Result<Option<&'static str>, Failure> {
    let action = domain::parse(&ev.type_, &ev.data, ev.time).map_err(Failure::Reject)?;
    if let Action::Started { title_id, .. } = &action
        && kv::hget(&keys::genres(title_id), "current")?.is_none()
    {
        return Err(Failure::Retry(format!(
            "the genres of title `{title_id}` are not known yet"
        )));
    }
    let cmds = domain::commands(&action, cfg, now_ms());
    if !cmds.is_empty() {
        let dedupe = format!("{}|{}", ev.source, ev.id);
        let commands: Vec<Command> = cmds.into_iter().map(to_wit).collect();
        kv::apply_once(&dedupe, domain::DEDUPE_TTL_MS, &commands)?;
    }
    match &action {
        Action::Rating { title_id, .. } => update_top_rated(title_id, cfg)?,
        Action::Started { title_id, .. } => {
            sync_genre_boards(title_id)?;
            prune_viewers(title_id)?;
        }
        Action::Heartbeat { title_id, .. } => prune_viewers(title_id)?,
        Action::Title {
            title_id,
            genres: Some(_),
            ..
        } => sync_genre_boards(title_id)?,
        _ => {}
    }
    Ok(action.announced_board())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn to_wit(cmd: Cmd) -> Command {
    match cmd {
        Cmd::Set { key, value, ttl_ms } => Command::Set(SetCommand { key, value, ttl_ms }),
        Cmd::Del(k) => Command::Del(k),
        Cmd::Expire(k, ttl) => Command::Expire((k, ttl)),
        Cmd::Hset(k, f, v) => Command::Hset((k, f, v)),
        Cmd::HincrBy(k, f, d) => Command::HincrBy((k, f, d)),
        Cmd::Zadd(k, m, s) => Command::Zadd((k, m, s)),
        Cmd::ZincrBy(k, m, d) => Command::ZincrBy((k, m, d)),
        Cmd::Zrem(k, m) => Command::Zrem((k, m)),
    }
}

/// Sets the title's `top_rated` score from its stored sum and count (idempotent; ratings of
/// one title come from one partition, in order).
fn update_top_rated(title: &str, cfg: &Config) -> Result<(), Failure> {
    let fields = kv::hgetall(&keys::ratings(title))?;
    let (sum, count) = domain::parse_ratings(&fields).map_err(Failure::Reject)?;
    match domain::top_rated_score(sum, count, cfg.top_rated_min_votes) {
        Some(score) => {
            kv::zadd(
                domain::BOARD_TOP_RATED,
                &[Scored {
                    member: title.to_string(),
                    score,
                }],
            )?;
        }
        None => {
            kv::zrem(domain::BOARD_TOP_RATED, &[title.to_string()])?;
        }
    }
    Ok(())
}

/// A title's genres and all-time views.
fn title_state(title: &str) -> Result<(TitleGenres, Option<f64>), Failure> {
    let genres =
        domain::parse_genres(&kv::hgetall(&keys::genres(title))?).map_err(Failure::Reject)?;
    let views = kv::zscore(domain::BOARD_VIEWS_ALL, title)?;
    Ok((genres, views))
}

/// Puts the title on the boards of its current genres with its all-time views, and takes it
/// off the others. Session starts (several partitions) and title updates race here, so the
/// state is read again after writing and the writes redone until it held still: the last
/// write then always reflects the final state.
fn sync_genre_boards(title: &str) -> Result<(), Failure> {
    for _ in 0..8 {
        let before = title_state(title)?;
        for cmd in domain::genre_board_cmds(title, &before.0, before.1) {
            match cmd {
                Cmd::Zadd(board, member, score) => {
                    kv::zadd(&board, &[Scored { member, score }])?;
                }
                Cmd::Zrem(board, member) => {
                    kv::zrem(&board, &[member])?;
                }
                _ => unreachable!("genre boards only add and remove"),
            }
        }
        if title_state(title)? == before {
            return Ok(());
        }
    }
    Err(Failure::Retry(format!(
        "the genre boards of `{title}` kept changing"
    )))
}

/// Drops the title's viewers whose session expired without an `ended`.
fn prune_viewers(title: &str) -> Result<(), Failure> {
    let key = keys::viewers(title);
    let stale = kv::zrange_by_score(&key, 0.0, now_ms() as f64, false, Some(100))?;
    if !stale.is_empty() {
        let members: Vec<String> = stale.into_iter().map(|s| s.member).collect();
        kv::zrem(&key, &members)?;
    }
    Ok(())
}

/// Publishes `streaming.leaderboard.changed` when the board's top 10 differs from the one
/// last published (`ranking:published:<board>`), and remembers it. Batches of several
/// partitions announce concurrently, so after remembering it looks again, until what it
/// remembered is what the board shows: the final top 10 is always published and remembered.
fn announce(board: &str, touch: &Touch) -> Result<(), Error> {
    let key = keys::published(board);
    for round in 0..5 {
        let top: Vec<(String, f64)> = kv::zrange_by_rank(board, 0, domain::TOP_N as i64 - 1, true)?
            .into_iter()
            .map(|s| (s.member, s.score))
            .collect();
        let published = kv::get(&key)?;
        if !domain::top_changed(published.as_deref(), &top) {
            return Ok(());
        }
        let (_, value) =
            domain::leaderboard_changed(board, &top, &touch.cause_id, round, touch.time);
        messaging::publish(&Message {
            topic: domain::DERIVED_TOPIC.to_string(),
            key: Some(board.as_bytes().to_vec()),
            value,
            headers: vec![],
        })?;
        kv::set_ex(&key, &domain::published_value(&top), domain::DEDUPE_TTL_MS)?;
    }
    Ok(())
}
