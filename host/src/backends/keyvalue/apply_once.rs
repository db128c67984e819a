//! `kv.apply-once`: a list of writes applied atomically, at most once per dedupe key.
//!
//! One Lua script (`apply_once.lua`, sent as `EVALSHA`, falling back to `EVAL` once per
//! server) does, per entry, `SET <dedupe> 1 NX PX <ttl>` and, only if that set the key,
//! applies every command of the entry. `apply-once` is one entry; `apply-once-many` is many
//! in one round trip. Redis runs a script without interleaving anything, but has no rollback, so the
//! script first simulates the commands against the keys' types and integer values and
//! refuses the whole list (releasing the dedupe key) when one would fail; what the simulation
//! cannot see (the arguments) the host checks before sending: every key inside the grant,
//! TTLs in range, scores and deltas numbers, values, fields and members within
//! `limits.max_value_bytes`. The commands are a closed list (the WIT's `command`), each
//! naming exactly one key, so no argument can name another key.
//!
//! Dedupe keys are `polyhost:applied:<plugin>:<dedupe-key>`: in the host's namespace, which
//! no grant reaches, and per plugin, so two plugins handling the same event each apply once.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::ops::{MAX_ITEMS, MAX_OPS, shown};
use super::{Client, HOST_NAMESPACE, MAX_KEY_BYTES, check_ttl, map_error};
use crate::bindings::polyhost::platform::kv::{ApplyEntry, Command};
use crate::budget::check_value;
use crate::error::HostError;

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("apply_once.lua")));

/// The Redis key remembering that `plugin` applied `dedupe_key`.
pub fn dedupe_key(plugin: &str, dedupe_key: &str) -> String {
    format!("{HOST_NAMESPACE}{plugin}:{dedupe_key}")
}

/// One command as the script takes it: its key, and its op and arguments.
#[derive(Debug, PartialEq)]
pub struct Encoded {
    pub key: String,
    pub op: &'static str,
    pub args: Vec<Vec<u8>>,
}

/// A command for people: `incr-by \`k\``.
fn describe(cmd: &Command) -> String {
    describe_raw(cmd).escape_debug().to_string()
}

fn describe_raw(cmd: &Command) -> String {
    match cmd {
        Command::Set(s) => format!("set `{}`", s.key),
        Command::Del(k) => format!("del `{k}`"),
        Command::IncrBy((k, _)) => format!("incr-by `{k}`"),
        Command::Expire((k, _)) => format!("expire `{k}`"),
        Command::Hset((k, f, _)) => format!("hset `{k}` `{f}`"),
        Command::HincrBy((k, f, _)) => format!("hincr-by `{k}` `{f}`"),
        Command::Hdel((k, f)) => format!("hdel `{k}` `{f}`"),
        Command::Zadd((k, m, _)) => format!("zadd `{k}` `{m}`"),
        Command::ZincrBy((k, m, _)) => format!("zincr-by `{k}` `{m}`"),
        Command::Zrem((k, m)) => format!("zrem `{k}` `{m}`"),
    }
}

/// `cmd` for the script, after the checks the script cannot make: the key inside
/// `prefixes`, TTLs in range, scores numbers and increments finite (an infinite increment
/// could meet the opposite infinity and fail with NaN half-way).
pub fn encode(prefixes: &[String], cmd: &Command, max_value: usize) -> Result<Encoded, HostError> {
    let num = |x: f64| super::ops::score_arg(x).into_bytes();
    let int = |x: i64| x.to_string().into_bytes();
    let what = || format!("apply-once: {}", describe(cmd));
    let sized = |bytes: &[u8]| check_value(bytes.len(), max_value, &what());
    match cmd {
        Command::Set(s) => sized(&s.value)?,
        Command::Hset((_, f, v)) => {
            sized(f.as_bytes())?;
            sized(v)?;
        }
        Command::HincrBy((_, f, _)) | Command::Hdel((_, f)) => sized(f.as_bytes())?,
        Command::Zadd((_, m, _)) | Command::ZincrBy((_, m, _)) | Command::Zrem((_, m)) => {
            sized(m.as_bytes())?
        }
        Command::Del(_) | Command::IncrBy(_) | Command::Expire(_) => {}
    }
    let (key, op, args) = match cmd {
        Command::Set(s) => match s.ttl_ms {
            None => (&s.key, "set", vec![s.value.clone()]),
            Some(ttl) => {
                check_ttl(&what(), ttl, 1)?;
                (
                    &s.key,
                    "setpx",
                    vec![s.value.clone(), ttl.to_string().into_bytes()],
                )
            }
        },
        Command::Del(k) => (k, "del", vec![]),
        Command::IncrBy((k, d)) => (k, "incrby", vec![int(*d)]),
        Command::Expire((k, ttl)) => {
            check_ttl(&what(), *ttl, 0)?;
            (k, "pexpire", vec![ttl.to_string().into_bytes()])
        }
        Command::Hset((k, f, v)) => (k, "hset", vec![f.clone().into_bytes(), v.clone()]),
        Command::HincrBy((k, f, d)) => (k, "hincrby", vec![f.clone().into_bytes(), int(*d)]),
        Command::Hdel((k, f)) => (k, "hdel", vec![f.clone().into_bytes()]),
        Command::Zadd((k, m, score)) => {
            if score.is_nan() {
                return Err(HostError::invalid(format!(
                    "{}: NaN is not a score",
                    what()
                )));
            }
            (k, "zadd", vec![num(*score), m.clone().into_bytes()])
        }
        Command::ZincrBy((k, m, delta)) => {
            if !delta.is_finite() {
                return Err(HostError::invalid(format!(
                    "{}: an increment must be a finite number",
                    what()
                )));
            }
            (k, "zincrby", vec![num(*delta), m.clone().into_bytes()])
        }
        Command::Zrem((k, m)) => (k, "zrem", vec![m.clone().into_bytes()]),
    };
    super::check_key(prefixes, key).map_err(|e| HostError::denied(format!("{}: {e}", what())))?;
    Ok(Encoded {
        key: key.clone(),
        op,
        args,
    })
}

/// What the script answered.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Every command ran.
    Applied,
    /// The dedupe key was there: nothing ran.
    Replay,
    /// Command `index` (0-based) would have failed; nothing ran.
    Refused { index: usize, reason: String },
}

/// Reads the script's reply: 1, 0, or `{i, reason}` with `i` counted from 1.
pub fn answer(reply: &Value) -> Option<Answer> {
    match reply {
        Value::Int(1) => Some(Answer::Applied),
        Value::Int(0) => Some(Answer::Replay),
        Value::Array(items) => match items.as_slice() {
            [Value::Int(i), Value::BulkString(reason)] if *i >= 1 => Some(Answer::Refused {
                index: usize::try_from(*i - 1).ok()?,
                reason: String::from_utf8_lossy(reason).into_owned(),
            }),
            _ => None,
        },
        _ => None,
    }
}

/// An `apply-once` call checked and encoded, ready to send.
#[derive(Debug)]
pub struct Prepared {
    ttl_ms: u64,
    commands: Vec<Encoded>,
    described: Vec<String>,
}

impl Client {
    /// Checks and encodes an `apply-once` call: nothing is sent unless every command passes.
    pub(super) fn prepare_apply_once(
        &self,
        dedupe: &str,
        ttl_ms: u64,
        commands: &[Command],
        max_value: usize,
    ) -> Result<Prepared, HostError> {
        check_ttl(
            &format!("apply-once `{}`: the dedupe TTL", shown(dedupe)),
            ttl_ms,
            1,
        )?;
        if dedupe.len() > MAX_KEY_BYTES {
            return Err(HostError::invalid(format!(
                "apply-once: a dedupe key of {} bytes is above the host bound of {MAX_KEY_BYTES}",
                dedupe.len()
            )));
        }
        let encoded = commands
            .iter()
            .map(|c| encode(&self.prefixes, c, max_value))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Prepared {
            ttl_ms,
            commands: encoded,
            described: commands.iter().map(describe).collect(),
        })
    }

    /// Runs a prepared `apply-once`: whether the commands ran (`false`: a replay).
    pub(super) async fn apply_once(
        &self,
        dedupe: &str,
        prepared: Prepared,
    ) -> Result<bool, HostError> {
        let mut answers = self.run_entries(&[(dedupe, &prepared)]).await?;
        answers
            .pop()
            .unwrap_or_else(|| Err(HostError::other("apply-once: no answer")))
    }

    /// Runs the entries of an `apply-once-many` whose checks passed (`prepared[i]` is entry
    /// `i`'s, or why it was refused), in one round trip: one answer per entry.
    pub(super) async fn apply_once_many(
        &self,
        entries: &[ApplyEntry],
        prepared: Vec<Result<Prepared, HostError>>,
    ) -> Result<Vec<Result<bool, HostError>>, HostError> {
        let commands: usize = entries.iter().map(|e| e.commands.len()).sum();
        if entries.len() > MAX_OPS || commands > MAX_ITEMS {
            return Err(HostError::invalid(format!(
                "apply-once-many: {} entries, {commands} commands exceed the host bound of \
                 {MAX_OPS} entries, {MAX_ITEMS} commands per call; send several",
                entries.len()
            )));
        }
        let sendable: Vec<(&str, &Prepared)> = entries
            .iter()
            .zip(&prepared)
            .filter_map(|(e, p)| p.as_ref().ok().map(|p| (e.dedupe_key.as_str(), p)))
            .collect();
        let mut answers = if sendable.is_empty() {
            Vec::new()
        } else {
            self.run_entries(&sendable).await?
        }
        .into_iter();
        Ok(prepared
            .into_iter()
            .map(|p| match p {
                Ok(_) => answers.next().unwrap_or_else(|| {
                    Err(HostError::other("apply-once-many: an answer is missing"))
                }),
                Err(refused) => Err(refused),
            })
            .collect())
    }

    /// One script call for `entries`: one answer per entry.
    async fn run_entries(
        &self,
        entries: &[(&str, &Prepared)],
    ) -> Result<Vec<Result<bool, HostError>>, HostError> {
        let what = match entries {
            [(dedupe, _)] => format!("apply-once `{}`", shown(dedupe)),
            _ => format!("apply-once-many ({} entries)", entries.len()),
        };
        let ttl = entries.first().map_or(1, |(_, p)| p.ttl_ms);
        let mut invocation = SCRIPT.prepare_invoke();
        invocation.arg(ttl).arg(entries.len());
        for (dedupe, prepared) in entries {
            invocation.key(dedupe_key(&self.plugin, dedupe));
            invocation.arg(prepared.commands.len());
            for c in &prepared.commands {
                invocation.key(&c.key).arg(c.op);
                for a in &c.args {
                    invocation.arg(a.as_slice());
                }
            }
        }
        let _permit = self.permit().await?;
        let mut conn = self.conn.clone();
        let reply: Value = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| map_error(&what, e))?;
        let unexpected = || {
            HostError::other(format!(
                "{what}: unexpected reply from the script: {reply:?}"
            ))
        };
        let Value::Array(items) = &reply else {
            return Err(unexpected());
        };
        if items.len() != entries.len() {
            return Err(unexpected());
        }
        items
            .iter()
            .zip(entries)
            .map(|(item, (dedupe, prepared))| match answer(item) {
                Some(Answer::Applied) => Ok(Ok(true)),
                Some(Answer::Replay) => Ok(Ok(false)),
                Some(Answer::Refused { index, reason }) => Ok(Err(HostError::invalid(format!(
                    "apply-once `{}`: command {index} ({}): {reason}; nothing was applied",
                    shown(dedupe),
                    prepared.described.get(index).map_or("?", String::as_str)
                )))),
                None => Err(unexpected()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::polyhost::platform::kv::SetCommand;
    use crate::error::Kind;

    fn grant() -> Vec<String> {
        vec!["c:".to_string()]
    }

    /// `encode` with a value cap of 16 bytes.
    fn encode_(g: &[String], cmd: &Command) -> Result<Encoded, HostError> {
        encode(g, cmd, 16)
    }

    #[test]
    fn values_fields_and_members_are_bounded() {
        let g = grant();
        let big = Command::Set(SetCommand {
            key: "c:a".into(),
            value: vec![0; 17],
            ttl_ms: None,
        });
        let e = encode_(&g, &big).unwrap_err().to_string();
        assert!(e.contains("limits.max_value_bytes (16 bytes)"), "{e}");
        let field = Command::Hset(("c:h".into(), "f".repeat(17), vec![]));
        assert!(matches!(
            encode_(&g, &field),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        let member = Command::Zadd(("c:z".into(), "m".repeat(17), 1.0));
        assert!(matches!(
            encode_(&g, &member),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        assert!(encode_(&g, &Command::Zrem(("c:z".into(), "m".repeat(16)))).is_ok());
    }

    #[test]
    fn dedupe_keys_live_in_the_host_namespace_per_plugin() {
        assert_eq!(
            dedupe_key("ranking", "ev-1"),
            "polyhost:applied:ranking:ev-1"
        );
        assert!(!super::super::key_granted(
            &["polyhost:".into()],
            &dedupe_key("p", "e")
        ));
    }

    #[test]
    fn commands_encode_to_ops_and_arguments() {
        let g = grant();
        let e = encode_(
            &g,
            &Command::Set(SetCommand {
                key: "c:a".into(),
                value: b"v".to_vec(),
                ttl_ms: Some(500),
            }),
        )
        .unwrap();
        assert_eq!(
            e,
            Encoded {
                key: "c:a".into(),
                op: "setpx",
                args: vec![b"v".to_vec(), b"500".to_vec()]
            }
        );
        let e = encode_(&g, &Command::IncrBy(("c:n".into(), -3))).unwrap();
        assert_eq!((e.op, e.args), ("incrby", vec![b"-3".to_vec()]));
        let e = encode_(&g, &Command::Zadd(("c:z".into(), "m".into(), 2.5))).unwrap();
        assert_eq!(
            (e.op, e.args),
            ("zadd", vec![b"2.5".to_vec(), b"m".to_vec()])
        );
        let e = encode_(
            &g,
            &Command::Zadd(("c:z".into(), "m".into(), f64::INFINITY)),
        )
        .unwrap();
        assert_eq!(e.args[0], b"+inf".to_vec());
        let e = encode_(&g, &Command::Del("c:x".into())).unwrap();
        assert_eq!((e.op, e.args.len()), ("del", 0));
    }

    #[test]
    fn keys_outside_the_grant_are_denied() {
        let err = encode_(&grant(), &Command::HincrBy(("d:h".into(), "f".into(), 1))).unwrap_err();
        assert!(
            matches!(&err, HostError { kind: Kind::Denied, message: m, .. } if m.contains("hincr-by `d:h`")),
            "{err:?}"
        );
        let err = encode_(&grant(), &Command::Del("polyhost:applied:p:e".into())).unwrap_err();
        assert!(matches!(
            err,
            HostError {
                kind: Kind::Denied,
                ..
            }
        ));
    }

    #[test]
    fn arguments_redis_would_refuse_half_way_are_refused_first() {
        let g = grant();
        let set0 = Command::Set(SetCommand {
            key: "c:a".into(),
            value: vec![],
            ttl_ms: Some(0),
        });
        assert!(matches!(
            encode_(&g, &set0),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        let far = Command::Expire(("c:a".into(), u64::MAX));
        assert!(matches!(
            encode_(&g, &far),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        assert!(encode_(&g, &Command::Expire(("c:a".into(), 0))).is_ok());
        let nan = Command::Zadd(("c:z".into(), "m".into(), f64::NAN));
        assert!(matches!(
            encode_(&g, &nan),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        let inf = Command::ZincrBy(("c:z".into(), "m".into(), f64::NEG_INFINITY));
        assert!(matches!(
            encode_(&g, &inf),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
    }

    #[test]
    fn script_replies_are_read() {
        assert_eq!(answer(&Value::Int(1)), Some(Answer::Applied));
        assert_eq!(answer(&Value::Int(0)), Some(Answer::Replay));
        assert_eq!(
            answer(&Value::Array(vec![
                Value::Int(2),
                Value::BulkString(b"the value is not an integer".to_vec())
            ])),
            Some(Answer::Refused {
                index: 1,
                reason: "the value is not an integer".into()
            })
        );
        assert_eq!(answer(&Value::Int(7)), None);
        assert_eq!(answer(&Value::Array(vec![Value::Int(0), Value::Nil])), None);
    }
}
