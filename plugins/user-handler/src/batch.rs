//! The batch plan: what a whole batch does to the store, worked out here from the batch's
//! events and the rows they touch (read beforehand in one query), free of any host call.
//!
//! The events are walked in offset order against a copy of those rows, exactly as
//! applying them one by one would go: each event's outcome is decided, and every change
//! is folded into one final row per entity (a user registered and then renamed in the
//! same batch is inserted once, already renamed; a subscription started, paid and
//! cancelled is inserted once, in its final state). The store then writes the whole plan
//! in one statement (see `store`). What the plan cannot know — a row written meanwhile by
//! someone else, a constraint it does not model — makes that statement fail or count
//! differently, and the store splits the batch to find the event at fault.
//!
//! Order and retries follow the one-event-at-a-time rules: an event that meets a user or
//! subscription not stored yet is retried, and so is every later event of its entity in
//! the batch; an event already in the ledger (or met earlier in the batch) changes nothing.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::domain::{self, Command, Payment, ProfileChanges, State};

/// One event of the batch, parsed.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `id`.
    pub id: String,
    /// CloudEvents `type`.
    pub ty: String,
    /// CloudEvents `time`, in microseconds (0 when the event has none: it is rejected).
    pub time: i64,
    /// The entity whose events keep their order: the subject, else the Kafka key.
    pub entity: Option<String>,
    /// The validated command, or why the event can never apply.
    pub command: Result<Command, String>,
}

impl Incoming {
    /// The event's ledger key.
    pub fn key(&self) -> (String, String) {
        (self.source.clone(), self.id.clone())
    }
}

/// What becomes of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Applied (or applied before).
    Ok,
    /// Try again later.
    Retry(String),
    /// Never applies.
    Reject(String),
}

/// A stored subscription, every column (times in microseconds since the Unix epoch), as
/// the load query returns it and the write statement takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubRow {
    pub subscription_id: String,
    pub user_id: String,
    pub plan: String,
    /// `numeric(12,2)` as its text.
    pub price: String,
    pub currency: String,
    pub period: String,
    pub state: String,
    pub started_at: i64,
    pub first_payment_id: Option<String>,
    pub activated_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub cancel_reason: Option<String>,
    pub updated_at: i64,
}

/// What the store holds of the entities a batch names.
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    /// The batch's events already in the ledger: (source, id).
    pub processed: HashSet<(String, String)>,
    /// The users, of those the batch names, that are stored.
    pub users: HashSet<String>,
    /// The subscriptions, of those the batch names, that are stored (locked).
    pub subscriptions: HashMap<String, SubRow>,
}

/// A ledger row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerRow {
    pub source: String,
    pub event_id: String,
    pub event_type: String,
}

/// A new user, with the profile changes of later events of the batch folded in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRow {
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    pub country: String,
    pub birth_year: i16,
    pub registered_at: i64,
    pub updated_at: i64,
}

/// The profile changes of a stored user, folded: a field left `None` keeps its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileRow {
    pub user_id: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub country: Option<String>,
    pub updated_at: i64,
}

/// A user's preferences: the batch's last set for that user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrefRow {
    pub user_id: String,
    pub language: String,
    pub subtitles: bool,
    pub autoplay: bool,
    pub maturity_limit: String,
    pub favourite_genres: Vec<String>,
    pub updated_at: i64,
}

/// A payment attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentRow {
    pub payment_id: String,
    pub subscription_id: String,
    pub user_id: String,
    pub status: String,
    pub amount: String,
    pub currency: String,
    pub method: String,
    pub failure_reason: Option<String>,
    pub paid_at: i64,
}

/// Every row a batch writes, one per entity and table; the write statement's parameter
/// (as one JSON object).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Writes {
    /// The events that apply.
    pub ledger: Vec<LedgerRow>,
    /// Users registered in the batch.
    pub new_users: Vec<UserRow>,
    /// Stored users whose profile changes.
    pub profiles: Vec<ProfileRow>,
    /// Preferences, inserted or replaced.
    pub preferences: Vec<PrefRow>,
    /// Subscriptions started in the batch, in their final state.
    pub new_subscriptions: Vec<SubRow>,
    /// Stored subscriptions that change, in their final state.
    pub subscriptions: Vec<SubRow>,
    /// Payments recorded.
    pub payments: Vec<PaymentRow>,
}

impl Writes {
    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ledger.is_empty()
    }

    /// The rows each part of the write statement must report, in its order (ledger, new
    /// users, profiles, preferences, new subscriptions, subscriptions, payments).
    pub fn counts(&self) -> [u64; 7] {
        [
            self.ledger.len(),
            self.new_users.len(),
            self.profiles.len(),
            self.preferences.len(),
            self.new_subscriptions.len(),
            self.subscriptions.len(),
            self.payments.len(),
        ]
        .map(|n| n as u64)
    }
}

/// The outcome of every event, the rows to write and the activations to publish.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// One per event, in order.
    pub decisions: Vec<Decision>,
    /// What the applied events write.
    pub writes: Writes,
    /// First successful payments, with their event time: each publishes
    /// `streaming.subscription.activated`.
    pub activations: Vec<(Payment, i64)>,
    /// The entities with an event to be retried, those given to [`plan`] included: their
    /// later events wait too.
    pub waiting: HashSet<String>,
}

/// The user ids and subscription ids the batch's commands name: what the load reads.
pub fn named(events: &[Incoming]) -> (Vec<String>, Vec<String>) {
    let mut users = Vec::new();
    let mut subs = Vec::new();
    for command in events.iter().filter_map(|e| e.command.as_ref().ok()) {
        users.push(command.user_id().to_owned());
        if let Some(id) = subscription_of(command) {
            subs.push(id.to_owned());
        }
    }
    users.sort();
    users.dedup();
    subs.sort();
    subs.dedup();
    (users, subs)
}

fn subscription_of(command: &Command) -> Option<&str> {
    match command {
        Command::Start(t) | Command::ChangePlan(t) => Some(&t.subscription_id),
        Command::Cancel {
            subscription_id, ..
        } => Some(subscription_id),
        Command::Pay(p) => Some(&p.subscription_id),
        _ => None,
    }
}

/// Where a subscription of the batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Started in this batch.
    New,
    /// Stored; `true` once an event of the batch changed it.
    Stored(bool),
}

/// The walk: the state as the events so far leave it.
struct Walk<'a> {
    loaded: &'a Loaded,
    writes: Writes,
    activations: Vec<(Payment, i64)>,
    /// Index in `writes.new_users` of each user registered in the batch.
    new_users: HashMap<String, usize>,
    /// Index in `writes.profiles` per stored user.
    profiles: HashMap<String, usize>,
    /// Index in `writes.preferences` per user.
    preferences: HashMap<String, usize>,
    /// The subscriptions the batch touched, as they stand, in first-touch order.
    subs: Vec<(SubRow, Origin)>,
    sub_index: HashMap<String, usize>,
    /// Payment ids recorded by the batch.
    payments: HashSet<String>,
}

/// Works out `events` against `loaded`: the outcome of each event and what to write.
/// `waiting` are entities whose earlier events (of an earlier part of the batch) are to be
/// retried: their events here are retried too.
pub fn plan(events: &[Incoming], loaded: &Loaded, waiting: &HashSet<String>) -> Plan {
    let mut walk = Walk {
        loaded,
        writes: Writes::default(),
        activations: Vec::new(),
        new_users: HashMap::new(),
        profiles: HashMap::new(),
        preferences: HashMap::new(),
        subs: Vec::new(),
        sub_index: HashMap::new(),
        payments: HashSet::new(),
    };
    let mut waiting = waiting.clone();
    let mut decided: HashMap<(String, String), Decision> = HashMap::new();
    let mut decisions = Vec::with_capacity(events.len());
    for event in events {
        let key = event.key();
        // The same event twice in one batch: it is what it was the first time.
        if let Some(decision) = decided.get(&key) {
            decisions.push(decision.clone());
            continue;
        }
        let decision = decide(&mut walk, &mut waiting, event);
        decided.insert(key, decision.clone());
        decisions.push(decision);
    }
    let mut writes = walk.writes;
    for (row, origin) in walk.subs {
        match origin {
            Origin::New => writes.new_subscriptions.push(row),
            Origin::Stored(true) => writes.subscriptions.push(row),
            Origin::Stored(false) => {}
        }
    }
    Plan {
        decisions,
        writes,
        activations: walk.activations,
        waiting,
    }
}

fn decide(walk: &mut Walk<'_>, waiting: &mut HashSet<String>, event: &Incoming) -> Decision {
    if let Some(entity) = event.entity.as_deref().filter(|e| waiting.contains(*e)) {
        return Decision::Retry(format!(
            "an earlier event of `{entity}` is waiting for a retry"
        ));
    }
    let command = match &event.command {
        Ok(command) => command,
        Err(reason) => return Decision::Reject(reason.clone()),
    };
    if walk.loaded.processed.contains(&event.key()) {
        return Decision::Ok;
    }
    match walk.apply(command, event.time) {
        Ok(()) => {
            walk.writes.ledger.push(LedgerRow {
                source: event.source.clone(),
                event_id: event.id.clone(),
                event_type: event.ty.clone(),
            });
            Decision::Ok
        }
        Err(Decision::Retry(reason)) => {
            if let Some(entity) = &event.entity {
                waiting.insert(entity.clone());
            }
            Decision::Retry(reason)
        }
        Err(other) => other,
    }
}

impl Walk<'_> {
    fn user_known(&self, user_id: &str) -> bool {
        self.loaded.users.contains(user_id) || self.new_users.contains_key(user_id)
    }

    /// The subscription `id` as it stands, if stored or started in the batch.
    fn sub(&mut self, id: &str) -> Option<usize> {
        if let Some(&i) = self.sub_index.get(id) {
            return Some(i);
        }
        let row = self.loaded.subscriptions.get(id)?.clone();
        self.subs.push((row, Origin::Stored(false)));
        self.sub_index.insert(id.to_owned(), self.subs.len() - 1);
        Some(self.subs.len() - 1)
    }

    /// The subscription a billing event names, checked: stored (else retry), of the
    /// event's user, in a known state.
    fn billed(&mut self, id: &str, user_id: &str) -> Result<(usize, State), Decision> {
        let i = self.sub(id).ok_or_else(|| {
            Decision::Retry(format!(
                "subscription `{id}` is not stored yet (its `started` is on its way)"
            ))
        })?;
        let row = &self.subs[i].0;
        if row.user_id != user_id {
            return Err(Decision::Reject(format!(
                "subscription `{id}` belongs to `{}`, not to `{user_id}`",
                row.user_id
            )));
        }
        let state = State::parse(&row.state).ok_or_else(|| {
            Decision::Reject(format!(
                "subscription `{id}` has an unknown state `{}`",
                row.state
            ))
        })?;
        Ok((i, state))
    }

    /// Marks subscription `i` changed (a stored one is then written back).
    fn touch(&mut self, i: usize) -> &mut SubRow {
        let (row, origin) = &mut self.subs[i];
        if *origin == Origin::Stored(false) {
            *origin = Origin::Stored(true);
        }
        row
    }

    /// Applies one command at time `t`: every check first, so a refused command changes
    /// nothing. `Err` is the event's retry or reject.
    fn apply(&mut self, command: &Command, t: i64) -> Result<(), Decision> {
        match command {
            Command::Register(r) => {
                if self.user_known(&r.user_id) {
                    return Err(Decision::Reject(format!(
                        "user `{}` is already registered by another event",
                        r.user_id
                    )));
                }
                self.writes.new_users.push(UserRow {
                    user_id: r.user_id.clone(),
                    email: r.email.clone(),
                    display_name: r.display_name.clone(),
                    country: r.country.clone(),
                    birth_year: r.birth_year,
                    registered_at: t,
                    updated_at: t,
                });
                self.new_users
                    .insert(r.user_id.clone(), self.writes.new_users.len() - 1);
            }
            Command::UpdateProfile { user_id, changes } => {
                self.update_profile(user_id, changes, t)?;
            }
            Command::UpdatePreferences(p) => {
                if !self.user_known(&p.user_id) {
                    return Err(missing_user(&p.user_id));
                }
                let row = PrefRow {
                    user_id: p.user_id.clone(),
                    language: p.language.clone(),
                    subtitles: p.subtitles,
                    autoplay: p.autoplay,
                    maturity_limit: p.maturity_limit.clone(),
                    favourite_genres: p.favourite_genres.clone(),
                    updated_at: t,
                };
                match self.preferences.get(&p.user_id) {
                    Some(&i) => self.writes.preferences[i] = row,
                    None => {
                        self.writes.preferences.push(row);
                        self.preferences
                            .insert(p.user_id.clone(), self.writes.preferences.len() - 1);
                    }
                }
            }
            Command::Start(terms) => {
                if !self.user_known(&terms.user_id) {
                    return Err(missing_user(&terms.user_id));
                }
                if self.sub(&terms.subscription_id).is_some() {
                    return Err(Decision::Reject(format!(
                        "subscription `{}` was already started by another event",
                        terms.subscription_id
                    )));
                }
                self.subs.push((
                    SubRow {
                        subscription_id: terms.subscription_id.clone(),
                        user_id: terms.user_id.clone(),
                        plan: terms.plan.clone(),
                        price: terms.price.clone(),
                        currency: terms.currency.clone(),
                        period: terms.period.clone(),
                        state: State::Pending.as_str().to_owned(),
                        started_at: t,
                        first_payment_id: None,
                        activated_at: None,
                        cancelled_at: None,
                        cancel_reason: None,
                        updated_at: t,
                    },
                    Origin::New,
                ));
                self.sub_index
                    .insert(terms.subscription_id.clone(), self.subs.len() - 1);
            }
            Command::ChangePlan(terms) => {
                let (i, state) = self.billed(&terms.subscription_id, &terms.user_id)?;
                if domain::plan_change_applies(state) {
                    let row = self.touch(i);
                    row.plan = terms.plan.clone();
                    row.price = terms.price.clone();
                    row.currency = terms.currency.clone();
                    row.period = terms.period.clone();
                    row.updated_at = t;
                }
            }
            Command::Cancel {
                subscription_id,
                user_id,
                reason,
            } => {
                let (i, state) = self.billed(subscription_id, user_id)?;
                if domain::cancellation_applies(state) {
                    let row = self.touch(i);
                    row.state = State::Cancelled.as_str().to_owned();
                    row.cancelled_at = Some(t);
                    row.cancel_reason = Some(reason.clone());
                    row.updated_at = t;
                }
            }
            Command::Pay(p) => self.pay(p, t)?,
        }
        Ok(())
    }

    fn update_profile(
        &mut self,
        user_id: &str,
        changes: &ProfileChanges,
        t: i64,
    ) -> Result<(), Decision> {
        if let Some(&i) = self.new_users.get(user_id) {
            let row = &mut self.writes.new_users[i];
            if let Some(v) = &changes.email {
                row.email = v.clone();
            }
            if let Some(v) = &changes.display_name {
                row.display_name = v.clone();
            }
            if let Some(v) = &changes.country {
                row.country = v.clone();
            }
            row.updated_at = t;
            return Ok(());
        }
        if !self.loaded.users.contains(user_id) {
            return Err(missing_user(user_id));
        }
        let i = match self.profiles.get(user_id) {
            Some(&i) => i,
            None => {
                self.writes.profiles.push(ProfileRow {
                    user_id: user_id.to_owned(),
                    email: None,
                    display_name: None,
                    country: None,
                    updated_at: t,
                });
                self.profiles
                    .insert(user_id.to_owned(), self.writes.profiles.len() - 1);
                self.writes.profiles.len() - 1
            }
        };
        let row = &mut self.writes.profiles[i];
        if changes.email.is_some() {
            row.email.clone_from(&changes.email);
        }
        if changes.display_name.is_some() {
            row.display_name.clone_from(&changes.display_name);
        }
        if changes.country.is_some() {
            row.country.clone_from(&changes.country);
        }
        row.updated_at = t;
        Ok(())
    }

    fn pay(&mut self, p: &Payment, t: i64) -> Result<(), Decision> {
        let (i, state) = self.billed(&p.subscription_id, &p.user_id)?;
        if self.payments.contains(&p.payment_id) {
            return Err(Decision::Reject(format!(
                "payment `{}` was already recorded by another event",
                p.payment_id
            )));
        }
        let activated = self.subs[i].0.first_payment_id.is_some();
        let effect = domain::after_payment(state, activated, p.succeeded());
        self.payments.insert(p.payment_id.clone());
        self.writes.payments.push(PaymentRow {
            payment_id: p.payment_id.clone(),
            subscription_id: p.subscription_id.clone(),
            user_id: p.user_id.clone(),
            status: p.status().to_owned(),
            amount: p.amount.clone(),
            currency: p.currency.clone(),
            method: p.method.clone(),
            failure_reason: p.failure_reason.clone(),
            paid_at: t,
        });
        if effect.activates {
            let row = self.touch(i);
            row.state = effect.state.as_str().to_owned();
            row.first_payment_id = Some(p.payment_id.clone());
            row.activated_at = Some(t);
            row.updated_at = t;
            self.activations.push((p.clone(), t));
        } else if effect.state != state {
            let row = self.touch(i);
            row.state = effect.state.as_str().to_owned();
            row.updated_at = t;
        }
        Ok(())
    }
}

fn missing_user(user_id: &str) -> Decision {
    Decision::Retry(format!(
        "user `{user_id}` is not stored yet (its `registered` is on its way)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse;
    use serde_json::{Value, json};

    const T0: i64 = 1_767_225_600_000_000;

    /// An event numbered `n` (its id and a time `n` seconds after T0).
    fn ev(n: i64, ty: &str, subject: &str, data: Value) -> Incoming {
        Incoming {
            source: "/test".into(),
            id: format!("e{n}"),
            ty: ty.into(),
            time: T0 + n * 1_000_000,
            entity: Some(subject.into()),
            command: parse(ty, Some(subject), &serde_json::to_vec(&data).unwrap()),
        }
    }

    fn register(n: i64, user: &str) -> Incoming {
        ev(
            n,
            "streaming.user.registered",
            user,
            json!({"user_id": user, "email": format!("{user}@example.com"),
                   "display_name": "Ana", "country": "BR", "birth_year": 1990}),
        )
    }

    fn profile(n: i64, user: &str, changes: Value) -> Incoming {
        ev(
            n,
            "streaming.user.profile_updated",
            user,
            json!({"user_id": user, "changes": changes}),
        )
    }

    fn prefs(n: i64, user: &str, language: &str) -> Incoming {
        ev(
            n,
            "streaming.user.preferences_updated",
            user,
            json!({"user_id": user, "language": language, "subtitles": true, "autoplay": false,
                   "maturity_limit": "16", "favourite_genres": ["drama"]}),
        )
    }

    fn start(n: i64, sub: &str, user: &str) -> Incoming {
        ev(
            n,
            "streaming.subscription.started",
            sub,
            json!({"subscription_id": sub, "user_id": user, "plan": "basic", "price": "19.90",
                   "currency": "BRL", "period": "monthly"}),
        )
    }

    fn pay(n: i64, sub: &str, user: &str, payment: &str, ok: bool) -> Incoming {
        let mut data = json!({"payment_id": payment, "subscription_id": sub, "user_id": user,
                              "amount": "19.90", "currency": "BRL", "method": "pix"});
        let ty = if ok {
            "streaming.payment.succeeded"
        } else {
            data["failure_reason"] = json!("pix_expired");
            "streaming.payment.failed"
        };
        ev(n, ty, sub, data)
    }

    fn cancel(n: i64, sub: &str, user: &str) -> Incoming {
        ev(
            n,
            "streaming.subscription.cancelled",
            sub,
            json!({"subscription_id": sub, "user_id": user, "reason": "too_expensive"}),
        )
    }

    fn stored_sub(id: &str, user: &str, state: &str, first_payment: Option<&str>) -> SubRow {
        SubRow {
            subscription_id: id.into(),
            user_id: user.into(),
            plan: "basic".into(),
            price: "19.90".into(),
            currency: "BRL".into(),
            period: "monthly".into(),
            state: state.into(),
            started_at: T0,
            first_payment_id: first_payment.map(Into::into),
            activated_at: first_payment.map(|_| T0),
            cancelled_at: None,
            cancel_reason: None,
            updated_at: T0,
        }
    }

    fn loaded(users: &[&str], subs: Vec<SubRow>) -> Loaded {
        Loaded {
            processed: HashSet::new(),
            users: users.iter().map(|u| u.to_string()).collect(),
            subscriptions: subs
                .into_iter()
                .map(|s| (s.subscription_id.clone(), s))
                .collect(),
        }
    }

    #[test]
    fn a_user_registered_and_updated_in_one_batch_is_inserted_once_in_its_final_state() {
        let events = [
            register(1, "u-1"),
            profile(2, "u-1", json!({"display_name": "Bia"})),
            profile(
                3,
                "u-1",
                json!({"country": "PT", "email": "bia@example.org"}),
            ),
            prefs(4, "u-1", "pt-BR"),
            prefs(5, "u-1", "en"),
        ];
        let plan = plan(&events, &Loaded::default(), &HashSet::new());
        assert_eq!(plan.decisions, vec![Decision::Ok; 5]);
        let w = &plan.writes;
        assert_eq!(w.ledger.len(), 5);
        assert_eq!(
            w.new_users,
            [UserRow {
                user_id: "u-1".into(),
                email: "bia@example.org".into(),
                display_name: "Bia".into(),
                country: "PT".into(),
                birth_year: 1990,
                registered_at: T0 + 1_000_000,
                updated_at: T0 + 3_000_000,
            }]
        );
        assert!(w.profiles.is_empty());
        assert_eq!(w.preferences.len(), 1, "one row per user: the last set");
        assert_eq!(w.preferences[0].language, "en");
        assert_eq!(w.preferences[0].updated_at, T0 + 5_000_000);
    }

    #[test]
    fn profile_changes_of_a_stored_user_fold_into_one_update() {
        let events = [
            profile(1, "u-1", json!({"display_name": "Bia", "country": "PT"})),
            profile(2, "u-1", json!({"display_name": "Cris"})),
        ];
        let plan = plan(&events, &loaded(&["u-1"], vec![]), &HashSet::new());
        assert_eq!(
            plan.writes.profiles,
            [ProfileRow {
                user_id: "u-1".into(),
                email: None,
                display_name: Some("Cris".into()),
                country: Some("PT".into()),
                updated_at: T0 + 2_000_000,
            }]
        );
    }

    #[test]
    fn an_unknown_user_is_retried_with_the_later_events_of_its_entity_and_others_go_on() {
        let events = [
            prefs(1, "u-9", "en"),
            register(2, "u-9"), // same entity, after a retry: waits too
            register(3, "u-2"),
            profile(4, "u-2", json!({"country": "AR"})),
        ];
        let plan = plan(&events, &Loaded::default(), &HashSet::new());
        assert!(matches!(&plan.decisions[0], Decision::Retry(r) if r.contains("u-9")));
        assert!(matches!(&plan.decisions[1], Decision::Retry(r) if r.contains("waiting")));
        assert_eq!(plan.decisions[2..], [Decision::Ok, Decision::Ok]);
        assert_eq!(plan.writes.ledger.len(), 2);
        assert_eq!(plan.writes.new_users.len(), 1);
        assert_eq!(plan.writes.new_users[0].country, "AR");
    }

    #[test]
    fn entities_waiting_from_an_earlier_part_of_the_batch_keep_waiting() {
        let waiting: HashSet<String> = ["u-1".to_string()].into();
        let events = [
            profile(1, "u-1", json!({"country": "AR"})),
            register(2, "u-2"),
        ];
        let plan = plan(&events, &loaded(&["u-1"], vec![]), &waiting);
        assert!(matches!(&plan.decisions[0], Decision::Retry(r) if r.contains("waiting")));
        assert_eq!(plan.decisions[1], Decision::Ok);
        assert!(plan.writes.profiles.is_empty());
        assert_eq!(plan.waiting, waiting);
        // A retry here is handed on.
        let plan = super::plan(
            &[prefs(3, "u-3", "en")],
            &Loaded::default(),
            &HashSet::new(),
        );
        assert!(plan.waiting.contains("u-3"));
    }

    #[test]
    fn a_bad_event_is_rejected_alone() {
        let mut bad = register(2, "u-2");
        bad.command = Err("`country` `Brazil` is not an ISO 3166 alpha-2 code".into());
        let events = [
            register(1, "u-1"),
            bad,
            register(3, "u-1"),
            register(4, "u-3"),
        ];
        let plan = plan(&events, &Loaded::default(), &HashSet::new());
        assert_eq!(plan.decisions[0], Decision::Ok);
        assert!(matches!(&plan.decisions[1], Decision::Reject(r) if r.contains("country")));
        assert!(matches!(&plan.decisions[2], Decision::Reject(r) if r.contains("already")));
        assert_eq!(plan.decisions[3], Decision::Ok);
        let ids: Vec<_> = plan.writes.ledger.iter().map(|l| &l.event_id).collect();
        assert_eq!(ids, ["e1", "e4"]);
    }

    #[test]
    fn processed_events_and_repeats_in_the_batch_change_nothing() {
        let mut stored = loaded(&["u-1"], vec![]);
        stored.processed.insert(("/test".into(), "e1".into()));
        let again = register(1, "u-1");
        let events = [again.clone(), register(2, "u-2"), register(2, "u-2")];
        let plan = plan(&events, &stored, &HashSet::new());
        assert_eq!(plan.decisions, vec![Decision::Ok; 3]);
        assert_eq!(plan.writes.ledger.len(), 1);
        assert_eq!(plan.writes.new_users.len(), 1);
        // A replay of everything writes nothing at all.
        let mut all = stored.clone();
        all.processed.insert(("/test".into(), "e2".into()));
        assert!(
            super::plan(&events, &all, &HashSet::new())
                .writes
                .is_empty()
        );
    }

    #[test]
    fn a_subscription_started_paid_and_cancelled_in_one_batch_is_inserted_final() {
        let events = [
            start(1, "sub-1", "u-1"),
            pay(2, "sub-1", "u-1", "pay-1", false),
            pay(3, "sub-1", "u-1", "pay-2", true),
            pay(4, "sub-1", "u-1", "pay-3", true),
            cancel(5, "sub-1", "u-1"),
            pay(6, "sub-1", "u-1", "pay-4", false),
        ];
        let plan = plan(&events, &loaded(&["u-1"], vec![]), &HashSet::new());
        assert_eq!(plan.decisions, vec![Decision::Ok; 6]);
        let w = &plan.writes;
        assert!(w.subscriptions.is_empty());
        let sub = &w.new_subscriptions[0];
        assert_eq!(sub.state, "cancelled");
        assert_eq!(sub.first_payment_id.as_deref(), Some("pay-2"));
        assert_eq!(sub.activated_at, Some(T0 + 3_000_000));
        assert_eq!(sub.cancelled_at, Some(T0 + 5_000_000));
        assert_eq!(
            sub.updated_at,
            T0 + 5_000_000,
            "the late payment changes no state"
        );
        assert_eq!(w.payments.len(), 4);
        assert_eq!(plan.activations.len(), 1);
        assert_eq!(plan.activations[0].0.payment_id, "pay-2");
    }

    #[test]
    fn stored_subscriptions_follow_the_state_machine_and_are_written_back_when_changed() {
        let subs = vec![
            stored_sub("sub-1", "u-1", "active", Some("pay-0")),
            stored_sub("sub-2", "u-2", "pending", None),
        ];
        let events = [
            pay(1, "sub-1", "u-1", "pay-1", false),
            pay(2, "sub-2", "u-2", "pay-2", false),
            ev(
                3,
                "streaming.subscription.plan_changed",
                "sub-1",
                json!({"subscription_id": "sub-1", "user_id": "u-1", "plan": "premium",
                       "price": "55.90", "currency": "BRL", "period": "monthly"}),
            ),
        ];
        let plan = plan(&events, &loaded(&["u-1", "u-2"], subs), &HashSet::new());
        assert_eq!(plan.decisions, vec![Decision::Ok; 3]);
        let w = &plan.writes;
        // sub-2 stays pending after a failed first payment: nothing to write back.
        assert_eq!(w.subscriptions.len(), 1);
        let sub = &w.subscriptions[0];
        assert_eq!(
            (sub.state.as_str(), sub.plan.as_str()),
            ("past_due", "premium")
        );
        assert_eq!(sub.updated_at, T0 + 3_000_000);
        assert_eq!(w.payments.len(), 2);
        assert!(plan.activations.is_empty());
    }

    #[test]
    fn billing_events_of_another_user_or_an_unknown_subscription() {
        let subs = vec![stored_sub("sub-1", "u-1", "active", Some("pay-0"))];
        let events = [
            pay(1, "sub-1", "u-2", "pay-1", true),
            pay(2, "sub-9", "u-1", "pay-2", true),
            cancel(3, "sub-9", "u-1"),
            start(4, "sub-1", "u-1"),
            pay(5, "sub-1", "u-1", "pay-5", true),
            pay(6, "sub-1", "u-1", "pay-5", true),
        ];
        let plan = plan(&events, &loaded(&["u-1", "u-2"], subs), &HashSet::new());
        assert!(matches!(&plan.decisions[0], Decision::Reject(r) if r.contains("belongs to")));
        assert!(matches!(&plan.decisions[1], Decision::Retry(r) if r.contains("sub-9")));
        assert!(matches!(&plan.decisions[2], Decision::Retry(r) if r.contains("waiting")));
        assert!(matches!(&plan.decisions[3], Decision::Reject(r) if r.contains("already")));
        assert_eq!(plan.decisions[4], Decision::Ok);
        assert!(matches!(&plan.decisions[5], Decision::Reject(r) if r.contains("pay-5")));
        assert_eq!(plan.writes.payments.len(), 1);
        // An active subscription paid again: no state change, nothing written back.
        assert!(plan.writes.subscriptions.is_empty());
    }

    #[test]
    fn named_lists_each_user_and_subscription_once() {
        let events = [
            start(1, "sub-1", "u-1"),
            pay(2, "sub-1", "u-1", "pay-1", true),
            register(3, "u-2"),
        ];
        let (users, subs) = named(&events);
        assert_eq!(users, ["u-1", "u-2"]);
        assert_eq!(subs, ["sub-1"]);
    }

    #[test]
    fn the_writes_serialise_as_the_statement_reads_them() {
        let events = [register(1, "u-1"), prefs(2, "u-1", "en")];
        let plan = plan(&events, &Loaded::default(), &HashSet::new());
        let v = serde_json::to_value(&plan.writes).unwrap();
        assert_eq!(v["new_users"][0]["birth_year"], 1990);
        assert_eq!(v["preferences"][0]["favourite_genres"], json!(["drama"]));
        assert_eq!(v["ledger"][1]["event_id"], "e2");
        assert_eq!(plan.writes.counts(), [2, 1, 0, 1, 0, 0, 0]);
    }
}
