//! Redis from the Debian package: `redis-server` with our own configuration
//! (`<state>/redis/redis.conf`): 127.0.0.1:6379, no persistence, in the foreground of its own
//! session, logging to `<state>/redis/redis.log`.
//!
//! `redis-secure` (`services up --secure`): the same in `<state>/redis-secure/`, on a TLS port
//! only (127.0.0.1:6380, the [`secure`] certificate), the default user off and one ACL user.

use std::fs;
use std::path::PathBuf;
use std::process::Child;

use anyhow::{Context, Result};

use super::layout::{Layout, mkdir};
use super::secure::{self, Secrets};
use super::system::which;
use super::{Service, process};

pub const ADDR: &str = "127.0.0.1:6379";
/// `redis-secure`'s TLS port.
pub const SECURE_ADDR: &str = "127.0.0.1:6380";

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

fn conf(layout: &Layout, service: Service) -> PathBuf {
    layout.dir(service).join("redis.conf")
}

pub fn prepare(layout: &Layout, service: Service) -> Result<()> {
    let dir = layout.dir(service);
    mkdir(&dir)?;
    let listen = if service.secure() {
        let s = Secrets::read(layout)?;
        format!(
            "port 0\n\
             tls-port {port}\n\
             tls-cert-file {cert}\n\
             tls-key-file {key}\n\
             tls-ca-cert-file {ca}\n\
             tls-auth-clients no\n\
             user default off\n\
             user {user} on >{password} ~* &* +@all\n",
            port = port(SECURE_ADDR),
            cert = s.cert().display(),
            key = s.key().display(),
            ca = s.ca().display(),
            user = secure::USER,
            password = s.password,
        )
    } else {
        format!("port {}\n", port(ADDR))
    };
    fs::write(
        conf(layout, service),
        format!(
            "# Written by `cargo xtask services up`; rewritten on every start.\n\
             bind 127.0.0.1\n\
             {listen}\
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

/// The port of `host:port`.
fn port(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(_, port)| port)
}

pub fn spawn(layout: &Layout, service: Service) -> Result<Child> {
    let bin = binary().context("redis-server not found")?;
    let mut cmd = process::detached(bin, None);
    cmd.current_dir(layout.dir(service))
        .arg(conf(layout, service));
    process::spawn_logged(&mut cmd, &log(layout, service))
}

fn log(layout: &Layout, service: Service) -> PathBuf {
    layout.dir(service).join("redis.log")
}

pub fn logs(layout: &Layout, service: Service) -> Vec<PathBuf> {
    vec![log(layout, service)]
}

/// Our process title ends with our configuration file.
pub fn marker(layout: &Layout, service: Service) -> String {
    conf(layout, service).display().to_string()
}

/// `redis-secure` answers: TLS, `AUTH` as the ACL user, `PING`.
pub fn secure_probe() -> Result<String> {
    let s = Secrets::read(&Layout::get()?)?;
    super::probe::redis_tls(SECURE_ADDR, &s.ca(), secure::USER, &s.password)
}
