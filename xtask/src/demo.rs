//! `cargo xtask demo`: the platform running on this machine.
//!
//! Services up, every plugin built, the schema migrated, then the host running
//! `polyhost.toml` — the generator producing at its configured rate, the four handlers
//! consuming — with a live view until Ctrl-C, which drains the host cleanly.
//!
//! On a terminal the view redraws in place every second: a table per plugin (events,
//! events/s, lag, dead letters, retries, version, swaps), a progress bar for the generator
//! (against the manifest's `total`), the console's address, and the host's last log lines
//! (its log goes to `target/demo/polyhost.log` then, so it does not scroll the view away).
//! Elsewhere (a pipe, CI) the table is printed every 5 s as lines.

use std::io::{IsTerminal as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{cmd, plugins, services};

const ADMIN: &str = "127.0.0.1:9400";

pub fn run() -> Result<()> {
    services::up()?;
    plugins::run(&plugins::Args::default())?;
    cmd::run(cmd::cargo().args(["build", "-p", "polyhost"]))?;
    let root = cmd::root();
    let polyhost = root.join("target/debug/polyhost");
    cmd::run(
        Command::new(&polyhost)
            .args(["migrate", "--manifest", "polyhost.toml"])
            .current_dir(&root),
    )?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("cannot handle Ctrl-C")?;
    }
    let live = std::io::stdout().is_terminal();
    let log = root.join("target/demo/polyhost.log");
    let stderr = if live {
        std::fs::create_dir_all(root.join("target/demo"))?;
        Stdio::from(std::fs::File::create(&log).context("creating the host's log")?)
    } else {
        Stdio::inherit()
    };
    let mut host: Child = Command::new(&polyhost)
        .args(["run", "--manifest", "polyhost.toml", "--admin-addr", ADMIN])
        .env(
            "POLYHOST_LOG",
            std::env::var("POLYHOST_LOG").unwrap_or_else(|_| "warn,polyhost=info".into()),
        )
        .current_dir(&root)
        .stderr(stderr)
        .spawn()
        .context("starting polyhost")?;
    eprintln!(
        "xtask: polyhost runs polyhost.toml (admin API and console on http://{ADMIN}/); Ctrl-C drains and stops it"
    );
    let total = generator_total(&std::fs::read_to_string(root.join("polyhost.toml"))?);

    let mut last: Option<(Instant, Vec<(String, u64)>)> = None;
    let mut next = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(status) = host.try_wait()? {
            anyhow::ensure!(status.success(), "polyhost exited: {status}");
            return Ok(());
        }
        if stop.load(Ordering::SeqCst) {
            // The terminal sent SIGINT to the host too; make sure, then wait for the drain.
            let _ = Command::new("kill")
                .args(["-INT", &host.id().to_string()])
                .status();
            let status = host.wait()?;
            if live {
                eprintln!("\n{}", tail(&log, 20));
            }
            eprintln!("xtask: polyhost drained and stopped ({status})");
            return Ok(());
        }
        if Instant::now() >= next {
            next += Duration::from_secs(if live { 1 } else { 5 });
            if let Ok(plugins) = fetch() {
                let (now, counts, table) = summary(&plugins, last.take());
                last = Some((now, counts));
                if live {
                    let frame = Frame {
                        table: &table,
                        plugins: &plugins,
                        total,
                        log_tail: &tail(&log, 6),
                    };
                    // Home and clear to the end: the view redraws in place, and nothing
                    // else writes to this terminal while it runs.
                    let mut out = std::io::stdout().lock();
                    let _ = write!(out, "\x1b[H\x1b[J{}", frame.render());
                    let _ = out.flush();
                } else {
                    println!("{table}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fetch() -> Result<Vec<Value>> {
    let body = ureq::get(&format!("http://{ADMIN}/api/plugins"))
        .call()?
        .body_mut()
        .read_to_string()?;
    Ok(serde_json::from_str(&body)?)
}

/// The table of plugins, and the counts for the next rate.
fn summary(
    plugins: &[Value],
    last: Option<(Instant, Vec<(String, u64)>)>,
) -> (Instant, Vec<(String, u64)>, String) {
    let now = Instant::now();
    let counts: Vec<(String, u64)> = plugins
        .iter()
        .map(|p| {
            let n = if p["kind"] == "generator" {
                p["generated"].as_u64()
            } else {
                p["processed"].as_u64()
            };
            (
                p["name"].as_str().unwrap_or("?").to_string(),
                n.unwrap_or(0),
            )
        })
        .collect();
    let mut table = format!(
        "{:<18} {:>10} {:>9} {:>8} {:>6} {:>7}  {:<12} {:>5}\n",
        "plugin", "events", "events/s", "lag", "dlq", "retried", "version", "swaps"
    );
    for (p, (name, n)) in plugins.iter().zip(&counts) {
        let rate = last
            .as_ref()
            .and_then(|(t, prev)| {
                let before = prev.iter().find(|(m, _)| m == name)?.1;
                Some(n.saturating_sub(before) as f64 / now.duration_since(*t).as_secs_f64())
            })
            .unwrap_or(0.0);
        let digest = p["digest"].as_str().unwrap_or("-");
        table.push_str(&format!(
            "{:<18} {:>10} {:>9.0} {:>8} {:>6} {:>7}  {:<12} {:>5}\n",
            name,
            n,
            rate,
            p["lag"]
                .as_i64()
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into()),
            p["dead_lettered"].as_u64().unwrap_or(0),
            p["retried"].as_u64().unwrap_or(0),
            digest.get(..12).unwrap_or(digest),
            p["swaps"].as_u64().unwrap_or(0),
        ));
    }
    (now, counts, table)
}

/// The generator's `total` in the manifest (its `[plugin.config]`), if any; 0 = endless.
fn generator_total(manifest: &str) -> Option<u64> {
    let mut in_generator = false;
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line == "[[plugin]]" {
            in_generator = false;
        } else if line.starts_with("kind") && line.contains("\"generator\"") {
            in_generator = true;
        } else if in_generator && let Some(v) = line.strip_prefix("total") {
            return v.trim_start().strip_prefix('=')?.trim().parse().ok();
        }
    }
    None
}

/// The last `n` lines of `path` (empty when it cannot be read).
fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One redraw of the live view.
struct Frame<'a> {
    table: &'a str,
    plugins: &'a [Value],
    total: Option<u64>,
    log_tail: &'a str,
}

impl Frame<'_> {
    fn render(&self) -> String {
        let mut out =
            format!("polyhost demo  ·  console http://{ADMIN}/  ·  Ctrl-C drains and stops\n\n");
        out.push_str(self.table);
        for g in self.plugins.iter().filter(|p| p["kind"] == "generator") {
            let sent = g["generated"].as_u64().unwrap_or(0);
            let name = g["name"].as_str().unwrap_or("generator");
            out.push('\n');
            out.push_str(&match self.total.filter(|t| *t > 0) {
                Some(total) => format!("{name:<18} {} {sent}/{total}", progress(sent, total, 40)),
                None => format!("{name:<18} {sent} sent (endless)"),
            });
            out.push('\n');
        }
        if !self.log_tail.is_empty() {
            out.push_str("\nhost log (target/demo/polyhost.log):\n");
            out.push_str(self.log_tail);
            out.push('\n');
        }
        out
    }
}

/// `[#####-----] 50%`, `width` cells.
fn progress(done: u64, total: u64, width: usize) -> String {
    let fraction = (done as f64 / total.max(1) as f64).min(1.0);
    let filled = (fraction * width as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(filled),
        "-".repeat(width - filled),
        fraction * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_bar_fills_with_the_count() {
        assert_eq!(progress(0, 10, 10), "[----------]   0%");
        assert_eq!(progress(5, 10, 10), "[#####-----]  50%");
        assert_eq!(progress(12, 10, 10), "[##########] 100%");
    }

    #[test]
    fn the_total_is_read_from_the_generators_config() {
        let m = "[[plugin]]\nname = \"h\"\ntotal = 3\n\n[[plugin]]\nname = \"g\"\nkind = \"generator\"\n\n[plugin.config]\ntotal = 20000     # events\n";
        assert_eq!(generator_total(m), Some(20000));
        assert_eq!(generator_total("[[plugin]]\nname = \"h\"\n"), None);
        let real = std::fs::read_to_string(crate::cmd::root().join("polyhost.toml")).unwrap();
        assert!(generator_total(&real).is_some());
    }

    #[test]
    fn a_frame_shows_the_table_the_progress_and_the_log() {
        let plugins = vec![serde_json::json!({
            "name": "event-generator", "kind": "generator", "generated": 50, "processed": 0,
            "digest": "0123456789abcdef", "swaps": 0, "lag": null, "dead_lettered": 0, "retried": 0,
        })];
        let (_, _, table) = summary(&plugins, None);
        assert!(table.contains("0123456789ab"), "{table}");
        let frame = Frame {
            table: &table,
            plugins: &plugins,
            total: Some(200),
            log_tail: "a warning",
        };
        let text = frame.render();
        assert!(text.contains("50/200"), "{text}");
        assert!(text.contains(" 25%"), "{text}");
        assert!(text.contains("a warning"), "{text}");
    }
}
