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

/// The generator world, whose imports are a subset of the handler world's: the generated
/// import traits are shared with the module above.
pub mod generator {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "polyhost:platform/event-generator",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasi:config": crate::bindings::wasi::config,
            "wasi:logging": crate::bindings::wasi::logging,
            "polyhost:platform": crate::bindings::polyhost::platform,
        },
    });
}

/// The handler world of the contract's JSON form (`json-minimal-handler`): the events of a
/// batch as one JSON text. Its imports are a subset of the handler world's: the generated
/// import traits are shared with the module above.
pub mod json {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "polyhost:platform/json-minimal-handler",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasi:config": crate::bindings::wasi::config,
            "wasi:logging": crate::bindings::wasi::logging,
            "polyhost:platform": crate::bindings::polyhost::platform,
        },
    });
}

/// The handler world of the contract's partitions form (`partitions-minimal-handler`): a
/// call carries the events of several partitions. Its imports are a subset of the handler
/// world's: the generated import traits are shared with the module above.
pub mod partitions {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "polyhost:platform/partitions-minimal-handler",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasi:config": crate::bindings::wasi::config,
            "wasi:logging": crate::bindings::wasi::logging,
            "polyhost:platform": crate::bindings::polyhost::platform,
        },
    });
}
