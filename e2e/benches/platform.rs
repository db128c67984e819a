//! The platform end to end: all five plugins run by the `polyhost` binary against the real
//! services, measured two ways in one run.
//!
//! `cargo bench -p polyhost-e2e --bench platform` (after `cargo xtask plugins` and a build
//! of `polyhost`; `POLYHOST_BIN` picks the binary, by default `target/release/polyhost`
//! when it exists, else `target/debug/polyhost`). It owns the platform's state, as the
//! end-to-end test does: never run the two, or the demo, at the same time.
//!
//! 1. **Paced**: the host's own generator at `POLYHOST_BENCH_RATE` events/s (default
//!    1 000, five times the demo's rate) for `POLYHOST_BENCH_EVENTS` events (default
//!    20 000); per plugin, the p50/p99 latency from produce (the record's Kafka timestamp)
//!    to the event's final outcome, from the host's `polyhost_event_latency_seconds`
//!    histogram, and the part of it before the event's first hand-over to the plugin
//!    (`polyhost_event_wait_seconds`: the broker, the consumer, the partition's queue, the
//!    batch window, the wait for an instance).
//! 2. **Sustained**: the same number of events produced first, then the host started:
//!    events/s until every group has caught up, overall and per plugin.
//!
//! In both, per plugin, the backend round trips per event: the host's
//! `polyhost_backend_calls_total{plugin}` (every host call into a backend the plugin made)
//! over the events it settled. Each figure is printed with its ratio to the target of the
//! platform (see [`Targets`]); a ratio ≥ 1.00 meets it. `POLYHOST_BENCH_ONLY=paced` or
//! `=sustained` runs one of the two. `POLYHOST_BENCH_METRICS=<dir>` keeps each phase's
//! last scrape of the host's metrics there (`paced.prom`, `sustained.prom`), and its log.
//!
//! Before the measured runs, a paced run of `POLYHOST_BENCH_WARMUP` events (10 000; 0
//! skips it) is not counted: the first run after the services start is slow for every
//! plugin (the JVMs of Kafka and Elasticsearch compiling, caches cold). Its table is
//! printed under `== warm-up`, the measured ones under `== measured`, with
//! `POLYHOST_BENCH_PAUSE_S` seconds (30) between runs.
//!
//! `POLYHOST_BENCH_AGAINST=<another polyhost binary>` compares two builds side by side:
//! after the warm-up (a run of this one), `POLYHOST_BENCH_ROUNDS` rounds (3) of a run of
//! that binary (A) then one of this one (B), then per figure each side's median and range
//! and the ratio of the medians. This machine's figures move more from one day
//! to the next than most changes move them: only runs side by side compare.

#[allow(dead_code)]
#[path = "../tests/platform/audit.rs"]
mod audit;
#[allow(dead_code)]
#[path = "../tests/platform/catalog.rs"]
mod catalog;
#[allow(dead_code)]
#[path = "../tests/platform/events.rs"]
mod events;
#[allow(dead_code)]
#[path = "../tests/platform/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../tests/platform/ranking.rs"]
mod ranking;
#[allow(dead_code)]
#[path = "../tests/platform/users.rs"]
mod users;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use events::Urls;
use harness::{Handler, Host, lag, manifest_with, reset_platform, run};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    if std::env::var_os("POLYHOST_BIN").is_none() {
        let release = harness::root().join("target/release/polyhost");
        if release.is_file() {
            // SAFETY: set before any thread is started.
            unsafe { std::env::set_var("POLYHOST_BIN", release) };
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bench())
}

async fn bench() -> Result<()> {
    let n = env("POLYHOST_BENCH_EVENTS", 20_000);
    let rate = env("POLYHOST_BENCH_RATE", 1_000);
    let urls = Urls::from_env();
    ensure!(
        harness::polyhost().exists(),
        "{} is missing: build polyhost first",
        harness::polyhost().display()
    );
    let dir = std::env::temp_dir().join(format!("polyhost-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "platform benchmark: {n} events, seed {}, host {}\n",
        harness::SEED,
        harness::polyhost().display()
    );

    let only = std::env::var("POLYHOST_BENCH_ONLY").unwrap_or_default();
    let one_run = async || -> Result<Figures> {
        let mut figures = Figures::new();
        if only != "sustained" {
            figures.extend(paced(&urls, &dir, n, rate).await?);
        }
        if only != "paced" {
            figures.extend(sustained(&urls, &dir, n).await?);
        }
        Ok(figures)
    };
    let pause = Duration::from_secs(env("POLYHOST_BENCH_PAUSE_S", 30));
    // The first run after the services start is slow for every plugin (cold JVMs and
    // caches): a paced run of this binary first, not counted (its figures printed, so that
    // the cold start stays in sight), then a pause, as between any two runs.
    let warm_up = env("POLYHOST_BENCH_WARMUP", WARM_UP_EVENTS);
    if warm_up > 0 {
        println!(
            "== warm-up, not counted: {warm_up} events paced, {}\n",
            harness::polyhost().display()
        );
        paced(&urls, &dir, warm_up, rate).await?;
        tokio::time::sleep(pause).await;
        println!("== measured\n");
    }
    match std::env::var_os("POLYHOST_BENCH_AGAINST") {
        None => {
            one_run().await?;
        }
        Some(against) => {
            let rounds = env("POLYHOST_BENCH_ROUNDS", 3).max(1);
            let binaries = [PathBuf::from(against), harness::polyhost()];
            let mut runs: [Vec<Figures>; 2] = [Vec::new(), Vec::new()];
            for round in 1..=rounds {
                for (side, binary) in binaries.iter().enumerate() {
                    // Runs back to back disturb each other (see the README).
                    if round > 1 || side > 0 {
                        tokio::time::sleep(pause).await;
                    }
                    println!("== round {round} of {rounds}: {}\n", binary.display());
                    harness::use_binary(binary.clone());
                    runs[side].push(one_run().await?);
                }
            }
            print_side_by_side(&binaries, &runs);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The events of the uncounted paced run before the measured ones
/// (`POLYHOST_BENCH_WARMUP`; 0 skips it).
const WARM_UP_EVENTS: u64 = 10_000;

/// One run's figures, by name (`paced p99 <plugin> (ms)`, `sustained <...> (events/s)`).
type Figures = BTreeMap<String, f64>;

/// Prints, per figure, the median (and range) of each binary's runs and the ratio of the
/// medians, oriented so that above 1.00x means the second binary did better.
fn print_side_by_side(binaries: &[PathBuf; 2], runs: &[Vec<Figures>; 2]) {
    let median = |values: &mut Vec<f64>| -> f64 {
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        if values.len() % 2 == 1 {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        }
    };
    println!(
        "side by side, {} runs each, alternating: A = {}, B = {}",
        runs[0].len(),
        binaries[0].display(),
        binaries[1].display()
    );
    println!(
        "  {:<42} {:>22} {:>22} {:>8}",
        "figure", "A median (range)", "B median (range)", "B vs A"
    );
    let names: Vec<&String> = runs[0]
        .first()
        .map(|f| f.keys().collect())
        .unwrap_or_default();
    for name in names {
        let side = |i: usize| -> (f64, f64, f64) {
            let mut values: Vec<f64> = runs[i]
                .iter()
                .filter_map(|f| f.get(name).copied())
                .collect();
            let (lo, hi) = values
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(*v), hi.max(*v))
                });
            (median(&mut values), lo, hi)
        };
        let (a, b) = (side(0), side(1));
        // p99: lower is better; events/s: higher is better.
        let ratio = if name.starts_with("paced") {
            a.0 / b.0
        } else {
            b.0 / a.0
        };
        let shown = |(m, lo, hi): (f64, f64, f64)| format!("{m:.0} ({lo:.0}–{hi:.0})");
        println!(
            "  {:<42} {:>22} {:>22} {:>7.2}x",
            name,
            shown(a),
            shown(b),
            ratio
        );
    }
    println!("  (B vs A over 1.00x: B did better, a lower p99 or more events/s)");
}

/// The host's own generator at `rate` events/s for `n` events: latency per plugin.
async fn paced(urls: &Urls, dir: &std::path::Path, n: u64, rate: u64) -> Result<Figures> {
    let (manifest, handlers) = manifest_with(dir, Some((rate, n)))?;
    reset_platform(urls, &handlers).await?;
    let mut host = Host::start(&manifest, dir.join("paced.log"))?;
    let started = Instant::now();
    // The generator's own pace: from the first scrape that sees an event to the one that
    // sees them all, counting the events between (the host's start is not the generator's).
    let mut first: Option<(Instant, f64)> = None;
    // The host's metrics [`EARLY`] into the generation: the slow events of a run's start
    // (its stores and indices made afresh) are then told from the rest's.
    let mut early: Option<String> = None;
    let generating_rate = loop {
        host.alive()?;
        let metrics = scrape(&host.admin).unwrap_or_default();
        let count = generated(&metrics);
        let now = Instant::now();
        if count > 0.0 && first.is_none() {
            first = Some((now, count));
        }
        if early.is_none() && first.is_some_and(|(at, _)| now.duration_since(at) >= EARLY) {
            early = Some(metrics.clone());
        }
        if count >= n as f64 {
            let (since, before) = first.unwrap_or((started, 0.0));
            break (count - before) / now.duration_since(since).as_secs_f64().max(1e-3);
        }
        ensure!(
            started.elapsed() < Duration::from_secs(n / rate.max(1) * 3 + 120),
            "the generator did not publish {n} events in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, drained) = caught_up(urls, &handlers, &manifest, &mut host).await?;
    let metrics = scrape(&host.admin)?;
    host.stop()?;
    keep_metrics("paced", &metrics, &dir.join("paced.log"))?;
    println!(
        "paced: {n} events generated at {:.0} events/s (asked {rate}); every group caught up {:.1} s after the last",
        generating_rate,
        drained.as_secs_f64()
    );
    println!(
        "  {:<16} {:>8} {:>10} {:>10} {:>12} {:>10} {:>10} {:>10} {:>12}",
        "plugin",
        "events",
        "p50",
        "p99",
        "p99 ratio",
        "wait p50",
        "wait p99",
        "calls/ev",
        "calls ratio"
    );
    let mut figures = Figures::new();
    for h in &handlers {
        let buckets = histogram(&metrics, "polyhost_event_latency_seconds", &h.name);
        let waits = histogram(&metrics, "polyhost_event_wait_seconds", &h.name);
        let count = buckets.last().map_or(0.0, |b| b.1);
        let p99_ms = quantile(&buckets, 0.99) * 1000.0;
        figures.insert(format!("paced p99 {} (ms)", h.name), p99_ms);
        let calls = calls_per_event(&metrics, &h.name);
        println!(
            "  {:<16} {:>8.0} {:>7.1} ms {:>7.1} ms {:>11.2}x {:>10} {:>10} {:>10.3} {:>12}",
            h.name,
            count,
            quantile(&buckets, 0.50) * 1000.0,
            p99_ms,
            Targets::P99_MS / p99_ms,
            wait_ms(&waits, 0.50),
            wait_ms(&waits, 0.99),
            calls,
            Targets::calls_ratio(&h.name, calls),
        );
    }
    print_slow(&metrics, early.as_deref(), &handlers);
    println!(
        "  (latency: from the record's Kafka timestamp to the event's final outcome; target p99 ≤ {} ms;",
        Targets::P99_MS
    );
    println!(
        "   wait: from the record's Kafka timestamp to the event's first hand-over to the plugin;"
    );
    println!(
        "   calls/ev: backend round trips per event settled; target ≤ {} but for the catalog-handler)",
        Targets::CALLS_PER_EVENT
    );
    print_backends(&metrics, &handlers);
    println!();
    Ok(figures)
}

/// The `q` quantile of an event's wait before its first hand-over, or `-` when the host
/// does not measure it (a build before `polyhost_event_wait_seconds`, run side by side).
fn wait_ms(buckets: &[(f64, f64)], q: f64) -> String {
    if buckets.last().is_none_or(|b| b.1 == 0.0) {
        return "-".into();
    }
    format!("{:.1} ms", quantile(buckets, q) * 1000.0)
}

/// How far into the generation the paced phase tells a run's start from the rest.
const EARLY: Duration = Duration::from_secs(3);

/// Prints, per plugin, the events over the target latency (the histogram's first bound
/// above it) that had settled [`EARLY`] into the generation (`early`, the metrics then)
/// and those settled after: where a p99 over the target comes from.
fn print_slow(metrics: &str, early: Option<&str>, handlers: &[Handler]) {
    let name = "polyhost_event_latency_seconds";
    let target = Targets::P99_MS / 1000.0;
    let over = |text: &str, plugin: &str| -> (f64, f64) {
        let buckets = histogram(text, name, plugin);
        let total = buckets.last().map_or(0.0, |b| b.1);
        match buckets.iter().find(|b| b.0 >= target) {
            Some(&(bound, within)) => (bound, total - within),
            None => (f64::INFINITY, 0.0),
        }
    };
    let mut parts = Vec::new();
    let mut bound = f64::INFINITY;
    for h in handlers {
        let (b, all) = over(metrics, &h.name);
        let before = early.map_or(all, |e| over(e, &h.name).1);
        bound = bound.min(b);
        parts.push(format!("{} {:.0}/{:.0}", h.name, before, all - before));
    }
    println!(
        "  events over {:.0} ms, settled in the first {} s of generation/after: {}",
        bound * 1000.0,
        EARLY.as_secs(),
        parts.join(", ")
    );
}

/// When `POLYHOST_BENCH_METRICS` names a directory, keeps there the host's last scrape of
/// a phase (`<phase>.prom`: every series, for a closer look than the table) and its log
/// (`<phase>.log`; the host inherits `POLYHOST_LOG`).
fn keep_metrics(phase: &str, metrics: &str, log: &std::path::Path) -> Result<()> {
    if let Some(dir) = std::env::var_os("POLYHOST_BENCH_METRICS") {
        let dir = std::path::Path::new(&dir);
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{phase}.prom"));
        std::fs::write(&path, metrics).with_context(|| format!("writing {}", path.display()))?;
        let kept = dir.join(format!("{phase}.log"));
        std::fs::copy(log, &kept).with_context(|| format!("copying {}", log.display()))?;
    }
    Ok(())
}

/// `n` events produced first, then the host: events/s until every group has caught up.
async fn sustained(urls: &Urls, dir: &std::path::Path, n: u64) -> Result<Figures> {
    let (manifest, handlers) = manifest_with(dir, None)?;
    reset_platform(urls, &handlers).await?;
    run(&[
        "generate",
        "--manifest",
        "polyhost.toml",
        "--count",
        &n.to_string(),
        "--seed",
        &harness::SEED.to_string(),
        "--rate",
        "0",
    ])?;
    let mut host = Host::start(&manifest, dir.join("sustained.log"))?;
    let (per_plugin, all) = caught_up(urls, &handlers, &manifest, &mut host).await?;
    let metrics = scrape(&host.admin)?;
    host.stop()?;
    keep_metrics("sustained", &metrics, &dir.join("sustained.log"))?;
    let end_to_end = n as f64 / all.as_secs_f64();
    println!(
        "sustained: {n} events produced first, then the host: every group caught up in {:.1} s = {:.0} events/s end to end ({:.2}x the target of {:.0})",
        all.as_secs_f64(),
        end_to_end,
        end_to_end / Targets::END_TO_END,
        Targets::END_TO_END
    );
    println!(
        "  {:<16} {:>8} {:>10} {:>10} {:>8} {:>10} {:>12}",
        "plugin", "events", "caught up", "events/s", "ratio", "calls/ev", "calls ratio"
    );
    let mut figures = Figures::from([("sustained end to end (events/s)".to_string(), end_to_end)]);
    for h in &handlers {
        let events = settled(&metrics, &h.name);
        let took = per_plugin[&h.name];
        let per_s = events / took.as_secs_f64();
        figures.insert(format!("sustained {} (events/s)", h.name), per_s);
        let calls = calls_per_event(&metrics, &h.name);
        println!(
            "  {:<16} {:>8.0} {:>8.1} s {:>10.0} {:>7.2}x {:>10.3} {:>12}",
            h.name,
            events,
            took.as_secs_f64(),
            per_s,
            per_s / Targets::events_per_s(&h.name),
            calls,
            Targets::calls_ratio(&h.name, calls),
        );
    }
    println!(
        "  (targets: ≥ {:.0} events/s per plugin, the catalog-handler ≥ {:.0}; ≤ {} calls/ev but for the catalog-handler)",
        Targets::PLUGIN_EVENTS_PER_S,
        Targets::CATALOG_EVENTS_PER_S,
        Targets::CALLS_PER_EVENT
    );
    print_backends(&metrics, &handlers);
    Ok(figures)
}

/// A lag query under way, on a thread of its own.
type LagQuery = tokio::task::JoinHandle<Result<BTreeMap<String, i64>>>;

/// Waits until every plugin has caught up; returns when each did, and when all had, as
/// times since the call. A plugin has caught up when its last event settled (its
/// `polyhost_events_total`, read from the host every 100 ms, stopped growing), confirmed
/// by its consumer group's lag being 0 on two looks 2 s apart: the committed lag alone
/// would add the commit interval and the lag query's own time to every figure. The lag is
/// queried on a thread of its own, so that the 100 ms scrapes go on meanwhile (a query
/// takes a few hundred ms: a settle seen only after it would be counted that much late).
async fn caught_up(
    urls: &Urls,
    handlers: &[Handler],
    manifest: &std::path::Path,
    host: &mut Host,
) -> Result<(BTreeMap<String, Duration>, Duration)> {
    let started = Instant::now();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    let mut last_settled: BTreeMap<String, Duration> = BTreeMap::new();
    let mut all_zero: Option<Instant> = None;
    let mut lag_asked: Option<Instant> = None;
    let mut lag_check: Option<(Instant, LagQuery)> = None;
    loop {
        host.alive()?;
        let metrics = scrape(&host.admin).unwrap_or_default();
        for h in handlers {
            let n = settled(&metrics, &h.name);
            if n > counts.get(&h.name).copied().unwrap_or(0.0) {
                counts.insert(h.name.clone(), n);
                last_settled.insert(h.name.clone(), started.elapsed());
            }
        }
        if let Some((asked, check)) = lag_check.take_if(|(_, c)| c.is_finished()) {
            let lags = check.await.context("the lag query panicked")??;
            if lags.values().all(|l| *l == 0) {
                let since = *all_zero.get_or_insert(asked);
                // Two looks asked at least 2 s apart (a slow query does not confirm itself).
                if asked.saturating_duration_since(since) >= Duration::from_secs(2) {
                    let per_plugin: BTreeMap<String, Duration> = handlers
                        .iter()
                        .map(|h| {
                            let at = last_settled.get(&h.name).copied().unwrap_or_default();
                            (h.name.clone(), at)
                        })
                        .collect();
                    let all = per_plugin.values().max().copied().unwrap_or_default();
                    return Ok((per_plugin, all));
                }
            } else {
                all_zero = None;
            }
        }
        if lag_check.is_none() && lag_asked.is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            let asked = Instant::now();
            lag_asked = Some(asked);
            let (urls, manifest) = (urls.clone(), manifest.to_path_buf());
            let handlers = handlers.to_vec();
            let check = tokio::task::spawn_blocking(move || lag(&urls, &handlers, &manifest));
            lag_check = Some((asked, check));
        }
        ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "not caught up after 30 min: {counts:?} events settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The platform's targets, which every figure is printed against.
struct Targets;

impl Targets {
    /// Sustained end to end, events/s.
    const END_TO_END: f64 = 2_000.0;
    /// Sustained per plugin, events/s.
    const PLUGIN_EVENTS_PER_S: f64 = 2_000.0;
    /// Sustained for the catalog-handler (FerretDB), events/s.
    const CATALOG_EVENTS_PER_S: f64 = 1_000.0;
    /// Paced: p99 from produce to final outcome, ms.
    const P99_MS: f64 = 250.0;
    /// Backend round trips per event, for every plugin but the catalog-handler.
    const CALLS_PER_EVENT: f64 = 0.25;

    fn events_per_s(plugin: &str) -> f64 {
        if plugin == "catalog-handler" {
            Self::CATALOG_EVENTS_PER_S
        } else {
            Self::PLUGIN_EVENTS_PER_S
        }
    }

    /// The ratio of `calls` per event to its target (higher is better), or `-` where
    /// there is none.
    fn calls_ratio(plugin: &str, calls: f64) -> String {
        if plugin == "catalog-handler" {
            "-".to_string()
        } else if calls == 0.0 {
            "inf".to_string()
        } else {
            format!("{:.2}x", Self::CALLS_PER_EVENT / calls)
        }
    }
}

/// The events `plugin` settled (every outcome).
fn settled(metrics: &str, plugin: &str) -> f64 {
    sum_of(metrics, "polyhost_events_total", plugin)
}

/// The backend round trips `plugin` made per event it settled.
fn calls_per_event(metrics: &str, plugin: &str) -> f64 {
    let events = settled(metrics, plugin);
    if events == 0.0 {
        return f64::NAN;
    }
    sum_of(metrics, "polyhost_backend_calls_total", plugin) / events
}

/// Per plugin, its backend calls per event by backend, on one line.
fn print_backends(metrics: &str, handlers: &[Handler]) {
    for h in handlers {
        let events = settled(metrics, &h.name);
        let label = format!("plugin=\"{}\"", h.name);
        let parts: Vec<String> = metrics
            .lines()
            .filter(|l| l.starts_with("polyhost_backend_calls_total{") && l.contains(&label))
            .filter_map(|l| {
                let backend = l.split("backend=\"").nth(1)?.split('"').next()?;
                let calls: f64 = l.rsplit(' ').next()?.parse().ok()?;
                Some(format!("{backend} {calls:.0} ({:.3}/ev)", calls / events))
            })
            .collect();
        println!("  {:<16} backend calls: {}", h.name, parts.join(", "));
    }
}

/// The sum of every sample `name{…plugin="<plugin>"…}`, whatever its other labels.
fn sum_of(metrics: &str, name: &str, plugin: &str) -> f64 {
    let label = format!("plugin=\"{plugin}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The host's `/metrics` text.
fn scrape(admin: &str) -> Result<String> {
    let mut stream = std::net::TcpStream::connect(admin)
        .with_context(|| format!("connecting to the admin API at {admin}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .context("an HTTP response without a body")?;
    Ok(body)
}

fn generated(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("polyhost_generated_events_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A histogram's cumulative buckets for `plugin`: (upper bound, count), `+Inf` last.
fn histogram(metrics: &str, name: &str, plugin: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let label = format!("plugin=\"{plugin}\"");
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&label))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The `q` quantile of cumulative `buckets`, interpolated linearly within its bucket (as
/// Prometheus' `histogram_quantile` does).
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            let within = (rank - lower.1) / (count - lower.1).max(f64::MIN_POSITIVE);
            return lower.0 + (le - lower.0) * within;
        }
        lower = (le, count);
    }
    lower.0
}
