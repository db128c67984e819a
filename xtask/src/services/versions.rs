//! Every pinned version of the backing services, in one place.
//!
//! `docker-compose.yml` at the workspace root pins the same versions for the images (a unit
//! test below keeps the two in step).

/// Apache Kafka: the `org.apache.kafka:kafka_2.13` jars from Maven Central (KRaft, one node).
pub const KAFKA: &str = "4.1.1";
/// The Scala binary version of the Kafka jars.
pub const KAFKA_SCALA: &str = "2.13";
/// Log4j 2, the logging back end Kafka's distribution ships (the jars on Maven Central do not
/// depend on one). `log4j-slf4j-impl` since Kafka 4.1 still uses SLF4J 1.7.
pub const KAFKA_LOG4J: &str = "2.24.3";
/// The Maven plugin that copies Kafka's runtime class path into the cache.
pub const MAVEN_DEPENDENCY_PLUGIN: &str = "3.8.1";

/// Elasticsearch: `org.elasticsearch.distribution.integ-test-zip:elasticsearch:<v>:zip` from
/// Maven Central. The major version must match the Rust client's (`elasticsearch` 8.x).
pub const ELASTICSEARCH: &str = "8.19.21";

/// FerretDB (MongoDB wire protocol), built with `go install`.
pub const FERRETDB: &str = "v1.24.2";

/// The PostgreSQL major version looked for first (Debian 12's); any installed major works.
pub const POSTGRES_MAJOR: &str = "15";

/// The Java feature version Kafka and Elasticsearch run on.
pub const JAVA_MAJOR: &str = "17";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_file_pins_the_same_versions() {
        let compose = std::fs::read_to_string(crate::cmd::root().join("docker-compose.yml"))
            .expect("docker-compose.yml at the workspace root");
        for image in [
            format!("apache/kafka:{KAFKA}"),
            format!("postgres:{POSTGRES_MAJOR}"),
            format!("elasticsearch/elasticsearch:{ELASTICSEARCH}"),
            format!("kibana/kibana:{ELASTICSEARCH}"),
        ] {
            assert!(
                compose.contains(&image),
                "docker-compose.yml should use {image}"
            );
        }
    }
}
