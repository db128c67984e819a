//! Redis: `wasi:keyvalue` and `polyhost:platform/kv`, scoped to granted key prefixes.

use serde::Deserialize;

use super::Settings;

/// `grants.keyvalue`: the key prefixes a plugin may touch.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Key prefixes, e.g. `leaderboard:`; a key must start with one of them.
    pub prefixes: Vec<String>,
}

/// The host's one Redis connection manager.
#[derive(Debug)]
pub struct Shared {}

impl Shared {
    pub async fn connect(_settings: &Settings) -> anyhow::Result<Shared> {
        anyhow::bail!("keyvalue backend not implemented yet")
    }
}

/// One plugin's handle on Redis.
#[derive(Debug, Clone)]
pub struct Client {}

impl Client {
    pub fn new(_shared: &Shared, _plugin: &str, _grant: &Grant) -> Client {
        Client {}
    }
}

/// An open `wasi:keyvalue` bucket.
#[derive(Debug)]
pub struct Bucket {}
