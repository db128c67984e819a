//! Real protocol requests that tell whether a service answers: over a plain `TcpStream`,
//! Redis (`PING`), Kafka (`ApiVersions`, `Metadata` listing the broker, then
//! `FindCoordinator` for a group), MongoDB (`OP_MSG` `ping`) and Elasticsearch
//! (`GET /_cluster/health`); PostgreSQL through the `postgres` client (startup,
//! authentication, a simple query), which is also what creates the database. The secured services (`services up --secure`) answer the same requests over
//! TLS ([`tls`], rustls, verifying the server against the project's CA).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to `addr` with short timeouts.
pub fn connect(addr: &str) -> Result<TcpStream> {
    let sa: SocketAddr = addr
        .parse()
        .with_context(|| format!("bad address {addr}"))?;
    let s = TcpStream::connect_timeout(&sa, CONNECT_TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Whether something accepts TCP connections on `addr`.
pub fn port_open(addr: &str) -> bool {
    connect(addr).is_ok()
}

/// A TLS connection to `addr` (an IP address and port), its handshake done: the server's
/// certificate must chain to the CA in `ca` (PEM) and name the address.
pub fn tls(
    addr: &str,
    ca: &Path,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read the CA {}", ca.display()))?
    {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let name = ServerName::try_from(host.to_owned())?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    let mut sock = connect(addr)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .with_context(|| format!("TLS handshake with {addr}"))?;
    }
    Ok(rustls::StreamOwned::new(conn, sock))
}

// ---------------------------------------------------------------------------------------------
// Redis

/// `PING` → `+PONG`.
pub fn redis(addr: &str) -> Result<String> {
    redis_call(&mut connect(addr)?, &["PING"], "+PONG")?;
    Ok("PING → PONG".into())
}

/// Over TLS: `AUTH user password` → `+OK`, then `PING` → `+PONG`.
pub fn redis_tls(addr: &str, ca: &Path, user: &str, password: &str) -> Result<String> {
    let mut s = tls(addr, ca)?;
    redis_call(&mut s, &["AUTH", user, password], "+OK").context("AUTH")?;
    redis_call(&mut s, &["PING"], "+PONG")?;
    Ok(format!("TLS, AUTH {user}, PING → PONG"))
}

/// One command as a RESP array; its reply must start with `expected`.
fn redis_call(s: &mut impl ReadWrite, args: &[&str], expected: &str) -> Result<()> {
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    s.write_all(command.as_bytes())?;
    s.flush()?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).context("no answer")?;
    let reply = String::from_utf8_lossy(&buf[..n]);
    ensure!(
        reply.starts_with(expected),
        "{} answered {:?}",
        args[0],
        reply.lines().next().unwrap_or_default()
    );
    Ok(())
}

/// A byte stream a probe talks over: a `TcpStream`, or TLS over one.
pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

// ---------------------------------------------------------------------------------------------
// Kafka

/// A Kafka request (header v1: api key, version, correlation id, client id) and its response
/// body (after the correlation id, which is checked).
fn kafka_call(s: &mut TcpStream, api_key: i16, version: i16, body: &[u8]) -> Result<Vec<u8>> {
    const CORRELATION: i32 = 0x706f_6c79;
    let client = b"polyhost-xtask";
    let mut msg = Vec::new();
    msg.extend_from_slice(&api_key.to_be_bytes());
    msg.extend_from_slice(&version.to_be_bytes());
    msg.extend_from_slice(&CORRELATION.to_be_bytes());
    msg.extend_from_slice(&(client.len() as i16).to_be_bytes());
    msg.extend_from_slice(client);
    msg.extend_from_slice(body);
    s.write_all(&(msg.len() as i32).to_be_bytes())?;
    s.write_all(&msg)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).context("no Kafka response")?;
    let len = i32::from_be_bytes(len);
    ensure!(
        (4..64 << 20).contains(&len),
        "bad Kafka response size {len}"
    );
    let mut resp = vec![0u8; len as usize];
    s.read_exact(&mut resp)?;
    let mut r = Reader(&resp);
    ensure!(
        r.i32()? == CORRELATION,
        "Kafka response with a foreign correlation id"
    );
    Ok(r.0.to_vec())
}

/// `ApiVersions` v0 (success error code), then `Metadata` listing at least one broker.
pub fn kafka(addr: &str) -> Result<String> {
    let mut s = connect(addr)?;
    let resp = kafka_call(&mut s, 18, 0, &[])?;
    let mut r = Reader(&resp);
    let error = r.i16()?;
    ensure!(error == 0, "ApiVersions error code {error}");
    let mut metadata = None;
    let mut coordinator = None;
    for _ in 0..r.i32()? {
        let (key, min, max) = (r.i16()?, r.i16()?, r.i16()?);
        match key {
            3 => metadata = Some((min, max)),
            10 => coordinator = Some((min, max)),
            _ => {}
        }
    }
    let (min, max) = metadata.context("the broker lists no Metadata API")?;
    // Versions 1..=8 share the non-flexible encoding handled below.
    let v = max.min(8);
    ensure!(
        v >= min.max(1),
        "no Metadata version in 1..=8 (broker: {min}..={max})"
    );

    let mut body = Vec::new();
    body.extend_from_slice(&0i32.to_be_bytes()); // topics: none
    if v >= 4 {
        body.push(0); // allow_auto_topic_creation
    }
    if v >= 8 {
        body.extend_from_slice(&[0, 0]); // include cluster/topic authorized operations
    }
    let resp = kafka_call(&mut s, 3, v, &body)?;
    let mut r = Reader(&resp);
    if v >= 3 {
        r.i32()?; // throttle_time_ms
    }
    let mut brokers = Vec::new();
    for _ in 0..r.i32()? {
        let id = r.i32()?;
        let host = r.string()?.unwrap_or_default();
        let port = r.i32()?;
        r.string()?; // rack
        brokers.push(format!("{id}@{host}:{port}"));
    }
    ensure!(!brokers.is_empty(), "Metadata lists no broker yet");

    // A fresh broker answers Metadata seconds before it can coordinate consumer groups (its
    // offsets topic made and loaded): `FindCoordinator` v1 for a group answers without an
    // error only then, and asking is what makes the offsets topic.
    if coordinator.is_some_and(|(min, max)| min <= 1 && 1 <= max) {
        let group = b"polyhost-xtask-probe";
        let mut body = (group.len() as i16).to_be_bytes().to_vec();
        body.extend_from_slice(group);
        body.push(0); // key_type: a group
        let resp = kafka_call(&mut s, 10, 1, &body)?;
        let mut r = Reader(&resp);
        r.i32()?; // throttle_time_ms
        let error = r.i16()?;
        ensure!(
            error == 0,
            "FindCoordinator answered error code {error}: the group coordinator is not ready yet"
        );
    }
    Ok(format!(
        "ApiVersions ok, Metadata v{v}: broker {}; group coordinator ready",
        brokers.join(", ")
    ))
}

/// Big-endian reads over a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        ensure!(self.0.len() >= n, "truncated response");
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
    }
    fn i32_le(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into()?))
    }
    /// A Kafka (nullable) string: i16 length, -1 for null.
    fn string(&mut self) -> Result<Option<String>> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(
            String::from_utf8_lossy(self.take(n as usize)?).into_owned(),
        ))
    }
    /// A NUL-terminated string.
    fn cstr(&mut self) -> Result<String> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .context("unterminated string")?;
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = &self.0[end + 1..];
        Ok(s)
    }
}

// ---------------------------------------------------------------------------------------------
// MongoDB

/// `OP_MSG {ping: 1, $db: "admin"}` → `{ok: 1}`.
pub fn mongodb(addr: &str) -> Result<String> {
    mongodb_command(&mut connect(addr)?, "ping")
}

/// Over TLS: `OP_MSG {hello: 1, $db: "admin"}` → `{ok: 1}` (`hello` needs no login, which a
/// secured server asks for before a `ping`).
pub fn mongodb_tls(addr: &str, ca: &Path) -> Result<String> {
    let answer = mongodb_command(&mut tls(addr, ca)?, "hello")?;
    Ok(format!("TLS, {answer}"))
}

/// `OP_MSG {<command>: 1, $db: "admin"}` → `{ok: 1}`.
fn mongodb_command(s: &mut impl ReadWrite, command: &str) -> Result<String> {
    let mut doc = Vec::new();
    doc.push(0x10); // int32
    doc.extend_from_slice(command.as_bytes());
    doc.push(0);
    doc.extend_from_slice(&1i32.to_le_bytes());
    doc.push(0x02); // string
    doc.extend_from_slice(b"$db\0");
    doc.extend_from_slice(&6i32.to_le_bytes());
    doc.extend_from_slice(b"admin\0");
    doc.push(0);
    let mut bson = ((doc.len() + 4) as i32).to_le_bytes().to_vec();
    bson.extend_from_slice(&doc);

    let mut msg = Vec::new();
    msg.extend_from_slice(&0x706f_6c79i32.to_le_bytes()); // requestID
    msg.extend_from_slice(&0i32.to_le_bytes()); // responseTo
    msg.extend_from_slice(&2013i32.to_le_bytes()); // OP_MSG
    msg.extend_from_slice(&0u32.to_le_bytes()); // flagBits
    msg.push(0); // section kind 0: body
    msg.extend_from_slice(&bson);

    s.write_all(&((msg.len() + 4) as i32).to_le_bytes())?;
    s.write_all(&msg)?;
    s.flush()?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)
        .with_context(|| format!("no answer to OP_MSG {command}"))?;
    let len = i32::from_le_bytes(len);
    ensure!((21..16 << 20).contains(&len), "bad OP_MSG reply size {len}");
    let mut resp = vec![0u8; len as usize - 4];
    s.read_exact(&mut resp)?;
    let mut r = Reader(&resp);
    r.take(8)?; // requestID, responseTo
    let op = r.i32_le()?;
    ensure!(op == 2013, "reply opCode {op}, not OP_MSG");
    r.take(4)?; // flagBits
    ensure!(r.u8()? == 0, "reply without a body section");
    let doc_len = r.i32_le()?;
    ensure!(doc_len >= 5, "bad reply document");
    let mut d = Reader(r.take(doc_len as usize - 4)?);
    loop {
        let kind = d.u8()?;
        ensure!(kind != 0, "reply without an ok field");
        let name = d.cstr()?;
        let value = match kind {
            0x01 => f64::from_le_bytes(d.take(8)?.try_into()?),
            0x10 => d.i32_le()? as f64,
            0x12 => i64::from_le_bytes(d.take(8)?.try_into()?) as f64,
            0x08 => d.u8()? as f64,
            0x02 | 0x0D | 0x0E => {
                let n = d.i32_le()?;
                d.take(n.max(0) as usize)?;
                continue;
            }
            0x03 | 0x04 => {
                let n = d.i32_le()?;
                d.take((n - 4).max(0) as usize)?;
                continue;
            }
            0x05 => {
                let n = d.i32_le()?;
                d.take(n.max(0) as usize + 1)?;
                continue;
            }
            0x07 => {
                d.take(12)?;
                continue;
            }
            0x09 | 0x11 => {
                d.take(8)?;
                continue;
            }
            0x0A => continue,
            0x13 => {
                d.take(16)?;
                continue;
            }
            other => bail!("unexpected BSON type {other:#x} in the {command} reply"),
        };
        if name == "ok" {
            ensure!(value == 1.0, "{command} answered ok: {value}");
            return Ok(format!("OP_MSG {command} → ok: 1"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Elasticsearch

/// `GET /_cluster/health` → status green or yellow.
pub fn elasticsearch(base: &str) -> Result<String> {
    let agent = super::system::http_agent(CONNECT_TIMEOUT, Some(IO_TIMEOUT));
    let url = format!("{base}/_cluster/health");
    let body = agent
        .get(&url)
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .with_context(|| format!("GET {url}"))?;
    let health: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("GET {url} answered {body}"))?;
    let status = health["status"].as_str().unwrap_or("?");
    ensure!(
        status == "green" || status == "yellow",
        "cluster health is {status}"
    );
    Ok(format!(
        "cluster health {status}, {} node(s)",
        health["number_of_nodes"]
    ))
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// Connects as `user`/`password` to `database` (any authentication the server asks for:
/// SCRAM-SHA-256, MD5, cleartext or trust), runs the simple query `sql` and returns its rows
/// (each column as text, `None` for NULL).
pub fn postgres_query(
    addr: &str,
    user: &str,
    password: &str,
    database: &str,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>> {
    let sa: SocketAddr = addr
        .parse()
        .with_context(|| format!("bad address {addr}"))?;
    let mut config = postgres::Config::new();
    config
        .host(&sa.ip().to_string())
        .port(sa.port())
        .password(password);
    postgres_rows(config, addr, user, database, sql)
}

/// [`postgres_query`] over the server's Unix socket in `dir` (the secured cluster's, which
/// lets its local socket in without a password and TCP in only over TLS).
pub fn postgres_socket_query(
    dir: &Path,
    port: u16,
    user: &str,
    database: &str,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>> {
    let mut config = postgres::Config::new();
    config.host_path(dir).port(port);
    let at = format!("{}/.s.PGSQL.{port}", dir.display());
    postgres_rows(config, &at, user, database, sql)
}

fn postgres_rows(
    mut config: postgres::Config,
    at: &str,
    user: &str,
    database: &str,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>> {
    let mut client = config
        .user(user)
        .dbname(database)
        .application_name("polyhost-xtask")
        .connect_timeout(CONNECT_TIMEOUT)
        .connect(postgres::NoTls)
        .with_context(|| format!("cannot connect to {at}"))?;
    let rows = client
        .simple_query(sql)?
        .into_iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None, // CommandComplete, RowDescription
        })
        .collect();
    let _ = client.close();
    Ok(rows)
}
