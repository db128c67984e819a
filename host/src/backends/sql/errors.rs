//! How PostgreSQL's errors read to a plugin: the one mapping of sqlx errors to [`HostError`]
//! kinds, by SQLSTATE where the server gave one.

use crate::error::{HostError, Kind};

/// What kind of failure a sqlx error is: the one place PostgreSQL's errors become
/// [`HostError`]s.
pub(super) fn map_error(role: &str, e: sqlx::Error) -> HostError {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = format!(
                "PostgreSQL (role `{role}`): {} [SQLSTATE {code}]",
                db.message()
            );
            HostError::new(kind_for_sqlstate(&code), message)
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => {
            HostError::unavailable(format!("PostgreSQL (role `{role}`): {e}"))
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_) => HostError::invalid(format!("PostgreSQL: {e}")),
        other => HostError::other(format!("PostgreSQL (role `{role}`): {other}")),
    }
}

/// The [`HostError`] kind for a SQLSTATE (PostgreSQL's appendix A).
fn kind_for_sqlstate(code: &str) -> Kind {
    match code {
        // insufficient_privilege: the role's GRANTs do not cover it.
        "42501" => Kind::Denied,
        // query_canceled: statement_timeout or a cancel.
        "57014" => Kind::Timeout,
        // protocol_violation, e.g. parameters that do not fit the prepared statement:
        // class 08, but sending the same again cannot succeed.
        "08P01" => Kind::Invalid,
        // cannot_connect_now, admin/crash shutdown, lock_not_available, and serialization
        // failures and deadlocks, which succeed when the transaction is tried again.
        "57P01" | "57P02" | "57P03" | "55P03" => Kind::Unavailable,
        _ => match code.get(..2).unwrap_or("") {
            // integrity constraint violations: unique, foreign key, check, not null.
            "23" => Kind::Conflict,
            // syntax errors and undefined names (42), bad data (22), a statement a
            // transaction in its state cannot run (25), unsupported features (0A).
            "42" | "22" | "25" | "0A" | "2B" | "26" | "34" => Kind::Invalid,
            // connection exceptions, bad login or database (the server refused the
            // connection), insufficient resources (too many connections, disk full),
            // transaction rollbacks (serialization failure, deadlock).
            "08" | "28" | "3D" | "53" | "40" => Kind::Unavailable,
            _ => Kind::Other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: &str) -> String {
        format!("{:?}", kind_for_sqlstate(code))
    }

    #[test]
    fn sqlstates_map_to_kinds() {
        assert_eq!(kind("42501"), "Denied");
        assert_eq!(kind("23505"), "Conflict"); // unique_violation
        assert_eq!(kind("23503"), "Conflict"); // foreign_key_violation
        assert_eq!(kind("42601"), "Invalid"); // syntax_error, several statements
        assert_eq!(kind("42P01"), "Invalid"); // undefined_table
        assert_eq!(kind("42804"), "Invalid"); // datatype_mismatch
        assert_eq!(kind("22P02"), "Invalid"); // invalid_text_representation
        assert_eq!(kind("25P02"), "Invalid"); // in_failed_sql_transaction
        assert_eq!(kind("08006"), "Unavailable"); // connection_failure
        assert_eq!(kind("08P01"), "Invalid"); // protocol_violation
        assert_eq!(kind("28P01"), "Unavailable"); // invalid_password
        assert_eq!(kind("53300"), "Unavailable"); // too_many_connections
        assert_eq!(kind("40001"), "Unavailable"); // serialization_failure
        assert_eq!(kind("40P01"), "Unavailable"); // deadlock_detected
        assert_eq!(kind("57P01"), "Unavailable"); // admin_shutdown
        assert_eq!(kind("57014"), "Timeout"); // query_canceled
        assert_eq!(kind("P0001"), "Other"); // raise_exception
        assert_eq!(kind(""), "Other");
    }

    #[test]
    fn transient_errors_are_transient() {
        assert!(map_error("r", sqlx::Error::PoolTimedOut).is_transient());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(map_error("r", sqlx::Error::Io(io)).is_transient());
        assert!(!map_error("r", sqlx::Error::RowNotFound).is_transient());
    }
}
