//! The backends a plugin can be granted, one module each, one WIT interface each.
//!
//! A backend module holds: its manifest `Grant` (the scope), its `Shared` connection (built
//! once per host, only when some plugin is granted it), its per-plugin `Client` (a cheap
//! clone of the connection bound to one plugin's grant, with a bound on calls in flight), the
//! implementation of its generated `Host` trait for [`crate::state::HostState`], and the
//! scope check. Adding a backend means adding a module here and a line in each of
//! [`Grants`], [`Connections`], [`Backends`] and [`add_to_linker`].

pub mod config;
pub mod documents;
pub mod keyvalue;
pub mod logging;
pub mod messaging;
pub mod search;
pub mod sql;

use serde::Deserialize;
use wasmtime::component::{HasSelf, Linker};

use crate::state::HostState;

/// The connection settings, now in [`crate::connections`]; kept here for existing paths.
pub use crate::connections::Settings;

/// A plugin's `[plugin.grants]`: deny by default, each backend only if named here.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Kafka publish: which topics.
    pub messaging: Option<messaging::Grant>,
    /// PostgreSQL: which database role.
    pub sql: Option<sql::Grant>,
    /// MongoDB: which database, collections and blob buckets.
    pub documents: Option<documents::Grant>,
    /// Redis: which key prefixes.
    pub keyvalue: Option<keyvalue::Grant>,
    /// Elasticsearch: which index patterns.
    pub search: Option<search::Grant>,
}

/// The connections shared by every plugin of a host: each made once, on first need.
#[derive(Debug, Default)]
pub struct Connections {
    pub settings: Settings,
    pub messaging: tokio::sync::OnceCell<messaging::Shared>,
    pub sql: tokio::sync::OnceCell<sql::Shared>,
    pub documents: tokio::sync::OnceCell<documents::Shared>,
    pub keyvalue: tokio::sync::OnceCell<keyvalue::Shared>,
    pub search: tokio::sync::OnceCell<search::Shared>,
}

impl Connections {
    /// Connections to the services named by `settings`; nothing is dialled yet.
    pub fn new(settings: Settings) -> Self {
        Connections {
            settings,
            ..Default::default()
        }
    }

    /// Pings every backend a plugin has been bound to (the others are not needed): one
    /// `(backend, Err(reason))` per backend that does not answer within 2 s.
    pub async fn readiness(&self) -> Vec<(&'static str, Result<(), String>)> {
        async fn probe(
            name: &'static str,
            ping: impl std::future::Future<Output = anyhow::Result<()>>,
        ) -> (&'static str, Result<(), String>) {
            let r = match tokio::time::timeout(std::time::Duration::from_secs(2), ping).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("no answer within 2 s".to_string()),
            };
            (name, r)
        }
        let mut out = Vec::new();
        if let Some(c) = self.messaging.get() {
            out.push(probe("messaging", c.ping()).await);
        }
        if let Some(c) = self.sql.get() {
            out.push(probe("sql", c.ping()).await);
        }
        if let Some(c) = self.documents.get() {
            out.push(probe("documents", c.ping()).await);
        }
        if let Some(c) = self.keyvalue.get() {
            out.push(probe("keyvalue", c.ping()).await);
        }
        if let Some(c) = self.search.get() {
            out.push(probe("search", c.ping()).await);
        }
        out
    }
}

/// One plugin's backends, each bound to its grant. `None`: not granted.
#[derive(Debug, Default)]
pub struct Backends {
    pub messaging: Option<messaging::Client>,
    pub sql: Option<sql::Client>,
    pub documents: Option<documents::Client>,
    pub keyvalue: Option<keyvalue::Client>,
    pub search: Option<search::Client>,
}

impl Backends {
    /// Binds the granted backends for `plugin`, connecting the shared clients on first need.
    /// `limits` are the plugin's `[plugin.limits]`, for the backends that set them on
    /// their sessions.
    pub async fn bind(
        conns: &Connections,
        plugin: &str,
        grants: &Grants,
        limits: &crate::manifest::Limits,
    ) -> anyhow::Result<Backends> {
        use anyhow::Context;
        let s = &conns.settings;
        let mut b = Backends::default();
        if let Some(g) = &grants.messaging {
            let shared = conns
                .messaging
                .get_or_try_init(|| messaging::Shared::connect(s))
                .await
                .context("connecting to Kafka")?;
            b.messaging = Some(messaging::Client::new(shared, plugin, g));
        }
        if let Some(g) = &grants.sql {
            let shared = conns
                .sql
                .get_or_try_init(|| sql::Shared::connect(s))
                .await
                .context("connecting to PostgreSQL")?;
            b.sql = Some(sql::Client::new(shared, plugin, g, limits)?);
        }
        if let Some(g) = &grants.documents {
            let shared = conns
                .documents
                .get_or_try_init(|| documents::Shared::connect(s))
                .await
                .context("connecting to MongoDB")?;
            b.documents = Some(documents::Client::new(shared, plugin, g));
        }
        if let Some(g) = &grants.keyvalue {
            let shared = conns
                .keyvalue
                .get_or_try_init(|| keyvalue::Shared::connect(s))
                .await
                .context("connecting to Redis")?;
            b.keyvalue = Some(keyvalue::Client::new(shared, plugin, g));
        }
        if let Some(g) = &grants.search {
            let shared = conns
                .search
                .get_or_try_init(|| search::Shared::connect(s))
                .await
                .context("connecting to Elasticsearch")?;
            b.search = Some(search::Client::new(shared, plugin, g));
        }
        Ok(b)
    }
}

/// What importing an interface takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportNeeds {
    /// Nothing: WASI basics, logging, config, the shared types, the batch's records.
    Nothing,
    /// The named grant.
    Grant(&'static str),
    /// The host does not provide this interface at all.
    Unknown,
}

/// What a plugin needs to import `interface` (a WIT interface name, version optional).
pub fn import_needs(interface: &str) -> ImportNeeds {
    let base = interface.split('@').next().unwrap_or(interface);
    match base {
        "polyhost:platform/types"
        | "polyhost:platform/records"
        | "wasi:logging/logging"
        | "wasi:config/store" => ImportNeeds::Nothing,
        "polyhost:platform/messaging" => ImportNeeds::Grant("messaging"),
        "polyhost:platform/sql" => ImportNeeds::Grant("sql"),
        "polyhost:platform/documents" => ImportNeeds::Grant("documents"),
        "polyhost:platform/kv"
        | "wasi:keyvalue/store"
        | "wasi:keyvalue/atomics"
        | "wasi:keyvalue/batch" => ImportNeeds::Grant("keyvalue"),
        "polyhost:platform/search" => ImportNeeds::Grant("search"),
        b if b.starts_with("wasi:cli/")
            || b.starts_with("wasi:io/")
            || b.starts_with("wasi:clocks/")
            || b.starts_with("wasi:random/")
            || b.starts_with("wasi:filesystem/")
            || b.starts_with("wasi:sockets/") =>
        {
            ImportNeeds::Nothing
        }
        _ => ImportNeeds::Unknown,
    }
}

impl Grants {
    /// Whether the grant named by [`ImportNeeds::Grant`] is present.
    pub fn has(&self, grant: &str) -> bool {
        match grant {
            "messaging" => self.messaging.is_some(),
            "sql" => self.sql.is_some(),
            "documents" => self.documents.is_some(),
            "keyvalue" => self.keyvalue.is_some(),
            "search" => self.search.is_some(),
            _ => false,
        }
    }
}

/// Adds every interface the host provides to `linker`. Grants are enforced before
/// instantiation (imports) and in each call (scopes), not by leaving things unlinked.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use crate::bindings::{polyhost::platform as p, wasi};
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    p::types::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    p::records::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    wasi::logging::logging::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    wasi::config::store::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    p::messaging::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    p::sql::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    p::documents::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    p::kv::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    wasi::keyvalue::store::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    wasi::keyvalue::atomics::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    wasi::keyvalue::batch::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    p::search::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

/// The client of a backend the plugin was not granted: a host bug if reached, since the
/// component was refused at load when it imported the interface.
pub(crate) fn not_granted(backend: &str) -> crate::error::HostError {
    crate::error::HostError::Denied(format!("this plugin has no `{backend}` grant"))
}
