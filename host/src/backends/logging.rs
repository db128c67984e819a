//! `wasi:logging`: a plugin's log lines, into the host's `tracing`, tagged with the plugin.
//!
//! The message and context are the plugin's own text: control characters in them are
//! escaped (a newline would otherwise start a host log line of the plugin's choosing, an
//! ANSI sequence would restyle the terminal) and they are capped in bytes
//! ([`crate::text::for_log`]), so one call cannot flood the host's log.

use crate::bindings::wasi::logging::logging::{Host, Level};
use crate::state::PluginEnv;
use crate::text::{MAX_LOG_CONTEXT_BYTES, MAX_LOG_MESSAGE_BYTES, for_log};

impl Host for &PluginEnv {
    async fn log(
        &mut self,
        level: Level,
        context: String,
        message: String,
    ) -> wasmtime::Result<()> {
        let plugin = self.name.as_str();
        let context = for_log(&context, MAX_LOG_CONTEXT_BYTES);
        let message = for_log(&message, MAX_LOG_MESSAGE_BYTES);
        // `%`: written as escaped above, not quoted and escaped a second time.
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, %context, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, %context, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, %context, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, %context, "{message}"),
            Level::Error | Level::Critical => {
                tracing::error!(target: "plugin", plugin, %context, "{message}")
            }
        }
        Ok(())
    }
}
