//! How the host reaches its services: the manifest's `[connections]` section, the
//! environment and the command line, resolved into one [`Settings`], and the one place each
//! service's client options are built from it (TLS, authentication, pass-through settings).
//!
//! ```toml
//! [connections.kafka]
//! brokers = "kafka-1.internal:9094"
//! tls = { ca_file = "/etc/polyhost/ca.pem" }
//! sasl = { mechanism = "SCRAM-SHA-512", username = "polyhost", password = { env = "KAFKA_PASSWORD" } }
//! librdkafka = { "socket.keepalive.enable" = "true" }
//!
//! [connections.postgres]
//! url = "postgres://polyhost@db.internal:5432/polyhost"
//! password = { env = "PGPASSWORD" }
//! tls = { ca_file = "/etc/polyhost/ca.pem" }      # sslmode verify-full
//! ```
//!
//! The same keys may instead come from a connections file of their own (`--connections`, or
//! `POLYHOST_CONNECTIONS`), written without the `connections.` prefix (`[kafka]`,
//! `[postgres]`, …): a deployment then keeps its secrets out of the manifest. The file, when
//! given, stands for the manifest's whole section.
//!
//! Precedence, key by key: the command line, then the environment (`KAFKA_BROKERS`,
//! `DATABASE_URL`, `MONGODB_URI`, `REDIS_URL`, `ELASTICSEARCH_URL`), then the connections
//! file or else the manifest, then the defaults below. Secrets are [`Secret`]s: never
//! printed, by `Debug`, `Display`, logs or the admin API.

mod elasticsearch;
mod kafka;
mod mongodb;
mod postgres;
mod redis;
mod secret;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use self::elasticsearch::Elasticsearch;
pub use self::kafka::{Kafka, LibrdkafkaOptions, Sasl, SaslMechanism};
pub use self::mongodb::{MongoAuthMechanism, Mongodb};
pub use self::postgres::{Postgres, SslMode};
pub use self::redis::Redis;
pub use self::secret::{MASK, Secret, ServiceUrl};

/// Kafka's bootstrap servers when nothing else is said.
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";
/// PostgreSQL's URL when nothing else is said.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/polyhost";
/// MongoDB's (FerretDB's) URL when nothing else is said.
pub const DEFAULT_MONGODB_URI: &str = "mongodb://127.0.0.1:27017";
/// Redis's URL when nothing else is said.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Elasticsearch's URL when nothing else is said.
pub const DEFAULT_ELASTICSEARCH_URL: &str = "http://127.0.0.1:9200";

/// The manifest's `[connections]` section, one block per service, every block optional:
/// how the host reaches each service. Unknown keys are an error.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[connections.kafka]`: the trigger, dead letters, messaging, generators.
    #[serde(default)]
    pub kafka: Kafka,
    /// `[connections.postgres]`: the `sql` backend and `polyhost migrate`.
    #[serde(default)]
    pub postgres: Postgres,
    /// `[connections.mongodb]`: the `documents` backend (MongoDB or FerretDB).
    #[serde(default)]
    pub mongodb: Mongodb,
    /// `[connections.redis]`: the `keyvalue` backend.
    #[serde(default)]
    pub redis: Redis,
    /// `[connections.elasticsearch]`: the `search` backend and the console's audit view.
    #[serde(default)]
    pub elasticsearch: Elasticsearch,
}

/// The built-in defaults ([`Settings::builtin`]); the environment is not read.
impl Default for Settings {
    fn default() -> Self {
        Settings::builtin()
    }
}

impl Settings {
    /// What the environment alone says: the connections file of `POLYHOST_CONNECTIONS` (else
    /// the defaults), with the environment's URLs over it, as `polyhost run` reads them for a
    /// manifest without a `[connections]` section.
    pub fn from_env() -> anyhow::Result<Self> {
        ConnectionArgs::from_env().resolve(&Settings::builtin())
    }

    /// The settings of a `[connections]` section (the manifest's, or a connections file's
    /// whole text): strict, every problem found as (its key under `connections.`, what is
    /// wrong).
    pub fn parse(section: toml::Value) -> Result<Self, Vec<(String, String)>> {
        match serde_path_to_error::deserialize::<_, Settings>(section) {
            Ok(settings) => match settings.validate() {
                errors if errors.is_empty() => Ok(settings),
                errors => Err(errors),
            },
            Err(e) => {
                let path = e.path().to_string();
                Err(vec![(
                    if path == "." { String::new() } else { path },
                    e.into_inner().message().trim_end().to_string(),
                )])
            }
        }
    }

    /// A connections file: the keys of `[connections]`, without the prefix.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the connections file {}", path.display()))?;
        let table: toml::Table = text
            .parse()
            .with_context(|| format!("{}: not TOML", path.display()))?;
        Settings::parse(toml::Value::Table(table)).map_err(|errors| {
            let lines: Vec<String> = errors
                .iter()
                .map(|(key, message)| {
                    if key.is_empty() {
                        format!("{}: {message}", path.display())
                    } else {
                        format!("{}: `{key}`: {message}", path.display())
                    }
                })
                .collect();
            anyhow::anyhow!(lines.join("\n"))
        })
    }

    /// The built-in defaults alone: local services, no TLS, no authentication beyond
    /// `DEFAULT_DATABASE_URL`'s.
    pub fn builtin() -> Self {
        Settings {
            kafka: Kafka::default(),
            postgres: Postgres::default(),
            mongodb: Mongodb::default(),
            redis: Redis::default(),
            elasticsearch: Elasticsearch::default(),
        }
    }

    /// What serde cannot check: pairs of keys that go together. One message per problem,
    /// each naming its key under `connections.`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let tls = [
            ("kafka", &self.kafka.tls),
            ("postgres", &self.postgres.tls),
            ("mongodb", &self.mongodb.tls),
            ("redis", &self.redis.tls),
            ("elasticsearch", &self.elasticsearch.tls),
        ];
        for (service, tls) in tls {
            if let Some(t) = tls {
                let mongodb = service == "mongodb";
                match (&t.cert_file, &t.key_file) {
                    (Some(_), None) if !mongodb => errors.push((
                        format!("{service}.tls.key_file"),
                        "`cert_file` needs its `key_file`".to_string(),
                    )),
                    (None, Some(_)) => errors.push((
                        format!("{service}.tls.cert_file"),
                        "`key_file` needs its `cert_file`".to_string(),
                    )),
                    (Some(c), Some(k)) if mongodb && c != k => errors.push((
                        format!("{service}.tls.key_file"),
                        "MongoDB reads the client certificate and its key from one PEM file: \
                         give it as `cert_file` only"
                            .to_string(),
                    )),
                    _ => {}
                }
            }
        }
        let pairs = [
            (
                "postgres",
                self.postgres.user.is_some(),
                self.postgres.password.is_some(),
                false,
            ),
            (
                "mongodb",
                self.mongodb.username.is_some(),
                self.mongodb.password.is_some(),
                true,
            ),
            (
                "redis",
                self.redis.username.is_some(),
                self.redis.password.is_some(),
                false,
            ),
            (
                "elasticsearch",
                self.elasticsearch.username.is_some(),
                self.elasticsearch.password.is_some(),
                true,
            ),
        ];
        for (service, user, password, both) in pairs {
            if both && user != password {
                errors.push((
                    format!("{service}.{}", if user { "password" } else { "username" }),
                    "`username` and `password` go together".to_string(),
                ));
            }
        }
        if self.elasticsearch.api_key.is_some() && self.elasticsearch.username.is_some() {
            errors.push((
                "elasticsearch.api_key".to_string(),
                "give either `api_key` or `username` and `password`, not both".to_string(),
            ));
        }
        if self
            .elasticsearch
            .tls
            .as_ref()
            .is_some_and(|t| t.cert_file.is_some())
        {
            errors.push((
                "elasticsearch.tls.cert_file".to_string(),
                "client certificates are not supported for Elasticsearch: use `api_key` or \
                 `username` and `password`"
                    .to_string(),
            ));
        }
        errors
    }
}

/// A service's `tls` block: present (even empty, `tls = {}`) means the connection is
/// encrypted and, unless `verify = false`, the server's certificate is verified against
/// `ca_file` (or the system's roots) and its name against the URL's host.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM file of the certificate authorities to trust (default: the system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate, for services that ask for one (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Verify the server's certificate and name (default `true`). `false` is an explicit,
    /// insecure opt-out, for tests against self-signed servers only.
    #[serde(default = "yes")]
    pub verify: bool,
}

fn yes() -> bool {
    true
}

impl Tls {
    /// Reads `ca_file`, if any.
    fn read_ca(&self) -> anyhow::Result<Option<Vec<u8>>> {
        use anyhow::Context as _;
        self.ca_file
            .as_ref()
            .map(|p| {
                std::fs::read(p).with_context(|| format!("reading the CA file {}", p.display()))
            })
            .transpose()
    }
}

/// The service addresses the command line and the environment may give; each one given
/// replaces the manifest's (`[connections]`) for that service. A connections file given
/// replaces the manifest's whole section.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectionArgs {
    /// A connections file: the manifest's `[connections]` keys without the prefix (`[kafka]`,
    /// `[postgres]`, …), used instead of the manifest's section.
    #[arg(
        long = "connections",
        env = "POLYHOST_CONNECTIONS",
        value_name = "FILE"
    )]
    pub connections_file: Option<PathBuf>,
    /// Kafka bootstrap servers [default: the manifest's, else 127.0.0.1:9092].
    #[arg(long, env = "KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// PostgreSQL URL; each plugin connects as its own role on this server and database
    /// [default: the manifest's, else postgres://postgres:…@127.0.0.1:5432/polyhost].
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// MongoDB URL [default: the manifest's, else mongodb://127.0.0.1:27017].
    #[arg(long, env = "MONGODB_URI", hide_env_values = true)]
    pub mongodb_uri: Option<String>,
    /// Redis URL [default: the manifest's, else redis://127.0.0.1:6379].
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Elasticsearch URL [default: the manifest's, else http://127.0.0.1:9200].
    #[arg(long, env = "ELASTICSEARCH_URL", hide_env_values = true)]
    pub elasticsearch_url: Option<String>,
}

impl ConnectionArgs {
    /// The environment's addresses alone (what the command line reads when not given flags).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        ConnectionArgs {
            connections_file: var("POLYHOST_CONNECTIONS").map(PathBuf::from),
            kafka_brokers: var("KAFKA_BROKERS"),
            database_url: var("DATABASE_URL"),
            mongodb_uri: var("MONGODB_URI"),
            redis_url: var("REDIS_URL"),
            elasticsearch_url: var("ELASTICSEARCH_URL"),
        }
    }

    /// The settings to connect with: the connections file's when one is given, else
    /// `manifest` (the manifest's section, or [`Settings::builtin`]), with the addresses given
    /// here over them.
    pub fn resolve(&self, manifest: &Settings) -> anyhow::Result<Settings> {
        let base = match &self.connections_file {
            Some(path) => {
                if *manifest != Settings::builtin() {
                    tracing::warn!(
                        file = %path.display(),
                        "the manifest's [connections] section is ignored: a connections file \
                         is given"
                    );
                }
                Settings::from_file(path)?
            }
            None => manifest.clone(),
        };
        Ok(self.apply(base))
    }

    /// `settings` with the addresses given here over them.
    fn apply(&self, mut settings: Settings) -> Settings {
        if let Some(b) = &self.kafka_brokers {
            settings.kafka.brokers = b.clone();
        }
        if let Some(u) = &self.database_url {
            settings.postgres.url = u.as_str().into();
        }
        if let Some(u) = &self.mongodb_uri {
            settings.mongodb.url = u.as_str().into();
        }
        if let Some(u) = &self.redis_url {
            settings.redis.url = u.as_str().into();
        }
        if let Some(u) = &self.elasticsearch_url {
            settings.elasticsearch.url = u.as_str().into();
        }
        settings
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const SECURED: &str = r#"
        [kafka]
        brokers = "kafka-1:9094"
        tls = { ca_file = "/ca.pem" }
        sasl = { mechanism = "SCRAM-SHA-256", username = "polyhost", password = "kafka-pw" }
        librdkafka = { "sasl.oauthbearer.client.secret" = "oauth-pw" }

        [postgres]
        url = "postgres://polyhost:url-pw@db:5432/polyhost"
        password = "pg-pw"
        sslmode = "verify-full"
        tls = { ca_file = "/ca.pem" }

        [mongodb]
        url = "mongodb://docs:27018"
        username = "polyhost"
        password = "mongo-pw"
        auth_source = "$external"
        auth_mechanism = "PLAIN"
        tls = { ca_file = "/ca.pem" }

        [redis]
        url = "rediss://cache:6380"
        username = "polyhost"
        password = "redis-pw"
        tls = { ca_file = "/ca.pem" }

        [elasticsearch]
        url = "https://search:9200"
        api_key = "es-key"
        tls = { ca_file = "/ca.pem" }
    "#;

    #[test]
    fn every_secret_is_masked_in_debug_and_json() {
        let s: Settings = toml::from_str(SECURED).unwrap();
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        let shown = format!("{s:?}\n{s:#?}\n{}", serde_json::to_string(&s).unwrap());
        for secret in [
            "kafka-pw", "oauth-pw", "url-pw", "pg-pw", "mongo-pw", "redis-pw", "es-key",
        ] {
            assert!(!shown.contains(secret), "`{secret}` shown in:\n{shown}");
        }
        assert!(shown.contains(MASK));
        assert!(shown.contains("kafka-1:9094"));
        assert_eq!(
            s.kafka.client_config().get("sasl.password"),
            Some("kafka-pw")
        );
    }

    #[test]
    fn an_empty_section_is_the_defaults_and_unknown_keys_are_refused() {
        let s: Settings = toml::from_str("").unwrap();
        assert_eq!(s, Settings::builtin());
        assert_eq!(s.kafka.brokers, DEFAULT_KAFKA_BROKERS);
        assert_eq!(s.redis.url.expose(), DEFAULT_REDIS_URL);
        for bad in [
            "[rabbitmq]\nurl = \"x\"",
            "[redis]\nurl = \"x\"\npasword = \"p\"",
            "[kafka.tls]\nverfy = false",
        ] {
            assert!(toml::from_str::<Settings>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verification_is_on_unless_turned_off() {
        let s: Settings = toml::from_str("[redis]\ntls = {}").unwrap();
        assert!(s.redis.tls.unwrap().verify);
        let s: Settings = toml::from_str("[redis]\ntls = { verify = false }").unwrap();
        assert!(!s.redis.tls.unwrap().verify);
    }

    #[test]
    fn the_command_line_and_environment_win_over_the_manifest() {
        let manifest: Settings =
            toml::from_str("[kafka]\nbrokers = \"from-manifest:9092\"").unwrap();
        let args = ConnectionArgs {
            redis_url: Some("redis://from-env:6379".into()),
            ..Default::default()
        };
        let s = args.apply(manifest);
        assert_eq!(s.kafka.brokers, "from-manifest:9092");
        assert_eq!(s.redis.url.expose(), "redis://from-env:6379");
    }

    /// A file in a directory of its own under the system's temporary one.
    fn file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("polyhost-conn-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_connections_file_stands_for_the_manifests_section() {
        let manifest: Settings = toml::from_str(
            "[kafka]\nbrokers = \"from-manifest:9092\"\n[redis]\nurl = \"redis://m:1\"",
        )
        .unwrap();
        let path = file(
            "connections.toml",
            "[postgres]\nurl = \"postgres://app@db:5433/p\"\npassword = \"pw\"\n\
             [redis]\nurl = \"redis://from-file:6380/0\"\nusername = \"app\"",
        );
        let args = ConnectionArgs {
            connections_file: Some(path),
            elasticsearch_url: Some("http://from-env:9200".into()),
            ..Default::default()
        };
        let s = args.resolve(&manifest).unwrap();
        // The whole section is the file's: the manifest's Kafka brokers are not kept.
        assert_eq!(s.kafka.brokers, DEFAULT_KAFKA_BROKERS);
        assert_eq!(s.postgres.url.expose(), "postgres://app@db:5433/p");
        assert_eq!(s.postgres.login_password().as_deref(), Some("pw"));
        assert_eq!(s.redis.url.expose(), "redis://from-file:6380/0");
        assert_eq!(s.redis.username.as_deref(), Some("app"));
        // An address from the environment or the command line still wins.
        assert_eq!(s.elasticsearch.url.expose(), "http://from-env:9200");
        // Without a file, the manifest's.
        let s = ConnectionArgs::default().resolve(&manifest).unwrap();
        assert_eq!(s.kafka.brokers, "from-manifest:9092");
    }

    #[test]
    fn a_bad_connections_file_is_named_with_its_key() {
        let path = file(
            "bad.toml",
            "[redis]\nurl = \"redis://x\"\nuser = \"typo\"\n",
        );
        let e = Settings::from_file(&path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(e.contains("`redis.user`: unknown field"), "{e}");
        let path = file("pairs.toml", "[mongodb]\nusername = \"u\"\n");
        let e = Settings::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("`mongodb.password`"), "{e}");
        let e = Settings::from_file(Path::new("/nonexistent/c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/c.toml"), "{e}");
    }

    #[test]
    fn a_url_password_is_decoded_for_the_plugin_roles() {
        let s: Settings =
            toml::from_str("[postgres]\nurl = \"postgres://u:p%40ss%3Aw@db/x\"").unwrap();
        assert_eq!(s.postgres.login_password().as_deref(), Some("p@ss:w"));
    }

    #[test]
    fn pairs_that_go_together_are_checked() {
        let s: Settings = toml::from_str(
            "[mongodb]\nusername = \"u\"\n[elasticsearch]\napi_key = \"k\"\nusername = \"u\"\npassword = \"p\"\n[redis]\ntls = { cert_file = \"/c.pem\" }",
        )
        .unwrap();
        let keys: Vec<String> = s.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "redis.tls.key_file",
                "mongodb.password",
                "elasticsearch.api_key"
            ]
        );
    }
}
