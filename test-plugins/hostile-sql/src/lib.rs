//! Test plugin: an attacker holding a `grants.sql` role. Each event's `data` names one
//! attack, `{"attack": "<name>"}`; the plugin runs its steps and answers `reject` with a
//! JSON report of what each step got, which the test asserts on:
//!
//! ```json
//! {"attack": "begin-lock", "steps": [
//!   {"step": "BEGIN", "result": "denied", "message": "…"},
//!   {"step": "SELECT 1", "result": "ok", "value": "1"}
//! ]}
//! ```
//!
//! `result` is `ok` or the error kind; `value` is the first column of the first row of a
//! query that succeeded, as text. `trap-in-transaction` never answers: it opens a
//! transaction, writes and locks a row, and panics, so the host drops the store with
//! the transaction open. The tables are the test's: `users (id int8, name text)`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "polyhost:platform/platform-handler",
    generate_all,
});

use exports::polyhost::platform::handler::Guest;
use polyhost::platform::sql::{self, Transaction, Value};
use polyhost::platform::types::{BatchInfo, Error, ErrorKind, Event, Outcome};
use serde_json::{Value as Json, json};

struct Hostile;

impl Guest for Hostile {
    fn handle(_batch: BatchInfo, events: Vec<Event>) -> Vec<Outcome> {
        events
            .iter()
            .map(|event| {
                let request: Json = serde_json::from_slice(&event.data).unwrap_or(Json::Null);
                let attack = request["attack"].as_str().unwrap_or("?").to_string();
                let mut report = Report::default();
                run(&attack, &request, &mut report);
                Outcome::Reject(json!({"attack": attack, "steps": report.steps}).to_string())
            })
            .collect()
    }
}

export!(Hostile);

/// The steps of one attack and what each got.
#[derive(Default)]
struct Report {
    steps: Vec<Json>,
}

impl Report {
    fn record<T>(&mut self, step: &str, result: Result<T, Error>, value: impl FnOnce(T) -> Json) {
        let entry = match result {
            Ok(v) => json!({"step": step, "result": "ok", "value": value(v)}),
            Err(e) => {
                let mut message = e.message;
                if message.len() > 300 {
                    let mut end = 300;
                    while !message.is_char_boundary(end) {
                        end -= 1;
                    }
                    message.truncate(end);
                }
                json!({"step": step, "result": kind_name(e.kind), "message": message})
            }
        };
        self.steps.push(entry);
    }

    /// `sql.query`, reporting the first value of the first row.
    fn query(&mut self, sql: &str, params: &[Value]) {
        self.record(sql, sql::query(sql, params), first_value);
    }

    /// `sql.execute`, reporting the rows affected.
    fn execute(&mut self, sql: &str, params: &[Value]) {
        self.record(sql, sql::execute(sql, params), |n| json!(n));
    }

    fn tx_query(&mut self, tx: &Transaction, sql: &str) {
        self.record(&format!("tx: {sql}"), tx.query(sql, &[]), first_value);
    }

    fn tx_execute(&mut self, tx: &Transaction, sql: &str, params: &[Value]) {
        self.record(&format!("tx: {sql}"), tx.execute(sql, params), |n| json!(n));
    }
}

fn first_value(rows: sql::Rows) -> Json {
    match rows.rows.first().and_then(|r| r.first()) {
        None | Some(Value::Null) => Json::Null,
        Some(Value::Text(s)) => json!(s),
        Some(Value::Boolean(b)) => json!(b.to_string()),
        Some(Value::Int32(n)) => json!(n.to_string()),
        Some(Value::Int64(n)) => json!(n.to_string()),
        Some(other) => json!(format!("{other:?}")),
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// Runs the attack `name`.
fn run(name: &str, request: &Json, r: &mut Report) {
    match name {
        // Issue 12: `BEGIN` then `LOCK TABLE` left the pooled connection inside a
        // transaction holding the lock.
        "begin-lock" => {
            r.execute("BEGIN", &[]);
            r.execute("BEGIN ISOLATION LEVEL SERIALIZABLE", &[]);
            r.execute("START TRANSACTION", &[]);
            r.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE", &[]);
            r.execute("begin; lock table users", &[]);
            r.query("SELECT 1 FROM users FOR UPDATE", &[]);
            r.query("SELECT 1", &[]);
        }
        // Transaction control inside the host's transaction breaks its all-or-nothing.
        "commit-inside-transaction" => match sql::begin() {
            Ok(tx) => {
                r.tx_execute(
                    &tx,
                    "INSERT INTO users (id, name) VALUES ($1, $2)",
                    &[Value::Int64(1), text("half-committed")],
                );
                for sql in [
                    "COMMIT",
                    "COMMIT AND CHAIN",
                    "END",
                    "ROLLBACK",
                    "ABORT",
                    "BEGIN",
                    "START TRANSACTION",
                    "PREPARE TRANSACTION 'x'",
                    "COMMIT PREPARED 'x'",
                    "SAVEPOINT s",
                    "RELEASE SAVEPOINT s",
                ] {
                    r.tx_execute(&tx, sql, &[]);
                }
                r.tx_query(&tx, "SELECT count(*)::text FROM users");
                // Dropped: rolled back, so the insert must not be there.
                drop(tx);
            }
            Err(e) => r.record::<()>("begin", Err(e), |_| Json::Null),
        },
        "listen-notify" => {
            r.execute("LISTEN polyhost_attack", &[]);
            r.execute("NOTIFY polyhost_attack, 'hi'", &[]);
            r.execute("UNLISTEN *", &[]);
            r.query("SELECT pg_notify('polyhost_attack', 'hi')", &[]);
            r.query("SELECT pg_catalog.pg_notify('polyhost_attack', 'hi')", &[]);
            r.query(
                "WITH n AS (SELECT pg_notify('polyhost_attack', 'hi') AS x) SELECT x FROM n",
                &[],
            );
            r.execute(
                "INSERT INTO users (id, name) SELECT 7, 'n' WHERE pg_notify('polyhost_attack', 'x') IS NULL",
                &[],
            );
            // The next call works as ever: no protocol error left behind.
            r.query("SELECT 'still fine'", &[]);
        }
        "settings" => {
            for sql in [
                "SET statement_timeout = 0",
                "SET LOCAL statement_timeout = 0",
                "SET SESSION statement_timeout TO 0",
                "RESET statement_timeout",
                "RESET ALL",
                "UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout'",
                "SET idle_in_transaction_session_timeout = 0",
                "SET client_min_messages = debug5",
                "SET standard_conforming_strings = off",
            ] {
                r.execute(sql, &[]);
            }
            for sql in [
                "SELECT set_config('statement_timeout', '0', false)",
                "SELECT pg_catalog.set_config('statement_timeout', '0', false)",
                "SELECT \"set_config\"('statement_timeout', '0', false)",
                "SELECT * FROM set_config('statement_timeout', '0', false)",
                "SELECT 1 WHERE (SELECT set_config('statement_timeout', '0', false)) IS NOT NULL",
                "SELECT query_to_xml('SELECT set_config(''statement_timeout'', ''0'', false)', true, true, '')::text",
                "SHOW statement_timeout",
            ] {
                r.query(sql, &[]);
            }
            // What the session holds now.
            r.query("SELECT current_setting('statement_timeout')", &[]);
            r.query(
                "SELECT current_setting('idle_in_transaction_session_timeout')",
                &[],
            );
            r.query("SELECT current_setting('standard_conforming_strings')", &[]);
        }
        "temp-table" => {
            r.execute("CREATE TEMP TABLE polyhost_tmp (x int)", &[]);
            r.execute("CREATE TEMPORARY TABLE polyhost_tmp (x int)", &[]);
            r.execute("CREATE TABLE polyhost_tmp (x int)", &[]);
            r.execute("CREATE UNLOGGED TABLE polyhost_tmp (x int)", &[]);
            r.execute("SELECT 1 AS x INTO TEMP polyhost_tmp", &[]);
            r.execute("SELECT * INTO polyhost_tmp FROM users", &[]);
            r.execute("CREATE TEMP VIEW polyhost_tmp AS SELECT 1", &[]);
            r.execute("CREATE TEMP SEQUENCE polyhost_tmp", &[]);
            r.execute(
                "CREATE FUNCTION polyhost_tmp() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                &[],
            );
            r.execute("DROP TABLE users", &[]);
            r.execute("TRUNCATE users", &[]);
            r.execute("ALTER TABLE users ADD COLUMN pwned int", &[]);
        }
        "role" => {
            let me = match sql::query("SELECT current_user::text", &[]) {
                Ok(rows) => match rows.rows.first().and_then(|r| r.first()) {
                    Some(Value::Text(me)) => me.clone(),
                    _ => "me".to_string(),
                },
                Err(_) => "me".to_string(),
            };
            for sql in [
                format!("ALTER ROLE {me} PASSWORD 'pwned'"),
                format!("ALTER ROLE \"{me}\" WITH PASSWORD 'pwned'"),
                format!("ALTER USER {me} PASSWORD 'pwned'"),
                format!("ALTER ROLE {me} NOLOGIN"),
                format!("ALTER ROLE {me} SET default_transaction_read_only = on"),
                format!("ALTER ROLE {me} SET statement_timeout = 0"),
                format!("ALTER ROLE {me} RENAME TO pwned"),
                "SET default_transaction_read_only = on".to_string(),
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY".to_string(),
                "SET ROLE postgres".to_string(),
                "SET ROLE NONE".to_string(),
                "RESET ROLE".to_string(),
                "SET SESSION AUTHORIZATION postgres".to_string(),
                "RESET SESSION AUTHORIZATION".to_string(),
                format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {me}"),
                format!("REVOKE ALL ON users FROM {me}"),
                format!("DROP ROLE {me}"),
                "CREATE ROLE pwned LOGIN SUPERUSER".to_string(),
            ] {
                r.execute(&sql, &[]);
            }
            r.query("SELECT current_user::text", &[]);
            r.query(
                "SELECT current_setting('default_transaction_read_only')",
                &[],
            );
        }
        "multi-statement" => {
            for sql in [
                "SELECT 1; DROP TABLE users",
                "SELECT 1; BEGIN",
                "SELECT 1;; DELETE FROM users",
                "SELECT 1 /* /* */ */; DELETE FROM users",
                "SELECT '\\'; DELETE FROM users; --'",
            ] {
                r.execute(sql, &[]);
            }
            // Harmless forms, one statement each as PostgreSQL reads them: a trailing
            // comment, nested comments hiding a `;`, a dollar-quoted `;`.
            for sql in [
                "SELECT 'one'; -- ",
                "SELECT 'one' /* a /* nested */ comment */",
                "SELECT 'one' /* /* */ ; DELETE FROM users; */",
                "SELECT 'one' WHERE $$; DELETE FROM users; $$ <> ''",
            ] {
                r.query(sql, &[]);
            }
            r.record(
                "execute-batch with SELECT 1; COMMIT",
                sql::execute_batch(&[
                    sql::Statement {
                        sql: "INSERT INTO users (id, name) VALUES (2, 'batch')".to_string(),
                        params: vec![],
                    },
                    sql::Statement {
                        sql: "SELECT 1; COMMIT".to_string(),
                        params: vec![],
                    },
                ]),
                |n| json!(n),
            );
            r.record(
                "execute-batch with COMMIT",
                sql::execute_batch(&[
                    sql::Statement {
                        sql: "INSERT INTO users (id, name) VALUES (3, 'batch')".to_string(),
                        params: vec![],
                    },
                    sql::Statement {
                        sql: "COMMIT".to_string(),
                        params: vec![],
                    },
                ]),
                |n| json!(n),
            );
        }
        "copy-do-prepare" => {
            for sql in [
                "COPY users TO PROGRAM 'id'",
                "COPY users FROM PROGRAM 'id'",
                "COPY (SELECT 1) TO STDOUT",
                "COPY users TO '/tmp/polyhost_pwned'",
                "DO $$BEGIN PERFORM pg_sleep(0); END$$",
                "DO LANGUAGE plpgsql 'BEGIN NULL; END'",
                "PREPARE polyhost_p AS SELECT 1",
                "EXECUTE polyhost_p",
                "DEALLOCATE ALL",
                "DISCARD ALL",
                "DISCARD TEMP",
                "CALL polyhost_p()",
                "VACUUM users",
                "ANALYZE users",
                "CHECKPOINT",
                "LOAD 'plpgsql'",
                "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
                "EXPLAIN ANALYZE DELETE FROM users",
                "COMMENT ON TABLE users IS 'pwned'",
                "SECURITY LABEL ON TABLE users IS 'x'",
                "REFRESH MATERIALIZED VIEW x",
                "CLUSTER users",
                "REINDEX TABLE users",
                "MERGE INTO users u USING (SELECT 1 AS id) s ON u.id = s.id WHEN MATCHED THEN DELETE",
            ] {
                r.execute(sql, &[]);
            }
        }
        "advisory-lock" => {
            for sql in [
                "SELECT pg_advisory_lock(4242)::text",
                "SELECT pg_advisory_lock_shared(4242)::text",
                "SELECT pg_try_advisory_lock(4242)::text",
                "SELECT pg_catalog.pg_try_advisory_lock(4242, 1)::text",
                "SELECT * FROM pg_advisory_lock(4242)",
                "SELECT x FROM (SELECT pg_advisory_lock(4242)::text AS x) s",
            ] {
                r.query(sql, &[]);
            }
            // The transaction-level form ends with its statement: allowed.
            r.query("SELECT pg_advisory_xact_lock(4243)::text", &[]);
        }
        "server-functions" => {
            for sql in [
                "SELECT pg_terminate_backend(pg_backend_pid())::text",
                "SELECT pg_cancel_backend(pid)::text FROM pg_stat_activity",
                "SELECT pg_reload_conf()::text",
                "SELECT pg_read_file('/etc/passwd')",
                "SELECT pg_read_binary_file('/etc/passwd')::text",
                "SELECT * FROM pg_ls_dir('.')",
                "SELECT lo_import('/etc/passwd')::text",
                "SELECT lo_from_bytea(0, 'x')::text",
                "SELECT lo_unlink(1)::text",
                "SELECT * FROM dblink('dbname=postgres', 'SELECT 1') AS t(a int)",
                "SELECT pg_switch_wal()::text",
                "SELECT pg_create_restore_point('x')::text",
                "SELECT count(*)::text FROM ts_stat('SELECT to_tsvector(''a'')')",
                "SELECT pg_stat_reset()::text",
            ] {
                r.query(sql, &[]);
            }
        }
        "savepoints" => {
            // Outside a transaction there is nothing to split.
            r.execute("SAVEPOINT s", &[]);
            r.execute("ROLLBACK TO SAVEPOINT s", &[]);
            // Inside one, a savepoint per event: the second insert is undone alone.
            match sql::begin() {
                Ok(tx) => {
                    r.tx_execute(&tx, "SAVEPOINT event_1", &[]);
                    r.tx_execute(
                        &tx,
                        "INSERT INTO users (id, name) VALUES ($1, $2)",
                        &[Value::Int64(10), text("kept")],
                    );
                    r.tx_execute(&tx, "RELEASE SAVEPOINT event_1", &[]);
                    r.tx_execute(&tx, "SAVEPOINT event_2", &[]);
                    r.tx_execute(
                        &tx,
                        "INSERT INTO users (id, name) VALUES ($1, $2)",
                        &[Value::Int64(11), text("undone")],
                    );
                    r.tx_execute(&tx, "ROLLBACK TO SAVEPOINT event_2", &[]);
                    r.tx_execute(&tx, "RELEASE event_2", &[]);
                    // An event that fails is rolled back to its savepoint, alone; the
                    // transaction commits the others.
                    r.tx_execute(&tx, "SAVEPOINT event_3", &[]);
                    r.tx_execute(
                        &tx,
                        "INSERT INTO users (id, name) VALUES ($1, 'duplicate')",
                        &[Value::Int64(10)],
                    );
                    r.tx_execute(&tx, "ROLLBACK TO SAVEPOINT event_3", &[]);
                    r.record("commit", Transaction::commit(tx), |()| Json::Null);
                }
                Err(e) => r.record::<()>("begin", Err(e), |_| Json::Null),
            }
        }
        "trap-in-transaction" => {
            let tx = sql::begin().expect("begin");
            tx.execute(
                "INSERT INTO users (id, name) VALUES ($1, $2)",
                &[Value::Int64(99), text("trapped")],
            )
            .expect("insert");
            tx.query("SELECT id FROM users FOR UPDATE", &[])
                .expect("lock");
            panic!("trapping with a transaction open");
        }
        "huge-result" => {
            r.query(
                "SELECT repeat('x', 1000000) FROM generate_series(1, 2000)",
                &[],
            );
            match sql::begin() {
                Ok(tx) => {
                    r.tx_query(
                        &tx,
                        "SELECT repeat('x', 1000000) FROM generate_series(1, 2000)",
                    );
                    // The transaction lost its connection with the result: it is over.
                    r.tx_query(&tx, "SELECT 'after'");
                    r.record("commit", Transaction::commit(tx), |()| Json::Null);
                }
                Err(e) => r.record::<()>("begin", Err(e), |_| Json::Null),
            }
            r.query("SELECT 'still fine'", &[]);
        }
        "huge-parameter" => {
            let n = request["bytes"].as_u64().unwrap_or(1 << 20) as usize;
            r.query("SELECT length($1)::text", &[Value::Text("x".repeat(n))]);
            r.query(&format!("SELECT '{}'", "x".repeat(n)), &[]);
            r.query("SELECT length($1)::text", &[Value::Bytes(vec![0; n])]);
            r.query(
                "SELECT cardinality($1)::text",
                &[Value::TextArray(vec!["x".repeat(64); n / 64])],
            );
        }
        "sleep" => {
            r.query("SELECT pg_sleep(60)::text", &[]);
            r.query("SELECT 'after'", &[]);
        }
        "sleep-in-transaction" => match sql::begin() {
            Ok(tx) => {
                r.tx_query(&tx, "SELECT pg_sleep(60)::text");
                r.tx_query(&tx, "SELECT 'after'");
                r.record("commit", Transaction::commit(tx), |()| Json::Null);
            }
            Err(e) => r.record::<()>("begin", Err(e), |_| Json::Null),
        },
        other => r.record::<()>(
            "unknown attack",
            Err(Error {
                kind: ErrorKind::Invalid,
                message: format!("no attack `{other}`"),
                transient: false,
            }),
            |_| Json::Null,
        ),
    }
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Denied => "denied",
        ErrorKind::Invalid => "invalid",
        ErrorKind::NotFound => "not-found",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Other => "other",
    }
}
