//! The services under Docker compose (`docker-compose.yml` at the workspace root), used where a
//! Docker engine answers `docker info`.

use std::process::{Command, Stdio};

use anyhow::Result;

use super::Service;
use crate::cmd;

/// Whether the services run under compose: `POLYHOST_SERVICES=native|compose` decides, else
/// whether `docker info` answers.
pub fn available() -> bool {
    match std::env::var("POLYHOST_SERVICES").as_deref() {
        Ok("native") => false,
        Ok("compose") => true,
        _ => Command::new("docker")
            .arg("info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
    }
}

/// `docker compose -f <root>/docker-compose.yml ...`.
fn compose() -> Command {
    let mut c = Command::new("docker");
    c.current_dir(cmd::root())
        .arg("compose")
        .arg("-f")
        .arg(cmd::root().join("docker-compose.yml"));
    c
}

/// Every service up, waiting for their health checks.
pub fn up() -> Result<()> {
    cmd::run(compose().args(["up", "-d", "--wait", "--wait-timeout", "300"]))
}

/// One service up, waiting for its health check.
pub fn start(service: Service) -> Result<()> {
    cmd::run(
        compose()
            .args(["up", "-d", "--wait", "--wait-timeout", "300"])
            .arg(service.name()),
    )
}

/// One service stopped (its container and volume kept).
pub fn stop(service: Service) -> Result<()> {
    cmd::run(compose().arg("stop").arg(service.name()))
}

/// Every container removed (the named volumes kept).
pub fn down() -> Result<()> {
    cmd::run(compose().arg("down"))
}

/// `docker compose ps`.
pub fn ps() -> Result<()> {
    cmd::run(compose().arg("ps"))
}
