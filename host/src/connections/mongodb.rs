//! `[connections.mongodb]`: the `documents` backend's server (MongoDB or FerretDB), login
//! and TLS.

use anyhow::Context as _;
use mongodb::options::{AuthMechanism, ClientOptions, Credential, TlsOptions};
use serde::{Deserialize, Serialize};

use super::{DEFAULT_MONGODB_URI, Secret, ServiceUrl, Tls};

/// How the host reaches MongoDB (or FerretDB).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mongodb {
    /// A MongoDB connection string, `mongodb://host:port/` (env `MONGODB_URI`).
    #[serde(default = "default_url")]
    pub url: ServiceUrl,
    /// The user (SCRAM), instead of the connection string's; needs `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password (a secret: a string or `{ env = "VARIABLE" }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// The database the user is defined in (default: the connection string's, else `admin`;
    /// `$external` for `PLAIN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_source: Option<String>,
    /// `SCRAM-SHA-256`, `SCRAM-SHA-1` or `PLAIN` (FerretDB 1.x on PostgreSQL checks `PLAIN`
    /// credentials against PostgreSQL); default: negotiated with the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_mechanism: Option<MongoAuthMechanism>,
    /// TLS: the CA to verify the server against; a client certificate is one PEM file
    /// holding the certificate and its key, given as `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

/// The authentication mechanisms the host offers for MongoDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum MongoAuthMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-1")]
    ScramSha1,
    #[serde(rename = "PLAIN")]
    Plain,
}

fn default_url() -> ServiceUrl {
    DEFAULT_MONGODB_URI.into()
}

impl Default for Mongodb {
    fn default() -> Self {
        Mongodb {
            url: default_url(),
            username: None,
            password: None,
            auth_source: None,
            auth_mechanism: None,
            tls: None,
        }
    }
}

impl Mongodb {
    /// The client options: the connection string, with the login and `tls` over it.
    pub async fn client_options(&self) -> anyhow::Result<ClientOptions> {
        let mut options = ClientOptions::parse(self.url.expose())
            .await
            .with_context(|| format!("parsing the MongoDB connection string `{}`", self.url))?;
        if let (Some(user), Some(pw)) = (&self.username, &self.password) {
            let source = self
                .auth_source
                .clone()
                .or_else(|| options.credential.as_ref().and_then(|c| c.source.clone()));
            options.credential = Some(
                Credential::builder()
                    .username(user.clone())
                    .password(pw.expose().to_string())
                    .source(source)
                    .mechanism(self.auth_mechanism.map(|m| match m {
                        MongoAuthMechanism::ScramSha256 => AuthMechanism::ScramSha256,
                        MongoAuthMechanism::ScramSha1 => AuthMechanism::ScramSha1,
                        MongoAuthMechanism::Plain => AuthMechanism::Plain,
                    }))
                    .build(),
            );
        }
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca_file {
                anyhow::ensure!(ca.is_file(), "the CA file {} does not exist", ca.display());
            }
            options.tls = Some(mongodb::options::Tls::Enabled(
                TlsOptions::builder()
                    .ca_file_path(tls.ca_file.clone())
                    .cert_key_file_path(tls.cert_file.clone())
                    .allow_invalid_certificates((!tls.verify).then_some(true))
                    .build(),
            ));
        }
        Ok(options)
    }
}
