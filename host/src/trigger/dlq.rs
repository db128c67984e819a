//! Dead letters: a permanently failed record, republished to `polyhost.dlq.<plugin>` with
//! its key, value and headers, plus headers saying why and where it came from. An event
//! counts as final only once the broker has acknowledged its dead letter.
//!
//! A dead letter always fits: the reason is capped at [`MAX_REASON_BYTES`], and a record
//! that would be larger than the dead-letter topic accepts (its `max.message.bytes`, read
//! at start) is written reduced: the value cut to what fits (and the key and the original
//! headers left out if they alone are too large), with [`TRUNCATED`] naming what was cut and
//! [`ORIGINAL_SIZE`] the value's full size. Should the broker still refuse it as too large
//! or invalid, it is retried once as an envelope (the `polyhost.*` headers only); a refusal
//! of that is reported as [`PublishError::Refused`], for the caller to drop the dead letter
//! rather than retry it for ever. Errors that are not about the record (the broker down, a
//! timeout) are [`PublishError::Transient`].

use std::time::Duration;

use crate::connections::Kafka;
use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

pub use crate::text::MAX_REASON_BYTES;

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

/// The header listing, comma-separated, what of the original record a reduced dead letter
/// cut or left out: `reason` (capped at [`MAX_REASON_BYTES`]), `key`, `headers`, `value`.
/// Absent when the dead letter is whole.
pub const TRUNCATED: &str = "polyhost.truncated";
/// The header giving the original value's size in bytes, on a dead letter whose value was
/// cut or left out.
pub const ORIGINAL_SIZE: &str = "polyhost.original.size";

/// The broker's record limit assumed when the dead-letter topic's `max.message.bytes`
/// cannot be read: librdkafka's default `message.max.bytes`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// What a record batch of one record costs beyond its key, value and headers (the batch
/// and record framing, a few varints per header), with room to spare.
const FRAMING_BYTES: usize = 1024;
/// What each header costs beyond its key and value.
const HEADER_FRAMING_BYTES: usize = 8;
/// The reason's cap in an envelope, the last resort after a refusal.
const ENVELOPE_REASON_BYTES: usize = 1024;

/// The prefix of every dead-letter topic.
pub const TOPIC_PREFIX: &str = "polyhost.dlq.";

/// The CloudEvent type a dead letter is delivered as to a plugin that subscribes to
/// dead-letter topics (an auditor): a dead letter need not be a CloudEvent itself.
pub const EVENT_TYPE: &str = "polyhost.dead_letter";

/// A dead-letter record as the event a handler receives: type [`EVENT_TYPE`], id
/// `dlq-<plugin>-<topic>-<partition>-<offset>` (stable, so a redelivery has the same id),
/// the dead letter's broker timestamp as its time, and as data a JSON object with the
/// reason, plugin, version, original topic/partition/offset, attempts, and the original
/// value as `value` (text) or `value_base64` (when it is not UTF-8); a reduced dead letter
/// adds `truncated` (its [`TRUNCATED`] header) and `original_size`.
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
    // A reduced dead letter says what it lacks.
    if meta.headers.iter().any(|(k, _)| k == TRUNCATED) {
        data["truncated"] = header(TRUNCATED).into();
        data["original_size"] = number(ORIGINAL_SIZE).into();
    }
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
    /// The headers added to the original record's, in this order (the reason capped at
    /// [`MAX_REASON_BYTES`]).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        self.headers_capped(MAX_REASON_BYTES)
    }

    fn headers_capped(&self, reason_bytes: usize) -> Vec<(&'static str, String)> {
        vec![
            (
                REASON,
                crate::text::cap_bytes(self.reason, reason_bytes).into_owned(),
            ),
            (PLUGIN, self.plugin.to_string()),
            (VERSION, self.version.to_string()),
            (ORIGINAL_TOPIC, self.topic.to_string()),
            (ORIGINAL_PARTITION, self.partition.to_string()),
            (ORIGINAL_OFFSET, self.offset.to_string()),
            (ATTEMPTS, self.attempts.to_string()),
        ]
    }
}

/// How much of the original record a dead letter carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// All of it: key, value and headers (the reason may be capped).
    Whole,
    /// What fits under the topic's limit: see [`TRUNCATED`].
    Reduced,
    /// Only the `polyhost.*` headers: the broker refused the larger forms.
    Envelope,
}

/// Why a dead letter was not written.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Not about this record (the broker is down or slow): try again later.
    #[error("dead letter not acknowledged: {0}")]
    Transient(#[source] KafkaError),
    /// The broker refused this dead letter even as an envelope: retrying cannot help.
    #[error("dead letter refused by the broker, even reduced to its headers: {0}")]
    Refused(#[source] KafkaError),
}

/// Whether a produce error is about the record itself (its size, its form), so that the
/// same record would be refused again however long one waits.
pub fn is_permanent(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e,
        KafkaError::MessageProduction(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::MessageBatchTooLarge
                | C::InvalidRecord
                | C::InvalidTimestamp
        )
    )
}

/// The dead letter of one record in the form of one [`Written`], ready to send.
#[derive(Debug, PartialEq, Eq)]
struct Draft<'r> {
    key: Option<&'r [u8]>,
    value: Option<&'r [u8]>,
    /// The original headers kept, then the `polyhost.*` ones.
    headers: Vec<(&'r str, Option<&'r [u8]>)>,
    ours: Vec<(&'static str, String)>,
}

fn header_size(k: &str, v: Option<&[u8]>) -> usize {
    k.len() + v.map_or(0, <[u8]>::len) + HEADER_FRAMING_BYTES
}

impl Draft<'_> {
    /// The bytes this dead letter costs the broker, framing included (an upper bound).
    fn size(&self) -> usize {
        FRAMING_BYTES
            + self.key.map_or(0, <[u8]>::len)
            + self.value.map_or(0, <[u8]>::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| header_size(k, *v))
                .sum::<usize>()
            + self
                .ours
                .iter()
                .map(|(k, v)| header_size(k, Some(v.as_bytes())))
                .sum::<usize>()
    }
}

/// The dead letter of `record` in form `form`, sized for a topic that accepts records of
/// at most `limit` bytes (for [`Written::Reduced`]).
fn draft<'r>(
    record: &'r OwnedMessage,
    letter: &Letter<'_>,
    form: Written,
    limit: usize,
) -> Draft<'r> {
    let original_headers: Vec<(&str, Option<&[u8]>)> = record
        .headers()
        .map(|hs| hs.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default();
    let reason_bytes = match form {
        Written::Envelope => ENVELOPE_REASON_BYTES,
        _ => MAX_REASON_BYTES,
    };
    let mut ours = letter.headers_capped(reason_bytes);
    let mut cut: Vec<&str> = Vec::new();
    if ours[0].1.len() < letter.reason.len() {
        cut.push("reason");
    }
    let value = record.payload();
    let mut d = Draft {
        key: record.key(),
        value,
        headers: original_headers,
        ours: Vec::new(),
    };
    match form {
        Written::Whole => {}
        Written::Envelope => {
            if d.key.take().is_some() {
                cut.push("key");
            }
            if !d.headers.is_empty() {
                d.headers.clear();
                cut.push("headers");
            }
            if d.value.take().is_some() {
                cut.push("value");
            }
        }
        Written::Reduced => {
            // The key and the original headers stay if they take at most a quarter of
            // the limit each; the value gets what is left.
            if d.key.is_some_and(|k| k.len() > limit / 4) {
                d.key = None;
                cut.push("key");
            }
            let mut room = limit / 4;
            let before = d.headers.len();
            d.headers.retain(|(k, v)| {
                let size = header_size(k, *v);
                let keep = size <= room;
                room = room.saturating_sub(size);
                keep
            });
            if d.headers.len() < before {
                cut.push("headers");
            }
            // Two more headers (TRUNCATED, ORIGINAL_SIZE) come below: count them in.
            let ours_later = header_size(TRUNCATED, Some(b"reason,key,headers,value"))
                + header_size(ORIGINAL_SIZE, Some(b"18446744073709551615"));
            d.value = None;
            d.ours = ours.clone();
            let fixed = d.size() + ours_later;
            if let Some(v) = value {
                let keep = limit.saturating_sub(fixed).min(v.len());
                d.value = Some(&v[..keep]);
                if keep < v.len() {
                    cut.push("value");
                }
            }
        }
    }
    let value_cut = cut.contains(&"value");
    if !cut.is_empty() {
        ours.push((TRUNCATED, cut.join(",")));
    }
    if value_cut {
        ours.push((ORIGINAL_SIZE, value.map_or(0, <[u8]>::len).to_string()));
    }
    d.ours = ours;
    d
}

/// The producer of one plugin's dead letters.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    limit: usize,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// Creates `plugin`'s dead-letter topic unless it exists, reads the largest record it
    /// accepts (its `max.message.bytes`; [`DEFAULT_MAX_MESSAGE_BYTES`] if that cannot be
    /// read), and makes the producer for it.
    pub async fn connect(kafka: &Kafka, plugin: &str) -> Result<Self, KafkaError> {
        let topic = topic_for(plugin);
        super::ensure_topics(kafka, std::slice::from_ref(&topic), 1).await?;
        // A topic created a moment ago may not be known to every broker yet: a few tries.
        let mut tries = 0;
        let limit = loop {
            match max_message_bytes(kafka, &topic).await {
                Ok(limit) => break limit,
                Err(e) if tries < 5 => {
                    tries += 1;
                    tracing::debug!(topic = %topic, error = %e, tries, "cannot read the dead-letter topic's max.message.bytes yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %e, default = DEFAULT_MAX_MESSAGE_BYTES, "cannot read the dead-letter topic's max.message.bytes; assuming the default");
                    break DEFAULT_MAX_MESSAGE_BYTES;
                }
            }
        };
        Self::new(kafka, plugin, limit)
    }

    /// An idempotent producer (`acks=all`) for `plugin`'s dead-letter topic, whose records
    /// may be at most `limit` bytes (the topic's `max.message.bytes`). The producer's own
    /// `message.max.bytes` is set to the same, so a record the broker would refuse is
    /// refused locally, at once.
    pub fn new(kafka: &Kafka, plugin: &str, limit: usize) -> Result<Self, KafkaError> {
        // librdkafka's accepted range for `message.max.bytes`.
        let limit = limit.clamp(1000, 1_000_000_000);
        let producer = kafka
            .client_config()
            .set("client.id", format!("polyhost-dlq-{plugin}"))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set("message.max.bytes", limit.to_string())
            .set("batch.size", limit.min(1_000_000).to_string())
            .create::<FutureProducer>()?;
        Ok(DeadLetters {
            producer,
            topic: topic_for(plugin),
            limit,
        })
    }

    /// The topic dead letters go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The largest record the dead-letter topic accepts, as far as the host knows.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Publishes `record` as a dead letter and waits for the broker's acknowledgement:
    /// whole when it fits the topic's limit, else reduced; after a refusal of that (the
    /// broker's limit was not what it said), once more as an envelope.
    pub async fn publish(
        &self,
        record: &OwnedMessage,
        letter: &Letter<'_>,
    ) -> Result<Written, PublishError> {
        let whole = draft(record, letter, Written::Whole, self.limit);
        let (first, form) = if whole.size() <= self.limit {
            (whole, Written::Whole)
        } else {
            let reduced = draft(record, letter, Written::Reduced, self.limit);
            (reduced, Written::Reduced)
        };
        match self.send(&first).await {
            Ok(()) => return Ok(form),
            Err(e) if is_permanent(&e) => {
                tracing::warn!(topic = %self.topic, plugin = letter.plugin, original_topic = letter.topic, partition = letter.partition, offset = letter.offset, bytes = first.size(), limit = self.limit, error = %e, "dead letter refused by the broker: retrying once as an envelope");
            }
            Err(e) => return Err(PublishError::Transient(e)),
        }
        let envelope = draft(record, letter, Written::Envelope, self.limit);
        match self.send(&envelope).await {
            Ok(()) => Ok(Written::Envelope),
            Err(e) if is_permanent(&e) => Err(PublishError::Refused(e)),
            Err(e) => Err(PublishError::Transient(e)),
        }
    }

    async fn send(&self, d: &Draft<'_>) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(d.headers.len() + d.ours.len());
        for (k, v) in &d.headers {
            headers = headers.insert(Header { key: k, value: *v });
        }
        for (k, v) in &d.ours {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut out = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(k) = d.key {
            out = out.key(k);
        }
        if let Some(p) = d.value {
            out = out.payload(p);
        }
        self.producer
            .send(out, Duration::from_secs(30))
            .await
            .map(drop)
            .map_err(|(e, _)| e)
    }
}

/// The `max.message.bytes` of `topic` (which falls back to the broker's
/// `message.max.bytes` when the topic does not set it).
pub async fn max_message_bytes(kafka: &Kafka, topic: &str) -> Result<usize, KafkaError> {
    let results = super::topics::admin(kafka)?
        .describe_configs(
            &[ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    let resource = results
        .into_iter()
        .next()
        .ok_or(KafkaError::AdminOpCreation(
            "describe_configs returned nothing".into(),
        ))?
        .map_err(KafkaError::AdminOp)?;
    resource
        .get("max.message.bytes")
        .and_then(|e| e.value.as_deref())
        .and_then(|v| v.parse().ok())
        .ok_or(KafkaError::AdminOpCreation(format!(
            "topic {topic} has no readable max.message.bytes"
        )))
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

    fn letter(reason: &str) -> Letter<'_> {
        Letter {
            reason,
            plugin: "p",
            version: "abc",
            topic: "t",
            partition: 0,
            offset: 7,
            attempts: 1,
        }
    }

    fn record(key: usize, value: usize, headers: usize) -> OwnedMessage {
        let mut hs = OwnedHeaders::new();
        for i in 0..headers {
            hs = hs.insert(Header {
                key: &format!("h{i}"),
                value: Some(&[b'h'; 1000][..]),
            });
        }
        OwnedMessage::new(
            Some(vec![b'v'; value]),
            Some(vec![b'k'; key]),
            "t".into(),
            rdkafka::Timestamp::NotAvailable,
            0,
            7,
            Some(hs),
        )
    }

    fn ours<'a>(d: &'a Draft<'_>, name: &str) -> Option<&'a str> {
        d.ours
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_record_that_fits_is_written_whole() {
        let r = record(10, 5000, 2);
        let d = draft(&r, &letter("no"), Written::Whole, 100_000);
        assert!(d.size() <= 100_000);
        assert_eq!(d.value.map(<[u8]>::len), Some(5000));
        assert_eq!(d.key.map(<[u8]>::len), Some(10));
        assert_eq!(d.headers.len(), 2);
        assert_eq!(ours(&d, TRUNCATED), None);
        assert_eq!(ours(&d, ORIGINAL_SIZE), None);
    }

    #[test]
    fn a_huge_reason_is_capped_and_said_to_be() {
        let reason = "é".repeat(2_500_000); // 5 MB
        let r = record(1, 10, 0);
        let d = draft(&r, &letter(&reason), Written::Whole, 1_000_000);
        let capped = ours(&d, REASON).unwrap();
        assert!(capped.len() <= MAX_REASON_BYTES);
        assert!(capped.ends_with("[truncated, 5000000 bytes]"), "{capped}");
        assert_eq!(ours(&d, TRUNCATED), Some("reason"));
        assert!(d.size() < 10_000);
    }

    #[test]
    fn a_record_too_large_is_reduced_below_the_limit() {
        let r = record(10, 300_000, 3);
        let limit = 100_000;
        assert!(draft(&r, &letter("x"), Written::Whole, limit).size() > limit);
        let d = draft(&r, &letter("x"), Written::Reduced, limit);
        assert!(d.size() <= limit, "{}", d.size());
        let kept = d.value.unwrap().len();
        assert!(kept > limit / 2, "the value keeps most of the room: {kept}");
        assert_eq!(d.key.map(<[u8]>::len), Some(10));
        assert_eq!(d.headers.len(), 3);
        assert_eq!(ours(&d, TRUNCATED), Some("value"));
        assert_eq!(ours(&d, ORIGINAL_SIZE), Some("300000"));
        assert_eq!(ours(&d, ORIGINAL_OFFSET), Some("7"));
    }

    #[test]
    fn a_reduced_letter_leaves_out_a_huge_key_and_headers() {
        let r = record(60_000, 10, 40);
        let d = draft(&r, &letter("x"), Written::Reduced, 100_000);
        assert!(d.size() <= 100_000);
        assert_eq!(d.key, None);
        assert!(d.headers.len() < 40 && !d.headers.is_empty());
        assert_eq!(d.value.map(<[u8]>::len), Some(10));
        assert_eq!(ours(&d, TRUNCATED), Some("key,headers"));
        assert_eq!(ours(&d, ORIGINAL_SIZE), None);
    }

    #[test]
    fn an_envelope_holds_only_the_polyhost_headers() {
        let reason = "r".repeat(10_000);
        let r = record(10, 300_000, 3);
        let d = draft(&r, &letter(&reason), Written::Envelope, 100_000);
        assert_eq!((d.key, d.value, d.headers.len()), (None, None, 0));
        assert!(ours(&d, REASON).unwrap().len() <= ENVELOPE_REASON_BYTES);
        assert_eq!(ours(&d, TRUNCATED), Some("reason,key,headers,value"));
        assert_eq!(ours(&d, ORIGINAL_SIZE), Some("300000"));
        assert!(d.size() < 3000);
    }

    #[test]
    fn only_errors_about_the_record_are_permanent() {
        use RDKafkaErrorCode as C;
        assert!(is_permanent(&KafkaError::MessageProduction(
            C::MessageSizeTooLarge
        )));
        assert!(is_permanent(&KafkaError::MessageProduction(
            C::InvalidRecord
        )));
        assert!(!is_permanent(&KafkaError::MessageProduction(
            C::MessageTimedOut
        )));
        assert!(!is_permanent(&KafkaError::MessageProduction(
            C::BrokerNotAvailable
        )));
        assert!(!is_permanent(&KafkaError::MessageProduction(C::QueueFull)));
    }

    #[test]
    fn a_reduced_dead_letter_as_an_event_says_what_it_lacks() {
        let meta = |extra: &[(&str, &str)]| crate::runtime::RecordMeta {
            offset: 3,
            key: None,
            headers: [(REASON, "no"), (ORIGINAL_OFFSET, "9")]
                .iter()
                .chain(extra)
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            timestamp_ms: None,
        };
        let reduced = meta(&[(TRUNCATED, "value"), (ORIGINAL_SIZE, "300000")]);
        let e = as_event(Some(b"{\"cut"), None, &reduced);
        let data: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
        assert_eq!(data["truncated"], "value");
        assert_eq!(data["original_size"], 300000);
        assert_eq!(data["value"], "{\"cut");
        let e = as_event(Some(b"{}"), None, &meta(&[]));
        let data: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
        assert!(data.get("truncated").is_none());
    }
}
