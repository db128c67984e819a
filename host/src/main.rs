//! The `polyhost` command line.

mod scaffold;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use polyhost::backends::{Connections, Settings};
use polyhost::connections::{ConnectionArgs, Kafka};
use polyhost::generate::Pace;
use polyhost::manifest::{ConfigValue, Kind, Manifest, PluginSpec};
use polyhost::runtime::{Runtime, RuntimeConfig};
use polyhost::supervisor::Supervisor;
use polyhost::trigger::TriggerConfig;

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
        connections: ConnectionArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
        #[command(flatten)]
        admin: AdminArgs,
        /// Reload a plugin when its component file changes.
        #[arg(long)]
        watch: bool,
    },
    /// Run one generator plugin of a manifest alone until COUNT events are acknowledged
    /// by Kafka (idempotent producer, keyed by entity id), then exit.
    Generate {
        /// The plugin manifest.
        #[arg(long, short, default_value = "polyhost.toml")]
        manifest: PathBuf,
        /// The generator plugin (default: the manifest's only generator).
        #[arg(long)]
        plugin: Option<String>,
        /// How many events to publish.
        #[arg(long)]
        count: u64,
        /// The seed (default: the manifest's `seed`).
        #[arg(long)]
        seed: Option<u64>,
        /// Events per second; 0 = as fast as Kafka acknowledges (default: the manifest's).
        #[arg(long)]
        rate: Option<f64>,
        #[command(flatten)]
        connections: ConnectionArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Apply the SQL migrations (sqlx) to `DATABASE_URL`, then let every role a plugin's
    /// `grants.sql.role` names log in with the host's password (unless its grant names a
    /// `password_env`).
    Migrate {
        /// The migrations folder.
        #[arg(long, default_value = "migrations")]
        source: PathBuf,
        /// The plugin manifest.
        #[arg(long, short, default_value = "polyhost.toml")]
        manifest: PathBuf,
        #[command(flatten)]
        connections: ConnectionArgs,
    },
    /// Print a running host's plugins: versions, state, counters, lag.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the JSON of `GET /api/plugins` instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Hot-swap a plugin of a running host to a new version (default: re-read the file its
    /// manifest entry names), or re-read the whole manifest with `--manifest`.
    Reload {
        /// The plugin.
        #[arg(required_unless_present = "manifest")]
        plugin: Option<String>,
        /// Load this component file instead of the manifest's path.
        #[arg(long, conflicts_with = "manifest")]
        wasm: Option<PathBuf>,
        /// Re-read the host's manifest: plugins added, removed or changed.
        #[arg(long)]
        manifest: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Return a plugin of a running host to its previous version.
    Rollback {
        /// The plugin.
        plugin: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Create a plugin folder in Rust, Python or JavaScript that builds (`./build.sh`) and
    /// passes `check` as generated, and print its manifest entry.
    New {
        /// The plugin's name (lowercase letters, digits, `-`).
        name: String,
        /// The plugin's language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: scaffold::Lang,
        /// Capabilities the plugin uses: its world imports them and its manifest entry
        /// grants them (comma-separated: messaging, sql, documents, keyvalue, search).
        #[arg(long, value_enum, value_delimiter = ',')]
        grant: Vec<scaffold::Capability>,
        /// Where to create it (default: `./<name>`).
        #[arg(long)]
        dir: Option<PathBuf>,
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
    /// Inspect and replay a plugin's dead letters (its `polyhost.dlq.<plugin>` topic),
    /// straight from Kafka: the host need not run.
    Dlq {
        #[command(subcommand)]
        command: dlq_cli::DlqCommand,
        /// Kafka bootstrap servers [default: the manifest's, else 127.0.0.1:9092].
        #[arg(long, env = "KAFKA_BROKERS", global = true)]
        kafka_brokers: Option<String>,
        /// A manifest whose `[connections.kafka]` (TLS, SASL, librdkafka settings) to use.
        #[arg(long, short, global = true)]
        manifest: Option<PathBuf>,
    },
}

/// Where the admin API listens (or, for the client commands, where to find it).
#[derive(clap::Args)]
struct AdminArgs {
    /// The admin API's address.
    #[arg(long, env = "POLYHOST_ADMIN_ADDR", default_value = polyhost::admin::DEFAULT_ADDR)]
    admin_addr: std::net::SocketAddr,
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
    /// The most core module instances one component may contain (a Python plugin built
    /// with `componentize-py --stub-wasi` has about 40).
    #[arg(long, env = "POLYHOST_MAX_CORE_INSTANCES")]
    max_core_instances: Option<u32>,
    /// The most linear memories one component may define.
    #[arg(long, env = "POLYHOST_MAX_MEMORIES")]
    max_memories: Option<u32>,
    /// The most tables one component may define.
    #[arg(long, env = "POLYHOST_MAX_TABLES")]
    max_tables: Option<u32>,
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
        if let Some(n) = self.max_core_instances {
            c.max_core_instances_per_component = n;
        }
        if let Some(n) = self.max_memories {
            c.max_memories_per_component = n;
        }
        if let Some(n) = self.max_tables {
            c.max_tables_per_component = n;
        }
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
        Command::Status { admin, json } => client::status(&admin.admin_addr, json).await,
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
    let settings = connections.apply(manifest.connections.clone());
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
    let settings = connections.apply(manifest.connections.clone());
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
    let settings = connections.apply(manifest.connections.clone());
    let n = polyhost::backends::sql::migrate(&settings, source, &manifest).await?;
    println!("migrations applied from {} ({n} in all)", source.display());
    Ok(ExitCode::SUCCESS)
}

/// The client side of the admin API.
mod client {
    use std::net::SocketAddr;
    use std::process::ExitCode;

    use anyhow::{Context, Result};
    use polyhost::supervisor::PluginStatus;

    fn url(addr: &SocketAddr, path: &str) -> String {
        format!("http://{addr}{path}")
    }

    /// `polyhost status`.
    pub async fn status(addr: &SocketAddr, json: bool) -> Result<ExitCode> {
        let r = reqwest::get(url(addr, "/api/plugins"))
            .await
            .with_context(|| format!("no polyhost admin API answers on {addr}"))?;
        let plugins: Vec<PluginStatus> = r.json().await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&plugins)?);
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{:<18} {:<9} {:<12} {:<12} {:>9} {:>7} {:>7} {:>8} {:>6}  loaded at",
            "PLUGIN", "KIND", "VERSION", "PREVIOUS", "PROCESSED", "RETRIED", "DLQ", "LAG", "SWAPS"
        );
        for p in plugins {
            let short = |d: &str| d.get(..12).unwrap_or(d).to_string();
            let count = if p.kind == "generator" {
                p.generated
            } else {
                p.processed
            };
            println!(
                "{:<18} {:<9} {:<12} {:<12} {:>9} {:>7} {:>7} {:>8} {:>6}  {} ({}{})",
                p.name,
                p.kind,
                short(&p.digest),
                p.previous_digest
                    .as_deref()
                    .map(short)
                    .unwrap_or_else(|| "-".into()),
                count,
                p.retried,
                p.dead_lettered,
                p.lag.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                p.swaps,
                p.loaded_at,
                p.state,
                p.last_change
                    .as_deref()
                    .map(|c| format!("; last swap: {c}"))
                    .unwrap_or_default(),
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    /// `polyhost reload` / `rollback`: prints the answer; exits 1 with the reason when refused.
    pub async fn post(
        addr: &SocketAddr,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<ExitCode> {
        let client = reqwest::Client::new();
        let mut req = client.post(url(addr, path));
        if let Some(token) = std::env::var(polyhost::admin::TOKEN_VAR)
            .ok()
            .filter(|t| !t.is_empty())
        {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .with_context(|| format!("no polyhost admin API answers on {addr}"))?;
        let ok = r.status().is_success();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        if ok {
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!(
                "polyhost: refused: {}",
                v["error"].as_str().unwrap_or("(no reason given)")
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `polyhost dlq`: the dead letters of a plugin, read and replayed through
/// [`polyhost::dlq`].
mod dlq_cli {
    use std::process::ExitCode;

    use anyhow::Result;
    use polyhost::connections::Kafka;
    use polyhost::dlq::{self, ReplayRequest, Selection};

    #[derive(clap::Subcommand)]
    pub enum DlqCommand {
        /// List a plugin's dead letters, oldest first: where each is, when, where it came
        /// from, its event id, whether it was replayed, and why.
        List {
            /// The plugin.
            plugin: String,
            /// Print JSON instead of a table.
            #[arg(long)]
            json: bool,
        },
        /// Show one dead letter in full: reason, version, origin, key, headers, value, and
        /// its last replay.
        Show {
            /// The plugin.
            plugin: String,
            /// The dead letter's offset in the dead-letter topic (as `list` prints it).
            offset: i64,
            /// Its partition (dead-letter topics have one).
            #[arg(long, default_value_t = 0)]
            partition: i32,
        },
        /// Send dead letters back to their original topic and partition (key and headers
        /// kept, `polyhost.replay.of` added), recording each in `polyhost.replays`. A dead
        /// letter already replayed is refused unless `--force`. Exits 1 when a named dead
        /// letter was refused or not found.
        Replay {
            /// The plugin.
            plugin: String,
            /// The dead letters' offsets (repeat, or comma-separated).
            #[arg(
                long,
                value_delimiter = ',',
                required_unless_present = "all",
                conflicts_with = "all"
            )]
            offset: Vec<i64>,
            /// Their partition in the dead-letter topic.
            #[arg(long, default_value_t = 0)]
            partition: i32,
            /// Every dead letter of the plugin not replayed yet (with `--force`, every one).
            #[arg(long)]
            all: bool,
            /// With `--all`: only those whose reason contains this text.
            #[arg(long, requires = "all")]
            reason: Option<String>,
            /// Say what would be replayed; send and record nothing.
            #[arg(long)]
            dry_run: bool,
            /// Replay even dead letters already replayed.
            #[arg(long)]
            force: bool,
            /// Print JSON instead of lines.
            #[arg(long)]
            json: bool,
        },
    }

    pub async fn run(kafka: &Kafka, command: DlqCommand) -> Result<ExitCode> {
        match command {
            DlqCommand::List { plugin, json } => {
                let letters = dlq::list(kafka, &plugin).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&letters)?);
                    return Ok(ExitCode::SUCCESS);
                }
                if letters.is_empty() {
                    println!("no dead letters for `{plugin}`");
                    return Ok(ExitCode::SUCCESS);
                }
                println!(
                    "{:>8} {:<24} {:<40} {:<24} {:<9} REASON",
                    "OFFSET", "TIME", "ORIGINAL", "EVENT", "REPLAYED"
                );
                for d in &letters {
                    let offset = if d.at.partition == 0 {
                        d.at.offset.to_string()
                    } else {
                        format!("{}/{}", d.at.partition, d.at.offset)
                    };
                    println!(
                        "{:>8} {:<24} {:<40} {:<24} {:<9} {}",
                        offset,
                        d.time.as_deref().unwrap_or("-"),
                        d.original
                            .as_ref()
                            .map(|o| o.to_string())
                            .unwrap_or_else(|| "-".into()),
                        d.event_id().unwrap_or_else(|| "-".into()),
                        if d.replayed.is_some() { "yes" } else { "no" },
                        d.reason
                    );
                }
                println!("{} dead letter(s)", letters.len());
                Ok(ExitCode::SUCCESS)
            }
            DlqCommand::Show {
                plugin,
                offset,
                partition,
            } => {
                let d = dlq::show(kafka, &plugin, partition, offset).await?;
                println!("{}", serde_json::to_string_pretty(&d)?);
                Ok(ExitCode::SUCCESS)
            }
            DlqCommand::Replay {
                plugin,
                offset,
                partition,
                all,
                reason,
                dry_run,
                force,
                json,
            } => {
                let selection = if all {
                    Selection::All {
                        reason_contains: reason,
                    }
                } else {
                    Selection::Offsets(offset.into_iter().map(|o| (partition, o)).collect())
                };
                let by = format!(
                    "cli:{}",
                    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
                );
                let request = ReplayRequest {
                    plugin,
                    selection,
                    dry_run,
                    force,
                    by,
                };
                let outcomes = dlq::replay(kafka, &request).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&outcomes)?);
                } else {
                    for o in &outcomes {
                        let detail = match (&o.result[..], &o.replay) {
                            ("replayed", Some(r)) => format!(" -> {}", r.to),
                            ("already replayed", Some(r)) => format!(
                                " at {} by {} (to {}); --force replays it again",
                                r.at, r.by, r.to
                            ),
                            _ => o
                                .original
                                .as_ref()
                                .map(|p| format!(" -> {p}"))
                                .unwrap_or_default(),
                        };
                        println!("{}: {}{detail}", o.dead_letter, o.result);
                    }
                    if outcomes.is_empty() {
                        println!("nothing to replay");
                    }
                }
                // Named dead letters that were refused fail the command; `--all` skips the
                // replayed ones by design.
                let failed = !all && outcomes.iter().any(|o| o.refused());
                if failed {
                    eprintln!("polyhost: some dead letters were not replayed");
                }
                Ok(if failed {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                })
            }
        }
    }
}
