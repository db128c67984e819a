//! `polyhost:platform/kv`: expiry, counters, hashes and sorted sets, one Redis command each
//! (`apply-once` lives in [`super::apply_once`]).
//!
//! Arguments Redis would refuse only after the fact are refused here first, as `invalid`: a
//! NaN score, an expiry out of range. Hash fields and sorted-set members are strings in the
//! WIT; one written by another client that is not UTF-8 is read lossily rather than making
//! the whole hash or set unreadable.

use super::{HostError, check_ttl, client};
use crate::bindings::polyhost::platform::kv::{Command, Host, Scored};
use crate::error::with_timeout;
use crate::state::HostState;

/// A score or delta, if it is a number; else `invalid`.
fn check_number(what: &str, x: f64) -> Result<(), HostError> {
    if x.is_nan() {
        Err(HostError::Invalid(format!("{what}: NaN is not a score")))
    } else {
        Ok(())
    }
}

/// Sorted-set members with scores, from a `WITHSCORES` reply.
fn scored(reply: Vec<(Vec<u8>, f64)>) -> Vec<Scored> {
    reply
        .into_iter()
        .map(|(member, score)| Scored {
            member: String::from_utf8_lossy(&member).into_owned(),
            score,
        })
        .collect()
}

impl Host for HostState {
    async fn set_ex(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> Result<(), HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        check_ttl(&format!("set-ex `{key}`"), ttl_ms, 1)?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key).arg(&value).arg("PX").arg(ttl_ms);
        with_timeout(env.host_call_timeout, "kv.set-ex", async move {
            c.query(&format!("set-ex `{key}`"), &cmd).await
        })
        .await
    }

    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        let mut cmd = redis::cmd("GET");
        cmd.arg(&key);
        with_timeout(env.host_call_timeout, "kv.get", async move {
            c.query(&format!("get `{key}`"), &cmd).await
        })
        .await
    }

    async fn del(&mut self, keys: Vec<String>) -> Result<u64, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check_all(keys.iter().map(String::as_str))?;
        let mut cmd = redis::cmd("DEL");
        cmd.arg(&keys);
        with_timeout(env.host_call_timeout, "kv.del", async move {
            if keys.is_empty() {
                return Ok(0);
            }
            c.query("del", &cmd).await
        })
        .await
    }

    async fn expire(&mut self, key: String, ttl_ms: u64) -> Result<bool, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        check_ttl(&format!("expire `{key}`"), ttl_ms, 0)?;
        let mut cmd = redis::cmd("PEXPIRE");
        cmd.arg(&key).arg(ttl_ms);
        with_timeout(env.host_call_timeout, "kv.expire", async move {
            c.query(&format!("expire `{key}`"), &cmd).await
        })
        .await
    }

    async fn ttl(&mut self, key: String) -> Result<Option<i64>, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        let mut cmd = redis::cmd("PTTL");
        cmd.arg(&key);
        with_timeout(env.host_call_timeout, "kv.ttl", async move {
            let ttl: i64 = c.query(&format!("ttl `{key}`"), &cmd).await?;
            // -2: no such key; -1: no expiry (passed on as the WIT documents).
            Ok((ttl != -2).then_some(ttl))
        })
        .await
    }

    async fn incr_by(&mut self, key: String, delta: i64) -> Result<i64, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        let mut cmd = redis::cmd("INCRBY");
        cmd.arg(&key).arg(delta);
        with_timeout(env.host_call_timeout, "kv.incr-by", async move {
            c.query(&format!("incr-by `{key}`"), &cmd).await
        })
        .await
    }

    async fn hset(
        &mut self,
        key: String,
        fields: Vec<(String, Vec<u8>)>,
    ) -> Result<u64, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&key);
        for (f, v) in &fields {
            cmd.arg(f).arg(v);
        }
        with_timeout(env.host_call_timeout, "kv.hset", async move {
            if fields.is_empty() {
                return Ok(0);
            }
            c.query(&format!("hset `{key}`"), &cmd).await
        })
        .await
    }

    async fn hget(&mut self, key: String, field: String) -> Result<Option<Vec<u8>>, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        let mut cmd = redis::cmd("HGET");
        cmd.arg(&key).arg(&field);
        with_timeout(env.host_call_timeout, "kv.hget", async move {
            c.query(&format!("hget `{key}`"), &cmd).await
        })
        .await
    }

    async fn hgetall(&mut self, key: String) -> Result<Vec<(String, Vec<u8>)>, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(&key);
        with_timeout(env.host_call_timeout, "kv.hgetall", async move {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = c.query(&format!("hgetall `{key}`"), &cmd).await?;
            Ok(pairs
                .into_iter()
                .map(|(f, v)| (String::from_utf8_lossy(&f).into_owned(), v))
                .collect())
        })
        .await
    }

    async fn hdel(&mut self, key: String, fields: Vec<String>) -> Result<u64, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(&key).arg(&fields);
        with_timeout(env.host_call_timeout, "kv.hdel", async move {
            if fields.is_empty() {
                return Ok(0);
            }
            c.query(&format!("hdel `{key}`"), &cmd).await
        })
        .await
    }

    async fn hincr_by(&mut self, key: String, field: String, delta: i64) -> Result<i64, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        let mut cmd = redis::cmd("HINCRBY");
        cmd.arg(&key).arg(&field).arg(delta);
        with_timeout(env.host_call_timeout, "kv.hincr-by", async move {
            c.query(&format!("hincr-by `{key}` `{field}`"), &cmd).await
        })
        .await
    }

    async fn zadd(&mut self, key: String, members: Vec<Scored>) -> Result<u64, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(&key);
        for m in &members {
            check_number(&format!("zadd `{key}` `{}`", m.member), m.score)?;
            cmd.arg(m.score).arg(&m.member);
        }
        with_timeout(env.host_call_timeout, "kv.zadd", async move {
            if members.is_empty() {
                return Ok(0);
            }
            c.query(&format!("zadd `{key}`"), &cmd).await
        })
        .await
    }

    async fn zincr_by(
        &mut self,
        key: String,
        member: String,
        delta: f64,
    ) -> Result<f64, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        check_number(&format!("zincr-by `{key}` `{member}`"), delta)?;
        let mut cmd = redis::cmd("ZINCRBY");
        cmd.arg(&key).arg(delta).arg(&member);
        with_timeout(env.host_call_timeout, "kv.zincr-by", async move {
            c.query(&format!("zincr-by `{key}` `{member}`"), &cmd).await
        })
        .await
    }

    async fn zrange_by_rank(
        &mut self,
        key: String,
        start: i64,
        stop: i64,
        reverse: bool,
    ) -> Result<Vec<Scored>, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(&key).arg(start).arg(stop);
        if reverse {
            cmd.arg("REV");
        }
        cmd.arg("WITHSCORES");
        with_timeout(env.host_call_timeout, "kv.zrange-by-rank", async move {
            let reply = c.query(&format!("zrange-by-rank `{key}`"), &cmd).await?;
            Ok(scored(reply))
        })
        .await
    }

    async fn zrange_by_score(
        &mut self,
        key: String,
        min: f64,
        max: f64,
        reverse: bool,
        limit: Option<u32>,
    ) -> Result<Vec<Scored>, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        let what = format!("zrange-by-score `{key}`");
        check_number(&what, min)?;
        check_number(&what, max)?;
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(&key);
        // With REV, Redis takes the bounds highest first.
        if reverse {
            cmd.arg(max).arg(min).arg("BYSCORE").arg("REV");
        } else {
            cmd.arg(min).arg(max).arg("BYSCORE");
        }
        if let Some(n) = limit {
            cmd.arg("LIMIT").arg(0).arg(n);
        }
        cmd.arg("WITHSCORES");
        with_timeout(env.host_call_timeout, "kv.zrange-by-score", async move {
            if limit == Some(0) {
                return Ok(Vec::new());
            }
            let reply = c.query(&what, &cmd).await?;
            Ok(scored(reply))
        })
        .await
    }

    async fn zrank(
        &mut self,
        key: String,
        member: String,
        reverse: bool,
    ) -> Result<Option<u64>, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        let mut cmd = redis::cmd(if reverse { "ZREVRANK" } else { "ZRANK" });
        cmd.arg(&key).arg(&member);
        with_timeout(env.host_call_timeout, "kv.zrank", async move {
            c.query(&format!("zrank `{key}`"), &cmd).await
        })
        .await
    }

    async fn zscore(&mut self, key: String, member: String) -> Result<Option<f64>, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        let mut cmd = redis::cmd("ZSCORE");
        cmd.arg(&key).arg(&member);
        with_timeout(env.host_call_timeout, "kv.zscore", async move {
            c.query(&format!("zscore `{key}`"), &cmd).await
        })
        .await
    }

    async fn zrem(&mut self, key: String, members: Vec<String>) -> Result<u64, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(&key).arg(&members);
        with_timeout(env.host_call_timeout, "kv.zrem", async move {
            if members.is_empty() {
                return Ok(0);
            }
            c.query(&format!("zrem `{key}`"), &cmd).await
        })
        .await
    }

    async fn zcard(&mut self, key: String) -> Result<u64, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        c.check(&key)?;
        let mut cmd = redis::cmd("ZCARD");
        cmd.arg(&key);
        with_timeout(env.host_call_timeout, "kv.zcard", async move {
            c.query(&format!("zcard `{key}`"), &cmd).await
        })
        .await
    }

    async fn apply_once(
        &mut self,
        dedupe_key: String,
        dedupe_ttl_ms: u64,
        commands: Vec<Command>,
    ) -> Result<bool, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        let script = c.prepare_apply_once(&dedupe_key, dedupe_ttl_ms, &commands)?;
        with_timeout(env.host_call_timeout, "kv.apply-once", async move {
            c.apply_once(&dedupe_key, script).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_is_refused() {
        assert!(matches!(
            check_number("zadd", f64::NAN),
            Err(HostError::Invalid(_))
        ));
        assert!(check_number("zadd", f64::INFINITY).is_ok());
        assert!(check_number("zadd", -0.5).is_ok());
    }

    #[test]
    fn scores_keep_their_order_and_foreign_bytes_are_read_lossily() {
        let s = scored(vec![(b"a".to_vec(), 1.0), (vec![0xff, b'b'], 2.5)]);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].member.as_str(), s[0].score), ("a", 1.0));
        assert_eq!((s[1].member.as_str(), s[1].score), ("\u{fffd}b", 2.5));
    }
}
