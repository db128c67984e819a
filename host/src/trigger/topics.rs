//! Topic creation: the topics a plugin subscribes to, and dead-letter topics, are created
//! when they do not exist yet.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::connections::Kafka;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Creates each of `topics` with `partitions` partitions, unless it exists (then it is
/// left as it is). Topic patterns (starting with `^`) are skipped.
pub async fn ensure_topics(
    kafka: &Kafka,
    topics: &[String],
    partitions: i32,
) -> Result<(), KafkaError> {
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .filter(|t| !t.starts_with('^'))
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let results = admin(kafka)?
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

/// The process's admin client for `kafka`'s settings, made on first need and shared by the
/// trigger's topic operations after (topic creation, a dead-letter topic's limit): a client
/// costs a broker connection and a metadata round trip before its first request, and the
/// trigger's start made three per plugin, one after the other. It reconnects as any
/// librdkafka client does; the TLS files it read when made serve it for the life of the
/// process (new settings, such as other file paths, make another client).
pub fn admin(kafka: &Kafka) -> Result<Arc<AdminClient<DefaultClientContext>>, KafkaError> {
    static ADMINS: Mutex<Vec<(Kafka, Arc<AdminClient<DefaultClientContext>>)>> =
        Mutex::new(Vec::new());
    let mut admins = ADMINS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, admin)) = admins.iter().find(|(k, _)| k == kafka) {
        return Ok(admin.clone());
    }
    let admin: Arc<AdminClient<DefaultClientContext>> = Arc::new(kafka.client_config().create()?);
    admins.push((kafka.clone(), admin.clone()));
    Ok(admin)
}
