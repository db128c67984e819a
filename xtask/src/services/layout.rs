//! Where the services' downloads (the cache) and runtime state (data, logs, pid files) live.
//!
//! - Cache: `$XDG_CACHE_HOME/polyhost` or `~/.cache/polyhost` — only things that can be fetched
//!   again: Kafka's jars, the Elasticsearch zip, the FerretDB binary, Maven's local repository.
//! - State: `$POLYHOST_STATE_DIR`, else `/var/lib/polyhost` when running as root (a place the
//!   `postgres` and `polyhost-es` users can reach; `/root` is mode 0700), else
//!   `$XDG_STATE_HOME/polyhost` or `~/.local/state/polyhost`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Service;

/// The cache and state directories of this machine.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Downloads and builds, kept between `up`s (`~/.cache/polyhost`).
    pub cache: PathBuf,
    /// Data directories, logs and pid files (`/var/lib/polyhost` for root).
    pub state: PathBuf,
    /// Whether xtask runs as root: then PostgreSQL and Elasticsearch run as their own users.
    pub root: bool,
}

impl Layout {
    /// The layout of this machine, with both directories created.
    pub fn get() -> Result<Self> {
        let root = effective_uid()? == 0;
        let cache = dirs::cache_dir()
            .context("cannot find the user's cache directory (set XDG_CACHE_HOME)")?
            .join("polyhost");
        let state = match std::env::var_os("POLYHOST_STATE_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ if root => PathBuf::from("/var/lib/polyhost"),
            _ => dirs::state_dir()
                .context("cannot find the user's state directory (set POLYHOST_STATE_DIR)")?
                .join("polyhost"),
        };
        let layout = Self { cache, state, root };
        mkdir(&layout.cache)?;
        mkdir(&layout.run_dir())?;
        Ok(layout)
    }

    /// Holds `<state>/run/lock` exclusively until the returned file is dropped, so that two
    /// xtask processes (say a test's `start redis` and another `up`) do not start the same
    /// service twice. Children do not inherit it (std opens files close-on-exec).
    pub fn lock(&self) -> Result<File> {
        let path = self.run_dir().join("lock");
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        if file.try_lock().is_err() {
            super::system::say("services", "waiting for another `xtask services` command");
            file.lock()
                .with_context(|| format!("cannot lock {}", path.display()))?;
        }
        Ok(file)
    }

    /// The directory of our own pid files.
    pub fn run_dir(&self) -> PathBuf {
        self.state.join("run")
    }

    /// The pid file `up` writes for `service`.
    pub fn pid_file(&self, service: Service) -> PathBuf {
        self.run_dir().join(format!("{}.pid", service.name()))
    }

    /// The state directory of one service (data, configuration, logs).
    pub fn dir(&self, service: Service) -> PathBuf {
        self.state.join(service.name())
    }
}

/// Creates `dir` and its parents, readable by everyone (mode 0755 after the umask).
pub fn mkdir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// The effective user id of this process, from `/proc/self/status`.
fn effective_uid() -> Result<u32> {
    let status =
        fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .context("no effective uid in /proc/self/status")
}
