//! Kafka publish (`polyhost:platform/messaging`), scoped to the granted topics.
//!
//! The host has one idempotent producer (`acks=all`), shared by every plugin; a plugin's
//! [`Client`] adds its topic scope. Every topic of a call is checked against the grant
//! before anything is enqueued, and a call returns only once the broker has acknowledged
//! each of its messages.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::{Backend, Data, GrantProblem, Settings, View, view};
use crate::bindings::polyhost::platform::messaging::{self as wit, Host, Message};
use crate::budget;
use crate::error::{HostError, with_timeout};
use crate::state::HostState;

/// Calls a plugin may have in flight.
const CALLS_IN_FLIGHT: usize = 64;
/// How long librdkafka keeps trying to deliver a message. Bounded well below its 5-minute
/// default: a plugin whose call timed out retries the event, and every retry enqueues
/// another copy, so stale copies should not pile up behind a broker that is down.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait before enqueueing again when librdkafka's local queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(10);

/// `grants.messaging`: the topics a plugin may publish to.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Topic names, exactly.
    pub publish: Vec<String>,
}

/// The messaging backend: Kafka publish, one idempotent producer per host.
pub struct Messaging;

impl Backend for Messaging {
    type Grant = Grant;
    type Shared = Shared;
    type Client = Client;

    const SERVICE: &'static str = "Kafka";
    const IMPORTS: &'static [&'static str] = &["polyhost:platform/messaging"];
    const GRANT_LINE: &'static str = r#"messaging = { publish = ["<topic>"] }"#;

    fn check_grant(grant: &Grant) -> Vec<GrantProblem> {
        grant
            .publish
            .iter()
            .enumerate()
            .filter(|(_, t)| !crate::manifest::valid_topic(t))
            .map(|(i, t)| {
                GrantProblem::new(
                    format!("publish[{i}]"),
                    format!("`{t}` is not a valid Kafka topic name"),
                )
            })
            .collect()
    }

    async fn connect(settings: &Settings) -> anyhow::Result<Shared> {
        Shared::connect(settings).await
    }

    async fn ping(shared: &Shared) -> anyhow::Result<()> {
        shared.ping().await
    }

    fn bind(
        shared: &Shared,
        plugin: &str,
        grant: &Grant,
        _limits: &crate::manifest::Limits,
    ) -> anyhow::Result<Client> {
        Ok(Client::new(shared, plugin, grant))
    }

    fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, Data<Self>>(linker, view::<Self>)
    }
}

/// The host's one Kafka producer.
pub struct Shared {
    producer: FutureProducer,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// Whether a Kafka broker answers a metadata request.
    pub async fn ping(&self) -> anyhow::Result<()> {
        use rdkafka::producer::Producer as _;
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(drop)
        })
        .await??;
        Ok(())
    }

    /// The idempotent producer for `KAFKA_BROKERS`. librdkafka dials the brokers in the
    /// background: a broker that is down makes publishes fail as unavailable (and be
    /// retried), rather than stopping the host here.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Shared> {
        let producer = settings
            .kafka
            .client_config()
            .set("client.id", "polyhost")
            // Idempotence keeps retried sends from duplicating or reordering records within
            // a partition; it needs acks from every in-sync replica.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .create::<FutureProducer>()
            .map_err(|e| anyhow::anyhow!("building the Kafka producer: {e}"))?;
        Ok(Shared { producer })
    }
}

/// One plugin's handle on the producer, with the topics it may publish to.
#[derive(Clone)]
pub struct Client {
    producer: FutureProducer,
    plugin: Arc<str>,
    topics: Arc<BTreeSet<String>>,
    permits: Arc<Semaphore>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("plugin", &self.plugin)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `plugin`'s handle, publishing only to the grant's topics.
    pub fn new(shared: &Shared, plugin: &str, grant: &Grant) -> Client {
        Client {
            producer: shared.producer.clone(),
            plugin: plugin.into(),
            topics: Arc::new(grant.publish.iter().cloned().collect()),
            permits: Arc::new(Semaphore::new(CALLS_IN_FLIGHT)),
        }
    }

    /// Enqueues every message in order, then waits for every acknowledgement.
    async fn send_all(&self, messages: &[Message]) -> Result<(), HostError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HostError::unavailable("the messaging client is shut down"))?;
        let total = messages.len();
        let which = |i: usize, m: &Message| {
            if total == 1 {
                format!("publishing to `{}`", m.topic)
            } else {
                format!("message {} of {total} (to `{}`)", i + 1, m.topic)
            }
        };
        // Enqueued one after another, so librdkafka keeps their order on each partition;
        // their acknowledgements are awaited together afterwards.
        let mut deliveries: Vec<DeliveryFuture> = Vec::with_capacity(total);
        for (i, m) in messages.iter().enumerate() {
            let mut record = FutureRecord::<[u8], [u8]>::to(&m.topic)
                .payload(m.value.as_slice())
                .headers(headers(m));
            if let Some(key) = &m.key {
                record = record.key(key.as_slice());
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => break deliveries.push(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                    }
                    Err((e, _)) => return Err(map_error(&which(i, m), &e)),
                }
            }
        }
        let mut first_failure = None;
        let mut failures = 0;
        for (i, delivery) in deliveries.into_iter().enumerate() {
            let failure = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => map_error(&which(i, &messages[i]), &e),
                Err(_canceled) => HostError::unavailable(format!(
                    "{}: the producer shut down before the broker answered",
                    which(i, &messages[i])
                )),
            };
            failures += 1;
            first_failure.get_or_insert(failure);
        }
        match first_failure {
            None => Ok(()),
            Some(e) if failures == 1 => Err(e),
            Some(e) => Err(e.map_message(|m| format!("{m} ({} more failed)", failures - 1))),
        }
    }
}

/// A message's headers in Kafka's form.
fn headers(m: &Message) -> OwnedHeaders {
    m.headers.iter().fold(
        OwnedHeaders::new_with_capacity(m.headers.len()),
        |h, (name, value)| {
            h.insert(Header {
                key: name,
                value: Some(value.as_slice()),
            })
        },
    )
}

/// Every topic must be in the grant; the first that is not is named in the refusal.
fn check_topics<'a>(
    plugin: &str,
    granted: &BTreeSet<String>,
    topics: impl IntoIterator<Item = &'a str>,
) -> Result<(), HostError> {
    for topic in topics {
        if !granted.contains(topic) {
            let list: Vec<&str> = granted.iter().map(String::as_str).collect();
            return Err(HostError::denied(format!(
                "plugin `{plugin}` may not publish to topic `{topic}`: grants.messaging.publish \
                 is {list:?}"
            )));
        }
    }
    Ok(())
}

/// What kind of failure a Kafka error is: the one place rdkafka's errors become
/// [`HostError`]s.
fn map_error(what: &str, e: &KafkaError) -> HostError {
    use RDKafkaErrorCode as C;
    let message = format!("{what}: {e}");
    let Some(code) = e.rdkafka_error_code() else {
        return match e {
            KafkaError::Canceled => HostError::unavailable(message),
            _ => HostError::other(message),
        };
    };
    match code {
        C::QueueFull
        | C::MessageTimedOut
        | C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::Resolve
        | C::TimedOutQueue
        | C::OperationTimedOut
        | C::RequestTimedOut
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::BrokerNotAvailable
        | C::ReplicaNotAvailable
        | C::PreferredLeaderNotAvailable
        | C::NetworkException
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::KafkaStorageError
        | C::ThrottlingQuotaExceeded
        | C::FencedLeaderEpoch
        | C::UnknownLeaderEpoch
        | C::PurgeQueue
        | C::PurgeInflight
        | C::Retry => HostError::unavailable(message),
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition | C::UnknownTopicId => {
            HostError::not_found(message)
        }
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::MessageBatchTooLarge
        | C::InvalidMessage
        | C::InvalidRecord
        | C::InvalidTopic
        | C::InvalidTimestamp
        | C::InvalidArgument
        | C::BadMessage
        | C::UnsupportedForMessageFormat
        | C::PolicyViolation => HostError::invalid(message),
        // The broker's own ACLs refused it, beyond what the manifest grants.
        C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed => HostError::denied(message),
        _ => HostError::other(message),
    }
}

/// Every message must fit `limits.max_value_bytes`, counting its value, key and headers
/// (names and values): checked for all before any is enqueued. (A message under the cap
/// but over the producer's `message.max.bytes`, 1 000 000 by default, is refused by
/// librdkafka before it is sent, as `invalid` too.)
fn check_sizes(messages: &[Message], cap: usize) -> Result<(), HostError> {
    for (i, m) in messages.iter().enumerate() {
        let len = m.value.len()
            + m.key.as_ref().map_or(0, Vec::len)
            + m.headers
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum::<usize>();
        let what = if messages.len() == 1 {
            format!("messaging: the message to `{}`", m.topic)
        } else {
            format!("messaging: message {} (to `{}`)", i + 1, m.topic)
        };
        budget::check_value(len, cap, &what)?;
    }
    Ok(())
}

impl Host for View<'_, Messaging> {
    async fn publish(&mut self, message: Message) -> Result<(), HostError> {
        let (client, env) = self.granted()?;
        check_topics(&client.plugin, &client.topics, [message.topic.as_str()])?;
        let messages = [message];
        check_sizes(&messages, env.max_value_bytes)?;
        with_timeout(
            env.host_call_timeout,
            "messaging.publish",
            client.send_all(&messages),
        )
        .await
    }

    async fn publish_batch(&mut self, messages: Vec<Message>) -> Result<(), HostError> {
        let (client, env) = self.granted()?;
        check_topics(
            &client.plugin,
            &client.topics,
            messages.iter().map(|m| m.topic.as_str()),
        )?;
        check_sizes(&messages, env.max_value_bytes)?;
        if messages.is_empty() {
            return Ok(());
        }
        with_timeout(
            env.host_call_timeout,
            "messaging.publish-batch",
            client.send_all(&messages),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    fn granted(topics: &[&str]) -> BTreeSet<String> {
        topics.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn only_granted_topics_pass() {
        let g = granted(&["streaming.derived", "streaming.users"]);
        assert!(check_topics("p", &g, ["streaming.derived"]).is_ok());
        assert!(check_topics("p", &g, ["streaming.users", "streaming.derived"]).is_ok());
        assert!(check_topics("p", &g, []).is_ok());
        let err = check_topics("p", &g, ["streaming.derived", "streaming.billing"]).unwrap_err();
        match err {
            HostError {
                kind: Kind::Denied,
                message: m,
                ..
            } => {
                assert!(m.contains("`streaming.billing`"), "{m}");
                assert!(m.contains("grants.messaging.publish"), "{m}");
                assert!(m.contains("`p`"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn topic_names_match_exactly() {
        let g = granted(&["streaming.derived"]);
        for topic in [
            "streaming.derived2",
            "streaming.*",
            "streaming",
            "",
            "Streaming.Derived",
        ] {
            assert!(
                matches!(
                    check_topics("p", &g, [topic]),
                    Err(HostError {
                        kind: Kind::Denied,
                        ..
                    })
                ),
                "{topic}"
            );
        }
        assert!(matches!(
            check_topics("p", &granted(&[]), ["streaming.derived"]),
            Err(HostError {
                kind: Kind::Denied,
                ..
            })
        ));
    }

    #[test]
    fn kafka_errors_map_to_kinds() {
        let kind = |e: KafkaError| format!("{:?}", map_error("x", &e).kind);
        let produce = KafkaError::MessageProduction;
        assert_eq!(kind(produce(RDKafkaErrorCode::QueueFull)), "Unavailable");
        assert_eq!(
            kind(produce(RDKafkaErrorCode::MessageTimedOut)),
            "Unavailable"
        );
        assert_eq!(
            kind(produce(RDKafkaErrorCode::BrokerTransportFailure)),
            "Unavailable"
        );
        assert_eq!(
            kind(produce(RDKafkaErrorCode::AllBrokersDown)),
            "Unavailable"
        );
        assert_eq!(
            kind(produce(RDKafkaErrorCode::NotEnoughReplicas)),
            "Unavailable"
        );
        assert_eq!(
            kind(produce(RDKafkaErrorCode::UnknownTopicOrPartition)),
            "NotFound"
        );
        assert_eq!(kind(produce(RDKafkaErrorCode::UnknownTopic)), "NotFound");
        assert_eq!(
            kind(produce(RDKafkaErrorCode::MessageSizeTooLarge)),
            "Invalid"
        );
        assert_eq!(kind(produce(RDKafkaErrorCode::InvalidTopic)), "Invalid");
        assert_eq!(
            kind(produce(RDKafkaErrorCode::TopicAuthorizationFailed)),
            "Denied"
        );
        assert_eq!(kind(produce(RDKafkaErrorCode::Fatal)), "Other");
        assert_eq!(kind(KafkaError::Canceled), "Unavailable");
        assert!(map_error("x", &produce(RDKafkaErrorCode::MessageTimedOut)).is_transient());
        assert!(!map_error("x", &produce(RDKafkaErrorCode::MessageSizeTooLarge)).is_transient());
    }

    #[test]
    fn a_message_counts_its_value_key_and_headers() {
        let m = |value: usize, key: usize, header: usize| Message {
            topic: "t".into(),
            key: Some(vec![0; key]),
            value: vec![0; value],
            headers: vec![("h".into(), vec![0; header])],
        };
        assert!(check_sizes(&[m(5, 2, 2)], 10).is_ok());
        for too_big in [m(9, 1, 0), m(1, 9, 0), m(1, 1, 8)] {
            let e = check_sizes(&[m(1, 1, 1), too_big], 10).unwrap_err();
            assert!(
                matches!(e, HostError { kind: Kind::Invalid, message: ref s, .. } if s.contains("message 2")
                    && s.contains("limits.max_value_bytes (10 bytes)")),
                "{e:?}"
            );
        }
    }

    #[test]
    fn grants_parse_strictly() {
        let g: Grant = toml::from_str(r#"publish = ["streaming.derived"]"#).unwrap();
        assert_eq!(g.publish, ["streaming.derived"]);
        assert!(
            toml::from_str::<Grant>(
                r#"publish = ["a"]
subscribe = ["b"]"#
            )
            .is_err()
        );
        assert!(toml::from_str::<Grant>("").is_err());
    }

    #[test]
    fn headers_keep_their_order_and_bytes() {
        use rdkafka::message::Headers as _;
        let m = Message {
            topic: "t".into(),
            key: None,
            value: vec![],
            headers: vec![
                ("trace-id".into(), b"abc".to_vec()),
                ("bin".into(), vec![0, 0xff]),
                ("trace-id".into(), vec![]),
            ],
        };
        let h = headers(&m);
        let got: Vec<(&str, Option<&[u8]>)> = h.iter().map(|h| (h.key, h.value)).collect();
        assert_eq!(
            got,
            [
                ("trace-id", Some(&b"abc"[..])),
                ("bin", Some(&[0, 0xff][..])),
                ("trace-id", Some(&[][..])),
            ]
        );
    }
}
