//! The `polyhost` binary's command-line definition (clap): the commands, their arguments,
//! and the engine settings they share.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use polyhost::connections::ConnectionArgs;
use polyhost::manifest::{MAX_MEMORY_MB, Manifest};
use polyhost::runtime::RuntimeConfig;

use crate::scaffold;

/// Runs a streaming platform's back end as sandboxed WebAssembly plugins.
#[derive(Parser)]
#[command(name = "polyhost", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        command: DlqCommand,
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
pub struct AdminArgs {
    /// The admin API's address.
    #[arg(long, env = "POLYHOST_ADMIN_ADDR", default_value = polyhost::admin::DEFAULT_ADDR)]
    pub admin_addr: std::net::SocketAddr,
}

/// Engine settings shared by the commands that load plugins.
#[derive(clap::Args)]
pub struct RuntimeArgs {
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
    /// The engine's settings for `manifest`. The instance pool is made once, at start, and
    /// must serve every version a reload or a hot swap brings later: its slots are twice
    /// what the plugins may run at once (so a new version can start while the old one
    /// finishes), and never fewer than [`RuntimeConfig::default`]'s, so that plugins added
    /// by a reload find room; a slot's memory is the largest any plugin may be given
    /// ([`MAX_MEMORY_MB`]), so that a later version's larger `memory_mb` is honoured. That
    /// costs address space only: every memory slot reserves 4 GiB whatever its limit, and
    /// each instance is held to its own plugin's `memory_mb`.
    pub fn config(&self, manifest: &Manifest) -> RuntimeConfig {
        let mut c = RuntimeConfig::default();
        c.max_instances = manifest.instance_slots().max(c.max_instances);
        c.max_memory_mb = MAX_MEMORY_MB;
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

/// `polyhost dlq`'s subcommands.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config_for(manifest: &str) -> RuntimeConfig {
        let args = Cli::parse_from(["polyhost", "check", "--manifest", "m.toml"]);
        let Command::Check { runtime, .. } = args.command else {
            unreachable!("parsed as check")
        };
        let m = Manifest::parse(manifest, std::path::Path::new(".")).expect("manifest");
        runtime.config(&m)
    }

    const ENTRY: &str = "[[plugin]]\nname = \"p\"\nwasm = \"p.wasm\"\nsubscribe = [\"t\"]\n";

    #[test]
    fn the_pool_serves_later_versions_not_only_the_manifest_at_start() {
        // Small limits at start: a later version may still ask for up to the manifest's
        // ceiling of memory, and a reload may add plugins.
        let c = config_for(&format!(
            "{ENTRY}[plugin.limits]\nmemory_mb = 32\nmax_instances = 2\n"
        ));
        assert_eq!(c.max_memory_mb, MAX_MEMORY_MB);
        assert_eq!(c.max_instances, RuntimeConfig::default().max_instances);
        // Many instances at start: twice what they may run at once.
        let c = config_for(&format!("{ENTRY}[plugin.limits]\nmax_instances = 100\n"));
        assert_eq!(c.max_instances, 200);
    }
}
