//! The services' processes: spawned detached (own session, output to a log file, so they
//! outlive xtask), recorded in pid files, and stopped by those recorded ids only.
//!
//! A recorded pid counts as ours only while the process lives and its command line still
//! contains the service's marker (its data directory, configuration file or binary), so a
//! recycled pid is never signalled.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::Service;
use super::layout::Layout;

/// A command that runs `program` in a new session (`setsid`), as the user `run_as` when given
/// (`setpriv`, which execs in place: the spawned pid is the service's pid).
pub fn detached(program: impl AsRef<OsStr>, run_as: Option<&str>) -> Command {
    let mut cmd = Command::new("setsid");
    if let Some(user) = run_as {
        cmd.arg("setpriv")
            .arg(format!("--reuid={user}"))
            .arg(format!("--regid={user}"))
            .args(["--init-groups", "--"]);
    }
    cmd.arg(program);
    cmd
}

/// Spawns `cmd` with stdin closed and stdout and stderr into `log` (truncated).
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child> {
    let file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))
}

/// Records `pid` as the process of `service`.
pub fn write_pid(layout: &Layout, service: Service, pid: u32) -> Result<()> {
    let path = layout.pid_file(service);
    fs::write(&path, format!("{pid}\n")).with_context(|| format!("cannot write {}", path.display()))
}

/// The first line of a pid file as a pid.
pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is a live process (not a zombie).
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The command line of `pid`, arguments separated by spaces.
pub fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The live process of `service` that `up` started, if any: our pid file first, then the
/// service's own pid file (PostgreSQL's `postmaster.pid`, Elasticsearch's `-p` file).
/// A pid file naming a dead or foreign process is removed.
pub fn recorded(layout: &Layout, service: Service) -> Option<u32> {
    let marker = service.marker(layout);
    let ours = layout.pid_file(service);
    for path in std::iter::once(ours.clone()).chain(service.own_pid_file(layout)) {
        let Some(pid) = read_pid(&path) else { continue };
        if alive(pid) && cmdline(pid).contains(&marker) {
            if path != ours {
                let _ = write_pid(layout, service, pid);
            }
            return Some(pid);
        }
    }
    if ours.exists() {
        let _ = fs::remove_file(&ours);
    }
    None
}

/// Sends `signal` (a name such as `TERM`) to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) -> Result<()> {
    super::system::quiet(
        Command::new("kill")
            .args(["-s", signal, "--"])
            .arg(pid.to_string()),
    )
}

/// Waits until `pid` is gone; false when `timeout` passes first.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let started = Instant::now();
    while alive(pid) {
        if started.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Stops the recorded process of `service`: its stop signal, then `KILL` after its timeout;
/// removes our pid file. Returns the pid stopped, if there was one.
pub fn stop(layout: &Layout, service: Service) -> Result<Option<u32>> {
    let Some(pid) = recorded(layout, service) else {
        return Ok(None);
    };
    let (sig, timeout) = service.stop_signal();
    signal(pid, sig)?;
    if !wait_gone(pid, timeout) {
        super::system::say(
            service.name(),
            format_args!(
                "pid {pid} still running after {} s: KILL",
                timeout.as_secs()
            ),
        );
        signal(pid, "KILL")?;
        wait_gone(pid, Duration::from_secs(10));
    }
    let _ = fs::remove_file(layout.pid_file(service));
    Ok(Some(pid))
}
