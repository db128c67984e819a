//! `cargo xtask`: the project's developer tasks.
//!
//! - `services up|down|status` — the five backing services, natively or under Docker compose.
//! - `plugins` — every plugin crate built to a WebAssembly component.
//! - `demo` — services, plugins, and the host running the demo manifest.
//! - `test` — services, plugins, formatting, lints and every test of the workspace.

mod cmd;
mod demo;
mod plugins;
mod polyglot;
mod services;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer tasks for polyhost")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Start, stop or inspect the backing services (Kafka, PostgreSQL, MongoDB, Redis, Elasticsearch).
    Services {
        #[command(subcommand)]
        action: services::Action,
    },
    /// Build every plugin (and test plugin) to a WebAssembly component under `target/plugins/`.
    Plugins(plugins::Args),
    /// Bring the services up, build the plugins and run the host with the demo manifest.
    Demo,
    /// Bring the services up, build the plugins, then run fmt, clippy and every test.
    Test(test::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Services { action } => services::run(action),
        Task::Plugins(args) => plugins::run(&args),
        Task::Demo => demo::run(),
        Task::Test(args) => test::run(&args),
    }
}
