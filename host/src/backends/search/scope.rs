//! The scope checks of the search backend: pure functions over names and JSON, run before
//! any request is sent.
//!
//! Grants are index patterns where `*` matches any run of characters. A call may name:
//! - one concrete index (`index`, `bulk-index`, `get`, `delete`, lookups inside queries):
//!   it must match a granted pattern;
//! - an index pattern or comma list (`search`, `count`, `refresh`, template
//!   `index_patterns`, `indices_boost`): every element must lie *inside* a granted pattern,
//!   i.e. every index it could ever match must match the grant. `audit-events-*` lies inside
//!   `audit-*`; `*`, `a*` and `audit-x,users` do not.
//!
//! Targets Elasticsearch gives a special meaning are refused rather than interpreted:
//! `_all` and other `_` names, remote clusters (`cluster:index`), exclusions (`-index`),
//! date math (`<index-{now/d}>`), `%` (a percent-encoded name is read one way here and
//! another way by the server).
//!
//! Bodies are checked against allowlists, not denylists ([`check_search`], [`check_count`],
//! [`check_template`]): every key of a search body, every query clause at every depth
//! (inside `bool`, `nested`, `function_score`, aggregations, sorts, highlights, rescorers,
//! `knn` filters, `inner_hits`, …), every aggregation kind and every template key must be
//! on a list; anything else is `denied`, naming its path. A `wrapper` query is decoded and
//! checked like any other clause, and sent decoded, so Elasticsearch runs exactly the query
//! that was checked. Lookups that name an index (terms lookup, more-like-this and pinned
//! documents, indexed shapes, percolated documents) must name a granted one. Scripts are
//! refused everywhere; as a second line, any key `script` or `…_script`, and any object
//! naming both an index and a document id outside the grant, refuses the body whatever
//! its place.

use base64::Engine as _;
use serde_json::Value;

use crate::error::{HostError, Kind};

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
        '\\' | '/' | '?' | '"' | '<' | '>' | '|' | ' ' | '#' | ':' | '{' | '}' | '%'
    ) || c.is_whitespace()
        || c.is_control()
}

/// One element of a target (a concrete name or a pattern), if well formed; else the error.
fn check_element(element: &str, target: &str, allow_wildcard: bool) -> Result<(), HostError> {
    let bad = |why: &str| HostError::invalid(format!("index `{target}`: {why}"));
    if element.is_empty() {
        return Err(bad("an empty index name"));
    }
    if element.starts_with('_') {
        return Err(HostError::denied(format!(
            "index `{target}`: `{element}` is a special target that reaches every index"
        )));
    }
    if element.contains(':') {
        return Err(HostError::denied(format!(
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
    HostError::denied(format!(
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
        return Err(HostError::invalid(format!(
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
                check_index(grants, index).map_err(|e| match e.kind {
                    Kind::Denied => e.context("the query reads a document of another index"),
                    _ => e,
                })?;
            }
            map.values().try_for_each(|v| check_references(grants, v))
        }
        Value::Array(items) => items.iter().try_for_each(|v| check_references(grants, v)),
        _ => Ok(()),
    }
}

/// How deeply query clauses, aggregations and nested sorts may nest, each decoded `wrapper`
/// counting as a level: a body cannot make the check (or the server) recurse without end,
/// whatever it hides in base64.
pub const MAX_DEPTH: usize = 48;

/// The most `max_determinized_states` a `regexp` may ask for: Elasticsearch's default,
/// which bounds the automaton (memory and time) one pattern can build on the server.
pub const MAX_DETERMINIZED_STATES: u64 = 10_000;

/// Query kinds whose parameters hold no other query and name no other index: they read
/// fields of the searched documents only.
const LEAF_QUERIES: &[&str] = &[
    "match_all",
    "match_none",
    "term",
    "terms_set",
    "range",
    "exists",
    "prefix",
    "wildcard",
    "fuzzy",
    "ids",
    "match",
    "match_phrase",
    "match_phrase_prefix",
    "match_bool_prefix",
    "multi_match",
    "combined_fields",
    // `query_string` names fields (`_index:x` filters the searched indices), never an index
    // to read: allowed like the other full-text queries.
    "query_string",
    "simple_query_string",
    "intervals",
    "geo_distance",
    "geo_bounding_box",
    "distance_feature",
    "rank_feature",
    "parent_id",
    "span_term",
];

/// Where the compound query kinds hold other queries, and which other parameters they take
/// (`boost` and `_name` always).
struct Compound {
    kind: &'static str,
    /// Parameters holding a query or a list of queries.
    queries: &'static [&'static str],
    /// Parameters holding plain values.
    plain: &'static [&'static str],
    /// Whether it takes `inner_hits`.
    inner_hits: bool,
}

const COMPOUND_QUERIES: &[Compound] = &[
    Compound {
        kind: "bool",
        queries: &["must", "filter", "should", "must_not"],
        plain: &["minimum_should_match", "adjust_pure_negative"],
        inner_hits: false,
    },
    Compound {
        kind: "boosting",
        queries: &["positive", "negative"],
        plain: &["negative_boost"],
        inner_hits: false,
    },
    Compound {
        kind: "constant_score",
        queries: &["filter"],
        plain: &[],
        inner_hits: false,
    },
    Compound {
        kind: "dis_max",
        queries: &["queries"],
        plain: &["tie_breaker"],
        inner_hits: false,
    },
    Compound {
        kind: "nested",
        queries: &["query"],
        plain: &["path", "score_mode", "ignore_unmapped"],
        inner_hits: true,
    },
    Compound {
        kind: "has_child",
        queries: &["query"],
        plain: &[
            "type",
            "score_mode",
            "min_children",
            "max_children",
            "ignore_unmapped",
        ],
        inner_hits: true,
    },
    Compound {
        kind: "has_parent",
        queries: &["query"],
        plain: &["parent_type", "score", "ignore_unmapped"],
        inner_hits: true,
    },
    Compound {
        kind: "pinned",
        queries: &["organic"],
        // `docs` is checked for other indices apart.
        plain: &["ids", "docs"],
        inner_hits: false,
    },
    Compound {
        kind: "knn",
        queries: &["filter"],
        plain: &[
            "field",
            "query_vector",
            "k",
            "num_candidates",
            "similarity",
            "rescore_vector",
        ],
        inner_hits: false,
    },
    Compound {
        kind: "span_near",
        queries: &["clauses"],
        plain: &["slop", "in_order"],
        inner_hits: false,
    },
    Compound {
        kind: "span_or",
        queries: &["clauses"],
        plain: &[],
        inner_hits: false,
    },
    Compound {
        kind: "span_not",
        queries: &["include", "exclude"],
        plain: &["pre", "post", "dist"],
        inner_hits: false,
    },
    Compound {
        kind: "span_first",
        queries: &["match"],
        plain: &["end"],
        inner_hits: false,
    },
    Compound {
        kind: "span_containing",
        queries: &["big", "little"],
        plain: &[],
        inner_hits: false,
    },
    Compound {
        kind: "span_within",
        queries: &["big", "little"],
        plain: &[],
        inner_hits: false,
    },
    Compound {
        kind: "span_multi",
        queries: &["match"],
        plain: &[],
        inner_hits: false,
    },
    Compound {
        kind: "field_masking_span",
        queries: &["query"],
        plain: &["field"],
        inner_hits: false,
    },
];

/// Aggregation kinds whose parameters hold no query (fields, intervals, ranges, bucket
/// paths).
const LEAF_AGGS: &[&str] = &[
    "avg",
    "sum",
    "min",
    "max",
    "value_count",
    "cardinality",
    "stats",
    "extended_stats",
    "percentiles",
    "percentile_ranks",
    "median_absolute_deviation",
    "weighted_avg",
    "boxplot",
    "string_stats",
    "geo_bounds",
    "geo_centroid",
    "rate",
    "t_test",
    "matrix_stats",
    "terms",
    "rare_terms",
    "multi_terms",
    "histogram",
    "date_histogram",
    "auto_date_histogram",
    "variable_width_histogram",
    "range",
    "date_range",
    "ip_range",
    "geo_distance",
    "geohash_grid",
    "geotile_grid",
    "missing",
    "nested",
    "reverse_nested",
    "children",
    "parent",
    "global",
    "sampler",
    "diversified_sampler",
    "random_sampler",
    "composite",
    "avg_bucket",
    "sum_bucket",
    "min_bucket",
    "max_bucket",
    "stats_bucket",
    "extended_stats_bucket",
    "percentiles_bucket",
    "derivative",
    "cumulative_sum",
    "cumulative_cardinality",
    "serial_diff",
];

/// Keys of a search body that hold plain values (pages, flags, fields of the searched
/// documents); the other allowed keys are checked by [`Dsl::search_body`].
const PLAIN_SEARCH_KEYS: &[&str] = &[
    "from",
    "size",
    "search_after",
    "track_total_hits",
    "timeout",
    "terminate_after",
    "min_score",
    "_source",
    "stored_fields",
    "docvalue_fields",
    "fields",
    "explain",
    "version",
    "seq_no_primary_term",
    "track_scores",
    "stats",
    "profile",
];

/// The keys of `inner_hits` and of a `top_hits` aggregation.
const HITS_KEYS: &[&str] = &[
    "name",
    "from",
    "size",
    "sort",
    "_source",
    "highlight",
    "explain",
    "stored_fields",
    "docvalue_fields",
    "fields",
    "version",
    "seq_no_primary_term",
    "track_scores",
    "collapse",
];

/// `wrapper` queries hold base64, with or without padding.
const WRAPPER_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// `path.key`, or `key` at the top.
fn at(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A refusal of the element at `path`.
fn refused(path: &str, why: &str) -> HostError {
    HostError::denied(format!("`{path}`: {why}"))
}

/// A malformed element at `path`.
/// Refuses a body nested deeper than [`MAX_DEPTH`] levels; `what` names what nests
/// (`queries`, `aggregations`; empty: the part at `path` itself).
fn within_depth(path: &str, depth: usize, what: &str) -> Result<(), HostError> {
    if depth <= MAX_DEPTH {
        return Ok(());
    }
    let message = if what.is_empty() {
        format!("nests deeper than {MAX_DEPTH} levels")
    } else {
        format!("{what} nest deeper than {MAX_DEPTH} levels")
    };
    Err(malformed(path, &message))
}

fn malformed(path: &str, why: &str) -> HostError {
    HostError::invalid(format!("`{path}`: {why}"))
}

const SCRIPTS_REFUSED: &str = "scripts are refused";

fn object<'v>(
    v: &'v mut Value,
    path: &str,
    what: &str,
) -> Result<&'v mut serde_json::Map<String, Value>, HostError> {
    v.as_object_mut()
        .ok_or_else(|| malformed(path, &format!("{what} must be a JSON object")))
}

/// One value or each value of a list, with its path.
fn each<'v>(v: &'v mut Value, path: &str) -> Vec<(String, &'v mut Value)> {
    match v {
        Value::Array(items) => items
            .iter_mut()
            .enumerate()
            .map(|(i, item)| (at(path, &i.to_string()), item))
            .collect(),
        other => vec![(path.to_string(), other)],
    }
}

/// The structural check of one body against the allowlists, inlining `wrapper` queries so
/// that what is sent is exactly what was checked.
struct Dsl<'a> {
    grants: &'a [String],
}

impl Dsl<'_> {
    fn search_body(&self, body: &mut Value) -> Result<(), HostError> {
        let map = object(body, "", "the body")?;
        for (key, v) in map.iter_mut() {
            let path = key.as_str();
            match path {
                "query" | "post_filter" => self.query(v, path, 0)?,
                "aggs" | "aggregations" => self.aggs(v, path, 0)?,
                "sort" => self.sort(v, path, 0)?,
                "highlight" => self.highlight(v, path, 0)?,
                "collapse" => self.collapse(v, path, 0)?,
                "rescore" => self.rescore(v, path)?,
                "knn" => self.knn(v, path)?,
                "suggest" => self.suggest(v, path)?,
                "indices_boost" => self.indices_boost(v, path)?,
                "script_fields" | "runtime_mappings" => {
                    return Err(refused(path, SCRIPTS_REFUSED));
                }
                k if PLAIN_SEARCH_KEYS.contains(&k) => {}
                _ => {
                    return Err(refused(
                        path,
                        "not an allowed key of a search body (allowed: query, post_filter, \
                         aggs, sort, highlight, collapse, rescore, knn, suggest, \
                         indices_boost, and plain options such as from, size, _source)",
                    ));
                }
            }
        }
        Ok(())
    }

    fn count_body(&self, body: &mut Value) -> Result<(), HostError> {
        let map = object(body, "", "the body")?;
        for (key, v) in map.iter_mut() {
            if key == "query" {
                self.query(v, key, 0)?;
            } else {
                // Elasticsearch itself refuses the others (`size`, `aggs`) as invalid.
                return Err(malformed(key, "a count body holds only `query`"));
            }
        }
        Ok(())
    }

    /// One query clause: `{kind: parameters}` with `kind` on the allowlist.
    fn query(&self, v: &mut Value, path: &str, depth: usize) -> Result<(), HostError> {
        within_depth(path, depth, "queries")?;
        let kind = match v.as_object() {
            Some(map) if map.len() == 1 => map.keys().next().cloned().unwrap_or_default(),
            _ => {
                return Err(malformed(
                    path,
                    "a query must be an object with one key, its kind",
                ));
            }
        };
        let here = at(path, &kind);
        if kind == "wrapper" {
            // Decoded and put in place of the wrapper: Elasticsearch then runs the query
            // that was checked, and nothing depends on both sides decoding alike.
            let inner = unwrap(&v["wrapper"], &here)?;
            *v = inner;
            return self.query(v, &here, depth + 1);
        }
        let params = &mut v[kind.as_str()];
        if let Some(c) = COMPOUND_QUERIES.iter().find(|c| c.kind == kind) {
            if kind == "pinned" {
                self.pinned_docs(params, &here)?;
            }
            return self.compound(c, params, &here, depth);
        }
        match kind.as_str() {
            k if LEAF_QUERIES.contains(&k) => Ok(()),
            "regexp" => regexp(params, &here),
            "terms" => self.terms(params, &here),
            "more_like_this" => self.more_like_this(params, &here),
            "geo_shape" | "shape" => self.indexed_shapes(params, &here),
            "percolate" => self.percolate(params, &here),
            "function_score" => self.function_score(params, &here, depth),
            "script" | "script_score" => Err(refused(&here, SCRIPTS_REFUSED)),
            _ => Err(refused(&here, "not an allowed query kind")),
        }
    }

    /// A query or a list of queries.
    fn queries(&self, v: &mut Value, path: &str, depth: usize) -> Result<(), HostError> {
        for (p, q) in each(v, path) {
            self.query(q, &p, depth)?;
        }
        Ok(())
    }

    fn compound(
        &self,
        c: &Compound,
        params: &mut Value,
        path: &str,
        depth: usize,
    ) -> Result<(), HostError> {
        for (key, v) in object(params, path, "its parameters")?.iter_mut() {
            let here = at(path, key);
            let k = key.as_str();
            if c.queries.contains(&k) {
                self.queries(v, &here, depth + 1)?;
            } else if c.inner_hits && k == "inner_hits" {
                self.hits_options(v, &here, depth + 1)?;
            } else if !(c.plain.contains(&k) || k == "boost" || k == "_name") {
                return Err(refused(
                    &here,
                    &format!("not an allowed parameter of `{}`", c.kind),
                ));
            }
        }
        Ok(())
    }

    /// An index a lookup reads a document of: it must be granted.
    fn lookup(&self, index: &str, path: &str) -> Result<(), HostError> {
        check_index(self.grants, index).map_err(|e| match e {
            HostError {
                kind: Kind::Denied, ..
            } => refused(
                path,
                &format!(
                    "reads a document of index `{index}`, outside the search grant (indices: {})",
                    self.grants.join(", ")
                ),
            ),
            other => other.context(format_args!("`{path}`")),
        })
    }

    fn terms(&self, params: &mut Value, path: &str) -> Result<(), HostError> {
        for (field, spec) in object(params, path, "its parameters")?.iter() {
            if let Value::Object(lookup) = spec {
                let here = at(path, field);
                let index = lookup.get("index").and_then(Value::as_str).ok_or_else(|| {
                    malformed(&here, "a terms lookup names its `index` (a string)")
                })?;
                self.lookup(index, &at(&here, "index"))?;
            }
        }
        Ok(())
    }

    fn more_like_this(&self, params: &mut Value, path: &str) -> Result<(), HostError> {
        let map = object(params, path, "its parameters")?;
        for key in ["like", "unlike"] {
            let Some(v) = map.get_mut(key) else { continue };
            for (p, item) in each(v, &at(path, key)) {
                if let Some(index) = item.get("_index") {
                    let index = index
                        .as_str()
                        .ok_or_else(|| malformed(&p, "`_index` must be a string"))?;
                    self.lookup(index, &at(&p, "_index"))?;
                }
            }
        }
        Ok(())
    }

    fn indexed_shapes(&self, params: &mut Value, path: &str) -> Result<(), HostError> {
        for (field, spec) in object(params, path, "its parameters")?.iter() {
            if let Some(shape) = spec.get("indexed_shape") {
                let here = at(&at(path, field), "indexed_shape");
                // Elasticsearch reads shapes from the index `shapes` when none is named.
                let index = match shape.get("index") {
                    None => "shapes",
                    Some(i) => i
                        .as_str()
                        .ok_or_else(|| malformed(&here, "`index` must be a string"))?,
                };
                self.lookup(index, &at(&here, "index"))?;
            }
        }
        Ok(())
    }

    fn percolate(&self, params: &mut Value, path: &str) -> Result<(), HostError> {
        let map = object(params, path, "its parameters")?;
        if map.contains_key("id") || map.contains_key("index") {
            let index = map.get("index").and_then(Value::as_str).ok_or_else(|| {
                malformed(path, "a stored document to percolate names its `index`")
            })?;
            self.lookup(index, &at(path, "index"))?;
        }
        Ok(())
    }

    fn pinned_docs(&self, params: &mut Value, path: &str) -> Result<(), HostError> {
        let Some(docs) = params.get_mut("docs") else {
            return Ok(());
        };
        for (p, doc) in each(docs, &at(path, "docs")) {
            if let Some(index) = doc.get("_index") {
                let index = index
                    .as_str()
                    .ok_or_else(|| malformed(&p, "`_index` must be a string"))?;
                self.lookup(index, &at(&p, "_index"))?;
            }
        }
        Ok(())
    }

    fn function_score(
        &self,
        params: &mut Value,
        path: &str,
        depth: usize,
    ) -> Result<(), HostError> {
        for (key, v) in object(params, path, "its parameters")?.iter_mut() {
            let here = at(path, key);
            match key.as_str() {
                "query" => self.query(v, &here, depth + 1)?,
                "functions" => {
                    let Value::Array(functions) = v else {
                        return Err(malformed(&here, "`functions` must be a list"));
                    };
                    for (i, f) in functions.iter_mut().enumerate() {
                        let fp = at(&here, &i.to_string());
                        for (fk, fv) in object(f, &fp, "a function")?.iter_mut() {
                            match fk.as_str() {
                                "filter" => self.query(fv, &at(&fp, fk), depth + 1)?,
                                k if score_function(k) => {}
                                "script_score" => {
                                    return Err(refused(&at(&fp, fk), SCRIPTS_REFUSED));
                                }
                                _ => {
                                    return Err(refused(
                                        &at(&fp, fk),
                                        "not an allowed score function",
                                    ));
                                }
                            }
                        }
                    }
                }
                "script_score" => return Err(refused(&here, SCRIPTS_REFUSED)),
                "boost_mode" | "score_mode" | "max_boost" | "min_score" | "boost" | "_name" => {}
                k if score_function(k) => {}
                _ => {
                    return Err(refused(
                        &here,
                        "not an allowed parameter of `function_score`",
                    ));
                }
            }
        }
        Ok(())
    }

    fn aggs(&self, v: &mut Value, path: &str, depth: usize) -> Result<(), HostError> {
        within_depth(path, depth, "aggregations")?;
        for (name, spec) in object(v, path, "aggregations")?.iter_mut() {
            self.agg(spec, &at(path, name), depth)?;
        }
        Ok(())
    }

    fn agg(&self, spec: &mut Value, path: &str, depth: usize) -> Result<(), HostError> {
        let mut kinds = 0;
        for (key, v) in object(spec, path, "an aggregation")?.iter_mut() {
            let here = at(path, key);
            match key.as_str() {
                "aggs" | "aggregations" => self.aggs(v, &here, depth + 1)?,
                "meta" => {}
                kind => {
                    kinds += 1;
                    self.agg_kind(kind, v, &here, depth)?;
                }
            }
        }
        if kinds != 1 {
            return Err(malformed(path, "an aggregation names exactly one kind"));
        }
        Ok(())
    }

    fn agg_kind(
        &self,
        kind: &str,
        params: &mut Value,
        path: &str,
        depth: usize,
    ) -> Result<(), HostError> {
        match kind {
            k if LEAF_AGGS.contains(&k) => Ok(()),
            "filter" => self.query(params, path, depth + 1),
            "filters" | "adjacency_matrix" => {
                for (key, v) in object(params, path, "its parameters")?.iter_mut() {
                    let here = at(path, key);
                    match key.as_str() {
                        "filters" => match v {
                            Value::Object(named) => {
                                for (name, q) in named.iter_mut() {
                                    self.query(q, &at(&here, name), depth + 1)?;
                                }
                            }
                            Value::Array(_) => self.queries(v, &here, depth + 1)?,
                            _ => {
                                return Err(malformed(
                                    &here,
                                    "`filters` must be an object or a list of queries",
                                ));
                            }
                        },
                        "other_bucket" | "other_bucket_key" | "keyed" | "separator" => {}
                        _ => {
                            return Err(refused(
                                &here,
                                &format!("not an allowed parameter of `{kind}`"),
                            ));
                        }
                    }
                }
                Ok(())
            }
            "significant_terms" | "significant_text" => {
                if let Some(filter) = params.get_mut("background_filter") {
                    self.query(filter, &at(path, "background_filter"), depth + 1)?;
                }
                Ok(())
            }
            "top_hits" => self.hits_options(params, path, depth + 1),
            "top_metrics" | "bucket_sort" => {
                if let Some(sort) = params.get_mut("sort") {
                    self.sort(sort, &at(path, "sort"), depth + 1)?;
                }
                Ok(())
            }
            "bucket_script" | "bucket_selector" | "scripted_metric" | "moving_fn" => {
                Err(refused(path, SCRIPTS_REFUSED))
            }
            _ => Err(refused(path, "not an allowed aggregation kind")),
        }
    }

    /// `inner_hits` (one or a list) and `top_hits`.
    fn hits_options(&self, v: &mut Value, path: &str, depth: usize) -> Result<(), HostError> {
        within_depth(path, depth, "")?;
        for (p, options) in each(v, path) {
            for (key, v) in object(options, &p, "hit options")?.iter_mut() {
                let here = at(&p, key);
                match key.as_str() {
                    "sort" => self.sort(v, &here, depth + 1)?,
                    "highlight" => self.highlight(v, &here, depth + 1)?,
                    "collapse" => self.collapse(v, &here, depth + 1)?,
                    "script_fields" => return Err(refused(&here, SCRIPTS_REFUSED)),
                    k if HITS_KEYS.contains(&k) => {}
                    _ => return Err(refused(&here, "not an allowed hit option")),
                }
            }
        }
        Ok(())
    }

    fn sort(&self, v: &mut Value, path: &str, depth: usize) -> Result<(), HostError> {
        for (p, entry) in each(v, path) {
            match entry {
                Value::String(field) if field == "_script" => {
                    return Err(refused(&p, SCRIPTS_REFUSED));
                }
                Value::String(_) => {}
                Value::Object(map) => {
                    for (field, spec) in map.iter_mut() {
                        let here = at(&p, field);
                        if field == "_script" {
                            return Err(refused(&here, SCRIPTS_REFUSED));
                        }
                        if let Some(nested) = spec.get_mut("nested") {
                            self.nested_sort(nested, &at(&here, "nested"), depth + 1)?;
                        }
                    }
                }
                _ => return Err(malformed(&p, "a sort is a field name or an object")),
            }
        }
        Ok(())
    }

    fn nested_sort(&self, v: &mut Value, path: &str, depth: usize) -> Result<(), HostError> {
        within_depth(path, depth, "")?;
        for (key, v) in object(v, path, "a nested sort")?.iter_mut() {
            let here = at(path, key);
            match key.as_str() {
                "path" | "max_children" => {}
                "filter" => self.query(v, &here, depth + 1)?,
                "nested" => self.nested_sort(v, &here, depth + 1)?,
                _ => return Err(refused(&here, "not an allowed parameter of a nested sort")),
            }
        }
        Ok(())
    }

    fn highlight(&self, v: &mut Value, path: &str, depth: usize) -> Result<(), HostError> {
        let map = object(v, path, "a highlight")?;
        if let Some(q) = map.get_mut("highlight_query") {
            self.query(q, &at(path, "highlight_query"), depth + 1)?;
        }
        let Some(fields) = map.get_mut("fields") else {
            return Ok(());
        };
        let fields_path = at(path, "fields");
        // `fields` is an object of field → options, or a list of such one-field objects.
        for (p, group) in each(fields, &fields_path) {
            let Value::Object(group) = group else {
                return Err(malformed(&p, "highlighted fields must be objects"));
            };
            for (field, options) in group.iter_mut() {
                if let Some(q) = options.get_mut("highlight_query") {
                    self.query(q, &at(&at(&p, field), "highlight_query"), depth + 1)?;
                }
            }
        }
        Ok(())
    }

    fn collapse(&self, v: &mut Value, path: &str, depth: usize) -> Result<(), HostError> {
        for (key, v) in object(v, path, "a collapse")?.iter_mut() {
            let here = at(path, key);
            match key.as_str() {
                "field" | "max_concurrent_group_searches" => {}
                "inner_hits" => self.hits_options(v, &here, depth + 1)?,
                _ => return Err(refused(&here, "not an allowed parameter of `collapse`")),
            }
        }
        Ok(())
    }

    fn rescore(&self, v: &mut Value, path: &str) -> Result<(), HostError> {
        for (p, rescorer) in each(v, path) {
            for (key, v) in object(rescorer, &p, "a rescorer")?.iter_mut() {
                let here = at(&p, key);
                match key.as_str() {
                    "window_size" => {}
                    "query" => {
                        for (qk, qv) in object(v, &here, "a query rescorer")?.iter_mut() {
                            match qk.as_str() {
                                "rescore_query" => self.query(qv, &at(&here, qk), 1)?,
                                "query_weight" | "rescore_query_weight" | "score_mode" => {}
                                _ => {
                                    return Err(refused(
                                        &at(&here, qk),
                                        "not an allowed parameter of a query rescorer",
                                    ));
                                }
                            }
                        }
                    }
                    _ => return Err(refused(&here, "not an allowed rescorer (allowed: query)")),
                }
            }
        }
        Ok(())
    }

    /// The top-level `knn` section: one search or a list.
    fn knn(&self, v: &mut Value, path: &str) -> Result<(), HostError> {
        for (p, search) in each(v, path) {
            for (key, v) in object(search, &p, "a knn search")?.iter_mut() {
                let here = at(&p, key);
                match key.as_str() {
                    "filter" => self.queries(v, &here, 1)?,
                    "inner_hits" => self.hits_options(v, &here, 1)?,
                    "field" | "query_vector" | "k" | "num_candidates" | "similarity" | "boost"
                    | "_name" | "rescore_vector" => {}
                    // `query_vector_builder` runs a model on the server, among others.
                    _ => return Err(refused(&here, "not an allowed parameter of `knn`")),
                }
            }
        }
        Ok(())
    }

    fn suggest(&self, v: &mut Value, path: &str) -> Result<(), HostError> {
        for (name, s) in object(v, path, "`suggest`")?.iter_mut() {
            let here = at(path, name);
            if name == "text" {
                continue;
            }
            for (key, params) in object(s, &here, "a suggestion")?.iter_mut() {
                let p = at(&here, key);
                match key.as_str() {
                    "text" | "prefix" | "regex" | "term" | "completion" => {}
                    "phrase" => {
                        if params.get("collate").is_some() {
                            // A collate query is a search template: a script.
                            return Err(refused(&at(&p, "collate"), SCRIPTS_REFUSED));
                        }
                    }
                    _ => return Err(refused(&p, "not an allowed suggester")),
                }
            }
        }
        Ok(())
    }

    fn indices_boost(&self, v: &mut Value, path: &str) -> Result<(), HostError> {
        for (p, entry) in each(v, path) {
            for name in object(entry, &p, "an index boost")?.keys() {
                check_target(self.grants, name).map_err(|e| e.context(format_args!("`{p}`")))?;
            }
        }
        Ok(())
    }
}

/// Score functions of `function_score` other than scripts.
fn score_function(key: &str) -> bool {
    matches!(
        key,
        "weight" | "field_value_factor" | "random_score" | "gauss" | "linear" | "exp"
    )
}

/// A `regexp` asking for a larger automaton than the default is refused.
fn regexp(params: &mut Value, path: &str) -> Result<(), HostError> {
    for (field, spec) in object(params, path, "its parameters")?.iter() {
        if let Some(states) = spec.get("max_determinized_states") {
            let ok = states
                .as_u64()
                .is_some_and(|n| n <= MAX_DETERMINIZED_STATES);
            if !ok {
                return Err(refused(
                    &at(&at(path, field), "max_determinized_states"),
                    &format!("at most {MAX_DETERMINIZED_STATES}"),
                ));
            }
        }
    }
    Ok(())
}

/// The query a `wrapper` holds, decoded from base64 and parsed as JSON.
fn unwrap(params: &Value, path: &str) -> Result<Value, HostError> {
    let encoded = match params.as_object() {
        Some(map) if map.len() == 1 => map.get("query").and_then(Value::as_str),
        _ => None,
    }
    .ok_or_else(|| malformed(path, "a wrapper holds only `query`, base64 text"))?;
    let bytes = WRAPPER_BASE64
        .decode(encoded.trim())
        .map_err(|e| malformed(path, &format!("the wrapped query is not base64: {e}")))?;
    // Elasticsearch would also take YAML, CBOR or Smile here; only JSON can be checked.
    serde_json::from_slice(&bytes)
        .map_err(|e| malformed(path, &format!("the wrapped query is not JSON: {e}")))
}

/// A body's JSON: an object (empty text stands for `{}`).
fn parse_body(what: &str, body: &str) -> Result<Value, HostError> {
    let value = if body.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str::<Value>(body)
            .map_err(|e| HostError::invalid(format!("{what}: the body is not JSON: {e}")))?
    };
    if !value.is_object() {
        return Err(HostError::invalid(format!(
            "{what}: the body must be a JSON object"
        )));
    }
    Ok(value)
}

/// The checks every body gets after the allowlists, as a second line: no key naming a
/// script anywhere, and every object naming both an index and a document id inside the
/// grant.
fn backstop(grants: &[String], what: &str, value: &Value) -> Result<(), HostError> {
    if let Some(path) = find_script(value) {
        return Err(HostError::denied(format!(
            "{what}: scripts are refused (`{path}`)"
        )));
    }
    check_references(grants, value).map_err(|e| e.context(what))
}

/// A search body (`search`): every key, query clause, aggregation, sort, highlight,
/// rescorer and suggester, at every depth, on the allowlists; `wrapper` queries decoded and
/// checked in place; no script; every lookup inside the grant. Returns the body to send:
/// exactly what was checked, wrappers inlined.
pub fn check_search(grants: &[String], what: &str, body: &str) -> Result<Value, HostError> {
    let mut value = parse_body(what, body)?;
    Dsl { grants }
        .search_body(&mut value)
        .map_err(|e| e.context(what))?;
    backstop(grants, what, &value)?;
    Ok(value)
}

/// A count body (`count`): only `query`, checked as in [`check_search`].
pub fn check_count(grants: &[String], what: &str, body: &str) -> Result<Value, HostError> {
    let mut value = parse_body(what, body)?;
    Dsl { grants }
        .count_body(&mut value)
        .map_err(|e| e.context(what))?;
    backstop(grants, what, &value)?;
    Ok(value)
}

/// The `index_patterns` of a template body: a string or a list of strings.
pub fn template_patterns(body: &Value) -> Result<Vec<String>, HostError> {
    let bad = || {
        HostError::invalid(
            "the template's `index_patterns` must be a pattern or a non-empty list of them",
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

/// Index settings a template may set (after any `index.` prefix), exactly.
const TEMPLATE_SETTINGS: &[&str] = &[
    "number_of_shards",
    "number_of_replicas",
    "auto_expand_replicas",
    "refresh_interval",
    "number_of_routing_shards",
    "codec",
    "query.default_field",
    "max_ngram_diff",
    "max_shingle_diff",
    "highlight.max_analyzed_offset",
];

/// Groups of index settings a template may set: text analysis, index sorting, mapping
/// limits and similarities, all about the index's own documents.
const TEMPLATE_SETTING_GROUPS: &[&str] = &["analysis.", "sort.", "mapping.", "similarity."];

/// Top-level keys of a template's `mappings`; `runtime` is not among them.
const MAPPING_KEYS: &[&str] = &[
    "properties",
    "dynamic",
    "dynamic_templates",
    "_source",
    "_routing",
    "date_detection",
    "numeric_detection",
    "dynamic_date_formats",
    "_meta",
    "subobjects",
    "enabled",
];

/// A template body: only `index_patterns` (each inside the grant), `template.settings`
/// (on an allowlist), `template.mappings` (without runtime fields), `priority`, `version` and
/// `_meta`; no script anywhere. Every other key is refused with `denied` naming it, among
/// them `composed_of`, `data_stream`, `template.aliases`, `template.lifecycle`, pipelines
/// and `lifecycle` settings.
pub fn check_template(grants: &[String], name: &str, body: &str) -> Result<Value, HostError> {
    let what = format!("index template `{name}`");
    if name.is_empty() || name.contains(['*', ',']) || name.starts_with('_') {
        return Err(HostError::invalid(format!(
            "{what}: a template name must be non-empty, without `*` or `,`, not starting with `_`"
        )));
    }
    let value = parse_body(&what, body)?;
    if let Some(path) = find_script(&value) {
        return Err(HostError::denied(format!(
            "{what}: scripts are refused (`{path}`)"
        )));
    }
    let refuse =
        |key: &str, why: &str| HostError::denied(format!("{what}: `{key}` is refused: {why}"));
    for (key, v) in value.as_object().into_iter().flatten() {
        match key.as_str() {
            // Priority only orders templates whose patterns overlap, all inside the grant
            // here; version and _meta are labels.
            "index_patterns" | "priority" | "version" | "_meta" => {}
            "template" => check_template_section(v, &refuse)?,
            "composed_of" | "ignore_missing_component_templates" => {
                return Err(refuse(
                    key,
                    "component templates are shared and can carry aliases, settings or \
                     pipelines reaching outside the grant",
                ));
            }
            "data_stream" => {
                return Err(refuse(
                    key,
                    "a data stream keeps its documents in hidden `.ds-…` indices, outside the grant",
                ));
            }
            _ => {
                return Err(refuse(
                    key,
                    "not an allowed key of an index template (allowed: index_patterns, \
                     template.settings, template.mappings, priority, version, _meta)",
                ));
            }
        }
    }
    for pattern in template_patterns(&value)? {
        if pattern.contains(',') {
            return Err(HostError::invalid(format!(
                "{what}: pattern `{pattern}` holds a `,`; list patterns separately"
            )));
        }
        check_target(grants, &pattern)
            .map_err(|e| e.context(format_args!("{what}: index_patterns")))?;
    }
    Ok(value)
}

fn check_template_section(
    v: &Value,
    refuse: &dyn Fn(&str, &str) -> HostError,
) -> Result<(), HostError> {
    let Some(map) = v.as_object() else {
        return Err(refuse("template", "it must be a JSON object"));
    };
    for (key, v) in map {
        let path = format!("template.{key}");
        match key.as_str() {
            "settings" => {
                let mut flat = Vec::new();
                flatten(v, "", &mut flat);
                for setting in flat {
                    check_template_setting(&setting, refuse)?;
                }
            }
            "mappings" => check_mappings(v, refuse)?,
            "aliases" => {
                return Err(refuse(
                    &path,
                    "an alias makes the template's indices answer to another name, which \
                     may lie outside the grant or take over a name others use",
                ));
            }
            "lifecycle" | "data_stream_options" => {
                return Err(refuse(&path, "data stream lifecycles are the operator's"));
            }
            _ => {
                return Err(refuse(
                    &path,
                    "not an allowed part of a template (allowed: settings, mappings)",
                ));
            }
        }
    }
    Ok(())
}

fn check_template_setting(
    setting: &str,
    refuse: &dyn Fn(&str, &str) -> HostError,
) -> Result<(), HostError> {
    let path = format!("template.settings.{setting}");
    let short = setting.strip_prefix("index.").unwrap_or(setting);
    if short.contains("pipeline") {
        return Err(refuse(
            &path,
            "an ingest pipeline runs on the server and can send documents to any index",
        ));
    }
    if short.starts_with("lifecycle.") {
        return Err(refuse(
            &path,
            "a lifecycle policy is shared, and can roll over, shrink or delete indices",
        ));
    }
    let allowed = TEMPLATE_SETTINGS.contains(&short)
        || TEMPLATE_SETTING_GROUPS.iter().any(|g| short.starts_with(g));
    if !allowed {
        return Err(refuse(
            &path,
            "not an allowed setting (allowed: number_of_shards, number_of_replicas, \
             auto_expand_replicas, refresh_interval, number_of_routing_shards, codec, \
             query.default_field, max_ngram_diff, max_shingle_diff, \
             highlight.max_analyzed_offset, analysis.*, sort.*, mapping.*, similarity.*)",
        ));
    }
    let last = short.rsplit('.').next().unwrap_or(short);
    if short.starts_with("analysis.") && (last.ends_with("_path") || last == "synonyms_set") {
        return Err(refuse(
            &path,
            "it reads a file or a synonyms set of the server, not the plugin's",
        ));
    }
    Ok(())
}

fn check_mappings(v: &Value, refuse: &dyn Fn(&str, &str) -> HostError) -> Result<(), HostError> {
    let Some(map) = v.as_object() else {
        return Err(refuse("template.mappings", "it must be a JSON object"));
    };
    for (key, v) in map {
        let path = format!("template.mappings.{key}");
        match key.as_str() {
            // A runtime field is a script, or (type `lookup`) a read of another index.
            "runtime" => return Err(refuse(&path, "runtime fields are refused")),
            "dynamic_templates" => {
                for (i, entry) in v.as_array().into_iter().flatten().enumerate() {
                    for (name, t) in entry.as_object().into_iter().flatten() {
                        if t.get("runtime").is_some() {
                            return Err(refuse(
                                &format!("{path}.{i}.{name}.runtime"),
                                "runtime fields are refused",
                            ));
                        }
                    }
                }
            }
            k if MAPPING_KEYS.contains(&k) => {}
            _ => return Err(refuse(&path, "not an allowed key of mappings")),
        }
    }
    Ok(())
}

/// Every leaf of `v` as a dotted key (`{"index": {"a": 1}}` gives `index.a`): settings may
/// be written nested or flat, and are compared in one form.
fn flatten(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                flatten(child, &at(prefix, k), out);
            }
        }
        _ => out.push(prefix.to_string()),
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
            Err(HostError {
                kind: Kind::Denied,
                ..
            })
        ));
        assert!(matches!(
            check_index(&grants, "catalog2"),
            Err(HostError {
                kind: Kind::Denied,
                ..
            })
        ));
        assert!(matches!(
            check_index(&grants, "audit-*"),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        assert!(matches!(
            check_index(&grants, "audit-a,users"),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        assert!(matches!(
            check_index(&grants, "_all"),
            Err(HostError {
                kind: Kind::Denied,
                ..
            })
        ));
        assert!(matches!(
            check_index(&grants, ""),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        assert!(matches!(
            check_index(&grants, "audit-a/b"),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        assert!(matches!(
            check_index(&["*".into()], ".."),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
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
            assert!(
                matches!(
                    e,
                    HostError {
                        kind: Kind::Denied,
                        ..
                    }
                ),
                "{refused}: {e:?}"
            );
        }
        for special in ["_all", "_local", "other:audit-x", "audit-a,_all"] {
            assert!(
                matches!(
                    check_target(&grants, special),
                    Err(HostError {
                        kind: Kind::Denied,
                        ..
                    })
                ),
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
                matches!(
                    check_target(&grants, malformed),
                    Err(HostError {
                        kind: Kind::Invalid,
                        ..
                    })
                ),
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
            Err(HostError {
                kind: Kind::Denied,
                ..
            })
        ));
        let mlt = json!({"query": {"more_like_this": {"like": [{"_index": "users", "_id": "1"}]}}});
        assert!(matches!(
            check_references(&grants, &mlt),
            Err(HostError {
                kind: Kind::Denied,
                ..
            })
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
        assert!(check_search(&grants, "search", "").unwrap().is_object());
        assert!(matches!(
            check_search(&grants, "search", "{"),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        assert!(matches!(
            check_search(&grants, "search", "[1]"),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        let script = r#"{"query":{"script":{"script":"true"}}}"#;
        assert!(matches!(
            check_search(&grants, "search", script),
            Err(HostError {
                kind: Kind::Denied,
                ..
            })
        ));
    }

    /// The outcome of checking `body` as a search body: `Ok` or the error's kind and text.
    fn search(body: &Value) -> Result<Value, HostError> {
        check_search(&g(&["audit-*"]), "search `audit-x`", &body.to_string())
    }

    fn denied(body: &Value) -> String {
        match search(body) {
            Err(HostError {
                kind: Kind::Denied,
                message: m,
                ..
            }) => m,
            other => panic!("{body}: expected denied, got {other:?}"),
        }
    }

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::STANDARD.encode(v.to_string())
    }

    #[test]
    fn allowed_bodies_pass_unchanged() {
        let bodies = [
            json!({"query": {"bool": {
                "must": [{"match": {"title": "bunny"}}, {"multi_match": {"query": "x", "fields": ["a", "b"]}}],
                "filter": {"range": {"views": {"gte": 10}}},
                "should": [{"term": {"genre": "animation"}}, {"terms": {"genre": ["a", "b"]}}],
                "must_not": [{"exists": {"field": "deleted"}}, {"ids": {"values": ["1"]}}],
                "minimum_should_match": 1}},
             "sort": [{"views": "desc"}, "_score", {"n": {"order": "asc", "nested": {"path": "n", "filter": {"term": {"n.x": 1}}}}}],
             "size": 10, "from": 0, "_source": ["title"], "track_total_hits": true,
             "aggs": {"genres": {"terms": {"field": "genre"},
                                  "aggs": {"top": {"top_hits": {"size": 1, "sort": [{"views": "desc"}]}},
                                           "only": {"filter": {"prefix": {"title": "b"}}}}},
                      "views": {"sum": {"field": "views"}},
                      "f": {"filters": {"filters": {"a": {"match_all": {}}, "b": {"wildcard": {"t": "x*"}}}}}},
             "post_filter": {"constant_score": {"filter": {"query_string": {"query": "title:x"}}}},
             "highlight": {"fields": {"title": {"highlight_query": {"match": {"title": "x"}}}}},
             "collapse": {"field": "user", "inner_hits": {"name": "last", "size": 1}},
             "rescore": {"window_size": 10, "query": {"rescore_query": {"match_phrase": {"t": "a b"}}}},
             "suggest": {"s": {"text": "bunnny", "term": {"field": "title"}}},
             "search_after": [1, "x"]}),
            json!({"query": {"function_score": {"query": {"match_all": {}},
                    "functions": [{"filter": {"term": {"a": 1}}, "weight": 2}, {"gauss": {"d": {"origin": 0, "scale": 1}}}],
                    "boost_mode": "sum"}}}),
            json!({"query": {"dis_max": {"queries": [{"fuzzy": {"t": "bunny"}}, {"regexp": {"t": {"value": "b.*", "max_determinized_states": 100}}}]}}}),
            json!({"query": {"nested": {"path": "n", "query": {"match": {"n.x": "y"}}, "inner_hits": {"size": 2}}}}),
            json!({"query": {"terms": {"user": {"index": "audit-users", "id": "1", "path": "ids"}}}}),
            json!({"query": {"more_like_this": {"fields": ["t"], "like": [{"_index": "audit-x", "_id": "1"}, "text"]}}}),
            json!({"query": {"pinned": {"docs": [{"_index": "audit-x", "_id": "1"}], "organic": {"match_all": {}}}}}),
            json!({"query": {"geo_shape": {"loc": {"indexed_shape": {"index": "audit-shapes", "id": "1"}}}}}),
            json!({"indices_boost": [{"audit-a": 2.0}]}),
        ];
        for body in bodies {
            assert_eq!(search(&body).unwrap(), body);
        }
        let count = check_count(&g(&["audit-*"]), "count", r#"{"query":{"match_all":{}}}"#);
        assert!(count.is_ok());
    }

    #[test]
    fn unknown_kinds_and_keys_are_refused_with_their_path() {
        let m =
            denied(&json!({"query": {"bool": {"filter": [{"term": {"a": 1}}, {"no_such": {}}]}}}));
        assert!(
            m.contains("`query.bool.filter.1.no_such`: not an allowed query kind"),
            "{m}"
        );
        let m = denied(&json!({"query": {"match_all": {}}, "pit": {"id": "x"}}));
        assert!(m.contains("`pit`"), "{m}");
        for body in [
            json!({"ext": {}}),
            json!({"slice": {"id": 0, "max": 2}}),
            json!({"retriever": {"standard": {"query": {"match_all": {}}}}}),
            json!({"query": {"rule": {"ruleset_ids": ["r"], "match_criteria": {}, "organic": {"match_all": {}}}}}),
            json!({"query": {"bool": {"must": {"match_all": {}}, "extra": {"match_all": {}}}}}),
            json!({"aggs": {"a": {"no_such_agg": {}}}}),
            json!({"knn": {"field": "v", "query_vector_builder": {"text_embedding": {"model_id": "m"}}}}),
            json!({"rescore": {"learning_to_rank": {"model_id": "m"}}}),
            json!({"collapse": {"field": "u", "inner_hits": {"script_fields": {}}}}),
            json!({"query": {"regexp": {"t": {"value": "a.*", "max_determinized_states": 1_000_000}}}}),
        ] {
            denied(&body);
        }
        // Shapes Elasticsearch could not read either are malformed, not refused.
        for body in [
            json!({"query": {"term": {"a": 1}, "match_all": {}}}),
            json!({"query": "x"}),
            json!({"aggs": {"a": {"terms": {"field": "x"}, "sum": {"field": "y"}}}}),
        ] {
            assert!(
                matches!(
                    search(&body),
                    Err(HostError {
                        kind: Kind::Invalid,
                        ..
                    })
                ),
                "{body}"
            );
        }
        assert!(matches!(
            check_count(&g(&["audit-*"]), "count", r#"{"size":1}"#),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
    }

    #[test]
    fn scripts_are_refused_in_every_place() {
        for body in [
            json!({"query": {"script": {"script": "true"}}}),
            json!({"query": {"script_score": {"query": {"match_all": {}}, "script": {"source": "1"}}}}),
            json!({"query": {"function_score": {"functions": [{"script_score": {"script": "1"}}]}}}),
            json!({"query": {"function_score": {"script_score": {"script": "1"}}}}),
            json!({"sort": {"_script": {"type": "number", "script": "1"}}}),
            json!({"sort": ["_script"]}),
            json!({"aggs": {"a": {"terms": {"script": "doc.x"}}}}),
            json!({"aggs": {"a": {"terms": {"field": "x"}, "aggs": {"b": {"bucket_script": {"buckets_path": {}, "script": "1"}}}}}}),
            json!({"aggs": {"a": {"bucket_selector": {"buckets_path": {}, "script": "1"}}}}),
            json!({"aggs": {"a": {"scripted_metric": {"map_script": "1"}}}}),
            json!({"aggs": {"a": {"moving_fn": {"buckets_path": "x", "window": 2, "script": "1"}}}}),
            json!({"runtime_mappings": {"r": {"type": "long"}}}),
            json!({"script_fields": {"f": {"script": "1"}}}),
            json!({"query": {"terms_set": {"t": {"terms": ["a"], "minimum_should_match_script": {"source": "1"}}}}}),
            json!({"suggest": {"s": {"text": "x", "phrase": {"field": "t", "collate": {"query": {"source": "{}"}}}}}}),
            json!({"aggs": {"a": {"top_hits": {"script_fields": {"f": {"script": "1"}}}}}}),
        ] {
            let m = denied(&body);
            assert!(m.contains("script"), "{body}: {m}");
        }
    }

    #[test]
    fn lookups_must_name_granted_indices() {
        for body in [
            json!({"query": {"terms": {"u": {"index": "users", "id": "1", "path": "p"}}}}),
            json!({"query": {"more_like_this": {"like": {"_index": "users", "_id": "1"}}}}),
            json!({"query": {"more_like_this": {"unlike": [{"_index": "users", "_id": "1"}]}}}),
            json!({"query": {"pinned": {"docs": [{"_index": "users", "_id": "1"}], "organic": {"match_all": {}}}}}),
            json!({"query": {"geo_shape": {"loc": {"indexed_shape": {"index": "users", "id": "1"}}}}}),
            // No index named: Elasticsearch reads the index `shapes`.
            json!({"query": {"geo_shape": {"loc": {"indexed_shape": {"id": "1"}}}}}),
            json!({"query": {"percolate": {"field": "q", "index": "users", "id": "1"}}}),
            json!({"indices_boost": [{"users": 2}]}),
            json!({"query": {"bool": {"filter": {"nested": {"path": "n", "query": {"terms": {"u": {"index": "users", "id": "1", "path": "p"}}}}}}}}),
        ] {
            denied(&body);
        }
        assert!(matches!(
            search(&json!({"query": {"terms": {"u": {"index": "_all", "id": "1", "path": "p"}}}})),
            Err(HostError {
                kind: Kind::Denied,
                ..
            })
        ));
        assert!(matches!(
            search(&json!({"query": {"terms": {"u": {"id": "1", "path": "p"}}}})),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
    }

    #[test]
    fn wrappers_are_decoded_checked_and_inlined() {
        let inner = json!({"term": {"genre": "animation"}});
        let checked = search(&json!({"query": {"wrapper": {"query": b64(&inner)}}})).unwrap();
        assert_eq!(checked, json!({"query": inner}));
        // Wrapped twice, inside a bool: inlined all the way down.
        let twice = json!({"wrapper": {"query": b64(&json!({"wrapper": {"query": b64(&inner)}}))}});
        let checked = search(&json!({"query": {"bool": {"filter": [twice]}}})).unwrap();
        assert_eq!(checked, json!({"query": {"bool": {"filter": [inner]}}}));
        // What a wrapper hides is checked like the rest.
        let lookup = json!({"terms": {"u": {"index": "users", "id": "1", "path": "p"}}});
        let m = denied(&json!({"query": {"wrapper": {"query": b64(&lookup)}}}));
        assert!(m.contains("`users`"), "{m}");
        let script = json!({"script": {"script": "true"}});
        denied(&json!({"query": {"wrapper": {"query": b64(&script)}}}));
        let nested_script = json!({"wrapper": {"query": b64(&script)}});
        denied(&json!({"aggs": {"a": {"filter": {"wrapper": {"query": b64(&nested_script)}}}}}));
        // Not base64, not JSON, or extra keys: malformed.
        for wrapper in [
            json!({"query": "***"}),
            json!({"query": base64::engine::general_purpose::STANDARD.encode("term: {a: 1}")}),
            json!({"query": b64(&inner), "boost": 2}),
        ] {
            assert!(
                matches!(
                    search(&json!({"query": {"wrapper": wrapper}})),
                    Err(HostError {
                        kind: Kind::Invalid,
                        ..
                    })
                ),
                "{wrapper}"
            );
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut q = json!({"match_all": {}});
        for _ in 0..MAX_DEPTH + 2 {
            q = json!({"bool": {"filter": q}});
        }
        assert!(matches!(
            search(&json!({"query": q})),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        // Wrappers count as levels too: base64 cannot reset the depth. (Few of them: each
        // level of base64 makes the text a third longer.)
        let mut q = json!({"match_all": {}});
        for _ in 0..10 {
            q = json!({"wrapper": {"query": b64(&q)}});
        }
        assert!(search(&json!({"query": q.clone()})).is_ok());
        for _ in 0..MAX_DEPTH - 5 {
            q = json!({"bool": {"filter": q}});
        }
        assert!(matches!(
            search(&json!({"query": q})),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
    }

    #[test]
    fn names_the_server_would_decode_differently_are_refused() {
        let grants = g(&["audit-*"]);
        for name in ["audit-%2e%2e", "audit-a%2Cusers", "audit-x?pretty"] {
            assert!(
                matches!(
                    check_target(&grants, name),
                    Err(HostError {
                        kind: Kind::Invalid,
                        ..
                    })
                ),
                "{name}"
            );
            assert!(check_index(&grants, name).is_err(), "{name}");
        }
    }

    fn template(body: &Value) -> Result<Value, HostError> {
        check_template(&g(&["audit-*"]), "t", &body.to_string())
    }

    #[test]
    fn templates_stay_inside_the_grant() {
        let ok = json!({"index_patterns": ["audit-events-*", "audit-x"], "priority": 10, "version": 3,
            "_meta": {"owner": "auditor"},
            "template": {
                "settings": {"number_of_shards": 1, "index": {"number_of_replicas": 0, "refresh_interval": "1s"},
                             "index.analysis.analyzer.folded": {"tokenizer": "standard", "filter": ["lowercase"]}},
                "mappings": {"dynamic": "strict", "properties": {"code": {"type": "keyword", "copy_to": "all"}, "all": {"type": "text"}}}}});
        assert_eq!(template(&ok).unwrap(), ok);
        assert!(template(&json!({"index_patterns": "audit-*"})).is_ok());
        for (body, key) in [
            (json!({"index_patterns": ["audit-*", "users-*"]}), "users-*"),
            (json!({"index_patterns": ["*"]}), "`*`"),
            (
                json!({"index_patterns": ["audit-*"], "composed_of": ["c"]}),
                "`composed_of`",
            ),
            (
                json!({"index_patterns": ["audit-*"], "composed_of": []}),
                "`composed_of`",
            ),
            (
                json!({"index_patterns": ["audit-*"], "data_stream": {}}),
                "`data_stream`",
            ),
            (
                json!({"index_patterns": ["audit-*"], "allow_auto_create": true}),
                "`allow_auto_create`",
            ),
            (
                json!({"index_patterns": ["audit-*"], "template": {"aliases": {"audit-all": {}}}}),
                "`template.aliases`",
            ),
            (
                json!({"index_patterns": ["audit-*"], "template": {"lifecycle": {"data_retention": "1d"}}}),
                "`template.lifecycle`",
            ),
            (
                json!({"index_patterns": ["audit-*"], "template": {"settings": {"index": {"default_pipeline": "p"}}}}),
                "default_pipeline",
            ),
            (
                json!({"index_patterns": ["audit-*"], "template": {"settings": {"index.final_pipeline": "p"}}}),
                "final_pipeline",
            ),
            (
                json!({"index_patterns": ["audit-*"], "template": {"settings": {"index.lifecycle.name": "p"}}}),
                "lifecycle.name",
            ),
            (
                json!({"index_patterns": ["audit-*"], "template": {"settings": {"index.routing.allocation.require._name": "n"}}}),
                "routing.allocation",
            ),
            (
                json!({"index_patterns": ["audit-*"], "template": {"settings": {"index.hidden": true}}}),
                "hidden",
            ),
            (
                json!({"index_patterns": ["audit-*"], "template": {"settings": {"analysis": {"filter": {"s": {"type": "synonym", "synonyms_path": "/etc/passwd"}}}}}}),
                "synonyms_path",
            ),
            (
                json!({"index_patterns": ["audit-*"], "template": {"mappings": {"runtime": {"f": {"type": "keyword"}}}}}),
                "runtime",
            ),
            (
                json!({"index_patterns": ["audit-*"], "template": {"mappings": {"runtime": {"f": {"type": "long", "script": "emit(1)"}}}}}),
                "script",
            ),
            (
                json!({"index_patterns": ["audit-*"], "template": {"mappings": {"dynamic_templates": [{"d": {"match": "*", "runtime": {}}}]}}}),
                "runtime",
            ),
        ] {
            match template(&body) {
                Err(HostError {
                    kind: Kind::Denied,
                    message: m,
                    ..
                }) => assert!(m.contains(key), "{body}: {m}"),
                other => panic!("{body}: expected denied naming {key}, got {other:?}"),
            }
        }
        for body in [
            json!({"index_patterns": []}),
            json!({"template": {}}),
            json!({"index_patterns": ["audit-a,users"]}),
        ] {
            assert!(
                matches!(
                    template(&body),
                    Err(HostError {
                        kind: Kind::Invalid,
                        ..
                    })
                ),
                "{body}"
            );
        }
        for name in ["", "t*", "a,b", "_t"] {
            assert!(
                matches!(
                    check_template(&g(&["audit-*"]), name, &ok.to_string()),
                    Err(HostError {
                        kind: Kind::Invalid,
                        ..
                    })
                ),
                "{name}"
            );
        }
    }
}
