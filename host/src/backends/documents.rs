//! MongoDB documents and blobs (`polyhost:platform/documents`), scoped to granted collections.

use serde::Deserialize;

use super::Settings;

/// `grants.documents`: the database and the collections and blob buckets a plugin may use.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The database (default `streaming`).
    #[serde(default = "default_database")]
    pub database: String,
    /// Collection names, exactly.
    #[serde(default)]
    pub collections: Vec<String>,
    /// Blob bucket names, exactly.
    #[serde(default)]
    pub buckets: Vec<String>,
}

/// The host's one MongoDB client.
#[derive(Debug)]
pub struct Shared {}

impl Shared {
    pub async fn connect(_settings: &Settings) -> anyhow::Result<Shared> {
        anyhow::bail!("documents backend not implemented yet")
    }
}

/// One plugin's handle on its database.
#[derive(Debug, Clone)]
pub struct Client {}

impl Client {
    pub fn new(_shared: &Shared, _plugin: &str, _grant: &Grant) -> Client {
        Client {}
    }
}

fn default_database() -> String {
    "streaming".to_string()
}
