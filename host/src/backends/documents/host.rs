//! `polyhost:platform/documents` as the plugin calls it: each call takes the plugin's client
//! and limits, and runs under the host-call timeout.

use super::{Documents, Limits};
use crate::backends::View;
use crate::bindings::polyhost::platform::documents::{
    Blob, BlobInfo, BulkResult, FindOptions, Host, NewBlob, UpdateResult, WriteOp,
};
use crate::error::{HostError, with_timeout};

impl Host for View<'_, Documents> {
    async fn insert(&mut self, collection: String, doc: String) -> Result<String, HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "documents.insert",
            c.insert(&collection, &doc, &Limits::of(env)),
        )
        .await
    }

    async fn upsert(
        &mut self,
        collection: String,
        filter: String,
        replacement: String,
    ) -> Result<UpdateResult, HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "documents.upsert",
            c.upsert(&collection, &filter, &replacement, &Limits::of(env)),
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
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "documents.update",
            c.update(
                &collection,
                &filter,
                &update,
                (upsert, many),
                &Limits::of(env),
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
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "documents.delete",
            c.delete(&collection, &filter, many, &Limits::of(env)),
        )
        .await
    }

    async fn find(
        &mut self,
        collection: String,
        filter: String,
        options: FindOptions,
    ) -> Result<Vec<String>, HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "documents.find",
            c.find(&collection, &filter, options, &Limits::of(env)),
        )
        .await
    }

    async fn find_one(
        &mut self,
        collection: String,
        filter: String,
    ) -> Result<Option<String>, HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "documents.find-one",
            c.find_one(&collection, &filter, &Limits::of(env)),
        )
        .await
    }

    async fn count(&mut self, collection: String, filter: String) -> Result<u64, HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "documents.count",
            c.count(&collection, &filter, &Limits::of(env)),
        )
        .await
    }

    async fn bulk_write(
        &mut self,
        collection: String,
        ops: Vec<WriteOp>,
        ordered: bool,
    ) -> Result<BulkResult, HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "documents.bulk-write",
            c.bulk_write(&collection, ops, ordered, &Limits::of(env)),
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
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "documents.put-blob",
            c.put_blob(&bucket, id, content_type, data, &metadata, &Limits::of(env)),
        )
        .await
    }

    async fn put_blobs(
        &mut self,
        bucket: String,
        blobs: Vec<NewBlob>,
    ) -> Result<Vec<BlobInfo>, HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "documents.put-blobs",
            c.put_blobs(&bucket, blobs, &Limits::of(env)),
        )
        .await
    }

    async fn get_blob(&mut self, bucket: String, id: String) -> Result<Option<Blob>, HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "documents.get-blob",
            c.get_blob(&bucket, &id, &Limits::of(env)),
        )
        .await
    }

    async fn stat_blob(
        &mut self,
        bucket: String,
        id: String,
    ) -> Result<Option<BlobInfo>, HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "documents.stat-blob",
            c.stat_blob(&bucket, &id, &Limits::of(env)),
        )
        .await
    }

    async fn delete_blob(&mut self, bucket: String, id: String) -> Result<bool, HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "documents.delete-blob",
            c.delete_blob(&bucket, &id, &Limits::of(env)),
        )
        .await
    }
}
