//! `polyhost:platform/search` as the plugin calls it: each call takes the plugin's client
//! and limits, and runs under the host-call timeout.

use super::{Limits, Search};
use crate::backends::View;
use crate::bindings::polyhost::platform::search::{BulkItem, Host, SearchResult};
use crate::error::{HostError, with_timeout};

impl Host for View<'_, Search> {
    async fn index(
        &mut self,
        index: String,
        id: String,
        document: String,
    ) -> Result<(), HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "search.index",
            c.index(&index, &id, &document, env.max_value_bytes),
        )
        .await
    }

    async fn bulk_index(&mut self, items: Vec<BulkItem>) -> Result<Vec<Option<String>>, HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "search.bulk-index",
            c.bulk_index(items, env.max_value_bytes),
        )
        .await
    }

    async fn get(&mut self, index: String, id: String) -> Result<Option<String>, HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "search.get",
            c.get(&index, &id, env.max_result_bytes),
        )
        .await
    }

    async fn delete(&mut self, index: String, id: String) -> Result<bool, HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "search.delete",
            c.delete(&index, &id),
        )
        .await
    }

    async fn search(
        &mut self,
        index_pattern: String,
        body: String,
    ) -> Result<SearchResult, HostError> {
        let (c, env) = self.granted()?;
        let limits = Limits {
            timeout: env.host_call_timeout,
            max_result_bytes: env.max_result_bytes,
        };
        // On timeout the call's future is dropped, and with it the HTTP request: the
        // connection closes and Elasticsearch cancels the search.
        with_timeout(
            env.host_call_timeout,
            "search.search",
            c.search(&index_pattern, &body, &limits),
        )
        .await
    }

    async fn count(&mut self, index_pattern: String, body: String) -> Result<u64, HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "search.count",
            c.count(&index_pattern, &body, env.max_result_bytes),
        )
        .await
    }

    async fn refresh(&mut self, index_pattern: String) -> Result<(), HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "search.refresh",
            c.refresh(&index_pattern),
        )
        .await
    }

    async fn put_index_template(&mut self, name: String, body: String) -> Result<(), HostError> {
        let (c, env) = self.granted()?;
        with_timeout(
            env.host_call_timeout,
            "search.put-index-template",
            c.put_index_template(&name, &body),
        )
        .await
    }

    async fn prepare_index(&mut self, index: String) -> Result<bool, HostError> {
        let (c, env) = self.granted()?;
        let timeout = env.host_call_timeout;
        with_timeout(timeout, "search.prepare-index", async {
            c.prepare_index(&index, timeout)
        })
        .await
    }
}
