//! A backend stopped for 10 s mid-stream (Redis, through `cargo xtask services`): the
//! plugin that needs it retries without dead-lettering anything and catches up once it is
//! back; a plugin that does not need it goes on meanwhile. Its own test binary, since it
//! takes Redis away from every test running at the time.

mod common;
mod harness;
mod process;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use process::{Fixture, Host, test_plugin};

fn services(action: &str, service: &str) -> Result<()> {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/xtask");
    let status = Command::new(&xtask)
        .args(["services", action, service])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .with_context(|| format!("running {} (built by `cargo xtask`)", xtask.display()))?;
    ensure!(
        status.success(),
        "xtask services {action} {service}: {status}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_10s_retries_without_dead_letters_and_others_go_on() -> Result<()> {
    let f = Fixture::new(3).await?;
    let other_topic = f.another_topic("other");
    let other = f.another_plugin("noop");
    let n = 3000;
    let body = format!(
        "{}\n[[plugin]]\nname = \"{other}\"\nwasm = \"{}\"\nsubscribe = [\"{other_topic}\"]\n",
        f.recorder(&test_plugin("recorder"), 50, 20),
        test_plugin("noop-handler").display()
    );
    let manifest = f.manifest("m.toml", &body)?;
    let mut host = Host::start(&manifest, &[]).await?;
    f.produce(0, n / 2, 50).await?;
    f.wait_recorded(n / 4, Duration::from_secs(60)).await?;

    services("stop", "redis")?;
    let down = Instant::now();
    let result = async {
        // While Redis is down: the rest of the stream arrives, and the other plugin (which
        // needs no Redis) processes all of its events.
        f.produce(n / 2, n / 2, 50).await?;
        process::produce(&f.kafka, &other_topic, &other, 0, 1000, 10).await?;
        process::wait_for(
            Duration::from_secs(9),
            "the other plugin's events",
            || async {
                let done = host.plugin(&other).await?["processed"]
                    .as_u64()
                    .unwrap_or(0);
                Ok((done >= 1000).then_some(()))
            },
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(10).saturating_sub(down.elapsed())).await;
        let during = host.plugin(&f.plugin).await?;
        ensure!(
            during["retried"].as_u64().unwrap_or(0) > 0,
            "retries while down: {during}"
        );
        Ok(())
    }
    .await;
    services("start", "redis")?;
    result?;

    f.wait_recorded(n, Duration::from_secs(120)).await?;
    let status = host.plugin(&f.plugin).await?;
    assert_eq!(status["dead_lettered"], 0, "no dead letters: {status}");
    assert!(host.terminate(Duration::from_secs(30))?.success());
    f.assert_exactly_once(n).await?;
    Ok(())
}
