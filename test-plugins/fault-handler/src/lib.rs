//! Test plugin: misbehaves on demand. An event's type picks the fault:
//!
//! - `fault.panic` — panics (a trap);
//! - `fault.loop` — loops forever (stopped by the epoch deadline);
//! - `fault.memory` — allocates without bound (stopped by the memory limit);
//! - `fault.allocate` — allocates and writes as many MiB as its data says (a JSON number),
//!   then answers `ok`;
//! - `fault.stack` — recurses without bound (a stack overflow);
//! - `fault.wrong-length` — returns one outcome too many;
//! - `fault.reject` — rejects the event with a reason naming its Kafka key (read through
//!   `polyhost:platform/records`);
//! - `sandbox.escape` — tries the environment, the file system and the network, and answers
//!   `ok` only when all of them are closed to it (else `reject` naming what was open);
//! - anything else — `ok`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/minimal-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::records;
use polyhost::platform::types::{BatchInfo, Event, Outcome};

struct Faulty;

/// What a plugin must not reach: each that it can is named in the result.
fn escape_attempts() -> Vec<&'static str> {
    let mut open = Vec::new();
    if std::env::vars_os().next().is_some() {
        open.push("environment variables");
    }
    if std::env::args_os().nth(1).is_some() {
        open.push("arguments");
    }
    for path in ["/", ".", "/etc/passwd", "/proc/self/environ"] {
        if std::fs::metadata(path).is_ok() || std::fs::read_dir(path).is_ok() {
            open.push("the file system");
            break;
        }
    }
    if std::fs::write("escape.txt", b"x").is_ok() {
        open.push("file creation");
    }
    for addr in ["127.0.0.1:5432", "127.0.0.1:6379", "127.0.0.1:9092"] {
        if std::net::TcpStream::connect(addr).is_ok() {
            open.push("TCP sockets");
            break;
        }
    }
    if std::net::UdpSocket::bind("127.0.0.1:0").is_ok() {
        open.push("UDP sockets");
    }
    open
}

/// Recursion on plain values only, so every frame lives on the wasm call stack (not in
/// linear memory) and the overflow is the engine's, not an out-of-bounds store.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    std::hint::black_box(recurse(std::hint::black_box(depth + 1))).wrapping_add(depth)
}

impl Guest for Faulty {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(events.len());
        for e in &events {
            match e.type_.as_str() {
                "fault.panic" => panic!("fault-handler was asked to panic"),
                "fault.loop" => {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                "fault.memory" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                "fault.allocate" => {
                    let mib: usize = std::str::from_utf8(&e.data)
                        .ok()
                        .and_then(|d| d.trim().parse().ok())
                        .unwrap_or(0);
                    let block = vec![1u8; mib << 20];
                    std::hint::black_box(&block);
                    out.push(Outcome::Ok);
                }
                "fault.stack" => {
                    std::hint::black_box(recurse(0));
                }
                "fault.wrong-length" => {
                    out.push(Outcome::Ok);
                    out.push(Outcome::Ok);
                }
                "fault.reject" => {
                    let key =
                        records::key(e.offset).map(|k| String::from_utf8_lossy(&k).into_owned());
                    out.push(Outcome::Reject(format!("rejected {} (key {key:?})", e.id)))
                }
                "sandbox.escape" => out.push(match escape_attempts() {
                    open if open.is_empty() => Outcome::Ok,
                    open => Outcome::Reject(format!("open to the plugin: {}", open.join(", "))),
                }),
                _ => out.push(Outcome::Ok),
            }
        }
        out
    }
}

export!(Faulty);
