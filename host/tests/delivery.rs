//! Delivery guarantees with the host as a separate process: a SIGTERM drains and commits,
//! a `kill -9` loses nothing after a restart, and two hosts share a plugin's partitions
//! through the consumer group, one of them dying mid-stream.

mod common;
mod harness;
mod process;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use process::{Fixture, Host, test_plugin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_processes_and_commits_what_was_fetched() -> Result<()> {
    let f = Fixture::new(3).await?;
    let n = 3000;
    f.produce(0, n, 60).await?;
    // 20 events per batch and 100 ms per batch: the stream takes seconds, so the signal
    // lands with batches in flight and records queued.
    let manifest = f.manifest("m.toml", &f.recorder(&test_plugin("recorder"), 20, 100))?;
    let mut host = Host::start(&manifest, &[]).await?;
    f.wait_recorded(300, Duration::from_secs(60)).await?;
    let status = host.terminate(Duration::from_secs(30))?;
    assert!(status.success(), "exit status {status}:\n{}", host.logs());
    assert!(host.logs().contains("drained and committed"));

    // Everything processed is committed, and everything committed was processed.
    let committed = f.committed(&format!("polyhost.{}", f.plugin))?;
    let mut processed: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o) in f.positions().await? {
        processed.entry(p).or_default().push(o);
    }
    let done: usize = processed.values().map(Vec::len).sum();
    assert!(done < n, "the signal came before the end of the stream");
    for p in 0..f.partitions {
        let mut offsets = processed.remove(&p).unwrap_or_default();
        offsets.sort_unstable();
        let upto = committed[p as usize].max(0);
        assert_eq!(
            offsets,
            (0..upto).collect::<Vec<_>>(),
            "partition {p}: processed offsets = [0, committed {upto})"
        );
    }
    assert_eq!(f.handled().await?, done as i64, "nothing was handled twice");

    // A restart goes on from the commit: the rest, once each.
    let mut host = Host::start(&manifest, &[]).await?;
    f.wait_recorded(n, Duration::from_secs(120)).await?;
    assert!(host.terminate(Duration::from_secs(30))?.success());
    f.assert_exactly_once(n).await?;
    assert_eq!(f.handled().await?, n as i64, "no event handed over twice");

    // Each event's Kafka key and headers reached the plugin (through `records`).
    let keys = f.recorded_keys().await?;
    assert_eq!(keys.len(), n);
    for i in 0..n {
        let id = format!("{}-{i}", f.plugin);
        assert_eq!(keys.get(&id), Some(&format!("k{}|n={i}", i % 60)), "{id}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_loses_nothing() -> Result<()> {
    let f = Fixture::new(3).await?;
    let n = 4000;
    f.produce(0, n, 100).await?;
    let manifest = f.manifest("m.toml", &f.recorder(&test_plugin("recorder"), 25, 60))?;
    let mut host = Host::start(&manifest, &[]).await?;
    let seen = f.wait_recorded(600, Duration::from_secs(60)).await?.len();
    host.kill9()?;
    assert!(seen < n, "killed mid-stream");

    let mut host = Host::start(&manifest, &[]).await?;
    f.wait_recorded(n, Duration::from_secs(180)).await?;
    assert!(host.terminate(Duration::from_secs(30))?.success());
    // Events after the last commit were handed over again; the plugin is idempotent, so
    // the store is as if each was processed once.
    f.assert_exactly_once(n).await?;
    assert!(f.handled().await? >= n as i64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_the_partitions_and_one_killed_loses_nothing() -> Result<()> {
    let f = Fixture::new(4).await?;
    let n = 6000;
    f.produce(0, n, 200).await?;
    let manifest = f.manifest("m.toml", &f.recorder(&test_plugin("recorder"), 20, 60))?;
    let mut first = Host::start(&manifest, &[]).await?;
    let second = Host::start(&manifest, &[]).await?;
    // Both get partitions and process some of them.
    process::wait_for(Duration::from_secs(60), "both hosts processing", || async {
        let a = first.plugin(&f.plugin).await?["processed"]
            .as_u64()
            .unwrap_or(0);
        let b = second.plugin(&f.plugin).await?["processed"]
            .as_u64()
            .unwrap_or(0);
        Ok((a > 0 && b > 0).then_some(()))
    })
    .await?;
    first.kill9()?;
    let before = second.plugin(&f.plugin).await?["processed"]
        .as_u64()
        .unwrap_or(0);
    f.wait_recorded(n, Duration::from_secs(180)).await?;
    let after = second.plugin(&f.plugin).await?["processed"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        after > before,
        "the survivor took the dead host's partitions over"
    );
    f.assert_exactly_once(n).await?;
    Ok(())
}
