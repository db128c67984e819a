//! `polyhost new` in each language: the scaffold builds with its own `build.sh`, its native
//! unit tests pass, and `polyhost check` accepts it with the manifest entry it printed.
//!
//! Needs the toolchains `cargo xtask plugins` installs (Python and JavaScript) and the
//! `wasm32-wasip2` Rust target; connects to no service. Building a Python or JavaScript
//! component bundles its runtime: each of those tests takes a minute or more.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result, ensure};

fn polyhost() -> Command {
    Command::new(env!("CARGO_BIN_EXE_polyhost"))
}

fn run(cmd: &mut Command) -> Result<String> {
    let line = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {line}"))?;
    ensure!(
        out.status.success(),
        "{line} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Compiled components, kept between the two checks of a scaffold (compiling a Python or
/// JavaScript runtime takes a while).
fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/polyglot-test-cache")
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("polyhost-new-{}", uuid::Uuid::new_v4()))
}

/// Scaffolds `name` in `lang` granted `keyvalue` and `messaging`, runs its unit tests
/// (`tests`, in the folder), builds it and checks it.
fn scaffold_builds_and_passes_check(lang: &str, name: &str, tests: &[&str]) -> Result<()> {
    let root = temp_dir();
    let dir = root.join(name);
    let printed = run(polyhost()
        .args([
            "new",
            name,
            "--lang",
            lang,
            "--grant",
            "keyvalue,messaging",
            "--dir",
        ])
        .arg(&dir))?;
    ensure!(printed.contains(&format!("name = \"{name}\"")), "{printed}");
    ensure!(
        printed.contains(&format!(r#"keyvalue = {{ prefixes = ["{name}:"] }}"#)),
        "{printed}"
    );
    ensure!(printed.contains("messaging = { publish = ["), "{printed}");
    let written = std::fs::read_to_string(dir.join("polyhost.toml"))?;
    ensure!(written == printed, "printed entry = polyhost.toml");

    if let Some((exe, args)) = tests.split_first() {
        run(Command::new(exe).args(args).current_dir(&dir))?;
    }
    run(&mut Command::new(dir.join("build.sh")))?;
    let checked = run(polyhost()
        .arg("check")
        .arg("--manifest")
        .arg(dir.join("polyhost.toml"))
        .arg("--cache-dir")
        .arg(cache_dir()))?;
    ensure!(checked.starts_with("ok "), "{checked}");

    // Without its grants the same component is refused, every import named at once.
    let bare: String = written
        .lines()
        .filter(|l| !l.starts_with("keyvalue =") && !l.starts_with("messaging ="))
        .map(|l| format!("{l}\n"))
        .collect();
    let bare_manifest = dir.join("bare.toml");
    std::fs::write(&bare_manifest, bare)?;
    let out = polyhost()
        .arg("check")
        .arg("--manifest")
        .arg(&bare_manifest)
        .arg("--cache-dir")
        .arg(cache_dir())
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if lang == "rust" {
        // Rust's toolchain drops imports the code does not call, and the template calls
        // neither capability: the component needs no grant at all.
        ensure!(out.status.success(), "{err}");
    } else {
        // The Python and JavaScript toolchains import their whole world: both are listed.
        ensure!(!out.status.success(), "must be refused");
        ensure!(err.contains("2 imports are not granted"), "{err}");
        ensure!(err.contains("polyhost:platform/kv@0.2.0"), "{err}");
        ensure!(err.contains("polyhost:platform/messaging@0.2.0"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

fn has_wasip2_target() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip2"))
}

#[test]
fn a_rust_scaffold_builds_and_passes_check() -> Result<()> {
    assert!(
        has_wasip2_target(),
        "`rustup target add wasm32-wasip2` first"
    );
    scaffold_builds_and_passes_check("rust", "new-rust", &[])
}

#[test]
fn a_python_scaffold_builds_and_passes_check() -> Result<()> {
    scaffold_builds_and_passes_check(
        "python",
        "new-python",
        &["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
    )
}

#[test]
fn a_javascript_scaffold_builds_and_passes_check() -> Result<()> {
    scaffold_builds_and_passes_check("js", "new-js", &["node", "--test"])
}

#[test]
fn a_name_that_cannot_name_a_plugin_is_refused() {
    let out = polyhost()
        .args(["new", "Bad_Name", "--dir"])
        .arg(temp_dir())
        .output()
        .expect("polyhost");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lowercase letters"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
