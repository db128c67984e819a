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
//! `POLYHOST_JVM_COMPILERS=client|both` chooses the JIT compilers of the native JVMs (Kafka's
//! and Elasticsearch's; [`kafka::compiler_options`]).
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
//!
//! `up --secure` starts, besides, a secured sibling of four of them — `kafka-secure`
//! (SASL_SSL, SCRAM), `postgres-secure` (TLS only, SCRAM), `mongodb-secure` (FerretDB, TLS
//! only, logins) and `redis-secure` (TLS only, an ACL user) — with certificates of the
//! project's own CA, and writes the host's settings for them to a connections file (see
//! [`secure`]); natively only.

mod compose;
mod elasticsearch;
mod ferretdb;
mod kafka;
mod layout;
mod postgres;
mod probe;
mod process;
mod redis;
mod secure;
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
    Up {
        /// Also the secured services (TLS and authentication on), and their connections file.
        #[arg(long)]
        secure: bool,
    },
    /// Stop the services that `up` started (the secured ones too).
    Down,
    /// Print each service, its address and whether it answers.
    Status {
        /// Also the secured services.
        #[arg(long)]
        secure: bool,
    },
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
    /// Kafka, SASL_SSL with SCRAM, 127.0.0.1:9094 (`up --secure`).
    KafkaSecure,
    /// PostgreSQL, TLS only, 127.0.0.1:5433 (`up --secure`).
    PostgresSecure,
    /// FerretDB, TLS only, logins checked by `postgres-secure`, 127.0.0.1:27018 (`up --secure`).
    MongodbSecure,
    /// Redis, TLS only, an ACL user, 127.0.0.1:6380 (`up --secure`).
    RedisSecure,
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

    /// The secured services of `up --secure`.
    pub const SECURE: [Service; 4] = [
        Service::KafkaSecure,
        Service::PostgresSecure,
        Service::MongodbSecure,
        Service::RedisSecure,
    ];

    /// The name on the command line, in `docker-compose.yml` and in the state directory.
    pub fn name(self) -> &'static str {
        match self {
            Service::Kafka => "kafka",
            Service::Postgres => "postgres",
            Service::Mongodb => "mongodb",
            Service::Redis => "redis",
            Service::Elasticsearch => "elasticsearch",
            Service::KafkaSecure => "kafka-secure",
            Service::PostgresSecure => "postgres-secure",
            Service::MongodbSecure => "mongodb-secure",
            Service::RedisSecure => "redis-secure",
        }
    }

    /// Whether this is a secured sibling (`up --secure`).
    pub fn secure(self) -> bool {
        Service::SECURE.contains(&self)
    }

    /// `host:port`.
    pub fn addr(self) -> &'static str {
        match self {
            Service::Kafka => kafka::ADDR,
            Service::Postgres => postgres::ADDR,
            Service::Mongodb => ferretdb::ADDR,
            Service::Redis => redis::ADDR,
            Service::Elasticsearch => "127.0.0.1:9200",
            Service::KafkaSecure => kafka::SECURE_ADDR,
            Service::PostgresSecure => postgres::SECURE_ADDR,
            Service::MongodbSecure => ferretdb::SECURE_ADDR,
            Service::RedisSecure => redis::SECURE_ADDR,
        }
    }

    /// The environment variable the host and the tests read, and its value; `None` for a
    /// secured service, whose settings are in the connections file instead.
    pub fn env(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Service::Kafka => ("KAFKA_BROKERS", "127.0.0.1:9092"),
            Service::Postgres => (
                "DATABASE_URL",
                "postgres://postgres:postgres@127.0.0.1:5432/polyhost",
            ),
            Service::Mongodb => ("MONGODB_URI", "mongodb://127.0.0.1:27017"),
            Service::Redis => ("REDIS_URL", "redis://127.0.0.1:6379"),
            Service::Elasticsearch => ("ELASTICSEARCH_URL", elasticsearch::URL),
            Service::KafkaSecure
            | Service::PostgresSecure
            | Service::MongodbSecure
            | Service::RedisSecure => return None,
        })
    }

    /// A real request: `Ok(what it answered)` when the service works.
    fn probe(self) -> Result<String> {
        match self {
            Service::Kafka => probe::kafka(kafka::ADDR),
            Service::Postgres | Service::PostgresSecure => postgres::answer(self),
            Service::Mongodb => probe::mongodb(ferretdb::ADDR),
            Service::Redis => probe::redis(redis::ADDR),
            Service::Elasticsearch => probe::elasticsearch(elasticsearch::URL),
            Service::KafkaSecure => kafka::secure_probe(),
            Service::MongodbSecure => ferretdb::secure_probe(),
            Service::RedisSecure => redis::secure_probe(),
        }
    }

    /// [`Service::probe`], after finishing a fresh start (PostgreSQL: the `polyhost` database).
    fn ready(self) -> Result<String> {
        match self {
            Service::Postgres | Service::PostgresSecure => postgres::ready(self),
            _ => self.probe(),
        }
    }

    fn missing_packages(self) -> Vec<&'static str> {
        match self {
            Service::Kafka | Service::KafkaSecure => kafka::missing_packages(),
            Service::Postgres | Service::PostgresSecure => postgres::missing_packages(),
            Service::Mongodb | Service::MongodbSecure => ferretdb::missing_packages(),
            Service::Redis | Service::RedisSecure => redis::missing_packages(),
            Service::Elasticsearch => elasticsearch::missing_packages(),
        }
    }

    /// Downloads, builds, data directories and configuration, before a start.
    fn prepare(self, layout: &Layout) -> Result<()> {
        match self {
            Service::Kafka | Service::KafkaSecure => kafka::prepare(layout, self),
            Service::Postgres | Service::PostgresSecure => postgres::prepare(layout, self),
            Service::Mongodb | Service::MongodbSecure => ferretdb::prepare(layout, self),
            Service::Redis | Service::RedisSecure => redis::prepare(layout, self),
            Service::Elasticsearch => elasticsearch::prepare(layout),
        }
    }

    /// Starts the service detached, its output in its log.
    fn spawn(self, layout: &Layout) -> Result<Child> {
        match self {
            Service::Kafka | Service::KafkaSecure => kafka::spawn(layout, self),
            Service::Postgres | Service::PostgresSecure => postgres::spawn(layout, self),
            Service::Mongodb | Service::MongodbSecure => ferretdb::spawn(layout, self),
            Service::Redis | Service::RedisSecure => redis::spawn(layout, self),
            Service::Elasticsearch => elasticsearch::spawn(layout),
        }
    }

    /// The logs whose tails explain a failed start.
    fn logs(self, layout: &Layout) -> Vec<PathBuf> {
        match self {
            Service::Kafka | Service::KafkaSecure => kafka::logs(layout, self),
            Service::Postgres | Service::PostgresSecure => postgres::logs(layout, self),
            Service::Mongodb | Service::MongodbSecure => ferretdb::logs(layout, self),
            Service::Redis | Service::RedisSecure => redis::logs(layout, self),
            Service::Elasticsearch => elasticsearch::logs(layout),
        }
    }

    /// A string the command line of our process contains (guards against recycled pids).
    fn marker(self, layout: &Layout) -> String {
        match self {
            Service::Kafka | Service::KafkaSecure => kafka::marker(layout, self),
            Service::Postgres | Service::PostgresSecure => postgres::marker(layout, self),
            Service::Mongodb | Service::MongodbSecure => ferretdb::marker(layout, self),
            Service::Redis | Service::RedisSecure => redis::marker(layout, self),
            Service::Elasticsearch => elasticsearch::marker(layout),
        }
    }

    /// The service's own pid file, besides ours.
    fn own_pid_file(self, layout: &Layout) -> Option<PathBuf> {
        match self {
            Service::Postgres | Service::PostgresSecure => postgres::own_pid_file(layout, self),
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
            Service::Kafka | Service::KafkaSecure => 180,
            Service::Postgres | Service::PostgresSecure => 60,
            Service::Mongodb | Service::MongodbSecure => 60,
            Service::Redis | Service::RedisSecure => 30,
            Service::Elasticsearch => 300,
        })
    }

    /// The signal that stops the service cleanly (PostgreSQL: `INT`, its fast shutdown, which
    /// does not wait for clients to leave), and how long to wait before `KILL`.
    fn stop_signal(self) -> (&'static str, Duration) {
        match self {
            Service::Postgres | Service::PostgresSecure => ("INT", Duration::from_secs(60)),
            Service::Kafka | Service::KafkaSecure | Service::Elasticsearch => {
                ("TERM", Duration::from_secs(60))
            }
            Service::Mongodb | Service::MongodbSecure | Service::Redis | Service::RedisSecure => {
                ("TERM", Duration::from_secs(20))
            }
        }
    }
}

impl std::str::FromStr for Service {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Self> {
        <Service as ValueEnum>::from_str(name, true).map_err(|_| {
            anyhow!(
                "unknown service {name:?} (kafka, postgres, mongodb, redis, elasticsearch, \
                 or one of them with -secure)"
            )
        })
    }
}

pub fn run(action: Action) -> Result<()> {
    system::start_clock();
    match action {
        Action::Up { secure: false } => up(),
        Action::Up { secure: true } => up_secure().map(drop),
        Action::Down => down(),
        Action::Status { secure } => status(secure),
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
    for (var, value) in Service::ALL.into_iter().filter_map(Service::env) {
        println!("{var}={value}");
    }
    Ok(())
}

/// Brings every service up, the secured ones too, and returns their connections file (for
/// `POLYHOST_CONNECTIONS`).
pub fn up_secure() -> Result<PathBuf> {
    system::start_clock();
    if compose::available() {
        bail!("`services up --secure` runs the services natively only (POLYHOST_SERVICES=native)");
    }
    native_up(&everything())?;
    for (var, value) in Service::ALL.into_iter().filter_map(Service::env) {
        println!("{var}={value}");
    }
    let file = secure::connections_file(&Layout::get()?);
    println!("POLYHOST_CONNECTIONS={}", file.display());
    Ok(file)
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
    if compose::available() && !service.secure() {
        compose::start(service)
    } else {
        native_up(&[service])
    }
}

fn stop(service: Service) -> Result<()> {
    system::start_clock();
    if compose::available() && !service.secure() {
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
    if services.iter().any(|s| s.secure()) {
        secure::Secrets::ensure(&layout)?;
    }

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
        parallel(&everything(), |s| native_stop(&layout, s)),
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

/// The plain services and their secured siblings.
fn everything() -> Vec<Service> {
    Service::ALL.into_iter().chain(Service::SECURE).collect()
}

fn status(secure: bool) -> Result<()> {
    let compose = compose::available();
    let layout = if compose {
        compose::ps()?;
        None
    } else {
        Some(Layout::get()?)
    };
    let services = if secure {
        everything()
    } else {
        Service::ALL.to_vec()
    };
    let probes = parallel(&services, |s| s.probe());
    println!(
        "{:<16} {:<16} {:<8} {:<8} ANSWERS",
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
            "{:<16} {:<16} {:<8} {:<8} {answer}",
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
