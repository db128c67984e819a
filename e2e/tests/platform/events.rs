//! The events of a run, read back from Kafka: what every store's expectations are computed
//! from (never the generator's own state).

use serde_json::Value;

/// One record of a platform topic, parsed as a CloudEvent.
#[derive(Debug, Clone)]
pub struct Ev {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The Kafka key, as text.
    pub key: Option<String>,
    pub id: String,
    pub ty: String,
    pub source: String,
    pub subject: Option<String>,
    /// RFC 3339.
    pub time: Option<String>,
    /// The CloudEvent's `data`.
    pub data: Value,
}

impl Ev {
    /// `data[field]` as a string (panics with the event id when it is missing).
    pub fn str(&self, field: &str) -> &str {
        self.data[field]
            .as_str()
            .unwrap_or_else(|| panic!("event {} ({}): no string `{field}`", self.id, self.ty))
    }

    /// `data[field]` as an integer (panics with the event id when it is missing).
    pub fn int(&self, field: &str) -> i64 {
        self.data[field]
            .as_i64()
            .unwrap_or_else(|| panic!("event {} ({}): no integer `{field}`", self.id, self.ty))
    }
}

/// Where the services are (the same environment variables and defaults as the host).
#[derive(Debug, Clone)]
pub struct Urls {
    pub kafka: String,
    pub database_url: String,
    pub mongodb_uri: String,
    pub redis_url: String,
    pub elasticsearch_url: String,
}

impl Urls {
    pub fn from_env() -> Self {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        Urls {
            kafka: var("KAFKA_BROKERS", "127.0.0.1:9092"),
            database_url: var(
                "DATABASE_URL",
                "postgres://postgres:postgres@127.0.0.1:5432/polyhost",
            ),
            mongodb_uri: var("MONGODB_URI", "mongodb://127.0.0.1:27017"),
            redis_url: var("REDIS_URL", "redis://127.0.0.1:6379"),
            elasticsearch_url: var("ELASTICSEARCH_URL", "http://127.0.0.1:9200"),
        }
    }
}
