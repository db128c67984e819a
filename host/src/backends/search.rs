//! Elasticsearch (`polyhost:platform/search`), scoped to granted index patterns.

use serde::Deserialize;

use super::Settings;

/// `grants.search`: the index patterns a plugin may touch.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Index patterns, `*` matching any run of characters, e.g. `audit-events-*`.
    pub indices: Vec<String>,
}

/// The host's one Elasticsearch client.
#[derive(Debug)]
pub struct Shared {}

impl Shared {
    pub async fn connect(_settings: &Settings) -> anyhow::Result<Shared> {
        anyhow::bail!("search backend not implemented yet")
    }
}

/// One plugin's handle on Elasticsearch.
#[derive(Debug, Clone)]
pub struct Client {}

impl Client {
    pub fn new(_shared: &Shared, _plugin: &str, _grant: &Grant) -> Client {
        Client {}
    }
}
