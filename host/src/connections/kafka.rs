//! `[connections.kafka]`: the brokers, TLS, SASL and librdkafka settings every Kafka client
//! of the host is built with ([`Kafka::client_config`]).

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize, Serializer};

use super::secret::{MASK, Secret};
use super::{DEFAULT_KAFKA_BROKERS, Tls};

/// How the host connects to Kafka: the trigger's consumers, the dead-letter producers and
/// readers, the messaging backend, the generators and the topic administration all use it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Kafka {
    /// Bootstrap servers, `host:port[,host:port…]` (env `KAFKA_BROKERS`).
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// TLS to the brokers: present (even empty, `tls = {}`) means TLS is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// SASL authentication: present means SASL is on (over TLS when `tls` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<Sasl>,
    /// librdkafka settings passed to every client as they are, after the ones the host
    /// sets (so they win): e.g. `"socket.keepalive.enable" = "true"`. See librdkafka's
    /// CONFIGURATION.md. Values of keys naming a password or secret are masked when shown.
    #[serde(default, skip_serializing_if = "LibrdkafkaOptions::is_empty")]
    pub librdkafka: LibrdkafkaOptions,
}

fn default_brokers() -> String {
    DEFAULT_KAFKA_BROKERS.to_string()
}

impl Default for Kafka {
    fn default() -> Self {
        Kafka::from(DEFAULT_KAFKA_BROKERS)
    }
}

/// Plain brokers: no TLS, no SASL, no extra settings.
impl From<&str> for Kafka {
    fn from(brokers: &str) -> Self {
        Kafka {
            brokers: brokers.to_string(),
            tls: None,
            sasl: None,
            librdkafka: LibrdkafkaOptions::default(),
        }
    }
}

impl From<String> for Kafka {
    fn from(brokers: String) -> Self {
        Kafka::from(brokers.as_str())
    }
}

impl From<&String> for Kafka {
    fn from(brokers: &String) -> Self {
        Kafka::from(brokers.as_str())
    }
}

/// `[connections.kafka.sasl]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password (a secret: a string or `{ env = "VARIABLE" }`).
    pub password: Secret,
}

/// A SASL mechanism librdkafka speaks without extra libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Pass-through librdkafka settings; `Debug` and `Serialize` mask the values of keys that
/// name a password or a secret (`sasl.password`, `ssl.key.password`, …).
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct LibrdkafkaOptions(pub BTreeMap<String, String>);

impl LibrdkafkaOptions {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn masked(&self) -> BTreeMap<&str, &str> {
        self.0
            .iter()
            .map(|(k, v)| {
                let secret = ["password", "secret", "key.pem", "jaas"]
                    .iter()
                    .any(|s| k.contains(s));
                (k.as_str(), if secret { MASK } else { v.as_str() })
            })
            .collect()
    }
}

impl fmt::Debug for LibrdkafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.masked().fmt(f)
    }
}

impl Serialize for LibrdkafkaOptions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.masked().serialize(s)
    }
}

impl Kafka {
    /// The `security.protocol` these settings mean.
    pub fn security_protocol(&self) -> &'static str {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }

    /// The one place a Kafka client's configuration is made: bootstrap servers, TLS, SASL,
    /// then the pass-through `librdkafka` settings. Callers add their client's own settings
    /// (group id, acks, …) to what this returns.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("security.protocol", self.security_protocol());
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca_file {
                c.set("ssl.ca.location", ca.display().to_string());
            }
            if let Some(cert) = &tls.cert_file {
                c.set("ssl.certificate.location", cert.display().to_string());
            }
            if let Some(key) = &tls.key_file {
                c.set("ssl.key.location", key.display().to_string());
            }
            if !tls.verify {
                c.set("enable.ssl.certificate.verification", "false")
                    .set("ssl.endpoint.identification.algorithm", "none");
            }
        }
        if let Some(sasl) = &self.sasl {
            c.set("sasl.mechanism", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        for (k, v) in &self.librdkafka.0 {
            c.set(k, v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_builder_sets_tls_sasl_and_the_pass_through_settings() {
        let k: Kafka = toml::from_str(
            r#"
            brokers = "kafka-1:9094"
            tls = { ca_file = "/etc/polyhost/ca.pem" }
            sasl = { mechanism = "SCRAM-SHA-512", username = "polyhost", password = "hunter2" }
            librdkafka = { "socket.keepalive.enable" = "true", "security.protocol" = "sasl_ssl" }
            "#,
        )
        .unwrap();
        let c = k.client_config();
        assert_eq!(c.get("bootstrap.servers"), Some("kafka-1:9094"));
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("ssl.ca.location"), Some("/etc/polyhost/ca.pem"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.password"), Some("hunter2"));
        assert_eq!(c.get("socket.keepalive.enable"), Some("true"));
        assert_eq!(c.get("enable.ssl.certificate.verification"), None);
        let plain = Kafka::from("127.0.0.1:9092").client_config();
        assert_eq!(plain.get("security.protocol"), Some("plaintext"));
    }

    #[test]
    fn unknown_keys_and_mechanisms_are_refused() {
        assert!(toml::from_str::<Kafka>("brokerz = \"x\"").is_err());
        let e = toml::from_str::<Kafka>(
            "sasl = { mechanism = \"GSSAPI\", username = \"u\", password = \"p\" }",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("SCRAM-SHA-256"), "{e}");
    }

    #[test]
    fn passwords_in_pass_through_settings_are_masked() {
        let k: Kafka =
            toml::from_str(r#"librdkafka = { "ssl.key.password" = "hunter2", "acks" = "all" }"#)
                .unwrap();
        let shown = format!("{k:?} {}", serde_json::to_string(&k).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("all"), "{shown}");
    }
}
