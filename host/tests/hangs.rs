//! A host call that hangs ends that call only: PostgreSQL's `pg_sleep` stands for a backend
//! that stops answering.
//!
//! - Under the plugin's `host_call_timeout_ms`, the plugin gets a transient `timeout` error
//!   and decides (here: its script expects exactly that).
//! - Past the plugin's `call_timeout_ms`, the whole call fails permanently as a timeout.
//!
//! Either way the next batch of the same plugin, and of another, runs normally. Needs
//! PostgreSQL (`cargo xtask services up`) and the test plugins (`cargo xtask plugins`).

mod harness;

use std::time::{Duration, Instant};

use harness::{batch, events, run_script, runtime, test_plugin};
use polyhost::backends::sql;
use polyhost::manifest::PluginSpec;
use polyhost::runtime::{BatchFailure, Records};
use serde_json::json;

/// The sql probe, logged in as the `DATABASE_URL` user (no table is touched).
fn probe(host_call_timeout_ms: u64, call_timeout_ms: u64) -> PluginSpec {
    let mut spec = PluginSpec::new("sql-hang", test_plugin("sql-probe"));
    spec.subscribe = vec!["t".into()];
    spec.grants.sql = Some(sql::Grant {
        role: "postgres".into(),
        password_env: None,
    });
    spec.limits.host_call_timeout_ms = host_call_timeout_ms;
    spec.limits.call_timeout_ms = call_timeout_ms;
    spec
}

#[tokio::test]
async fn a_hung_host_call_returns_a_transient_timeout_to_the_plugin() {
    let rt = runtime();
    let plugin = rt.load(&probe(300, 10_000)).await.expect("load");
    let started = Instant::now();
    run_script(
        &plugin,
        &json!({"steps": [
            {"call": "query", "sql": "SELECT pg_sleep(5)", "params": [],
             "expect": {"err": "timeout", "transient": true}},
            {"call": "query", "sql": "SELECT 1::int4 AS one", "params": [],
             "expect": {"ok": {"columns": ["one"], "rows": [[{"int32": 1}]]}}},
        ]}),
    )
    .await
    .expect("the plugin saw a timeout, then a working backend");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the hung call was not cut short: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_call_stuck_past_its_deadline_fails_alone() {
    let rt = runtime();
    let plugin = rt.load(&probe(30_000, 500)).await.expect("load");
    let healthy = rt
        .load(&{
            let mut s = PluginSpec::new("noop", test_plugin("noop-handler"));
            s.subscribe = vec!["t".into()];
            s
        })
        .await
        .expect("load noop");
    let script = json!({"steps": [
        {"call": "query", "sql": "SELECT pg_sleep(5)", "params": [], "expect": {"ok": "*"}},
    ]});
    let started = Instant::now();
    let failure = plugin
        .handle(
            &batch("t"),
            &[harness::event("hang", "probe", &script)],
            Records::default(),
        )
        .await
        .expect_err("the call must fail");
    assert_eq!(failure, BatchFailure::Timeout(500));
    assert!(failure.is_permanent());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the stuck call was not cut short: {:?}",
        started.elapsed()
    );
    run_script(
        &plugin,
        &json!({"steps": [{"call": "query", "sql": "SELECT 2::int4 AS two", "params": [],
                           "expect": {"ok": {"columns": ["two"], "rows": [[{"int32": 2}]]}}}]}),
    )
    .await
    .expect("the same plugin's next batch runs");
    let out = healthy
        .handle(&batch("t"), &events("after", "ok", 4), Records::default())
        .await
        .expect("another plugin runs");
    assert_eq!(out.len(), 4);
}
