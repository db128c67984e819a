//! Compiled components cached on disk, so that a restart does not recompile.
//!
//! A cache entry is named by the SHA-256 of the component's bytes and a hash of the
//! engine's compilation settings and wasmtime build ([`Engine::precompile_compatibility_hash`]),
//! so a changed component or a different wasmtime never reads a stale entry.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components live.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
    engine_hash: String,
}

/// Whether a component came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Read back from disk.
    Hit,
    /// Compiled now (and written to disk when a cache directory is set).
    Compiled,
}

impl ComponentCache {
    /// A cache in `dir`, or none.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        ComponentCache {
            dir,
            engine_hash: format!("{:016x}", h.finish()),
        }
    }

    /// The default directory: `$XDG_CACHE_HOME/polyhost/components` or
    /// `~/.cache/polyhost/components`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("polyhost").join("components"))
    }

    fn entry(&self, digest: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{digest}-{}.cwasm", self.engine_hash)))
    }

    /// The component for `bytes` (whose SHA-256 is `digest`): from disk when cached,
    /// otherwise compiled and stored. Compiling is CPU-bound: call it off the event path.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(Component, CacheOutcome)> {
        if let Some(path) = self.entry(digest)
            && path.is_file()
        {
            // SAFETY: the file was written by `Component::serialize` of this same engine
            // configuration (the name carries its compatibility hash) into a directory of
            // the host's own; wasmtime also checks the header and refuses a mismatch.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, CacheOutcome::Hit)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unreadable cache entry");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(engine, bytes).map_err(anyhow::Error::from)?;
        if let Some(path) = self.entry(digest)
            && let Err(e) = store(&component, &path)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compiled component cache");
        }
        Ok((component, CacheOutcome::Compiled))
    }
}

fn store(component: &Component, path: &Path) -> Result<()> {
    let dir = path.parent().context("cache entry has no folder")?;
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize().map_err(anyhow::Error::from)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
