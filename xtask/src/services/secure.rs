//! The secured services of `cargo xtask services up --secure`: what they share, made once and
//! kept in `<state>/secure/`.
//!
//! - `ca.pem`: the project's own CA (rcgen), which signed `server.pem` (for `127.0.0.1` and
//!   `localhost`; its key `server.key`, mode 0600). Every secured server presents that
//!   certificate; every client verifies it against `ca.pem`.
//! - `password`: one random password for the one login every secured service knows,
//!   [`USER`]: Kafka's SCRAM-SHA-256 user, PostgreSQL's (SCRAM) superuser of the secured
//!   cluster (FerretDB's logins are PostgreSQL's), Redis's ACL user.
//! - `connections.toml`: the host's connection settings for them (the manifest's
//!   `[connections]` keys), for `POLYHOST_CONNECTIONS` or `polyhost run --connections`.
//!
//! | service | address | what is on |
//! |---|---|---|
//! | `kafka-secure` | 127.0.0.1:9094 | SASL_SSL, SCRAM-SHA-256 (the broker's own traffic on loopback 9096) |
//! | `postgres-secure` | 127.0.0.1:5433 | TLS only (`hostssl`), SCRAM |
//! | `mongodb-secure` | 127.0.0.1:27018 | FerretDB, TLS only, logins checked by `postgres-secure` |
//! | `redis-secure` | 127.0.0.1:6380 | TLS only, the default user off, one ACL user |
//!
//! Elasticsearch is not among them: the integ-test distribution has no x-pack, so no TLS and
//! no authentication; the file points at the plain one.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::layout::{Layout, mkdir};
use super::system::{chmod, random_u64, say};
use super::{elasticsearch, ferretdb, kafka, postgres, redis};

/// The login every secured service knows (a plain identifier, as PostgreSQL roles are).
pub const USER: &str = "polyhost_app";

/// The shared material of the secured services.
pub struct Secrets {
    dir: PathBuf,
    /// The password of [`USER`].
    pub password: String,
}

impl Secrets {
    /// Makes what is missing (the CA and server certificate once, the password once) and
    /// writes the connections file; the services are then started with them.
    pub fn ensure(layout: &Layout) -> Result<Secrets> {
        let dir = dir(layout);
        mkdir(&dir)?;
        if !dir.join("server.key").is_file() {
            make_pki(&dir)?;
            say(
                "secure",
                format_args!("made a CA and a server certificate in {}", dir.display()),
            );
        }
        let password_file = dir.join("password");
        if !password_file.is_file() {
            let password = format!("{:016x}{:016x}", random_u64(), random_u64());
            fs::write(&password_file, &password)?;
            chmod(&password_file, "600")?;
        }
        let secrets = Secrets::read(layout)?;
        fs::write(connections_file(layout), secrets.connections())?;
        chmod(&connections_file(layout), "600")?;
        Ok(secrets)
    }

    /// What [`Secrets::ensure`] made.
    pub fn read(layout: &Layout) -> Result<Secrets> {
        let dir = dir(layout);
        let password = fs::read_to_string(dir.join("password"))
            .context("no secured services' password: run `cargo xtask services up --secure`")?;
        Ok(Secrets {
            dir,
            password: password.trim().to_owned(),
        })
    }

    /// The CA's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The servers' certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// The servers' private key (PEM, PKCS #8).
    pub fn key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// The host's settings for the secured services, verification on.
    fn connections(&self) -> String {
        let ca = self.ca();
        let tls = format!("tls = {{ ca_file = {:?} }}", ca.display().to_string());
        let password = &self.password;
        format!(
            "# Written by `cargo xtask services up --secure`: the secured services.\n\
             # Use with POLYHOST_CONNECTIONS={path} (or `polyhost run --connections`).\n\
             \n\
             [kafka]\n\
             brokers = \"{kafka}\"\n\
             {tls}\n\
             sasl = {{ mechanism = \"SCRAM-SHA-256\", username = \"{USER}\", password = \"{password}\" }}\n\
             \n\
             [postgres]\n\
             url = \"postgres://{USER}@{postgres}/polyhost\"\n\
             password = \"{password}\"\n\
             {tls}\n\
             \n\
             [mongodb]\n\
             url = \"mongodb://{mongodb}/\"\n\
             username = \"{USER}\"\n\
             password = \"{password}\"\n\
             auth_source = \"$external\"\n\
             auth_mechanism = \"PLAIN\"\n\
             {tls}\n\
             \n\
             [redis]\n\
             url = \"redis://{redis}/0\"\n\
             username = \"{USER}\"\n\
             password = \"{password}\"\n\
             {tls}\n\
             \n\
             # No TLS or authentication in the integ-test distribution: the plain service.\n\
             [elasticsearch]\n\
             url = \"{elasticsearch}\"\n",
            path = self.dir.join("connections.toml").display(),
            kafka = kafka::SECURE_ADDR,
            postgres = postgres::SECURE_ADDR,
            mongodb = ferretdb::SECURE_ADDR,
            redis = redis::SECURE_ADDR,
            elasticsearch = elasticsearch::URL,
        )
    }
}

fn dir(layout: &Layout) -> PathBuf {
    layout.state.join("secure")
}

/// The connections file of the secured services.
pub fn connections_file(layout: &Layout) -> PathBuf {
    dir(layout).join("connections.toml")
}

/// A CA, and a server certificate it signed for 127.0.0.1 and localhost.
fn make_pki(dir: &Path) -> Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "polyhost services CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut server =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "polyhost services");
    let cert = server.signed_by(&key, &issuer)?;
    // The key last: a directory without it is a half-made one, made again.
    fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    fs::write(dir.join("server.pem"), cert.pem())?;
    let key_file = dir.join("server.key");
    fs::write(&key_file, key.serialize_pem())?;
    chmod(&key_file, "600")?;
    Ok(())
}
