//! Python and JavaScript plugins: their toolchains, installed on demand at pinned versions
//! into the user's cache, and their builds.
//!
//! A Python or JavaScript plugin is a folder under `examples/` or `plugins/` holding
//! `wit/plugin.wit` (a world that includes `polyhost:platform/minimal-handler`, or for
//! JavaScript its JSON form `json-minimal-handler`, and imports exactly the capabilities the
//! code uses) and `app.py` or `app.js`. The toolchains import
//! every interface of the world they are built against, so the plugin's own world is what
//! keeps its imports equal to its grants.
//!
//! - Python: `componentize-py` from PyPI, in a virtual environment at
//!   `~/.cache/polyhost/toolchains/componentize-py-<version>`.
//! - JavaScript: `@bytecodealliance/componentize-js` and `@bytecodealliance/jco` from npm,
//!   installed with `npm install --prefix ~/.cache/polyhost/toolchains/js-<versions>`.
//!
//! Both installs are skipped when the pinned version is already there. A build is skipped
//! when the component is newer than every source file of the plugin and of `wit/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

use crate::cmd;

/// The `componentize-py` release on PyPI the Python plugins are built with.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// The `@bytecodealliance/componentize-js` release on npm.
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// The `@bytecodealliance/jco` release on npm (its `jco wit` prints a component's imports).
pub const JCO: &str = "1.35.0";

/// The language of a non-Rust plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Python,
    JavaScript,
}

/// A Python or JavaScript plugin found in the workspace.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// The folder name: also the name `-p` selects and the component's file stem (with `-`
    /// replaced by `_`).
    pub name: String,
    pub dir: PathBuf,
    pub lang: Lang,
}

/// Every Python and JavaScript plugin under `examples/` and `plugins/`.
pub fn discover() -> Result<Vec<Plugin>> {
    let mut found = Vec::new();
    for group in ["examples", "plugins"] {
        let Ok(entries) = fs::read_dir(cmd::root().join(group)) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let dir = e.path();
            if !dir.join("wit/plugin.wit").is_file() {
                continue;
            }
            let lang = if dir.join("app.py").is_file() {
                Lang::Python
            } else if dir.join("app.js").is_file() {
                Lang::JavaScript
            } else {
                continue;
            };
            found.push(Plugin {
                name: e.file_name().to_string_lossy().into_owned(),
                dir,
                lang,
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Where the toolchains live: `$XDG_CACHE_HOME/polyhost/toolchains` or
/// `~/.cache/polyhost/toolchains`.
fn toolchains() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(dirs::cache_dir)
        .context("no cache directory: set XDG_CACHE_HOME")?;
    Ok(base.join("polyhost").join("toolchains"))
}

/// `componentize-py` at the pinned version, installed into its own virtual environment
/// when missing. Returns the executable.
pub fn ensure_componentize_py() -> Result<PathBuf> {
    let venv = toolchains()?.join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let exe = venv.join("bin").join("componentize-py");
    if exe.is_file() {
        return Ok(exe);
    }
    fs::create_dir_all(venv.parent().expect("has a parent"))?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    cmd::run(Command::new(&python).arg("-m").arg("venv").arg(&venv))
        .context("Python 3 with `venv` is needed to build Python plugins")?;
    cmd::run(Command::new(venv.join("bin").join("pip")).args([
        "install",
        "--quiet",
        &format!("componentize-py=={COMPONENTIZE_PY}"),
    ]))?;
    if !exe.is_file() {
        bail!("{} missing after installing componentize-py", exe.display());
    }
    Ok(exe)
}

/// The npm prefix holding `componentize-js` and `jco` at their pinned versions, installed
/// when missing. Returns the prefix.
pub fn ensure_componentize_js() -> Result<PathBuf> {
    let prefix = toolchains()?.join(format!("js-{COMPONENTIZE_JS}-jco-{JCO}"));
    if componentize_js(&prefix).is_file() {
        return Ok(prefix);
    }
    fs::create_dir_all(&prefix)?;
    cmd::run(
        Command::new("npm")
            .arg("install")
            .arg("--prefix")
            .arg(&prefix)
            .args(["--no-audit", "--no-fund", "--save-exact"])
            .arg(format!(
                "@bytecodealliance/componentize-js@{COMPONENTIZE_JS}"
            ))
            .arg(format!("@bytecodealliance/jco@{JCO}")),
    )
    .context("Node.js with npm is needed to build JavaScript plugins")?;
    Ok(prefix)
}

fn componentize_js(prefix: &Path) -> PathBuf {
    prefix.join("node_modules/.bin/componentize-js")
}

/// Copies the host's WIT package and its dependencies into `wit/deps/` of a plugin folder,
/// where both toolchains look for the packages a world names.
pub fn refresh_wit_deps(plugin_wit: &Path) -> Result<()> {
    let src = cmd::root().join("wit");
    let deps = plugin_wit.join("deps");
    let platform = deps.join("platform");
    fs::create_dir_all(&platform)?;
    for e in fs::read_dir(&src)?.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "wit") {
            fs::copy(&p, platform.join(e.file_name()))?;
        }
    }
    for e in fs::read_dir(src.join("deps"))?.filter_map(|e| e.ok()) {
        let out = deps.join(e.file_name());
        fs::create_dir_all(&out)?;
        for f in fs::read_dir(e.path())?.filter_map(|f| f.ok()) {
            fs::copy(f.path(), out.join(f.file_name()))?;
        }
    }
    Ok(())
}

/// The newest modification time of the plugin's sources and of the host's `wit/`.
fn newest_input(dir: &Path) -> SystemTime {
    fn walk(dir: &Path, newest: &mut SystemTime) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let p = e.path();
            let name = e.file_name();
            if matches!(
                name.to_str(),
                Some("deps" | "node_modules" | "__pycache__" | ".pytest_cache")
            ) {
                continue;
            }
            if p.is_dir() {
                walk(&p, newest);
            } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(m);
            }
        }
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    walk(dir, &mut newest);
    walk(&cmd::root().join("wit"), &mut newest);
    newest
}

/// Builds `plugin` to `out` unless `out` is newer than its inputs.
pub fn build(plugin: &Plugin, out: &Path) -> Result<()> {
    let fresh = fs::metadata(out)
        .and_then(|m| m.modified())
        .is_ok_and(|built| built > newest_input(&plugin.dir));
    if fresh {
        eprintln!("xtask: {} is up to date", out.display());
        return Ok(());
    }
    let wit = plugin.dir.join("wit");
    refresh_wit_deps(&wit)?;
    let tmp = out.with_extension("wasm.tmp");
    match plugin.lang {
        Lang::Python => {
            let exe = ensure_componentize_py()?;
            cmd::run(
                Command::new(exe)
                    .current_dir(&plugin.dir)
                    .args(["-d", "wit", "-w", "plugin", "componentize", "app", "-o"])
                    .arg(&tmp),
            )?;
        }
        Lang::JavaScript => {
            let prefix = ensure_componentize_js()?;
            // `http` and `fetch-event` off: no plugin reaches the network itself, and the
            // host does not link `wasi:http`.
            cmd::run(
                Command::new(componentize_js(&prefix))
                    .current_dir(&plugin.dir)
                    .args(["app.js", "--wit", "wit", "--world-name", "plugin"])
                    .args(["--disable", "http", "fetch-event", "-o"])
                    .arg(&tmp),
            )?;
        }
    }
    fs::rename(&tmp, out)?;
    Ok(())
}

/// Whether `dir` holds a file named like a test of `lang` (`test_*.py`, `*.test.js`).
fn has_tests(dir: &Path, lang: Lang) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            match lang {
                Lang::Python => name.starts_with("test_") && name.ends_with(".py"),
                Lang::JavaScript => name.ends_with(".test.js"),
            }
        })
    })
}

/// Runs each plugin's own unit tests: `pytest` for Python, `node --test` for JavaScript
/// (a plugin without tests, like the benchmark's no-op handlers, is skipped).
pub fn test(plugins: &[Plugin]) -> Result<()> {
    for p in plugins.iter().filter(|p| has_tests(&p.dir, p.lang)) {
        match p.lang {
            Lang::Python => {
                let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
                cmd::run(Command::new(python).current_dir(&p.dir).args([
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                ]))?
            }
            Lang::JavaScript => cmd::run(Command::new("node").current_dir(&p.dir).arg("--test"))?,
        }
    }
    Ok(())
}
