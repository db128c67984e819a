//! What a document argument may say: checked on the parsed BSON the server will receive,
//! at every depth.
//!
//! The contract has no `aggregate`, no `runCommand` and no pipeline-style update (an update
//! is a document of operators, never an array), so every collection a call touches is the
//! one it names, which [`super::check_collection`] checks, unless a document argument
//! names another. Two things in a document can: an aggregation stage (`$lookup`,
//! `$unionWith`, `$out`, `$merge`, …, which a server might accept inside some expression
//! form) and a database reference (`{"$ref": …, "$db": …}`, a `DBPointer` value). So:
//!
//! - **Operators are allowlisted.** Every `$`-prefixed key, at any depth of a filter,
//!   update, sort, projection or document, must be a query, update, projection or
//!   aggregation-expression operator of [`ALLOWED`]: none of those reads or writes a
//!   collection other than the one the call names, and none runs code. The stages and
//!   commands that touch other collections or the server's state, and the operators that
//!   run JavaScript ([`REFUSED`]), give `denied`; any other `$` key gives `invalid`
//!   (unknown to this host, so never sent).
//! - **Code is refused**: a JavaScript value (`{"$code": …}`) anywhere gives `denied`.
//! - **References stay inside the grant**: a `DBRef` (`$ref`, `$id`, optional `$db`) must
//!   name a granted collection and no other database; a `DBPointer` (deprecated, names a
//!   namespace) is refused. The server never follows a reference on its own (there is no
//!   `$lookup` here), but a plugin should not store a pointer its readers would follow out
//!   of the grant.

use mongodb::bson::{Bson, Document};

use super::Grant;
use crate::budget;
use crate::error::HostError;

/// The operators (and operator-position keywords) a document argument may hold: MongoDB's
/// query, update, projection and aggregation-expression operators that act on the named
/// collection's documents only.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    // Query: comparison, logical, element, evaluation (not `$where`), array, bitwise,
    // geospatial, text, comment.
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$and", "$or", "$nor", "$not",
    "$exists", "$type", "$expr", "$jsonSchema", "$mod", "$regex", "$options", "$text",
    "$search", "$language", "$caseSensitive", "$diacriticSensitive", "$all", "$elemMatch",
    "$size", "$bitsAllClear", "$bitsAllSet", "$bitsAnyClear", "$bitsAnySet", "$geoIntersects",
    "$geoWithin", "$near", "$nearSphere", "$box", "$center", "$centerSphere", "$geometry",
    "$maxDistance", "$minDistance", "$polygon", "$comment", "$sampleRate",
    // Update operators and their modifiers.
    "$currentDate", "$inc", "$min", "$max", "$mul", "$rename", "$set", "$setOnInsert",
    "$unset", "$addToSet", "$pop", "$pull", "$push", "$pullAll", "$each", "$position",
    "$slice", "$sort", "$bit",
    // Projection and sort.
    "$meta",
    // Aggregation expressions (inside `$expr` or a projection): arithmetic.
    "$abs", "$add", "$ceil", "$divide", "$exp", "$floor", "$ln", "$log", "$log10", "$multiply",
    "$pow", "$round", "$sqrt", "$subtract", "$trunc",
    // Arrays.
    "$arrayElemAt", "$arrayToObject", "$concatArrays", "$filter", "$first", "$firstN",
    "$indexOfArray", "$isArray", "$last", "$lastN", "$map", "$maxN", "$minN",
    "$objectToArray", "$range", "$reduce", "$reverseArray", "$sortArray", "$zip",
    // Comparison, conditionals, literals, objects, variables.
    "$cmp", "$cond", "$ifNull", "$switch", "$literal", "$mergeObjects", "$getField",
    "$setField", "$unsetField", "$let", "$rand",
    // Sets.
    "$allElementsTrue", "$anyElementTrue", "$setDifference", "$setEquals",
    "$setIntersection", "$setIsSubset", "$setUnion",
    // Strings.
    "$concat", "$indexOfBytes", "$indexOfCP", "$ltrim", "$regexFind", "$regexFindAll",
    "$regexMatch", "$replaceOne", "$replaceAll", "$rtrim", "$split", "$strLenBytes",
    "$strLenCP", "$strcasecmp", "$substr", "$substrBytes", "$substrCP", "$toLower",
    "$toUpper", "$trim",
    // Types.
    "$convert", "$isNumber", "$toBool", "$toDate", "$toDecimal", "$toDouble", "$toInt",
    "$toLong", "$toObjectId", "$toString",
    // Dates.
    "$dateAdd", "$dateDiff", "$dateFromParts", "$dateFromString", "$dateSubtract",
    "$dateToParts", "$dateToString", "$dateTrunc", "$dayOfMonth", "$dayOfWeek",
    "$dayOfYear", "$hour", "$isoDayOfWeek", "$isoWeek", "$isoWeekYear", "$millisecond",
    "$minute", "$month", "$second", "$week", "$year",
    // Accumulator-style expressions usable on arrays in an expression.
    "$avg", "$sum", "$stdDevPop", "$stdDevSamp",
];

/// Keys refused as `denied`: what runs code, and the stages and commands that read or
/// write another collection or database, or the server's own state.
#[rustfmt::skip]
const REFUSED: &[&str] = &[
    "$where", "$function", "$accumulator", "$code", "$lookup", "$graphLookup", "$unionWith",
    "$facet", "$out", "$merge", "$documents", "$collStats", "$indexStats", "$currentOp",
    "$listSessions", "$listLocalSessions", "$changeStream", "$changeStreamSplitLargeEvent",
    "$planCacheStats", "$listSearchIndexes", "$listSampledQueries", "$shardedDataDistribution",
    "$querySettings", "$search", "$searchMeta", "$vectorSearch", "$sql",
];

/// A DBRef's keys.
const DBREF: [&str; 3] = ["$ref", "$id", "$db"];

/// What the document arguments of one plugin's calls are checked against.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scope<'a> {
    pub grant: &'a Grant,
    pub plugin: &'a str,
    /// `limits.max_value_bytes`: the most one document argument's text may take.
    pub max_value_bytes: usize,
}

impl Scope<'_> {
    /// Parses `text` (relaxed Extended JSON) as a document; `what` names it in errors.
    /// Refuses documents that are too large, carry code, or reach out of the grant.
    pub fn document(&self, what: &str, text: &str) -> Result<Document, HostError> {
        // Before parsing, so a huge text costs no more than its length check.
        budget::check_value(
            text.len(),
            self.max_value_bytes,
            &format!("documents: {what}"),
        )?;
        let json: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| HostError::invalid(format!("{what} is not valid JSON: {e}")))?;
        if !json.is_object() {
            return Err(HostError::invalid(format!(
                "{what} must be a JSON object, not `{}`",
                super::truncate(text)
            )));
        }
        let doc = match Bson::try_from(json) {
            Ok(Bson::Document(doc)) => doc,
            // An object that is itself one Extended JSON value, e.g. `{"$oid": "…"}`.
            Ok(other) => {
                return Err(HostError::invalid(format!(
                    "{what} must be a document, not a single {:?} value",
                    other.element_type()
                )));
            }
            Err(e) => {
                return Err(HostError::invalid(format!(
                    "{what} is not valid Extended JSON: {e}"
                )));
            }
        };
        self.check(what, &doc)?;
        Ok(doc)
    }

    /// An optional document argument.
    pub fn optional(&self, what: &str, text: Option<&str>) -> Result<Option<Document>, HostError> {
        text.map(|t| self.document(what, t)).transpose()
    }

    /// An update: a non-empty document of update operators only (`$set`, `$inc`, …).
    pub fn update(&self, text: &str) -> Result<Document, HostError> {
        let update = self.document("the update", text)?;
        if update.is_empty() {
            return Err(HostError::invalid("the update is empty".to_string()));
        }
        if let Some(key) = update.keys().find(|k| !k.starts_with('$')) {
            return Err(HostError::invalid(format!(
                "the update may hold only update operators (`$set`, `$inc`, …), not the field \
                 `{key}`; to replace a whole document use `upsert` or a `replace` op"
            )));
        }
        Ok(update)
    }

    /// A replacement: a whole document, without update operators.
    pub fn replacement(&self, text: &str) -> Result<Document, HostError> {
        let replacement = self.document("the replacement", text)?;
        if let Some(key) = replacement.keys().find(|k| k.starts_with('$')) {
            return Err(HostError::invalid(format!(
                "the replacement is a whole document and may not hold the operator `{key}`; \
                 to apply operators use `update`"
            )));
        }
        Ok(replacement)
    }

    /// Walks `doc` at every depth; see the module docs.
    fn check(&self, what: &str, doc: &Document) -> Result<(), HostError> {
        if doc.contains_key("$ref") {
            self.check_dbref(what, doc)?;
        }
        for (key, value) in doc {
            if key.starts_with('$') && !DBREF.contains(&key.as_str()) {
                if REFUSED.contains(&key.as_str()) {
                    return Err(HostError::denied(format!(
                        "{what} contains `{key}`: filters, updates and documents are values \
                         over the named collection, never code or another collection"
                    )));
                }
                if !ALLOWED.contains(&key.as_str()) {
                    return Err(HostError::invalid(format!(
                        "{what} contains `{key}`, which is not a query, update, projection or \
                         expression operator this host passes on"
                    )));
                }
            }
            self.check_value(what, value)?;
        }
        Ok(())
    }

    fn check_value(&self, what: &str, value: &Bson) -> Result<(), HostError> {
        match value {
            Bson::Document(d) => self.check(what, d),
            Bson::Array(items) => items.iter().try_for_each(|v| self.check_value(what, v)),
            Bson::JavaScriptCode(_) | Bson::JavaScriptCodeWithScope(_) => {
                Err(HostError::denied(format!(
                    "{what} contains a JavaScript value: filters, updates and documents are \
                     values, never code"
                )))
            }
            Bson::DbPointer(_) => Err(HostError::denied(format!(
                "{what} contains a DBPointer, which names a namespace; use the granted \
                 collections' ids instead"
            ))),
            _ => Ok(()),
        }
    }

    /// A `DBRef` must name a granted collection, in the granted database.
    fn check_dbref(&self, what: &str, doc: &Document) -> Result<(), HostError> {
        let Some(Bson::String(collection)) = doc.get("$ref") else {
            return Err(HostError::invalid(format!(
                "{what} holds a `$ref` that is not a collection name"
            )));
        };
        if let Some(db) = doc.get("$db")
            && db.as_str() != Some(self.grant.database.as_str())
        {
            return Err(HostError::denied(format!(
                "{what} holds a reference into the database {db}: plugin `{}` has only `{}`",
                self.plugin, self.grant.database
            )));
        }
        super::check_collection(self.grant, self.plugin, collection)
            .map_err(|e| e.context(format_args!("{what} holds a reference")))
    }
}

/// `Ok` when `grant` lists `collection`, else `denied` naming both.
pub(super) fn check_collection(
    grant: &Grant,
    plugin: &str,
    collection: &str,
) -> Result<(), HostError> {
    if grant.collections.iter().any(|c| c == collection) {
        Ok(())
    } else {
        Err(HostError::denied(format!(
            "plugin `{plugin}` may not use collection `{collection}`: \
             grants.documents.collections is {:?}",
            grant.collections
        )))
    }
}

/// `Ok` when `grant` lists `bucket`, else `denied` naming both.
pub(super) fn check_bucket(grant: &Grant, plugin: &str, bucket: &str) -> Result<(), HostError> {
    if grant.buckets.iter().any(|b| b == bucket) {
        Ok(())
    } else {
        Err(HostError::denied(format!(
            "plugin `{plugin}` may not use blob bucket `{bucket}`: \
             grants.documents.buckets is {:?}",
            grant.buckets
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use super::*;
    use crate::error::Kind;

    fn grant() -> Grant {
        Grant {
            database: "streaming".into(),
            collections: vec!["videos".into(), "channels".into()],
            buckets: vec!["thumbnails".into()],
        }
    }

    fn check(text: &str) -> Result<Document, HostError> {
        let g = grant();
        Scope {
            grant: &g,
            plugin: "p",
            max_value_bytes: 1 << 20,
        }
        .document("the filter", text)
    }

    #[test]
    fn stages_and_code_are_denied_at_any_depth() {
        for case in [
            r#"{"$lookup": {"from": "secrets", "as": "x"}}"#,
            r#"{"$expr": {"$lookup": {"from": "secrets"}}}"#,
            r#"{"$and": [{"a": 1}, {"$expr": {"$unionWith": "secrets"}}]}"#,
            r#"{"a": {"$elemMatch": {"$facet": {"x": [{"$lookup": {"from": "s"}}]}}}}"#,
            r#"{"$or": [{"$expr": {"$graphLookup": {"from": "s"}}}]}"#,
            r#"{"$out": "secrets"}"#,
            r#"{"$set": {"a": {"$merge": {"into": "secrets"}}}}"#,
            r#"{"$documents": [{"a": 1}]}"#,
            r#"{"$collStats": {}}"#,
            r#"{"$currentOp": {}}"#,
            r#"{"$listSessions": {}}"#,
            r#"{"$changeStream": {}}"#,
            r#"{"$and": [{"$and": [{"$and": [{"$where": "true"}]}]}]}"#,
            r#"{"$expr": {"$cond": [{"$function": {"body": "f", "args": [], "lang": "js"}}, 1, 0]}}"#,
            r#"{"a": {"$code": "function() {}"}}"#,
        ] {
            assert!(
                matches!(
                    check(case),
                    Err(HostError {
                        kind: Kind::Denied,
                        ..
                    })
                ),
                "{case}"
            );
        }
    }

    #[test]
    fn unknown_operators_are_invalid_and_known_ones_pass() {
        assert!(matches!(
            check(r#"{"a": {"$nosuchop": 1}}"#),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        for case in [
            r#"{"a": {"$gt": 1, "$lt": 5}, "$or": [{"b": {"$in": [1]}}, {"c": {"$exists": true}}]}"#,
            r#"{"$expr": {"$eq": [{"$add": ["$a", 1]}, {"$size": "$tags"}]}}"#,
            r#"{"$push": {"tags": {"$each": ["x"], "$slice": -5}}, "$inc": {"n": 1}}"#,
            r#"{"title": "$lookup", "tags": ["$where", "$out"]}"#,
        ] {
            assert!(check(case).is_ok(), "{case}");
        }
    }

    #[test]
    fn references_stay_in_the_grant() {
        assert!(check(r#"{"owner": {"$ref": "channels", "$id": 1}}"#).is_ok());
        assert!(check(r#"{"owner": {"$ref": "channels", "$id": 1, "$db": "streaming"}}"#).is_ok());
        for case in [
            r#"{"owner": {"$ref": "secrets", "$id": 1}}"#,
            r#"{"owner": {"$ref": "channels", "$id": 1, "$db": "admin"}}"#,
            r#"{"a": [{"b": {"$ref": "system.js", "$id": 1}}]}"#,
            r#"{"p": {"$dbPointer": {"$ref": "other.coll", "$id": {"$oid": "65f000000000000000000001"}}}}"#,
        ] {
            assert!(
                matches!(
                    check(case),
                    Err(HostError {
                        kind: Kind::Denied,
                        ..
                    })
                ),
                "{case}"
            );
        }
    }

    #[test]
    fn documents_over_the_value_cap_are_invalid() {
        let g = grant();
        let scope = Scope {
            grant: &g,
            plugin: "p",
            max_value_bytes: 16,
        };
        assert!(scope.document("d", r#"{"a": 1}"#).is_ok());
        let e = scope.document("d", r#"{"a": "0123456789"}"#).unwrap_err();
        assert!(
            matches!(e, HostError { kind: Kind::Invalid, message: ref m, .. } if m.contains("limits.max_value_bytes")),
            "{e}"
        );
    }

    fn scope(g: &Grant) -> Scope<'_> {
        Scope {
            grant: g,
            plugin: "p",
            max_value_bytes: 1 << 20,
        }
    }

    fn parse_document(what: &str, text: &str) -> Result<Document, HostError> {
        scope(&grant()).document(what, text)
    }

    fn parse_update(text: &str) -> Result<Document, HostError> {
        scope(&grant()).update(text)
    }

    fn parse_replacement(text: &str) -> Result<Document, HostError> {
        scope(&grant()).replacement(text)
    }

    #[test]
    fn only_granted_collections_pass() {
        assert!(check_collection(&grant(), "p", "videos").is_ok());
        for name in [
            "Videos",
            "videos ",
            "video",
            "videos.files",
            "",
            "thumbnails",
        ] {
            let err = check_collection(&grant(), "p", name).unwrap_err();
            assert!(
                matches!(err, HostError { kind: Kind::Denied, message: ref m, .. } if m.contains("`p`")),
                "{name}"
            );
        }
    }

    #[test]
    fn only_granted_buckets_pass() {
        assert!(check_bucket(&grant(), "p", "thumbnails").is_ok());
        for name in ["videos", "thumbnails.files", "banners", ""] {
            assert!(matches!(
                check_bucket(&grant(), "p", name),
                Err(HostError {
                    kind: Kind::Denied,
                    ..
                })
            ));
        }
    }

    #[test]
    fn code_is_found_at_any_depth() {
        let cases = [
            r#"{"$where": "this.a == 1"}"#,
            r#"{"a": {"$function": {"body": "x", "args": [], "lang": "js"}}}"#,
            r#"{"$expr": {"$and": [{"$eq": [1, 1]}, {"$function": {}}]}}"#,
            r#"{"$or": [{"a": 1}, {"b": [{"c": {"$accumulator": {}}}]}]}"#,
            r#"{"a": {"$code": "function() {}"}}"#,
            r#"{"a": [[{"$code": "f()", "$scope": {}}]]}"#,
        ];
        for case in cases {
            let err = parse_document("the filter", case).unwrap_err();
            assert!(
                matches!(
                    err,
                    HostError {
                        kind: Kind::Denied,
                        ..
                    }
                ),
                "{case}: {err}"
            );
        }
    }

    #[test]
    fn plain_values_are_not_code() {
        let cases = [
            r#"{"where": "$where", "title": "$function", "tags": ["$accumulator"]}"#,
            r#"{"a": {"$gt": 1}, "b": {"$in": [1, 2]}, "$expr": {"$eq": ["$x", "$y"]}}"#,
        ];
        for case in cases {
            assert!(parse_document("the filter", case).is_ok(), "{case}");
        }
    }

    #[test]
    fn documents_parse_as_relaxed_extended_json() {
        let doc = parse_document(
            "d",
            r#"{"_id": {"$oid": "65f000000000000000000001"}, "at": {"$date": "2024-01-02T03:04:05Z"},
                "n": 1, "big": 5000000000, "x": 1.5, "bin": {"$binary": {"base64": "AAE=", "subType": "00"}}}"#,
        )
        .unwrap();
        assert!(matches!(doc.get("_id"), Some(Bson::ObjectId(_))));
        assert!(matches!(doc.get("at"), Some(Bson::DateTime(_))));
        assert_eq!(doc.get("n"), Some(&Bson::Int32(1)));
        assert_eq!(doc.get("big"), Some(&Bson::Int64(5_000_000_000)));
        assert_eq!(doc.get("x"), Some(&Bson::Double(1.5)));
        assert!(matches!(doc.get("bin"), Some(Bson::Binary(b)) if b.bytes == [0, 1]));
        let back: serde_json::Value = serde_json::from_str(&render(Bson::Document(doc))).unwrap();
        assert_eq!(back["_id"]["$oid"], "65f000000000000000000001");
        assert_eq!(back["at"]["$date"], "2024-01-02T03:04:05Z");
        assert_eq!(back["big"], 5_000_000_000_i64);
    }

    #[test]
    fn malformed_documents_are_invalid() {
        for case in [
            "",
            "{",
            "[1]",
            "42",
            r#""s""#,
            r#"{"$oid": "65f000000000000000000001"}"#,
            r#"{"a": {"$date": "not a date"}}"#,
        ] {
            assert!(
                matches!(
                    parse_document("d", case),
                    Err(HostError {
                        kind: Kind::Invalid,
                        ..
                    })
                ),
                "{case}"
            );
        }
    }

    #[test]
    fn updates_are_operators_and_replacements_are_not() {
        assert!(parse_update(r#"{"$set": {"a": 1}, "$inc": {"n": 1}}"#).is_ok());
        for bad in ["{}", r#"{"a": 1}"#, r#"{"$set": {"a": 1}, "b": 2}"#] {
            assert!(
                matches!(
                    parse_update(bad),
                    Err(HostError {
                        kind: Kind::Invalid,
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert!(parse_replacement(r#"{"a": 1}"#).is_ok());
        assert!(parse_replacement("{}").is_ok());
        assert!(matches!(
            parse_replacement(r#"{"a": 1, "$set": {"b": 1}}"#),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        assert!(matches!(
            parse_update(r#"{"$set": {"$where": 1}}"#),
            Err(HostError {
                kind: Kind::Denied,
                ..
            })
        ));
    }
}
