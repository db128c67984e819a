//! Host-call results as event outcomes: transient failures are retried, the rest rejected.

use polyhost_guest::Verdict;

use crate::polyhost::platform::types::{Error, Outcome};

/// The outcome for an event whose host call failed with `error` (whose message names the
/// call already).
pub fn from_error(error: &Error) -> Outcome {
    match Verdict::after_host_error(error.transient, error.message.clone()) {
        Verdict::Retry(reason) => Outcome::Retry(reason),
        Verdict::Reject(reason) => Outcome::Reject(reason),
        Verdict::Ok => Outcome::Ok,
    }
}

/// The outcome of one item of a `bulk-index`: `None` when it was stored, else Elasticsearch's
/// reason. The host already fails the whole call (transiently) when an item was refused with
/// 429 or 5xx; the markers below keep such a refusal a retry should one come through as an
/// item reason anyway. Anything else (a mapping error, an id too long) can never succeed.
pub fn from_item(refusal: Option<String>) -> Outcome {
    const TRANSIENT: [&str; 6] = [
        "HTTP 429",
        "HTTP 5",
        "es_rejected_execution_exception",
        "circuit_breaking_exception",
        "unavailable_shards_exception",
        "cluster_block_exception",
    ];
    match refusal {
        None => Outcome::Ok,
        Some(reason) if TRANSIENT.iter().any(|m| reason.contains(m)) => Outcome::Retry(format!(
            "Elasticsearch could not store the document yet: {reason}"
        )),
        Some(reason) => Outcome::Reject(format!("Elasticsearch refused the document: {reason}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::polyhost::platform::types::ErrorKind;

    #[test]
    fn items_are_retried_only_for_transient_refusals() {
        assert!(matches!(from_item(None), Outcome::Ok));
        let mapping =
            "document_parsing_exception: [1:9] failed to parse field [time] of type [date]";
        match from_item(Some(mapping.into())) {
            Outcome::Reject(r) => assert!(r.contains(mapping), "{r}"),
            other => panic!("{other:?}"),
        }
        for transient in [
            "es_rejected_execution_exception: rejected execution of coordinating operation",
            "HTTP 503",
            "cluster_block_exception: index [audit-events-x] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark",
        ] {
            assert!(
                matches!(from_item(Some(transient.into())), Outcome::Retry(_)),
                "{transient}"
            );
        }
    }

    #[test]
    fn call_errors_follow_their_transient_flag() {
        let error = |transient| Error {
            kind: ErrorKind::Unavailable,
            message: "connection refused".into(),
            transient,
        };
        match from_error(&error(true)) {
            Outcome::Retry(r) => assert_eq!(r, "connection refused"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(from_error(&error(false)), Outcome::Reject(_)));
    }
}
