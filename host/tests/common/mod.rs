//! Shared by the integration tests: where each backing service lives, how long a test may wait
//! for it, and how to name and remove what a test creates. A service that does not accept
//! connections fails the test at once, naming the step that starts it
//! (`cargo xtask services up`).

use std::{
    borrow::Cow,
    collections::BTreeMap,
    fmt,
    future::IntoFuture,
    net::{TcpStream, ToSocketAddrs},
    panic::{AssertUnwindSafe, resume_unwind},
    sync::Mutex,
    time::Duration,
};

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

impl Service {
    pub fn kafka() -> Self {
        Self::from_env("Kafka", "KAFKA_BROKERS", "127.0.0.1:9092")
    }

    pub fn postgres() -> Self {
        Self::from_env(
            "PostgreSQL",
            "DATABASE_URL",
            "postgres://postgres:postgres@127.0.0.1:5432/polyhost",
        )
    }

    pub fn mongodb() -> Self {
        Self::from_env("MongoDB", "MONGODB_URI", "mongodb://127.0.0.1:27017")
    }

    pub fn redis() -> Self {
        Self::from_env("Redis", "REDIS_URL", "redis://127.0.0.1:6379")
    }

    pub fn elasticsearch() -> Self {
        Self::from_env(
            "Elasticsearch",
            "ELASTICSEARCH_URL",
            "http://127.0.0.1:9200",
        )
    }

    fn from_env(name: &'static str, var: &str, default: &str) -> Self {
        // An empty variable is treated as unset, as a CI matrix often exports every name.
        let url = std::env::var(var)
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| default.to_owned());
        let service = Self { name, url };
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
            panic!(
                "{self} does not accept connections ({why}): start the test services with \
                 `cargo xtask services up`, or set {var} to where {} runs",
                self.name
            );
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
