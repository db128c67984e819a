//! How MongoDB's errors read to a plugin: the one mapping of driver and server errors to
//! [`HostError`] kinds, by server error code where there is one.

use std::fmt;

use mongodb::error::{Error as MongoError, ErrorKind as MongoErrorKind, WriteFailure};

use crate::error::{HostError, Kind};

/// What a MongoDB server error code means to a plugin. Codes from the server's
/// `error_codes.yml`, which FerretDB reuses.
pub(super) fn classify_code(code: i32) -> Kind {
    match code {
        // DuplicateKey, and the legacy duplicate-key codes.
        11000 | 11001 | 12582 => Kind::Conflict,
        // DocumentValidationFailure: a collection validator's check failed.
        121 => Kind::Conflict,
        // Unauthorized, AuthenticationFailed, Atlas's AtlasError for a missing privilege.
        13 | 18 | 8000 => Kind::Denied,
        // MaxTimeMSExpired, ExceededTimeLimit.
        50 | 262 => Kind::Timeout,
        // HostUnreachable, HostNotFound, NetworkTimeout, ShutdownInProgress,
        // PrimarySteppedDown, SocketException, NotWritablePrimary, InterruptedAtShutdown,
        // InterruptedDueToReplStateChange, NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary,
        // StaleConfig, WriteConcernFailed, ExceededMemoryLimit is not here (the query's fault).
        6 | 7 | 89 | 91 | 189 | 9001 | 10107 | 11600 | 11602 | 13435 | 13436 | 13388 | 64 => {
            Kind::Unavailable
        }
        // BadValue, NoSuchKey, FailedToParse, TypeMismatch, Overflow, IllegalOperation,
        // InvalidBSON, PathNotViable, InvalidPath, ConflictingUpdateOperators,
        // DollarPrefixedFieldName, InvalidIdField, NotSingleValueField, EmptyFieldName,
        // DottedFieldName, ImmutableField, InvalidOptions, InvalidNamespace,
        // InvalidPipelineOperator, Location codes for malformed queries and sorts, and
        // NotImplemented (FerretDB: an operator it lacks, which no retry will bring),
        // BSONObjectTooLarge.
        2 | 4 | 9 | 14 | 15 | 20 | 22 | 28 | 30 | 40 | 52 | 53 | 54 | 56 | 57 | 66 | 72 | 73
        | 168 | 238 | 10334 | 15974 | 15975 | 16410 | 17287 | 31249 | 31250 | 31253 | 31254
        | 51024 => Kind::Invalid,
        _ => Kind::Other,
    }
}

/// The server's error code and a one-line description, looking through the error's
/// sources (the driver wraps a server error in, e.g., a pool-cleared error).
fn server_error(error: &MongoError) -> Option<(i32, String)> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(e) = e.downcast_ref::<MongoError>() {
            let found = match &*e.kind {
                MongoErrorKind::Command(c) => Some((
                    c.code,
                    format!("{} ({}): {}", c.code_name, c.code, c.message),
                )),
                MongoErrorKind::Write(WriteFailure::WriteError(w)) => Some((
                    w.code,
                    format!(
                        "{} ({}): {}",
                        w.code_name.as_deref().unwrap_or("WriteError"),
                        w.code,
                        w.message
                    ),
                )),
                MongoErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some((
                    w.code,
                    format!("write concern {} ({}): {}", w.code_name, w.code, w.message),
                )),
                MongoErrorKind::InsertMany(f) => f
                    .write_errors
                    .as_deref()
                    .and_then(|errors| errors.first())
                    .map(|w| {
                        (
                            w.code,
                            format!(
                                "{} ({}): {}",
                                w.code_name.as_deref().unwrap_or("WriteError"),
                                w.code,
                                w.message
                            ),
                        )
                    })
                    .or_else(|| {
                        f.write_concern_error.as_ref().map(|w| {
                            (
                                w.code,
                                format!(
                                    "write concern {} ({}): {}",
                                    w.code_name, w.code, w.message
                                ),
                            )
                        })
                    }),
                _ => None,
            };
            if found.is_some() {
                return found;
            }
        }
        current = e.source();
    }
    None
}

/// The one mapping of driver errors to host errors; `what` says which call failed.
pub(super) fn map_error(what: impl fmt::Display, error: MongoError) -> HostError {
    if let Some((code, detail)) = server_error(&error) {
        let mut kind = classify_code(code);
        if kind == Kind::Other
            && (error.contains_label("RetryableWriteError")
                || error.contains_label("TransientTransactionError"))
        {
            kind = Kind::Unavailable;
        }
        return HostError::new(kind, format!("{what}: {detail}")).with_source(error);
    }
    let kind = match &*error.kind {
        MongoErrorKind::ServerSelection { .. }
        | MongoErrorKind::Io(_)
        | MongoErrorKind::ConnectionPoolCleared { .. }
        | MongoErrorKind::DnsResolve { .. }
        | MongoErrorKind::Shutdown => Kind::Unavailable,
        MongoErrorKind::InvalidArgument { .. }
        | MongoErrorKind::BsonSerialization(_)
        | MongoErrorKind::BsonDeserialization(_) => Kind::Invalid,
        MongoErrorKind::Authentication { .. } => Kind::Denied,
        _ if error.contains_label("RetryableWriteError")
            || error.contains_label("TransientTransactionError") =>
        {
            Kind::Unavailable
        }
        _ => Kind::Other,
    };
    HostError::new(kind, format!("{what}: {}", error.kind)).with_source(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{self, doc};

    fn command_error(code: i32, name: &str) -> MongoError {
        let e: mongodb::error::CommandError =
            bson::from_document(doc! { "code": code, "codeName": name, "errmsg": "boom" }).unwrap();
        MongoError::from(MongoErrorKind::Command(e))
    }

    fn write_error(code: i32) -> MongoError {
        let e: mongodb::error::WriteError =
            bson::from_document(doc! { "code": code, "errmsg": "E11000 duplicate key" }).unwrap();
        MongoError::from(MongoErrorKind::Write(WriteFailure::WriteError(e)))
    }

    #[test]
    fn errors_map_to_kinds() {
        assert!(matches!(
            map_error("w", write_error(11000)),
            HostError { kind: Kind::Conflict, message: ref m, .. } if m.starts_with("w: ") && m.contains("duplicate key")
        ));
        assert!(matches!(
            map_error("c", command_error(13, "Unauthorized")),
            HostError {
                kind: Kind::Denied,
                ..
            }
        ));
        assert!(matches!(
            map_error("c", command_error(2, "BadValue")),
            HostError { kind: Kind::Invalid, message: ref m, .. } if m.contains("BadValue (2): boom")
        ));
        assert!(matches!(
            map_error("c", command_error(238, "NotImplemented")),
            HostError {
                kind: Kind::Invalid,
                ..
            }
        ));
        let stepped_down = command_error(189, "PrimarySteppedDown");
        assert!(map_error("c", stepped_down).is_transient());
        assert!(matches!(
            map_error("c", command_error(50, "MaxTimeMSExpired")),
            HostError {
                kind: Kind::Timeout,
                ..
            }
        ));
        assert!(matches!(
            map_error("c", command_error(99999, "Whatever")),
            HostError {
                kind: Kind::Other,
                ..
            }
        ));
        let io = MongoError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let io = map_error("io", io);
        assert!(
            matches!(
                io,
                HostError {
                    kind: Kind::Unavailable,
                    ..
                }
            ) && io.is_transient()
        );
    }

    #[test]
    fn reword_keeps_the_kind() {
        let e = HostError::conflict("dup").context("op 3");
        assert!(
            matches!(e, HostError { kind: Kind::Conflict, message: ref m, .. } if m == "op 3: dup")
        );
    }
}
