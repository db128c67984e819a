//! The admin API behind the console, with the host as a separate process: the page and its
//! assets, the topology, the live SSE samples (rates; latency mean, p50 and p99), the
//! dead-letter routes (list, show, replay once, refuse a second), and the guard on
//! state-changing calls (same-origin without a token, the token when
//! `POLYHOST_ADMIN_TOKEN` is set).

mod common;
mod harness;
mod process;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use process::{Fixture, Host, test_plugin, wait_for};
use serde_json::{Value, json};

const POISON: &str = "test.poison";

async fn post(
    host: &Host,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Result<(u16, Value)> {
    let mut req = reqwest::Client::new()
        .post(format!("http://{}{path}", host.admin))
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or_default()))
}

async fn get_json(host: &Host, path: &str) -> Result<(u16, Value)> {
    let r = reqwest::get(format!("http://{}{path}", host.admin)).await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or_default()))
}

/// Reads SSE `sample` events from `/api/events` until `n` have arrived.
async fn samples(host: &Host, n: usize) -> Result<Vec<Value>> {
    let mut r = reqwest::get(format!("http://{}/api/events", host.admin)).await?;
    ensure!(r.status().is_success(), "{}", r.status());
    let content_type = r.headers()["content-type"].to_str()?.to_string();
    ensure!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut buffer = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, r.chunk())
            .await
            .context("no SSE sample in time")??
            .context("the SSE stream ended")?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if frame.lines().any(|l| l == "event: sample") {
                let data: String = frame
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                out.push(serde_json::from_str(&data)?);
            }
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_serves_its_page_graph_samples_and_dead_letters() -> Result<()> {
    let f = Fixture::new(2).await?;
    let (a, b) = (test_plugin("recorder"), test_plugin("recorder-b"));
    let broken = f.recorder(&a, 10, 0).replace(
        "[plugin.config]\n",
        &format!("[plugin.config]\nfail_type = \"{POISON}\"\n"),
    );
    let manifest = f.manifest("m.toml", &broken)?;
    let host = Host::start(&manifest, &[]).await?;

    // The page and its assets, embedded, with a policy that keeps it to this origin.
    let r = reqwest::get(format!("http://{}/", host.admin)).await?;
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str()?.to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let page = r.text().await?;
    assert!(page.contains("<script src=\"/console.js\""), "{page}");
    assert!(
        !page.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    for asset in ["/console.js", "/console.css"] {
        let (status, body) = host.get(asset).await?;
        assert_eq!(status, 200, "{asset}");
        assert!(body.len() > 500, "{asset}: {body}");
    }

    // The graph: the plugin, its topic, its store (Redis, from its keyvalue grant).
    let (_, topology) = get_json(&host, "/api/topology").await?;
    let p = &topology["plugins"][0];
    assert_eq!(p["name"], f.plugin.as_str(), "{topology:#}");
    assert_eq!(p["subscribe"], json!([f.topic]));
    assert_eq!(p["stores"], json!(["Redis"]));
    assert_eq!(p["limits"]["batch_size"], 10);
    assert_eq!(p["grants"][0][0], "keyvalue");

    // Live samples: the rate follows the events.
    let producing = {
        let (kafka, topic, prefix) = (f.kafka.clone(), f.topic.clone(), f.plugin.clone());
        tokio::spawn(async move {
            for i in 0..8 {
                process::produce(&kafka, &topic, &prefix, i * 100, 100, 8).await?;
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            anyhow::Ok(())
        })
    };
    let s = samples(&host, 4).await?;
    producing.await??;
    let mine = |s: &Value| {
        s["plugins"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == f.plugin.as_str()).cloned())
            .expect("the plugin in every sample")
    };
    assert!(s.iter().all(|s| s["time"].is_string()));
    assert!(
        s.iter()
            .skip(1)
            .any(|s| mine(s)["rate"].as_f64().unwrap_or(0.0) > 0.0),
        "a positive rate while events flow: {s:#?}"
    );
    // The latency of the events final in the last second: mean, p50 and p99, in ms.
    let latencies: Vec<(f64, f64, f64)> = s
        .iter()
        .filter_map(|s| {
            let p = mine(s);
            Some((
                p["latency_ms"].as_f64()?,
                p["latency_p50_ms"].as_f64()?,
                p["latency_p99_ms"].as_f64()?,
            ))
        })
        .collect();
    assert!(!latencies.is_empty(), "latencies while events flow: {s:#?}");
    for &(mean, p50, p99) in &latencies {
        assert!(
            mean > 0.0 && p50 > 0.0 && p50 <= p99,
            "mean {mean}, p50 {p50}, p99 {p99}"
        );
    }
    let last = mine(s.last().unwrap());
    assert_eq!(last["digest"].as_str().map(str::len), Some(64), "{last}");

    // A poison event: listed and shown through the API.
    f.wait_recorded(800, Duration::from_secs(60)).await?;
    produce_poison(&f).await?;
    let path = format!("/api/dlq/{}", f.plugin);
    let letters = wait_for(Duration::from_secs(60), "a dead letter", || async {
        let (_, v) = get_json(&host, &path).await?;
        Ok(v.as_array().filter(|a| !a.is_empty()).cloned())
    })
    .await?;
    let offset = letters[0]["at"]["offset"].as_i64().unwrap();
    let (status, shown) = get_json(&host, &format!("{path}/0/{offset}")).await?;
    assert_eq!(status, 200);
    assert_eq!(
        shown["reason"],
        format!("events of type {POISON} are refused")
    );
    let (status, _) = get_json(&host, &format!("{path}/0/{}", offset + 100)).await?;
    assert_eq!(status, 404);

    // State-changing calls from another site are refused; same-origin ones pass.
    let replay = format!("{path}/replay");
    let one = json!({ "offsets": [[0, offset]] });
    let (status, v) = post(&host, &replay, &one, &[("Origin", "http://evil.example")]).await?;
    assert_eq!(status, 403, "{v}");
    let (status, v) = post(&host, &replay, &one, &[("Sec-Fetch-Site", "cross-site")]).await?;
    assert_eq!(status, 403, "{v}");
    let (status, v) = post(
        &host,
        &format!("/api/plugins/{}/rollback", f.plugin),
        &json!({}),
        &[("Origin", "http://evil.example")],
    )
    .await?;
    assert_eq!(status, 403, "reload and rollback are guarded too: {v}");

    // Fix by a hot swap, replay from the same origin, once.
    std::fs::write(&manifest, f.recorder(&b, 10, 0))?;
    let (status, v) = post(&host, "/api/manifest/reload", &json!({}), &[]).await?;
    assert_eq!(status, 200, "{v}");
    let origin = format!("http://{}", host.admin);
    let headers = [
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    let (status, v) = post(&host, &replay, &one, &headers).await?;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["outcomes"][0]["result"], "replayed", "{v}");
    assert_eq!(v["outcomes"][0]["replay"]["by"], "admin-api", "{v}");
    let poison_id = format!("{}-poison", f.plugin);
    wait_for(Duration::from_secs(60), "the replayed event", || async {
        Ok(f.recorded().await?.contains_key(&poison_id).then_some(()))
    })
    .await?;
    let (status, v) = post(&host, &replay, &one, &headers).await?;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["outcomes"][0]["result"], "already replayed", "{v}");
    let (_, letters) = get_json(&host, &path).await?;
    assert_eq!(letters[0]["replayed"]["by"], "admin-api");
    drop(host);
    Ok(())
}

async fn produce_poison(f: &Fixture) -> Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &f.kafka.url)
        .create()?;
    let value = json!({
        "specversion": "1.0", "id": format!("{}-poison", f.plugin), "source": "/tests/console",
        "type": POISON, "data": {},
    });
    let payload = serde_json::to_vec(&value)?;
    producer
        .send(
            FutureRecord::to(&f.topic).key("kp").payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_state_changing_calls_need_it() -> Result<()> {
    let f = Fixture::new(1).await?;
    let manifest = f.manifest("m.toml", &f.recorder(&test_plugin("recorder"), 10, 0))?;
    // The variable is given to the host process only, not set in this one.
    let host = start_with_env(&manifest, &[("POLYHOST_ADMIN_TOKEN", "s3cret")]).await?;
    let path = format!("/api/plugins/{}/rollback", f.plugin);
    let (status, v) = post(&host, &path, &json!({}), &[]).await?;
    assert_eq!(status, 401, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("POLYHOST_ADMIN_TOKEN"),
        "{v}"
    );
    let (status, v) = post(
        &host,
        &path,
        &json!({}),
        &[("Authorization", "Bearer wrong")],
    )
    .await?;
    assert_eq!(status, 401, "{v}");
    // With the token the call reaches the supervisor (which has nothing to roll back to).
    let (status, v) = post(
        &host,
        &path,
        &json!({}),
        &[("Authorization", "Bearer s3cret")],
    )
    .await?;
    assert_eq!(status, 409, "{v}");
    // Reads need no token.
    let (status, _) = get_json(&host, "/api/topology").await?;
    assert_eq!(status, 200);
    // The CLI sends the token from the same variable.
    let out = std::process::Command::new(process::polyhost())
        .args(["rollback", &f.plugin, "--admin-addr", &host.admin])
        .env("POLYHOST_ADMIN_TOKEN", "s3cret")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no previous version"), "{err}");
    drop(host);
    Ok(())
}

/// `Host::start` with extra environment for the host process.
async fn start_with_env(manifest: &std::path::Path, env: &[(&str, &str)]) -> Result<Host> {
    use std::process::{Command, Stdio};
    let port = process::free_port();
    let admin = format!("127.0.0.1:{port}");
    let log = manifest.with_extension(format!("{port}.log"));
    let mut cmd = Command::new(process::polyhost());
    cmd.arg("run")
        .arg("--manifest")
        .arg(manifest)
        .arg("--admin-addr")
        .arg(&admin)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn()?;
    let host = Host { child, admin, log };
    wait_for(Duration::from_secs(120), "the admin API", || async {
        Ok(reqwest::get(format!("http://{}/healthz", host.admin))
            .await
            .is_ok_and(|r| r.status().is_success())
            .then_some(()))
    })
    .await?;
    Ok(host)
}
