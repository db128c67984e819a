//! Reading and replaying dead letters: what `polyhost dlq` and the admin API's
//! `/api/dlq/…` routes call.
//!
//! A plugin's dead letters live in `polyhost.dlq.<plugin>` (written by
//! [`crate::trigger::dlq`]): the original record's key, value and headers, plus headers
//! saying why and where from. This module reads that topic without a consumer group (it
//! assigns partitions and reads from the low watermark to the end, so it never moves any
//! group's offsets), and replays a dead letter by producing the original record again to
//! its original topic and partition, key and headers kept, with [`REPLAY_OF`] naming the
//! dead letter. The replayed record goes through the platform like any other: every plugin
//! subscribed to that topic sees it (handlers are idempotent per event id, so the ones that
//! had processed it skip it), and the auditor records it.
//!
//! Every replay is recorded in the compacted topic [`LEDGER_TOPIC`], keyed by the dead
//! letter (`<dlq topic>/<partition>/<offset>`), so the same dead letter is not replayed twice
//! by accident: a second replay is refused unless forced. The ledger is written after the
//! broker acknowledged the replayed record; two operators replaying the same dead letter at
//! the same instant from two processes can both succeed (the handlers' idempotence keeps
//! that harmless).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::connections::Kafka;
use base64::Engine as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::trigger::dlq as letters;

/// The compacted topic recording every replay, keyed by the dead letter it replayed.
pub const LEDGER_TOPIC: &str = "polyhost.replays";

/// The header a replayed record carries: the dead letter it replays
/// (`<dlq topic>/<partition>/<offset>`).
pub const REPLAY_OF: &str = "polyhost.replay.of";

/// The header a replayed record carries: when it was replayed (RFC 3339).
pub const REPLAY_AT: &str = "polyhost.replay.at";

/// How long reading a topic to its end may take before it is given up.
const READ_LIMIT: Duration = Duration::from_secs(30);

/// Why a dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// Kafka refused or could not be reached.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// No such dead letter (or dead-letter topic).
    #[error("{0}")]
    NotFound(String),
    /// The request makes no sense (no offsets, a dead letter without its origin, …).
    #[error("{0}")]
    Invalid(String),
    /// Reading did not reach the end of the topic in time.
    #[error("reading {0} did not finish within {READ_LIMIT:?}")]
    Timeout(String),
}

/// Where a record is: topic, partition, offset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// One dead letter as read from a dead-letter topic.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Where the dead letter is (its dead-letter topic, partition, offset).
    pub at: Position,
    /// When it was dead-lettered (the broker timestamp, RFC 3339).
    pub time: Option<String>,
    /// Why, as the host or the plugin said.
    pub reason: String,
    /// The plugin that rejected it.
    pub plugin: String,
    /// The plugin version (digest) that rejected it.
    pub version: String,
    /// Where the original record was, when the headers say so.
    pub original: Option<Position>,
    /// How many times the event was handed to the plugin.
    pub attempts: Option<u32>,
    /// The Kafka key (UTF-8, lossy).
    pub key: Option<String>,
    /// The original record's headers (UTF-8, lossy), without the dead-letter headers.
    pub headers: Vec<(String, String)>,
    /// The value, when it is UTF-8.
    pub value: Option<String>,
    /// The value in base64, when it is not UTF-8.
    pub value_base64: Option<String>,
    /// The last replay of this dead letter, if any.
    pub replayed: Option<Replay>,
    #[serde(skip)]
    raw: RawRecord,
}

/// The original record's bytes, for a replay.
#[derive(Debug, Clone, Default)]
struct RawRecord {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// One replay, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// The dead letter replayed.
    pub dead_letter: Position,
    /// Where the replayed record landed.
    pub to: Position,
    /// When (RFC 3339).
    pub at: String,
    /// Who asked (`cli` with the user name, or `admin-api`).
    pub by: String,
    /// Whether an earlier replay was overridden.
    pub forced: bool,
}

/// Which dead letters a replay takes.
#[derive(Debug, Clone)]
pub enum Selection {
    /// These (partition, offset) of the dead-letter topic.
    Offsets(Vec<(i32, i64)>),
    /// Every dead letter, or those whose reason contains the given text.
    All {
        /// Only dead letters whose reason contains this text.
        reason_contains: Option<String>,
    },
}

/// A replay request.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// The plugin whose dead letters are replayed.
    pub plugin: String,
    /// Which.
    pub selection: Selection,
    /// Say what would be replayed; send nothing.
    pub dry_run: bool,
    /// Replay even dead letters already replayed.
    pub force: bool,
    /// Who asks, for the ledger.
    pub by: String,
}

/// What became of one dead letter in a replay.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayOutcome {
    /// The dead letter.
    pub dead_letter: Position,
    /// Its original position (where it is sent back to).
    pub original: Option<Position>,
    /// `replayed`, `would replay` (dry run), `already replayed` (refused; `--force`
    /// overrides) or `not found`.
    pub result: String,
    /// The replay done now (`replayed`) or the earlier one (`already replayed`).
    pub replay: Option<Replay>,
}

impl ReplayOutcome {
    /// Whether this dead letter was refused or missing (the CLI's exit code).
    pub fn refused(&self) -> bool {
        matches!(self.result.as_str(), "already replayed" | "not found")
    }
}

fn reader(kafka: &Kafka) -> Result<BaseConsumer, KafkaError> {
    kafka
        .client_config()
        // A group id is required by the client, but nothing is committed: partitions are
        // assigned, never subscribed, and offsets are never stored.
        .set("group.id", "polyhost-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("allow.auto.create.topics", "false")
        .create()
}

/// The partitions of `topic`, or `None` when it does not exist.
fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Option<Vec<i32>>, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if t.error().is_some() || t.partitions().is_empty() {
        return Ok(None);
    }
    Ok(Some(t.partitions().iter().map(|p| p.id()).collect()))
}

/// One record read back: position, timestamp, key, value, headers.
struct Record {
    at: Position,
    timestamp_ms: Option<i64>,
    raw: RawRecord,
}

/// Reads `topic` (every partition, or `only`: a partition and an offset to start from)
/// from its start to its current end. `None` when the topic does not exist.
fn read(
    kafka: &Kafka,
    topic: &str,
    only: Option<(i32, i64)>,
    stop_after_first: bool,
) -> Result<Option<Vec<Record>>, DlqError> {
    let consumer = reader(kafka)?;
    let Some(parts) = partitions(&consumer, topic)? else {
        return Ok(None);
    };
    let mut tpl = TopicPartitionList::new();
    // The partitions still to read, and the offset where each ends.
    let mut open: HashMap<i32, i64> = HashMap::new();
    for p in parts {
        if only.is_some_and(|(op, _)| op != p) {
            continue;
        }
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        let from = only.map_or(low, |(_, o)| o.max(low));
        if from < high {
            tpl.add_partition_offset(topic, p, Offset::Offset(from))?;
            open.insert(p, high);
        }
    }
    let mut out = Vec::new();
    if open.is_empty() {
        return Ok(Some(out));
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + READ_LIMIT;
    while !open.is_empty() {
        if Instant::now() > deadline {
            return Err(DlqError::Timeout(topic.to_string()));
        }
        let Some(polled) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = match polled {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                open.remove(&p);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let (p, o) = (m.partition(), m.offset());
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            at: Position {
                topic: topic.to_string(),
                partition: p,
                offset: o,
            },
            timestamp_ms: m.timestamp().to_millis(),
            raw: RawRecord {
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
            },
        });
        if stop_after_first {
            break;
        }
        if open.get(&p).is_some_and(|&end| o + 1 >= end) {
            open.remove(&p);
        }
    }
    Ok(Some(out))
}

/// The names of the headers [`crate::trigger::dlq`] adds to a dead letter.
const LETTER_HEADERS: [&str; 7] = [
    letters::REASON,
    letters::PLUGIN,
    letters::VERSION,
    letters::ORIGINAL_TOPIC,
    letters::ORIGINAL_PARTITION,
    letters::ORIGINAL_OFFSET,
    letters::ATTEMPTS,
];

impl DeadLetter {
    fn from_record(r: Record) -> DeadLetter {
        // The dead-letter headers are the last of each name (they are appended to the
        // original's); the original headers are the rest, in order.
        let mut meta: HashMap<&str, String> = HashMap::new();
        let mut cut = vec![false; r.raw.headers.len()];
        for name in LETTER_HEADERS {
            if let Some(i) = r.raw.headers.iter().rposition(|(k, _)| k == name) {
                cut[i] = true;
                let v = r.raw.headers[i].1.as_deref().unwrap_or_default();
                meta.insert(name, String::from_utf8_lossy(v).into_owned());
            }
        }
        let original_headers: Vec<(String, Option<Vec<u8>>)> = r
            .raw
            .headers
            .iter()
            .zip(&cut)
            .filter(|(_, cut)| !**cut)
            .map(|(h, _)| h.clone())
            .collect();
        let get = |name: &str| meta.get(name).cloned().unwrap_or_default();
        let original = match (
            meta.get(letters::ORIGINAL_TOPIC),
            get(letters::ORIGINAL_PARTITION).parse::<i32>(),
            get(letters::ORIGINAL_OFFSET).parse::<i64>(),
        ) {
            (Some(topic), Ok(partition), Ok(offset)) if !topic.is_empty() => Some(Position {
                topic: topic.clone(),
                partition,
                offset,
            }),
            _ => None,
        };
        let (value, value_base64) = match r.raw.value.as_deref().map(std::str::from_utf8) {
            Some(Ok(text)) => (Some(text.to_string()), None),
            Some(Err(_)) => (
                None,
                Some(
                    base64::engine::general_purpose::STANDARD
                        .encode(r.raw.value.as_deref().unwrap_or_default()),
                ),
            ),
            None => (None, None),
        };
        DeadLetter {
            time: r.timestamp_ms.and_then(|ms| {
                chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            }),
            reason: get(letters::REASON),
            plugin: get(letters::PLUGIN),
            version: get(letters::VERSION),
            original,
            attempts: get(letters::ATTEMPTS).parse().ok(),
            key: r
                .raw
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            headers: original_headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned(),
                    )
                })
                .collect(),
            value,
            value_base64,
            replayed: None,
            raw: RawRecord {
                key: r.raw.key,
                value: r.raw.value,
                headers: original_headers,
            },
            at: r.at,
        }
    }

    /// The event id, when the value is a CloudEvent (for people; replays do not need it).
    pub fn event_id(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(self.value.as_deref()?).ok()?;
        v["id"].as_str().map(str::to_string)
    }
}

/// Every replay recorded in the ledger, by dead letter (the latest of each).
pub async fn ledger(kafka: &Kafka) -> Result<HashMap<Position, Replay>, DlqError> {
    let kafka = kafka.clone();
    let records = tokio::task::spawn_blocking(move || read(&kafka, LEDGER_TOPIC, None, false))
        .await
        .map_err(|e| DlqError::Invalid(format!("the reader task failed: {e}")))??
        .unwrap_or_default();
    let mut out = HashMap::new();
    for r in records {
        // A record that does not parse is skipped: the ledger is for this host's replays.
        if let Some(replay) = r
            .raw
            .value
            .as_deref()
            .and_then(|v| serde_json::from_slice::<Replay>(v).ok())
        {
            out.insert(replay.dead_letter.clone(), replay);
        }
    }
    Ok(out)
}

/// Every dead letter of `plugin`, oldest first, each with its last replay. Empty when the
/// plugin has no dead-letter topic (it never dead-lettered anything, or no such plugin).
pub async fn list(kafka: &Kafka, plugin: &str) -> Result<Vec<DeadLetter>, DlqError> {
    let topic = letters::topic_for(plugin);
    let (b, t) = (kafka.clone(), topic.clone());
    let records = tokio::task::spawn_blocking(move || read(&b, &t, None, false))
        .await
        .map_err(|e| DlqError::Invalid(format!("the reader task failed: {e}")))??
        .unwrap_or_default();
    let replays = ledger(kafka).await?;
    let mut out: Vec<DeadLetter> = records.into_iter().map(DeadLetter::from_record).collect();
    out.sort_by(|a, b| a.at.cmp(&b.at));
    for d in &mut out {
        d.replayed = replays.get(&d.at).cloned();
    }
    Ok(out)
}

/// One dead letter of `plugin`, at `partition`/`offset` of its dead-letter topic.
pub async fn show(
    kafka: &Kafka,
    plugin: &str,
    partition: i32,
    offset: i64,
) -> Result<DeadLetter, DlqError> {
    let topic = letters::topic_for(plugin);
    let (b, t) = (kafka.clone(), topic.clone());
    let records =
        tokio::task::spawn_blocking(move || read(&b, &t, Some((partition, offset)), true))
            .await
            .map_err(|e| DlqError::Invalid(format!("the reader task failed: {e}")))??
            .ok_or_else(|| {
                DlqError::NotFound(format!(
                    "plugin `{plugin}` has no dead letters (no topic {topic})"
                ))
            })?;
    let record = records
        .into_iter()
        .find(|r| r.at.partition == partition && r.at.offset == offset)
        .ok_or_else(|| {
            DlqError::NotFound(format!("no dead letter at {topic}/{partition}/{offset}"))
        })?;
    let mut d = DeadLetter::from_record(record);
    d.replayed = ledger(kafka).await?.get(&d.at).cloned();
    Ok(d)
}

/// Creates the ledger topic (one partition, compacted) unless it exists.
async fn ensure_ledger(kafka: &Kafka) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
    let topic =
        NewTopic::new(LEDGER_TOPIC, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    for r in admin
        .create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?
    {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

fn producer(kafka: &Kafka) -> Result<FutureProducer, KafkaError> {
    kafka
        .client_config()
        .set("client.id", "polyhost-replay")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
}

/// Replays the dead letters `request` selects: each is produced again to its original
/// topic and partition (key, value and original headers kept, [`REPLAY_OF`] and
/// [`REPLAY_AT`] added) and recorded in the ledger. A dead letter already replayed is
/// refused unless `force`; a dry run sends and records nothing.
pub async fn replay(
    kafka: &Kafka,
    request: &ReplayRequest,
) -> Result<Vec<ReplayOutcome>, DlqError> {
    let all = list(kafka, &request.plugin).await?;
    let chosen: Vec<Result<&DeadLetter, Position>> = match &request.selection {
        Selection::Offsets(offsets) => {
            if offsets.is_empty() {
                return Err(DlqError::Invalid(
                    "name the dead letters to replay (--offset), or --all".into(),
                ));
            }
            offsets
                .iter()
                .map(|&(partition, offset)| {
                    all.iter()
                        .find(|d| d.at.partition == partition && d.at.offset == offset)
                        .ok_or(Position {
                            topic: letters::topic_for(&request.plugin),
                            partition,
                            offset,
                        })
                })
                .collect()
        }
        Selection::All { reason_contains } => all
            .iter()
            .filter(|d| {
                reason_contains
                    .as_deref()
                    .is_none_or(|text| d.reason.contains(text))
            })
            .map(Ok)
            .collect(),
    };
    let mut out = Vec::new();
    let mut sender: Option<FutureProducer> = None;
    for c in chosen {
        let d = match c {
            Ok(d) => d,
            Err(at) => {
                out.push(ReplayOutcome {
                    dead_letter: at,
                    original: None,
                    result: "not found".into(),
                    replay: None,
                });
                continue;
            }
        };
        let Some(original) = d.original.clone() else {
            return Err(DlqError::Invalid(format!(
                "the dead letter at {} does not say where it came from (no {} header)",
                d.at,
                letters::ORIGINAL_TOPIC
            )));
        };
        if let Some(earlier) = d.replayed.clone().filter(|_| !request.force) {
            out.push(ReplayOutcome {
                dead_letter: d.at.clone(),
                original: Some(original),
                result: "already replayed".into(),
                replay: Some(earlier),
            });
            continue;
        }
        if request.dry_run {
            out.push(ReplayOutcome {
                dead_letter: d.at.clone(),
                original: Some(original),
                result: "would replay".into(),
                replay: None,
            });
            continue;
        }
        if sender.is_none() {
            ensure_ledger(kafka).await?;
            sender = Some(producer(kafka)?);
        }
        let sender = sender.as_ref().expect("created above");
        let replay = send(sender, d, &original, request).await?;
        tracing::info!(
            dead_letter = %d.at,
            to = %replay.to,
            by = %replay.by,
            forced = replay.forced,
            "dead letter replayed"
        );
        out.push(ReplayOutcome {
            dead_letter: d.at.clone(),
            original: Some(original),
            result: "replayed".into(),
            replay: Some(replay),
        });
    }
    Ok(out)
}

/// Sends one dead letter back and records it in the ledger.
async fn send(
    producer: &FutureProducer,
    d: &DeadLetter,
    original: &Position,
    request: &ReplayRequest,
) -> Result<Replay, DlqError> {
    let at = crate::supervisor::rfc3339(std::time::SystemTime::now());
    let of = d.at.to_string();
    let mut headers = OwnedHeaders::new();
    // The original headers, less any earlier replay's marks (this replay adds its own).
    for (k, v) in &d.raw.headers {
        if k == REPLAY_OF || k == REPLAY_AT {
            continue;
        }
        headers = headers.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    headers = headers
        .insert(Header {
            key: REPLAY_OF,
            value: Some(of.as_bytes()),
        })
        .insert(Header {
            key: REPLAY_AT,
            value: Some(at.as_bytes()),
        });
    // The original partition keeps the replayed record in its key's order.
    let mut record = FutureRecord::<[u8], [u8]>::to(&original.topic)
        .partition(original.partition)
        .headers(headers);
    if let Some(k) = &d.raw.key {
        record = record.key(k);
    }
    if let Some(v) = &d.raw.value {
        record = record.payload(v);
    }
    let delivered = producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)?;
    let (partition, offset) = (delivered.partition, delivered.offset);
    let replay = Replay {
        dead_letter: d.at.clone(),
        to: Position {
            topic: original.topic.clone(),
            partition,
            offset,
        },
        at,
        by: request.by.clone(),
        forced: request.force && d.replayed.is_some(),
    };
    let value = serde_json::to_vec(&replay).expect("a replay serialises");
    producer
        .send(
            FutureRecord::<str, [u8]>::to(LEDGER_TOPIC)
                .key(&of)
                .payload(&value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(replay)
}

/// Counts of dead letters by reason, for a summary.
pub fn by_reason(letters: &[DeadLetter]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for d in letters {
        *out.entry(d.reason.clone()).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(headers: &[(&str, &str)]) -> Record {
        Record {
            at: Position {
                topic: "polyhost.dlq.p".into(),
                partition: 0,
                offset: 7,
            },
            timestamp_ms: Some(1_700_000_000_000),
            raw: RawRecord {
                key: Some(b"k1".to_vec()),
                value: Some(b"{\"id\":\"e1\"}".to_vec()),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), Some(v.as_bytes().to_vec())))
                    .collect(),
            },
        }
    }

    #[test]
    fn the_letter_headers_are_split_from_the_original_ones() {
        let letter = letters::Letter {
            reason: "bad",
            plugin: "p",
            version: "abc",
            topic: "t",
            partition: 2,
            offset: 41,
            attempts: 3,
        };
        let mut headers = vec![("n", "1"), (letters::REASON, "an earlier reason")];
        let added = letter.headers();
        headers.extend(added.iter().map(|(k, v)| (*k, v.as_str())));
        let d = DeadLetter::from_record(record(&headers));
        assert_eq!(d.reason, "bad");
        assert_eq!(d.plugin, "p");
        assert_eq!(d.version, "abc");
        assert_eq!(d.attempts, Some(3));
        assert_eq!(
            d.original,
            Some(Position {
                topic: "t".into(),
                partition: 2,
                offset: 41
            })
        );
        // The original's own headers stay, even one named like a dead-letter header.
        assert_eq!(
            d.headers,
            vec![
                ("n".to_string(), "1".to_string()),
                (letters::REASON.to_string(), "an earlier reason".to_string())
            ]
        );
        assert_eq!(d.key.as_deref(), Some("k1"));
        assert_eq!(d.event_id().as_deref(), Some("e1"));
        assert_eq!(d.time.as_deref(), Some("2023-11-14T22:13:20.000Z"));
    }

    #[test]
    fn a_dead_letter_without_origin_headers_has_no_original() {
        let d = DeadLetter::from_record(record(&[(letters::REASON, "x")]));
        assert_eq!(d.original, None);
        assert!(d.headers.is_empty());
    }

    #[test]
    fn a_replay_round_trips_through_json() {
        let r = Replay {
            dead_letter: Position {
                topic: "polyhost.dlq.p".into(),
                partition: 0,
                offset: 1,
            },
            to: Position {
                topic: "t".into(),
                partition: 2,
                offset: 9,
            },
            at: "2026-01-01T00:00:00.000Z".into(),
            by: "cli".into(),
            forced: false,
        };
        let back: Replay = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
