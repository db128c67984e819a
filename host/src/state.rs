//! Per-`Store` state: what one batch's instance of a plugin may reach.
//!
//! App state (connection pools, clients) is built once at start and shared through
//! [`PluginEnv`] (an `Arc`); each `Store` gets a cheap clone of it plus its own resource
//! table, WASI context and memory limits.
//!
//! [`HostState`] itself serves only WASI and the plugin's own interfaces (`types`,
//! `records`); each backend's interfaces see a [`crate::backends::View`] of it, holding the
//! plugin's environment and the resource table, and `wasi:logging`/`wasi:config` see only
//! the [`PluginEnv`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::backends::Backends;
use crate::runtime::Records;

/// Everything one plugin version's stores share.
#[derive(Debug)]
pub struct PluginEnv {
    /// The plugin's name from the manifest.
    pub name: String,
    /// The plugin's `[plugin.config]` values, as `wasi:config` serves them.
    pub config: BTreeMap<String, String>,
    /// The limit on each host call.
    pub host_call_timeout: Duration,
    /// `limits.max_result_bytes`: the most one host call may hand back.
    pub max_result_bytes: usize,
    /// `limits.max_value_bytes`: the most one value the plugin writes may take.
    pub max_value_bytes: usize,
    /// The backends this plugin was granted, each bound to its grant's scope.
    pub backends: Backends,
}

/// The data of one `Store`: one instance of one plugin, for one batch.
pub struct HostState {
    /// The plugin's shared environment.
    pub env: Arc<PluginEnv>,
    /// Resources the guest holds handles to (transactions, buckets, WASI streams).
    pub table: ResourceTable,
    /// An empty WASI context: no files, no environment, no sockets, no arguments. Built on
    /// the first WASI call: building one seeds a CSPRNG from the OS (a system call and a
    /// few allocations), which a batch that never calls WASI should not pay for.
    wasi: Option<WasiCtx>,
    /// Memory and instance limits.
    pub limits: StoreLimits,
    /// The Kafka records behind the batch being handled (none outside a batch).
    pub records: Records,
}

impl HostState {
    /// A fresh state for one `Store` of the plugin `env`.
    pub fn new(env: Arc<PluginEnv>, limits: StoreLimits) -> Self {
        HostState {
            env,
            table: ResourceTable::new(),
            wasi: None,
            limits,
            records: Records::default(),
        }
    }
}

/// The WASI context every store gets: nothing to reach.
fn empty_wasi() -> WasiCtx {
    let mut wasi = WasiCtx::builder();
    wasi.allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    wasi.build()
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(empty_wasi),
            table: &mut self.table,
        }
    }
}
