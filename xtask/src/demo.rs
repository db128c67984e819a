//! `cargo xtask demo`: the platform running on this machine.
//!
//! Services up, every plugin built, then the host running `polyhost.toml` until Ctrl-C.

use anyhow::Result;

use crate::{cmd, plugins, services};

pub fn run() -> Result<()> {
    services::up()?;
    plugins::run(&plugins::Args::default())?;
    eprintln!(
        "xtask: starting polyhost with polyhost.toml. It loads, checks and links every plugin \
         and connects its granted backends; consuming events from Kafka (the trigger) and the \
         platform's domain logic are not built yet. Ctrl-C stops it."
    );
    cmd::run(cmd::cargo().args([
        "run",
        "-p",
        "polyhost",
        "--",
        "run",
        "--manifest",
        "polyhost.toml",
    ]))
}
