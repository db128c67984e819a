//! `[connections.redis]`: the `keyvalue` backend's server, ACL user and TLS.

use anyhow::Context as _;
use redis::IntoConnectionInfo as _;
use serde::{Deserialize, Serialize};

use super::{DEFAULT_REDIS_URL, Secret, ServiceUrl, Tls};

/// How the host reaches Redis.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// `redis://host:port[/db]`, or `rediss://` for TLS (env `REDIS_URL`).
    #[serde(default = "default_url")]
    pub url: ServiceUrl,
    /// The ACL user (`AUTH username password`), instead of the URL's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password, instead of the URL's (a secret: a string or `{ env = "VARIABLE" }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// TLS (the URL becomes `rediss://`): the CA to verify the server against (only it
    /// is trusted when given), and a client certificate if the server asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

fn default_url() -> ServiceUrl {
    DEFAULT_REDIS_URL.into()
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            url: default_url(),
            username: None,
            password: None,
            tls: None,
        }
    }
}

impl Redis {
    /// The client: the URL, with `tls`, `username` and `password` over it.
    pub fn client(&self) -> anyhow::Result<redis::Client> {
        let mut url = self.url.expose().to_string();
        if let Some(tls) = &self.tls {
            if let Some(rest) = url.strip_prefix("redis://") {
                url = format!("rediss://{rest}");
            }
            if !tls.verify && !url.contains('#') {
                url.push_str("#insecure");
            }
        }
        let mut info = url
            .as_str()
            .into_connection_info()
            .with_context(|| format!("parsing the Redis URL `{}`", self.url))?;
        let mut login = info.redis_settings().clone();
        if let Some(u) = &self.username {
            login = login.set_username(u);
        }
        if let Some(p) = &self.password {
            login = login.set_password(p.expose());
        }
        info = info.set_redis_settings(login);
        let Some(tls) = &self.tls else {
            return redis::Client::open(info).context("building the Redis client");
        };
        let client_tls = match (&tls.cert_file, &tls.key_file) {
            (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
                client_cert: std::fs::read(c)
                    .with_context(|| format!("reading the client certificate {}", c.display()))?,
                client_key: std::fs::read(k)
                    .with_context(|| format!("reading the client key {}", k.display()))?,
            }),
            _ => None,
        };
        let certs = redis::TlsCertificates {
            client_tls,
            root_cert: tls.read_ca()?,
        };
        redis::Client::build_with_tls(info, certs).context("building the Redis TLS client")
    }
}
