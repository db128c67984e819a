//! FerretDB v1 as the MongoDB wire-protocol server (127.0.0.1:27017), on its PostgreSQL back
//! end: the database `ferretdb` of the PostgreSQL service, created when missing. (Its SQLite
//! back end was tried first, for independence from PostgreSQL: FerretDB 1.24 on SQLite
//! reads and rewrites the whole collection for an update by `_id` — 38 ms at 3 000 small
//! documents, against 4 ms on PostgreSQL.) So the document store needs PostgreSQL up, and
//! `services stop postgres` takes it down too.
//!
//! Built once with Go into `<cache>/ferretdb-<version>/bin/ferretdb`. A plain
//! `go install github.com/FerretDB/FerretDB/cmd/ferretdb@<version>` builds a binary that
//! panics at start ("Invalid build/version/version.txt"): the module zip lacks the generated
//! `build/version/version.txt`. So the module is downloaded (`go mod download`), copied,
//! given that file, and built with `go build ./cmd/ferretdb`.
//!
//! FerretDB 1.24 filters by `_id` with JSON containment (`_jsonb->'_id' @> $1`), which its
//! own btree index on `_id` cannot serve, so every find or update by `_id` read the whole
//! collection. `prepare` installs, in its database, an event trigger that gives every table
//! FerretDB makes for a collection a GIN index on that expression
//! (`ferretdb_id_index.sql`).
//!
//! `mongodb-secure` (`services up --secure`): the same binary with a TLS listener only
//! (127.0.0.1:27018, the [`secure`] certificate), on the database `ferretdb` of
//! `postgres-secure`, reached over TLS with no login of its own: each client's login
//! (`PLAIN`, `authSource=$external`) is the one FerretDB gives PostgreSQL, which checks it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{Context, Result, bail};

use super::layout::{Layout, mkdir};
use super::secure::Secrets;
use super::system::{quiet, run_logged, say, which};
use super::{Service, postgres, process, versions};

pub const ADDR: &str = "127.0.0.1:27017";
/// `mongodb-secure`'s TLS listener.
pub const SECURE_ADDR: &str = "127.0.0.1:27018";
const MODULE: &str = "github.com/FerretDB/FerretDB";
const WHO: &str = "mongodb";
/// FerretDB's database in the PostgreSQL service.
const DATABASE: &str = "ferretdb";
/// Run in [`DATABASE`] at every start: gives every collection table a GIN index on
/// `_jsonb->'_id'`, which FerretDB's `_id` filters (JSON containment) can use; see the file.
const ID_INDEX: &str = include_str!("ferretdb_id_index.sql");

fn go() -> Option<PathBuf> {
    which("go", &["/usr/local/go/bin"])
}

/// No Debian package: Debian 12's Go (1.19) is too old for FerretDB 1.24.
pub fn missing_packages() -> Vec<&'static str> {
    vec![]
}

fn build_dir(layout: &Layout) -> PathBuf {
    layout
        .cache
        .join(format!("ferretdb-{}", versions::FERRETDB))
}

fn binary(layout: &Layout) -> PathBuf {
    build_dir(layout).join("bin/ferretdb")
}

/// How long FerretDB's start waits for PostgreSQL (started alongside) to answer.
const POSTGRES_WAIT: std::time::Duration = std::time::Duration::from_secs(90);

/// The PostgreSQL service FerretDB keeps its data in.
fn backend(service: Service) -> Service {
    if service.secure() {
        Service::PostgresSecure
    } else {
        Service::Postgres
    }
}

/// The binary in the cache (built once), the state directory, and the database `ferretdb`
/// in PostgreSQL (which `up` starts in parallel: waited for here).
pub fn prepare(layout: &Layout, service: Service) -> Result<()> {
    {
        // `mongodb` and `mongodb-secure` start in parallel: one build.
        static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _once = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        if !binary(layout).is_file() {
            build(layout)?;
        }
    }
    mkdir(&state_dir(layout, service))?;
    let deadline = std::time::Instant::now() + POSTGRES_WAIT;
    loop {
        match postgres::ensure_database(backend(service), DATABASE) {
            Ok(()) => {
                return postgres::execute(backend(service), DATABASE, ID_INDEX)
                    .context("indexing FerretDB's tables by `_id` (ferretdb_id_index.sql)");
            }
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(e.context(
                    "FerretDB keeps its data in PostgreSQL, which does not answer: \
                     `cargo xtask services up` starts both",
                ));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
}

fn build(layout: &Layout) -> Result<()> {
    let Some(go) = go() else {
        bail!("FerretDB needs Go ≥ 1.22 to build (https://go.dev/dl/); `go` is not on PATH");
    };
    let dir = build_dir(layout);
    mkdir(&dir)?;
    let module = format!("{MODULE}@{}", versions::FERRETDB);

    say(WHO, format_args!("go mod download {module}"));
    let listing = Command::new(&go)
        .args(["mod", "download", "-json", &module])
        .output()
        .context("cannot run go mod download")?;
    let info: serde_json::Value = serde_json::from_slice(&listing.stdout)
        .ok()
        .unwrap_or_default();
    if !listing.status.success() {
        bail!(
            "go mod download {module} failed: {} {}",
            info["Error"].as_str().unwrap_or_default(),
            String::from_utf8_lossy(&listing.stderr).trim()
        );
    }
    let source = info["Dir"]
        .as_str()
        .context("`go mod download -json` gave no Dir")?;

    let src = dir.join("src");
    if src.exists() {
        quiet(Command::new("chmod").arg("-R").arg("u+w").arg(&src))?;
        fs::remove_dir_all(&src)?;
    }
    quiet(Command::new("cp").arg("-R").arg(source).arg(&src))?;
    quiet(Command::new("chmod").arg("-R").arg("u+w").arg(&src))?;
    fs::write(
        src.join("build/version/version.txt"),
        format!("{}\n", versions::FERRETDB),
    )?;

    let out = dir.join("bin/ferretdb.tmp");
    let mut cmd = Command::new(&go);
    cmd.current_dir(&src)
        .env("GOFLAGS", "-buildvcs=false")
        .env("CGO_ENABLED", "0")
        .args(["build", "-v", "-o"])
        .arg(&out)
        .arg("./cmd/ferretdb");
    run_logged(
        WHO,
        format!("go build FerretDB {} (a few minutes)", versions::FERRETDB),
        &mut cmd,
        &dir.join("build.log"),
    )?;
    fs::rename(&out, binary(layout))?;
    quiet(Command::new("chmod").arg("-R").arg("u+w").arg(&src))?;
    fs::remove_dir_all(&src)?;
    Ok(())
}

/// FerretDB's PostgreSQL pool (its default is 50). FerretDB 1.24 holds one pooled
/// connection per statement of an `update` command until the command ends and hangs, for
/// every client, when the pool runs dry; one host sends at most 8 statements per command
/// on at most 5 connections (host `documents::STATEMENTS_PER_COMMAND`, `MAX_POOL_SIZE`),
/// 40 at once, so 120 leaves room for two more hosts (tests run several) and other
/// clients. PostgreSQL's `max_connections` is 200 (see `postgres.rs`).
const POOL_MAX_CONNS: u32 = 120;

/// The Go runtime's settings for FerretDB. With Go's defaults (`GOGC=100` on a heap of a few
/// tens of MB, a memory-profile sample every 512 KiB allocated) FerretDB 1.24 spent about a
/// fifth of its CPU in the garbage collector and the profiler's stack walks (`perf`, a paced
/// platform run): it decodes every document it reads or writes through `encoding/json`, so
/// it allocates at a high rate for little live data. A collection cycle at 5x the live heap
/// (`GOGC=400`, bounded by a soft limit of 1 GiB past which it collects as often as it
/// needs) and no memory profile cut its CPU in the platform benchmark's paced run by a
/// fifth (FerretDB's CPU time per run, two servers side by side on one PostgreSQL,
/// alternating: 5.0–6.8 s against 7.0–8.3 s) and keep its resident memory under 100 MB.
const GO_RUNTIME: [(&str, &str); 3] = [
    ("GOGC", "400"),
    ("GOMEMLIMIT", "1GiB"),
    ("GODEBUG", "memprofilerate=0"),
];

pub fn spawn(layout: &Layout, service: Service) -> Result<Child> {
    let mut cmd = process::detached(binary(layout), None);
    cmd.current_dir(layout.dir(service)).envs(GO_RUNTIME);
    if service.secure() {
        let s = Secrets::read(layout)?;
        cmd.arg("--listen-addr=")
            .arg(format!("--listen-tls={SECURE_ADDR}"))
            .arg(format!("--listen-tls-cert-file={}", path(&s.cert())))
            .arg(format!("--listen-tls-key-file={}", path(&s.key())))
            .arg(format!(
                "--postgresql-url=postgres://{}/{DATABASE}?sslmode=verify-full&sslrootcert={}\
                 &pool_max_conns={POOL_MAX_CONNS}",
                postgres::SECURE_ADDR,
                path(&s.ca())
            ));
    } else {
        cmd.arg(format!("--listen-addr={ADDR}")).arg(format!(
            "--postgresql-url={}?pool_max_conns={POOL_MAX_CONNS}",
            postgres::url(DATABASE)
        ));
    }
    cmd.arg("--handler=postgresql")
        .arg(format!("--state-dir={}", path(&state_dir(layout, service))))
        .args(["--telemetry=disable", "--debug-addr=-", "--log-level=info"]);
    process::spawn_logged(&mut cmd, &log(layout, service))
}

fn state_dir(layout: &Layout, service: Service) -> PathBuf {
    layout.dir(service).join("state")
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn log(layout: &Layout, service: Service) -> PathBuf {
    layout.dir(service).join("ferretdb.log")
}

pub fn logs(layout: &Layout, service: Service) -> Vec<PathBuf> {
    vec![log(layout, service)]
}

/// Our server's command line names its state directory (one per service).
pub fn marker(layout: &Layout, service: Service) -> String {
    state_dir(layout, service).display().to_string()
}

/// `mongodb-secure` answers: TLS, `hello`.
pub fn secure_probe() -> Result<String> {
    let s = Secrets::read(&Layout::get()?)?;
    super::probe::mongodb_tls(SECURE_ADDR, &s.ca())
}
