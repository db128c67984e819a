//! Secured connections, for real: a Redis server with a TLS listener and an ACL user, started
//! by this test on a free port with certificates this test makes (its own CA). The host's
//! settings connect through it with verification on, do a round trip, and are refused with
//! a clear error for a wrong password and for a server whose CA they do not trust.

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
