//! Test plugin: acknowledges every event and does nothing else (a benchmark's handler),
//! with Rust's default allocator.

include!("body.rs");
