//! The sandbox: one wasmtime `Engine` and `Linker`, plugins loaded into `InstancePre`s, a
//! fresh `Store` per batch.
//!
//! - The engine uses the pooling allocator (sized by [`RuntimeConfig`]) with copy-on-write
//!   memory images, so an instantiation is a few microseconds.
//! - Epoch interruption gives every call a deadline; a ticker thread advances the epoch.
//! - Loading a plugin compiles it (or reads it from the on-disk cache), checks its imports
//!   against its grants, links it, and type-checks its exports against its world. All of
//!   that happens before any event reaches it: a plugin that fails any step is refused
//!   with the reason.

mod cache;
mod json;
mod plugin;
mod records;

pub use cache::{CacheOutcome, ComponentCache};
pub use plugin::{BatchFailure, Generator, InstancePermit, LoadedPlugin};

pub use records::{RecordMeta, Records};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::backends::{self, Backends, Connections};
use crate::bindings::PlatformHandlerPre;
use crate::bindings::generator::EventGeneratorPre;
use crate::bindings::json::JsonMinimalHandlerPre;
use crate::bindings::json_partitions::JsonPartitionsMinimalHandlerPre;
use crate::bindings::partitions::PartitionsMinimalHandlerPre;
use crate::bindings::setup::PluginSetupPre;
use crate::manifest::{Kind, PluginSpec};
use crate::state::{HostState, PluginEnv};

/// How the engine is sized.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Instances alive at once across every plugin: the pooling allocator's slots.
    pub max_instances: u32,
    /// The largest memory any plugin may be given, in MiB (a pool slot's size).
    pub max_memory_mb: u32,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch advances: the granularity of call deadlines.
    pub epoch_tick: Duration,
    /// The most core module instances one component may contain (`--max-core-instances`).
    /// A Rust plugin has a handful; a Python one built with `componentize-py --stub-wasi`
    /// has about 40; a JavaScript one a dozen.
    pub max_core_instances_per_component: u32,
    /// The most linear memories one component may define (`--max-memories`).
    pub max_memories_per_component: u32,
    /// The most tables one component may define (`--max-tables`).
    pub max_tables_per_component: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: 128,
            max_memory_mb: 512,
            cache_dir: ComponentCache::default_dir(),
            epoch_tick: Duration::from_millis(5),
            max_core_instances_per_component: 64,
            max_memories_per_component: 8,
            max_tables_per_component: 32,
        }
    }
}

/// Why a plugin was refused at load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("plugin `{plugin}`: cannot read {path}: {reason}")]
    Read {
        plugin: String,
        path: String,
        reason: String,
    },
    /// The file is not a valid component for this host.
    #[error("plugin `{plugin}`: {path} is not a valid WebAssembly component: {reason}")]
    Compile {
        plugin: String,
        path: String,
        reason: String,
    },
    /// The component needs more of the engine than its settings allow (core instances,
    /// memories or tables per component): a setting to raise, not an invalid component.
    #[error(
        "plugin `{plugin}`: {path} needs more than the engine allows: {reason}; raise `{setting}` (runtime setting `{flag}`, env `{env}`)"
    )]
    EngineLimit {
        plugin: String,
        path: String,
        reason: String,
        /// The [`RuntimeConfig`] field to raise.
        setting: &'static str,
        /// The command-line flag that sets it.
        flag: &'static str,
        /// The environment variable that sets it.
        env: &'static str,
    },
    /// The component imports interfaces its manifest entry does not grant: every one of
    /// them is listed, each with the manifest line that would grant it.
    #[error("plugin `{plugin}`: {}", not_granted_text(missing))]
    NotGranted {
        plugin: String,
        /// Every ungranted import, in import order.
        missing: Vec<MissingGrant>,
    },
    /// The component was built against another version of the WIT contract.
    #[error(
        "plugin `{plugin}`: imports `{interface}`, but this host speaks `polyhost:platform@{host}`: rebuild the plugin against this host's `wit/`"
    )]
    ContractVersion {
        plugin: String,
        interface: String,
        host: &'static str,
    },
    /// The plugin's memory limit is over what the engine's instance pool gives a memory
    /// (the pool is sized when the runtime is made).
    #[error(
        "plugin `{plugin}`: `limits.memory_mb` = {asked} is over the {pool} MiB this host's instance pool gives a memory (the runtime's `max_memory_mb`, sized when the host starts): restart the host to use it"
    )]
    MemoryOverPool {
        plugin: String,
        asked: u32,
        pool: u32,
    },
    /// The component imports something the host does not provide at all.
    #[error("plugin `{plugin}`: imports `{interface}`, which polyhost does not provide")]
    UnknownImport { plugin: String, interface: String },
    /// Linking or type-checking the exports failed.
    #[error("plugin `{plugin}`: {reason}")]
    Link { plugin: String, reason: String },
    /// A granted backend could not be reached.
    #[error("plugin `{plugin}`: {reason}")]
    Connect { plugin: String, reason: String },
    /// The plugin's `setup` returned an error, trapped or ran past its time limit.
    #[error("plugin `{plugin}`: setup failed: {reason}")]
    Setup { plugin: String, reason: String },
}

/// One import a plugin's grants do not cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingGrant {
    /// The imported interface, e.g. `polyhost:platform/kv@0.2.0`.
    pub interface: String,
    /// The grant it needs, e.g. `keyvalue`.
    pub grant: backends::GrantId,
    /// A `[plugin.grants]` line that would grant it, with placeholders to fill in.
    pub manifest_line: String,
}

fn not_granted_text(missing: &[MissingGrant]) -> String {
    let mut grants: Vec<backends::GrantId> = Vec::new();
    let mut s = format!(
        "{} import{} not granted in the manifest:",
        missing.len(),
        if missing.len() == 1 { " is" } else { "s are" }
    );
    for m in missing {
        s.push_str(&format!(
            "\n  - imports `{}`, which needs `[plugin.grants] {}`",
            m.interface, m.grant
        ));
        if !grants.contains(&m.grant) {
            grants.push(m.grant);
        }
    }
    s.push_str("\n  grant them by adding under `[plugin.grants]`:");
    for m in missing {
        if grants.contains(&m.grant) {
            grants.retain(|g| *g != m.grant);
            s.push_str(&format!("\n    {}", m.manifest_line));
        }
    }
    s.push_str(
        "\n  or rebuild the plugin against a world that does not import what it does not use",
    );
    s
}

/// Which engine setting a compile error of the pooling allocator is about, if any:
/// `(setting, flag, env)`.
fn engine_limit(reason: &str) -> Option<(&'static str, &'static str, &'static str)> {
    if !reason.contains("in the pooling allocator") {
        return None;
    }
    if reason.contains("core module instances") {
        Some((
            "max_core_instances_per_component",
            "--max-core-instances",
            "POLYHOST_MAX_CORE_INSTANCES",
        ))
    } else if reason.contains("linear memories") {
        Some((
            "max_memories_per_component",
            "--max-memories",
            "POLYHOST_MAX_MEMORIES",
        ))
    } else if reason.contains("tables") {
        Some((
            "max_tables_per_component",
            "--max-tables",
            "POLYHOST_MAX_TABLES",
        ))
    } else {
        None
    }
}

/// The engine, linker and connections every plugin shares.
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    connections: Arc<Connections>,
    cache: ComponentCache,
    ticker_stop: Arc<AtomicBool>,
    config: RuntimeConfig,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Builds the engine and linker, and starts the epoch ticker.
    pub fn new(config: RuntimeConfig, connections: Arc<Connections>) -> Result<Runtime> {
        let mut pool = PoolingAllocationConfig::default();
        let slots = config.max_instances.max(1);
        let core = config.max_core_instances_per_component.max(1);
        let memories = config.max_memories_per_component.max(1);
        let tables = config.max_tables_per_component.max(1);
        // The totals leave room for every slot to hold a component at the per-component
        // maximum of core instances and tables (cheap: bookkeeping, reserved lazily), and
        // for the largest component's memories beside the others' usual two: each memory
        // slot reserves address space for `max_memory_mb`.
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(core.max(8)))
            .total_memories(slots.saturating_mul(2).max(memories))
            .total_tables(slots.saturating_mul(tables.max(8)))
            .total_stacks(slots)
            .max_memories_per_component(memories)
            .max_core_instances_per_component(core)
            .max_tables_per_component(tables)
            .max_memory_size(config.max_memory_mb as usize * 1024 * 1024);
        // Reset a freed slot's tables by writing their first 16 KiB rather than giving the
        // pages back to the kernel: an instantiation then takes ~13 µs instead of ~23 µs
        // here (the tables are small; every instance's first writes to them faulted).
        // Linear memory stays decommitted: keeping it resident measured slower.
        pool.table_keep_resident(16 * 1024);

        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .max_wasm_stack(1024 * 1024)
            .async_stack_size(2 * 1024 * 1024)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(anyhow::Error::from)?;

        let mut linker = Linker::new(&engine);
        backends::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("polyhost-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })?;
        }

        let cache = ComponentCache::new(&engine, config.cache_dir.clone());
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            connections,
            cache,
            ticker_stop,
            config,
        })
    }

    /// How the engine was sized.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The shared connections.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// Compiles, checks and links `spec`'s component, binds its granted backends and runs
    /// its `setup` export, when it has one: ready to handle events.
    pub async fn load(&self, spec: &PluginSpec) -> Result<Arc<LoadedPlugin>, LoadError> {
        let checked = self.check(spec).await?;
        let backends = Backends::bind(&self.connections, &spec.name, &spec.grants, &spec.limits)
            .await
            .map_err(|e| LoadError::Connect {
                plugin: spec.name.clone(),
                reason: format!("{e:#}"),
            })?;
        let env = Arc::new(PluginEnv {
            name: spec.name.clone(),
            config: spec.config_strings(),
            host_call_timeout: Duration::from_millis(spec.limits.host_call_timeout_ms),
            max_result_bytes: usize::try_from(spec.limits.max_result_bytes).unwrap_or(usize::MAX),
            max_value_bytes: usize::try_from(spec.limits.max_value_bytes).unwrap_or(usize::MAX),
            backends,
        });
        let plugin = LoadedPlugin::new(
            self.engine.clone(),
            spec,
            checked,
            env,
            self.config.epoch_tick,
        );
        let started = std::time::Instant::now();
        if plugin.setup().await.map_err(|reason| LoadError::Setup {
            plugin: spec.name.clone(),
            reason,
        })? {
            tracing::info!(
                plugin = %spec.name,
                took_ms = started.elapsed().as_millis() as u64,
                "plugin set up"
            );
        }
        Ok(Arc::new(plugin))
    }

    /// Everything [`Runtime::load`] does short of connecting: reads, compiles (or reads
    /// the cache), checks imports against grants and exports against the plugin's world.
    /// `polyhost check` runs this for every plugin.
    pub async fn check(&self, spec: &PluginSpec) -> Result<Checked, LoadError> {
        let plugin = spec.name.clone();
        // A store's memory limit past the pool's slot would be cut to the slot, silently.
        if spec.limits.memory_mb > self.config.max_memory_mb {
            return Err(LoadError::MemoryOverPool {
                plugin,
                asked: spec.limits.memory_mb,
                pool: self.config.max_memory_mb,
            });
        }
        let path = spec.wasm.display().to_string();
        let bytes = tokio::fs::read(&spec.wasm)
            .await
            .map_err(|e| LoadError::Read {
                plugin: plugin.clone(),
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let digest = hex::encode(Sha256::digest(&bytes));

        let engine = self.engine.clone();
        let cache = self.cache.clone();
        let d = digest.clone();
        let compiled =
            tokio::task::spawn_blocking(move || cache.get_or_compile(&engine, &d, &bytes))
                .await
                .map_err(|e| LoadError::Compile {
                    plugin: plugin.clone(),
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
        let (component, cache_outcome) = compiled.map_err(|e| {
            let reason = format!("{e:#}");
            match engine_limit(&reason) {
                Some((setting, flag, env)) => LoadError::EngineLimit {
                    plugin: plugin.clone(),
                    path: path.clone(),
                    reason: reason.replace(" in the pooling allocator", ""),
                    setting,
                    flag,
                    env,
                },
                None => LoadError::Compile {
                    plugin: plugin.clone(),
                    path: path.clone(),
                    reason,
                },
            }
        })?;

        check_imports(&self.engine, &component, spec)?;

        let link = |reason: String| LoadError::Link {
            plugin: plugin.clone(),
            reason,
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| link(format!("cannot be linked: {e:#}")))?;
        let setup = setup_export(&self.engine, &component, &pre).map_err(link)?;
        let instance = match spec.kind {
            Kind::Handler => {
                PreInstance::Handler(HandlerPre::new(&self.engine, &component, pre).map_err(link)?)
            }
            Kind::Generator => {
                PreInstance::Generator(EventGeneratorPre::new(pre).map_err(|e| {
                    link(format!(
                        "does not export `polyhost:platform/generator@{CONTRACT_VERSION}` as the generator world requires ({e:#})"
                    ))
                })?)
            }
        };
        Ok(Checked {
            digest,
            cache: cache_outcome,
            instance,
            setup,
        })
    }
}

/// A plugin that passed every load check: compiled, linked, type-checked.
pub struct Checked {
    /// SHA-256 of the component file, lowercase hex: the version digest.
    pub digest: String,
    /// Whether the compiled code came from the cache.
    pub cache: CacheOutcome,
    pub(crate) instance: PreInstance,
    /// The `setup` export, when the component has one.
    pub(crate) setup: Option<PluginSetupPre<HostState>>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("digest", &self.digest)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

pub(crate) enum PreInstance {
    Handler(HandlerPre),
    Generator(EventGeneratorPre<HostState>),
}

/// A handler, in the form of the contract it exports.
pub(crate) enum HandlerPre {
    /// `polyhost:platform/handler`: the events as a `list<event>`.
    Typed(PlatformHandlerPre<HostState>),
    /// `polyhost:platform/json-handler`: the events as one JSON text.
    Json(JsonMinimalHandlerPre<HostState>),
    /// `polyhost:platform/partitions-handler`: the events of several partitions in a call.
    Partitions(PartitionsMinimalHandlerPre<HostState>),
    /// `polyhost:platform/json-partitions-handler`: the events of several partitions in a
    /// call, as one JSON text.
    JsonPartitions(JsonPartitionsMinimalHandlerPre<HostState>),
}

impl HandlerPre {
    /// The form `component` exports, type-checked: exactly one of `handler`,
    /// `json-handler`, `partitions-handler` and `json-partitions-handler`, or the reason
    /// it is refused.
    fn new(
        engine: &Engine,
        component: &Component,
        pre: wasmtime::component::InstancePre<HostState>,
    ) -> Result<HandlerPre, String> {
        let forms = [
            ("handler", "minimal-handler"),
            ("json-handler", "json-minimal-handler"),
            ("partitions-handler", "partitions-minimal-handler"),
            ("json-partitions-handler", "json-partitions-minimal-handler"),
        ]
        .map(|(form, world)| {
            (
                format!("polyhost:platform/{form}@{CONTRACT_VERSION}"),
                world,
            )
        });
        let ty = component.component_type();
        let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
        let exported: Vec<&(String, &str)> = forms
            .iter()
            .filter(|(name, _)| exports.contains(&name.as_str()))
            .collect();
        let names = |forms: &[&(String, &str)]| {
            forms
                .iter()
                .map(|(name, world)| format!("`{name}` (world `{world}`)"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let [(name, world)] = exported.as_slice() else {
            let all: Vec<&(String, &str)> = forms.iter().collect();
            return Err(if exported.is_empty() {
                format!(
                    "does not export a handler: a handler exports exactly one of {}",
                    names(&all)
                )
            } else {
                format!(
                    "exports {}: a handler exports exactly one of them",
                    names(&exported)
                )
            });
        };
        let wrong = |e: wasmtime::Error| {
            format!("does not export `{name}` as the {world} world requires ({e:#})")
        };
        match *world {
            "minimal-handler" => PlatformHandlerPre::new(pre)
                .map(HandlerPre::Typed)
                .map_err(wrong),
            "json-minimal-handler" => JsonMinimalHandlerPre::new(pre)
                .map(HandlerPre::Json)
                .map_err(wrong),
            "partitions-minimal-handler" => PartitionsMinimalHandlerPre::new(pre)
                .map(HandlerPre::Partitions)
                .map_err(wrong),
            _ => JsonPartitionsMinimalHandlerPre::new(pre)
                .map(HandlerPre::JsonPartitions)
                .map_err(wrong),
        }
    }
}

/// The component's `setup` export (see `wit/setup.wit`), type-checked: `None` when it has
/// none, the reason when it has one of another type.
fn setup_export(
    engine: &Engine,
    component: &Component,
    pre: &wasmtime::component::InstancePre<HostState>,
) -> Result<Option<PluginSetupPre<HostState>>, String> {
    let name = format!("polyhost:platform/setup@{CONTRACT_VERSION}");
    if !component
        .component_type()
        .exports(engine)
        .any(|(export, _)| export == name)
    {
        return Ok(None);
    }
    PluginSetupPre::new(pre.clone()).map(Some).map_err(|e| {
        format!(
            "exports `{name}` of another type than `setup: func() -> result<_, string>` ({e:#})"
        )
    })
}

/// The version of the `polyhost:platform` package in `wit/` (checked by a test).
pub const CONTRACT_VERSION: &str = "0.2.0";

/// Whether `import` is a `polyhost:platform` interface of another version than this host's.
fn other_contract_version(import: &str) -> bool {
    match import.strip_prefix("polyhost:platform/") {
        Some(rest) => rest.split_once('@').map(|(_, v)| v) != Some(CONTRACT_VERSION),
        None => false,
    }
}

/// Refuses a component built against another contract version, that imports something
/// the host does not provide, or that imports interfaces its grants do not cover (all of
/// those listed in one error).
fn check_imports(
    engine: &Engine,
    component: &Component,
    spec: &PluginSpec,
) -> Result<(), LoadError> {
    let ty = component.component_type();
    let mut missing = Vec::new();
    for (name, _) in ty.imports(engine) {
        if other_contract_version(name) {
            return Err(LoadError::ContractVersion {
                plugin: spec.name.clone(),
                interface: name.to_string(),
                host: CONTRACT_VERSION,
            });
        }
        match backends::import_needs(name) {
            backends::ImportNeeds::Unknown => {
                return Err(LoadError::UnknownImport {
                    plugin: spec.name.clone(),
                    interface: name.to_string(),
                });
            }
            backends::ImportNeeds::Grant(grant) if !spec.grants.has(grant) => {
                missing.push(MissingGrant {
                    interface: name.to_string(),
                    grant,
                    manifest_line: grant.grant_line().to_string(),
                });
            }
            _ => {}
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LoadError::NotGranted {
            plugin: spec.name.clone(),
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_version_is_the_one_in_wit() {
        let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let package = format!("package polyhost:platform@{CONTRACT_VERSION};");
        let mut files = 0;
        for entry in std::fs::read_dir(&wit).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wit") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(text.starts_with(&package), "{}", path.display());
                files += 1;
            }
        }
        assert!(files >= 9, "{files} WIT files in {}", wit.display());
    }

    #[test]
    fn every_missing_grant_is_listed_and_each_grant_line_given_once() {
        use backends::GrantId;
        let missing: Vec<MissingGrant> = [
            ("polyhost:platform/messaging@0.2.0", GrantId::Messaging),
            ("polyhost:platform/kv@0.2.0", GrantId::Keyvalue),
            ("wasi:keyvalue/store@0.2.0-draft", GrantId::Keyvalue),
            ("polyhost:platform/search@0.2.0", GrantId::Search),
        ]
        .into_iter()
        .map(|(i, g)| MissingGrant {
            interface: i.into(),
            grant: g,
            manifest_line: g.grant_line().to_string(),
        })
        .collect();
        let text = not_granted_text(&missing);
        assert!(text.starts_with("4 imports are not granted"), "{text}");
        for m in &missing {
            assert!(text.contains(&format!("`{}`", m.interface)), "{text}");
            assert_eq!(text.matches(&m.manifest_line).count(), 1, "{text}");
        }
        assert!(text.contains(r#"messaging = { publish = ["<topic>"] }"#));
        assert!(text.contains(r#"search = { indices = ["<index>"] }"#));
    }

    #[test]
    fn a_pool_limit_is_told_apart_from_an_invalid_component() {
        let over = "The component transitively contains 40 core module instances, which exceeds the configured maximum of 32 in the pooling allocator";
        assert_eq!(
            engine_limit(over).map(|l| l.0),
            Some("max_core_instances_per_component")
        );
        assert_eq!(
            engine_limit("The component transitively contains 9 Wasm linear memories, which exceeds the configured maximum of 8 in the pooling allocator").map(|l| l.0),
            Some("max_memories_per_component")
        );
        assert_eq!(engine_limit("failed to parse WebAssembly module"), None);
    }

    #[test]
    fn imports_of_another_contract_version_are_told_apart() {
        assert!(!other_contract_version(&format!(
            "polyhost:platform/types@{CONTRACT_VERSION}"
        )));
        assert!(other_contract_version("polyhost:platform/types@0.1.0"));
        assert!(other_contract_version("polyhost:platform/records"));
        assert!(!other_contract_version("wasi:logging/logging@0.1.0-draft"));
        assert!(!other_contract_version("wasi:cli/environment@0.2.6"));
    }
}
