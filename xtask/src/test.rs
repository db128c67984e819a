//! `cargo xtask test`: everything CI checks, cheapest failure first.
//!
//! 1. `cargo fmt --all --check`;
//! 2. the services up (a test that needs a service fails without it: nothing is skipped);
//! 3. every plugin and test plugin built to a component, and the Python and JavaScript
//!    plugins' own unit tests (pytest, `node --test`);
//! 4. clippy with `-D warnings`, on the host target for the workspace and on `wasm32-wasip2`
//!    for the plugins;
//! 5. every test of the workspace;
//! 6. the host's connectivity and backend suites again, against the secured services
//!    (`services up --secure`: TLS and logins on Kafka, PostgreSQL, FerretDB and Redis),
//!    through their connections file (`POLYHOST_CONNECTIONS`).

use anyhow::Result;

use crate::{cmd, plugins, polyglot, services};

/// Flags of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Skip fmt and clippy (for a quick rerun of the tests alone).
    #[arg(long)]
    pub no_lint: bool,
    /// Skip the second pass against the secured services.
    #[arg(long)]
    pub no_secure: bool,
    /// Extra arguments handed to `cargo test` (e.g. `-p polyhost --test runtime`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cargo_test_args: Vec<String>,
}

pub fn run(args: &Args) -> Result<()> {
    if !args.no_lint {
        cmd::run(cmd::cargo().args(["fmt", "--all", "--check"]))?;
    }
    services::up()?;
    plugins::run(&plugins::Args::default())?;
    // The Python and JavaScript plugins' own unit tests, in their languages.
    polyglot::test(&polyglot::discover()?)?;
    if !args.no_lint {
        cmd::run(cmd::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        let mut wasm = cmd::cargo();
        wasm.args([
            "clippy",
            "--target",
            plugins::TARGET,
            "--profile",
            plugins::PROFILE,
        ]);
        for p in plugins::discover()? {
            wasm.args(["-p", &p.name]);
        }
        cmd::run(wasm.args(["--", "-D", "warnings"]))?;
    }
    let mut test = cmd::cargo();
    test.arg("test");
    if !args.cargo_test_args.is_empty() {
        // A chosen subset: that alone.
        return cmd::run(test.args(&args.cargo_test_args));
    }
    cmd::run(test.arg("--workspace"))?;
    if !args.no_secure {
        secured()?;
    }
    Ok(())
}

/// The suites that reach the services through the host's connection settings: each runs
/// unchanged against the secured services when `POLYHOST_CONNECTIONS` names their file.
/// (Elasticsearch has no secured sibling: its integ-test distribution has no TLS.)
const SECURED_SUITES: &[&str] = &[
    "connectivity",
    "sql",
    "user_handler",
    "documents",
    "catalog",
    "hostile_documents",
    "keyvalue",
    "ranking",
    "messaging",
    "trigger",
];

/// The secured pass: the secured services up, then [`SECURED_SUITES`] against them.
fn secured() -> Result<()> {
    let file = services::up_secure()?;
    let mut test = cmd::cargo();
    // `--workspace`, as the first pass: the same features, so nothing is built again.
    test.env("POLYHOST_CONNECTIONS", &file)
        .args(["test", "--workspace"]);
    for suite in SECURED_SUITES {
        test.args(["--test", suite]);
    }
    cmd::run(&mut test)
}
