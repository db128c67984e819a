//! The plugin manifest: strict TOML, every error naming the plugin and the key.
//!
//! ```toml
//! [[plugin]]
//! name      = "catalog-handler"
//! wasm      = "target/plugins/catalog_handler.wasm"   # relative to the manifest's folder
//! subscribe = ["streaming.catalog", "streaming.ratings"]
//!
//! [plugin.grants]
//! documents = { collections = ["titles"], buckets = ["title_assets"] }
//! messaging = { publish = ["streaming.derived"] }
//!
//! [plugin.limits]
//! memory_mb = 64
//! call_timeout_ms = 2000
//!
//! [plugin.config]
//! cache_ttl_s = 300
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::backends::Grants;

/// The largest `limits.memory_mb` a plugin may be given (4 GiB: a 32-bit linear memory's
/// whole range).
pub const MAX_MEMORY_MB: u32 = 4096;

/// A whole manifest: the plugins a host runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Where the manifest was read from (relative paths are resolved against its folder).
    pub path: Option<PathBuf>,
    /// The plugins, in manifest order.
    pub plugins: Vec<PluginSpec>,
    /// `[connections]`: how the host reaches its services (the defaults when absent).
    /// The command line and the environment override it (see [`crate::connections`]).
    pub connections: crate::connections::Settings,
}

/// What a plugin is for.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Exports `polyhost:platform/handler`: handles batches of events from its topics.
    #[default]
    Handler,
    /// Exports `polyhost:platform/generator`: produces events the host publishes.
    Generator,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Handler => "handler",
            Kind::Generator => "generator",
        })
    }
}

/// One `[[plugin]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// The plugin's name: lowercase letters, digits and `-`; unique in the manifest. Names
    /// its consumer group, its dead-letter topic and its metrics.
    pub name: String,
    /// The component file, relative to the manifest's folder.
    pub wasm: PathBuf,
    /// `handler` (default) or `generator`.
    #[serde(default)]
    pub kind: Kind,
    /// The topics a handler consumes; an entry starting with `^` is a regular expression
    /// (e.g. `^polyhost\\.dlq\\..*` for every dead-letter topic).
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// The Kafka consumer group; default `polyhost.<name>`.
    #[serde(default)]
    pub consumer_group: Option<String>,
    /// What the plugin may touch. Nothing is granted unless named here.
    #[serde(default)]
    pub grants: Grants,
    /// Resource limits; host defaults for anything left out.
    #[serde(default)]
    pub limits: Limits,
    /// Plain values handed to the plugin through `wasi:config/store`.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
}

/// `[plugin.limits]`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The most linear memory one instance may grow to, in MiB.
    pub memory_mb: u32,
    /// The most one call into the plugin (a whole batch) may take, in milliseconds,
    /// host calls included; past it the call traps and its events are dead-lettered.
    pub call_timeout_ms: u64,
    /// The most one host call (a query, a publish) may take, in milliseconds; past it the
    /// call returns a transient `timeout` error to the plugin.
    pub host_call_timeout_ms: u64,
    /// How many instances of the plugin may run at once (one per batch in flight).
    pub max_instances: u32,
    /// The most events handed over in one batch.
    pub batch_size: u32,
    /// How long to wait to fill a batch, in milliseconds.
    pub batch_wait_ms: u64,
    /// The most one host call may hand back to the plugin, in bytes: SQL rows, documents,
    /// search hits, Redis values, blobs. The host counts while it reads the backend's answer
    /// and stops at the cap (the call fails with `invalid` naming this limit), so a hostile
    /// query costs the host at most this much memory per call in flight.
    pub max_result_bytes: u64,
    /// The most one value a plugin writes may take, in bytes: a Redis value, a document, a
    /// message, a search document, a blob; past it the call fails with `invalid` naming
    /// this limit, before anything reaches the backend.
    pub max_value_bytes: u64,
    /// Whether a batch gets a fresh instance (`per-batch`, the default) or an instance kept
    /// from earlier batches (`reused`): for runtimes whose start-up dominates a batch
    /// (Python, JavaScript). A reused instance keeps guest state between batches and is
    /// discarded after a failed batch, on a hot swap, or after `reuse_batches` batches.
    pub instance: InstanceMode,
    /// With `instance = "reused"`: how many batches one instance handles before it is
    /// replaced by a fresh one (bounds what a slow leak in the guest can accumulate).
    pub reuse_batches: u32,
}

/// `[plugin.limits] instance`: how instances are given to batches.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceMode {
    /// A fresh instance per batch: no state survives a batch.
    #[default]
    PerBatch,
    /// An instance kept across batches, discarded on any failure.
    Reused,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 64,
            call_timeout_ms: 5_000,
            host_call_timeout_ms: 2_000,
            max_instances: 4,
            batch_size: 256,
            batch_wait_ms: 20,
            max_result_bytes: 16 << 20,
            max_value_bytes: 4 << 20,
            instance: InstanceMode::PerBatch,
            reuse_batches: 1_000,
        }
    }
}

/// A `[plugin.config]` value: any TOML scalar, handed to the plugin as text.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "toml::Value")]
pub enum ConfigValue {
    /// A string.
    String(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Boolean(bool),
}

impl TryFrom<toml::Value> for ConfigValue {
    type Error = &'static str;

    fn try_from(v: toml::Value) -> Result<Self, Self::Error> {
        Ok(match v {
            toml::Value::String(s) => ConfigValue::String(s),
            toml::Value::Integer(i) => ConfigValue::Integer(i),
            toml::Value::Float(x) => ConfigValue::Float(x),
            toml::Value::Boolean(b) => ConfigValue::Boolean(b),
            _ => return Err("must be a string, an integer, a float or a boolean"),
        })
    }
}

impl fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigValue::String(s) => f.write_str(s),
            ConfigValue::Integer(i) => write!(f, "{i}"),
            ConfigValue::Float(x) => write!(f, "{x}"),
            ConfigValue::Boolean(b) => write!(f, "{b}"),
        }
    }
}

/// A manifest problem, naming the plugin (when there is one) and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ManifestError {
    /// The plugin's name, or `plugin #N` when it has none.
    pub plugin: Option<String>,
    /// The key path, e.g. `grants.sql.role`.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ManifestError {
    fn render(&self) -> String {
        let mut s = String::new();
        if let Some(p) = &self.plugin {
            s.push_str(&format!("plugin `{p}`: "));
        }
        if let Some(k) = &self.key {
            s.push_str(&format!("`{k}`: "));
        }
        s.push_str(&self.message);
        s
    }

    fn top(message: impl Into<String>) -> Self {
        ManifestError {
            plugin: None,
            key: None,
            message: message.into(),
        }
    }

    fn at(plugin: &str, key: &str, message: impl Into<String>) -> Self {
        ManifestError {
            plugin: Some(plugin.to_string()),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
}

impl PluginSpec {
    /// A handler spec with no grants and default limits: for tests and tools.
    pub fn new(name: impl Into<String>, wasm: impl Into<PathBuf>) -> Self {
        PluginSpec {
            name: name.into(),
            wasm: wasm.into(),
            kind: Kind::Handler,
            subscribe: Vec::new(),
            consumer_group: None,
            grants: Grants::default(),
            limits: Limits::default(),
            config: BTreeMap::new(),
        }
    }

    /// The consumer group this plugin's handler consumes in.
    pub fn group_id(&self) -> String {
        self.consumer_group
            .clone()
            .unwrap_or_else(|| format!("polyhost.{}", self.name))
    }

    /// The config values as `wasi:config` serves them.
    pub fn config_strings(&self) -> BTreeMap<String, String> {
        self.config
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    }
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, Vec<ManifestError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ManifestError::top(format!(
                "cannot read manifest {}: {e}",
                path.display()
            ))]
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut m = Manifest::parse(&text, base)?;
        m.path = Some(path.to_path_buf());
        Ok(m)
    }

    /// Parses and validates manifest text; relative `wasm` paths are resolved against
    /// `base`. Returns every problem found, not only the first.
    pub fn parse(text: &str, base: &Path) -> Result<Manifest, Vec<ManifestError>> {
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| vec![ManifestError::top(e.to_string().trim_end())])?;
        let mut errors = Vec::new();
        for key in doc.keys() {
            if key != "plugin" && key != "connections" {
                errors.push(ManifestError::top(format!(
                    "unknown top-level key `{key}` (expected `[[plugin]]` entries and \
                     `[connections]`)"
                )));
            }
        }
        let connections = match doc.get("connections") {
            None => crate::connections::Settings::builtin(),
            Some(section) => match crate::connections::Settings::parse(section.clone()) {
                Ok(c) => c,
                Err(problems) => {
                    for (key, message) in problems {
                        errors.push(ManifestError {
                            plugin: None,
                            key: Some(if key.is_empty() {
                                "connections".to_string()
                            } else {
                                format!("connections.{key}")
                            }),
                            message,
                        });
                    }
                    crate::connections::Settings::builtin()
                }
            },
        };
        let entries = match doc.get("plugin") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a.clone(),
            Some(_) => {
                errors.push(ManifestError::top(
                    "`plugin` must be an array of tables: write `[[plugin]]`",
                ));
                Vec::new()
            }
        };
        if entries.is_empty() && errors.is_empty() {
            errors.push(ManifestError::top("the manifest has no `[[plugin]]` entry"));
        }

        let mut plugins = Vec::new();
        let mut seen = HashSet::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let label = entry
                .get("name")
                .and_then(|n| n.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("#{}", i + 1));
            let mut spec: PluginSpec = match serde_path_to_error::deserialize(entry) {
                Ok(s) => s,
                Err(e) => {
                    let path = e.path().to_string();
                    let key = (path != ".").then_some(path);
                    errors.push(ManifestError {
                        plugin: Some(label),
                        key,
                        message: e.into_inner().message().trim_end().to_string(),
                    });
                    continue;
                }
            };
            if !seen.insert(spec.name.clone()) {
                errors.push(ManifestError::at(
                    &spec.name,
                    "name",
                    "another plugin already has this name",
                ));
            }
            spec.validate(&mut errors);
            if spec.wasm.is_relative() {
                spec.wasm = base.join(&spec.wasm);
            }
            plugins.push(spec);
        }
        if errors.is_empty() {
            Ok(Manifest {
                path: None,
                plugins,
                connections,
            })
        } else {
            Err(errors)
        }
    }

    /// The plugin called `name`.
    pub fn plugin(&self, name: &str) -> Option<&PluginSpec> {
        self.plugins.iter().find(|p| p.name == name)
    }

    /// The instance slots these plugins need: twice what they may run at once
    /// (`limits.max_instances` added up), so that a new version can start while the old
    /// one finishes.
    pub fn instance_slots(&self) -> u32 {
        let at_once: u32 = self.plugins.iter().map(|p| p.limits.max_instances).sum();
        at_once.saturating_mul(2)
    }
}

impl PluginSpec {
    /// Checks what serde cannot: names, ranges, and what a kind of plugin needs.
    fn validate(&self, errors: &mut Vec<ManifestError>) {
        let n = self.name.as_str();
        let name_ok = !n.is_empty()
            && n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !n.starts_with('-');
        if !name_ok {
            errors.push(ManifestError::at(
                n,
                "name",
                "must be 1-64 characters of a-z, 0-9 and `-`, not starting with `-`",
            ));
        }
        if self.wasm.as_os_str().is_empty() {
            errors.push(ManifestError::at(n, "wasm", "must name a component file"));
        }
        match self.kind {
            Kind::Handler if self.subscribe.is_empty() => errors.push(ManifestError::at(
                n,
                "subscribe",
                "a handler must subscribe to at least one topic",
            )),
            Kind::Generator if !self.subscribe.is_empty() => errors.push(ManifestError::at(
                n,
                "subscribe",
                "a generator consumes nothing: remove `subscribe`",
            )),
            _ => {}
        }
        for (i, t) in self.subscribe.iter().enumerate() {
            if let Some(pattern) = t.strip_prefix('^') {
                if pattern.is_empty() {
                    errors.push(ManifestError::at(
                        n,
                        &format!("subscribe[{i}]"),
                        "a topic pattern (starting with `^`) must not be empty",
                    ));
                }
            } else if !valid_topic(t) {
                errors.push(ManifestError::at(
                    n,
                    &format!("subscribe[{i}]"),
                    format!("`{t}` is not a valid Kafka topic name"),
                ));
            }
        }
        let l = &self.limits;
        let ranges: [(&str, u64, u64, u64); 9] = [
            (
                "limits.memory_mb",
                l.memory_mb.into(),
                1,
                MAX_MEMORY_MB.into(),
            ),
            ("limits.call_timeout_ms", l.call_timeout_ms, 1, 600_000),
            (
                "limits.host_call_timeout_ms",
                l.host_call_timeout_ms,
                1,
                600_000,
            ),
            ("limits.max_instances", l.max_instances.into(), 1, 256),
            ("limits.batch_size", l.batch_size.into(), 1, 10_000),
            ("limits.batch_wait_ms", l.batch_wait_ms, 0, 60_000),
            (
                "limits.max_result_bytes",
                l.max_result_bytes,
                1 << 10,
                1 << 30,
            ),
            (
                "limits.max_value_bytes",
                l.max_value_bytes,
                1 << 10,
                1 << 30,
            ),
            ("limits.reuse_batches", l.reuse_batches.into(), 1, 1_000_000),
        ];
        for (key, v, lo, hi) in ranges {
            if v < lo || v > hi {
                errors.push(ManifestError::at(
                    n,
                    key,
                    format!("{v} is out of range ({lo} to {hi})"),
                ));
            }
        }
        for problem in self.grants.problems() {
            errors.push(ManifestError::at(n, &problem.key, problem.message));
        }
    }
}

/// Kafka's rule: 1-249 characters of `a-zA-Z0-9._-`, not `.` or `..`.
pub(crate) fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[plugin]]
name = "catalog-handler"
wasm = "target/plugins/catalog_handler.wasm"
subscribe = ["streaming.catalog", "streaming.ratings"]

[plugin.grants]
documents = { collections = ["titles"], buckets = ["title_assets"] }
messaging = { publish = ["streaming.derived"] }

[plugin.limits]
memory_mb = 64
call_timeout_ms = 2000

[plugin.config]
cache_ttl_s = 300
name = "x"
ratio = 0.5
on = true

[[plugin]]
name = "event-generator"
kind = "generator"
wasm = "/abs/event_generator.wasm"
"#;

    #[test]
    fn a_good_manifest_parses_with_paths_resolved_and_defaults_filled() {
        let m = Manifest::parse(GOOD, Path::new("/srv/app")).expect("valid");
        let c = &m.plugins[0];
        assert_eq!(
            c.wasm,
            PathBuf::from("/srv/app/target/plugins/catalog_handler.wasm")
        );
        assert_eq!(c.limits.memory_mb, 64);
        assert_eq!(c.limits.batch_size, Limits::default().batch_size);
        assert_eq!(c.group_id(), "polyhost.catalog-handler");
        let cfg = c.config_strings();
        assert_eq!(cfg["cache_ttl_s"], "300");
        assert_eq!(cfg["ratio"], "0.5");
        assert_eq!(cfg["on"], "true");
        assert_eq!(
            c.grants.documents.as_ref().unwrap().database,
            "streaming",
            "the documents database defaults to `streaming`"
        );
        assert!(c.grants.sql.is_none(), "nothing is granted unless named");
        let g = &m.plugins[1];
        assert_eq!(g.kind, Kind::Generator);
        assert_eq!(g.wasm, PathBuf::from("/abs/event_generator.wasm"));
    }

    #[test]
    fn the_instance_mode_is_per_batch_unless_reused_is_asked_for() {
        let entry = |extra: &str| {
            format!("[[plugin]]\nname = \"p1\"\nwasm = \"p.wasm\"\nsubscribe = [\"t\"]\n{extra}")
        };
        let m = Manifest::parse(&entry(""), Path::new("/srv")).expect("valid");
        assert_eq!(m.plugins[0].limits.instance, InstanceMode::PerBatch);
        assert_eq!(m.plugins[0].limits.reuse_batches, 1_000);
        let m = Manifest::parse(
            &entry("[plugin.limits]\ninstance = \"reused\"\nreuse_batches = 50"),
            Path::new("/srv"),
        )
        .expect("valid");
        assert_eq!(m.plugins[0].limits.instance, InstanceMode::Reused);
        assert_eq!(m.plugins[0].limits.reuse_batches, 50);
        let bad = Manifest::parse(
            &entry("[plugin.limits]\ninstance = \"sometimes\""),
            Path::new("/srv"),
        )
        .expect_err("unknown mode")
        .iter()
        .map(ToString::to_string)
        .collect::<String>();
        assert!(bad.contains("limits.instance"), "{bad}");
        let bad = Manifest::parse(
            &entry("[plugin.limits]\nreuse_batches = 0"),
            Path::new("/srv"),
        )
        .expect_err("out of range")
        .iter()
        .map(ToString::to_string)
        .collect::<String>();
        assert!(bad.contains("limits.reuse_batches"), "{bad}");
    }

    /// Each broken manifest and the message it must give: the plugin, the key, the problem.
    #[test]
    fn broken_manifests_name_the_plugin_and_the_key() {
        let entry = |extra: &str| {
            format!("[[plugin]]\nname = \"p1\"\nwasm = \"p.wasm\"\nsubscribe = [\"t\"]\n{extra}")
        };
        let cases: Vec<(String, &str)> = vec![
            (entry("colour = \"red\""), "plugin `p1`: `colour`: unknown field `colour`, expected one of"),
            (
                entry("[plugin.grants]\nsql = { role = \"r\", rolez = 1 }"),
                "plugin `p1`: `grants.sql.rolez`: unknown field `rolez`, expected `role`",
            ),
            (
                entry("[plugin.grants]\nfilesystem = {}"),
                "plugin `p1`: `grants.filesystem`: unknown field `filesystem`",
            ),
            (
                entry("[plugin.limits]\nmemory_mb = \"lots\""),
                "plugin `p1`: `limits.memory_mb`: invalid type",
            ),
            (
                entry("[plugin.limits]\nmemory_mb = 0"),
                "plugin `p1`: `limits.memory_mb`: 0 is out of range",
            ),
            (
                entry("[plugin.config]\nlist = [1, 2]"),
                "plugin `p1`: `config.list`: must be a string, an integer, a float or a boolean",
            ),
            (
                entry("[plugin.grants]\nsearch = { indices = [\"*\"] }"),
                "plugin `p1`: `grants.search.indices`: `*`",
            ),
            (
                entry("[plugin.grants]\nkeyvalue = { prefixes = [\"\"] }"),
                "plugin `p1`: `grants.keyvalue.prefixes`",
            ),
            (
                entry("[plugin.grants]\nmessaging = { publish = [\"bad topic\"] }"),
                "plugin `p1`: `grants.messaging.publish[0]`",
            ),
            (
                entry("[plugin.grants]\nsql = { role = \"Robert'); DROP\" }"),
                "plugin `p1`: `grants.sql.role`",
            ),
            (
                "[[plugin]]\nname = \"p1\"\nwasm = \"p.wasm\"\n".into(),
                "plugin `p1`: `subscribe`: a handler must subscribe",
            ),
            (
                "[[plugin]]\nname = \"g\"\nkind = \"generator\"\nwasm = \"g.wasm\"\nsubscribe = [\"t\"]\n".into(),
                "plugin `g`: `subscribe`: a generator consumes nothing",
            ),
            (
                "[[plugin]]\nname = \"p1\"\nwasm = \"p.wasm\"\nkind = \"daemon\"\nsubscribe = [\"t\"]\n".into(),
                "plugin `p1`: `kind`: unknown variant `daemon`",
            ),
            (
                "[[plugin]]\nwasm = \"p.wasm\"\nsubscribe = [\"t\"]\n".into(),
                "plugin `#1`: missing field `name`",
            ),
            (
                "[[plugin]]\nname = \"Bad_Name\"\nwasm = \"p.wasm\"\nsubscribe = [\"t\"]\n".into(),
                "plugin `Bad_Name`: `name`: must be",
            ),
            (
                format!("{}\n{}", entry(""), entry("")),
                "plugin `p1`: `name`: another plugin already has this name",
            ),
            ("[plugins]\nname = 1\n".into(), "unknown top-level key `plugins`"),
            ("".into(), "no `[[plugin]]` entry"),
            ("[[plugin]\nname=".into(), "TOML parse error"),
            (
                format!("{}\n[connections.kafka]\nbrokerz = \"k:9092\"\n", entry("")),
                "`connections.kafka.brokerz`: unknown field `brokerz`",
            ),
            (
                format!("{}\n[connections.redis.tls]\ncert_file = \"/c.pem\"\n", entry("")),
                "`connections.redis.tls.key_file`: `cert_file` needs its `key_file`",
            ),
        ];
        for (text, expected) in cases {
            let errors = Manifest::parse(&text, Path::new("/m"))
                .expect_err(&format!("must be refused:\n{text}"));
            let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            assert!(
                all.iter().any(|m| m.contains(expected)),
                "expected a message containing {expected:?} for:\n{text}\ngot: {all:#?}"
            );
        }
    }

    #[test]
    fn the_connections_section_is_read() {
        let entry = |extra: &str| {
            format!("[[plugin]]\nname = \"p1\"\nwasm = \"p.wasm\"\nsubscribe = [\"t\"]\n{extra}")
        };
        let text = format!(
            "{}\n[connections.kafka]\nbrokers = \"kafka-1:9094\"\nsasl = {{ mechanism = \"PLAIN\", username = \"u\", password = \"p\" }}\n",
            entry("")
        );
        let m = Manifest::parse(&text, Path::new("/m")).unwrap();
        assert_eq!(m.connections.kafka.brokers, "kafka-1:9094");
        assert_eq!(m.connections.kafka.security_protocol(), "sasl_plaintext");
        let plain = Manifest::parse(&entry(""), Path::new("/m")).unwrap();
        assert_eq!(plain.connections, crate::connections::Settings::builtin());
    }
}
