//! Test plugin: records every event once (version tag `b`); the same code as `recorder`.

const VERSION: &str = "b";

include!("../../recorder/src/body.rs");
