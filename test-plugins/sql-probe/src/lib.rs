//! Test plugin: each event's `data` is a JSON script of `polyhost:platform/sql` calls, each
//! with the result it expects; the plugin runs them in order and answers `ok` when every
//! result matched, else `reject` listing the mismatches.
//!
//! ```json
//! {"steps": [
//!   {"call": "execute", "sql": "INSERT INTO t (id) VALUES ($1)", "params": [{"int32": 1}],
//!    "expect": {"ok": 1}},
//!   {"call": "query", "sql": "SELECT id FROM t", "params": [],
//!    "expect": {"ok": {"columns": ["id"], "rows": [[{"int32": 1}]]}}},
//!   {"call": "begin", "tx": "a"},
//!   {"call": "tx-execute", "tx": "a", "sql": "DELETE FROM t", "params": [], "expect": {"ok": 1}},
//!   {"call": "rollback", "tx": "a"},
//!   {"call": "query", "sql": "SELECT * FROM secrets", "params": [], "expect": {"err": "denied"}}
//! ]}
//! ```
//!
//! A value is `null` or a one-key object naming its variant: `{"int32": 1}`,
//! `{"numeric": "19.90"}`, `{"bytes": [0, 255]}`, `{"text-array": ["a"]}`, … A `json` parameter
//! given as a JSON string is sent as that text (so a script can send text that is not JSON);
//! any other JSON is sent serialised. A `json` result is parsed back, so it compares as JSON.
//! Transactions are named by `tx` (default `"t"`), so a script can hold several; `drop`
//! drops one without commit. An error is `{"err": "<kind>", "transient": <bool>}`. In an
//! expectation the string `"*"` matches any value.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

use std::collections::HashMap;

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::sql;
use polyhost::platform::types::{BatchInfo, Error, ErrorKind, Event, Outcome};
use polyhost_guest::probe::{self, Actual};
use serde_json::{Map, Value, json};

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
    let mut txs = HashMap::new();
    probe::run_script(
        data,
        &json!({"ok": "*"}),
        |step| run_step(step, &mut txs),
        matches,
    )
}

fn outcome<T>(result: Result<T, Error>, render: impl FnOnce(T) -> Value) -> Actual {
    match result {
        Ok(v) => Actual::ok(render(v)),
        Err(e) => Actual::err(kind_name(e.kind), e.transient, e.message),
    }
}

/// Runs one step; `Err` when the step itself is malformed.
fn run_step(step: &Value, txs: &mut HashMap<String, sql::Transaction>) -> Result<Actual, String> {
    let call = step["call"].as_str().ok_or("no `call`")?;
    let tx_name = step["tx"].as_str().unwrap_or("t").to_string();
    let sql_text = || {
        step["sql"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "no `sql` string".to_string())
    };
    let tx = |txs: &mut HashMap<String, sql::Transaction>| {
        txs.remove(&tx_name)
            .ok_or_else(|| format!("no open transaction `{tx_name}`"))
    };
    Ok(match call {
        "query" => outcome(
            sql::query(&sql_text()?, &params(&step["params"])?),
            rows_json,
        ),
        "execute" => outcome(sql::execute(&sql_text()?, &params(&step["params"])?), |n| {
            json!(n)
        }),
        "execute-batch" => {
            let statements = step["statements"]
                .as_array()
                .ok_or("no `statements` array")?
                .iter()
                .map(|s| {
                    Ok(sql::Statement {
                        sql: s["sql"]
                            .as_str()
                            .ok_or("a statement has no `sql`")?
                            .to_string(),
                        params: params(&s["params"])?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            outcome(sql::execute_batch(&statements), |counts| json!(counts))
        }
        "begin" => outcome(sql::begin(), |t| {
            txs.insert(tx_name.clone(), t);
            json!(null)
        }),
        "tx-query" => {
            let t = txs
                .get(&tx_name)
                .ok_or(format!("no open transaction `{tx_name}`"))?;
            outcome(t.query(&sql_text()?, &params(&step["params"])?), rows_json)
        }
        "tx-execute" => {
            let t = txs
                .get(&tx_name)
                .ok_or(format!("no open transaction `{tx_name}`"))?;
            outcome(t.execute(&sql_text()?, &params(&step["params"])?), |n| {
                json!(n)
            })
        }
        "commit" => outcome(sql::Transaction::commit(tx(txs)?), |()| json!(null)),
        "rollback" => outcome(sql::Transaction::rollback(tx(txs)?), |()| json!(null)),
        "drop" => {
            drop(tx(txs)?);
            outcome(Ok(()), |()| json!(null))
        }
        other => return Err(format!("unknown call `{other}`")),
    })
}

/// A step's `params` (absent: none).
fn params(list: &Value) -> Result<Vec<sql::Value>, String> {
    match list {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().map(to_value).collect(),
        other => Err(format!("`params` is not an array: {other}")),
    }
}

/// A script value as a `sql.value`.
fn to_value(v: &Value) -> Result<sql::Value, String> {
    use sql::Value as V;
    if v.is_null() {
        return Ok(V::Null);
    }
    let (tag, x) = v
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
        .ok_or_else(|| format!("a value is `null` or a one-key object: {v}"))?;
    let bad = || format!("`{tag}` cannot hold {x}");
    let int = |x: &Value| x.as_i64().ok_or_else(bad);
    let float = |x: &Value| x.as_f64().ok_or_else(bad);
    let text = |x: &Value| x.as_str().map(str::to_string).ok_or_else(bad);
    let list = |x: &Value| x.as_array().cloned().ok_or_else(bad);
    Ok(match tag.as_str() {
        "boolean" => V::Boolean(x.as_bool().ok_or_else(bad)?),
        "int16" => V::Int16(i16::try_from(int(x)?).map_err(|_| bad())?),
        "int32" => V::Int32(i32::try_from(int(x)?).map_err(|_| bad())?),
        "int64" => V::Int64(int(x)?),
        "float32" => V::Float32(float(x)? as f32),
        "float64" => V::Float64(float(x)?),
        "numeric" => V::Numeric(text(x)?),
        "text" => V::Text(text(x)?),
        "bytes" => V::Bytes(
            list(x)?
                .iter()
                .map(|b| {
                    b.as_u64()
                        .and_then(|b| u8::try_from(b).ok())
                        .ok_or_else(bad)
                })
                .collect::<Result<_, _>>()?,
        ),
        "json" => V::Json(match x {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        "uuid" => V::Uuid(text(x)?),
        "timestamptz" => V::Timestamptz(int(x)?),
        "date" => V::Date(i32::try_from(int(x)?).map_err(|_| bad())?),
        "boolean-array" => V::BooleanArray(
            list(x)?
                .iter()
                .map(|b| b.as_bool().ok_or_else(bad))
                .collect::<Result<_, _>>()?,
        ),
        "int32-array" => V::Int32Array(
            list(x)?
                .iter()
                .map(|n| int(n).and_then(|n| i32::try_from(n).map_err(|_| bad())))
                .collect::<Result<_, _>>()?,
        ),
        "int64-array" => V::Int64Array(list(x)?.iter().map(int).collect::<Result<_, _>>()?),
        "float64-array" => V::Float64Array(list(x)?.iter().map(float).collect::<Result<_, _>>()?),
        "text-array" => V::TextArray(list(x)?.iter().map(text).collect::<Result<_, _>>()?),
        "uuid-array" => V::UuidArray(list(x)?.iter().map(text).collect::<Result<_, _>>()?),
        other => return Err(format!("unknown value variant `{other}`")),
    })
}

/// A `sql.value` in the script's form.
fn value_json(v: &sql::Value) -> Value {
    use sql::Value as V;
    let (tag, x) = match v {
        V::Null => return Value::Null,
        V::Boolean(b) => ("boolean", json!(b)),
        V::Int16(n) => ("int16", json!(n)),
        V::Int32(n) => ("int32", json!(n)),
        V::Int64(n) => ("int64", json!(n)),
        V::Float32(f) => ("float32", json!(f64::from(*f))),
        V::Float64(f) => ("float64", json!(f)),
        V::Numeric(s) => ("numeric", json!(s)),
        V::Text(s) => ("text", json!(s)),
        V::Bytes(b) => ("bytes", json!(b)),
        V::Json(s) => (
            "json",
            serde_json::from_str(s).unwrap_or_else(|_| json!({"unparsable": s})),
        ),
        V::Uuid(s) => ("uuid", json!(s)),
        V::Timestamptz(t) => ("timestamptz", json!(t)),
        V::Date(d) => ("date", json!(d)),
        V::BooleanArray(a) => ("boolean-array", json!(a)),
        V::Int32Array(a) => ("int32-array", json!(a)),
        V::Int64Array(a) => ("int64-array", json!(a)),
        V::Float64Array(a) => ("float64-array", json!(a)),
        V::TextArray(a) => ("text-array", json!(a)),
        V::UuidArray(a) => ("uuid-array", json!(a)),
    };
    let mut object = Map::new();
    object.insert(tag.to_string(), x);
    Value::Object(object)
}

fn rows_json(rows: sql::Rows) -> Value {
    json!({
        "columns": rows.columns,
        "rows": rows.rows.iter().map(|row| row.iter().map(value_json).collect::<Vec<_>>()).collect::<Vec<_>>(),
    })
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

/// Whether `actual` is what `expected` describes: `"*"` matches anything, an error's
/// `transient` may be left out, and numbers compare by value (exactly, for integers).
fn matches(expected: &Value, actual: &Value) -> bool {
    probe::matches_with(expected, actual, &|e, a| match (e, a) {
        (Value::Number(e), Value::Number(a)) => Some(match (e.as_i64(), a.as_i64()) {
            (Some(e), Some(a)) => e == a,
            _ => e
                .as_u64()
                .zip(a.as_u64())
                .map_or(e.as_f64() == a.as_f64(), |(e, a)| e == a),
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_the_script_form() {
        let script = json!([
            null, {"boolean": true}, {"int16": -3}, {"int32": 7}, {"int64": i64::MAX},
            {"float32": 1.5}, {"float64": 0.1}, {"numeric": "19.90"}, {"text": "hi"},
            {"bytes": [0, 255]}, {"uuid": "67e55044-10b1-426f-9247-bb680e5fe0c8"},
            {"timestamptz": 1}, {"date": -1}, {"boolean-array": [true]},
            {"int32-array": [1]}, {"int64-array": [2]}, {"float64-array": [2.5]},
            {"text-array": ["a"]}, {"uuid-array": []}, {"json": {"a": [1]}}
        ]);
        for v in script.as_array().unwrap() {
            assert!(matches(v, &value_json(&to_value(v).unwrap())), "{v}");
        }
        assert!(matches!(to_value(&json!({"json": "{"})), Ok(sql::Value::Json(s)) if s == "{"));
        assert!(to_value(&json!({"int16": 70000})).is_err());
        assert!(to_value(&json!({"nope": 1})).is_err());
        assert!(to_value(&json!({"int32": 1, "int64": 2})).is_err());
    }

    #[test]
    fn integers_compare_exactly() {
        assert!(matches(&json!(i64::MAX), &json!(i64::MAX)));
        assert!(!matches(&json!(i64::MAX), &json!(i64::MAX - 1)));
        assert!(matches(&json!(2.0), &json!(2)));
        assert!(matches(
            &json!({"err": "denied"}),
            &json!({"err": "denied", "transient": false})
        ));
        assert!(!matches(
            &json!({"ok": 1}),
            &json!({"err": "denied", "transient": false})
        ));
    }
}
