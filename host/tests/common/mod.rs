//! Shared by the integration tests: where each backing service lives, how long a test may wait
//! for it, and how to name and remove what a test creates. A service that does not accept
//! connections fails the test at once, naming the step that starts it
//! (`cargo xtask services up`).
//!
//! Where the services are, and how to reach them, is what the host reads: [`settings`], the
//! defaults or `POLYHOST_CONNECTIONS`' connections file (the secured services of
//! `cargo xtask services up --secure`: TLS and logins), with the environment's URLs over
//! them. The tests' own clients are built from the same settings by the host's own code
//! ([`kafka_config`], [`postgres`], [`mongodb`], [`redis`]), so a suite runs unchanged
//! against plain or secured services.
#![allow(dead_code)]

use std::{
    borrow::Cow,
    collections::BTreeMap,
    fmt,
    future::IntoFuture,
    net::{TcpStream, ToSocketAddrs},
    panic::{AssertUnwindSafe, resume_unwind},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use polyhost::connections::Settings;

use anyhow::{Context as _, Result, anyhow};
use futures::FutureExt as _;
use uuid::Uuid;

/// The timeout given to each client's own connect and request settings. Short, so that an
/// absent service fails the test in seconds with the client's own error, rather than hanging.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The outer bound on every step, for the clients that have no connect timeout of their own
/// (sqlx) and as a backstop for the others. Longer than [`CLIENT_TIMEOUT`] so that, where the
/// client does time out, its more specific error is the one reported.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// A backing service: its name and its address, taken from the environment so CI can point
/// the tests elsewhere, with the addresses `cargo xtask services up` uses as defaults.
#[derive(Debug, Clone)]
pub struct Service {
    /// The name used in failure messages.
    pub name: &'static str,
    /// The address handed to the client, as the environment gave it.
    pub url: String,
}

/// The host's connection settings for this run (see the module's comment): read once.
pub fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        Settings::from_env().unwrap_or_else(|e| panic!("the connection settings: {e:#}"))
    })
}

/// Whether this run uses a connections file (`POLYHOST_CONNECTIONS`).
fn connections_file() -> Option<String> {
    std::env::var("POLYHOST_CONNECTIONS")
        .ok()
        .filter(|f| !f.is_empty())
}

impl Service {
    pub fn kafka() -> Self {
        Self::checked("Kafka", "KAFKA_BROKERS", &settings().kafka.brokers)
    }

    pub fn postgres() -> Self {
        Self::checked(
            "PostgreSQL",
            "DATABASE_URL",
            settings().postgres.url.expose(),
        )
    }

    pub fn mongodb() -> Self {
        Self::checked("MongoDB", "MONGODB_URI", settings().mongodb.url.expose())
    }

    pub fn redis() -> Self {
        Self::checked("Redis", "REDIS_URL", settings().redis.url.expose())
    }

    pub fn elasticsearch() -> Self {
        Self::checked(
            "Elasticsearch",
            "ELASTICSEARCH_URL",
            settings().elasticsearch.url.expose(),
        )
    }

    fn checked(name: &'static str, var: &str, url: &str) -> Self {
        let service = Self {
            name,
            url: url.to_owned(),
        };
        service.require(var);
        service
    }

    /// Panics, naming the step to run, when nothing accepts connections at the service's
    /// address: a test run without `cargo xtask services up` then fails each test at once
    /// with that step, rather than with a client's timeout or connection error. Checked once
    /// per service and test binary; later calls repeat the first answer (a test that stops
    /// a service on purpose does so after its first use).
    fn require(&self, var: &str) {
        static CHECKED: Mutex<BTreeMap<String, Result<(), String>>> = Mutex::new(BTreeMap::new());
        let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
        let answer = checked
            .entry(self.url.clone())
            .or_insert_with(|| accepts_connections(address(&self.url)));
        if let Err(why) = answer {
            match connections_file() {
                Some(file) => panic!(
                    "{self} (from POLYHOST_CONNECTIONS={file}) does not accept connections \
                     ({why}): start the secured services with `cargo xtask services up --secure`"
                ),
                None => panic!(
                    "{self} does not accept connections ({why}): start the test services with \
                     `cargo xtask services up`, or set {var} to where {} runs",
                    self.name
                ),
            }
        }
    }
}

/// The `host:port` of a service URL (the first, for a list of Kafka brokers).
pub fn address(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, at)| at);
    host_port.split(',').next().unwrap_or(host_port)
}

/// Whether something accepts a TCP connection at `address`, within [`CLIENT_TIMEOUT`]. An
/// address this cannot resolve (no port, say) is left to the client to report.
fn accepts_connections(address: &str) -> Result<(), String> {
    let Ok(addrs) = address.to_socket_addrs() else {
        return Ok(());
    };
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    last.map_or(Ok(()), |e| Err(e.to_string()))
}

/// "Kafka at 127.0.0.1:9092": the prefix of every failure message, so an absent service is
/// named at once. A password in the URL is masked, as these messages end up in CI logs.
impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.name, without_password(&self.url))
    }
}

fn without_password(url: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return url.into();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.into();
    };
    format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..]).into()
}

/// A name no other test run uses, valid as a Kafka topic, a PostgreSQL table, a MongoDB
/// database, a Redis key and an Elasticsearch index (lower case, at most 63 characters), so
/// tests can run in parallel, and against services shared with other runs.
pub fn unique_name(kind: &str) -> String {
    format!("polyhost_test_{kind}_{}", Uuid::new_v4().simple())
}

/// Awaits one step against `service`, bounded by [`STEP_TIMEOUT`], and says which service,
/// which address and which step when it fails.
pub async fn within<T, E>(
    service: &Service,
    what: impl fmt::Display,
    step: impl IntoFuture<Output = Result<T, E>>,
) -> Result<T>
where
    E: Into<anyhow::Error>,
{
    match tokio::time::timeout(STEP_TIMEOUT, step.into_future()).await {
        Ok(outcome) => outcome
            .map_err(Into::into)
            .with_context(|| format!("{service}: {what}")),
        Err(_elapsed) => Err(anyhow!(
            "{service}: {what}: no answer within {STEP_TIMEOUT:?}"
        )),
    }
}

/// Runs `body`, then `cleanup` whether `body` succeeded, failed or panicked (a failed
/// `assert!`), so that a failing test still removes what it created.
pub async fn with_cleanup<T: ?Sized>(
    resource: &mut T,
    body: impl AsyncFnOnce(&mut T) -> Result<()>,
    cleanup: impl AsyncFnOnce(&mut T) -> Result<()>,
) -> Result<()> {
    let outcome = AssertUnwindSafe(body(resource)).catch_unwind().await;
    let cleaned = cleanup(resource).await;
    match (outcome, cleaned) {
        (Ok(Ok(())), cleaned) => cleaned,
        // The body's failure is the one to report; a cleanup failure after it is usually
        // the same cause again, but is still worth seeing in the test's output.
        (Ok(Err(failure)), Err(cleanup_failure)) => {
            eprintln!("cleanup failed too: {cleanup_failure:#}");
            Err(failure)
        }
        (Ok(Err(failure)), Ok(())) => Err(failure),
        (Err(panic), cleaned) => {
            if let Err(cleanup_failure) = cleaned {
                eprintln!("cleanup failed too: {cleanup_failure:#}");
            }
            resume_unwind(panic)
        }
    }
}

/// A Kafka client configuration for [`settings`] (TLS and SASL included), with connection
/// attempts bounded by [`CLIENT_TIMEOUT`] so that an absent broker fails a test in seconds.
pub fn kafka_config() -> rdkafka::ClientConfig {
    Service::kafka();
    let mut config = settings().kafka.client_config();
    config.set(
        "socket.connection.setup.timeout.ms",
        CLIENT_TIMEOUT.as_millis().to_string(),
    );
    config
}

/// A PostgreSQL connection for [`settings`] (TLS and password included).
pub async fn postgres() -> Result<sqlx::PgConnection> {
    use sqlx::Connection as _;
    let service = Service::postgres();
    let options = settings().postgres.connect_options()?;
    within(
        &service,
        "connecting",
        sqlx::PgConnection::connect_with(&options),
    )
    .await
}

/// A MongoDB client for [`settings`] (TLS and login included), answering a `ping`, with
/// server selection bounded by [`CLIENT_TIMEOUT`].
pub async fn mongodb() -> Result<mongodb::Client> {
    let service = Service::mongodb();
    let mut options = within(
        &service,
        "reading the client options",
        settings().mongodb.client_options(),
    )
    .await?;
    options.server_selection_timeout = Some(CLIENT_TIMEOUT);
    options.connect_timeout = Some(CLIENT_TIMEOUT);
    let client = mongodb::Client::with_options(options)
        .with_context(|| format!("{service}: building the client"))?;
    within(
        &service,
        "ping",
        client
            .database("admin")
            .run_command(mongodb::bson::doc! { "ping": 1 }),
    )
    .await?;
    Ok(client)
}

/// A Redis client for [`settings`] (TLS and ACL user included).
pub fn redis() -> Result<redis::Client> {
    let service = Service::redis();
    settings()
        .redis
        .client()
        .with_context(|| format!("{service}: building the client"))
}
