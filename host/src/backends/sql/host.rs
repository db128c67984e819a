//! `polyhost:platform/sql` as the plugin calls it: statements, batches and transactions
//! (a resource holding a leased connection inside `BEGIN`), each call checked by
//! [`super::allow`] before it reaches the server.

use std::time::Duration;

use wasmtime::component::Resource;

use super::{Caps, Client, Lease, Scope, Sql, admit, allow};
use crate::backends::View;
use crate::bindings::polyhost::platform::sql::{Host, HostTransaction, Rows, Statement, Value};
use crate::error::{HostError, Kind, with_timeout};

/// An open transaction (`polyhost:platform/sql.transaction`): a pooled connection inside a
/// `BEGIN` the host sent. Dropped without commit — by the plugin or by a trap that drops
/// the whole store — its connection is closed, which rolls it back on the server; it is
/// never pooled open.
#[derive(Debug)]
pub struct Transaction {
    lease: Lease,
    /// The first failed statement's error kind and message. PostgreSQL answers `COMMIT` in
    /// a failed transaction with a silent rollback, so commit checks this instead, and a
    /// plugin that ignored an error learns that nothing was committed.
    failed: Option<Failure>,
    /// The savepoints set, oldest first, each with what `failed` was when it was set: a
    /// `ROLLBACK TO` it undoes every failure since, so the transaction may commit again
    /// (one savepoint per event, an event that failed rolled back alone).
    savepoints: Vec<(String, Option<Failure>)>,
}

/// A failure's kind and message.
type Failure = (Kind, String);

/// What one sql host call may use: the client and the plugin's limits.
struct Call {
    client: Client,
    timeout: Duration,
    caps: Caps,
}

impl View<'_, Sql> {
    fn sql_call(&self) -> Result<Call, HostError> {
        let client = self.client()?.clone();
        Ok(Call {
            client,
            timeout: self.env.host_call_timeout,
            caps: Caps {
                max_result_bytes: self.env.max_result_bytes,
                max_value_bytes: self.env.max_value_bytes,
            },
        })
    }

    fn sql_transaction(
        &mut self,
        t: &Resource<Transaction>,
    ) -> Result<&mut Transaction, HostError> {
        self.table.get_mut(t).map_err(HostError::trap)
    }

    /// One statement `sql` outside a transaction: checked by [`admit`], then `run` on a
    /// pooled connection under the plugin's permit and host-call timeout.
    async fn on_own_connection<T>(
        &mut self,
        sql: &str,
        what: &'static str,
        run: impl AsyncFnOnce(&Client, &mut Lease, Caps) -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        let Call {
            client,
            timeout,
            caps,
        } = self.sql_call()?;
        admit(sql, Scope::Call, caps)?;
        with_timeout(timeout, what, async {
            let _permit = client.permit().await?;
            let mut lease = client.lease().await?;
            run(&client, &mut lease, caps).await
        })
        .await
    }

    /// One statement `sql` in transaction `t`: checked by [`admit`], then `run` on the
    /// transaction's connection under the plugin's permit and host-call timeout; what it
    /// gave is remembered by [`after_statement`], a refusal included.
    async fn in_transaction<T>(
        &mut self,
        t: &Resource<Transaction>,
        sql: &str,
        what: &'static str,
        run: impl AsyncFnOnce(&Client, &mut Lease, Caps) -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        let Call {
            client,
            timeout,
            caps,
        } = self.sql_call()?;
        let t = self.sql_transaction(t)?;
        let mut checked = None;
        let result = match admit(sql, Scope::Transaction, caps) {
            Ok(c) => {
                checked = Some(c);
                with_timeout(timeout, what, async {
                    let _permit = client.permit().await?;
                    run(&client, &mut t.lease, caps).await
                })
                .await
            }
            Err(e) => Err(e),
        };
        after_statement(t, checked, &result);
        result
    }
}

impl Host for View<'_, Sql> {
    async fn query(&mut self, sql: String, params: Vec<Value>) -> Result<Rows, HostError> {
        const WHAT: &str = "sql.query";
        self.on_own_connection(&sql, WHAT, async |client, lease, caps| {
            client.query_on(lease, &sql, params, caps, WHAT).await
        })
        .await
    }

    async fn execute(&mut self, sql: String, params: Vec<Value>) -> Result<u64, HostError> {
        self.on_own_connection(&sql, "sql.execute", async |client, lease, caps| {
            client.execute_on(lease, &sql, params, caps).await
        })
        .await
    }

    async fn execute_batch(&mut self, statements: Vec<Statement>) -> Result<Vec<u64>, HostError> {
        let Call {
            client,
            timeout,
            caps,
        } = self.sql_call()?;
        if statements.is_empty() {
            return Ok(Vec::new());
        }
        let total = statements.len();
        // Every statement is checked before the batch begins: a refused one costs nothing
        // on the server.
        for (i, statement) in statements.iter().enumerate() {
            admit(&statement.sql, Scope::Call, caps)
                .map_err(|e| e.context(format_args!("statement {} of {total}", i + 1)))?;
        }
        with_timeout(timeout, "sql.execute-batch", async {
            let _permit = client.permit().await?;
            let mut lease = client.lease().await?;
            client.control(&mut lease, "BEGIN").await?;
            lease.in_transaction = true;
            let mut affected = Vec::with_capacity(total);
            for (i, statement) in statements.into_iter().enumerate() {
                let n = client
                    .execute_on(&mut lease, &statement.sql, statement.params, caps)
                    .await
                    // `lease` is dropped on the way out inside the transaction: its
                    // connection is closed, which rolls the batch back.
                    .map_err(|e| e.context(format_args!("statement {} of {total}", i + 1)))?;
                affected.push(n);
            }
            client.control(&mut lease, "COMMIT").await?;
            lease.in_transaction = false;
            Ok(affected)
        })
        .await
    }

    async fn begin(&mut self) -> Result<Resource<Transaction>, HostError> {
        let Call {
            client, timeout, ..
        } = self.sql_call()?;
        let lease = with_timeout(timeout, "sql.begin", async {
            let _permit = client.permit().await?;
            let mut lease = client.lease().await?;
            client.control(&mut lease, "BEGIN").await?;
            lease.in_transaction = true;
            Ok(lease)
        })
        .await?;
        self.table
            .push(Transaction {
                lease,
                failed: None,
                savepoints: Vec::new(),
            })
            .map_err(HostError::trap)
    }
}

impl HostTransaction for View<'_, Sql> {
    async fn query(
        &mut self,
        t: Resource<Transaction>,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Rows, HostError> {
        const WHAT: &str = "sql.transaction.query";
        self.in_transaction(&t, &sql, WHAT, async |client, lease, caps| {
            client.query_on(lease, &sql, params, caps, WHAT).await
        })
        .await
    }

    async fn execute(
        &mut self,
        t: Resource<Transaction>,
        sql: String,
        params: Vec<Value>,
    ) -> Result<u64, HostError> {
        self.in_transaction(
            &t,
            &sql,
            "sql.transaction.execute",
            async |client, lease, caps| client.execute_on(lease, &sql, params, caps).await,
        )
        .await
    }

    async fn commit(&mut self, t: Resource<Transaction>) -> Result<(), HostError> {
        let Call {
            client, timeout, ..
        } = self.sql_call()?;
        let mut t = self.table.delete(t).map_err(HostError::trap)?;
        if let Some((kind, message)) = t.failed.take() {
            end(&client, timeout, t.lease, "ROLLBACK").await.ok();
            return Err(HostError::new(
                kind,
                format!(
                    "not committed: an earlier statement of this transaction failed, so it was \
                 rolled back ({message})"
                ),
            ));
        }
        end(&client, timeout, t.lease, "COMMIT").await
    }

    async fn rollback(&mut self, t: Resource<Transaction>) -> Result<(), HostError> {
        let Call {
            client, timeout, ..
        } = self.sql_call()?;
        let t = self.table.delete(t).map_err(HostError::trap)?;
        end(&client, timeout, t.lease, "ROLLBACK").await
    }

    async fn drop(&mut self, t: Resource<Transaction>) -> wasmtime::Result<()> {
        let t = self.table.delete(t)?;
        // Rolled back here so the connection can be pooled again; should that fail, the
        // lease closes the connection, which rolls back all the same.
        if let Ok(Call {
            client, timeout, ..
        }) = self.sql_call()
        {
            end(&client, timeout, t.lease, "ROLLBACK").await.ok();
        }
        Ok(())
    }
}

/// Ends the transaction held by `lease` with `sql` (`COMMIT` or `ROLLBACK`) and lets the
/// connection go back to the pool.
async fn end(
    client: &Client,
    timeout: Duration,
    mut lease: Lease,
    sql: &'static str,
) -> Result<(), HostError> {
    let what = if sql == "COMMIT" {
        "sql.transaction.commit"
    } else {
        "sql.transaction.rollback"
    };
    with_timeout(timeout, what, async {
        let _permit = client.permit().await?;
        client.control(&mut lease, sql).await?;
        lease.in_transaction = false;
        Ok(())
    })
    .await
}

/// After a statement in `t`: remembers its failure (see [`Transaction::failed`]), and
/// closes the connection at once when the statement was left in flight (a timeout, a
/// result over the cap), so the server stops it now rather than at its own end.
fn after_statement<T>(
    t: &mut Transaction,
    checked: Option<allow::Checked>,
    result: &Result<T, HostError>,
) {
    use allow::Checked;
    match (result, checked) {
        (Err(e), _) => {
            if t.failed.is_none() {
                // A trap ends the call; what later calls report of it is an ordinary failure.
                let kind = if e.kind == Kind::Trap {
                    Kind::Other
                } else {
                    e.kind
                };
                t.failed = Some((kind, e.to_string()));
            }
        }
        (Ok(_), Some(Checked::Savepoint(name))) => t.savepoints.push((name, t.failed.clone())),
        (Ok(_), Some(Checked::Release(name))) => {
            // RELEASE drops the savepoint and every later one (the newest of that name).
            if let Some(i) = t.savepoints.iter().rposition(|(n, _)| *n == name) {
                t.savepoints.truncate(i);
            }
        }
        (Ok(_), Some(Checked::RollbackTo(name))) => {
            // ROLLBACK TO keeps the savepoint, drops the later ones, and undoes every
            // failure since it was set.
            if let Some(i) = t.savepoints.iter().rposition(|(n, _)| *n == name) {
                t.savepoints.truncate(i + 1);
                t.failed = t.savepoints[i].1.clone();
            }
        }
        (Ok(_), _) => {}
    }
    if !t.lease.settled {
        t.lease.close();
    }
}
