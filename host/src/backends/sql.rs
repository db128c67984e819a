//! PostgreSQL (`polyhost:platform/sql`), each plugin under its own database role.

use serde::Deserialize;

use super::Settings;

/// `grants.sql`: the database role a plugin's statements run as.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The role name; PostgreSQL's own GRANTs decide what it may touch.
    pub role: String,
}

/// The PostgreSQL server the plugins' pools connect to.
#[derive(Debug)]
pub struct Shared {}

impl Shared {
    pub async fn connect(_settings: &Settings) -> anyhow::Result<Shared> {
        anyhow::bail!("sql backend not implemented yet")
    }
}

/// One plugin's pool, logged in as its role.
#[derive(Debug, Clone)]
pub struct Client {}

impl Client {
    pub fn new(_shared: &Shared, _plugin: &str, _grant: &Grant) -> anyhow::Result<Client> {
        Ok(Client {})
    }
}

/// An open transaction (`polyhost:platform/sql.transaction`).
#[derive(Debug)]
pub struct Transaction {}
