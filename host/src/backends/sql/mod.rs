//! PostgreSQL (`polyhost:platform/sql`), each plugin under its own database role.
//!
//! A plugin's statements run on a pool that logs in *as* its role (`grants.sql.role`), so
//! PostgreSQL's own GRANTs decide what it may touch. Logging in as the role, rather than
//! `SET ROLE` on a shared login, matters: a plugin could `RESET ROLE` out of the latter.
//!
//! Every statement goes through the extended protocol with its values as bind parameters,
//! never spliced into the text; PostgreSQL refuses to prepare a string of several
//! statements. Values travel in the binary format, converted in [`value`].

mod value;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Arguments as _, Column as _, Executor as _, Row as _, Statement as _, TypeInfo as _};
use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::component::Resource;

use super::Settings;
use crate::bindings::polyhost::platform::sql::{Host, HostTransaction, Rows, Statement, Value};
use crate::error::{HostError, with_timeout};
use crate::state::HostState;
use value::{ColumnKind, Param};

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
        let options = PgConnectOptions::from_str(&settings.database_url)
            .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a PostgreSQL URL: {e}"))?;
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

impl Client {
    /// The pool of `plugin`, logging in as the grant's role. Fails when the grant names a
    /// password variable that is not set.
    pub fn new(shared: &Shared, plugin: &str, grant: &Grant) -> anyhow::Result<Client> {
        if grant.role.is_empty() {
            anyhow::bail!("plugin `{plugin}`: grants.sql.role is empty");
        }
        let password = password_for(grant, |var| std::env::var(var).ok())
            .map_err(|e| anyhow::anyhow!("plugin `{plugin}`: {e}"))?;
        let key = PoolKey {
            plugin: plugin.to_owned(),
            role: grant.role.clone(),
            password_env: grant.password_env.clone(),
        };
        let mut pools = shared.pools.lock().unwrap_or_else(|e| e.into_inner());
        let pool = pools
            .entry(key)
            .or_insert_with(|| {
                let mut options = shared
                    .options
                    .clone()
                    .username(&grant.role)
                    .application_name(&format!("polyhost:{plugin}"));
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
            .map_err(|_| HostError::Unavailable("the sql client is shut down".into()))
    }

    /// Runs `sql` on `conn` and returns its rows.
    async fn query_on(
        &self,
        conn: &mut PgConnection,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Rows, HostError> {
        let (sql, args, statement) = self.prepare(conn, sql, params).await?;
        let mut columns = Vec::with_capacity(statement.columns().len());
        let mut kinds = Vec::with_capacity(statement.columns().len());
        for column in statement.columns() {
            let kind = ColumnKind::of(column.type_info()).ok_or_else(|| {
                HostError::Invalid(format!(
                    "column `{name}` is of type {ty}, which no sql value carries; cast it in \
                     the statement (e.g. `{name}::text`)",
                    name = column.name(),
                    ty = column.type_info().name(),
                ))
            })?;
            columns.push(column.name().to_owned());
            kinds.push(kind);
        }
        let fetched = sqlx::query_with(&sql, args)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.error(e))?;
        let mut rows = Vec::with_capacity(fetched.len());
        for row in &fetched {
            let mut values = Vec::with_capacity(kinds.len());
            for (i, kind) in kinds.iter().enumerate() {
                let raw = row.try_get_raw(i).map_err(|e| self.error(e))?;
                values
                    .push(value::decode(*kind, raw).map_err(|e| {
                        HostError::Invalid(format!("column `{}`: {e}", columns[i]))
                    })?);
            }
            rows.push(values);
        }
        Ok(Rows { columns, rows })
    }

    /// Runs `sql` on `conn` and returns the number of rows it affected.
    async fn execute_on(
        &self,
        conn: &mut PgConnection,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<u64, HostError> {
        let (sql, args, _) = self.prepare(conn, sql, params).await?;
        let done = sqlx::query_with(&sql, args)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(done.rows_affected())
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
        conn: &mut PgConnection,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<(String, PgArguments, sqlx::postgres::PgStatement<'static>), HostError> {
        let given = params.len();
        let params = params
            .into_iter()
            .enumerate()
            .map(|(i, v)| Param::from_value(v, i + 1))
            .collect::<Result<Vec<_>, _>>()?;
        let keyed = keyed_sql(sql, &params);
        let types: Vec<_> = params.iter().map(Param::type_info).collect();
        let statement = (&mut *conn)
            .prepare_with(&keyed, &types)
            .await
            .map_err(|e| self.error(e))?;
        let statement = sqlx::Statement::to_owned(&statement);
        let wanted = match statement.parameters() {
            Some(sqlx::Either::Left(types)) => types.len(),
            Some(sqlx::Either::Right(n)) => n,
            None => given,
        };
        if wanted != given {
            return Err(HostError::Invalid(format!(
                "the statement takes {wanted} parameter(s), but {given} were given"
            )));
        }
        let mut args = PgArguments::default();
        for param in params {
            args.add(param)
                .map_err(|e| HostError::Invalid(format!("encoding a parameter: {e}")))?;
        }
        Ok((keyed, args, statement))
    }

    fn error(&self, e: sqlx::Error) -> HostError {
        map_error(&self.role, e)
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

/// What kind of failure a sqlx error is: the one place PostgreSQL's errors become
/// [`HostError`]s.
fn map_error(role: &str, e: sqlx::Error) -> HostError {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = format!(
                "PostgreSQL (role `{role}`): {} [SQLSTATE {code}]",
                db.message()
            );
            kind_for_sqlstate(&code)(message)
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => {
            HostError::Unavailable(format!("PostgreSQL (role `{role}`): {e}"))
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_) => HostError::Invalid(format!("PostgreSQL: {e}")),
        other => HostError::Other(format!("PostgreSQL (role `{role}`): {other}")),
    }
}

/// The [`HostError`] kind for a SQLSTATE (PostgreSQL's appendix A).
fn kind_for_sqlstate(code: &str) -> fn(String) -> HostError {
    match code {
        // insufficient_privilege: the role's GRANTs do not cover it.
        "42501" => HostError::Denied,
        // query_canceled: statement_timeout or a cancel.
        "57014" => HostError::Timeout,
        // protocol_violation, e.g. parameters that do not fit the prepared statement:
        // class 08, but sending the same again cannot succeed.
        "08P01" => HostError::Invalid,
        // cannot_connect_now, admin/crash shutdown, lock_not_available, and serialization
        // failures and deadlocks, which succeed when the transaction is tried again.
        "57P01" | "57P02" | "57P03" | "55P03" => HostError::Unavailable,
        _ => match code.get(..2).unwrap_or("") {
            // integrity constraint violations: unique, foreign key, check, not null.
            "23" => HostError::Conflict,
            // syntax errors and undefined names (42), bad data (22), a statement a
            // transaction in its state cannot run (25), unsupported features (0A).
            "42" | "22" | "25" | "0A" | "2B" | "26" | "34" => HostError::Invalid,
            // connection exceptions, bad login or database (the server refused the
            // connection), insufficient resources (too many connections, disk full),
            // transaction rollbacks (serialization failure, deadlock).
            "08" | "28" | "3D" | "53" | "40" => HostError::Unavailable,
            _ => HostError::Other,
        },
    }
}

/// The same error kind with `prefix` before its message (a trap is left as it is).
fn prefixed(prefix: &str, e: HostError) -> HostError {
    match e {
        HostError::Denied(m) => HostError::Denied(format!("{prefix}: {m}")),
        HostError::Invalid(m) => HostError::Invalid(format!("{prefix}: {m}")),
        HostError::NotFound(m) => HostError::NotFound(format!("{prefix}: {m}")),
        HostError::Conflict(m) => HostError::Conflict(format!("{prefix}: {m}")),
        HostError::Unavailable(m) => HostError::Unavailable(format!("{prefix}: {m}")),
        HostError::Timeout(m) => HostError::Timeout(format!("{prefix}: {m}")),
        HostError::Other(m) => HostError::Other(format!("{prefix}: {m}")),
        HostError::Trap(t) => HostError::Trap(t),
    }
}

/// The constructor of `e`'s kind, to report a later error of the same kind.
fn kind_of(e: &HostError) -> fn(String) -> HostError {
    match e {
        HostError::Denied(_) => HostError::Denied,
        HostError::Invalid(_) => HostError::Invalid,
        HostError::NotFound(_) => HostError::NotFound,
        HostError::Conflict(_) => HostError::Conflict,
        HostError::Unavailable(_) => HostError::Unavailable,
        HostError::Timeout(_) => HostError::Timeout,
        HostError::Other(_) | HostError::Trap(_) => HostError::Other,
    }
}

/// An open transaction (`polyhost:platform/sql.transaction`): a pooled connection inside
/// `BEGIN`. Dropped without commit, sqlx rolls it back before the connection is reused.
#[derive(Debug)]
pub struct Transaction {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    /// The first failed statement's error kind and message. PostgreSQL answers `COMMIT` in
    /// a failed transaction with a silent rollback, so commit checks this instead, and a
    /// plugin that ignored an error learns that nothing was committed.
    failed: Option<Failure>,
}

/// A failure's kind (its [`HostError`] constructor) and message.
type Failure = (fn(String) -> HostError, String);

impl HostState {
    fn sql_client(&self) -> Result<(Client, Duration), HostError> {
        let client = self
            .env
            .backends
            .sql
            .clone()
            .ok_or_else(|| super::not_granted("sql"))?;
        Ok((client, self.env.host_call_timeout))
    }

    fn sql_transaction(
        &mut self,
        t: &Resource<Transaction>,
    ) -> Result<&mut Transaction, HostError> {
        self.table.get_mut(t).map_err(|e| HostError::Trap(e.into()))
    }
}

impl Host for HostState {
    async fn query(&mut self, sql: String, params: Vec<Value>) -> Result<Rows, HostError> {
        let (client, timeout) = self.sql_client()?;
        with_timeout(timeout, "sql.query", async {
            let _permit = client.permit().await?;
            let mut conn = client.pool.acquire().await.map_err(|e| client.error(e))?;
            client.query_on(&mut conn, &sql, params).await
        })
        .await
    }

    async fn execute(&mut self, sql: String, params: Vec<Value>) -> Result<u64, HostError> {
        let (client, timeout) = self.sql_client()?;
        with_timeout(timeout, "sql.execute", async {
            let _permit = client.permit().await?;
            let mut conn = client.pool.acquire().await.map_err(|e| client.error(e))?;
            client.execute_on(&mut conn, &sql, params).await
        })
        .await
    }

    async fn execute_batch(&mut self, statements: Vec<Statement>) -> Result<Vec<u64>, HostError> {
        let (client, timeout) = self.sql_client()?;
        if statements.is_empty() {
            return Ok(Vec::new());
        }
        with_timeout(timeout, "sql.execute-batch", async {
            let _permit = client.permit().await?;
            let mut tx = client.pool.begin().await.map_err(|e| client.error(e))?;
            let total = statements.len();
            let mut affected = Vec::with_capacity(total);
            for (i, statement) in statements.into_iter().enumerate() {
                let n = client
                    .execute_on(&mut tx, &statement.sql, statement.params)
                    .await
                    // `tx` is dropped on the way out, which rolls the batch back.
                    .map_err(|e| prefixed(&format!("statement {} of {total}", i + 1), e))?;
                affected.push(n);
            }
            tx.commit().await.map_err(|e| client.error(e))?;
            Ok(affected)
        })
        .await
    }

    async fn begin(&mut self) -> Result<Resource<Transaction>, HostError> {
        let (client, timeout) = self.sql_client()?;
        let tx = with_timeout(timeout, "sql.begin", async {
            let _permit = client.permit().await?;
            client.pool.begin().await.map_err(|e| client.error(e))
        })
        .await?;
        self.table
            .push(Transaction { tx, failed: None })
            .map_err(|e| HostError::Trap(e.into()))
    }
}

impl HostTransaction for HostState {
    async fn query(
        &mut self,
        t: Resource<Transaction>,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Rows, HostError> {
        let (client, timeout) = self.sql_client()?;
        let t = self.sql_transaction(&t)?;
        let result = with_timeout(timeout, "sql.transaction.query", async {
            let _permit = client.permit().await?;
            client.query_on(&mut t.tx, &sql, params).await
        })
        .await;
        record_failure(t, &result);
        result
    }

    async fn execute(
        &mut self,
        t: Resource<Transaction>,
        sql: String,
        params: Vec<Value>,
    ) -> Result<u64, HostError> {
        let (client, timeout) = self.sql_client()?;
        let t = self.sql_transaction(&t)?;
        let result = with_timeout(timeout, "sql.transaction.execute", async {
            let _permit = client.permit().await?;
            client.execute_on(&mut t.tx, &sql, params).await
        })
        .await;
        record_failure(t, &result);
        result
    }

    async fn commit(&mut self, t: Resource<Transaction>) -> Result<(), HostError> {
        let (client, timeout) = self.sql_client()?;
        let t = self
            .table
            .delete(t)
            .map_err(|e| HostError::Trap(e.into()))?;
        if let Some((kind, message)) = t.failed {
            // Dropping `t` rolls it back.
            return Err(kind(format!(
                "not committed: an earlier statement of this transaction failed, so it was \
                 rolled back ({message})"
            )));
        }
        with_timeout(timeout, "sql.transaction.commit", async {
            let _permit = client.permit().await?;
            t.tx.commit().await.map_err(|e| client.error(e))
        })
        .await
    }

    async fn rollback(&mut self, t: Resource<Transaction>) -> Result<(), HostError> {
        let (client, timeout) = self.sql_client()?;
        let t = self
            .table
            .delete(t)
            .map_err(|e| HostError::Trap(e.into()))?;
        with_timeout(timeout, "sql.transaction.rollback", async {
            let _permit = client.permit().await?;
            t.tx.rollback().await.map_err(|e| client.error(e))
        })
        .await
    }

    async fn drop(&mut self, t: Resource<Transaction>) -> wasmtime::Result<()> {
        // Without commit: sqlx queues a ROLLBACK that runs before the connection's next use.
        self.table.delete(t)?;
        Ok(())
    }
}

/// Remembers the first failure of a statement in `t` (see [`Transaction::failed`]).
fn record_failure<T>(t: &mut Transaction, result: &Result<T, HostError>) {
    if let (None, Err(e)) = (&t.failed, result) {
        t.failed = Some((kind_of(e), e.to_string()));
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
    let options = PgConnectOptions::from_str(&settings.database_url)
        .context("DATABASE_URL is not a PostgreSQL URL")?;
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
    let password = url::Url::parse(&settings.database_url)
        .ok()
        .and_then(|u| u.password().map(|p| p.to_string()));
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

    fn kind(code: &str) -> String {
        let e = kind_for_sqlstate(code)(String::new());
        format!("{e:?}")
            .split('(')
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn sqlstates_map_to_kinds() {
        assert_eq!(kind("42501"), "Denied");
        assert_eq!(kind("23505"), "Conflict"); // unique_violation
        assert_eq!(kind("23503"), "Conflict"); // foreign_key_violation
        assert_eq!(kind("42601"), "Invalid"); // syntax_error, several statements
        assert_eq!(kind("42P01"), "Invalid"); // undefined_table
        assert_eq!(kind("42804"), "Invalid"); // datatype_mismatch
        assert_eq!(kind("22P02"), "Invalid"); // invalid_text_representation
        assert_eq!(kind("25P02"), "Invalid"); // in_failed_sql_transaction
        assert_eq!(kind("08006"), "Unavailable"); // connection_failure
        assert_eq!(kind("08P01"), "Invalid"); // protocol_violation
        assert_eq!(kind("28P01"), "Unavailable"); // invalid_password
        assert_eq!(kind("53300"), "Unavailable"); // too_many_connections
        assert_eq!(kind("40001"), "Unavailable"); // serialization_failure
        assert_eq!(kind("40P01"), "Unavailable"); // deadlock_detected
        assert_eq!(kind("57P01"), "Unavailable"); // admin_shutdown
        assert_eq!(kind("57014"), "Timeout"); // query_canceled
        assert_eq!(kind("P0001"), "Other"); // raise_exception
        assert_eq!(kind(""), "Other");
    }

    #[test]
    fn transient_errors_are_transient() {
        assert!(map_error("r", sqlx::Error::PoolTimedOut).is_transient());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(map_error("r", sqlx::Error::Io(io)).is_transient());
        assert!(!map_error("r", sqlx::Error::RowNotFound).is_transient());
    }

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

    #[tokio::test]
    async fn each_plugin_logs_in_as_its_role_and_reloads_share_its_pool() {
        let settings = Settings {
            database_url: "postgres://postgres:pw@127.0.0.1:5432/polyhost".into(),
            ..Settings::default()
        };
        let shared = Shared::connect(&settings).await.unwrap();
        let grant = Grant {
            role: "user_handler".into(),
            password_env: None,
        };
        let a = Client::new(&shared, "user-handler", &grant).unwrap();
        let b = Client::new(&shared, "user-handler", &grant).unwrap();
        let c = Client::new(&shared, "other", &grant).unwrap();
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
        assert!(Client::new(&shared, "x", &empty).is_err());
    }
}
