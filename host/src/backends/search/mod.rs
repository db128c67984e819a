//! Elasticsearch (`polyhost:platform/search`), scoped to granted index patterns.
//!
//! The host holds one client (its HTTP connection pool inside, with a request timeout) and,
//! for the reads whose answers the plugin sees (`search`, `count`, `get`), one plain HTTP
//! client whose answers are read chunk by chunk; each plugin's [`Client`] is a clone of them
//! bound to the plugin's patterns, with a semaphore bounding its calls in flight.
//!
//! Every call is checked before a request is sent ([`scope`]): the index (or every element
//! of the index pattern) must lie inside the grant; search and count bodies must hold only
//! allowlisted keys, query kinds and aggregations at every depth, with no script and no
//! lookup of another index (`wrapper` queries are decoded, checked and sent decoded);
//! templates only patterns inside the grant, settings and mappings. Documents are parsed and
//! re-serialised, so a document's text can never inject a line into a `_bulk` request.
//!
//! Bounds: a document the plugin writes may take `limits.max_value_bytes`; an answer it
//! reads is counted while it streams in and cut off past `limits.max_result_bytes`
//! (`invalid`, naming the limit). A call past the host-call timeout drops its request,
//! which closes the connection: Elasticsearch cancels a search whose HTTP channel closes.
//! A search also carries that timeout in its body, so the server stops on its own, and a
//! search the server cut short is a `timeout`, never a silently partial answer.
//!
//! HTTP statuses map to error kinds in [`map_status`]: 400 `invalid`, 401/403 `denied`,
//! 404 `not-found` (but `get` answers `none` and `delete` `false`), 409 `conflict`, 408,
//! 429 and 5xx `unavailable`; a failed connection is `unavailable`, a request past the
//! client's timeout `timeout`.
//!
//! A plugin's `bulk-index` calls in flight share `_bulk` requests, at most two at a time
//! ([`lane`]): Elasticsearch's cost is mostly per request, and a plugin indexing per
//! partition sends many small bulks at once. Each call is checked alone before it joins a
//! request and gets back only its own items' outcomes.
//!
//! `prepare-index` creates an index in the background, one at a time per plugin: creating
//! one takes the server a few hundred milliseconds on a loaded machine, which every write
//! into it (and, in a call of several partitions, every partition of the call) would wait.
//!
//! By job: `scope` (what a body may hold), `errors` (answers as error kinds), `host` (the
//! generated `Host` trait, as the plugin calls it), `lane` (shared bulk requests); the
//! grant, the [`Search`] backend unit and the clients here.

mod errors;
mod host;
mod lane;
pub mod scope;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use elasticsearch::http::Url;
use elasticsearch::http::headers::{HeaderName, HeaderValue};
use elasticsearch::http::request::JsonBody;
use elasticsearch::http::response::Response;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::{
    IndicesCreateParts, IndicesGetIndexTemplateParts, IndicesPutIndexTemplateParts,
    IndicesRefreshParts,
};
use elasticsearch::{BulkParts, DeleteParts, Elasticsearch, IndexParts};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{Backend, Data, GrantProblem, Settings, view};
use crate::bindings::polyhost::platform::search::{self as wit, BulkItem, Hit, SearchResult};
use crate::budget::{ResultBudget, check_value};
use crate::error::{HostError, Kind};
use crate::state::HostState;
use errors::{map_http, map_transport, reason};

pub use errors::map_status;

/// `grants.search`: the index patterns a plugin may touch.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Index patterns, `*` matching any run of characters, e.g. `audit-events-*`.
    pub indices: Vec<String>,
}

/// Calls one plugin may have in flight, so that one busy plugin cannot take every pooled
/// connection (or every search thread of the server) from the others.
const MAX_IN_FLIGHT: usize = 64;

/// Index creations one plugin may have under way in the background (`prepare-index`).
pub const PREPARING: usize = 1;

/// The client's own bound on one request. Host calls are bounded more tightly by the
/// plugin's host-call timeout; this is the backstop for the connection itself.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The host's one Elasticsearch client.
#[derive(Debug)]
pub struct Shared {
    client: Elasticsearch,
    /// For the reads: the elasticsearch crate hands a response body only whole, and a
    /// plugin's answer must be cut off while it streams in.
    http: reqwest::Client,
    /// The server's URL, which the reads' paths are appended to.
    base: Url,
}

/// Asks for the cluster's health: `_cluster/health` rather than `GET /` or `HEAD /`, which
/// some distributions (the integration-test zip) answer with 405. Returns its status
/// (`green`, `yellow`, `red`).
async fn health(client: &Elasticsearch) -> anyhow::Result<String> {
    let response = client
        .cluster()
        .health(elasticsearch::cluster::ClusterHealthParts::None)
        .send()
        .await
        .context("asking Elasticsearch for its health")?;
    let status = response.status_code();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "Elasticsearch answered its health check with HTTP {status}: {body}"
    );
    let health: Value = serde_json::from_str(&body).unwrap_or_default();
    Ok(health["status"].as_str().unwrap_or("unknown").to_string())
}

/// The search backend: Elasticsearch, one client per host.
pub struct Search;

impl Backend for Search {
    type Grant = Grant;
    type Shared = Shared;
    type Client = Client;

    const SERVICE: &'static str = "Elasticsearch";
    const IMPORTS: &'static [&'static str] = &["polyhost:platform/search"];
    const GRANT_LINE: &'static str = r#"search = { indices = ["<index>"] }"#;

    fn check_grant(grant: &Grant) -> Vec<GrantProblem> {
        if grant.indices.iter().any(|p| p.is_empty() || p == "*") {
            vec![GrantProblem::new(
                "indices",
                "`*` or an empty pattern would grant every index: name the patterns",
            )]
        } else {
            Vec::new()
        }
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

    /// Waits for the index creations `prepare-index` started: each holds a permit until it
    /// has finished or timed out.
    async fn settle(client: &Client) {
        let all = u32::try_from(PREPARING).unwrap_or(u32::MAX);
        let _ = client.preparing.acquire_many(all).await;
    }

    fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, Data<Self>>(linker, view::<Self>)
    }
}

impl Shared {
    /// Whether Elasticsearch answers its cluster health, with a cluster that is not red.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let status = health(&self.client).await?;
        anyhow::ensure!(status != "red", "the Elasticsearch cluster is red");
        Ok(())
    }

    /// Builds the client for `settings.elasticsearch_url` and asks for the cluster's health,
    /// so that an absent server fails here rather than on a plugin's first call.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Shared> {
        let es = &settings.elasticsearch;
        let url = Url::parse(es.url.expose())
            .with_context(|| format!("parsing the Elasticsearch URL `{}`", es.url))?;
        let builder = TransportBuilder::new(SingleNodeConnectionPool::new(url.clone()))
            .timeout(REQUEST_TIMEOUT)
            // The server is addressed directly; an HTTP(S)_PROXY meant for downloads must
            // not capture the host's requests.
            .disable_proxy();
        let transport = es
            .transport(builder)?
            .build()
            .context("building the Elasticsearch transport")?;
        anyhow::ensure!(
            !url.cannot_be_a_base(),
            "the Elasticsearch URL `{url}` is not an HTTP URL"
        );
        let client = Elasticsearch::new(transport);
        let http = es
            .http(
                reqwest::Client::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .no_proxy(),
            )?
            .build()
            .context("building the Elasticsearch HTTP client")?;
        // A red cluster still serves the indices whose shards are up: not a reason to stop.
        health(&client).await?;
        Ok(Shared {
            client,
            http,
            base: url,
        })
    }
}

/// One plugin's handle on Elasticsearch: a clone of the shared client bound to its patterns.
#[derive(Debug, Clone)]
pub struct Client {
    grants: Arc<[String]>,
    client: Elasticsearch,
    http: reqwest::Client,
    base: Url,
    /// Sent as `X-Opaque-Id`, so the server's tasks and slow logs name the plugin.
    opaque: HeaderValue,
    in_flight: Arc<Semaphore>,
    /// The plugin's bulks in flight, which share requests ([`lane`]).
    bulks: Arc<lane::Lane<Bulk>>,
    /// Its background index creations ([`PREPARING`]).
    preparing: Arc<Semaphore>,
}

impl Client {
    /// Binds `plugin`'s `grant` to the shared client.
    pub fn new(shared: &Shared, plugin: &str, grant: &Grant) -> Client {
        let opaque = opaque_id(plugin);
        Client {
            grants: grant.indices.clone().into(),
            client: shared.client.clone(),
            http: shared.http.clone(),
            base: shared.base.clone(),
            opaque: opaque.clone(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            bulks: Arc::new(lane::Lane::new(Bulk {
                client: shared.client.clone(),
                opaque,
            })),
            preparing: Arc::new(Semaphore::new(PREPARING)),
        }
    }

    /// The `X-Opaque-Id` its requests carry.
    fn opaque(&self) -> HeaderValue {
        self.opaque.clone()
    }

    fn url(&self, segments: &[&str]) -> Url {
        url_for(&self.base, segments)
    }

    /// Sends a read and returns its JSON answer when the status is a success, else the
    /// mapped error. The answer is counted into `limits.max_result_bytes` chunk by chunk
    /// as it arrives; past the cap the response is dropped (closing the connection) and
    /// the call fails with `invalid`.
    async fn read(
        &self,
        what: &str,
        segments: &[&str],
        body: Option<&Value>,
        max_result_bytes: usize,
    ) -> Result<Value, HostError> {
        let method = if body.is_some() {
            reqwest::Method::POST
        } else {
            reqwest::Method::GET
        };
        let mut request = self
            .http
            .request(method, self.url(segments))
            .header(OPAQUE_ID, self.opaque());
        if let Some(body) = body {
            request = request.json(body);
        }
        let mut response = request.send().await.map_err(|e| map_http(what, &e))?;
        let status = response.status().as_u16();
        let mut budget = ResultBudget::new(max_result_bytes);
        if let Some(announced) = response.content_length() {
            // Refused before a byte is read when the server says how much is coming.
            if announced > max_result_bytes as u64 {
                budget.take(usize::try_from(announced).unwrap_or(usize::MAX), what)?;
            }
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| map_http(what, &e))? {
            budget.take(chunk.len(), what)?;
            bytes.extend_from_slice(&chunk);
        }
        let body: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(map_status(what, status, &body))
        }
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>, HostError> {
        // The semaphore is never closed; an error here is a host bug.
        self.in_flight
            .acquire()
            .await
            .map_err(|e| HostError::trap(wasmtime::Error::msg(format!("search: {e}"))))
    }

    async fn index(
        &self,
        index: &str,
        id: &str,
        document: &str,
        max_value_bytes: usize,
    ) -> Result<(), HostError> {
        scope::check_index(&self.grants, index)?;
        check_id(id)?;
        let what = format!("index `{index}`/`{id}`");
        check_value(
            document.len(),
            max_value_bytes,
            &format!("{what}: the document"),
        )?;
        let doc = parse_document(&what, document)?;
        let _permit = self.permit().await?;
        let sent = self
            .client
            .index(IndexParts::IndexId(index, id))
            .header(OPAQUE_ID, self.opaque())
            .body(doc)
            .send()
            .await;
        expect_success(&what, sent).await.map(drop)
    }

    async fn bulk_index(
        &self,
        items: Vec<BulkItem>,
        max_value_bytes: usize,
    ) -> Result<Vec<Option<String>>, HostError> {
        // Every item is checked before anything is sent, so nothing half-runs on a refusal.
        let mut lines: Vec<JsonBody<Value>> = Vec::with_capacity(items.len() * 2);
        let mut bytes = 0;
        for (i, item) in items.iter().enumerate() {
            let what = format!("bulk-index item {i} (`{}`/`{}`)", item.index, item.id);
            scope::check_index(&self.grants, &item.index).map_err(|e| e.context(&what))?;
            check_id(&item.id).map_err(|e| e.context(&what))?;
            check_value(
                item.document.len(),
                max_value_bytes,
                &format!("{what}: the document"),
            )?;
            let doc = parse_document(&what, &item.document)?;
            bytes += item.document.len();
            lines.push(json!({ "index": { "_index": item.index, "_id": item.id } }).into());
            lines.push(doc.into());
        }
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let _permit = self.permit().await?;
        let part = lane::Part {
            lines,
            items: items.len(),
            bytes,
        };
        bulk_outcomes(&self.bulks.submit(part).await?)
    }

    async fn get(
        &self,
        index: &str,
        id: &str,
        max_result_bytes: usize,
    ) -> Result<Option<String>, HostError> {
        scope::check_index(&self.grants, index)?;
        check_id(id)?;
        let _permit = self.permit().await?;
        let what = format!("get `{index}`/`{id}`");
        let read = self
            .read(&what, &[index, "_doc", id], None, max_result_bytes)
            .await;
        // A missing document and a missing index both read as "no such document".
        let Some(reply) = allow_not_found(read)? else {
            return Ok(None);
        };
        if reply.get("found") != Some(&Value::Bool(true)) {
            return Ok(None);
        }
        Ok(Some(
            reply.get("_source").unwrap_or(&Value::Null).to_string(),
        ))
    }

    async fn delete(&self, index: &str, id: &str) -> Result<bool, HostError> {
        scope::check_index(&self.grants, index)?;
        check_id(id)?;
        let _permit = self.permit().await?;
        let what = format!("delete `{index}`/`{id}`");
        let sent = self
            .client
            .delete(DeleteParts::IndexId(index, id))
            .header(OPAQUE_ID, self.opaque())
            .send()
            .await;
        Ok(allow_not_found(expect_success(&what, sent).await)?
            .is_some_and(|r| r.get("result").and_then(Value::as_str) == Some("deleted")))
    }

    async fn search(
        &self,
        pattern: &str,
        body: &str,
        limits: &Limits,
    ) -> Result<SearchResult, HostError> {
        let targets = scope::check_target(&self.grants, pattern)?;
        let what = format!("search `{pattern}`");
        let mut body = scope::check_search(&self.grants, &what, body)?;
        // The WIT promises an exact total; without this Elasticsearch stops at 10 000.
        body["track_total_hits"] = Value::Bool(true);
        // The server's own bound: it stops collecting at the host-call timeout even if the
        // dropped connection were not noticed.
        body["timeout"] = Value::String(format!("{}ms", limits.timeout.as_millis()));
        let _permit = self.permit().await?;
        let reply = self
            .read(
                &what,
                &[&targets.join(","), "_search"],
                Some(&body),
                limits.max_result_bytes,
            )
            .await?;
        if reply.get("timed_out") == Some(&Value::Bool(true)) {
            return Err(HostError::timeout(format!(
                "{what}: Elasticsearch stopped the search at the host-call timeout ({} ms)",
                limits.timeout.as_millis()
            )));
        }
        let hits = reply.pointer("/hits/hits").and_then(Value::as_array);
        if hits.is_none() || reply.pointer("/hits/total/value").is_none() {
            return Err(HostError::other(format!(
                "{what}: unexpected answer from Elasticsearch: {reply}"
            )));
        }
        search_result(reply).ok_or_else(|| {
            HostError::other(format!(
                "{what}: Elasticsearch answered a hit without its index or id"
            ))
        })
    }

    async fn count(
        &self,
        pattern: &str,
        body: &str,
        max_result_bytes: usize,
    ) -> Result<u64, HostError> {
        let targets = scope::check_target(&self.grants, pattern)?;
        let what = format!("count `{pattern}`");
        let body = scope::check_count(&self.grants, &what, body)?;
        let _permit = self.permit().await?;
        let reply = self
            .read(
                &what,
                &[&targets.join(","), "_count"],
                Some(&body),
                max_result_bytes,
            )
            .await?;
        reply.get("count").and_then(Value::as_u64).ok_or_else(|| {
            HostError::other(format!(
                "{what}: unexpected answer from Elasticsearch: {reply}"
            ))
        })
    }

    async fn refresh(&self, pattern: &str) -> Result<(), HostError> {
        let targets = scope::check_target(&self.grants, pattern)?;
        let _permit = self.permit().await?;
        let sent = self
            .client
            .indices()
            .refresh(IndicesRefreshParts::Index(&targets))
            .header(OPAQUE_ID, self.opaque())
            .send()
            .await;
        expect_success(&format!("refresh `{pattern}`"), sent)
            .await
            .map(drop)
    }

    /// Starts creating `index` in the background unless this plugin's previous creation is
    /// still under way (`false`). The creation is bounded by `timeout`; an index that
    /// exists is left alone, and any other failure is logged.
    fn prepare_index(&self, index: &str, timeout: Duration) -> Result<bool, HostError> {
        scope::check_index(&self.grants, index)?;
        let Ok(permit) = self.preparing.clone().try_acquire_owned() else {
            return Ok(false);
        };
        let (client, opaque, index) = (self.client.clone(), self.opaque(), index.to_owned());
        tokio::spawn(async move {
            let _permit = permit;
            let what = format!("prepare-index `{index}`");
            let indices = client.indices();
            let sent = indices
                .create(IndicesCreateParts::Index(&index))
                .header(OPAQUE_ID, opaque.clone())
                .send();
            let created = tokio::time::timeout(timeout, async {
                let (status, body) = answer(&what, sent.await).await?;
                match status {
                    200..300 => Ok(true),
                    400 if body["error"]["type"] == ALREADY_EXISTS => Ok(false),
                    _ => Err(map_status(&what, status, &body)),
                }
            })
            .await;
            let plugin = opaque.to_str().unwrap_or_default();
            match created {
                Ok(Ok(true)) => tracing::debug!(plugin, index, "index prepared"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(plugin, index, error = %e.message, "{what} failed"),
                Err(_) => tracing::warn!(
                    plugin,
                    index,
                    "{what} did not finish within {} ms",
                    timeout.as_millis()
                ),
            }
        });
        Ok(true)
    }

    async fn put_index_template(&self, name: &str, body: &str) -> Result<(), HostError> {
        let body = scope::check_template(&self.grants, name, body)?;
        let what = format!("put-index-template `{name}`");
        let _permit = self.permit().await?;
        // Templates share one namespace: replacing one is allowed only when it, too, lies
        // inside the grant, or a plugin could rewrite another's.
        let sent = self
            .client
            .indices()
            .get_index_template(IndicesGetIndexTemplateParts::Name(name))
            .header(OPAQUE_ID, self.opaque())
            .send()
            .await;
        if let Some(existing) = allow_not_found(expect_success(&what, sent).await)? {
            for t in existing["index_templates"].as_array().into_iter().flatten() {
                for pattern in scope::template_patterns(&t["index_template"])? {
                    scope::check_target(&self.grants, &pattern).map_err(|_| {
                        HostError::denied(format!(
                            "{what}: it would replace a template for `{pattern}`, outside the search grant"
                        ))
                    })?;
                }
            }
        }
        let sent = self
            .client
            .indices()
            .put_index_template(IndicesPutIndexTemplateParts::Name(name))
            .header(OPAQUE_ID, self.opaque())
            .body(body)
            .send()
            .await;
        expect_success(&what, sent).await.map(drop)
    }
}

/// `segments` appended to the server's URL `base`, each percent-encoded as one path segment
/// (`/`, `%`, `?`, `#` included), so that no name or id can add a segment or a query.
fn url_for(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// A document id Elasticsearch can be addressed by in a URL path.
fn check_id(id: &str) -> Result<(), HostError> {
    // `.` and `..` would be resolved as path segments: `DELETE /i/_doc/..` is `DELETE /i`.
    if id.is_empty() || id == "." || id == ".." {
        Err(HostError::invalid(format!(
            "`{id}` is not a usable document id"
        )))
    } else {
        Ok(())
    }
}

/// A document: a JSON object.
fn parse_document(what: &str, document: &str) -> Result<Value, HostError> {
    let doc: Value = serde_json::from_str(document)
        .map_err(|e| HostError::invalid(format!("{what}: the document is not JSON: {e}")))?;
    if !doc.is_object() {
        return Err(HostError::invalid(format!(
            "{what}: a document must be a JSON object"
        )));
    }
    Ok(doc)
}

/// The answer to a request: its JSON body when the status is a success, else the mapped error.
async fn expect_success(
    what: &str,
    sent: Result<Response, elasticsearch::Error>,
) -> Result<Value, HostError> {
    let (status, body) = answer(what, sent).await?;
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(map_status(what, status, &body))
    }
}

/// The status of an answer and its body: JSON, or its text when it is not JSON.
async fn answer(
    what: &str,
    sent: Result<Response, elasticsearch::Error>,
) -> Result<(u16, Value), HostError> {
    let response = sent.map_err(|e| map_transport(what, &e))?;
    let status = response.status_code().as_u16();
    let text = response.text().await.map_err(|e| map_transport(what, &e))?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

/// `not-found` as `None`, for the calls whose WIT answers a miss with a value.
fn allow_not_found(r: Result<Value, HostError>) -> Result<Option<Value>, HostError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(HostError {
            kind: Kind::NotFound,
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The error type Elasticsearch answers a creation of an index that exists with.
const ALREADY_EXISTS: &str = "resource_already_exists_exception";

/// The `X-Opaque-Id` header, which names the plugin in the server's `_tasks` and slow logs.
const OPAQUE_ID: HeaderName = HeaderName::from_static("x-opaque-id");

/// `polyhost/<plugin>` as a header value (plugin names are checked to be plain ASCII).
fn opaque_id(plugin: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("polyhost/{plugin}"))
        .unwrap_or(HeaderValue::from_static("polyhost"))
}

/// How a plugin's shared bulk requests are sent.
#[derive(Debug)]
struct Bulk {
    client: Elasticsearch,
    opaque: HeaderValue,
}

impl lane::Post for Bulk {
    async fn post(&self, lines: Vec<JsonBody<Value>>) -> Result<Vec<Value>, HostError> {
        let started = std::time::Instant::now();
        let documents = lines.len() / 2;
        let sent = self
            .client
            .bulk(BulkParts::None)
            .header(OPAQUE_ID, self.opaque.clone())
            .body(lines)
            .send()
            .await;
        let mut reply = expect_success("bulk-index", sent).await?;
        // Elasticsearch's own time for the request against the host's: a gap between them
        // is queueing or transport, not indexing.
        tracing::debug!(
            documents,
            took_ms = reply.get("took").and_then(serde_json::Value::as_u64),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "bulk request answered"
        );
        match reply.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(HostError::other(format!(
                "bulk-index: Elasticsearch answered without items: {reply}"
            ))),
        }
    }
}

/// Per item of (a call's share of) a `_bulk` reply's `items`: `None` when stored,
/// `Some(reason)` when refused. An item refused for a transient reason (429, 5xx) fails the
/// whole call as `unavailable`: the items are keyed by id, so indexing them all again on a
/// retry is harmless.
pub fn bulk_outcomes(items: &[Value]) -> Result<Vec<Option<String>>, HostError> {
    let mut outcomes = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let result = item.get("index").unwrap_or(item);
        let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
        if result.get("error").is_none() && (200..300).contains(&status) {
            outcomes.push(None);
            continue;
        }
        let why = result.get("error").map_or_else(
            || format!("HTTP {status}"),
            |e| reason(&json!({ "error": e })),
        );
        if status == 429 || status >= 500 {
            return Err(HostError::unavailable(format!(
                "bulk-index item {i}: HTTP {status}: {why}"
            )));
        }
        outcomes.push(Some(why));
    }
    Ok(outcomes)
}

/// The WIT's search result from a `_search` reply.
///
/// Consumes the reply hit by hit, so that each hit's parsed form is freed as its text is
/// made: the host holds the parsed reply and the result together only about once.
pub fn search_result(mut reply: Value) -> Option<SearchResult> {
    let total = reply.pointer("/hits/total/value")?.as_u64()?;
    let aggregations = reply.get("aggregations").map(Value::to_string);
    let Value::Array(raw) = reply.pointer_mut("/hits/hits")?.take() else {
        return None;
    };
    let mut hits = Vec::with_capacity(raw.len());
    for mut h in raw {
        let source = h.get_mut("_source").map_or(Value::Null, Value::take);
        hits.push(Hit {
            index: h.get("_index")?.as_str()?.to_string(),
            id: h.get("_id")?.as_str()?.to_string(),
            score: h.get("_score").and_then(Value::as_f64),
            source: source.to_string(),
        });
    }
    Some(SearchResult {
        total,
        hits,
        aggregations,
    })
}

/// The plugin's bounds on one search.
#[derive(Debug, Clone, Copy)]
struct Limits {
    timeout: Duration,
    max_result_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_become_values() {
        assert!(
            allow_not_found(Err(HostError::not_found("x")))
                .unwrap()
                .is_none()
        );
        assert!(allow_not_found(Err(HostError::invalid("x"))).is_err());
    }

    #[test]
    fn ids_that_are_path_segments_are_refused() {
        for bad in ["", ".", ".."] {
            assert!(
                matches!(
                    check_id(bad),
                    Err(HostError {
                        kind: Kind::Invalid,
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert!(check_id("ev-1").is_ok());
        assert!(check_id("a/b").is_ok());
    }

    #[test]
    fn names_and_ids_stay_one_path_segment_each() {
        let base = Url::parse("http://127.0.0.1:9200/").unwrap();
        let u = url_for(&base, &["audit-a,audit-b-*", "_search"]);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9200/audit-a,audit-b-*/_search"
        );
        let u = url_for(&base, &["audit-a", "_doc", "../c/_doc/1?refresh=true#x%2e"]);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9200/audit-a/_doc/..%2Fc%2F_doc%2F1%3Frefresh=true%23x%252e"
        );
        // Under a path prefix (a proxy), too.
        let base = Url::parse("http://es.local/prefix").unwrap();
        let u = url_for(&base, &["audit-a", "_count"]);
        assert_eq!(u.as_str(), "http://es.local/prefix/audit-a/_count");
    }

    #[test]
    fn documents_must_be_objects() {
        assert!(parse_document("d", r#"{"a":1}"#).is_ok());
        assert!(matches!(
            parse_document("d", "[1]"),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
        assert!(matches!(
            parse_document("d", "{"),
            Err(HostError {
                kind: Kind::Invalid,
                ..
            })
        ));
    }

    #[test]
    fn bulk_items_report_each_refusal() {
        let items = [
            json!({"index": {"_index": "a", "_id": "1", "status": 201, "result": "created"}}),
            json!({"index": {"_index": "a", "_id": "2", "status": 400,
                       "error": {"type": "document_parsing_exception", "reason": "bad field"}}}),
        ];
        assert_eq!(
            bulk_outcomes(&items).unwrap(),
            vec![
                None,
                Some("document_parsing_exception: bad field".to_string())
            ]
        );
        let busy = [
            json!({"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}}),
        ];
        assert!(matches!(
            bulk_outcomes(&busy),
            Err(HostError {
                kind: Kind::Unavailable,
                ..
            })
        ));
    }

    #[test]
    fn search_replies_become_results() {
        let reply = json!({
            "hits": {"total": {"value": 12, "relation": "eq"}, "hits": [
                {"_index": "a", "_id": "1", "_score": 1.5, "_source": {"x": 1}},
                {"_index": "a", "_id": "2", "_score": null, "_source": {"x": 2}},
            ]},
            "aggregations": {"by": {"buckets": []}}
        });
        let r = search_result(reply).unwrap();
        assert_eq!(r.total, 12);
        assert_eq!(r.hits.len(), 2);
        assert_eq!(r.hits[0].score, Some(1.5));
        assert_eq!(r.hits[1].score, None);
        assert_eq!(r.hits[1].source, r#"{"x":2}"#);
        assert_eq!(r.aggregations.as_deref(), Some(r#"{"by":{"buckets":[]}}"#));
        assert!(search_result(json!({"took": 1})).is_none());
    }
}
