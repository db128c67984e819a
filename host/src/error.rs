//! Errors a host call can end with, and their one conversion into the WIT error.
//!
//! Backends return [`HostError`]; the `types` host impl turns it into
//! `polyhost:platform/types.error` (which the plugin sees) or into a trap (a host bug, which
//! the plugin must not see as an ordinary error).

use crate::bindings::polyhost::platform::types::{Error as WitError, ErrorKind};

/// The failure of a host call.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Outside the plugin's grants; the call never reached the backend.
    #[error("denied: {0}")]
    Denied(String),
    /// Invalid arguments.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The target does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A constraint was violated.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend could not be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The call exceeded the plugin's host-call timeout.
    #[error("timeout: {0}")]
    Timeout(String),
    /// Any other backend failure.
    #[error("{0}")]
    Other(String),
    /// A host bug: traps the guest instead of returning an error.
    #[error("host error: {0}")]
    Trap(#[from] wasmtime::Error),
}

impl HostError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, HostError::Unavailable(_) | HostError::Timeout(_))
    }

    /// The WIT error the plugin sees, or the trap this error stands for.
    pub fn into_wit(self) -> wasmtime::Result<WitError> {
        let transient = self.is_transient();
        let (kind, message) = match self {
            HostError::Denied(m) => (ErrorKind::Denied, m),
            HostError::Invalid(m) => (ErrorKind::Invalid, m),
            HostError::NotFound(m) => (ErrorKind::NotFound, m),
            HostError::Conflict(m) => (ErrorKind::Conflict, m),
            HostError::Unavailable(m) => (ErrorKind::Unavailable, m),
            HostError::Timeout(m) => (ErrorKind::Timeout, m),
            HostError::Other(m) => (ErrorKind::Other, m),
            HostError::Trap(e) => return Err(e),
        };
        Ok(WitError {
            kind,
            message,
            transient,
        })
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
        Err(_) => Err(HostError::Timeout(format!(
            "{what} did not finish within {} ms",
            timeout.as_millis()
        ))),
    };
    let backend = what.split('.').next().unwrap_or(what);
    crate::metrics::global().backend_call(backend, started.elapsed(), result.is_err());
    result
}

/// The failure of a `wasi:keyvalue` call.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The bucket identifier is not one the host provides.
    #[error("no such store")]
    NoSuchStore,
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
        match e {
            HostError::Denied(m) => KvError::AccessDenied(m),
            HostError::Trap(t) => KvError::Trap(t),
            other => KvError::Other(other.to_string()),
        }
    }
}

impl crate::bindings::polyhost::platform::types::Host for crate::state::HostState {
    fn convert_error(&mut self, err: HostError) -> wasmtime::Result<WitError> {
        err.into_wit()
    }
}
