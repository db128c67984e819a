//! `polyhost run --watch`: reloads a plugin when its component file changes.
//!
//! Polls each file's size and modification time; a change is acted on only once the file
//! has stayed the same for a whole poll interval (debounce), so a file being copied is not
//! read half-written. A file that is still invalid when read (a truncated component) fails
//! the load checks and is refused like any bad version: the running one stays.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::supervisor::Supervisor;

/// What identifies a version of a file between polls.
type Stamp = Option<(u64, SystemTime)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Watches every plugin's file every `interval` until the task is aborted.
pub fn spawn(supervisor: Arc<Supervisor>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // The stamp last loaded (or refused), and a candidate waiting to settle.
        let mut seen: HashMap<String, Stamp> = HashMap::new();
        let mut settling: HashMap<String, Stamp> = HashMap::new();
        for (name, path) in supervisor.wasm_paths().await {
            seen.insert(name, stamp(&path));
        }
        loop {
            tokio::time::sleep(interval).await;
            for (name, path) in supervisor.wasm_paths().await {
                let now = stamp(&path);
                let last = seen.entry(name.clone()).or_insert_with(|| now);
                if *last == now || now.is_none() {
                    settling.remove(&name);
                    continue;
                }
                // Changed: act only when it has not changed since the previous poll.
                if settling.get(&name) != Some(&now) {
                    settling.insert(name.clone(), now);
                    continue;
                }
                settling.remove(&name);
                *last = now;
                tracing::info!(plugin = %name, path = %path.display(), "component file changed: reloading");
                match supervisor.reload(&name, None).await {
                    Ok(r) => {
                        tracing::info!(plugin = %name, result = %r.result, digest = %&r.digest[..12], changed = ?r.changed, "watch reload")
                    }
                    Err(e) => {
                        tracing::warn!(plugin = %name, reason = %e, "watch reload refused; the running version stays")
                    }
                }
            }
        }
    })
}
