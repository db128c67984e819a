//! Helpers shared by polyhost's Rust plugins, limited to grant-free code: plain Rust with
//! no WIT bindings of its own, so depending on it never adds an import to a component, and
//! so never a capability that needs a grant. What a plugin calls on the host stays in the
//! plugin, behind its own `wit_bindgen::generate!`.
//!
//! - [`Verdict`]: a handler's verdict on an event, and what a failed host call makes of it
//!   ([`Verdict::after_host_error`]).
//! - [`in_key_order`]: a batch applied event by event, each entity's events kept in order.
//! - [`time`]: RFC 3339 and calendar-day formats of the platform's timestamps.
//! - [`probe`]: the script runner of the test plugins that probe a capability.

pub mod probe;
pub mod time;

use std::collections::HashSet;

/// What a handler decides for one event; each plugin turns it into its WIT `outcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Applied (now or by an earlier delivery).
    Ok,
    /// Not applied yet; hand it over again later.
    Retry(String),
    /// Can never be applied.
    Reject(String),
}

impl Verdict {
    /// The verdict on an event whose host call failed: `retry` when the host said the
    /// failure is transient (the backend down, a timeout), else `reject` with `reason`.
    pub fn after_host_error(transient: bool, reason: String) -> Verdict {
        if transient {
            Verdict::Retry(reason)
        } else {
            Verdict::Reject(reason)
        }
    }
}

/// Applies `apply` to `events` in order, keeping each key's events in order, and returns
/// each event's verdict.
///
/// The host settles each event of a batch on its own and hands over again only those to be
/// retried; if an entity's event were retried while a later one of the same entity
/// succeeded, the two would be applied out of order (an older update over a newer one). So
/// once an event of a key is to be retried, the later events of that key in the batch are
/// retried too, unapplied. An event without a key is never held back.
pub fn in_key_order<E>(
    events: &[E],
    key: impl Fn(&E) -> Option<&str>,
    mut apply: impl FnMut(&E) -> Verdict,
) -> Vec<Verdict> {
    let mut held: HashSet<&str> = HashSet::new();
    events
        .iter()
        .map(|event| {
            let key = key(event);
            if let Some(k) = key
                && held.contains(k)
            {
                return Verdict::Retry(format!(
                    "an earlier event of `{k}` in this batch is to be retried first"
                ));
            }
            let verdict = apply(event);
            if let (Verdict::Retry(_), Some(k)) = (&verdict, key) {
                held.insert(k);
            }
            verdict
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_key_holds_back_its_later_events_only() {
        let events = [("t-1", 1), ("t-2", 2), ("t-1", 3), ("t-2", 4), ("", 5)];
        let mut applied = Vec::new();
        let verdicts = in_key_order(
            &events,
            |(k, _)| (!k.is_empty()).then_some(*k),
            |&(_, n)| {
                applied.push(n);
                match n {
                    1 => Verdict::Retry("not yet".into()),
                    4 => Verdict::Reject("bad".into()),
                    _ => Verdict::Ok,
                }
            },
        );
        assert_eq!(
            applied,
            [1, 2, 4, 5],
            "event 3 (t-1 after a retry) is not applied"
        );
        assert_eq!(verdicts[0], Verdict::Retry("not yet".into()));
        assert_eq!(verdicts[1], Verdict::Ok);
        assert!(matches!(&verdicts[2], Verdict::Retry(r) if r.contains("t-1")));
        assert_eq!(
            verdicts[3],
            Verdict::Reject("bad".into()),
            "a reject holds nothing back"
        );
        assert_eq!(verdicts[4], Verdict::Ok);
    }

    #[test]
    fn a_transient_host_error_is_retried_and_any_other_rejected() {
        assert_eq!(
            Verdict::after_host_error(true, "down".into()),
            Verdict::Retry("down".into())
        );
        assert_eq!(
            Verdict::after_host_error(false, "denied".into()),
            Verdict::Reject("denied".into())
        );
    }
}
