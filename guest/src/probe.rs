//! The script runner of the test plugins that probe a capability (`test-plugins/*-probe`):
//! each event's `data` is a JSON script, `{"steps": [...]}`, of calls each with the result
//! it expects (`expect`); the probe runs them in order and reports every step whose result
//! did not match. What a step calls, and how a result is written as JSON, is each probe's.

use serde_json::{Value, json};

/// What a call returned, as JSON: `{"ok": …}` or `{"err": kind, "transient": bool}`, with
/// the error's message for the mismatch report.
#[derive(Debug, Clone, PartialEq)]
pub struct Actual {
    /// The result as a script writes an expectation.
    pub value: Value,
    /// The error's message, quoted when the step does not match.
    pub message: Option<String>,
}

impl Actual {
    /// A call that succeeded with `value`.
    pub fn ok(value: Value) -> Actual {
        Actual {
            value: json!({ "ok": value }),
            message: None,
        }
    }

    /// A call that failed with an error of kind `kind` (its WIT name).
    pub fn err(kind: &str, transient: bool, message: String) -> Actual {
        Actual {
            value: json!({ "err": kind, "transient": transient }),
            message: Some(message),
        }
    }
}

/// Runs every step of the script in `data` with `run_step` (`Err` when the step itself is
/// malformed), compares each result with the step's `expect` (`default_expect` when it has
/// none) through `matches`, and lists every step that did not match.
pub fn run_script(
    data: &[u8],
    default_expect: &Value,
    mut run_step: impl FnMut(&Value) -> Result<Actual, String>,
    matches: impl Fn(&Value, &Value) -> bool,
) -> Result<(), String> {
    let script: Value =
        serde_json::from_slice(data).map_err(|e| format!("the script is not JSON: {e}"))?;
    let steps = script["steps"]
        .as_array()
        .ok_or("the script has no `steps` array")?;
    let mut mismatches = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let call = step["call"].as_str().unwrap_or("?");
        let actual = match run_step(step) {
            Ok(actual) => actual,
            Err(bad_step) => {
                mismatches.push(format!("step {i} ({call}): {bad_step}"));
                continue;
            }
        };
        let expected = step
            .get("expect")
            .cloned()
            .unwrap_or_else(|| default_expect.clone());
        if !matches(&expected, &actual.value) {
            let message = actual
                .message
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            mismatches.push(format!(
                "step {i} ({call}): expected {expected}, got {}{message}",
                actual.value
            ));
        }
    }
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(mismatches.join("; "))
    }
}

/// Whether `actual` matches `expected`: equal, with `"*"` in `expected` matching anything
/// and numbers compared by value. An expected error (`{"err": kind}`) need not say whether
/// it is transient.
pub fn matches(expected: &Value, actual: &Value) -> bool {
    matches_with(expected, actual, &|_, _| None)
}

/// [`matches`], with a probe's own rules first: `rule` answers for the pairs it knows
/// (`Some`), at any depth, and leaves the rest (`None`) to the common ones.
pub fn matches_with(
    expected: &Value,
    actual: &Value,
    rule: &impl Fn(&Value, &Value) -> Option<bool>,
) -> bool {
    if let Some(answer) = rule(expected, actual) {
        return answer;
    }
    let matches = |e: &Value, a: &Value| matches_with(e, a, rule);
    match (expected, actual) {
        (Value::String(s), _) if s == "*" => true,
        (Value::Object(e), Value::Object(a)) => {
            let optional = |k: &str| k == "transient" && e.contains_key("err");
            a.keys().all(|k| e.contains_key(k) || optional(k))
                && e.iter()
                    .all(|(k, v)| a.get(k).is_some_and(|actual| matches(v, actual)))
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| matches(e, a))
        }
        (Value::Number(e), Value::Number(a)) => e.as_f64() == a.as_f64(),
        _ => expected == actual,
    }
}

/// The text sent for a document or body argument: a JSON string as is, `null` as `{}`,
/// anything else as JSON.
pub fn doc_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "{}".to_string(),
        other => other.to_string(),
    }
}

/// Returned JSON text as JSON; text that is not JSON (a host bug) as a marked string.
pub fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({ "not JSON": text }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mismatch_is_listed_with_its_step() {
        let script = json!({"steps": [
            {"call": "a", "expect": {"ok": 1}},
            {"call": "b", "expect": {"err": "denied"}},
            {"call": "c"},
            {"call": "d", "expect": {"ok": 2}},
        ]});
        let data = serde_json::to_vec(&script).unwrap();
        let result = run_script(
            &data,
            &json!({"ok": "*"}),
            |step| match step["call"].as_str() {
                Some("a") => Ok(Actual::ok(json!(1.0))),
                Some("b") => Ok(Actual::err("denied", false, "no".into())),
                Some("c") => Ok(Actual::ok(json!("anything"))),
                _ => Ok(Actual::err("timeout", true, "slow".into())),
            },
            matches,
        );
        assert_eq!(
            result.unwrap_err(),
            r#"step 3 (d): expected {"ok":2}, got {"err":"timeout","transient":true} (slow)"#
        );
        assert_eq!(
            run_script(b"nope", &Value::Null, |_| unreachable!(), matches).unwrap_err(),
            "the script is not JSON: expected ident at line 1 column 2"
        );
    }

    #[test]
    fn a_probe_rule_answers_first_at_any_depth() {
        let between = |e: &Value, a: &Value| {
            let range = e.get("between")?;
            Some((range[0].as_f64()?..=range[1].as_f64()?).contains(&a.as_f64()?))
        };
        let expected = json!({"ok": [{"between": [1, 3]}, "*"], "err": "x"});
        assert!(matches_with(
            &expected,
            &json!({"ok": [2, 9], "err": "x", "transient": true}),
            &between
        ));
        assert!(!matches_with(
            &expected,
            &json!({"ok": [4, 9], "err": "x"}),
            &between
        ));
        assert!(matches(&json!({"ok": 1}), &json!({"ok": 1.0})));
        assert!(!matches(&json!({"ok": 1}), &json!({"ok": 1, "more": 2})));
    }

    #[test]
    fn documents_go_as_text_and_come_back_as_json() {
        assert_eq!(doc_text(&json!("raw")), "raw");
        assert_eq!(doc_text(&Value::Null), "{}");
        assert_eq!(doc_text(&json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(parse(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(parse("x"), json!({"not JSON": "x"}));
    }
}
