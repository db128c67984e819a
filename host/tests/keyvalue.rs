//! The keyvalue backend (`wasi:keyvalue` and `polyhost:platform/kv`) against the real
//! server: the `kv-probe` plugin runs scripts of calls with their expected results, and each
//! test then reads back with the redis crate what Redis really holds.
//!
//! Needs Redis (`cargo xtask services up`) and the test plugins (`cargo xtask plugins`);
//! fails, rather than skips, without them. Each test works under a key prefix of its own
//! (two granted sub-prefixes `<p>:a:` and `<p>:b:`, and `<p>:c:` left ungranted), and
//! deletes every key under it, and its dedupe keys, afterwards.

// The scripts are long `json!` literals.
#![recursion_limit = "512"]

mod common;
mod harness;

use std::sync::Arc;

use anyhow::{Result, ensure};
use common::{CLIENT_TIMEOUT, Service, unique_name, with_cleanup, within};
use harness::{runtime, test_plugin};
use polyhost::backends::keyvalue;
use polyhost::manifest::PluginSpec;
use polyhost::runtime::{LoadedPlugin, Runtime};
use redis::FromRedisValue;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{Value, json};

const PLUGIN: &str = "kv-probe";

/// A test's key prefix, its native connection and the probe granted part of it.
struct Fixture {
    redis: Service,
    conn: ConnectionManager,
    /// The test's prefix, without the trailing `:`.
    p: String,
    plugin: Arc<LoadedPlugin>,
    // Keeps the engine and connections alive as long as the plugin.
    _runtime: Runtime,
}

impl Fixture {
    /// Runs `script`'s steps in the plugin and fails with its list of mismatches.
    async fn run(&self, script: Value) -> Result<()> {
        harness::run_script(&self.plugin, &script).await
    }

    /// A key under the test's prefix: `k("a:x")` is `<p>:a:x`.
    fn k(&self, rest: &str) -> String {
        format!("{}:{rest}", self.p)
    }

    /// Sends one command natively.
    async fn q<T: FromRedisValue>(&self, cmd: &mut redis::Cmd) -> Result<T> {
        let mut conn = self.conn.clone();
        within(&self.redis, "a native command", cmd.query_async(&mut conn)).await
    }

    async fn get(&self, key: &str) -> Result<Option<String>> {
        self.q(redis::cmd("GET").arg(key)).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.q(redis::cmd("EXISTS").arg(key)).await
    }

    async fn pttl(&self, key: &str) -> Result<i64> {
        self.q(redis::cmd("PTTL").arg(key)).await
    }

    /// Every key matching `glob`.
    async fn keys(&self, glob: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<String>) = self
                .q(redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(glob)
                    .arg("COUNT")
                    .arg(1000))
                .await?;
            keys.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        Ok(keys)
    }

    /// The glob of this test's dedupe keys (each test's dedupe keys start with its prefix).
    fn dedupe_glob(&self) -> String {
        format!("{}{PLUGIN}:{}*", keyvalue::HOST_NAMESPACE, self.p)
    }
}

/// Connects natively, loads the probe granted `<p>:a:` and `<p>:b:`, runs `body`, and
/// deletes every key of the test whatever happened.
async fn with_fixture(body: impl AsyncFnOnce(&mut Fixture) -> Result<()>) -> Result<()> {
    let redis = Service::redis();
    let client = common::redis()?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CLIENT_TIMEOUT))
        .set_response_timeout(Some(CLIENT_TIMEOUT))
        .set_number_of_retries(1);
    let conn = within(
        &redis,
        "connecting",
        ConnectionManager::new_with_config(client, config),
    )
    .await?;
    let p = unique_name("kv");

    let rt = runtime();
    let mut spec = PluginSpec::new(PLUGIN, test_plugin(PLUGIN));
    spec.subscribe = vec!["t".into()];
    spec.grants.keyvalue = Some(keyvalue::Grant {
        prefixes: vec![format!("{p}:a:"), format!("{p}:b:")],
    });
    spec.limits.host_call_timeout_ms = 10_000;
    spec.limits.call_timeout_ms = 60_000;
    let plugin = rt
        .load(&spec)
        .await
        .map_err(|e| anyhow::anyhow!("{redis}: loading the probe: {e}"))?;

    let mut fixture = Fixture {
        redis,
        conn,
        p,
        plugin,
        _runtime: rt,
    };
    with_cleanup(&mut fixture, body, async |f| {
        let mut keys = f.keys(&format!("{}:*", f.p)).await?;
        keys.extend(f.keys(&f.dedupe_glob()).await?);
        for chunk in keys.chunks(500) {
            f.q::<u64>(redis::cmd("DEL").arg(chunk)).await?;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn wasi_buckets_map_onto_granted_keys() -> Result<()> {
    with_fixture(async |f| {
        let a = f.k("a");
        let (ax, ay) = (f.k("a:x"), f.k("a:y"));
        f.run(json!({"steps": [
            // The default bucket: keys as they are.
            {"call": "bucket.set", "bucket": "", "key": ax, "value": "one", "expect": {"ok": null}},
            {"call": "bucket.get", "bucket": "default", "key": ax, "expect": {"ok": "one"}},
            {"call": "bucket.exists", "bucket": "", "key": ax, "expect": {"ok": true}},
            {"call": "bucket.get", "bucket": "", "key": f.k("a:none"), "expect": {"ok": null}},
            {"call": "bucket.exists", "bucket": "", "key": f.k("a:none"), "expect": {"ok": false}},
            // A named bucket: keys under `<identifier>:`.
            {"call": "bucket.set", "bucket": a, "key": "y", "value": "two"},
            {"call": "bucket.get", "bucket": a, "key": "x", "expect": {"ok": "one"}},
            {"call": "bucket.set", "bucket": f.k("b"), "key": "z", "value": "three"},
            {"call": "bucket.list-keys", "bucket": a, "expect": {"ok": ["x", "y"]}},
            {"call": "bucket.list-keys", "bucket": "",
             "expect": {"ok": [ax, ay, f.k("b:z")]}},
            // A bucket inside the grant is fine; one around it reaches only the grant.
            {"call": "bucket.list-keys", "bucket": f.p, "expect": {"ok": ["a:x", "a:y", "b:z"]}},
            {"call": "atomics.increment", "bucket": a, "key": "n", "delta": 5, "expect": {"ok": 5}},
            {"call": "atomics.increment", "bucket": a, "key": "n", "delta": 3, "expect": {"ok": 8}},
            {"call": "batch.set-many", "bucket": a, "pairs": [["m1", "v1"], ["m2", "v2"]],
             "expect": {"ok": null}},
            {"call": "batch.get-many", "bucket": a, "keys": ["m1", "missing", "m2"],
             "expect": {"ok": [["m1", "v1"], null, ["m2", "v2"]]}},
            {"call": "batch.delete-many", "bucket": a, "keys": ["m1", "missing"],
             "expect": {"ok": null}},
            {"call": "batch.get-many", "bucket": a, "keys": [], "expect": {"ok": []}},
            {"call": "bucket.delete", "bucket": a, "key": "y", "expect": {"ok": null}},
            {"call": "bucket.delete", "bucket": a, "key": "y", "expect": {"ok": null}},
            // Outside the grant: refused before Redis.
            {"call": "store.open", "bucket": "elsewhere", "expect": {"err": "access-denied"}},
            {"call": "store.open", "bucket": f.k("c"), "expect": {"err": "access-denied"}},
            {"call": "bucket.set", "bucket": "", "key": f.k("c:x"), "value": "no",
             "expect": {"err": "access-denied"}},
            {"call": "bucket.get", "bucket": f.p, "key": "c:x", "expect": {"err": "access-denied"}},
            {"call": "batch.set-many", "bucket": "", "pairs": [[f.k("a:w"), "w"], [f.k("c:w"), "w"]],
             "expect": {"err": "access-denied"}},
            {"call": "atomics.increment", "bucket": "", "key": "polyhost:applied:x",
             "delta": 1, "expect": {"err": "access-denied"}},
            // A wrong type is Redis's refusal, passed on.
            {"call": "atomics.increment", "bucket": a, "key": "x", "delta": 1,
             "expect": {"err": "other"}},
        ]}))
        .await?;

        ensure!(f.get(&ax).await?.as_deref() == Some("one"));
        ensure!(!f.exists(&ay).await?, "bucket.delete removed {ay}");
        ensure!(f.get(&f.k("b:z")).await?.as_deref() == Some("three"));
        ensure!(f.get(&f.k("a:n")).await?.as_deref() == Some("8"));
        ensure!(!f.exists(&f.k("a:m1")).await?);
        ensure!(f.get(&f.k("a:m2")).await?.as_deref() == Some("v2"));
        // The refused batch wrote nothing, not even its granted half.
        ensure!(!f.exists(&f.k("a:w")).await?, "a refused set-many wrote a key");
        ensure!(f.keys(&f.k("c:*")).await?.is_empty(), "an ungranted key was written");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn list_keys_pages_through_the_scan_cursor() -> Result<()> {
    with_fixture(async |f| {
        // More keys than one SCAN round examines, so the cursor is used.
        let keys: Vec<String> = (0..2500).map(|i| format!("k{i:04}")).collect();
        let mut mset = redis::cmd("MSET");
        for k in &keys {
            mset.arg(f.k(&format!("a:{k}"))).arg("v");
        }
        f.q::<()>(&mut mset).await?;
        f.q::<()>(redis::cmd("SET").arg(f.k("c:hidden")).arg("v"))
            .await?;
        f.run(json!({"steps": [
            {"call": "bucket.list-keys", "bucket": f.k("a"), "expect": {"ok": keys}},
        ]}))
        .await
    })
    .await
}

#[tokio::test]
async fn kv_calls_do_what_they_say() -> Result<()> {
    with_fixture(async |f| {
        let (s, h, z, n, p) = (f.k("a:s"), f.k("a:h"), f.k("a:z"), f.k("a:n"), f.k("a:p"));
        f.run(json!({"steps": [
            {"call": "kv.set-ex", "key": s, "value": "session", "ttl_ms": 60_000, "expect": {"ok": null}},
            {"call": "kv.get", "key": s, "expect": {"ok": "session"}},
            {"call": "kv.get", "key": f.k("a:none"), "expect": {"ok": null}},
            {"call": "kv.ttl", "key": s, "expect": {"ok": {"between": [1, 60_000]}}},
            {"call": "kv.expire", "key": s, "ttl_ms": 120_000, "expect": {"ok": true}},
            {"call": "kv.expire", "key": f.k("a:none"), "ttl_ms": 1000, "expect": {"ok": false}},
            {"call": "kv.ttl", "key": s, "expect": {"ok": {"between": [60_001, 120_000]}}},
            {"call": "kv.ttl", "key": f.k("a:none"), "expect": {"ok": null}},
            {"call": "kv.incr-by", "key": n, "delta": 10, "expect": {"ok": 10}},
            {"call": "kv.incr-by", "key": n, "delta": -3, "expect": {"ok": 7}},
            {"call": "kv.ttl", "key": n, "expect": {"ok": -1}},
            {"call": "kv.set-ex", "key": p, "value": "gone", "ttl_ms": 60_000},
            {"call": "kv.del", "keys": [p, f.k("a:none")], "expect": {"ok": 1}},
            {"call": "kv.del", "keys": [], "expect": {"ok": 0}},
            // Hashes.
            {"call": "kv.hset", "key": h, "fields": [["title", "Sintel"], ["views", "1"]],
             "expect": {"ok": 2}},
            {"call": "kv.hset", "key": h, "fields": [["title", "Sintel (2010)"], ["year", "2010"]],
             "expect": {"ok": 1}},
            {"call": "kv.hget", "key": h, "field": "title", "expect": {"ok": "Sintel (2010)"}},
            {"call": "kv.hget", "key": h, "field": "none", "expect": {"ok": null}},
            {"call": "kv.hincr-by", "key": h, "field": "views", "delta": 41, "expect": {"ok": 42}},
            {"call": "kv.hdel", "key": h, "fields": ["year", "none"], "expect": {"ok": 1}},
            {"call": "kv.hgetall", "key": h,
             "expect": {"ok": [["title", "Sintel (2010)"], ["views", "42"]]}},
            {"call": "kv.hgetall", "key": f.k("a:none"), "expect": {"ok": []}},
            // Sorted sets.
            {"call": "kv.zadd", "key": z, "members": [["bunny", 10], ["sintel", 30], ["tears", 20]],
             "expect": {"ok": 3}},
            {"call": "kv.zadd", "key": z, "members": [["bunny", 15], ["cosmos", 5]],
             "expect": {"ok": 1}},
            {"call": "kv.zincr-by", "key": z, "member": "tears", "delta": 2.5, "expect": {"ok": 22.5}},
            {"call": "kv.zincr-by", "key": z, "member": "new", "delta": 1, "expect": {"ok": 1}},
            {"call": "kv.zrange-by-rank", "key": z, "start": 0, "stop": -1, "reverse": false,
             "expect": {"ok": [["new", 1], ["cosmos", 5], ["bunny", 15], ["tears", 22.5], ["sintel", 30]]}},
            {"call": "kv.zrange-by-rank", "key": z, "start": 0, "stop": 1, "reverse": true,
             "expect": {"ok": [["sintel", 30], ["tears", 22.5]]}},
            {"call": "kv.zrange-by-score", "key": z, "min": 5, "max": 22.5, "reverse": false,
             "expect": {"ok": [["cosmos", 5], ["bunny", 15], ["tears", 22.5]]}},
            {"call": "kv.zrange-by-score", "key": z, "min": "-inf", "max": "inf", "reverse": true,
             "limit": 2, "expect": {"ok": [["sintel", 30], ["tears", 22.5]]}},
            {"call": "kv.zrange-by-score", "key": z, "min": 0, "max": 100, "reverse": false,
             "limit": 0, "expect": {"ok": []}},
            {"call": "kv.zrank", "key": z, "member": "bunny", "reverse": false, "expect": {"ok": 2}},
            {"call": "kv.zrank", "key": z, "member": "bunny", "reverse": true, "expect": {"ok": 2}},
            {"call": "kv.zrank", "key": z, "member": "sintel", "reverse": true, "expect": {"ok": 0}},
            {"call": "kv.zrank", "key": z, "member": "none", "reverse": false, "expect": {"ok": null}},
            {"call": "kv.zscore", "key": z, "member": "tears", "expect": {"ok": 22.5}},
            {"call": "kv.zscore", "key": z, "member": "none", "expect": {"ok": null}},
            {"call": "kv.zrem", "key": z, "members": ["new", "none"], "expect": {"ok": 1}},
            {"call": "kv.zcard", "key": z, "expect": {"ok": 4}},
            {"call": "kv.zadd", "key": z, "members": [["top", "inf"]], "expect": {"ok": 1}},
            {"call": "kv.zscore", "key": z, "member": "top", "expect": {"ok": "inf"}},
            // Errors Redis or the host refuse, with their kinds.
            {"call": "kv.incr-by", "key": h, "delta": 1, "expect": {"err": "invalid", "transient": false}},
            {"call": "kv.zadd", "key": h, "members": [["m", 1]], "expect": {"err": "invalid"}},
            {"call": "kv.incr-by", "key": s, "delta": 1, "expect": {"err": "invalid"}},
            {"call": "kv.zadd", "key": z, "members": [["m", "nan"]], "expect": {"err": "invalid"}},
            {"call": "kv.set-ex", "key": s, "value": "x", "ttl_ms": 0, "expect": {"err": "invalid"}},
        ]}))
        .await?;

        ensure!(f.get(&s).await?.as_deref() == Some("session"));
        let ttl = f.pttl(&s).await?;
        ensure!((60_001..=120_000).contains(&ttl), "{s} has a TTL of {ttl} ms");
        ensure!(f.get(&n).await?.as_deref() == Some("7"));
        ensure!(f.pttl(&n).await? == -1, "incr-by set no expiry");
        ensure!(!f.exists(&p).await?, "kv.del removed {p}");
        let mut hash: Vec<(String, String)> = f.q(redis::cmd("HGETALL").arg(&h)).await?;
        hash.sort();
        ensure!(
            hash == [
                ("title".to_string(), "Sintel (2010)".to_string()),
                ("views".to_string(), "42".to_string())
            ],
            "{h}: {hash:?}"
        );
        let zset: Vec<(String, f64)> = f
            .q(redis::cmd("ZRANGE").arg(&z).arg(0).arg(-1).arg("WITHSCORES"))
            .await?;
        ensure!(
            zset == [
                ("cosmos".to_string(), 5.0),
                ("bunny".to_string(), 15.0),
                ("tears".to_string(), 22.5),
                ("sintel".to_string(), 30.0),
                ("top".to_string(), f64::INFINITY),
            ],
            "{z}: {zset:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn apply_once_applies_each_dedupe_key_once() -> Result<()> {
    with_fixture(async |f| {
        let (views, stats, board, last, tmp) = (
            f.k("a:views"),
            f.k("b:stats"),
            f.k("b:board"),
            f.k("a:last"),
            f.k("a:tmp"),
        );
        f.q::<()>(redis::cmd("SET").arg(&tmp).arg("x")).await?;
        f.q::<()>(redis::cmd("HSET").arg(&stats).arg("gone").arg("1"))
            .await?;
        let commands = json!([
            {"incr-by": [views, 1]},
            {"hincr-by": [stats, "plays", 2]},
            {"hset": [stats, "title", "Sintel"]},
            {"hdel": [stats, "gone"]},
            {"zincr-by": [board, "sintel", 1.5]},
            {"zadd": [board, "bunny", 1]},
            {"zrem": [board, "nobody"]},
            {"set": {"key": last, "value": "ev-1", "ttl_ms": 60_000}},
            {"expire": [views, 3_600_000]},
            {"del": tmp},
        ]);
        let dedupe = |n: &str| format!("{}:{n}", f.p);
        f.run(json!({"steps": [
            {"call": "kv.apply-once", "dedupe_key": dedupe("ev-1"), "ttl_ms": 600_000,
             "commands": commands, "expect": {"ok": true}},
            // The replay changes nothing.
            {"call": "kv.apply-once", "dedupe_key": dedupe("ev-1"), "ttl_ms": 600_000,
             "commands": commands, "expect": {"ok": false}},
            // Another event applies again.
            {"call": "kv.apply-once", "dedupe_key": dedupe("ev-2"), "ttl_ms": 600_000,
             "commands": [{"incr-by": [views, 1]}, {"zincr-by": [board, "sintel", 1.5]}],
             "expect": {"ok": true}},
            // A command that would fail half-way refuses the whole list before any write,
            // and releases the dedupe key.
            {"call": "kv.apply-once", "dedupe_key": dedupe("ev-3"), "ttl_ms": 600_000,
             "commands": [{"incr-by": [views, 100]}, {"hincr-by": [stats, "title", 1]}],
             "expect": {"err": "invalid"}},
            {"call": "kv.apply-once", "dedupe_key": dedupe("ev-3"), "ttl_ms": 600_000,
             "commands": [{"incr-by": [views, 100]}, {"zadd": [views, "m", 1]}],
             "expect": {"err": "invalid"}},
            // Commands see the writes before them: `del` then a new type is fine.
            {"call": "kv.apply-once", "dedupe_key": dedupe("ev-4"), "ttl_ms": 600_000,
             "commands": [{"set": {"key": f.k("a:t"), "value": "5"}}, {"incr-by": [f.k("a:t"), 2]},
                          {"del": f.k("a:t")}, {"hincr-by": [f.k("a:t"), "f", 3]}],
             "expect": {"ok": true}},
            // A key outside the grant refuses the whole list, before Redis.
            {"call": "kv.apply-once", "dedupe_key": dedupe("ev-5"), "ttl_ms": 600_000,
             "commands": [{"incr-by": [views, 1000]}, {"incr-by": [f.k("c:x"), 1]}],
             "expect": {"err": "denied"}},
            {"call": "kv.apply-once", "dedupe_key": dedupe("ev-6"), "ttl_ms": 0,
             "commands": [], "expect": {"err": "invalid"}},
            {"call": "kv.apply-once", "dedupe_key": dedupe("ev-6"), "ttl_ms": 1000,
             "commands": [{"zincr-by": [board, "x", "inf"]}], "expect": {"err": "invalid"}},
        ]}))
        .await?;

        ensure!(
            f.get(&views).await?.as_deref() == Some("2"),
            "views applied twice"
        );
        let ttl = f.pttl(&views).await?;
        ensure!((1..=3_600_000).contains(&ttl), "{views} TTL {ttl}");
        let mut hash: Vec<(String, String)> = f.q(redis::cmd("HGETALL").arg(&stats)).await?;
        hash.sort();
        ensure!(
            hash == [
                ("plays".to_string(), "2".to_string()),
                ("title".to_string(), "Sintel".to_string())
            ],
            "{stats}: {hash:?}"
        );
        let zset: Vec<(String, f64)> = f
            .q(redis::cmd("ZRANGE")
                .arg(&board)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES"))
            .await?;
        ensure!(
            zset == [("bunny".to_string(), 1.0), ("sintel".to_string(), 3.0)],
            "{board}: {zset:?}"
        );
        ensure!(f.get(&last).await?.as_deref() == Some("ev-1"));
        ensure!(f.pttl(&last).await? > 0, "{last} has its TTL");
        ensure!(!f.exists(&tmp).await?, "{tmp} was deleted");
        let t: Vec<(String, String)> = f.q(redis::cmd("HGETALL").arg(f.k("a:t"))).await?;
        ensure!(t == [("f".to_string(), "3".to_string())], "a:t: {t:?}");
        ensure!(
            f.keys(&f.k("c:*")).await?.is_empty(),
            "an ungranted key was written"
        );

        // The dedupe keys live in the host's namespace, with their TTL; refused lists left
        // none behind.
        let applied = f.keys(&f.dedupe_glob()).await?;
        let ns = format!("{}{PLUGIN}:", keyvalue::HOST_NAMESPACE);
        ensure!(
            applied
                == [
                    format!("{ns}{}", dedupe("ev-1")),
                    format!("{ns}{}", dedupe("ev-2")),
                    format!("{ns}{}", dedupe("ev-4")),
                ],
            "dedupe keys: {applied:?}"
        );
        let ttl = f.pttl(&applied[0]).await?;
        ensure!((1..=600_000).contains(&ttl), "dedupe TTL {ttl}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn keys_outside_the_grant_are_refused_and_untouched() -> Result<()> {
    with_fixture(async |f| {
        let (inside, outside) = (f.k("a:x"), f.k("c:x"));
        f.q::<()>(redis::cmd("SET").arg(&inside).arg("1")).await?;
        f.q::<()>(redis::cmd("SET").arg(&outside).arg("1")).await?;
        let host_key = format!("{}{PLUGIN}:{}", keyvalue::HOST_NAMESPACE, f.p);
        f.run(json!({"steps": [
            {"call": "kv.get", "key": outside, "expect": {"err": "denied", "transient": false}},
            {"call": "kv.set-ex", "key": f.k("c:new"), "value": "x", "ttl_ms": 1000,
             "expect": {"err": "denied"}},
            {"call": "kv.del", "keys": [inside, outside], "expect": {"err": "denied"}},
            {"call": "kv.incr-by", "key": outside, "delta": 1, "expect": {"err": "denied"}},
            {"call": "kv.expire", "key": outside, "ttl_ms": 1, "expect": {"err": "denied"}},
            {"call": "kv.ttl", "key": outside, "expect": {"err": "denied"}},
            {"call": "kv.hset", "key": outside, "fields": [["f", "v"]], "expect": {"err": "denied"}},
            {"call": "kv.zadd", "key": outside, "members": [["m", 1]], "expect": {"err": "denied"}},
            {"call": "kv.zcard", "key": outside, "expect": {"err": "denied"}},
            {"call": "kv.get", "key": f.p, "expect": {"err": "denied"}},
            // The host's namespace is no plugin's, whatever it is granted.
            {"call": "kv.set-ex", "key": host_key, "value": "forged", "ttl_ms": 1000,
             "expect": {"err": "denied"}},
        ]}))
        .await?;
        ensure!(f.get(&inside).await?.as_deref() == Some("1"), "a refused del touched {inside}");
        ensure!(f.get(&outside).await?.as_deref() == Some("1"), "{outside} was touched");
        ensure!(f.pttl(&outside).await? == -1, "{outside} got an expiry");
        ensure!(!f.exists(&f.k("c:new")).await?);
        ensure!(!f.exists(&host_key).await?, "a plugin wrote in the host's namespace");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_pipeline_runs_its_ops_in_one_call_with_a_reply_each() -> Result<()> {
    with_fixture(async |f| {
        let (s, n, h, z, t) = (f.k("a:s"), f.k("a:n"), f.k("b:h"), f.k("b:z"), f.k("a:t"));
        f.q::<()>(redis::cmd("SET").arg(&t).arg("text")).await?;
        f.run(json!({"steps": [
            {"call": "kv.pipeline", "ops": [
                {"set": {"key": s, "value": "v", "ttl_ms": 60_000}},
                {"get": s},
                {"get": f.k("a:none")},
                {"incr-by": [n, 9_007_199_254_740_993_i64]},
                {"incr-by": [n, 1]},
                {"hset": [h, [["a", "1"], ["b", "2"]]]},
                {"hincr-by": [h, "a", 41]},
                {"hget": [h, "a"]},
                {"hgetall": h},
                {"hdel": [h, ["b", "none"]]},
                {"zadd": [z, [["x", 1], ["y", 2.5], ["w", "inf"]]]},
                {"zincr-by": [z, "x", 2]},
                {"zrange-by-rank": [z, 0, 1, true]},
                {"zrange-by-score": [z, 2, 3, false, null]},
                {"zrank": [z, "y", false]},
                {"zscore": [z, "none"]},
                {"zrem": [z, ["w"]]},
                {"zcard": z},
                // A key of the wrong type fails its op alone; the ops after it still run.
                {"incr-by": [t, 1]},
                {"expire": [n, 120_000]},
                {"ttl": n},
                {"ttl": f.k("a:none")},
                {"del": t},
            ], "expect": {"ok": [
                {"ok": "done"},
                {"ok": "v"},
                {"ok": null},
                // Exact past 2^53, where a Lua number would round.
                {"ok": 9_007_199_254_740_993_i64},
                {"ok": 9_007_199_254_740_994_i64},
                {"ok": 2},
                {"ok": 42},
                {"ok": "42"},
                {"ok": [["a", "42"], ["b", "2"]]},
                {"ok": 1},
                {"ok": 3},
                {"ok": 3},
                {"ok": [["w", "inf"], ["x", 3]]},
                {"ok": [["y", 2.5], ["x", 3]]},
                {"ok": 0},
                {"ok": null},
                {"ok": 1},
                {"ok": 2},
                {"err": "invalid"},
                {"ok": 1},
                {"ok": {"between": [1, 120_000]}},
                {"ok": null},
                {"ok": 1},
            ]}},
            // Checked whole before anything is sent: one foreign key refuses the list.
            {"call": "kv.pipeline", "ops": [{"set": {"key": f.k("a:sent"), "value": "x"}},
                                            {"get": f.k("c:x")}],
             "expect": {"err": "denied"}},
            {"call": "kv.pipeline", "ops": [], "expect": {"ok": []}},
        ]}))
        .await?;
        ensure!(f.get(&s).await?.as_deref() == Some("v"));
        ensure!(f.get(&n).await?.as_deref() == Some("9007199254740994"));
        ensure!(f.pttl(&n).await? > 60_000, "expire ran after the failed op");
        ensure!(!f.exists(&t).await?, "the last op ran");
        let z_all: Vec<(String, f64)> = f
            .q(redis::cmd("ZRANGE")
                .arg(&z)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES"))
            .await?;
        ensure!(
            z_all == [("y".to_string(), 2.5), ("x".to_string(), 3.0)],
            "{z}: {z_all:?}"
        );
        ensure!(
            !f.exists(&f.k("a:sent")).await?,
            "a refused pipeline sent an op"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn apply_once_many_applies_each_entry_once_in_one_call() -> Result<()> {
    with_fixture(async |f| {
        let (views, board, text) = (f.k("a:views"), f.k("b:board"), f.k("a:text"));
        f.q::<()>(redis::cmd("SET").arg(&text).arg("not a number"))
            .await?;
        let d = |n: &str| format!("{}:{n}", f.p);
        let entry = |id: &str, title: &str| {
            json!({"dedupe_key": d(id), "commands": [
                {"incr-by": [views, 1]},
                {"zincr-by": [board, title, 1]},
            ]})
        };
        let entries = json!([
            entry("ev-1", "sintel"),
            entry("ev-2", "bunny"),
            // Refused alone: its second command would fail, so its first did not run.
            {"dedupe_key": d("ev-bad"), "commands": [
                {"incr-by": [views, 100]}, {"incr-by": [text, 1]}]},
            entry("ev-3", "sintel"),
            // Refused alone before Redis: a foreign key.
            {"dedupe_key": d("ev-foreign"), "commands": [
                {"incr-by": [views, 1000]}, {"incr-by": [f.k("c:x"), 1]}]},
            // The same dedupe key twice in one call applies once.
            entry("ev-1", "sintel"),
        ]);
        f.run(json!({"steps": [
            {"call": "kv.apply-once-many", "ttl_ms": 600_000, "entries": entries,
             "expect": {"ok": [{"ok": true}, {"ok": true}, {"err": "invalid"}, {"ok": true},
                               {"err": "denied"}, {"ok": false}]}},
            // The replay of the whole list applies nothing twice; the refused entries are
            // refused again, having left no dedupe key behind.
            {"call": "kv.apply-once-many", "ttl_ms": 600_000, "entries": entries,
             "expect": {"ok": [{"ok": false}, {"ok": false}, {"err": "invalid"}, {"ok": false},
                               {"err": "denied"}, {"ok": false}]}},
            // The single form shares the ledger.
            {"call": "kv.apply-once", "dedupe_key": d("ev-2"), "ttl_ms": 600_000,
             "commands": [{"incr-by": [views, 1]}], "expect": {"ok": false}},
            {"call": "kv.apply-once-many", "ttl_ms": 600_000, "entries": [],
             "expect": {"ok": []}},
            {"call": "kv.apply-once-many", "ttl_ms": 0, "entries": [entry("ev-9", "x")],
             "expect": {"err": "invalid"}},
        ]}))
        .await?;
        ensure!(
            f.get(&views).await?.as_deref() == Some("3"),
            "views: {:?}",
            f.get(&views).await?
        );
        let b: Vec<(String, f64)> = f
            .q(redis::cmd("ZRANGE")
                .arg(&board)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES"))
            .await?;
        ensure!(
            b == [("bunny".to_string(), 1.0), ("sintel".to_string(), 2.0)],
            "{board}: {b:?}"
        );
        ensure!(f.get(&text).await?.as_deref() == Some("not a number"));
        ensure!(
            f.keys(&f.k("c:*")).await?.is_empty(),
            "a foreign key was written"
        );
        let ns = format!("{}{PLUGIN}:", keyvalue::HOST_NAMESPACE);
        let applied = f.keys(&f.dedupe_glob()).await?;
        ensure!(
            applied == [d("ev-1"), d("ev-2"), d("ev-3")].map(|k| format!("{ns}{k}")),
            "dedupe keys: {applied:?}"
        );
        Ok(())
    })
    .await
}

/// The peak resident memory of this process since the last [`reset_peak_rss`], in bytes
/// (`None` where the kernel does not say).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the kernel's peak-RSS mark of this process; whether it could.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[tokio::test]
async fn a_hostile_plugin_stays_inside_its_grant_and_its_limits() -> Result<()> {
    const HOSTILE: &str = "hostile-kv";
    const VALUE_CAP: u64 = 1 << 20;
    const RESULT_CAP: u64 = 2 << 20;
    const PLANTED: usize = 100 << 20;
    let redis = Service::redis();
    let client = common::redis()?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CLIENT_TIMEOUT))
        .set_response_timeout(Some(std::time::Duration::from_secs(60)))
        .set_number_of_retries(1);
    let conn = within(
        &redis,
        "connecting",
        ConnectionManager::new_with_config(client, config),
    )
    .await?;
    let p = unique_name("hkv");
    let q = async |cmd: &mut redis::Cmd| -> Result<redis::Value> {
        let mut c = conn.clone();
        Ok(cmd.query_async(&mut c).await?)
    };
    let k = |rest: &str| format!("{p}:{rest}");
    let ledger = format!("{}victim-{p}:ev-1", keyvalue::HOST_NAMESPACE);

    let body = async || -> Result<()> {
        // What the plugin must not touch, and what it is given to read.
        q(redis::cmd("SET").arg(k("c:victim")).arg("v")).await?;
        q(redis::cmd("SET").arg(&ledger).arg("1")).await?;
        q(redis::cmd("SET").arg(k("a:keep")).arg("k")).await?;
        q(redis::cmd("SET").arg(k("a:*:literal")).arg("x")).await?;
        q(redis::cmd("SET").arg(k("a:xx:other")).arg("y")).await?;
        q(redis::cmd("HSET")
            .arg(k("a:bighash"))
            .arg("big")
            .arg(vec![b'h'; 3 << 20]))
        .await?;
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(k("a:bigzset"));
        for i in 0..20_000 {
            zadd.arg(i).arg(format!("m{i}"));
        }
        q(&mut zadd).await?;
        {
            let planted = vec![b'v'; PLANTED];
            q(redis::cmd("SET").arg(k("a:big")).arg(&planted)).await?;
        }

        let rt = runtime();
        let mut spec = PluginSpec::new(HOSTILE, test_plugin(HOSTILE));
        spec.subscribe = vec!["t".into()];
        spec.grants.keyvalue = Some(keyvalue::Grant {
            prefixes: vec![k("a:")],
        });
        spec.limits.host_call_timeout_ms = 20_000;
        spec.limits.call_timeout_ms = 120_000;
        spec.limits.max_value_bytes = VALUE_CAP;
        spec.limits.max_result_bytes = RESULT_CAP;
        let plugin = rt
            .load(&spec)
            .await
            .map_err(|e| anyhow::anyhow!("{redis}: loading {HOSTILE}: {e}"))?;
        let data = json!({
            "p": p, "ledger": ledger, "value_cap": VALUE_CAP,
            "planted": {"value": k("a:big"), "hash": k("a:bighash"), "zset": k("a:bigzset")},
        });
        let measured = reset_peak_rss();
        let before = peak_rss();
        harness::run_script(&plugin, &data).await?;
        let after = peak_rss();

        // Independently: nothing outside the grant changed.
        let mut c = conn.clone();
        let foreign: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{p}:c:*"))
            .query_async(&mut c)
            .await?;
        ensure!(foreign == [k("c:victim")], "foreign keys: {foreign:?}");
        let victim: Option<String> = redis::cmd("GET")
            .arg(k("c:victim"))
            .query_async(&mut c)
            .await?;
        ensure!(victim.as_deref() == Some("v"), "the victim key: {victim:?}");
        let l: Option<String> = redis::cmd("GET").arg(&ledger).query_async(&mut c).await?;
        let lttl: i64 = redis::cmd("PTTL").arg(&ledger).query_async(&mut c).await?;
        ensure!(
            l.as_deref() == Some("1") && lttl == -1,
            "the foreign ledger: {l:?} {lttl}"
        );
        let keep: Option<String> = redis::cmd("GET")
            .arg(k("a:keep"))
            .query_async(&mut c)
            .await?;
        ensure!(keep.as_deref() == Some("k"), "a refused del touched a:keep");
        for absent in ["a:first", "a:many2", "a:piped", "a:huge", "a:long", "a:x"] {
            let e: bool = redis::cmd("EXISTS")
                .arg(k(absent))
                .query_async(&mut c)
                .await?;
            ensure!(!e, "{absent} was written by a refused call");
        }
        for present in ["a:many", "a:climb"] {
            let e: bool = redis::cmd("EXISTS")
                .arg(k(present))
                .query_async(&mut c)
                .await?;
            ensure!(e, "{present}: an allowed write is missing");
        }
        // The plugin's dedupe keys stay in its own ledger, whatever it names them.
        let ns = format!("{}{HOSTILE}:", keyvalue::HOST_NAMESPACE);
        let mut own: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{ns}*{p}*"))
            .query_async(&mut c)
            .await?;
        own.sort();
        ensure!(
            own == [
                format!("{ns}../victim-{p}:ev-1"),
                format!("{ns}{p}:many-ok")
            ],
            "dedupe keys: {own:?}"
        );
        let host: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*{p}*", keyvalue::HOST_NAMESPACE))
            .query_async(&mut c)
            .await?;
        ensure!(host.len() == 3, "the host namespace holds {host:?}");
        // The 100 MB value was refused in Redis: the host never held it.
        if let (true, Some(b), Some(a)) = (measured, before, after) {
            let grew = a.saturating_sub(b);
            eprintln!("peak RSS during the hostile run: +{} MiB", grew >> 20);
            ensure!(
                grew < (PLANTED as u64) / 2,
                "peak RSS grew by {grew} bytes while reading a {PLANTED}-byte value"
            );
        }
        Ok(())
    };
    let result = body().await;
    // Clean up whatever happened.
    let mut c = conn.clone();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{p}:*"))
        .query_async(&mut c)
        .await?;
    let dedupe: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*{p}*", keyvalue::HOST_NAMESPACE))
        .query_async(&mut c)
        .await?;
    keys.extend(dedupe);
    if !keys.is_empty() {
        let _: u64 = redis::cmd("DEL").arg(&keys).query_async(&mut c).await?;
    }
    result
}
