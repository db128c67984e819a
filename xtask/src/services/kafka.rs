//! Apache Kafka, one KRaft node (broker and controller in one process), from the
//! `org.apache.kafka:kafka_2.13` jars on Maven Central, run on Java 17.
//!
//! - Cache: `<cache>/kafka-<version>/libs/` — the runtime class path, copied there by Maven
//!   (`dependency:copy-dependencies` of a generated `pom.xml`, with Log4j 2 added), Maven's
//!   local repository in `<cache>/m2`.
//! - State: `<state>/kafka/{server.properties,log4j2.properties,data/,logs/server.log}`; the
//!   storage is formatted once (`kafka.tools.StorageTool format --standalone`).
//! - Listeners: PLAINTEXT 127.0.0.1:9092, CONTROLLER 127.0.0.1:9093.
//!
//! `kafka-secure` (`services up --secure`): a second node in `<state>/kafka-secure/`, its
//! clients' listener SASL_SSL 127.0.0.1:9094 (SCRAM-SHA-256, the [`secure`] certificate as a
//! PEM keystore, the SCRAM user made when the storage is formatted); its own traffic
//! (inter-broker, controller) and xtask's probe on loopback PLAINTEXT 9096 and 9097.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;

use anyhow::{Context, Result, bail};

use super::layout::{Layout, mkdir};
use super::secure::{self, Secrets};
use super::system::{random_u64, run_logged, which};
use super::{Service, process, versions};

pub const ADDR: &str = "127.0.0.1:9092";
/// `kafka-secure`'s clients' listener (SASL_SSL).
pub const SECURE_ADDR: &str = "127.0.0.1:9094";
/// `kafka-secure`'s own PLAINTEXT listener (inter-broker traffic and the probe).
pub const SECURE_INTERNAL_ADDR: &str = "127.0.0.1:9096";
const WHO: &str = "kafka";

/// The `java` of Java 17 (Debian's OpenJDK 17 first, then `$JAVA_HOME`, then `PATH`).
pub fn java() -> Option<PathBuf> {
    let debian = fs::read_dir("/usr/lib/jvm").ok().and_then(|dirs| {
        dirs.flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("java-{}-", versions::JAVA_MAJOR)))
            })
            .map(|p| p.join("bin/java"))
            .find(|j| j.is_file())
    });
    debian
        .or_else(|| {
            std::env::var_os("JAVA_HOME")
                .map(|h| PathBuf::from(h).join("bin/java"))
                .filter(|j| j.is_file())
        })
        .or_else(|| which("java", &[]))
}

/// `JAVA_HOME` of [`java`] (`<home>/bin/java`).
pub fn java_home() -> Option<PathBuf> {
    java().and_then(|j| j.parent()?.parent().map(Path::to_path_buf))
}

/// The variable that chooses the JIT compilers of the native JVMs (Kafka's, Elasticsearch's).
pub const COMPILERS_VAR: &str = "POLYHOST_JVM_COMPILERS";

/// The JVM options that choose its JIT compilers, from [`COMPILERS_VAR`]: `client` (the
/// default) runs the client compiler only (`-XX:TieredStopAtLevel=1`): on two cores the
/// optimising compiler's threads took as much CPU as the service's own work in the first
/// minutes of a run; `both` leaves the JVM's tiered compilation as it is, slower to warm
/// up and cheaper once warm, for a platform that runs for hours (see the README's "The
/// services").
pub fn compiler_options() -> Result<&'static [&'static str]> {
    compilers(std::env::var(COMPILERS_VAR).ok().as_deref())
}

fn compilers(value: Option<&str>) -> Result<&'static [&'static str]> {
    match value.map(str::trim) {
        None | Some("" | "client") => Ok(&["-XX:TieredStopAtLevel=1"]),
        Some("both") => Ok(&[]),
        Some(other) => {
            bail!("{COMPILERS_VAR}={other:?}: expected `client` (the default) or `both`")
        }
    }
}

pub fn missing_packages() -> Vec<&'static str> {
    let mut missing = vec![];
    if java().is_none() {
        missing.push("openjdk-17-jre-headless");
    }
    if which("mvn", &[]).is_none() {
        missing.push("maven");
    }
    missing
}

fn home(layout: &Layout) -> PathBuf {
    layout.cache.join(format!("kafka-{}", versions::KAFKA))
}

fn libs(layout: &Layout) -> PathBuf {
    home(layout).join("libs")
}

fn properties(layout: &Layout, service: Service) -> PathBuf {
    layout.dir(service).join("server.properties")
}

fn data_dir(layout: &Layout, service: Service) -> PathBuf {
    layout.dir(service).join("data")
}

fn logs_dir(layout: &Layout, service: Service) -> PathBuf {
    layout.dir(service).join("logs")
}

/// The listeners of `kafka` (PLAINTEXT) or `kafka-secure` (SASL_SSL for clients).
fn listeners(layout: &Layout, service: Service) -> Result<String> {
    if !service.secure() {
        return Ok("controller.quorum.bootstrap.servers=127.0.0.1:9093\n\
                   listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n\
                   advertised.listeners=PLAINTEXT://127.0.0.1:9092\n\
                   listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"
            .to_owned());
    }
    // Kafka's PEM keystore: the certificate chain and the (unencrypted PKCS #8) key.
    let s = Secrets::read(layout)?;
    let keystore = layout.dir(service).join("keystore.pem");
    fs::write(
        &keystore,
        format!(
            "{}{}",
            fs::read_to_string(s.cert())?,
            fs::read_to_string(s.key())?
        ),
    )?;
    super::system::chmod(&keystore, "600")?;
    Ok(format!(
        "controller.quorum.bootstrap.servers=127.0.0.1:9097\n\
         listeners=SASL_SSL://{SECURE_ADDR},PLAINTEXT://{SECURE_INTERNAL_ADDR},CONTROLLER://127.0.0.1:9097\n\
         advertised.listeners=SASL_SSL://{SECURE_ADDR},PLAINTEXT://{SECURE_INTERNAL_ADDR}\n\
         listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL\n\
         sasl.enabled.mechanisms=SCRAM-SHA-256\n\
         listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
         listener.name.sasl_ssl.ssl.keystore.type=PEM\n\
         listener.name.sasl_ssl.ssl.keystore.location={}\n",
        keystore.display()
    ))
}

/// The Kafka jars in the cache (fetched once), the configuration, the storage formatted once.
pub fn prepare(layout: &Layout, service: Service) -> Result<()> {
    fetch_libs(layout)?;
    let dir = layout.dir(service);
    mkdir(&dir)?;
    mkdir(&data_dir(layout, service))?;
    mkdir(&logs_dir(layout, service))?;
    fs::write(
        properties(layout, service),
        format!(
            "# Written by `cargo xtask services up`; rewritten on every start.\n\
             process.roles=broker,controller\n\
             node.id=1\n\
             {}\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             log.dirs={}\n\
             num.partitions=4\n\
             default.replication.factor=1\n\
             min.insync.replicas=1\n\
             auto.create.topics.enable=true\n\
             offsets.topic.replication.factor=1\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n",
            listeners(layout, service)?,
            data_dir(layout, service).display()
        ),
    )?;
    fs::write(
        dir.join("log4j2.properties"),
        format!(
            "# Written by `cargo xtask services up`.\n\
             name=polyhost-kafka\n\
             # keep logging through Kafka's own shutdown hook\n\
             shutdownHook=disable\n\
             appender.file.type=File\n\
             appender.file.name=FILE\n\
             appender.file.fileName={}\n\
             appender.file.layout.type=PatternLayout\n\
             appender.file.layout.pattern=[%d] %p %m (%c)%n\n\
             rootLogger.level=INFO\n\
             rootLogger.appenderRef.file.ref=FILE\n\
             logger.controller.name=kafka.controller\n\
             logger.controller.level=INFO\n\
             logger.state.name=state.change.logger\n\
             logger.state.level=WARN\n",
            server_log(layout, service).display()
        ),
    )?;
    if !data_dir(layout, service).join("meta.properties").is_file() {
        let mut format = java_command(layout, service)?;
        format
            .arg("kafka.tools.StorageTool")
            .args(["format", "--standalone", "-t", &cluster_id(), "-c"])
            .arg(properties(layout, service));
        if service.secure() {
            let s = Secrets::read(layout)?;
            format.arg("--add-scram").arg(format!(
                "SCRAM-SHA-256=[name={},password={}]",
                secure::USER,
                s.password
            ));
        }
        run_logged(
            service.name(),
            "formatting the KRaft storage",
            &mut format,
            &dir.join("format.log"),
        )?;
    }
    Ok(())
}

/// `java` with Kafka's class path and JVM options (Kafka's defaults, a small heap, and the
/// JIT compilers of [`compiler_options`]).
fn java_command(layout: &Layout, service: Service) -> Result<std::process::Command> {
    let java = java().context("no Java found (install openjdk-17-jre-headless)")?;
    let mut cmd = process::detached(java, None);
    cmd.current_dir(layout.dir(service))
        .args([
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
        ])
        .args([
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
        ])
        .args(compiler_options()?)
        .arg("-Djava.awt.headless=true")
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            layout.dir(service).join("log4j2.properties").display()
        ))
        .arg(format!(
            "-Dkafka.logs.dir={}",
            logs_dir(layout, service).display()
        ))
        .arg("-cp")
        .arg(format!("{}/*", libs(layout).display()));
    Ok(cmd)
}

/// A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.
fn cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes: Vec<u8> = [random_u64(), random_u64()]
        .iter()
        .flat_map(|n| n.to_le_bytes())
        .collect();
    let bits: u128 = u128::from_be_bytes(bytes.try_into().expect("16 bytes"));
    // 22 characters: 21 full sextets and the last 2 bits (padded with zeros).
    let mut id: String = (0..21)
        .map(|i| ALPHABET[((bits >> (122 - 6 * i)) & 63) as usize] as char)
        .collect();
    id.push(ALPHABET[((bits & 3) << 4) as usize] as char);
    // Kafka's own ids never start with '-' (it would read as a command-line flag).
    if id.starts_with('-') {
        id.replace_range(0..1, "A");
    }
    id
}

/// The runtime class path of Kafka in `<cache>/kafka-<v>/libs`, copied there by Maven.
fn fetch_libs(layout: &Layout) -> Result<()> {
    // `kafka` and `kafka-secure` start in parallel: one fetch.
    static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let libs = libs(layout);
    if libs
        .join(format!(
            "kafka_{}-{}.jar",
            versions::KAFKA_SCALA,
            versions::KAFKA
        ))
        .is_file()
    {
        return Ok(());
    }
    let home = home(layout);
    mkdir(&home)?;
    let pom = home.join("pom.xml");
    fs::write(
        &pom,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by `cargo xtask services up`: Kafka's runtime class path. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.polyhost</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"#,
            kafka = versions::KAFKA,
            scala = versions::KAFKA_SCALA,
            log4j = versions::KAFKA_LOG4J,
        ),
    )?;
    let staging = home.join("libs.tmp");
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    let mvn = which("mvn", &[]).context("mvn not found (install maven)")?;
    let mut cmd = std::process::Command::new(mvn);
    cmd.current_dir(&home)
        .args(["-B", "-f"])
        .arg(&pom)
        .arg(format!(
            "-Dmaven.repo.local={}",
            layout.cache.join("m2").display()
        ))
        .arg(format!(
            "org.apache.maven.plugins:maven-dependency-plugin:{}:copy-dependencies",
            versions::MAVEN_DEPENDENCY_PLUGIN
        ))
        .arg("-DincludeScope=runtime")
        .arg(format!("-DoutputDirectory={}", staging.display()));
    run_logged(
        WHO,
        format!("fetching Kafka {} jars with Maven", versions::KAFKA),
        &mut cmd,
        &home.join("mvn.log"),
    )?;
    fs::rename(&staging, &libs)?;
    Ok(())
}

pub fn spawn(layout: &Layout, service: Service) -> Result<Child> {
    let mut cmd = java_command(layout, service)?;
    cmd.arg("kafka.Kafka").arg(properties(layout, service));
    process::spawn_logged(&mut cmd, &stdout_log(layout, service))
}

fn server_log(layout: &Layout, service: Service) -> PathBuf {
    logs_dir(layout, service).join("server.log")
}

fn stdout_log(layout: &Layout, service: Service) -> PathBuf {
    logs_dir(layout, service).join("stdout.log")
}

pub fn logs(layout: &Layout, service: Service) -> Vec<PathBuf> {
    vec![stdout_log(layout, service), server_log(layout, service)]
}

/// Our broker's command line names our `server.properties`.
pub fn marker(layout: &Layout, service: Service) -> String {
    properties(layout, service).display().to_string()
}

/// `kafka-secure` answers: a TLS handshake on the clients' listener with the certificate the
/// project's CA signed, and `ApiVersions` and `Metadata` on its own listener.
pub fn secure_probe() -> Result<String> {
    let s = Secrets::read(&Layout::get()?)?;
    super::probe::tls(SECURE_ADDR, &s.ca())?;
    let metadata = super::probe::kafka(SECURE_INTERNAL_ADDR)?;
    Ok(format!("TLS on {SECURE_ADDR}, {metadata}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_client_compiler_is_the_default_and_both_leave_tiered_compilation() {
        let client = ["-XX:TieredStopAtLevel=1"];
        assert_eq!(super::compilers(None).unwrap(), client);
        assert_eq!(super::compilers(Some("")).unwrap(), client);
        assert_eq!(super::compilers(Some("client")).unwrap(), client);
        assert!(super::compilers(Some(" both ")).unwrap().is_empty());
        let err = super::compilers(Some("c2")).unwrap_err().to_string();
        assert!(
            err.contains("POLYHOST_JVM_COMPILERS") && err.contains("\"c2\""),
            "{err}"
        );
    }

    #[test]
    fn cluster_ids_are_22_url_safe_characters() {
        for _ in 0..100 {
            let id = super::cluster_id();
            assert_eq!(id.len(), 22);
            assert!(!id.starts_with('-'));
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
    }
}
