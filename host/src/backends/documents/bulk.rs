//! `bulk-write`: a batch of inserts, updates, replacements and deletes, sent as the
//! `insert`/`update`/`delete` write commands both MongoDB and FerretDB speak, in commands of at
//! most [`STATEMENTS_PER_COMMAND`] statements.

use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};

use super::errors::classify_code;
use super::scope::Scope;
use super::{Client, Limits, map_error};
use crate::bindings::polyhost::platform::documents::{BulkResult, WriteOp};
use crate::error::HostError;

/// One parsed op of a `bulk-write`.
#[derive(Debug)]
enum Op {
    Insert(Document),
    Replace {
        filter: Document,
        replacement: Document,
        upsert: bool,
    },
    Update {
        filter: Document,
        update: Document,
        upsert: bool,
        many: bool,
    },
    Delete {
        filter: Document,
        many: bool,
    },
}

impl Op {
    fn parse(op: WriteOp, scope: &Scope<'_>) -> Result<Op, HostError> {
        Ok(match op {
            WriteOp::Insert(doc) => Op::Insert(scope.document("the document", &doc)?),
            WriteOp::Replace(r) => Op::Replace {
                filter: scope.document("the filter", &r.filter)?,
                replacement: scope.replacement(&r.replacement)?,
                upsert: r.upsert,
            },
            WriteOp::Update(u) => Op::Update {
                filter: scope.document("the filter", &u.filter)?,
                update: scope.update(&u.update)?,
                upsert: u.upsert,
                many: u.many,
            },
            WriteOp::Delete(d) => Op::Delete {
                filter: scope.document("the filter", &d.filter)?,
                many: d.many,
            },
        })
    }

    /// Which write command carries the op.
    fn command(&self) -> Command {
        match self {
            Op::Insert(_) => Command::Insert,
            Op::Replace { .. } | Op::Update { .. } => Command::Update,
            Op::Delete { .. } => Command::Delete,
        }
    }

    /// The op as one statement of its write command.
    fn statement(self) -> Document {
        match self {
            Op::Insert(doc) => doc,
            Op::Replace {
                filter,
                replacement,
                upsert,
            } => doc! { "q": filter, "u": replacement, "upsert": upsert, "multi": false },
            Op::Update {
                filter,
                update,
                upsert,
                many,
            } => doc! { "q": filter, "u": update, "upsert": upsert, "multi": many },
            Op::Delete { filter, many } => doc! { "q": filter, "limit": i32::from(!many) },
        }
    }
}

/// The three write commands a `bulk-write` is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Insert,
    Update,
    Delete,
}

impl Command {
    /// The command's name and the field that holds its statements.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Command::Insert => ("insert", "documents"),
            Command::Update => ("update", "updates"),
            Command::Delete => ("delete", "deletes"),
        }
    }
}

/// The most statements one write command carries. FerretDB 1.24 (PostgreSQL back end)
/// holds a pooled PostgreSQL connection for every statement of an `update` until the whole
/// command ends, and waits, with its metadata lock held, when the pool runs dry: a command
/// of more statements than the pool has connections (64 against the default pool of 50)
/// hangs the server for every client until it is restarted. At most this many statements
/// per command, times the host's [`MAX_POOL_SIZE`] connections, stays well inside the pool
/// `cargo xtask services up` gives FerretDB (`pool_max_conns`, see xtask's `ferretdb.rs`).
/// A run of consecutive ops of one kind still costs one round trip per this many ops.
pub const STATEMENTS_PER_COMMAND: usize = 8;

/// The host's MongoDB connections (the driver's pool). Bounds how many commands the host
/// has in flight at once on the server, so with [`STATEMENTS_PER_COMMAND`] how many
/// PostgreSQL connections FerretDB may need for the host at once: 40, inside even
/// FerretDB's default pool of 50. Five concurrent commands keep FerretDB's two cores busy;
/// more only queue inside it.
pub const MAX_POOL_SIZE: u32 = 5;

/// A `bulk-write` in progress: what it did so far and which ops failed.
struct Bulk<'a> {
    db: &'a mongodb::Database,
    coll: &'a mongodb::Collection<Document>,
    ordered: bool,
    max_time: Duration,
    done: BulkResult,
    /// (op index, error), in op order.
    failures: Vec<(usize, HostError)>,
}

impl Bulk<'_> {
    /// Issues `ops` in order as write commands: each run of consecutive ops of one kind
    /// (insert, update/replace, delete) in commands of at most [`STATEMENTS_PER_COMMAND`]
    /// statements; stops at the first failure when ordered.
    async fn run(&mut self, ops: Vec<Op>) {
        let mut ops = ops.into_iter().enumerate().peekable();
        while let Some((first, op)) = ops.next() {
            let command = op.command();
            let mut statements = vec![op.statement()];
            while statements.len() < STATEMENTS_PER_COMMAND
                && ops
                    .peek()
                    .is_some_and(|(_, next)| next.command() == command)
            {
                if let Some((_, next)) = ops.next() {
                    statements.push(next.statement());
                }
            }
            let ok = self.send(command, first, statements).await;
            if !ok && self.ordered {
                return;
            }
        }
    }

    /// Sends one write command of `statements` (ops `first..`); false when any failed.
    async fn send(&mut self, command: Command, first: usize, statements: Vec<Document>) -> bool {
        let (name, field) = command.names();
        let count = statements.len();
        let coll = self.coll.name().to_string();
        let what = || match command {
            Command::Insert => format!("insert into `{coll}`"),
            Command::Update => format!("update in `{coll}`"),
            Command::Delete => format!("delete from `{coll}`"),
        };
        let body = doc! {
            name: self.coll.name(),
            field: statements,
            "ordered": self.ordered,
            // Honoured by MongoDB; FerretDB 1.24 accepts and ignores it on writes.
            "maxTimeMS": i64::try_from(self.max_time.as_millis()).unwrap_or(i64::MAX),
        };
        let reply = match self.db.run_command(body).await {
            Ok(reply) => reply,
            Err(e) => {
                // No reply (or a command error): nothing is known to be written.
                self.failures.push((first, map_error(what(), e)));
                return false;
            }
        };
        let n = u64::try_from(number(&reply, "n")).unwrap_or(0);
        let upserted = reply.get_array("upserted").map_or(0, |u| u.len() as u64);
        match command {
            Command::Insert => self.done.inserted += n,
            Command::Update => {
                self.done.matched += n.saturating_sub(upserted);
                self.done.modified += u64::try_from(number(&reply, "nModified")).unwrap_or(0);
                self.done.upserted += upserted;
            }
            Command::Delete => self.done.deleted += n,
        }
        let mut ok = true;
        if let Ok(errors) = reply.get_array("writeErrors") {
            for error in errors.iter().filter_map(Bson::as_document) {
                let index = usize::try_from(number(error, "index")).unwrap_or(0);
                let code = i32::try_from(number(error, "code")).unwrap_or(0);
                let message = format!(
                    "{}: {} ({code}): {}",
                    what(),
                    error.get_str("codeName").unwrap_or("WriteError"),
                    error.get_str("errmsg").unwrap_or_default()
                );
                self.failures.push((
                    first + index.min(count - 1),
                    HostError::new(classify_code(code), message),
                ));
                ok = false;
            }
        }
        if let Ok(wc) = reply.get_document("writeConcernError") {
            let code = i32::try_from(number(wc, "code")).unwrap_or(0);
            let message = format!(
                "{}: write concern ({code}): {}",
                what(),
                wc.get_str("errmsg").unwrap_or_default()
            );
            self.failures
                .push((first, HostError::new(classify_code(code), message)));
            ok = false;
        }
        ok
    }

    /// The result, or the first failure (its kind) reworded to say what else happened.
    fn finish(self, collection: &str) -> Result<BulkResult, HostError> {
        let mut failures = self.failures;
        failures.sort_by_key(|(index, _)| *index);
        let mut failures = failures.into_iter();
        let Some((index, first)) = failures.next() else {
            return Ok(self.done);
        };
        let others = failures.len();
        let d = &self.done;
        let done = format!(
            "inserted {}, matched {}, modified {}, deleted {}, upserted {}",
            d.inserted, d.matched, d.modified, d.deleted, d.upserted
        );
        let tail = match (self.ordered, others) {
            (true, _) => format!("stopped there (ordered); done before it: {done}"),
            (false, 0) => format!("the other ops ran: {done}"),
            (false, n) => format!("{n} later op(s) failed too; the others ran: {done}"),
        };
        Err(first.map_message(|m| {
            format!("bulk-write on `{collection}`: op {index} failed: {m}; {tail}")
        }))
    }
}

/// An integer field of a server reply (servers answer in int32, int64 or double).
fn number(doc: &Document, key: &str) -> i64 {
    match doc.get(key) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}

impl Client {
    pub(super) async fn bulk_write(
        &self,
        collection: &str,
        ops: Vec<WriteOp>,
        ordered: bool,
        limits: &Limits,
    ) -> Result<BulkResult, HostError> {
        let coll = self.collection(collection)?;
        let scope = self.scope(limits);
        // Every op is checked before the first is issued, so a malformed op cannot leave the
        // ops before it applied.
        let ops = ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| Op::parse(op, &scope).map_err(|e| e.context(format_args!("op {i}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let _permit = self.permit().await?;
        let mut bulk = Bulk {
            db: &self.db,
            coll: &coll,
            ordered,
            max_time: limits.max_time,
            done: BulkResult {
                inserted: 0,
                matched: 0,
                modified: 0,
                deleted: 0,
                upserted: 0,
            },
            failures: Vec::new(),
        };
        bulk.run(ops).await;
        bulk.finish(collection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::documents::Grant;

    fn grant() -> Grant {
        Grant {
            database: "streaming".into(),
            collections: vec!["videos".into()],
            buckets: vec![],
        }
    }

    fn scope(g: &Grant) -> Scope<'_> {
        Scope {
            grant: g,
            plugin: "p",
            max_value_bytes: 1 << 20,
        }
    }

    #[test]
    fn bulk_ops_become_statements_of_their_command() {
        let g = grant();
        let s = scope(&g);
        let op = |w: WriteOp| Op::parse(w, &s).unwrap();
        let insert = op(WriteOp::Insert(r#"{"_id": 1}"#.into()));
        assert_eq!(insert.command(), Command::Insert);
        assert_eq!(insert.statement(), doc! {"_id": 1});
        let update = op(WriteOp::Update(
            crate::bindings::polyhost::platform::documents::UpdateOp {
                filter: r#"{"_id": 1}"#.into(),
                update: r#"{"$inc": {"n": 1}}"#.into(),
                upsert: true,
                many: false,
            },
        ));
        assert_eq!(update.command(), Command::Update);
        assert_eq!(
            update.statement(),
            doc! {"q": {"_id": 1}, "u": {"$inc": {"n": 1}}, "upsert": true, "multi": false}
        );
        let delete = op(WriteOp::Delete(
            crate::bindings::polyhost::platform::documents::DeleteOp {
                filter: "{}".into(),
                many: true,
            },
        ));
        assert_eq!(delete.command(), Command::Delete);
        assert_eq!(delete.statement(), doc! {"q": {}, "limit": 0});
        // Inside FerretDB's default pool of 50, with room for other clients.
        assert!(STATEMENTS_PER_COMMAND as u32 * MAX_POOL_SIZE <= 40);
    }
}
