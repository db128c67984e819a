//! Test plugin: records every event once (version tag `a`).

const VERSION: &str = "a";

include!("body.rs");
