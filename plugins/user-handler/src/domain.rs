//! The user-handler's domain, free of any host call: an event's `data` parsed and validated
//! into a typed [`Command`], the subscription state machine, and the derived
//! `streaming.subscription.activated` event. Everything here is tested natively.

use serde::Deserialize;
use serde_json::{Value, json};

/// The source of the events this plugin derives.
pub const SOURCE: &str = "/polyhost/user-handler";
/// The topic derived events go to, unless the config names another (`derived_topic`).
pub const DERIVED_TOPIC: &str = "streaming.derived";
/// The type of the event published on a subscription's first successful payment.
pub const ACTIVATED: &str = "streaming.subscription.activated";

/// What one event asks the store to do, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `streaming.user.registered`.
    Register(Registration),
    /// `streaming.user.profile_updated`: only the fields present change.
    UpdateProfile {
        /// The user.
        user_id: String,
        /// The fields that change.
        changes: ProfileChanges,
    },
    /// `streaming.user.preferences_updated`: the whole set replaces the previous one.
    UpdatePreferences(Preferences),
    /// `streaming.subscription.started`.
    Start(Terms),
    /// `streaming.subscription.plan_changed`.
    ChangePlan(Terms),
    /// `streaming.subscription.cancelled`.
    Cancel {
        /// The subscription.
        subscription_id: String,
        /// Its user, as the event names it.
        user_id: String,
        /// Why.
        reason: String,
    },
    /// `streaming.payment.succeeded` or `streaming.payment.failed`.
    Pay(Payment),
}

impl Command {
    /// The user the command names, which must be stored before it can apply.
    pub fn user_id(&self) -> &str {
        match self {
            Command::Register(r) => &r.user_id,
            Command::UpdateProfile { user_id, .. } | Command::Cancel { user_id, .. } => user_id,
            Command::UpdatePreferences(p) => &p.user_id,
            Command::Start(t) | Command::ChangePlan(t) => &t.user_id,
            Command::Pay(p) => &p.user_id,
        }
    }
}

/// A new user.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Registration {
    /// `u-<n>`.
    pub user_id: String,
    /// The address.
    pub email: String,
    /// The name shown.
    pub display_name: String,
    /// ISO 3166 alpha-2.
    pub country: String,
    /// The year of birth.
    pub birth_year: i16,
}

/// The profile fields a `profile_updated` changes (at least one is set).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ProfileChanges {
    /// A new address.
    pub email: Option<String>,
    /// A new name shown.
    pub display_name: Option<String>,
    /// A new country.
    pub country: Option<String>,
}

/// A user's viewing preferences.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Preferences {
    /// The user.
    pub user_id: String,
    /// BCP 47.
    pub language: String,
    /// Whether subtitles are on.
    pub subtitles: bool,
    /// Whether the next episode plays by itself.
    pub autoplay: bool,
    /// One of [`MATURITY_LIMITS`].
    pub maturity_limit: String,
    /// Genres, in the user's order.
    pub favourite_genres: Vec<String>,
}

/// The maturity ratings a limit may name.
pub const MATURITY_LIMITS: [&str; 6] = ["L", "10", "12", "14", "16", "18"];
/// The plans.
pub const PLANS: [&str; 3] = ["basic", "standard", "premium"];
/// The billing periods.
pub const PERIODS: [&str; 1] = ["monthly"];
/// The payment methods.
pub const METHODS: [&str; 3] = ["card", "pix", "boleto"];

/// What a subscription costs: `started` and `plan_changed` carry the same fields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Terms {
    /// `sub-<n>`.
    pub subscription_id: String,
    /// Its user.
    pub user_id: String,
    /// One of [`PLANS`].
    pub plan: String,
    /// A decimal with two digits, e.g. `"19.90"`.
    pub price: String,
    /// ISO 4217.
    pub currency: String,
    /// One of [`PERIODS`].
    pub period: String,
}

/// A payment attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    /// `pay-<n>`.
    pub payment_id: String,
    /// The subscription paid for.
    pub subscription_id: String,
    /// Its user.
    pub user_id: String,
    /// A decimal with two digits.
    pub amount: String,
    /// ISO 4217.
    pub currency: String,
    /// One of [`METHODS`].
    pub method: String,
    /// `None` when it succeeded; why it failed otherwise.
    pub failure_reason: Option<String>,
}

impl Payment {
    /// Whether the payment went through.
    pub fn succeeded(&self) -> bool {
        self.failure_reason.is_none()
    }

    /// `succeeded` or `failed`, as stored.
    pub fn status(&self) -> &'static str {
        if self.succeeded() {
            "succeeded"
        } else {
            "failed"
        }
    }
}

#[derive(Deserialize)]
struct PaymentData {
    payment_id: String,
    subscription_id: String,
    user_id: String,
    amount: String,
    currency: String,
    method: String,
    failure_reason: Option<String>,
}

#[derive(Deserialize)]
struct ProfileData {
    user_id: String,
    changes: ProfileChanges,
}

#[derive(Deserialize)]
struct CancelData {
    subscription_id: String,
    user_id: String,
    reason: String,
}

/// Parses and validates an event of type `ty` about `subject` with `data` (JSON). `Err`
/// says why the event can never apply: the outcome is `reject`.
pub fn parse(ty: &str, subject: Option<&str>, data: &[u8]) -> Result<Command, String> {
    let value: Value =
        serde_json::from_slice(data).map_err(|e| format!("`data` is not JSON: {e}"))?;
    let command = match ty {
        "streaming.user.registered" => {
            let r: Registration = fields(value)?;
            check_email(&r.email)?;
            check_name(&r.display_name)?;
            check_country(&r.country)?;
            if !(1900..=2100).contains(&r.birth_year) {
                return Err(format!("`birth_year` {} is out of range", r.birth_year));
            }
            Command::Register(r)
        }
        "streaming.user.profile_updated" => {
            let p: ProfileData = fields(value)?;
            let c = &p.changes;
            if c.email.is_none() && c.display_name.is_none() && c.country.is_none() {
                return Err("`changes` names none of email, display_name, country".into());
            }
            c.email.as_deref().map(check_email).transpose()?;
            c.display_name.as_deref().map(check_name).transpose()?;
            c.country.as_deref().map(check_country).transpose()?;
            Command::UpdateProfile {
                user_id: p.user_id,
                changes: p.changes,
            }
        }
        "streaming.user.preferences_updated" => {
            let p: Preferences = fields(value)?;
            check_language(&p.language)?;
            one_of("maturity_limit", &p.maturity_limit, &MATURITY_LIMITS)?;
            if p.favourite_genres.iter().any(|g| g.trim().is_empty()) {
                return Err("`favourite_genres` holds an empty genre".into());
            }
            Command::UpdatePreferences(p)
        }
        "streaming.subscription.started" | "streaming.subscription.plan_changed" => {
            let t: Terms = fields(value)?;
            one_of("plan", &t.plan, &PLANS)?;
            check_amount("price", &t.price)?;
            check_currency(&t.currency)?;
            one_of("period", &t.period, &PERIODS)?;
            if ty.ends_with("started") {
                Command::Start(t)
            } else {
                Command::ChangePlan(t)
            }
        }
        "streaming.subscription.cancelled" => {
            let c: CancelData = fields(value)?;
            Command::Cancel {
                subscription_id: c.subscription_id,
                user_id: c.user_id,
                reason: c.reason,
            }
        }
        "streaming.payment.succeeded" | "streaming.payment.failed" => {
            let p: PaymentData = fields(value)?;
            check_amount("amount", &p.amount)?;
            check_currency(&p.currency)?;
            one_of("method", &p.method, &METHODS)?;
            let failed = ty.ends_with("failed");
            let failure_reason = match (failed, p.failure_reason) {
                (false, _) => None,
                (true, Some(r)) if !r.trim().is_empty() => Some(r),
                (true, _) => return Err("a failed payment without a `failure_reason`".into()),
            };
            Command::Pay(Payment {
                payment_id: p.payment_id,
                subscription_id: p.subscription_id,
                user_id: p.user_id,
                amount: p.amount,
                currency: p.currency,
                method: p.method,
                failure_reason,
            })
        }
        other => return Err(format!("unknown event type `{other}`")),
    };
    check_ids(&command)?;
    check_subject(&command, subject)?;
    Ok(command)
}

/// Deserialises `data`'s fields, naming the first missing or mistyped one.
fn fields<T: for<'de> Deserialize<'de>>(value: Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("bad `data`: {e}"))
}

fn check_ids(command: &Command) -> Result<(), String> {
    let mut ids = vec![("user_id", command.user_id())];
    match command {
        Command::Start(t) | Command::ChangePlan(t) => {
            ids.push(("subscription_id", &t.subscription_id));
        }
        Command::Cancel {
            subscription_id, ..
        } => ids.push(("subscription_id", subscription_id)),
        Command::Pay(p) => {
            ids.push(("subscription_id", &p.subscription_id));
            ids.push(("payment_id", &p.payment_id));
        }
        _ => {}
    }
    match ids.iter().find(|(_, id)| id.trim().is_empty()) {
        Some((name, _)) => Err(format!("`{name}` is empty")),
        None => Ok(()),
    }
}

/// The subject (the Kafka key) is the entity the event changes: the user on
/// `streaming.users`, the subscription on `streaming.billing`.
fn check_subject(command: &Command, subject: Option<&str>) -> Result<(), String> {
    let Some(subject) = subject else {
        return Ok(());
    };
    let entity = match command {
        Command::Register(_) | Command::UpdateProfile { .. } | Command::UpdatePreferences(_) => {
            command.user_id()
        }
        Command::Start(t) | Command::ChangePlan(t) => &t.subscription_id,
        Command::Cancel {
            subscription_id, ..
        } => subscription_id,
        Command::Pay(p) => &p.subscription_id,
    };
    if entity == subject {
        Ok(())
    } else {
        Err(format!(
            "the subject `{subject}` is not the entity `{entity}` the data names"
        ))
    }
}

fn check_email(email: &str) -> Result<(), String> {
    match email.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(()),
        _ => Err(format!("`email` `{email}` is not an address")),
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        Err("`display_name` is empty".into())
    } else {
        Ok(())
    }
}

fn check_country(country: &str) -> Result<(), String> {
    if country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!(
            "`country` `{country}` is not an ISO 3166 alpha-2 code"
        ))
    }
}

fn check_currency(currency: &str) -> Result<(), String> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!("`currency` `{currency}` is not an ISO 4217 code"))
    }
}

/// A BCP 47 tag as the schema checks it: a 2–3 letter language, then subtags of 2–8
/// letters or digits.
fn check_language(tag: &str) -> Result<(), String> {
    let mut parts = tag.split('-');
    let language = parts.next().unwrap_or_default();
    let ok = (2..=3).contains(&language.len())
        && language.bytes().all(|b| b.is_ascii_alphabetic())
        && parts
            .all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(format!("`language` `{tag}` is not a BCP 47 tag"))
    }
}

/// A non-negative decimal with exactly two fraction digits that fits `numeric(12,2)`.
fn check_amount(field: &str, amount: &str) -> Result<(), String> {
    let ok = match amount.split_once('.') {
        Some((units, cents)) => {
            (1..=10).contains(&units.len())
                && units.bytes().all(|b| b.is_ascii_digit())
                && cents.len() == 2
                && cents.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{field}` `{amount}` is not a decimal with two digits"
        ))
    }
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(format!("`{field}` `{value}` is not one of {allowed:?}"))
    }
}

/// A subscription's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Started, never paid.
    Pending,
    /// Its last payment succeeded.
    Active,
    /// Its last payment failed after it had been active.
    PastDue,
    /// Cancelled: final.
    Cancelled,
}

impl State {
    /// The label stored in `subscriptions.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Active => "active",
            State::PastDue => "past_due",
            State::Cancelled => "cancelled",
        }
    }

    /// The state of a stored label.
    pub fn parse(label: &str) -> Option<State> {
        Some(match label {
            "pending" => State::Pending,
            "active" => State::Active,
            "past_due" => State::PastDue,
            "cancelled" => State::Cancelled,
            _ => return None,
        })
    }
}

/// What a payment does to its subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentEffect {
    /// The state after the payment.
    pub state: State,
    /// Whether this is the first successful payment: it activates the subscription (and
    /// publishes `streaming.subscription.activated`).
    pub activates: bool,
}

/// The subscription state machine (docs/events.md): a success makes it `active` (the
/// first one activates it); a failure makes an `active` or `past_due` one `past_due` and
/// leaves a `pending` one `pending`; `cancelled` is final (the payment is recorded, and
/// nothing else changes).
pub fn after_payment(state: State, ever_activated: bool, succeeded: bool) -> PaymentEffect {
    let next = match (state, succeeded) {
        (State::Cancelled, _) => State::Cancelled,
        (_, true) => State::Active,
        (State::Pending, false) => State::Pending,
        (State::Active | State::PastDue, false) => State::PastDue,
    };
    PaymentEffect {
        state: next,
        activates: succeeded && state != State::Cancelled && !ever_activated,
    }
}

/// Whether a `plan_changed` applies: a cancelled subscription is final.
pub fn plan_change_applies(state: State) -> bool {
    state != State::Cancelled
}

/// Whether a `cancelled` changes anything: a second cancellation keeps the first.
pub fn cancellation_applies(state: State) -> bool {
    state != State::Cancelled
}

/// The id of a subscription's activation event: one per subscription, so a replay
/// publishes the same id and the consumers dedupe it.
pub fn activation_id(subscription_id: &str) -> String {
    format!("activated-{subscription_id}")
}

/// `streaming.subscription.activated` for `payment` (its first successful payment), as
/// a structured-mode CloudEvent, timed at the payment's event time (`time_micros`).
pub fn activation_event(payment: &Payment, time_micros: i64) -> Vec<u8> {
    let mut event = json!({
        "specversion": "1.0",
        "id": activation_id(&payment.subscription_id),
        "source": SOURCE,
        "type": ACTIVATED,
        "subject": payment.subscription_id,
        "datacontenttype": "application/json",
        "data": {
            "subscription_id": payment.subscription_id,
            "user_id": payment.user_id,
            "first_payment_id": payment.payment_id,
        },
    });
    if let Some(time) = polyhost_guest::time::rfc3339_millis(time_micros) {
        event["time"] = Value::String(time);
    }
    serde_json::to_vec(&event).expect("a JSON value serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_json(ty: &str, subject: &str, data: Value) -> Result<Command, String> {
        parse(ty, Some(subject), &serde_json::to_vec(&data).unwrap())
    }

    fn registered() -> Value {
        json!({"user_id": "u-1", "email": "ana@example.com", "display_name": "Ana",
               "country": "BR", "birth_year": 1990})
    }

    fn payment(ty: &str) -> Value {
        let mut p = json!({"payment_id": "pay-1", "subscription_id": "sub-1", "user_id": "u-1",
                           "amount": "19.90", "currency": "BRL", "method": "pix"});
        if ty.ends_with("failed") {
            p["failure_reason"] = json!("insufficient_funds");
        }
        p
    }

    #[test]
    fn a_registration_parses_into_its_fields() {
        let c = parse_json("streaming.user.registered", "u-1", registered()).unwrap();
        let Command::Register(r) = c else {
            panic!("{c:?}")
        };
        assert_eq!(r.email, "ana@example.com");
        assert_eq!(r.birth_year, 1990);
    }

    #[test]
    fn malformed_events_are_refused_with_the_reason() {
        let ty = "streaming.user.registered";
        let mut no_email = registered();
        no_email.as_object_mut().unwrap().remove("email");
        let e = parse_json(ty, "u-1", no_email).unwrap_err();
        assert!(e.contains("email"), "{e}");
        let mut bad = registered();
        bad["country"] = json!("Brazil");
        assert!(parse_json(ty, "u-1", bad).unwrap_err().contains("country"));
        let mut bad = registered();
        bad["birth_year"] = json!(1492);
        assert!(
            parse_json(ty, "u-1", bad)
                .unwrap_err()
                .contains("birth_year")
        );
        let mut bad = registered();
        bad["email"] = json!("nobody");
        assert!(parse_json(ty, "u-1", bad).is_err());
        let e = parse_json(ty, "u-2", registered()).unwrap_err();
        assert!(e.contains("subject"), "{e}");
        assert!(parse(ty, Some("u-1"), b"{not json").is_err());
        let e = parse_json("streaming.user.deleted", "u-1", registered()).unwrap_err();
        assert!(e.contains("unknown event type"), "{e}");
    }

    #[test]
    fn a_profile_update_needs_at_least_one_valid_change() {
        let ty = "streaming.user.profile_updated";
        let c = parse_json(
            ty,
            "u-1",
            json!({"user_id": "u-1", "changes": {"display_name": "Bia"}}),
        )
        .unwrap();
        assert_eq!(
            c,
            Command::UpdateProfile {
                user_id: "u-1".into(),
                changes: ProfileChanges {
                    display_name: Some("Bia".into()),
                    ..ProfileChanges::default()
                }
            }
        );
        assert!(parse_json(ty, "u-1", json!({"user_id": "u-1", "changes": {}})).is_err());
        let bad = json!({"user_id": "u-1", "changes": {"country": "bra"}});
        assert!(parse_json(ty, "u-1", bad).is_err());
    }

    #[test]
    fn preferences_are_checked() {
        let ty = "streaming.user.preferences_updated";
        let prefs = |language: &str, limit: &str| {
            json!({"user_id": "u-1", "language": language, "subtitles": true, "autoplay": false,
                   "maturity_limit": limit, "favourite_genres": ["drama", "comedy"]})
        };
        let c = parse_json(ty, "u-1", prefs("pt-BR", "16")).unwrap();
        let Command::UpdatePreferences(p) = c else {
            panic!("{c:?}")
        };
        assert_eq!(p.favourite_genres, ["drama", "comedy"]);
        assert!(parse_json(ty, "u-1", prefs("pt_BR", "16")).is_err());
        assert!(parse_json(ty, "u-1", prefs("en", "17")).is_err());
    }

    #[test]
    fn subscription_terms_are_checked() {
        let terms = |plan: &str, price: &str| {
            json!({"subscription_id": "sub-1", "user_id": "u-1", "plan": plan, "price": price,
                   "currency": "BRL", "period": "monthly"})
        };
        let started = "streaming.subscription.started";
        assert!(matches!(
            parse_json(started, "sub-1", terms("basic", "19.90")),
            Ok(Command::Start(_))
        ));
        assert!(matches!(
            parse_json(
                "streaming.subscription.plan_changed",
                "sub-1",
                terms("premium", "55.90")
            ),
            Ok(Command::ChangePlan(_))
        ));
        assert!(parse_json(started, "sub-1", terms("gold", "19.90")).is_err());
        for price in ["19.9", "-1.00", "19,90", "", "12345678901.00", "1e3"] {
            assert!(
                parse_json(started, "sub-1", terms("basic", price)).is_err(),
                "{price}"
            );
        }
        // The subject of a billing event is the subscription, not the user.
        assert!(parse_json(started, "u-1", terms("basic", "19.90")).is_err());
    }

    #[test]
    fn payments_parse_with_their_status() {
        let ok = parse_json("streaming.payment.succeeded", "sub-1", payment("succeeded")).unwrap();
        let Command::Pay(p) = ok else {
            panic!("{ok:?}")
        };
        assert!(p.succeeded());
        assert_eq!(p.status(), "succeeded");
        let failed = parse_json("streaming.payment.failed", "sub-1", payment("failed")).unwrap();
        let Command::Pay(p) = failed else {
            panic!("{failed:?}")
        };
        assert_eq!(p.failure_reason.as_deref(), Some("insufficient_funds"));
        assert_eq!(p.status(), "failed");
        let mut no_reason = payment("failed");
        no_reason.as_object_mut().unwrap().remove("failure_reason");
        assert!(parse_json("streaming.payment.failed", "sub-1", no_reason).is_err());
        let mut bad = payment("succeeded");
        bad["method"] = json!("cash");
        assert!(parse_json("streaming.payment.succeeded", "sub-1", bad).is_err());
        let mut empty = payment("succeeded");
        empty["payment_id"] = json!("");
        let e = parse_json("streaming.payment.succeeded", "sub-1", empty).unwrap_err();
        assert!(e.contains("payment_id"), "{e}");
    }

    #[test]
    fn the_state_machine_follows_the_catalogue() {
        use State::*;
        let effect = |state, activated, succeeded| {
            let e = after_payment(state, activated, succeeded);
            (e.state, e.activates)
        };
        assert_eq!(effect(Pending, false, true), (Active, true));
        assert_eq!(effect(Pending, false, false), (Pending, false));
        assert_eq!(effect(Active, true, false), (PastDue, false));
        assert_eq!(effect(PastDue, true, false), (PastDue, false));
        assert_eq!(effect(PastDue, true, true), (Active, false));
        assert_eq!(effect(Active, true, true), (Active, false));
        assert_eq!(effect(Cancelled, false, true), (Cancelled, false));
        assert_eq!(effect(Cancelled, true, false), (Cancelled, false));
        assert!(!plan_change_applies(Cancelled));
        assert!(plan_change_applies(PastDue));
        assert!(!cancellation_applies(Cancelled));
        assert!(cancellation_applies(Pending));
        for s in [Pending, Active, PastDue, Cancelled] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("paused"), None);
    }

    #[test]
    fn the_activation_event_is_a_cloudevent_with_a_stable_id() {
        let Command::Pay(p) =
            parse_json("streaming.payment.succeeded", "sub-1", payment("succeeded")).unwrap()
        else {
            unreachable!()
        };
        // 2026-01-01T00:00:01.5Z
        let micros = 1_767_225_601_500_000;
        let event: Value = serde_json::from_slice(&activation_event(&p, micros)).unwrap();
        assert_eq!(
            event,
            json!({
                "specversion": "1.0",
                "id": "activated-sub-1",
                "source": "/polyhost/user-handler",
                "type": "streaming.subscription.activated",
                "subject": "sub-1",
                "time": "2026-01-01T00:00:01.500Z",
                "datacontenttype": "application/json",
                "data": {"subscription_id": "sub-1", "user_id": "u-1", "first_payment_id": "pay-1"},
            })
        );
    }
}
