//! The PostgreSQL side: a batch in one transaction, with a fixed number of round trips.
//!
//! The fast path ([`handle`]): `begin`; one query reads what the batch's events touch (the
//! ledger rows of its event ids, its users, its subscriptions locked `FOR UPDATE`); the
//! guest works out the whole batch ([`crate::batch::plan`]); one statement writes every
//! row (the ledger rows and each table's rows, set-based from one JSON parameter); the
//! batch's `streaming.subscription.activated` events are published in one call; `commit`.
//! That is five round trips for a batch, whatever its size.
//!
//! The fallback ([`one_by_one`]): when the write statement fails for good (a constraint
//! the plan does not model, a row someone else wrote meanwhile) or writes other counts than
//! planned, the transaction is rolled back and the batch applied again in one new
//! transaction, one event at a time, each under a savepoint: an event that fails is rolled
//! back to its savepoint and rejected alone, the others commit together.
//!
//! Either way an event applies with its row in the ledger `streaming.processed_events`, so
//! an event already applied changes nothing. The tables are in the schema `streaming`
//! (migrations/0001_streaming_schema.sql); this plugin's role may read, insert and update
//! them, never delete.

use std::collections::{HashMap, HashSet};

use crate::batch::{self, Decision, Incoming, Loaded, Plan, SubRow};
use crate::domain::{self, Command, Payment, ProfileChanges, State, Terms};
use crate::polyhost::platform::messaging::{self, Message};
use crate::polyhost::platform::sql::{self, Transaction, Value};
use crate::polyhost::platform::types::Error;

/// Why an event did not apply, one event at a time.
#[derive(Debug)]
pub enum Stop {
    /// The event meets an entity not stored yet: retried, with the later events of its
    /// entity.
    Retry(String),
    /// Never applies: rejected alone.
    Reject(String),
    /// A transient host error: the transaction is lost, the whole batch is retried.
    Abort(String),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        let message = format!("{:?}: {}", e.kind, e.message);
        if e.transient {
            Stop::Abort(message)
        } else {
            Stop::Reject(message)
        }
    }
}

/// The event's identity and time, besides its command.
pub struct Meta<'a> {
    /// CloudEvents `source`.
    pub source: &'a str,
    /// CloudEvents `id`.
    pub id: &'a str,
    /// CloudEvents `type`.
    pub ty: &'a str,
    /// CloudEvents `time`, in microseconds: every stored time comes from it.
    pub time: i64,
}

/// Applies a batch (see the module's documentation) and returns one decision per event.
pub fn handle(events: &[Incoming], derived_topic: &str) -> Vec<Decision> {
    if events.iter().all(|e| e.command.is_err()) {
        // Nothing to read or write: every event is malformed.
        return batch::plan(events, &Loaded::default()).decisions;
    }
    match fast(events, derived_topic) {
        Ok(decisions) => decisions,
        Err(Fast::Abort(reason)) => abort(events, &reason),
        Err(Fast::OneByOne(reason)) => {
            crate::log_warn(&format!(
                "a batch of {} events is applied one at a time: {reason}",
                events.len()
            ));
            one_by_one(events, derived_topic)
        }
    }
}

/// Why the fast path gave up.
enum Fast {
    /// A transient failure: the batch is retried.
    Abort(String),
    /// The plan did not hold: the batch is applied one event at a time.
    OneByOne(String),
}

impl From<Error> for Fast {
    fn from(e: Error) -> Fast {
        let message = format!("{:?}: {}", e.kind, e.message);
        if e.transient {
            Fast::Abort(message)
        } else {
            Fast::OneByOne(message)
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

fn fast(events: &[Incoming], derived_topic: &str) -> Result<Vec<Decision>, Fast> {
    let tx = sql::begin()?;
    let loaded = load(&tx, events)?;
    let Plan {
        decisions,
        writes,
        activations,
    } = batch::plan(events, &loaded);
    if writes.is_empty() {
        // Nothing applies (a replay, or only retries and rejects): dropping the
        // transaction rolls it back and frees the locks.
        return Ok(decisions);
    }
    let json = serde_json::to_string(&writes).expect("the writes serialise");
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
        return Err(Fast::OneByOne(format!(
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
    Ok(decisions)
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
        return Err(Fast::OneByOne(format!(
            "the load query answered {:?}",
            rows.rows
        )));
    };
    let bad = |what: &str, e: serde_json::Error| Fast::OneByOne(format!("reading {what}: {e}"));
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

/// The batch in one transaction, one event at a time, each under a savepoint.
pub fn one_by_one(events: &[Incoming], derived_topic: &str) -> Vec<Decision> {
    let tx = match sql::begin() {
        Ok(tx) => tx,
        Err(e) => return abort(events, &format!("{:?}: {}", e.kind, e.message)),
    };
    let mut decisions = Vec::with_capacity(events.len());
    let mut decided: HashMap<(String, String), Decision> = HashMap::new();
    let mut waiting: HashSet<&str> = HashSet::new();
    let mut activations: Vec<Message> = Vec::new();
    for event in events {
        let key = event.key();
        if let Some(decision) = decided.get(&key) {
            decisions.push(decision.clone());
            continue;
        }
        let decision = if let Some(entity) = event.entity.as_deref().filter(|e| waiting.contains(e))
        {
            Decision::Retry(format!(
                "an earlier event of `{entity}` is waiting for a retry"
            ))
        } else {
            match &event.command {
                Err(why) => Decision::Reject(why.clone()),
                Ok(command) => {
                    let meta = Meta {
                        source: &event.source,
                        id: &event.id,
                        ty: &event.ty,
                        time: event.time,
                    };
                    match savepoint(&tx, |tx| apply_one(tx, &meta, command, derived_topic)) {
                        Ok(activation) => {
                            activations.extend(activation);
                            Decision::Ok
                        }
                        Err(Stop::Retry(reason)) => {
                            if let Some(entity) = event.entity.as_deref() {
                                waiting.insert(entity);
                            }
                            Decision::Retry(reason)
                        }
                        Err(Stop::Reject(reason)) => Decision::Reject(reason),
                        Err(Stop::Abort(reason)) => return abort(events, &reason),
                    }
                }
            }
        };
        decided.insert(key, decision.clone());
        decisions.push(decision);
    }
    let finish = || -> Result<(), Error> {
        if !activations.is_empty() {
            messaging::publish_batch(&activations)?;
        }
        Transaction::commit(tx)
    };
    match finish() {
        Ok(()) => decisions,
        // The commit (or the publication before it) failed: nothing applied.
        Err(e) => abort(events, &format!("{:?}: {}", e.kind, e.message)),
    }
}

/// Runs `f` under a savepoint: kept when it succeeds, rolled back when it fails (so a
/// failed statement does not poison the transaction for the next event).
fn savepoint<T>(
    tx: &Transaction,
    f: impl FnOnce(&Transaction) -> Result<T, Stop>,
) -> Result<T, Stop> {
    tx.execute("SAVEPOINT event", &[])?;
    match f(tx) {
        Ok(value) => {
            tx.execute("RELEASE SAVEPOINT event", &[])?;
            Ok(value)
        }
        Err(Stop::Abort(reason)) => Err(Stop::Abort(reason)),
        Err(stop) => {
            tx.execute("ROLLBACK TO SAVEPOINT event", &[])?;
            Err(stop)
        }
    }
}

const LEDGER: &str = "INSERT INTO streaming.processed_events (source, event_id, event_type) \
                      VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";

/// Applies `command` inside `tx` with its ledger row; an event already in the ledger
/// changes nothing. Returns the activation to publish, if the event is a subscription's
/// first successful payment.
fn apply_one(
    tx: &Transaction,
    meta: &Meta<'_>,
    command: &Command,
    derived_topic: &str,
) -> Result<Option<Message>, Stop> {
    let fresh = tx.execute(LEDGER, &[text(meta.source), text(meta.id), text(meta.ty)])?;
    if fresh == 0 {
        return Ok(None);
    }
    let t = Value::Timestamptz(meta.time);
    match command {
        Command::Register(r) => {
            tx.execute(
                "INSERT INTO streaming.users \
                 (user_id, email, display_name, country, birth_year, registered_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
                &[
                    text(&r.user_id),
                    text(&r.email),
                    text(&r.display_name),
                    text(&r.country),
                    Value::Int16(r.birth_year),
                    t,
                ],
            )?;
        }
        Command::UpdateProfile { user_id, changes } => update_profile(tx, user_id, changes, t)?,
        Command::UpdatePreferences(p) => {
            let n = tx.execute(
                "INSERT INTO streaming.user_preferences (user_id, language, subtitles, autoplay, \
                 maturity_limit, favourite_genres, updated_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7 \
                 WHERE EXISTS (SELECT FROM streaming.users WHERE user_id = $1) \
                 ON CONFLICT (user_id) DO UPDATE SET language = EXCLUDED.language, \
                 subtitles = EXCLUDED.subtitles, autoplay = EXCLUDED.autoplay, \
                 maturity_limit = EXCLUDED.maturity_limit, \
                 favourite_genres = EXCLUDED.favourite_genres, updated_at = EXCLUDED.updated_at",
                &[
                    text(&p.user_id),
                    text(&p.language),
                    Value::Boolean(p.subtitles),
                    Value::Boolean(p.autoplay),
                    text(&p.maturity_limit),
                    Value::TextArray(p.favourite_genres.clone()),
                    t,
                ],
            )?;
            if n == 0 {
                return Err(missing_user(&p.user_id));
            }
        }
        Command::Start(terms) => start(tx, terms, t)?,
        Command::ChangePlan(terms) => {
            let stored = subscription(tx, &terms.subscription_id)?;
            same_user(&stored, &terms.user_id, &terms.subscription_id)?;
            if domain::plan_change_applies(stored.state) {
                tx.execute(
                    "UPDATE streaming.subscriptions SET plan = $2, price = $3, currency = $4, \
                     period = $5, updated_at = $6 WHERE subscription_id = $1",
                    &[
                        text(&terms.subscription_id),
                        text(&terms.plan),
                        Value::Numeric(terms.price.clone()),
                        text(&terms.currency),
                        text(&terms.period),
                        t,
                    ],
                )?;
            }
        }
        Command::Cancel {
            subscription_id,
            user_id,
            reason,
        } => {
            let stored = subscription(tx, subscription_id)?;
            same_user(&stored, user_id, subscription_id)?;
            if domain::cancellation_applies(stored.state) {
                tx.execute(
                    "UPDATE streaming.subscriptions SET state = 'cancelled', cancelled_at = $2, \
                     cancel_reason = $3, updated_at = $2 WHERE subscription_id = $1",
                    &[text(subscription_id), t, text(reason)],
                )?;
            }
        }
        Command::Pay(payment) => {
            if pay(tx, payment, t)? {
                return Ok(Some(activation_message(payment, meta.time, derived_topic)));
            }
        }
    }
    Ok(None)
}

fn update_profile(
    tx: &Transaction,
    user_id: &str,
    changes: &ProfileChanges,
    t: Value,
) -> Result<(), Stop> {
    let n = tx.execute(
        "UPDATE streaming.users SET email = COALESCE($2, email), \
         display_name = COALESCE($3, display_name), country = COALESCE($4, country), \
         updated_at = $5 WHERE user_id = $1",
        &[
            text(user_id),
            opt_text(changes.email.as_deref()),
            opt_text(changes.display_name.as_deref()),
            opt_text(changes.country.as_deref()),
            t,
        ],
    )?;
    if n == 0 {
        return Err(missing_user(user_id));
    }
    Ok(())
}

fn start(tx: &Transaction, terms: &Terms, t: Value) -> Result<(), Stop> {
    let n = tx.execute(
        "INSERT INTO streaming.subscriptions (subscription_id, user_id, plan, price, currency, \
         period, state, started_at, updated_at) \
         SELECT $1, $2, $3, $4, $5, $6, 'pending', $7, $7 \
         WHERE EXISTS (SELECT FROM streaming.users WHERE user_id = $2)",
        &[
            text(&terms.subscription_id),
            text(&terms.user_id),
            text(&terms.plan),
            Value::Numeric(terms.price.clone()),
            text(&terms.currency),
            text(&terms.period),
            t,
        ],
    )?;
    if n == 0 {
        return Err(missing_user(&terms.user_id));
    }
    Ok(())
}

/// Records `payment` and moves its subscription on. Returns whether it was the first
/// successful one, which activates the subscription.
fn pay(tx: &Transaction, payment: &Payment, t: Value) -> Result<bool, Stop> {
    let stored = subscription(tx, &payment.subscription_id)?;
    same_user(&stored, &payment.user_id, &payment.subscription_id)?;
    tx.execute(
        "INSERT INTO streaming.payments (payment_id, subscription_id, user_id, status, amount, \
         currency, method, failure_reason, paid_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            text(&payment.payment_id),
            text(&payment.subscription_id),
            text(&payment.user_id),
            text(payment.status()),
            Value::Numeric(payment.amount.clone()),
            text(&payment.currency),
            text(&payment.method),
            opt_text(payment.failure_reason.as_deref()),
            t.clone(),
        ],
    )?;
    let effect = domain::after_payment(stored.state, stored.activated, payment.succeeded());
    if effect.activates {
        tx.execute(
            "UPDATE streaming.subscriptions SET state = $2, first_payment_id = $3, \
             activated_at = $4, updated_at = $4 WHERE subscription_id = $1",
            &[
                text(&payment.subscription_id),
                text(effect.state.as_str()),
                text(&payment.payment_id),
                t,
            ],
        )?;
    } else if effect.state != stored.state {
        tx.execute(
            "UPDATE streaming.subscriptions SET state = $2, updated_at = $3 \
             WHERE subscription_id = $1",
            &[
                text(&payment.subscription_id),
                text(effect.state.as_str()),
                t,
            ],
        )?;
    }
    Ok(effect.activates)
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

/// A stored subscription, as the billing events need it.
struct Stored {
    user_id: String,
    state: State,
    activated: bool,
}

/// The subscription `id`, locked for this transaction; `Retry` when it is not stored yet.
fn subscription(tx: &Transaction, id: &str) -> Result<Stored, Stop> {
    let rows = tx.query(
        "SELECT user_id, state, first_payment_id IS NOT NULL AS activated \
         FROM streaming.subscriptions WHERE subscription_id = $1 FOR UPDATE",
        &[text(id)],
    )?;
    let Some(row) = rows.rows.first() else {
        return Err(Stop::Retry(format!(
            "subscription `{id}` is not stored yet (its `started` is on its way)"
        )));
    };
    match row.as_slice() {
        [
            Value::Text(user_id),
            Value::Text(state),
            Value::Boolean(activated),
        ] => Ok(Stored {
            user_id: user_id.clone(),
            state: State::parse(state).ok_or_else(|| {
                Stop::Reject(format!(
                    "subscription `{id}` has an unknown state `{state}`"
                ))
            })?,
            activated: *activated,
        }),
        other => Err(Stop::Reject(format!(
            "subscription `{id}`: unexpected row {other:?}"
        ))),
    }
}

/// A billing event must name the subscription's own user.
fn same_user(stored: &Stored, user_id: &str, subscription_id: &str) -> Result<(), Stop> {
    if stored.user_id == user_id {
        Ok(())
    } else {
        Err(Stop::Reject(format!(
            "subscription `{subscription_id}` belongs to `{}`, not to `{user_id}`",
            stored.user_id
        )))
    }
}

fn missing_user(user_id: &str) -> Stop {
    Stop::Retry(format!(
        "user `{user_id}` is not stored yet (its `registered` is on its way)"
    ))
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn opt_text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, text)
}
