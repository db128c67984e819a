//! `cargo xtask plugins`: every crate under `plugins/` and `test-plugins/`, and every
//! Python and JavaScript plugin under `examples/` and `plugins/` (see [`polyglot`]), built
//! to a WebAssembly component.
//!
//! Components land at `target/plugins/<crate_name>.wasm` (platform plugins) and
//! `target/test-plugins/<crate_name>.wasm` (plugins the host's tests load), where
//! `<crate_name>` is the package name with `-` replaced by `_`.
//!
//! The default builder is plain `cargo build --target wasm32-wasip2`: rustc links a
//! component directly for that target, so nothing beyond the rustup target is needed.
//! `--cargo-component` builds with `cargo component build` instead (installed from
//! crates.io when missing), to show that both produce the same kind of component.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cmd, polyglot};

pub const TARGET: &str = "wasm32-wasip2";
pub const PROFILE: &str = "plugin";

/// Flags of `cargo xtask plugins`.
#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Build with `cargo component build` instead of `cargo build --target wasm32-wasip2`.
    #[arg(long)]
    pub cargo_component: bool,
    /// Build only these packages (default: all plugins and test plugins).
    #[arg(long = "package", short = 'p')]
    pub packages: Vec<String>,
}

/// A plugin crate found in the workspace.
pub struct Crate {
    pub name: String,
    /// `plugins` or `test-plugins`: also the output folder under `target/`.
    group: &'static str,
}

pub fn run(args: &Args) -> Result<()> {
    let crates: Vec<Crate> = discover()?
        .into_iter()
        .filter(|c| args.packages.is_empty() || args.packages.contains(&c.name))
        .collect();
    let others: Vec<polyglot::Plugin> = polyglot::discover()?
        .into_iter()
        .filter(|p| args.packages.is_empty() || args.packages.contains(&p.name))
        .collect();
    if crates.is_empty() && others.is_empty() {
        bail!("no plugin matches {:?}", args.packages);
    }
    if !crates.is_empty() {
        build_rust(args, &crates)?;
    }
    // Python and JavaScript plugins, beside the Rust ones in `target/plugins/`.
    let out_dir = cmd::root().join("target").join("plugins");
    fs::create_dir_all(&out_dir)?;
    for p in &others {
        let out = out_dir.join(format!("{}.wasm", p.name.replace('-', "_")));
        polyglot::build(p, &out)?;
        eprintln!("xtask: {} -> {}", p.name, out.display());
    }
    Ok(())
}

fn build_rust(args: &Args, crates: &[Crate]) -> Result<()> {
    ensure_target()?;
    if args.cargo_component {
        ensure_cargo_component()?;
    }
    let mut build = cmd::cargo();
    if args.cargo_component {
        build.args(["component", "build"]);
    } else {
        build.arg("build");
    }
    build.args(["--target", TARGET, "--profile", PROFILE]);
    for c in crates {
        build.args(["-p", &c.name]);
    }
    cmd::run(&mut build)?;

    let target = cmd::root().join("target");
    for c in crates {
        let file = format!("{}.wasm", c.name.replace('-', "_"));
        // cargo-component builds `wasm32-wasip2` as a wasip1 module and adapts it into a
        // component, which it writes under the wasip1 folder.
        let built_target = if args.cargo_component {
            "wasm32-wasip1"
        } else {
            TARGET
        };
        let built = target.join(built_target).join(PROFILE).join(&file);
        let out_dir = target.join(c.group);
        fs::create_dir_all(&out_dir)?;
        let out = out_dir.join(&file);
        copy_atomically(&built, &out)?;
        eprintln!("xtask: {} -> {}", c.name, out.display());
    }
    Ok(())
}

/// Every crate under `plugins/` and `test-plugins/`.
pub fn discover() -> Result<Vec<Crate>> {
    let mut found = Vec::new();
    for group in ["plugins", "test-plugins"] {
        let dir = cmd::root().join(group);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("Cargo.toml").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        found.extend(names.into_iter().map(|name| Crate { name, group }));
    }
    Ok(found)
}

/// Copies through a temporary file and a rename, so that a host watching `dst` never
/// sees a half-written component.
fn copy_atomically(src: &Path, dst: &Path) -> Result<()> {
    let tmp: PathBuf = dst.with_extension("wasm.tmp");
    fs::copy(src, &tmp).with_context(|| format!("copy {} to {}", src.display(), tmp.display()))?;
    fs::rename(&tmp, dst)?;
    Ok(())
}

/// Installs the `wasm32-wasip2` target through rustup when it is missing.
fn ensure_target() -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to install the wasm32-wasip2 target")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    cmd::run(Command::new("rustup").args(["target", "add", TARGET]))
}

/// Installs `cargo-component` from crates.io when `cargo component` does not answer.
fn ensure_cargo_component() -> Result<()> {
    let present = cmd::cargo()
        .args(["component", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if present {
        return Ok(());
    }
    cmd::run(cmd::cargo().args(["install", "--locked", "cargo-component"]))
}
