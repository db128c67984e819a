//! The sql backend (`polyhost:platform/sql`) against the real server: the `sql-probe` plugin
//! runs scripts of calls with their expected results, and each test then reads back, as the
//! superuser of `DATABASE_URL` (or of the connections file's `[postgres]`), what PostgreSQL
//! really holds.
//!
//! Each test makes a schema and a LOGIN role of its own (with the superuser's password, and
//! GRANTs on some of the schema's tables only), grants the probe that
//! role, and drops both afterwards. Needs PostgreSQL (`cargo xtask services up`) and the test
//! plugins (`cargo xtask plugins`); fails, rather than skips, without them.

mod common;
mod harness;

use std::sync::Arc;

use anyhow::{Context as _, Result, ensure};
use common::{Service, unique_name, with_cleanup, within};
use harness::{runtime, test_plugin};
use polyhost::backends::sql;
use polyhost::manifest::PluginSpec;
use polyhost::runtime::{LoadedPlugin, Runtime};
use serde_json::{Value, json};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};

const UUID_A: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";
const UUID_B: &str = "00000000-0000-0000-0000-000000000001";
/// A text that would end the statement and drop a table, were it ever spliced into SQL.
const INJECTION: &str = "'; DROP TABLE users; --";

/// A test's schema and role, a superuser connection to check them, and the probe granted
/// the role.
struct Fixture {
    postgres: Service,
    admin: PgConnection,
    schema: String,
    role: String,
    plugin: Option<Arc<LoadedPlugin>>,
    // Keeps the engine and connections alive as long as the plugin.
    runtime: Option<Runtime>,
}

impl Fixture {
    /// Runs `script`'s steps in the plugin and fails with its list of mismatches.
    async fn run(&self, script: Value) -> Result<()> {
        let plugin = self.plugin.as_ref().expect("the fixture holds the probe");
        harness::run_script(plugin, &script).await
    }

    /// Rows of `sql` run by the superuser, with the test's schema first on the search path.
    async fn rows(&mut self, sql: &str) -> Result<Vec<PgRow>> {
        let set_path = format!("SET search_path = {}", self.schema);
        within(
            &self.postgres,
            "setting the search path",
            sqlx::raw_sql(&set_path).execute(&mut self.admin),
        )
        .await?;
        within(
            &self.postgres,
            format!("reading `{sql}`"),
            sqlx::query(sql).fetch_all(&mut self.admin),
        )
        .await
    }

    /// The one `bigint` that `sql` returns, read by the superuser.
    async fn count(&mut self, sql: &str) -> Result<i64> {
        let rows = self.rows(sql).await?;
        Ok(rows.first().context("no row")?.try_get(0)?)
    }

    /// Loads the test plugin `name` granted the fixture's role, its spec adjusted by `tune`.
    async fn load(
        &self,
        name: &str,
        tune: impl FnOnce(&mut PluginSpec),
    ) -> Result<Arc<LoadedPlugin>> {
        let rt = self.runtime.as_ref().expect("the fixture holds a runtime");
        let mut spec = PluginSpec::new(name, test_plugin(name));
        spec.subscribe = vec!["t".into()];
        spec.grants.sql = Some(sql::Grant {
            role: self.role.clone(),
            password_env: None,
        });
        spec.limits.host_call_timeout_ms = 10_000;
        spec.limits.call_timeout_ms = 60_000;
        tune(&mut spec);
        rt.load(&spec)
            .await
            .map_err(|e| anyhow::anyhow!("{}: loading {name}: {e}", self.postgres))
    }

    /// Whether the table `name` exists in the test's schema.
    async fn table_exists(&mut self, name: &str) -> Result<bool> {
        let sql = format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = '{}' AND tablename = '{name}'",
            self.schema
        );
        Ok(self.count(&sql).await? == 1)
    }
}

/// Connects as the superuser, makes a schema with its tables and a role allowed onto some
/// of them, loads the probe granted that role, runs `body`, and drops everything.
async fn with_fixture(body: impl AsyncFnOnce(&mut Fixture) -> Result<()>) -> Result<()> {
    let postgres = Service::postgres();
    let mut admin = common::postgres().await?;
    let password = common::settings()
        .postgres
        .login_password()
        .unwrap_or_default();
    let schema = unique_name("sql");
    let role = unique_name("sqlrole");

    let setup = format!(
        "CREATE SCHEMA {schema};
         CREATE TYPE {schema}.mood AS ENUM ('happy', 'sad');
         CREATE TABLE {schema}.items (
             id int4 PRIMARY KEY, flag bool, small int2, big int8, real4 float4, double8 float8,
             price numeric(12, 2), huge numeric, name text, label varchar(40), blob bytea,
             doc jsonb, doc_json json, ref uuid, at timestamptz, day date, flags bool[],
             ints int4[], bigs int8[], floats float8[], tags text[], refs uuid[]);
         CREATE TABLE {schema}.users (id int8 PRIMARY KEY, name text NOT NULL UNIQUE);
         CREATE TABLE {schema}.secrets (id int4 PRIMARY KEY, secret text NOT NULL);
         INSERT INTO {schema}.secrets VALUES (1, 'the launch codes');"
    );
    within(
        &postgres,
        "creating the test schema",
        sqlx::raw_sql(&setup).execute(&mut admin),
    )
    .await?;

    let mut fixture = Fixture {
        postgres: postgres.clone(),
        admin,
        schema: schema.clone(),
        role: role.clone(),
        plugin: None,
        runtime: None,
    };
    with_cleanup(
        &mut fixture,
        async |f| {
            // The role's statement is built by PostgreSQL's format(), which quotes the
            // password as a literal whatever it holds.
            let (create_role,): (String,) = within(
                &f.postgres,
                "quoting the role's password",
                sqlx::query_as("SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', $1, $2)")
                    .bind(&f.role)
                    .bind(&password)
                    .fetch_one(&mut f.admin),
            )
            .await?;
            let grants = format!(
                "{create_role};
                 ALTER ROLE {role} SET search_path = {schema};
                 GRANT USAGE ON SCHEMA {schema} TO {role};
                 GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.items, {schema}.users TO {role};"
            );
            within(
                &f.postgres,
                "creating the role",
                sqlx::raw_sql(&grants).execute(&mut f.admin),
            )
            .await?;

            let rt = runtime();
            let mut spec = PluginSpec::new("sql-probe", test_plugin("sql-probe"));
            spec.subscribe = vec!["t".into()];
            spec.grants.sql = Some(sql::Grant {
                role: f.role.clone(),
                password_env: None,
            });
            spec.limits.host_call_timeout_ms = 10_000;
            spec.limits.call_timeout_ms = 60_000;
            f.plugin = Some(
                rt.load(&spec)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: loading the probe: {e}", f.postgres))?,
            );
            f.runtime = Some(rt);
            body(f).await
        },
        async |f| {
            // The plugin's pool goes with the runtime, closing its sessions of the role.
            f.plugin = None;
            f.runtime = None;
            let drop = format!(
                "DROP SCHEMA IF EXISTS {} CASCADE; DROP ROLE IF EXISTS {};",
                f.schema, f.role
            );
            within(
                &f.postgres,
                "dropping the schema and role",
                sqlx::raw_sql(&drop).execute(&mut f.admin),
            )
            .await?;
            Ok(())
        },
    )
    .await
}

/// Every column of `items`, in table order.
const ITEM_COLUMNS: [&str; 22] = [
    "id", "flag", "small", "big", "real4", "double8", "price", "huge", "name", "label", "blob",
    "doc", "doc_json", "ref", "at", "day", "flags", "ints", "bigs", "floats", "tags", "refs",
];

/// One value of every variant, for `items`' columns in order.
fn full_item() -> Value {
    json!([
        {"int32": 1},
        {"boolean": true},
        {"int16": i16::MIN},
        // 2^53 + 1: lost if it ever went through a double.
        {"int64": 9_007_199_254_740_993_i64},
        {"float32": 1.5},
        {"float64": -0.1},
        {"numeric": "19.90"},
        {"numeric": "12345678901234567890123456789012345678.000000000000000000001"},
        {"text": "Big Buck Bunny ✓ ünïcode"},
        {"text": "a varchar"},
        {"bytes": [0, 255, 137, 80, 78, 71]},
        {"json": {"tags": ["a", "b"], "n": 1}},
        {"json": {"z": 1, "a": [true, null]}},
        {"uuid": UUID_A},
        {"timestamptz": 1_700_000_000_123_456_i64},
        {"date": 19_723},
        {"boolean-array": [true, false]},
        {"int32-array": [1, -2, i32::MAX]},
        {"int64-array": [i64::MIN, 0]},
        {"float64-array": [0.5, -1e300]},
        {"text-array": ["a", "", "ünï"]},
        {"uuid-array": [UUID_A, UUID_B]},
    ])
}

fn insert_item_sql() -> String {
    let placeholders: Vec<String> = (1..=ITEM_COLUMNS.len()).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO items ({}) VALUES ({})",
        ITEM_COLUMNS.join(", "),
        placeholders.join(", ")
    )
}

#[tokio::test]
async fn every_value_type_round_trips() -> Result<()> {
    with_fixture(async |f| {
        let item = full_item();
        let mut nulls = vec![json!({"int32": 2})];
        nulls.extend(std::iter::repeat_n(Value::Null, ITEM_COLUMNS.len() - 1));
        f.run(json!({"steps": [
            {"call": "execute", "sql": insert_item_sql(), "params": item, "expect": {"ok": 1}},
            {"call": "execute", "sql": insert_item_sql(), "params": nulls, "expect": {"ok": 1}},
            {"call": "query", "sql": "SELECT * FROM items WHERE id = $1", "params": [{"int32": 1}],
             "expect": {"ok": {"columns": ITEM_COLUMNS, "rows": [item]}}},
            {"call": "query", "sql": "SELECT * FROM items WHERE id = $1", "params": [{"int64": 2}],
             "expect": {"ok": {"columns": ITEM_COLUMNS, "rows": [nulls]}}},
            {"call": "query", "sql": "SELECT id FROM items WHERE id > $1 ORDER BY id",
             "params": [{"int32": 100}], "expect": {"ok": {"columns": ["id"], "rows": []}}},
        ]}))
        .await?;

        // What PostgreSQL holds, read natively.
        let rows = f
            .rows(
                "SELECT flag, small, big, real4, double8, price::text, huge::text, name, label, \
                 blob, doc, doc_json::text, ref, at, day, flags, ints, bigs, floats, tags, refs \
                 FROM items WHERE id = 1",
            )
            .await?;
        let row = rows.first().context("row 1 was not stored")?;
        assert!(row.try_get::<bool, _>("flag")?);
        assert_eq!(row.try_get::<i16, _>("small")?, i16::MIN);
        assert_eq!(row.try_get::<i64, _>("big")?, 9_007_199_254_740_993);
        assert_eq!(row.try_get::<f32, _>("real4")?, 1.5);
        assert_eq!(row.try_get::<f64, _>("double8")?, -0.1);
        assert_eq!(row.try_get::<String, _>("price")?, "19.90");
        assert_eq!(
            row.try_get::<String, _>("huge")?,
            "12345678901234567890123456789012345678.000000000000000000001"
        );
        assert_eq!(
            row.try_get::<String, _>("name")?,
            "Big Buck Bunny ✓ ünïcode"
        );
        assert_eq!(row.try_get::<String, _>("label")?, "a varchar");
        assert_eq!(
            row.try_get::<Vec<u8>, _>("blob")?,
            [0, 255, 137, 80, 78, 71]
        );
        assert_eq!(
            row.try_get::<Value, _>("doc")?,
            json!({"tags": ["a", "b"], "n": 1})
        );
        let doc_json: Value = serde_json::from_str(&row.try_get::<String, _>("doc_json")?)?;
        assert_eq!(doc_json, json!({"z": 1, "a": [true, null]}));
        assert_eq!(
            row.try_get::<sqlx::types::Uuid, _>("ref")?.to_string(),
            UUID_A
        );
        let at: sqlx::types::chrono::DateTime<sqlx::types::chrono::Utc> = row.try_get("at")?;
        assert_eq!(at.to_rfc3339(), "2023-11-14T22:13:20.123456+00:00");
        let day: sqlx::types::chrono::NaiveDate = row.try_get("day")?;
        assert_eq!(day.to_string(), "2024-01-01");
        assert_eq!(row.try_get::<Vec<bool>, _>("flags")?, [true, false]);
        assert_eq!(row.try_get::<Vec<i32>, _>("ints")?, [1, -2, i32::MAX]);
        assert_eq!(row.try_get::<Vec<i64>, _>("bigs")?, [i64::MIN, 0]);
        assert_eq!(row.try_get::<Vec<f64>, _>("floats")?, [0.5, -1e300]);
        assert_eq!(row.try_get::<Vec<String>, _>("tags")?, ["a", "", "ünï"]);
        let refs: Vec<sqlx::types::Uuid> = row.try_get("refs")?;
        assert_eq!(
            refs.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
            [UUID_A, UUID_B]
        );

        // A row constructor IS NULL when every field is.
        let all_null = format!(
            "SELECT count(*) FROM items WHERE id = 2 AND ({}) IS NULL",
            ITEM_COLUMNS[1..].join(", ")
        );
        let nulls = f.count(&all_null).await?;
        assert_eq!(
            nulls, 1,
            "row 2 should hold NULL in every column but its id"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn columns_of_related_types_and_special_values_come_back() -> Result<()> {
    with_fixture(async |f| {
        f.run(json!({"steps": [
            {"call": "query",
             "sql": "SELECT 'ab'::varchar(5) AS v, 'ab'::char(3) AS c, 'x'::\"char\" AS ch, \
                     'happy'::mood AS m, ARRAY[1, -2]::int2[] AS s, ARRAY[1.5]::float4[] AS f, \
                     ARRAY['a', 'b']::varchar[] AS vs, \
                     '2024-01-01 00:00:00'::timestamp AS ts, pg_sleep(0) AS nothing",
             "params": [],
             "expect": {"ok": {"columns": ["v", "c", "ch", "m", "s", "f", "vs", "ts", "nothing"],
                               "rows": [[{"text": "ab"}, {"text": "ab "}, {"text": "x"},
                                         {"text": "happy"}, {"int32-array": [1, -2]},
                                         {"float64-array": [1.5]}, {"text-array": ["a", "b"]},
                                         {"timestamptz": 1_704_067_200_000_000_i64}, null]]}}},
            {"call": "query",
             "sql": "SELECT 'NaN'::numeric AS a, 'Infinity'::numeric AS b, '-Infinity'::numeric AS c, \
                     0.000100::numeric AS d, 1e30::numeric AS e, 'infinity'::timestamptz AS f, \
                     '-infinity'::date AS g, '1969-12-31'::date AS h",
             "params": [],
             "expect": {"ok": {"columns": ["a", "b", "c", "d", "e", "f", "g", "h"],
                               "rows": [[{"numeric": "NaN"}, {"numeric": "Infinity"},
                                         {"numeric": "-Infinity"}, {"numeric": "0.000100"},
                                         {"numeric": "1000000000000000000000000000000"},
                                         {"timestamptz": i64::MAX}, {"date": i32::MIN},
                                         {"date": -1}]]}}},
            // Parameters come back as what they were, special values included.
            {"call": "query",
             "sql": "SELECT $1::numeric AS a, $2::numeric AS b, $3::timestamptz AS c, $4::date AS d, \
                     $5::text AS e",
             "params": [{"numeric": "NaN"}, {"numeric": "-0.50"}, {"timestamptz": i64::MIN},
                        {"date": i32::MAX}, {"text": "ünï"}],
             "expect": {"ok": {"columns": ["a", "b", "c", "d", "e"],
                               "rows": [[{"numeric": "NaN"}, {"numeric": "-0.50"},
                                         {"timestamptz": i64::MIN}, {"date": i32::MAX},
                                         {"text": "ünï"}]]}}},
        ]}))
        .await
    })
    .await
}

#[tokio::test]
async fn the_plugin_runs_as_its_own_role_and_only_its_grants_apply() -> Result<()> {
    with_fixture(async |f| {
        let role = f.role.clone();
        f.run(json!({"steps": [
            {"call": "query", "sql": "SELECT current_user::text AS u, session_user::text AS s",
             "params": [],
             "expect": {"ok": {"columns": ["u", "s"], "rows": [[{"text": role}, {"text": role}]]}}},
            // Session statements are refused by the allowlist before reaching the server.
            {"call": "execute", "sql": "RESET ROLE", "params": [],
             "expect": {"err": "denied", "transient": false}},
            {"call": "query", "sql": "SELECT current_user::text AS u", "params": [],
             "expect": {"ok": {"columns": ["u"], "rows": [[{"text": role}]]}}},
            {"call": "execute", "sql": "SET ROLE postgres", "params": [],
             "expect": {"err": "denied", "transient": false}},
            {"call": "query", "sql": "SELECT secret FROM secrets", "params": [],
             "expect": {"err": "denied", "transient": false}},
            {"call": "execute", "sql": "DELETE FROM secrets WHERE id = $1", "params": [{"int32": 1}],
             "expect": {"err": "denied", "transient": false}},
            {"call": "execute", "sql": "INSERT INTO secrets VALUES ($1, $2)",
             "params": [{"int32": 2}, {"text": "mine now"}],
             "expect": {"err": "denied", "transient": false}},
            {"call": "execute", "sql": "DROP TABLE users", "params": [],
             "expect": {"err": "denied", "transient": false}},
            {"call": "execute-batch", "statements": [
                {"sql": "INSERT INTO users VALUES ($1, $2)", "params": [{"int64": 1}, {"text": "a"}]},
                {"sql": "UPDATE secrets SET secret = $1", "params": [{"text": "x"}]},
             ], "expect": {"err": "denied", "transient": false}},
        ]}))
        .await?;

        let secrets = f.rows("SELECT id, secret FROM secrets").await?;
        let secrets: Vec<(i32, String)> = secrets
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_>>()?;
        assert_eq!(secrets, [(1, "the launch codes".to_string())]);
        assert!(f.table_exists("users").await?);
        assert_eq!(f.count("SELECT count(*) FROM users").await?, 0, "the denied batch left a row");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn values_are_data_never_sql() -> Result<()> {
    with_fixture(async |f| {
        f.run(json!({"steps": [
            {"call": "execute", "sql": "INSERT INTO users (id, name) VALUES ($1, $2)",
             "params": [{"int64": 1}, {"text": INJECTION}], "expect": {"ok": 1}},
            {"call": "query", "sql": "SELECT name FROM users WHERE name = $1",
             "params": [{"text": INJECTION}],
             "expect": {"ok": {"columns": ["name"], "rows": [[{"text": INJECTION}]]}}},
            // Several statements in one string are refused whole: nothing of it runs.
            {"call": "execute", "sql": "SELECT 1; DROP TABLE users", "params": [],
             "expect": {"err": "invalid", "transient": false}},
            {"call": "query", "sql": "SELECT $1::text AS a; DELETE FROM users",
             "params": [{"text": "x"}], "expect": {"err": "invalid"}},
        ]}))
        .await?;

        assert!(
            f.table_exists("users").await?,
            "the users table was dropped"
        );
        let names = f.rows("SELECT name FROM users").await?;
        let names: Vec<String> = names
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        assert_eq!(names, [INJECTION]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn transactions_commit_roll_back_and_roll_back_when_dropped() -> Result<()> {
    with_fixture(async |f| {
        let insert = "INSERT INTO users (id, name) VALUES ($1, $2)";
        let user = |id: i64, name: &str| json!([{"int64": id}, {"text": name}]);
        let count = |n: i64| json!({"ok": {"columns": ["n"], "rows": [[{"int64": n}]]}});
        f.run(json!({"steps": [
            {"call": "begin", "tx": "a"},
            {"call": "tx-execute", "tx": "a", "sql": insert, "params": user(1, "committed"),
             "expect": {"ok": 1}},
            {"call": "tx-query", "tx": "a", "sql": "SELECT count(*) AS n FROM users", "params": [],
             "expect": count(1)},
            // Outside the transaction, its row is not there yet.
            {"call": "query", "sql": "SELECT count(*) AS n FROM users", "params": [],
             "expect": count(0)},
            {"call": "commit", "tx": "a"},
            {"call": "query", "sql": "SELECT count(*) AS n FROM users", "params": [],
             "expect": count(1)},

            {"call": "begin", "tx": "b"},
            {"call": "tx-execute", "tx": "b", "sql": insert, "params": user(2, "rolled back"),
             "expect": {"ok": 1}},
            {"call": "tx-execute", "tx": "b", "sql": "DELETE FROM users WHERE id = $1",
             "params": [{"int64": 1}], "expect": {"ok": 1}},
            {"call": "rollback", "tx": "b"},

            {"call": "begin", "tx": "c"},
            {"call": "tx-execute", "tx": "c", "sql": insert, "params": user(3, "dropped"),
             "expect": {"ok": 1}},
            {"call": "drop", "tx": "c"},

            // A failed statement dooms its transaction: commit says so, and nothing of it
            // is kept, even the statement before it that succeeded.
            {"call": "begin", "tx": "d"},
            {"call": "tx-execute", "tx": "d", "sql": insert, "params": user(4, "doomed"),
             "expect": {"ok": 1}},
            {"call": "tx-execute", "tx": "d", "sql": insert, "params": user(1, "duplicate"),
             "expect": {"err": "conflict", "transient": false}},
            {"call": "tx-execute", "tx": "d", "sql": insert, "params": user(5, "after"),
             "expect": {"err": "invalid"}},
            {"call": "commit", "tx": "d", "expect": {"err": "conflict", "transient": false}},

            // The pool's connections went back clean: a new transaction works.
            {"call": "begin", "tx": "e"},
            {"call": "tx-query", "tx": "e", "sql": "SELECT count(*) AS n FROM users", "params": [],
             "expect": count(1)},
            {"call": "commit", "tx": "e"},
        ]}))
        .await?;

        let rows = f.rows("SELECT id, name FROM users ORDER BY id").await?;
        let users: Vec<(i64, String)> = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_>>()?;
        assert_eq!(users, [(1, "committed".to_string())]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_batch_is_atomic() -> Result<()> {
    with_fixture(async |f| {
        let insert = "INSERT INTO users (id, name) VALUES ($1, $2)";
        f.run(json!({"steps": [
            {"call": "execute-batch", "statements": [
                {"sql": insert, "params": [{"int64": 1}, {"text": "a"}]},
                {"sql": insert, "params": [{"int64": 2}, {"text": "b"}]},
                {"sql": "UPDATE users SET name = name || $1", "params": [{"text": "!"}]},
             ], "expect": {"ok": [1, 1, 2]}},
            {"call": "execute-batch", "statements": [
                {"sql": insert, "params": [{"int64": 3}, {"text": "c"}]},
                {"sql": "DELETE FROM users WHERE id = $1", "params": [{"int64": 1}]},
                {"sql": insert, "params": [{"int64": 2}, {"text": "b again"}]},
             ], "expect": {"err": "conflict", "transient": false}},
            {"call": "execute-batch", "statements": [
                {"sql": insert, "params": [{"int64": 4}, {"text": "d"}]},
                {"sql": "INSERT INTO nowhere VALUES ($1)", "params": [{"int64": 4}]},
             ], "expect": {"err": "invalid", "transient": false}},
            {"call": "execute-batch", "statements": [], "expect": {"ok": []}},
        ]}))
        .await?;

        let rows = f.rows("SELECT id, name FROM users ORDER BY id").await?;
        let users: Vec<(i64, String)> = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_>>()?;
        assert_eq!(users, [(1, "a!".to_string()), (2, "b!".to_string())]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn errors_have_the_right_kind() -> Result<()> {
    with_fixture(async |f| {
        let invalid = json!({"err": "invalid", "transient": false});
        f.run(json!({"steps": [
            {"call": "execute", "sql": "INSERT INTO users (id, name) VALUES ($1, $2)",
             "params": [{"int64": 1}, {"text": "a"}], "expect": {"ok": 1}},
            {"call": "execute", "sql": "INSERT INTO users (id, name) VALUES ($1, $2)",
             "params": [{"int64": 1}, {"text": "b"}], "expect": {"err": "conflict", "transient": false}},
            {"call": "execute", "sql": "INSERT INTO users (id, name) VALUES ($1, $2)",
             "params": [{"int64": 2}, {"text": "a"}], "expect": {"err": "conflict"}},
            {"call": "execute", "sql": "INSERT INTO users (id, name) VALUES ($1, $2)",
             "params": [{"int64": 3}, null], "expect": {"err": "conflict"}},
            {"call": "query", "sql": "SELEC 1", "params": [], "expect": invalid},
            {"call": "query", "sql": "SELECT * FROM nowhere", "params": [], "expect": invalid},
            {"call": "query", "sql": "SELECT nothing FROM users", "params": [], "expect": invalid},
            {"call": "query", "sql": "SELECT 1 / $1 AS x", "params": [{"int32": 0}], "expect": invalid},
            // A parameter of the wrong type for its column.
            {"call": "execute", "sql": "INSERT INTO users (id, name) VALUES ($1, $2)",
             "params": [{"text": "four"}, {"text": "d"}], "expect": invalid},
            // Too few and too many parameters.
            {"call": "execute", "sql": "INSERT INTO users (id, name) VALUES ($1, $2)",
             "params": [{"int64": 5}], "expect": invalid},
            {"call": "query", "sql": "SELECT $1::int8 AS a",
             "params": [{"int64": 5}, null], "expect": invalid},
            {"call": "query", "sql": "SELECT $1::int8 AS a", "params": [{"uuid": "nope"}],
             "expect": invalid},
            {"call": "query", "sql": "SELECT $1::numeric AS a", "params": [{"numeric": "1,5"}],
             "expect": invalid},
            {"call": "query", "sql": "SELECT $1::jsonb AS a", "params": [{"json": "{not json"}],
             "expect": invalid},
            // A column no value variant carries, then the same cast to text.
            {"call": "query", "sql": "SELECT interval '1 day' AS i", "params": [], "expect": invalid},
            {"call": "query", "sql": "SELECT (interval '1 day')::text AS i", "params": [],
             "expect": {"ok": {"columns": ["i"], "rows": [[{"text": "1 day"}]]}}},
            {"call": "query", "sql": "SELECT ARRAY[1, NULL]::int4[] AS a", "params": [],
             "expect": invalid},
            // A null whose type nothing decides is text, as a literal NULL would be.
            {"call": "query", "sql": "SELECT $1 AS a", "params": [null],
             "expect": {"ok": {"columns": ["a"], "rows": [[null]]}}},
            {"call": "query", "sql": "SELECT (SELECT 1 UNION SELECT 2) AS a", "params": [],
             "expect": {"err": "other"}},
        ]}))
        .await
    })
    .await
}

#[tokio::test]
async fn one_statement_with_other_parameter_types_reads_them_right() -> Result<()> {
    // sqlx caches prepared statements by their text; the same text with other parameter
    // types must not be bound to the types it was first prepared with.
    with_fixture(async |f| {
        let select = "SELECT id, name FROM users WHERE id = $1 OR name = $2 ORDER BY id";
        let row = |id: i64, name: &str| json!([{"int64": id}, {"text": name}]);
        f.run(json!({"steps": [
            {"call": "execute-batch", "statements": [
                {"sql": "INSERT INTO users VALUES ($1, $2)", "params": [{"int64": 1}, {"text": "a"}]},
                {"sql": "INSERT INTO users VALUES ($1, $2)", "params": [{"int32": 2}, {"text": "b"}]},
                {"sql": "INSERT INTO users VALUES ($1, $2)", "params": [{"int16": 3}, {"text": "c"}]},
             ], "expect": {"ok": [1, 1, 1]}},
            {"call": "query", "sql": select, "params": [null, {"text": "b"}],
             "expect": {"ok": {"columns": ["id", "name"], "rows": [row(2, "b")]}}},
            {"call": "query", "sql": select, "params": [{"int32": 1}, null],
             "expect": {"ok": {"columns": ["id", "name"], "rows": [row(1, "a")]}}},
            {"call": "query", "sql": select, "params": [{"int64": 3}, {"text": "a"}],
             "expect": {"ok": {"columns": ["id", "name"], "rows": [row(1, "a"), row(3, "c")]}}},
            {"call": "query", "sql": select, "params": [{"int16": 2}, null],
             "expect": {"ok": {"columns": ["id", "name"], "rows": [row(2, "b")]}}},
        ]}))
        .await?;
        ensure!(f.count("SELECT count(*) FROM users").await? == 3);
        Ok(())
    })
    .await
}

/// One step of a `hostile-sql` attack, as the plugin reported it.
#[derive(Debug)]
struct Step {
    step: String,
    result: String,
    message: String,
    value: Value,
}

/// Runs the attack `name` of the `hostile-sql` plugin (with `extra` merged into its
/// request) and returns what each of its steps got.
async fn attack(plugin: &LoadedPlugin, name: &str, extra: Value) -> Result<Vec<Step>> {
    use polyhost::bindings::polyhost::platform::types::Outcome;
    let mut request = json!({"attack": name});
    if let (Some(r), Value::Object(extra)) = (request.as_object_mut(), extra) {
        r.extend(extra);
    }
    let events = [harness::event("e1", "attack", &request)];
    let outcomes = plugin
        .handle(&harness::batch("t"), &events, Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("attack `{name}`: the plugin failed: {e}"))?;
    let [Outcome::Reject(report)] = &outcomes[..] else {
        anyhow::bail!("attack `{name}`: unexpected outcomes {outcomes:?}");
    };
    let report: Value = serde_json::from_str(report)
        .with_context(|| format!("attack `{name}`: the report is not JSON: {report}"))?;
    let steps = report["steps"]
        .as_array()
        .context("the report has no steps")?
        .iter()
        .map(|s| Step {
            step: s["step"].as_str().unwrap_or_default().to_owned(),
            result: s["result"].as_str().unwrap_or_default().to_owned(),
            message: s["message"].as_str().unwrap_or_default().to_owned(),
            value: s["value"].clone(),
        })
        .collect();
    Ok(steps)
}

/// Fails unless every step of `steps` was refused (`denied` or `invalid`), listing the
/// ones that were not; `except` names steps checked separately.
fn all_refused(attack: &str, steps: &[Step], except: &[&str]) -> Result<()> {
    let through: Vec<String> = steps
        .iter()
        .filter(|s| !except.contains(&s.step.as_str()))
        .filter(|s| s.result != "denied" && s.result != "invalid")
        .map(|s| format!("`{}` → {} {}", s.step, s.result, s.message))
        .collect();
    ensure!(
        through.is_empty(),
        "attack `{attack}`: not refused: {through:#?}"
    );
    Ok(())
}

/// The step of `steps` named `name`.
fn step<'a>(steps: &'a [Step], name: &str) -> Result<&'a Step> {
    steps
        .iter()
        .find(|s| s.step == name)
        .with_context(|| format!("no step `{name}` in {steps:#?}"))
}

/// The states of the plugin's sessions (`application_name` `polyhost:hostile-sql`, the
/// fixture's role), as the superuser sees them.
async fn session_states(f: &mut Fixture) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT coalesce(state, '') FROM pg_stat_activity \
         WHERE usename = '{}' AND application_name = 'polyhost:hostile-sql'",
        f.role
    );
    let rows = f.rows(&sql).await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<String, _>(0)?))
        .collect()
}

/// Fails when one of the plugin's sessions sits inside a transaction.
async fn no_session_in_a_transaction(f: &mut Fixture, after: &str) -> Result<()> {
    let states = session_states(f).await?;
    ensure!(
        states.iter().all(|s| !s.starts_with("idle in transaction")),
        "after `{after}`, a pooled session sits in a transaction: {states:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_hostile_plugin_is_refused_and_nothing_outside_its_grant_changes() -> Result<()> {
    with_fixture(async |f| {
        let role = f.role.clone();
        let before_password = f
            .rows(&format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"))
            .await?
            .first()
            .context("the role is gone")?
            .try_get::<Option<String>, _>(0)?;
        let role_settings = format!(
            "SELECT coalesce(string_agg(array_to_string(setconfig, ','), ';'), '') \
             FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole \
             WHERE r.rolname = '{role}'"
        );
        let before_settings: String = f.rows(&role_settings).await?[0].try_get(0)?;
        let hostile = f.load("hostile-sql", |_| {}).await?;

        // Transaction control, a lock outliving the call.
        let steps = attack(&hostile, "begin-lock", json!({})).await?;
        all_refused("begin-lock", &steps, &["SELECT 1 FROM users FOR UPDATE", "SELECT 1"])?;
        for s in &steps[..4] {
            ensure!(s.result == "denied", "`{}` should be denied: {s:?}", s.step);
        }
        ensure!(step(&steps, "BEGIN")?.message.contains("BEGIN"), "{steps:#?}");
        ensure!(step(&steps, "SELECT 1")?.result == "ok", "{steps:#?}");
        no_session_in_a_transaction(f, "begin-lock").await?;
        // A write of the superuser goes through at once: no lock was left behind.
        within(
            &f.postgres,
            "locking users as the superuser",
            sqlx::raw_sql(&format!(
                "SET lock_timeout = '2s'; LOCK TABLE {}.users IN ACCESS EXCLUSIVE MODE; \
                 RESET lock_timeout",
                f.schema
            ))
            .execute(&mut f.admin),
        )
        .await?;

        // COMMIT and friends inside the host's transaction.
        let steps = attack(&hostile, "commit-inside-transaction", json!({})).await?;
        let insert = "tx: INSERT INTO users (id, name) VALUES ($1, $2)";
        all_refused(
            "commit-inside-transaction",
            &steps,
            &[insert, "tx: SAVEPOINT s", "tx: RELEASE SAVEPOINT s", "tx: SELECT count(*)::text FROM users"],
        )?;
        ensure!(step(&steps, insert)?.result == "ok", "{steps:#?}");
        for name in ["tx: COMMIT", "tx: ROLLBACK", "tx: BEGIN", "tx: END", "tx: ABORT"] {
            let s = step(&steps, name)?;
            ensure!(s.result == "denied", "{s:?}");
        }
        no_session_in_a_transaction(f, "commit-inside-transaction").await?;

        // LISTEN/NOTIFY, and the next call still works.
        let steps = attack(&hostile, "listen-notify", json!({})).await?;
        all_refused("listen-notify", &steps, &["SELECT 'still fine'"])?;
        let fine = step(&steps, "SELECT 'still fine'")?;
        ensure!(fine.result == "ok" && fine.value == json!("still fine"), "{fine:?}");

        // Settings: the session keeps the host's limits.
        let steps = attack(&hostile, "settings", json!({})).await?;
        let timeout = "SELECT current_setting('statement_timeout')";
        let idle = "SELECT current_setting('idle_in_transaction_session_timeout')";
        all_refused(
            "settings",
            &steps,
            &[timeout, idle, "SELECT current_setting('standard_conforming_strings')"],
        )?;
        ensure!(step(&steps, timeout)?.value == json!("10s"), "{steps:#?}");
        ensure!(step(&steps, idle)?.value == json!("1min"), "{steps:#?}");
        let scs = "SELECT current_setting('standard_conforming_strings')";
        ensure!(step(&steps, scs)?.value == json!("on"), "{steps:#?}");

        // Temporary and other tables, SELECT INTO.
        let steps = attack(&hostile, "temp-table", json!({})).await?;
        all_refused("temp-table", &steps, &[])?;

        // The role: its password, its settings, its identity.
        let steps = attack(&hostile, "role", json!({})).await?;
        let who = "SELECT current_user::text";
        let read_only = "SELECT current_setting('default_transaction_read_only')";
        all_refused("role", &steps, &[who, read_only])?;
        for s in steps.iter().filter(|s| s.step.starts_with("ALTER ROLE")) {
            ensure!(s.result == "denied" && s.message.contains("ALTER ROLE"), "{s:?}");
        }
        ensure!(step(&steps, who)?.value == json!(role), "{steps:#?}");
        ensure!(step(&steps, read_only)?.value == json!("off"), "{steps:#?}");

        // Several statements in one text, comments.
        let steps = attack(&hostile, "multi-statement", json!({})).await?;
        let harmless = [
            "SELECT 'one'; -- ",
            "SELECT 'one' /* a /* nested */ comment */",
            "SELECT 'one' /* /* */ ; DELETE FROM users; */",
            "SELECT 'one' WHERE $$; DELETE FROM users; $$ <> ''",
        ];
        all_refused("multi-statement", &steps, &harmless)?;
        for name in harmless {
            let s = step(&steps, name)?;
            ensure!(s.result == "ok" && s.value == json!("one"), "{s:?}");
        }

        // COPY, DO, PREPARE, DISCARD and the other utility statements.
        let steps = attack(&hostile, "copy-do-prepare", json!({})).await?;
        all_refused("copy-do-prepare", &steps, &[])?;

        // Session-level advisory locks; the transaction-level one ends with its statement.
        let steps = attack(&hostile, "advisory-lock", json!({})).await?;
        let xact = "SELECT pg_advisory_xact_lock(4243)::text";
        all_refused("advisory-lock", &steps, &[xact])?;
        ensure!(step(&steps, xact)?.result == "ok", "{steps:#?}");

        // Functions acting on sessions, the server and its files.
        let steps = attack(&hostile, "server-functions", json!({})).await?;
        all_refused("server-functions", &steps, &[])?;

        // Savepoints: refused outside a transaction, working inside one.
        let steps = attack(&hostile, "savepoints", json!({})).await?;
        ensure!(step(&steps, "SAVEPOINT s")?.result == "denied", "{steps:#?}");
        ensure!(step(&steps, "ROLLBACK TO SAVEPOINT s")?.result == "denied", "{steps:#?}");
        let duplicate = "tx: INSERT INTO users (id, name) VALUES ($1, 'duplicate')";
        ensure!(step(&steps, duplicate)?.result == "conflict", "{steps:#?}");
        let inside: Vec<&Step> = steps
            .iter()
            .filter(|s| s.step.starts_with("tx: ") && s.step != duplicate)
            .collect();
        ensure!(inside.iter().all(|s| s.result == "ok"), "{inside:#?}");
        ensure!(step(&steps, "commit")?.result == "ok", "{steps:#?}");

        // Independently, as the superuser: nothing outside the grant changed.
        no_session_in_a_transaction(f, "all attacks").await?;
        let states = session_states(f).await?;
        ensure!(
            states.iter().any(|s| s == "idle"),
            "no idle connection was kept in the pool: {states:?}"
        );
        let after_password = f
            .rows(&format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"))
            .await?
            .first()
            .context("the role is gone")?
            .try_get::<Option<String>, _>(0)?;
        ensure!(after_password == before_password, "the role's password changed");
        let after_settings: String = f.rows(&role_settings).await?[0].try_get(0)?;
        ensure!(after_settings == before_settings, "role settings: {after_settings}");
        let login = f
            .count(&format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = '{role}' AND rolcanlogin \
                 AND NOT rolsuper"
            ))
            .await?;
        ensure!(login == 1, "the role was altered");
        ensure!(
            f.count("SELECT count(*) FROM pg_roles WHERE rolname = 'pwned'").await? == 0,
            "a role was created"
        );
        let advisory = f
            .count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid IN (4242, 4243)")
            .await?;
        ensure!(advisory == 0, "{advisory} advisory lock(s) held");
        let made = f
            .count("SELECT count(*) FROM pg_class WHERE relname LIKE 'polyhost_tmp%' OR relname = 'polyhost_p'")
            .await?;
        ensure!(made == 0, "a temporary table or other object was created");
        let tables = f
            .count(&format!(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = '{}' AND c.relkind = 'r'",
                f.schema
            ))
            .await?;
        ensure!(tables == 3, "the schema holds {tables} tables, not items, users and secrets");
        let columns = f
            .count(&format!(
                "SELECT count(*) FROM information_schema.columns \
                 WHERE table_schema = '{}' AND table_name = 'users'",
                f.schema
            ))
            .await?;
        ensure!(columns == 2, "users was altered");
        let rows = f.rows("SELECT id FROM users ORDER BY id").await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
        ensure!(ids == [10], "users holds {ids:?}: only the savepoint attack's kept row belongs");
        ensure!(
            f.count("SELECT count(*) FROM secrets").await? == 1,
            "secrets were touched"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_transaction_left_open_by_a_trap_is_rolled_back_and_never_pooled() -> Result<()> {
    with_fixture(async |f| {
        let hostile = f.load("hostile-sql", |_| {}).await?;
        let events = [harness::event(
            "e1",
            "attack",
            &json!({"attack": "trap-in-transaction"}),
        )];
        let trapped = hostile
            .handle(&harness::batch("t"), &events, Default::default())
            .await;
        ensure!(
            trapped.is_err(),
            "the plugin should have trapped: {trapped:?}"
        );
        // The transaction's row lock is gone: the superuser locks the row at once.
        within(
            &f.postgres,
            "locking the users rows as the superuser",
            sqlx::raw_sql(&format!(
                "SET lock_timeout = '3s'; SELECT * FROM {}.users FOR UPDATE; RESET lock_timeout",
                f.schema
            ))
            .execute(&mut f.admin),
        )
        .await?;
        ensure!(
            f.count("SELECT count(*) FROM users").await? == 0,
            "the trapped transaction's insert was kept"
        );
        no_session_in_a_transaction(f, "trap-in-transaction").await?;
        // The plugin goes on working on the same pool.
        let steps = attack(&hostile, "begin-lock", json!({})).await?;
        ensure!(step(&steps, "SELECT 1")?.result == "ok", "{steps:#?}");
        Ok(())
    })
    .await
}

/// The resident set of this process, from `/proc/self/status`, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// How far above its starting point the RSS of this process may go while a hostile query
/// asks for ~2 GB under the default 16 MiB `max_result_bytes`. Other tests of this binary
/// run in parallel in the same process, hence the slack.
const RSS_BOUND: u64 = 256 << 20;

#[tokio::test]
async fn a_huge_result_fails_at_the_cap_while_host_memory_stays_bounded() -> Result<()> {
    with_fixture(async |f| {
        let hostile = f.load("hostile-sql", |_| {}).await?;
        let before = rss_bytes();
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    peak.fetch_max(rss_bytes(), std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            })
        };
        let started = std::time::Instant::now();
        let steps = attack(&hostile, "huge-result", json!({})).await;
        let took = started.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sampler.join().ok();
        let steps = steps?;
        let grew = peak
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(before);
        eprintln!(
            "huge-result: RSS before {} MiB, peak +{} MiB, {took:?}",
            before >> 20,
            grew >> 20
        );
        let huge = "SELECT repeat('x', 1000000) FROM generate_series(1, 2000)";
        let s = step(&steps, huge)?;
        ensure!(
            s.result == "invalid" && s.message.contains("limits.max_result_bytes"),
            "{s:?}"
        );
        let s = step(&steps, &format!("tx: {huge}"))?;
        ensure!(
            s.result == "invalid" && s.message.contains("limits.max_result_bytes"),
            "{s:?}"
        );
        // The transaction lost its connection with the cut-off result: it is over.
        ensure!(
            step(&steps, "tx: SELECT 'after'")?.result != "ok",
            "{steps:#?}"
        );
        ensure!(step(&steps, "commit")?.result != "ok", "{steps:#?}");
        let fine = step(&steps, "SELECT 'still fine'")?;
        ensure!(fine.result == "ok", "{fine:?}");
        ensure!(
            grew < RSS_BOUND,
            "the host grew by {} MiB (bound {} MiB)",
            grew >> 20,
            RSS_BOUND >> 20
        );
        ensure!(took < std::time::Duration::from_secs(10), "took {took:?}");
        no_session_in_a_transaction(f, "huge-result").await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn values_and_statements_larger_than_the_cap_are_refused() -> Result<()> {
    with_fixture(async |f| {
        let hostile = f
            .load("hostile-sql", |spec| spec.limits.max_value_bytes = 64 << 10)
            .await?;
        let steps = attack(&hostile, "huge-parameter", json!({"bytes": 100_000})).await?;
        ensure!(steps.len() == 4, "{steps:#?}");
        for s in &steps {
            ensure!(
                s.result == "invalid" && s.message.contains("limits.max_value_bytes"),
                "{s:?}"
            );
        }
        let steps = attack(&hostile, "huge-parameter", json!({"bytes": 1_000})).await?;
        ensure!(steps.iter().all(|s| s.result == "ok"), "{steps:#?}");
        Ok(())
    })
    .await
}

/// How often the superuser looks for the statement after the timeout, and for how long.
const GONE_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Polls `pg_stat_activity` until no session of the fixture's role runs `pg_sleep(60)`;
/// returns how long that took after the call came back.
async fn sleep_gone(f: &mut Fixture) -> Result<std::time::Duration> {
    let started = std::time::Instant::now();
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}' AND state = 'active' \
         AND query LIKE '%pg_sleep(60)%'",
        f.role
    );
    loop {
        if f.count(&sql).await? == 0 {
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < GONE_WITHIN,
            "pg_sleep(60) still runs on the server {:?} after the call timed out",
            started.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_timed_out_statement_is_cancelled_on_the_server() -> Result<()> {
    with_fixture(async |f| {
        let hostile = f
            // Long enough for a fresh connection on a loaded machine (the timed-out one is
            // closed), far shorter than the statement.
            .load("hostile-sql", |spec| {
                spec.limits.host_call_timeout_ms = 3_000
            })
            .await?;
        let started = std::time::Instant::now();
        let steps = attack(&hostile, "sleep", json!({})).await?;
        let took = started.elapsed();
        let gone = sleep_gone(f).await?;
        eprintln!("sleep: the call took {took:?}; gone from pg_stat_activity {gone:?} later");
        let s = step(&steps, "SELECT pg_sleep(60)::text")?;
        ensure!(s.result == "timeout", "{s:?}");
        let after = step(&steps, "SELECT 'after'")?;
        ensure!(after.result == "ok", "{after:?}");
        ensure!(took < std::time::Duration::from_secs(10), "took {took:?}");

        let steps = attack(&hostile, "sleep-in-transaction", json!({})).await?;
        let gone = sleep_gone(f).await?;
        eprintln!("sleep in a transaction: gone {gone:?} after the call");
        ensure!(
            step(&steps, "tx: SELECT pg_sleep(60)::text")?.result == "timeout",
            "{steps:#?}"
        );
        ensure!(
            step(&steps, "tx: SELECT 'after'")?.result != "ok",
            "{steps:#?}"
        );
        ensure!(step(&steps, "commit")?.result != "ok", "{steps:#?}");
        no_session_in_a_transaction(f, "sleep-in-transaction").await?;
        Ok(())
    })
    .await
}
