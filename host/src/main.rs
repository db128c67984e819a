//! The `polyhost` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use polyhost::backends::{Connections, Settings};
use polyhost::manifest::Manifest;
use polyhost::runtime::{Runtime, RuntimeConfig};

/// Runs a streaming platform's back end as sandboxed WebAssembly plugins.
#[derive(Parser)]
#[command(name = "polyhost", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load every plugin of a manifest, connect its granted backends, and deliver each
    /// handler its topics from Kafka until SIGINT or SIGTERM (which drains and commits).
    Run {
        /// The plugin manifest.
        #[arg(long, short, default_value = "polyhost.toml")]
        manifest: PathBuf,
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Validate a manifest and every plugin's imports and exports, connecting to nothing.
    ///
    /// Exits 0 when every plugin would load, or 1 with one line per problem.
    Check {
        /// The plugin manifest.
        #[arg(long, short, default_value = "polyhost.toml")]
        manifest: PathBuf,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
}

/// Engine settings shared by the commands that load plugins.
#[derive(clap::Args)]
struct RuntimeArgs {
    /// Where compiled components are cached (default: the user's cache directory).
    #[arg(long, env = "POLYHOST_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not read or write the compiled-component cache.
    #[arg(long)]
    no_cache: bool,
}

impl RuntimeArgs {
    /// The engine's settings for `manifest`: the instance pool sized to what its plugins may
    /// run at once (twice over, so a new version can start while the old one finishes), and
    /// its pool slots to the largest memory limit.
    fn config(&self, manifest: &Manifest) -> RuntimeConfig {
        let mut c = RuntimeConfig::default();
        let instances: u32 = manifest
            .plugins
            .iter()
            .map(|p| p.limits.max_instances)
            .sum();
        c.max_instances = (instances * 2).max(8);
        c.max_memory_mb = manifest
            .plugins
            .iter()
            .map(|p| p.limits.memory_mb)
            .max()
            .unwrap_or(64);
        if self.no_cache {
            c.cache_dir = None;
        } else if let Some(d) = &self.cache_dir {
            c.cache_dir = Some(d.clone());
        }
        c
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POLYHOST_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("polyhost: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("polyhost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Check { manifest, runtime } => check(&manifest, &runtime).await,
        Command::Run {
            manifest,
            settings,
            runtime,
        } => run(&manifest, settings, &runtime).await,
    }
}

fn load_manifest(path: &Path) -> Result<Manifest, ExitCode> {
    Manifest::load(path).map_err(|errors| {
        for e in &errors {
            eprintln!("{}: {e}", path.display());
        }
        ExitCode::FAILURE
    })
}

async fn check(path: &Path, args: &RuntimeArgs) -> Result<ExitCode> {
    let manifest = match load_manifest(path) {
        Ok(m) => m,
        Err(code) => return Ok(code),
    };
    let runtime = Runtime::new(
        args.config(&manifest),
        Arc::new(Connections::new(Settings::default())),
    )?;
    let mut failed = false;
    for spec in &manifest.plugins {
        match runtime.check(spec).await {
            Ok(c) => println!(
                "ok    {:<20} {} {} sha256:{}",
                spec.name,
                spec.kind,
                spec.wasm.display(),
                &c.digest[..12]
            ),
            Err(e) => {
                failed = true;
                eprintln!("error {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn run(path: &Path, settings: Settings, args: &RuntimeArgs) -> Result<ExitCode> {
    let manifest = match load_manifest(path) {
        Ok(m) => m,
        Err(code) => return Ok(code),
    };
    let brokers = settings.kafka_brokers.clone();
    let runtime = Runtime::new(args.config(&manifest), Arc::new(Connections::new(settings)))?;
    let mut plugins = Vec::new();
    for spec in &manifest.plugins {
        let p = runtime
            .load(spec)
            .await
            .with_context(|| format!("loading plugin `{}`", spec.name))?;
        tracing::info!(plugin = %p.name, kind = %p.kind, digest = p.short_digest(), cache = ?p.cache, "plugin loaded");
        plugins.push((spec.clone(), p));
    }
    tracing::info!(
        plugins = plugins.len(),
        "all plugins loaded; consuming until SIGINT or SIGTERM"
    );
    polyhost::trigger::run_until_signalled(polyhost::trigger::TriggerConfig::new(brokers), plugins)
        .await?;
    tracing::info!("drained and committed; exiting");
    Ok(ExitCode::SUCCESS)
}
