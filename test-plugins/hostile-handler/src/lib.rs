//! Test plugin: tries to jam its partition and to forge the host's log. An event's type
//! picks the attempt:
//!
//! - `hostile.huge-reason` — rejects with a 5 MB reason (a dead letter far larger than the
//!   broker accepts, if the host kept it whole);
//! - `hostile.multibyte-reason` — rejects with a reason of 3-byte characters, so that any
//!   byte cap lands inside one (a plain `String::truncate` there panics);
//! - `hostile.forge-log` — logs a message and a context with newlines that forge a host log
//!   line, carriage returns and ANSI escapes, then answers `ok`;
//! - `hostile.huge-log` — logs a 1 MB message, then answers `ok`;
//! - `hostile.reject` — rejects with a short reason (for records too large to dead-letter
//!   whole);
//! - anything else — `ok`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/minimal-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::types::{BatchInfo, Event, Outcome};
use wasi::logging::logging::{Level, log};

/// The size of the huge reason.
const HUGE_REASON: usize = 5 * 1024 * 1024;

/// A line that looks like the host's own, after a newline.
const FORGED: &str = "2026-01-01T00:00:00.000000Z ERROR polyhost::trigger: FORGED host line";

struct Hostile;

impl Guest for Hostile {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        events
            .iter()
            .map(|e| match e.type_.as_str() {
                "hostile.huge-reason" => {
                    let mut reason = format!("huge reason for {}: ", e.id);
                    reason.push_str(&"x".repeat(HUGE_REASON - reason.len()));
                    Outcome::Reject(reason)
                }
                "hostile.multibyte-reason" => {
                    // One ASCII byte first, so that the 3-byte characters straddle every
                    // round cap (1000, 4096, …).
                    Outcome::Reject(format!("m{}", "€".repeat(5000)))
                }
                "hostile.reject" => Outcome::Reject(format!("rejected {}", e.id)),
                "hostile.forge-log" => {
                    log(
                        Level::Info,
                        &format!("ctx\n{FORGED}"),
                        &format!(
                            "handled {}\n{FORGED}\r\x1b[2J\x1b[31mred\x1b[0m\u{202e}",
                            e.id
                        ),
                    );
                    Outcome::Ok
                }
                "hostile.huge-log" => {
                    log(Level::Warn, "flood", &"y".repeat(1024 * 1024));
                    Outcome::Ok
                }
                _ => Outcome::Ok,
            })
            .collect()
    }
}

export!(Hostile);
