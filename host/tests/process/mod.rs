//! The host run as a separate process (`CARGO_BIN_EXE_polyhost`), for the tests where it
//! must die, be signalled, or be driven through its admin API and CLI. Events are recorded
//! by the `recorder` test plugin in Redis (once per event id, through apply-once), so what
//! was processed survives the host.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use redis::AsyncCommands as _;

use crate::common::{Service, unique_name};
pub use crate::harness::test_plugin;
use polyhost::backends::keyvalue::HOST_NAMESPACE;

/// The `polyhost` binary under test.
pub fn polyhost() -> &'static str {
    env!("CARGO_BIN_EXE_polyhost")
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `limit` naming `what`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running `polyhost run`.
pub struct Host {
    pub child: Child,
    pub admin: String,
    pub log: PathBuf,
}

impl Host {
    /// Starts `polyhost run --manifest <manifest>` and waits until its admin API answers
    /// (every plugin is loaded by then).
    pub async fn start(manifest: &Path, extra: &[&str]) -> Result<Host> {
        let port = free_port();
        let admin = format!("127.0.0.1:{port}");
        let log = manifest.with_extension(format!("{port}.log"));
        let child = Command::new(polyhost())
            .arg("run")
            .arg("--manifest")
            .arg(manifest)
            .arg("--admin-addr")
            .arg(&admin)
            .args(extra)
            .env("POLYHOST_LOG", "info,polyhost=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting polyhost")?;
        let mut host = Host { child, admin, log };
        let url = format!("http://{}/healthz", host.admin);
        let started = Instant::now();
        loop {
            if let Some(status) = host.child.try_wait()? {
                bail!("polyhost exited at start ({status}):\n{}", host.logs());
            }
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(host);
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!(
                    "polyhost did not serve its admin API in 120 s:\n{}",
                    host.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/plugins`.
    pub async fn plugins(&self) -> Result<Vec<serde_json::Value>> {
        Ok(reqwest::get(format!("http://{}/api/plugins", self.admin))
            .await?
            .json()
            .await?)
    }

    /// `GET <path>` as text, with the status.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let r = reqwest::get(format!("http://{}{path}", self.admin)).await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    /// One plugin's entry of `/api/plugins`.
    pub async fn plugin(&self, name: &str) -> Result<serde_json::Value> {
        self.plugins()
            .await?
            .into_iter()
            .find(|p| p["name"] == name)
            .with_context(|| format!("no plugin {name} in /api/plugins"))
    }

    /// Runs the `polyhost` CLI against this host's admin API.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Ok(Command::new(polyhost())
            .args(args)
            .arg("--admin-addr")
            .arg(&self.admin)
            .output()?)
    }

    /// SIGTERM, then waits (at most `limit`) for the exit.
    pub fn terminate(&mut self, limit: Duration) -> Result<ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        self.wait(limit)
    }

    /// SIGKILL: no drain, no commit.
    pub fn kill9(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    fn wait(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("polyhost did not exit within {limit:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A test's topic, Redis prefix, plugin name and scratch folder.
pub struct Fixture {
    pub kafka: Service,
    pub topic: String,
    pub plugin: String,
    pub prefix: String,
    pub partitions: i32,
    pub dir: PathBuf,
    /// Further topics, and further plugins' names, the test made ([`Fixture::another_topic`],
    /// [`Fixture::another_plugin`]): deleted with the fixture as its own are.
    others: std::sync::Mutex<(Vec<String>, Vec<String>)>,
}

fn kafka_config(kafka: &Service) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.url);
    c
}

impl Fixture {
    /// A new topic of `partitions` partitions, and names no other test uses.
    pub async fn new(partitions: i32) -> Result<Fixture> {
        let kafka = Service::kafka();
        let topic = unique_name("proc");
        let admin: AdminClient<DefaultClientContext> = kafka_config(&kafka).create()?;
        for r in admin
            .create_topics(
                &[NewTopic::new(
                    &topic,
                    partitions,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await?
        {
            if let Err((name, code)) = r {
                bail!("creating topic {name}: {code}");
            }
        }
        let plugin = unique_name("rec").replace('_', "-");
        let dir = std::env::temp_dir().join(&plugin);
        std::fs::create_dir_all(&dir)?;
        Ok(Fixture {
            kafka,
            prefix: format!("{plugin}:"),
            topic,
            plugin,
            partitions,
            dir,
            others: Default::default(),
        })
    }

    /// A further topic name no other test uses (`<what>_…`); the topic is deleted with the
    /// fixture.
    pub fn another_topic(&self, what: &str) -> String {
        let topic = unique_name(what);
        self.lock_others().0.push(topic.clone());
        topic
    }

    /// A further plugin name no other test uses (`<what>-…`); its dead-letter topics are
    /// deleted with the fixture.
    pub fn another_plugin(&self, what: &str) -> String {
        let plugin = unique_name(what).replace('_', "-");
        self.lock_others().1.push(plugin.clone());
        plugin
    }

    fn lock_others(&self) -> std::sync::MutexGuard<'_, (Vec<String>, Vec<String>)> {
        self.others.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The manifest entry of the recorder plugin for this fixture.
    pub fn recorder(&self, wasm: &Path, batch_size: u32, slow_ms: u64) -> String {
        format!(
            r#"
[[plugin]]
name = "{name}"
wasm = "{wasm}"
subscribe = ["{topic}"]

[plugin.grants]
keyvalue = {{ prefixes = ["{prefix}"] }}

[plugin.limits]
batch_size = {batch_size}
batch_wait_ms = 10
max_instances = 4

[plugin.config]
prefix = "{prefix}"
slow_ms = {slow_ms}
"#,
            name = self.plugin,
            wasm = wasm.display(),
            topic = self.topic,
            prefix = self.prefix,
        )
    }

    /// Writes `body` as a manifest in the fixture's folder.
    pub fn manifest(&self, file: &str, body: &str) -> Result<PathBuf> {
        let path = self.dir.join(file);
        std::fs::write(&path, body)?;
        Ok(path)
    }

    /// Produces `n` CloudEvents with ids `<plugin>-<i>` (i from `from`), keyed over
    /// `keys` keys, and waits for every acknowledgement.
    pub async fn produce(&self, from: usize, n: usize, keys: usize) -> Result<()> {
        produce(&self.kafka, &self.topic, &self.plugin, from, n, keys).await
    }

    /// The ids recorded in Redis, with their records (`<version>@<topic>/<partition>/<offset>`).
    pub async fn recorded(&self) -> Result<HashMap<String, String>> {
        let mut redis = redis_conn().await?;
        Ok(redis.hgetall(format!("{}ids", self.prefix)).await?)
    }

    /// The Kafka key and headers the recorder read for each id, through the `records`
    /// interface (`<key>|<header>=<value>,…`).
    pub async fn recorded_keys(&self) -> Result<HashMap<String, String>> {
        let mut redis = redis_conn().await?;
        Ok(redis.hgetall(format!("{}keys", self.prefix)).await?)
    }

    /// The recorder's counter (how many times an event was applied).
    pub async fn count(&self) -> Result<i64> {
        let mut redis = redis_conn().await?;
        let n: Option<i64> = redis.get(format!("{}count", self.prefix)).await?;
        Ok(n.unwrap_or(0))
    }

    /// How many times events were handled successfully, replays included.
    pub async fn handled(&self) -> Result<i64> {
        let mut redis = redis_conn().await?;
        let n: Option<i64> = redis.get(format!("{}handled", self.prefix)).await?;
        Ok(n.unwrap_or(0))
    }

    /// `(partition, offset)` of every recorded event.
    pub async fn positions(&self) -> Result<Vec<(i32, i64)>> {
        Ok(self
            .recorded()
            .await?
            .values()
            .filter_map(|r| {
                let (_, at) = r.split_once('@')?;
                let mut parts = at.rsplitn(3, '/');
                let offset = parts.next()?.parse().ok()?;
                let partition = parts.next()?.parse().ok()?;
                Some((partition, offset))
            })
            .collect())
    }

    /// Waits until `n` distinct ids are recorded.
    pub async fn wait_recorded(
        &self,
        n: usize,
        limit: Duration,
    ) -> Result<HashMap<String, String>> {
        wait_for(limit, &format!("{n} events recorded"), || async {
            let r = self.recorded().await?;
            Ok((r.len() >= n).then_some(r))
        })
        .await
    }

    /// The ids `0..n` this fixture produces.
    pub fn ids(&self, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{}-{i}", self.plugin)).collect()
    }

    /// The consumer group's committed offset per partition (`-1` when none).
    pub fn committed(&self, group: &str) -> Result<Vec<i64>> {
        let consumer: BaseConsumer = kafka_config(&self.kafka).set("group.id", group).create()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let c = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        Ok(c.elements()
            .iter()
            .map(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => o,
                _ => -1,
            })
            .collect())
    }

    /// Asserts that every id of `0..n` is recorded exactly once, and nothing else.
    pub async fn assert_exactly_once(&self, n: usize) -> Result<()> {
        let recorded = self.recorded().await?;
        let missing: Vec<String> = self
            .ids(n)
            .into_iter()
            .filter(|id| !recorded.contains_key(id))
            .take(10)
            .collect();
        assert!(
            missing.is_empty(),
            "ids never recorded (first 10): {missing:?}"
        );
        assert_eq!(recorded.len(), n, "distinct ids recorded");
        assert_eq!(
            self.count().await?,
            n as i64,
            "the counter: each event applied exactly once"
        );
        Ok(())
    }
}

impl Drop for Fixture {
    /// Removes the scratch folder, the topic, and the dead-letter topics of the fixture's
    /// plugins (`polyhost.dlq.<plugin>…`): left behind, they would add up run after run,
    /// and every one of them is a partition more for whatever subscribes to
    /// `^polyhost\.dlq\..*` (the platform's auditor).
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let Ok(admin) = kafka_config(&self.kafka).create::<AdminClient<DefaultClientContext>>()
        else {
            return;
        };
        let (other_topics, other_plugins) = std::mem::take(&mut *self.lock_others());
        let dead_letters: Vec<String> = std::iter::once(&self.plugin)
            .chain(&other_plugins)
            .map(|plugin| format!("polyhost.dlq.{plugin}"))
            .collect();
        let mut topics = vec![self.topic.clone()];
        topics.extend(other_topics);
        if let Ok(metadata) = admin.inner().fetch_metadata(None, Duration::from_secs(5)) {
            topics.extend(
                metadata
                    .topics()
                    .iter()
                    .map(|t| t.name().to_string())
                    .filter(|name| dead_letters.iter().any(|d| name.starts_with(d.as_str()))),
            );
        }
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        // librdkafka drives the request on its own thread: no async runtime is needed.
        let _ = futures::executor::block_on(admin.delete_topics(&names, &options));
        // And the Redis keys: the recorder's, and the host's dedupe keys of the plugins'
        // events (`polyhost:applied:<plugin>:<event id>`, kept a day), thousands a test,
        // which would slow every later `SCAN` of the keyspace.
        let mut patterns = vec![format!("{}*", self.prefix)];
        patterns.extend(
            std::iter::once(&self.plugin)
                .chain(&other_plugins)
                .map(|plugin| format!("{HOST_NAMESPACE}{plugin}:*")),
        );
        let _ = delete_keys(&patterns);
    }
}

/// Deletes the Redis keys matching any of `patterns` (a blocking connection: it runs in
/// `Drop`).
fn delete_keys(patterns: &[String]) -> Result<()> {
    let client = redis::Client::open(Service::redis().url.as_str())?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
    for pattern in patterns {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(10_000)
                .query(&mut conn)?;
            if !keys.is_empty() {
                redis::cmd("UNLINK").arg(&keys).exec(&mut conn)?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

/// A Redis connection to the test services.
pub async fn redis_conn() -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(Service::redis().url.as_str())?;
    Ok(client.get_multiplexed_async_connection().await?)
}

/// Produces `n` CloudEvents to `topic` with ids `<prefix>-<i>` (i from `from`), keyed
/// `k<i % keys>`, with a header `n` = `<i>`, and waits for every acknowledgement.
pub async fn produce(
    kafka: &Service,
    topic: &str,
    prefix: &str,
    from: usize,
    n: usize,
    keys: usize,
) -> Result<()> {
    let producer: FutureProducer = kafka_config(kafka)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let records: Vec<(String, Vec<u8>, String)> = (from..from + n)
        .map(|i| {
            let key = format!("k{}", i % keys.max(1));
            let value = serde_json::json!({
                "specversion": "1.0",
                "id": format!("{prefix}-{i}"),
                "source": "/tests/process",
                "type": "test.recorded",
                "subject": key,
                "data": {"n": i},
            });
            (
                key,
                serde_json::to_vec(&value).expect("json"),
                i.to_string(),
            )
        })
        .collect();
    for chunk in records.chunks(2000) {
        let sends = chunk.iter().map(|(k, v, n)| {
            producer.send(
                FutureRecord::to(topic)
                    .key(k.as_bytes())
                    .payload(v)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "n",
                        value: Some(n.as_bytes()),
                    })),
                Duration::from_secs(30),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e).context("producing")?;
        }
    }
    Ok(())
}
