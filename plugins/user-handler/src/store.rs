//! The PostgreSQL side: a batch in one transaction, with a fixed number of round trips.
//!
//! The fast path ([`handle`]): `begin`; one query reads what the batch's events touch (the
//! ledger rows of its event ids, its users, its subscriptions locked `FOR UPDATE`); the
//! guest works out the whole batch ([`crate::batch::plan`]); one statement writes every
//! row (the ledger rows and each table's rows, set-based from one JSON parameter); the
//! batch's `streaming.subscription.activated` events are published in one call; `commit`.
//! That is five round trips for a batch, whatever its size.
//!
//! When the write statement fails for good (a constraint the plan does not model, a row
//! someone else wrote meanwhile) or writes other counts than planned, the transaction is
//! rolled back and the batch split in two halves, each applied the same way in order (the
//! entities waiting for a retry in the first half wait in the second too), down to the
//! single event at fault, which is rejected alone: a bad event costs about 2·log₂(n) more
//! transactions, and the others apply. (Savepoints would do it in one transaction, but the
//! host refuses to commit a transaction in which any statement failed.)
//!
//! Either way an event applies with its row in the ledger `streaming.processed_events`, so
//! an event already applied changes nothing. The tables are in the schema `streaming`
//! (migrations/0001_streaming_schema.sql); this plugin's role may read, insert and update
//! them, never delete.

use std::collections::{HashMap, HashSet};

use crate::batch::{self, Decision, Incoming, Loaded, Plan, SubRow};
use crate::domain::{self, Payment};
use crate::polyhost::platform::messaging::{self, Message};
use crate::polyhost::platform::sql::{self, Transaction, Value};
use crate::polyhost::platform::types::Error;

/// Applies a batch (see the module's documentation) and returns one decision per event.
pub fn handle(events: &[Incoming], derived_topic: &str) -> Vec<Decision> {
    if events.iter().all(|e| e.command.is_err()) {
        // Nothing to read or write: every event is malformed.
        return batch::plan(events, &Loaded::default(), &HashSet::new()).decisions;
    }
    let mut decisions = Vec::with_capacity(events.len());
    let mut waiting = HashSet::new();
    if let Err(reason) = apply(events, derived_topic, &mut waiting, &mut decisions) {
        // What committed stays decided; the rest is retried.
        let done = decisions.len();
        decisions.extend(abort(&events[done..], &reason));
    }
    decisions
}

/// Applies `events` in one transaction, or, when its write fails, each half of them in
/// turn; pushes their decisions to `out`. `Err` is a transient failure: the events not
/// decided yet are to be retried.
fn apply(
    events: &[Incoming],
    derived_topic: &str,
    waiting: &mut HashSet<String>,
    out: &mut Vec<Decision>,
) -> Result<(), String> {
    match fast(events, derived_topic, waiting) {
        Ok(plan) => {
            out.extend(plan.decisions);
            *waiting = plan.waiting;
            Ok(())
        }
        Err(Fast::Abort(reason)) => Err(reason),
        Err(Fast::Split(reason)) if events.len() > 1 => {
            crate::log_warn(&format!(
                "a batch of {} events is split in two: {reason}",
                events.len()
            ));
            let (first, second) = events.split_at(events.len() / 2);
            apply(first, derived_topic, waiting, out)?;
            apply(second, derived_topic, waiting, out)
        }
        Err(Fast::Split(reason)) => {
            // One event the store refuses for good: rejected alone.
            out.push(Decision::Reject(reason));
            Ok(())
        }
        Err(Fast::Mismatch(reason)) if events.len() > 1 => {
            let (first, second) = events.split_at(events.len() / 2);
            crate::log_warn(&format!("{reason}: the batch is split in two"));
            apply(first, derived_topic, waiting, out)?;
            apply(second, derived_topic, waiting, out)
        }
        // Written by someone else meanwhile: the next attempt finds it in the ledger.
        Err(Fast::Mismatch(reason)) => Err(reason),
    }
}

/// Why the fast path gave up.
enum Fast {
    /// A transient failure: the batch is retried.
    Abort(String),
    /// A statement failed for good: an event of the batch is at fault.
    Split(String),
    /// The write statement wrote other counts than planned (a concurrent writer).
    Mismatch(String),
}

impl From<Error> for Fast {
    fn from(e: Error) -> Fast {
        let message = format!("{:?}: {}", e.kind, e.message);
        if e.transient {
            Fast::Abort(message)
        } else {
            Fast::Split(message)
        }
    }
}

/// Every event retried, but those that can never apply: the transaction was lost.
fn abort(events: &[Incoming], reason: &str) -> Vec<Decision> {
    events
        .iter()
        .map(|e| match &e.command {
            Err(why) => Decision::Reject(why.clone()),
            Ok(_) => Decision::Retry(reason.to_owned()),
        })
        .collect()
}

/// `events` in one transaction: read, plan, write, publish, commit.
fn fast(events: &[Incoming], derived_topic: &str, waiting: &HashSet<String>) -> Result<Plan, Fast> {
    let tx = sql::begin()?;
    let loaded = load(&tx, events)?;
    let plan = batch::plan(events, &loaded, waiting);
    let Plan {
        writes,
        activations,
        ..
    } = &plan;
    if writes.is_empty() {
        // Nothing applies (a replay, or only retries and rejects): dropping the
        // transaction rolls it back and frees the locks.
        return Ok(plan);
    }
    let json = serde_json::to_string(writes).expect("the writes serialise");
    let rows = tx.query(WRITE, &[Value::Json(json)])?;
    let counts: Vec<u64> = match rows.rows.first().map(Vec::as_slice) {
        Some(row) => row
            .iter()
            .map(|v| match v {
                Value::Int64(n) => *n as u64,
                _ => u64::MAX,
            })
            .collect(),
        None => Vec::new(),
    };
    let planned = writes.counts();
    if counts != planned {
        return Err(Fast::Mismatch(format!(
            "the write statement wrote {counts:?} rows, {planned:?} planned (a concurrent writer?)"
        )));
    }
    if !activations.is_empty() {
        // Published before the commit: should the commit fail, the retry publishes the
        // same ids again, which consumers dedupe; the other order could lose them.
        let messages = activations
            .iter()
            .map(|(payment, time)| activation_message(payment, *time, derived_topic))
            .collect::<Vec<_>>();
        messaging::publish_batch(&messages)?;
    }
    Transaction::commit(tx)?;
    Ok(plan)
}

/// The ledger rows of the batch's events, its users and its subscriptions (locked for
/// the transaction), in one query; each part comes back as one JSON value.
const LOAD: &str = "SELECT \
    (SELECT coalesce(jsonb_agg(jsonb_build_array(p.source, p.event_id)), '[]'::jsonb) \
       FROM streaming.processed_events p \
       JOIN jsonb_to_recordset($1::jsonb -> 'events') AS v(source text, event_id text) \
         ON p.source = v.source AND p.event_id = v.event_id), \
    (SELECT coalesce(jsonb_agg(u.user_id), '[]'::jsonb) FROM streaming.users u \
       WHERE u.user_id IN (SELECT jsonb_array_elements_text($1::jsonb -> 'users'))), \
    (SELECT coalesce(jsonb_agg(jsonb_build_object( \
         'subscription_id', s.subscription_id, 'user_id', s.user_id, 'plan', s.plan, \
         'price', s.price::text, 'currency', s.currency, 'period', s.period, \
         'state', s.state, 'started_at', (extract(epoch FROM s.started_at) * 1000000)::int8, \
         'first_payment_id', s.first_payment_id, \
         'activated_at', (extract(epoch FROM s.activated_at) * 1000000)::int8, \
         'cancelled_at', (extract(epoch FROM s.cancelled_at) * 1000000)::int8, \
         'cancel_reason', s.cancel_reason, \
         'updated_at', (extract(epoch FROM s.updated_at) * 1000000)::int8)), '[]'::jsonb) \
       FROM (SELECT * FROM streaming.subscriptions \
             WHERE subscription_id IN \
               (SELECT jsonb_array_elements_text($1::jsonb -> 'subscriptions')) \
             FOR UPDATE) s)";

/// Microseconds since the Unix epoch (`bigint`) as a `timestamptz`, exactly.
macro_rules! ts {
    ($x:literal) => {
        concat!(
            "(timestamptz 'epoch' + ",
            $x,
            " * interval '1 microsecond')"
        )
    };
}

/// The columns of a subscription row in the write statement's JSON.
macro_rules! sub_columns {
    () => {
        "subscription_id text, user_id text, plan text, price text, currency text, \
         period text, state text, started_at int8, first_payment_id text, activated_at int8, \
         cancelled_at int8, cancel_reason text, updated_at int8"
    };
}

/// Every row of a batch ([`batch::Writes`], one JSON parameter) in one statement. The
/// parts see the same snapshot, so each entity has one row per table in the plan; the
/// foreign keys are checked at the end of the statement, so a subscription may name a
/// payment, and a payment a subscription, written by the same statement. Returns how many
/// rows each part wrote, in the order of [`batch::Writes::counts`].
const WRITE: &str = concat!(
    "WITH w AS (SELECT $1::jsonb AS j), ",
    "ledger AS (INSERT INTO streaming.processed_events (source, event_id, event_type) ",
    "SELECT v.source, v.event_id, v.event_type FROM w, ",
    "jsonb_to_recordset(w.j -> 'ledger') AS v(source text, event_id text, event_type text) ",
    "ON CONFLICT DO NOTHING RETURNING 1), ",
    "new_users AS (INSERT INTO streaming.users ",
    "(user_id, email, display_name, country, birth_year, registered_at, updated_at) ",
    "SELECT v.user_id, v.email, v.display_name, v.country, v.birth_year, ",
    ts!("v.registered_at"),
    ", ",
    ts!("v.updated_at"),
    " FROM w, jsonb_to_recordset(w.j -> 'new_users') AS v(user_id text, email text, ",
    "display_name text, country text, birth_year int2, registered_at int8, updated_at int8) ",
    "RETURNING 1), ",
    "profiles AS (UPDATE streaming.users u SET email = coalesce(v.email, u.email), ",
    "display_name = coalesce(v.display_name, u.display_name), ",
    "country = coalesce(v.country, u.country), updated_at = ",
    ts!("v.updated_at"),
    " FROM w, jsonb_to_recordset(w.j -> 'profiles') AS v(user_id text, email text, ",
    "display_name text, country text, updated_at int8) ",
    "WHERE u.user_id = v.user_id RETURNING 1), ",
    "prefs AS (INSERT INTO streaming.user_preferences (user_id, language, subtitles, ",
    "autoplay, maturity_limit, favourite_genres, updated_at) ",
    "SELECT v.user_id, v.language, v.subtitles, v.autoplay, v.maturity_limit, ",
    "v.favourite_genres, ",
    ts!("v.updated_at"),
    " FROM w, jsonb_to_recordset(w.j -> 'preferences') AS v(user_id text, language text, ",
    "subtitles boolean, autoplay boolean, maturity_limit text, favourite_genres text[], ",
    "updated_at int8) ",
    "ON CONFLICT (user_id) DO UPDATE SET language = EXCLUDED.language, ",
    "subtitles = EXCLUDED.subtitles, autoplay = EXCLUDED.autoplay, ",
    "maturity_limit = EXCLUDED.maturity_limit, ",
    "favourite_genres = EXCLUDED.favourite_genres, updated_at = EXCLUDED.updated_at ",
    "RETURNING 1), ",
    "new_subs AS (INSERT INTO streaming.subscriptions (subscription_id, user_id, plan, ",
    "price, currency, period, state, started_at, first_payment_id, activated_at, ",
    "cancelled_at, cancel_reason, updated_at) ",
    "SELECT v.subscription_id, v.user_id, v.plan, v.price::numeric, v.currency, v.period, ",
    "v.state, ",
    ts!("v.started_at"),
    ", v.first_payment_id, ",
    ts!("v.activated_at"),
    ", ",
    ts!("v.cancelled_at"),
    ", v.cancel_reason, ",
    ts!("v.updated_at"),
    " FROM w, jsonb_to_recordset(w.j -> 'new_subscriptions') AS v(",
    sub_columns!(),
    ") RETURNING 1), ",
    "subs AS (UPDATE streaming.subscriptions s SET plan = v.plan, price = v.price::numeric, ",
    "currency = v.currency, period = v.period, state = v.state, ",
    "first_payment_id = v.first_payment_id, activated_at = ",
    ts!("v.activated_at"),
    ", cancelled_at = ",
    ts!("v.cancelled_at"),
    ", cancel_reason = v.cancel_reason, updated_at = ",
    ts!("v.updated_at"),
    " FROM w, jsonb_to_recordset(w.j -> 'subscriptions') AS v(",
    sub_columns!(),
    ") WHERE s.subscription_id = v.subscription_id RETURNING 1), ",
    "payments AS (INSERT INTO streaming.payments (payment_id, subscription_id, user_id, ",
    "status, amount, currency, method, failure_reason, paid_at) ",
    "SELECT v.payment_id, v.subscription_id, v.user_id, v.status, v.amount::numeric, ",
    "v.currency, v.method, v.failure_reason, ",
    ts!("v.paid_at"),
    " FROM w, jsonb_to_recordset(w.j -> 'payments') AS v(payment_id text, ",
    "subscription_id text, user_id text, status text, amount text, currency text, ",
    "method text, failure_reason text, paid_at int8) RETURNING 1) ",
    "SELECT (SELECT count(*) FROM ledger), (SELECT count(*) FROM new_users), ",
    "(SELECT count(*) FROM profiles), (SELECT count(*) FROM prefs), ",
    "(SELECT count(*) FROM new_subs), (SELECT count(*) FROM subs), ",
    "(SELECT count(*) FROM payments)"
);

/// What the batch's events touch, read in one query inside `tx`.
fn load(tx: &Transaction, events: &[Incoming]) -> Result<Loaded, Fast> {
    let (users, subscriptions) = batch::named(events);
    let keys: Vec<_> = events
        .iter()
        .map(|e| serde_json::json!({"source": e.source, "event_id": e.id}))
        .collect();
    let param = serde_json::json!({
        "events": keys,
        "users": users,
        "subscriptions": subscriptions,
    });
    let rows = tx.query(LOAD, &[Value::Json(param.to_string())])?;
    let parts: Vec<&str> = match rows.rows.first() {
        Some(row) => row
            .iter()
            .filter_map(|v| match v {
                Value::Json(text) => Some(text.as_str()),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    let [processed, users, subscriptions] = parts[..] else {
        return Err(Fast::Abort(format!(
            "the load query answered {:?}",
            rows.rows
        )));
    };
    let bad = |what: &str, e: serde_json::Error| Fast::Abort(format!("reading {what}: {e}"));
    let processed: Vec<(String, String)> =
        serde_json::from_str(processed).map_err(|e| bad("the ledger", e))?;
    let users: HashSet<String> = serde_json::from_str(users).map_err(|e| bad("the users", e))?;
    let subscriptions: Vec<SubRow> =
        serde_json::from_str(subscriptions).map_err(|e| bad("the subscriptions", e))?;
    Ok(Loaded {
        processed: processed.into_iter().collect(),
        users,
        subscriptions: subscriptions
            .into_iter()
            .map(|s| (s.subscription_id.clone(), s))
            .collect::<HashMap<_, _>>(),
    })
}

/// `streaming.subscription.activated` for `payment`, keyed by its subscription.
fn activation_message(payment: &Payment, time: i64, topic: &str) -> Message {
    Message {
        topic: topic.to_owned(),
        key: Some(payment.subscription_id.as_bytes().to_vec()),
        value: domain::activation_event(payment, time),
        headers: vec![(
            "content-type".to_owned(),
            b"application/cloudevents+json".to_vec(),
        )],
    }
}
