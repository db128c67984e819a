//! The simulated platform: who and what exists so far, and which event happens next.
//!
//! [`World::step`] draws one action by weight among those possible now, applies it to the
//! state and returns the event that records it. An action only ever refers to entities the
//! state already holds, and the state only holds entities whose creating event was already
//! returned, so every reference in the stream points backwards.
//!
//! The mix: while there are fewer than [`WARM_USERS`] users or [`WARM_TITLES`] titles,
//! registrations and publications dominate; afterwards sessions (start, heartbeats, end),
//! ratings and payments do, with the weights of [`World::weight`].

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use crate::image::{self, BANNER, THUMBNAIL};
use crate::rng::{Rng, splitmix64};
use crate::vocab::*;

/// Kafka topics (docs/events.md).
pub mod topic {
    /// `streaming.user.*`, keyed by user id.
    pub const USERS: &str = "streaming.users";
    /// Subscriptions and payments, keyed by subscription id.
    pub const BILLING: &str = "streaming.billing";
    /// `streaming.title.*`, keyed by title id.
    pub const CATALOG: &str = "streaming.catalog";
    /// `streaming.rating.submitted`, keyed by title id.
    pub const RATINGS: &str = "streaming.ratings";
    /// `streaming.session.*` keyed by session id, `streaming.variable.set` by variable name.
    pub const SESSIONS: &str = "streaming.sessions";
}

/// Registrations dominate until there are this many users.
pub const WARM_USERS: usize = 50;
/// Publications dominate until there are this many titles.
pub const WARM_TITLES: usize = 30;

/// One platform event, before it is wrapped in a CloudEvent.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The CloudEvents `type`, e.g. `streaming.user.registered`.
    pub ty: &'static str,
    /// The Kafka topic.
    pub topic: &'static str,
    /// The id of the entity the event changes: the CloudEvents `subject` and the Kafka key.
    pub subject: String,
    /// The CloudEvents `data`.
    pub data: Value,
}

/// The plans: name and monthly price in BRL.
const PLANS: [(&str, &str); 3] = [
    ("basic", "19.90"),
    ("standard", "39.90"),
    ("premium", "55.90"),
];
/// How likely each plan is at subscription, in parts of 100.
const PLAN_WEIGHTS: [u64; 3] = [50, 35, 15];
/// Payment methods and how likely each is.
const METHODS: [&str; 3] = ["card", "pix", "boleto"];
const METHOD_WEIGHTS: [u64; 3] = [60, 30, 10];
/// A payment fails with this probability (per mille).
const PAYMENT_FAILS: u64 = 150;
/// After a failure, the payment is tried again later with this probability (per mille).
const PAYMENT_RETRIED: u64 = 700;
/// A session ends with `session.ended` with this probability (per mille); the others are
/// abandoned after their last heartbeat and never end.
const SESSION_ENDS: u64 = 850;
/// Popularity weights are `MAX_WEIGHT / u` for `u` uniform in `1..=MAX_WEIGHT`: a Pareto
/// law of index 1, so titles ranked by weight follow Zipf's law.
const MAX_WEIGHT: u64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    /// Started, no successful payment yet.
    Pending,
    Active,
    PastDue,
    Cancelled,
}

#[derive(Debug)]
struct User {
    first: &'static str,
    last: &'static str,
    /// How many times the email changed (keeps every email unique).
    email_changes: u32,
    /// The subscription that is not cancelled, if any (at most one per user).
    live_sub: Option<usize>,
}

#[derive(Debug)]
struct Subscription {
    user: usize,
    plan: usize,
    method: &'static str,
    state: SubState,
}

#[derive(Debug)]
struct Title {
    /// The mean of the stars it gets, 1–5.
    quality: u64,
    /// Playable lengths in seconds: the movie, or every episode of a series.
    lengths_s: Vec<u64>,
}

/// Which picture an asset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Thumbnail,
    Banner,
}

#[derive(Debug)]
struct Session {
    n: u64,
    user: usize,
    title: usize,
    length_s: u64,
    position_s: u64,
    watched_s: u64,
    /// Heartbeats still to send.
    beats_left: u32,
    /// Whether it ends with `session.ended` (else it is abandoned after its heartbeats).
    ends: bool,
    /// Simulated time of its last event, in ms.
    last_ms: i64,
}

/// What can happen next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Register,
    UpdateProfile,
    UpdatePreferences,
    Subscribe,
    Pay,
    ChangePlan,
    Cancel,
    Publish,
    UpdateTitle,
    Relate,
    UploadAsset,
    Rate,
    StartSession,
    AdvanceSession,
    SetVariable,
}

const ACTIONS: [Action; 15] = [
    Action::Register,
    Action::UpdateProfile,
    Action::UpdatePreferences,
    Action::Subscribe,
    Action::Pay,
    Action::ChangePlan,
    Action::Cancel,
    Action::Publish,
    Action::UpdateTitle,
    Action::Relate,
    Action::UploadAsset,
    Action::Rate,
    Action::StartSession,
    Action::AdvanceSession,
    Action::SetVariable,
];

/// Everything created so far. Entities are numbered from 1 in creation order
/// (`u-<seed>-1`, ...); index `i` of a vector is entity `i + 1`.
#[derive(Debug)]
pub struct World {
    /// The run's seed: the images are derived from it.
    seed: u64,
    /// The run's tag in every entity id (the seed in decimal), see [`entity_id`].
    tag: String,
    users: Vec<User>,
    /// Users without a live subscription.
    unsubscribed: Vec<usize>,
    subs: Vec<Subscription>,
    /// Subscriptions not cancelled.
    live: Vec<usize>,
    /// Live subscriptions with a payment due: the first one, or a retry after a failure.
    due: Vec<usize>,
    payments: u64,
    titles: Vec<Title>,
    /// Running sums of the titles' popularity weights: a title is watched, rated and
    /// featured with a chance proportional to its weight.
    cum_weight: Vec<u64>,
    /// Assets announced at publication, not uploaded yet.
    pending_assets: Vec<(usize, Role)>,
    assets: u64,
    /// (title, related title) pairs already related.
    relations: HashSet<(usize, usize)>,
    /// (user, title) pairs already rated.
    ratings: HashSet<(usize, usize)>,
    /// Sessions started and neither ended nor abandoned.
    open: Vec<Session>,
    sessions: u64,
}

/// The id of entity `i` (0-based) of a kind: `<prefix>-<tag>-<i + 1>`, e.g. `u-7-4`. The
/// run's tag (its seed) keeps runs with different seeds apart in one set of stores, and
/// the same seed gives the same ids again, which the handlers recognise and apply once.
fn entity_id(prefix: &str, tag: &str, i: usize) -> String {
    format!("{prefix}-{tag}-{}", i + 1)
}
fn user_id(tag: &str, i: usize) -> String {
    entity_id("u", tag, i)
}
fn sub_id(tag: &str, i: usize) -> String {
    entity_id("sub", tag, i)
}
fn title_id(tag: &str, i: usize) -> String {
    entity_id("t", tag, i)
}

/// `s` in lower case with the Portuguese accents dropped, for email addresses.
fn ascii_lower(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'á' | 'â' | 'ã' | 'à' | 'Á' => 'a',
            'é' | 'ê' => 'e',
            'í' => 'i',
            'ó' | 'ô' | 'õ' | 'Ó' => 'o',
            'ú' => 'u',
            'ç' => 'c',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// A name drawn from the vocabulary: "First Last".
fn person(rng: &mut Rng) -> String {
    format!("{} {}", rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES))
}

fn title_name(rng: &mut Rng) -> String {
    format!("The {} {}", rng.pick(ADJECTIVES), rng.pick(NOUNS))
}

fn genres(rng: &mut Rng) -> Vec<&'static str> {
    let n = rng.range(1, 3) as usize;
    rng.pick_distinct(GENRES, n)
}

fn cast(rng: &mut Rng) -> Vec<String> {
    let n = rng.range(2, 5);
    let mut names: Vec<String> = Vec::new();
    while names.len() < n as usize {
        let name = person(rng);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

impl World {
    /// An empty platform; `seed` is the run's seed (images are derived from it).
    pub fn new(seed: u64) -> Self {
        World {
            seed,
            tag: seed.to_string(),
            users: Vec::new(),
            unsubscribed: Vec::new(),
            subs: Vec::new(),
            live: Vec::new(),
            due: Vec::new(),
            payments: 0,
            titles: Vec::new(),
            cum_weight: Vec::new(),
            pending_assets: Vec::new(),
            assets: 0,
            relations: HashSet::new(),
            ratings: HashSet::new(),
            open: Vec::new(),
            sessions: 0,
        }
    }

    /// The next event at simulated time `now_ms` (ms since the Unix epoch).
    pub fn step(&mut self, rng: &mut Rng, now_ms: i64) -> Event {
        let mut weights: Vec<u64> = ACTIONS.iter().map(|&a| self.weight(a)).collect();
        loop {
            let i = rng.weighted(&weights);
            match self.act(ACTIONS[i], rng, now_ms) {
                Some(event) => return event,
                // Not possible this time (e.g. every tried pair was rated): draw another.
                // Registering always succeeds, so this ends.
                None => weights[i] = 0,
            }
        }
    }

    /// How likely `action` is now, relative to the others; 0 when it is not possible.
    fn weight(&self, action: Action) -> u64 {
        let users = !self.users.is_empty();
        let titles = !self.titles.is_empty();
        let only_if = |possible: bool, w: u64| if possible { w } else { 0 };
        match action {
            Action::Register if self.users.len() < WARM_USERS => 800,
            Action::Register => 50,
            Action::UpdateProfile => only_if(users, 20),
            Action::UpdatePreferences => only_if(users, 30),
            Action::Subscribe => only_if(!self.unsubscribed.is_empty(), 40),
            Action::Pay if !self.due.is_empty() => 90,
            Action::Pay => only_if(!self.live.is_empty(), 30),
            Action::ChangePlan => only_if(!self.live.is_empty(), 15),
            Action::Cancel => only_if(!self.live.is_empty(), 12),
            Action::Publish if self.titles.len() < WARM_TITLES => 800,
            Action::Publish => 20,
            Action::UpdateTitle => only_if(titles, 12),
            Action::Relate => only_if(self.titles.len() >= 2, 15),
            Action::UploadAsset => only_if(!self.pending_assets.is_empty(), 60),
            Action::Rate => only_if(users && titles, 130),
            Action::StartSession => only_if(users && titles, 120),
            // Proportional to the open sessions, so their number levels off (at about 35).
            Action::AdvanceSession => 12 * self.open.len() as u64,
            Action::SetVariable => only_if(titles, 3),
        }
    }

    fn act(&mut self, action: Action, rng: &mut Rng, now_ms: i64) -> Option<Event> {
        match action {
            Action::Register => Some(self.register(rng)),
            Action::UpdateProfile => Some(self.update_profile(rng)),
            Action::UpdatePreferences => Some(self.update_preferences(rng)),
            Action::Subscribe => Some(self.subscribe(rng)),
            Action::Pay => Some(self.pay(rng)),
            Action::ChangePlan => Some(self.change_plan(rng)),
            Action::Cancel => Some(self.cancel(rng)),
            Action::Publish => Some(self.publish(rng)),
            Action::UpdateTitle => Some(self.update_title(rng)),
            Action::Relate => self.relate(rng),
            Action::UploadAsset => Some(self.upload_asset(rng)),
            Action::Rate => self.rate(rng),
            Action::StartSession => Some(self.start_session(rng, now_ms)),
            Action::AdvanceSession => Some(self.advance_session(rng, now_ms)),
            Action::SetVariable => Some(self.set_variable(rng)),
        }
    }

    /// A title drawn by popularity.
    fn popular_title(&self, rng: &mut Rng) -> usize {
        let total = *self.cum_weight.last().expect("a title exists");
        let r = rng.below(total);
        self.cum_weight.partition_point(|&c| c <= r)
    }

    fn email(&self, u: usize, rng: &mut Rng) -> String {
        let user = &self.users[u];
        let domain = rng.pick(&["example.com", "example.net", "example.org"]);
        let (first, last) = (ascii_lower(user.first), ascii_lower(user.last));
        match user.email_changes {
            0 => format!("{first}.{last}.{}-{}@{domain}", self.tag, u + 1),
            k => format!("{first}.{last}.{}-{}.{k}@{domain}", self.tag, u + 1),
        }
    }

    // ---- users -------------------------------------------------------------------------

    fn register(&mut self, rng: &mut Rng) -> Event {
        let u = self.users.len();
        self.users.push(User {
            first: rng.pick(FIRST_NAMES),
            last: rng.pick(LAST_NAMES),
            email_changes: 0,
            live_sub: None,
        });
        self.unsubscribed.push(u);
        let user = &self.users[u];
        let display_name = format!("{} {}", user.first, user.last);
        let email = self.email(u, rng);
        user_event(
            &self.tag,
            "streaming.user.registered",
            u,
            json!({
                "user_id": user_id(&self.tag, u),
                "email": email,
                "display_name": display_name,
                "country": rng.pick(COUNTRIES),
                "birth_year": rng.range(1950, 2010),
            }),
        )
    }

    fn update_profile(&mut self, rng: &mut Rng) -> Event {
        let u = rng.index(self.users.len());
        let fields = rng.range(1, 7); // a non-empty subset of three fields, as bits
        let mut changes = Map::new();
        if fields & 1 != 0 {
            self.users[u].email_changes += 1;
            changes.insert("email".into(), self.email(u, rng).into());
        }
        if fields & 2 != 0 {
            let user = &mut self.users[u];
            user.first = rng.pick(FIRST_NAMES);
            user.last = rng.pick(LAST_NAMES);
            let name = format!("{} {}", user.first, user.last);
            changes.insert("display_name".into(), name.into());
        }
        if fields & 4 != 0 {
            changes.insert("country".into(), (rng.pick(COUNTRIES)).into());
        }
        user_event(
            &self.tag,
            "streaming.user.profile_updated",
            u,
            json!({ "user_id": user_id(&self.tag, u), "changes": changes }),
        )
    }

    fn update_preferences(&mut self, rng: &mut Rng) -> Event {
        let u = rng.index(self.users.len());
        let favourites = rng.range(1, 3) as usize;
        user_event(
            &self.tag,
            "streaming.user.preferences_updated",
            u,
            json!({
                "user_id": user_id(&self.tag, u),
                "language": rng.pick(LANGUAGES),
                "subtitles": rng.chance(400),
                "autoplay": rng.chance(700),
                "maturity_limit": rng.pick(MATURITY),
                "favourite_genres": rng.pick_distinct(GENRES, favourites),
            }),
        )
    }

    // ---- billing -----------------------------------------------------------------------

    fn subscribe(&mut self, rng: &mut Rng) -> Event {
        let user = self
            .unsubscribed
            .swap_remove(rng.index(self.unsubscribed.len()));
        let s = self.subs.len();
        let plan = rng.weighted(&PLAN_WEIGHTS);
        self.subs.push(Subscription {
            user,
            plan,
            method: METHODS[rng.weighted(&METHOD_WEIGHTS)],
            state: SubState::Pending,
        });
        self.users[user].live_sub = Some(s);
        self.live.push(s);
        self.due.push(s);
        self.plan_event("streaming.subscription.started", s)
    }

    fn plan_event(&self, ty: &'static str, s: usize) -> Event {
        let sub = &self.subs[s];
        let (plan, price) = PLANS[sub.plan];
        billing_event(
            &self.tag,
            ty,
            s,
            json!({
                "subscription_id": sub_id(&self.tag, s),
                "user_id": user_id(&self.tag, sub.user),
                "plan": plan,
                "price": price,
                "currency": "BRL",
                "period": "monthly",
            }),
        )
    }

    /// A due payment (first, or a retry) most of the time, else a renewal of a live one.
    fn pay(&mut self, rng: &mut Rng) -> Event {
        let s = if !self.due.is_empty() && (self.live.len() == self.due.len() || rng.chance(800)) {
            self.due.swap_remove(rng.index(self.due.len()))
        } else {
            let s = rng.pick(&self.live);
            self.due.retain(|&d| d != s);
            s
        };
        self.payments += 1;
        let failed = rng.chance(PAYMENT_FAILS);
        let sub = &mut self.subs[s];
        let mut data = json!({
            "payment_id": entity_id("pay", &self.tag, self.payments as usize - 1),
            "subscription_id": sub_id(&self.tag, s),
            "user_id": user_id(&self.tag, sub.user),
            "amount": PLANS[sub.plan].1,
            "currency": "BRL",
            "method": sub.method,
        });
        let ty = if failed {
            let reason = match sub.method {
                "card" => rng.pick(&["insufficient_funds", "card_declined", "card_expired"]),
                "pix" => "pix_expired",
                _ => "boleto_not_paid",
            };
            data["failure_reason"] = reason.into();
            if sub.state != SubState::Pending {
                sub.state = SubState::PastDue;
            }
            if rng.chance(PAYMENT_RETRIED) {
                if rng.chance(400) {
                    sub.method = METHODS[rng.weighted(&METHOD_WEIGHTS)];
                }
                self.due.push(s);
            }
            "streaming.payment.failed"
        } else {
            sub.state = SubState::Active;
            "streaming.payment.succeeded"
        };
        billing_event(&self.tag, ty, s, data)
    }

    fn change_plan(&mut self, rng: &mut Rng) -> Event {
        let s = rng.pick(&self.live);
        let sub = &mut self.subs[s];
        sub.plan = (sub.plan + rng.range(1, 2) as usize) % PLANS.len();
        self.plan_event("streaming.subscription.plan_changed", s)
    }

    fn cancel(&mut self, rng: &mut Rng) -> Event {
        let s = self.live.swap_remove(rng.index(self.live.len()));
        self.due.retain(|&d| d != s);
        let sub = &mut self.subs[s];
        let reason = if sub.state == SubState::PastDue && rng.chance(700) {
            "payment_failed"
        } else {
            rng.pick(CANCEL_REASONS)
        };
        sub.state = SubState::Cancelled;
        let user = sub.user;
        self.users[user].live_sub = None;
        self.unsubscribed.push(user);
        billing_event(
            &self.tag,
            "streaming.subscription.cancelled",
            s,
            json!({ "subscription_id": sub_id(&self.tag, s), "user_id": user_id(&self.tag, user), "reason": reason }),
        )
    }

    // ---- catalogue ---------------------------------------------------------------------

    fn publish(&mut self, rng: &mut Rng) -> Event {
        let t = self.titles.len();
        let weight = MAX_WEIGHT / rng.range(1, MAX_WEIGHT);
        let quality = 1 + rng.weighted(&[5, 15, 35, 30, 15]) as u64;
        let mut data = json!({
            "title_id": title_id(&self.tag, t),
            "name": title_name(rng),
            "genres": genres(rng),
            "year": rng.range(1975, 2026),
            "maturity_rating": rng.pick(MATURITY),
            "cast": cast(rng),
        });
        let lengths_s = if rng.chance(600) {
            let minutes = rng.range(80, 180);
            data["kind"] = "movie".into();
            data["duration_min"] = minutes.into();
            vec![minutes * 60]
        } else {
            let mut lengths = Vec::new();
            let seasons: Vec<Value> = (1..=rng.range(1, 4))
                .map(|season| {
                    let episodes: Vec<Value> = (1..=rng.range(4, 10))
                        .map(|episode| {
                            let minutes = rng.range(22, 60);
                            lengths.push(minutes * 60);
                            json!({
                                "number": episode,
                                "name": format!("{} {}", rng.pick(ADJECTIVES), rng.pick(NOUNS)),
                                "duration_min": minutes,
                            })
                        })
                        .collect();
                    json!({ "number": season, "episodes": episodes })
                })
                .collect();
            data["kind"] = "series".into();
            data["seasons"] = seasons.into();
            lengths
        };
        self.titles.push(Title { quality, lengths_s });
        self.cum_weight
            .push(self.cum_weight.last().copied().unwrap_or(0) + weight);
        self.pending_assets.push((t, Role::Thumbnail));
        self.pending_assets.push((t, Role::Banner));
        catalog_event(&self.tag, "streaming.title.published", t, data)
    }

    fn update_title(&mut self, rng: &mut Rng) -> Event {
        let t = rng.index(self.titles.len());
        let fields = rng.range(1, 15); // a non-empty subset of four fields, as bits
        let mut changes = Map::new();
        if fields & 1 != 0 {
            changes.insert("name".into(), title_name(rng).into());
        }
        if fields & 2 != 0 {
            changes.insert("genres".into(), genres(rng).into());
        }
        if fields & 4 != 0 {
            changes.insert("maturity_rating".into(), (rng.pick(MATURITY)).into());
        }
        if fields & 8 != 0 {
            changes.insert("cast".into(), cast(rng).into());
        }
        catalog_event(
            &self.tag,
            "streaming.title.updated",
            t,
            json!({ "title_id": title_id(&self.tag, t), "changes": changes }),
        )
    }

    /// Relates two titles not related in that direction yet; `None` if a few tries failed.
    fn relate(&mut self, rng: &mut Rng) -> Option<Event> {
        for _ in 0..8 {
            let a = rng.index(self.titles.len());
            let b = rng.index(self.titles.len());
            if a != b && self.relations.insert((a, b)) {
                return Some(catalog_event(
                    &self.tag,
                    "streaming.title.related",
                    a,
                    json!({
                        "title_id": title_id(&self.tag, a),
                        "related_title_id": title_id(&self.tag, b),
                        "relation": rng.pick(RELATIONS),
                    }),
                ));
            }
        }
        None
    }

    fn upload_asset(&mut self, rng: &mut Rng) -> Event {
        let (t, role) = self
            .pending_assets
            .swap_remove(rng.index(self.pending_assets.len()));
        self.assets += 1;
        let ((width, height), role_name) = match role {
            Role::Thumbnail => (THUMBNAIL, "thumbnail"),
            Role::Banner => (BANNER, "banner"),
        };
        let mut key = self.seed ^ ((t as u64) << 1 | (role == Role::Banner) as u64);
        let png = image::render(splitmix64(&mut key), width, height);
        catalog_event(
            &self.tag,
            "streaming.title.asset_uploaded",
            t,
            json!({
                "title_id": title_id(&self.tag, t),
                "asset_id": entity_id("a", &self.tag, self.assets as usize - 1),
                "role": role_name,
                "content_type": "image/png",
                "width": png.width,
                "height": png.height,
                "data_base64": base64_encode(&png.bytes),
                "sha256": png.sha256,
            }),
        )
    }

    /// A rating of a popular title by a user who has not rated it; `None` if a few tries
    /// met only pairs already rated.
    fn rate(&mut self, rng: &mut Rng) -> Option<Event> {
        for _ in 0..8 {
            let t = self.popular_title(rng);
            let u = rng.index(self.users.len());
            if self.ratings.insert((u, t)) {
                let q = self.titles[t].quality;
                let stars = (q + rng.range(0, 2)).saturating_sub(1).clamp(1, 5);
                return Some(Event {
                    ty: "streaming.rating.submitted",
                    topic: topic::RATINGS,
                    subject: title_id(&self.tag, t),
                    data: json!({ "user_id": user_id(&self.tag, u), "title_id": title_id(&self.tag, t), "stars": stars }),
                });
            }
        }
        None
    }

    // ---- sessions ----------------------------------------------------------------------

    fn start_session(&mut self, rng: &mut Rng, now_ms: i64) -> Event {
        self.sessions += 1;
        let t = self.popular_title(rng);
        let u = rng.index(self.users.len());
        let session = Session {
            n: self.sessions,
            user: u,
            title: t,
            length_s: rng.pick(&self.titles[t].lengths_s),
            position_s: 0,
            watched_s: 0,
            beats_left: rng.range(0, 6) as u32,
            ends: rng.chance(SESSION_ENDS),
            last_ms: now_ms,
        };
        let event = session_event(
            &self.tag,
            "streaming.session.started",
            &session,
            json!({ "device": rng.pick(DEVICES) }),
        );
        // A session with no heartbeat that never ends is abandoned at once.
        if session.ends || session.beats_left > 0 {
            self.open.push(session);
        }
        event
    }

    /// A heartbeat or the end of an open session. The position moves with the simulated
    /// clock (capped at the title's length), sometimes with a seek forward, so
    /// `watched_s <= position_s <= length`.
    fn advance_session(&mut self, rng: &mut Rng, now_ms: i64) -> Event {
        let i = rng.index(self.open.len());
        let s = &mut self.open[i];
        let elapsed = ((now_ms - s.last_ms) / 1000).max(1) as u64;
        let played = elapsed.min(s.length_s - s.position_s);
        s.position_s += played;
        s.watched_s += played;
        s.last_ms = now_ms;
        let ty = if s.beats_left > 0 {
            if rng.chance(100) {
                s.position_s = (s.position_s + rng.range(30, 300)).min(s.length_s);
            }
            s.beats_left -= 1;
            if s.position_s == s.length_s {
                s.beats_left = 0;
            }
            "streaming.session.heartbeat"
        } else {
            "streaming.session.ended"
        };
        let event = session_event(
            &self.tag,
            ty,
            s,
            json!({ "position_s": s.position_s, "watched_s": s.watched_s }),
        );
        if ty == "streaming.session.ended" || (s.beats_left == 0 && !s.ends) {
            self.open.swap_remove(i);
        }
        event
    }

    fn set_variable(&mut self, rng: &mut Rng) -> Event {
        let (name, value) = match rng.below(3) {
            0 => ("feature.new_player", (rng.pick(&["on", "off"])).to_string()),
            1 => ("banner.campaign", (rng.pick(CAMPAIGNS)).to_string()),
            _ => (
                "homepage.featured_title",
                title_id(&self.tag, self.popular_title(rng)),
            ),
        };
        Event {
            ty: "streaming.variable.set",
            topic: topic::SESSIONS,
            subject: name.to_string(),
            data: json!({ "name": name, "value": value }),
        }
    }
}

fn user_event(tag: &str, ty: &'static str, u: usize, data: Value) -> Event {
    Event {
        ty,
        topic: topic::USERS,
        subject: user_id(tag, u),
        data,
    }
}

fn billing_event(tag: &str, ty: &'static str, s: usize, data: Value) -> Event {
    Event {
        ty,
        topic: topic::BILLING,
        subject: sub_id(tag, s),
        data,
    }
}

fn catalog_event(tag: &str, ty: &'static str, t: usize, data: Value) -> Event {
    Event {
        ty,
        topic: topic::CATALOG,
        subject: title_id(tag, t),
        data,
    }
}

/// A session event: `extra`'s fields plus the session's ids.
fn session_event(tag: &str, ty: &'static str, s: &Session, mut extra: Value) -> Event {
    let id = entity_id("s", tag, s.n as usize - 1);
    extra["session_id"] = id.clone().into();
    extra["user_id"] = user_id(tag, s.user).into();
    extra["title_id"] = title_id(tag, s.title).into();
    Event {
        ty,
        topic: topic::SESSIONS,
        subject: id,
        data: extra,
    }
}

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
