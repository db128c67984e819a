//! Verdicts, and the order a batch's events are applied in.
//!
//! The host settles each event of a batch on its own and hands over again only those to be
//! retried; if a title's event were retried while a later one of the same title succeeded,
//! the two would be applied out of order (an older `title.updated` over a newer one). So
//! once an event of a key is to be retried, the later events of that key in the batch are
//! retried too, unapplied.

use std::collections::HashSet;

/// What the handler decides for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Applied (now or by an earlier delivery).
    Ok,
    /// Not applied yet; hand it over again later.
    Retry(String),
    /// Can never be applied.
    Reject(String),
}

/// Applies `apply` to `events` in order, keeping each key's events in order (see the module
/// docs). An event without a key is never held back.
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
}
