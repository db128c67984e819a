//! PostgreSQL (`polyhost:platform/sql`), each plugin under its own database role.
//!
//! A plugin's statements run on a pool that logs in *as* its role (`grants.sql.role`), so
//! PostgreSQL's own GRANTs decide what it may touch. Logging in as the role, rather than
//! `SET ROLE` on a shared login, matters: a plugin could `RESET ROLE` out of the latter.
//!
//! Every statement goes through the extended protocol with its values as bind parameters,
//! never spliced into the text; PostgreSQL refuses to prepare a string of several
//! statements. Values travel in the binary format, converted in [`value`].
//!
//! Here: the grant, the [`Sql`] backend unit, the per-plugin pools and the statement
//! verdict cache. By job, beside it: `allow` (which statements a plugin may run, on their
//! parsed form), `value` (values in and out), `errors` (sqlx errors as [`HostError`]
//! kinds) and `host` (the generated `Host` traits and transactions).

mod allow;
mod errors;
mod host;
mod value;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt as _;
use serde::Deserialize;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres,
};
use sqlx::{Arguments as _, Column as _, Executor as _, Row as _, Statement as _, TypeInfo as _};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{Backend, Data, GrantProblem, Settings, view};
use crate::bindings::polyhost::platform::sql::{self as wit, Rows, Value};
use crate::budget::{self, ResultBudget};
use crate::error::{HostError, Kind};
use crate::state::HostState;
use allow::Scope;
use errors::map_error;
use value::{ColumnKind, Param};

pub use host::Transaction;

/// Connections each plugin's pool may hold. Small: a handler runs one batch at a time per
/// partition, and every plugin has its own pool on the one server.
const POOL_SIZE: u32 = 4;
/// How long a call waits for a free connection before reporting the pool as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Calls a plugin may have in flight (queued for a connection or running).
const CALLS_IN_FLIGHT: usize = 64;

/// `grants.sql`: the database role a plugin's statements run as.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The role name; PostgreSQL's own GRANTs decide what it may touch. The role logs in
    /// on the server and database of `DATABASE_URL`.
    pub role: String,
    /// The environment variable holding the role's password. Without it, the password of
    /// `DATABASE_URL` is used.
    #[serde(default)]
    pub password_env: Option<String>,
}

/// The sql backend: PostgreSQL, each plugin logging in as its own role.
pub struct Sql;

impl Backend for Sql {
    type Grant = Grant;
    type Shared = Shared;
    type Client = Client;

    const SERVICE: &'static str = "PostgreSQL";
    const IMPORTS: &'static [&'static str] = &["polyhost:platform/sql"];
    const GRANT_LINE: &'static str = r#"sql = { role = "<database role>" }"#;

    fn check_grant(grant: &Grant) -> Vec<GrantProblem> {
        let ok = !grant.role.is_empty()
            && grant
                .role
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Vec::new()
        } else {
            vec![GrantProblem::new(
                "role",
                "must be a PostgreSQL role name of a-z, 0-9 and `_`",
            )]
        }
    }

    async fn connect(settings: &Settings) -> anyhow::Result<Shared> {
        Shared::connect(settings).await
    }

    async fn ping(shared: &Shared) -> anyhow::Result<()> {
        shared.ping().await
    }

    fn bind(
        shared: &Shared,
        plugin: &str,
        grant: &Grant,
        limits: &crate::manifest::Limits,
    ) -> anyhow::Result<Client> {
        Client::new(shared, plugin, grant, limits)
    }

    fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, Data<Self>>(linker, view::<Self>)
    }
}

/// The PostgreSQL server the plugins' pools connect to, and those pools.
#[derive(Debug)]
pub struct Shared {
    /// `DATABASE_URL`, parsed: each plugin's pool uses it with its own role as the user.
    options: PgConnectOptions,
    /// One pool per plugin and login, kept across [`Client::new`] calls so that a reloaded
    /// plugin (and the previous version kept for rollback) share one pool, rather than
    /// each version holding connections of its own.
    pools: Mutex<HashMap<PoolKey, PgPool>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    plugin: String,
    role: String,
    password_env: Option<String>,
    session: SessionLimits,
}

impl Shared {
    /// Whether PostgreSQL answers a query (as the host's own user).
    pub async fn ping(&self) -> anyhow::Result<()> {
        use sqlx::Connection as _;
        let mut conn = PgConnection::connect_with(&self.options).await?;
        conn.execute("SELECT 1").await?;
        conn.close().await?;
        Ok(())
    }

    /// Parses `DATABASE_URL`. Nothing is dialled here: each plugin's pool connects on its
    /// first statement, so a database that is briefly down delays events (the calls fail
    /// as unavailable, and are retried) instead of stopping the host.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Shared> {
        let options = settings.postgres.connect_options()?;
        Ok(Shared {
            options,
            pools: Mutex::default(),
        })
    }
}

/// One plugin's pool, logged in as its role.
#[derive(Debug, Clone)]
pub struct Client {
    pool: PgPool,
    role: Arc<str>,
    permits: Arc<Semaphore>,
}

/// The server-side limits every connection of a plugin's pool is opened with, from the
/// plugin's `[plugin.limits]`. They are startup options, and `SET`, `set_config` and
/// `ALTER ROLE` are refused by the allowlist, so the plugin cannot lift them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SessionLimits {
    /// `statement_timeout`: the host-call timeout, so a statement the host stopped waiting
    /// for is cancelled by the server at the same deadline.
    statement_timeout_ms: u64,
    /// `idle_in_transaction_session_timeout`: the whole-call timeout (a transaction spans
    /// host calls and the plugin's work between them, never more than one call into the
    /// plugin), so a session left in a transaction cannot hold its locks longer.
    idle_in_transaction_ms: u64,
}

impl SessionLimits {
    fn of(limits: &crate::manifest::Limits) -> Self {
        SessionLimits {
            statement_timeout_ms: limits.host_call_timeout_ms.max(1),
            idle_in_transaction_ms: limits
                .call_timeout_ms
                .max(limits.host_call_timeout_ms)
                .max(1),
        }
    }

    /// The startup options (`-c name=value`) that set them.
    fn options(&self) -> [(&'static str, String); 4] {
        [
            // The allowlist reads string literals as PostgreSQL does with this on (a
            // backslash escapes nothing outside `E'…'`); a database or role default of
            // `off` must not make the server read a text differently from the check.
            ("standard_conforming_strings", "on".to_string()),
            ("statement_timeout", self.statement_timeout_ms.to_string()),
            (
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction_ms.to_string(),
            ),
            // While a statement runs, the server checks this often whether the client is
            // still there: a connection the host closed (a timed-out call) stops its
            // statement within a second instead of at the statement's own end.
            (
                "client_connection_check_interval",
                CLIENT_CHECK_MS.to_string(),
            ),
        ]
    }
}

/// `client_connection_check_interval`, in milliseconds (PostgreSQL 14 or newer).
const CLIENT_CHECK_MS: u64 = 1_000;

/// The check run on every connection going back to the pool: true only when the session
/// is idle outside any transaction block. Inside a block the transaction began with an
/// earlier statement, so its start (`transaction_timestamp`) differs from this
/// statement's; in a failed block the statement itself fails. Either way the connection
/// is closed instead of pooled, which rolls its transaction back on the server. Sent as a
/// simple query (one message): in the extended protocol the statement's time is that of
/// its last message, which differs from the transaction's start even outside a block.
const IDLE_CHECK: &str = "SELECT statement_timestamp() = transaction_timestamp()";

/// Runs [`IDLE_CHECK`] on `conn`; a bare text is sent as a simple query.
async fn is_idle(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    conn.fetch_one(IDLE_CHECK).await?.try_get(0)
}

impl Client {
    /// The pool of `plugin`, logging in as the grant's role, its sessions limited by
    /// `limits` (see [`SessionLimits`]). Fails when the grant names a password variable
    /// that is not set.
    pub fn new(
        shared: &Shared,
        plugin: &str,
        grant: &Grant,
        limits: &crate::manifest::Limits,
    ) -> anyhow::Result<Client> {
        if grant.role.is_empty() {
            anyhow::bail!("plugin `{plugin}`: grants.sql.role is empty");
        }
        let password = password_for(grant, |var| std::env::var(var).ok())
            .map_err(|e| anyhow::anyhow!("plugin `{plugin}`: {e}"))?;
        let session = SessionLimits::of(limits);
        let key = PoolKey {
            plugin: plugin.to_owned(),
            role: grant.role.clone(),
            password_env: grant.password_env.clone(),
            session,
        };
        let mut pools = shared.pools.lock().unwrap_or_else(|e| e.into_inner());
        let pool = pools
            .entry(key)
            .or_insert_with(|| {
                let mut options = shared
                    .options
                    .clone()
                    .username(&grant.role)
                    .application_name(&format!("polyhost:{plugin}"))
                    .options(session.options());
                if let Some(password) = &password {
                    options = options.password(password);
                }
                PgPoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .min_connections(0)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .idle_timeout(Duration::from_secs(600))
                    // No ping before each use: a connection the server closed fails its
                    // next call as unavailable (which the plugin retries), instead of every
                    // call paying a round trip.
                    .test_before_acquire(false)
                    // A connection goes back only when verified idle (see IDLE_CHECK).
                    .after_release(|conn, _| {
                        Box::pin(async move {
                            let idle = is_idle(conn).await?;
                            if !idle {
                                tracing::warn!(
                                    "a connection came back inside a transaction; closed"
                                );
                            }
                            Ok(idle)
                        })
                    })
                    .connect_lazy_with(options)
            })
            .clone();
        Ok(Client {
            pool,
            role: grant.role.as_str().into(),
            permits: Arc::new(Semaphore::new(CALLS_IN_FLIGHT)),
        })
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>, HostError> {
        self.permits
            .acquire()
            .await
            .map_err(|_| HostError::unavailable("the sql client is shut down"))
    }

    /// A connection of the pool, lent to one call or one transaction.
    async fn lease(&self) -> Result<Lease, HostError> {
        let conn = self.pool.acquire().await.map_err(|e| self.error(e))?;
        Ok(Lease {
            conn: Some(conn),
            settled: true,
            in_transaction: false,
        })
    }

    /// Runs one of the host's own statements (`BEGIN`, `COMMIT`, `ROLLBACK`) on `lease`.
    async fn control(&self, lease: &mut Lease, sql: &'static str) -> Result<(), HostError> {
        let conn = lease.start()?;
        let result = conn.execute(sql).await;
        lease.finish(&result);
        result.map(drop).map_err(|e| self.error(e))
    }

    /// Runs `sql` on `lease` and returns its rows, counting them into `caps`' result
    /// budget as they stream in.
    async fn query_on(
        &self,
        lease: &mut Lease,
        sql: &str,
        params: Vec<Value>,
        caps: Caps,
        what: &str,
    ) -> Result<Rows, HostError> {
        let (sql, args, statement) = self.prepare(lease, sql, params, caps).await?;
        let mut columns = Vec::with_capacity(statement.columns().len());
        let mut kinds = Vec::with_capacity(statement.columns().len());
        for column in statement.columns() {
            let kind = ColumnKind::of(column.type_info()).ok_or_else(|| {
                HostError::invalid(format!(
                    "column `{name}` is of type {ty}, which no sql value carries; cast it in \
                     the statement (e.g. `{name}::text`)",
                    name = column.name(),
                    ty = column.type_info().name(),
                ))
            })?;
            columns.push(column.name().to_owned());
            kinds.push(kind);
        }
        let mut budget = ResultBudget::new(caps.max_result_bytes);
        budget.take(columns.iter().map(String::len).sum(), what)?;
        let mut rows = Vec::new();
        let conn = lease.start()?;
        // Rows are read one at a time and counted before they are decoded: a result over
        // the cap stops here, with the rest unread. The lease is then left unsettled, so
        // its connection is closed rather than pooled with a result half read.
        let mut stream = sqlx::query_with(&sql, args).fetch(&mut *conn);
        loop {
            let row = match stream.try_next().await {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(e) => {
                    drop(stream);
                    // A database error ends the exchange; anything else leaves it unknown.
                    lease.settled = matches!(e, sqlx::Error::Database(_));
                    return Err(self.error(e));
                }
            };
            let mut raw_len = 0;
            for i in 0..kinds.len() {
                let raw = row.try_get_raw(i).map_err(|e| self.error(e))?;
                raw_len += 16 + raw.as_bytes().map_or(0, <[u8]>::len);
            }
            budget.take(raw_len, what)?;
            let mut values = Vec::with_capacity(kinds.len());
            for (i, kind) in kinds.iter().enumerate() {
                let raw = row.try_get_raw(i).map_err(|e| self.error(e))?;
                values
                    .push(value::decode(*kind, raw).map_err(|e| {
                        HostError::invalid(format!("column `{}`: {e}", columns[i]))
                    })?);
            }
            rows.push(values);
        }
        drop(stream);
        lease.settled = true;
        Ok(Rows { columns, rows })
    }

    /// Runs `sql` on `lease` and returns the number of rows it affected.
    async fn execute_on(
        &self,
        lease: &mut Lease,
        sql: &str,
        params: Vec<Value>,
        caps: Caps,
    ) -> Result<u64, HostError> {
        let (sql, args, _) = self.prepare(lease, sql, params, caps).await?;
        let conn = lease.start()?;
        let result = sqlx::query_with(&sql, args).execute(&mut *conn).await;
        lease.finish(&result);
        Ok(result.map_err(|e| self.error(e))?.rows_affected())
    }

    /// Checks the parameters, prepares the statement (or finds it in the connection's
    /// cache) and checks that it takes as many parameters as it was given.
    ///
    /// sqlx caches prepared statements by their text alone, and binds later values in the
    /// binary format of whatever types the cached statement was prepared with. The same
    /// text with other parameter types (an `int64` where an `int32` was first, a value
    /// where a `null` let PostgreSQL pick a type) would then be read as the wrong type,
    /// silently. So the text prepared is prefixed with a comment naming the parameter
    /// types, which makes each combination a cache entry of its own. The comment is
    /// closed before the plugin's text begins, so no text can reopen it.
    async fn prepare(
        &self,
        lease: &mut Lease,
        sql: &str,
        params: Vec<Value>,
        caps: Caps,
    ) -> Result<(String, PgArguments, sqlx::postgres::PgStatement<'static>), HostError> {
        let given = params.len();
        for (i, param) in params.iter().enumerate() {
            budget::check_value(
                value::size(param),
                caps.max_value_bytes,
                &format!("parameter ${}", i + 1),
            )?;
        }
        let params = params
            .into_iter()
            .enumerate()
            .map(|(i, v)| Param::from_value(v, i + 1))
            .collect::<Result<Vec<_>, _>>()?;
        let keyed = keyed_sql(sql, &params);
        let types: Vec<_> = params.iter().map(Param::type_info).collect();
        let conn = lease.start()?;
        let prepared = (&mut *conn).prepare_with(&keyed, &types).await;
        lease.finish(&prepared);
        let statement = prepared.map_err(|e| self.error(e))?;
        let statement = sqlx::Statement::to_owned(&statement);
        let wanted = match statement.parameters() {
            Some(sqlx::Either::Left(types)) => types.len(),
            Some(sqlx::Either::Right(n)) => n,
            None => given,
        };
        if wanted != given {
            return Err(HostError::invalid(format!(
                "the statement takes {wanted} parameter(s), but {given} were given"
            )));
        }
        let mut args = PgArguments::default();
        for param in params {
            args.add(param)
                .map_err(|e| HostError::invalid(format!("encoding a parameter: {e}")))?;
        }
        Ok((keyed, args, statement))
    }

    fn error(&self, e: sqlx::Error) -> HostError {
        map_error(&self.role, e)
    }
}

/// The caps of one host call, from the plugin's `[plugin.limits]`.
#[derive(Debug, Clone, Copy)]
struct Caps {
    max_result_bytes: usize,
    max_value_bytes: usize,
}

/// Checks the text of a statement before anything of it reaches the server: its size
/// (`limits.max_value_bytes`, like any value the plugin sends) and the allowlist.
fn admit(sql: &str, scope: Scope, caps: Caps) -> Result<allow::Checked, HostError> {
    budget::check_value(sql.len(), caps.max_value_bytes, "the statement's text")?;
    VERDICTS.check(sql, scope)
}

/// The allowlist's verdicts on texts it has seen. A plugin sends the same few statement
/// texts again and again (values travel as parameters), and parsing one costs far more
/// than looking it up; the verdict depends on the text and the scope alone.
static VERDICTS: Verdicts = Verdicts::new();

/// Texts longer than this are parsed every time rather than kept.
const VERDICT_TEXT_MAX: usize = 4 << 10;
/// The most verdicts kept; the cache starts over when full, so a plugin sending ever new
/// texts costs a parse per call, never unbounded memory.
const VERDICTS_MAX: usize = 1024;

struct Verdicts(Mutex<Option<HashMap<(String, Scope), Verdict>>>);

/// The allowlist's verdict on one text in one scope.
type Verdict = Result<allow::Checked, VerdictError>;

/// A refusal, kept as its kind and message.
#[derive(Clone)]
struct VerdictError {
    denied: bool,
    message: String,
}

impl Verdicts {
    const fn new() -> Self {
        Verdicts(Mutex::new(None))
    }

    fn check(&self, sql: &str, scope: Scope) -> Result<allow::Checked, HostError> {
        let key = (sql.to_owned(), scope);
        if sql.len() <= VERDICT_TEXT_MAX {
            let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(verdict) = cache.as_ref().and_then(|c| c.get(&key)) {
                return verdict.clone().map_err(VerdictError::into_host);
            }
        }
        let verdict = allow::check(sql, scope);
        if sql.len() <= VERDICT_TEXT_MAX {
            let kept = match &verdict {
                Ok(c) => Ok(c.clone()),
                Err(HostError {
                    kind: Kind::Denied,
                    message: m,
                    ..
                }) => Err(VerdictError {
                    denied: true,
                    message: m.clone(),
                }),
                Err(HostError {
                    kind: Kind::Invalid,
                    message: m,
                    ..
                }) => Err(VerdictError {
                    denied: false,
                    message: m.clone(),
                }),
                Err(_) => return verdict,
            };
            let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let map = cache.get_or_insert_with(HashMap::new);
            if map.len() >= VERDICTS_MAX {
                map.clear();
            }
            map.insert(key, kept);
        }
        verdict
    }
}

impl VerdictError {
    fn into_host(self) -> HostError {
        if self.denied {
            HostError::denied(self.message)
        } else {
            HostError::invalid(self.message)
        }
    }
}

/// A pooled connection lent to one host call, or held by one transaction resource.
///
/// It goes back to the pool only in a known, idle state: a lease dropped while a
/// statement was in flight (the call timed out, a result was cut off at the cap, the
/// connection failed) or inside a transaction the host opened (a transaction dropped by
/// a trap) closes its connection instead, which makes the server stop the statement and
/// roll the transaction back. The pool's `after_release` check ([`IDLE_CHECK`]) verifies
/// the rest independently.
#[derive(Debug)]
struct Lease {
    conn: Option<PoolConnection<Postgres>>,
    /// No statement is in flight and no result is half read.
    settled: bool,
    /// Inside `BEGIN` sent by the host.
    in_transaction: bool,
}

impl Lease {
    /// The connection, marked busy until [`Lease::finish`]; fails when it was closed.
    fn start(&mut self) -> Result<&mut PgConnection, HostError> {
        if !self.settled {
            self.close();
        }
        let conn = self.conn.as_mut().ok_or_else(|| {
            HostError::unavailable(
                "the connection was closed after an earlier failure (a timeout, a result \
                 over the cap); this transaction is over",
            )
        })?;
        self.settled = false;
        Ok(conn)
    }

    /// Marks the exchange done when the server answered it (a result or a database
    /// error), so the connection is known to wait for the next statement.
    fn finish<T>(&mut self, result: &Result<T, sqlx::Error>) {
        if matches!(result, Ok(_) | Err(sqlx::Error::Database(_))) {
            self.settled = true;
        }
    }

    /// Closes the connection now: dropped without a goodbye, its socket closes at once.
    fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.settled || self.in_transaction {
            self.close();
        }
    }
}

/// The text actually prepared: `sql` behind a comment naming its parameter types (see
/// [`Client::prepare`]).
fn keyed_sql(sql: &str, params: &[Param]) -> String {
    if params.is_empty() {
        return sql.to_owned();
    }
    let types: Vec<String> = params.iter().map(|p| p.oid().to_string()).collect();
    format!("/*polyhost:{}*/ {sql}", types.join(","))
}

/// The password the grant's role logs in with: `None` keeps the one of `DATABASE_URL`.
fn password_for(
    grant: &Grant,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    match &grant.password_env {
        None => Ok(None),
        Some(var) => env(var).map(Some).ok_or_else(|| {
            format!(
                "grants.sql.password_env names `{var}`, which is not set in the host's environment"
            )
        }),
    }
}

/// `polyhost migrate`: applies the sqlx migrations of `source` to `DATABASE_URL` (as its
/// user, the database owner), then, for every plugin whose `grants.sql` names no
/// `password_env`, lets its role log in with `DATABASE_URL`'s password — the password the
/// host will use for it. A role must exist (a migration creates it, with its GRANTs).
/// Returns how many migrations the folder holds.
pub async fn migrate(
    settings: &Settings,
    source: &std::path::Path,
    manifest: &crate::manifest::Manifest,
) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    use sqlx::Connection as _;
    let options = settings.postgres.connect_options()?;
    let mut conn = PgConnection::connect_with(&options)
        .await
        .context("cannot connect to DATABASE_URL")?;
    let migrator = sqlx::migrate::Migrator::new(source)
        .await
        .with_context(|| format!("cannot read the migrations in {}", source.display()))?;
    migrator
        .run(&mut conn)
        .await
        .context("applying the migrations")?;
    let password = settings.postgres.login_password();
    for spec in &manifest.plugins {
        let Some(grant) = &spec.grants.sql else {
            continue;
        };
        if grant.password_env.is_some() {
            continue;
        }
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
                .bind(&grant.role)
                .fetch_one(&mut conn)
                .await?;
        anyhow::ensure!(
            exists,
            "plugin `{}`: grants.sql.role `{}` does not exist; a migration must create it",
            spec.name,
            grant.role
        );
        let statement: String = match &password {
            Some(p) => {
                sqlx::query_scalar("SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', $1, $2)")
                    .bind(&grant.role)
                    .bind(p)
                    .fetch_one(&mut conn)
                    .await?
            }
            None => {
                sqlx::query_scalar("SELECT format('ALTER ROLE %I LOGIN', $1)")
                    .bind(&grant.role)
                    .fetch_one(&mut conn)
                    .await?
            }
        };
        conn.execute(statement.as_str()).await?;
        tracing::info!(plugin = %spec.name, role = %grant.role, "role may log in");
    }
    conn.close().await?;
    Ok(migrator.iter().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_comes_from_the_named_variable_or_the_url() {
        let grant = |password_env: Option<&str>| Grant {
            role: "user_handler".into(),
            password_env: password_env.map(str::to_owned),
        };
        let env = |var: &str| (var == "USER_HANDLER_PW").then(|| "s3cret".to_owned());
        assert_eq!(password_for(&grant(None), env), Ok(None));
        assert_eq!(
            password_for(&grant(Some("USER_HANDLER_PW")), env),
            Ok(Some("s3cret".into()))
        );
        let missing = password_for(&grant(Some("NOPE")), env).unwrap_err();
        assert!(missing.contains("NOPE"), "{missing}");
    }

    #[test]
    fn grants_parse_strictly() {
        let g: Grant = toml::from_str(r#"role = "user_handler""#).unwrap();
        assert_eq!(g.password_env, None);
        let g: Grant =
            toml::from_str("role = \"user_handler\"\npassword_env = \"USER_HANDLER_PW\"").unwrap();
        assert_eq!(g.password_env.as_deref(), Some("USER_HANDLER_PW"));
        assert!(toml::from_str::<Grant>("role = \"r\"\ntables = [\"users\"]").is_err());
        assert!(toml::from_str::<Grant>("").is_err());
    }

    #[test]
    fn parameter_types_key_the_statement_cache() {
        let text = keyed_sql("SELECT $1", &[Param::Int32(1)]);
        let null = keyed_sql("SELECT $1", &[Param::Null]);
        let bigint = keyed_sql("SELECT $1", &[Param::Int64(1)]);
        assert_ne!(text, null);
        assert_ne!(text, bigint);
        assert_eq!(text, "/*polyhost:23*/ SELECT $1");
        assert_eq!(keyed_sql("SELECT 1", &[]), "SELECT 1");
    }

    async fn pid(conn: &mut PgConnection) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    /// The backend pids of the sessions named `polyhost:<plugin>`, with their states.
    async fn sessions(shared: &Shared, plugin: &str) -> Vec<(i32, String)> {
        use sqlx::Connection as _;
        let mut conn = PgConnection::connect_with(&shared.options).await.unwrap();
        sqlx::query_as(
            "SELECT pid, coalesce(state, '') FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(format!("polyhost:{plugin}"))
        .fetch_all(&mut conn)
        .await
        .unwrap()
    }

    /// Needs PostgreSQL (`cargo xtask services up`): the pool's `after_release` check
    /// closes a connection that comes back inside a transaction, however it got there,
    /// and keeps an idle one. Runs as the user of `DATABASE_URL`, with the host's own
    /// (unchecked) statements, since the allowlist keeps a plugin from opening one.
    #[tokio::test]
    async fn a_connection_back_inside_a_transaction_is_closed_not_pooled() {
        let shared = Shared::connect(&Settings::from_env().expect("connection settings"))
            .await
            .unwrap();
        let plugin = format!("idle-check-{}", uuid::Uuid::new_v4().simple());
        let grant = Grant {
            role: shared.options.get_username().to_owned(),
            password_env: None,
        };
        let client = Client::new(
            &shared,
            &plugin,
            &grant,
            &crate::manifest::Limits::default(),
        )
        .unwrap();
        let settle = || tokio::time::sleep(Duration::from_millis(300));

        let mut idle = client.pool.acquire().await.unwrap();
        let idle_pid = pid(&mut idle).await;
        drop(idle);
        settle().await;
        let live = sessions(&shared, &plugin).await;
        assert_eq!(
            live,
            [(idle_pid, "idle".to_string())],
            "an idle connection stays pooled"
        );

        let mut open = client.pool.acquire().await.unwrap();
        let open_pid = pid(&mut open).await;
        assert_eq!(open_pid, idle_pid, "the pooled connection is reused");
        open.execute("BEGIN").await.unwrap();
        open.execute("SELECT 1").await.unwrap();
        drop(open);
        settle().await;
        let live = sessions(&shared, &plugin).await;
        assert!(
            live.is_empty(),
            "a connection inside a transaction was pooled: {live:?}"
        );

        // A lease dropped inside the host's own transaction closes its connection itself.
        let mut lease = client.lease().await.unwrap();
        client.control(&mut lease, "BEGIN").await.unwrap();
        lease.in_transaction = true;
        drop(lease);
        settle().await;
        let live = sessions(&shared, &plugin).await;
        assert!(
            live.is_empty(),
            "a lease inside a transaction was pooled: {live:?}"
        );
        client.pool.close().await;
    }

    #[test]
    fn verdicts_are_kept_per_text_and_scope() {
        let caps = Caps {
            max_result_bytes: 1 << 20,
            max_value_bytes: 1 << 10,
        };
        for _ in 0..2 {
            assert!(admit("SELECT 1", Scope::Call, caps).is_ok());
            assert!(matches!(
                admit("SAVEPOINT verdict_a", Scope::Call, caps),
                Err(HostError {
                    kind: Kind::Denied,
                    ..
                })
            ));
            assert_eq!(
                admit("SAVEPOINT verdict_a", Scope::Transaction, caps).unwrap(),
                allow::Checked::Savepoint("verdict_a".into())
            );
            assert!(matches!(
                admit("SELEC 1", Scope::Call, caps),
                Err(HostError {
                    kind: Kind::Invalid,
                    ..
                })
            ));
        }
        let long = format!("SELECT '{}'", "x".repeat(2 << 10));
        assert!(
            matches!(admit(&long, Scope::Call, caps), Err(HostError { kind: Kind::Invalid, message: m, .. }) if m.contains("limits.max_value_bytes"))
        );
    }

    #[tokio::test]
    async fn each_plugin_logs_in_as_its_role_and_reloads_share_its_pool() {
        let mut settings = Settings::from_env().expect("connection settings");
        settings.postgres.url = "postgres://postgres:pw@127.0.0.1:5432/polyhost".into();
        let shared = Shared::connect(&settings).await.unwrap();
        let limits = crate::manifest::Limits::default();
        let grant = Grant {
            role: "user_handler".into(),
            password_env: None,
        };
        let a = Client::new(&shared, "user-handler", &grant, &limits).unwrap();
        let b = Client::new(&shared, "user-handler", &grant, &limits).unwrap();
        let c = Client::new(&shared, "other", &grant, &limits).unwrap();
        assert_eq!(shared.pools.lock().unwrap().len(), 2);
        assert_eq!(a.pool.connect_options().get_username(), "user_handler");
        assert_eq!(
            a.pool.connect_options().get_application_name(),
            Some("polyhost:user-handler")
        );
        assert_eq!(a.pool.options().get_max_connections(), POOL_SIZE);
        drop((a, b, c));
        let empty = Grant {
            role: String::new(),
            password_env: None,
        };
        assert!(Client::new(&shared, "x", &empty, &limits).is_err());
    }
}
