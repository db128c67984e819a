//! The console in a real headless browser: Debian's `chromium` driven through
//! `chromium-driver` (WebDriver) with `fantoccini`, against the host as a separate process
//! running five test plugins. The page loads with no console errors, the graph shows the
//! five plugins, live numbers change while events flow, the latency chart beside the
//! throughput chart draws p50 and p99 lines per plugin, Reload swaps a plugin, a poison
//! event shows in the dead-letter view, and Replay (after the plugin is fixed by a hot swap)
//! brings it back with nothing lost or repeated; a second Replay is refused.
//!
//! Screenshots are saved under `target/console-screenshots/`. When `chromedriver` is
//! missing the test installs `chromium` and `chromium-driver` with apt-get (as root), and
//! fails saying so when it cannot.

mod common;
mod harness;
mod process;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use process::{Fixture, Host, test_plugin, wait_for};
use serde_json::{Value, json};

const POISON: &str = "test.poison";

/// `chromedriver`, installed from Debian's packages if it is not there.
fn chromedriver() -> Result<PathBuf> {
    let found = |p: &str| Path::new(p).is_file().then(|| PathBuf::from(p));
    if let Some(p) = found("/usr/bin/chromedriver") {
        return Ok(p);
    }
    eprintln!("chromedriver is missing: installing chromium and chromium-driver with apt-get");
    // A fresh machine's package lists may be missing or stale: update them first.
    let status = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && apt-get install -y -qq chromium chromium-driver",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!(
            "cannot install chromium and chromium-driver (apt-get {status}): install them as root"
        );
    }
    found("/usr/bin/chromedriver").context("chromium-driver installed no /usr/bin/chromedriver")
}

/// A running chromedriver, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn driver() -> Result<Driver> {
    let port = process::free_port();
    let child = Command::new(chromedriver()?)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting chromedriver")?;
    let d = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_for(Duration::from_secs(30), "chromedriver", || async {
        Ok(reqwest::get(format!("{}/status", d.url))
            .await
            .is_ok_and(|r| r.status().is_success())
            .then_some(()))
    })
    .await?;
    Ok(d)
}

/// A headless chromium session with a fresh profile, its console log kept.
async fn browser(driver: &Driver, profile: &Path) -> Result<Client> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1800",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .context("opening a chromium session")?;
    Ok(client)
}

/// The browser console's entries since the last call (chromedriver's log endpoint).
async fn console_log(driver: &Driver, client: &Client) -> Result<Vec<Value>> {
    let session = client.session_id().await?.context("no session id")?;
    let r = reqwest::Client::new()
        .post(format!("{}/session/{session}/se/log", driver.url))
        .json(&json!({ "type": "browser" }))
        .send()
        .await?;
    let v: Value = r.json().await?;
    Ok(v["value"].as_array().cloned().unwrap_or_default())
}

fn errors(log: &[Value]) -> Vec<String> {
    log.iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn js(client: &Client, script: &str) -> Result<Value> {
    Ok(client.execute(script, vec![]).await?)
}

async fn text_of(client: &Client, selector: &str) -> Result<String> {
    let v = client
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            vec![json!(selector)],
        )
        .await?;
    Ok(v.as_str().unwrap_or_default().to_string())
}

async fn screenshot(client: &Client, name: &str) -> Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{name}.png")), client.screenshot().await?)?;
    Ok(())
}

/// Waits until `selector`'s text satisfies `ok`, returning it.
async fn wait_text(
    client: &Client,
    selector: &str,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> Result<String> {
    wait_for(Duration::from_secs(60), what, || async {
        let t = text_of(client, selector).await?;
        Ok(ok(&t).then_some(t))
    })
    .await
}

/// Five handlers on the fixture's topic: the recorder (refusing the poison type, loaded
/// from a copy the test can overwrite) and four no-op handlers.
fn manifest(f: &Fixture, rec_wasm: &Path, poison_refused: bool) -> String {
    let mut m = f.recorder(rec_wasm, 10, 0);
    if poison_refused {
        m = m.replace(
            "[plugin.config]\n",
            &format!("[plugin.config]\nfail_type = \"{POISON}\"\n"),
        );
    }
    let noop = test_plugin("noop-handler");
    for i in 1..=4 {
        m.push_str(&format!(
            "\n[[plugin]]\nname = \"{}-n{i}\"\nwasm = \"{}\"\nsubscribe = [\"{}\"]\n",
            f.plugin,
            noop.display(),
            f.topic
        ));
    }
    m
}

async fn produce_poison(f: &Fixture, id: &str) -> Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &f.kafka.url)
        .create()?;
    let value = json!({
        "specversion": "1.0", "id": id, "source": "/tests/browser", "type": POISON, "data": {},
    });
    let payload = serde_json::to_vec(&value)?;
    producer
        .send(
            FutureRecord::to(&f.topic).key("kp").payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser_shows_the_platform_swaps_and_replays() -> Result<()> {
    let driver = driver().await?;
    let f = Fixture::new(2).await?;
    let rec = f.dir.join("rec.wasm");
    std::fs::copy(test_plugin("recorder"), &rec)?;
    let manifest_path = f.manifest("m.toml", &manifest(&f, &rec, true))?;
    let host = Host::start(&manifest_path, &[]).await?;
    let profile = f.dir.join("chromium-profile");
    let client = browser(&driver, &profile).await?;
    let outcome = scenario(&driver, &client, &f, &host, &rec, &manifest_path).await;
    if outcome.is_err() {
        let _ = screenshot(&client, "failure").await;
        eprintln!("host log:\n{}", host.logs());
    }
    client.close().await?;
    outcome
}

async fn scenario(
    driver: &Driver,
    client: &Client,
    f: &Fixture,
    host: &Host,
    rec: &Path,
    manifest_path: &Path,
) -> Result<()> {
    client.goto(&format!("http://{}/", host.admin)).await?;
    wait_text(client, "#live", "the live stream", |t| t == "live").await?;

    // The graph: five plugin nodes, by name.
    let nodes = js(
        client,
        "return [...document.querySelectorAll('#graph g.node.plugin')].map(g => g.dataset.node)",
    )
    .await?;
    let mut names: Vec<String> = serde_json::from_value(nodes)?;
    names.sort();
    let mut expected: Vec<String> = (1..=4).map(|i| format!("{}-n{i}", f.plugin)).collect();
    expected.push(f.plugin.clone());
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(
        text_of(client, "#graph g.node.topic text").await?,
        f.topic,
        "the topic node"
    );
    assert_eq!(text_of(client, "#graph g.node.store text").await?, "Redis");
    let log = console_log(driver, client).await?;
    assert!(
        errors(&log).is_empty(),
        "console errors on load: {:?}",
        errors(&log)
    );
    screenshot(client, "1-loaded").await?;

    // Live numbers: the recorder's done count in the table follows the events.
    let done = format!("#plugins tr[data-plugin=\"{}\"] [data-cell=done]", f.plugin);
    let before = text_of(client, &done).await?;
    let producing = {
        let (kafka, topic, prefix) = (f.kafka.clone(), f.topic.clone(), f.plugin.clone());
        tokio::spawn(async move {
            for i in 0..10 {
                process::produce(&kafka, &topic, &prefix, i * 50, 50, 8).await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            anyhow::Ok(())
        })
    };
    let stat = format!("[data-stat=\"{}\"]", f.plugin);
    wait_text(client, &stat, "a positive rate on the graph", |t| {
        t.split('/')
            .next()
            .and_then(|r| r.parse::<f64>().ok())
            .is_some_and(|r| r > 0.0)
    })
    .await?;
    wait_text(client, &done, "the done count to change", |t| t != before).await?;
    screenshot(client, "2-events-flowing").await?;

    // The latency chart, beside the throughput chart: per plugin a p99 line and a p50 line
    // (never above it) once events have become final in consecutive seconds.
    assert!(
        text_of(client, "#latency-section h2")
            .await?
            .starts_with("Latency"),
        "the latency chart's title"
    );
    let lines = wait_for(
        Duration::from_secs(60),
        "latency lines with points",
        || async {
            let v = client
                .execute(
                    r##"
                const points = (q) => [...document.querySelectorAll(
                    `#latency-chart polyline[data-series="${CSS.escape(arguments[0])}"][data-quantile="${q}"]`)]
                  .flatMap((l) => l.getAttribute("points").trim().split(" ").map((p) => p.split(",").map(Number)));
                const p50 = points("p50"), p99 = points("p99");
                const y99 = new Map(p99.map(([x, y]) => [x, y]));
                return {
                  p50: p50.length,
                  p99: p99.length,
                  // SVG y grows downwards: a p50 above its p99 has a smaller y.
                  p50_above_p99: p50.filter(([x, y]) => y99.has(x) && y < y99.get(x) - 0.5).length,
                  throughput: document.querySelectorAll("#chart polyline[data-series]").length,
                  scale: document.querySelector("#latency-chart text").textContent,
                  legend: document.querySelector("#latency-legend").textContent,
                };
            "##,
                    vec![json!(f.plugin)],
                )
                .await?;
            Ok((v["p99"].as_u64() >= Some(2) && v["p50"].as_u64() >= Some(2)).then_some(v))
        },
    )
    .await?;
    assert_eq!(lines["p50_above_p99"], 0, "{lines}");
    assert_eq!(
        lines["throughput"], 5,
        "one throughput line per plugin: {lines}"
    );
    let scale = lines["scale"].as_str().unwrap_or_default();
    assert!(
        scale.ends_with(" ms") || scale.ends_with(" s"),
        "the latency scale in time: {lines}"
    );
    assert!(
        lines["legend"]
            .as_str()
            .is_some_and(|l| l.contains(&f.plugin) && l.contains("p99")),
        "{lines}"
    );
    screenshot(client, "2-charts").await?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    let charts = client
        .find(Locator::Css(".charts"))
        .await?
        .screenshot()
        .await?;
    std::fs::write(dir.join("2-charts-detail.png"), charts)?;
    producing.await??;
    let n = 500;
    f.wait_recorded(n, Duration::from_secs(60)).await?;

    // Reload swaps the recorder to the file now at its path (the other build).
    let digest_cell = format!(
        "#plugins tr[data-plugin=\"{}\"] [data-cell=digest]",
        f.plugin
    );
    let old_digest = text_of(client, &digest_cell).await?;
    std::fs::copy(test_plugin("recorder-b"), rec)?;
    client
        .find(Locator::Css(&format!(
            "#plugins tr[data-plugin=\"{}\"] button[data-action=reload]",
            f.plugin
        )))
        .await?
        .click()
        .await?;
    wait_text(client, "#message", "the swap's message", |t| {
        t.contains("swapped")
    })
    .await?;
    let swaps = format!(
        "#plugins tr[data-plugin=\"{}\"] [data-cell=swaps]",
        f.plugin
    );
    wait_text(client, &swaps, "one swap", |t| t == "1").await?;
    let new_digest = text_of(client, &digest_cell).await?;
    ensure!(new_digest != old_digest, "{old_digest} -> {new_digest}");
    let previous = format!(
        "#plugins tr[data-plugin=\"{}\"] [data-cell=previous_digest]",
        f.plugin
    );
    assert_eq!(text_of(client, &previous).await?, old_digest);

    // A poison event shows in the dead-letter view.
    let poison_id = format!("{}-poison", f.plugin);
    produce_poison(f, &poison_id).await?;
    client
        .find(Locator::Css("#dlq-plugin"))
        .await?
        .select_by_value(&f.plugin)
        .await?;
    let row = format!("#dlq tr[data-event=\"{poison_id}\"]");
    wait_for(
        Duration::from_secs(60),
        "the poison in the view",
        || async {
            client
                .find(Locator::Css("#dlq-form button[type=submit]"))
                .await?
                .click()
                .await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok((!text_of(client, &row).await?.is_empty()).then_some(()))
        },
    )
    .await?;
    let row_text = text_of(client, &row).await?;
    assert!(
        row_text.contains("events of type test.poison are refused"),
        "{row_text}"
    );
    client
        .find(Locator::Css(&format!("{row} button[data-action=inspect]")))
        .await?
        .click()
        .await?;
    let detail = text_of(client, "#dlq-detail").await?;
    assert!(
        detail.contains(&f.topic) && detail.contains("\"key\": \"kp\""),
        "{detail}"
    );
    screenshot(client, "3-dead-letter").await?;

    // Fix by a hot swap (the manifest without the refusal, another build), then Replay.
    let fixed = f.dir.join("rec-fixed.wasm");
    std::fs::copy(test_plugin("recorder"), &fixed)?;
    std::fs::write(manifest_path, manifest(f, &fixed, false))?;
    client
        .find(Locator::Css("#reload-manifest"))
        .await?
        .click()
        .await?;
    wait_text(client, "#message", "the manifest reload", |t| {
        t.contains(&format!("swapped {}", f.plugin))
    })
    .await?;
    ensure!(!f.recorded().await?.contains_key(&poison_id));
    client
        .find(Locator::Css(&format!("{row} button[data-action=replay]")))
        .await?
        .click()
        .await?;
    wait_text(client, "#message", "the replay", |t| t.contains("replayed")).await?;
    wait_for(Duration::from_secs(60), "the replayed event", || async {
        Ok(f.recorded().await?.contains_key(&poison_id).then_some(()))
    })
    .await?;
    wait_text(
        client,
        &format!("{row} [data-cell=replayed]"),
        "the row marked replayed",
        |t| t.starts_with("yes"),
    )
    .await?;
    screenshot(client, "4-replayed").await?;

    // Nothing lost or repeated: every event once, the poison once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(f.count().await?, n as i64 + 1);
    assert_eq!(f.handled().await?, n as i64 + 1);
    let log = console_log(driver, client).await?;
    assert!(
        errors(&log).is_empty(),
        "console errors: {:?}",
        errors(&log)
    );

    // A second Replay is refused, and says why.
    client
        .find(Locator::Css(&format!("{row} button[data-action=replay]")))
        .await?
        .click()
        .await?;
    wait_text(client, "#message", "the refusal", |t| {
        t.contains("already replayed")
    })
    .await?;
    screenshot(client, "5-replay-refused").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        f.handled().await?,
        n as i64 + 1,
        "nothing handed over again"
    );
    // The only console error now is the refused request itself (409).
    let log = console_log(driver, client).await?;
    for e in errors(&log) {
        assert!(e.contains("/replay") && e.contains("409"), "{e}");
    }
    Ok(())
}
