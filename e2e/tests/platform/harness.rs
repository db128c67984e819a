//! What the end-to-end proof and the platform benchmark share: the platform's manifest,
//! a clean platform (topics, groups, stores), the `polyhost` binary as a process, the
//! consumer groups' lag, and the events read back from Kafka.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::events::{Ev, Urls};
use super::{audit, catalog, ranking, users};
use anyhow::{Context as _, Result, bail, ensure};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The platform's topics.
pub const TOPICS: [&str; 6] = [
    "streaming.users",
    "streaming.billing",
    "streaming.catalog",
    "streaming.ratings",
    "streaming.sessions",
    "streaming.derived",
];
/// How many events the proof generates: `POLYHOST_E2E_EVENTS`, default 20 000.
pub fn event_count() -> u64 {
    std::env::var("POLYHOST_E2E_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}
pub const SEED: u64 = 7;
/// The seed of the second run in the two-seed check.
pub const OTHER_SEED: u64 = 8;
/// Events per seed in the two-seed check: `POLYHOST_E2E_SEED_EVENTS`, default 5 000.
pub fn seed_event_count() -> u64 {
    std::env::var("POLYHOST_E2E_SEED_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The binary [`use_binary`] chose, if any: the benchmark runs two side by side.
static CHOSEN: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Makes [`polyhost`] answer `path` from now on (the benchmark's; the test runs one).
#[allow(dead_code)]
pub fn use_binary(path: PathBuf) {
    *CHOSEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(path);
}

/// The `polyhost` binary run: the one [`use_binary`] chose, else `POLYHOST_BIN`, else the
/// debug build.
pub fn polyhost() -> PathBuf {
    if let Some(chosen) = CHOSEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
    {
        return chosen;
    }
    std::env::var_os("POLYHOST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/debug/polyhost"))
}

pub fn kafka(urls: &Urls) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &urls.kafka);
    c
}

/// The handlers of the manifest: (name, consumer group, topics).
#[derive(Debug, Clone)]
pub struct Handler {
    pub name: String,
    pub group: String,
}

/// `polyhost.toml` without its generator (the test runs `polyhost generate` itself), with
/// absolute component paths, written beside the test's other files.
pub fn manifest(dir: &Path) -> Result<(PathBuf, Vec<Handler>)> {
    manifest_with(dir, None)
}

/// `polyhost.toml` with absolute component paths; its generator kept, running at
/// `(rate, total)` events, when `generator` says so, else left out.
pub fn manifest_with(dir: &Path, generator: Option<(u64, u64)>) -> Result<(PathBuf, Vec<Handler>)> {
    let text = std::fs::read_to_string(root().join("polyhost.toml"))?;
    let mut doc: toml::Table = text.parse()?;
    let plugins = doc
        .get_mut("plugin")
        .and_then(|p| p.as_array_mut())
        .context("polyhost.toml has no [[plugin]]")?;
    let is_generator =
        |p: &toml::Value| p.get("kind").and_then(|k| k.as_str()) == Some("generator");
    if generator.is_none() {
        plugins.retain(|p| !is_generator(p));
    }
    let mut handlers = Vec::new();
    for p in plugins.iter_mut() {
        let generates = is_generator(p);
        if let (Some((rate, total)), true) = (generator, generates) {
            let config = p
                .get_mut("config")
                .and_then(|c| c.as_table_mut())
                .context("the generator has no [plugin.config]")?;
            config.insert("rate".into(), (rate as i64).into());
            config.insert("total".into(), (total as i64).into());
            config.insert("seed".into(), (SEED as i64).into());
        }
        let t = p.as_table_mut().context("a plugin entry")?;
        let wasm = root().join(t["wasm"].as_str().context("wasm")?);
        t.insert("wasm".into(), wasm.display().to_string().into());
        if generates {
            continue;
        }
        let name = t["name"].as_str().context("name")?.to_string();
        let group = t
            .get("consumer_group")
            .and_then(|g| g.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("polyhost.{name}"));
        handlers.push(Handler { name, group });
    }
    let path = dir.join("platform.toml");
    std::fs::write(&path, toml::to_string(&doc)?)?;
    Ok((path, handlers))
}

/// A clean platform: the topics recreated, the groups and dead letters gone, every store
/// emptied of the platform's data, the schema migrated.
pub async fn reset_platform(urls: &Urls, handlers: &[Handler]) -> Result<()> {
    reset_kafka(urls, handlers).await?;
    users::reset(urls).await?;
    catalog::reset(urls).await?;
    ranking::reset(urls).await?;
    audit::reset(urls).await?;
    run(&["migrate", "--manifest", "polyhost.toml"])?;
    Ok(())
}

/// Recreates the platform topics and forgets the handlers' groups and dead letters.
pub async fn reset_kafka(urls: &Urls, handlers: &[Handler]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka(urls).create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let mut doomed: Vec<String> = TOPICS.iter().map(|t| t.to_string()).collect();
    doomed.extend(handlers.iter().map(|h| format!("polyhost.dlq.{}", h.name)));
    let refs: Vec<&str> = doomed.iter().map(String::as_str).collect();
    let _ = admin.delete_topics(&refs, &opts).await?;
    // A group with live members (a host still running) cannot be deleted: wait for them to
    // leave, or old offsets would skip part of the new stream.
    let groups: Vec<&str> = handlers.iter().map(|h| h.group.as_str()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: Vec<String> = admin
            .delete_groups(&groups, &opts)
            .await?
            .into_iter()
            .filter_map(|r| match r {
                Err((g, code)) if code != RDKafkaErrorCode::GroupIdNotFound => {
                    Some(format!("{g}: {code}"))
                }
                _ => None,
            })
            .collect();
        if left.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "cannot delete the consumer groups: {left:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Deletion is asynchronous: wait until the topics are gone, then create them.
    let probe: BaseConsumer = kafka(urls).create()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missing: Vec<&str> = TOPICS.to_vec();
    while !missing.is_empty() {
        let md = probe.fetch_metadata(None, Duration::from_secs(10))?;
        let exists = |t: &str| {
            md.topics()
                .iter()
                .any(|m| m.name() == t && m.error().is_none())
        };
        if TOPICS.iter().any(|t| exists(t) && missing.contains(t)) {
            ensure!(
                Instant::now() < deadline,
                "the platform topics were not deleted in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| NewTopic::new(t, 3, TopicReplication::Fixed(1)))
            .collect();
        let results = admin.create_topics(&new, &opts).await?;
        missing = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(|(t, _)| t.as_str()))
            .filter_map(|t| TOPICS.iter().copied().find(|x| *x == t))
            .collect();
        if !missing.is_empty() {
            ensure!(Instant::now() < deadline, "cannot recreate {missing:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

pub fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(polyhost())
        .args(args)
        .current_dir(root())
        .output()
        .with_context(|| format!("running {}", polyhost().display()))?;
    ensure!(
        out.status.success(),
        "polyhost {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub struct Host {
    child: Child,
    pub log: PathBuf,
    /// The admin API's address (the benchmark reads `/metrics` there).
    #[allow(dead_code)]
    pub admin: String,
}

impl Host {
    pub fn start(manifest: &Path, log: PathBuf) -> Result<Host> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let admin = format!("127.0.0.1:{port}");
        let child = Command::new(polyhost())
            .args(["run", "--manifest"])
            .arg(manifest)
            .args(["--admin-addr", &admin])
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Host { child, log, admin })
    }

    pub fn alive(&mut self) -> Result<()> {
        if let Some(s) = self.child.try_wait()? {
            bail!(
                "polyhost exited ({s}):\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }

    pub fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait()?.is_none() {
            ensure!(Instant::now() < deadline, "polyhost did not drain in 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every handler group's lag on the platform topics (committed offset against the high
/// watermark of every partition of every platform topic it subscribes to).
pub fn lag(urls: &Urls, handlers: &[Handler], manifest: &Path) -> Result<BTreeMap<String, i64>> {
    let doc: toml::Table = std::fs::read_to_string(manifest)?.parse()?;
    let entries = doc["plugin"].as_array().context("plugins")?;
    let mut out = BTreeMap::new();
    for h in handlers {
        let topics: Vec<String> = entries
            .iter()
            .find(|p| p["name"].as_str() == Some(&h.name))
            .and_then(|p| p.get("subscribe"))
            .and_then(|s| s.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str())
                    .filter(|t| TOPICS.contains(t))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let consumer: BaseConsumer = kafka(urls).set("group.id", &h.group).create()?;
        let mut tpl = TopicPartitionList::new();
        for t in &topics {
            for p in 0..3 {
                tpl.add_partition(t, p);
            }
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        let mut lag = 0;
        for e in committed.elements() {
            let (low, high) =
                consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))?;
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            lag += (high - at).max(0);
        }
        out.insert(h.name.clone(), lag);
    }
    Ok(out)
}

/// Waits until every group's lag is 0 on two looks 3 s apart.
pub async fn wait_caught_up(
    urls: &Urls,
    handlers: &[Handler],
    manifest: &Path,
    host: &mut Host,
    limit: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let mut zero_since: Option<Instant> = None;
    let mut last_report = Instant::now();
    loop {
        host.alive()?;
        let lags = lag(urls, handlers, manifest)?;
        if lags.values().all(|l| *l == 0) {
            match zero_since {
                Some(t) if t.elapsed() >= Duration::from_secs(3) => return Ok(started.elapsed()),
                None => zero_since = Some(Instant::now()),
                _ => {}
            }
        } else {
            zero_since = None;
        }
        if last_report.elapsed() > Duration::from_secs(20) {
            eprintln!("[{:>4.0}s] lag {lags:?}", started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        ensure!(
            started.elapsed() < limit,
            "lag not 0 after {limit:?}: {lags:?}\n{}",
            std::fs::read_to_string(&host.log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

/// Every record of `topics`, from the beginning to the current high watermarks.
pub fn read_back(urls: &Urls, topics: &[String]) -> Result<Vec<rdkafka::message::OwnedMessage>> {
    let consumer: BaseConsumer = kafka(urls)
        .set("group.id", "polyhost-e2e-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for t in topics {
        let md = consumer.fetch_metadata(Some(t), Duration::from_secs(10))?;
        let partitions = md
            .topics()
            .first()
            .map(|m| m.partitions().len())
            .unwrap_or(0);
        for p in 0..partitions as i32 {
            let (low, high) = consumer.fetch_watermarks(t, p, Duration::from_secs(10))?;
            if high > low {
                tpl.add_partition_offset(t, p, Offset::Offset(low))?;
                ends.insert((t.clone(), p), high);
            }
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let mut left: usize = ends.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while left > 0 {
        ensure!(
            Instant::now() < deadline,
            "reading the topics back took over 120 s"
        );
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m?;
        let key = (m.topic().to_string(), m.partition());
        let end = ends[&key];
        if m.offset() < end {
            out.push(m.detach());
        }
        if m.offset() + 1 == end {
            left -= 1;
        }
    }
    Ok(out)
}

/// The platform topics' records as events, in (topic, partition, offset) order.
pub fn events(urls: &Urls) -> Result<Vec<Ev>> {
    let topics: Vec<String> = TOPICS.iter().map(|t| t.to_string()).collect();
    let mut out = Vec::new();
    for m in read_back(urls, &topics)? {
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())
            .with_context(|| format!("{}/{}/{}: not JSON", m.topic(), m.partition(), m.offset()))?;
        let s = |k: &str| v[k].as_str().map(str::to_string);
        out.push(Ev {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            id: s("id").context("an event without id")?,
            ty: s("type").context("an event without type")?,
            source: s("source").unwrap_or_default(),
            subject: s("subject"),
            time: s("time"),
            data: v["data"].clone(),
        });
    }
    out.sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    Ok(out)
}

/// Dead letters of the platform's handlers: there must be none.
pub fn dead_letters(urls: &Urls, handlers: &[Handler]) -> Result<Vec<String>> {
    let topics: Vec<String> = handlers
        .iter()
        .map(|h| format!("polyhost.dlq.{}", h.name))
        .collect();
    let mut out = Vec::new();
    for m in read_back(urls, &topics)? {
        use rdkafka::message::Headers as _;
        let reason = m
            .headers()
            .and_then(|hs| {
                hs.iter()
                    .find(|h| h.key == "polyhost.reason")
                    .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            })
            .unwrap_or_default();
        out.push(format!("{}: {reason}", m.topic()));
    }
    Ok(out)
}

/// Commits the earliest offset for every partition of every group: a full replay.
pub fn rewind(urls: &Urls, handlers: &[Handler]) -> Result<()> {
    for h in handlers {
        let consumer: BaseConsumer = kafka(urls).set("group.id", &h.group).create()?;
        let mut tpl = TopicPartitionList::new();
        let committed = {
            let mut all = TopicPartitionList::new();
            for t in TOPICS {
                for p in 0..3 {
                    all.add_partition(t, p);
                }
            }
            consumer.committed_offsets(all, Duration::from_secs(10))?
        };
        for e in committed.elements() {
            if let Offset::Offset(_) = e.offset() {
                let (low, _) =
                    consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))?;
                tpl.add_partition_offset(e.topic(), e.partition(), Offset::Offset(low))?;
            }
        }
        if tpl.count() > 0 {
            consumer.commit(&tpl, CommitMode::Sync)?;
        }
    }
    Ok(())
}

pub async fn check_stores(events: &[Ev], urls: &Urls) -> Result<()> {
    let mut failures = Vec::new();
    if let Err(e) = users::check(events, urls).await {
        failures.push(format!("PostgreSQL (user-handler): {e:#}"));
    }
    if let Err(e) = catalog::check(events, urls).await {
        failures.push(format!("MongoDB (catalog-handler): {e:#}"));
    }
    if let Err(e) = ranking::check(events, urls).await {
        failures.push(format!("Redis (ranking-handler): {e:#}"));
    }
    if let Err(e) = audit::check(events, urls).await {
        failures.push(format!("Elasticsearch (auditor): {e:#}"));
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

/// Runs the host until every group has caught up, stops it (draining), and returns the
/// events of the platform topics; fails on any dead letter.
pub async fn pass(
    label: &str,
    urls: &Urls,
    manifest: &Path,
    handlers: &[Handler],
    dir: &Path,
) -> Result<Vec<Ev>> {
    let mut host = Host::start(
        manifest,
        dir.join(format!("{}.log", label.replace(' ', "-"))),
    )?;
    let took = wait_caught_up(
        urls,
        handlers,
        manifest,
        &mut host,
        Duration::from_secs(1200),
    )
    .await?;
    eprintln!(
        "{label}: every group caught up in {:.1} s",
        took.as_secs_f64()
    );
    host.stop()?;
    let dead = dead_letters(urls, handlers)?;
    ensure!(
        dead.is_empty(),
        "{label}: {} dead letters (first: {:?})",
        dead.len(),
        &dead[..dead.len().min(5)]
    );
    events(urls)
}
