//! `cargo xtask services up|down|status|start <name>|stop <name>`: the five backing services
//! (Kafka, PostgreSQL, MongoDB protocol, Redis, Elasticsearch) on 127.0.0.1 at their standard
//! ports.
//!
//! Where `docker info` answers, the services run under Docker compose (`docker-compose.yml`
//! at the workspace root, see [`compose`]); `POLYHOST_SERVICES=native|compose` overrides the
//! choice. Otherwise they run natively on Debian, one file per service:
//!
//! | service | module | runs |
//! |---|---|---|
//! | `kafka` | [`kafka`] | Kafka jars from Maven Central, KRaft single node, Java 17 |
//! | `postgres` | [`postgres`] | our own cluster from the Debian packages, as `postgres` |
//! | `mongodb` | [`ferretdb`] | FerretDB v1 (PostgreSQL back end: database `ferretdb`), built with Go |
//! | `redis` | [`redis`] | `redis-server` from the Debian package, our configuration |
//! | `elasticsearch` | [`elasticsearch`] | the integ-test zip from Maven Central, as `polyhost-es` |
//!
//! Versions are pinned in [`versions`]. Downloads and builds are cached in
//! `~/.cache/polyhost` (`$XDG_CACHE_HOME/polyhost`); runtime state lives in the state
//! directory: `$POLYHOST_STATE_DIR`, else `/var/lib/polyhost` as root (reachable by the
//! `postgres` and `polyhost-es` users), else `~/.local/state/polyhost` (see [`layout`]):
//!
//! - `<state>/run/<service>.pid` — the pid of each process `up` started;
//! - `<state>/<service>/` — its configuration, data and logs.
//!
//! `up` is idempotent: a service that answers its probe ([`probe`]: a real protocol request) is
//! left alone, a stopped one is started again; the services start and are waited for in
//! parallel. `down` and `stop` signal only the recorded pids ([`process`]).
//!
//! A test that needs a service gone for a while runs `cargo xtask services stop redis`, then
//! `cargo xtask services start redis` (which returns once Redis answers again).

mod compose;
mod elasticsearch;
mod ferretdb;
mod kafka;
mod layout;
mod postgres;
mod probe;
mod process;
mod redis;
mod system;
mod versions;

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::{Subcommand, ValueEnum};

use layout::Layout;
use system::say;

/// What to do with the services.
#[derive(Subcommand, Clone, Copy, Debug)]
pub enum Action {
    /// Start every service that is not answering yet, and wait until all answer.
    Up,
    /// Stop the services that `up` started.
    Down,
    /// Print each service, its address and whether it answers.
    Status,
    /// Start one service unless it answers, and wait until it answers.
    Start {
        #[arg(value_enum)]
        service: Service,
    },
    /// Stop one service that `up` (or `start`) started.
    Stop {
        #[arg(value_enum)]
        service: Service,
    },
}

/// One backing service.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// Apache Kafka, 127.0.0.1:9092.
    Kafka,
    /// PostgreSQL, 127.0.0.1:5432.
    #[value(alias = "postgresql")]
    Postgres,
    /// The MongoDB wire protocol (FerretDB natively), 127.0.0.1:27017.
    #[value(alias = "mongo", alias = "ferretdb")]
    Mongodb,
    /// Redis, 127.0.0.1:6379.
    Redis,
    /// Elasticsearch, 127.0.0.1:9200.
    #[value(alias = "es")]
    Elasticsearch,
}

impl Service {
    /// Every service, in the order of the status table.
    pub const ALL: [Service; 5] = [
        Service::Kafka,
        Service::Postgres,
        Service::Mongodb,
        Service::Redis,
        Service::Elasticsearch,
    ];

    /// The name on the command line, in `docker-compose.yml` and in the state directory.
    pub fn name(self) -> &'static str {
        match self {
            Service::Kafka => "kafka",
            Service::Postgres => "postgres",
            Service::Mongodb => "mongodb",
            Service::Redis => "redis",
            Service::Elasticsearch => "elasticsearch",
        }
    }

    /// `host:port`.
    pub fn addr(self) -> &'static str {
        match self {
            Service::Kafka => kafka::ADDR,
            Service::Postgres => postgres::ADDR,
            Service::Mongodb => ferretdb::ADDR,
            Service::Redis => redis::ADDR,
            Service::Elasticsearch => "127.0.0.1:9200",
        }
    }

    /// The environment variable the host and the tests read, and its value.
    pub fn env(self) -> (&'static str, &'static str) {
        match self {
            Service::Kafka => ("KAFKA_BROKERS", "127.0.0.1:9092"),
            Service::Postgres => (
                "DATABASE_URL",
                "postgres://postgres:postgres@127.0.0.1:5432/polyhost",
            ),
            Service::Mongodb => ("MONGODB_URI", "mongodb://127.0.0.1:27017"),
            Service::Redis => ("REDIS_URL", "redis://127.0.0.1:6379"),
            Service::Elasticsearch => ("ELASTICSEARCH_URL", elasticsearch::URL),
        }
    }

    /// A real request: `Ok(what it answered)` when the service works.
    fn probe(self) -> Result<String> {
        match self {
            Service::Kafka => probe::kafka(kafka::ADDR),
            Service::Postgres => postgres::answer(),
            Service::Mongodb => probe::mongodb(ferretdb::ADDR),
            Service::Redis => probe::redis(redis::ADDR),
            Service::Elasticsearch => probe::elasticsearch(elasticsearch::URL),
        }
    }

    /// [`Service::probe`], after finishing a fresh start (PostgreSQL: the `polyhost` database).
    fn ready(self) -> Result<String> {
        match self {
            Service::Postgres => postgres::ready(),
            _ => self.probe(),
        }
    }

    fn missing_packages(self) -> Vec<&'static str> {
        match self {
            Service::Kafka => kafka::missing_packages(),
            Service::Postgres => postgres::missing_packages(),
            Service::Mongodb => ferretdb::missing_packages(),
            Service::Redis => redis::missing_packages(),
            Service::Elasticsearch => elasticsearch::missing_packages(),
        }
    }

    /// Downloads, builds, data directories and configuration, before a start.
    fn prepare(self, layout: &Layout) -> Result<()> {
        match self {
            Service::Kafka => kafka::prepare(layout),
            Service::Postgres => postgres::prepare(layout),
            Service::Mongodb => ferretdb::prepare(layout),
            Service::Redis => redis::prepare(layout),
            Service::Elasticsearch => elasticsearch::prepare(layout),
        }
    }

    /// Starts the service detached, its output in its log.
    fn spawn(self, layout: &Layout) -> Result<Child> {
        match self {
            Service::Kafka => kafka::spawn(layout),
            Service::Postgres => postgres::spawn(layout),
            Service::Mongodb => ferretdb::spawn(layout),
            Service::Redis => redis::spawn(layout),
            Service::Elasticsearch => elasticsearch::spawn(layout),
        }
    }

    /// The logs whose tails explain a failed start.
    fn logs(self, layout: &Layout) -> Vec<PathBuf> {
        match self {
            Service::Kafka => kafka::logs(layout),
            Service::Postgres => postgres::logs(layout),
            Service::Mongodb => ferretdb::logs(layout),
            Service::Redis => redis::logs(layout),
            Service::Elasticsearch => elasticsearch::logs(layout),
        }
    }

    /// A string the command line of our process contains (guards against recycled pids).
    fn marker(self, layout: &Layout) -> String {
        match self {
            Service::Kafka => kafka::marker(layout),
            Service::Postgres => postgres::marker(layout),
            Service::Mongodb => ferretdb::marker(layout),
            Service::Redis => redis::marker(layout),
            Service::Elasticsearch => elasticsearch::marker(layout),
        }
    }

    /// The service's own pid file, besides ours.
    fn own_pid_file(self, layout: &Layout) -> Option<PathBuf> {
        match self {
            Service::Postgres => postgres::own_pid_file(layout),
            Service::Elasticsearch => elasticsearch::own_pid_file(layout),
            _ => None,
        }
    }

    /// Whether the spawned process is a launcher that exits once the server runs
    /// (Elasticsearch's `-d`).
    fn launcher_exits(self) -> bool {
        self == Service::Elasticsearch
    }

    /// How long a start may take until the service answers.
    fn start_timeout(self) -> Duration {
        Duration::from_secs(match self {
            Service::Kafka => 180,
            Service::Postgres => 60,
            Service::Mongodb => 60,
            Service::Redis => 30,
            Service::Elasticsearch => 300,
        })
    }

    /// The signal that stops the service cleanly (PostgreSQL: `INT`, its fast shutdown, which
    /// does not wait for clients to leave), and how long to wait before `KILL`.
    fn stop_signal(self) -> (&'static str, Duration) {
        match self {
            Service::Postgres => ("INT", Duration::from_secs(60)),
            Service::Kafka | Service::Elasticsearch => ("TERM", Duration::from_secs(60)),
            Service::Mongodb | Service::Redis => ("TERM", Duration::from_secs(20)),
        }
    }
}

impl std::str::FromStr for Service {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Self> {
        <Service as ValueEnum>::from_str(name, true).map_err(|_| {
            anyhow!("unknown service {name:?} (kafka, postgres, mongodb, redis, elasticsearch)")
        })
    }
}

pub fn run(action: Action) -> Result<()> {
    system::start_clock();
    match action {
        Action::Up => up(),
        Action::Down => down(),
        Action::Status => status(),
        Action::Start { service } => start_one(service.name()),
        Action::Stop { service } => stop_one(service.name()),
    }
}

/// Brings every service up and waits until each answers a real request.
pub fn up() -> Result<()> {
    system::start_clock();
    if compose::available() {
        compose::up()?;
    } else {
        native_up(&Service::ALL)?;
    }
    for service in Service::ALL {
        let (var, value) = service.env();
        println!("{var}={value}");
    }
    Ok(())
}

/// Starts one service by name (unless it answers) and waits until it answers.
pub fn start_one(name: &str) -> Result<()> {
    start(name.parse()?)
}

/// Stops one service by name, if `up` started it.
pub fn stop_one(name: &str) -> Result<()> {
    stop(name.parse()?)
}

fn start(service: Service) -> Result<()> {
    system::start_clock();
    if compose::available() {
        compose::start(service)
    } else {
        native_up(&[service])
    }
}

fn stop(service: Service) -> Result<()> {
    system::start_clock();
    if compose::available() {
        compose::stop(service)
    } else {
        let layout = Layout::get()?;
        let _lock = layout.lock()?;
        native_stop(&layout, service)
    }
}

/// Runs `f` for each service on its own thread; the results in the order of `services`.
fn parallel<T: Send>(services: &[Service], f: impl Fn(Service) -> T + Sync) -> Vec<(Service, T)> {
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = services
            .iter()
            .map(|&s| (s, scope.spawn(move || f(s))))
            .collect();
        handles
            .into_iter()
            .map(|(s, h)| (s, h.join().expect("a service thread panicked")))
            .collect()
    })
}

/// Fails naming every service whose result is an error.
fn all_ok<T>(what: &str, results: Vec<(Service, Result<T>)>) -> Result<()> {
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|(s, r)| r.err().map(|e| format!("{}: {e:#}", s.name())))
        .collect();
    if failures.is_empty() {
        return Ok(());
    }
    bail!(
        "{} service(s) {what}:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    )
}

fn native_up(services: &[Service]) -> Result<()> {
    let layout = Layout::get()?;
    let _lock = layout.lock()?;
    say(
        "services",
        format_args!(
            "native; cache {}, state {}",
            layout.cache.display(),
            layout.state.display()
        ),
    );
    // Debian packages (one apt-get for all) before the parallel part.
    let silent = parallel(services, |s| s.ready().is_err());
    let mut packages: Vec<&str> = silent
        .iter()
        .filter(|(_, silent)| *silent)
        .flat_map(|(s, _)| s.missing_packages())
        .collect();
    packages.sort();
    packages.dedup();
    system::apt_install(&packages, layout.root)?;

    let started = Instant::now();
    let results = parallel(services, |s| ensure(&layout, s));
    all_ok("did not come up", results)?;
    say(
        "services",
        format_args!(
            "{} answering ({:.0} s)",
            services
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// One service answering: left alone when it answers, else started (or waited for, when our
/// process of it runs) until it answers.
fn ensure(layout: &Layout, service: Service) -> Result<String> {
    let name = service.name();
    if let Ok(answer) = service.ready() {
        let whose = match process::recorded(layout, service) {
            Some(pid) => format!("pid {pid}"),
            None => "not started by xtask".into(),
        };
        say(name, format_args!("already answering ({whose}): {answer}"));
        return Ok(answer);
    }
    let child = match process::recorded(layout, service) {
        Some(pid) => {
            say(
                name,
                format_args!("pid {pid} runs but does not answer yet; waiting"),
            );
            None
        }
        None => {
            if probe::port_open(service.addr()) {
                bail!(
                    "{} is taken by a process xtask did not start, which does not answer as \
                     {name} should ({:#}); stop it first",
                    service.addr(),
                    service.ready().err().unwrap_or_else(|| anyhow!("?"))
                );
            }
            service.prepare(layout)?;
            let child = service.spawn(layout)?;
            process::write_pid(layout, service, child.id())?;
            say(name, format_args!("started (pid {}), waiting", child.id()));
            Some(child)
        }
    };
    wait(layout, service, child)
}

/// Waits until `service` answers, failing early when its process exits, or at its timeout.
fn wait(layout: &Layout, service: Service, mut child: Option<Child>) -> Result<String> {
    let name = service.name();
    let started = Instant::now();
    let timeout = service.start_timeout();
    let mut next_note = Duration::from_secs(15);
    let fail = |what: String, last: &str| {
        let tails: Vec<String> = service
            .logs(layout)
            .iter()
            .map(|log| system::tail(log, 30))
            .collect();
        anyhow!("{what} (last probe: {last})\n{}", tails.join("\n"))
    };
    loop {
        let last = match service.ready() {
            Ok(answer) => {
                say(
                    name,
                    format_args!(
                        "answering after {:.1} s: {answer}",
                        started.elapsed().as_secs_f64()
                    ),
                );
                return Ok(answer);
            }
            Err(e) => format!("{e:#}"),
        };
        if service.launcher_exits() {
            // Record the server's pid as soon as it wrote it.
            let server = service
                .own_pid_file(layout)
                .and_then(|f| process::read_pid(&f))
                .filter(|&pid| process::alive(pid));
            if let Some(pid) = server
                && process::read_pid(&layout.pid_file(service)) != Some(pid)
            {
                process::write_pid(layout, service, pid)?;
            }
        }
        match child.as_mut() {
            Some(c) => {
                if let Some(status) = c.try_wait()? {
                    child = None;
                    if !(service.launcher_exits() && status.success()) {
                        let _ = std::fs::remove_file(layout.pid_file(service));
                        return Err(fail(format!("exited ({status}) before answering"), &last));
                    }
                }
            }
            None => {
                if process::recorded(layout, service).is_none() {
                    return Err(fail("is no longer running".into(), &last));
                }
            }
        }
        if started.elapsed() >= timeout {
            return Err(fail(
                format!("does not answer after {} s", timeout.as_secs()),
                &last,
            ));
        }
        if started.elapsed() >= next_note {
            say(
                name,
                format_args!("waiting, {} s… ({last})", next_note.as_secs()),
            );
            next_note += Duration::from_secs(15);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn down() -> Result<()> {
    system::start_clock();
    if compose::available() {
        return compose::down();
    }
    let layout = Layout::get()?;
    let _lock = layout.lock()?;
    all_ok(
        "did not stop",
        parallel(&Service::ALL, |s| native_stop(&layout, s)),
    )
}

fn native_stop(layout: &Layout, service: Service) -> Result<()> {
    let name = service.name();
    let started = Instant::now();
    match process::stop(layout, service)? {
        Some(pid) => say(
            name,
            format_args!(
                "stopped pid {pid} in {:.1} s",
                started.elapsed().as_secs_f64()
            ),
        ),
        None if service.probe().is_ok() => {
            say(name, "answers, but xtask did not start it: left alone")
        }
        None => say(name, "not running"),
    }
    Ok(())
}

fn status() -> Result<()> {
    let compose = compose::available();
    let layout = if compose {
        compose::ps()?;
        None
    } else {
        Some(Layout::get()?)
    };
    let probes = parallel(&Service::ALL, |s| s.probe());
    println!(
        "{:<14} {:<16} {:<8} {:<8} ANSWERS",
        "SERVICE", "ADDRESS", "MODE", "PID"
    );
    let mut silent = 0;
    for (service, answer) in probes {
        let pid = layout
            .as_ref()
            .and_then(|l| process::recorded(l, service))
            .map_or_else(|| "-".to_string(), |p| p.to_string());
        let answer = match answer {
            Ok(a) => format!("yes: {a}"),
            Err(e) => {
                silent += 1;
                format!("NO: {e:#}")
            }
        };
        println!(
            "{:<14} {:<16} {:<8} {:<8} {answer}",
            service.name(),
            service.addr(),
            if compose { "compose" } else { "native" },
            pid
        );
    }
    if silent > 0 {
        bail!("{silent} service(s) do not answer");
    }
    Ok(())
}
