//! Shared by the integration tests: where each backing service lives, how long a test may wait
//! for it, and how to name and remove what a test creates.

use std::{
    borrow::Cow,
    fmt,
    future::IntoFuture,
    panic::{AssertUnwindSafe, resume_unwind},
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
        Self { name, url }
    }
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
