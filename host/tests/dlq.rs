//! `polyhost dlq` end to end against real Kafka, with the host as a separate process: a
//! poison event is dead-lettered, listed and shown through the CLI, the plugin is fixed by
//! a hot swap, the dead letter is replayed and processed exactly once, and a second replay
//! is refused (unless forced, which the handler's idempotence then absorbs).

mod common;
mod harness;
mod process;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use process::{Fixture, Host, test_plugin, wait_for};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sha2::{Digest, Sha256};

const POISON: &str = "test.poison";
const REASON: &str = "events of type test.poison are refused";

fn digest(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("component file")))
}

/// `polyhost dlq <args>` against the test's Kafka.
fn dlq(args: &[&str]) -> Result<Output> {
    Ok(std::process::Command::new(process::polyhost())
        .arg("dlq")
        .args(args)
        .env("KAFKA_BROKERS", common::Service::kafka().url)
        .output()?)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(out: &Output) -> Result<serde_json::Value> {
    ensure!(out.status.success(), "the command failed: {}", text(out));
    serde_json::from_slice(&out.stdout).with_context(|| text(out))
}

/// Produces the poison event: a CloudEvent of type [`POISON`], key `kp`, header `n=poison`.
async fn produce_poison(f: &Fixture, id: &str) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &f.kafka.url)
        .create()?;
    let value = serde_json::json!({
        "specversion": "1.0", "id": id, "source": "/tests/dlq", "type": POISON,
        "subject": "kp", "data": {"poison": true},
    });
    let payload = serde_json::to_vec(&value)?;
    producer
        .send(
            FutureRecord::to(&f.topic)
                .key("kp")
                .payload(&payload)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "n",
                    value: Some("poison"),
                })),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_listed_shown_replayed_once_after_a_fix_and_not_twice() -> Result<()> {
    let f = Fixture::new(2).await?;
    let n = 20;
    let (a, b) = (test_plugin("recorder"), test_plugin("recorder-b"));
    // Version `a` refuses the poison type; the fix is version `b` without that setting.
    let broken = f.recorder(&a, 10, 0).replace(
        "[plugin.config]\n",
        &format!("[plugin.config]\nfail_type = \"{POISON}\"\n"),
    );
    let manifest = f.manifest("m.toml", &broken)?;
    let host = Host::start(&manifest, &[]).await?;
    f.produce(0, n, 4).await?;
    let poison_id = format!("{}-poison", f.plugin);
    produce_poison(&f, &poison_id).await?;
    f.wait_recorded(n, Duration::from_secs(60)).await?;

    // Listed, once it is final.
    let listed = wait_for(Duration::from_secs(60), "the dead letter", || async {
        let v = json(&dlq(&["list", &f.plugin, "--json"])?)?;
        Ok((v.as_array().is_some_and(|a| !a.is_empty())).then_some(v))
    })
    .await?;
    let letters = listed.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{listed:#}");
    let table = dlq(&["list", &f.plugin])?;
    let table = text(&table);
    assert!(table.contains(&poison_id), "{table}");
    assert!(table.contains(REASON), "{table}");
    assert!(table.contains("1 dead letter(s)"), "{table}");

    // Shown in full: why, which version, where from, key, the original headers.
    let offset = letters[0]["at"]["offset"].as_i64().unwrap().to_string();
    let shown = json(&dlq(&["show", &f.plugin, &offset])?)?;
    assert_eq!(shown["reason"], REASON, "{shown:#}");
    assert_eq!(shown["plugin"], f.plugin.as_str());
    assert_eq!(shown["version"], digest(&a).as_str());
    assert_eq!(shown["original"]["topic"], f.topic.as_str());
    assert_eq!(shown["key"], "kp");
    assert_eq!(shown["headers"], serde_json::json!([["n", "poison"]]));
    assert!(shown["value"].as_str().unwrap().contains(&poison_id));
    assert_eq!(shown["replayed"], serde_json::Value::Null);
    let missing = dlq(&["show", &f.plugin, "999"])?;
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("no dead letter at"),
        "{}",
        text(&missing)
    );

    // A dry run sends nothing and records nothing.
    let dry = dlq(&["replay", &f.plugin, "--offset", &offset, "--dry-run"])?;
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(text(&dry).contains("would replay"), "{}", text(&dry));

    // Replaying before the fix would only dead-letter it again; fix it by a hot swap.
    let fixed = f.recorder(&b, 10, 0);
    std::fs::write(&manifest, fixed)?;
    let out = host.cli(&["reload", "--manifest"])?;
    assert!(text(&out).contains("swapped"), "{}", text(&out));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!f.recorded().await?.contains_key(&poison_id));

    let out = dlq(&["replay", &f.plugin, "--offset", &offset])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("replayed ->"), "{}", text(&out));
    let recorded = f.wait_recorded(n + 1, Duration::from_secs(60)).await?;
    let record = &recorded[&poison_id];
    assert!(
        record.starts_with("b@"),
        "processed by the fixed version: {record}"
    );
    // Key and headers kept, the replay marked.
    let keys = f.recorded_keys().await?;
    let kafka = &keys[&poison_id];
    assert!(kafka.starts_with("kp|n=poison,"), "{kafka}");
    assert!(
        kafka.contains(&format!(
            "polyhost.replay.of=polyhost.dlq.{}/0/{offset}",
            f.plugin
        )),
        "{kafka}"
    );

    // A second replay is refused, and nothing is handed over again.
    let again = dlq(&["replay", &f.plugin, "--offset", &offset])?;
    assert!(!again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("already replayed"),
        "{}",
        text(&again)
    );
    let all = dlq(&["replay", &f.plugin, "--all"])?;
    assert!(all.status.success(), "{}", text(&all));
    assert!(text(&all).contains("already replayed"), "{}", text(&all));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(f.count().await?, n as i64 + 1, "each event applied once");
    assert_eq!(
        f.handled().await?,
        n as i64 + 1,
        "nothing handed over twice"
    );
    let listed = json(&dlq(&["list", &f.plugin, "--json"])?)?;
    assert_eq!(
        listed[0]["replayed"]["by"]
            .as_str()
            .map(|s| s.starts_with("cli:")),
        Some(true),
        "{listed:#}"
    );

    // `--force` sends it again; the handler's idempotence applies it once still.
    let forced = json(&dlq(&[
        "replay", &f.plugin, "--offset", &offset, "--force", "--json",
    ])?)?;
    assert_eq!(forced[0]["result"], "replayed", "{forced:#}");
    assert_eq!(forced[0]["replay"]["forced"], true, "{forced:#}");
    wait_for(
        Duration::from_secs(60),
        "the forced replay handled",
        || async { Ok((f.handled().await? == n as i64 + 2).then_some(())) },
    )
    .await?;
    assert_eq!(f.count().await?, n as i64 + 1);
    drop(host);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_without_dead_letters_lists_none_and_replays_nothing() -> Result<()> {
    let name = common::unique_name("nodlq");
    let out = dlq(&["list", &name])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no dead letters"), "{}", text(&out));
    let out = dlq(&["replay", &name, "--offset", "3"])?;
    assert!(!out.status.success());
    assert!(text(&out).contains("not found"), "{}", text(&out));
    let out = dlq(&["replay", &name, "--all"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing to replay"), "{}", text(&out));
    let out = dlq(&["show", &name, "0"])?;
    assert!(!out.status.success());
    assert!(text(&out).contains("has no dead letters"), "{}", text(&out));
    Ok(())
}
