//! Test plugin: a plugin written to break out of its Redis grant. Each event's `data` names
//! the test's key prefix `p` (the plugin is granted `<p>:a:` only), a foreign plugin's
//! ledger key, and the keys the test planted; the plugin tries every attack and answers `ok`
//! when each was refused as expected (`denied`/`invalid`, `access-denied` for buckets),
//! else `reject` listing the attacks that got through. The test then checks with its own
//! Redis client that nothing outside the grant changed.
//!
//! ```json
//! {"p": "kv-1", "ledger": "polyhost:applied:victim:ev-1", "value_cap": 1048576,
//!  "planted": {"value": "kv-1:a:big", "hash": "kv-1:a:bighash", "zset": "kv-1:a:bigzset"}}
//! ```

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::kv::{self, ApplyEntry, Command, Op, Scored, SetCommand};
use polyhost::platform::types::{BatchInfo, Error, ErrorKind, Event, Outcome};
use serde_json::Value;
use wasi::keyvalue::{batch, store};

struct Hostile;

impl Guest for Hostile {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        events
            .iter()
            .map(|e| match attack(&e.data) {
                Ok(()) => Outcome::Ok,
                Err(got_through) => Outcome::Reject(got_through),
            })
            .collect()
    }
}

export!(Hostile);

/// What an attack must end with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    Denied,
    Invalid,
}

/// The attacks that were not refused as expected.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    /// Records `name` unless `result` is the refusal `want`, with a message free of raw
    /// control characters (a key with a newline must not forge a log line).
    fn expect<T: std::fmt::Debug>(&mut self, name: &str, want: Want, result: Result<T, Error>) {
        match result {
            Err(e) if kind(want) == e.kind => {
                if e.message.chars().any(char::is_control) {
                    self.0
                        .push(format!("{name}: the message holds a control character"));
                }
            }
            Err(e) => self.0.push(format!(
                "{name}: expected {want:?}, got {:?}: {}",
                e.kind, e.message
            )),
            Ok(v) => {
                let mut shown = format!("{v:?}");
                shown.truncate(200);
                self.0
                    .push(format!("{name}: expected {want:?}, got ok {shown}"))
            }
        }
    }

    /// Records `name` unless a `wasi:keyvalue` call was refused.
    fn refused<T: std::fmt::Debug>(&mut self, name: &str, result: Result<T, store::Error>) {
        match result {
            Err(store::Error::AccessDenied) | Err(store::Error::Other(_)) => {}
            other => {
                let mut shown = format!("{other:?}");
                shown.truncate(200);
                self.0
                    .push(format!("{name}: expected a refusal, got {shown}"))
            }
        }
    }

    /// Records `name` when `ok` does not hold.
    fn check(&mut self, name: &str, ok: bool, detail: impl FnOnce() -> String) {
        if !ok {
            self.0.push(format!("{name}: {}", detail()));
        }
    }
}

fn kind(w: Want) -> ErrorKind {
    match w {
        Want::Denied => ErrorKind::Denied,
        Want::Invalid => ErrorKind::Invalid,
    }
}

fn set(key: &str, value: &[u8]) -> Command {
    Command::Set(SetCommand {
        key: key.to_string(),
        value: value.to_vec(),
        ttl_ms: None,
    })
}

const TTL: u64 = 60_000;

fn attack(data: &[u8]) -> Result<(), String> {
    let d: Value = serde_json::from_slice(data).map_err(|e| format!("data: {e}"))?;
    let s = |k: &str| d[k].as_str().map(str::to_string).ok_or(format!("`{k}`"));
    let p = s("p")?;
    let ledger = s("ledger")?;
    let cap = d["value_cap"].as_u64().ok_or("`value_cap`")? as usize;
    let planted = |k: &str| {
        d["planted"][k]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("planted `{k}`"))
    };
    let (big_value, big_hash, big_zset) = (planted("value")?, planted("hash")?, planted("zset")?);
    let mine = |rest: &str| format!("{p}:a:{rest}");
    let foreign = |rest: &str| format!("{p}:c:{rest}");
    let mut r = Report::default();

    // Foreign keys in every argument position of the single calls.
    r.expect("get foreign", Want::Denied, kv::get(&foreign("victim")));
    r.expect(
        "set-ex foreign",
        Want::Denied,
        kv::set_ex(&foreign("x"), b"x", TTL),
    );
    r.expect(
        "del mine then foreign",
        Want::Denied,
        kv::del(&[mine("keep"), foreign("victim")]),
    );
    r.expect(
        "zadd foreign",
        Want::Denied,
        kv::zadd(
            &foreign("z"),
            &[Scored {
                member: "m".into(),
                score: 1.0,
            }],
        ),
    );
    r.expect("hgetall ledger", Want::Denied, kv::hgetall(&ledger));
    r.expect(
        "del ledger",
        Want::Denied,
        kv::del(std::slice::from_ref(&ledger)),
    );
    r.expect(
        "incr-by host namespace",
        Want::Denied,
        kv::incr_by("polyhost:applied:hostile-kv:x", 1),
    );

    // apply-once naming a foreign key in a later command: refused whole, nothing applied.
    r.expect(
        "apply-once foreign later",
        Want::Denied,
        kv::apply_once(
            &format!("{p}:ev-foreign"),
            TTL,
            &[
                set(&mine("first"), b"1"),
                Command::IncrBy((foreign("n"), 1)),
            ],
        ),
    );
    r.expect(
        "apply-once into the ledger",
        Want::Denied,
        kv::apply_once(
            &format!("{p}:ev-ledger"),
            TTL,
            &[Command::Del(ledger.clone())],
        ),
    );
    // A dedupe key crafted to climb out of the plugin's own ledger namespace stays in it.
    let climbed = kv::apply_once(
        &format!("../{}", ledger.trim_start_matches("polyhost:applied:")),
        TTL,
        &[set(&mine("climb"), b"1")],
    );
    r.check(
        "apply-once climbing dedupe key",
        matches!(climbed, Ok(true)),
        || format!("expected it to apply in the plugin's own namespace, got {climbed:?}"),
    );
    r.expect(
        "apply-once dedupe key too long",
        Want::Invalid,
        kv::apply_once(
            &format!("{p}:{}", "d".repeat(2000)),
            TTL,
            &[set(&mine("long"), b"1")],
        ),
    );

    // apply-once-many: an entry naming a foreign key is refused alone; nothing of it lands.
    let many = kv::apply_once_many(
        TTL,
        &[
            ApplyEntry {
                dedupe_key: format!("{p}:many-ok"),
                commands: vec![set(&mine("many"), b"1")],
            },
            ApplyEntry {
                dedupe_key: format!("{p}:many-foreign"),
                commands: vec![set(&mine("many2"), b"1"), Command::Del(foreign("victim"))],
            },
            ApplyEntry {
                dedupe_key: format!("{p}:many-ledger"),
                commands: vec![Command::Set(SetCommand {
                    key: ledger.clone(),
                    value: b"forged".to_vec(),
                    ttl_ms: Some(1),
                })],
            },
        ],
    );
    match many {
        Ok(answers) => {
            let kinds: Vec<Option<ErrorKind>> = answers
                .iter()
                .map(|a| a.as_ref().err().map(|e| e.kind))
                .collect();
            r.check(
                "apply-once-many",
                matches!(answers.first(), Some(Ok(true)))
                    && kinds[1..] == [Some(ErrorKind::Denied), Some(ErrorKind::Denied)],
                || format!("expected [ok(true), denied, denied], got {answers:?}"),
            );
        }
        Err(e) => {
            r.0.push(format!("apply-once-many: the call failed: {}", e.message))
        }
    }

    // pipeline: a foreign key anywhere refuses the whole list before anything is sent.
    r.expect(
        "pipeline foreign last",
        Want::Denied,
        kv::pipeline(&[
            Op::Set(SetCommand {
                key: mine("piped"),
                value: b"1".to_vec(),
                ttl_ms: None,
            }),
            Op::Del(foreign("victim")),
        ]),
    );
    r.expect(
        "pipeline ledger",
        Want::Denied,
        kv::pipeline(&[Op::Get(ledger.clone())]),
    );
    r.expect(
        "pipeline too many ops",
        Want::Invalid,
        kv::pipeline(&vec![Op::Zcard(mine("z")); 10_001]),
    );

    // Values over limits.max_value_bytes, in every place a value goes.
    let over = vec![b'x'; cap + 1];
    r.expect(
        "set-ex over the cap",
        Want::Invalid,
        kv::set_ex(&mine("huge"), &over, TTL),
    );
    r.expect(
        "hset field over the cap",
        Want::Invalid,
        kv::hset(
            &mine("h"),
            &[(
                String::from_utf8(over.clone()).unwrap_or_default(),
                b"v".to_vec(),
            )],
        ),
    );
    r.expect(
        "apply-once value over the cap",
        Want::Invalid,
        kv::apply_once(&format!("{p}:ev-huge"), TTL, &[set(&mine("huge"), &over)]),
    );
    r.expect(
        "pipeline value over the cap",
        Want::Invalid,
        kv::pipeline(&[Op::Set(SetCommand {
            key: mine("huge"),
            value: over.clone(),
            ttl_ms: None,
        })]),
    );
    r.expect(
        "key over the bound",
        Want::Invalid,
        kv::set_ex(&mine(&"k".repeat(2000)), b"v", TTL),
    );
    drop(over);

    // Reading what was planted under the grant, larger than limits.max_result_bytes.
    r.expect("get planted", Want::Invalid, kv::get(&big_value));
    r.expect("hget planted", Want::Invalid, kv::hget(&big_hash, "big"));
    r.expect("hgetall planted", Want::Invalid, kv::hgetall(&big_hash));
    r.expect(
        "zrange-by-rank all",
        Want::Invalid,
        kv::zrange_by_rank(&big_zset, 0, -1, false),
    );
    r.expect(
        "zrange-by-score unbounded",
        Want::Invalid,
        kv::zrange_by_score(&big_zset, f64::NEG_INFINITY, f64::INFINITY, false, None),
    );
    r.expect(
        "zrange-by-score huge limit",
        Want::Invalid,
        kv::zrange_by_score(&big_zset, 0.0, 1.0, false, Some(u32::MAX)),
    );
    match kv::pipeline(&[Op::Get(big_value.clone()), Op::Zcard(big_zset.clone())]) {
        Ok(replies) => r.check(
            "pipeline planted",
            matches!(&replies[..], [Err(e), Ok(_)] if e.kind == ErrorKind::Invalid),
            || {
                format!(
                    "expected [invalid, ok], got {:?}",
                    replies
                        .iter()
                        .map(|r| r.as_ref().err().map(|e| e.kind))
                        .collect::<Vec<_>>()
                )
            },
        ),
        Err(e) => {
            r.0.push(format!("pipeline planted: the call failed: {}", e.message))
        }
    }
    let ok_range = kv::zrange_by_rank(&big_zset, 0, 9, true);
    r.check(
        "a bounded range still reads",
        matches!(&ok_range, Ok(m) if m.len() == 10),
        || format!("got {:?}", ok_range.as_ref().map(Vec::len)),
    );

    // wasi:keyvalue: buckets as paths, globs, foreign keys, the planted value.
    r.refused("open ../", store::open("../x").map(drop));
    r.refused("open foreign", store::open(&format!("{p}:c")).map(drop));
    r.refused("open glob", store::open(&format!("{p}:*")).map(drop));
    r.refused(
        "open host namespace",
        store::open("polyhost:applied").map(drop),
    );
    match store::open("") {
        Ok(b) => {
            r.refused("bucket get planted", b.get(&big_value));
            r.refused(
                "bucket get-many planted",
                batch::get_many(&b, &[mine("keep"), big_value.clone()]),
            );
            r.refused("bucket set foreign", b.set(&foreign("x"), b"x"));
            r.refused(
                "bucket set over the cap",
                b.set(&mine("huge"), &vec![b'x'; cap + 1]),
            );
            r.refused("bucket newline key", b.get(&format!("{p}:c:\nforged")));
        }
        Err(e) => r.0.push(format!("open the default bucket: {e:?}")),
    }
    // A bucket whose name holds glob characters lists its own keys only.
    match store::open(&mine("*")) {
        Ok(b) => {
            // Every page: on a large shared keyspace a page may be empty with a cursor.
            let listed = (|| {
                let (mut keys, mut cursor) = (Vec::new(), None);
                for _ in 0..100_000 {
                    let page = b.list_keys(cursor)?;
                    keys.extend(page.keys);
                    cursor = page.cursor;
                    if cursor.is_none() {
                        break;
                    }
                }
                Ok::<_, store::Error>(keys)
            })();
            r.check(
                "list-keys glob bucket",
                matches!(&listed, Ok(keys) if keys == &["literal".to_string()]),
                || format!("expected [\"literal\"], got {listed:?}"),
            );
        }
        Err(e) => {
            r.0.push(format!("open a glob bucket inside the grant: {e:?}"))
        }
    }
    // A range under the grant whose name is a glob reads literally.
    let literal = kv::get(&mine("?"));
    r.check("get `?`", matches!(literal, Ok(None)), || {
        format!("got {literal:?}")
    });

    if r.0.is_empty() {
        Ok(())
    } else {
        Err(r.0.join("; "))
    }
}
