//! Redis: `wasi:keyvalue` (`store`, `atomics`, `batch`) and `polyhost:platform/kv`, scoped to
//! granted key prefixes.
//!
//! The host holds one [`ConnectionManager`] (a multiplexed connection that reconnects by
//! itself); each plugin's [`Client`] is a clone of it bound to the plugin's prefixes, with a
//! semaphore bounding its calls in flight.
//!
//! Every key a call names is checked against the grant before anything is sent
//! ([`check_key`]): it must start with a granted prefix and must not lie in the host's own
//! namespace ([`HOST_NAMESPACE`], where `apply-once` keeps its dedupe keys). A call with one
//! key outside the grant is refused whole, so a batch never half-runs.
//!
//! - [`wasi`]: the `wasi:keyvalue` buckets, and how bucket identifiers map onto keys.
//! - [`kv`]: `polyhost:platform/kv`, beyond plain keys.
//! - [`apply_once`]: the atomic, deduplicated batch of writes (one Lua script), for one
//!   dedupe key or many.
//! - [`ops`]: reads measured in Redis before they are fetched, and `kv.pipeline` (one Lua
//!   script), so that no answer larger than `limits.max_result_bytes` reaches the host.
//! - `errors`: Redis errors and error replies as [`HostError`] kinds.
//!
//! Every value, hash field and sorted-set member a plugin writes is checked against
//! `limits.max_value_bytes`, and every key against [`MAX_KEY_BYTES`], before it is sent.

mod apply_once;
mod errors;
mod kv;
mod ops;
mod wasi;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use redis::FromRedisValue;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Deserialize;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{Backend, Data, GrantProblem, Settings, View, view};
use crate::error::HostError;
use crate::state::HostState;
use errors::{kind_of_code, map_error};

pub use wasi::Bucket;

/// `grants.keyvalue`: the key prefixes a plugin may touch.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Key prefixes, e.g. `leaderboard:`; a key must start with one of them. The same
    /// prefixes apply to `wasi:keyvalue` and `polyhost:platform/kv`.
    pub prefixes: Vec<String>,
}

/// Keys the host keeps for itself: no grant reaches them, whatever its prefixes say, so no
/// plugin can forge or erase another's (or its own) `apply-once` records.
pub const HOST_NAMESPACE: &str = "polyhost:applied:";

/// The longest key (and dedupe key) accepted. Keys are names, not data; a bound keeps a
/// plugin from storing megabytes in key names, where `max_value_bytes` would not see them.
pub const MAX_KEY_BYTES: usize = 1024;

/// Calls one plugin may have in flight on the shared connection, so that one busy plugin
/// cannot fill the connection's pipeline for every other.
const MAX_IN_FLIGHT: usize = 64;

/// How long connecting (or reconnecting) to Redis may take. An absent server fails the
/// host's start, or a call, within this rather than hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one reply may take. Host calls are bounded more tightly by the plugin's
/// host-call timeout; this is the backstop for the connection itself.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest expiry accepted, in milliseconds (about 292 000 years). Redis refuses an
/// expiry whose deadline overflows its clock; checking here keeps such a value out of
/// `apply-once`, where a refusal half-way would be too late.
pub(crate) const MAX_TTL_MS: u64 = (i64::MAX / 1000) as u64;

/// The keyvalue backend: Redis, for `wasi:keyvalue` and `polyhost:platform/kv`, one
/// multiplexed connection per host.
pub struct Keyvalue;

impl Backend for Keyvalue {
    type Grant = Grant;
    type Shared = Shared;
    type Client = Client;

    const SERVICE: &'static str = "Redis";
    const IMPORTS: &'static [&'static str] = &[
        "polyhost:platform/kv",
        "wasi:keyvalue/store",
        "wasi:keyvalue/atomics",
        "wasi:keyvalue/batch",
    ];
    const GRANT_LINE: &'static str = r#"keyvalue = { prefixes = ["<prefix>:"] }"#;

    fn check_grant(grant: &Grant) -> Vec<GrantProblem> {
        if grant.prefixes.iter().any(|p| p.is_empty()) {
            vec![GrantProblem::new(
                "prefixes",
                "an empty prefix would grant every key: name the prefixes",
            )]
        } else {
            Vec::new()
        }
    }

    async fn connect(settings: &Settings) -> anyhow::Result<Shared> {
        Shared::connect(settings).await
    }

    async fn ping(shared: &Shared) -> anyhow::Result<()> {
        shared.ping().await
    }

    fn bind(
        shared: &Shared,
        plugin: &str,
        grant: &Grant,
        _limits: &crate::manifest::Limits,
    ) -> anyhow::Result<Client> {
        Ok(Client::new(shared, plugin, grant))
    }

    fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
        use crate::bindings::{polyhost::platform::kv, wasi::keyvalue};
        kv::add_to_linker::<_, Data<Self>>(linker, view::<Self>)?;
        keyvalue::store::add_to_linker::<_, Data<Self>>(linker, view::<Self>)?;
        keyvalue::atomics::add_to_linker::<_, Data<Self>>(linker, view::<Self>)?;
        keyvalue::batch::add_to_linker::<_, Data<Self>>(linker, view::<Self>)
    }
}

/// The host's one Redis connection.
#[derive(Debug)]
pub struct Shared {
    conn: ConnectionManager,
}

impl Shared {
    /// Whether Redis answers a `PING`.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Connects to `settings.redis_url`. An absent server fails here, within the connect
    /// timeout, rather than on a plugin's first call.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Shared> {
        let client = settings.redis.client()?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // Reconnection happens in the background while calls fail as `unavailable`;
            // a few attempts per outage are enough, the next call starts another round.
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .context("connecting to Redis")?;
        Ok(Shared { conn })
    }
}

/// One plugin's handle on Redis: a clone of the shared connection bound to its prefixes.
#[derive(Debug, Clone)]
pub struct Client {
    plugin: Arc<str>,
    prefixes: Arc<[String]>,
    conn: ConnectionManager,
    in_flight: Arc<Semaphore>,
}

impl Client {
    /// Binds `plugin`'s `grant` to the shared connection.
    pub fn new(shared: &Shared, plugin: &str, grant: &Grant) -> Client {
        Client {
            plugin: plugin.into(),
            prefixes: grant.prefixes.clone().into(),
            conn: shared.conn.clone(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// `key`, if the grant covers it; else `denied`.
    fn check(&self, key: &str) -> Result<(), HostError> {
        check_key(&self.prefixes, key)
    }

    /// Every key of `keys`, or `denied` naming the first outside the grant.
    fn check_all<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Result<(), HostError> {
        keys.into_iter().try_for_each(|k| self.check(k))
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>, HostError> {
        // The semaphore is never closed; an error here is a host bug.
        self.in_flight
            .acquire()
            .await
            .map_err(|e| HostError::trap(wasmtime::Error::msg(format!("keyvalue: {e}"))))
    }

    /// Sends `cmd` (whose keys were checked) within the in-flight bound.
    async fn query<T: FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> Result<T, HostError> {
        let _permit = self.permit().await?;
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn)
            .await
            .map_err(|e| map_error(what, e))
    }
}

/// Whether `prefixes` grant `key`: it starts with one of them and lies outside the host's
/// namespace. An empty prefix grants nothing (the manifest refuses it too), so that a typo
/// cannot open the whole keyspace.
pub fn key_granted(prefixes: &[String], key: &str) -> bool {
    !key.starts_with(HOST_NAMESPACE)
        && prefixes
            .iter()
            .any(|p| !p.is_empty() && key.starts_with(p.as_str()))
}

/// [`key_granted`] as a call's check: `denied`, naming the key and the grant, when not.
/// Keys are shown with control characters escaped, so that a hostile key cannot forge a log
/// line.
pub fn check_key(prefixes: &[String], key: &str) -> Result<(), HostError> {
    if key_granted(prefixes, key) {
        if key.len() > MAX_KEY_BYTES {
            return Err(HostError::invalid(format!(
                "key `{}…` is {} bytes, above the host bound of {MAX_KEY_BYTES}",
                ops::shown(&key[..key.floor_char_boundary(64)]),
                key.len()
            )));
        }
        return Ok(());
    }
    let shown = ops::shown(key);
    if key.starts_with(HOST_NAMESPACE) {
        return Err(HostError::denied(format!(
            "key `{shown}` lies in the host's namespace `{HOST_NAMESPACE}`"
        )));
    }
    Err(HostError::denied(format!(
        "key `{shown}` is outside the keyvalue grant (prefixes: {})",
        Listed(prefixes)
    )))
}

/// A TTL argument, if within `min..=`[`MAX_TTL_MS`]; else `invalid`.
fn check_ttl(what: &str, ttl_ms: u64, min: u64) -> Result<(), HostError> {
    if (min..=MAX_TTL_MS).contains(&ttl_ms) {
        Ok(())
    } else {
        Err(HostError::invalid(format!(
            "{what}: a TTL of {ttl_ms} ms is out of range ({min}..={MAX_TTL_MS})"
        )))
    }
}

/// `a:`, `b:` for messages.
struct Listed<'a>(&'a [String]);

impl fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{}`", p.escape_debug())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    fn prefixes(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keys_must_start_with_a_granted_prefix() {
        let g = prefixes(&["leaderboard:", "session:"]);
        assert!(key_granted(&g, "leaderboard:top"));
        assert!(key_granted(&g, "leaderboard:"));
        assert!(key_granted(&g, "session:42"));
        assert!(!key_granted(&g, "leaderboard"));
        assert!(!key_granted(&g, "Leaderboard:top"));
        assert!(!key_granted(&g, "other:1"));
        assert!(!key_granted(&g, ""));
        assert!(!key_granted(&g, "xleaderboard:top"));
    }

    #[test]
    fn an_empty_prefix_grants_nothing() {
        assert!(!key_granted(&prefixes(&[""]), "anything"));
        assert!(!key_granted(&prefixes(&[]), "anything"));
    }

    #[test]
    fn the_host_namespace_is_never_granted() {
        let g = prefixes(&["polyhost:"]);
        assert!(key_granted(&g, "polyhost:flags"));
        assert!(!key_granted(&g, "polyhost:applied:p:e1"));
        let denied = check_key(&g, "polyhost:applied:p:e1").unwrap_err();
        assert!(
            matches!(denied, HostError { kind: Kind::Denied, message: m, .. } if m.contains("host's namespace"))
        );
    }

    #[test]
    fn long_keys_are_invalid_and_control_characters_escaped() {
        let g = prefixes(&["a:"]);
        let long = format!("a:{}", "x".repeat(MAX_KEY_BYTES));
        assert!(
            matches!(check_key(&g, &long), Err(HostError { kind: Kind::Invalid, message: m, .. }) if m.contains("host bound"))
        );
        assert!(check_key(&g, &format!("a:{}", "x".repeat(MAX_KEY_BYTES - 2))).is_ok());
        let forged = check_key(&g, "b:\nINFO forged").unwrap_err().to_string();
        assert!(!forged.contains('\n'), "{forged}");
    }

    #[test]
    fn a_denial_names_the_key_and_the_grant() {
        let err = check_key(&prefixes(&["a:", "b:"]), "c:1").unwrap_err();
        match err {
            HostError {
                kind: Kind::Denied,
                message: m,
                ..
            } => {
                assert!(m.contains("`c:1`"), "{m}");
                assert!(m.contains("`a:`, `b:`"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ttls_are_bounded() {
        assert!(check_ttl("t", 0, 1).is_err());
        assert!(check_ttl("t", 0, 0).is_ok());
        assert!(check_ttl("t", 1, 1).is_ok());
        assert!(check_ttl("t", MAX_TTL_MS, 1).is_ok());
        assert!(check_ttl("t", MAX_TTL_MS + 1, 1).is_err());
        assert!(check_ttl("t", u64::MAX, 0).is_err());
    }
}
