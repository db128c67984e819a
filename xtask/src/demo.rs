//! `cargo xtask demo`: the platform running on this machine.

use anyhow::Result;

use crate::{cmd, plugins, services};

pub fn run() -> Result<()> {
    services::up()?;
    plugins::run(&plugins::Args::default())?;
    cmd::run(cmd::cargo().args([
        "run",
        "--release",
        "-p",
        "polyhost",
        "--",
        "run",
        "--manifest",
        "polyhost.toml",
    ]))
}
