//! `polyhost check` as a user runs it: the demo manifest passes; a manifest that leaves out
//! a grant, or is malformed, fails with one line per problem naming plugin and key.
//!
//! Needs the plugins and test plugins (`cargo xtask plugins`); connects to no service.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn polyhost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_polyhost"))
        .args(args)
        .env("POLYHOST_LOG", "warn")
        .output()
        .expect("run polyhost")
}

fn temp_manifest(text: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("polyhost-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("polyhost.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn check_passes_on_the_demo_manifest() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../polyhost.toml");
    let out = polyhost(&[
        "check",
        "--no-cache",
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for plugin in [
        "event-generator",
        "user-handler",
        "catalog-handler",
        "ranking-handler",
        "auditor",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(plugin)),
            "{plugin} missing from:\n{stdout}"
        );
    }
}

#[test]
fn check_fails_naming_the_plugin_and_the_ungranted_interface() {
    let sneaky = harness::test_plugin("sneaky-handler");
    let noop = harness::test_plugin("noop-handler");
    let (dir, path) = temp_manifest(&format!(
        r#"
[[plugin]]
name = "fine"
wasm = "{}"
subscribe = ["t"]

[[plugin]]
name = "sneaky"
wasm = "{}"
subscribe = ["t"]
"#,
        noop.display(),
        sneaky.display()
    ));
    let out = polyhost(&["check", "--no-cache", "--manifest", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    // The plugin is named on the first line of its error; every ungranted import follows,
    // one per line, with the manifest line that would grant it.
    let block = stderr
        .split_once("plugin `sneaky`")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no line names the plugin:\n{stderr}"));
    assert!(
        block.contains("polyhost:platform/kv") || block.contains("wasi:keyvalue/store"),
        "{stderr}"
    );
    assert!(block.contains("[plugin.grants]"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("fine"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_reports_every_manifest_problem_on_its_own_line() {
    let (dir, path) = temp_manifest(
        r#"
[[plugin]]
name = "a"
wasm = "a.wasm"
subscribe = ["t"]
colour = "red"

[[plugin]]
name = "b"
wasm = "b.wasm"
subscribe = ["t"]
[plugin.limits]
memory_mb = 0
"#,
    );
    let out = polyhost(&["check", "--manifest", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("plugin `a`") && l.contains("`colour`")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("plugin `b`") && l.contains("`limits.memory_mb`")),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
