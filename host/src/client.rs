//! The `polyhost` binary's client of the admin API: what `status`, `reload` and `rollback`
//! send to a running host.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use polyhost::supervisor::PluginStatus;

fn url(addr: &SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// `GET /api/plugins`: the running host's plugins (`polyhost status`).
pub async fn plugins(addr: &SocketAddr) -> Result<Vec<PluginStatus>> {
    let r = reqwest::get(url(addr, "/api/plugins"))
        .await
        .with_context(|| format!("no polyhost admin API answers on {addr}"))?;
    Ok(r.json().await?)
}

/// `polyhost reload` / `rollback`: prints the answer; exits 1 with the reason when refused.
pub async fn post(
    addr: &SocketAddr,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<ExitCode> {
    let client = reqwest::Client::new();
    let mut req = client.post(url(addr, path));
    if let Some(token) = std::env::var(polyhost::admin::TOKEN_VAR)
        .ok()
        .filter(|t| !t.is_empty())
    {
        req = req.bearer_auth(token);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req
        .send()
        .await
        .with_context(|| format!("no polyhost admin API answers on {addr}"))?;
    let ok = r.status().is_success();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    if ok {
        println!("{}", serde_json::to_string_pretty(&v)?);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "polyhost: refused: {}",
            v["error"].as_str().unwrap_or("(no reason given)")
        );
        Ok(ExitCode::FAILURE)
    }
}
