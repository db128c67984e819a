//! Dead letters: a permanently failed record, republished to `polyhost.dlq.<plugin>` with
//! its key, value and headers, plus headers saying why and where it came from. An event
//! counts as final only once the broker has acknowledged its dead letter.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The dead-letter topic of a plugin.
pub fn topic_for(plugin: &str) -> String {
    format!("polyhost.dlq.{plugin}")
}

/// The header naming why the record was dead-lettered.
pub const REASON: &str = "polyhost.reason";
/// The header naming the plugin.
pub const PLUGIN: &str = "polyhost.plugin";
/// The header giving the plugin's version digest (SHA-256 of its component, hex).
pub const VERSION: &str = "polyhost.version";
/// The header giving the record's original topic.
pub const ORIGINAL_TOPIC: &str = "polyhost.original.topic";
/// The header giving the record's original partition.
pub const ORIGINAL_PARTITION: &str = "polyhost.original.partition";
/// The header giving the record's original offset.
pub const ORIGINAL_OFFSET: &str = "polyhost.original.offset";
/// The header giving how many times the event was handed to the plugin (0 when it never
/// was, e.g. not a CloudEvent).
pub const ATTEMPTS: &str = "polyhost.attempts";

/// The prefix of every dead-letter topic.
pub const TOPIC_PREFIX: &str = "polyhost.dlq.";

/// The CloudEvent type a dead letter is delivered as to a plugin that subscribes to
/// dead-letter topics (an auditor): a dead letter need not be a CloudEvent itself.
pub const EVENT_TYPE: &str = "polyhost.dead_letter";

/// A dead-letter record as the event a handler receives: type [`EVENT_TYPE`], id
/// `dlq-<plugin>-<topic>-<partition>-<offset>` (stable, so a redelivery has the same id),
/// the dead letter's broker timestamp as its time, and as data a JSON object with the
/// reason, plugin, version, original topic/partition/offset, attempts, and the original
/// value as `value` (text) or `value_base64` (when it is not UTF-8).
pub fn as_event(
    value: Option<&[u8]>,
    timestamp_ms: Option<i64>,
    meta: &crate::runtime::RecordMeta,
) -> crate::bindings::polyhost::platform::types::Event {
    use base64::Engine as _;
    let header = |name: &str| {
        meta.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let number = |name: &str| header(name).parse::<i64>().ok();
    let (plugin, topic) = (header(PLUGIN), header(ORIGINAL_TOPIC));
    let (partition, offset) = (number(ORIGINAL_PARTITION), number(ORIGINAL_OFFSET));
    let mut data = serde_json::json!({
        "reason": header(REASON),
        "plugin": plugin,
        "version": header(VERSION),
        "original_topic": topic,
        "original_partition": partition,
        "original_offset": offset,
        "attempts": number(ATTEMPTS),
    });
    match value.map(std::str::from_utf8) {
        Some(Ok(text)) => data["value"] = text.into(),
        Some(Err(_)) => {
            data["value_base64"] = base64::engine::general_purpose::STANDARD
                .encode(value.unwrap_or_default())
                .into()
        }
        None => {}
    }
    let id = format!(
        "dlq-{plugin}-{topic}-{}-{}",
        partition.unwrap_or(-1),
        offset.unwrap_or(-1)
    );
    crate::bindings::polyhost::platform::types::Event {
        subject: Some(id.clone()),
        id,
        source: format!("/polyhost/{plugin}"),
        type_: EVENT_TYPE.to_string(),
        time: timestamp_ms.map(|ms| ms * 1000),
        data: serde_json::to_vec(&data).expect("a JSON value serialises"),
        offset: meta.offset,
    }
}

/// Why and where from: what a dead letter's headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter<'a> {
    /// The reason, for people.
    pub reason: &'a str,
    /// The plugin.
    pub plugin: &'a str,
    /// The plugin's version digest.
    pub version: &'a str,
    /// Where the record was.
    pub topic: &'a str,
    /// Where the record was.
    pub partition: i32,
    /// Where the record was.
    pub offset: i64,
    /// How many times the plugin was handed the event.
    pub attempts: u32,
}

impl Letter<'_> {
    /// The headers added to the original record's, in this order.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (REASON, self.reason.to_string()),
            (PLUGIN, self.plugin.to_string()),
            (VERSION, self.version.to_string()),
            (ORIGINAL_TOPIC, self.topic.to_string()),
            (ORIGINAL_PARTITION, self.partition.to_string()),
            (ORIGINAL_OFFSET, self.offset.to_string()),
            (ATTEMPTS, self.attempts.to_string()),
        ]
    }
}

/// The producer of one plugin's dead letters.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// An idempotent producer (`acks=all`) for `plugin`'s dead-letter topic.
    pub fn new(brokers: &str, plugin: &str) -> Result<Self, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("client.id", format!("polyhost-dlq-{plugin}"))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .create::<FutureProducer>()?;
        Ok(DeadLetters {
            producer,
            topic: topic_for(plugin),
        })
    }

    /// The topic dead letters go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes `record` as a dead letter and waits for the broker's acknowledgement.
    pub async fn publish(
        &self,
        record: &OwnedMessage,
        letter: &Letter<'_>,
    ) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = record.headers() {
            for h in original.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        for (k, v) in letter.headers() {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut out = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(k) = record.key() {
            out = out.key(k);
        }
        if let Some(p) = record.payload() {
            out = out.payload(p);
        }
        self.producer
            .send(out, Duration::from_secs(30))
            .await
            .map(drop)
            .map_err(|(e, _)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_reason_plugin_version_origin_and_attempts() {
        let l = Letter {
            reason: "rejected e1",
            plugin: "p",
            version: "abc",
            topic: "t",
            partition: 2,
            offset: 41,
            attempts: 3,
        };
        assert_eq!(topic_for("p"), "polyhost.dlq.p");
        assert_eq!(
            l.headers(),
            vec![
                (REASON, "rejected e1".to_string()),
                (PLUGIN, "p".to_string()),
                (VERSION, "abc".to_string()),
                (ORIGINAL_TOPIC, "t".to_string()),
                (ORIGINAL_PARTITION, "2".to_string()),
                (ORIGINAL_OFFSET, "41".to_string()),
                (ATTEMPTS, "3".to_string()),
            ]
        );
    }
}
