//! Elasticsearch, one node without security, from the
//! `org.elasticsearch.distribution.integ-test-zip:elasticsearch` zip on Maven Central, run on
//! Java 17 as the system user `polyhost-es` (Elasticsearch refuses root).
//!
//! - Cache: `<cache>/elasticsearch-<version>.zip` (SHA-512 checked).
//! - State: `<state>/elasticsearch/` owned by `polyhost-es`: the unpacked distribution
//!   `elasticsearch-<version>/` (its `config/elasticsearch.yml` is ours), `data/`, `logs/`
//!   (`polyhost.log`), `tmp/`, and `es.pid` (the server's pid, written by Elasticsearch).
//! - Started with `bin/elasticsearch -d -p es.pid`: the launcher exits once the server runs.
//!
//! The integ-test zip is the minimal distribution: its only modules are `transport-netty4`,
//! `x-pack-core`, `x-pack-security` and `apm`. Indexing, search, mappings, the standard
//! analyzers and term/metric aggregations work; `GET /` (module `rest-root`),
//! `_delete_by_query`/`_update_by_query`/`_reindex` (module `reindex`), Painless scripts,
//! ingest pipelines and `analysis-common` tokenizers do not.

use std::fs;
use std::path::PathBuf;
use std::process::Child;

use anyhow::{Context, Result};

use super::layout::{Layout, mkdir};
use super::system::{chown, download, ensure_system_user, quiet, which};
use super::{Service, kafka, process, versions};

pub const URL: &str = "http://127.0.0.1:9200";
/// The system user Elasticsearch runs as when xtask runs as root.
pub const OS_USER: &str = "polyhost-es";
const WHO: &str = "elasticsearch";

pub fn missing_packages() -> Vec<&'static str> {
    let mut missing = vec![];
    if kafka::java().is_none() {
        missing.push("openjdk-17-jre-headless");
    }
    if which("unzip", &[]).is_none() {
        missing.push("unzip");
    }
    missing
}

fn zip(layout: &Layout) -> PathBuf {
    layout
        .cache
        .join(format!("elasticsearch-{}.zip", versions::ELASTICSEARCH))
}

fn home(layout: &Layout) -> PathBuf {
    layout
        .dir(Service::Elasticsearch)
        .join(format!("elasticsearch-{}", versions::ELASTICSEARCH))
}

fn run_as(layout: &Layout) -> Option<&'static str> {
    layout.root.then_some(OS_USER)
}

/// The system user (when root), the zip in the cache, the distribution unpacked in the state
/// directory, our configuration.
pub fn prepare(layout: &Layout) -> Result<()> {
    if layout.root {
        ensure_system_user(OS_USER)?;
    }
    let v = versions::ELASTICSEARCH;
    download(
        WHO,
        &format!(
            "https://repo.maven.apache.org/maven2/org/elasticsearch/distribution/integ-test-zip/\
             elasticsearch/{v}/elasticsearch-{v}.zip"
        ),
        &zip(layout),
    )?;
    let dir = layout.dir(Service::Elasticsearch);
    let home = home(layout);
    mkdir(&dir)?;
    if !home.join("bin/elasticsearch").is_file() {
        let staging = dir.join("unpack.tmp");
        if staging.exists() {
            fs::remove_dir_all(&staging)?;
        }
        super::system::say(WHO, format_args!("unpacking into {}", dir.display()));
        quiet(
            std::process::Command::new("unzip")
                .arg("-q")
                .arg(zip(layout))
                .arg("-d")
                .arg(&staging),
        )?;
        if home.exists() {
            fs::remove_dir_all(&home)?;
        }
        fs::rename(staging.join(format!("elasticsearch-{v}")), &home)
            .context("the zip does not hold elasticsearch-<version>/")?;
        fs::remove_dir_all(&staging)?;
    }
    for sub in ["data", "logs", "tmp"] {
        mkdir(&dir.join(sub))?;
    }
    fs::write(
        home.join("config/elasticsearch.yml"),
        format!(
            "# Written by `cargo xtask services up`; rewritten on every start.\n\
             cluster.name: polyhost\n\
             node.name: polyhost-es\n\
             path.data: {data}\n\
             path.logs: {logs}\n\
             discovery.type: single-node\n\
             network.host: 127.0.0.1\n\
             http.port: 9200\n\
             transport.port: 9300\n\
             xpack.security.enabled: false\n\
             cluster.routing.allocation.disk.threshold_enabled: false\n\
             action.destructive_requires_name: false\n",
            data = dir.join("data").display(),
            logs = dir.join("logs").display(),
        ),
    )?;
    if let Some(user) = run_as(layout) {
        chown(&dir, user)?;
    }
    Ok(())
}

fn pid_file(layout: &Layout) -> PathBuf {
    layout.dir(Service::Elasticsearch).join("es.pid")
}

pub fn spawn(layout: &Layout) -> Result<Child> {
    let java_home =
        kafka::java_home().context("no Java found (install openjdk-17-jre-headless)")?;
    let dir = layout.dir(Service::Elasticsearch);
    let _ = fs::remove_file(pid_file(layout));
    let mut cmd = process::detached(home(layout).join("bin/elasticsearch"), run_as(layout));
    cmd.current_dir(&dir)
        .env("ES_JAVA_HOME", java_home)
        // The JIT compilers chosen as for Kafka.
        .env("ES_JAVA_OPTS", java_opts(kafka::compiler_options()?))
        .env("ES_TMPDIR", dir.join("tmp"))
        .args(["-d", "-p"])
        .arg(pid_file(layout));
    process::spawn_logged(&mut cmd, &launcher_log(layout))
}

/// `ES_JAVA_OPTS`: a fixed heap and the JIT compilers' `options`.
fn java_opts(options: &[&str]) -> String {
    ["-Xms512m", "-Xmx512m"]
        .iter()
        .chain(options)
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

fn launcher_log(layout: &Layout) -> PathBuf {
    layout.dir(Service::Elasticsearch).join("launcher.log")
}

pub fn logs(layout: &Layout) -> Vec<PathBuf> {
    vec![
        launcher_log(layout),
        layout.dir(Service::Elasticsearch).join("logs/polyhost.log"),
    ]
}

/// Our server's command line names our distribution (`-Des.path.home=...`).
pub fn marker(layout: &Layout) -> String {
    home(layout).display().to_string()
}

/// The server's pid file (`-p`), written once the server runs.
pub fn own_pid_file(layout: &Layout) -> Option<PathBuf> {
    Some(pid_file(layout))
}
