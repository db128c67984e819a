//! Stopping on a signal: what `polyhost run` and `polyhost generate` wait for before they
//! drain.

use std::sync::Arc;

use super::{Trigger, TriggerConfig, TriggerError};
use crate::manifest::PluginSpec;
use crate::runtime::LoadedPlugin;

/// Runs the trigger until SIGINT or SIGTERM, then drains: stops fetching, lets the batches
/// in flight finish (bounded by [`TriggerConfig::drain_timeout`] per plugin), commits, and
/// returns; records queued but not yet handed over are redelivered on the next start. What `polyhost run` calls once every plugin is loaded.
pub async fn run_until_signalled(
    config: TriggerConfig,
    plugins: Vec<(PluginSpec, Arc<LoadedPlugin>)>,
) -> Result<(), TriggerError> {
    let trigger = Trigger::start(config, plugins, None).await?;
    wait_for_signal().await;
    tracing::info!("signal received: draining");
    trigger.shutdown().await
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
