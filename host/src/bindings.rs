//! The host side of the WIT contract in `wit/`: the one place `bindgen!` runs.
//!
//! Every import is `async` (host calls do I/O) and `trappable` (a host bug traps the guest
//! instead of returning an error it cannot handle). Errors of type `polyhost:platform/types.error`
//! are produced from [`crate::error::HostError`] by one conversion, in `types`'s `Host` impl.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "polyhost:platform/platform-handler",
    imports: { default: async | trappable },
    exports: { default: async },
    trappable_error_type: {
        "polyhost:platform/types.error" => crate::error::HostError,
        "wasi:keyvalue/store.error" => crate::error::KvError,
    },
    with: {
        "polyhost:platform/sql.transaction": crate::backends::sql::Transaction,
        "wasi:keyvalue/store.bucket": crate::backends::keyvalue::Bucket,
    },
});

/// A module of bindings for a world whose imports are a subset of the handler world's: the
/// generated import traits are shared with the module above.
macro_rules! world_module {
    ($(#[$doc:meta])* $name:ident: $world:literal) => {
        $(#[$doc])*
        pub mod $name {
            wasmtime::component::bindgen!({
                path: "../wit",
                world: $world,
                imports: { default: async | trappable },
                exports: { default: async },
                with: {
                    "wasi:config": crate::bindings::wasi::config,
                    "wasi:logging": crate::bindings::wasi::logging,
                    "polyhost:platform": crate::bindings::polyhost::platform,
                },
            });
        }
    };
}

world_module! {
    /// The generator world.
    generator: "polyhost:platform/event-generator"
}

world_module! {
    /// The handler world of the contract's JSON form (`json-minimal-handler`): the events
    /// of a batch as one JSON text.
    json: "polyhost:platform/json-minimal-handler"
}

world_module! {
    /// The handler world of the contract's partitions form (`partitions-minimal-handler`):
    /// a call carries the events of several partitions.
    partitions: "polyhost:platform/partitions-minimal-handler"
}

world_module! {
    /// The handler world of the contract's JSON partitions form
    /// (`json-partitions-minimal-handler`): a call carries the events of several
    /// partitions as one JSON text.
    json_partitions: "polyhost:platform/json-partitions-minimal-handler"
}

/// The `setup` export (`plugin-setup`), which a plugin of any kind may add to its world:
/// called once per loaded version before its first event. The world imports nothing.
pub mod setup {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "polyhost:platform/plugin-setup",
        exports: { default: async },
    });
}
