//! The search backend (`polyhost:platform/search`) against the real server: the
//! `search-probe` plugin runs scripts of calls with their expected results, and each test
//! then reads back with the elasticsearch crate what the server really holds.
//!
//! Needs Elasticsearch (`cargo xtask services up`) and the test plugins (`cargo xtask
//! plugins`); fails, rather than skips, without them. Each test works on indices and
//! templates named after a prefix of its own (`<p>-a-*` and `<p>-b` granted, `<p>-c` not),
//! and deletes every index and template under it afterwards.

// The scripts are long `json!` literals.
#![recursion_limit = "512"]

#[allow(dead_code)]
mod common;
mod harness;

use std::sync::Arc;

use anyhow::{Context as _, Result, bail, ensure};
use common::{CLIENT_TIMEOUT, Service, unique_name, with_cleanup, within};
use elasticsearch::http::Url;
use elasticsearch::http::request::JsonBody;
use elasticsearch::http::response::Response;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::{
    IndicesDeleteIndexTemplateParts, IndicesDeleteParts, IndicesExistsParts,
    IndicesGetIndexTemplateParts, IndicesGetMappingParts, IndicesGetParts,
    IndicesPutIndexTemplateParts, IndicesRefreshParts,
};
use elasticsearch::{BulkParts, CountParts, Elasticsearch, GetParts, IndexParts};
use harness::{runtime, test_plugin};
use polyhost::backends::search;
use polyhost::manifest::PluginSpec;
use polyhost::runtime::{LoadedPlugin, Runtime};
use serde_json::{Value, json};

/// A test's prefix, its native client and the probe granted part of its names.
struct Fixture {
    es: Service,
    client: Elasticsearch,
    /// The test's prefix: indices and templates are `<p>-…`.
    p: String,
    plugin: Arc<LoadedPlugin>,
    // Keeps the engine and connections alive as long as the plugin.
    _runtime: Runtime,
}

impl Fixture {
    /// Runs `script`'s steps in the plugin and fails with its list of mismatches.
    async fn run(&self, script: Value) -> Result<()> {
        harness::run_script(&self.plugin, &script).await
    }

    /// A name under the test's prefix: `n("a-x")` is `<p>-a-x`.
    fn n(&self, rest: &str) -> String {
        format!("{}-{rest}", self.p)
    }

    /// The status and JSON body of a native request.
    async fn call(
        &self,
        what: &str,
        request: impl Future<Output = Result<Response, elasticsearch::Error>>,
    ) -> Result<(u16, Value)> {
        let response = within(&self.es, what, request).await?;
        let status = response.status_code().as_u16();
        let text = within(&self.es, what, response.text()).await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, body))
    }

    /// The JSON body of a native request that must succeed.
    async fn ok(
        &self,
        what: &str,
        request: impl Future<Output = Result<Response, elasticsearch::Error>>,
    ) -> Result<Value> {
        let (status, body) = self.call(what, request).await?;
        ensure!(
            (200..300).contains(&status),
            "{}: {what}: HTTP {status}: {body}",
            self.es
        );
        Ok(body)
    }

    async fn index_exists(&self, index: &str) -> Result<bool> {
        let (status, _) = self
            .call(
                "index exists",
                self.client
                    .indices()
                    .exists(IndicesExistsParts::Index(&[index]))
                    .send(),
            )
            .await?;
        Ok(status == 200)
    }

    /// A document's `_source`, if it exists.
    async fn source(&self, index: &str, id: &str) -> Result<Option<Value>> {
        let (status, body) = self
            .call("get", self.client.get(GetParts::IndexId(index, id)).send())
            .await?;
        match status {
            200 => Ok(Some(body["_source"].clone())),
            404 => Ok(None),
            _ => bail!("get {index}/{id}: HTTP {status}: {body}"),
        }
    }

    async fn count(&self, index: &str) -> Result<u64> {
        self.ok(
            "refresh",
            self.client
                .indices()
                .refresh(IndicesRefreshParts::Index(&[index]))
                .send(),
        )
        .await?;
        let body = self
            .ok(
                "count",
                self.client.count(CountParts::Index(&[index])).send(),
            )
            .await?;
        body["count"].as_u64().context("count")
    }

    /// The index template `name`, if it exists.
    async fn template(&self, name: &str) -> Result<Option<Value>> {
        let (status, body) = self
            .call(
                "get template",
                self.client
                    .indices()
                    .get_index_template(IndicesGetIndexTemplateParts::Name(name))
                    .send(),
            )
            .await?;
        match status {
            200 => Ok(Some(body["index_templates"][0]["index_template"].clone())),
            404 => Ok(None),
            _ => bail!("get template {name}: HTTP {status}: {body}"),
        }
    }
}

/// Connects natively, loads the probe granted `<p>-a-*` and `<p>-b`, runs `body`, and
/// deletes every index and template of the test whatever happened.
async fn with_fixture(body: impl AsyncFnOnce(&mut Fixture) -> Result<()>) -> Result<()> {
    let es = Service::elasticsearch();
    let url = Url::parse(&es.url).with_context(|| format!("{es}: parsing the URL"))?;
    let transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .timeout(CLIENT_TIMEOUT)
        .disable_proxy()
        .build()
        .with_context(|| format!("{es}: building the transport"))?;
    let client = Elasticsearch::new(transport);
    within(
        &es,
        "cluster health",
        client
            .cluster()
            .health(elasticsearch::cluster::ClusterHealthParts::None)
            .send(),
    )
    .await?;
    let p = unique_name("search");

    let rt = runtime();
    let mut spec = PluginSpec::new("search-probe", test_plugin("search-probe"));
    spec.subscribe = vec!["t".into()];
    spec.grants.search = Some(search::Grant {
        indices: vec![format!("{p}-a-*"), format!("{p}-b")],
    });
    spec.limits.host_call_timeout_ms = 20_000;
    spec.limits.call_timeout_ms = 120_000;
    let plugin = rt
        .load(&spec)
        .await
        .map_err(|e| anyhow::anyhow!("{es}: loading the probe: {e}"))?;

    let mut fixture = Fixture {
        es,
        client,
        p,
        plugin,
        _runtime: rt,
    };
    with_cleanup(&mut fixture, body, async |f| {
        // Deleting by wildcard is off by default (`action.destructive_requires_name`): list,
        // then delete by name.
        let pattern = format!("{}*", f.p);
        let (status, indices) = f
            .call(
                "listing indices",
                f.client
                    .indices()
                    .get(IndicesGetParts::Index(&[&pattern]))
                    .send(),
            )
            .await?;
        ensure!(status == 200, "listing indices: HTTP {status}: {indices}");
        for name in indices.as_object().into_iter().flat_map(|o| o.keys()) {
            f.ok(
                "deleting an index",
                f.client
                    .indices()
                    .delete(IndicesDeleteParts::Index(&[name]))
                    .send(),
            )
            .await?;
        }
        let (status, templates) = f
            .call(
                "listing templates",
                f.client
                    .indices()
                    .get_index_template(IndicesGetIndexTemplateParts::Name(&pattern))
                    .send(),
            )
            .await?;
        ensure!(
            status == 200 || status == 404,
            "listing templates: HTTP {status}: {templates}"
        );
        for t in templates["index_templates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = t["name"].as_str().context("template name")?;
            f.ok(
                "deleting a template",
                f.client
                    .indices()
                    .delete_index_template(IndicesDeleteIndexTemplateParts::Name(name))
                    .send(),
            )
            .await?;
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn documents_are_indexed_read_and_deleted() -> Result<()> {
    with_fixture(async |f| {
        let (ax, b) = (f.n("a-x"), f.n("b"));
        f.run(json!({"steps": [
            {"call": "index", "index": ax, "id": "v1",
             "doc": {"title": "Big Buck Bunny", "views": 10}, "expect": {"ok": null}},
            {"call": "index", "index": ax, "id": "v1",
             "doc": {"title": "Big Buck Bunny", "views": 11}, "expect": {"ok": null}},
            {"call": "get", "index": ax, "id": "v1",
             "expect": {"ok": {"title": "Big Buck Bunny", "views": 11}}},
            {"call": "get", "index": ax, "id": "none", "expect": {"ok": null}},
            {"call": "get", "index": f.n("a-missing"), "id": "v1", "expect": {"ok": null}},
            {"call": "bulk-index", "items": [
                {"index": ax, "id": "v2", "doc": {"title": "Sintel", "views": 5}},
                {"index": b, "id": "c1", "doc": {"name": "blender"}},
                // `views` is a number by now: this one is refused, the others stored.
                {"index": ax, "id": "v3", "doc": {"title": "Tears", "views": "many"}},
                {"index": ax, "id": "v4", "doc": {"title": "Cosmos", "views": 7}},
             ], "expect": {"ok": [null, null, {"refused": "*"}, null]}},
            {"call": "bulk-index", "items": [], "expect": {"ok": []}},
            {"call": "delete", "index": ax, "id": "v4", "expect": {"ok": true}},
            {"call": "delete", "index": ax, "id": "v4", "expect": {"ok": false}},
            {"call": "delete", "index": f.n("a-missing"), "id": "v4", "expect": {"ok": false}},
            // Arguments refused before Elasticsearch.
            {"call": "index", "index": ax, "id": "bad", "doc": "{not json",
             "expect": {"err": "invalid", "transient": false}},
            {"call": "index", "index": ax, "id": "bad", "doc": [1, 2], "expect": {"err": "invalid"}},
            {"call": "index", "index": ax, "id": "..", "doc": {}, "expect": {"err": "invalid"}},
            {"call": "delete", "index": ax, "id": "..", "expect": {"err": "invalid"}},
            {"call": "index", "index": f.n("a-*"), "id": "1", "doc": {}, "expect": {"err": "invalid"}},
            // And by Elasticsearch, with their kinds.
            {"call": "index", "index": ax, "id": "bad", "doc": {"views": "lots"},
             "expect": {"err": "invalid"}},
        ]}))
        .await?;

        ensure!(
            f.source(&ax, "v1").await? == Some(json!({"title": "Big Buck Bunny", "views": 11}))
        );
        ensure!(f.source(&ax, "v2").await? == Some(json!({"title": "Sintel", "views": 5})));
        ensure!(f.source(&b, "c1").await? == Some(json!({"name": "blender"})));
        ensure!(f.source(&ax, "v3").await?.is_none(), "the refused item was stored");
        ensure!(f.source(&ax, "v4").await?.is_none(), "v4 was deleted");
        ensure!(f.count(&ax).await? == 2, "documents in {ax}");
        ensure!(!f.index_exists(&f.n("a-missing")).await?, "a read created an index");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn search_and_count_find_what_is_indexed() -> Result<()> {
    with_fixture(async |f| {
        let (a1, a2, b) = (f.n("a-1"), f.n("a-2"), f.n("b"));
        let titles = [
            (&a1, "t1", "Big Buck Bunny", "animation", 10),
            (&a1, "t2", "Sintel", "animation", 30),
            (&a2, "t3", "Tears of Steel", "sci-fi", 20),
            (&a2, "t4", "Cosmos Laundromat", "animation", 5),
        ];
        let items: Vec<Value> = titles
            .iter()
            .map(|(index, id, title, genre, views)| {
                json!({"index": index, "id": id,
                       "doc": {"title": title, "genre": genre, "views": views}})
            })
            .collect();
        let source = |i: usize| {
            let (_, _, title, genre, views) = titles[i];
            json!({"title": title, "genre": genre, "views": views})
        };
        f.run(json!({"steps": [
            {"call": "bulk-index", "items": items, "expect": {"ok": [null, null, null, null]}},
            {"call": "index", "index": b, "id": "x", "doc": {"genre": "animation", "views": 1}},
            {"call": "refresh", "index": f.n("a-*"), "expect": {"ok": null}},
            {"call": "refresh", "index": b, "expect": {"ok": null}},
            {"call": "search", "index": f.n("a-*"),
             "body": {"query": {"term": {"genre.keyword": "animation"}},
                      "sort": [{"views": "desc"}], "size": 2,
                      "aggs": {"genres": {"terms": {"field": "genre.keyword"}},
                               "total_views": {"sum": {"field": "views"}}}},
             "expect": {"ok": {"total": 3,
                               "hits": [{"index": a1, "id": "t2", "score": null, "source": source(1)},
                                        {"index": a1, "id": "t1", "score": null, "source": source(0)}],
                               "aggregations": {
                                   "genres": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0,
                                              "buckets": [{"key": "animation", "doc_count": 3}]},
                                   "total_views": {"value": 45.0}}}}},
            {"call": "search", "index": format!("{a2},{b}"),
             "body": {"query": {"match": {"title": "steel"}}},
             "expect": {"ok": {"total": 1,
                               "hits": [{"index": a2, "id": "t3", "score": "*", "source": source(2)}],
                               "aggregations": null}}},
            {"call": "search", "index": f.n("a-*"), "body": "",
             "expect": {"ok": {"total": 4, "hits": "*", "aggregations": null}}},
            {"call": "count", "index": f.n("a-*"), "body": {"query": {"range": {"views": {"gte": 10}}}},
             "expect": {"ok": 3}},
            {"call": "count", "index": format!("{a1},{b}"), "body": {}, "expect": {"ok": 3}},
            {"call": "count", "index": f.n("a-none-*"), "body": {}, "expect": {"ok": 0}},
            // Errors with their kinds.
            {"call": "search", "index": f.n("a-missing"), "body": {}, "expect": {"err": "not-found"}},
            {"call": "search", "index": f.n("a-*"), "body": {"query": {"no_such_query": {}}},
             "expect": {"err": "invalid", "transient": false}},
            {"call": "count", "index": f.n("a-*"), "body": {"size": 1}, "expect": {"err": "invalid"}},
            {"call": "search", "index": f.n("a-*"), "body": "{", "expect": {"err": "invalid"}},
        ]}))
        .await
    })
    .await
}

#[tokio::test]
async fn search_totals_are_exact_past_ten_thousand() -> Result<()> {
    with_fixture(async |f| {
        let index = f.n("a-many");
        let n = 10_050;
        let mut lines: Vec<JsonBody<Value>> = Vec::with_capacity(2 * n);
        for i in 0..n {
            lines.push(json!({"index": {"_id": i.to_string()}}).into());
            lines.push(json!({"i": i}).into());
        }
        let reply = f
            .ok(
                "bulk",
                f.client.bulk(BulkParts::Index(&index)).body(lines).send(),
            )
            .await?;
        ensure!(
            reply["errors"] == json!(false),
            "bulk: {}",
            reply["items"][0]
        );
        f.run(json!({"steps": [
            {"call": "refresh", "index": index},
            {"call": "search", "index": index, "body": {"size": 0, "track_total_hits": false},
             "expect": {"ok": {"total": n, "hits": [], "aggregations": null}}},
            {"call": "count", "index": index, "body": {}, "expect": {"ok": n}},
        ]}))
        .await
    })
    .await
}

#[tokio::test]
async fn index_templates_install_inside_the_grant() -> Result<()> {
    with_fixture(async |f| {
        let name = f.n("tpl");
        let patterns = json!([f.n("a-tpl-*")]);
        let body = json!({
            "index_patterns": patterns,
            "priority": 500,
            "template": {
                "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                "mappings": {"properties": {"code": {"type": "keyword"}}},
                "aliases": {(f.n("a-tpl-all")): {}},
            },
        });
        // A template of the same name prefix, made natively, for patterns outside the grant.
        let foreign = f.n("foreign");
        f.ok(
            "putting the foreign template",
            f.client
                .indices()
                .put_index_template(IndicesPutIndexTemplateParts::Name(&foreign))
                .body(json!({"index_patterns": [f.n("c-*")], "priority": 500}))
                .send(),
        )
        .await?;
        f.run(json!({"steps": [
            {"call": "put-index-template", "name": name, "body": body, "expect": {"ok": null}},
            // Replacing one's own template is fine.
            {"call": "put-index-template", "name": name, "body": body, "expect": {"ok": null}},
            {"call": "index", "index": f.n("a-tpl-1"), "id": "1", "doc": {"code": "X-1"}},
            {"call": "refresh", "index": f.n("a-tpl-all")},
            {"call": "count", "index": f.n("a-tpl-all"), "body": {"query": {"term": {"code": "X-1"}}},
             "expect": {"ok": 1}},
            // Outside the grant: refused, before Elasticsearch.
            {"call": "put-index-template", "name": f.n("t2"),
             "body": {"index_patterns": [f.n("a-*"), f.n("c-*")]}, "expect": {"err": "denied"}},
            {"call": "put-index-template", "name": f.n("t2"),
             "body": {"index_patterns": ["*"]}, "expect": {"err": "denied"}},
            {"call": "put-index-template", "name": f.n("t2"),
             "body": {"index_patterns": [f.n("a-z-*")],
                      "template": {"aliases": {(f.n("c-alias")): {}}}},
             "expect": {"err": "denied"}},
            {"call": "put-index-template", "name": f.n("t2"),
             "body": {"index_patterns": [f.n("a-z-*")],
                      "template": {"settings": {"index.default_pipeline": "any"}}},
             "expect": {"err": "denied"}},
            {"call": "put-index-template", "name": f.n("t2"),
             "body": {"index_patterns": [f.n("a-z-*")],
                      "template": {"mappings": {"runtime": {"r": {"type": "long", "script": "emit(1)"}}}}},
             "expect": {"err": "denied"}},
            {"call": "put-index-template", "name": f.n("t2"), "body": {"template": {}},
             "expect": {"err": "invalid"}},
            // Someone else's template is not the plugin's to replace, even with a granted body.
            {"call": "put-index-template", "name": foreign,
             "body": {"index_patterns": [f.n("a-z-*")]}, "expect": {"err": "denied"}},
        ]}))
        .await?;

        let installed = f.template(&name).await?.context("the template was not installed")?;
        ensure!(installed["index_patterns"] == patterns, "{installed}");
        ensure!(installed["priority"] == json!(500), "{installed}");
        let mapping = f
            .ok(
                "mapping",
                f.client
                    .indices()
                    .get_mapping(IndicesGetMappingParts::Index(&[&f.n("a-tpl-1")]))
                    .send(),
            )
            .await?;
        ensure!(
            mapping[f.n("a-tpl-1")]["mappings"]["properties"]["code"]["type"] == "keyword",
            "the template's mapping applied: {mapping}"
        );
        ensure!(f.template(&f.n("t2")).await?.is_none(), "a refused template was installed");
        let kept = f.template(&foreign).await?.context("the foreign template vanished")?;
        ensure!(kept["index_patterns"] == json!([f.n("c-*")]), "{kept}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn indices_outside_the_grant_are_refused_and_untouched() -> Result<()> {
    with_fixture(async |f| {
        let (ax, c) = (f.n("a-x"), f.n("c"));
        // An index outside the grant with a document, made natively.
        f.ok(
            "seeding the ungranted index",
            f.client
                .index(IndexParts::IndexId(&c, "1"))
                .body(json!({"secret": true}))
                .refresh(elasticsearch::params::Refresh::True)
                .send(),
        )
        .await?;
        let denied = json!({"err": "denied", "transient": false});
        f.run(json!({"steps": [
            {"call": "index", "index": f.n("c-new"), "id": "1", "doc": {}, "expect": denied},
            {"call": "bulk-index", "items": [
                {"index": ax, "id": "1", "doc": {}},
                {"index": f.n("c-new"), "id": "1", "doc": {}},
             ], "expect": denied},
            {"call": "get", "index": c, "id": "1", "expect": denied},
            {"call": "delete", "index": c, "id": "1", "expect": denied},
            {"call": "refresh", "index": c, "expect": denied},
            {"call": "search", "index": "*", "body": {}, "expect": denied},
            {"call": "search", "index": "_all", "body": {}, "expect": denied},
            {"call": "search", "index": format!("{}*", f.p), "body": {}, "expect": denied},
            {"call": "search", "index": f.n("a*"), "body": {}, "expect": denied},
            {"call": "search", "index": format!("{ax},{c}"), "body": {}, "expect": denied},
            {"call": "count", "index": f.n("*"), "body": {}, "expect": denied},
            {"call": "search", "index": format!("other:{ax}"), "body": {}, "expect": denied},
            // Queries that would reach further: scripts, documents of other indices.
            {"call": "search", "index": ax,
             "body": {"query": {"script": {"script": {"source": "true"}}}}, "expect": denied},
            {"call": "count", "index": ax,
             "body": {"query": {"terms": {"secret": {"index": c, "id": "1", "path": "secret"}}}},
             "expect": denied},
            {"call": "search", "index": ax,
             "body": {"query": {"more_like_this": {"like": [{"_index": c, "_id": "1"}]}}},
             "expect": denied},
        ]}))
        .await?;
        ensure!(
            !f.index_exists(&f.n("c-new")).await?,
            "an ungranted index was created"
        );
        ensure!(
            !f.index_exists(&ax).await?,
            "a refused bulk created its granted index"
        );
        ensure!(
            f.source(&c, "1").await? == Some(json!({"secret": true})),
            "the ungranted document was touched"
        );
        Ok(())
    })
    .await
}
