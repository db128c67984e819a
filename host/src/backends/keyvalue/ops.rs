//! Bounded reads and `kv.pipeline`: a list of ops run by one Lua script (`ops.lua`), which
//! measures every answer in Redis before fetching it, so that nothing larger than the
//! plugin's `limits.max_result_bytes` is ever sent to the host.
//!
//! Single reads whose answer can be large (`get`, `hget`, `hgetall`, the ranges,
//! `wasi:keyvalue` `get` and `get-many`) are a list of one op (or a few); a `pipeline` is the
//! plugin's list. Every op is checked here before anything is sent: its key inside the
//! grant, written values within `limits.max_value_bytes`, numbers and TTLs Redis accepts,
//! ranges within [`MAX_RANGE`].
//!
//! The script runs whole, with nothing of other clients interleaved. Its run time is
//! bounded: at most [`MAX_OPS`] ops and [`MAX_ITEMS`] written items per call, at most
//! [`MAX_RANGE`] members per range and [`MAX_EXAMINED`] members read in all.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::{Client, check_ttl, kind_of_code, map_error};
use crate::bindings::polyhost::platform::kv::{Op, Reply, Scored};
use crate::budget::{ResultBudget, check_value};
use crate::error::{HostError, Kind};

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("ops.lua")));

/// The most members one range (`zrange-*`, `hgetall`) may return.
pub const MAX_RANGE: usize = 10_000;

/// The most members one call may read in all, across its ops: bounds how long the script
/// holds Redis.
pub const MAX_EXAMINED: usize = 100_000;

/// The most ops one `pipeline` may hold.
pub const MAX_OPS: usize = 10_000;

/// The most items (fields, members) one `pipeline` may write.
pub const MAX_ITEMS: usize = 100_000;

/// How an op's reply reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Nothing to say: `done`.
    Done,
    /// An integer.
    Int,
    /// An integer, or nil: `absent`.
    OptInt,
    /// `PTTL`: -2 is `absent`.
    Ttl,
    /// An integer sent as text (exact past 2^53).
    IntText,
    /// A float sent as text.
    Number,
    /// A float sent as text, or nil.
    OptNumber,
    /// Bytes, or nil.
    OptBytes,
    /// A hash: field, value, field, value ….
    Fields,
    /// A range `WITHSCORES`: member, score, ….
    Members,
}

/// One op as the script takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptOp {
    /// The key (checked).
    pub key: String,
    /// The script's name for the op.
    pub name: &'static str,
    /// Its arguments.
    pub args: Vec<Vec<u8>>,
    /// How its reply reads.
    pub shape: Shape,
    /// The op for people, in messages: `get \`k\``.
    pub what: String,
}

impl ScriptOp {
    fn new(key: &str, name: &'static str, shape: Shape, what: String) -> ScriptOp {
        ScriptOp {
            key: key.to_string(),
            name,
            args: Vec::new(),
            shape,
            what,
        }
    }

    fn arg(mut self, a: impl Into<Vec<u8>>) -> ScriptOp {
        self.args.push(a.into());
        self
    }

    /// Items written, for [`MAX_ITEMS`].
    fn items(&self) -> usize {
        self.args.len().max(1)
    }

    /// `GET key`.
    pub fn get(key: &str) -> ScriptOp {
        ScriptOp::new(key, "get", Shape::OptBytes, format!("get `{}`", shown(key)))
    }

    /// `HGET key field`.
    pub fn hget(key: &str, field: &str) -> ScriptOp {
        ScriptOp::new(
            key,
            "hget",
            Shape::OptBytes,
            format!("hget `{}`", shown(key)),
        )
        .arg(field)
    }

    /// `HGETALL key`.
    pub fn hgetall(key: &str) -> ScriptOp {
        ScriptOp::new(
            key,
            "hgetall",
            Shape::Fields,
            format!("hgetall `{}`", shown(key)),
        )
    }

    /// `ZRANGE key start stop [REV] WITHSCORES`.
    pub fn zrange_by_rank(key: &str, start: i64, stop: i64, reverse: bool) -> ScriptOp {
        ScriptOp::new(
            key,
            "zrange",
            Shape::Members,
            format!("zrange-by-rank `{}`", shown(key)),
        )
        .arg(start.to_string())
        .arg(stop.to_string())
        .arg(flag(reverse))
    }

    /// `ZRANGE key min max BYSCORE [REV] LIMIT 0 n WITHSCORES`, checked.
    pub fn zrange_by_score(
        key: &str,
        min: f64,
        max: f64,
        reverse: bool,
        limit: Option<u32>,
    ) -> Result<ScriptOp, HostError> {
        let what = format!("zrange-by-score `{}`", shown(key));
        check_number(&what, min)?;
        check_number(&what, max)?;
        if let Some(n) = limit
            && n as usize > MAX_RANGE
        {
            return Err(HostError::invalid(format!(
                "{what}: a limit of {n} exceeds the host bound of {MAX_RANGE} members per range"
            )));
        }
        // With REV, Redis takes the bounds highest first.
        let (lo, hi) = if reverse { (max, min) } else { (min, max) };
        Ok(ScriptOp::new(key, "zrangebyscore", Shape::Members, what)
            .arg(score_arg(lo))
            .arg(score_arg(hi))
            .arg(flag(reverse))
            .arg(limit.map(|n| n.to_string()).unwrap_or_default()))
    }
}

/// A key for messages: control characters escaped, so that a hostile key cannot forge a
/// log line.
pub fn shown(key: &str) -> String {
    key.escape_debug().to_string()
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// A score as Redis parses it (`+inf`, `-inf`, or the shortest exact decimal).
pub fn score_arg(x: f64) -> String {
    if x == f64::INFINITY {
        "+inf".into()
    } else if x == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        x.to_string()
    }
}

/// A score or bound, if it is a number; else `invalid`.
pub fn check_number(what: &str, x: f64) -> Result<(), HostError> {
    if x.is_nan() {
        Err(HostError::invalid(format!("{what}: NaN is not a score")))
    } else {
        Ok(())
    }
}

/// A delta that cannot meet the opposite infinity and fail with NaN; else `invalid`.
fn check_finite(what: &str, x: f64) -> Result<(), HostError> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(HostError::invalid(format!(
            "{what}: an increment must be a finite number"
        )))
    }
}

/// A pipeline `op` as the script takes it, after every check: key inside `prefixes`,
/// values, fields and members within `max_value`, numbers and TTLs Redis accepts.
pub fn from_wit(prefixes: &[String], max_value: usize, op: Op) -> Result<ScriptOp, HostError> {
    let value = |what: &str, v: &[u8]| check_value(v.len(), max_value, what);
    let op = match op {
        Op::Get(k) => ScriptOp::get(&k),
        Op::Set(s) => {
            let what = format!("pipeline set `{}`", shown(&s.key));
            value(&what, &s.value)?;
            let op = ScriptOp::new(&s.key, "set", Shape::Done, what.clone()).arg(s.value);
            match s.ttl_ms {
                None => op,
                Some(ttl) => {
                    check_ttl(&what, ttl, 1)?;
                    op.arg(ttl.to_string())
                }
            }
        }
        Op::Del(k) => ScriptOp::new(&k, "del", Shape::Int, format!("del `{}`", shown(&k))),
        Op::Expire((k, ttl)) => {
            let what = format!("expire `{}`", shown(&k));
            check_ttl(&what, ttl, 0)?;
            ScriptOp::new(&k, "pexpire", Shape::Int, what).arg(ttl.to_string())
        }
        Op::Ttl(k) => ScriptOp::new(&k, "pttl", Shape::Ttl, format!("ttl `{}`", shown(&k))),
        Op::IncrBy((k, d)) => ScriptOp::new(
            &k,
            "incrby",
            Shape::IntText,
            format!("incr-by `{}`", shown(&k)),
        )
        .arg(d.to_string()),
        Op::Hset((k, fields)) => {
            let what = format!("hset `{}`", shown(&k));
            if fields.is_empty() {
                return Err(HostError::invalid(format!("{what}: no fields")));
            }
            let mut op = ScriptOp::new(&k, "hset", Shape::Int, what.clone());
            for (f, v) in fields {
                value(&what, f.as_bytes())?;
                value(&what, &v)?;
                op = op.arg(f).arg(v);
            }
            op
        }
        Op::Hget((k, f)) => ScriptOp::hget(&k, &f),
        Op::Hgetall(k) => ScriptOp::hgetall(&k),
        Op::Hdel((k, fields)) => {
            let what = format!("hdel `{}`", shown(&k));
            if fields.is_empty() {
                return Err(HostError::invalid(format!("{what}: no fields")));
            }
            fields
                .into_iter()
                .fold(ScriptOp::new(&k, "hdel", Shape::Int, what), ScriptOp::arg)
        }
        Op::HincrBy((k, f, d)) => ScriptOp::new(
            &k,
            "hincrby",
            Shape::IntText,
            format!("hincr-by `{}`", shown(&k)),
        )
        .arg(f)
        .arg(d.to_string()),
        Op::Zadd((k, members)) => {
            let what = format!("zadd `{}`", shown(&k));
            if members.is_empty() {
                return Err(HostError::invalid(format!("{what}: no members")));
            }
            let mut op = ScriptOp::new(&k, "zadd", Shape::Int, what.clone());
            for m in members {
                check_number(&what, m.score)?;
                value(&what, m.member.as_bytes())?;
                op = op.arg(score_arg(m.score)).arg(m.member);
            }
            op
        }
        Op::ZincrBy((k, m, d)) => {
            let what = format!("zincr-by `{}`", shown(&k));
            check_finite(&what, d)?;
            value(&what, m.as_bytes())?;
            ScriptOp::new(&k, "zincrby", Shape::Number, what)
                .arg(score_arg(d))
                .arg(m)
        }
        Op::ZrangeByRank(r) => ScriptOp::zrange_by_rank(&r.key, r.start, r.stop, r.reverse),
        Op::ZrangeByScore(r) => {
            ScriptOp::zrange_by_score(&r.key, r.min, r.max, r.reverse, r.limit)?
        }
        Op::Zrank((k, m, reverse)) => ScriptOp::new(
            &k,
            if reverse { "zrevrank" } else { "zrank" },
            Shape::OptInt,
            format!("zrank `{}`", shown(&k)),
        )
        .arg(m),
        Op::Zscore((k, m)) => ScriptOp::new(
            &k,
            "zscore",
            Shape::OptNumber,
            format!("zscore `{}`", shown(&k)),
        )
        .arg(m),
        Op::Zrem((k, members)) => {
            let what = format!("zrem `{}`", shown(&k));
            if members.is_empty() {
                return Err(HostError::invalid(format!("{what}: no members")));
            }
            members
                .into_iter()
                .fold(ScriptOp::new(&k, "zrem", Shape::Int, what), ScriptOp::arg)
        }
        Op::Zcard(k) => ScriptOp::new(&k, "zcard", Shape::Int, format!("zcard `{}`", shown(&k))),
    };
    super::check_key(prefixes, &op.key).map_err(|e| retag(e, &format!("pipeline {}", op.what)))?;
    Ok(op)
}

/// `e` with `what` in front of its message.
fn retag(e: HostError, what: &str) -> HostError {
    match e {
        HostError {
            kind: Kind::Denied,
            message: m,
            ..
        } => HostError::denied(format!("{what}: {m}")),
        HostError {
            kind: Kind::Invalid,
            message: m,
            ..
        } => HostError::invalid(format!("{what}: {m}")),
        other => other,
    }
}

/// The checks on a whole pipeline: how many ops and items.
pub fn check_pipeline(ops: &[ScriptOp]) -> Result<(), HostError> {
    if ops.len() > MAX_OPS {
        return Err(HostError::invalid(format!(
            "pipeline: {} ops exceed the host bound of {MAX_OPS} per call; send several",
            ops.len()
        )));
    }
    let items: usize = ops.iter().map(ScriptOp::items).sum();
    if items > MAX_ITEMS {
        return Err(HostError::invalid(format!(
            "pipeline: {items} items exceed the host bound of {MAX_ITEMS} per call; send several"
        )));
    }
    Ok(())
}

/// A server error reply (`CODE message`) as the host error of `what`.
fn server_error(what: &str, message: &[u8]) -> HostError {
    let message = String::from_utf8_lossy(message);
    let code = message.split_whitespace().next().unwrap_or("");
    let m = format!("{what}: {message}");
    HostError::new(kind_of_code(code), m)
}

fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn parse_f64(b: &[u8]) -> Option<f64> {
    match std::str::from_utf8(b).ok()? {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        s => s.parse().ok(),
    }
}

/// One op's payload read as its shape, counted into `budget`.
fn reply(
    shape: Shape,
    what: &str,
    payload: &Value,
    budget: &mut ResultBudget,
) -> Result<Reply, HostError> {
    let unexpected = || HostError::other(format!("{what}: unexpected reply {payload:?}"));
    let r = match (shape, payload) {
        (Shape::Done, _) => Reply::Done,
        (Shape::Int, Value::Int(n)) => Reply::Integer(*n),
        (Shape::OptInt, Value::Nil) => Reply::Absent,
        (Shape::OptInt, Value::Int(n)) => Reply::Integer(*n),
        (Shape::Ttl, Value::Int(-2)) => Reply::Absent,
        (Shape::Ttl, Value::Int(n)) => Reply::Integer(*n),
        (Shape::IntText, v) => Reply::Integer(
            text(v)
                .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
                .ok_or_else(unexpected)?,
        ),
        (Shape::OptNumber, Value::Nil) => Reply::Absent,
        (Shape::Number | Shape::OptNumber, v) => {
            Reply::Number(text(v).and_then(parse_f64).ok_or_else(unexpected)?)
        }
        (Shape::OptBytes, Value::Nil) => Reply::Absent,
        (Shape::OptBytes, Value::BulkString(b)) => {
            budget.take(b.len(), what)?;
            Reply::Bytes(b.clone())
        }
        (Shape::Fields, Value::Array(items)) if items.len() % 2 == 0 => {
            let mut fields = Vec::with_capacity(items.len() / 2);
            for pair in items.chunks_exact(2) {
                let (Some(f), Some(v)) = (text(&pair[0]), text(&pair[1])) else {
                    return Err(unexpected());
                };
                budget.take(f.len() + v.len(), what)?;
                fields.push((String::from_utf8_lossy(f).into_owned(), v.to_vec()));
            }
            Reply::Fields(fields)
        }
        (Shape::Members, Value::Array(items)) if items.len() % 2 == 0 => {
            let mut members = Vec::with_capacity(items.len() / 2);
            for pair in items.chunks_exact(2) {
                let (Some(m), Some(score)) = (text(&pair[0]), text(&pair[1]).and_then(parse_f64))
                else {
                    return Err(unexpected());
                };
                budget.take(m.len() + 8, what)?;
                // A member another client wrote that is not UTF-8 is read lossily rather
                // than making the whole range unreadable.
                members.push(Scored {
                    member: String::from_utf8_lossy(m).into_owned(),
                    score,
                });
            }
            Reply::Members(members)
        }
        _ => return Err(unexpected()),
    };
    Ok(r)
}

/// The script's entry for one op: its reply, or its error.
fn entry(op: &ScriptOp, v: &Value, budget: &mut ResultBudget) -> Result<Reply, HostError> {
    let bad = || HostError::other(format!("{}: unexpected reply {v:?}", op.what));
    let Value::Array(parts) = v else {
        return Err(bad());
    };
    match parts.as_slice() {
        [tag, payload] => match text(tag) {
            Some(b"ok") => reply(op.shape, &op.what, payload, budget),
            Some(b"err") => Err(server_error(&op.what, text(payload).unwrap_or(b"?"))),
            Some(b"big") => Err(HostError::invalid(format!(
                "{}: {}",
                op.what,
                String::from_utf8_lossy(text(payload).unwrap_or(b"?"))
            ))),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

impl Client {
    /// Runs `ops` (every one checked) in one script call within `max_result_bytes`: one
    /// reply or error per op. Fails whole only when the script could not run.
    pub(super) async fn run_ops(
        &self,
        what: &str,
        ops: &[ScriptOp],
        max_result_bytes: usize,
    ) -> Result<Vec<Result<Reply, HostError>>, HostError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .arg(max_result_bytes)
            .arg(MAX_RANGE)
            .arg(MAX_EXAMINED);
        for op in ops {
            invocation.key(&op.key).arg(op.name).arg(op.args.len());
            for a in &op.args {
                invocation.arg(a.as_slice());
            }
        }
        let _permit = self.permit().await?;
        let mut conn = self.conn.clone();
        let reply: Value = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| map_error(what, e))?;
        let Value::Array(entries) = reply else {
            return Err(HostError::other(format!(
                "{what}: unexpected reply from the script: {reply:?}"
            )));
        };
        if entries.len() != ops.len() {
            return Err(HostError::other(format!(
                "{what}: the script answered {} entries for {} ops",
                entries.len(),
                ops.len()
            )));
        }
        // The script kept the answers within the cap; counting them again here keeps the
        // bound even if it did not.
        let mut budget = ResultBudget::new(max_result_bytes);
        Ok(ops
            .iter()
            .zip(&entries)
            .map(|(op, v)| entry(op, v, &mut budget))
            .collect())
    }

    /// Runs one op whose answer may be large: its reply, or its error as the call's.
    pub(super) async fn run_one(
        &self,
        op: ScriptOp,
        max_result_bytes: usize,
    ) -> Result<Reply, HostError> {
        self.check(&op.key)?;
        let what = op.what.clone();
        let mut replies = self.run_ops(&what, &[op], max_result_bytes).await?;
        replies
            .pop()
            .unwrap_or_else(|| Err(HostError::other("the script answered no entry")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::polyhost::platform::kv::{RankRange, ScoreRange, SetCommand};

    fn g() -> Vec<String> {
        vec!["c:".to_string()]
    }

    #[test]
    fn ops_encode_with_their_checks() {
        let op = from_wit(&g(), 10, Op::IncrBy(("c:n".into(), -3))).unwrap();
        assert_eq!((op.name, op.args), ("incrby", vec![b"-3".to_vec()]));
        let op = from_wit(
            &g(),
            10,
            Op::Set(SetCommand {
                key: "c:a".into(),
                value: b"v".to_vec(),
                ttl_ms: Some(5),
            }),
        )
        .unwrap();
        assert_eq!(op.args, vec![b"v".to_vec(), b"5".to_vec()]);
        let op = from_wit(
            &g(),
            10,
            Op::ZrangeByScore(ScoreRange {
                key: "c:z".into(),
                min: f64::NEG_INFINITY,
                max: 3.5,
                reverse: true,
                limit: None,
            }),
        )
        .unwrap();
        assert_eq!(
            op.args,
            vec![b"3.5".to_vec(), b"-inf".to_vec(), b"1".to_vec(), vec![]]
        );
        let op = from_wit(
            &g(),
            10,
            Op::ZrangeByRank(RankRange {
                key: "c:z".into(),
                start: 0,
                stop: -1,
                reverse: false,
            }),
        )
        .unwrap();
        assert_eq!(op.name, "zrange");
    }

    #[test]
    fn foreign_keys_oversized_values_and_bad_numbers_are_refused() {
        let denied = from_wit(&g(), 10, Op::Get("d:x".into())).unwrap_err();
        assert!(
            matches!(denied, HostError { kind: Kind::Denied, message: m, .. } if m.contains("pipeline get"))
        );
        let ns = from_wit(&g(), 10, Op::Del("polyhost:applied:p:e".into())).unwrap_err();
        assert!(matches!(
            ns,
            HostError {
                kind: Kind::Denied,
                ..
            }
        ));
        let big = Op::Set(SetCommand {
            key: "c:a".into(),
            value: vec![0; 11],
            ttl_ms: None,
        });
        let e = from_wit(&g(), 10, big).unwrap_err().to_string();
        assert!(e.contains("limits.max_value_bytes"), "{e}");
        let member = Op::Zadd((
            "c:z".into(),
            vec![Scored {
                member: "x".repeat(11),
                score: 1.0,
            }],
        ));
        assert!(from_wit(&g(), 10, member).is_err());
        let nan = Op::Zadd((
            "c:z".into(),
            vec![Scored {
                member: "m".into(),
                score: f64::NAN,
            }],
        ));
        assert!(matches!(
            from_wit(&g(), 10, nan),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        let inf = Op::ZincrBy(("c:z".into(), "m".into(), f64::INFINITY));
        assert!(matches!(
            from_wit(&g(), 10, inf),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        let limit = ScriptOp::zrange_by_score("c:z", 0.0, 1.0, false, Some(u32::MAX));
        assert!(
            matches!(limit, Err(HostError { kind: Kind::Invalid, message: m, .. }) if m.contains("host bound"))
        );
        let empty = Op::Hset(("c:h".into(), vec![]));
        assert!(matches!(
            from_wit(&g(), 10, empty),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
    }

    #[test]
    fn entries_read_as_replies_or_errors() {
        let mut budget = ResultBudget::new(100);
        let get = ScriptOp::get("c:a");
        let ok = Value::Array(vec![
            Value::BulkString(b"ok".to_vec()),
            Value::BulkString(b"hello".to_vec()),
        ]);
        assert!(matches!(entry(&get, &ok, &mut budget), Ok(Reply::Bytes(b)) if b == b"hello"));
        let nil = Value::Array(vec![Value::BulkString(b"ok".to_vec()), Value::Nil]);
        assert!(matches!(entry(&get, &nil, &mut budget), Ok(Reply::Absent)));
        let wrong = Value::Array(vec![
            Value::BulkString(b"err".to_vec()),
            Value::BulkString(b"WRONGTYPE Operation against a key".to_vec()),
        ]);
        assert!(
            matches!(entry(&get, &wrong, &mut budget), Err(HostError { kind: Kind::Invalid, message: m, .. }) if m.contains("WRONGTYPE"))
        );
        let big = Value::Array(vec![
            Value::BulkString(b"big".to_vec()),
            Value::BulkString(b"the value: 5 bytes would exceed limits.max_result_bytes".to_vec()),
        ]);
        assert!(
            matches!(entry(&get, &big, &mut budget), Err(HostError { kind: Kind::Invalid, message: m, .. }) if m.contains("max_result_bytes"))
        );
        let range = ScriptOp::zrange_by_rank("c:z", 0, -1, false);
        let members = Value::Array(vec![
            Value::BulkString(b"ok".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"a".to_vec()),
                Value::BulkString(b"1.5".to_vec()),
                Value::BulkString(b"b".to_vec()),
                Value::BulkString(b"inf".to_vec()),
            ]),
        ]);
        match entry(&range, &members, &mut budget) {
            Ok(Reply::Members(m)) => {
                assert_eq!(m.len(), 2);
                assert_eq!((m[0].member.as_str(), m[0].score), ("a", 1.5));
                assert_eq!(m[1].score, f64::INFINITY);
            }
            other => panic!("{other:?}"),
        }
        // The host counts too: past the cap, `invalid` naming the limit.
        let mut small = ResultBudget::new(3);
        let e = entry(&get, &ok, &mut small).unwrap_err().to_string();
        assert!(e.contains("limits.max_result_bytes"), "{e}");
    }

    #[test]
    fn keys_in_messages_are_escaped() {
        assert_eq!(shown("a\nb"), "a\\nb");
        assert_eq!(ScriptOp::get("k\r").what, "get `k\\r`");
    }
}
