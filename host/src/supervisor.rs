//! The running host: its plugins, their versions, the trigger and the generators, and the
//! operations the admin API offers — status, hot swap (reload, rollback) and manifest
//! reload.
//!
//! A swap loads the new version completely (compile, link against the grants, type-check
//! against the world) before touching anything; only then does it replace the version the
//! trigger hands the next batch to ([`Trigger::replace`]). Batches in flight finish on the
//! old version. The previous version stays in memory for a rollback.
//!
//! A version is its component and its environment: a reload swaps when either differs
//! (another digest, or another `[plugin.config]`, grants or limits), and answers
//! `unchanged` only when both are the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::connections::Kafka;
use crate::generate::{self, Pace};
use crate::manifest::{Kind, Manifest, PluginSpec};
use crate::metrics::{self, Metrics, SwapChangeLabels, SwapLabels};
use crate::runtime::{LoadedPlugin, Runtime};
use crate::trigger::{Trigger, TriggerConfig};

/// One plugin as the host runs it.
struct Entry {
    spec: PluginSpec,
    current: Arc<LoadedPlugin>,
    previous: Option<Arc<LoadedPlugin>>,
    swaps: u64,
    /// What the last swap or rollback changed, for the status.
    last_change: Option<String>,
    generator: Option<GeneratorRun>,
}

/// A generator's run in progress (or ended).
struct GeneratorRun {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<u64, generate::GenerateError>>,
}

/// What a swap did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SwapReport {
    /// The plugin.
    pub plugin: String,
    /// The digest now running.
    pub digest: String,
    /// The digest it replaced.
    pub previous: String,
    /// `swapped`, `unchanged` (same component and same config, grants and limits: nothing
    /// to do) or `rolled back`.
    pub result: String,
    /// What differs between the version now running and the one it replaced: `component`,
    /// `kind`, `config`, `grants`, `limits` (empty when `unchanged`).
    pub changed: Vec<String>,
}

/// Why a swap or a manifest reload was refused. The running versions are untouched.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// No plugin of that name runs.
    #[error("no plugin named `{0}` runs in this host")]
    NoSuchPlugin(String),
    /// The new version failed a load check.
    #[error("{0}")]
    Refused(String),
    /// A rollback with no previous version.
    #[error("plugin `{0}` has no previous version to roll back to")]
    NoPrevious(String),
}

/// The plugin table of `GET /api/plugins`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginStatus {
    pub name: String,
    pub kind: String,
    /// SHA-256 of the running component.
    pub digest: String,
    /// The digest before the last swap, if any.
    pub previous_digest: Option<String>,
    /// When the running version was loaded (RFC 3339).
    pub loaded_at: String,
    /// `running`; for a generator `generating`, `finished` or `failed: <reason>`.
    pub state: String,
    pub topics: Vec<String>,
    pub group: Option<String>,
    pub swaps: u64,
    /// What the last swap or rollback changed, e.g. `config changed` or
    /// `rolled back: component, limits changed`.
    #[serde(default)]
    pub last_change: Option<String>,
    /// Final outcomes: `ok`.
    pub processed: u64,
    /// Final outcomes: dead-lettered.
    pub dead_lettered: u64,
    /// Events handed over again.
    pub retried: u64,
    /// Events a generator published.
    pub generated: u64,
    /// Consumer-group lag on the assigned partitions (handlers).
    pub lag: Option<i64>,
    pub in_flight: usize,
}

/// The host.
pub struct Supervisor {
    runtime: Runtime,
    kafka: Kafka,
    manifest_path: Option<PathBuf>,
    /// The manifest's `[connections]` as it was when the host started: the connections are
    /// made then, so a reload that changes the section says it is not applied.
    manifest_connections: crate::connections::Settings,
    topic_partitions: i32,
    trigger: Mutex<Option<Trigger>>,
    plugins: Mutex<BTreeMap<String, Entry>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").finish_non_exhaustive()
    }
}

/// How long generators wait for the handlers' consumers to be assigned their partitions.
const ASSIGNMENT_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

impl Supervisor {
    /// Loads every plugin of `manifest`, starts the trigger for the handlers and a run for
    /// every generator.
    pub async fn start(
        runtime: Runtime,
        manifest: &Manifest,
        trigger_config: TriggerConfig,
    ) -> anyhow::Result<Arc<Supervisor>> {
        let mut loaded = Vec::new();
        for spec in &manifest.plugins {
            let p = runtime.load(spec).await?;
            tracing::info!(plugin = %p.name, kind = %p.kind, digest = p.short_digest(), cache = ?p.cache, "plugin loaded");
            loaded.push((spec.clone(), p));
        }
        let kafka = trigger_config.kafka.clone();
        let topic_partitions = trigger_config.topic_partitions;
        let trigger = Trigger::start(trigger_config, loaded.clone(), None).await?;
        // Generators start once the handlers' consumers have joined their groups, so that
        // the first events are not left waiting out a group join (nothing would be lost:
        // a new group starts from the earliest offset).
        if loaded.iter().any(|(spec, _)| spec.kind == Kind::Generator)
            && !trigger.wait_assigned(ASSIGNMENT_WAIT).await
        {
            tracing::warn!(
                waited_s = ASSIGNMENT_WAIT.as_secs(),
                "some handler consumers have no partitions assigned yet; starting the generators anyway"
            );
        }
        let sup = Arc::new(Supervisor {
            runtime,
            kafka,
            manifest_path: manifest.path.clone(),
            manifest_connections: manifest.connections.clone(),
            topic_partitions,
            trigger: Mutex::new(Some(trigger)),
            plugins: Mutex::new(BTreeMap::new()),
        });
        {
            let mut plugins = sup.plugins.lock().await;
            for (spec, current) in loaded {
                let generator = (spec.kind == Kind::Generator)
                    .then(|| sup.start_generator(&spec, current.clone()));
                plugins.insert(
                    spec.name.clone(),
                    Entry {
                        spec,
                        current,
                        previous: None,
                        swaps: 0,
                        last_change: None,
                        generator,
                    },
                );
            }
        }
        Ok(sup)
    }

    fn start_generator(&self, spec: &PluginSpec, plugin: Arc<LoadedPlugin>) -> GeneratorRun {
        let (stop, stopping) = watch::channel(false);
        let kafka = self.kafka.clone();
        let spec = spec.clone();
        let partitions = self.topic_partitions;
        let task = tokio::spawn(async move {
            let r = generate::run(
                &kafka,
                &spec,
                plugin,
                Pace::from_config(&spec),
                partitions,
                stopping,
            )
            .await;
            if let Err(e) = &r {
                tracing::error!(error = %e, "generator stopped");
            }
            r
        });
        GeneratorRun { stop, task }
    }

    /// Stops the generators, then drains the trigger and commits.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        let runs: Vec<GeneratorRun> = self
            .plugins
            .lock()
            .await
            .values_mut()
            .filter_map(|e| e.generator.take())
            .collect();
        for run in &runs {
            let _ = run.stop.send(true);
        }
        for run in runs {
            let _ = run.task.await;
        }
        if let Some(trigger) = self.trigger.lock().await.take() {
            trigger.shutdown().await?;
        }
        Ok(())
    }

    /// The runtime's connections, for readiness.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The Kafka connection the host consumes with (the console's dead letters).
    pub fn kafka(&self) -> &Kafka {
        &self.kafka
    }

    /// Every plugin's manifest entry as it runs now (the console's graph and limits).
    pub async fn specs(&self) -> Vec<PluginSpec> {
        self.plugins
            .lock()
            .await
            .values()
            .map(|e| e.spec.clone())
            .collect()
    }

    /// Hot swap: loads `wasm` (default: the manifest's path, re-read) as the new version of
    /// `name` and swaps it in at the next batch boundary. Refused, with nothing changed,
    /// when the new version fails any load check.
    pub async fn reload(&self, name: &str, wasm: Option<&Path>) -> Result<SwapReport, SwapError> {
        let spec = {
            let plugins = self.plugins.lock().await;
            let entry = plugins
                .get(name)
                .ok_or_else(|| SwapError::NoSuchPlugin(name.to_string()))?;
            let mut spec = entry.spec.clone();
            if let Some(w) = wasm {
                spec.wasm = w.to_path_buf();
            }
            spec
        };
        // Off the event path: compile, link, type-check, bind the grants.
        let new = match self.runtime.load(&spec).await {
            Ok(p) => p,
            Err(e) => {
                self.count_swap(name, "refused");
                tracing::warn!(plugin = %name, reason = %e, "new version refused; the running one stays");
                return Err(SwapError::Refused(e.to_string()));
            }
        };
        self.install(name, new, false).await
    }

    /// Returns `name` to the version before the last swap (which becomes the previous).
    pub async fn rollback(&self, name: &str) -> Result<SwapReport, SwapError> {
        let previous = {
            let plugins = self.plugins.lock().await;
            let entry = plugins
                .get(name)
                .ok_or_else(|| SwapError::NoSuchPlugin(name.to_string()))?;
            entry
                .previous
                .clone()
                .ok_or_else(|| SwapError::NoPrevious(name.to_string()))?
        };
        self.install(name, previous, true).await
    }

    async fn install(
        &self,
        name: &str,
        new: Arc<LoadedPlugin>,
        rollback: bool,
    ) -> Result<SwapReport, SwapError> {
        let mut plugins = self.plugins.lock().await;
        let entry = plugins
            .get_mut(name)
            .ok_or_else(|| SwapError::NoSuchPlugin(name.to_string()))?;
        let old = entry.current.clone();
        let changes = new.changes_from(&old);
        if changes.is_empty() && !rollback {
            tracing::info!(plugin = %name, digest = old.short_digest(), "same component, config, grants and limits: nothing to swap");
            return Ok(SwapReport {
                plugin: name.to_string(),
                digest: new.digest.clone(),
                previous: old.digest.clone(),
                result: "unchanged".into(),
                changed: Vec::new(),
            });
        }
        if let Some(trigger) = self.trigger.lock().await.as_ref() {
            trigger.replace(new.clone());
        }
        let changed = describe(&changes);
        entry.previous = Some(old.clone());
        entry.current = new.clone();
        entry.swaps += 1;
        entry.last_change = Some(if rollback {
            format!("rolled back: {changed}")
        } else {
            changed.clone()
        });
        let result = if rollback { "rollback" } else { "ok" };
        self.count_swap(name, result);
        for what in &changes {
            metrics::global()
                .swap_changes
                .get_or_create(&SwapChangeLabels {
                    plugin: name.to_string(),
                    change: (*what).to_string(),
                })
                .inc();
        }
        tracing::info!(plugin = %name, digest = new.short_digest(), previous = old.short_digest(), result, %changed, "plugin swapped");
        measure_pause(name.to_string(), old.clone(), new.clone());
        Ok(SwapReport {
            plugin: name.to_string(),
            digest: new.digest.clone(),
            previous: old.digest.clone(),
            result: if rollback { "rolled back" } else { "swapped" }.into(),
            changed: changes.iter().map(|c| (*c).to_string()).collect(),
        })
    }

    fn count_swap(&self, name: &str, result: &str) {
        metrics::global()
            .swaps
            .get_or_create(&SwapLabels {
                plugin: name.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Re-reads the manifest: plugins added are loaded and started, plugins removed are
    /// drained and stopped, plugins whose entry changed are reloaded: a new consumer (or a
    /// new generator run) when their topics, group or kind changed or they are generators;
    /// otherwise a swap when their component, config, grants or limits changed, and nothing
    /// when they did not (e.g. only the file's path changed, to the same bytes). Every new
    /// version is loaded before anything changes; a manifest with errors changes nothing, and
    /// so does one whose plugins could need more instances than the pool made at start holds.
    ///
    /// Answers one line per change: `added <name>`, `removed <name>`, `restarted <name>`,
    /// `swapped <name> (config changed)`, `unchanged <name> (same component and settings)`,
    /// and `not applied [connections] (…)` when the manifest's `[connections]` differs from
    /// the one the host started with: the host's clients are made when it starts, so new
    /// connection settings take a restart (which loses nothing: it drains and commits).
    pub async fn reload_manifest(&self) -> Result<Vec<String>, SwapError> {
        let path = self
            .manifest_path
            .clone()
            .ok_or_else(|| SwapError::Refused("the host was not started from a file".into()))?;
        let manifest = Manifest::load(&path).map_err(|errors| {
            SwapError::Refused(
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        // The instance pool was made at start: the new set must fit it, as the set at start did.
        let (needed, slots) = (
            manifest.instance_slots(),
            self.runtime.config().max_instances,
        );
        if needed > slots {
            return Err(SwapError::Refused(format!(
                "the manifest's plugins may run {} instances at once (limits.max_instances \
                 added up), and twice that while versions are swapped: over the {slots} slots of \
                 the instance pool this host made when it started; restart the host to use it",
                needed / 2
            )));
        }
        let current: BTreeMap<String, PluginSpec> = self
            .plugins
            .lock()
            .await
            .iter()
            .map(|(k, e)| (k.clone(), e.spec.clone()))
            .collect();
        // Load every new or changed plugin first: refuse the whole reload if one fails.
        let mut load = Vec::new();
        for spec in &manifest.plugins {
            if current.get(&spec.name) != Some(spec) {
                let p = self
                    .runtime
                    .load(spec)
                    .await
                    .map_err(|e| SwapError::Refused(e.to_string()))?;
                load.push((spec.clone(), p));
            }
        }
        let mut changes = Vec::new();
        if manifest.connections != self.manifest_connections {
            tracing::warn!(
                manifest = %path.display(),
                "the manifest's [connections] changed: not applied until the host restarts"
            );
            changes.push(
                "not applied [connections] (the host connects when it starts: restart it to use the new settings)"
                    .to_string(),
            );
        }
        let wanted: Vec<&str> = manifest.plugins.iter().map(|p| p.name.as_str()).collect();
        for name in current.keys().filter(|n| !wanted.contains(&n.as_str())) {
            self.remove(name).await?;
            changes.push(format!("removed {name}"));
        }
        for (spec, plugin) in load {
            match current.get(&spec.name) {
                None => {
                    self.add(&spec, plugin).await?;
                    changes.push(format!("added {}", spec.name));
                }
                Some(old)
                    if old.subscribe == spec.subscribe
                        && old.group_id() == spec.group_id()
                        && old.kind == spec.kind
                        && spec.kind == Kind::Handler =>
                {
                    let report = self.install(&spec.name, plugin, false).await?;
                    if let Some(e) = self.plugins.lock().await.get_mut(&spec.name) {
                        e.spec = spec.clone();
                    }
                    changes.push(if report.changed.is_empty() {
                        format!("unchanged {} (same component and settings)", spec.name)
                    } else {
                        format!("swapped {} ({})", spec.name, describe(&report.changed))
                    });
                }
                Some(_) => {
                    self.remove(&spec.name).await?;
                    self.add(&spec, plugin).await?;
                    changes.push(format!("restarted {}", spec.name));
                }
            }
        }
        tracing::info!(?changes, "manifest reloaded");
        Ok(changes)
    }

    async fn add(&self, spec: &PluginSpec, plugin: Arc<LoadedPlugin>) -> Result<(), SwapError> {
        if spec.kind == Kind::Handler
            && let Some(t) = self.trigger.lock().await.as_mut()
        {
            t.add(spec, plugin.clone())
                .await
                .map_err(|e| SwapError::Refused(e.to_string()))?;
        }
        let generator =
            (spec.kind == Kind::Generator).then(|| self.start_generator(spec, plugin.clone()));
        self.plugins.lock().await.insert(
            spec.name.clone(),
            Entry {
                spec: spec.clone(),
                current: plugin,
                previous: None,
                swaps: 0,
                last_change: None,
                generator,
            },
        );
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<(), SwapError> {
        let entry = self.plugins.lock().await.remove(name);
        if let Some(run) = entry.and_then(|e| e.generator) {
            let _ = run.stop.send(true);
            let _ = run.task.await;
        }
        if let Some(t) = self.trigger.lock().await.as_mut() {
            t.remove(name)
                .await
                .map_err(|e| SwapError::Refused(e.to_string()))?;
        }
        Ok(())
    }

    /// Every plugin's component file, as its manifest entry names it (what `--watch`
    /// watches).
    pub async fn wasm_paths(&self) -> Vec<(String, PathBuf)> {
        self.plugins
            .lock()
            .await
            .iter()
            .map(|(n, e)| (n.clone(), e.spec.wasm.clone()))
            .collect()
    }

    /// Every plugin's status.
    pub async fn status(&self) -> Vec<PluginStatus> {
        let m = metrics::global();
        let plugins = self.plugins.lock().await;
        let trigger = self.trigger.lock().await;
        let mut out = Vec::new();
        for (name, e) in plugins.iter() {
            let lag = trigger.as_ref().and_then(|t| t.lag(name));
            let label = Metrics::plugin(name);
            if let Some(l) = lag {
                m.lag.get_or_create(&label).set(l);
            }
            let in_flight =
                e.current.in_flight() + e.previous.as_ref().map_or(0, |p| p.in_flight());
            m.in_flight.get_or_create(&label).set(in_flight as i64);
            let state = match &e.generator {
                None if e.spec.kind == Kind::Generator => "stopped".to_string(),
                None => "running".to_string(),
                Some(run) if !run.task.is_finished() => "generating".to_string(),
                Some(_) => "finished".to_string(),
            };
            out.push(PluginStatus {
                name: name.clone(),
                kind: e.spec.kind.to_string(),
                digest: e.current.digest.clone(),
                previous_digest: e.previous.as_ref().map(|p| p.digest.clone()),
                loaded_at: rfc3339(e.current.loaded_at),
                state,
                topics: e.spec.subscribe.clone(),
                group: (e.spec.kind == Kind::Handler).then(|| e.spec.group_id()),
                swaps: e.swaps,
                last_change: e.last_change.clone(),
                processed: m.events_of(name, "ok"),
                dead_lettered: m.events_of(name, "dead_lettered"),
                retried: m.retries.get_or_create(&label).get(),
                generated: m.generated.get_or_create(&label).get(),
                lag,
                in_flight,
            });
        }
        out
    }
}

/// What a swap changed, for people: `config changed`, `component, limits changed`.
fn describe<S: AsRef<str>>(changes: &[S]) -> String {
    if changes.is_empty() {
        return "nothing changed".into();
    }
    let list: Vec<&str> = changes.iter().map(AsRef::as_ref).collect();
    format!("{} changed", list.join(", "))
}

/// Observes the swap pause once the new version has started its first batch: the time
/// between the last batch started on the old version and the first on the new.
fn measure_pause(name: String, old: Arc<LoadedPlugin>, new: Arc<LoadedPlugin>) {
    let swapped = Instant::now();
    tokio::spawn(async move {
        let deadline = swapped + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(first) = new.first_batch_at() {
                let from = old.last_batch_at().unwrap_or(swapped).min(first);
                let pause = first.duration_since(from);
                metrics::global()
                    .swap_pause_seconds
                    .get_or_create(&Metrics::plugin(&name))
                    .observe(pause.as_secs_f64());
                tracing::info!(plugin = %name, pause_ms = pause.as_secs_f64() * 1000.0, "first batch on the new version");
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
}

/// `SystemTime` as RFC 3339, for people.
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
