//! The scope checks of the search backend: pure functions over names and JSON, run before
//! any request is sent.
//!
//! Grants are index patterns where `*` matches any run of characters. A call may name:
//! - one concrete index (`index`, `bulk-index`, `get`, `delete`, template aliases): it must
//!   match a granted pattern;
//! - an index pattern or comma list (`search`, `count`, `refresh`, template
//!   `index_patterns`): every element must lie *inside* a granted pattern, i.e. every index
//!   it could ever match must match the grant. `audit-events-*` lies inside `audit-*`; `*`,
//!   `a*` and `audit-x,users` do not.
//!
//! Targets Elasticsearch gives a special meaning are refused rather than interpreted:
//! `_all` and other `_` names, remote clusters (`cluster:index`), exclusions (`-index`),
//! date math (`<index-{now/d}>`).
//!
//! Query bodies are refused when they carry a script (any key `script` or `…_script`), or a
//! reference to a document of an index outside the grant (terms lookup, indexed shapes,
//! percolate, more-like-this and pinned documents all name one as an object holding both an
//! index and an id).

use serde_json::Value;

use crate::error::HostError;

/// `*`-glob match of `text` against `pattern`: `*` in `pattern` matches any run of
/// characters, every other character only itself. A `*` in `text` is an ordinary character,
/// which only a `*` of the pattern can match: that makes [`pattern_within`] exact.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen in the pattern, and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` absorb one more character and retry from there.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether every name `inner` matches is also matched by `outer` (both `*`-patterns).
///
/// Exact for patterns whose only wildcard is `*`: `inner ⊆ outer` if and only if `outer`
/// matches `inner` read as a plain string (its `*`s standing for a character `outer` never
/// names), since then every way of filling `inner`'s `*`s is absorbed by the same `*`s of
/// `outer`.
pub fn pattern_within(inner: &str, outer: &str) -> bool {
    glob_match(outer, inner)
}

/// Characters Elasticsearch forbids in index names, or gives a meaning we refuse.
fn forbidden_char(c: char) -> bool {
    matches!(
        c,
        '\\' | '/' | '?' | '"' | '<' | '>' | '|' | ' ' | '#' | ':' | '{' | '}'
    ) || c.is_whitespace()
        || c.is_control()
}

/// One element of a target (a concrete name or a pattern), if well formed; else the error.
fn check_element(element: &str, target: &str, allow_wildcard: bool) -> Result<(), HostError> {
    let bad = |why: &str| HostError::Invalid(format!("index `{target}`: {why}"));
    if element.is_empty() {
        return Err(bad("an empty index name"));
    }
    if element.starts_with('_') {
        return Err(HostError::Denied(format!(
            "index `{target}`: `{element}` is a special target that reaches every index"
        )));
    }
    if element.contains(':') {
        return Err(HostError::Denied(format!(
            "index `{target}`: `{element}` names a remote cluster"
        )));
    }
    if element.starts_with('-') || element.starts_with('+') {
        return Err(bad("exclusions (`-index`) are not supported"));
    }
    if element.starts_with('<') {
        return Err(bad("date math (`<index-{now/d}>`) is not supported"));
    }
    if element == "." || element == ".." {
        return Err(bad("`.` and `..` are not index names"));
    }
    if let Some(c) = element.chars().find(|&c| forbidden_char(c)) {
        return Err(bad(&format!("`{c}` is not allowed in an index name")));
    }
    if !allow_wildcard && element.contains('*') {
        return Err(bad("a wildcard is not allowed here: name one index"));
    }
    Ok(())
}

fn outside(what: &str, grants: &[String]) -> HostError {
    HostError::Denied(format!(
        "{what} is outside the search grant (indices: {})",
        grants
            .iter()
            .map(|g| format!("`{g}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// One concrete index, which must match a granted pattern.
pub fn check_index(grants: &[String], index: &str) -> Result<(), HostError> {
    if index.contains(',') {
        return Err(HostError::Invalid(format!(
            "index `{index}`: a list is not allowed here: name one index"
        )));
    }
    check_element(index, index, false)?;
    if grants.iter().any(|g| !g.is_empty() && glob_match(g, index)) {
        Ok(())
    } else {
        Err(outside(&format!("index `{index}`"), grants))
    }
}

/// An index pattern or comma list of them: every element must lie inside a granted
/// pattern. Returns the elements.
pub fn check_target<'a>(grants: &[String], target: &'a str) -> Result<Vec<&'a str>, HostError> {
    let elements: Vec<&str> = target.split(',').collect();
    for element in &elements {
        check_element(element, target, true)?;
        if !grants
            .iter()
            .any(|g| !g.is_empty() && pattern_within(element, g))
        {
            let what = if elements.len() > 1 {
                format!("`{element}` of index pattern `{target}`")
            } else {
                format!("index pattern `{target}`")
            };
            return Err(outside(&what, grants));
        }
    }
    Ok(elements)
}

/// Whether `key` names a script (`script`, `init_script`, `bucket_script`, `_script`, …).
fn script_key(key: &str) -> bool {
    key == "script" || key.ends_with("_script") || key == "scripted_metric"
}

/// The path of the first script in `body` (`query.script_score.script`), if any.
pub fn find_script(body: &Value) -> Option<String> {
    fn walk(v: &Value, path: &mut Vec<String>) -> Option<String> {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    path.push(k.clone());
                    if script_key(k) {
                        return Some(path.join("."));
                    }
                    if let Some(found) = walk(child, path) {
                        return Some(found);
                    }
                    path.pop();
                }
                None
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    path.push(i.to_string());
                    if let Some(found) = walk(child, path) {
                        return Some(found);
                    }
                    path.pop();
                }
                None
            }
            _ => None,
        }
    }
    walk(body, &mut Vec::new())
}

/// Every document reference of `body` (an object with both an index and an id: terms
/// lookups, indexed shapes, percolated documents, more-like-this and pinned documents)
/// must name a granted index.
pub fn check_references(grants: &[String], body: &Value) -> Result<(), HostError> {
    match body {
        Value::Object(map) => {
            // Only a string names an index: `{"index": {…}, "id": {…}}` is, say, two
            // aggregations so named.
            let index = ["index", "_index"]
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_str));
            let has_id = map.contains_key("id") || map.contains_key("_id");
            if let (Some(index), true) = (index, has_id) {
                check_index(grants, index).map_err(|e| match e {
                    HostError::Denied(m) => HostError::Denied(format!(
                        "the query reads a document of another index: {m}"
                    )),
                    other => other,
                })?;
            }
            map.values().try_for_each(|v| check_references(grants, v))
        }
        Value::Array(items) => items.iter().try_for_each(|v| check_references(grants, v)),
        _ => Ok(()),
    }
}

/// A query or search body: JSON, an object (empty text stands for `{}`), with no script and
/// no document of another index.
pub fn check_query(grants: &[String], what: &str, body: &str) -> Result<Value, HostError> {
    let value = if body.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str::<Value>(body)
            .map_err(|e| HostError::Invalid(format!("{what}: the body is not JSON: {e}")))?
    };
    if !value.is_object() {
        return Err(HostError::Invalid(format!(
            "{what}: the body must be a JSON object"
        )));
    }
    if let Some(path) = find_script(&value) {
        return Err(HostError::Denied(format!(
            "{what}: scripts are refused (`{path}`)"
        )));
    }
    check_references(grants, &value)?;
    Ok(value)
}

/// The `index_patterns` of a template body: a string or a list of strings.
pub fn template_patterns(body: &Value) -> Result<Vec<String>, HostError> {
    let bad = || {
        HostError::Invalid(
            "the template's `index_patterns` must be a pattern or a non-empty list of them".into(),
        )
    };
    match body.get("index_patterns") {
        Some(Value::String(p)) => Ok(vec![p.clone()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

/// A template body: every `index_patterns` entry and alias inside the grants, no script,
/// and no ingest pipeline (a pipeline can send documents to any index).
pub fn check_template(grants: &[String], name: &str, body: &str) -> Result<Value, HostError> {
    let what = format!("index template `{name}`");
    if name.is_empty() || name.contains(['*', ',']) || name.starts_with('_') {
        return Err(HostError::Invalid(format!(
            "{what}: a template name must be non-empty, without `*` or `,`, not starting with `_`"
        )));
    }
    let value = check_query(grants, &what, body)?;
    for pattern in template_patterns(&value)? {
        if pattern.contains(',') {
            return Err(HostError::Invalid(format!(
                "{what}: pattern `{pattern}` holds a `,`; list patterns separately"
            )));
        }
        check_target(grants, &pattern)
            .map_err(|e| prefixed(&format!("{what}: index_patterns"), e))?;
    }
    if let Some(aliases) = value
        .pointer("/template/aliases")
        .and_then(Value::as_object)
    {
        for alias in aliases.keys() {
            check_index(grants, alias).map_err(|e| prefixed(&format!("{what}: alias"), e))?;
        }
    }
    if let Some(settings) = value.pointer("/template/settings")
        && let Some(path) = find_key(settings, &|k| k.contains("pipeline"))
    {
        return Err(HostError::Denied(format!(
            "{what}: ingest pipelines are refused (`template.settings.{path}`)"
        )));
    }
    Ok(value)
}

/// The dotted path of the first key of `v` that `pred` accepts.
fn find_key(v: &Value, pred: &dyn Fn(&str) -> bool) -> Option<String> {
    match v {
        Value::Object(map) => map.iter().find_map(|(k, child)| {
            if pred(k) {
                Some(k.clone())
            } else {
                find_key(child, pred).map(|rest| format!("{k}.{rest}"))
            }
        }),
        Value::Array(items) => items.iter().find_map(|child| find_key(child, pred)),
        _ => None,
    }
}

/// `error` with `prefix: ` before its message, keeping its kind.
pub fn prefixed(prefix: &str, error: HostError) -> HostError {
    match error {
        HostError::Denied(m) => HostError::Denied(format!("{prefix}: {m}")),
        HostError::Invalid(m) => HostError::Invalid(format!("{prefix}: {m}")),
        HostError::NotFound(m) => HostError::NotFound(format!("{prefix}: {m}")),
        HostError::Conflict(m) => HostError::Conflict(format!("{prefix}: {m}")),
        HostError::Unavailable(m) => HostError::Unavailable(format!("{prefix}: {m}")),
        HostError::Timeout(m) => HostError::Timeout(format!("{prefix}: {m}")),
        HostError::Other(m) => HostError::Other(format!("{prefix}: {m}")),
        HostError::Trap(t) => HostError::Trap(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn g(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn glob_matches_runs() {
        assert!(glob_match("audit-*", "audit-"));
        assert!(glob_match("audit-*", "audit-events-2024"));
        assert!(!glob_match("audit-*", "audit"));
        assert!(!glob_match("audit-*", "xaudit-1"));
        assert!(glob_match("*-logs", "app-logs"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("*", ""));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
        assert!(glob_match("a*a", "aaa"));
        assert!(!glob_match("a*a", "a"));
    }

    #[test]
    fn patterns_within_patterns() {
        assert!(pattern_within("audit-events-*", "audit-*"));
        assert!(pattern_within("audit-x", "audit-*"));
        assert!(pattern_within("audit-*", "audit-*"));
        assert!(pattern_within("audit-*-2024", "audit-*"));
        assert!(pattern_within("audit-*-x-*", "audit-*-*"));
        assert!(!pattern_within("*", "audit-*"));
        assert!(!pattern_within("a*", "audit-*"));
        assert!(!pattern_within("audit*", "audit-*"));
        assert!(!pattern_within("audit-*", "audit-events-*"));
        assert!(pattern_within("x-*-y", "*-y"));
        assert!(!pattern_within("x-*", "*-y"));
        // `*a*` cannot hold `*b*`: `b` without `a` matches the latter only.
        assert!(!pattern_within("*b*", "*a*"));
        assert!(pattern_within("*ab*", "*a*"));
    }

    #[test]
    fn concrete_indices_match_a_grant() {
        let grants = g(&["audit-*", "catalog"]);
        assert!(check_index(&grants, "audit-events").is_ok());
        assert!(check_index(&grants, "catalog").is_ok());
        assert!(matches!(
            check_index(&grants, "users"),
            Err(HostError::Denied(_))
        ));
        assert!(matches!(
            check_index(&grants, "catalog2"),
            Err(HostError::Denied(_))
        ));
        assert!(matches!(
            check_index(&grants, "audit-*"),
            Err(HostError::Invalid(_))
        ));
        assert!(matches!(
            check_index(&grants, "audit-a,users"),
            Err(HostError::Invalid(_))
        ));
        assert!(matches!(
            check_index(&grants, "_all"),
            Err(HostError::Denied(_))
        ));
        assert!(matches!(
            check_index(&grants, ""),
            Err(HostError::Invalid(_))
        ));
        assert!(matches!(
            check_index(&grants, "audit-a/b"),
            Err(HostError::Invalid(_))
        ));
        assert!(matches!(
            check_index(&["*".into()], ".."),
            Err(HostError::Invalid(_))
        ));
    }

    #[test]
    fn targets_must_lie_inside_the_grant() {
        let grants = g(&["audit-*"]);
        assert_eq!(
            check_target(&grants, "audit-events-*").unwrap(),
            ["audit-events-*"]
        );
        assert_eq!(check_target(&grants, "audit-x").unwrap(), ["audit-x"]);
        assert_eq!(
            check_target(&grants, "audit-a,audit-b-*").unwrap(),
            ["audit-a", "audit-b-*"]
        );
        for refused in ["*", "a*", "audit*", "audit-a,users", "audit-a,*", "users"] {
            let e = check_target(&grants, refused).unwrap_err();
            assert!(matches!(e, HostError::Denied(_)), "{refused}: {e:?}");
        }
        for special in ["_all", "_local", "other:audit-x", "audit-a,_all"] {
            assert!(
                matches!(check_target(&grants, special), Err(HostError::Denied(_))),
                "{special}"
            );
        }
        for malformed in [
            "",
            "audit-a,",
            "-audit-b",
            "<audit-{now/d}>",
            "audit a",
            "audit-?",
        ] {
            assert!(
                matches!(check_target(&grants, malformed), Err(HostError::Invalid(_))),
                "{malformed}"
            );
        }
    }

    #[test]
    fn a_target_may_span_several_grants() {
        let grants = g(&["audit-*", "derived-*"]);
        assert!(check_target(&grants, "audit-x,derived-y*").is_ok());
    }

    #[test]
    fn scripts_are_found_anywhere() {
        let cases = [
            json!({"query": {"script": {"script": "1"}}}),
            json!({"query": {"function_score": {"functions": [{"script_score": {"script": {"source": "x"}}}]}}}),
            json!({"script_fields": {"f": {"script": "doc.x"}}}),
            json!({"aggs": {"a": {"scripted_metric": {"init_script": "s"}}}}),
            json!({"aggs": {"a": {"bucket_script": {"buckets_path": {}, "script": "s"}}}}),
            json!({"sort": [{"_script": {"type": "number"}}]}),
            json!({"runtime_mappings": {"f": {"type": "long", "script": "emit(1)"}}}),
        ];
        for c in cases {
            assert!(find_script(&c).is_some(), "{c}");
        }
        assert_eq!(
            find_script(&json!({"query": {"bool": {"filter": [{"script": {}}]}}})).as_deref(),
            Some("query.bool.filter.0.script")
        );
        // Field names that merely contain the word are fine.
        let plain = json!({"query": {"term": {"subscription": "x", "transcript": "y"}}});
        assert_eq!(find_script(&plain), None);
    }

    #[test]
    fn document_references_must_be_granted() {
        let grants = g(&["audit-*"]);
        let lookup = |index: &str| json!({"query": {"terms": {"user": {"index": index, "id": "1", "path": "followers"}}}});
        assert!(check_references(&grants, &lookup("audit-users")).is_ok());
        assert!(matches!(
            check_references(&grants, &lookup("users")),
            Err(HostError::Denied(_))
        ));
        let mlt = json!({"query": {"more_like_this": {"like": [{"_index": "users", "_id": "1"}]}}});
        assert!(matches!(
            check_references(&grants, &mlt),
            Err(HostError::Denied(_))
        ));
        // A term on the `_index` field is a filter, not a reference.
        let term = json!({"query": {"term": {"_index": "users"}}});
        assert!(check_references(&grants, &term).is_ok());
        // Nor are aggregations that happen to be called so.
        let aggs =
            json!({"aggs": {"index": {"terms": {"field": "i"}}, "id": {"terms": {"field": "d"}}}});
        assert!(check_references(&grants, &aggs).is_ok());
    }

    #[test]
    fn query_bodies_are_checked() {
        let grants = g(&["audit-*"]);
        assert!(check_query(&grants, "search", "").unwrap().is_object());
        assert!(matches!(
            check_query(&grants, "search", "{"),
            Err(HostError::Invalid(_))
        ));
        assert!(matches!(
            check_query(&grants, "search", "[1]"),
            Err(HostError::Invalid(_))
        ));
        let script = r#"{"query":{"script":{"script":"true"}}}"#;
        assert!(matches!(
            check_query(&grants, "search", script),
            Err(HostError::Denied(_))
        ));
    }

    #[test]
    fn templates_stay_inside_the_grant() {
        let grants = g(&["audit-*"]);
        let ok = r#"{"index_patterns":["audit-events-*","audit-x"],"template":{"aliases":{"audit-all":{}}}}"#;
        assert!(check_template(&grants, "t", ok).is_ok());
        assert!(check_template(&grants, "t", r#"{"index_patterns":"audit-*"}"#).is_ok());
        for (body, denied) in [
            (r#"{"index_patterns":["audit-*","users-*"]}"#, true),
            (r#"{"index_patterns":["*"]}"#, true),
            (
                r#"{"index_patterns":["audit-*"],"template":{"aliases":{"users":{}}}}"#,
                true,
            ),
            (
                r#"{"index_patterns":["audit-*"],"template":{"settings":{"index":{"default_pipeline":"p"}}}}"#,
                true,
            ),
            (
                r#"{"index_patterns":["audit-*"],"template":{"settings":{"index.final_pipeline":"p"}}}"#,
                true,
            ),
            (
                r#"{"index_patterns":["audit-*"],"template":{"mappings":{"runtime":{"f":{"type":"long","script":"emit(1)"}}}}}"#,
                true,
            ),
            (r#"{"index_patterns":[]}"#, false),
            (r#"{"template":{}}"#, false),
            (r#"{"index_patterns":["audit-a,users"]}"#, false),
        ] {
            let e = check_template(&grants, "t", body).unwrap_err();
            assert_eq!(matches!(e, HostError::Denied(_)), denied, "{body}: {e:?}");
        }
        for name in ["", "t*", "a,b", "_t"] {
            assert!(
                matches!(
                    check_template(&grants, name, ok),
                    Err(HostError::Invalid(_))
                ),
                "{name}"
            );
        }
    }
}
