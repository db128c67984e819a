//! Hot swap, with the host as a separate process driven through its CLI and admin API:
//! reloads under a steady stream lose and repeat nothing, bad versions are refused while
//! processing goes on, rollback restores the previous version, `--watch` swaps on a new
//! file but never on a partial one, and a manifest reload adds and removes plugins.

mod common;
mod harness;
mod process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, ensure};
use process::{Fixture, Host, test_plugin, wait_for};
use sha2::{Digest, Sha256};

fn digest(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("component file")))
}

/// `polyhost reload <plugin> --wasm <file>`: `Ok(stdout)` or `Err(stderr)`.
fn reload(host: &Host, plugin: &str, wasm: &Path) -> Result<Result<String, String>> {
    let out = host.cli(&["reload", plugin, "--wasm", &wasm.display().to_string()])?;
    Ok(if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}

/// Each recorded event's version tag, per partition, in offset order.
async fn versions_by_partition(f: &Fixture) -> Result<BTreeMap<i32, Vec<(i64, String)>>> {
    let mut out: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for record in f.recorded().await?.values() {
        let (version, at) = record
            .split_once('@')
            .expect("version@topic/partition/offset");
        let mut parts = at.rsplitn(3, '/');
        let offset: i64 = parts.next().unwrap().parse()?;
        let partition: i32 = parts.next().unwrap().parse()?;
        out.entry(partition)
            .or_default()
            .push((offset, version.to_string()));
    }
    for v in out.values_mut() {
        v.sort();
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_reloads_under_a_steady_stream_lose_and_repeat_nothing() -> Result<()> {
    let f = Fixture::new(3).await?;
    let n = 6000;
    let (a, b) = (test_plugin("recorder"), test_plugin("recorder-b"));
    let manifest = f.manifest("m.toml", &f.recorder(&a, 20, 40))?;
    let mut host = Host::start(&manifest, &[]).await?;
    let producing = {
        let kafka = f.kafka.clone();
        let (topic, prefix) = (f.topic.clone(), f.plugin.clone());
        tokio::spawn(async move {
            // A steady stream: 300 events every 250 ms.
            for i in 0..20 {
                process::produce(&kafka, &topic, &prefix, i * 300, 300, 90).await?;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            anyhow::Ok(())
        })
    };
    f.wait_recorded(200, Duration::from_secs(60)).await?;
    let mut expected = digest(&a);
    for i in 0..5 {
        let next = if i % 2 == 0 { &b } else { &a };
        let out = reload(&host, &f.plugin, next)?.map_err(anyhow::Error::msg)?;
        ensure!(out.contains("swapped"), "reload {i}: {out}");
        expected = digest(next);
        let before = f.recorded().await?.len();
        wait_for(Duration::from_secs(30), "events after the swap", || async {
            Ok((f.recorded().await?.len() > before + 100).then_some(()))
        })
        .await?;
    }
    producing.await??;
    f.wait_recorded(n, Duration::from_secs(120)).await?;
    let status = host.plugin(&f.plugin).await?;
    assert_eq!(status["digest"], expected.as_str(), "{status}");
    assert_eq!(status["swaps"], 5, "{status}");
    assert!(
        !host.logs().contains("partitions revoked"),
        "a swap must not rebalance the group"
    );
    assert!(host.terminate(Duration::from_secs(30))?.success());

    // Exactly once in effect, and nothing handed over twice: no gap, no repeat.
    f.assert_exactly_once(n).await?;
    assert_eq!(
        f.handled().await?,
        n as i64,
        "an event was handed over twice"
    );
    // Per partition, versions change only at batch boundaries between swaps: a run of
    // `a`, then `b`, … — at most six runs, starting with `a`, and both versions seen.
    let by_partition = versions_by_partition(&f).await?;
    let mut seen_b = false;
    for (p, records) in &by_partition {
        let mut runs: Vec<&str> = Vec::new();
        for (_, v) in records {
            if runs.last() != Some(&v.as_str()) {
                runs.push(v);
            }
        }
        assert_eq!(runs.first(), Some(&"a"), "partition {p}: {runs:?}");
        assert!(
            runs.len() <= 6,
            "partition {p}: more version changes than swaps: {runs:?}"
        );
        seen_b |= runs.contains(&"b");
    }
    assert!(seen_b, "the other build processed events");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_versions_are_refused_with_the_reason_and_processing_goes_on() -> Result<()> {
    let f = Fixture::new(2).await?;
    let n = 3000;
    let a = test_plugin("recorder");
    // Messaging granted too, so that the generator component (whose world imports the
    // messaging types) passes the import check and is refused for its exports.
    let entry = f.recorder(&a, 20, 30).replace(
        "[plugin.grants]\n",
        &format!(
            "[plugin.grants]\nmessaging = {{ publish = [\"{}\"] }}\n",
            f.topic
        ),
    );
    let manifest = f.manifest("m.toml", &entry)?;
    let mut host = Host::start(&manifest, &[]).await?;
    f.produce(0, n, 40).await?;
    f.wait_recorded(100, Duration::from_secs(60)).await?;

    let broken = f.dir.join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x0d\0\x01\0 not a component")?;
    let cases: [(&str, PathBuf, &str); 3] = [
        ("a broken file", broken, "not a valid WebAssembly component"),
        (
            "a component of the wrong world",
            harness::platform_plugin("event-generator"),
            "does not export a handler: a handler exports exactly one of `polyhost:platform/handler",
        ),
        (
            "a component importing an ungranted interface",
            test_plugin("sql-probe"),
            "not granted",
        ),
    ];
    for (what, file, reason) in &cases {
        let before = f.recorded().await?.len();
        let err = reload(&host, &f.plugin, file)?.expect_err(what);
        assert!(err.contains(reason), "{what}: {err}");
        // Processing never stopped.
        if before < n {
            wait_for(
                Duration::from_secs(30),
                "progress after a refusal",
                || async {
                    let now = f.recorded().await?.len();
                    Ok((now > before || now == n).then_some(()))
                },
            )
            .await?;
        }
    }
    f.wait_recorded(n, Duration::from_secs(120)).await?;
    let status = host.plugin(&f.plugin).await?;
    assert_eq!(status["digest"], digest(&a).as_str());
    assert_eq!(status["swaps"], 0);
    let (_, metrics) = host.get("/metrics").await?;
    assert!(
        metrics.contains(&format!(
            "polyhost_swaps_total{{plugin=\"{}\",result=\"refused\"}} 3",
            f.plugin
        )),
        "{metrics}"
    );
    assert!(host.terminate(Duration::from_secs(30))?.success());
    f.assert_exactly_once(n).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_the_previous_digest_and_behaviour() -> Result<()> {
    let f = Fixture::new(1).await?;
    let (a, b) = (test_plugin("recorder"), test_plugin("recorder-b"));
    let manifest = f.manifest("m.toml", &f.recorder(&a, 10, 0))?;
    let mut host = Host::start(&manifest, &[]).await?;

    let out = host.cli(&["rollback", &f.plugin])?;
    assert!(!out.status.success(), "no previous version yet");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no previous version"));

    reload(&host, &f.plugin, &b)?.map_err(anyhow::Error::msg)?;
    f.produce(0, 100, 5).await?;
    f.wait_recorded(100, Duration::from_secs(60)).await?;
    let out = host.cli(&["rollback", &f.plugin])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = host.plugin(&f.plugin).await?;
    assert_eq!(status["digest"], digest(&a).as_str(), "{status}");
    assert_eq!(status["previous_digest"], digest(&b).as_str(), "{status}");
    f.produce(100, 100, 5).await?;
    f.wait_recorded(200, Duration::from_secs(60)).await?;
    let versions = versions_by_partition(&f).await?;
    let tags: Vec<&str> = versions[&0].iter().map(|(_, v)| v.as_str()).collect();
    assert!(
        tags[..100].iter().all(|v| *v == "b"),
        "before the rollback: b"
    );
    assert!(
        tags[100..].iter().all(|v| *v == "a"),
        "after the rollback: a"
    );
    let status = host.cli(&["status"])?;
    assert!(status.status.success());
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        table.contains(&f.plugin) && table.contains(&digest(&a)[..12]),
        "{table}"
    );
    assert!(host.terminate(Duration::from_secs(30))?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_swaps_on_a_new_file_and_never_on_a_partial_one() -> Result<()> {
    let f = Fixture::new(1).await?;
    let (a, b) = (test_plugin("recorder"), test_plugin("recorder-b"));
    let live = f.dir.join("live.wasm");
    std::fs::copy(&a, &live)?;
    let manifest = f.manifest("m.toml", &f.recorder(&live, 10, 0))?;
    let mut host = Host::start(&manifest, &["--watch"]).await?;
    let digest_now = || async {
        Ok::<_, anyhow::Error>(
            host.plugin(&f.plugin).await?["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    assert_eq!(digest_now().await?, digest(&a));

    // Half of the new build, left there: refused, the running version stays.
    let bytes = std::fs::read(&b)?;
    std::fs::write(&live, &bytes[..bytes.len() / 2])?;
    wait_for(
        Duration::from_secs(15),
        "the partial file refused",
        || async { Ok(host.logs().contains("watch reload refused").then_some(())) },
    )
    .await?;
    assert_eq!(
        digest_now().await?,
        digest(&a),
        "a partial file must never load"
    );

    // The whole file: swapped.
    std::fs::write(&live, &bytes)?;
    wait_for(
        Duration::from_secs(15),
        "the new build swapped in",
        || async { Ok((digest_now().await? == digest(&b)).then_some(())) },
    )
    .await?;
    f.produce(0, 50, 5).await?;
    f.wait_recorded(50, Duration::from_secs(60)).await?;
    assert!(f.recorded().await?.values().all(|r| r.starts_with("b@")));
    assert!(host.terminate(Duration::from_secs(30))?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_reload_adds_and_removes_plugins_while_the_rest_flow() -> Result<()> {
    let (kept, removed, added) = (
        Fixture::new(2).await?,
        Fixture::new(1).await?,
        Fixture::new(1).await?,
    );
    let a = test_plugin("recorder");
    let n = 3000;
    let before = format!(
        "{}{}",
        kept.recorder(&a, 20, 20),
        removed.recorder(&a, 10, 0)
    );
    let manifest = kept.manifest("m.toml", &before)?;
    let mut host = Host::start(&manifest, &[]).await?;
    let producing = {
        let kafka = kept.kafka.clone();
        let (topic, prefix) = (kept.topic.clone(), kept.plugin.clone());
        tokio::spawn(async move {
            for i in 0..10 {
                process::produce(&kafka, &topic, &prefix, i * 300, 300, 40).await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            anyhow::Ok(())
        })
    };
    removed.produce(0, 20, 2).await?;
    removed.wait_recorded(20, Duration::from_secs(60)).await?;

    // A manifest whose plugins could take more instances than the pool made at start holds
    // is refused whole: nothing changes.
    let greedy = kept
        .recorder(&a, 20, 20)
        .replace("max_instances = 4", "max_instances = 100");
    std::fs::write(&manifest, format!("{greedy}{}", added.recorder(&a, 10, 0)))?;
    let out = host.cli(&["reload", "--manifest"])?;
    assert!(
        !out.status.success(),
        "a manifest over the instance pool was taken"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("may run 104 instances at once")
            && stderr.contains("over the 128 slots of the instance pool"),
        "{stderr}"
    );

    // The new manifest also changes `[connections]`, which a reload does not apply (the
    // host connects when it starts): it says so, and the plugins' changes go ahead.
    let after = format!(
        "{}{}\n[connections.kafka]\nlibrdkafka = {{ \"socket.keepalive.enable\" = \"true\" }}\n",
        kept.recorder(&a, 20, 20),
        added.recorder(&a, 10, 0)
    );
    std::fs::write(&manifest, after)?;
    let out = host.cli(&["reload", "--manifest"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let changes = String::from_utf8_lossy(&out.stdout);
    assert!(
        changes.contains(&format!("removed {}", removed.plugin)),
        "{changes}"
    );
    assert!(
        changes.contains(&format!("added {}", added.plugin)),
        "{changes}"
    );
    assert!(
        changes.contains("not applied [connections] (the host connects when it starts"),
        "{changes}"
    );

    let names: Vec<String> = host
        .plugins()
        .await?
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        names.contains(&kept.plugin) && names.contains(&added.plugin),
        "{names:?}"
    );
    assert!(!names.contains(&removed.plugin), "{names:?}");
    added.produce(0, 30, 3).await?;
    added.wait_recorded(30, Duration::from_secs(60)).await?;
    removed.produce(20, 20, 2).await?;

    producing.await??;
    kept.wait_recorded(n, Duration::from_secs(120)).await?;
    assert!(host.terminate(Duration::from_secs(30))?.success());
    kept.assert_exactly_once(n).await?;
    assert_eq!(
        kept.handled().await?,
        n as i64,
        "the kept plugin never repeated"
    );
    assert_eq!(
        removed.recorded().await?.len(),
        20,
        "a removed plugin consumes nothing"
    );
    added.assert_exactly_once(30).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_reload_that_changes_only_the_config_swaps_it_in_at_a_batch_boundary()
-> Result<()> {
    let f = Fixture::new(2).await?;
    let a = test_plugin("recorder");
    let (half, n) = (1500, 3000);
    let manifest = f.manifest("m.toml", &f.recorder(&a, 20, 20))?;
    let mut host = Host::start(&manifest, &[]).await?;
    let producing = {
        let kafka = f.kafka.clone();
        let (topic, prefix) = (f.topic.clone(), f.plugin.clone());
        tokio::spawn(async move {
            for i in 0..5 {
                process::produce(&kafka, &topic, &prefix, i * 300, 300, 40).await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            anyhow::Ok(())
        })
    };
    f.wait_recorded(200, Duration::from_secs(60)).await?;

    // The same component, one more `[plugin.config]` value (the recorder's config table
    // closes the entry): the recorder tags what it records with it.
    std::fs::write(
        &manifest,
        format!("{}tag = \"two\"\n", f.recorder(&a, 20, 20)),
    )?;
    let out = host.cli(&["reload", "--manifest"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let changes = String::from_utf8_lossy(&out.stdout);
    assert!(
        changes.contains(&format!("swapped {} (config changed)", f.plugin)),
        "{changes}"
    );
    assert!(!changes.contains("[connections]"), "{changes}");
    let status = host.plugin(&f.plugin).await?;
    assert_eq!(status["digest"], digest(&a).as_str(), "{status}");
    assert_eq!(status["previous_digest"], digest(&a).as_str(), "{status}");
    assert_eq!(status["swaps"], 1, "{status}");
    assert_eq!(status["last_change"], "config changed", "{status}");

    // The same file and the same entry again: nothing to swap.
    let out = reload(&host, &f.plugin, &a)?.map_err(anyhow::Error::msg)?;
    assert!(out.contains(r#""result": "unchanged""#), "{out}");
    assert_eq!(host.plugin(&f.plugin).await?["swaps"], 1);

    producing.await??;
    // Everything produced after the reload answered runs under the new config.
    f.produce(half, n - half, 40).await?;
    f.wait_recorded(n, Duration::from_secs(120)).await?;
    let (_, metrics) = host.get("/metrics").await?;
    for line in [
        format!(
            "polyhost_swaps_total{{plugin=\"{}\",result=\"ok\"}} 1",
            f.plugin
        ),
        format!(
            "polyhost_swap_changes_total{{plugin=\"{}\",change=\"config\"}} 1",
            f.plugin
        ),
    ] {
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    assert!(
        !metrics.contains(&format!(
            "polyhost_swap_changes_total{{plugin=\"{}\",change=\"component\"}}",
            f.plugin
        )),
        "{metrics}"
    );
    let table = host.cli(&["status"])?;
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("last swap: config changed"),
        "{}",
        String::from_utf8_lossy(&table.stdout)
    );
    assert!(
        host.logs().contains("config changed"),
        "the swap is logged with what changed"
    );
    assert!(
        !host.logs().contains("partitions revoked"),
        "a config swap must not rebalance the group"
    );
    assert!(host.terminate(Duration::from_secs(30))?.success());

    // Nothing lost, nothing repeated, nothing handed over twice.
    f.assert_exactly_once(n).await?;
    assert_eq!(
        f.handled().await?,
        n as i64,
        "an event was handed over twice"
    );
    // Per partition: the old config, then the new one from a batch boundary on, never back.
    for (p, records) in &versions_by_partition(&f).await? {
        let mut runs: Vec<&str> = Vec::new();
        for (_, v) in records {
            if runs.last() != Some(&v.as_str()) {
                runs.push(v);
            }
        }
        assert!(
            runs == ["a", "a+two"] || runs == ["a+two"],
            "partition {p}: {runs:?}"
        );
    }
    let recorded = f.recorded().await?;
    assert!(
        recorded.values().any(|r| r.starts_with("a@")),
        "the old config ran before the reload"
    );
    for id in &f.ids(n)[half..] {
        assert!(
            recorded[id].starts_with("a+two@"),
            "{id} was produced after the reload: {}",
            recorded[id]
        );
    }
    Ok(())
}

/// The recorder's `<prefix>setup` hash: the version tag of each setup, in order.
async fn setups(f: &Fixture) -> Result<Vec<String>> {
    use redis::AsyncCommands;
    let mut redis = process::redis_conn().await?;
    let by_n: BTreeMap<u32, String> = redis.hgetall(format!("{}setup", f.prefix)).await?;
    Ok(by_n.into_values().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_runs_once_per_loaded_version_before_its_events_and_a_failed_one_refuses_it()
-> Result<()> {
    let f = Fixture::new(2).await?;
    let (a, b) = (test_plugin("recorder"), test_plugin("recorder-b"));
    // The recorder's entry with a short time limit and `extra` config (its config table
    // closes the entry).
    let entry = |wasm: &Path, extra: &str| {
        f.recorder(wasm, 10, 0).replace(
            "max_instances = 4\n",
            "max_instances = 4\ncall_timeout_ms = 500\n",
        ) + extra
    };

    // A setup that fails, or runs past the plugin's time limit, keeps the host from
    // starting, and says which plugin and why.
    for (extra, reason) in [
        (
            "setup_fail = \"no stores today\"\n",
            "setup failed: no stores today",
        ),
        (
            "setup_spin = true\n",
            "setup failed: plugin call exceeded its time limit of 500 ms",
        ),
    ] {
        let manifest = f.manifest("bad.toml", &entry(&a, extra))?;
        let out = std::process::Command::new(process::polyhost())
            .args(["run", "--manifest", &manifest.display().to_string()])
            .args([
                "--admin-addr",
                &format!("127.0.0.1:{}", process::free_port()),
            ])
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{extra}: the host started:\n{stderr}"
        );
        let expected = format!("plugin `{}`: {reason}", f.plugin);
        assert!(stderr.contains(&expected), "{extra}: {expected}\n{stderr}");
    }
    assert!(setups(&f).await?.is_empty(), "no setup succeeded");

    // Set up at start, before the first event: nothing is produced yet.
    let manifest = f.manifest("m.toml", &entry(&a, ""))?;
    let mut host = Host::start(&manifest, &[]).await?;
    assert_eq!(setups(&f).await?, ["a"]);
    f.produce(0, 100, 5).await?;
    f.wait_recorded(100, Duration::from_secs(60)).await?;

    // A hot swap sets the new version up before it takes events.
    reload(&host, &f.plugin, &b)?.map_err(anyhow::Error::msg)?;
    assert_eq!(setups(&f).await?, ["a", "b"]);

    // A new version whose setup fails is refused; the running one stays and goes on.
    std::fs::write(&manifest, entry(&a, "setup_fail = \"index missing\"\n"))?;
    let out = host.cli(&["reload", "--manifest"])?;
    assert!(!out.status.success(), "a failed setup was swapped in");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "plugin `{}`: setup failed: index missing",
            f.plugin
        )),
        "{stderr}"
    );
    assert_eq!(host.plugin(&f.plugin).await?["digest"], digest(&b).as_str());
    f.produce(100, 100, 5).await?;
    f.wait_recorded(200, Duration::from_secs(60)).await?;

    // A rollback returns to a version set up already: no setup again.
    let out = host.cli(&["rollback", &f.plugin])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(setups(&f).await?, ["a", "b"]);
    assert!(host.terminate(Duration::from_secs(30))?.success());
    f.assert_exactly_once(200).await?;
    // The first 100 events before the swap, the next 100 after the refused reload.
    let mut by_version: BTreeMap<String, usize> = BTreeMap::new();
    for (_, version) in versions_by_partition(&f).await?.into_values().flatten() {
        *by_version.entry(version).or_default() += 1;
    }
    assert_eq!(
        by_version,
        BTreeMap::from([("a".to_string(), 100), ("b".to_string(), 100)])
    );
    Ok(())
}
