//! PostgreSQL from the Debian packages, as our own cluster: `initdb` into
//! `<state>/postgres/data`, run as the `postgres` OS user (PostgreSQL refuses root), listening
//! on 127.0.0.1:5432 (its socket in `<state>/postgres/run`). Superuser `postgres`, password
//! `postgres` (SCRAM-SHA-256 over TCP, trust on the socket); the database `polyhost` is
//! created once the server answers.
//!
//! This is a throwaway development cluster: `fsync`, `full_page_writes` and
//! `synchronous_commit` are off for speed.
//!
//! `postgres-secure` (`services up --secure`): a second cluster in `<state>/postgres-secure/`
//! on 127.0.0.1:5433 that takes TCP only over TLS (`hostssl`, the [`secure`] certificate) with
//! a SCRAM password; its superuser is [`secure::USER`]. xtask itself uses its Unix socket.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;

use anyhow::{Context, Result};

use super::layout::{Layout, mkdir};
use super::secure::{self, Secrets};
use super::system::{chmod, chown, run_logged, say};
use super::{Service, probe, process, versions};

pub const ADDR: &str = "127.0.0.1:5432";
/// `postgres-secure`'s address (TLS only).
pub const SECURE_ADDR: &str = "127.0.0.1:5433";
const SECURE_PORT: u16 = 5433;
const USER: &str = "postgres";
const PASSWORD: &str = "postgres";
const DATABASE: &str = "polyhost";
/// The OS user PostgreSQL runs as when xtask runs as root.
const OS_USER: &str = "postgres";
/// The line of `postgresql.conf` that reads our settings.
const INCLUDE: &str = "include 'polyhost.conf'";

/// The directory of the server binaries: `versions::POSTGRES_MAJOR` first, else the newest.
fn bin_dir() -> Option<PathBuf> {
    let preferred = Path::new("/usr/lib/postgresql")
        .join(versions::POSTGRES_MAJOR)
        .join("bin");
    if preferred.join("postgres").is_file() {
        return Some(preferred);
    }
    let mut majors: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .collect();
    majors.sort();
    majors.pop().map(|(_, bin)| bin)
}

pub fn missing_packages() -> Vec<&'static str> {
    if bin_dir().is_some() {
        vec![]
    } else {
        vec!["postgresql"]
    }
}

fn data_dir(layout: &Layout, service: Service) -> PathBuf {
    layout.dir(service).join("data")
}

fn socket_dir(layout: &Layout, service: Service) -> PathBuf {
    layout.dir(service).join("run")
}

/// The superuser of `service`'s cluster and its password.
fn superuser(layout: &Layout, service: Service) -> Result<(&'static str, String)> {
    Ok(if service.secure() {
        (secure::USER, Secrets::read(layout)?.password)
    } else {
        (USER, PASSWORD.to_owned())
    })
}

fn run_as(layout: &Layout) -> Option<&'static str> {
    layout.root.then_some(OS_USER)
}

/// `initdb` once, then (every time) our configuration.
pub fn prepare(layout: &Layout, service: Service) -> Result<()> {
    let bin =
        bin_dir().context("PostgreSQL server binaries not found under /usr/lib/postgresql")?;
    let dir = layout.dir(service);
    let data = data_dir(layout, service);
    let socket = socket_dir(layout, service);
    let (user, password) = superuser(layout, service)?;
    mkdir(&dir)?;
    mkdir(&socket)?;
    if let Some(user) = run_as(layout) {
        chown(&socket, user)?;
    }
    let conf = data.join("postgresql.conf");
    // Our include line is appended once initdb succeeded: without it the directory is a
    // half-made one (an interrupted initdb).
    let initialized = fs::read_to_string(&conf).is_ok_and(|c| c.contains(INCLUDE));
    if !initialized {
        if data.exists() {
            fs::remove_dir_all(&data)
                .with_context(|| format!("cannot remove the half-made {}", data.display()))?;
        }
        mkdir(&data)?;
        let pwfile = dir.join("initdb.pw");
        fs::write(&pwfile, format!("{password}\n"))?;
        chmod(&pwfile, "600")?;
        if let Some(user) = run_as(layout) {
            chown(&data, user)?;
            chown(&pwfile, user)?;
        }
        let mut initdb = process::detached(bin.join("initdb"), run_as(layout));
        initdb
            .current_dir(&dir)
            .arg("-D")
            .arg(&data)
            .args(["-U", user, "-E", "UTF8", "--no-locale"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()));
        let result = run_logged(
            service.name(),
            "initdb",
            &mut initdb,
            &dir.join("initdb.log"),
        );
        let _ = fs::remove_file(&pwfile);
        result?;
        if service.secure() {
            // TCP over TLS only, with a password; the local socket is xtask's.
            fs::write(
                data.join("pg_hba.conf"),
                "# Written by `cargo xtask services up --secure`.\n\
                 local all all trust\n\
                 hostssl all all 127.0.0.1/32 scram-sha-256\n",
            )?;
        }
        let mut text = fs::read_to_string(&conf)?;
        text.push_str(&format!("\n# cargo xtask services\n{INCLUDE}\n"));
        fs::write(&conf, text)?;
    }
    let ssl = if service.secure() {
        // PostgreSQL wants its key owned by its user and private: copies beside the data.
        let secrets = Secrets::read(layout)?;
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        fs::copy(secrets.cert(), &cert)?;
        fs::copy(secrets.key(), &key)?;
        chmod(&key, "600")?;
        if let Some(user) = run_as(layout) {
            chown(&cert, user)?;
            chown(&key, user)?;
        }
        format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            cert.display(),
            key.display()
        )
    } else {
        String::new()
    };
    let ours = data.join("polyhost.conf");
    fs::write(
        &ours,
        format!(
            "# Written by `cargo xtask services up`; rewritten on every start.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             {ssl}\
             unix_socket_directories = '{}'\n\
             max_connections = 200\n\
             shared_buffers = 128MB\n\
             password_encryption = 'scram-sha-256'\n\
             # a throwaway development cluster: speed over durability\n\
             fsync = off\n\
             full_page_writes = off\n\
             synchronous_commit = off\n\
             log_min_messages = warning\n\
             log_connections = off\n",
            socket.display(),
            port = if service.secure() { SECURE_PORT } else { 5432 },
        ),
    )?;
    if let Some(user) = run_as(layout) {
        chown(&ours, user)?;
    }
    Ok(())
}

pub fn spawn(layout: &Layout, service: Service) -> Result<Child> {
    let bin = bin_dir().context("PostgreSQL server binaries not found")?;
    let mut cmd = process::detached(bin.join("postgres"), run_as(layout));
    cmd.current_dir(layout.dir(service))
        .arg("-D")
        .arg(data_dir(layout, service));
    process::spawn_logged(&mut cmd, &log(layout, service))
}

fn log(layout: &Layout, service: Service) -> PathBuf {
    layout.dir(service).join("postgres.log")
}

pub fn logs(layout: &Layout, service: Service) -> Vec<PathBuf> {
    vec![log(layout, service)]
}

/// Our postmaster's command line names our data directory.
pub fn marker(layout: &Layout, service: Service) -> String {
    data_dir(layout, service).display().to_string()
}

/// PostgreSQL's own pid file (its first line is the postmaster's pid).
pub fn own_pid_file(layout: &Layout, service: Service) -> Option<PathBuf> {
    Some(data_dir(layout, service).join("postmaster.pid"))
}

/// The server answers on the `postgres` database; the `polyhost` database is created when
/// missing; then the full probe.
pub fn ready(service: Service) -> Result<String> {
    ensure_database(service, DATABASE)?;
    answer(service)
}

/// A simple query as the superuser of `service`'s cluster: over TCP for `postgres`, over the
/// Unix socket for `postgres-secure`.
fn query(service: Service, database: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    if service.secure() {
        let layout = Layout::get()?;
        let socket = socket_dir(&layout, service);
        probe::postgres_socket_query(&socket, SECURE_PORT, secure::USER, database, sql)
    } else {
        probe::postgres_query(ADDR, USER, PASSWORD, database, sql)
    }
}

/// Creates the database `name` unless it exists (`name` is one of ours: a plain identifier).
pub fn ensure_database(service: Service, name: &str) -> Result<()> {
    let exists = !query(
        service,
        "postgres",
        &format!("select 1 from pg_database where datname = '{name}'"),
    )?
    .is_empty();
    if !exists {
        say(service.name(), format_args!("creating database {name}"));
        query(service, "postgres", &format!("create database {name}"))?;
    }
    Ok(())
}

/// Runs `sql` (one or more statements) in `database` as the superuser.
pub fn execute(service: Service, database: &str, sql: &str) -> Result<()> {
    query(service, database, sql).map(drop)
}

/// The URL of the database `name`, as the superuser.
pub fn url(name: &str) -> String {
    format!("postgres://{USER}:{PASSWORD}@{ADDR}/{name}")
}

/// `select version()` in the `polyhost` database as the superuser.
pub fn answer(service: Service) -> Result<String> {
    let rows = query(service, DATABASE, "select version()")?;
    let version = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default();
    let short: String = version.split(" on ").next().unwrap_or_default().into();
    Ok(format!("select version() → {short}"))
}
