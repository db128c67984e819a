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

use futures::{AsyncReadExt as _, AsyncWriteExt as _, TryStreamExt as _};
use mongodb::bson::{Bson, Document, doc, oid::ObjectId};
use mongodb::error::{Error as MongoError, ErrorKind as MongoErrorKind, GridFsErrorKind};
use mongodb::gridfs::{FilesCollectionDocument, GridFsBucket};
use mongodb::options::GridFsBucketOptions;
use sha2::{Digest as _, Sha256};

use super::{Client, Limits, check_bucket, map_error, render};
use crate::bindings::polyhost::platform::documents::{Blob, BlobInfo};
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
        let _permit = self.permit().await?;
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
