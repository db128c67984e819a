//! `polyhost new`: a plugin folder that builds and passes `polyhost check` as generated, in
//! Rust, Python or JavaScript.
//!
//! The folder is self-contained: `wit/plugin.wit` is the plugin's own world (the minimal
//! handler world — for JavaScript in the contract's JSON form, `json-minimal-handler` — plus
//! one import per capability asked for with `--grant`), `wit/deps/` holds
//! this host's WIT contract, `build.sh` builds the component, and `polyhost.toml` is a
//! manifest entry granting exactly what the world imports. Python's and JavaScript's
//! toolchains import every interface of the world they are built against, so a world that
//! names only the capabilities the code uses is what keeps the component's imports, and so
//! its grants, minimal.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The `componentize-py` release (PyPI) the generated `build.sh` expects.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// The `@bytecodealliance/componentize-js` release (npm) the generated `build.sh` expects.
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// The `@bytecodealliance/jco` release installed beside it.
pub const JCO: &str = "1.35.0";

/// A plugin's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, built with `cargo build --target wasm32-wasip2`.
    Rust,
    /// Python, built with `componentize-py`.
    Python,
    /// JavaScript, built with `componentize-js`.
    Js,
}

/// A capability a plugin may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Capability {
    /// Kafka publish (`polyhost:platform/messaging`).
    Messaging,
    /// PostgreSQL (`polyhost:platform/sql`).
    Sql,
    /// MongoDB documents and blobs (`polyhost:platform/documents`).
    Documents,
    /// Redis (`polyhost:platform/kv`).
    #[value(alias = "kv")]
    Keyvalue,
    /// Elasticsearch (`polyhost:platform/search`).
    Search,
}

impl Capability {
    fn interface(self) -> &'static str {
        match self {
            Capability::Messaging => "messaging",
            Capability::Sql => "sql",
            Capability::Documents => "documents",
            Capability::Keyvalue => "kv",
            Capability::Search => "search",
        }
    }

    /// The manifest line granting this capability to plugin `name`, scoped to names of its
    /// own.
    fn grant_line(self, name: &str) -> String {
        let snake = name.replace('-', "_");
        match self {
            Capability::Messaging => format!(r#"messaging = {{ publish = ["{name}.out"] }}"#),
            Capability::Sql => format!(r#"sql = {{ role = "{snake}" }}"#),
            Capability::Documents => {
                format!(r#"documents = {{ database = "streaming", collections = ["{snake}"] }}"#)
            }
            Capability::Keyvalue => format!(r#"keyvalue = {{ prefixes = ["{name}:"] }}"#),
            Capability::Search => format!(r#"search = {{ indices = ["{name}-*"] }}"#),
        }
    }
}

/// The host's WIT contract, written into every scaffold's `wit/deps/`.
const WIT: &[(&str, &str)] = &[
    (
        "platform/documents.wit",
        include_str!("../../wit/documents.wit"),
    ),
    (
        "platform/generator.wit",
        include_str!("../../wit/generator.wit"),
    ),
    (
        "platform/handler.wit",
        include_str!("../../wit/handler.wit"),
    ),
    ("platform/kv.wit", include_str!("../../wit/kv.wit")),
    (
        "platform/messaging.wit",
        include_str!("../../wit/messaging.wit"),
    ),
    (
        "platform/records.wit",
        include_str!("../../wit/records.wit"),
    ),
    ("platform/search.wit", include_str!("../../wit/search.wit")),
    ("platform/setup.wit", include_str!("../../wit/setup.wit")),
    ("platform/sql.wit", include_str!("../../wit/sql.wit")),
    ("platform/types.wit", include_str!("../../wit/types.wit")),
    ("platform/worlds.wit", include_str!("../../wit/worlds.wit")),
    (
        "config/store.wit",
        include_str!("../../wit/deps/config/store.wit"),
    ),
    (
        "config/world.wit",
        include_str!("../../wit/deps/config/world.wit"),
    ),
    (
        "keyvalue/atomic.wit",
        include_str!("../../wit/deps/keyvalue/atomic.wit"),
    ),
    (
        "keyvalue/batch.wit",
        include_str!("../../wit/deps/keyvalue/batch.wit"),
    ),
    (
        "keyvalue/store.wit",
        include_str!("../../wit/deps/keyvalue/store.wit"),
    ),
    (
        "keyvalue/watch.wit",
        include_str!("../../wit/deps/keyvalue/watch.wit"),
    ),
    (
        "keyvalue/world.wit",
        include_str!("../../wit/deps/keyvalue/world.wit"),
    ),
    (
        "logging/logging.wit",
        include_str!("../../wit/deps/logging/logging.wit"),
    ),
];

/// What `polyhost new` made.
#[derive(Debug)]
pub struct Scaffold {
    /// The plugin folder.
    pub dir: PathBuf,
    /// The manifest entry (also written to `polyhost.toml` in the folder).
    pub manifest: String,
}

/// Writes a new plugin `name` in `lang` to `dir`, importing (and granted) `grants`.
pub fn new(name: &str, lang: Lang, grants: &[Capability], dir: &Path) -> Result<Scaffold> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
    {
        bail!(
            "`{name}`: a plugin name is lowercase letters, digits and `-`, starting with a letter"
        );
    }
    if dir.exists() && dir.read_dir()?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let mut grants = grants.to_vec();
    grants.sort();
    grants.dedup();
    let snake = name.replace('-', "_");

    let write = |rel: &str, text: &str| -> Result<()> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };

    // JavaScript takes the contract's JSON form: `JSON.parse` of a batch is several times
    // faster than the glue lifting a `list<event>` into JavaScript objects.
    let (base, form) = match lang {
        Lang::Js => (
            "json-minimal-handler",
            "the minimal handler world in the contract's JSON form\n\
             // (the batch's events as one JSON text)",
        ),
        Lang::Rust | Lang::Python => ("minimal-handler", "the minimal handler world"),
    };
    let mut world = format!(
        "// This plugin's world: {form} plus one import per capability its\n\
         // code uses. Add or remove imports here (and the matching `[plugin.grants]` line):\n\
         // the component imports exactly what this world names.\n\
         package polyhost-plugin:{name};\n\nworld plugin {{\n    include polyhost:platform/{base}@0.2.0;\n"
    );
    for g in &grants {
        let _ = writeln!(
            world,
            "    import polyhost:platform/{}@0.2.0;",
            g.interface()
        );
    }
    world.push_str("}\n");
    write("wit/plugin.wit", &world)?;
    for (rel, text) in WIT {
        write(&format!("wit/deps/{rel}"), text)?;
    }

    let wasm = match lang {
        Lang::Rust => format!("target/wasm32-wasip2/release/{snake}.wasm"),
        Lang::Python | Lang::Js => format!("{snake}.wasm"),
    };
    let toolchains =
        r#"${POLYHOST_TOOLCHAINS:-${XDG_CACHE_HOME:-$HOME/.cache}/polyhost/toolchains}"#;
    match lang {
        Lang::Rust => {
            write(
                "Cargo.toml",
                &format!(
                    "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
                     [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nwit-bindgen = \"0.46\"\n\n\
                     [profile.release]\nopt-level = \"s\"\nlto = true\nstrip = true\n\n\
                     # A plugin is built on its own, not as part of an enclosing workspace.\n[workspace]\n"
                ),
            )?;
            write(
                "src/lib.rs",
                &format!(
                    "//! The `{name}` plugin.\n\n\
                     wit_bindgen::generate!({{\n    path: \"wit\",\n    world: \"plugin\",\n    generate_all,\n}});\n\n\
                     use exports::polyhost::platform::handler::Guest;\n\
                     use polyhost::platform::types::{{BatchInfo, Event, Outcome}};\n\
                     use wasi::logging::logging::{{Level, log}};\n\n\
                     struct Plugin;\n\n\
                     impl Guest for Plugin {{\n    fn handle(batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {{\n        \
                     log(Level::Debug, \"{name}\", &format!(\"{{}} events from {{}}\", events.len(), batch.topic));\n        \
                     // One outcome per event, in order: `Ok`, `Retry(reason)` or `Reject(reason)`.\n        \
                     events.iter().map(|_| Outcome::Ok).collect()\n    }}\n}}\n\n\
                     export!(Plugin);\n"
                ),
            )?;
            write(
                "build.sh",
                "#!/bin/sh\n# Builds the component (needs `rustup target add wasm32-wasip2`).\nset -e\ncd \"$(dirname \"$0\")\"\n\
                 cargo build --target wasm32-wasip2 --release\n",
            )?;
            write(".gitignore", "target/\n")?;
        }
        Lang::Python => {
            write(
                "app.py",
                &format!(
                    "\"\"\"The `{name}` plugin.\"\"\"\n\n\
                     from wit_world import exports\nfrom wit_world.imports import logging, types\n\n\
                     from logic import outcome_for\n\n\n\
                     class Handler(exports.Handler):\n    \
                     def handle(self, batch: types.BatchInfo, events: list[types.Event]) -> list[types.Outcome]:\n        \
                     logging.log(logging.Level.DEBUG, \"{name}\", f\"{{len(events)}} events from {{batch.topic}}\")\n        \
                     # One outcome per event, in order: Outcome_Ok(), Outcome_Retry(reason) or Outcome_Reject(reason).\n        \
                     return [types.Outcome_Reject(r) if (r := outcome_for(e.type, e.data)) else types.Outcome_Ok() for e in events]\n"
                ),
            )?;
            write(
                "logic.py",
                "\"\"\"The plugin's rules, free of host bindings so that pytest runs them natively.\"\"\"\n\n\n\
                 def outcome_for(event_type: str, data: bytes) -> str | None:\n    \
                 \"\"\"`None` when the event is handled, or why it can never be.\"\"\"\n    \
                 if not data:\n        return \"empty data\"\n    return None\n",
            )?;
            write(
                "test_logic.py",
                "from logic import outcome_for\n\n\n\
                 def test_an_event_with_data_is_handled():\n    assert outcome_for(\"t\", b\"{}\") is None\n\n\n\
                 def test_an_empty_event_is_refused():\n    assert outcome_for(\"t\", b\"\") == \"empty data\"\n",
            )?;
            write(
                "build.sh",
                &format!(
                    "#!/bin/sh\n# Builds the component with componentize-py {COMPONENTIZE_PY} (PyPI): the one\n\
                     # `cargo xtask plugins` installs, else `pip install componentize-py=={COMPONENTIZE_PY}`.\nset -e\ncd \"$(dirname \"$0\")\"\n\
                     py=\"{toolchains}/componentize-py-{COMPONENTIZE_PY}/bin/componentize-py\"\n\
                     [ -x \"$py\" ] || py=componentize-py\n\
                     \"$py\" -d wit -w plugin componentize app -o {snake}.wasm\n"
                ),
            )?;
            write(".gitignore", "*.wasm\n__pycache__/\n")?;
        }
        Lang::Js => {
            write(
                "app.js",
                &format!(
                    "// The `{name}` plugin.\n\
                     import {{ log }} from 'wasi:logging/logging@0.1.0-draft';\n\n\
                     import {{ outcomeFor }} from './logic.js';\n\n\
                     // `json-handler`: the batch's events arrive as one JSON array, one object per\n\
                     // event: id, source, type, subject?, time? (µs since the epoch), offset, and\n\
                     // data (the event's JSON data) or data_base64 (when the data is not JSON).\n\
                     export const jsonHandler = {{\n  handle(batch, events) {{\n    \
                     const list = JSON.parse(events);\n    \
                     log('debug', '{name}', `${{list.length}} events from ${{batch.topic}}`);\n    \
                     // One outcome per event, in order: {{ tag: 'ok' }}, {{ tag: 'retry', val }} or {{ tag: 'reject', val }}.\n    \
                     return list.map((e) => {{\n      const reason = outcomeFor(e);\n      \
                     return reason ? {{ tag: 'reject', val: reason }} : {{ tag: 'ok' }};\n    }});\n  }},\n}};\n"
                ),
            )?;
            write(
                "logic.js",
                "// The plugin's rules, free of host bindings so that `node --test` runs them natively.\n\n\
                 /** `null` when the event is handled, or why it can never be. */\n\
                 export function outcomeFor(event) {\n  return 'data' in event ? null : 'data is not JSON';\n}\n",
            )?;
            write(
                "logic.test.js",
                "import assert from 'node:assert/strict';\nimport { test } from 'node:test';\n\n\
                 import { outcomeFor } from './logic.js';\n\n\
                 test('an event with JSON data is handled', () => {\n  assert.equal(outcomeFor({ type: 't', data: {} }), null);\n});\n\n\
                 test('an event whose data is not JSON is refused', () => {\n  assert.equal(outcomeFor({ type: 't', data_base64: '' }), 'data is not JSON');\n});\n",
            )?;
            write(
                "package.json",
                "{ \"type\": \"module\", \"private\": true, \"scripts\": { \"test\": \"node --test\" } }\n",
            )?;
            write(
                "build.sh",
                &format!(
                    "#!/bin/sh\n# Builds the component with @bytecodealliance/componentize-js {COMPONENTIZE_JS} (npm): the one\n\
                     # `cargo xtask plugins` installs, else `npm install -g @bytecodealliance/componentize-js@{COMPONENTIZE_JS}`.\n\
                     # `http` and `fetch-event` are disabled: the host does not link `wasi:http`.\nset -e\ncd \"$(dirname \"$0\")\"\n\
                     js=\"{toolchains}/js-{COMPONENTIZE_JS}-jco-{JCO}/node_modules/.bin/componentize-js\"\n\
                     [ -x \"$js\" ] || js=componentize-js\n\
                     \"$js\" app.js --wit wit --world-name plugin --disable http fetch-event -o {snake}.wasm\n"
                ),
            )?;
            write(".gitignore", "*.wasm\nnode_modules/\n")?;
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.join("build.sh"), std::fs::Permissions::from_mode(0o755))?;
    }

    let mut manifest =
        format!("[[plugin]]\nname = \"{name}\"\nwasm = \"{wasm}\"\nsubscribe = [\"{name}.in\"]\n");
    if !grants.is_empty() {
        manifest.push_str("\n[plugin.grants]\n");
        for g in &grants {
            manifest.push_str(&g.grant_line(name));
            manifest.push('\n');
        }
    }
    if lang != Lang::Rust {
        manifest.push_str(
            "\n# Keep the instance across batches: a Python or JavaScript runtime costs\n\
             # milliseconds to start, its code microseconds per event.\n\
             [plugin.limits]\ninstance = \"reused\"\nmemory_mb = 128\n",
        );
    }
    write("polyhost.toml", &manifest)?;
    Ok(Scaffold {
        dir: dir.to_path_buf(),
        manifest,
    })
}
