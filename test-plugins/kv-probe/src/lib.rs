//! Test plugin: each event's `data` is a JSON script of `wasi:keyvalue` (`store`, `atomics`,
//! `batch`) and `polyhost:platform/kv` calls, each with the result it expects; the plugin
//! runs them in order and answers `ok` when every result matched, else `reject` listing the
//! mismatches.
//!
//! ```json
//! {"steps": [
//!   {"call": "kv.set-ex", "key": "t:a", "value": "x", "ttl_ms": 60000, "expect": {"ok": null}},
//!   {"call": "bucket.get", "bucket": "t", "key": "a", "expect": {"ok": "x"}},
//!   {"call": "kv.get", "key": "other", "expect": {"err": "denied"}}
//! ]}
//! ```
//!
//! Values are UTF-8 text both ways. Scores are JSON numbers, or the strings `"inf"`,
//! `"-inf"` and `"nan"`. `wasi:keyvalue` buckets are opened on first use by identifier and
//! dropped when the script ends; their errors are `no-such-store`, `access-denied` and
//! `other`. In an expectation `"*"` matches any value and `{"between": [lo, hi]}` any number
//! from `lo` to `hi`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

use std::collections::HashMap;

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::kv;
use polyhost::platform::types::{BatchInfo, Error, ErrorKind, Event, Outcome};
use polyhost_guest::probe::{self, Actual};
use serde_json::{Value, json};
use wasi::keyvalue::{atomics, batch, store};

struct Probe;

impl Guest for Probe {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        events
            .iter()
            .map(|event| match run_script(&event.data) {
                Ok(()) => Outcome::Ok,
                Err(mismatches) => Outcome::Reject(mismatches),
            })
            .collect()
    }
}

export!(Probe);

/// Runs every step of the script, and lists every step whose result did not match.
fn run_script(data: &[u8]) -> Result<(), String> {
    let mut buckets = Buckets::default();
    probe::run_script(
        data,
        &json!({"ok": "*"}),
        |step| run_step(&mut buckets, step),
        matches,
    )
}

/// The buckets a script opened, by identifier.
#[derive(Default)]
struct Buckets(HashMap<String, store::Bucket>);

impl Buckets {
    fn get(&mut self, identifier: &str) -> Result<&store::Bucket, store::Error> {
        if !self.0.contains_key(identifier) {
            let b = store::open(identifier)?;
            self.0.insert(identifier.to_string(), b);
        }
        Ok(&self.0[identifier])
    }
}

fn outcome<T>(result: Result<T, Error>, render: impl FnOnce(T) -> Value) -> Actual {
    match result {
        Ok(v) => Actual::ok(render(v)),
        Err(e) => Actual::err(kind_name(e.kind), e.transient, e.message),
    }
}

fn kv_outcome<T>(result: Result<T, store::Error>, render: impl FnOnce(T) -> Value) -> Actual {
    match result {
        Ok(v) => Actual {
            value: json!({ "ok": render(v) }),
            message: None,
        },
        Err(store::Error::NoSuchStore) => Actual {
            value: json!({ "err": "no-such-store" }),
            message: None,
        },
        Err(store::Error::AccessDenied) => Actual {
            value: json!({ "err": "access-denied" }),
            message: None,
        },
        Err(store::Error::Other(m)) => Actual {
            value: json!({ "err": "other" }),
            message: Some(m),
        },
    }
}

/// Runs one step; `Err` when the step itself is malformed.
fn run_step(buckets: &mut Buckets, step: &Value) -> Result<Actual, String> {
    let s = |key: &str| -> Result<String, String> {
        step[key]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("`{key}` must be a string"))
    };
    let u = |key: &str| step[key].as_u64().ok_or(format!("`{key}` must be a u64"));
    let i = |key: &str| step[key].as_i64().ok_or(format!("`{key}` must be an i64"));
    let f = |key: &str| score(&step[key]).ok_or(format!("`{key}` must be a number"));
    let flag = |key: &str| step[key].as_bool().unwrap_or(false);
    let strings = |key: &str| -> Result<Vec<String>, String> {
        step[key]
            .as_array()
            .ok_or(format!("`{key}` must be an array"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or(format!("`{key}`: strings"))
            })
            .collect()
    };
    let pairs = |key: &str| -> Result<Vec<(String, Vec<u8>)>, String> {
        step[key]
            .as_array()
            .ok_or(format!("`{key}` must be an array"))?
            .iter()
            .map(|p| match (p[0].as_str(), p[1].as_str()) {
                (Some(k), Some(v)) => Ok((k.to_string(), v.as_bytes().to_vec())),
                _ => Err(format!("`{key}`: pairs of strings")),
            })
            .collect()
    };
    let bytes = |key: &str| s(key).map(String::into_bytes);
    let call = s("call")?;
    Ok(match call.as_str() {
        // wasi:keyvalue
        "store.open" => kv_outcome(buckets.get(&s("bucket")?).map(drop), |()| Value::Null),
        "bucket.get" => {
            let (bucket, key) = (s("bucket")?, s("key")?);
            kv_outcome(buckets.get(&bucket).and_then(|b| b.get(&key)), |v| {
                v.map_or(Value::Null, |v| text(&v))
            })
        }
        "bucket.set" => {
            let (bucket, key, value) = (s("bucket")?, s("key")?, bytes("value")?);
            kv_outcome(
                buckets.get(&bucket).and_then(|b| b.set(&key, &value)),
                |()| Value::Null,
            )
        }
        "bucket.delete" => {
            let (bucket, key) = (s("bucket")?, s("key")?);
            kv_outcome(buckets.get(&bucket).and_then(|b| b.delete(&key)), |()| {
                Value::Null
            })
        }
        "bucket.exists" => {
            let (bucket, key) = (s("bucket")?, s("key")?);
            kv_outcome(buckets.get(&bucket).and_then(|b| b.exists(&key)), |e| {
                json!(e)
            })
        }
        "bucket.list-keys" => {
            // Every page, until the cursor runs out; keys sorted, as their order is free.
            let bucket = s("bucket")?;
            let listed = buckets.get(&bucket).and_then(|b| {
                let mut keys = Vec::new();
                let mut cursor = None;
                let mut pages = 0;
                loop {
                    let page = b.list_keys(cursor)?;
                    keys.extend(page.keys);
                    pages += 1;
                    match page.cursor {
                        Some(c) if pages < 10_000 => cursor = Some(c),
                        _ => break,
                    }
                }
                keys.sort();
                Ok(keys)
            });
            kv_outcome(listed, |keys| json!(keys))
        }
        "atomics.increment" => {
            let (bucket, key, delta) = (s("bucket")?, s("key")?, u("delta")?);
            kv_outcome(
                buckets
                    .get(&bucket)
                    .and_then(|b| atomics::increment(b, &key, delta)),
                |v| json!(v),
            )
        }
        "batch.get-many" => {
            let (bucket, keys) = (s("bucket")?, strings("keys")?);
            kv_outcome(
                buckets.get(&bucket).and_then(|b| batch::get_many(b, &keys)),
                |found| {
                    Value::Array(
                        found
                            .into_iter()
                            .map(|p| p.map_or(Value::Null, |(k, v)| json!([k, text(&v)])))
                            .collect(),
                    )
                },
            )
        }
        "batch.set-many" => {
            let (bucket, pairs) = (s("bucket")?, pairs("pairs")?);
            kv_outcome(
                buckets
                    .get(&bucket)
                    .and_then(|b| batch::set_many(b, &pairs)),
                |()| Value::Null,
            )
        }
        "batch.delete-many" => {
            let (bucket, keys) = (s("bucket")?, strings("keys")?);
            kv_outcome(
                buckets
                    .get(&bucket)
                    .and_then(|b| batch::delete_many(b, &keys)),
                |()| Value::Null,
            )
        }
        // polyhost:platform/kv
        "kv.set-ex" => outcome(
            kv::set_ex(&s("key")?, &bytes("value")?, u("ttl_ms")?),
            |()| Value::Null,
        ),
        "kv.get" => outcome(kv::get(&s("key")?), |v| v.map_or(Value::Null, |v| text(&v))),
        "kv.del" => outcome(kv::del(&strings("keys")?), |n| json!(n)),
        "kv.expire" => outcome(kv::expire(&s("key")?, u("ttl_ms")?), |e| json!(e)),
        "kv.ttl" => outcome(kv::ttl(&s("key")?), |t| json!(t)),
        "kv.incr-by" => outcome(kv::incr_by(&s("key")?, i("delta")?), |v| json!(v)),
        "kv.hset" => outcome(kv::hset(&s("key")?, &pairs("fields")?), |n| json!(n)),
        "kv.hget" => outcome(kv::hget(&s("key")?, &s("field")?), |v| {
            v.map_or(Value::Null, |v| text(&v))
        }),
        "kv.hgetall" => outcome(kv::hgetall(&s("key")?), |mut fields| {
            // Sorted, as a hash has no order.
            fields.sort();
            Value::Array(fields.iter().map(|(f, v)| json!([f, text(v)])).collect())
        }),
        "kv.hdel" => outcome(kv::hdel(&s("key")?, &strings("fields")?), |n| json!(n)),
        "kv.hincr-by" => outcome(kv::hincr_by(&s("key")?, &s("field")?, i("delta")?), |v| {
            json!(v)
        }),
        "kv.zadd" => {
            let members = step["members"]
                .as_array()
                .ok_or("`members` must be an array")?
                .iter()
                .map(|m| match (m[0].as_str(), score(&m[1])) {
                    (Some(member), Some(score)) => Ok(kv::Scored {
                        member: member.to_string(),
                        score,
                    }),
                    _ => Err("`members`: [member, score] pairs".to_string()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            outcome(kv::zadd(&s("key")?, &members), |n| json!(n))
        }
        "kv.zincr-by" => outcome(
            kv::zincr_by(&s("key")?, &s("member")?, f("delta")?),
            score_json,
        ),
        "kv.zrange-by-rank" => outcome(
            kv::zrange_by_rank(&s("key")?, i("start")?, i("stop")?, flag("reverse")),
            scored_json,
        ),
        "kv.zrange-by-score" => {
            let limit = match &step["limit"] {
                Value::Null => None,
                v => Some(
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or("`limit` must be a u32")?,
                ),
            };
            outcome(
                kv::zrange_by_score(&s("key")?, f("min")?, f("max")?, flag("reverse"), limit),
                scored_json,
            )
        }
        "kv.zrank" => outcome(kv::zrank(&s("key")?, &s("member")?, flag("reverse")), |r| {
            json!(r)
        }),
        "kv.zscore" => outcome(kv::zscore(&s("key")?, &s("member")?), |v| {
            v.map_or(Value::Null, score_json)
        }),
        "kv.zrem" => outcome(kv::zrem(&s("key")?, &strings("members")?), |n| json!(n)),
        "kv.zcard" => outcome(kv::zcard(&s("key")?), |n| json!(n)),
        "kv.apply-once" => {
            let commands = step["commands"]
                .as_array()
                .ok_or("`commands` must be an array")?
                .iter()
                .map(command)
                .collect::<Result<Vec<_>, _>>()?;
            outcome(
                kv::apply_once(&s("dedupe_key")?, u("ttl_ms")?, &commands),
                |ran| json!(ran),
            )
        }
        "kv.apply-once-many" => {
            let entries = step["entries"]
                .as_array()
                .ok_or("`entries` must be an array")?
                .iter()
                .map(|e| {
                    Ok(kv::ApplyEntry {
                        dedupe_key: e["dedupe_key"]
                            .as_str()
                            .ok_or("an entry needs a `dedupe_key`")?
                            .to_string(),
                        commands: e["commands"]
                            .as_array()
                            .ok_or("an entry needs `commands`")?
                            .iter()
                            .map(command)
                            .collect::<Result<Vec<_>, _>>()?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            outcome(kv::apply_once_many(u("ttl_ms")?, &entries), |answers| {
                Value::Array(
                    answers
                        .into_iter()
                        .map(|a| match a {
                            Ok(ran) => json!({ "ok": ran }),
                            Err(e) => json!({ "err": kind_name(e.kind) }),
                        })
                        .collect(),
                )
            })
        }
        "kv.pipeline" => {
            let ops = step["ops"]
                .as_array()
                .ok_or("`ops` must be an array")?
                .iter()
                .map(op)
                .collect::<Result<Vec<_>, _>>()?;
            outcome(kv::pipeline(&ops), |replies| {
                Value::Array(
                    replies
                        .into_iter()
                        .map(|r| match r {
                            Ok(reply) => json!({ "ok": reply_json(reply) }),
                            Err(e) => json!({ "err": kind_name(e.kind) }),
                        })
                        .collect(),
                )
            })
        }
        other => return Err(format!("unknown call `{other}`")),
    })
}

/// A pipeline reply as JSON: `"done"`, `null` (absent), a number, text, `[[f, v], …]`
/// (sorted) or `[[member, score], …]`.
fn reply_json(reply: kv::Reply) -> Value {
    match reply {
        kv::Reply::Done => json!("done"),
        kv::Reply::Absent => Value::Null,
        kv::Reply::Integer(n) => json!(n),
        kv::Reply::Number(x) => score_json(x),
        kv::Reply::Bytes(b) => text(&b),
        kv::Reply::Fields(mut f) => {
            f.sort();
            Value::Array(f.iter().map(|(f, v)| json!([f, text(v)])).collect())
        }
        kv::Reply::Members(m) => scored_json(m),
    }
}

/// One pipeline op: `{"get": "k"}`, `{"incr-by": ["k", 1]}`, `{"zadd": ["k", [["m", 1]]]}`,
/// `{"set": {"key": …, "value": …, "ttl_ms": …}}`, ….
fn op(c: &Value) -> Result<kv::Op, String> {
    let (name, args) = c
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or(format!("an op must be {{name: args}}: {c}"))?;
    let st = |i: usize| {
        args[i]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("{name}: argument {i} must be a string"))
    };
    let key = || {
        args.as_str()
            .map(str::to_string)
            .ok_or(format!("{name}: a key"))
    };
    let int = |i: usize| {
        args[i]
            .as_i64()
            .ok_or(format!("{name}: argument {i} must be an i64"))
    };
    let num = |i: usize| score(&args[i]).ok_or(format!("{name}: argument {i} must be a number"));
    let flag = |i: usize| args[i].as_bool().unwrap_or(false);
    let strings = |i: usize| -> Result<Vec<String>, String> {
        args[i]
            .as_array()
            .ok_or(format!("{name}: argument {i} must be an array"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or(format!("{name}: strings"))
            })
            .collect()
    };
    Ok(match name.as_str() {
        "get" => kv::Op::Get(key()?),
        "set" => kv::Op::Set(kv::SetCommand {
            key: args["key"].as_str().ok_or("set: `key`")?.to_string(),
            value: args["value"]
                .as_str()
                .ok_or("set: `value`")?
                .as_bytes()
                .to_vec(),
            ttl_ms: args["ttl_ms"].as_u64(),
        }),
        "del" => kv::Op::Del(key()?),
        "expire" => kv::Op::Expire((
            st(0)?,
            args[1].as_u64().ok_or("expire: argument 1 must be a u64")?,
        )),
        "ttl" => kv::Op::Ttl(key()?),
        "incr-by" => kv::Op::IncrBy((st(0)?, int(1)?)),
        "hset" => kv::Op::Hset((
            st(0)?,
            args[1]
                .as_array()
                .ok_or("hset: [[field, value], …]")?
                .iter()
                .map(|p| match (p[0].as_str(), p[1].as_str()) {
                    (Some(f), Some(v)) => Ok((f.to_string(), v.as_bytes().to_vec())),
                    _ => Err("hset: [[field, value], …]".to_string()),
                })
                .collect::<Result<Vec<_>, _>>()?,
        )),
        "hget" => kv::Op::Hget((st(0)?, st(1)?)),
        "hgetall" => kv::Op::Hgetall(key()?),
        "hdel" => kv::Op::Hdel((st(0)?, strings(1)?)),
        "hincr-by" => kv::Op::HincrBy((st(0)?, st(1)?, int(2)?)),
        "zadd" => kv::Op::Zadd((
            st(0)?,
            args[1]
                .as_array()
                .ok_or("zadd: [[member, score], …]")?
                .iter()
                .map(|m| match (m[0].as_str(), score(&m[1])) {
                    (Some(member), Some(score)) => Ok(kv::Scored {
                        member: member.to_string(),
                        score,
                    }),
                    _ => Err("zadd: [[member, score], …]".to_string()),
                })
                .collect::<Result<Vec<_>, _>>()?,
        )),
        "zincr-by" => kv::Op::ZincrBy((st(0)?, st(1)?, num(2)?)),
        "zrange-by-rank" => kv::Op::ZrangeByRank(kv::RankRange {
            key: st(0)?,
            start: int(1)?,
            stop: int(2)?,
            reverse: flag(3),
        }),
        "zrange-by-score" => kv::Op::ZrangeByScore(kv::ScoreRange {
            key: st(0)?,
            min: num(1)?,
            max: num(2)?,
            reverse: flag(3),
            limit: args[4].as_u64().and_then(|n| u32::try_from(n).ok()),
        }),
        "zrank" => kv::Op::Zrank((st(0)?, st(1)?, flag(2))),
        "zscore" => kv::Op::Zscore((st(0)?, st(1)?)),
        "zrem" => kv::Op::Zrem((st(0)?, strings(1)?)),
        "zcard" => kv::Op::Zcard(key()?),
        other => return Err(format!("unknown op `{other}`")),
    })
}

/// One `apply-once` command: `{"incr-by": ["k", 1]}`, `{"set": {"key": …, "value": …}}`, ….
fn command(c: &Value) -> Result<kv::Command, String> {
    let (name, args) = c
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or(format!("a command must be {{name: args}}: {c}"))?;
    let st = |i: usize| {
        args[i]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("{name}: argument {i} must be a string"))
    };
    let int = |i: usize| {
        args[i]
            .as_i64()
            .ok_or(format!("{name}: argument {i} must be an i64"))
    };
    let num = |i: usize| score(&args[i]).ok_or(format!("{name}: argument {i} must be a number"));
    Ok(match name.as_str() {
        "set" => kv::Command::Set(kv::SetCommand {
            key: args["key"].as_str().ok_or("set: `key`")?.to_string(),
            value: args["value"]
                .as_str()
                .ok_or("set: `value`")?
                .as_bytes()
                .to_vec(),
            ttl_ms: args["ttl_ms"].as_u64(),
        }),
        "del" => kv::Command::Del(args.as_str().ok_or("del: a key")?.to_string()),
        "incr-by" => kv::Command::IncrBy((st(0)?, int(1)?)),
        "expire" => kv::Command::Expire((
            st(0)?,
            args[1].as_u64().ok_or("expire: argument 1 must be a u64")?,
        )),
        "hset" => kv::Command::Hset((st(0)?, st(1)?, st(2)?.into_bytes())),
        "hincr-by" => kv::Command::HincrBy((st(0)?, st(1)?, int(2)?)),
        "hdel" => kv::Command::Hdel((st(0)?, st(1)?)),
        "zadd" => kv::Command::Zadd((st(0)?, st(1)?, num(2)?)),
        "zincr-by" => kv::Command::ZincrBy((st(0)?, st(1)?, num(2)?)),
        "zrem" => kv::Command::Zrem((st(0)?, st(1)?)),
        other => return Err(format!("unknown command `{other}`")),
    })
}

/// A score from JSON: a number, or `"inf"`, `"-inf"`, `"nan"`.
fn score(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "inf" => Some(f64::INFINITY),
            "-inf" => Some(f64::NEG_INFINITY),
            "nan" => Some(f64::NAN),
            _ => None,
        },
        _ => None,
    }
}

/// A score as JSON: a number, or `"inf"` / `"-inf"` (JSON has no infinities).
fn score_json(x: f64) -> Value {
    if x == f64::INFINITY {
        json!("inf")
    } else if x == f64::NEG_INFINITY {
        json!("-inf")
    } else {
        json!(x)
    }
}

fn scored_json(members: Vec<kv::Scored>) -> Value {
    Value::Array(
        members
            .into_iter()
            .map(|m| json!([m.member, score_json(m.score)]))
            .collect(),
    )
}

fn text(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Denied => "denied",
        ErrorKind::Invalid => "invalid",
        ErrorKind::NotFound => "not-found",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Other => "other",
    }
}

/// Whether `actual` matches `expected`: equal, with `"*"` in `expected` matching anything
/// and `{"between": [lo, hi]}` any number in that range. An expected error (`{"err": kind}`)
/// need not say whether it is transient.
fn matches(expected: &Value, actual: &Value) -> bool {
    probe::matches_with(expected, actual, &|e, a| match (e, a) {
        (Value::Object(e), Value::Number(a)) if e.contains_key("between") => {
            let range = &e["between"];
            Some(match (range[0].as_f64(), range[1].as_f64(), a.as_f64()) {
                (Some(lo), Some(hi), Some(a)) => lo <= a && a <= hi,
                _ => false,
            })
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_ranges_and_errors_match() {
        assert!(matches(&json!({"ok": "*"}), &json!({"ok": [1, 2]})));
        assert!(matches(
            &json!({"ok": {"between": [1, 5]}}),
            &json!({"ok": 3})
        ));
        assert!(!matches(
            &json!({"ok": {"between": [1, 5]}}),
            &json!({"ok": 6})
        ));
        assert!(matches(
            &json!({"err": "denied"}),
            &json!({"err": "denied", "transient": false})
        ));
        assert!(!matches(
            &json!({"err": "denied"}),
            &json!({"err": "invalid"})
        ));
        assert!(matches(&json!({"ok": 2}), &json!({"ok": 2.0})));
    }

    #[test]
    fn scores_round_trip_through_json() {
        assert_eq!(score(&json!("inf")), Some(f64::INFINITY));
        assert_eq!(score(&json!(1.5)), Some(1.5));
        assert!(score(&json!("nan")).unwrap().is_nan());
        assert_eq!(score_json(f64::NEG_INFINITY), json!("-inf"));
        assert_eq!(score_json(2.0), json!(2.0));
    }

    #[test]
    fn commands_parse() {
        assert!(matches!(
            command(&json!({"incr-by": ["k", 2]})),
            Ok(kv::Command::IncrBy((k, 2))) if k == "k"
        ));
        assert!(matches!(
            command(&json!({"set": {"key": "k", "value": "v", "ttl_ms": 5}})),
            Ok(kv::Command::Set(kv::SetCommand {
                ttl_ms: Some(5),
                ..
            }))
        ));
        assert!(command(&json!({"bogus": []})).is_err());
    }
}
