//! The `polyhost` command line: parses it ([`cli`]) and runs the command asked for.
//!
//! - [`cli`]: the commands and their arguments.
//! - [`client`]: the client of a running host's admin API (`status`, `reload`, `rollback`).
//! - [`table`]: how `status` and `dlq list` print their rows.
//! - [`dlq_cli`]: `polyhost dlq`.
//! - [`scaffold`]: `polyhost new`.

mod cli;
mod client;
mod dlq_cli;
mod scaffold;
mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser as _;
use polyhost::backends::{Connections, Settings};
use polyhost::connections::{ConnectionArgs, Kafka};
use polyhost::generate::Pace;
use polyhost::manifest::{ConfigValue, Kind, Manifest, PluginSpec};
use polyhost::runtime::Runtime;
use polyhost::supervisor::Supervisor;
use polyhost::trigger::TriggerConfig;

use crate::cli::{AdminArgs, Cli, Command, RuntimeArgs};

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
        Command::New {
            name,
            lang,
            grant,
            dir,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let made = scaffold::new(&name, lang, &grant, &dir)?;
            eprintln!(
                "created {}: build it with {}/build.sh, then `polyhost check --manifest {}/polyhost.toml`",
                made.dir.display(),
                made.dir.display(),
                made.dir.display()
            );
            print!("{}", made.manifest);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            manifest,
            connections,
            runtime,
            admin,
            watch,
        } => run(&manifest, connections, &runtime, &admin, watch).await,
        Command::Generate {
            manifest,
            plugin,
            count,
            seed,
            rate,
            connections,
            runtime,
        } => {
            generate(
                &manifest,
                plugin.as_deref(),
                count,
                seed,
                rate,
                connections,
                &runtime,
            )
            .await
        }
        Command::Migrate {
            source,
            manifest,
            connections,
        } => migrate(&source, &manifest, &connections).await,
        Command::Status { admin, json } => {
            let plugins = client::plugins(&admin.admin_addr).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&plugins)?);
            } else {
                table::plugins(plugins);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload {
            plugin,
            wasm,
            manifest,
            admin,
        } => {
            if manifest {
                client::post(&admin.admin_addr, "/api/manifest/reload", None).await
            } else {
                let plugin = plugin.unwrap_or_default();
                let body = match wasm {
                    Some(w) => Some(serde_json::json!({ "wasm": std::path::absolute(&w)? })),
                    None => None,
                };
                client::post(
                    &admin.admin_addr,
                    &format!("/api/plugins/{plugin}/reload"),
                    body,
                )
                .await
            }
        }
        Command::Dlq {
            command,
            kafka_brokers,
            manifest,
        } => {
            let mut kafka = match &manifest {
                Some(path) => match load_manifest(path) {
                    Ok(m) => m.connections.kafka,
                    Err(code) => return Ok(code),
                },
                None => Kafka::default(),
            };
            if let Some(b) = kafka_brokers {
                kafka.brokers = b;
            }
            dlq_cli::run(&kafka, command).await
        }
        Command::Rollback { plugin, admin } => {
            client::post(
                &admin.admin_addr,
                &format!("/api/plugins/{plugin}/rollback"),
                None,
            )
            .await
        }
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
        Arc::new(Connections::new(Settings::from_env()?)),
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

async fn run(
    path: &Path,
    connections: ConnectionArgs,
    args: &RuntimeArgs,
    admin: &AdminArgs,
    watch: bool,
) -> Result<ExitCode> {
    let manifest = match load_manifest(path) {
        Ok(m) => m,
        Err(code) => return Ok(code),
    };
    let settings = connections.resolve(&manifest.connections)?;
    tracing::info!(connections = ?settings, "connection settings");
    let kafka = settings.kafka.clone();
    let runtime = Runtime::new(args.config(&manifest), Arc::new(Connections::new(settings)))?;
    let supervisor = Supervisor::start(runtime, &manifest, TriggerConfig::new(kafka)).await?;
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = polyhost::admin::serve(admin.admin_addr, supervisor.clone(), async {
        let _ = admin_stopped.await;
    })
    .await
    .with_context(|| format!("cannot serve the admin API on {}", admin.admin_addr))?;
    let watcher =
        watch.then(|| polyhost::watch::spawn(supervisor.clone(), Duration::from_millis(250)));
    tracing::info!(
        plugins = manifest.plugins.len(),
        admin = %addr,
        watch,
        "all plugins loaded; consuming until SIGINT or SIGTERM"
    );
    polyhost::trigger::wait_for_signal().await;
    tracing::info!("signal received: draining");
    if let Some(w) = watcher {
        w.abort();
    }
    supervisor.shutdown().await?;
    let _ = stop_admin.send(());
    let _ = server.await;
    tracing::info!("drained and committed; exiting");
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
async fn generate(
    path: &Path,
    plugin: Option<&str>,
    count: u64,
    seed: Option<u64>,
    rate: Option<f64>,
    connections: ConnectionArgs,
    args: &RuntimeArgs,
) -> Result<ExitCode> {
    let manifest = match load_manifest(path) {
        Ok(m) => m,
        Err(code) => return Ok(code),
    };
    let generators: Vec<&PluginSpec> = manifest
        .plugins
        .iter()
        .filter(|p| p.kind == Kind::Generator && plugin.is_none_or(|n| n == p.name))
        .collect();
    let mut spec = match generators.as_slice() {
        [one] => (*one).clone(),
        [] => anyhow::bail!(
            "{}: no generator plugin{}",
            path.display(),
            plugin.map(|p| format!(" named `{p}`")).unwrap_or_default()
        ),
        _ => anyhow::bail!(
            "{}: several generators; name one with --plugin",
            path.display()
        ),
    };
    spec.config
        .insert("total".into(), ConfigValue::Integer(count as i64));
    if let Some(seed) = seed {
        spec.config
            .insert("seed".into(), ConfigValue::Integer(seed as i64));
    }
    let mut pace = Pace::from_config(&spec);
    if let Some(r) = rate {
        pace.rate = (r > 0.0).then_some(r);
    }
    let settings = connections.resolve(&manifest.connections)?;
    let kafka = settings.kafka.clone();
    let runtime = Runtime::new(args.config(&manifest), Arc::new(Connections::new(settings)))?;
    let loaded = runtime
        .load(&spec)
        .await
        .with_context(|| format!("loading plugin `{}`", spec.name))?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        polyhost::trigger::wait_for_signal().await;
        let _ = stop.send(true);
    });
    let acked = polyhost::generate::run(
        &kafka,
        &spec,
        loaded,
        pace,
        TriggerConfig::new(kafka.clone()).topic_partitions,
        stopping,
    )
    .await?;
    println!("{acked} events published by `{}`", spec.name);
    Ok(if acked == count {
        ExitCode::SUCCESS
    } else {
        eprintln!("polyhost: the generator ended after {acked} of {count} events");
        ExitCode::FAILURE
    })
}

async fn migrate(source: &Path, path: &Path, connections: &ConnectionArgs) -> Result<ExitCode> {
    let manifest = match load_manifest(path) {
        Ok(m) => m,
        Err(code) => return Ok(code),
    };
    let settings = connections.resolve(&manifest.connections)?;
    let n = polyhost::backends::sql::migrate(&settings, source, &manifest).await?;
    println!("migrations applied from {} ({n} in all)", source.display());
    Ok(ExitCode::SUCCESS)
}
