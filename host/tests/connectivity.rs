//! Connectivity: the host's five clients (rdkafka, sqlx, mongodb, redis, elasticsearch) each
//! reach their real service and round-trip data through it: Kafka a keyed message with a
//! header, PostgreSQL a row of bound parameters, MongoDB a document, Redis a key with a TTL,
//! Elasticsearch an indexed document found by a search.
//!
//! These tests need the services (`cargo xtask services up`), and fail, rather than skip,
//! when one is absent: a missing service must not pass unnoticed. Every test works on names
//! of its own and removes them afterwards, so they run in parallel and leave nothing behind.

mod common;

use anyhow::{Context as _, Result, bail, ensure};
use common::{CLIENT_TIMEOUT, Service, unique_name, with_cleanup, within};
use serde_json::{Value, json};

/// Failure messages name each service's URL, and end up in CI logs: a password must not.
#[test]
fn failure_messages_mask_passwords() {
    let service = |url: &str| Service {
        name: "S",
        url: url.to_owned(),
    };
    for (url, shown) in [
        (
            "postgres://postgres:secret@127.0.0.1:5432/polyhost",
            "postgres://postgres:***@127.0.0.1:5432/polyhost",
        ),
        ("mongodb://127.0.0.1:27017", "mongodb://127.0.0.1:27017"),
        (
            "redis://user@127.0.0.1:6379/0",
            "redis://user@127.0.0.1:6379/0",
        ),
        ("127.0.0.1:9092", "127.0.0.1:9092"),
    ] {
        assert_eq!(service(url).to_string(), format!("S at {shown}"));
    }
}

/// The address checked before a test uses a service: `host:port` out of each URL form.
#[test]
fn service_addresses_come_out_of_their_urls() {
    for (url, address) in [
        (
            "postgres://postgres:secret@127.0.0.1:5432/polyhost",
            "127.0.0.1:5432",
        ),
        ("mongodb://127.0.0.1:27017", "127.0.0.1:27017"),
        ("redis://user@127.0.0.1:6379/0", "127.0.0.1:6379"),
        ("http://127.0.0.1:9200", "127.0.0.1:9200"),
        ("127.0.0.1:9092,127.0.0.1:9093", "127.0.0.1:9092"),
    ] {
        assert_eq!(common::address(url), address);
    }
}

#[tokio::test]
async fn kafka_round_trips_a_keyed_message_with_a_header() -> Result<()> {
    use rdkafka::{
        Message as _,
        admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
        client::DefaultClientContext,
        consumer::{Consumer as _, StreamConsumer},
        error::RDKafkaErrorCode,
        message::{Header, Headers as _, OwnedHeaders},
        producer::{FutureProducer, FutureRecord},
    };

    let kafka = Service::kafka();
    let topic = unique_name("kafka");
    let group = unique_name("kafka");

    let config = |extra: &[(&str, &str)]| {
        // The host's settings (TLS and SASL when secured); librdkafka retries an unreachable
        // broker forever, so each attempt is bounded and the request timeouts below are what
        // ends a test against an absent broker.
        let mut config = common::kafka_config();
        for (key, value) in extra {
            config.set(*key, *value);
        }
        config
    };

    let mut admin: AdminClient<DefaultClientContext> = config(&[])
        .create()
        .with_context(|| format!("{kafka}: building the admin client"))?;
    // The operation timeout makes the broker answer only once the topic is ready, so the
    // producer below does not race its creation.
    let admin_options = AdminOptions::new()
        .request_timeout(Some(CLIENT_TIMEOUT))
        .operation_timeout(Some(CLIENT_TIMEOUT));

    let created = within(
        &kafka,
        format!("creating topic {topic}"),
        admin.create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &admin_options,
        ),
    )
    .await?;
    for result in created {
        if let Err((name, code)) = result {
            bail!("{kafka}: creating topic {name}: {code}");
        }
    }

    let key = "video-42";
    let payload = r#"{"event":"view","video_id":"video-42"}"#;
    let trace_id = unique_name("trace");

    with_cleanup(
        &mut admin,
        async |_| {
            let producer: FutureProducer = config(&[(
                "message.timeout.ms",
                CLIENT_TIMEOUT.as_millis().to_string().as_str(),
            )])
            .create()
            .with_context(|| format!("{kafka}: building the producer"))?;
            let record = FutureRecord::to(&topic).key(key).payload(payload).headers(
                OwnedHeaders::new().insert(Header {
                    key: "trace-id",
                    value: Some(trace_id.as_str()),
                }),
            );
            within(&kafka, format!("producing to {topic}"), async {
                producer
                    .send(record, CLIENT_TIMEOUT)
                    .await
                    .map_err(|(error, _)| error)
            })
            .await?;

            // Subscribed only after the message is delivered, so the topic certainly exists
            // when the consumer first asks for its metadata.
            let consumer: StreamConsumer = config(&[
                ("group.id", group.as_str()),
                ("auto.offset.reset", "earliest"),
                // Nothing committed means nothing of the group outlives the test.
                ("enable.auto.commit", "false"),
            ])
            .create()
            .with_context(|| format!("{kafka}: building the consumer"))?;
            consumer
                .subscribe(&[&topic])
                .with_context(|| format!("{kafka}: subscribing to {topic}"))?;
            let message = within(
                &kafka,
                format!("consuming from {topic} as group {group}"),
                consumer.recv(),
            )
            .await?;

            assert_eq!(message.key(), Some(key.as_bytes()));
            assert_eq!(message.payload(), Some(payload.as_bytes()));
            let header = message
                .headers()
                .and_then(|headers| headers.iter().find(|header| header.key == "trace-id"))
                .and_then(|header| header.value);
            assert_eq!(header, Some(trace_id.as_bytes()));
            Ok(())
            // The consumer is dropped here, which leaves the group, so the group is empty
            // and can be deleted below.
        },
        async |admin| {
            let groups = within(
                &kafka,
                format!("deleting group {group}"),
                admin.delete_groups(&[&group], &admin_options),
            )
            .await?;
            for result in groups {
                match result {
                    // The body failed before the consumer joined: there is no group.
                    Ok(_) | Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
                    Err((name, code)) => bail!("{kafka}: deleting group {name}: {code}"),
                }
            }
            let deleted = within(
                &kafka,
                format!("deleting topic {topic}"),
                admin.delete_topics(&[&topic], &admin_options),
            )
            .await?;
            for result in deleted {
                if let Err((name, code)) = result {
                    bail!("{kafka}: deleting topic {name}: {code}");
                }
            }
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn postgres_round_trips_bound_parameters() -> Result<()> {
    let postgres = Service::postgres();
    // One connection rather than a pool: a pool retries a refused connection until its
    // acquire timeout and then reports only "pool timed out", hiding the cause.
    let mut connection = common::postgres().await?;

    let table = unique_name("postgres");
    let create = format!(
        "CREATE TABLE {table} (title text NOT NULL, views int4 NOT NULL, \
         meta jsonb NOT NULL, thumbnail bytea NOT NULL)"
    );
    within(
        &postgres,
        format!("creating table {table}"),
        sqlx::query(&create).execute(&mut connection),
    )
    .await?;

    let title = "Big Buck Bunny";
    let views = 42_i32;
    let meta = json!({ "tags": ["animation", "cc-by"], "duration_s": 596 });
    // Bytes that are not valid UTF-8, so a text round trip would be caught.
    let thumbnail = vec![0x89_u8, b'P', b'N', b'G', 0x00, 0xff];

    with_cleanup(
        &mut connection,
        async |connection| {
            let insert = format!(
                "INSERT INTO {table} (title, views, meta, thumbnail) VALUES ($1, $2, $3, $4)"
            );
            within(
                &postgres,
                format!("inserting into {table}"),
                sqlx::query(&insert)
                    .bind(title)
                    .bind(views)
                    .bind(&meta)
                    .bind(&thumbnail)
                    .execute(&mut *connection),
            )
            .await?;

            let select =
                format!("SELECT title, views, meta, thumbnail FROM {table} WHERE title = $1");
            let row: (String, i32, Value, Vec<u8>) = within(
                &postgres,
                format!("selecting from {table}"),
                sqlx::query_as(&select)
                    .bind(title)
                    .fetch_one(&mut *connection),
            )
            .await?;
            assert_eq!(
                row,
                (title.to_owned(), views, meta.clone(), thumbnail.clone())
            );
            Ok(())
        },
        async |connection| {
            let drop = format!("DROP TABLE {table}");
            within(
                &postgres,
                format!("dropping table {table}"),
                sqlx::query(&drop).execute(&mut *connection),
            )
            .await?;
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn mongodb_finds_an_inserted_document() -> Result<()> {
    use mongodb::bson::{Document, doc};

    let mongodb = Service::mongodb();
    // The host's settings (TLS and login when secured); server selection bounded, and a ping
    // made, so that an absent server fails here, before there is anything to clean up.
    let client = common::mongodb().await?;

    // A database of its own, rather than a collection in a shared one, so that dropping it
    // removes everything the test made, indexes included.
    let mut database = client.database(&unique_name("mongodb"));
    let name = database.name().to_owned();

    with_cleanup(
        &mut database,
        async |database| {
            let videos = database.collection::<Document>("videos");
            let inserted = within(
                &mongodb,
                format!("inserting into {name}.videos"),
                videos.insert_one(doc! {
                    "title": "Big Buck Bunny",
                    "views": 42_i32,
                    "tags": ["animation", "cc-by"],
                }),
            )
            .await?;

            let found = within(
                &mongodb,
                format!("finding in {name}.videos"),
                videos.find_one(doc! { "title": "Big Buck Bunny" }),
            )
            .await?
            .with_context(|| format!("{mongodb}: the inserted document was not found"))?;

            assert_eq!(found.get("_id"), Some(&inserted.inserted_id));
            assert_eq!(found.get_str("title")?, "Big Buck Bunny");
            assert_eq!(found.get_i32("views")?, 42);
            let tags: Vec<_> = found
                .get_array("tags")?
                .iter()
                .filter_map(|tag| tag.as_str())
                .collect();
            assert_eq!(tags, ["animation", "cc-by"]);
            Ok(())
        },
        async |database| {
            within(
                &mongodb,
                format!("dropping database {name}"),
                database.drop(),
            )
            .await
        },
    )
    .await
}

#[tokio::test]
async fn redis_keeps_a_key_with_its_ttl() -> Result<()> {
    use redis::{
        AsyncTypedCommands as _, IntegerReplyOrNoOp,
        aio::{ConnectionManager, ConnectionManagerConfig},
    };

    let redis = Service::redis();
    let client = common::redis()?;
    // The manager retries a failed connection six times with backoff by default; one retry
    // is enough to show a service that is there.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CLIENT_TIMEOUT))
        .set_response_timeout(Some(CLIENT_TIMEOUT))
        .set_number_of_retries(1);
    let mut connection = within(
        &redis,
        "connecting",
        ConnectionManager::new_with_config(client, config),
    )
    .await?;

    let key = unique_name("redis");
    let ttl_seconds: u64 = 60;

    with_cleanup(
        &mut connection,
        async |connection| {
            within(
                &redis,
                format!("setting {key}"),
                connection.set_ex(&key, "Big Buck Bunny", ttl_seconds),
            )
            .await?;
            let value = within(&redis, format!("getting {key}"), connection.get(&key)).await?;
            assert_eq!(value.as_deref(), Some("Big Buck Bunny"));

            let ttl = within(
                &redis,
                format!("reading the TTL of {key}"),
                connection.ttl(&key),
            )
            .await?;
            match ttl {
                IntegerReplyOrNoOp::IntegerReply(left) => ensure!(
                    (1..=ttl_seconds).contains(&u64::try_from(left)?),
                    "{redis}: {key} has {left} s left of a {ttl_seconds} s TTL"
                ),
                other => bail!("{redis}: {key} has no TTL: {other:?}"),
            }
            Ok(())
        },
        async |connection| {
            within(&redis, format!("deleting {key}"), connection.del(&key)).await?;
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn elasticsearch_finds_an_indexed_document() -> Result<()> {
    use elasticsearch::{
        Elasticsearch, IndexParts, SearchParts,
        http::{
            Url,
            transport::{SingleNodeConnectionPool, TransportBuilder},
        },
        indices::{IndicesCreateParts, IndicesDeleteParts},
        params::Refresh,
    };

    let elasticsearch = Service::elasticsearch();
    let url = Url::parse(&elasticsearch.url)
        .with_context(|| format!("{elasticsearch}: parsing the URL"))?;
    let builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .timeout(CLIENT_TIMEOUT)
        // The service is addressed directly; an HTTP(S)_PROXY set for package downloads must
        // not capture requests to it.
        .disable_proxy();
    let transport = common::settings()
        .elasticsearch
        .transport(builder)?
        .build()
        .with_context(|| format!("{elasticsearch}: building the transport"))?;
    let mut client = Elasticsearch::new(transport);

    let index = unique_name("elasticsearch");
    // One shard and no replica: on a single node a replica could never be placed, and the
    // index would stay yellow.
    elasticsearch_json(
        &elasticsearch,
        format!("creating index {index}"),
        client
            .indices()
            .create(IndicesCreateParts::Index(&index))
            .body(json!({
                "settings": { "number_of_shards": 1, "number_of_replicas": 0 }
            }))
            .send(),
    )
    .await?;

    let video = json!({ "title": "Big Buck Bunny", "views": 42, "tags": ["animation"] });

    with_cleanup(
        &mut client,
        async |client| {
            elasticsearch_json(
                &elasticsearch,
                format!("indexing into {index}"),
                client
                    .index(IndexParts::IndexId(&index, "video-42"))
                    .body(video.clone())
                    // Makes the document searchable before the call returns, so the search
                    // below needs no retry loop.
                    .refresh(Refresh::WaitFor)
                    .send(),
            )
            .await?;

            let found = elasticsearch_json(
                &elasticsearch,
                format!("searching {index}"),
                client
                    .search(SearchParts::Index(&[&index]))
                    .body(json!({ "query": { "match": { "title": "bunny" } } }))
                    .send(),
            )
            .await?;
            assert_eq!(found["hits"]["total"]["value"], 1, "hits: {found}");
            assert_eq!(found["hits"]["hits"][0]["_id"], "video-42");
            assert_eq!(found["hits"]["hits"][0]["_source"], video);
            Ok(())
        },
        async |client| {
            elasticsearch_json(
                &elasticsearch,
                format!("deleting index {index}"),
                client
                    .indices()
                    .delete(IndicesDeleteParts::Index(&[&index]))
                    .send(),
            )
            .await?;
            Ok(())
        },
    )
    .await
}

/// The Elasticsearch client answers `Ok` for any HTTP status; this turns an error status into
/// an error carrying Elasticsearch's own explanation, and a success into its JSON body.
async fn elasticsearch_json(
    elasticsearch: &Service,
    what: String,
    request: impl Future<Output = Result<elasticsearch::http::response::Response, elasticsearch::Error>>,
) -> Result<Value> {
    let response = within(elasticsearch, &what, request).await?;
    let status = response.status_code();
    let body = within(elasticsearch, &what, response.text()).await?;
    ensure!(
        status.is_success(),
        "{elasticsearch}: {what}: HTTP {status}: {body}"
    );
    serde_json::from_str(&body)
        .with_context(|| format!("{elasticsearch}: {what}: the answer is not JSON: {body}"))
}
