//! polyhost: a native host that runs a streaming platform's back end as sandboxed
//! WebAssembly plugins, lending them its Kafka, PostgreSQL, MongoDB, Redis and
//! Elasticsearch connections through the WIT interfaces in `wit/`.
//!
//! - [`manifest`]: the plugin manifest (strict TOML).
//! - [`runtime`]: the wasmtime engine, plugin loading, grants at load, limits, batches.
//! - [`backends`]: one self-contained unit per backend (grant, imports, connection, client,
//!   linker wiring), listed once in a registry.
//! - [`trigger`]: the Kafka consumer loop: batches, offsets, retries, dead letters.
//! - [`bindings`]: the host side of the WIT contract.

pub mod admin;
pub mod backends;
pub mod bindings;
pub mod budget;
pub mod connections;
pub mod console;
pub mod dlq;
pub mod error;
pub mod generate;
pub mod manifest;
pub mod metrics;
pub mod runtime;
pub mod state;
pub mod supervisor;
pub mod text;
pub mod trigger;
pub mod watch;
