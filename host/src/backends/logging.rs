//! `wasi:logging`: a plugin's log lines, into the host's `tracing`, tagged with the plugin.

use crate::bindings::wasi::logging::logging::{Host, Level};
use crate::state::HostState;

impl Host for HostState {
    async fn log(
        &mut self,
        level: Level,
        context: String,
        message: String,
    ) -> wasmtime::Result<()> {
        let plugin = self.env.name.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, context, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, context, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, context, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, context, "{message}"),
            Level::Error | Level::Critical => {
                tracing::error!(target: "plugin", plugin, context, "{message}")
            }
        }
        Ok(())
    }
}
