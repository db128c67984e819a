//! `bulk-write`: a batch of inserts, updates, replacements and deletes, sent as the
//! `insert`/`update`/`delete` write commands both MongoDB and FerretDB speak, in commands of at
//! most [`STATEMENTS_PER_COMMAND`] statements.

use std::time::Duration;

use futures::StreamExt as _;
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

/// A `bulk-result` of nothing done.
fn nothing() -> BulkResult {
    BulkResult {
        inserted: 0,
        matched: 0,
        modified: 0,
        deleted: 0,
        upserted: 0,
    }
}

impl<'a> Bulk<'a> {
    fn new(
        db: &'a mongodb::Database,
        coll: &'a mongodb::Collection<Document>,
        ordered: bool,
        max_time: Duration,
    ) -> Self {
        Bulk {
            db,
            coll,
            ordered,
            max_time,
            done: nothing(),
            failures: Vec::new(),
        }
    }

    /// Issues `ops` in order as write commands: each run of consecutive ops of one kind
    /// (insert, update/replace, delete) in commands of at most [`STATEMENTS_PER_COMMAND`]
    /// statements; stops at the first failure when ordered. Unordered, a run whose
    /// statements cannot touch one document twice ([`independent`]) is spread over up to
    /// the driver's [`MAX_POOL_SIZE`] commands that go out together ([`spread`]): FerretDB
    /// 1.24 loses one of two concurrent updates of a document, so another run stays one
    /// command at a time.
    async fn run(&mut self, ops: Vec<Op>) {
        let mut runs: Vec<Vec<(Command, usize, Vec<Document>)>> = Vec::new();
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
            match runs.last_mut() {
                Some(run) if run[0].0 == command => run.push((command, first, statements)),
                _ => runs.push(vec![(command, first, statements)]),
            }
        }
        for run in runs {
            if self.ordered || !independent(&run) {
                for (command, first, statements) in run {
                    let sent = self.send(command, first, statements).await;
                    if !self.absorb(sent) && self.ordered {
                        return;
                    }
                }
            } else {
                let sent: Vec<Sent> = futures::stream::iter(spread(run))
                    .map(|(command, first, statements)| self.send(command, first, statements))
                    .buffer_unordered(MAX_POOL_SIZE as usize)
                    .collect()
                    .await;
                for s in sent {
                    self.absorb(s);
                }
            }
        }
    }

    /// Adds what one command did to the call's result; false when any of it failed.
    fn absorb(&mut self, sent: Sent) -> bool {
        let d = &mut self.done;
        d.inserted += sent.done.inserted;
        d.matched += sent.done.matched;
        d.modified += sent.done.modified;
        d.deleted += sent.done.deleted;
        d.upserted += sent.done.upserted;
        let ok = sent.failures.is_empty();
        self.failures.extend(sent.failures);
        ok
    }

    /// Sends one write command of `statements` (ops `first..`): what it did, and its
    /// failures by op index.
    async fn send(&self, command: Command, first: usize, statements: Vec<Document>) -> Sent {
        let mut sent = Sent {
            done: nothing(),
            failures: Vec::new(),
        };
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
                sent.failures.push((first, map_error(what(), e)));
                return sent;
            }
        };
        let n = u64::try_from(number(&reply, "n")).unwrap_or(0);
        let upserted = reply.get_array("upserted").map_or(0, |u| u.len() as u64);
        match command {
            Command::Insert => sent.done.inserted += n,
            Command::Update => {
                sent.done.matched += n.saturating_sub(upserted);
                sent.done.modified += u64::try_from(number(&reply, "nModified")).unwrap_or(0);
                sent.done.upserted += upserted;
            }
            Command::Delete => sent.done.deleted += n,
        }
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
                sent.failures.push((
                    first + index.min(count - 1),
                    HostError::new(classify_code(code), message),
                ));
            }
        }
        if let Ok(wc) = reply.get_document("writeConcernError") {
            let code = i32::try_from(number(wc, "code")).unwrap_or(0);
            let message = format!(
                "{}: write concern ({code}): {}",
                what(),
                wc.get_str("errmsg").unwrap_or_default()
            );
            sent.failures
                .push((first, HostError::new(classify_code(code), message)));
        }
        sent
    }

    /// The result, or the first failure (its kind) reworded to say what else happened;
    /// `what` names the call (``bulk-write on `titles` ``).
    fn finish(self, what: &str) -> Result<BulkResult, HostError> {
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
        Err(first.map_message(|m| format!("{what}: op {index} failed: {m}; {tail}")))
    }
}

/// What one write command did, and its failures by op index.
struct Sent {
    done: BulkResult,
    failures: Vec<(usize, HostError)>,
}

/// Whether the commands of one run may go out together: inserts and deletes always (two
/// inserts never change one document; deletes only remove), updates when every statement's
/// filter pins one `_id` by value and no `_id` comes twice.
fn independent(run: &[(Command, usize, Vec<Document>)]) -> bool {
    if run
        .first()
        .is_some_and(|(command, ..)| *command != Command::Update)
    {
        return true;
    }
    let mut ids = std::collections::HashSet::new();
    for statement in run.iter().flat_map(|(_, _, statements)| statements) {
        let pinned = statement
            .get_document("q")
            .ok()
            .and_then(|q| q.get("_id"))
            .filter(|id| !is_operator(id));
        match pinned {
            Some(id) if ids.insert(id_key(id)) => {}
            _ => return false,
        }
    }
    true
}

/// Spreads the statements of a run that may go out together over as many commands as the
/// host has connections (each of at most [`STATEMENTS_PER_COMMAND`] statements, in op
/// order). FerretDB applies the statements of one command one after another, each in a
/// PostgreSQL transaction of its own: four title updates in one command took 2.8 ms, in
/// four concurrent commands 2.1 ms (idle server; 5.4 against 3.8 ms for eight).
fn spread(run: Vec<(Command, usize, Vec<Document>)>) -> Vec<(Command, usize, Vec<Document>)> {
    let Some(&(command, first, _)) = run.first() else {
        return run;
    };
    let statements: Vec<Document> = run.into_iter().flat_map(|(_, _, s)| s).collect();
    let n = statements.len();
    let commands = n
        .div_ceil(STATEMENTS_PER_COMMAND)
        .max(n.min(MAX_POOL_SIZE as usize));
    let per = n.div_ceil(commands.max(1)).max(1);
    let mut statements = statements.into_iter();
    (0..)
        .map(|i| {
            (
                command,
                first + i * per,
                statements.by_ref().take(per).collect::<Vec<_>>(),
            )
        })
        .take_while(|(_, _, s)| !s.is_empty())
        .collect()
}

/// An `_id` as compared by the server: numbers by value (`1`, `1L` and `1.0` match the
/// same document), anything else by type and value.
pub(super) fn id_key(id: &Bson) -> String {
    match id {
        Bson::Int32(n) => format!("n:{}", f64::from(*n)),
        Bson::Int64(n) => format!("n:{}", *n as f64),
        Bson::Double(n) => format!("n:{n}"),
        other => format!("{other:?}"),
    }
}

/// Whether a filter value is an operator document (`{"$in": …}`), not a value to match.
fn is_operator(value: &Bson) -> bool {
    value
        .as_document()
        .is_some_and(|d| d.keys().any(|k| k.starts_with('$')))
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
        let mut bulk = Bulk::new(&self.db, &coll, ordered, limits.max_time);
        bulk.run(ops).await;
        bulk.finish(&format!("bulk-write on `{collection}`"))
    }
}

/// Inserts `docs` into `coll` in `insert` commands of at most [`STATEMENTS_PER_COMMAND`]
/// documents, unordered: up to [`MAX_POOL_SIZE`] commands at once (two inserts never change
/// one document), every command sent even after a failure; `what` names the call in an
/// error. Answers how many were inserted.
pub(super) async fn insert_all(
    db: &mongodb::Database,
    coll: &mongodb::Collection<Document>,
    docs: Vec<Document>,
    max_time: Duration,
    what: &str,
) -> Result<u64, HostError> {
    let mut bulk = Bulk::new(db, coll, false, max_time);
    bulk.run(docs.into_iter().map(Op::Insert).collect()).await;
    bulk.finish(what).map(|done| done.inserted)
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

    fn updates(filters: &[Document]) -> Vec<(Command, usize, Vec<Document>)> {
        let statements = filters
            .iter()
            .map(|q| doc! { "q": q.clone(), "u": { "$set": { "a": 1 } } })
            .collect();
        vec![(Command::Update, 0, statements)]
    }

    #[test]
    fn a_run_that_may_go_out_together_is_spread_over_the_connections_in_op_order() {
        let run = |n: usize, first: usize| -> Vec<(Command, usize, Vec<Document>)> {
            let statements: Vec<Document> = (0..n).map(|i| doc! { "i": i as i64 }).collect();
            statements
                .chunks(STATEMENTS_PER_COMMAND)
                .enumerate()
                .map(|(k, c)| {
                    (
                        Command::Insert,
                        first + k * STATEMENTS_PER_COMMAND,
                        c.to_vec(),
                    )
                })
                .collect()
        };
        for (n, commands) in [
            (1, 1),
            (4, 4),
            (5, 5),
            (7, 4),
            (12, 4),
            (40, 5),
            (41, 6),
            (100, 13),
        ] {
            let spread = spread(run(n, 3));
            assert_eq!(spread.len(), commands, "{n} statements");
            let mut next = 3;
            for (command, first, statements) in &spread {
                assert_eq!(*command, Command::Insert);
                assert_eq!(
                    *first, next,
                    "{n} statements: each command starts where the last ended"
                );
                assert!(!statements.is_empty() && statements.len() <= STATEMENTS_PER_COMMAND);
                for (k, st) in statements.iter().enumerate() {
                    assert_eq!(st.get_i64("i").unwrap() as usize + 3, first + k);
                }
                next += statements.len();
            }
            assert_eq!(next, n + 3);
        }
        assert!(spread(Vec::new()).is_empty());
    }

    #[test]
    fn updates_go_out_together_only_when_each_pins_its_own_id() {
        assert!(independent(&updates(&[
            doc! { "_id": "a" },
            doc! { "_id": "b", "rating.count": 2 },
            doc! { "_id": 1 },
        ])));
        // One document twice, by the same value or an equal number.
        assert!(!independent(&updates(&[
            doc! { "_id": "a" },
            doc! { "_id": "a" }
        ])));
        assert!(!independent(&updates(&[
            doc! { "_id": 1 },
            doc! { "_id": 1i64 }
        ])));
        assert!(!independent(&updates(&[
            doc! { "_id": 1 },
            doc! { "_id": 1.0 }
        ])));
        // A filter that may match any document.
        assert!(!independent(&updates(&[
            doc! { "_id": "a" },
            doc! { "name": "x" }
        ])));
        assert!(!independent(&updates(&[doc! { "_id": { "$in": ["a"] } }])));
        // Inserts and deletes always.
        let inserts = vec![(
            Command::Insert,
            0,
            vec![doc! { "_id": "a" }, doc! { "_id": "a" }],
        )];
        assert!(independent(&inserts));
    }
}
