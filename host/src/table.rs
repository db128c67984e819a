//! The `polyhost` binary's tables: how `status` and `dlq list` print their rows, and
//! `dlq replay` its outcomes.

use polyhost::dlq::{DeadLetter, ReplayOutcome};
use polyhost::supervisor::PluginStatus;

/// `polyhost status`: one row per plugin.
pub fn plugins(plugins: Vec<PluginStatus>) {
    println!(
        "{:<18} {:<9} {:<12} {:<12} {:>9} {:>7} {:>7} {:>8} {:>6}  loaded at",
        "PLUGIN", "KIND", "VERSION", "PREVIOUS", "PROCESSED", "RETRIED", "DLQ", "LAG", "SWAPS"
    );
    for p in plugins {
        let short = |d: &str| d.get(..12).unwrap_or(d).to_string();
        let count = if p.kind == "generator" {
            p.generated
        } else {
            p.processed
        };
        println!(
            "{:<18} {:<9} {:<12} {:<12} {:>9} {:>7} {:>7} {:>8} {:>6}  {} ({}{})",
            p.name,
            p.kind,
            short(&p.digest),
            p.previous_digest
                .as_deref()
                .map(short)
                .unwrap_or_else(|| "-".into()),
            count,
            p.retried,
            p.dead_lettered,
            p.lag.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
            p.swaps,
            p.loaded_at,
            p.state,
            p.last_change
                .as_deref()
                .map(|c| format!("; last swap: {c}"))
                .unwrap_or_default(),
        );
    }
}

/// `polyhost dlq list`: one row per dead letter.
pub fn dead_letters(letters: &[DeadLetter]) {
    println!(
        "{:>8} {:<24} {:<40} {:<24} {:<9} REASON",
        "OFFSET", "TIME", "ORIGINAL", "EVENT", "REPLAYED"
    );
    for d in letters {
        let offset = if d.at.partition == 0 {
            d.at.offset.to_string()
        } else {
            format!("{}/{}", d.at.partition, d.at.offset)
        };
        println!(
            "{:>8} {:<24} {:<40} {:<24} {:<9} {}",
            offset,
            d.time.as_deref().unwrap_or("-"),
            d.original
                .as_ref()
                .map(|o| o.to_string())
                .unwrap_or_else(|| "-".into()),
            d.event_id().unwrap_or_else(|| "-".into()),
            if d.replayed.is_some() { "yes" } else { "no" },
            d.reason
        );
    }
}

/// `polyhost dlq replay`: one line per dead letter.
pub fn replay_outcomes(outcomes: &[ReplayOutcome]) {
    for o in outcomes {
        let detail = match (&o.result[..], &o.replay) {
            ("replayed", Some(r)) => format!(" -> {}", r.to),
            ("already replayed", Some(r)) => format!(
                " at {} by {} (to {}); --force replays it again",
                r.at, r.by, r.to
            ),
            _ => o
                .original
                .as_ref()
                .map(|p| format!(" -> {p}"))
                .unwrap_or_default(),
        };
        println!("{}: {}{detail}", o.dead_letter, o.result);
    }
    if outcomes.is_empty() {
        println!("nothing to replay");
    }
}
