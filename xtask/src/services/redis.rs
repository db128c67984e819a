//! Redis from the Debian package: `redis-server` with our own configuration
//! (`<state>/redis/redis.conf`): 127.0.0.1:6379, no persistence, in the foreground of its own
//! session, logging to `<state>/redis/redis.log`.

use std::fs;
use std::path::PathBuf;
use std::process::Child;

use anyhow::{Context, Result};

use super::layout::{Layout, mkdir};
use super::system::which;
use super::{Service, process};

pub const ADDR: &str = "127.0.0.1:6379";

fn binary() -> Option<PathBuf> {
    which("redis-server", &["/usr/bin", "/usr/sbin"])
}

pub fn missing_packages() -> Vec<&'static str> {
    if binary().is_some() {
        vec![]
    } else {
        vec!["redis-server"]
    }
}

fn conf(layout: &Layout) -> PathBuf {
    layout.dir(Service::Redis).join("redis.conf")
}

pub fn prepare(layout: &Layout) -> Result<()> {
    let dir = layout.dir(Service::Redis);
    mkdir(&dir)?;
    fs::write(
        conf(layout),
        format!(
            "# Written by `cargo xtask services up`; rewritten on every start.\n\
             bind 127.0.0.1\n\
             port 6379\n\
             protected-mode yes\n\
             daemonize no\n\
             supervised no\n\
             pidfile \"\"\n\
             logfile \"\"\n\
             dir {}\n\
             # snapshot on shutdown (and hourly), so a stop and start keeps the data\n\
             save 3600 1\n\
             appendonly no\n\
             # keep the configuration path in the process title: `down` checks it\n\
             proc-title-template \"{{title}} {{listen-addr}} {{config-file}}\"\n",
            dir.display()
        ),
    )?;
    Ok(())
}

pub fn spawn(layout: &Layout) -> Result<Child> {
    let bin = binary().context("redis-server not found")?;
    let mut cmd = process::detached(bin, None);
    cmd.current_dir(layout.dir(Service::Redis))
        .arg(conf(layout));
    process::spawn_logged(&mut cmd, &log(layout))
}

fn log(layout: &Layout) -> PathBuf {
    layout.dir(Service::Redis).join("redis.log")
}

pub fn logs(layout: &Layout) -> Vec<PathBuf> {
    vec![log(layout)]
}

/// Our process title ends with our configuration file.
pub fn marker(layout: &Layout) -> String {
    conf(layout).display().to_string()
}
