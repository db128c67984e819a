//! `cargo xtask demo`: the platform running on this machine.
//!
//! Services up, every plugin built, the schema migrated, then the host running
//! `polyhost.toml` — the generator producing at its configured rate, the four handlers
//! consuming — with a live summary (events/s per plugin, lag, dead letters) every few
//! seconds until Ctrl-C, which drains the host cleanly.

use std::process::{Child, Command};
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
    let mut host: Child = Command::new(&polyhost)
        .args(["run", "--manifest", "polyhost.toml", "--admin-addr", ADMIN])
        .env(
            "POLYHOST_LOG",
            std::env::var("POLYHOST_LOG").unwrap_or_else(|_| "warn,polyhost=info".into()),
        )
        .current_dir(&root)
        .spawn()
        .context("starting polyhost")?;
    eprintln!(
        "xtask: polyhost runs polyhost.toml (admin API on http://{ADMIN}); Ctrl-C drains and stops it"
    );

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
            eprintln!("xtask: polyhost drained and stopped ({status})");
            return Ok(());
        }
        if Instant::now() >= next {
            next += Duration::from_secs(5);
            if let Ok(plugins) = fetch() {
                last = Some(summary(&plugins, last.take()));
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

/// Prints one line per plugin; returns the counts for the next rate.
fn summary(
    plugins: &[Value],
    last: Option<(Instant, Vec<(String, u64)>)>,
) -> (Instant, Vec<(String, u64)>) {
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
    println!(
        "{:<18} {:>10} {:>9} {:>8} {:>6} {:>7}",
        "plugin", "events", "events/s", "lag", "dlq", "retried"
    );
    for (p, (name, n)) in plugins.iter().zip(&counts) {
        let rate = last
            .as_ref()
            .and_then(|(t, prev)| {
                let before = prev.iter().find(|(m, _)| m == name)?.1;
                Some(n.saturating_sub(before) as f64 / now.duration_since(*t).as_secs_f64())
            })
            .unwrap_or(0.0);
        println!(
            "{:<18} {:>10} {:>9.0} {:>8} {:>6} {:>7}",
            name,
            n,
            rate,
            p["lag"]
                .as_i64()
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into()),
            p["dead_lettered"].as_u64().unwrap_or(0),
            p["retried"].as_u64().unwrap_or(0),
        );
    }
    println!();
    (now, counts)
}
