//! S1 event-generator: a coherent, seeded stream of the platform's events (docs/events.md).
//!
//! The host creates one instance per run and calls `next(max)` until it returns an empty
//! list. The run's state lives in this instance, created on the first call from the settings
//! in `wasi:config/store`:
//!
//! - `seed` (u64, default 42): the same seed and total give byte-identical messages, however
//!   many the host asks for per call;
//! - `total` (u64, default 0): events in the run, 0 for endless;
//! - `rate` is the host's (it paces the calls) and is ignored here.
//!
//! Modules: [`model`] (the state and the event mix), [`events`] (CloudEvents, clock, the
//! stream), [`image`] (PNG thumbnails and banners), [`rng`] (the PRNG), [`vocab`] (words).

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/event-generator",
    generate_all,
});

pub mod events;
pub mod image;
pub mod model;
pub mod rng;
pub mod vocab;

#[cfg(test)]
mod tests;

use std::cell::RefCell;

use events::{Settings, Stream};
use exports::polyhost::platform::generator::Guest;
use polyhost::platform::messaging::Message;
use wasi::logging::logging::{Level, log};

/// The default `seed`.
pub const DEFAULT_SEED: u64 = 42;

thread_local! {
    /// The run, created on the first call to `next`.
    static STREAM: RefCell<Option<Stream>> = const { RefCell::new(None) };
}

struct EventGenerator;

impl Guest for EventGenerator {
    fn next(max: u32) -> Vec<Message> {
        STREAM.with(|cell| {
            cell.borrow_mut()
                .get_or_insert_with(|| Stream::new(load_settings()))
                .next_batch(max)
        })
    }
}

export!(EventGenerator);

/// The settings from `wasi:config/store`; a value that is not a number stops the run (a
/// trap), since silently using a default would generate a run nobody asked for.
fn load_settings() -> Settings {
    let get = |key: &str| {
        wasi::config::store::get(key).map_err(|e| format!("reading config `{key}`: {e:?}"))
    };
    match parse_settings(get) {
        Ok(settings) => {
            log(
                Level::Info,
                "event-generator",
                &format!("seed {}, total {}", settings.seed, settings.total),
            );
            settings
        }
        Err(message) => {
            log(Level::Error, "event-generator", &message);
            panic!("{message}");
        }
    }
}

/// Reads `seed` and `total` through `get` (which returns `Ok(None)` for a missing key).
pub fn parse_settings(
    get: impl Fn(&str) -> Result<Option<String>, String>,
) -> Result<Settings, String> {
    let number = |key: &str, default: u64| -> Result<u64, String> {
        match get(key)? {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse()
                .map_err(|_| format!("config `{key}`: expected an unsigned integer, got {text:?}")),
        }
    };
    Ok(Settings {
        seed: number("seed", DEFAULT_SEED)?,
        total: number("total", 0)?,
    })
}
