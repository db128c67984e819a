//! MongoDB documents and blobs (`polyhost:platform/documents`), scoped to granted collections
//! and blob buckets.
//!
//! Documents cross the WIT boundary as relaxed Extended JSON text and are converted to BSON
//! here, once, with the driver's own `bson` crate (`Bson::try_from(serde_json::Value)` in,
//! `into_relaxed_extjson` out), so `{"$oid": …}`, `{"$date": …}` and friends mean what they
//! mean to every MongoDB tool.
//!
//! Every call is checked before it reaches the server, in this order: the collection or
//! bucket must be granted (else `denied`), every document argument must parse (else
//! `invalid`) and must not carry code (`$where`, `$function`, `$accumulator`, or a
//! JavaScript value; else `denied`), and updates must be operators while replacements must
//! not be (else `invalid`). Only then is a permit taken from the plugin's in-flight bound.
//!
//! The server is FerretDB 1.24 locally and MongoDB 7 under docker compose, so only what both
//! speak is used: plain CRUD commands, `count_documents` (an aggregation of `$match` and
//! `$group`), and `insert_many`. `bulk-write` is issued op by op (runs of inserts as one
//! `insert_many`) because the driver's client-level `bulk_write` needs MongoDB 8.
//!
//! Blobs live in [`blobs`]; see there for how they are stored.

mod blobs;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{Error as MongoError, ErrorKind as MongoErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, FindOptions as MongoFindOptions};
use serde::Deserialize;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::Settings;
use crate::bindings::polyhost::platform::documents::{
    Blob, BlobInfo, BulkResult, FindOptions, Host, UpdateResult, WriteOp,
};
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
        let mut options = ClientOptions::parse(&settings.mongodb_uri)
            .await
            .context("parsing the MongoDB connection string")?;
        options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        options.connect_timeout = Some(SERVER_SELECTION_TIMEOUT);
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
}

impl Client {
    /// Binds `plugin`'s `grant` to the shared client.
    pub fn new(shared: &Shared, plugin: &str, grant: &Grant) -> Client {
        Client {
            plugin: plugin.into(),
            grant: Arc::new(grant.clone()),
            db: shared.client.database(&grant.database),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// The granted collection `name`, or `denied`.
    fn collection(&self, name: &str) -> Result<mongodb::Collection<Document>, HostError> {
        check_collection(&self.grant, &self.plugin, name)?;
        Ok(self.db.collection(name))
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>, HostError> {
        // The semaphore is never closed; an error here is a host bug.
        self.in_flight
            .acquire()
            .await
            .map_err(|e| HostError::Trap(wasmtime::Error::msg(format!("documents: {e}"))))
    }

    async fn insert(&self, collection: &str, doc: &str) -> Result<String, HostError> {
        let coll = self.collection(collection)?;
        let doc = parse_document("the document", doc)?;
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
    ) -> Result<UpdateResult, HostError> {
        let coll = self.collection(collection)?;
        let filter = parse_document("the filter", filter)?;
        let replacement = parse_replacement(replacement)?;
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
        upsert: bool,
        many: bool,
    ) -> Result<UpdateResult, HostError> {
        let coll = self.collection(collection)?;
        let filter = parse_document("the filter", filter)?;
        let update = parse_update(update)?;
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

    async fn delete(&self, collection: &str, filter: &str, many: bool) -> Result<u64, HostError> {
        let coll = self.collection(collection)?;
        let filter = parse_document("the filter", filter)?;
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
    ) -> Result<Vec<String>, HostError> {
        let coll = self.collection(collection)?;
        let filter = parse_document("the filter", filter)?;
        let mut find = MongoFindOptions::default();
        find.sort = parse_optional("the sort", options.sort.as_deref())?;
        find.projection = parse_optional("the projection", options.projection.as_deref())?;
        find.skip = options.skip;
        match options.limit {
            // MongoDB reads a limit of 0 as "no limit"; the WIT promises at most `limit`.
            Some(0) => return Ok(Vec::new()),
            // A negative limit means something else again (one batch, then close).
            Some(limit) => find.limit = Some(i64::try_from(limit).unwrap_or(i64::MAX)),
            None => {}
        }
        let _permit = self.permit().await?;
        let what = || format!("find in `{collection}`");
        let cursor = coll
            .find(filter)
            .with_options(find)
            .await
            .map_err(|e| map_error(what(), e))?;
        cursor
            .map_ok(|doc| render(Bson::Document(doc)))
            .try_collect()
            .await
            .map_err(|e| map_error(what(), e))
    }

    async fn find_one(&self, collection: &str, filter: &str) -> Result<Option<String>, HostError> {
        let coll = self.collection(collection)?;
        let filter = parse_document("the filter", filter)?;
        let _permit = self.permit().await?;
        let found = coll
            .find_one(filter)
            .await
            .map_err(|e| map_error(format_args!("find-one in `{collection}`"), e))?;
        Ok(found.map(|doc| render(Bson::Document(doc))))
    }

    async fn count(&self, collection: &str, filter: &str) -> Result<u64, HostError> {
        let coll = self.collection(collection)?;
        let filter = parse_document("the filter", filter)?;
        let _permit = self.permit().await?;
        coll.count_documents(filter)
            .await
            .map_err(|e| map_error(format_args!("count in `{collection}`"), e))
    }

    async fn bulk_write(
        &self,
        collection: &str,
        ops: Vec<WriteOp>,
        ordered: bool,
    ) -> Result<BulkResult, HostError> {
        let coll = self.collection(collection)?;
        // Every op is checked before the first is issued, so a malformed op cannot leave the
        // ops before it applied.
        let ops = ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| Op::parse(op).map_err(|e| reword(e, |m| format!("op {i}: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let _permit = self.permit().await?;
        let mut bulk = Bulk {
            coll: &coll,
            ordered,
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
    fn parse(op: WriteOp) -> Result<Op, HostError> {
        Ok(match op {
            WriteOp::Insert(doc) => Op::Insert(parse_document("the document", &doc)?),
            WriteOp::Replace(r) => Op::Replace {
                filter: parse_document("the filter", &r.filter)?,
                replacement: parse_replacement(&r.replacement)?,
                upsert: r.upsert,
            },
            WriteOp::Update(u) => Op::Update {
                filter: parse_document("the filter", &u.filter)?,
                update: parse_update(&u.update)?,
                upsert: u.upsert,
                many: u.many,
            },
            WriteOp::Delete(d) => Op::Delete {
                filter: parse_document("the filter", &d.filter)?,
                many: d.many,
            },
        })
    }
}

/// A `bulk-write` in progress: what it did so far and which ops failed.
struct Bulk<'a> {
    coll: &'a mongodb::Collection<Document>,
    ordered: bool,
    done: BulkResult,
    /// (op index, error), in op order.
    failures: Vec<(usize, HostError)>,
}

impl Bulk<'_> {
    /// Issues `ops` in order, runs of inserts as one `insert_many`; stops at the first
    /// failure when ordered.
    async fn run(&mut self, ops: Vec<Op>) {
        let mut ops = ops.into_iter().enumerate().peekable();
        while let Some((index, op)) = ops.next() {
            let ok = match op {
                Op::Insert(first) => {
                    let mut docs = vec![first];
                    while let Some((_, Op::Insert(_))) = ops.peek() {
                        if let Some((_, Op::Insert(doc))) = ops.next() {
                            docs.push(doc);
                        }
                    }
                    self.insert_run(index, docs).await
                }
                op => self.single(index, op).await,
            };
            if !ok && self.ordered {
                return;
            }
        }
    }

    /// Inserts `docs` (ops `first..first + docs.len()`); false when any failed.
    async fn insert_run(&mut self, first: usize, docs: Vec<Document>) -> bool {
        let count = docs.len() as u64;
        match self.coll.insert_many(docs).ordered(self.ordered).await {
            Ok(result) => {
                self.done.inserted += result.inserted_ids.len() as u64;
                true
            }
            Err(error) => {
                let written = match &*error.kind {
                    MongoErrorKind::InsertMany(failure) => {
                        let errors = failure.write_errors.as_deref().unwrap_or_default();
                        if self.ordered {
                            // An ordered insert stops at its first failure: the ones before it
                            // were written.
                            errors.first().map_or(count, |e| e.index as u64)
                        } else {
                            count.saturating_sub(errors.len() as u64)
                        }
                    }
                    // No reply (the connection failed): nothing is known to be written.
                    _ => 0,
                };
                self.done.inserted += written;
                match &*error.kind {
                    MongoErrorKind::InsertMany(failure)
                        if failure.write_errors.as_ref().is_some_and(|e| !e.is_empty()) =>
                    {
                        for e in failure.write_errors.as_deref().unwrap_or_default() {
                            let kind = classify_code(e.code);
                            let message = format!(
                                "insert into `{}`: {} ({}): {}",
                                self.coll.name(),
                                e.code_name.as_deref().unwrap_or("WriteError"),
                                e.code,
                                e.message
                            );
                            self.failures
                                .push((first + e.index, kind.into_error(message)));
                        }
                    }
                    _ => self.failures.push((
                        first,
                        map_error(format_args!("insert into `{}`", self.coll.name()), error),
                    )),
                }
                false
            }
        }
    }

    /// Issues one non-insert op; false when it failed.
    async fn single(&mut self, index: usize, op: Op) -> bool {
        let coll = self.coll;
        let name = coll.name();
        let outcome = match op {
            Op::Insert(doc) => coll
                .insert_one(doc)
                .await
                .map(|_| self.done.inserted += 1)
                .map_err(|e| map_error(format_args!("insert into `{name}`"), e)),
            Op::Replace {
                filter,
                replacement,
                upsert,
            } => coll
                .replace_one(filter, replacement)
                .upsert(upsert)
                .await
                .map(|r| add_update(&mut self.done, &r))
                .map_err(|e| map_error(format_args!("replace in `{name}`"), e)),
            Op::Update {
                filter,
                update,
                upsert,
                many,
            } => {
                let action = if many {
                    coll.update_many(filter, update)
                } else {
                    coll.update_one(filter, update)
                };
                action
                    .upsert(upsert)
                    .await
                    .map(|r| add_update(&mut self.done, &r))
                    .map_err(|e| map_error(format_args!("update in `{name}`"), e))
            }
            Op::Delete { filter, many } => {
                let action = if many {
                    coll.delete_many(filter)
                } else {
                    coll.delete_one(filter)
                };
                action
                    .await
                    .map(|r| self.done.deleted += r.deleted_count)
                    .map_err(|e| map_error(format_args!("delete from `{name}`"), e))
            }
        };
        match outcome {
            Ok(()) => true,
            Err(e) => {
                self.failures.push((index, e));
                false
            }
        }
    }

    /// The result, or the first failure (its kind) reworded to say what else happened.
    fn finish(self, collection: &str) -> Result<BulkResult, HostError> {
        let mut failures = self.failures.into_iter();
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

fn add_update(done: &mut BulkResult, r: &mongodb::results::UpdateResult) {
    done.matched += r.matched_count;
    done.modified += r.modified_count;
    done.upserted += u64::from(r.upserted_id.is_some());
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
            c.insert(&collection, &doc),
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
            c.upsert(&collection, &filter, &replacement),
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
            c.update(&collection, &filter, &update, upsert, many),
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
            c.delete(&collection, &filter, many),
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
            c.find(&collection, &filter, options),
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
            c.find_one(&collection, &filter),
        )
        .await
    }

    async fn count(&mut self, collection: String, filter: String) -> Result<u64, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        with_timeout(
            env.host_call_timeout,
            "documents.count",
            c.count(&collection, &filter),
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
            c.bulk_write(&collection, ops, ordered),
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
            c.put_blob(&bucket, id, content_type, data, &metadata),
        )
        .await
    }

    async fn get_blob(&mut self, bucket: String, id: String) -> Result<Option<Blob>, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        with_timeout(
            env.host_call_timeout,
            "documents.get-blob",
            c.get_blob(&bucket, &id),
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
            c.stat_blob(&bucket, &id),
        )
        .await
    }

    async fn delete_blob(&mut self, bucket: String, id: String) -> Result<bool, HostError> {
        let env = self.env.clone();
        let c = client(&env)?;
        with_timeout(
            env.host_call_timeout,
            "documents.delete-blob",
            c.delete_blob(&bucket, &id),
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

/// The operators that run server-side JavaScript.
const CODE_OPERATORS: [&str; 3] = ["$where", "$function", "$accumulator"];

/// Why `doc` carries code, if it does: an operator of [`CODE_OPERATORS`] as a key at any
/// depth, or a JavaScript value (`{"$code": …}`), which is only ever there to be run.
fn find_code(doc: &Document) -> Option<String> {
    fn in_value(value: &Bson) -> Option<String> {
        match value {
            Bson::Document(d) => find_code(d),
            Bson::Array(items) => items.iter().find_map(in_value),
            Bson::JavaScriptCode(_) | Bson::JavaScriptCodeWithScope(_) => {
                Some("a JavaScript value".to_string())
            }
            _ => None,
        }
    }
    doc.iter().find_map(|(key, value)| {
        if CODE_OPERATORS.contains(&key.as_str()) {
            Some(format!("the operator `{key}`"))
        } else {
            in_value(value)
        }
    })
}

/// Parses `text` (relaxed Extended JSON) as a document; `what` names it in errors. Refuses
/// documents that carry code.
fn parse_document(what: &str, text: &str) -> Result<Document, HostError> {
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| HostError::Invalid(format!("{what} is not valid JSON: {e}")))?;
    if !json.is_object() {
        return Err(HostError::Invalid(format!(
            "{what} must be a JSON object, not `{}`",
            truncate(text)
        )));
    }
    let doc = match Bson::try_from(json) {
        Ok(Bson::Document(doc)) => doc,
        // An object that is itself one Extended JSON value, e.g. `{"$oid": "…"}`.
        Ok(other) => {
            return Err(HostError::Invalid(format!(
                "{what} must be a document, not a single {:?} value",
                other.element_type()
            )));
        }
        Err(e) => {
            return Err(HostError::Invalid(format!(
                "{what} is not valid Extended JSON: {e}"
            )));
        }
    };
    if let Some(code) = find_code(&doc) {
        return Err(HostError::Denied(format!(
            "{what} contains {code}: filters, updates and documents are values, never code"
        )));
    }
    Ok(doc)
}

fn parse_optional(what: &str, text: Option<&str>) -> Result<Option<Document>, HostError> {
    text.map(|t| parse_document(what, t)).transpose()
}

/// An update: a non-empty document of update operators only (`$set`, `$inc`, …).
fn parse_update(text: &str) -> Result<Document, HostError> {
    let update = parse_document("the update", text)?;
    if update.is_empty() {
        return Err(HostError::Invalid("the update is empty".to_string()));
    }
    if let Some(key) = update.keys().find(|k| !k.starts_with('$')) {
        return Err(HostError::Invalid(format!(
            "the update may hold only update operators (`$set`, `$inc`, …), not the field \
             `{key}`; to replace a whole document use `upsert` or a `replace` op"
        )));
    }
    Ok(update)
}

/// A replacement: a whole document, without update operators.
fn parse_replacement(text: &str) -> Result<Document, HostError> {
    let replacement = parse_document("the replacement", text)?;
    if let Some(key) = replacement.keys().find(|k| k.starts_with('$')) {
        return Err(HostError::Invalid(format!(
            "the replacement is a whole document and may not hold the operator `{key}`; \
             to apply operators use `update`"
        )));
    }
    Ok(replacement)
}

/// A BSON value as relaxed Extended JSON text.
fn render(value: Bson) -> String {
    value.into_relaxed_extjson().to_string()
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
