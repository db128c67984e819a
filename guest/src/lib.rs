//! Helpers shared by polyhost's Rust plugins, limited to grant-free code: plain Rust with
//! no WIT bindings of its own, so depending on it never adds an import to a component, and
//! so never a capability that needs a grant. What a plugin calls on the host stays in the
//! plugin, behind its own `wit_bindgen::generate!`.
//!
//! - [`Verdict`]: a handler's verdict on an event, and what a failed host call makes of it
//!   ([`Verdict::after_host_error`]).
//! - [`in_key_order`]: a batch applied event by event, each entity's events kept in order.
//! - [`Flattened`]: a call of the `partitions-handler` form as one list of events, and its
//!   outcomes back as one list per partition.
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

/// The events of a call over several partitions (`partitions-handler`) as one list, each
/// partition's after the one before, so that a handler works on the call as on one batch;
/// then its outcomes back, one list per partition. Within a partition the order is kept;
/// between partitions there was none to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flattened<B, E> {
    /// What each partition's events have in common (its `batch-info`), in call order.
    pub partitions: Vec<B>,
    /// Every event of the call.
    pub events: Vec<E>,
    /// The partition (its index in [`Flattened::partitions`]) of each event.
    pub partition_of: Vec<usize>,
}

impl<B, E> Flattened<B, E> {
    /// Flattens `partitions`, each split by `split` into what its events have in common
    /// and its events.
    pub fn new<P>(partitions: Vec<P>, split: impl Fn(P) -> (B, Vec<E>)) -> Self {
        let mut flat = Flattened {
            partitions: Vec::with_capacity(partitions.len()),
            events: Vec::new(),
            partition_of: Vec::new(),
        };
        for (i, p) in partitions.into_iter().enumerate() {
            let (batch, events) = split(p);
            flat.partitions.push(batch);
            flat.partition_of
                .extend(std::iter::repeat_n(i, events.len()));
            flat.events.extend(events);
        }
        flat
    }

    /// What event `i`'s partition has in common.
    pub fn partition(&self, i: usize) -> &B {
        &self.partitions[self.partition_of[i]]
    }

    /// `outcomes`, one per event of [`Flattened::events`], as one list per partition.
    ///
    /// # Panics
    /// When `outcomes` is not one per event.
    pub fn split<O>(&self, outcomes: Vec<O>) -> Vec<Vec<O>> {
        assert_eq!(outcomes.len(), self.events.len(), "one outcome per event");
        let mut lists: Vec<Vec<O>> = self.partitions.iter().map(|_| Vec::new()).collect();
        for (&p, o) in self.partition_of.iter().zip(outcomes) {
            lists[p].push(o);
        }
        lists
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
    fn a_call_over_partitions_is_flattened_in_order_and_its_outcomes_split_back() {
        let call = vec![
            ("a", vec!["a0", "a1"]),
            ("b", vec![]),
            ("c", vec!["c0", "c1", "c2"]),
        ];
        let flat = Flattened::new(call, |p| p);
        assert_eq!(flat.partitions, ["a", "b", "c"]);
        assert_eq!(flat.events, ["a0", "a1", "c0", "c1", "c2"]);
        assert_eq!(flat.partition_of, [0, 0, 2, 2, 2]);
        assert_eq!(*flat.partition(3), "c");
        let outcomes = flat.events.iter().map(|e| e.to_uppercase()).collect();
        assert_eq!(
            flat.split(outcomes),
            vec![vec!["A0", "A1"], vec![], vec!["C0", "C1", "C2"]]
        );
    }

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
