//! The operator's console: a single page served by the admin API at `GET /`, with its
//! script and style embedded in the binary (no CDN, nothing fetched from elsewhere), and
//! the JSON it reads:
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the page (`index.html`, `console.js`, `console.css` embedded) |
//! | `GET /api/topology` | plugins with topics, grants, limits, publish topics, stores: the graph |
//! | `GET /api/events` | SSE: a `sample` event every second with per-plugin counters, rates and the latency (mean, p50, p99) of the events final since the last sample |
//! | `GET /api/audit` | the auditor's trail in Elasticsearch: counts by type and a timeline |
//!
//! Dead-letter routes are in [`crate::admin`], over [`crate::dlq`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::manifest::{Kind, PluginSpec};
use crate::metrics;
use crate::supervisor::{PluginStatus, Supervisor};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// `GET /`.
pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page loads only its own script and style, and talks only to this origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        INDEX,
    )
        .into_response()
}

/// `GET /console.js`.
pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// `GET /console.css`.
pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// A plugin in the graph.
#[derive(Debug, Serialize)]
pub struct Node {
    /// The manifest name.
    pub name: String,
    /// `handler` or `generator`.
    pub kind: String,
    /// The topics (or patterns) it consumes.
    pub subscribe: Vec<String>,
    /// The topics it may publish to.
    pub publish: Vec<String>,
    /// The stores it is granted: `PostgreSQL`, `MongoDB`, `Redis`, `Elasticsearch`.
    pub stores: Vec<String>,
    /// Each grant as the manifest gives it, for people.
    pub grants: Vec<(String, String)>,
    /// `[plugin.limits]`.
    pub limits: Value,
}

fn node(spec: &PluginSpec) -> Node {
    let g = &spec.grants;
    let mut stores = Vec::new();
    let mut grants = Vec::new();
    let mut grant = |backend: &str, store: Option<&str>, text: Option<String>| {
        if let Some(t) = text {
            grants.push((
                backend.to_string(),
                t.trim_start_matches("Grant ").to_string(),
            ));
            if let Some(s) = store {
                stores.push(s.to_string());
            }
        }
    };
    grant(
        "messaging",
        None,
        g.messaging.as_ref().map(|x| format!("{x:?}")),
    );
    grant(
        "sql",
        Some("PostgreSQL"),
        g.sql.as_ref().map(|x| format!("{x:?}")),
    );
    grant(
        "documents",
        Some("MongoDB"),
        g.documents.as_ref().map(|x| format!("{x:?}")),
    );
    grant(
        "keyvalue",
        Some("Redis"),
        g.keyvalue.as_ref().map(|x| format!("{x:?}")),
    );
    grant(
        "search",
        Some("Elasticsearch"),
        g.search.as_ref().map(|x| format!("{x:?}")),
    );
    let l = &spec.limits;
    Node {
        name: spec.name.clone(),
        kind: spec.kind.to_string(),
        subscribe: spec.subscribe.clone(),
        publish: g
            .messaging
            .as_ref()
            .map(|m| m.publish.clone())
            .unwrap_or_default(),
        stores,
        grants,
        limits: json!({
            "memory_mb": l.memory_mb,
            "call_timeout_ms": l.call_timeout_ms,
            "host_call_timeout_ms": l.host_call_timeout_ms,
            "max_instances": l.max_instances,
            "batch_size": l.batch_size,
            "batch_wait_ms": l.batch_wait_ms,
            "max_result_bytes": l.max_result_bytes,
            "max_value_bytes": l.max_value_bytes,
        }),
    }
}

/// `GET /api/topology`: the graph's nodes (plugins in manifest-name order; topics and
/// stores follow from them).
pub async fn topology(State(sup): State<Arc<Supervisor>>) -> Response {
    let nodes: Vec<Node> = sup.specs().await.iter().map(node).collect();
    Json(json!({ "plugins": nodes })).into_response()
}

/// One plugin in one SSE sample.
#[derive(Debug, Serialize)]
pub struct PluginSample {
    /// The status `GET /api/plugins` gives.
    #[serde(flatten)]
    pub status: PluginStatus,
    /// Final outcomes (or, for a generator, events published) per second since the last
    /// sample.
    pub rate: f64,
    /// Mean end-to-end latency (produce to final outcome) of the events that became final
    /// since the last sample, in milliseconds; `None` when none did.
    pub latency_ms: Option<f64>,
    /// The median of the same latencies, estimated from the histogram's buckets (within a
    /// bucket's width, ~19 %), in milliseconds; `None` when no event became final.
    pub latency_p50_ms: Option<f64>,
    /// The 99th percentile of the same latencies, estimated likewise.
    pub latency_p99_ms: Option<f64>,
}

fn throughput(p: &PluginStatus) -> u64 {
    if p.kind == Kind::Generator.to_string() {
        p.generated
    } else {
        p.processed + p.dead_lettered
    }
}

/// The counters a rate is computed from.
#[derive(Default)]
struct Previous {
    at: Option<Instant>,
    counts: HashMap<String, (u64, Latencies)>,
}

async fn sample(sup: &Supervisor, prev: &mut Previous) -> Value {
    let now = Instant::now();
    let dt = prev
        .at
        .map(|t| now.duration_since(t).as_secs_f64())
        .unwrap_or(0.0);
    let statuses = sup.status().await;
    // The histogram's sum, count and buckets are read from its exposition: the client
    // library exposes the buckets to nothing else.
    let mut latency = latency_totals(&metrics::global().encode());
    let mut plugins = Vec::new();
    for status in statuses {
        let totals = latency.remove(&status.name).unwrap_or_default();
        let count = throughput(&status);
        let mut sample = PluginSample {
            rate: 0.0,
            latency_ms: None,
            latency_p50_ms: None,
            latency_p99_ms: None,
            status,
        };
        if let Some((c0, t0)) = prev.counts.get(&sample.status.name).filter(|_| dt > 0.0) {
            sample.rate = count.saturating_sub(*c0) as f64 / dt;
            if totals.count > t0.count {
                sample.latency_ms =
                    Some((totals.sum - t0.sum) / (totals.count - t0.count) as f64 * 1000.0);
                sample.latency_p50_ms =
                    quantile(0.5, &t0.buckets, &totals.buckets).map(|s| s * 1000.0);
                sample.latency_p99_ms =
                    quantile(0.99, &t0.buckets, &totals.buckets).map(|s| s * 1000.0);
            }
        }
        prev.counts
            .insert(sample.status.name.clone(), (count, totals));
        plugins.push(sample);
    }
    prev.at = Some(now);
    json!({
        "time": crate::supervisor::rfc3339(std::time::SystemTime::now()),
        "plugins": plugins,
    })
}

/// One plugin's `polyhost_event_latency_seconds` as exposed: totals since start.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Latencies {
    /// The sum of the latencies, in seconds.
    pub sum: f64,
    /// How many were observed.
    pub count: u64,
    /// `(le, cumulative count)` by increasing bound, `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
}

/// The `q` quantile (0 < q ≤ 1) of the observations made between two readings of the same
/// histogram's cumulative buckets, interpolated linearly within the bucket it falls in (as
/// Prometheus' `histogram_quantile` does); in the `+Inf` bucket, the highest finite bound.
/// `None` when nothing was observed in between or the buckets do not match.
pub fn quantile(q: f64, before: &[(f64, u64)], after: &[(f64, u64)]) -> Option<f64> {
    let delta: Vec<(f64, u64)> = if before.is_empty() {
        after.to_vec()
    } else {
        if before.len() != after.len() {
            return None;
        }
        before
            .iter()
            .zip(after)
            .map(|(&(_, b), &(le, a))| (le, a.saturating_sub(b)))
            .collect()
    };
    let total = delta.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let i = delta.iter().position(|&(_, c)| c as f64 >= rank)?;
    let (lower, below) = if i == 0 { (0.0, 0) } else { delta[i - 1] };
    let (upper, at) = delta[i];
    if upper.is_infinite() {
        return Some(lower);
    }
    let inside = at - below;
    if inside == 0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below as f64) / inside as f64)
}

/// Per plugin, `polyhost_event_latency_seconds`' sum, count and buckets, from the
/// OpenMetrics text.
pub fn latency_totals(text: &str) -> HashMap<String, Latencies> {
    const NAME: &str = "polyhost_event_latency_seconds_";
    let mut out: HashMap<String, Latencies> = HashMap::new();
    for line in text.lines() {
        let Some((series, rest)) = line.strip_prefix(NAME).and_then(|r| r.split_once('{')) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.strip_prefix("=\""))
                    .and_then(|v| v.strip_suffix('"'))
            })
        };
        let Some(plugin) = label("plugin") else {
            continue;
        };
        let value = value.split_whitespace().next().unwrap_or_default();
        let entry = out.entry(plugin.to_string()).or_default();
        match series {
            "sum" => entry.sum = value.parse().unwrap_or(0.0),
            "count" => entry.count = value.parse().unwrap_or(0),
            "bucket" => {
                let le = match label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => match le.parse() {
                        Ok(le) => le,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                entry.buckets.push((le, value.parse().unwrap_or(0)));
            }
            _ => {}
        }
    }
    for l in out.values_mut() {
        l.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// `GET /api/events`: a `sample` every second, for as long as the client listens.
pub async fn events(
    State(sup): State<Arc<Supervisor>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold(
        (sup, Previous::default(), None::<tokio::time::Interval>),
        |(sup, mut prev, interval)| async move {
            let mut interval = match interval {
                Some(i) => i,
                None => {
                    let mut i = tokio::time::interval(Duration::from_secs(1));
                    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    i
                }
            };
            interval.tick().await;
            let data = sample(&sup, &mut prev).await;
            let event = Event::default().event("sample").data(data.to_string());
            Some((Ok(event), (sup, prev, Some(interval))))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The filters of `GET /api/audit`: every one optional.
#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    /// `user_id` (exact).
    pub user: Option<String>,
    /// `title_id` (exact).
    pub title: Option<String>,
    /// The event type (exact).
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// From (RFC 3339 or Elasticsearch date math, e.g. `now-15m`).
    pub from: Option<String>,
    /// To (same forms).
    pub to: Option<String>,
}

/// Seconds before now that `t` names: `now`, `now-<n><s|m|h|d>`, or RFC 3339.
fn seconds_ago(t: &str) -> Option<f64> {
    let t = t.trim();
    if t == "now" {
        return Some(0.0);
    }
    if let Some(rest) = t.strip_prefix("now-") {
        let unit = rest.chars().last()?;
        let n: f64 = rest[..rest.len() - unit.len_utf8()].parse().ok()?;
        let scale = match unit {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86_400.0,
            'w' => 604_800.0,
            _ => return None,
        };
        return Some(n * scale);
    }
    let at = chrono::DateTime::parse_from_rfc3339(t).ok()?;
    Some((chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0)
}

/// The timeline's bucket: the smallest of a fixed ladder that gives at most ~30 buckets over
/// the range asked for (a day when the range is open or unreadable, so that years of
/// events stay within Elasticsearch's bucket limit). Chosen here because
/// the integration-test Elasticsearch has no `auto_date_histogram`.
pub fn timeline_interval(q: &AuditQuery) -> &'static str {
    const LADDER: [(&str, f64); 13] = [
        ("1s", 1.0),
        ("5s", 5.0),
        ("10s", 10.0),
        ("30s", 30.0),
        ("1m", 60.0),
        ("5m", 300.0),
        ("10m", 600.0),
        ("30m", 1800.0),
        ("1h", 3600.0),
        ("3h", 10_800.0),
        ("12h", 43_200.0),
        ("1d", 86_400.0),
        ("7d", 604_800.0),
    ];
    let from = q.from.as_deref().and_then(seconds_ago);
    let to =
        q.to.as_deref()
            .filter(|t| !t.is_empty())
            .map_or(Some(0.0), seconds_ago);
    let Some(span) = from.zip(to).map(|(f, t)| f - t).filter(|s| *s > 0.0) else {
        return "1d";
    };
    LADDER
        .iter()
        .find(|(_, secs)| span / secs <= 30.0)
        .map_or("7d", |(name, _)| name)
}

/// The Elasticsearch request for `q`: filtered hits (the latest 20), counts per type, and
/// a timeline by [`timeline_interval`].
pub fn audit_request(q: &AuditQuery) -> Value {
    let mut filter = Vec::new();
    let nonempty = |s: &Option<String>| s.as_deref().filter(|v| !v.is_empty()).map(str::to_string);
    if let Some(u) = nonempty(&q.user) {
        filter.push(json!({ "term": { "user_id": u } }));
    }
    if let Some(t) = nonempty(&q.title) {
        filter.push(json!({ "term": { "title_id": t } }));
    }
    if let Some(t) = nonempty(&q.type_) {
        filter.push(json!({ "term": { "type": t } }));
    }
    let mut range = serde_json::Map::new();
    if let Some(f) = nonempty(&q.from) {
        range.insert("gte".into(), f.into());
    }
    if let Some(t) = nonempty(&q.to) {
        range.insert("lte".into(), t.into());
    }
    if !range.is_empty() {
        filter.push(json!({ "range": { "time": range } }));
    }
    json!({
        "size": 20,
        "track_total_hits": true,
        "sort": [{ "time": { "order": "desc", "unmapped_type": "date" } }],
        "_source": ["id", "type", "time", "topic", "user_id", "title_id", "subject"],
        "query": { "bool": { "filter": filter } },
        "aggs": {
            "by_type": { "terms": { "field": "type", "size": 30 } },
            "timeline": { "date_histogram": { "field": "time", "fixed_interval": timeline_interval(q) } },
        },
    })
}

/// `GET /api/audit?user=&title=&type=&from=&to=`: `{total, by_type: [{type, count}],
/// timeline: [{time, count}], hits: [...]}` from `audit-events-*` (no index yet: zeros).
pub async fn audit(State(sup): State<Arc<Supervisor>>, Query(q): Query<AuditQuery>) -> Response {
    let settings = &sup.runtime().connections().settings.elasticsearch;
    // `es` is shown in errors: without the URL's password.
    let es = settings.url.redacted().trim_end_matches('/').to_string();
    let url = format!(
        "{}/audit-events-*/_search?ignore_unavailable=true&allow_no_indices=true",
        settings.url.expose().trim_end_matches('/')
    );
    let client = match settings
        .http(reqwest::Client::builder())
        .and_then(|b| Ok(b.build()?))
    {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                Json(json!({ "error": format!("Elasticsearch at {es}: {e:#}") })),
            )
                .into_response();
        }
    };
    let answer = client
        .post(&url)
        .timeout(Duration::from_secs(10))
        .json(&audit_request(&q))
        .send()
        .await;
    let r = match answer {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                Json(json!({ "error": format!("Elasticsearch at {es}: {e}") })),
            )
                .into_response();
        }
    };
    let ok = r.status().is_success();
    let body: Value = r.json().await.unwrap_or_default();
    if !ok {
        return (
            StatusCode::BAD_GATEWAY,
            Json(
                json!({ "error": format!("Elasticsearch refused the search: {}", body["error"]) }),
            ),
        )
            .into_response();
    }
    let mut summary = audit_summary(&body);
    summary["interval"] = timeline_interval(&q).into();
    Json(summary).into_response()
}

/// The console's shape of an Elasticsearch answer to [`audit_request`].
pub fn audit_summary(body: &Value) -> Value {
    let by_type: Vec<Value> = body["aggregations"]["by_type"]["buckets"]
        .as_array()
        .map(|b| {
            b.iter()
                .map(|b| json!({ "type": b["key"], "count": b["doc_count"] }))
                .collect()
        })
        .unwrap_or_default();
    let timeline: Vec<Value> = body["aggregations"]["timeline"]["buckets"]
        .as_array()
        .map(|b| {
            b.iter()
                .map(|b| json!({ "time": b["key_as_string"], "count": b["doc_count"] }))
                .collect()
        })
        .unwrap_or_default();
    let hits: Vec<Value> = body["hits"]["hits"]
        .as_array()
        .map(|h| h.iter().map(|h| h["_source"].clone()).collect())
        .unwrap_or_default();
    json!({
        "total": body["hits"]["total"]["value"].as_u64().unwrap_or(0),
        "by_type": by_type,
        "timeline": timeline,
        "hits": hits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_request_filters_only_on_what_was_given() {
        let q = AuditQuery {
            user: Some("u1".into()),
            title: Some(String::new()),
            type_: Some("streaming.user.created".into()),
            from: Some("now-15m".into()),
            to: None,
        };
        let r = audit_request(&q);
        assert_eq!(
            r["query"]["bool"]["filter"],
            json!([
                { "term": { "user_id": "u1" } },
                { "term": { "type": "streaming.user.created" } },
                { "range": { "time": { "gte": "now-15m" } } },
            ])
        );
        assert_eq!(
            r["aggs"]["timeline"]["date_histogram"]["fixed_interval"],
            "30s"
        );
        let none = audit_request(&AuditQuery::default());
        assert_eq!(none["query"]["bool"]["filter"], json!([]));
    }

    #[test]
    fn the_timeline_has_about_thirty_buckets_over_the_range() {
        let q = |from: &str, to: Option<&str>| AuditQuery {
            from: Some(from.into()),
            to: to.map(str::to_string),
            ..AuditQuery::default()
        };
        assert_eq!(timeline_interval(&q("now-15m", None)), "30s");
        assert_eq!(timeline_interval(&q("now-1h", Some("now"))), "5m");
        assert_eq!(timeline_interval(&q("now-2d", None)), "3h");
        assert_eq!(timeline_interval(&q("now-10s", None)), "1s");
        assert_eq!(timeline_interval(&q("yesterday", None)), "1d");
        assert_eq!(timeline_interval(&AuditQuery::default()), "1d");
    }

    #[test]
    fn latency_totals_are_read_from_the_exposition() {
        let text = "# TYPE polyhost_event_latency_seconds histogram\n\
            polyhost_event_latency_seconds_sum{plugin=\"a\"} 1.5\n\
            polyhost_event_latency_seconds_count{plugin=\"a\"} 3\n\
            polyhost_event_latency_seconds_bucket{le=\"0.1\",plugin=\"a\"} 1\n\
            polyhost_event_latency_seconds_bucket{le=\"+Inf\",plugin=\"a\"} 3\n\
            polyhost_events_total{plugin=\"a\",outcome=\"ok\"} 3\n";
        let t = latency_totals(text);
        assert_eq!(t.len(), 1);
        assert_eq!(
            t["a"],
            Latencies {
                sum: 1.5,
                count: 3,
                buckets: vec![(0.1, 1), (f64::INFINITY, 3)],
            }
        );
    }

    #[test]
    fn latency_totals_read_what_the_client_library_writes() {
        let m = metrics::global().series("console-unit-test");
        for ms in [2.0, 3.0, 40.0] {
            m.event_latency_seconds.observe(ms / 1000.0);
        }
        let t = latency_totals(&metrics::global().encode());
        let l = &t["console-unit-test"];
        assert_eq!(l.count, 3);
        assert!((l.sum - 0.045).abs() < 1e-9, "{l:?}");
        assert_eq!(l.buckets.len(), 78, "77 bounds and +Inf");
        assert_eq!(l.buckets.last(), Some(&(f64::INFINITY, 3)));
        let p50 = quantile(0.5, &[], &l.buckets).unwrap();
        assert!((0.0025..=0.0036).contains(&p50), "{p50}");
    }

    #[test]
    fn quantiles_are_of_the_interval_only() {
        let le = [0.001, 0.002, 0.004, 0.008, f64::INFINITY];
        let at = |counts: [u64; 5]| le.iter().copied().zip(counts).collect::<Vec<_>>();
        // Since start: 100 fast events (≤ 1 ms); in the last interval, 10 more between 2
        // and 4 ms, and one between 4 and 8 ms.
        let before = at([100, 100, 100, 100, 100]);
        let after = at([100, 100, 110, 111, 111]);
        let p50 = quantile(0.5, &before, &after).unwrap();
        assert!((p50 - (0.002 + 0.002 * 5.5 / 10.0)).abs() < 1e-12, "{p50}");
        let p99 = quantile(0.99, &before, &after).unwrap();
        assert!((0.004..=0.008).contains(&p99), "{p99}");
        // Since start the median would be under 1 ms.
        assert!(quantile(0.5, &[], &after).unwrap() <= 0.001);
        // Nothing in the interval: no quantile.
        assert_eq!(quantile(0.5, &after, &after), None);
        // Everything past the last bound: the last finite bound.
        let late = at([100, 100, 110, 111, 121]);
        assert_eq!(quantile(0.99, &after, &late), Some(0.008));
        assert_eq!(quantile(0.5, &[], &[]), None);
    }

    #[test]
    fn the_summary_reads_counts_timeline_and_hits() {
        let body = json!({
            "hits": { "total": { "value": 3 }, "hits": [{ "_source": { "id": "e1" } }] },
            "aggregations": {
                "by_type": { "buckets": [{ "key": "a", "doc_count": 2 }, { "key": "b", "doc_count": 1 }] },
                "timeline": { "buckets": [{ "key_as_string": "2026-01-01T00:00:00.000Z", "doc_count": 3 }] },
            },
        });
        let s = audit_summary(&body);
        assert_eq!(s["total"], 3);
        assert_eq!(s["by_type"][0], json!({ "type": "a", "count": 2 }));
        assert_eq!(s["timeline"][0]["count"], 3);
        assert_eq!(s["hits"][0]["id"], "e1");
    }
}
