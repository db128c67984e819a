//! `wasi:keyvalue` (`store`, `atomics`, `batch`) on Redis.
//!
//! Buckets map onto key namespaces: `open("")` and `open("default")` give the plugin's keys
//! as they are; `open(x)` for any other `x` gives the keys under `x:` (key `k` of the bucket
//! is Redis key `x:k`). The full Redis key must lie inside the grant, so a plugin granted
//! `cache:` can use `open("cache")` with any key, or the default bucket with keys starting
//! `cache:`. A bucket no granted key can fall into is refused at `open` (`access-denied`).
//!
//! `list-keys` runs one or more `SCAN`s (the cursor is Redis's own) with a `MATCH` on the
//! bucket's reachable prefixes, and returns only keys inside the grant, relative to the
//! bucket. `atomics.increment` is `INCRBY`; `batch` is `MSET` / `DEL` and, for reads, the
//! bounded reads of [`super::ops`], each checking every key before anything is sent.
//!
//! Bounds: `get` and `get-many` are measured in Redis before they are fetched and refused
//! past `limits.max_result_bytes`; `set` and `set-many` refuse a value over
//! `limits.max_value_bytes`; `list-keys` skips keys longer than [`super::MAX_KEY_BYTES`]
//! (no call could name them) in Redis and counts its page against `max_result_bytes`.
//! Bucket identifiers are namespaces, not paths: `open("../x")` is the keys under `../x:`,
//! inside the grant or refused like any other.

use std::sync::LazyLock;

use redis::Script;
use wasmtime::component::Resource;

use super::ops::ScriptOp;
use super::{Client, MAX_KEY_BYTES};
use super::{Keyvalue, View};
use crate::bindings::polyhost::platform::kv::Reply;
use crate::bindings::wasi::keyvalue::{atomics, batch, store};
use crate::budget::{ResultBudget, check_value};
use crate::error::{HostError, KvError, with_timeout};

/// One `SCAN` round that drops, in Redis, keys longer than `ARGV[4]` bytes: no call can name
/// them, and a planted key of megabytes must not reach the host.
static SCAN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3]) \
         local keep, max = {}, tonumber(ARGV[4]) \
         for _, k in ipairs(r[2]) do if #k <= max then keep[#keep + 1] = k end end \
         return { r[1], keep }",
    )
});

/// An open `wasi:keyvalue` bucket: the namespace its keys live under.
#[derive(Debug)]
pub struct Bucket {
    /// Prepended to every key of the bucket (`""` for the default bucket).
    namespace: String,
}

/// The namespace of the bucket `identifier`.
pub fn bucket_namespace(identifier: &str) -> String {
    match identifier {
        "" | "default" => String::new(),
        x => format!("{x}:"),
    }
}

/// The granted prefixes as seen from inside the bucket `namespace`: the prefixes under which
/// the bucket's keys may lie, each still starting with `namespace`. Empty: the bucket can
/// hold no granted key.
pub fn reachable_prefixes(prefixes: &[String], namespace: &str) -> Vec<String> {
    let mut reach: Vec<String> = prefixes
        .iter()
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            if namespace.starts_with(p.as_str()) {
                // The whole bucket lies inside this prefix.
                Some(namespace.to_string())
            } else if p.starts_with(namespace) {
                // Part of the bucket does.
                Some(p.clone())
            } else {
                None
            }
        })
        .collect();
    reach.sort();
    // A prefix covered by a shorter one adds nothing (and would list keys twice).
    let mut kept: Vec<String> = Vec::new();
    for p in reach {
        if !kept.iter().any(|k| p.starts_with(k.as_str())) {
            kept.push(p);
        }
    }
    kept
}

/// The `SCAN MATCH` glob covering every prefix of `prefixes`: their longest common prefix,
/// escaped, then `*`. Keys it lets through are filtered again against the prefixes.
pub fn scan_glob(prefixes: &[String]) -> String {
    let mut common: &str = prefixes.first().map_or("", String::as_str);
    for p in &prefixes[1.min(prefixes.len())..] {
        let len = common
            .char_indices()
            .zip(p.chars())
            .find(|((_, a), b)| a != b)
            .map_or(common.len().min(p.len()), |((i, _), _)| i);
        common = &common[..len];
    }
    let mut glob = String::with_capacity(common.len() + 1);
    for c in common.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            glob.push('\\');
        }
        glob.push(c);
    }
    glob.push('*');
    glob
}

/// Keys one `SCAN` examines per round trip.
const SCAN_COUNT: usize = 1000;

/// `SCAN` rounds one `list-keys` call may run looking for a key before it returns an empty
/// page with a cursor: bounds the call on a large keyspace where few keys are the plugin's.
const SCAN_ROUNDS: usize = 16;

impl Client {
    fn bucket_key(&self, bucket: &Bucket, key: &str) -> Result<String, HostError> {
        let full = format!("{}{key}", bucket.namespace);
        self.check(&full)?;
        Ok(full)
    }

    async fn kv_get(&self, key: &str, cap: usize) -> Result<Option<Vec<u8>>, HostError> {
        let op = ScriptOp::get(key);
        let what = op.what.clone();
        match self.run_one(op, cap).await? {
            Reply::Bytes(b) => Ok(Some(b)),
            Reply::Absent => Ok(None),
            other => Err(HostError::other(format!(
                "{what}: unexpected reply {other:?}"
            ))),
        }
    }

    async fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        self.query("set", redis::cmd("SET").arg(key).arg(value))
            .await
    }

    async fn kv_delete(&self, keys: &[String]) -> Result<(), HostError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.query::<u64>("delete", redis::cmd("DEL").arg(keys))
            .await
            .map(drop)
    }

    async fn kv_exists(&self, key: &str) -> Result<bool, HostError> {
        self.query("exists", redis::cmd("EXISTS").arg(key)).await
    }

    async fn kv_increment(&self, key: &str, delta: u64) -> Result<u64, HostError> {
        let delta = i64::try_from(delta).map_err(|_| {
            HostError::invalid(format!(
                "increment `{key}`: a delta of {delta} is above 2^63-1"
            ))
        })?;
        let value: i64 = self
            .query("increment", redis::cmd("INCRBY").arg(key).arg(delta))
            .await?;
        u64::try_from(value).map_err(|_| {
            HostError::other(format!("increment `{key}`: the value {value} is negative"))
        })
    }

    /// The values of `keys`, together within `cap` bytes (measured in Redis first).
    async fn kv_get_many(
        &self,
        keys: &[String],
        cap: usize,
    ) -> Result<Vec<Option<Vec<u8>>>, HostError> {
        let ops: Vec<ScriptOp> = keys.iter().map(|k| ScriptOp::get(k)).collect();
        super::ops::check_pipeline(&ops)?;
        self.run_ops("get-many", &ops, cap)
            .await?
            .into_iter()
            .map(|r| match r? {
                Reply::Bytes(b) => Ok(Some(b)),
                Reply::Absent => Ok(None),
                other => Err(HostError::other(format!(
                    "get-many: unexpected reply {other:?}"
                ))),
            })
            .collect()
    }

    async fn kv_set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), HostError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for (k, v) in pairs {
            cmd.arg(k).arg(v);
        }
        self.query("set-many", &cmd).await
    }

    /// One page of the bucket's keys (relative to it), and the cursor of the next.
    async fn list_keys(
        &self,
        bucket: &Bucket,
        cursor: Option<u64>,
        cap: usize,
    ) -> Result<store::KeyResponse, HostError> {
        let reach = reachable_prefixes(&self.prefixes, &bucket.namespace);
        if reach.is_empty() {
            return Ok(store::KeyResponse {
                keys: Vec::new(),
                cursor: None,
            });
        }
        let glob = scan_glob(&reach);
        let mut cursor = cursor.unwrap_or(0);
        let mut keys = Vec::new();
        let mut budget = ResultBudget::new(cap);
        for _ in 0..SCAN_ROUNDS {
            // Raw bytes: a key another client wrote need not be UTF-8; such keys cannot be
            // named through the WIT, so they are skipped.
            let (next, page): (u64, Vec<Vec<u8>>) = {
                let mut invocation = SCAN.prepare_invoke();
                invocation
                    .arg(cursor)
                    .arg(&glob)
                    .arg(SCAN_COUNT)
                    .arg(MAX_KEY_BYTES);
                let _permit = self.permit().await?;
                let mut conn = self.conn.clone();
                invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| super::map_error("list-keys", e))?
            };
            for k in &page {
                budget.take(k.len(), "list-keys")?;
            }
            keys.extend(page.into_iter().filter_map(|k| {
                let k = String::from_utf8(k).ok()?;
                let inside = reach.iter().any(|p| k.starts_with(p.as_str()))
                    && super::key_granted(&self.prefixes, &k);
                inside.then(|| k[bucket.namespace.len()..].to_string())
            }));
            cursor = next;
            if cursor == 0 || !keys.is_empty() {
                break;
            }
        }
        Ok(store::KeyResponse {
            keys,
            cursor: (cursor != 0).then_some(cursor),
        })
    }
}

impl View<'_, Keyvalue> {
    /// The full key of `key` in `bucket`, checked.
    fn bucket_key(&self, bucket: &Resource<Bucket>, key: &str) -> Result<String, KvError> {
        let c = self.client()?;
        Ok(c.bucket_key(self.bucket(bucket)?, key)?)
    }

    fn bucket(&self, bucket: &Resource<Bucket>) -> Result<&Bucket, KvError> {
        self.table
            .get(bucket)
            .map_err(|e| KvError::Trap(wasmtime::Error::from(e)))
    }

    /// The full keys of `keys` in `bucket`, every one checked.
    fn bucket_keys(
        &self,
        bucket: &Resource<Bucket>,
        keys: &[String],
    ) -> Result<Vec<String>, KvError> {
        let c = self.client()?;
        let b = self.bucket(bucket)?;
        Ok(keys
            .iter()
            .map(|k| c.bucket_key(b, k))
            .collect::<Result<_, _>>()?)
    }
}

impl store::Host for View<'_, Keyvalue> {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, KvError> {
        let c = self.client()?;
        let namespace = bucket_namespace(&identifier);
        if reachable_prefixes(&c.prefixes, &namespace).is_empty() {
            return Err(HostError::denied(format!(
                "bucket `{identifier}` (keys `{namespace}…`) holds no key of the keyvalue grant (prefixes: {})",
                super::Listed(&c.prefixes)
            ))
            .into());
        }
        self.table
            .push(Bucket { namespace })
            .map_err(|e| KvError::Trap(wasmtime::Error::from(e)))
    }

    fn convert_error(&mut self, err: KvError) -> wasmtime::Result<store::Error> {
        Ok(match err {
            KvError::AccessDenied(why) => {
                // The WIT variant carries no message; the log keeps the reason.
                tracing::info!(plugin = %self.env.name, "wasi:keyvalue access denied: {why}");
                store::Error::AccessDenied
            }
            KvError::Other(m) => store::Error::Other(m),
            KvError::Trap(e) => return Err(e),
        })
    }
}

impl store::HostBucket for View<'_, Keyvalue> {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, KvError> {
        let full = self.bucket_key(&bucket, &key)?;
        let (c, env) = self.granted()?;
        Ok(with_timeout(
            env.host_call_timeout,
            "keyvalue.get",
            c.kv_get(&full, env.max_result_bytes),
        )
        .await?)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), KvError> {
        let full = self.bucket_key(&bucket, &key)?;
        let (c, env) = self.granted()?;
        check_value(value.len(), env.max_value_bytes, "keyvalue.set")?;
        Ok(with_timeout(
            env.host_call_timeout,
            "keyvalue.set",
            c.kv_set(&full, &value),
        )
        .await?)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), KvError> {
        let full = self.bucket_key(&bucket, &key)?;
        let (c, env) = self.granted()?;
        Ok(with_timeout(
            env.host_call_timeout,
            "keyvalue.delete",
            c.kv_delete(&[full]),
        )
        .await?)
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, KvError> {
        let full = self.bucket_key(&bucket, &key)?;
        let (c, env) = self.granted()?;
        Ok(with_timeout(env.host_call_timeout, "keyvalue.exists", c.kv_exists(&full)).await?)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, KvError> {
        let (c, env) = self.granted()?;
        let b = self.bucket(&bucket)?;
        Ok(with_timeout(
            env.host_call_timeout,
            "keyvalue.list-keys",
            c.list_keys(b, cursor, env.max_result_bytes),
        )
        .await?)
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for View<'_, Keyvalue> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, KvError> {
        let full = self.bucket_key(&bucket, &key)?;
        let (c, env) = self.granted()?;
        Ok(with_timeout(
            env.host_call_timeout,
            "keyvalue.increment",
            c.kv_increment(&full, delta),
        )
        .await?)
    }
}

impl batch::Host for View<'_, Keyvalue> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, KvError> {
        let full = self.bucket_keys(&bucket, &keys)?;
        let (c, env) = self.granted()?;
        let values = with_timeout(
            env.host_call_timeout,
            "keyvalue.get-many",
            c.kv_get_many(&full, env.max_result_bytes),
        )
        .await?;
        if values.len() != keys.len() {
            return Err(KvError::Other(format!(
                "get-many: Redis answered {} values for {} keys",
                values.len(),
                keys.len()
            )));
        }
        Ok(keys
            .into_iter()
            .zip(values)
            .map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), KvError> {
        let keys: Vec<String> = key_values.iter().map(|(k, _)| k.clone()).collect();
        let full = self.bucket_keys(&bucket, &keys)?;
        for (_, v) in &key_values {
            check_value(v.len(), self.env.max_value_bytes, "keyvalue.set-many")?;
        }
        let pairs: Vec<(String, Vec<u8>)> = full
            .into_iter()
            .zip(key_values)
            .map(|(k, (_, v))| (k, v))
            .collect();
        let (c, env) = self.granted()?;
        Ok(with_timeout(
            env.host_call_timeout,
            "keyvalue.set-many",
            c.kv_set_many(&pairs),
        )
        .await?)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<(), KvError> {
        let full = self.bucket_keys(&bucket, &keys)?;
        let (c, env) = self.granted()?;
        Ok(with_timeout(
            env.host_call_timeout,
            "keyvalue.delete-many",
            c.kv_delete(&full),
        )
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn identifiers_map_to_namespaces() {
        assert_eq!(bucket_namespace(""), "");
        assert_eq!(bucket_namespace("default"), "");
        assert_eq!(bucket_namespace("cache"), "cache:");
        assert_eq!(bucket_namespace("a:b"), "a:b:");
    }

    #[test]
    fn a_bucket_reaches_the_prefixes_that_overlap_it() {
        let g = s(&["cache:", "leaderboard:daily:", "session:"]);
        // The default bucket reaches every prefix.
        assert_eq!(
            reachable_prefixes(&g, ""),
            s(&["cache:", "leaderboard:daily:", "session:"])
        );
        // A bucket inside a prefix reaches all of itself.
        assert_eq!(reachable_prefixes(&g, "cache:"), s(&["cache:"]));
        assert_eq!(reachable_prefixes(&g, "cache:hot:"), s(&["cache:hot:"]));
        // A bucket around a prefix reaches only that prefix.
        assert_eq!(
            reachable_prefixes(&g, "leaderboard:"),
            s(&["leaderboard:daily:"])
        );
        // Elsewhere: nothing.
        assert!(reachable_prefixes(&g, "users:").is_empty());
        assert!(reachable_prefixes(&s(&[""]), "").is_empty());
    }

    #[test]
    fn covered_prefixes_are_dropped() {
        assert_eq!(reachable_prefixes(&s(&["a:b:", "a:"]), ""), s(&["a:"]));
    }

    #[test]
    fn the_scan_glob_is_the_escaped_common_prefix() {
        assert_eq!(scan_glob(&s(&["cache:"])), "cache:*");
        assert_eq!(scan_glob(&s(&["cache:a", "cache:b"])), "cache:*");
        assert_eq!(scan_glob(&s(&["cache:", "session:"])), "*");
        assert_eq!(scan_glob(&s(&["we*rd?[x]\\:"])), "we\\*rd\\?\\[x\\]\\\\:*");
        assert_eq!(scan_glob(&s(&["é:a", "é:b"])), "é:*");
        assert_eq!(scan_glob(&[]), "*");
    }
}
