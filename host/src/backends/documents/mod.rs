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
//! timeout, so the server stops the work when the host stops waiting. A `find` that only
//! looks documents up by `_id` is read whichever way the server answers faster (`keyed`).
//!
//! The server is FerretDB 1.24 locally and MongoDB 7 under docker compose, so only what both
//! speak is used: plain CRUD commands, `count_documents` (an aggregation of `$match` and
//! `$group`), and the `insert`/`update`/`delete` write commands, which `bulk-write` sends
//! in runs of at most [`STATEMENTS_PER_COMMAND`] statements (the driver's client-level
//! `bulk_write` needs MongoDB 8, and FerretDB wedges on long commands: see there).
//!
//! Here: the grant, the [`Documents`] backend unit, the shared client and the per-plugin
//! [`Client`] with its single-document calls. By job, beside it:
//!
//! - `scope`: what a plugin's arguments may hold (the collection and bucket checks, the
//!   screening of filters, updates and pipelines);
//! - `bulk`: `bulk-write`, in bounded write commands;
//! - `blobs`: GridFS blobs, and how they are stored;
//! - `keyed`: reading documents by a list of keys, the way the server answers faster;
//! - `errors`: the one mapping of driver and server errors to [`HostError`] kinds;
//! - `host`: the generated `Host` trait, as the plugin calls it.

mod blobs;
mod bulk;
mod errors;
mod host;
mod keyed;
mod scope;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::options::FindOptions as MongoFindOptions;
use serde::Deserialize;
use tokio::sync::{Semaphore, SemaphorePermit};

use self::errors::map_error;
use self::scope::{Scope, check_bucket, check_collection};

pub use self::bulk::{MAX_POOL_SIZE, STATEMENTS_PER_COMMAND};

use super::{Backend, Data, GrantProblem, Settings, view};
use crate::bindings::polyhost::platform::documents::{self as wit, FindOptions, UpdateResult};
use crate::budget::ResultBudget;
use crate::error::HostError;
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

/// How many of a plugin's `max_value_bytes` its blob writes may hold at once. Blob writes
/// run to their end even when their call is abandoned (see `blobs`), so a plugin that keeps
/// calling `put-blobs` under a short host-call timeout would otherwise make the host hold
/// every abandoned call's bytes at once (up to [`MAX_IN_FLIGHT`] calls of up to 256 blobs).
/// A write waits for its bytes' share within its call's timeout; one call larger than the
/// whole budget takes all of it.
pub const BLOB_VALUES_IN_FLIGHT: u64 = 16;

/// The documents backend: MongoDB documents and GridFS blobs, one client per host.
pub struct Documents;

impl Backend for Documents {
    type Grant = Grant;
    type Shared = Shared;
    type Client = Client;

    const SERVICE: &'static str = "MongoDB";
    const IMPORTS: &'static [&'static str] = &["polyhost:platform/documents"];
    const GRANT_LINE: &'static str =
        r#"documents = { database = "<database>", collections = ["<collection>"] }"#;

    fn check_grant(_grant: &Grant) -> Vec<GrantProblem> {
        // Names are matched exactly, so no name can widen the grant.
        Vec::new()
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
        _limits: &crate::manifest::Limits,
    ) -> anyhow::Result<Client> {
        Ok(Client::new(shared, plugin, grant))
    }

    fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, Data<Self>>(linker, view::<Self>)
    }
}

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
    /// The bytes its blob writes may hold at once, in KiB, made with the limits of its first
    /// blob write ([`BLOB_VALUES_IN_FLIGHT`]): the semaphore and its size.
    blob_budget: Arc<std::sync::OnceLock<(Arc<Semaphore>, u32)>>,
    /// The granted GridFS buckets, built on first use (see `blobs`).
    buckets:
        Arc<std::sync::Mutex<std::collections::HashMap<String, mongodb::gridfs::GridFsBucket>>>,
    /// The buckets whose indexes `put-blobs` has made (see `blobs`).
    indexed: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Per collection, what reading documents by a list of keys has cost (see `keyed`).
    keyed_reads: Arc<keyed::Learnt>,
}

impl Client {
    /// Binds `plugin`'s `grant` to the shared client.
    pub fn new(shared: &Shared, plugin: &str, grant: &Grant) -> Client {
        Client {
            plugin: plugin.into(),
            grant: Arc::new(grant.clone()),
            db: shared.client.database(&grant.database),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            blob_budget: Arc::default(),
            buckets: Arc::default(),
            indexed: Arc::default(),
            keyed_reads: Arc::default(),
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

    /// An in-flight permit that may outlive this borrow (writes run to their end in a task
    /// of their own).
    async fn owned_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, HostError> {
        // The semaphore is never closed; an error here is a host bug.
        self.in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| HostError::trap(wasmtime::Error::msg(format!("documents: {e}"))))
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>, HostError> {
        // The semaphore is never closed; an error here is a host bug.
        self.in_flight
            .acquire()
            .await
            .map_err(|e| HostError::trap(wasmtime::Error::msg(format!("documents: {e}"))))
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
        let lookup = keyed::id_lookup(&filter, &find);
        let _permit = self.permit().await?;
        let started = Instant::now();
        let what = || format!("find in `{collection}`");
        // Raw documents, so each is counted at its BSON length as it arrives; the driver
        // holds one server batch at a time (at most 16 MiB), never the whole answer.
        let coll = coll.clone_with_type::<RawDocumentBuf>();
        let mut reading = None;
        let mut results = match lookup {
            // A lookup by ids: read the way this server answers faster (see `keyed`); what
            // it cost is taken in however the read ends (`keyed::Reading`).
            Some(ids) => {
                let (results, under_way) = self.keyed_reads.read(&coll, "_id", ids, find).await;
                reading = Some(under_way);
                results
            }
            None => coll
                .find(filter)
                .with_options(find)
                .await
                .map_err(|e| map_error(what(), e))?
                .boxed(),
        };
        let mut budget = ResultBudget::new(limits.max_result_bytes);
        let mut found = Vec::new();
        while let Some(raw) = results.try_next().await.map_err(|e| map_error(what(), e))? {
            budget.take(raw.as_bytes().len(), &format!("documents.{}", what()))?;
            found.push(render_raw(&raw)?);
        }
        if let Some(reading) = reading {
            reading.finish();
        }
        limits.answered_in_time(started, &what())?;
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
        let started = Instant::now();
        let found = coll
            .clone_with_type::<RawDocumentBuf>()
            .find_one(filter)
            .max_time(limits.max_time)
            .await
            .map_err(|e| map_error(what(), e))?;
        limits.answered_in_time(started, &what())?;
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
        let started = Instant::now();
        let n = coll
            .count_documents(filter)
            .max_time(limits.max_time)
            .await
            .map_err(|e| map_error(format_args!("count in `{collection}`"), e))?;
        limits.answered_in_time(started, &format!("count in `{collection}`"))?;
        Ok(n)
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
    /// A read that answers only once its `maxTimeMS` has run out is a timeout, whatever
    /// it carries: FerretDB 1.24 may end a cursor at the deadline with the documents read
    /// so far instead of error 50, and a plugin must never take a cut answer for a whole one.
    fn answered_in_time(&self, started: Instant, what: &str) -> Result<(), HostError> {
        if started.elapsed() >= self.max_time {
            return Err(HostError::timeout(format!(
                "{what}: no complete answer within maxTimeMS ({} ms)",
                self.max_time.as_millis()
            )));
        }
        Ok(())
    }

    fn of(env: &PluginEnv) -> Limits {
        Limits {
            max_time: env.host_call_timeout,
            max_result_bytes: env.max_result_bytes,
            max_value_bytes: env.max_value_bytes,
        }
    }
}

fn update_result(r: mongodb::results::UpdateResult) -> UpdateResult {
    UpdateResult {
        matched: r.matched_count,
        modified: r.modified_count,
        upserted_id: r.upserted_id.map(render),
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
        .map_err(|e| HostError::other(format!("documents: the server sent malformed BSON: {e}")))?;
    Ok(render(Bson::Document(doc)))
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(60) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_defaults_to_the_streaming_database_and_nothing_else() {
        let g: Grant = toml::from_str("").unwrap();
        assert_eq!(g.database, "streaming");
        assert!(g.collections.is_empty() && g.buckets.is_empty());
        assert!(toml::from_str::<Grant>("tables = []").is_err());
    }
}
