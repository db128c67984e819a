//! Secured connections, for real: a Kafka broker with a SASL_SSL listener and a SCRAM user, a
//! Redis server with a TLS listener and an ACL user, a PostgreSQL cluster that accepts only
//! TLS with a SCRAM password, and a FerretDB with a TLS listener whose logins PostgreSQL
//! checks, each started by this test
//! on a free port with certificates this test makes (its own CA). The host's settings
//! connect through them with verification on, do a round trip, and are refused with a clear
//! error for a wrong password and for a server whose CA they do not trust.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use polyhost::backends::{Settings, keyvalue};
use polyhost::connections::{MASK, Secret, Tls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

const USER: &str = "polyhost-app";
const PASSWORD: &str = "s3cret-for-the-test";

/// A CA (PEM) and a server certificate and key it signed, for 127.0.0.1 and localhost.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki(name: &str) -> Result<Pki> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    let cert = server.signed_by(&key, &issuer)?;
    Ok(Pki {
        ca: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A private `redis-server`: only a TLS port, the default user off, one ACL user.
struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    fn start(dir: &Path, pki: &Pki) -> Result<Redis> {
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, text)?;
            Ok(p)
        };
        let cert = write("server.pem", &pki.cert)?;
        let key = write("server.key", &pki.key)?;
        let ca = write("ca.pem", &pki.ca)?;
        let port = free_port()?;
        let child = Command::new("redis-server")
            .current_dir(dir)
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&ca)
            .args(["--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--user", "default", "off"])
            .args([
                "--user",
                USER,
                "on",
                &format!(">{PASSWORD}"),
                "~*",
                "&*",
                "+@all",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (Debian's package `redis-server`, built with TLS)")?;
        let server = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

fn settings(port: u16, ca: &Path, password: &str) -> Settings {
    let mut s = Settings::builtin();
    s.redis.url = format!("redis://127.0.0.1:{port}/0").into();
    s.redis.username = Some(USER.to_string());
    s.redis.password = Some(Secret::new(password));
    s.redis.tls = Some(Tls {
        ca_file: Some(ca.to_path_buf()),
        cert_file: None,
        key_file: None,
        verify: true,
    });
    s
}

#[tokio::test]
async fn redis_over_tls_with_an_acl_user() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("polyhost-secure-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let ours = pki("polyhost test CA")?;
    let server = Redis::start(&dir, &ours)?;
    let ca = dir.join("ca.pem");

    // Verification on, against the project's CA, with the ACL user: a round trip.
    let good = settings(server.port, &ca, PASSWORD);
    keyvalue::Shared::connect(&good)
        .await
        .context("the backend's connect over TLS")?;
    let mut conn = good
        .redis
        .client()?
        .get_multiplexed_async_connection()
        .await?;
    let key = format!("secure-test:{}", uuid::Uuid::new_v4());
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("over tls")
        .query_async(&mut conn)
        .await?;
    let back: String = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
    assert_eq!(back, "over tls");
    let whoami: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut conn)
        .await?;
    assert_eq!(whoami, USER);

    // The password never shows in what the settings print.
    let shown = format!("{good:?} {}", serde_json::to_string(&good)?);
    assert!(!shown.contains(PASSWORD) && shown.contains(MASK), "{shown}");

    // A wrong password: refused, saying why, without the password.
    let wrong = settings(server.port, &ca, "not-the-password");
    let e = format!(
        "{:#}",
        keyvalue::Shared::connect(&wrong)
            .await
            .expect_err("wrong password")
    );
    assert!(e.to_lowercase().contains("authentication failed"), "{e}");
    assert!(!e.contains("not-the-password"), "{e}");

    // A CA the server's certificate does not come from: the TLS handshake fails.
    let other = pki("another CA")?;
    let other_ca = dir.join("other-ca.pem");
    std::fs::write(&other_ca, &other.ca)?;
    let untrusted = settings(server.port, &other_ca, PASSWORD);
    let e = format!(
        "{:#}",
        keyvalue::Shared::connect(&untrusted)
            .await
            .expect_err("unknown CA")
    );
    assert!(
        e.contains("UnknownIssuer") || e.to_lowercase().contains("certificate"),
        "{e}"
    );

    // The explicit opt-out accepts that server.
    let mut insecure = settings(server.port, &other_ca, PASSWORD);
    insecure.redis.tls.as_mut().unwrap().verify = false;
    insecure.redis.tls.as_mut().unwrap().ca_file = None;
    keyvalue::Shared::connect(&insecure)
        .await
        .context("verify = false")?;

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Whether this process runs as root (PostgreSQL then runs as the `postgres` user).
fn root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `program`, as the `postgres` user when running as root.
fn as_postgres(program: &Path) -> Command {
    if root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// The newest PostgreSQL server binaries of Debian's packages.
fn pg_bin() -> Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries not found under /usr/lib/postgresql")?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").is_file())
        .collect();
    versions.sort();
    versions.pop().context("no PostgreSQL server binaries")
}

const PG_USER: &str = "polyhost_app";

/// A private PostgreSQL cluster: TLS only (`hostssl … scram-sha-256`), one login.
struct Postgres {
    child: Child,
    port: u16,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Postgres {
    fn start(dir: &Path, pki: &Pki) -> Result<Postgres> {
        let bin = pg_bin()?;
        let data = dir.join("data");
        std::fs::write(dir.join("pw"), format!("{PASSWORD}\n"))?;
        std::fs::write(dir.join("server.crt"), &pki.cert)?;
        std::fs::write(dir.join("server.key"), &pki.key)?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )?;
        if root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir)
                .status()?
                .success();
            anyhow::ensure!(ok, "chown of {} failed", dir.display());
        }
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", PG_USER, "-E", "UTF8", "--no-locale"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", dir.join("pw").display()))
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // TLS or nothing: no plain `host` line.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )?;
        let port = free_port()?;
        let child = as_postgres(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "ssl=on"])
            .arg("-c")
            .arg(format!(
                "ssl_cert_file={}",
                dir.join("server.crt").display()
            ))
            .arg("-c")
            .arg(format!("ssl_key_file={}", dir.join("server.key").display()))
            .args(["-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting postgres")?;
        let server = Postgres { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "postgres did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }
}

fn pg_settings(port: u16, ca: &Path, password: &str) -> Settings {
    let mut s = Settings::builtin();
    s.postgres.url = format!("postgres://{PG_USER}@127.0.0.1:{port}/postgres").into();
    s.postgres.password = Some(Secret::new(password));
    s.postgres.tls = Some(Tls {
        ca_file: Some(ca.to_path_buf()),
        cert_file: None,
        key_file: None,
        verify: true,
    });
    s
}

async fn pg_connect(settings: &Settings) -> Result<sqlx::PgConnection> {
    use sqlx::Connection as _;
    let options = settings.postgres.connect_options()?;
    // The server listens before it lets anyone in ("the database system is starting up").
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sqlx::PgConnection::connect_with(&options).await {
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("57P03") && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            connected => return Ok(connected?),
        }
    }
}

#[tokio::test]
async fn postgres_over_tls_with_a_scram_password() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("polyhost-secure-pg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let ours = pki("polyhost test CA")?;
    let ca = std::env::temp_dir().join(format!("polyhost-secure-ca-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&ca, &ours.ca)?;
    let server = Postgres::start(&dir, &ours)?;

    // sslmode verify-full against the project's CA, SCRAM: a round trip, over TLS.
    let good = pg_settings(server.port, &ca, PASSWORD);
    let mut conn = pg_connect(&good).await.context("connecting over TLS")?;
    let (user, ssl): (String, bool) = sqlx::query_as(
        "SELECT current_user::text, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await?;
    assert_eq!((user.as_str(), ssl), (PG_USER, true));
    sqlx::query("CREATE TABLE IF NOT EXISTS t (v text)")
        .execute(&mut conn)
        .await?;
    sqlx::query("INSERT INTO t VALUES ($1)")
        .bind("over tls")
        .execute(&mut conn)
        .await?;
    let v: String = sqlx::query_scalar("SELECT v FROM t")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(v, "over tls");

    // A wrong password: refused by the server, saying so.
    let e = format!(
        "{:#}",
        pg_connect(&pg_settings(server.port, &ca, "not-the-password"))
            .await
            .expect_err("wrong password")
    );
    assert!(e.contains("password authentication failed"), "{e}");

    // Another CA: the handshake fails before any password is sent.
    let other = pki("another CA")?;
    let other_ca = dir.join("other-ca.pem");
    std::fs::write(&other_ca, &other.ca)?;
    let e = format!(
        "{:#}",
        pg_connect(&pg_settings(server.port, &other_ca, PASSWORD))
            .await
            .expect_err("unknown CA")
    );
    assert!(
        e.contains("UnknownIssuer") || e.to_lowercase().contains("certificate"),
        "{e}"
    );

    // No TLS at all: this cluster has no plain `host` line.
    let mut plain = pg_settings(server.port, &ca, PASSWORD);
    plain.postgres.tls = None;
    plain.postgres.sslmode = Some(polyhost::connections::SslMode::Disable);
    let e = format!("{:#}", pg_connect(&plain).await.expect_err("plain refused"));
    assert!(e.contains("no pg_hba.conf entry"), "{e}");

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&ca);
    Ok(())
}

/// `java` of Java 17 (Debian's OpenJDK first, then `JAVA_HOME`), as the services run Kafka.
fn java() -> Result<PathBuf> {
    let debian = std::fs::read_dir("/usr/lib/jvm").ok().and_then(|dirs| {
        dirs.flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("java-17-"))
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
        .context("no Java 17 (cargo xtask services up installs it)")
}

/// The Kafka jars `cargo xtask services up` fetched (`<cache>/polyhost/kafka-<version>/libs`).
fn kafka_libs() -> Result<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("no cache directory")?
        .join("polyhost");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&cache)
        .with_context(|| format!("{} (cargo xtask services up fills it)", cache.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("kafka-"))
                && p.join("libs").is_dir()
        })
        .map(|p| p.join("libs"))
        .collect();
    found.sort();
    found
        .pop()
        .context("no Kafka jars in the cache (cargo xtask services up fetches them)")
}

const KAFKA_USER: &str = "polyhost-app";

/// A private one-node KRaft Kafka: a PLAINTEXT listener for itself, and the SASL_SSL
/// listener the test uses (SCRAM-SHA-256; the user made when the storage is formatted).
struct KafkaBroker {
    child: Child,
    port: u16,
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KafkaBroker {
    fn start(dir: &Path, pki: &Pki) -> Result<KafkaBroker> {
        let java = java()?;
        let classpath = format!("{}/*", kafka_libs()?.display());
        let keystore = dir.join("keystore.pem");
        std::fs::write(&keystore, format!("{}{}", pki.cert, pki.key))?;
        let (plain, secure, controller) = (free_port()?, free_port()?, free_port()?);
        let properties = dir.join("server.properties");
        std::fs::write(
            &properties,
            format!(
                "process.roles=broker,controller\n\
                 node.id=1\n\
                 controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{secure},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{secure}\n\
                 controller.listener.names=CONTROLLER\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL\n\
                 sasl.enabled.mechanisms=SCRAM-SHA-256\n\
                 listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
                 listener.name.sasl_ssl.ssl.keystore.type=PEM\n\
                 listener.name.sasl_ssl.ssl.keystore.location={}\n\
                 log.dirs={}\n\
                 num.partitions=1\n\
                 offsets.topic.replication.factor=1\n\
                 transaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\n\
                 share.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\n\
                 group.initial.rebalance.delay.ms=0\n",
                keystore.display(),
                dir.join("data").display(),
            ),
        )?;
        let format = Command::new(&java)
            .args(["-Xmx256m", "-cp", &classpath, "kafka.tools.StorageTool"])
            .args([
                "format",
                "--standalone",
                "-t",
                "MkU3OEVBNTcwNTJENDM2Qg",
                "-c",
            ])
            .arg(&properties)
            .arg("--add-scram")
            .arg(format!(
                "SCRAM-SHA-256=[name={KAFKA_USER},password={PASSWORD}]"
            ))
            .output()?;
        anyhow::ensure!(
            format.status.success(),
            "formatting the KRaft storage failed: {}",
            String::from_utf8_lossy(&format.stderr)
        );
        let child = Command::new(&java)
            .current_dir(dir)
            .args(["-Xmx384m", "-XX:+UseG1GC", "-Djava.awt.headless=true"])
            .args(["-cp", &classpath, "kafka.Kafka"])
            .arg(&properties)
            .stdout(std::fs::File::create(dir.join("kafka.out"))?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting Kafka")?;
        let broker = KafkaBroker {
            child,
            port: secure,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while std::net::TcpStream::connect(("127.0.0.1", secure)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "Kafka did not listen on {secure}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(broker)
    }
}

fn kafka_settings(port: u16, ca: &Path, password: &str) -> polyhost::connections::Kafka {
    use polyhost::connections::{Kafka, Sasl, SaslMechanism};
    let mut k = Kafka::from(format!("127.0.0.1:{port}"));
    k.tls = Some(Tls {
        ca_file: Some(ca.to_path_buf()),
        cert_file: None,
        key_file: None,
        verify: true,
    });
    k.sasl = Some(Sasl {
        mechanism: SaslMechanism::ScramSha256,
        username: KAFKA_USER.to_string(),
        password: Secret::new(password),
    });
    // Fail within the test's patience rather than librdkafka's minutes.
    k.librdkafka
        .0
        .insert("socket.connection.setup.timeout.ms".into(), "5000".into());
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_sasl_ssl_with_a_scram_user() -> Result<()> {
    use rdkafka::Message as _;
    use rdkafka::consumer::{Consumer as _, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let dir = std::env::temp_dir().join(format!("polyhost-secure-kafka-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let ours = pki("polyhost test CA")?;
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &ours.ca)?;
    let broker = KafkaBroker::start(&dir, &ours)?;

    // SASL_SSL, verified against the project's CA: the host's own topic creation, the
    // messaging backend's producer, then a produce and a consume through the one builder.
    let kafka = kafka_settings(broker.port, &ca, PASSWORD);
    assert_eq!(kafka.security_protocol(), "sasl_ssl");
    let topic = format!("secure-{}", uuid::Uuid::new_v4());
    tokio::time::timeout(
        Duration::from_secs(60),
        polyhost::trigger::ensure_topics(&kafka, std::slice::from_ref(&topic), 1),
    )
    .await
    .context("creating the topic: no answer")?
    .context("creating the topic over SASL_SSL")?;
    let mut settings = Settings::builtin();
    settings.kafka = kafka.clone();
    let shared = polyhost::backends::messaging::Shared::connect(&settings).await?;
    shared
        .ping()
        .await
        .context("the messaging backend's ping")?;
    let producer: FutureProducer = kafka.client_config().create()?;
    producer
        .send(
            FutureRecord::to(&topic).key("k").payload("over sasl_ssl"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .context("producing over SASL_SSL")?;
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", format!("secure-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()?;
    // Assigned, not subscribed: no group to join, or to leave when it is dropped.
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment.add_partition_offset(&topic, 0, rdkafka::Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .context("consuming: nothing within 60 s")??;
    assert_eq!(m.payload(), Some(&b"over sasl_ssl"[..]));
    // A received message keeps its partition, and so its broker, referenced inside
    // librdkafka: destroying the consumer waits until it is gone. (The borrow checker does
    // not stop a `BorrowedMessage` from outliving its consumer when it is dropped implicitly.)
    drop(m);

    // A wrong password: the broker refuses the SASL handshake, and librdkafka's error says
    // so (without the password).
    let e = refusal(&kafka_settings(broker.port, &ca, "not-the-password")).await?;
    assert!(e.contains("Authentication failed"), "{e}");
    assert!(!e.contains("not-the-password"), "{e}");

    // A CA the broker's certificate does not come from: the TLS handshake fails.
    let other = pki("another CA")?;
    let other_ca = dir.join("other-ca.pem");
    std::fs::write(&other_ca, &other.ca)?;
    let e = refusal(&kafka_settings(broker.port, &other_ca, PASSWORD)).await?;
    assert!(e.contains("certificate verify failed"), "{e}");

    // The host's own consumer over SASL_SSL, the dead-letter reader (a group id, assigned
    // partitions): it reads a plugin's dead letter and closes, within the bound.
    let plugin = format!("secure-{}", uuid::Uuid::new_v4());
    let letters = polyhost::trigger::dlq::topic_for(&plugin);
    tokio::time::timeout(
        Duration::from_secs(60),
        polyhost::trigger::ensure_topics(&kafka, std::slice::from_ref(&letters), 1),
    )
    .await
    .context("creating the dead-letter topic: no answer")??;
    producer
        .send(
            FutureRecord::to(&letters).key("k").payload("a dead letter"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .context("producing a dead letter over SASL_SSL")?;
    let listed = within(Duration::from_secs(60), {
        let kafka = kafka.clone();
        async move { polyhost::dlq::list(&kafka, &plugin).await }
    })
    .await
    .context("listing dead letters over SASL_SSL")??;
    assert_eq!(listed.len(), 1, "{listed:?}");

    // The clients that used SASL_SSL close, promptly, while their broker is up.
    within(Duration::from_secs(10), async move {
        drop(consumer);
        drop(producer);
        drop(shared);
    })
    .await
    .context("closing the SASL_SSL clients")?;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Runs `work` on a runtime and a thread of its own, failing when it is not done within
/// `limit`: a Kafka client whose closing hung would otherwise hold up the test's runtime at
/// its shutdown (which waits for blocking tasks), and so the test, past the bound.
async fn within<T: Send + 'static>(
    limit: Duration,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        let _ = done.send(runtime.block_on(work));
    });
    tokio::time::timeout(limit, result)
        .await
        .with_context(|| format!("not done within {limit:?}"))?
        .context("the work's thread ended without an answer")
}

/// The errors librdkafka reports to a client's context.
#[derive(Default)]
struct Errors(std::sync::Mutex<Vec<String>>);

impl rdkafka::ClientContext for Errors {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.0.lock().unwrap().push(format!("{error}: {reason}"));
    }
}

impl rdkafka::producer::ProducerContext for Errors {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// What librdkafka says when a client built from `kafka` cannot get in (within 30 s).
async fn refusal(kafka: &polyhost::connections::Kafka) -> Result<String> {
    use rdkafka::producer::{BaseProducer, Producer as _};
    // A producer: closing it does not wait for a group coordinator it never reached.
    let client: BaseProducer<Errors> = kafka
        .client_config()
        .create_with_context(Errors::default())?;
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Metadata makes the client dial; polling delivers its errors.
            let _ = client
                .client()
                .fetch_metadata(None, Duration::from_millis(500));
            client.poll(Duration::from_millis(100));
            let errors = client.context().0.lock().unwrap().join("\n");
            if !errors.is_empty() {
                return Ok(errors);
            }
            anyhow::ensure!(Instant::now() < deadline, "no error reported within 30 s");
        }
    })
    .await?
}

/// The FerretDB binary `cargo xtask services up` built (`<cache>/polyhost/ferretdb-*/bin`).
fn ferretdb_bin() -> Result<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("no cache directory")?
        .join("polyhost");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&cache)?
        .flatten()
        .map(|e| e.path().join("bin/ferretdb"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
        .pop()
        .context("no FerretDB binary in the cache (cargo xtask services up builds it)")
}

/// A private FerretDB: only a TLS listener, on its own database of the PostgreSQL service,
/// whose URL carries no credentials, so each client's (`PLAIN`) are PostgreSQL's to check.
struct FerretDb {
    child: Child,
    port: u16,
    database: String,
}

impl Drop for FerretDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FerretDb {
    async fn start(dir: &Path, pki: &Pki) -> Result<FerretDb> {
        use sqlx::Connection as _;
        let service = Settings::from_env()?.postgres;
        let database = format!("polyhost_secure_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect_with(&service.connect_options()?).await?;
        sqlx::query(&format!("CREATE DATABASE \"{database}\""))
            .execute(&mut admin)
            .await?;
        let mut url = url::Url::parse(service.url.expose())?;
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_path(&database);
        std::fs::write(dir.join("server.pem"), &pki.cert)?;
        std::fs::write(dir.join("server.key"), &pki.key)?;
        let port = free_port()?;
        let child = Command::new(ferretdb_bin()?)
            .current_dir(dir)
            .arg("--listen-addr=")
            .arg(format!("--listen-tls=127.0.0.1:{port}"))
            .arg(format!(
                "--listen-tls-cert-file={}",
                dir.join("server.pem").display()
            ))
            .arg(format!(
                "--listen-tls-key-file={}",
                dir.join("server.key").display()
            ))
            .arg("--handler=postgresql")
            .arg(format!("--postgresql-url={url}"))
            .arg(format!("--state-dir={}", dir.display()))
            .args(["--telemetry=disable", "--debug-addr=-", "--log-level=warn"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("ferretdb.log"))?)
            .spawn()
            .context("starting FerretDB")?;
        let server = FerretDb {
            child,
            port,
            database,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "FerretDB did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    /// Drops its database (after the process is gone).
    async fn remove(self) -> Result<()> {
        use sqlx::Connection as _;
        let database = self.database.clone();
        drop(self);
        let service = Settings::from_env()?.postgres;
        let mut admin = sqlx::PgConnection::connect_with(&service.connect_options()?).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
        ))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}

fn mongo_settings(port: u16, ca: &Path, password: &str) -> Result<Settings> {
    let service = Settings::from_env()?.postgres;
    let user = url::Url::parse(service.url.expose())?
        .username()
        .to_string();
    let mut s = Settings::builtin();
    s.mongodb.url = format!("mongodb://127.0.0.1:{port}/").into();
    s.mongodb.username = Some(user);
    s.mongodb.password = Some(Secret::new(password));
    s.mongodb.auth_source = Some("$external".to_string());
    s.mongodb.auth_mechanism = Some(polyhost::connections::MongoAuthMechanism::Plain);
    s.mongodb.tls = Some(Tls {
        ca_file: Some(ca.to_path_buf()),
        cert_file: None,
        key_file: None,
        verify: true,
    });
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferretdb_over_tls_with_a_login() -> Result<()> {
    use mongodb::bson::doc;
    let dir = std::env::temp_dir().join(format!("polyhost-secure-mongo-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let ours = pki("polyhost test CA")?;
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &ours.ca)?;
    let server = FerretDb::start(&dir, &ours).await?;
    let password = Settings::from_env()?
        .postgres
        .login_password()
        .context("the PostgreSQL service's URL names no password")?;

    // TLS verified against the project's CA, with a login: the backend's connect (a ping),
    // then an insert and a find through the same client options.
    let good = mongo_settings(server.port, &ca, &password)?;
    polyhost::backends::documents::Shared::connect(&good)
        .await
        .context("the documents backend's connect over TLS")?;
    let client = mongodb::Client::with_options(good.mongodb.client_options().await?)?;
    let coll = client
        .database("secure")
        .collection::<mongodb::bson::Document>("t");
    coll.insert_one(doc! { "_id": 1, "v": "over tls" }).await?;
    let found = coll
        .find_one(doc! { "_id": 1 })
        .await?
        .context("the document")?;
    assert_eq!(found.get_str("v")?, "over tls");

    // A wrong password: refused.
    let wrong = mongo_settings(server.port, &ca, "not-the-password")?;
    let e = format!(
        "{:#}",
        polyhost::backends::documents::Shared::connect(&wrong)
            .await
            .expect_err("wrong password")
    );
    assert!(e.to_lowercase().contains("auth"), "{e}");
    assert!(!e.contains("not-the-password"), "{e}");

    // A CA the server's certificate does not come from: the TLS handshake fails.
    let other = pki("another CA")?;
    let other_ca = dir.join("other-ca.pem");
    std::fs::write(&other_ca, &other.ca)?;
    let untrusted = mongo_settings(server.port, &other_ca, &password)?;
    let e = format!(
        "{:#}",
        polyhost::backends::documents::Shared::connect(&untrusted)
            .await
            .expect_err("unknown CA")
    );
    assert!(
        e.contains("UnknownIssuer") || e.to_lowercase().contains("certificate"),
        "{e}"
    );

    server.remove().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
