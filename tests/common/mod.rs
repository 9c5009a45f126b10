//! Test harness: a real deployment in a temp folder, a frontend process on free
//! loopback ports, an HTTPS API client pinned to the deployment's CA, and helpers to run
//! the packhunt and loadgen binaries.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub const ADMIN_PASSWORD: &str = "test-admin-pw";

pub fn packhunt_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packhunt"))
}

/// loadgen is built next to packhunt by `cargo test --workspace` (its own integration
/// test makes cargo build the binary before any test runs).
pub fn loadgen_bin() -> PathBuf {
    packhunt_bin().with_file_name("loadgen")
}

/// A port no other test of this run is using. Chosen below the kernel's ephemeral range
/// (32768+), so the thousands of outgoing agent connections a loadgen test makes can't
/// take it between this call and the frontend's bind; spread by pid across test binaries.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 600) as u16 * 20;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (base - 20_000 + offset) % 12_000;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

/// Replaces the value of each `key = ...` line of the generated server config, adding the
/// key under [limits] when the file does not have it.
pub fn set_keys(text: &mut String, keys: &[(&str, &str)]) {
    for (key, value) in keys {
        let line = format!("{key} = {value}");
        match text
            .lines()
            .position(|l| l.split('=').next().map(str::trim) == Some(key))
        {
            Some(i) => {
                let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
                lines[i] = line;
                *text = lines.join("\n");
            }
            None => *text = text.replacen("[limits]\n", &format!("[limits]\n{line}\n"), 1),
        }
    }
}

/// A generated deployment and its running master frontend. Killed on drop.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub agent_port: u16,
    pub gui_port: u16,
    frontend: Option<Child>,
    ca_pem: String,
}

impl Deployment {
    /// Generates a config and starts a frontend; `edit` may change server.config.toml.
    pub fn start_with(edit: impl FnOnce(&mut String)) -> Result<Self> {
        let mut d = Self::generate_with(edit)?;
        d.start_frontend()?;
        Ok(d)
    }

    /// Generates a config without starting anything (add minions, then start).
    pub fn generate_with(edit: impl FnOnce(&mut String)) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let (agent_port, gui_port, replication_port) = (free_port(), free_port(), free_port());
        let status = Command::new(packhunt_bin())
            .args(["config", "generate", "--out"])
            .arg(dir.path())
            .args([
                "--frontend-port",
                &agent_port.to_string(),
                "--gui-port",
                &gui_port.to_string(),
            ])
            .args(["--replication-port", &replication_port.to_string()])
            .args(["--admin-password", ADMIN_PASSWORD])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("config generate failed");
        }
        let server_config = dir.path().join("server.config.toml");
        let mut text = std::fs::read_to_string(&server_config)?;
        edit(&mut text);
        std::fs::write(&server_config, text)?;
        let client: packhunt::config::ClientFile = toml::from_str(&std::fs::read_to_string(
            dir.path().join("client.config.toml"),
        )?)?;
        Ok(Deployment {
            dir,
            agent_port,
            gui_port,
            frontend: None,
            ca_pem: client.client.ca_certificate,
        })
    }

    /// Adds a minion on a free loopback port (with a /metrics port) to the config.
    pub fn add_minion(&self) -> Result<Minion> {
        let (agent_port, metrics_port) = (free_port(), free_port());
        let name = format!("127.0.0.1:{agent_port}");
        let status = Command::new(packhunt_bin())
            .args(["config", "frontend", "--config"])
            .arg(self.path().join("server.config.toml"))
            .args(["--name", &name, "--metrics-port", &metrics_port.to_string()])
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "config frontend failed");
        Ok(Minion {
            name,
            agent_port,
            metrics_port,
            child: None,
        })
    }

    /// Starts `minion` and waits for its ready line.
    pub fn start_minion(&self, minion: &mut Minion) -> Result<()> {
        self.start_minion_with_config(minion, &self.path().join("server.config.toml"))
    }

    /// Starts `minion` from the server config at `config`.
    pub fn start_minion_with_config(&self, minion: &mut Minion, config: &Path) -> Result<()> {
        let mut command = Command::new(packhunt_bin());
        command.args(["frontend", "--config"]).arg(config).args([
            "--minion",
            "--node",
            &minion.name,
        ]);
        minion.child = Some(spawn_until_ready(&mut command, "minion")?);
        Ok(())
    }

    /// A client config listing only `urls` (agents start where the test wants them).
    pub fn client_config_for(
        &self,
        name: &str,
        ports: &[u16],
        max_upload_bytes: Option<u64>,
    ) -> Result<PathBuf> {
        self.client_config_with(name, |c| {
            c.client.server_urls = ports
                .iter()
                .map(|p| format!("https://127.0.0.1:{p}/"))
                .collect();
            if let Some(max) = max_upload_bytes {
                c.client.max_upload_bytes = max;
            }
        })
    }

    pub fn start() -> Result<Self> {
        Self::start_with(|_| {})
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn datastore(&self) -> PathBuf {
        self.path().join("datastore")
    }

    pub fn client_config(&self) -> PathBuf {
        self.path().join("client.config.toml")
    }

    /// Starts the frontend and waits for its ready line.
    pub fn start_frontend(&mut self) -> Result<()> {
        let mut command = Command::new(packhunt_bin());
        command
            .args(["frontend", "--config"])
            .arg(self.path().join("server.config.toml"));
        self.frontend = Some(spawn_until_ready(&mut command, "frontend")?);
        Ok(())
    }

    /// kill -9 of the master.
    pub fn kill_frontend(&mut self) -> Result<()> {
        let mut child = self.frontend.take().context("no frontend running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    pub fn frontend_pid(&self) -> Option<u32> {
        self.frontend.as_ref().map(|c| c.id())
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop_frontend(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.frontend.take().context("no frontend running")?;
        // SAFETY: kill takes plain integers; the pid is our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        Ok(child.wait()?)
    }

    /// Writes a copy of client.config.toml with `edit` applied; returns its path.
    pub fn client_config_with(
        &self,
        name: &str,
        edit: impl FnOnce(&mut packhunt::config::ClientFile),
    ) -> Result<PathBuf> {
        let mut cfg = packhunt::config::ClientFile::load(&self.client_config())?;
        edit(&mut cfg);
        let path = self.path().join(name);
        packhunt::config::write_toml(&path, &cfg)?;
        Ok(path)
    }

    pub fn api(&self) -> Api {
        Api {
            port: self.gui_port,
            ca_pem: self.ca_pem.clone(),
            auth: Some(("admin".into(), ADMIN_PASSWORD.into())),
        }
    }

    /// One series' value from /metrics, e.g. `packhunt_upload_rejections_total{reason="bad_name"}`.
    pub fn metric(&self, series: &str) -> Result<u64> {
        metric_from(&self.api(), series)
    }

    /// Waits until `n` agents show as connected in the API.
    pub fn wait_connected(&self, n: usize, limit: Duration) -> Result<Vec<String>> {
        let api = self.api();
        let started = Instant::now();
        loop {
            let (_, clients) = api.get(&format!("/api/v1/clients?limit={}", n.max(1) * 2))?;
            let ids: Vec<String> = clients["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["connected"] == true)
                .map(|c| c["client_id"].as_str().unwrap().to_string())
                .collect();
            if ids.len() >= n {
                return Ok(ids);
            }
            if started.elapsed() > limit {
                bail!("only {} of {n} agents connected after {limit:?}", ids.len());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every flow is in a terminal state; returns their status documents.
    pub fn wait_flows(&self, flows: &[(String, String)], limit: Duration) -> Result<Vec<Value>> {
        let api = self.api();
        let started = Instant::now();
        let mut done = Vec::new();
        let mut pending: Vec<(String, String)> = flows.to_vec();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for (client, flow) in pending {
                let (_, status) =
                    api.get(&format!("/api/v1/clients/{client}/collections/{flow}"))?;
                match status["state"].as_str() {
                    Some("finished") | Some("error") => done.push(status),
                    _ => still.push((client, flow)),
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if started.elapsed() > limit {
                bail!(
                    "{} flows not finished after {limit:?}, e.g. {:?}",
                    pending.len(),
                    pending[0]
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(done)
    }
}

/// Spawns a packhunt frontend and waits for its first stdout line, which must say
/// "ready". The line is read on a thread so a process that never gets ready fails the
/// test instead of hanging it.
fn spawn_until_ready(command: &mut Command, what: &str) -> Result<Child> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(Ok(line))) => line,
        Ok(_) => {
            let _ = child.kill();
            bail!("{what} exited before it was ready");
        }
        Err(_) => {
            let _ = child.kill();
            bail!("{what} not ready within 30 s");
        }
    };
    if !line.contains("ready") {
        let _ = child.kill();
        bail!("unexpected first line from {what}: {line}");
    }
    Ok(child)
}

/// A master with `minions` minions, all running.
pub fn cluster(minions: usize) -> Result<(Deployment, Vec<Minion>)> {
    cluster_with(minions, |_| {})
}

/// `cluster`, with `edit` applied to the shared server.config.toml first.
pub fn cluster_with(
    minions: usize,
    edit: impl FnOnce(&mut String),
) -> Result<(Deployment, Vec<Minion>)> {
    let mut deployment = Deployment::generate_with(edit)?;
    let mut added = (0..minions)
        .map(|_| deployment.add_minion())
        .collect::<Result<Vec<_>>>()?;
    deployment.start_frontend()?;
    for minion in &mut added {
        deployment.start_minion(minion)?;
    }
    wait_frontends(
        &deployment,
        |items| items.iter().all(|f| f["up"] == true),
        "every minion linked",
    )?;
    Ok((deployment, added))
}

/// Polls GET /api/v1/frontends until `ok` holds for its items.
pub fn wait_frontends(
    deployment: &Deployment,
    ok: impl Fn(&[Value]) -> bool,
    what: &str,
) -> Result<Vec<Value>> {
    let started = Instant::now();
    loop {
        let (status, body) = deployment.api().get("/api/v1/frontends")?;
        anyhow::ensure!(status == 200, "frontends answered {status}");
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if ok(&items) {
            return Ok(items);
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{what}: not within 30 s; frontends: {body}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn frontend<'a>(items: &'a [Value], name: &str) -> &'a Value {
    items
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed in {items:?}"))
}

/// The frontend the master says `client` is connected to.
pub fn frontend_of(deployment: &Deployment, client: &str) -> Result<Option<String>> {
    let (_, body) = deployment
        .api()
        .get(&format!("/api/v1/clients?search={client}"))?;
    Ok(body["items"][0]["frontend"].as_str().map(str::to_string))
}

/// Waits (30 s at most) until the master shows `client` on `expected`: presence crosses
/// the replication link after the agent is served, so it lags what the agent sees.
pub fn wait_frontend_of(deployment: &Deployment, client: &str, expected: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let seen = frontend_of(deployment, client)?;
        if seen.as_deref() == Some(expected) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{client} not shown on {expected} within 30 s; last seen on {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A minion frontend of a test deployment; killed on drop.
pub struct Minion {
    pub name: String,
    pub agent_port: u16,
    pub metrics_port: u16,
    child: Option<Child>,
}

impl Minion {
    /// kill -9: no goodbye to agents or the master.
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self.child.take().context("minion not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// One series' value from the minion's /metrics.
    pub fn metric(&self, deployment: &Deployment, series: &str) -> Result<u64> {
        let api = Api {
            port: self.metrics_port,
            ..deployment.api()
        };
        metric_from(&api, series)
    }
}

impl Drop for Minion {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn metric_from(api: &Api, series: &str) -> Result<u64> {
    let (code, text) = api.get_text("/metrics")?;
    anyhow::ensure!(code == 200, "/metrics answered {code}");
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok());
    value.with_context(|| format!("{series} missing from /metrics"))
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if let Some(mut child) = self.frontend.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A small HTTPS client for the GUI/API port, pinned to the deployment's CA.
#[derive(Clone)]
pub struct Api {
    pub port: u16,
    ca_pem: String,
    pub auth: Option<(String, String)>,
}

impl Api {
    pub fn for_port(port: u16, ca_pem: &str) -> Api {
        Api {
            port,
            ca_pem: ca_pem.to_string(),
            auth: None,
        }
    }

    pub fn without_auth(&self) -> Api {
        Api {
            auth: None,
            ..self.clone()
        }
    }

    pub fn with_auth(&self, user: &str, pw: &str) -> Api {
        Api {
            auth: Some((user.into(), pw.into())),
            ..self.clone()
        }
    }

    pub fn get(&self, path: &str) -> Result<(u16, Value)> {
        let (status, body) = self.request("GET", path, None)?;
        Ok((
            status,
            serde_json::from_slice(&body).with_context(|| {
                format!("GET {path}: not JSON: {}", String::from_utf8_lossy(&body))
            })?,
        ))
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let (status, body) = self.request("POST", path, Some(serde_json::to_vec(body)?))?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    pub fn get_text(&self, path: &str) -> Result<(u16, String)> {
        let (status, body) = self.request("GET", path, None)?;
        Ok((status, String::from_utf8(body)?))
    }

    /// Schedules a collection; returns the flow id.
    pub fn collect(&self, client_id: &str, artifacts: &[&str]) -> Result<String> {
        let (status, body) = self.post(
            &format!("/api/v1/clients/{client_id}/collections"),
            &serde_json::json!({ "artifacts": artifacts }),
        )?;
        if status != 200 {
            bail!("collection for {client_id} refused: {status} {body}");
        }
        Ok(body["flow_id"].as_str().context("flow_id")?.to_string())
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(self.request_async(method, path, body))
    }

    /// The Basic authorization header value for this client's credentials, if it has any.
    fn authorization(&self) -> Option<String> {
        use base64::Engine;
        let (user, pw) = self.auth.as_ref()?;
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        ))
    }

    /// POSTs over HTTP/2 (what browsers and curl speak), sending `body` only `delay` after
    /// the headers: a client that is slow to send its body.
    pub fn post_h2_late_body(
        &self,
        path: &str,
        body: &[u8],
        delay: Duration,
    ) -> Result<(u16, Vec<u8>)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut config = (*packhunt::tls::client::api_client_config(
                &packhunt::tls::pem::certificates(&self.ca_pem)?,
            )?)
            .clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
            let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(name, tcp)
                .await?;
            let (client, conn) = h2::client::handshake(tls).await?;
            tokio::spawn(conn);
            let mut client = client.ready().await?;
            let mut req = hyper::Request::builder()
                .method("POST")
                .uri(format!("https://127.0.0.1:{}{path}", self.port));
            if let Some(value) = self.authorization() {
                req = req.header("authorization", value);
            }
            let (response, mut stream) = client.send_request(req.body(())?, false)?;
            tokio::time::sleep(delay).await;
            stream.send_data(Bytes::copy_from_slice(body), true)?;
            let response = response.await?;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk?;
                body.flow_control().release_capacity(chunk.len())?;
                bytes.extend_from_slice(&chunk);
            }
            Ok((status, bytes))
        })
    }

    async fn request_async(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>)> {
        let config = packhunt::tls::client::api_client_config(&packhunt::tls::pem::certificates(
            &self.ca_pem,
        )?)?;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        if let Some(value) = self.authorization() {
            req = req.header("authorization", value);
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = send.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok((status, body))
    }
}

/// Paging the connected clients (offset + limit, with `total`) lists every agent once.
pub fn assert_connected_pages_cover(api: &Api, ids: &[String]) -> anyhow::Result<()> {
    let page = ids.len() / 3 + 1;
    let mut seen = Vec::new();
    for offset in (0..ids.len() + page).step_by(page) {
        let (status, body) = api.get(&format!(
            "/api/v1/clients?connected=true&offset={offset}&limit={page}"
        ))?;
        assert_eq!(status, 200);
        assert_eq!(body["total"].as_u64(), Some(ids.len() as u64));
        seen.extend(
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["client_id"].as_str().unwrap().to_string()),
        );
    }
    let (mut seen_sorted, mut want) = (seen.clone(), ids.to_vec());
    seen_sorted.sort();
    want.sort();
    assert_eq!(seen.len(), ids.len(), "no client twice, none past the end");
    assert_eq!(seen_sorted, want);
    Ok(())
}

/// Runs `clients` loadgen agents with `config`, checks every one is listed as connected,
/// calls `on_connected` with their ids, schedules `artifacts` for each and checks every
/// flow finishes with exactly the rows loadgen sent (API and disk). Returns the report.
pub fn run_fleet(
    deployment: &Deployment,
    clients: usize,
    config: &std::path::Path,
    extra: &[&str],
    artifacts: &[&str],
    on_connected: impl FnOnce(&[String]) -> anyhow::Result<()>,
) -> anyhow::Result<serde_json::Value> {
    let report = deployment.path().join("report.json");
    let mut loadgen = spawn_loadgen_for_flows(config, clients, &report, extra)?;
    let ids = deployment.wait_connected(clients, Duration::from_secs(120))?;
    let api = deployment.api();
    assert_connected_pages_cover(&api, &ids)?;
    on_connected(&ids)?;
    let mut flows = Vec::new();
    for id in &ids {
        flows.push((id.clone(), api.collect(id, artifacts)?));
    }
    let statuses = deployment.wait_flows(&flows, Duration::from_secs(180))?;
    assert!(
        loadgen.0.wait()?.success(),
        "loadgen exits once every flow is delivered"
    );
    let sent = loadgen_rows_sent(&report)?;
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
    assert_eq!(sent.len(), clients, "loadgen delivered one flow per agent");
    for status in &statuses {
        let flow = status["flow_id"].as_str().unwrap();
        assert_eq!(status["state"], "finished", "{status}");
        assert_eq!(
            status["total_rows"].as_u64(),
            Some(sent[flow]),
            "flow {flow}: server rows = rows loadgen sent"
        );
    }
    // What is on disk is exactly that too: no row lost, none duplicated.
    for (client, flow) in flows.iter().take(50) {
        let on_disk: usize = artifacts
            .iter()
            .map(|a| count_lines(&flow_results(&deployment.datastore(), client, flow, a)))
            .sum();
        assert_eq!(on_disk as u64, sent[flow.as_str()], "flow {flow} on disk");
    }
    assert_eq!(report["tasks_received"].as_u64(), Some(clients as u64));
    Ok(report)
}

/// A loadgen of `clients` agents from the client config `config` that writes its report
/// to `report` and runs at most `duration_s`; `extra` adds flags. Killed on drop.
pub fn spawn_loadgen(
    config: &Path,
    clients: usize,
    duration_s: u64,
    report: &Path,
    extra: &[&str],
) -> Result<Proc> {
    let child = Command::new(loadgen_bin())
        .arg("--config")
        .arg(config)
        .args([
            "--clients",
            &clients.to_string(),
            "--duration-s",
            &duration_s.to_string(),
        ])
        .arg("--report")
        .arg(report)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Proc(child))
}

/// `spawn_loadgen` for a fleet that exits once each agent finished one flow.
pub fn spawn_loadgen_for_flows(
    config: &Path,
    clients: usize,
    report: &Path,
    extra: &[&str],
) -> Result<Proc> {
    let mut args = vec!["--exit-after-flows".to_string(), clients.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_loadgen(config, clients, 240, report, &args)
}

/// Lines of a file (for checking what landed on disk).
pub fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

pub fn flow_results(datastore: &Path, client: &str, flow: &str, artifact: &str) -> PathBuf {
    datastore
        .join("clients")
        .join(client)
        .join("collections")
        .join(flow)
        .join("results")
        .join(format!("{artifact}.jsonl"))
}

/// flow id -> rows sent, from a loadgen JSON report.
pub fn loadgen_rows_sent(report: &Path) -> Result<std::collections::HashMap<String, u64>> {
    let report: Value = serde_json::from_slice(&std::fs::read(report)?)?;
    let flows = report["flows"].as_array().context("report has flows")?;
    Ok(flows
        .iter()
        .map(|f| {
            (
                f["flow_id"].as_str().unwrap_or_default().to_string(),
                f["rows"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// Starts a real `packhunt client` against the deployment; killed on drop.
pub fn start_agent(deployment: &Deployment) -> Result<Proc> {
    let child = Command::new(packhunt_bin())
        .args(["client", "--config"])
        .arg(deployment.client_config())
        .stdout(Stdio::null())
        .spawn()?;
    Ok(Proc(child))
}

/// An agent driven by the test through the real comms client: connected (which
/// registers it), its ClientInfo sent so its client folder exists.
pub struct RawAgent {
    pub rt: tokio::runtime::Runtime,
    pub conn: packhunt::agent::comms::Connection,
    pub tasks: packhunt::agent::comms::TaskStream,
    pub client_id: String,
    pub identity: packhunt::tls::agent_key::AgentIdentity,
}

impl RawAgent {
    pub fn connect(deployment: &Deployment) -> Result<Self> {
        Self::connect_with(&deployment.client_config())
    }

    /// Connects to the first URL of the client config at `path`.
    pub fn connect_with(path: &Path) -> Result<Self> {
        Self::connect_as(path, packhunt::tls::agent_key::AgentIdentity::generate()?)
    }

    /// Connects as `identity` (the same agent again, e.g. through another frontend).
    pub fn connect_as(
        path: &Path,
        identity: packhunt::tls::agent_key::AgentIdentity,
    ) -> Result<Self> {
        let mut agent = Self::connect_without_facts(path, identity)?;
        agent.send_facts()?;
        Ok(agent)
    }

    /// Connects as `identity` and opens the task stream, but sends no ClientInfo yet:
    /// the moment between an agent's handshake and its facts landing.
    pub fn connect_without_facts(
        path: &Path,
        identity: packhunt::tls::agent_key::AgentIdentity,
    ) -> Result<Self> {
        let config = packhunt::config::ClientConfig::load(path)?;
        let tls = packhunt::tls::client::agent_client_config(
            &config.client.ca_certificate,
            identity.rustls_cert_chain(),
            identity.rustls_private_key(),
        )?;
        let url = config.client.server_urls[0].clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (conn, tasks) = rt.block_on(packhunt::agent::comms::connect(&url, tls, None))?;
        Ok(Self {
            rt,
            conn,
            tasks,
            client_id: identity.client_id().to_string(),
            identity,
        })
    }

    /// Uploads this agent's ClientInfo (hostname `raw-agent`, os `linux`).
    pub fn send_facts(&mut self) -> Result<()> {
        use packhunt::protocol::pb;
        let facts = pb::ClientInfo {
            hostname: "raw-agent".into(),
            os: "linux".into(),
            version: "test".into(),
        };
        let status = self
            .upload(&pb::Upload {
                kind: Some(pb::upload::Kind::Info(facts)),
            })?
            .status;
        anyhow::ensure!(status == 200, "ClientInfo answered {status}");
        Ok(())
    }

    /// Schedules a collection for this agent and reads its task off the stream.
    pub fn tasked(&mut self, deployment: &Deployment, artifacts: &[&str]) -> Result<String> {
        let flow = deployment.api().collect(&self.client_id, artifacts)?;
        self.expect_task(&flow)?;
        Ok(flow)
    }

    /// Reads the stream until the task for `flow` arrives (10 s at most).
    pub fn expect_task(&mut self, flow: &str) -> Result<()> {
        use packhunt::protocol::pb;
        let tasks = &mut self.tasks;
        self.rt.block_on(async {
            let wait = async {
                loop {
                    if let Some(pb::server_message::Kind::Task(t)) =
                        tasks.next().await?.and_then(|m| m.kind)
                    {
                        anyhow::ensure!(t.flow_id == flow, "task for another flow");
                        return Ok(());
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .map_err(|_| anyhow::anyhow!("no task for {flow} within 10 s"))?
        })
    }

    pub fn upload(
        &mut self,
        upload: &packhunt::protocol::pb::Upload,
    ) -> Result<packhunt::agent::comms::UploadReply> {
        Ok(self.rt.block_on(self.conn.upload(upload))?)
    }
}
