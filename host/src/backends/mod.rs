//! The backends a plugin can be granted: one self-contained unit each.
//!
//! A backend is a module (a folder under `backends/`) with a marker type implementing
//! [`Backend`], which owns everything of that service:
//!
//! - its `[plugin.grants]` entry ([`Backend::Grant`]) and that entry's checks
//!   ([`Backend::check_grant`], run when the manifest is read);
//! - the WIT interfaces it serves ([`Backend::IMPORTS`]): a plugin that imports one of them
//!   needs the grant, and is refused at load without it;
//! - its connection ([`Backend::Shared`], made once per host on the first plugin granted
//!   it) and readiness probe ([`Backend::ping`]);
//! - the per-plugin binding ([`Backend::Client`]: the connection bound to one plugin's
//!   grant, with its own bound on calls in flight);
//! - its linker wiring ([`Backend::add_to_linker`]): the generated `Host` traits are
//!   implemented for [`View<'_, Self>`](View), a view of the store's data holding only what a
//!   call of this backend may use (the plugin's client and limits, the resource table),
//!   linked through the [`Data<Self>`](Data) marker ([`wasmtime::component::HasData`]).
//!
//! The registry at the end of this file lists the backends, one line each; from it come the
//! typed grant identifier [`GrantId`], the manifest's [`Grants`], the host's
//! [`Connections`] and a plugin's bound [`Backends`].
//!
//! **Adding a backend**: add a folder `backends/<name>/` whose `mod.rs` defines the grant,
//! the shared connection, the client and a marker type implementing [`Backend`] (with
//! `Host` impls for `View<'_, Marker>`); add its WIT file to `wit/` and the interface to the
//! worlds; then add `pub mod <name>;` and one line to the registry below. The manifest, the
//! load-time import check, readiness and the linker take it from there (`polyhost new
//! --grant` has its own list of what it can scaffold, in `scaffold.rs`).

pub mod config;
pub mod documents;
pub mod keyvalue;
pub mod logging;
pub mod messaging;
pub mod search;
pub mod sql;
mod unit;

use serde::Deserialize;
use wasmtime::component::{HasSelf, Linker};

use crate::state::HostState;

pub use unit::{Backend, Data, GrantProblem, Registered, View, view};

/// The connection settings, in [`crate::connections`]; re-exported for the backends.
pub use crate::connections::Settings;

#[macro_use]
mod registry;

registry! {
    /// Kafka publish: which topics.
    messaging: Messaging => messaging::Messaging,
    /// PostgreSQL: which database role.
    sql: Sql => sql::Sql,
    /// MongoDB: which database, collections and blob buckets.
    documents: Documents => documents::Documents,
    /// Redis: which key prefixes.
    keyvalue: Keyvalue => keyvalue::Keyvalue,
    /// Elasticsearch: which index patterns.
    search: Search => search::Search,
}

/// What importing an interface takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportNeeds {
    /// Nothing: WASI basics, logging, config, the shared types, the batch's records.
    Nothing,
    /// The grant of one backend.
    Grant(GrantId),
    /// The host does not provide this interface at all.
    Unknown,
}

/// What a plugin needs to import `interface` (a WIT interface name, version optional).
pub fn import_needs(interface: &str) -> ImportNeeds {
    let base = interface.split('@').next().unwrap_or(interface);
    if let Some(id) = GrantId::serving(base) {
        return ImportNeeds::Grant(id);
    }
    match base {
        "polyhost:platform/types"
        | "polyhost:platform/records"
        | "wasi:logging/logging"
        | "wasi:config/store" => ImportNeeds::Nothing,
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

/// Adds every interface the host provides to `linker`: WASI, the plugin's own interfaces
/// (types, records, logging, config), then each registered backend's. Grants are enforced
/// before instantiation (imports) and in each call (scopes), not by leaving things
/// unlinked.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use crate::bindings::{polyhost::platform as p, wasi};
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    p::types::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    p::records::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)?;
    wasi::logging::logging::add_to_linker::<_, unit::EnvData>(linker, |s| &*s.env)?;
    wasi::config::store::add_to_linker::<_, unit::EnvData>(linker, |s| &*s.env)?;
    add_backends_to_linker(linker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_import_needs_its_grant_and_no_import_two() {
        let mut seen = std::collections::HashSet::new();
        for &id in GrantId::ALL {
            assert!(!id.imports().is_empty(), "{id}");
            for import in id.imports() {
                assert!(seen.insert(*import), "{import} is served twice");
                assert_eq!(import_needs(import), ImportNeeds::Grant(id));
                assert_eq!(
                    import_needs(&format!("{import}@0.2.0")),
                    ImportNeeds::Grant(id)
                );
            }
        }
        assert_eq!(
            import_needs("wasi:keyvalue/atomics@0.2.0-draft"),
            ImportNeeds::Grant(GrantId::Keyvalue)
        );
        assert_eq!(
            import_needs("wasi:http/outgoing-handler"),
            ImportNeeds::Unknown
        );
        assert_eq!(
            import_needs("wasi:config/store@0.2.0-draft"),
            ImportNeeds::Nothing
        );
    }

    #[test]
    fn grant_ids_are_named_as_their_manifest_keys() {
        let names: Vec<&str> = GrantId::ALL.iter().map(|id| id.name()).collect();
        assert_eq!(
            names,
            ["messaging", "sql", "documents", "keyvalue", "search"]
        );
        for &id in GrantId::ALL {
            assert!(id.grant_line().starts_with(&format!("{id} = {{")), "{id}");
            assert_eq!(GrantId::from_name(id.name()), Some(id));
        }
        let mut grants = Grants::default();
        assert!(!GrantId::ALL.iter().any(|&id| grants.has(id)));
        grants.keyvalue = Some(keyvalue::Grant {
            prefixes: vec!["a:".into()],
        });
        assert!(grants.has(GrantId::Keyvalue) && !grants.has(GrantId::Sql));
    }
}
