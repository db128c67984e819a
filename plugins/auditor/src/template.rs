//! The index template every `audit-events-*` index is created from.

use serde_json::{Value, json};

/// The template's name. Template names are not scoped by the search grant; its
/// `index_patterns` are, and lie inside `audit-events-*`.
pub const NAME: &str = "audit-events";

/// Bumped whenever [`body`] changes, so a template in place can be told apart.
pub const VERSION: u64 = 2;

/// Leaf values of `data` longer than this are kept in `_source` and `data_text` but not
/// indexed as keywords: an asset's base64 bytes would otherwise exceed Lucene's
/// 32 766-byte term limit and the whole document would be refused.
pub const DATA_IGNORE_ABOVE: u64 = 1024;

/// How soon an audit document is searchable. Every refresh writes a segment of each index
/// written since the last one; at Elasticsearch's default of `1s` the refreshes of the
/// audit indices took about a third of the server's CPU at 1 000 events/s. Five seconds
/// is soon enough for an audit trail; a reader that needs every document so far asks for a
/// refresh (`search.refresh`).
pub const REFRESH_INTERVAL: &str = "5s";

/// The composable template: one shard and no replica (a single node), a strict mapping
/// (a document with an unknown top-level field is refused rather than growing the
/// mapping), `data` as one `flattened` field whatever the event type.
pub fn body() -> Value {
    let keyword = json!({ "type": "keyword" });
    json!({
        "index_patterns": [format!("{}*", crate::document::INDEX_PREFIX)],

        // that no other template with an overlapping pattern shadows this one.
        "priority": 500,
        "version": VERSION,
        "_meta": { "owner": "auditor", "description": "one document per platform event" },
        "template": {
            "settings": {
                "number_of_shards": 1,
                "number_of_replicas": 0,
                "refresh_interval": REFRESH_INTERVAL,
            },
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "id": keyword,
                    "type": keyword,
                    "source": keyword,
                    "subject": keyword,
                    "time": { "type": "date", "format": "strict_date_optional_time||epoch_millis" },
                    "topic": keyword,
                    "partition": { "type": "integer" },
                    "offset": { "type": "long" },
                    "key": keyword,
                    "datacontenttype": keyword,
                    "user_id": keyword,
                    "title_id": keyword,
                    "data": { "type": "flattened", "ignore_above": DATA_IGNORE_ABOVE },
                    "data_text": { "type": "text", "norms": false },
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{UNDATED_INDEX, document, index_for};
    use crate::polyhost::platform::types::Event;

    #[test]
    fn the_template_covers_every_audit_index_and_nothing_else() {
        let body = body();
        assert_eq!(body["index_patterns"], json!(["audit-events-*"]));
        assert!(index_for(Some(0)).starts_with("audit-events-"));
        assert!(UNDATED_INDEX.starts_with("audit-events-"));
        assert_eq!(body["template"]["mappings"]["dynamic"], "strict");
    }

    #[test]
    fn every_field_of_a_document_is_mapped() {
        let event = Event {
            id: "e".into(),
            source: "s".into(),
            type_: "t".into(),
            subject: Some("x".into()),
            time: Some(0),
            data: br#"{"user_id":"u-1","title_id":"t-1","deep":{"a":[1,{"b":null}]}}"#.to_vec(),
            offset: 0,
        };
        let doc = document("topic", 0, &event, Some(b"x"));
        let properties = &body()["template"]["mappings"]["properties"];
        for field in doc.as_object().unwrap().keys() {
            assert!(properties.get(field).is_some(), "`{field}` is not mapped");
        }
        assert_eq!(
            doc.as_object().unwrap().len(),
            properties.as_object().unwrap().len()
        );
    }
}
