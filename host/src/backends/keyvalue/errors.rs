//! How Redis failures read to a plugin: the one mapping of Redis errors and error replies
//! to [`HostError`] kinds.

use redis::{ErrorKind as RedisErrorKind, RedisError, ServerErrorKind};

use crate::error::{HostError, Kind};

/// The kind of an error reply, by its code (the reply's first word).
pub(super) fn kind_of_code(code: &str) -> Kind {
    match code {
        // Argument and type errors: the call is wrong, not the server.
        "ERR" | "WRONGTYPE" | "CROSSSLOT" => Kind::Invalid,
        // The server is there but cannot serve now: loading, failing over, out of memory,
        // unable to persist, busy with a script.
        "LOADING"
        | "TRYAGAIN"
        | "CLUSTERDOWN"
        | "MASTERDOWN"
        | "READONLY"
        | "MOVED"
        | "ASK"
        | "OOM"
        | "MISCONF"
        | "BUSY"
        | "NOREPLICAS"
        | "MASTERDOWNNOTREPLICATING" => Kind::Unavailable,
        // The host's own credentials: a deployment problem, which retrying outlives once an
        // operator fixes it, rather than a reason to dead-letter every event meanwhile.
        "NOAUTH" | "WRONGPASS" => Kind::Unavailable,
        "NOPERM" => Kind::Denied,
        "BUSYKEY" => Kind::Conflict,
        _ => Kind::Other,
    }
}

/// Classifies a Redis failure: the one place Redis errors become plugin-visible kinds.
fn classify(error: &RedisError) -> Kind {
    if error.is_timeout() {
        return Kind::Timeout;
    }
    match error.kind() {
        RedisErrorKind::Io | RedisErrorKind::ClusterConnectionNotFound => Kind::Unavailable,
        RedisErrorKind::AuthenticationFailed => Kind::Unavailable,
        RedisErrorKind::Server(ServerErrorKind::NoPerm) => Kind::Denied,
        RedisErrorKind::Server(_) | RedisErrorKind::Extension => {
            error.code().map_or(Kind::Other, kind_of_code)
        }
        _ if error.is_connection_dropped() || error.is_connection_refusal() => Kind::Unavailable,
        _ => Kind::Other,
    }
}

/// A Redis failure of `what` as the host error the plugin sees.
pub(super) fn map_error(what: &str, error: RedisError) -> HostError {
    HostError::new(classify(&error), format!("{what}: {error}")).with_source(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_map_to_kinds() {
        assert_eq!(kind_of_code("WRONGTYPE"), Kind::Invalid);
        assert_eq!(kind_of_code("ERR"), Kind::Invalid);
        assert_eq!(kind_of_code("LOADING"), Kind::Unavailable);
        assert_eq!(kind_of_code("CLUSTERDOWN"), Kind::Unavailable);
        assert_eq!(kind_of_code("OOM"), Kind::Unavailable);
        assert_eq!(kind_of_code("NOPERM"), Kind::Denied);
        assert_eq!(kind_of_code("BUSYKEY"), Kind::Conflict);
        assert_eq!(kind_of_code("SOMETHINGNEW"), Kind::Other);
    }

    #[test]
    fn errors_map_to_host_errors() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let e = map_error("get", refused);
        assert!(
            matches!(
                e,
                HostError {
                    kind: Kind::Unavailable,
                    ..
                }
            ) && e.is_transient(),
            "{e:?}"
        );

        let timed_out = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(matches!(
            map_error("get", timed_out),
            HostError {
                kind: Kind::Timeout,
                ..
            }
        ));

        let wrongtype = redis::make_extension_error(
            "WRONGTYPE".into(),
            Some("Operation against a key holding the wrong kind of value".into()),
        );
        let e = map_error("incr-by `k`", wrongtype);
        assert!(
            matches!(&e, HostError { kind: Kind::Invalid, message: m, .. } if m.starts_with("incr-by `k`")),
            "{e:?}"
        );
        assert!(!e.is_transient());

        let parse = RedisError::from((RedisErrorKind::UnexpectedReturnType, "not a number"));
        assert!(matches!(
            map_error("get", parse),
            HostError {
                kind: Kind::Other,
                ..
            }
        ));
    }
}
