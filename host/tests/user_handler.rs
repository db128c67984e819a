//! The platform's user-handler (`target/plugins/user_handler.wasm`) on the real PostgreSQL,
//! run in-process: a batch takes a fixed number of round trips; a batch whose write fails
//! for one bad event falls back to one event at a time, rejecting that event alone; a
//! replay changes nothing.
//!
//! It writes the platform's own schema (`streaming`, made by `migrations/`, applied here
//! first), under entity ids unique to the run, so it leaves the platform's data alone and
//! other runs' checks unaffected; its activations go to a topic of its own. Needs
//! PostgreSQL and Kafka (`cargo xtask services up`) and the plugin
//! (`cargo xtask plugins -p user-handler`).

mod common;
mod harness;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use common::{Service, unique_name, within};
use harness::{batch, runtime};
use polyhost::backends::{messaging, sql};
use polyhost::bindings::polyhost::platform::types::{Event, Outcome};
use polyhost::manifest::{ConfigValue, Manifest, PluginSpec};
use polyhost::runtime::{LoadedPlugin, Records};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::{Value, json};
use sqlx::PgConnection;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// 2026-01-01T00:00:00Z in microseconds.
const T0: i64 = 1_767_225_600_000_000;

/// Event `n` of this run: id `<tag>-e<n>`, `n` seconds after T0.
fn ev(tag: &str, n: i64, ty: &str, subject: &str, data: Value) -> Event {
    Event {
        id: format!("{tag}-e{n}"),
        source: "/polyhost/tests".into(),
        type_: ty.into(),
        subject: Some(subject.into()),
        time: Some(T0 + n * 1_000_000),
        data: serde_json::to_vec(&data).expect("json"),
        offset: n,
    }
}

fn register(tag: &str, n: i64, user: &str) -> Event {
    ev(
        tag,
        n,
        "streaming.user.registered",
        user,
        json!({"user_id": user, "email": format!("{user}@example.com"), "display_name": "Ana",
               "country": "BR", "birth_year": 1990}),
    )
}

fn pay(tag: &str, n: i64, sub: &str, user: &str, payment: &str) -> Event {
    ev(
        tag,
        n,
        "streaming.payment.succeeded",
        sub,
        json!({"payment_id": payment, "subscription_id": sub, "user_id": user,
               "amount": "19.90", "currency": "BRL", "method": "pix"}),
    )
}

fn all_ok(outcomes: &[Outcome]) -> bool {
    outcomes.iter().all(|o| matches!(o, Outcome::Ok))
}

/// Microseconds since the Unix epoch of a stored `timestamptz`, in SQL.
macro_rules! micros {
    ($column:literal) => {
        concat!("(extract(epoch FROM ", $column, ") * 1000000)::int8")
    };
}

/// The host calls `plugin` has made so far (all backends), from the host's metrics.
fn calls_of(plugin: &str) -> f64 {
    let label = format!("plugin=\"{plugin}\"");
    polyhost::metrics::global()
        .encode()
        .lines()
        .filter(|l| l.starts_with("polyhost_backend_calls_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn load(
    name: &str,
    derived: &str,
) -> Result<(polyhost::runtime::Runtime, Arc<LoadedPlugin>)> {
    let wasm = harness::platform_plugin("user-handler");
    let rt = runtime();
    let mut spec = PluginSpec::new(name, wasm);
    spec.subscribe = vec!["streaming.users".into()];
    spec.grants.sql = Some(sql::Grant {
        role: "user_handler".into(),
        password_env: None,
    });
    spec.grants.messaging = Some(messaging::Grant {
        publish: vec![derived.to_string()],
    });
    spec.config.insert(
        "derived_topic".into(),
        ConfigValue::String(derived.to_string()),
    );
    spec.limits.host_call_timeout_ms = 15_000;
    spec.limits.call_timeout_ms = 60_000;
    let plugin = rt
        .load(&spec)
        .await
        .map_err(|e| anyhow!("loading the user-handler: {e}"))?;
    Ok((rt, plugin))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_take_fixed_round_trips_and_a_bad_event_is_rejected_alone() -> Result<()> {
    let settings = common::settings();
    let postgres = Service::postgres();
    // The platform's schema and the plugin's role (idempotent).
    let manifest = Manifest::load(&root().join("polyhost.toml"))
        .map_err(|e| anyhow!("polyhost.toml: {e:?}"))?;
    within(
        &postgres,
        "applying the migrations",
        sql::migrate(settings, &root().join("migrations"), &manifest),
    )
    .await?;
    let derived = unique_name("derived");
    let admin: AdminClient<DefaultClientContext> = settings.kafka.client_config().create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    admin
        .create_topics(
            &[NewTopic::new(&derived, 1, TopicReplication::Fixed(1))],
            &opts,
        )
        .await?;
    let name = "user-handler-batches";
    let (_rt, plugin) = load(name, &derived).await?;

    // Ids no other run uses: every entity of this run carries the tag.
    let tag = format!("t{}", &unique_name("u")[16..28]);
    let (u1, u2, s1) = (
        format!("u-{tag}-1"),
        format!("u-{tag}-2"),
        format!("sub-{tag}-1"),
    );
    let p1 = format!("pay-{tag}-1");

    // 1. A user, a subscription, its first payment, in one batch: the fast path.
    let first = vec![
        register(&tag, 1, &u1),
        ev(
            &tag,
            2,
            "streaming.subscription.started",
            &s1,
            json!({"subscription_id": s1, "user_id": u1, "plan": "basic", "price": "19.90",
                   "currency": "BRL", "period": "monthly"}),
        ),
        pay(&tag, 3, &s1, &u1, &p1),
        ev(
            &tag,
            4,
            "streaming.user.profile_updated",
            &u1,
            json!({"user_id": u1, "changes": {"display_name": "Bia"}}),
        ),
    ];
    let before = calls_of(name);
    let outcomes = plugin
        .handle(&batch("streaming.users"), &first, Records::default())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    assert!(all_ok(&outcomes), "{outcomes:?}");
    let calls = calls_of(name) - before;
    // begin, load, write, publish the activation, commit.
    assert_eq!(calls, 5.0, "round trips of a batch of 4");

    // 2. A batch with an event the plan cannot see is bad: another event reusing the
    // payment id (the write statement fails on payments_pkey). It is applied one event
    // at a time: that event alone is rejected, the others apply, the unknown user waits.
    let second = vec![
        register(&tag, 5, &u2),
        pay(&tag, 6, &s1, &u1, &p1),
        ev(
            &tag,
            7,
            "streaming.user.profile_updated",
            &u2,
            json!({"user_id": u2, "changes": {"country": "PT"}}),
        ),
        ev(
            &tag,
            8,
            "streaming.user.preferences_updated",
            &format!("u-{tag}-9"),
            json!({"user_id": format!("u-{tag}-9"), "language": "en", "subtitles": true,
                   "autoplay": false, "maturity_limit": "16", "favourite_genres": []}),
        ),
    ];
    let outcomes = plugin
        .handle(&batch("streaming.users"), &second, Records::default())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    assert!(all_ok(&outcomes[..1]), "{outcomes:?}");
    assert!(
        matches!(&outcomes[1], Outcome::Reject(r) if r.contains("payments_pkey") || r.contains("Conflict")),
        "{outcomes:?}"
    );
    assert!(all_ok(&outcomes[2..3]), "{outcomes:?}");
    assert!(
        matches!(&outcomes[3], Outcome::Retry(r) if r.contains("not stored yet")),
        "{outcomes:?}"
    );

    let mut db = common::postgres().await?;
    let read = async |db: &mut PgConnection| -> Result<Value> {
        let (v,): (Value,) = sqlx::query_as(concat!(
            "SELECT jsonb_build_object(",
            "'users', (SELECT jsonb_agg(jsonb_build_array(user_id, display_name, country::text, ",
            micros!("updated_at"),
            ") ORDER BY user_id) FROM streaming.users WHERE user_id LIKE $1), ",
            "'subs', (SELECT jsonb_agg(jsonb_build_array(state, first_payment_id, ",
            micros!("activated_at"),
            ", ",
            micros!("updated_at"),
            ")) FROM streaming.subscriptions WHERE subscription_id LIKE $2), ",
            "'payments', (SELECT count(*) FROM streaming.payments WHERE payment_id LIKE $3), ",
            "'ledger', (SELECT jsonb_agg(event_id ORDER BY event_id) ",
            "FROM streaming.processed_events WHERE event_id LIKE $4))"
        ))
        .bind(format!("u-{tag}-%"))
        .bind(format!("sub-{tag}-%"))
        .bind(format!("pay-{tag}-%"))
        .bind(format!("{tag}-%"))
        .fetch_one(db)
        .await?;
        Ok(v)
    };
    let stored = read(&mut db).await?;
    assert_eq!(
        stored,
        json!({
            "users": [[u1, "Bia", "BR", T0 + 4_000_000], [u2, "Ana", "PT", T0 + 7_000_000]],
            "subs": [["active", p1, T0 + 3_000_000, T0 + 3_000_000]],
            "payments": 1,
            "ledger": [format!("{tag}-e1"), format!("{tag}-e2"), format!("{tag}-e3"),
                       format!("{tag}-e4"), format!("{tag}-e5"), format!("{tag}-e7")],
        })
    );

    // 3. Both batches again: the applied events change nothing, the rejected one is
    // rejected again, the waiting one still waits.
    let mut again = first.clone();
    again.extend(second.clone());
    let outcomes = plugin
        .handle(&batch("streaming.users"), &again, Records::default())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    assert!(all_ok(&outcomes[..5]), "{outcomes:?}");
    assert!(matches!(&outcomes[5], Outcome::Reject(_)), "{outcomes:?}");
    assert!(all_ok(&outcomes[6..7]), "{outcomes:?}");
    assert!(matches!(&outcomes[7], Outcome::Retry(_)), "{outcomes:?}");
    assert_eq!(read(&mut db).await?, stored, "a replay changed the store");

    let _ = admin.delete_topics(&[&derived], &opts).await;
    Ok(())
}
