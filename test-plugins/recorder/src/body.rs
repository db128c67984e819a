// The recorder's code, shared by `recorder` and `recorder-b`, which differ only in
// `VERSION` (two builds whose outputs differ, for the hot-swap tests).

wit_bindgen::generate!({
    inline: "
        package polyhost:recorder;

        world recorder {
            include polyhost:platform/platform-handler@0.2.0;
            include polyhost:platform/plugin-setup@0.2.0;
        }
    ",
    path: "../../wit",
    world: "polyhost:recorder/recorder",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::kv::{self, Command};
use polyhost::platform::records;
use polyhost::platform::types::{BatchInfo, Event, Outcome};
use wasi::config::store as config;

struct Recorder;

/// The dedupe memory: a day, far longer than any test.
const DEDUPE_TTL_MS: u64 = 24 * 3600 * 1000;

/// The version tag, with the config's `tag` when it has one.
fn version() -> String {
    match config::get("tag").ok().flatten() {
        Some(tag) => format!("{VERSION}+{tag}"),
        None => VERSION.to_string(),
    }
}

impl exports::polyhost::platform::setup::Guest for Recorder {
    /// `INCRBY <prefix>setups 1` and `HSET <prefix>setup <n> <version>` (the n-th setup's
    /// version tag). Config `setup_fail` makes it fail with that reason instead, and
    /// `setup_spin` (any value) makes it spin for ever.
    fn setup() -> Result<(), String> {
        if let Some(reason) = config::get("setup_fail").ok().flatten() {
            return Err(reason);
        }
        if config::get("setup_spin").ok().flatten().is_some() {
            #[allow(clippy::empty_loop)]
            loop {}
        }
        let prefix = config::get("prefix").ok().flatten().unwrap_or_default();
        let n = kv::incr_by(&format!("{prefix}setups"), 1).map_err(|e| e.message)?;
        kv::hset(
            &format!("{prefix}setup"),
            &[(n.to_string(), version().into_bytes())],
        )
        .map_err(|e| e.message)?;
        Ok(())
    }
}

impl Guest for Recorder {
    /// Per event, once (apply-once on its id): `HSET <prefix>ids <id> <version>@<topic>/<partition>/<offset>`,
    /// `HSET <prefix>keys <id> <key>|<header>=<value>,…` (the Kafka key and headers, as the
    /// `records` interface serves them) and `INCRBY <prefix>count 1`; then, not deduplicated, `INCRBY <prefix>handled 1`
    /// (how often events were handed over and succeeded). Config `prefix` (granted), optional `slow_ms` (a
    /// busy wait per batch, to keep batches in flight), `fail_type` (events of that type
    /// are rejected) and `tag` (recorded after the version tag, `<version>+<tag>@…`, to tell
    /// which config a batch ran under).
    fn handle(batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        let prefix = config::get("prefix").ok().flatten().unwrap_or_default();
        let version = version();
        let fail_type = config::get("fail_type").ok().flatten();
        if let Some(ms) = config::get("slow_ms")
            .ok()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
        {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
            while std::time::Instant::now() < until {}
        }
        events
            .iter()
            .map(|e| {
                if fail_type.as_deref() == Some(e.type_.as_str()) {
                    return Outcome::Reject(format!("events of type {} are refused", e.type_));
                }
                let record = format!(
                    "{version}@{}/{}/{}",
                    batch.topic, batch.partition, e.offset
                );
                let key = records::key(e.offset).unwrap_or_default();
                let headers: Vec<String> = records::headers(e.offset)
                    .into_iter()
                    .map(|(name, value)| format!("{name}={}", String::from_utf8_lossy(&value)))
                    .collect();
                let kafka = format!("{}|{}", String::from_utf8_lossy(&key), headers.join(","));
                let commands = vec![
                    Command::Hset((format!("{prefix}ids"), e.id.clone(), record.into_bytes())),
                    Command::Hset((format!("{prefix}keys"), e.id.clone(), kafka.into_bytes())),
                    Command::IncrBy((format!("{prefix}count"), 1)),
                ];
                match kv::apply_once(&e.id, DEDUPE_TTL_MS, &commands)
                    .and_then(|_| kv::incr_by(&format!("{prefix}handled"), 1))
                {
                    Ok(_) => Outcome::Ok,
                    Err(err) if err.transient => Outcome::Retry(err.message),
                    Err(err) => Outcome::Reject(err.message),
                }
            })
            .collect()
    }
}

export!(Recorder);
