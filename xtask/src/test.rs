//! `cargo xtask test`: everything CI checks, in the order a failure is cheapest to find.

use anyhow::Result;

use crate::{cmd, plugins, services};

/// Flags of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Extra arguments handed to `cargo test` (e.g. a test name filter).
    #[arg(trailing_var_arg = true)]
    pub cargo_test_args: Vec<String>,
}

pub fn run(args: &Args) -> Result<()> {
    cmd::run(cmd::cargo().args(["fmt", "--all", "--check"]))?;
    services::up()?;
    plugins::run(&plugins::Args::default())?;
    cmd::run(cmd::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    cmd::run(
        cmd::cargo()
            .args(["test", "--workspace"])
            .args(&args.cargo_test_args),
    )
}
