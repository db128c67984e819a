//! The end-to-end proof of the streaming platform lives in `tests/platform.rs`; this crate
//! has no library code.
