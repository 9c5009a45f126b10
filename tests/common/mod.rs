//! Test harness: a real deployment in a temp folder, a frontend process on free
//! loopback ports (or on any host's address), an HTTPS API client pinned to the
//! deployment's CA, one `wait_until` for everything a test awaits, and helpers to run the
//! packhunt and loadgen binaries.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::Value;

/// loadgen's API client, shared rather than copied: one TLS + HTTP/1.1 + Basic auth path.
#[path = "../../loadgen/src/api.rs"]
pub mod api_client;

pub mod agent_outbox;
pub mod attacker;
pub mod audit;
pub mod browser;
pub mod cancel;
pub mod clickhouse;
pub mod client_index;
pub mod exports;
pub mod fleet_trust;
pub mod grpc;
pub mod gui_sessions;
pub mod haproxy;
pub mod live;
pub mod secrets;
pub mod sshfs;
pub mod uploads;
pub mod users;
pub mod watch;

pub const ADMIN_PASSWORD: &str = "test-admin-pw";

/// Whether the tests run as root: some need it (namespaces, mounts, CAP_SYS_NICE).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Records that `test` did not run here because this machine lacks `needs`: says so on
/// the process's stderr (written directly, past the harness's capture, so every run shows
/// it) and adds a line to `skipped-tests.txt` under cargo's target tmp dir, so a skipped
/// test is counted and never passes silently. The caller returns right after.
pub fn skip(test: &str, needs: &str) {
    use std::io::Write as _;
    let line = format!("SKIPPED {test}: needs {needs}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    if let Ok(mut file) = file {
        let _ = file.write_all(line.as_bytes());
    }
}

/// How often `wait_until` looks again: often enough that a test waits little past the
/// moment its condition holds, rarely enough not to load a busy 2-core box.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `observe` until `done` holds for what it returns, for at most `limit`; returns
/// that value. The limit only stops a hung test: it is generous and is not what the test
/// checks. Fails at once on an `observe` error, and past the limit with `what` was awaited
/// and the last value seen.
pub fn wait_until<V: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    observe: impl FnMut() -> Result<V>,
    done: impl Fn(&V) -> bool,
) -> Result<V> {
    wait_until_every(what, limit, POLL_INTERVAL, observe, done)
}

/// `wait_until`, looking every `interval`: for a test that must act within moments of
/// the condition holding (e.g. kill a frontend while its first rows are landing).
pub fn wait_until_every<V: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    interval: Duration,
    mut observe: impl FnMut() -> Result<V>,
    done: impl Fn(&V) -> bool,
) -> Result<V> {
    let started = Instant::now();
    loop {
        let value = observe().with_context(|| format!("while waiting until {what}"))?;
        if done(&value) {
            return Ok(value);
        }
        if started.elapsed() > limit {
            bail!("{what}: not within {limit:?}; last seen: {value:?}");
        }
        std::thread::sleep(interval);
    }
}

pub fn packhunt_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packhunt"))
}

/// loadgen is built next to packhunt by `cargo test --workspace` (its own integration
/// test makes cargo build the binary before any test runs).
pub fn loadgen_bin() -> PathBuf {
    packhunt_bin().with_file_name("loadgen")
}

/// A port no other test is using. Chosen below the kernel's ephemeral range (32768+), so
/// the thousands of outgoing agent connections a loadgen test makes can't take it between
/// this call and the frontend's bind. A free bind() only says the port is free now, and
/// test binaries run at once (cargo runs them one after another, but two checkouts or a
/// CI run beside a developer's do not): each port is also claimed in a file named for it,
/// created exclusively and holding the claimer's pid, and a claim is taken over only once
/// its process is gone.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST_PORT: u16 = 20_000;
    const PORT_COUNT: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let claims = std::env::temp_dir().join("packhunt-test-ports");
    let _ = std::fs::create_dir_all(&claims);
    let start = (std::process::id() % 600) as u16 * 20;
    for _ in 0..PORT_COUNT {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST_PORT + (start + offset) % PORT_COUNT;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() && claim_port(&claims, port) {
            return port;
        }
    }
    panic!("no free port in {FIRST_PORT}..{}", FIRST_PORT + PORT_COUNT);
}

/// Claims `port` for this process in `claims/<port>`; false if a live process holds it.
fn claim_port(claims: &Path, port: u16) -> bool {
    use std::io::Write as _;
    let path = claims.join(port.to_string());
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                let _ = write!(file, "{}", std::process::id());
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(&path).unwrap_or_default();
                let alive = match owner.trim().parse::<u32>() {
                    Ok(pid) => Path::new(&format!("/proc/{pid}")).exists(),
                    // No pid yet: just created by a claimer still writing it, unless old.
                    Err(_) => std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(10)),
                };
                if alive {
                    return false;
                }
                // The claimer is gone (or died before writing its pid): take the port over.
                let _ = std::fs::remove_file(&path);
            }
            Err(_) => return true, // no claims folder to use: the bind probe stands alone
        }
    }
    false
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

/// A tmpfs mounted for one test (needs root); lazily unmounted on drop.
pub struct TmpfsMount(PathBuf);

impl TmpfsMount {
    /// None when it cannot be mounted (not root, no tmpfs): the test skips.
    pub fn new(path: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?
            .success();
        ok.then(|| TmpfsMount(path.to_path_buf()))
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A generated deployment and its running master frontend. Killed on drop.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    /// The address the master's agent and GUI/API ports are reached at.
    pub host: String,
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
        let ports = Ports {
            agent: free_port(),
            gui: free_port(),
            replication: free_port(),
        };
        Self::generate_on(None, ports, edit)
    }

    /// Generates a config for a master at `public_host` (loopback if None) on `ports`,
    /// without starting anything.
    pub fn generate_on(
        public_host: Option<&str>,
        ports: Ports,
        edit: impl FnOnce(&mut String),
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let (agent_port, gui_port, replication_port) = (ports.agent, ports.gui, ports.replication);
        let mut command = Command::new(packhunt_bin());
        command
            .args(["config", "generate", "--out"])
            .arg(dir.path());
        if let Some(host) = public_host {
            command.args(["--public-host", host]);
        }
        let status = command
            .args([
                "--frontend-port",
                &agent_port.to_string(),
                "--gui-port",
                &gui_port.to_string(),
            ])
            .args(["--replication-port", &replication_port.to_string()])
            .args(["--api-port", &free_port().to_string()])
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
            host: public_host.unwrap_or("127.0.0.1").to_string(),
            agent_port,
            gui_port,
            frontend: None,
            ca_pem: client.client.ca_certificate,
        })
    }

    /// Adds a minion on a free loopback port (with a /metrics port) to the config.
    pub fn add_minion(&self) -> Result<Minion> {
        self.add_minion_at("127.0.0.1", free_port(), free_port())
    }

    /// Adds a minion at `host:agent_port`, with /metrics on `metrics_port`, to the config.
    pub fn add_minion_at(&self, host: &str, agent_port: u16, metrics_port: u16) -> Result<Minion> {
        let name = format!("{host}:{agent_port}");
        let status = Command::new(packhunt_bin())
            .args(["config", "frontend", "--config"])
            .arg(self.path().join("server.config.toml"))
            .args(["--name", &name, "--metrics-port", &metrics_port.to_string()])
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "config frontend failed");
        Ok(Minion {
            name,
            host: host.to_string(),
            agent_port,
            metrics_port,
            child: None,
        })
    }

    /// Starts `minion` from its own config (or the shared one of an older deployment)
    /// and waits for its ready line.
    pub fn start_minion(&self, minion: &mut Minion) -> Result<()> {
        let config = secrets::minion_config(self.path(), &minion.name);
        self.start_minion_with_config(minion, &config)
    }

    /// Starts `minion` from the server config at `config`.
    pub fn start_minion_with_config(&self, minion: &mut Minion, config: &Path) -> Result<()> {
        let mut command = Command::new(packhunt_bin());
        command.args(["frontend", "--config"]).arg(config).args([
            "--minion",
            "--node",
            &minion.name,
        ]);
        minion.child = Some(spawn_until_ready(&mut command, "minion", None)?);
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

    /// Adds an API user with `role` to server.config.toml; the frontend reads it when it
    /// next starts.
    pub fn add_user(&self, name: &str, password: &str, role: packhunt::config::Role) -> Result<()> {
        let path = self.path().join("server.config.toml");
        let mut server = packhunt::config::ServerFile::load(&path)?;
        server.users.push(packhunt::config::UserEntry {
            name: name.to_string(),
            password_hash: packhunt::config::generate::hash_password(password),
            role,
        });
        packhunt::config::write_toml(&path, &server)?;
        Ok(())
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
        self.frontend = Some(spawn_until_ready(&mut command, "frontend", None)?);
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

    /// SIGTERM to the master: it starts its drain (see `wait_frontend_exit`).
    pub fn terminate_frontend(&self) -> Result<()> {
        terminate(self.frontend.as_ref().context("no frontend running")?);
        Ok(())
    }

    /// Waits (at most `limit`, then kills it and fails) for the master to exit.
    pub fn wait_frontend_exit(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let child = self.frontend.take().context("no frontend running")?;
        wait_exit(child, limit, "frontend")
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

    /// The master's GUI/API, logged in as admin.
    pub fn api(&self) -> Api {
        Api {
            host: self.host.clone(),
            port: self.gui_port,
            ca_pem: self.ca_pem.clone(),
            auth: Some(("admin".into(), ADMIN_PASSWORD.into())),
            request_timeout: Api::REQUEST_TIMEOUT,
        }
    }

    /// One series' value from /metrics, e.g. `packhunt_upload_rejections_total{reason="bad_name"}`.
    pub fn metric(&self, series: &str) -> Result<u64> {
        self.api().metric(series)
    }

    /// The mTLS client config of a fresh agent identity, for raw connections to the
    /// agent port.
    pub fn fresh_agent_tls(&self) -> Result<std::sync::Arc<rustls::ClientConfig>> {
        let identity = packhunt::tls::agent_key::AgentIdentity::generate()?;
        Ok(packhunt::tls::client::agent_client_config(
            &packhunt::tls::pem::certificates(&self.ca_pem)?,
            identity.rustls_cert_chain(),
            identity.rustls_private_key(),
        )?)
    }

    /// Waits until `n` agents show as connected in the API.
    pub fn wait_connected(&self, n: usize, limit: Duration) -> Result<Vec<String>> {
        let api = self.api();
        let what = format!("{n} agents connected");
        let connected_ids = || -> Result<Vec<String>> {
            let (_, clients) = api.get(&format!(
                "/api/v1/clients?connected=true&limit={}",
                n.max(1) * 2
            ))?;
            let items = clients["items"].as_array().context("clients: items")?;
            Ok(items
                .iter()
                .filter(|c| c["connected"] == true)
                .filter_map(|c| Some(c["client_id"].as_str()?.to_string()))
                .collect())
        };
        // Only the count goes into the failure message, not thousands of ids.
        let mut ids = Vec::new();
        wait_until(
            &what,
            limit,
            || {
                ids = connected_ids()?;
                Ok(ids.len())
            },
            |count| *count >= n,
        )?;
        Ok(ids)
    }

    /// Waits until every flow is in a terminal state; returns their status documents.
    pub fn wait_flows(&self, flows: &[(String, String)], limit: Duration) -> Result<Vec<Value>> {
        self.api().wait_flows(flows, limit)
    }
}

/// The three ports of a master frontend.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub agent: u16,
    pub gui: u16,
    pub replication: u16,
}

/// Spawns a packhunt frontend (`command` may wrap it, e.g. in `ip netns exec`) and waits
/// for its first stdout line, which must say "ready". The line is read on a thread so a
/// process that never gets ready fails the test instead of hanging it. With a `log`, its
/// stdout and stderr are kept in that file; otherwise stderr is the test's.
pub fn spawn_until_ready(command: &mut Command, what: &str, log: Option<&Path>) -> Result<Child> {
    let mut log = log.map(std::fs::File::create).transpose()?;
    let stderr = match &log {
        Some(file) => Stdio::from(file.try_clone()?),
        None => Stdio::inherit(),
    };
    let mut child = command.stdout(Stdio::piped()).stderr(stderr).spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Write as _;
        let mut lines = BufReader::new(stdout).lines();
        let mut keep = |line: &std::io::Result<String>| {
            if let (Some(file), Ok(line)) = (log.as_mut(), line) {
                let _ = writeln!(file, "{line}");
            }
        };
        let first = lines.next();
        if let Some(line) = &first {
            keep(line);
        }
        let _ = tx.send(first);
        for line in lines {
            keep(&line);
        }
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

/// Polls GET /api/v1/frontends on the master until `ok` holds for its items (30 s at most).
pub fn wait_frontends(
    deployment: &Deployment,
    ok: impl Fn(&[Value]) -> bool,
    what: &str,
) -> Result<Vec<Value>> {
    deployment
        .api()
        .wait_frontends(what, Duration::from_secs(30), ok)
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
    wait_until(
        &format!("{client} shown on {expected}"),
        Duration::from_secs(30),
        || frontend_of(deployment, client),
        |seen| seen.as_deref() == Some(expected),
    )?;
    Ok(())
}

/// A minion frontend of a test deployment; killed on drop.
pub struct Minion {
    /// `host:agent_port`, as the config and the API name it.
    pub name: String,
    pub host: String,
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

    /// SIGTERM: the minion starts its drain (see `wait_exit`).
    pub fn terminate(&self) -> Result<()> {
        let child = self.child.as_ref().context("minion not running")?;
        terminate(child);
        Ok(())
    }

    /// Whether the minion's process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits (at most `limit`, then kills it and fails) for the minion to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let child = self.child.take().context("minion not running")?;
        wait_exit(child, limit, "minion")
    }

    /// One series' value from the minion's /metrics.
    pub fn metric(&self, deployment: &Deployment, series: &str) -> Result<u64> {
        self.metrics_api(deployment).metric(series)
    }

    /// The minion's /metrics port, pinned to the deployment's CA.
    pub fn metrics_api(&self, deployment: &Deployment) -> Api {
        Api {
            host: self.host.clone(),
            port: self.metrics_port,
            ..deployment.api()
        }
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

impl Drop for Deployment {
    fn drop(&mut self) {
        if let Some(mut child) = self.frontend.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGTERM to a child not yet reaped.
fn terminate(child: &Child) {
    // SAFETY: kill takes plain integers; the pid is our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// Waits for `child` to exit within `limit`; past it, kills it and fails.
fn wait_exit(mut child: Child, limit: Duration, what: &str) -> Result<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} still running {limit:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
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

/// A small HTTPS client for a GUI/API or /metrics port, pinned to the deployment's CA.
#[derive(Clone)]
pub struct Api {
    pub host: String,
    pub port: u16,
    ca_pem: String,
    pub auth: Option<(String, String)>,
    /// A request that takes longer is a failure, not a hang.
    pub request_timeout: Duration,
}

impl Api {
    /// Generous: only a server that stopped answering takes this long.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

    /// The port on loopback, without credentials.
    pub fn for_port(port: u16, ca_pem: &str) -> Api {
        Self::at("127.0.0.1", port, ca_pem)
    }

    /// The port at `host`, without credentials.
    pub fn at(host: &str, port: u16, ca_pem: &str) -> Api {
        Api {
            host: host.to_string(),
            port,
            ca_pem: ca_pem.to_string(),
            auth: None,
            request_timeout: Self::REQUEST_TIMEOUT,
        }
    }

    /// The same API, failing a request that takes longer than `limit`.
    pub fn with_request_timeout(self, limit: Duration) -> Api {
        Api {
            request_timeout: limit,
            ..self
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

    pub fn put(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        self.put_bytes(path, serde_json::to_vec(body)?)
    }

    /// PUTs `body` as sent (malformed or oversized documents).
    pub fn put_bytes(&self, path: &str, body: Vec<u8>) -> Result<(u16, Value)> {
        let (status, body) = self.request("PUT", path, Some(body))?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    pub fn get_text(&self, path: &str) -> Result<(u16, String)> {
        let (status, body) = self.request("GET", path, None)?;
        Ok((status, String::from_utf8(body)?))
    }

    /// One series' value from /metrics, e.g. `packhunt_upload_rejections_total{reason="bad_name"}`.
    pub fn metric(&self, series: &str) -> Result<u64> {
        let (code, text) = self.get_text("/metrics")?;
        anyhow::ensure!(code == 200, "/metrics answered {code}");
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok());
        value.with_context(|| format!("{series} missing from /metrics of {}", self.host))
    }

    /// Polls GET /api/v1/frontends until `ok` holds for its items; returns them.
    pub fn wait_frontends(
        &self,
        what: &str,
        limit: Duration,
        ok: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>> {
        let items = wait_until(
            what,
            limit,
            || {
                let (status, body) = self.get("/api/v1/frontends")?;
                anyhow::ensure!(status == 200, "frontends answered {status}: {body}");
                Ok(body["items"].as_array().cloned().unwrap_or_default())
            },
            |items| ok(items),
        )?;
        Ok(items)
    }

    /// Waits until every flow is in a terminal state; returns their status documents.
    /// How many of `flows` (client, flow) of the `clients` given are not finished yet: a
    /// kill meant to catch them mid-flow did so when this is above 0.
    pub fn unfinished_flows(&self, flows: &[(String, String)], clients: &[String]) -> usize {
        flows
            .iter()
            .filter(|(c, _)| clients.contains(c))
            .filter(|(c, f)| {
                self.get(&format!("/api/v1/clients/{c}/collections/{f}"))
                    .map(|(_, s)| s["state"] != "finished")
                    .unwrap_or(false)
            })
            .count()
    }

    pub fn wait_flows(&self, flows: &[(String, String)], limit: Duration) -> Result<Vec<Value>> {
        let mut done = Vec::new();
        let mut pending: Vec<(String, String)> = flows.to_vec();
        wait_until(
            &format!("{} flows finished", flows.len()),
            limit,
            || {
                let mut still = Vec::new();
                for (client, flow) in std::mem::take(&mut pending) {
                    let (_, status) =
                        self.get(&format!("/api/v1/clients/{client}/collections/{flow}"))?;
                    match status["state"].as_str() {
                        Some("finished" | "error" | "cancelled") => done.push(status),
                        _ => still.push((client, flow)),
                    }
                }
                pending = still;
                // What a failure shows: how many are left and the first of them.
                Ok((pending.len(), pending.first().cloned()))
            },
            |(left, _)| *left == 0,
        )?;
        Ok(done)
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
        // The timer belongs to the runtime: made inside it.
        let request = async {
            let exchange = self.request_async(method, path, body);
            tokio::time::timeout(self.request_timeout, exchange).await
        };
        rt.block_on(request).with_context(|| {
            format!(
                "{method} https://{}:{}{path}: no answer within {:?}",
                self.host, self.port, self.request_timeout
            )
        })?
    }

    /// Where this client goes and who it is there, for loadgen's `ApiClient`.
    pub fn target(&self) -> Result<api_client::ApiTarget> {
        Ok(api_client::ApiTarget {
            host: self.host.clone(),
            port: self.port,
            ca: packhunt::tls::pem::certificates(&self.ca_pem)?,
            auth: self.auth.clone(),
        })
    }

    /// POSTs over HTTP/2 (what browsers and curl speak), sending `body` only `delay` after
    /// the headers: a client that is slow to send its body.
    pub fn post_h2_late_body(
        &self,
        path: &str,
        body: &[u8],
        delay: Duration,
    ) -> Result<(u16, Vec<u8>)> {
        let (status, _, body) = self.post_h2(path, body, delay)?;
        Ok((status, body))
    }

    /// POSTs `body` over HTTP/2 (at once); returns the status, headers and body.
    pub fn post_with_headers(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<(u16, http::HeaderMap, Value)> {
        let (status, headers, body) =
            self.post_h2(path, &serde_json::to_vec(body)?, Duration::ZERO)?;
        Ok((
            status,
            headers,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        ))
    }

    fn post_h2(
        &self,
        path: &str,
        body: &[u8],
        delay: Duration,
    ) -> Result<(u16, http::HeaderMap, Vec<u8>)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut config = (*packhunt::tls::client::api_client_config(
                &packhunt::tls::pem::certificates(&self.ca_pem)?,
            )?)
            .clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            let name = rustls::pki_types::ServerName::try_from(self.host.clone())?;
            let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(name, tcp)
                .await?;
            let (client, conn) = h2::client::handshake(tls).await?;
            tokio::spawn(conn);
            let mut client = client.ready().await?;
            let mut req = hyper::Request::builder()
                .method("POST")
                .header("content-type", "application/json")
                .uri(format!("https://{}:{}{path}", self.host, self.port));
            if let Some(value) = self.target()?.authorization() {
                req = req.header("authorization", value);
            }
            let (response, mut stream) = client.send_request(req.body(())?, false)?;
            tokio::time::sleep(delay).await;
            stream.send_data(Bytes::copy_from_slice(body), true)?;
            let response = response.await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk?;
                body.flow_control().release_capacity(chunk.len())?;
                bytes.extend_from_slice(&chunk);
            }
            Ok((status, headers, bytes))
        })
    }

    /// One request on a fresh connection (each test request stands alone).
    async fn request_async(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>)> {
        let mut client = api_client::ApiClient::connect(&self.target()?).await?;
        let (status, body, _took) = client.request(method, path, body).await?;
        Ok((status, body.to_vec()))
    }
}

/// A TLS connection to the agent port on loopback, as `tls` sets it up (ALPN h2 for an
/// agent's config): what a raw HTTP/2 peer starts from.
pub async fn agent_tls_connect(
    port: u16,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    Ok(tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?)
}

/// Every flow status is finished with exactly the rows loadgen's report says it sent.
pub fn assert_rows_as_sent(statuses: &[Value], sent: &std::collections::HashMap<String, u64>) {
    for status in statuses {
        let flow = status["flow_id"].as_str().expect("a status names its flow");
        assert_eq!(status["state"], "finished", "{status}");
        assert_eq!(
            status["total_rows"].as_u64(),
            sent.get(flow).copied(),
            "flow {flow}: server rows = rows loadgen sent"
        );
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
    assert_rows_as_sent(&statuses, &sent);
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
    /// Drives `conn`: every call on it runs in this runtime.
    pub rt: tokio::runtime::Runtime,
    pub conn: packhunt::agent::comms::Connection,
    pub tasks: packhunt::agent::comms::TaskStream,
    pub client_id: String,
    pub identity: packhunt::tls::agent_key::AgentIdentity,
    /// This agent's mTLS client config, for raw connections beside `conn`.
    pub tls: std::sync::Arc<rustls::ClientConfig>,
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
        Self::connect_holding(path, identity, None)
    }

    /// Connects as `identity`, saying it holds the client event table of digest `held`
    /// (the request header), and opens the task stream without sending facts.
    pub fn connect_holding(
        path: &Path,
        identity: packhunt::tls::agent_key::AgentIdentity,
        held: Option<packhunt::protocol::event_table::TableDigest>,
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
        let connect = packhunt::agent::comms::connect_holding(&url, tls.clone(), None, held);
        let (conn, mut tasks) = rt.block_on(connect)?;
        // The server's first word names the identity the agent connected with.
        let client_id = identity.client_id().to_string();
        let first = rt.block_on(async {
            let next = tokio::time::timeout(Duration::from_secs(10), tasks.next()).await;
            anyhow::Ok(next.context("no Hello within 10 s")??)
        })?;
        match first.and_then(|m| m.kind) {
            Some(packhunt::protocol::pb::server_message::Kind::Hello(hello)) => {
                anyhow::ensure!(
                    hello.client_id == client_id,
                    "Hello for {}",
                    hello.client_id
                )
            }
            other => bail!("expected Hello first, got {other:?}"),
        }
        Ok(Self {
            rt,
            conn,
            tasks,
            client_id,
            identity,
            tls,
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

    /// Reads the stream until the task for `flow` arrives (10 s at most); returns it.
    pub fn expect_task(&mut self, flow: &str) -> Result<packhunt::protocol::pb::Task> {
        use packhunt::protocol::pb;
        let tasks = &mut self.tasks;
        self.rt.block_on(async {
            let wait = async {
                loop {
                    if let Some(pb::server_message::Kind::Task(t)) =
                        tasks.next().await?.and_then(|m| m.kind)
                    {
                        anyhow::ensure!(t.flow_id == flow, "task for another flow");
                        return Ok(t);
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .map_err(|_| anyhow::anyhow!("no task for {flow} within 10 s"))?
        })
    }

    /// The next message on the task stream, whatever its kind (10 s at most).
    pub fn next_message(&mut self) -> Result<packhunt::protocol::pb::server_message::Kind> {
        let tasks = &mut self.tasks;
        self.rt.block_on(async {
            let next = tokio::time::timeout(Duration::from_secs(10), tasks.next()).await;
            let message = next.context("no message on the task stream within 10 s")??;
            message
                .and_then(|m| m.kind)
                .context("task stream ended or sent an empty message")
        })
    }

    /// The next message, which must be a client event table.
    pub fn expect_event_table(&mut self) -> Result<packhunt::protocol::pb::EventTable> {
        match self.next_message()? {
            packhunt::protocol::pb::server_message::Kind::EventTable(table) => Ok(table),
            other => bail!("expected an EventTable, got {other:?}"),
        }
    }

    pub fn upload(
        &mut self,
        upload: &packhunt::protocol::pb::Upload,
    ) -> Result<packhunt::agent::comms::UploadReply> {
        Ok(self.rt.block_on(self.conn.upload(upload))?)
    }
}
