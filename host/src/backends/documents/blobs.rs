//! Blobs (`put-blob`, `get-blob`, `stat-blob`, `delete-blob`) in GridFS.
//!
//! A granted bucket `b` is the driver's `GridFsBucket` named `b`: the collections `b.files`
//! and `b.chunks`. GridFS was chosen over a plain collection of whole documents because it
//! works on both servers this host meets (FerretDB 1.24, checked by `tests/documents.rs`,
//! and MongoDB 7), because every MongoDB tool (`mongofiles`, Compass, other drivers) reads
//! the blobs, and because a blob is not held to the 16 MiB document limit.
//!
//! A blob's id is the GridFS `filename`. GridFS has no replace, so `put-blob` uploads a new
//! file revision (a fresh ObjectId `_id`) and then removes the older revisions of that id:
//! a reader sees the old blob or the new one, never none and never half of one. "Newest" is
//! the greatest (`uploadDate`, `_id`) for readers and for that cleanup alike, so racing puts
//! settle on one winner rather than deleting each other. The host's own fields go in the
//! file's `metadata`: `{contentType, sha256, metadata}`, the last being the plugin's object.
//!
//! `put-blobs` stores many blobs in the same layout without the driver's upload stream (a
//! round trip per chunk command and per file entry, per blob): every blob's chunks in
//! `insert` commands of at most [`STATEMENTS_PER_COMMAND`](super::STATEMENTS_PER_COMMAND),
//! then every file entry (a reader never meets an entry without its chunks), then the
//! revisions of the ids read (whichever way the server answers faster: see
//! [`super::keyed`]) and the older ones removed at once. The bucket's indexes (the
//! driver's, by the driver's names) are made once per client before its first such write.

use std::time::Duration;

use futures::{AsyncReadExt as _, AsyncWriteExt as _, TryStreamExt as _};
use mongodb::bson::{Bson, Document, doc, oid::ObjectId};
use mongodb::error::{Error as MongoError, ErrorKind as MongoErrorKind, GridFsErrorKind};
use mongodb::gridfs::{FilesCollectionDocument, GridFsBucket};
use mongodb::options::{FindOptions, GridFsBucketOptions};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use tokio::sync::Semaphore;

use super::bulk::insert_all;
use super::keyed;
use super::{Client, Limits, check_bucket, map_error, render};
use crate::bindings::polyhost::platform::documents::{Blob, BlobInfo, NewBlob};
use crate::budget::{self, ResultBudget};
use crate::error::HostError;

/// Keys of the host's fields in a file's `metadata`.
const CONTENT_TYPE: &str = "contentType";
const SHA256: &str = "sha256";
const METADATA: &str = "metadata";

/// The media type of a file another tool stored without one.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// How often `get-blob` looks again when the revision it found is removed under it by a
/// concurrent `put-blob`.
const READ_ATTEMPTS: usize = 3;

/// The most blobs one `put-blobs` takes.
pub const MAX_BLOBS_PER_CALL: usize = 256;

/// GridFS's chunk size, the driver's default: 255 KiB.
const CHUNK_BYTES: usize = 255 * 1024;

/// One blob of a `put-blobs`, checked and cut into its documents.
struct Prepared {
    file: Document,
    chunks: Vec<Document>,
    info: BlobInfo,
}

impl Client {
    /// The granted bucket `name`, or `denied`. Kept per client: the driver checks a
    /// bucket's indexes on its first upload only, so a bucket built afresh for every call
    /// would cost every `put-blob` one more round trip.
    fn bucket(&self, name: &str) -> Result<GridFsBucket, HostError> {
        check_bucket(&self.grant, &self.plugin, name)?;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets.entry(name.to_string()).or_insert_with(|| {
            let options = GridFsBucketOptions::builder()
                .bucket_name(name.to_string())
                .build();
            self.db.gridfs_bucket(options)
        });
        Ok(bucket.clone())
    }

    pub(super) async fn put_blob(
        &self,
        bucket: &str,
        id: String,
        content_type: String,
        data: Vec<u8>,
        metadata: &str,
        limits: &Limits,
    ) -> Result<BlobInfo, HostError> {
        let gridfs = self.bucket(bucket)?;
        budget::check_value(
            data.len(),
            limits.max_value_bytes,
            &format!("documents.put-blob `{id}`"),
        )?;
        let user = self.scope(limits).document("the metadata", metadata)?;
        let sha256 = hex::encode(Sha256::digest(&data));
        let hold = self.hold_for_writes(data.len(), limits).await?;
        let client = self.clone();
        let bucket = bucket.to_string();
        run_to_end(async move {
            let _hold = hold;
            client
                .store_blob(gridfs, &bucket, id, content_type, data, user, sha256)
                .await
        })
        .await
    }

    /// `put-blob`'s writes: the new revision, then the older ones removed.
    #[allow(clippy::too_many_arguments)]
    async fn store_blob(
        &self,
        gridfs: GridFsBucket,
        bucket: &str,
        id: String,
        content_type: String,
        data: Vec<u8>,
        user: Document,
        sha256: String,
    ) -> Result<BlobInfo, HostError> {
        let what = || format!("put-blob `{id}` in bucket `{bucket}`");

        let file_id = ObjectId::new();
        let mut upload = gridfs
            .open_upload_stream(&id)
            .id(Bson::ObjectId(file_id))
            .metadata(doc! {
                CONTENT_TYPE: &content_type,
                SHA256: &sha256,
                METADATA: user.clone(),
            })
            .await
            .map_err(|e| map_error(what(), e))?;
        if let Err(e) = upload.write_all(&data).await {
            // Removes the chunks written so far; the write's error is the one to report.
            let _ = upload.abort().await;
            return Err(map_io_error(what(), e));
        }
        upload.close().await.map_err(|e| map_io_error(what(), e))?;

        // The new revision is stored and is what readers now see; a failure to remove the
        // older ones only leaves garbage that the next put or delete of this id removes.
        if let Err(e) = prune_older(&gridfs, &id, file_id).await {
            tracing::warn!(
                plugin = %self.plugin,
                bucket,
                id,
                error = %map_error(what(), e),
                "put-blob: could not remove older revisions"
            );
        }
        Ok(BlobInfo {
            id,
            content_type,
            length: data.len() as u64,
            sha256,
            metadata: render(Bson::Document(user)),
        })
    }

    pub(super) async fn put_blobs(
        &self,
        bucket: &str,
        blobs: Vec<NewBlob>,
        limits: &Limits,
    ) -> Result<Vec<BlobInfo>, HostError> {
        check_bucket(&self.grant, &self.plugin, bucket)?;
        if blobs.len() > MAX_BLOBS_PER_CALL {
            return Err(HostError::invalid(format!(
                "documents.put-blobs: {} blobs, more than the {MAX_BLOBS_PER_CALL} one call takes",
                blobs.len()
            )));
        }
        let mut ids = std::collections::HashSet::new();
        if let Some(twice) = blobs.iter().find(|b| !ids.insert(b.id.as_str())) {
            return Err(HostError::invalid(format!(
                "documents.put-blobs: the id `{}` is given twice",
                twice.id
            )));
        }
        // Every blob is checked before anything is written.
        let scope = self.scope(limits);
        let upload_date = mongodb::bson::DateTime::now();
        let prepared = blobs
            .into_iter()
            .enumerate()
            .map(|(i, blob)| {
                budget::check_value(
                    blob.data.len(),
                    limits.max_value_bytes,
                    &format!("documents.put-blobs `{}`", blob.id),
                )?;
                let user = scope
                    .document("the metadata", &blob.metadata)
                    .map_err(|e| e.context(format_args!("blob {i} (`{}`)", blob.id)))?;
                Ok(prepare(blob, user, upload_date))
            })
            .collect::<Result<Vec<Prepared>, HostError>>()?;
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = prepared
            .iter()
            .map(|p| usize::try_from(p.info.length).unwrap_or(usize::MAX))
            .fold(0usize, usize::saturating_add);
        let hold = self.hold_for_writes(bytes, limits).await?;
        let client = self.clone();
        let bucket = bucket.to_string();
        let max_time = limits.max_time;
        run_to_end(async move {
            let _hold = hold;
            client.store_blobs(&bucket, prepared, max_time).await
        })
        .await
    }

    /// `put-blobs`' writes: every chunk, then every file entry, then the older revisions
    /// removed (see the module docs).
    async fn store_blobs(
        &self,
        bucket: &str,
        prepared: Vec<Prepared>,
        max_time: Duration,
    ) -> Result<Vec<BlobInfo>, HostError> {
        let files = self.db.collection::<Document>(&format!("{bucket}.files"));
        let chunks = self.db.collection::<Document>(&format!("{bucket}.chunks"));
        let what = format!("put-blobs in bucket `{bucket}`");
        self.ensure_indexes(bucket, &files, &chunks)
            .await
            .map_err(|e| map_error(&what, e))?;
        let file_ids: Vec<Bson> = prepared
            .iter()
            .map(|p| p.file.get("_id").cloned().unwrap_or(Bson::Null))
            .collect();
        let (file_docs, chunk_docs, infos) = prepared.into_iter().fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |(mut f, mut c, mut i), p| {
                f.push(p.file);
                c.extend(p.chunks);
                i.push(p.info);
                (f, c, i)
            },
        );
        let stored = async {
            insert_all(
                &self.db,
                &chunks,
                chunk_docs,
                max_time,
                &format!("{what}: chunks"),
            )
            .await?;
            insert_all(
                &self.db,
                &files,
                file_docs,
                max_time,
                &format!("{what}: files"),
            )
            .await
        }
        .await;
        if let Err(e) = stored {
            // Chunks whose file entry was not stored are garbage no reader sees: removed here
            // when possible (a file entry that was stored keeps its chunks).
            if let Err(cleanup) = remove_orphan_chunks(&files, &chunks, &file_ids).await {
                tracing::warn!(plugin = %self.plugin, bucket, error = %map_error(&what, cleanup),
                    "put-blobs: could not remove the chunks of blobs not stored");
            }
            return Err(e);
        }
        let ids: Vec<&str> = infos.iter().map(|i| i.id.as_str()).collect();
        let pruned = prune_older_many(&files, &chunks, &ids, &file_ids, &self.keyed_reads).await;
        if let Err(e) = pruned {
            tracing::warn!(plugin = %self.plugin, bucket, error = %map_error(&what, e),
                "put-blobs: could not remove older revisions");
        }
        Ok(infos)
    }

    /// The bucket's indexes, the ones the driver makes before its first upload (by the same
    /// keys, so it finds them), made once per client and bucket.
    async fn ensure_indexes(
        &self,
        bucket: &str,
        files: &mongodb::Collection<Document>,
        chunks: &mongodb::Collection<Document>,
    ) -> Result<(), MongoError> {
        use mongodb::IndexModel;
        use mongodb::options::IndexOptions;
        let done = |indexed: &std::sync::Mutex<std::collections::HashSet<String>>| {
            indexed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(bucket)
        };
        if done(&self.indexed) {
            return Ok(());
        }
        files
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "filename": 1, "uploadDate": 1 })
                    .build(),
            )
            .await?;
        chunks
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "files_id": 1, "n": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
            )
            .await?;
        self.indexed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(bucket.to_string());
        Ok(())
    }

    pub(super) async fn get_blob(
        &self,
        bucket: &str,
        id: &str,
        limits: &Limits,
    ) -> Result<Option<Blob>, HostError> {
        let gridfs = self.bucket(bucket)?;
        let _permit = self.permit().await?;
        let what = || format!("get-blob `{id}` in bucket `{bucket}`");
        let mut attempt = 1;
        loop {
            let Some(file) = newest(&gridfs, id, limits)
                .await
                .map_err(|e| map_error(what(), e))?
            else {
                return Ok(None);
            };
            // Counted before a byte is read: GridFS checks the chunks against this length.
            let length = usize::try_from(file.length).unwrap_or(usize::MAX);
            ResultBudget::new(limits.max_result_bytes)
                .take(length, &format!("documents.{}", what()))?;
            match read(&gridfs, &file).await {
                Ok(data) => {
                    let info = blob_info(id, file, Some(&data));
                    return Ok(Some(Blob { info, data }));
                }
                // A concurrent put removed this revision after a newer one was stored.
                Err(e) if is_gone(&e) && attempt < READ_ATTEMPTS => attempt += 1,
                Err(e) => return Err(map_error(what(), e)),
            }
        }
    }

    pub(super) async fn stat_blob(
        &self,
        bucket: &str,
        id: &str,
        limits: &Limits,
    ) -> Result<Option<BlobInfo>, HostError> {
        let gridfs = self.bucket(bucket)?;
        let _permit = self.permit().await?;
        let file = newest(&gridfs, id, limits)
            .await
            .map_err(|e| map_error(format_args!("stat-blob `{id}` in bucket `{bucket}`"), e))?;
        Ok(file.map(|file| blob_info(id, file, None)))
    }

    pub(super) async fn delete_blob(
        &self,
        bucket: &str,
        id: &str,
        limits: &Limits,
    ) -> Result<bool, HostError> {
        let gridfs = self.bucket(bucket)?;
        let _permit = self.permit().await?;
        let revisions: Vec<FilesCollectionDocument> = async {
            gridfs
                .find(doc! { "filename": id })
                .max_time(limits.max_time)
                .await?
                .try_collect()
                .await
        }
        .await
        .map_err(|e| map_error(format_args!("delete-blob `{id}` in bucket `{bucket}`"), e))?;
        let mut existed = false;
        for file in revisions {
            existed |= delete_file(&gridfs, file.id).await.map_err(|e| {
                map_error(format_args!("delete-blob `{id}` in bucket `{bucket}`"), e)
            })?;
        }
        Ok(existed)
    }
}

/// A blob's file entry and chunks, as the driver's upload stream writes them.
fn prepare(blob: NewBlob, user: Document, upload_date: mongodb::bson::DateTime) -> Prepared {
    let file_id = ObjectId::new();
    let sha256 = hex::encode(Sha256::digest(&blob.data));
    let chunks = blob
        .data
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(n, bytes)| {
            doc! {
                "_id": ObjectId::new(),
                "files_id": file_id,
                "n": i32::try_from(n).unwrap_or(i32::MAX),
                "data": mongodb::bson::Binary {
                    subtype: mongodb::bson::spec::BinarySubtype::Generic,
                    bytes: bytes.to_vec(),
                },
            }
        })
        .collect();
    let file = doc! {
        "_id": file_id,
        "length": i64::try_from(blob.data.len()).unwrap_or(i64::MAX),
        "chunkSize": i32::try_from(CHUNK_BYTES).unwrap_or(i32::MAX),
        "uploadDate": upload_date,
        "filename": &blob.id,
        "metadata": {
            CONTENT_TYPE: &blob.content_type,
            SHA256: &sha256,
            METADATA: user.clone(),
        },
    };
    let info = BlobInfo {
        length: blob.data.len() as u64,
        id: blob.id,
        content_type: blob.content_type,
        sha256,
        metadata: render(Bson::Document(user)),
    };
    Prepared { file, chunks, info }
}

/// What a blob write holds while it runs, answered or abandoned: one of the plugin's
/// in-flight permits and its bytes' share of the plugin's blob budget, counted in
/// `polyhost_blob_bytes_in_flight`.
pub(super) struct WriteHold {
    _call: tokio::sync::OwnedSemaphorePermit,
    _bytes: tokio::sync::OwnedSemaphorePermit,
    gauge: prometheus_client::metrics::gauge::Gauge,
    bytes: i64,
}

impl Drop for WriteHold {
    fn drop(&mut self) {
        self.gauge.dec_by(self.bytes);
    }
}

impl Client {
    /// Waits for an in-flight permit and for `bytes` of the plugin's blob budget
    /// ([`super::BLOB_VALUES_IN_FLIGHT`] times its `max_value_bytes`; all of it for a write
    /// larger than that).
    async fn hold_for_writes(&self, bytes: usize, limits: &Limits) -> Result<WriteHold, HostError> {
        let call = self.owned_permit().await?;
        let (budget, size) = self.blob_budget.get_or_init(|| {
            let kib = (super::BLOB_VALUES_IN_FLIGHT.saturating_mul(limits.max_value_bytes as u64))
                .div_ceil(1024)
                .clamp(1, u64::from(u32::MAX)) as u32;
            (Arc::new(Semaphore::new(kib as usize)), kib)
        });
        let want = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(*size);
        // The semaphore is never closed; an error here is a host bug.
        let bytes_permit = budget
            .clone()
            .acquire_many_owned(want)
            .await
            .map_err(|e| HostError::trap(wasmtime::Error::msg(format!("documents: {e}"))))?;
        let gauge = crate::metrics::global()
            .blob_bytes_in_flight
            .get_or_create(&crate::metrics::PluginLabel {
                plugin: self.plugin.to_string(),
            })
            .clone();
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        gauge.inc_by(bytes);
        Ok(WriteHold {
            _call: call,
            _bytes: bytes_permit,
            gauge,
            bytes,
        })
    }
}

/// Runs a blob's writes to their end, even when the host call that started them is
/// abandoned (its host-call timeout): stopped between a new revision's file entry and the
/// removal of the older ones, they would leave two revisions of one id, and nothing removes
/// the older one while the plugin has no reason to store that blob again. The caller holds
/// an in-flight permit for them, taken before they start, so they still count against the
/// plugin's bound.
async fn run_to_end<T: Send + 'static>(
    writes: impl std::future::Future<Output = Result<T, HostError>> + Send + 'static,
) -> Result<T, HostError> {
    tokio::spawn(writes).await.unwrap_or_else(|e| {
        Err(HostError::trap(wasmtime::Error::msg(format!(
            "documents: blob writes failed: {e}"
        ))))
    })
}

/// Removes the chunks of the files among `file_ids` that have no file entry.
async fn remove_orphan_chunks(
    files: &mongodb::Collection<Document>,
    chunks: &mongodb::Collection<Document>,
    file_ids: &[Bson],
) -> Result<(), MongoError> {
    let stored: Vec<Bson> = files
        .find(doc! { "_id": { "$in": file_ids } })
        .projection(doc! { "_id": 1 })
        .await?
        .try_collect::<Vec<Document>>()
        .await?
        .into_iter()
        .filter_map(|d| d.get("_id").cloned())
        .collect();
    let orphans: Vec<&Bson> = file_ids.iter().filter(|id| !stored.contains(id)).collect();
    if !orphans.is_empty() {
        chunks
            .delete_many(doc! { "files_id": { "$in": orphans } })
            .await?;
    }
    Ok(())
}

/// [`prune_older`] for many ids at once: the revisions of `ids` read the way `learnt` finds
/// cheaper (see [`super::keyed`]), then one removal of the file
/// entries older than the ones just stored (`file_ids`, in the order of `ids`), then one of
/// their chunks (entries first, as the driver deletes).
async fn prune_older_many(
    files: &mongodb::Collection<Document>,
    chunks: &mongodb::Collection<Document>,
    ids: &[&str],
    file_ids: &[Bson],
    learnt: &keyed::Learnt,
) -> Result<(), MongoError> {
    let options = FindOptions::builder()
        .projection(doc! { "_id": 1, "filename": 1, "uploadDate": 1 })
        .build();
    let keys = ids.iter().map(|id| Bson::from(*id)).collect();
    let (revisions, reading) = learnt.read(files, "filename", keys, options).await;
    let revisions: Vec<Document> = revisions.try_collect().await?;
    reading.finish();
    let key = |d: &Document| {
        (
            d.get_datetime("uploadDate").ok().copied(),
            d.get_object_id("_id").ok(),
        )
    };
    let ours: std::collections::HashMap<&str, _> = ids
        .iter()
        .zip(file_ids)
        .filter_map(|(id, file_id)| {
            let stored = revisions.iter().find(|r| r.get("_id") == Some(file_id))?;
            Some((*id, key(stored)))
        })
        .collect();
    let older: Vec<Bson> = revisions
        .iter()
        .filter(|r| {
            let name = r.get_str("filename").unwrap_or_default();
            ours.get(name).is_some_and(|ours| key(r) < *ours)
        })
        .filter_map(|r| r.get("_id").cloned())
        .collect();
    if older.is_empty() {
        return Ok(());
    }
    files.delete_many(doc! { "_id": { "$in": &older } }).await?;
    chunks
        .delete_many(doc! { "files_id": { "$in": &older } })
        .await?;
    Ok(())
}

/// The newest revision of `id`.
async fn newest(
    gridfs: &GridFsBucket,
    id: &str,
    limits: &Limits,
) -> Result<Option<FilesCollectionDocument>, MongoError> {
    gridfs
        .find_one(doc! { "filename": id })
        .sort(doc! { "uploadDate": -1, "_id": -1 })
        .max_time(limits.max_time)
        .await
}

/// Removes the revisions of `id` older than `file_id`, which was just stored: one read of
/// every revision of `id`, then a delete of each older one (none, but after a re-upload).
async fn prune_older(gridfs: &GridFsBucket, id: &str, file_id: ObjectId) -> Result<(), MongoError> {
    let revisions: Vec<FilesCollectionDocument> = gridfs
        .find(doc! { "filename": id })
        .await?
        .try_collect()
        .await?;
    let key = |f: &FilesCollectionDocument| (f.upload_date, f.id.as_object_id());
    let Some(stored) = revisions
        .iter()
        .find(|f| f.id.as_object_id() == Some(file_id))
    else {
        // A newer put already removed it.
        return Ok(());
    };
    let ours = key(stored);
    for file in revisions.iter().filter(|f| key(f) < ours) {
        delete_file(gridfs, file.id.clone()).await?;
    }
    Ok(())
}

/// Deletes one file revision; false when it was already gone.
async fn delete_file(gridfs: &GridFsBucket, file_id: Bson) -> Result<bool, MongoError> {
    match gridfs.delete(file_id).await {
        Ok(()) => Ok(true),
        Err(e) if is_gone(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The bytes of one file revision.
async fn read(
    gridfs: &GridFsBucket,
    file: &FilesCollectionDocument,
) -> Result<Vec<u8>, MongoError> {
    let mut stream = gridfs.open_download_stream(file.id.clone()).await?;
    let mut data = Vec::with_capacity(usize::try_from(file.length).unwrap_or(0));
    stream
        .read_to_end(&mut data)
        .await
        .map_err(io_to_mongo_error)?;
    Ok(data)
}

/// Whether `e` says the file, or part of it, is not there (any more).
fn is_gone(e: &MongoError) -> bool {
    matches!(
        &*e.kind,
        MongoErrorKind::GridFs(
            GridFsErrorKind::FileNotFound { .. }
                | GridFsErrorKind::MissingChunk { .. }
                | GridFsErrorKind::WrongNumberOfChunks { .. }
        )
    )
}

/// A file revision's info. `data`, when read, supplies the SHA-256 of a file that another
/// tool stored without one.
fn blob_info(id: &str, file: FilesCollectionDocument, data: Option<&[u8]>) -> BlobInfo {
    let meta = file.metadata.unwrap_or_default();
    let text = |key: &str| meta.get_str(key).ok().map(str::to_string);
    let sha256 = text(SHA256)
        .or_else(|| data.map(|d| hex::encode(Sha256::digest(d))))
        .unwrap_or_default();
    let user = meta
        .get_document(METADATA)
        .cloned()
        .unwrap_or_else(|_| Document::new());
    BlobInfo {
        id: id.to_string(),
        content_type: text(CONTENT_TYPE).unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string()),
        length: file.length,
        sha256,
        metadata: render(Bson::Document(user)),
    }
}

/// The driver's GridFS streams report its errors wrapped in `io::Error`; unwraps them.
fn io_to_mongo_error(e: std::io::Error) -> MongoError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<MongoError>())
    {
        Some(mongo) => mongo.clone(),
        None => MongoError::from(e),
    }
}

fn map_io_error(what: String, e: std::io::Error) -> HostError {
    map_error(what, io_to_mongo_error(e))
}
