//! MongoDB documents and blobs (`polyhost:platform/documents`), scoped to granted collections
//! and blob buckets.
//!
//! Documents cross the WIT boundary as relaxed Extended JSON text and are converted to BSON
//! here, once, with the driver's own `bson` crate (`Bson::try_from(serde_json::Value)` in,
//! `into_relaxed_extjson` out), so `{"$oid": …}`, `{"$date": …}` and friends mean what they
//! mean to every MongoDB tool.
//!
//! Every call is checked before it reaches the server, in this order: the collection or
//! bucket must be granted (else `denied`), every document argument must fit
//! `limits.max_value_bytes` and parse (else `invalid`), and may hold only allowlisted
//! operators and references inside the grant ([`scope`]: code, stages and foreign
//! references give `denied`), and updates must be operators while replacements must not be
//! (else `invalid`). Only then is a permit taken from the plugin's in-flight bound.
//!
//! What comes back is bounded: documents are read from the cursor one by one and counted
//! at their BSON length into the call's `limits.max_result_bytes`; a blob's length is
//! counted before its bytes are read. Every read carries `maxTimeMS` = the host-call
//! timeout, so the server stops the work when the host stops waiting.
//!
//! The server is FerretDB 1.24 locally and MongoDB 7 under docker compose, so only what both
//! speak is used: plain CRUD commands, `count_documents` (an aggregation of `$match` and
//! `$group`), and the `insert`/`update`/`delete` write commands, which `bulk-write` sends
//! in runs of at most [`STATEMENTS_PER_COMMAND`] statements (the driver's client-level
//! `bulk_write` needs MongoDB 8, and FerretDB wedges on long commands: see there).
//!
//! Blobs live in [`blobs`]; see there for how they are stored.

mod blobs;
mod scope;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::error::{Error as MongoError, ErrorKind as MongoErrorKind, WriteFailure};
use mongodb::options::FindOptions as MongoFindOptions;
use serde::Deserialize;
use tokio::sync::{Semaphore, SemaphorePermit};

use self::scope::Scope;
use super::Settings;
use crate::bindings::polyhost::platform::documents::{
    Blob, BlobInfo, BulkResult, FindOptions, Host, UpdateResult, WriteOp,
};
use crate::budget::ResultBudget;
use crate::error::{HostError, with_timeout};
use crate::state::{HostState, PluginEnv};

/// `grants.documents`: the database and the collections and blob buckets a plugin may use.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The database (default `streaming`).
    #[serde(default = "default_database")]
    pub database: String,
    /// Collection names, exactly.
    #[serde(default)]
    pub collections: Vec<String>,
    /// Blob bucket names, exactly.
    #[serde(default)]
    pub buckets: Vec<String>,
}

fn default_database() -> String {
    "streaming".to_string()
}

/// How long the driver looks for a server before giving up. Its default (30 s) would hold a
/// batch, or the host's start, for half a minute when MongoDB is down; 5 s is ample on a
/// healthy network and makes absence fail fast, as `unavailable`.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Calls one plugin may have in flight on the shared connection pool, so that one busy
/// plugin cannot take every pooled connection from the others.
const MAX_IN_FLIGHT: usize = 64;

/// The host's one MongoDB client (the driver pools connections inside it).
#[derive(Debug)]
pub struct Shared {
    client: mongodb::Client,
}

impl Shared {
    /// Whether the MongoDB-protocol server answers a `ping`.
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.client
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await?;
        Ok(())
    }

    /// Builds the client for `settings.mongodb_uri` and pings the server, so that an absent
    /// server fails here, within the server-selection timeout, rather than on a plugin's
    /// first call.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Shared> {
        let mut options = settings.mongodb.client_options().await?;
        options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        options.connect_timeout = Some(SERVER_SELECTION_TIMEOUT);
        // Bounds the commands in flight on the server; see `STATEMENTS_PER_COMMAND`.
        options.max_pool_size = Some(MAX_POOL_SIZE);
        options
            .app_name
            .get_or_insert_with(|| "polyhost".to_string());
        let client =
            mongodb::Client::with_options(options).context("building the MongoDB client")?;
        client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .context("pinging MongoDB")?;
        Ok(Shared { client })
    }
}

/// One plugin's handle on its database: a cheap clone of the shared client, bound to the
/// plugin's grant.
#[derive(Debug, Clone)]
pub struct Client {
    plugin: Arc<str>,
    grant: Arc<Grant>,
    db: mongodb::Database,
    in_flight: Arc<Semaphore>,
    /// The granted GridFS buckets, built on first use (see `blobs`).
    buckets:
        Arc<std::sync::Mutex<std::collections::HashMap<String, mongodb::gridfs::GridFsBucket>>>,
}

impl Client {
    /// Binds `plugin`'s `grant` to the shared client.
    pub fn new(shared: &Shared, plugin: &str, grant: &Grant) -> Client {
        Client {
            plugin: plugin.into(),
            grant: Arc::new(grant.clone()),
            db: shared.client.database(&grant.database),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            buckets: Arc::default(),
        }
    }

    /// The granted collection `name`, or `denied`.
    fn collection(&self, name: &str) -> Result<mongodb::Collection<Document>, HostError> {
        check_collection(&self.grant, &self.plugin, name)?;
        Ok(self.db.collection(name))
    }

    /// What this plugin's document arguments are checked against.
    fn scope(&self, limits: &Limits) -> Scope<'_> {
        Scope {
            grant: &self.grant,
            plugin: &self.plugin,
            max_value_bytes: limits.max_value_bytes,
        }
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>, HostError> {
        // The semaphore is never closed; an error here is a host bug.
        self.in_flight
            .acquire()
            .await
            .map_err(|e| HostError::Trap(wasmtime::Error::msg(format!("documents: {e}"))))
    }

    async fn insert(
        &self,
        collection: &str,
        doc: &str,
        limits: &Limits,
    ) -> Result<String, HostError> {
        let coll = self.collection(collection)?;
        let doc = self.scope(limits).document("the document", doc)?;
        let _permit = self.permit().await?;
        let inserted = coll
            .insert_one(doc)
            .await
            .map_err(|e| map_error(format_args!("insert into `{collection}`"), e))?;
        Ok(render(inserted.inserted_id))
    }

    async fn upsert(
        &self,
        collection: &str,
        filter: &str,
        replacement: &str,
        limits: &Limits,
    ) -> Result<UpdateResult, HostError> {
        let coll = self.collection(collection)?;
        let scope = self.scope(limits);
        let filter = scope.document("the filter", filter)?;
        let replacement = scope.replacement(replacement)?;
        let _permit = self.permit().await?;
        let result = coll
            .replace_one(filter, replacement)
            .upsert(true)
            .await
            .map_err(|e| map_error(format_args!("upsert into `{collection}`"), e))?;
        Ok(update_result(result))
    }

    async fn update(
        &self,
        collection: &str,
        filter: &str,
        update: &str,
        (upsert, many): (bool, bool),
        limits: &Limits,
    ) -> Result<UpdateResult, HostError> {
        let coll = self.collection(collection)?;
        let scope = self.scope(limits);
        let filter = scope.document("the filter", filter)?;
        let update = scope.update(update)?;
        let _permit = self.permit().await?;
        let action = if many {
            coll.update_many(filter, update)
        } else {
            coll.update_one(filter, update)
        };
        let result = action
            .upsert(upsert)
            .await
            .map_err(|e| map_error(format_args!("update in `{collection}`"), e))?;
        Ok(update_result(result))
    }

    async fn delete(
        &self,
        collection: &str,
        filter: &str,
        many: bool,
        limits: &Limits,
    ) -> Result<u64, HostError> {
        let coll = self.collection(collection)?;
        let filter = self.scope(limits).document("the filter", filter)?;
        let _permit = self.permit().await?;
        let action = if many {
            coll.delete_many(filter)
        } else {
            coll.delete_one(filter)
        };
        let result = action
            .await
            .map_err(|e| map_error(format_args!("delete from `{collection}`"), e))?;
        Ok(result.deleted_count)
    }

    async fn find(
        &self,
        collection: &str,
        filter: &str,
        options: FindOptions,
        limits: &Limits,
    ) -> Result<Vec<String>, HostError> {
        let coll = self.collection(collection)?;
        let scope = self.scope(limits);
        let filter = scope.document("the filter", filter)?;
        let mut find = MongoFindOptions::default();
        find.sort = scope.optional("the sort", options.sort.as_deref())?;
        find.projection = scope.optional("the projection", options.projection.as_deref())?;
        find.skip = options.skip;
        find.max_time = Some(limits.max_time);
        match options.limit {
            // MongoDB reads a limit of 0 as "no limit"; the WIT promises at most `limit`.
            Some(0) => return Ok(Vec::new()),
            // A negative limit means something else again (one batch, then close).
            Some(limit) => find.limit = Some(i64::try_from(limit).unwrap_or(i64::MAX)),
            None => {}
        }
        let _permit = self.permit().await?;
        let what = || format!("find in `{collection}`");
        // Raw documents, so each is counted at its BSON length as it arrives; the driver
        // holds one server batch at a time (at most 16 MiB), never the whole answer.
        let mut cursor = coll
            .clone_with_type::<RawDocumentBuf>()
            .find(filter)
            .with_options(find)
            .await
            .map_err(|e| map_error(what(), e))?;
        let mut budget = ResultBudget::new(limits.max_result_bytes);
        let mut found = Vec::new();
        while let Some(raw) = cursor.try_next().await.map_err(|e| map_error(what(), e))? {
            budget.take(raw.as_bytes().len(), &format!("documents.{}", what()))?;
            found.push(render_raw(&raw)?);
        }
        Ok(found)
    }

    async fn find_one(
        &self,
        collection: &str,
        filter: &str,
        limits: &Limits,
    ) -> Result<Option<String>, HostError> {
        let coll = self.collection(collection)?;
        let filter = self.scope(limits).document("the filter", filter)?;
        let _permit = self.permit().await?;
        let what = || format!("find-one in `{collection}`");
        let found = coll
            .clone_with_type::<RawDocumentBuf>()
            .find_one(filter)
            .max_time(limits.max_time)
            .await
            .map_err(|e| map_error(what(), e))?;
        let Some(raw) = found else {
            return Ok(None);
        };
        ResultBudget::new(limits.max_result_bytes)
            .take(raw.as_bytes().len(), &format!("documents.{}", what()))?;
        render_raw(&raw).map(Some)
    }

    async fn count(
        &self,
        collection: &str,
        filter: &str,
        limits: &Limits,
    ) -> Result<u64, HostError> {
        let coll = self.collection(collection)?;
        let filter = self.scope(limits).document("the filter", filter)?;
        let _permit = self.permit().await?;
        coll.count_documents(filter)
            .max_time(limits.max_time)
            .await
            .map_err(|e| map_error(format_args!("count in `{collection}`"), e))
    }

    async fn bulk_write(
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
            .map(|(i, op)| Op::parse(op, &scope).map_err(|e| reword(e, |m| format!("op {i}: {m}"))))
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

/// A plugin's limits that bound one call: from its `PluginEnv`.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// `maxTimeMS` of every read (the host-call timeout): the server stops the work when
    /// the host stops waiting.
    max_time: Duration,
    max_result_bytes: usize,
    max_value_bytes: usize,
}

impl Limits {
    fn of(env: &PluginEnv) -> Limits {
        Limits {
            max_time: env.host_call_timeout,
            max_result_bytes: env.max_result_bytes,
            max_value_bytes: env.max_value_bytes,
        }
    }
}

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
                    classify_code(code).into_error(message),
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
                .push((first, classify_code(code).into_error(message)));
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
        Err(reword(first, |m| {
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

fn update_result(r: mongodb::results::UpdateResult) -> UpdateResult {
    UpdateResult {
        matched: r.matched_count,
        modified: r.modified_count,
        upserted_id: r.upserted_id.map(render),
    }
}

/// The plugin's documents client, or the not-granted error.
fn client(env: &PluginEnv) -> Result<&Client, HostError> {
    env.backends
        .documents
        .as_ref()
        .ok_or_else(|| super::not_granted("documents"))
}

impl Host for HostState {
    async fn insert(&mut self, collection: String, doc: String) -> Result<String, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        with_timeout(
            env.host_call_timeout,
            "documents.insert",
            c.insert(&collection, &doc, &Limits::of(&env)),
        )
        .await
    }

    async fn upsert(
        &mut self,
        collection: String,
        filter: String,
        replacement: String,
    ) -> Result<UpdateResult, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        with_timeout(
            env.host_call_timeout,
            "documents.upsert",
            c.upsert(&collection, &filter, &replacement, &Limits::of(&env)),
        )
        .await
    }

    async fn update(
        &mut self,
        collection: String,
        filter: String,
        update: String,
        upsert: bool,
        many: bool,
    ) -> Result<UpdateResult, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        with_timeout(
            env.host_call_timeout,
            "documents.update",
            c.update(
                &collection,
                &filter,
                &update,
                (upsert, many),
                &Limits::of(&env),
            ),
        )
        .await
    }

    async fn delete(
        &mut self,
        collection: String,
        filter: String,
        many: bool,
    ) -> Result<u64, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        with_timeout(
            env.host_call_timeout,
            "documents.delete",
            c.delete(&collection, &filter, many, &Limits::of(&env)),
        )
        .await
    }

    async fn find(
        &mut self,
        collection: String,
        filter: String,
        options: FindOptions,
    ) -> Result<Vec<String>, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        with_timeout(
            env.host_call_timeout,
            "documents.find",
            c.find(&collection, &filter, options, &Limits::of(&env)),
        )
        .await
    }

    async fn find_one(
        &mut self,
        collection: String,
        filter: String,
    ) -> Result<Option<String>, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        with_timeout(
            env.host_call_timeout,
            "documents.find-one",
            c.find_one(&collection, &filter, &Limits::of(&env)),
        )
        .await
    }

    async fn count(&mut self, collection: String, filter: String) -> Result<u64, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        with_timeout(
            env.host_call_timeout,
            "documents.count",
            c.count(&collection, &filter, &Limits::of(&env)),
        )
        .await
    }

    async fn bulk_write(
        &mut self,
        collection: String,
        ops: Vec<WriteOp>,
        ordered: bool,
    ) -> Result<BulkResult, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        with_timeout(
            env.host_call_timeout,
            "documents.bulk-write",
            c.bulk_write(&collection, ops, ordered, &Limits::of(&env)),
        )
        .await
    }

    async fn put_blob(
        &mut self,
        bucket: String,
        id: String,
        content_type: String,
        data: Vec<u8>,
        metadata: String,
    ) -> Result<BlobInfo, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        with_timeout(
            env.host_call_timeout,
            "documents.put-blob",
            c.put_blob(
                &bucket,
                id,
                content_type,
                data,
                &metadata,
                &Limits::of(&env),
            ),
        )
        .await
    }

    async fn get_blob(&mut self, bucket: String, id: String) -> Result<Option<Blob>, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        with_timeout(
            env.host_call_timeout,
            "documents.get-blob",
            c.get_blob(&bucket, &id, &Limits::of(&env)),
        )
        .await
    }

    async fn stat_blob(
        &mut self,
        bucket: String,
        id: String,
    ) -> Result<Option<BlobInfo>, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        with_timeout(
            env.host_call_timeout,
            "documents.stat-blob",
            c.stat_blob(&bucket, &id, &Limits::of(&env)),
        )
        .await
    }

    async fn delete_blob(&mut self, bucket: String, id: String) -> Result<bool, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        with_timeout(
            env.host_call_timeout,
            "documents.delete-blob",
            c.delete_blob(&bucket, &id, &Limits::of(&env)),
        )
        .await
    }
}

// --- Scope -------------------------------------------------------------------------------

/// `Ok` when `grant` lists `collection`, else `denied` naming both.
fn check_collection(grant: &Grant, plugin: &str, collection: &str) -> Result<(), HostError> {
    if grant.collections.iter().any(|c| c == collection) {
        Ok(())
    } else {
        Err(HostError::Denied(format!(
            "plugin `{plugin}` may not use collection `{collection}`: \
             grants.documents.collections is {:?}",
            grant.collections
        )))
    }
}

/// `Ok` when `grant` lists `bucket`, else `denied` naming both.
fn check_bucket(grant: &Grant, plugin: &str, bucket: &str) -> Result<(), HostError> {
    if grant.buckets.iter().any(|b| b == bucket) {
        Ok(())
    } else {
        Err(HostError::Denied(format!(
            "plugin `{plugin}` may not use blob bucket `{bucket}`: \
             grants.documents.buckets is {:?}",
            grant.buckets
        )))
    }
}

// --- Documents in and out ----------------------------------------------------------------

/// A BSON value as relaxed Extended JSON text.
fn render(value: Bson) -> String {
    value.into_relaxed_extjson().to_string()
}

/// A raw document from the server as relaxed Extended JSON text.
fn render_raw(raw: &RawDocumentBuf) -> Result<String, HostError> {
    let doc = raw
        .to_document()
        .map_err(|e| HostError::Other(format!("documents: the server sent malformed BSON: {e}")))?;
    Ok(render(Bson::Document(doc)))
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(60) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

// --- Errors ------------------------------------------------------------------------------

/// The HostError kinds a server error code maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Denied,
    Invalid,
    Conflict,
    Unavailable,
    Timeout,
    Other,
}

impl Kind {
    fn into_error(self, message: String) -> HostError {
        match self {
            Kind::Denied => HostError::Denied(message),
            Kind::Invalid => HostError::Invalid(message),
            Kind::Conflict => HostError::Conflict(message),
            Kind::Unavailable => HostError::Unavailable(message),
            Kind::Timeout => HostError::Timeout(message),
            Kind::Other => HostError::Other(message),
        }
    }
}

/// What a MongoDB server error code means to a plugin. Codes from the server's
/// `error_codes.yml`, which FerretDB reuses.
fn classify_code(code: i32) -> Kind {
    match code {
        // DuplicateKey, and the legacy duplicate-key codes.
        11000 | 11001 | 12582 => Kind::Conflict,
        // DocumentValidationFailure: a collection validator's check failed.
        121 => Kind::Conflict,
        // Unauthorized, AuthenticationFailed, Atlas's AtlasError for a missing privilege.
        13 | 18 | 8000 => Kind::Denied,
        // MaxTimeMSExpired, ExceededTimeLimit.
        50 | 262 => Kind::Timeout,
        // HostUnreachable, HostNotFound, NetworkTimeout, ShutdownInProgress,
        // PrimarySteppedDown, SocketException, NotWritablePrimary, InterruptedAtShutdown,
        // InterruptedDueToReplStateChange, NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary,
        // StaleConfig, WriteConcernFailed, ExceededMemoryLimit is not here (the query's fault).
        6 | 7 | 89 | 91 | 189 | 9001 | 10107 | 11600 | 11602 | 13435 | 13436 | 13388 | 64 => {
            Kind::Unavailable
        }
        // BadValue, NoSuchKey, FailedToParse, TypeMismatch, Overflow, IllegalOperation,
        // InvalidBSON, PathNotViable, InvalidPath, ConflictingUpdateOperators,
        // DollarPrefixedFieldName, InvalidIdField, NotSingleValueField, EmptyFieldName,
        // DottedFieldName, ImmutableField, InvalidOptions, InvalidNamespace,
        // InvalidPipelineOperator, Location codes for malformed queries and sorts, and
        // NotImplemented (FerretDB: an operator it lacks, which no retry will bring),
        // BSONObjectTooLarge.
        2 | 4 | 9 | 14 | 15 | 20 | 22 | 28 | 30 | 40 | 52 | 53 | 54 | 56 | 57 | 66 | 72 | 73
        | 168 | 238 | 10334 | 15974 | 15975 | 16410 | 17287 | 31249 | 31250 | 31253 | 31254
        | 51024 => Kind::Invalid,
        _ => Kind::Other,
    }
}

/// The server's error code and a one-line description, looking through the error's
/// sources (the driver wraps a server error in, e.g., a pool-cleared error).
fn server_error(error: &MongoError) -> Option<(i32, String)> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(e) = e.downcast_ref::<MongoError>() {
            let found = match &*e.kind {
                MongoErrorKind::Command(c) => Some((
                    c.code,
                    format!("{} ({}): {}", c.code_name, c.code, c.message),
                )),
                MongoErrorKind::Write(WriteFailure::WriteError(w)) => Some((
                    w.code,
                    format!(
                        "{} ({}): {}",
                        w.code_name.as_deref().unwrap_or("WriteError"),
                        w.code,
                        w.message
                    ),
                )),
                MongoErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some((
                    w.code,
                    format!("write concern {} ({}): {}", w.code_name, w.code, w.message),
                )),
                MongoErrorKind::InsertMany(f) => f
                    .write_errors
                    .as_deref()
                    .and_then(|errors| errors.first())
                    .map(|w| {
                        (
                            w.code,
                            format!(
                                "{} ({}): {}",
                                w.code_name.as_deref().unwrap_or("WriteError"),
                                w.code,
                                w.message
                            ),
                        )
                    })
                    .or_else(|| {
                        f.write_concern_error.as_ref().map(|w| {
                            (
                                w.code,
                                format!(
                                    "write concern {} ({}): {}",
                                    w.code_name, w.code, w.message
                                ),
                            )
                        })
                    }),
                _ => None,
            };
            if found.is_some() {
                return found;
            }
        }
        current = e.source();
    }
    None
}

/// The one mapping of driver errors to host errors; `what` says which call failed.
fn map_error(what: impl fmt::Display, error: MongoError) -> HostError {
    if let Some((code, detail)) = server_error(&error) {
        let mut kind = classify_code(code);
        if kind == Kind::Other
            && (error.contains_label("RetryableWriteError")
                || error.contains_label("TransientTransactionError"))
        {
            kind = Kind::Unavailable;
        }
        return kind.into_error(format!("{what}: {detail}"));
    }
    let kind = match &*error.kind {
        MongoErrorKind::ServerSelection { .. }
        | MongoErrorKind::Io(_)
        | MongoErrorKind::ConnectionPoolCleared { .. }
        | MongoErrorKind::DnsResolve { .. }
        | MongoErrorKind::Shutdown => Kind::Unavailable,
        MongoErrorKind::InvalidArgument { .. }
        | MongoErrorKind::BsonSerialization(_)
        | MongoErrorKind::BsonDeserialization(_) => Kind::Invalid,
        MongoErrorKind::Authentication { .. } => Kind::Denied,
        _ if error.contains_label("RetryableWriteError")
            || error.contains_label("TransientTransactionError") =>
        {
            Kind::Unavailable
        }
        _ => Kind::Other,
    };
    kind.into_error(format!("{what}: {}", error.kind))
}

/// `error` with its message rewritten by `f`, keeping its kind.
fn reword(error: HostError, f: impl FnOnce(String) -> String) -> HostError {
    match error {
        HostError::Denied(m) => HostError::Denied(f(m)),
        HostError::Invalid(m) => HostError::Invalid(f(m)),
        HostError::NotFound(m) => HostError::NotFound(f(m)),
        HostError::Conflict(m) => HostError::Conflict(f(m)),
        HostError::Unavailable(m) => HostError::Unavailable(f(m)),
        HostError::Timeout(m) => HostError::Timeout(f(m)),
        HostError::Other(m) => HostError::Other(f(m)),
        HostError::Trap(t) => HostError::Trap(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson;

    fn grant() -> Grant {
        Grant {
            database: "streaming".into(),
            collections: vec!["videos".into(), "channels".into()],
            buckets: vec!["thumbnails".into()],
        }
    }

    fn scope(g: &Grant) -> Scope<'_> {
        Scope {
            grant: g,
            plugin: "p",
            max_value_bytes: 1 << 20,
        }
    }

    fn parse_document(what: &str, text: &str) -> Result<Document, HostError> {
        scope(&grant()).document(what, text)
    }

    fn parse_update(text: &str) -> Result<Document, HostError> {
        scope(&grant()).update(text)
    }

    fn parse_replacement(text: &str) -> Result<Document, HostError> {
        scope(&grant()).replacement(text)
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

    #[test]
    fn grant_defaults_to_the_streaming_database_and_nothing_else() {
        let g: Grant = toml::from_str("").unwrap();
        assert_eq!(g.database, "streaming");
        assert!(g.collections.is_empty() && g.buckets.is_empty());
        assert!(toml::from_str::<Grant>("tables = []").is_err());
    }

    #[test]
    fn only_granted_collections_pass() {
        assert!(check_collection(&grant(), "p", "videos").is_ok());
        for name in [
            "Videos",
            "videos ",
            "video",
            "videos.files",
            "",
            "thumbnails",
        ] {
            let err = check_collection(&grant(), "p", name).unwrap_err();
            assert!(
                matches!(err, HostError::Denied(ref m) if m.contains("`p`")),
                "{name}"
            );
        }
    }

    #[test]
    fn only_granted_buckets_pass() {
        assert!(check_bucket(&grant(), "p", "thumbnails").is_ok());
        for name in ["videos", "thumbnails.files", "banners", ""] {
            assert!(matches!(
                check_bucket(&grant(), "p", name),
                Err(HostError::Denied(_))
            ));
        }
    }

    #[test]
    fn code_is_found_at_any_depth() {
        let cases = [
            r#"{"$where": "this.a == 1"}"#,
            r#"{"a": {"$function": {"body": "x", "args": [], "lang": "js"}}}"#,
            r#"{"$expr": {"$and": [{"$eq": [1, 1]}, {"$function": {}}]}}"#,
            r#"{"$or": [{"a": 1}, {"b": [{"c": {"$accumulator": {}}}]}]}"#,
            r#"{"a": {"$code": "function() {}"}}"#,
            r#"{"a": [[{"$code": "f()", "$scope": {}}]]}"#,
        ];
        for case in cases {
            let err = parse_document("the filter", case).unwrap_err();
            assert!(matches!(err, HostError::Denied(_)), "{case}: {err}");
        }
    }

    #[test]
    fn plain_values_are_not_code() {
        let cases = [
            r#"{"where": "$where", "title": "$function", "tags": ["$accumulator"]}"#,
            r#"{"a": {"$gt": 1}, "b": {"$in": [1, 2]}, "$expr": {"$eq": ["$x", "$y"]}}"#,
        ];
        for case in cases {
            assert!(parse_document("the filter", case).is_ok(), "{case}");
        }
    }

    #[test]
    fn documents_parse_as_relaxed_extended_json() {
        let doc = parse_document(
            "d",
            r#"{"_id": {"$oid": "65f000000000000000000001"}, "at": {"$date": "2024-01-02T03:04:05Z"},
                "n": 1, "big": 5000000000, "x": 1.5, "bin": {"$binary": {"base64": "AAE=", "subType": "00"}}}"#,
        )
        .unwrap();
        assert!(matches!(doc.get("_id"), Some(Bson::ObjectId(_))));
        assert!(matches!(doc.get("at"), Some(Bson::DateTime(_))));
        assert_eq!(doc.get("n"), Some(&Bson::Int32(1)));
        assert_eq!(doc.get("big"), Some(&Bson::Int64(5_000_000_000)));
        assert_eq!(doc.get("x"), Some(&Bson::Double(1.5)));
        assert!(matches!(doc.get("bin"), Some(Bson::Binary(b)) if b.bytes == [0, 1]));
        let back: serde_json::Value = serde_json::from_str(&render(Bson::Document(doc))).unwrap();
        assert_eq!(back["_id"]["$oid"], "65f000000000000000000001");
        assert_eq!(back["at"]["$date"], "2024-01-02T03:04:05Z");
        assert_eq!(back["big"], 5_000_000_000_i64);
    }

    #[test]
    fn malformed_documents_are_invalid() {
        for case in [
            "",
            "{",
            "[1]",
            "42",
            r#""s""#,
            r#"{"$oid": "65f000000000000000000001"}"#,
            r#"{"a": {"$date": "not a date"}}"#,
        ] {
            assert!(
                matches!(parse_document("d", case), Err(HostError::Invalid(_))),
                "{case}"
            );
        }
    }

    #[test]
    fn updates_are_operators_and_replacements_are_not() {
        assert!(parse_update(r#"{"$set": {"a": 1}, "$inc": {"n": 1}}"#).is_ok());
        for bad in ["{}", r#"{"a": 1}"#, r#"{"$set": {"a": 1}, "b": 2}"#] {
            assert!(
                matches!(parse_update(bad), Err(HostError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(parse_replacement(r#"{"a": 1}"#).is_ok());
        assert!(parse_replacement("{}").is_ok());
        assert!(matches!(
            parse_replacement(r#"{"a": 1, "$set": {"b": 1}}"#),
            Err(HostError::Invalid(_))
        ));
        assert!(matches!(
            parse_update(r#"{"$set": {"$where": 1}}"#),
            Err(HostError::Denied(_))
        ));
    }

    fn command_error(code: i32, name: &str) -> MongoError {
        let e: mongodb::error::CommandError =
            bson::from_document(doc! { "code": code, "codeName": name, "errmsg": "boom" }).unwrap();
        MongoError::from(MongoErrorKind::Command(e))
    }

    fn write_error(code: i32) -> MongoError {
        let e: mongodb::error::WriteError =
            bson::from_document(doc! { "code": code, "errmsg": "E11000 duplicate key" }).unwrap();
        MongoError::from(MongoErrorKind::Write(WriteFailure::WriteError(e)))
    }

    #[test]
    fn errors_map_to_kinds() {
        assert!(matches!(
            map_error("w", write_error(11000)),
            HostError::Conflict(ref m) if m.starts_with("w: ") && m.contains("duplicate key")
        ));
        assert!(matches!(
            map_error("c", command_error(13, "Unauthorized")),
            HostError::Denied(_)
        ));
        assert!(matches!(
            map_error("c", command_error(2, "BadValue")),
            HostError::Invalid(ref m) if m.contains("BadValue (2): boom")
        ));
        assert!(matches!(
            map_error("c", command_error(238, "NotImplemented")),
            HostError::Invalid(_)
        ));
        let stepped_down = command_error(189, "PrimarySteppedDown");
        assert!(map_error("c", stepped_down).is_transient());
        assert!(matches!(
            map_error("c", command_error(50, "MaxTimeMSExpired")),
            HostError::Timeout(_)
        ));
        assert!(matches!(
            map_error("c", command_error(99999, "Whatever")),
            HostError::Other(_)
        ));
        let io = MongoError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let io = map_error("io", io);
        assert!(matches!(io, HostError::Unavailable(_)) && io.is_transient());
    }

    #[test]
    fn reword_keeps_the_kind() {
        let e = reword(HostError::Conflict("dup".into()), |m| format!("op 3: {m}"));
        assert!(matches!(e, HostError::Conflict(ref m) if m == "op 3: dup"));
    }
}
