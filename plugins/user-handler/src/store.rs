//! The PostgreSQL side: one transaction per event, opened by the event's row in the
//! ledger `streaming.processed_events`, so an event already applied changes nothing.
//!
//! The tables are in the schema `streaming` (migrations/0001_streaming_schema.sql); this
//! plugin's role may read, insert and update them, never delete.

use crate::domain::{self, Command, Payment, ProfileChanges, State, Terms};
use crate::polyhost::platform::messaging::{self, Message};
use crate::polyhost::platform::sql::{self, Transaction, Value};
use crate::polyhost::platform::types::Error;

/// Why an event did not apply: the outcome the host gets.
#[derive(Debug)]
pub enum Stop {
    /// Try again later: a transient host error, or an entity not stored yet.
    Retry(String),
    /// Never applies.
    Reject(String),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        let message = format!("{:?}: {}", e.kind, e.message);
        if e.transient {
            Stop::Retry(message)
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

const LEDGER: &str = "INSERT INTO streaming.processed_events (source, event_id, event_type) \
                      VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";

/// Applies `command` once: in one transaction, the ledger row and the change. An event
/// already in the ledger is rolled back and counts as done. A subscription's activation
/// is published to `derived_topic`.
pub fn apply(meta: &Meta<'_>, command: &Command, derived_topic: &str) -> Result<(), Stop> {
    let tx = sql::begin()?;
    let fresh = tx.execute(LEDGER, &[text(meta.source), text(meta.id), text(meta.ty)])?;
    if fresh == 0 {
        // Dropping the transaction rolls it back.
        return Ok(());
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
        Command::UpdateProfile { user_id, changes } => update_profile(&tx, user_id, changes, t)?,
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
        Command::Start(terms) => start(&tx, terms, t)?,
        Command::ChangePlan(terms) => {
            let stored = subscription(&tx, &terms.subscription_id)?;
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
            let stored = subscription(&tx, subscription_id)?;
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
            if pay(&tx, payment, t)? {
                // Published before the commit: should the commit fail, the retry publishes
                // the same id again, which consumers dedupe; the other order could lose it.
                publish_activation(payment, meta.time, derived_topic)?;
            }
        }
    }
    Transaction::commit(tx)?;
    Ok(())
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

fn publish_activation(payment: &Payment, time: i64, topic: &str) -> Result<(), Stop> {
    messaging::publish(&Message {
        topic: topic.to_owned(),
        key: Some(payment.subscription_id.as_bytes().to_vec()),
        value: domain::activation_event(payment, time),
        headers: vec![(
            "content-type".to_owned(),
            b"application/cloudevents+json".to_vec(),
        )],
    })?;
    Ok(())
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
