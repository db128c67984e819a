//! Secrets (passwords, API keys) that are never printed, and URLs printed without their
//! password.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret is printed as, wherever it is printed.
pub const MASK: &str = "****";

/// A password or key: `Debug`, `Display` and `Serialize` print [`MASK`]; only
/// [`Secret::expose`] gives the value, at the one place a client is handed it.
///
/// In the manifest a secret is either the value itself (`password = "s3cret"`) or, better,
/// the environment variable holding it (`password = { env = "KAFKA_PASSWORD" }`), read when
/// the manifest is loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the client that needs it. Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({MASK})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FromEnv {
            env: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Value(String),
            Env(FromEnv),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a string or `{ env = \"VARIABLE\" }` naming the variable that holds it",
            )
        })? {
            Raw::Value(v) => Ok(Secret(v)),
            Raw::Env(FromEnv { env }) => std::env::var(&env).map(Secret).map_err(|_| {
                serde::de::Error::custom(format!("the environment variable `{env}` is not set"))
            }),
        }
    }
}

/// A service URL, which may carry a password (`postgres://user:pw@host/db`): `Debug`,
/// `Display` and `Serialize` print it with the password replaced by [`MASK`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ServiceUrl(String);

impl ServiceUrl {
    /// Wraps `url` (not checked here: each client parses its own).
    pub fn new(url: impl Into<String>) -> Self {
        ServiceUrl(url.into())
    }

    /// The URL with its password, for the client. Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by [`MASK`]: safe to print.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some(MASK));
                u.to_string()
            }
            Ok(_) => self.0.clone(),
            // Not a URL (e.g. a `host:port` list): a password could only be in userinfo.
            Err(_) => match self.0.rsplit_once('@') {
                Some((_, host)) => format!("{MASK}@{host}"),
                None => self.0.clone(),
            },
        }
    }
}

impl From<&str> for ServiceUrl {
    fn from(s: &str) -> Self {
        ServiceUrl(s.to_string())
    }
}

impl From<String> for ServiceUrl {
    fn from(s: String) -> Self {
        ServiceUrl(s)
    }
}

impl fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for ServiceUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_masked_in_debug_display_and_json() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), MASK);
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{MASK}\""));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_url_password_is_masked() {
        let u = ServiceUrl::new("postgres://app:hunter2@db.example:5432/polyhost");
        for shown in [
            u.to_string(),
            format!("{u:?}"),
            serde_json::to_string(&u).unwrap(),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("app:****@db.example:5432"), "{shown}");
        }
        assert!(u.expose().contains("hunter2"));
        let plain = ServiceUrl::new("redis://127.0.0.1:6379");
        assert_eq!(plain.to_string(), "redis://127.0.0.1:6379");
    }

    #[test]
    fn a_secret_is_read_from_the_named_variable() {
        #[derive(Deserialize)]
        struct T {
            password: Secret,
        }
        let t: T = toml::from_str("password = { env = \"PATH\" }").unwrap();
        assert_eq!(t.password.expose(), std::env::var("PATH").unwrap());
        let e = toml::from_str::<T>("password = { env = \"POLYHOST_SURELY_UNSET_VARIABLE\" }")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("`POLYHOST_SURELY_UNSET_VARIABLE` is not set"),
            "{e}"
        );
    }
}
