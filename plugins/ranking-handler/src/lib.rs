//! S2.3 ranking-handler: sessions, viewers now, leaderboards, ratings, a title cache and
//! dynamic variables → Redis, and `streaming.leaderboard.changed` → `streaming.derived`.
//!
//! A batch costs a few Redis round trips, whatever its size:
//!
//! 1. one `kv.pipeline` reading the genres of the titles its session starts need known;
//! 2. one `kv.apply-once-many`: every event's writes as one entry keyed by its id, so a
//!    replay changes nothing, in the batch's order (so per entity);
//! 3. one `kv.pipeline` reading the state several partitions write (a title's ratings, its
//!    genres and all-time views, its expired viewers);
//! 4. one `kv.pipeline` writing what depends on it (the `top_rated` score, the title's place
//!    on the genre boards, expired viewers removed), reading the genres again to see that
//!    they held still, and reading the announced boards' top 10 and what was last published;
//! 5. when a top 10 changed: the event published, then one `kv.pipeline` remembering it and
//!    reading the board again.
//!
//! It exports the handler contract's partitions form: a call carries the events of several
//! partitions of its four topics, worked out as one batch, so those round trips are per
//! call, not per partition. Each entity's events keep their order (within a partition;
//! between partitions there is none to keep).
//!
//! The recomputed state is idempotent, so it runs on replays too. The domain logic is in
//! [`domain`]; this file is the WIT glue.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/partitions-platform-handler",
    generate_all,
});

pub mod domain;

use std::collections::{BTreeMap, HashMap, HashSet};

use domain::{Action, Cmd, Config, Derived, TitleGenres, keys};
use exports::polyhost::platform::partitions_handler::{Guest, PartitionEvents};
use polyhost::platform::kv::{self, ApplyEntry, Command, Op, RankRange, Reply, Scored, SetCommand};
use polyhost::platform::messaging::{self, Message};
use polyhost::platform::types::{BatchInfo, Error, ErrorKind, Event, Outcome};
use polyhost_guest::Flattened;
use wasi::logging::logging::{Level, log};

struct RankingHandler;

/// The last event of a batch that touched an announced board.
struct Touch {
    cause_id: String,
    time: Option<i64>,
    /// The batch's events that touched the board (retried if announcing fails transiently).
    events: Vec<usize>,
}

/// How many times the genre boards of a title are rewritten while its state keeps changing.
const GENRE_ROUNDS: usize = 8;
/// How many times a board's top 10 is announced while concurrent batches keep changing it.
const ANNOUNCE_ROUNDS: u32 = 5;
/// Expired viewers dropped per title and batch.
const PRUNE_LIMIT: u32 = 100;

/// The outcome for a failed call: `retry` when it is transient, else `reject`.
fn failed(e: &Error, what: &str) -> Outcome {
    let reason = format!("{what}: {}", e.message);
    if e.transient {
        Outcome::Retry(reason)
    } else {
        Outcome::Reject(reason)
    }
}

/// A call's outcomes as they are decided.
struct Outcomes<'a> {
    /// The call, for each event's partition.
    call: &'a Flattened<BatchInfo, Event>,
    events: &'a [Event],
    list: Vec<Outcome>,
}

impl Outcomes<'_> {
    fn ok(&self, i: usize) -> bool {
        matches!(self.list[i], Outcome::Ok)
    }

    /// Sets event `i`'s outcome unless it already failed; rejections are logged.
    fn set(&mut self, i: usize, outcome: Outcome) {
        if !self.ok(i) {
            return;
        }
        if let Outcome::Reject(reason) = &outcome {
            let (ev, batch) = (&self.events[i], self.call.partition(i));
            log(
                Level::Warn,
                "ranking-handler",
                &format!(
                    "{}/{} offset {}: rejecting {}: {reason}",
                    batch.topic, batch.partition, ev.offset, ev.id
                ),
            );
        }
        self.list[i] = outcome;
    }

    fn set_all(&mut self, events: &[usize], outcome: &Outcome) {
        for &i in events {
            self.set(i, outcome.clone());
        }
    }
}

impl Guest for RankingHandler {
    fn handle(partitions: Vec<PartitionEvents>) -> Vec<Vec<Outcome>> {
        let call = Flattened::new(partitions, |p| (p.batch, p.events));
        let list = match Config::from_lookup(|k| wasi::config::store::get(k).ok().flatten()) {
            Ok(cfg) => handle(&call, &cfg),
            Err(e) => {
                log(Level::Error, "ranking-handler", &e);
                vec![Outcome::Retry(e); call.events.len()]
            }
        };
        call.split(list)
    }
}

/// Handles the events of a call, worked out as one batch.
fn handle(call: &Flattened<BatchInfo, Event>, cfg: &Config) -> Vec<Outcome> {
    let events = &call.events;
    let mut out = Outcomes {
        call,
        events,
        list: vec![Outcome::Ok; events.len()],
    };
    let actions: Vec<Result<Action, String>> = events
        .iter()
        .map(|ev| domain::parse(&ev.type_, &ev.data, ev.time))
        .collect();
    let applied = apply(&mut out, &actions, cfg);
    let mut derived = Derived::default();
    for &i in &applied {
        if let Ok(a) = &actions[i] {
            derived.add(i, a);
        }
    }
    // The announced boards the batch's events may have changed: read once the derived
    // state is written, in the same round trip.
    let mut announced: Vec<&'static str> = applied
        .iter()
        .filter_map(|&i| actions[i].as_ref().ok().and_then(Action::announced_board))
        .collect();
    announced.sort_unstable();
    announced.dedup();
    let boards = if derived.is_empty() {
        BTreeMap::new()
    } else {
        recompute(&mut out, &derived, cfg, &announced)
    };
    // The boards whose top 10 the batch may have changed, by the last event that did.
    let mut touched: BTreeMap<&'static str, Touch> = BTreeMap::new();
    for &i in &applied {
        let Some(board) = actions[i].as_ref().ok().and_then(Action::announced_board) else {
            continue;
        };
        if !out.ok(i) {
            continue;
        }
        let t = touched.entry(board).or_insert_with(|| Touch {
            cause_id: String::new(),
            time: None,
            events: Vec::new(),
        });
        t.cause_id.clone_from(&events[i].id);
        t.time = events[i].time;
        t.events.push(i);
    }
    if !touched.is_empty() {
        announce(&mut out, &touched, boards);
    }
    out.list
}

export!(RankingHandler);

/// Decides which events apply (in order, an entity's events waiting behind one that waits),
/// and applies their writes in one `apply-once-many`. Returns the events that applied (or
/// had applied before: replays), in order.
fn apply(out: &mut Outcomes, actions: &[Result<Action, String>], cfg: &Config) -> Vec<usize> {
    let checks = domain::genre_checks(actions);
    let known: Result<HashMap<String, Result<bool, Error>>, Error> = if checks.is_empty() {
        Ok(HashMap::new())
    } else {
        let ops: Vec<Op> = checks
            .iter()
            .map(|t| Op::Hget((keys::genres(t), "current".into())))
            .collect();
        kv::pipeline(&ops).map(|replies| {
            checks
                .iter()
                .cloned()
                .zip(
                    replies
                        .into_iter()
                        .map(|r| r.map(|r| matches!(r, Reply::Bytes(_)))),
                )
                .collect()
        })
    };
    let now = now_ms();
    // Subjects with an event waiting for a retry: their later events wait too, so that
    // each entity's events apply in order.
    let mut waiting: HashSet<String> = HashSet::new();
    // Titles whose genres an earlier event of the batch stores.
    let mut stored: HashSet<String> = HashSet::new();
    let mut planned: Vec<usize> = Vec::new();
    let mut entries: Vec<ApplyEntry> = Vec::new();
    let mut entry_of: Vec<usize> = Vec::new();
    for (i, action) in actions.iter().enumerate() {
        let ev = &out.events[i];
        let subject = ev.subject.clone().unwrap_or_default();
        if waiting.contains(&subject) {
            out.set(
                i,
                Outcome::Retry(format!("an earlier event of `{subject}` waits for a retry")),
            );
            continue;
        }
        let action = match action {
            Ok(a) => a,
            Err(reason) => {
                out.set(i, Outcome::Reject(reason.clone()));
                continue;
            }
        };
        if let Action::Started { title_id, .. } = action
            && !stored.contains(title_id)
        {
            let verdict = match &known {
                Err(e) => Some(failed(e, "reading genres")),
                Ok(k) => match k.get(title_id) {
                    Some(Ok(true)) => None,
                    Some(Err(e)) => Some(failed(e, "reading genres")),
                    _ => Some(Outcome::Retry(format!(
                        "the genres of title `{title_id}` are not known yet"
                    ))),
                },
            };
            if let Some(outcome) = verdict {
                if matches!(outcome, Outcome::Retry(_)) {
                    waiting.insert(subject);
                }
                out.set(i, outcome);
                continue;
            }
        }
        if let Action::Title {
            title_id,
            genres: Some(_),
            ..
        } = action
        {
            stored.insert(title_id.clone());
        }
        let cmds = domain::commands(action, cfg, now);
        if !cmds.is_empty() {
            entry_of.push(i);
            entries.push(ApplyEntry {
                dedupe_key: format!("{}|{}", ev.source, ev.id),
                commands: cmds.into_iter().map(to_wit).collect(),
            });
        }
        planned.push(i);
    }
    if !entries.is_empty() {
        match kv::apply_once_many(domain::DEDUPE_TTL_MS, &entries) {
            Ok(results) => {
                for (&i, r) in entry_of.iter().zip(results) {
                    if let Err(e) = r {
                        out.set(i, failed(&e, "apply-once"));
                    }
                }
            }
            Err(e) => out.set_all(&entry_of, &failed(&e, "apply-once")),
        }
    }
    planned.retain(|&i| out.ok(i));
    planned
}

/// A title's genres and all-time views, from an `hgetall` and a `zscore` reply.
fn title_state(
    genres: Result<Reply, Error>,
    views: Result<Reply, Error>,
) -> Result<(TitleGenres, Option<f64>), Error> {
    let genres = match genres? {
        Reply::Fields(f) => domain::parse_genres(&f).map_err(invalid)?,
        other => return Err(invalid(format!("genres: unexpected reply {other:?}"))),
    };
    let views = match views? {
        Reply::Number(n) => Some(n),
        Reply::Absent => None,
        other => return Err(invalid(format!("views: unexpected reply {other:?}"))),
    };
    Ok((genres, views))
}

fn invalid(message: String) -> Error {
    Error {
        kind: ErrorKind::Invalid,
        message,
        transient: false,
    }
}

/// The next reply of a pipeline (a missing one reads as an error: a host bug).
fn next(replies: &mut impl Iterator<Item = Result<Reply, Error>>) -> Result<Reply, Error> {
    replies
        .next()
        .unwrap_or_else(|| Err(invalid("the pipeline answered too few replies".into())))
}

/// An announced board's top 10 and the members last published, as read.
type BoardState = Result<(Vec<(String, f64)>, Option<Vec<u8>>), Error>;

/// The reads of an announced board: its top 10, then what was last published.
fn board_reads(board: &str, ops: &mut Vec<Op>) {
    ops.push(Op::ZrangeByRank(RankRange {
        key: board.to_string(),
        start: 0,
        stop: domain::TOP_N as i64 - 1,
        reverse: true,
    }));
    ops.push(Op::Get(keys::published(board)));
}

fn board_state(replies: &mut impl Iterator<Item = Result<Reply, Error>>) -> BoardState {
    let top = next(replies);
    let published = next(replies);
    let top = match top? {
        Reply::Members(m) => m.into_iter().map(|s| (s.member, s.score)).collect(),
        other => return Err(invalid(format!("top: unexpected reply {other:?}"))),
    };
    let published = match published? {
        Reply::Bytes(b) => Some(b),
        Reply::Absent => None,
        other => return Err(invalid(format!("published: unexpected reply {other:?}"))),
    };
    Ok((top, published))
}

/// Recomputes what depends on state several partitions write, from the stored state: the
/// `top_rated` scores, the titles' places on the genre boards, expired viewers. Returns the
/// `announced` boards' top 10 and published members, read after the writes in the same
/// round trip, so that `announce` needs no read of its own.
fn recompute(
    out: &mut Outcomes,
    derived: &Derived,
    cfg: &Config,
    announced: &[&'static str],
) -> BTreeMap<&'static str, BoardState> {
    // Reads.
    let mut ops: Vec<Op> = Vec::new();
    for t in derived.top_rated.keys() {
        ops.push(Op::Hgetall(keys::ratings(t)));
    }
    let state_reads = |t: &str, ops: &mut Vec<Op>| {
        ops.push(Op::Hgetall(keys::genres(t)));
        ops.push(Op::Zscore((domain::BOARD_VIEWS_ALL.into(), t.into())));
    };
    for t in derived.genre_boards.keys() {
        state_reads(t, &mut ops);
    }
    let now = now_ms() as f64;
    for t in derived.prune.keys() {
        ops.push(Op::ZrangeByScore(kv::ScoreRange {
            key: keys::viewers(t),
            min: 0.0,
            max: now,
            reverse: false,
            limit: Some(PRUNE_LIMIT),
        }));
    }
    let replies = match kv::pipeline(&ops) {
        Ok(r) => r,
        Err(e) => {
            let outcome = failed(&e, "reading the derived state");
            for events in [&derived.top_rated, &derived.genre_boards, &derived.prune] {
                for ev in events.values() {
                    out.set_all(ev, &outcome);
                }
            }
            return BTreeMap::new();
        }
    };
    let mut replies = replies.into_iter();

    // Writes, from what was read.
    let mut writes: Vec<Op> = Vec::new();
    for (t, events) in &derived.top_rated {
        let cmd = match next(&mut replies) {
            Ok(Reply::Fields(f)) => domain::top_rated_cmd(t, &f, cfg.top_rated_min_votes),
            Ok(other) => Err(format!("ratings: unexpected reply {other:?}")),
            Err(e) => {
                out.set_all(events, &failed(&e, "reading ratings"));
                continue;
            }
        };
        match cmd {
            Ok(cmd) => writes.push(board_op(cmd)),
            Err(reason) => out.set_all(events, &Outcome::Reject(reason)),
        }
    }
    let mut syncing: BTreeMap<&str, (TitleGenres, Option<f64>)> = BTreeMap::new();
    for (t, events) in &derived.genre_boards {
        let genres = next(&mut replies);
        let views = next(&mut replies);
        match title_state(genres, views) {
            Ok(state) => {
                syncing.insert(t, state);
            }
            Err(e) => out.set_all(events, &failed(&e, "reading the genres")),
        }
    }
    for (t, events) in &derived.prune {
        match next(&mut replies) {
            Ok(Reply::Members(stale)) if !stale.is_empty() => writes.push(Op::Zrem((
                keys::viewers(t),
                stale.into_iter().map(|s| s.member).collect(),
            ))),
            Ok(_) => {}
            Err(e) => out.set_all(events, &failed(&e, "reading the viewers")),
        }
    }

    // Genre boards: written, then the state read again, until it held still. The announced
    // boards are read after the first round's writes.
    let mut boards = BTreeMap::new();
    for round in 0..GENRE_ROUNDS {
        let mut ops = std::mem::take(&mut writes);
        for (t, (genres, views)) in &syncing {
            ops.extend(
                domain::genre_board_cmds(t, genres, *views)
                    .into_iter()
                    .map(board_op),
            );
        }
        let titles: Vec<&str> = syncing.keys().copied().collect();
        for t in &titles {
            state_reads(t, &mut ops);
        }
        if round == 0 {
            for board in announced {
                board_reads(board, &mut ops);
            }
        }
        if ops.is_empty() {
            break;
        }
        let writes_count =
            ops.len() - titles.len() * 2 - if round == 0 { announced.len() * 2 } else { 0 };
        let replies = match kv::pipeline(&ops) {
            Ok(r) => r,
            Err(e) => {
                let outcome = failed(&e, "writing the derived state");
                for events in [&derived.top_rated, &derived.genre_boards, &derived.prune] {
                    for ev in events.values() {
                        out.set_all(ev, &outcome);
                    }
                }
                return BTreeMap::new();
            }
        };
        let mut replies = replies.into_iter();
        // A write that failed on the server (a key of the wrong type) fails the events of
        // its kind: they are retried or rejected like any failed call.
        for _ in 0..writes_count {
            if let Some(Err(e)) = replies.next() {
                log(
                    Level::Warn,
                    "ranking-handler",
                    &format!("a derived write failed: {}", e.message),
                );
                let outcome = failed(&e, "writing the derived state");
                for events in [&derived.top_rated, &derived.genre_boards, &derived.prune] {
                    for ev in events.values() {
                        out.set_all(ev, &outcome);
                    }
                }
            }
        }
        let mut still: BTreeMap<&str, (TitleGenres, Option<f64>)> = BTreeMap::new();
        for t in titles {
            let genres = next(&mut replies);
            let views = next(&mut replies);
            let events = &derived.genre_boards[t];
            match title_state(genres, views) {
                Ok(now) => {
                    if syncing.get(t) != Some(&now) {
                        still.insert(t, now);
                    }
                }
                Err(e) => out.set_all(events, &failed(&e, "reading the genres")),
            }
        }
        if round == 0 {
            for board in announced {
                boards.insert(*board, board_state(&mut replies));
            }
        }
        syncing = still;
        if syncing.is_empty() {
            break;
        }
    }
    for t in syncing.keys() {
        out.set_all(
            &derived.genre_boards[*t],
            &Outcome::Retry(format!("the genre boards of `{t}` kept changing")),
        );
    }
    boards
}

/// A board write as a pipeline op.
fn board_op(cmd: Cmd) -> Op {
    match cmd {
        Cmd::Zadd(board, member, score) => Op::Zadd((board, vec![Scored { member, score }])),
        Cmd::Zrem(board, member) => Op::Zrem((board, vec![member])),
        _ => unreachable!("boards only add and remove"),
    }
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

/// Publishes `streaming.leaderboard.changed` when a touched board's top 10 differs from the
/// one last published (`ranking:published:<board>`), and remembers it. Batches of several
/// partitions announce concurrently, so after remembering it looks again, until what it
/// remembered is what the board shows: the final top 10 is always published and remembered.
/// `state` is each board's top 10 and published members as read after the batch's writes.
fn announce(
    out: &mut Outcomes,
    touched: &BTreeMap<&'static str, Touch>,
    mut state: BTreeMap<&'static str, BoardState>,
) {
    let fail = |out: &mut Outcomes, board: &str, touch: &Touch, e: &Error| {
        log(
            Level::Warn,
            "ranking-handler",
            &format!("cannot announce a change of `{board}`: {}", e.message),
        );
        if e.transient {
            out.set_all(
                &touch.events,
                &Outcome::Retry(format!("announcing `{board}`: {}", e.message)),
            );
        }
    };
    let mut pending: Vec<&'static str> = touched.keys().copied().collect();
    for round in 0..ANNOUNCE_ROUNDS {
        // Boards not read yet (a batch whose derived work failed) are read now.
        let unread: Vec<&'static str> = pending
            .iter()
            .copied()
            .filter(|b| !state.contains_key(b))
            .collect();
        if !unread.is_empty() {
            let mut ops = Vec::new();
            for b in &unread {
                board_reads(b, &mut ops);
            }
            match kv::pipeline(&ops) {
                Ok(replies) => {
                    let mut replies = replies.into_iter();
                    for b in unread {
                        state.insert(b, board_state(&mut replies));
                    }
                }
                Err(e) => {
                    for b in unread {
                        fail(out, b, &touched[b], &e);
                    }
                    pending.retain(|b| state.contains_key(b));
                }
            }
        }
        let mut remember: Vec<Op> = Vec::new();
        let mut published: Vec<&'static str> = Vec::new();
        for board in pending {
            let touch = &touched[board];
            let (top, before) = match state.remove(board) {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    fail(out, board, touch, &e);
                    continue;
                }
                None => continue,
            };
            if !domain::top_changed(before.as_deref(), &top) {
                continue;
            }
            let (_, value) =
                domain::leaderboard_changed(board, &top, &touch.cause_id, round, touch.time);
            if let Err(e) = messaging::publish(&Message {
                topic: domain::DERIVED_TOPIC.to_string(),
                key: Some(board.as_bytes().to_vec()),
                value,
                headers: vec![],
            }) {
                fail(out, board, touch, &e);
                continue;
            }
            remember.push(Op::Set(SetCommand {
                key: keys::published(board),
                value: domain::published_value(&top),
                ttl_ms: Some(domain::DEDUPE_TTL_MS),
            }));
            published.push(board);
        }
        if published.is_empty() {
            return;
        }
        // Remember what was published, and look again in the same round trip.
        let mut ops = remember;
        for b in &published {
            board_reads(b, &mut ops);
        }
        match kv::pipeline(&ops) {
            Ok(replies) => {
                let mut replies = replies.into_iter();
                let mut remembered = true;
                for b in &published {
                    if let Some(Err(e)) = replies.next() {
                        fail(out, b, &touched[b], &e);
                        remembered = false;
                    }
                }
                if !remembered {
                    return;
                }
                for b in &published {
                    state.insert(b, board_state(&mut replies));
                }
            }
            Err(e) => {
                for b in &published {
                    fail(out, b, &touched[b], &e);
                }
                return;
            }
        }
        pending = published;
    }
}
