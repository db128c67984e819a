//! A loaded plugin version, and the calls into it: one fresh `Store` per batch, or, with
//! `[plugin.limits] instance = "reused"`, an instance kept across batches.
//!
//! A reused instance is discarded (never handed another batch) after any failed batch —
//! a trap, a timeout, a wrong number of outcomes — and after `reuse_batches` batches; a
//! hot swap loads a new [`LoadedPlugin`], and the old version's idle instances are dropped
//! with it. The batch's Kafka records are set before and cleared after every call, so no
//! batch sees another's records.
//!
//! A handler exports one of the contract's four forms, `handler` (one partition's events
//! as a `list<event>`), `json-handler` (the same as one JSON text, made per call by
//! `json.rs`), `partitions-handler` (the events of several partitions in one call) or
//! `json-partitions-handler` (the same as one JSON text); everything around the call —
//! deadlines, the length check, instance reuse — is the same for all four.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{Engine, Store, StoreLimitsBuilder, Trap};

use super::{CacheOutcome, Checked, HandlerPre, PreInstance, Records};
use crate::bindings::PlatformHandler;
use crate::bindings::generator::EventGenerator;
use crate::bindings::json::JsonMinimalHandler;
use crate::bindings::json_partitions::JsonPartitionsMinimalHandler;
use crate::bindings::partitions::PartitionsMinimalHandler;
use crate::bindings::partitions::exports::polyhost::platform::partitions_handler::PartitionEvents;
use crate::bindings::polyhost::platform::messaging::Message;
use crate::bindings::polyhost::platform::types::{BatchInfo, Event, Outcome};
use crate::bindings::setup::PluginSetupPre;
use crate::manifest::{InstanceMode, Kind, Limits, PluginSpec};
use crate::state::{HostState, PluginEnv};

/// Why a whole batch failed. Every event of the batch shares the failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchFailure {
    /// The plugin trapped: a panic, an out-of-bounds access, a stack overflow, its memory
    /// limit, or a host bug surfaced as a trap.
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The call ran past the plugin's `call_timeout_ms`.
    #[error("plugin call exceeded its time limit of {0} ms")]
    Timeout(u64),
    /// The plugin returned a number of outcomes other than the number of events.
    #[error("plugin returned {outcomes} outcomes for {events} events")]
    WrongLength { events: usize, outcomes: usize },
    /// A `partitions-handler` returned a number of outcome lists other than the number of
    /// partitions of the call.
    #[error("plugin returned {lists} lists of outcomes for {partitions} partitions")]
    WrongPartitions { partitions: usize, lists: usize },
    /// The plugin could not be instantiated (e.g. its start function trapped, or every
    /// pool slot is taken).
    #[error("plugin could not be instantiated: {0}")]
    Instantiate(String),
    /// The plugin is of the other kind (a generator handed events, or the reverse).
    #[error("plugin is a {0}, not the kind this call needs")]
    WrongKind(Kind),
}

impl BatchFailure {
    /// Whether the failure is the plugin's fault and will recur (dead-letter the events),
    /// as opposed to the host's momentary state (retry).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, BatchFailure::Instantiate(_))
    }
}

/// One version of one plugin, ready to run: its `InstancePre`, limits and environment.
pub struct LoadedPlugin {
    /// The plugin's name.
    pub name: String,
    /// SHA-256 of the component file: the version digest.
    pub digest: String,
    /// Handler or generator.
    pub kind: Kind,
    /// Whether the compiled code came from the on-disk cache.
    pub cache: CacheOutcome,
    /// The limits this version runs under.
    pub limits: Limits,
    /// The manifest entry this version was loaded from: with the digest, what makes it
    /// this version (config, grants, limits).
    spec: PluginSpec,
    engine: Engine,
    env: Arc<PluginEnv>,
    instance: PreInstance,
    /// The `setup` export, when the component has one.
    setup: Option<PluginSetupPre<HostState>>,
    permits: Arc<Semaphore>,
    epoch_tick: Duration,
    /// When this version was loaded.
    pub loaded_at: std::time::SystemTime,
    first_batch: OnceLock<Instant>,
    last_batch: Mutex<Option<Instant>>,
    /// Idle instances kept for the next batches (`instance = "reused"` only); at most
    /// `max_instances` exist, since each batch holds a permit while it has one out.
    idle: Mutex<Vec<Kept>>,
}

/// A free instance of one plugin version, held from [`LoadedPlugin::instance`] until its
/// batch is handed over with [`LoadedPlugin::handle_holding`]: what lets a caller go on
/// filling a batch while it waits for an instance.
#[derive(Debug)]
pub struct InstancePermit {
    _permit: OwnedSemaphorePermit,
    /// The version's semaphore, to tell a permit of another version.
    of: Arc<Semaphore>,
}

/// An instance kept across batches.
struct Kept {
    store: Store<HostState>,
    bindings: HandlerBindings,
    /// Batches it has handled.
    batches: u32,
}

/// An instantiated handler, in the form of the contract it exports.
enum HandlerBindings {
    Typed(PlatformHandler),
    Json(JsonMinimalHandler),
    Partitions(PartitionsMinimalHandler),
    JsonPartitions(JsonPartitionsMinimalHandler),
}

/// A call's events as the handler's form takes them: one partition's events themselves,
/// or their JSON text (made once per call, before any instance is taken), or the events of
/// several partitions, themselves or as JSON text.
enum BatchEvents<'a> {
    Typed(&'a BatchInfo, &'a [Event]),
    Json(&'a BatchInfo, String),
    Partitions(Vec<PartitionEvents>),
    JsonPartitions(Vec<BatchInfo>, String),
}

impl HandlerPre {
    async fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<HandlerBindings> {
        Ok(match self {
            HandlerPre::Typed(pre) => HandlerBindings::Typed(pre.instantiate_async(store).await?),
            HandlerPre::Json(pre) => HandlerBindings::Json(pre.instantiate_async(store).await?),
            HandlerPre::Partitions(pre) => {
                HandlerBindings::Partitions(pre.instantiate_async(store).await?)
            }
            HandlerPre::JsonPartitions(pre) => {
                HandlerBindings::JsonPartitions(pre.instantiate_async(store).await?)
            }
        })
    }

    fn events<'a>(&self, batch: &'a BatchInfo, events: &'a [Event]) -> BatchEvents<'a> {
        match self {
            HandlerPre::Typed(_) => BatchEvents::Typed(batch, events),
            HandlerPre::Json(_) => BatchEvents::Json(batch, super::json::events_json(events)),
            HandlerPre::Partitions(_) => BatchEvents::Partitions(vec![PartitionEvents {
                batch: batch.clone(),
                events: events.to_vec(),
            }]),
            HandlerPre::JsonPartitions(_) => BatchEvents::JsonPartitions(
                vec![batch.clone()],
                super::json::partitions_json([events]),
            ),
        }
    }

    /// The events of several partitions as the handler's form takes them (a form that
    /// takes them: see [`LoadedPlugin::takes_partitions`]).
    fn partitions(&self, parts: Vec<PartitionEvents>) -> BatchEvents<'static> {
        match self {
            HandlerPre::JsonPartitions(_) => {
                let text = super::json::partitions_json(parts.iter().map(|p| &p.events[..]));
                BatchEvents::JsonPartitions(parts.into_iter().map(|p| p.batch).collect(), text)
            }
            _ => BatchEvents::Partitions(parts),
        }
    }
}

impl HandlerBindings {
    /// `handle` of whichever form the instance exports: one list of outcomes per partition
    /// of the call.
    async fn call_handle(
        &self,
        store: &mut Store<HostState>,
        events: &BatchEvents<'_>,
    ) -> wasmtime::Result<Vec<Vec<Outcome>>> {
        match (self, events) {
            (HandlerBindings::Typed(b), BatchEvents::Typed(batch, events)) => b
                .polyhost_platform_handler()
                .call_handle(store, batch, events)
                .await
                .map(|outcomes| vec![outcomes]),
            (HandlerBindings::Json(b), BatchEvents::Json(batch, text)) => b
                .polyhost_platform_json_handler()
                .call_handle(store, batch, text)
                .await
                .map(|outcomes| vec![outcomes]),
            (HandlerBindings::Partitions(b), BatchEvents::Partitions(parts)) => {
                b.polyhost_platform_partitions_handler()
                    .call_handle(store, parts)
                    .await
            }
            (HandlerBindings::JsonPartitions(b), BatchEvents::JsonPartitions(parts, text)) => {
                b.polyhost_platform_json_partitions_handler()
                    .call_handle(store, parts, text)
                    .await
            }
            // Never: both come from the same `HandlerPre`. A host bug fails the batch, not
            // the worker.
            _ => Err(wasmtime::Error::msg(
                "host bug: the batch's events were made for the other handler form",
            )),
        }
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    pub(super) fn new(
        engine: Engine,
        spec: &PluginSpec,
        checked: Checked,
        env: Arc<PluginEnv>,
        epoch_tick: Duration,
    ) -> Self {
        LoadedPlugin {
            name: spec.name.clone(),
            digest: checked.digest,
            kind: spec.kind,
            cache: checked.cache,
            limits: spec.limits,
            spec: spec.clone(),
            engine,
            env,
            instance: checked.instance,
            setup: checked.setup,
            permits: Arc::new(Semaphore::new(spec.limits.max_instances as usize)),
            epoch_tick,
            loaded_at: std::time::SystemTime::now(),
            first_batch: OnceLock::new(),
            last_batch: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The first 12 hex digits of the digest, for people.
    pub fn short_digest(&self) -> &str {
        &self.digest[..12]
    }

    /// What makes this version differ from `old`, in a fixed order: `component` (another
    /// digest), `kind`, `config`, `grants`, `limits`. Empty when the two would behave
    /// alike: same component, same environment (the component's file path aside).
    pub fn changes_from(&self, old: &LoadedPlugin) -> Vec<&'static str> {
        let (new, was) = (&self.spec, &old.spec);
        [
            ("component", self.digest != old.digest),
            ("kind", self.kind != old.kind),
            // As the plugin reads it: `1` and `"1"` are the same value to the plugin.
            ("config", new.config_strings() != was.config_strings()),
            ("grants", new.grants != was.grants),
            ("limits", self.limits != old.limits),
        ]
        .into_iter()
        .filter_map(|(what, differs)| differs.then_some(what))
        .collect()
    }

    /// Instances of this plugin running now.
    pub fn in_flight(&self) -> usize {
        self.limits.max_instances as usize - self.permits.available_permits()
    }

    /// When the first batch started on this version, if one has.
    pub fn first_batch_at(&self) -> Option<Instant> {
        self.first_batch.get().copied()
    }

    /// When the latest batch started on this version, if one has.
    pub fn last_batch_at(&self) -> Option<Instant> {
        *self.last_batch.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_store(&self) -> Store<HostState> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_mb as usize * 1024 * 1024)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(&self.engine, HostState::new(self.env.clone(), limits));
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store
    }

    fn arm_deadline(&self, store: &mut Store<HostState>) {
        let ticks = self
            .limits
            .call_timeout_ms
            .div_ceil(self.epoch_tick.as_millis().max(1) as u64)
            .max(1);
        store.set_epoch_deadline(ticks);
    }

    /// A guard on every call: the epoch deadline stops guest code; this also stops a call
    /// stuck in the host past the deadline (plus a grace for the epoch's granularity).
    fn wall_limit(&self) -> Duration {
        Duration::from_millis(self.limits.call_timeout_ms) + self.epoch_tick * 4
    }

    /// Waits for a free instance (at most `max_instances` run at once) and holds it for
    /// [`LoadedPlugin::handle_holding`]; the wait is measured
    /// (`polyhost_instance_wait_seconds`).
    pub async fn instance(&self) -> InstancePermit {
        let waiting = Instant::now();
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        crate::metrics::global()
            .instance_wait_seconds
            .get_or_create(&crate::metrics::PluginLabel {
                plugin: self.name.clone(),
            })
            .observe(waiting.elapsed().as_secs_f64());
        InstancePermit {
            _permit: permit,
            of: self.permits.clone(),
        }
    }

    /// Hands one batch to a fresh instance and returns one outcome per event. `records`
    /// are the Kafka records behind `events`, served by `polyhost:platform/records`.
    pub async fn handle(
        &self,
        batch: &BatchInfo,
        events: &[Event],
        records: Records,
    ) -> Result<Vec<Outcome>, BatchFailure> {
        let permit = self.instance().await;
        self.handle_holding(permit, batch, events, records).await
    }

    /// [`LoadedPlugin::handle`] on the instance `permit` holds. A permit of another version
    /// (the plugin was swapped while the caller waited) is given back and one of this
    /// version waited for. A `partitions-handler` gets the batch as a call of one partition.
    pub async fn handle_holding(
        &self,
        permit: InstancePermit,
        batch: &BatchInfo,
        events: &[Event],
        records: Records,
    ) -> Result<Vec<Outcome>, BatchFailure> {
        let PreInstance::Handler(pre) = &self.instance else {
            return Err(BatchFailure::WrongKind(self.kind));
        };
        let call = pre.events(batch, events);
        let mut lists = self
            .call(permit, pre, call, vec![events.len()], records)
            .await?;
        Ok(lists.pop().unwrap_or_default())
    }

    /// Whether this version exports a partitions form (`partitions-handler` or
    /// `json-partitions-handler`), which takes the events of several partitions in one
    /// call ([`LoadedPlugin::handle_partitions_holding`]).
    pub fn takes_partitions(&self) -> bool {
        matches!(
            self.instance,
            PreInstance::Handler(HandlerPre::Partitions(_) | HandlerPre::JsonPartitions(_))
        )
    }

    /// Hands the events of several partitions to a `partitions-handler` in one call, on
    /// the instance `permit` holds, and returns one list of outcomes per partition (one
    /// outcome per event). `records` are the Kafka records behind every partition's events.
    pub async fn handle_partitions_holding(
        &self,
        permit: InstancePermit,
        parts: Vec<PartitionEvents>,
        records: Records,
    ) -> Result<Vec<Vec<Outcome>>, BatchFailure> {
        let PreInstance::Handler(pre) = &self.instance else {
            return Err(BatchFailure::WrongKind(self.kind));
        };
        if !self.takes_partitions() {
            return Err(BatchFailure::WrongKind(self.kind));
        }
        let lengths = parts.iter().map(|p| p.events.len()).collect();
        let events = pre.partitions(parts);
        self.call(permit, pre, events, lengths, records).await
    }

    /// One call of `handle` with `events`, whose partitions have `lengths` events each.
    async fn call(
        &self,
        permit: InstancePermit,
        pre: &HandlerPre,
        events: BatchEvents<'_>,
        lengths: Vec<usize>,
        records: Records,
    ) -> Result<Vec<Vec<Outcome>>, BatchFailure> {
        let _permit = if Arc::ptr_eq(&permit.of, &self.permits) {
            permit
        } else {
            drop(permit);
            self.instance().await
        };
        let now = Instant::now();
        self.first_batch.get_or_init(|| now);
        *self.last_batch.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        if self.limits.instance == InstanceMode::Reused {
            let call = self.handle_reused(pre, &events, &lengths, records);
            // Host calls made during the call count against this plugin in the metrics.
            return crate::metrics::CALLING_PLUGIN
                .scope(Arc::from(self.name.as_str()), call)
                .await;
        }
        let mut store = self.new_store();
        store.data_mut().records = records;
        self.arm_deadline(&mut store);
        let call = async {
            let bindings = pre
                .instantiate(&mut store)
                .await
                .map_err(|e| BatchFailure::Instantiate(describe(&e)))?;
            bindings
                .call_handle(&mut store, &events)
                .await
                .map_err(|e| self.failure(&e))
        };
        let outcomes = self.bounded(call).await?;
        check_lengths(&lengths, outcomes)
    }

    /// A call on an instance of its own, bounded as such: the host calls made during it
    /// count against this plugin in the metrics, and it is stopped at the wall-clock limit.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, BatchFailure>>,
    ) -> Result<T, BatchFailure> {
        let call = crate::metrics::CALLING_PLUGIN.scope(Arc::from(self.name.as_str()), call);
        tokio::time::timeout(self.wall_limit(), call)
            .await
            .map_err(|_| BatchFailure::Timeout(self.limits.call_timeout_ms))?
    }

    /// [`LoadedPlugin::handle`] on a kept instance (a new one when none is idle). The
    /// caller holds a permit, so at most `max_instances` instances exist.
    async fn handle_reused(
        &self,
        pre: &HandlerPre,
        events: &BatchEvents<'_>,
        lengths: &[usize],
        records: Records,
    ) -> Result<Vec<Vec<Outcome>>, BatchFailure> {
        let kept = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut kept = match kept {
            Some(k) => k,
            None => {
                let mut store = self.new_store();
                self.arm_deadline(&mut store);
                let bindings = tokio::time::timeout(self.wall_limit(), pre.instantiate(&mut store))
                    .await
                    .map_err(|_| BatchFailure::Timeout(self.limits.call_timeout_ms))?
                    .map_err(|e| BatchFailure::Instantiate(describe(&e)))?;
                Kept {
                    store,
                    bindings,
                    batches: 0,
                }
            }
        };
        kept.store.data_mut().records = records;
        self.arm_deadline(&mut kept.store);
        let call = kept.bindings.call_handle(&mut kept.store, events);
        // Any failure drops `kept`: an instance that trapped, timed out (its call abandoned
        // midway) or answered wrongly may be in any state, so it handles nothing more.
        let outcomes = tokio::time::timeout(self.wall_limit(), call)
            .await
            .map_err(|_| BatchFailure::Timeout(self.limits.call_timeout_ms))?
            .map_err(|e| self.failure(&e))?;
        let outcomes = check_lengths(lengths, outcomes)?;
        kept.store.data_mut().records = Records::default();
        kept.batches += 1;
        if kept.batches < self.limits.reuse_batches {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(kept);
        }
        Ok(outcomes)
    }

    /// Instances kept idle for the next batches (`instance = "reused"`).
    pub fn idle_instances(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Creates a `Store` and instantiates the plugin, calling nothing: what every batch
    /// pays before its call. For benchmarks and readiness checks.
    pub async fn instantiate_only(&self) -> Result<(), BatchFailure> {
        let mut store = self.new_store();
        self.arm_deadline(&mut store);
        match &self.instance {
            PreInstance::Handler(pre) => pre.instantiate(&mut store).await.map(drop),
            PreInstance::Generator(pre) => pre.instantiate_async(&mut store).await.map(drop),
        }
        .map_err(|e| BatchFailure::Instantiate(describe(&e)))
    }

    /// Runs the version's `setup` export, when it has one, in an instance of its own under
    /// the plugin's limits, then waits for the background work it started in the backends
    /// (see `wit/setup.wit`). Returns whether there was one; `Err` is the reason it failed.
    pub(super) async fn setup(&self) -> Result<bool, String> {
        let Some(pre) = &self.setup else {
            return Ok(false);
        };
        let mut store = self.new_store();
        self.arm_deadline(&mut store);
        let call = async {
            let bindings = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| BatchFailure::Instantiate(describe(&e)))?;
            bindings
                .polyhost_platform_setup()
                .call_setup(&mut store)
                .await
                .map_err(|e| self.failure(&e))
        };
        self.bounded(call).await.map_err(|e| e.to_string())??;
        self.env.backends.settle().await;
        Ok(true)
    }

    /// Starts a generation run: one instance kept for the whole run, so the generator
    /// keeps its state between calls.
    pub async fn generator(&self) -> Result<Generator, BatchFailure> {
        let PreInstance::Generator(pre) = &self.instance else {
            return Err(BatchFailure::WrongKind(self.kind));
        };
        let mut store = self.new_store();
        self.arm_deadline(&mut store);
        let bindings = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| BatchFailure::Instantiate(describe(&e)))?;
        Ok(Generator {
            store,
            bindings,
            call_timeout_ms: self.limits.call_timeout_ms,
            ticks: self
                .limits
                .call_timeout_ms
                .div_ceil(self.epoch_tick.as_millis().max(1) as u64)
                .max(1),
            wall_limit: self.wall_limit(),
        })
    }

    fn failure(&self, e: &wasmtime::Error) -> BatchFailure {
        if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
            return BatchFailure::Timeout(self.limits.call_timeout_ms);
        }
        BatchFailure::Trap(describe(e))
    }
}

/// A generation run in progress.
pub struct Generator {
    store: Store<HostState>,
    bindings: EventGenerator,
    call_timeout_ms: u64,
    ticks: u64,
    wall_limit: Duration,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator").finish_non_exhaustive()
    }
}

impl Generator {
    /// The next messages to publish, at most `max`; empty when the run is over.
    pub async fn next(&mut self, max: u32) -> Result<Vec<Message>, BatchFailure> {
        self.store.set_epoch_deadline(self.ticks);
        let call = self
            .bindings
            .polyhost_platform_generator()
            .call_next(&mut self.store, max);
        match tokio::time::timeout(self.wall_limit, call).await {
            Err(_) => Err(BatchFailure::Timeout(self.call_timeout_ms)),
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => match e.downcast_ref::<Trap>() {
                Some(Trap::Interrupt) => Err(BatchFailure::Timeout(self.call_timeout_ms)),
                _ => Err(BatchFailure::Trap(describe(&e))),
            },
        }
    }
}

/// `outcomes` if it has one list per partition of the call, each with one outcome per
/// event (`lengths`: the partitions' event counts).
fn check_lengths(
    lengths: &[usize],
    outcomes: Vec<Vec<Outcome>>,
) -> Result<Vec<Vec<Outcome>>, BatchFailure> {
    if outcomes.len() != lengths.len() {
        return Err(BatchFailure::WrongPartitions {
            partitions: lengths.len(),
            lists: outcomes.len(),
        });
    }
    for (&events, list) in lengths.iter().zip(&outcomes) {
        if list.len() != events {
            return Err(BatchFailure::WrongLength {
                events,
                outcomes: list.len(),
            });
        }
    }
    Ok(outcomes)
}

/// A short reason for people and dead-letter headers: the trap when there is one,
/// otherwise the error chain without the wasm backtrace (which goes to the logs).
fn describe(e: &wasmtime::Error) -> String {
    tracing::debug!(error = ?e, "plugin call failed");
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return format!("wasm trap: {trap}");
    }
    let s = e
        .chain()
        .map(|c| c.to_string())
        .filter(|c| !c.starts_with("error while executing at wasm backtrace"))
        .collect::<Vec<_>>()
        .join(": ");
    // The chain may carry the plugin's own text (a panic message): cut at a char boundary.
    crate::text::cap_bytes(&s, 1000).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_multibyte_failure_is_cut_at_a_char_boundary() {
        // Byte 1000 falls inside a `€` (3 bytes, after one ASCII byte): a byte cut panics.
        let e = wasmtime::Error::msg(format!("x{}", "€".repeat(600)));
        let s = super::describe(&e);
        assert!(s.len() <= 1000, "{}", s.len());
        assert!(s.ends_with("… [truncated, 1801 bytes]"), "{s}");
        assert!(s.starts_with("x€€"));
    }
}
