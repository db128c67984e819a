//! `cargo xtask demo`: the platform running on this machine.
//!
//! Services up, every plugin built, then the host running `polyhost.toml` until Ctrl-C.

use anyhow::Result;

use crate::{cmd, plugins, services};

pub fn run() -> Result<()> {
    services::up()?;
    plugins::run(&plugins::Args::default())?;
    eprintln!(
        "xtask: starting polyhost with polyhost.toml: every handler consumes its topics. The \
         generator driver and the platform's domain logic are not built yet, so nothing \
         produces events; Ctrl-C drains and stops it."
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
