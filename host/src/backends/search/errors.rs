//! How Elasticsearch's answers read to a plugin: HTTP statuses and transport failures as
//! [`HostError`] kinds.

use serde_json::Value;

use crate::error::HostError;

/// `type: reason` of an Elasticsearch error body, or the body itself.
pub(super) fn reason(body: &Value) -> String {
    match body.get("error") {
        Some(Value::Object(e)) => {
            let ty = e.get("type").and_then(Value::as_str).unwrap_or("error");
            let reason = e.get("reason").and_then(Value::as_str).unwrap_or("");
            format!("{ty}: {reason}")
        }
        Some(Value::String(s)) => s.clone(),
        _ => match body {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    }
}

/// An HTTP error status of `what` as the host error the plugin sees: the one place
/// Elasticsearch's answers become error kinds.
pub fn map_status(what: &str, status: u16, body: &Value) -> HostError {
    let message = format!("{what}: HTTP {status}: {}", reason(body));
    match status {
        400 | 405 | 413 | 422 => HostError::invalid(message),
        401 | 403 => HostError::denied(message),
        404 => HostError::not_found(message),
        409 => HostError::conflict(message),
        408 | 429 | 500..=599 => HostError::unavailable(message),
        _ => HostError::other(message),
    }
}

/// A failure of a read to get (all of) its answer.
pub(super) fn map_http(what: &str, error: &reqwest::Error) -> HostError {
    let message = format!("{what}: {error}");
    if error.is_timeout() {
        HostError::timeout(message)
    } else if error.is_decode() {
        HostError::other(message)
    } else {
        HostError::unavailable(message)
    }
}

/// A failure to get an answer at all: a timeout, or a connection that failed.
pub(super) fn map_transport(what: &str, error: &elasticsearch::Error) -> HostError {
    let message = format!("{what}: {error}");
    if error.is_timeout() {
        HostError::timeout(message)
    } else if error.is_json() {
        HostError::other(message)
    } else {
        HostError::unavailable(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use serde_json::json;

    #[test]
    fn statuses_map_to_kinds() {
        let body = json!({"error": {"type": "mapper_parsing_exception", "reason": "failed to parse"}, "status": 400});
        let e = map_status("index `a`/`1`", 400, &body);
        assert!(
            matches!(&e, HostError { kind: Kind::Invalid, message: m, .. } if m == "index `a`/`1`: HTTP 400: mapper_parsing_exception: failed to parse"),
            "{e:?}"
        );
        assert!(matches!(
            map_status("x", 403, &Value::Null),
            HostError {
                kind: Kind::Denied,
                ..
            }
        ));
        assert!(matches!(
            map_status("x", 404, &Value::Null),
            HostError {
                kind: Kind::NotFound,
                ..
            }
        ));
        assert!(matches!(
            map_status("x", 409, &Value::Null),
            HostError {
                kind: Kind::Conflict,
                ..
            }
        ));
        for transient in [429, 500, 502, 503, 504] {
            let e = map_status("x", transient, &Value::Null);
            assert!(
                matches!(
                    e,
                    HostError {
                        kind: Kind::Unavailable,
                        ..
                    }
                ) && e.is_transient(),
                "{transient}"
            );
        }
        assert!(matches!(
            map_status("x", 418, &Value::Null),
            HostError {
                kind: Kind::Other,
                ..
            }
        ));
    }
}
