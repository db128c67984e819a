//! The end-to-end proof: the whole platform, run by the `polyhost` binary against the real
//! services, every store checked against expectations computed from the events read back
//! from Kafka; then every consumer group reset to the earliest offset, everything
//! replayed, and every store checked again — exactly as before.
//!
//! A second check runs the generator with two different seeds, one after the other, over
//! the same stores: the second run's entities are its own (ids carry the seed), so nothing
//! is dead-lettered and every store holds both runs.
//!
//! Both own the platform's state: they recreate the `streaming.*` topics, delete the
//! handlers' consumer groups and dead-letter topics, and empty each store's platform data
//! (each checker's `reset`), so they run one at a time. Run by `cargo xtask test` after the
//! `polyhost` binary and the plugins are built (`POLYHOST_BIN` overrides the binary's
//! path).

#[path = "platform/audit.rs"]
mod audit;
#[path = "platform/catalog.rs"]
mod catalog;
#[path = "platform/events.rs"]
mod events;
#[path = "platform/harness.rs"]
mod harness;
#[path = "platform/ranking.rs"]
mod ranking;
#[path = "platform/users.rs"]
mod users;

use std::time::Instant;

use anyhow::{Context as _, Result, ensure};
use events::Urls;
use harness::*;

/// The tests own the platform's topics and stores: one at a time.
static PLATFORM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_stream_leaves_every_store_right_and_a_replay_changes_nothing() -> Result<()> {
    let _platform = PLATFORM.lock().await;
    let urls = Urls::from_env();
    ensure!(
        polyhost().exists(),
        "{} is missing: `cargo build -p polyhost` (cargo xtask test does)",
        polyhost().display()
    );
    let dir = std::env::temp_dir().join(format!("polyhost-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (manifest, handlers) = manifest(&dir)?;

    // A clean platform.
    reset_platform(&urls, &handlers).await?;

    // The stream, then the platform until every group has caught up.
    let generated = Instant::now();
    let out = run(&[
        "generate",
        "--manifest",
        "polyhost.toml",
        "--count",
        &event_count().to_string(),
        "--seed",
        &SEED.to_string(),
        "--rate",
        "0",
    ])?;
    eprintln!(
        "{} in {:.1} s",
        out.trim(),
        generated.elapsed().as_secs_f64()
    );
    let first = pass("first pass", &urls, &manifest, &handlers, &dir).await?;
    let generated_events = first
        .iter()
        .filter(|e| e.topic != "streaming.derived")
        .count();
    assert_eq!(
        generated_events as u64,
        event_count(),
        "events on the platform's input topics"
    );
    check_stores(&first, &urls)
        .await
        .context("after the first pass")?;

    // A full replay: every group back to the earliest offset.
    rewind(&urls, &handlers)?;
    let second = pass("replay", &urls, &manifest, &handlers, &dir).await?;
    check_stores(&second, &urls)
        .await
        .context("after the replay")?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Generates `count` events seeded `seed` (as fast as Kafka takes them).
fn generate(seed: u64, count: u64) -> Result<()> {
    let generated = Instant::now();
    let out = run(&[
        "generate",
        "--manifest",
        "polyhost.toml",
        "--count",
        &count.to_string(),
        "--seed",
        &seed.to_string(),
        "--rate",
        "0",
    ])?;
    eprintln!(
        "seed {seed}: {} in {:.1} s",
        out.trim(),
        generated.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_seeds_coexist_in_one_set_of_stores_without_dead_letters() -> Result<()> {
    let _platform = PLATFORM.lock().await;
    let urls = Urls::from_env();
    ensure!(
        polyhost().exists(),
        "{} is missing: `cargo build -p polyhost` (cargo xtask test does)",
        polyhost().display()
    );
    let count = seed_event_count();
    let dir = std::env::temp_dir().join(format!("polyhost-e2e-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (manifest, handlers) = manifest(&dir)?;
    reset_platform(&urls, &handlers).await?;

    // The first run, applied.
    generate(SEED, count)?;
    let first = pass("seed one", &urls, &manifest, &handlers, &dir).await?;
    check_stores(&first, &urls)
        .await
        .context("after the first seed")?;

    // A second run with another seed over the same stores: `pass` fails on any dead letter.
    generate(OTHER_SEED, count)?;
    let both = pass("seed two", &urls, &manifest, &handlers, &dir).await?;
    let generated = both
        .iter()
        .filter(|e| e.topic != "streaming.derived")
        .count();
    assert_eq!(generated as u64, 2 * count, "events of the two runs");
    let seeds: std::collections::BTreeSet<_> = both
        .iter()
        .filter(|e| e.topic != "streaming.derived")
        .filter_map(|e| e.id.split('-').nth(1))
        .collect();
    assert_eq!(
        seeds,
        [SEED.to_string(), OTHER_SEED.to_string()]
            .iter()
            .map(String::as_str)
            .collect(),
        "event ids of both seeds"
    );
    check_stores(&both, &urls)
        .await
        .context("after the second seed")?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
