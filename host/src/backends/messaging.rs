//! Kafka publish (`polyhost:platform/messaging`), scoped to the granted topics.

use serde::Deserialize;

use super::Settings;

/// `grants.messaging`: the topics a plugin may publish to.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Topic names, exactly.
    pub publish: Vec<String>,
}

/// The host's one Kafka producer.
#[derive(Debug)]
pub struct Shared {}

impl Shared {
    pub async fn connect(_settings: &Settings) -> anyhow::Result<Shared> {
        anyhow::bail!("messaging backend not implemented yet")
    }
}

/// One plugin's handle on the producer.
#[derive(Debug, Clone)]
pub struct Client {}

impl Client {
    pub fn new(_shared: &Shared, _plugin: &str, _grant: &Grant) -> Client {
        Client {}
    }
}
