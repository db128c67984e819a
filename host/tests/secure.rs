//! Secured connections, for real: a Redis server with a TLS listener and an ACL user, and a
//! PostgreSQL cluster that accepts only TLS with a SCRAM password, each started by this test
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
    Ok(sqlx::PgConnection::connect_with(&settings.postgres.connect_options()?).await?)
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
