//! PostgreSQL, the user-handler's store (S2.1): users, preferences, subscriptions and
//! payments in the schema `streaming`, checked against the `streaming.users` and
//! `streaming.billing` events.
//!
//! The expectations are computed here from the events alone, following docs/events.md:
//! profile updates apply in order; the last preferences win; a subscription is `pending`
//! on `started`, `active` after a successful payment, `past_due` after a failed one once it
//! was active, `cancelled` for good on `cancelled` (a plan change or payment after that
//! changes no state; the payment is still recorded). An event with missing or malformed
//! fields is expected to be rejected, so it counts for nothing.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use sqlx::{Connection as _, PgConnection};

use super::events::{Ev, Urls};

/// The platform tables, children first.
const TABLES: [&str; 5] = [
    "streaming.payments",
    "streaming.subscriptions",
    "streaming.user_preferences",
    "streaming.users",
    "streaming.processed_events",
];

/// How many examples each kind of mismatch lists.
const EXAMPLES: usize = 5;

/// Empties the platform tables, if the migrations have created them.
pub async fn reset(urls: &Urls) -> Result<()> {
    let mut db = connect(urls).await?;
    let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass('streaming.users') IS NOT NULL")
        .fetch_one(&mut db)
        .await?;
    if exists {
        sqlx::raw_sql(&format!("TRUNCATE {} CASCADE", TABLES.join(", ")))
            .execute(&mut db)
            .await
            .context("emptying the user-handler's tables")?;
    }
    Ok(())
}

/// Compares the user-handler's tables with what the events say they must hold.
pub async fn check(events: &[Ev], urls: &Urls) -> Result<()> {
    let expected = Model::from_events(events);
    let mut db = connect(urls).await?;
    let actual = Model::read(&mut db).await?;
    let mut report = Vec::new();

    let counts = [
        ("users", expected.users.len(), actual.users.len()),
        (
            "user_preferences",
            expected.preferences.len(),
            actual.preferences.len(),
        ),
        (
            "subscriptions",
            expected.subscriptions.len(),
            actual.subscriptions.len(),
        ),
        ("payments", expected.payments, actual.payments),
        ("processed_events", expected.processed, actual.processed),
    ];
    for (table, want, got) in counts {
        if want != got {
            report.push(format!(
                "streaming.{table}: expected {want} rows, found {got}"
            ));
        }
    }
    compare(&mut report, "user", &expected.users, &actual.users);
    compare(
        &mut report,
        "preferences of user",
        &expected.preferences,
        &actual.preferences,
    );
    compare(
        &mut report,
        "subscription",
        &expected.subscriptions,
        &actual.subscriptions,
    );
    compare(
        &mut report,
        "payment totals of user",
        &expected.totals,
        &actual.totals,
    );

    if report.is_empty() {
        Ok(())
    } else {
        bail!(
            "PostgreSQL (user-handler) does not match the events:\n  {}",
            report.join("\n  ")
        )
    }
}

async fn connect(urls: &Urls) -> Result<PgConnection> {
    PgConnection::connect(&urls.database_url)
        .await
        .with_context(|| format!("connecting to {}", urls.database_url))
}

/// A user's profile: email, display name, country, birth year.
type Profile = (String, String, String, i16);
/// Preferences: language, subtitles, autoplay, maturity limit, favourite genres.
type Prefs = (String, bool, bool, String, Vec<String>);
/// Payment totals: the sum of succeeded amounts in cents, and the count of failed ones.
type Totals = (i64, i64);

/// A subscription as the checks compare it.
#[derive(Debug, Clone, PartialEq)]
struct Sub {
    user_id: String,
    state: String,
    plan: String,
    price_cents: i64,
    first_payment_id: Option<String>,
}

/// What the store holds, expected or read.
#[derive(Debug, Default)]
struct Model {
    users: BTreeMap<String, Profile>,
    preferences: BTreeMap<String, Prefs>,
    subscriptions: BTreeMap<String, Sub>,
    totals: BTreeMap<String, Totals>,
    payments: usize,
    processed: usize,
}

impl Model {
    /// The store the events of `streaming.users` and `streaming.billing` must leave.
    fn from_events(events: &[Ev]) -> Model {
        let mut ours: Vec<&Ev> = events
            .iter()
            .filter(|e| e.topic == "streaming.users" || e.topic == "streaming.billing")
            .collect();
        ours.sort_by(|a, b| {
            (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset))
        });
        let mut model = Model::default();
        let mut seen = HashSet::new();
        for e in ours {
            if !seen.insert((e.source.as_str(), e.id.as_str())) {
                continue; // a redelivered event applies once
            }
            if model.apply(e).is_some() {
                model.processed += 1;
            }
        }
        model
    }

    /// Applies one event; `None` when the handler must reject it (a missing or
    /// malformed field), so it changes nothing and is not in the ledger.
    fn apply(&mut self, e: &Ev) -> Option<()> {
        let d = &e.data;
        match e.ty.as_str() {
            "streaming.user.registered" => {
                let year = i16::try_from(d["birth_year"].as_i64()?).ok()?;
                let profile = (
                    s(d, "email")?,
                    s(d, "display_name")?,
                    s(d, "country")?,
                    year,
                );
                self.users.insert(s(d, "user_id")?, profile);
            }
            "streaming.user.profile_updated" => {
                let c = &d["changes"];
                let user = self.users.get_mut(d["user_id"].as_str()?)?;
                if let Some(v) = c["email"].as_str() {
                    user.0 = v.to_owned();
                }
                if let Some(v) = c["display_name"].as_str() {
                    user.1 = v.to_owned();
                }
                if let Some(v) = c["country"].as_str() {
                    user.2 = v.to_owned();
                }
            }
            "streaming.user.preferences_updated" => {
                let genres = d["favourite_genres"]
                    .as_array()?
                    .iter()
                    .map(|g| g.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()?;
                let prefs = (
                    s(d, "language")?,
                    d["subtitles"].as_bool()?,
                    d["autoplay"].as_bool()?,
                    s(d, "maturity_limit")?,
                    genres,
                );
                self.preferences.insert(s(d, "user_id")?, prefs);
            }
            "streaming.subscription.started" => {
                let sub = Sub {
                    user_id: s(d, "user_id")?,
                    state: "pending".into(),
                    plan: s(d, "plan")?,
                    price_cents: cents(d["price"].as_str()?)?,
                    first_payment_id: None,
                };
                self.subscriptions.insert(s(d, "subscription_id")?, sub);
            }
            "streaming.subscription.plan_changed" => {
                let (plan, price) = (s(d, "plan")?, cents(d["price"].as_str()?)?);
                let sub = self.subscriptions.get_mut(d["subscription_id"].as_str()?)?;
                if sub.state != "cancelled" {
                    sub.plan = plan;
                    sub.price_cents = price;
                }
            }
            "streaming.subscription.cancelled" => {
                s(d, "reason")?;
                let sub = self.subscriptions.get_mut(d["subscription_id"].as_str()?)?;
                sub.state = "cancelled".into();
            }
            "streaming.payment.succeeded" | "streaming.payment.failed" => {
                let succeeded = e.ty.ends_with("succeeded");
                let amount = cents(d["amount"].as_str()?)?;
                let payment_id = s(d, "payment_id")?;
                let user_id = s(d, "user_id")?;
                let sub = self.subscriptions.get_mut(d["subscription_id"].as_str()?)?;
                sub.state = match (sub.state.as_str(), succeeded) {
                    ("cancelled", _) => "cancelled",
                    (_, true) => "active",
                    ("pending", false) => "pending",
                    (_, false) => "past_due",
                }
                .into();
                if succeeded && sub.state == "active" && sub.first_payment_id.is_none() {
                    sub.first_payment_id = Some(payment_id);
                }
                let totals = self.totals.entry(user_id).or_default();
                if succeeded {
                    totals.0 += amount;
                } else {
                    totals.1 += 1;
                }
                self.payments += 1;
            }
            _ => return None,
        }
        Some(())
    }

    /// What the database holds.
    async fn read(db: &mut PgConnection) -> Result<Model> {
        let mut model = Model::default();
        let users: Vec<(String, String, String, String, i16)> = sqlx::query_as(
            "SELECT user_id, email, display_name, country::text, birth_year FROM streaming.users",
        )
        .fetch_all(&mut *db)
        .await
        .context("reading streaming.users")?;
        for (id, email, name, country, year) in users {
            model.users.insert(id, (email, name, country, year));
        }
        let prefs: Vec<(String, String, bool, bool, String, Vec<String>)> = sqlx::query_as(
            "SELECT user_id, language, subtitles, autoplay, maturity_limit, favourite_genres \
             FROM streaming.user_preferences",
        )
        .fetch_all(&mut *db)
        .await
        .context("reading streaming.user_preferences")?;
        for (id, language, subtitles, autoplay, limit, genres) in prefs {
            model
                .preferences
                .insert(id, (language, subtitles, autoplay, limit, genres));
        }
        let subs: Vec<(String, String, String, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT subscription_id, user_id, state, plan, (price * 100)::bigint, first_payment_id \
             FROM streaming.subscriptions",
        )
        .fetch_all(&mut *db)
        .await
        .context("reading streaming.subscriptions")?;
        for (id, user_id, state, plan, price_cents, first_payment_id) in subs {
            let sub = Sub {
                user_id,
                state,
                plan,
                price_cents,
                first_payment_id,
            };
            model.subscriptions.insert(id, sub);
        }
        let totals: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT user_id, \
             coalesce((sum(amount) FILTER (WHERE status = 'succeeded') * 100)::bigint, 0), \
             count(*) FILTER (WHERE status = 'failed') \
             FROM streaming.payments GROUP BY user_id",
        )
        .fetch_all(&mut *db)
        .await
        .context("reading streaming.payments")?;
        for (user, paid, failed) in totals {
            model.totals.insert(user, (paid, failed));
        }
        let (payments, processed): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM streaming.payments), \
             (SELECT count(*) FROM streaming.processed_events \
              WHERE event_type LIKE 'streaming.user.%' \
                 OR event_type LIKE 'streaming.subscription.%' \
                 OR event_type LIKE 'streaming.payment.%')",
        )
        .fetch_one(&mut *db)
        .await
        .context("counting payments and processed events")?;
        model.payments = usize::try_from(payments)?;
        model.processed = usize::try_from(processed)?;
        Ok(model)
    }
}

/// Lists, with a few examples each, the entities missing, unexpected, or different.
fn compare<V: PartialEq + Debug>(
    report: &mut Vec<String>,
    what: &str,
    expected: &BTreeMap<String, V>,
    actual: &BTreeMap<String, V>,
) {
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !actual.contains_key(*k))
        .collect();
    let extra: Vec<_> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    let different: Vec<_> = expected
        .iter()
        .filter_map(|(k, want)| {
            let got = actual.get(k)?;
            (got != want).then(|| format!("`{k}`: expected {want:?}, found {got:?}"))
        })
        .collect();
    if !missing.is_empty() {
        report.push(format!(
            "{} {what} missing, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(EXAMPLES)]
        ));
    }
    if !extra.is_empty() {
        report.push(format!(
            "{} {what} not in the events, e.g. {:?}",
            extra.len(),
            &extra[..extra.len().min(EXAMPLES)]
        ));
    }
    if !different.is_empty() {
        report.push(format!(
            "{} {what} different, e.g.\n    {}",
            different.len(),
            different[..different.len().min(EXAMPLES)].join("\n    ")
        ));
    }
}

/// `data[field]` as an owned string.
fn s(data: &Value, field: &str) -> Option<String> {
    data[field].as_str().map(str::to_owned)
}

/// A decimal with two digits (`"19.90"`) in cents.
fn cents(amount: &str) -> Option<i64> {
    let (units, frac) = amount.split_once('.')?;
    if frac.len() != 2
        || !units
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(units.parse::<i64>().ok()? * 100 + frac.parse::<i64>().ok()?)
}
