//! The byte caps of `[plugin.limits]` (`max_result_bytes`, `max_value_bytes`), shared by
//! every backend so that each reports an overrun the same way.
//!
//! A backend counts what it reads from the server into a [`ResultBudget`] as it goes (row
//! by row, hit by hit, chunk by chunk), so an answer larger than the cap is cut off while
//! streaming, never fully buffered first.

use crate::error::HostError;

/// What is left of one host call's `max_result_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct ResultBudget {
    cap: usize,
    used: usize,
}

impl ResultBudget {
    /// A fresh budget of `cap` bytes (the plugin's `limits.max_result_bytes`).
    pub fn new(cap: usize) -> Self {
        ResultBudget { cap, used: 0 }
    }

    /// Counts `n` more bytes of the answer; fails with `invalid`, naming the limit, once
    /// the answer would exceed it.
    pub fn take(&mut self, n: usize, what: &str) -> Result<(), HostError> {
        self.used = self.used.saturating_add(n);
        if self.used > self.cap {
            return Err(HostError::invalid(format!(
                "{what}: the result exceeds limits.max_result_bytes ({} bytes); ask for less \
                 (a LIMIT, fewer fields, a smaller page) or raise the limit",
                self.cap
            )));
        }
        Ok(())
    }

    /// Bytes counted so far.
    pub fn used(&self) -> usize {
        self.used
    }
}

/// Fails with `invalid`, naming `limits.max_value_bytes`, when a value the plugin writes
/// is larger than `cap`.
pub fn check_value(len: usize, cap: usize, what: &str) -> Result<(), HostError> {
    if len > cap {
        return Err(HostError::invalid(format!(
            "{what}: {len} bytes exceeds limits.max_value_bytes ({cap} bytes)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_fails_once_exceeded_and_names_the_limit() {
        let mut b = ResultBudget::new(10);
        assert!(b.take(6, "sql.query").is_ok());
        assert!(b.take(4, "sql.query").is_ok());
        let e = b.take(1, "sql.query").unwrap_err().to_string();
        assert!(e.starts_with("invalid: sql.query"), "{e}");
        assert!(e.contains("limits.max_result_bytes (10 bytes)"), "{e}");
        assert_eq!(b.used(), 11);
    }

    #[test]
    fn values_over_the_cap_are_invalid() {
        assert!(check_value(4, 4, "kv.set").is_ok());
        let e = check_value(5, 4, "kv.set").unwrap_err().to_string();
        assert!(e.contains("limits.max_value_bytes (4 bytes)"), "{e}");
    }
}
