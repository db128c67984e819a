//! Errors a host call can end with, and their one conversion into the WIT error.
//!
//! Backends return [`HostError`]; the `types` host impl turns it into
//! `polyhost:platform/types.error` (which the plugin sees) or into a trap (a host bug, which
//! the plugin must not see as an ordinary error).

use crate::bindings::polyhost::platform::types::{Error as WitError, ErrorKind};

/// What kind of failure a [`HostError`] is: the WIT `error-kind`s, plus [`Kind::Trap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Outside the plugin's grants; the call never reached the backend.
    Denied,
    /// Invalid arguments.
    Invalid,
    /// The target does not exist.
    NotFound,
    /// A constraint was violated.
    Conflict,
    /// The backend could not be reached.
    Unavailable,
    /// The call exceeded the plugin's host-call timeout.
    Timeout,
    /// Any other backend failure.
    Other,
    /// A host bug: traps the guest instead of returning an error.
    Trap,
}

/// The failure of a host call: a [`Kind`], the message the plugin reads, and optionally
/// the error behind it (for the host's logs, and the trap itself for [`Kind::Trap`]).
///
/// Backends make one with the constructor of its kind ([`HostError::denied`], …) and
/// reword one with [`HostError::map_message`] / [`HostError::context`], which keep the
/// kind (and the source).
pub struct HostError {
    /// The kind, which decides the WIT error kind and whether it is transient.
    pub kind: Kind,
    /// What went wrong, for the plugin.
    pub message: String,
    source: Option<Source>,
}

enum Source {
    /// The trap a [`Kind::Trap`] error stands for.
    Trap(wasmtime::Error),
    /// The backend's own error.
    Cause(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl HostError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        HostError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Outside the plugin's grants.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(Kind::Denied, message)
    }

    /// Invalid arguments.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, message)
    }

    /// The target does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }

    /// A constraint was violated.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, message)
    }

    /// The backend could not be reached.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, message)
    }

    /// The call ran past its time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(Kind::Timeout, message)
    }

    /// Any other failure.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(Kind::Other, message)
    }

    /// A host bug: the guest traps with `error`.
    pub fn trap(error: impl Into<wasmtime::Error>) -> Self {
        let error = error.into();
        HostError {
            kind: Kind::Trap,
            message: error.to_string(),
            source: Some(Source::Trap(error)),
        }
    }

    /// The same error, with `cause` kept as its source (for logs; the plugin reads only
    /// the message).
    pub fn with_source(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        if self.kind != Kind::Trap {
            self.source = Some(Source::Cause(Box::new(cause)));
        }
        self
    }

    /// The same kind and source, the message rewritten by `f`. A trap is left as it is:
    /// its message is the host's, not the plugin's.
    pub fn map_message(mut self, f: impl FnOnce(String) -> String) -> Self {
        if self.kind != Kind::Trap {
            self.message = f(self.message);
        }
        self
    }

    /// The same kind and source, the message prefixed with `what: `.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        self.map_message(|m| format!("{what}: {m}"))
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, Kind::Unavailable | Kind::Timeout)
    }

    /// The WIT error the plugin sees, or the trap this error stands for.
    pub fn into_wit(self) -> wasmtime::Result<WitError> {
        let transient = self.is_transient();
        let kind = match self.kind {
            Kind::Denied => ErrorKind::Denied,
            Kind::Invalid => ErrorKind::Invalid,
            Kind::NotFound => ErrorKind::NotFound,
            Kind::Conflict => ErrorKind::Conflict,
            Kind::Unavailable => ErrorKind::Unavailable,
            Kind::Timeout => ErrorKind::Timeout,
            Kind::Other => ErrorKind::Other,
            Kind::Trap => {
                return Err(match self.source {
                    Some(Source::Trap(e)) => e,
                    _ => wasmtime::Error::msg(self.message),
                });
            }
        };
        Ok(WitError {
            kind,
            message: self.message,
            transient,
        })
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix = match self.kind {
            Kind::Denied => "denied: ",
            Kind::Invalid => "invalid: ",
            Kind::NotFound => "not found: ",
            Kind::Conflict => "conflict: ",
            Kind::Unavailable => "unavailable: ",
            Kind::Timeout => "timeout: ",
            Kind::Other => "",
            Kind::Trap => "host error: ",
        };
        write!(f, "{prefix}{}", self.message)
    }
}

impl std::fmt::Debug for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("HostError");
        d.field("kind", &self.kind).field("message", &self.message);
        match &self.source {
            Some(Source::Trap(e)) => d.field("trap", e),
            Some(Source::Cause(e)) => d.field("source", e),
            None => &mut d,
        };
        d.finish()
    }
}

impl std::error::Error for HostError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.source {
            Some(Source::Cause(e)) => Some(&**e),
            _ => None,
        }
    }
}

impl From<wasmtime::Error> for HostError {
    fn from(e: wasmtime::Error) -> Self {
        HostError::trap(e)
    }
}

/// Runs a backend future under the plugin's host-call timeout.
pub async fn with_timeout<T>(
    timeout: std::time::Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, HostError>>,
) -> Result<T, HostError> {
    let started = std::time::Instant::now();
    let result = match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(HostError::timeout(format!(
            "{what} did not finish within {} ms",
            timeout.as_millis()
        ))),
    };
    let took = started.elapsed();
    tracing::trace!(
        call = what,
        took_us = took.as_micros() as u64,
        failed = result.is_err(),
        "host call"
    );
    crate::metrics::global().backend_call(metric_label(what), took, result.is_err());
    result
}

/// The metric label of a call named `what` (`<interface>.<function>`): the name of the
/// grant whose backend serves the interface, so that `kv.get` and `keyvalue.get` (both
/// Redis) count under `keyvalue`.
fn metric_label(what: &str) -> &str {
    let interface = what.split('.').next().unwrap_or(what);
    crate::backends::GrantId::ALL
        .iter()
        .find(|id| {
            id.imports().iter().any(|i| {
                // `polyhost:platform/kv` serves `kv.*`; `wasi:keyvalue/store` `keyvalue.*`.
                let (package, name) = i.split_once('/').unwrap_or((i, ""));
                name == interface || package.split_once(':').map(|(_, p)| p) == Some(interface)
            })
        })
        .map_or(interface, |id| id.name())
}

/// The failure of a `wasi:keyvalue` call.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// Outside the plugin's grants.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Any other failure, including transient ones.
    #[error("{0}")]
    Other(String),
    /// A host bug: traps the guest.
    #[error("host error: {0}")]
    Trap(#[from] wasmtime::Error),
}

impl From<HostError> for KvError {
    fn from(e: HostError) -> Self {
        match e.kind {
            Kind::Denied => KvError::AccessDenied(e.message),
            Kind::Trap => match e.into_wit() {
                Err(trap) => KvError::Trap(trap),
                Ok(_) => unreachable!("a trap converts to a trap"),
            },
            _ => KvError::Other(e.to_string()),
        }
    }
}

impl crate::bindings::polyhost::platform::types::Host for crate::state::HostState {
    fn convert_error(&mut self, err: HostError) -> wasmtime::Result<WitError> {
        err.into_wit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wit_error_keeps_the_kind_the_message_and_transience() {
        let cases = [
            (HostError::denied("d"), ErrorKind::Denied, false),
            (HostError::invalid("i"), ErrorKind::Invalid, false),
            (HostError::not_found("n"), ErrorKind::NotFound, false),
            (HostError::conflict("c"), ErrorKind::Conflict, false),
            (HostError::unavailable("u"), ErrorKind::Unavailable, true),
            (HostError::timeout("t"), ErrorKind::Timeout, true),
            (HostError::other("o"), ErrorKind::Other, false),
        ];
        for (e, kind, transient) in cases {
            let message = e.message.clone();
            assert_eq!(e.is_transient(), transient, "{e:?}");
            let wit = e.into_wit().expect("not a trap");
            assert_eq!(wit.kind, kind);
            assert_eq!(wit.message, message);
            assert_eq!(wit.transient, transient);
        }
        let trap = HostError::trap(wasmtime::Error::msg("bug"));
        assert!(!trap.is_transient());
        assert_eq!(trap.to_string(), "host error: bug");
        assert_eq!(trap.into_wit().unwrap_err().to_string(), "bug");
    }

    #[test]
    fn rewording_keeps_the_kind_and_the_source_and_leaves_traps_alone() {
        let e = HostError::conflict("dup")
            .with_source(std::io::Error::other("cause"))
            .context("op 3")
            .map_message(|m| m + " (2 more failed)");
        assert_eq!(e.kind, Kind::Conflict);
        assert_eq!(e.message, "op 3: dup (2 more failed)");
        assert_eq!(e.to_string(), "conflict: op 3: dup (2 more failed)");
        assert_eq!(
            std::error::Error::source(&e).map(ToString::to_string),
            Some("cause".to_string())
        );
        let trap = HostError::trap(wasmtime::Error::msg("bug")).context("op 3");
        assert_eq!(trap.kind, Kind::Trap);
        assert_eq!(trap.into_wit().unwrap_err().to_string(), "bug");
    }

    #[test]
    fn displays_as_before() {
        assert_eq!(HostError::denied("x").to_string(), "denied: x");
        assert_eq!(HostError::not_found("x").to_string(), "not found: x");
        assert_eq!(HostError::other("x").to_string(), "x");
    }

    #[test]
    fn redis_calls_count_under_the_keyvalue_grant() {
        assert_eq!(metric_label("kv.get"), "keyvalue");
        assert_eq!(metric_label("keyvalue.get"), "keyvalue");
        assert_eq!(metric_label("sql.transaction.query"), "sql");
        assert_eq!(metric_label("documents.insert"), "documents");
        assert_eq!(metric_label("search.search"), "search");
        assert_eq!(metric_label("messaging.publish-batch"), "messaging");
    }
}
