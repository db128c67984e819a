//! The machine: progress lines, Debian packages, system users, downloads, long commands.

use std::fmt::Display;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha512};

/// When this xtask started: progress lines show the seconds since.
static START: OnceLock<Instant> = OnceLock::new();

/// Starts the clock of the progress lines.
pub fn start_clock() {
    START.get_or_init(Instant::now);
}

/// One progress line on stderr: `[  12.3s] kafka          message`.
pub fn say(who: &str, msg: impl Display) {
    let secs = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{secs:6.1}s] {who:<13} {msg}");
}

/// The first `name` found on `PATH` or in `extra` directories.
pub fn which(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Installs the Debian `packages` (once, with one `apt-get update`), without letting the
/// packages start their own services (a temporary `policy-rc.d`), so that they do not take the
/// ports of ours.
pub fn apt_install(packages: &[&str], root: bool) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    let list = packages.join(" ");
    if !root {
        bail!("missing Debian packages; install them with: sudo apt-get install -y {list}");
    }
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        fs::write(
            policy,
            "#!/bin/sh\n# polyhost xtask: no service starts during apt-get\nexit 101\n",
        )
        .context("cannot write /usr/sbin/policy-rc.d")?;
        chmod(policy, "755")?;
    }
    let result = (|| {
        let log = std::env::temp_dir().join("polyhost-apt.log");
        run_logged("apt", "apt-get update", apt().arg("update"), &log)?;
        run_logged(
            "apt",
            format!("apt-get install {list}"),
            apt()
                .args(["install", "-y", "--no-install-recommends"])
                .args(packages),
            &log,
        )
    })();
    if own_policy {
        let _ = fs::remove_file(policy);
    }
    result
}

fn apt() -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive").args([
        "-q",
        "-o",
        "Dpkg::Options::=--force-confold",
    ]);
    c
}

/// Creates the system user `name` (with its own group, no home, no shell) unless it exists.
pub fn ensure_system_user(name: &str) -> Result<()> {
    let exists = Command::new("id")
        .args(["-u", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        return Ok(());
    }
    say(name, "creating the system user");
    let out = Command::new("useradd")
        .args(["--system", "--user-group", "--no-create-home"])
        .args([
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .output()
        .context("cannot run useradd")?;
    ensure!(
        out.status.success(),
        "useradd {name} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// `chown -R owner: path`.
pub fn chown(path: &Path, owner: &str) -> Result<()> {
    quiet(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{owner}:"))
            .arg(path),
    )
}

/// `chmod mode path`.
pub fn chmod(path: &Path, mode: &str) -> Result<()> {
    quiet(Command::new("chmod").arg(mode).arg(path))
}

/// Runs a short command, failing with its stderr.
pub fn quiet(cmd: &mut Command) -> Result<()> {
    let line = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {line}"))?;
    ensure!(
        out.status.success(),
        "{line} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Runs a long command with its output in `log`, saying every 10 s that it still runs (with the
/// log's last line); on failure the error carries the log's tail.
pub fn run_logged(who: &str, what: impl Display, cmd: &mut Command, log: &Path) -> Result<()> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    say(who, format_args!("{what} (log: {})", log.display()));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let mut next = Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                say(
                    who,
                    format_args!("{what}: done in {:.0} s", started.elapsed().as_secs_f64()),
                );
                return Ok(());
            }
            bail!("{what} failed ({status}); {}", tail(log, 30));
        }
        if started.elapsed() >= next {
            let last = tail_lines(log, 1).pop().unwrap_or_default();
            let last: String = last.chars().take(100).collect();
            say(who, format_args!("{what}: {} s… {last}", next.as_secs()));
            next += Duration::from_secs(10);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last `n` lines of a file (none when it cannot be read).
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let Ok(bytes) = fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// "last lines of <path>:" and the last `n` lines, indented, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let lines = tail_lines(path, n);
    if lines.is_empty() {
        return format!("{} is empty or missing", path.display());
    }
    let mut s = format!("last {} lines of {}:", lines.len(), path.display());
    for l in lines {
        s.push_str("\n    ");
        s.push_str(&l);
    }
    s
}

/// Downloads `url` to `dest` unless it is there, checking the SHA-512 published next to it
/// (`<url>.sha512`), with a byte counter every few seconds.
pub fn download(who: &str, url: &str, dest: &Path) -> Result<()> {
    if dest.is_file() {
        return Ok(());
    }
    let agent = http_agent(Duration::from_secs(30), None);
    let sum_url = format!("{url}.sha512");
    let expected = agent
        .get(&sum_url)
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .with_context(|| format!("cannot fetch {sum_url}"))?;
    let expected = expected
        .split_whitespace()
        .next()
        .context("empty checksum file")?
        .to_ascii_lowercase();

    say(who, format_args!("downloading {url}"));
    let started = Instant::now();
    let mut resp = agent
        .get(url)
        .call()
        .with_context(|| format!("cannot download {url}"))?;
    let total: Option<u64> = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let part = dest.with_extension("part");
    let mut out =
        File::create(&part).with_context(|| format!("cannot create {}", part.display()))?;
    let mut reader = resp.body_mut().as_reader();
    let mut hasher = Sha512::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got: u64 = 0;
    let mut next = Duration::from_secs(3);
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("download of {url} broke off"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        got += n as u64;
        if started.elapsed() >= next {
            next += Duration::from_secs(3);
            let mib = |b: u64| b as f64 / 1048576.0;
            match total {
                Some(t) => say(who, format_args!("… {:.1} / {:.1} MiB", mib(got), mib(t))),
                None => say(who, format_args!("… {:.1} MiB", mib(got))),
            }
        }
    }
    out.sync_all()?;
    let actual: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != expected {
        let _ = fs::remove_file(&part);
        bail!("checksum mismatch for {url}: expected {expected}, got {actual}");
    }
    fs::rename(&part, dest)?;
    say(
        who,
        format_args!(
            "downloaded {:.1} MiB in {:.0} s (SHA-512 verified)",
            got as f64 / 1048576.0,
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// An HTTP agent trusting the system's CA bundle (`$SSL_CERT_FILE`, else Debian's
/// `/etc/ssl/certs/ca-certificates.crt`: it carries the certificates of a TLS-inspecting proxy),
/// else the Mozilla roots built into ureq.
pub fn http_agent(connect: Duration, global: Option<Duration>) -> ureq::Agent {
    use ureq::tls::{PemItem, RootCerts, TlsConfig};
    let bundle = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
    let certs: Vec<_> = fs::read(&bundle)
        .map(|pem| {
            ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let roots = if certs.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::from(certs)
    };
    ureq::Agent::config_builder()
        .timeout_connect(Some(connect))
        .timeout_global(global)
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build()
        .into()
}

/// A random-enough 64-bit number (std's hasher keys come from the OS).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}
