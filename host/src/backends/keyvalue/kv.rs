//! `polyhost:platform/kv`: expiry, counters, hashes and sorted sets, one Redis command each
//! (`apply-once` lives in [`super::apply_once`]).
//!
//! Arguments Redis would refuse only after the fact are refused here first, as `invalid`: a
//! NaN score, an expiry out of range. Hash fields and sorted-set members are strings in the
//! WIT; one written by another client that is not UTF-8 is read lossily rather than making
//! the whole hash or set unreadable.

use super::ops::{self, ScriptOp, check_number, shown};
use super::{HostError, check_ttl};
use super::{Keyvalue, View};
use crate::bindings::polyhost::platform::kv::{ApplyEntry, Command, Host, Op, Reply, Scored};
use crate::bindings::polyhost::platform::types::Error as WitError;
use crate::budget::check_value;
use crate::error::with_timeout;

/// A reply of the shape `shape` promised, or the host bug it is not.
fn unexpected(what: &str, reply: &Reply) -> HostError {
    HostError::other(format!("{what}: unexpected reply {reply:?}"))
}

/// `get`/`hget`: bytes or nothing.
fn opt_bytes(what: &str, reply: Reply) -> Result<Option<Vec<u8>>, HostError> {
    match reply {
        Reply::Bytes(b) => Ok(Some(b)),
        Reply::Absent => Ok(None),
        other => Err(unexpected(what, &other)),
    }
}

/// A range: its members.
fn members(what: &str, reply: Reply) -> Result<Vec<Scored>, HostError> {
    match reply {
        Reply::Members(m) => Ok(m),
        other => Err(unexpected(what, &other)),
    }
}

impl Host for View<'_, Keyvalue> {
    async fn set_ex(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> Result<(), HostError> {
        let (c, env) = self.granted()?;
        c.check(&key)?;
        check_ttl(&format!("set-ex `{}`", shown(&key)), ttl_ms, 1)?;
        check_value(
            value.len(),
            env.max_value_bytes,
            &format!("set-ex `{}`", shown(&key)),
        )?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key).arg(&value).arg("PX").arg(ttl_ms);
        with_timeout(env.host_call_timeout, "kv.set-ex", async move {
            c.query(&format!("set-ex `{key}`"), &cmd).await
        })
        .await
    }

    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, HostError> {
        let (c, env) = self.granted()?;
        c.check(&key)?;
        let op = ScriptOp::get(&key);
        let what = op.what.clone();
        let cap = env.max_result_bytes;
        with_timeout(env.host_call_timeout, "kv.get", async move {
            opt_bytes(&what, c.run_one(op, cap).await?)
        })
        .await
    }

    async fn del(&mut self, keys: Vec<String>) -> Result<u64, HostError> {
        let (c, env) = self.granted()?;
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
        let (c, env) = self.granted()?;
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
        let (c, env) = self.granted()?;
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
        let (c, env) = self.granted()?;
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
        let (c, env) = self.granted()?;
        c.check(&key)?;
        let what = format!("hset `{}`", shown(&key));
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&key);
        for (f, v) in &fields {
            check_value(f.len(), env.max_value_bytes, &what)?;
            check_value(v.len(), env.max_value_bytes, &what)?;
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
        let (c, env) = self.granted()?;
        c.check(&key)?;
        let op = ScriptOp::hget(&key, &field);
        let what = op.what.clone();
        let cap = env.max_result_bytes;
        with_timeout(env.host_call_timeout, "kv.hget", async move {
            opt_bytes(&what, c.run_one(op, cap).await?)
        })
        .await
    }

    async fn hgetall(&mut self, key: String) -> Result<Vec<(String, Vec<u8>)>, HostError> {
        let (c, env) = self.granted()?;
        c.check(&key)?;
        let op = ScriptOp::hgetall(&key);
        let what = op.what.clone();
        let cap = env.max_result_bytes;
        with_timeout(env.host_call_timeout, "kv.hgetall", async move {
            match c.run_one(op, cap).await? {
                Reply::Fields(f) => Ok(f),
                other => Err(unexpected(&what, &other)),
            }
        })
        .await
    }

    async fn hdel(&mut self, key: String, fields: Vec<String>) -> Result<u64, HostError> {
        let (c, env) = self.granted()?;
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
        let (c, env) = self.granted()?;
        c.check(&key)?;
        let mut cmd = redis::cmd("HINCRBY");
        cmd.arg(&key).arg(&field).arg(delta);
        with_timeout(env.host_call_timeout, "kv.hincr-by", async move {
            c.query(&format!("hincr-by `{key}` `{field}`"), &cmd).await
        })
        .await
    }

    async fn zadd(&mut self, key: String, members: Vec<Scored>) -> Result<u64, HostError> {
        let (c, env) = self.granted()?;
        c.check(&key)?;
        let what = format!("zadd `{}`", shown(&key));
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(&key);
        for m in &members {
            check_number(&what, m.score)?;
            check_value(m.member.len(), env.max_value_bytes, &what)?;
            cmd.arg(ops::score_arg(m.score)).arg(&m.member);
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
        let (c, env) = self.granted()?;
        c.check(&key)?;
        let what = format!("zincr-by `{}`", shown(&key));
        check_number(&what, delta)?;
        check_value(member.len(), env.max_value_bytes, &what)?;
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
        let (c, env) = self.granted()?;
        c.check(&key)?;
        let op = ScriptOp::zrange_by_rank(&key, start, stop, reverse);
        let what = op.what.clone();
        let cap = env.max_result_bytes;
        with_timeout(env.host_call_timeout, "kv.zrange-by-rank", async move {
            members(&what, c.run_one(op, cap).await?)
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
        let (c, env) = self.granted()?;
        c.check(&key)?;
        let op = ScriptOp::zrange_by_score(&key, min, max, reverse, limit)?;
        let what = op.what.clone();
        let cap = env.max_result_bytes;
        with_timeout(env.host_call_timeout, "kv.zrange-by-score", async move {
            if limit == Some(0) {
                return Ok(Vec::new());
            }
            members(&what, c.run_one(op, cap).await?)
        })
        .await
    }

    async fn zrank(
        &mut self,
        key: String,
        member: String,
        reverse: bool,
    ) -> Result<Option<u64>, HostError> {
        let (c, env) = self.granted()?;
        c.check(&key)?;
        let mut cmd = redis::cmd(if reverse { "ZREVRANK" } else { "ZRANK" });
        cmd.arg(&key).arg(&member);
        with_timeout(env.host_call_timeout, "kv.zrank", async move {
            c.query(&format!("zrank `{key}`"), &cmd).await
        })
        .await
    }

    async fn zscore(&mut self, key: String, member: String) -> Result<Option<f64>, HostError> {
        let (c, env) = self.granted()?;
        c.check(&key)?;
        let mut cmd = redis::cmd("ZSCORE");
        cmd.arg(&key).arg(&member);
        with_timeout(env.host_call_timeout, "kv.zscore", async move {
            c.query(&format!("zscore `{key}`"), &cmd).await
        })
        .await
    }

    async fn zrem(&mut self, key: String, members: Vec<String>) -> Result<u64, HostError> {
        let (c, env) = self.granted()?;
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
        let (c, env) = self.granted()?;
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
        let (c, env) = self.granted()?;
        let script =
            c.prepare_apply_once(&dedupe_key, dedupe_ttl_ms, &commands, env.max_value_bytes)?;
        with_timeout(env.host_call_timeout, "kv.apply-once", async move {
            c.apply_once(&dedupe_key, script).await
        })
        .await
    }

    async fn apply_once_many(
        &mut self,
        dedupe_ttl_ms: u64,
        entries: Vec<ApplyEntry>,
    ) -> Result<Vec<Result<bool, WitError>>, HostError> {
        let (c, env) = self.granted()?;
        check_ttl("apply-once-many: the dedupe TTL", dedupe_ttl_ms, 1)?;
        // Each entry checked alone: one that fails its checks is answered here and not sent,
        // the others go on.
        let prepared: Vec<_> = entries
            .iter()
            .map(|e| {
                c.prepare_apply_once(
                    &e.dedupe_key,
                    dedupe_ttl_ms,
                    &e.commands,
                    env.max_value_bytes,
                )
            })
            .collect();
        let results = with_timeout(env.host_call_timeout, "kv.apply-once-many", async move {
            c.apply_once_many(&entries, prepared).await
        })
        .await?;
        results
            .into_iter()
            .map(|r| match r {
                Ok(applied) => Ok(Ok(applied)),
                Err(e) => e.into_wit().map(Err).map_err(HostError::trap),
            })
            .collect()
    }

    async fn pipeline(&mut self, ops: Vec<Op>) -> Result<Vec<Result<Reply, WitError>>, HostError> {
        let (c, env) = self.granted()?;
        let encoded = ops
            .into_iter()
            .map(|op| ops::from_wit(&c.prefixes, env.max_value_bytes, op))
            .collect::<Result<Vec<_>, _>>()?;
        ops::check_pipeline(&encoded)?;
        let cap = env.max_result_bytes;
        let replies = with_timeout(env.host_call_timeout, "kv.pipeline", async move {
            c.run_ops("pipeline", &encoded, cap).await
        })
        .await?;
        replies
            .into_iter()
            .map(|r| match r {
                Ok(reply) => Ok(Ok(reply)),
                Err(e) => e.into_wit().map(Err).map_err(HostError::trap),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn nan_is_refused() {
        assert!(matches!(
            check_number("zadd", f64::NAN),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        assert!(check_number("zadd", f64::INFINITY).is_ok());
        assert!(check_number("zadd", -0.5).is_ok());
    }

    #[test]
    fn replies_of_another_shape_are_host_errors() {
        assert!(matches!(opt_bytes("get", Reply::Absent), Ok(None)));
        assert!(matches!(
            opt_bytes("get", Reply::Integer(1)),
            Err(HostError {
                kind: Kind::Other,
                ..
            })
        ));
        assert!(members("z", Reply::Members(vec![])).unwrap().is_empty());
    }
}
