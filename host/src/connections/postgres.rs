//! `[connections.postgres]`: the `sql` backend's server, login and TLS.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::{DEFAULT_DATABASE_URL, Secret, ServiceUrl, Tls};

/// How the host reaches PostgreSQL. Each plugin logs in as its own role on this server and
/// database, with the same TLS settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Postgres {
    /// `postgres://[user[:password]@]host[:port]/database[?sslmode=…]` (env `DATABASE_URL`).
    #[serde(default = "default_url")]
    pub url: ServiceUrl,
    /// The user, instead of the URL's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password, instead of the URL's (a secret: a string or `{ env = "VARIABLE" }`).
    /// `polyhost migrate` lets each plugin role log in with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// `disable`, `prefer`, `require`, `verify-ca` or `verify-full`. Default: `verify-full`
    /// when `tls` is set (`require` with `tls.verify = false`), else the URL's (`prefer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<SslMode>,
    /// TLS: the CA to verify the server against, and a client certificate if the server
    /// asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

fn default_url() -> ServiceUrl {
    DEFAULT_DATABASE_URL.into()
}

impl Default for Postgres {
    fn default() -> Self {
        Postgres {
            url: default_url(),
            user: None,
            password: None,
            sslmode: None,
            tls: None,
        }
    }
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Postgres {
    /// The connection options: the URL, then `user`, `password`, `sslmode` and `tls` over it.
    pub fn connect_options(&self) -> anyhow::Result<PgConnectOptions> {
        let mut o = PgConnectOptions::from_str(self.url.expose()).map_err(|e| {
            anyhow::anyhow!(
                "the PostgreSQL URL `{}` (DATABASE_URL) is not a PostgreSQL URL: {e}",
                self.url
            )
        })?;
        if let Some(user) = &self.user {
            o = o.username(user);
        }
        if let Some(pw) = &self.password {
            o = o.password(pw.expose());
        }
        let mode = self.sslmode.or_else(|| {
            self.tls.as_ref().map(|t| {
                if t.verify {
                    SslMode::VerifyFull
                } else {
                    SslMode::Require
                }
            })
        });
        if let Some(mode) = mode {
            o = o.ssl_mode(match mode {
                SslMode::Disable => PgSslMode::Disable,
                SslMode::Prefer => PgSslMode::Prefer,
                SslMode::Require => PgSslMode::Require,
                SslMode::VerifyCa => PgSslMode::VerifyCa,
                SslMode::VerifyFull => PgSslMode::VerifyFull,
            });
        }
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca_file {
                anyhow::ensure!(ca.is_file(), "the CA file {} does not exist", ca.display());
                o = o.ssl_root_cert(ca);
            }
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                o = o.ssl_client_cert(cert).ssl_client_key(key);
            }
        }
        Ok(o)
    }

    /// The password the host logs in with: `password`, else the URL's (its `%xx` escapes
    /// decoded, as the client decodes them).
    pub fn login_password(&self) -> Option<String> {
        self.password
            .as_ref()
            .map(|p| p.expose().to_string())
            .or_else(|| {
                let url = url::Url::parse(self.url.expose()).ok()?;
                let password = percent_encoding::percent_decode_str(url.password()?);
                Some(password.decode_utf8_lossy().into_owned())
            })
    }
}
