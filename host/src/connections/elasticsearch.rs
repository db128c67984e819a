//! `[connections.elasticsearch]`: the `search` backend's server, credentials and TLS.

use anyhow::Context as _;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::transport::TransportBuilder;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use super::{DEFAULT_ELASTICSEARCH_URL, Secret, ServiceUrl, Tls};

/// How the host reaches Elasticsearch.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Elasticsearch {
    /// `http://host:9200` or `https://host:9200` (env `ELASTICSEARCH_URL`).
    #[serde(default = "default_url")]
    pub url: ServiceUrl,
    /// An API key, in the encoded form Elasticsearch returns (`encoded`: base64 of
    /// `id:api_key`), sent as `Authorization: ApiKey …` (a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// The user for basic authentication; needs `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password for basic authentication (a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// TLS (an `https://` URL): the CA to verify the server against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

fn default_url() -> ServiceUrl {
    DEFAULT_ELASTICSEARCH_URL.into()
}

impl Default for Elasticsearch {
    fn default() -> Self {
        Elasticsearch {
            url: default_url(),
            api_key: None,
            username: None,
            password: None,
            tls: None,
        }
    }
}

impl Elasticsearch {
    /// The `Authorization` header, if credentials are set (marked sensitive, so HTTP
    /// debugging never prints it).
    fn authorization(&self) -> anyhow::Result<Option<HeaderValue>> {
        use base64::Engine as _;
        let value = match (&self.api_key, &self.username, &self.password) {
            (Some(key), _, _) => format!("ApiKey {}", key.expose()),
            (None, Some(u), Some(p)) => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{}", p.expose()))
            ),
            _ => return Ok(None),
        };
        let mut v = HeaderValue::from_str(&value).map_err(|_| {
            anyhow::anyhow!("the Elasticsearch credentials are not valid in a header")
        })?;
        v.set_sensitive(true);
        Ok(Some(v))
    }

    /// `builder` with the credentials and TLS settings: for the official client.
    pub fn transport(&self, mut builder: TransportBuilder) -> anyhow::Result<TransportBuilder> {
        if let Some(auth) = self.authorization()? {
            builder = builder.header(AUTHORIZATION, auth);
        }
        if let Some(tls) = &self.tls {
            let validation = match (tls.verify, tls.read_ca()?) {
                (false, _) => CertificateValidation::None,
                (true, Some(pem)) => CertificateValidation::Full(
                    Certificate::from_pem(&pem).context("parsing the Elasticsearch CA file")?,
                ),
                (true, None) => CertificateValidation::Default,
            };
            builder = builder.cert_validation(validation);
        }
        Ok(builder)
    }

    /// `builder` with the credentials and TLS settings: for the plain HTTP calls the
    /// official client has no method for.
    pub fn http(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> anyhow::Result<reqwest::ClientBuilder> {
        if let Some(auth) = self.authorization()? {
            builder = builder.default_headers(HeaderMap::from_iter([(AUTHORIZATION, auth)]));
        }
        if let Some(tls) = &self.tls {
            if !tls.verify {
                builder = builder.danger_accept_invalid_certs(true);
            } else if let Some(pem) = tls.read_ca()? {
                builder = builder.tls_built_in_root_certs(false);
                for cert in reqwest::Certificate::from_pem_bundle(&pem)
                    .context("parsing the Elasticsearch CA file")?
                {
                    builder = builder.add_root_certificate(cert);
                }
            }
        }
        Ok(builder)
    }
}
