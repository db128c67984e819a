//! A plugin's `wasi:logging` lines in the host's log: control characters escaped, so a
//! plugin cannot forge a host log line or restyle a terminal, and capped in bytes.
//!
//! Needs the test plugins (`cargo xtask plugins`); connects to no service.

mod harness;

use std::io::Write;
use std::sync::{Arc, Mutex};

use harness::{batch, event, runtime, test_plugin};
use polyhost::bindings::polyhost::platform::types::Outcome;
use polyhost::manifest::PluginSpec;
use polyhost::runtime::Records;
use polyhost::text::{MAX_LOG_CONTEXT_BYTES, MAX_LOG_MESSAGE_BYTES};
use serde_json::json;

/// A log sink the test can read back.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = Sink;
    fn make_writer(&'a self) -> Sink {
        self.clone()
    }
}

/// Runs one event of type `ty` through the hostile plugin, with the host's log (the
/// default fmt format, no colours, as `polyhost run` writes it) going to a buffer; returns
/// the log.
async fn logged(ty: &str) -> String {
    let sink = Sink::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    // The test runtime is single-threaded and wasmtime runs the plugin on this thread, so
    // a thread-local subscriber sees every line of the call.
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut spec = PluginSpec::new("hostile", test_plugin("hostile-handler"));
    spec.subscribe = vec!["t".into()];
    let p = runtime().load(&spec).await.expect("load");
    let out = p
        .handle(
            &batch("t"),
            &[event("e1", ty, &json!({}))],
            Records::default(),
        )
        .await
        .expect("handle");
    assert!(matches!(out[..], [Outcome::Ok]), "{out:?}");
    String::from_utf8(sink.0.lock().unwrap().clone()).expect("utf-8 log")
}

/// The host's log lines written for the plugin (target `plugin`).
fn plugin_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" INFO plugin: ") || l.contains(" WARN plugin: "))
        .collect()
}

#[tokio::test]
async fn a_plugin_cannot_forge_a_host_log_line() {
    let log = logged("hostile.forge-log").await;
    assert!(
        !log.contains('\x1b'),
        "an ANSI escape reached the log: {log:?}"
    );
    assert!(
        !log.contains('\r'),
        "a carriage return reached the log: {log:?}"
    );
    assert!(
        !log.contains('\u{202e}'),
        "a bidi override reached the log: {log:?}"
    );
    // The forged text is there, but inside the plugin's line, never at the start of one.
    let forged = "2026-01-01T00:00:00.000000Z ERROR polyhost::trigger: FORGED host line";
    for line in log.lines() {
        assert!(!line.starts_with(forged), "a forged line: {log}");
    }
    let lines = plugin_lines(&log);
    assert_eq!(lines.len(), 1, "one call, one line: {log}");
    let line = lines[0];
    assert!(line.contains(" INFO plugin: "), "{line}");
    assert!(
        line.contains(&format!(
            "handled e1\\n{forged}\\r\\u{{1b}}[2J\\u{{1b}}[31mred\\u{{1b}}[0m\\u{{202e}}"
        )),
        "{line}"
    );
    assert!(line.contains(&format!("context=ctx\\n{forged}")), "{line}");
    assert!(
        line.contains("plugin=\"hostile\"") || line.contains("plugin=hostile"),
        "{line}"
    );
}

#[tokio::test]
async fn a_megabyte_log_message_is_capped() {
    let log = logged("hostile.huge-log").await;
    let lines = plugin_lines(&log);
    assert_eq!(lines.len(), 1, "{} bytes of log", log.len());
    let line = lines[0];
    assert!(line.contains(" WARN plugin: yyyy"), "{}", &line[..200]);
    assert!(
        line.contains("… [truncated, 1048576 bytes]"),
        "{}",
        &line[line.len().saturating_sub(200)..]
    );
    // The message, the context and the line's own fields (time, level, target, plugin).
    assert!(
        line.len() <= MAX_LOG_MESSAGE_BYTES + MAX_LOG_CONTEXT_BYTES + 200,
        "{} bytes",
        line.len()
    );
}
