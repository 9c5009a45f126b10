//! Goal: a master and two minions on separate hosts, each with its own address, ride out
//! a network cut between the master and one minion: the master marks that minion and its
//! agents down while the minion keeps serving them, and once the network heals the
//! minion relinks, its agents are listed again and the master tasks them there.
//! Method: one network namespace per host (master, minion A, minion B, an agents host),
//! joined by veth pairs to a bridge in the root namespace that also holds an address, so
//! this test reaches every host's HTTPS port. Real `packhunt frontend` and `packhunt
//! client` processes run in the namespaces with one shared datastore folder. The cut
//! poisons the master's and B's neighbour entries for each other with a MAC no host
//! owns: frames leave and are lost on the wire, so neither side gets a local send error
//! and only the replication keepalives can notice, as with a failed switch port. Every
//! other path (agents to B, the test to every host) stays up.
//! Skipped, with a message on stderr, where `ip netns add` fails (not root, no
//! CAP_SYS_ADMIN / CAP_NET_ADMIN, no iproute2).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

const ADMIN_PASSWORD: &str = "netns-admin-pw";
// Each host has its own port space, so every frontend can use the same well-known ports.
const AGENT_PORT: u16 = 8000;
const REPLICATION_PORT: u16 = 8001;
const GUI_PORT: u16 = 8889;
const MINION_METRICS_PORT: u16 = 9100;
const AGENTS_ON_B: usize = 3;
/// Keepalive (5 s interval + 5 s timeout) notices the cut in ~10 s, a relink attempt into
/// the cut gives up after its 10 s connect timeout, and backoff waits at most 5 s; 30 s per
/// wait leaves room for a loaded 2-core box.
const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// A locally administered unicast MAC that no interface in the lab carries.
const NOWHERE_MAC: &str = "02:00:5e:ff:ff:01";

const LINK_FAILURES: &str = "packhunt_replication_link_failures_total";
const LINKS_UP: &str = "packhunt_replication_links_up";

#[test]
fn a_minion_cut_off_from_the_master_keeps_serving_and_recovers() -> Result<()> {
    let Some(mut lab) = Lab::build()? else {
        return Ok(());
    };
    exercise(&mut lab)?;
    lab.passed = true;
    Ok(())
}

fn exercise(lab: &mut Lab) -> Result<()> {
    let (master, b) = (lab.host("m").clone(), lab.host("b").clone());
    let cluster = start_cluster(lab)?;
    let b_agents = check_linked(&cluster)?;
    let failures_before = metric(&cluster.b_metrics, LINK_FAILURES)?;

    lab.cut(&master, &b)?;
    let cut_at = Instant::now();
    check_cut_off(&cluster, failures_before, cut_at)?;
    // Scheduled while B is unreachable: the notification cannot cross, the task waits on
    // the shared datastore and B finds it when it relinks.
    let during_cut = (
        b_agents[1].clone(),
        collect(&cluster.api, &b_agents[1], "Generic.Client.Info")?,
    );

    lab.restore(&master, &b)?;
    check_recovered(&cluster, &b_agents, Instant::now())?;
    let status = wait_flow(&cluster.api, &during_cut.0, &during_cut.1)?;
    assert_eq!(
        status["state"], "finished",
        "the collection scheduled during the cut ran after the heal: {status}"
    );
    Ok(())
}

/// The running deployment as this test sees it from the root namespace.
struct Cluster {
    /// The master's GUI/API.
    api: Api,
    /// Minion B's /metrics.
    b_metrics: Api,
    a_name: String,
    b_name: String,
}

/// Starts the master, both minions and the agents (AGENTS_ON_B talking to B only, one to
/// A only, all on the agents host).
fn start_cluster(lab: &mut Lab) -> Result<Cluster> {
    let dir = lab.dir.path().to_path_buf();
    let (master, a, b) = (
        lab.host("m").clone(),
        lab.host("a").clone(),
        lab.host("b").clone(),
    );
    let agents = lab.host("c").clone();
    let config = generate_config(&dir, &master.address, &[&a.address, &b.address])?;
    let config = path_str(&config)?;
    let (a_name, b_name) = (frontend_name(&a.address), frontend_name(&b.address));

    lab.spawn_frontend(&master, &["frontend", "--config", config])?;
    for (host, name) in [(&a, &a_name), (&b, &b_name)] {
        lab.spawn_frontend(
            host,
            &["frontend", "--config", config, "--minion", "--node", name],
        )?;
    }
    let targets = std::iter::repeat_n(&b.address, AGENTS_ON_B).chain([&a.address]);
    for (i, target) in targets.enumerate() {
        let client_config = agent_config(&dir, i, target)?;
        lab.spawn(
            &agents,
            &format!("agent-{i}"),
            &["client", "--config", path_str(&client_config)?],
        )?;
    }
    let ca_pem = packhunt::config::ClientFile::load(&dir.join("client.config.toml"))?
        .client
        .ca_certificate;
    let api = Api::new(&master.address, GUI_PORT, &ca_pem);
    let b_metrics = Api::new(&b.address, MINION_METRICS_PORT, &ca_pem);
    Ok(Cluster {
        api,
        b_metrics,
        a_name,
        b_name,
    })
}

/// Every frontend linked and every agent listed where it is; returns B's agents.
fn check_linked(c: &Cluster) -> Result<Vec<String>> {
    let started = Instant::now();
    let items = wait_frontends(&c.api, "every frontend up with its agents", |items| {
        items.iter().all(|f| f["up"] == true)
            && clients_on(items, &c.b_name) == AGENTS_ON_B as u64
            && clients_on(items, &c.a_name) == 1
    })
    .context(
        "frontends not all linked (if no minion ever links, check that the root \
         namespace's firewall passes bridged traffic)",
    )?;
    eprintln!(
        "linked after {:.1?}: {}",
        started.elapsed(),
        summary(&items)
    );
    let connected = connected(&c.api)?;
    let b_agents = on_frontend(&connected, &c.b_name);
    assert_eq!(
        b_agents.len(),
        AGENTS_ON_B,
        "the master lists B's agents at B: {connected:?}"
    );
    assert_eq!(on_frontend(&connected, &c.a_name).len(), 1, "{connected:?}");
    assert_eq!(metric(&c.api, LINKS_UP)?, 2);
    assert_eq!(metric(&c.b_metrics, LINKS_UP)?, 1);
    Ok(b_agents)
}

/// The master shows B and its agents gone, A untouched; B keeps serving its agents and
/// keeps trying to relink.
fn check_cut_off(c: &Cluster, failures_before: u64, cut_at: Instant) -> Result<()> {
    let items = wait_frontends(&c.api, "B shown down, A still up", |items| {
        frontend(items, &c.b_name)["up"] == false && frontend(items, &c.a_name)["up"] == true
    })?;
    eprintln!(
        "master marked B down {:.1?} after the cut: {}",
        cut_at.elapsed(),
        summary(&items)
    );
    assert_eq!(
        clients_on(&items, &c.b_name),
        0,
        "a down frontend has no agents: {items:?}"
    );
    assert_eq!(
        clients_on(&items, &c.a_name),
        1,
        "A and its agent are untouched: {items:?}"
    );
    let mut connected_now = Vec::new();
    wait_until("B's agents no longer listed as connected", || {
        connected_now = connected(&c.api)?;
        Ok(on_frontend(&connected_now, &c.b_name).is_empty())
    })?;
    assert_eq!(
        connected_now.len(),
        1,
        "only A's agent is listed: {connected_now:?}"
    );
    assert_eq!(metric(&c.api, LINKS_UP)?, 1, "only A's link is left");

    // Two failures: the link the keepalive gave up on, then a relink that found no way
    // through the cut.
    wait_until("B fails to relink through the cut", || {
        Ok(metric(&c.b_metrics, LINK_FAILURES)? >= failures_before + 2)
    })?;
    let sessions = metric(&c.b_metrics, "packhunt_sessions_open")?;
    assert_eq!(sessions, AGENTS_ON_B as u64, "B still serves its agents");
    assert_eq!(metric(&c.b_metrics, LINKS_UP)?, 0);
    eprintln!(
        "{:.1?} into the cut: B sessions_open={sessions}, B link failures {failures_before} -> {}",
        cut_at.elapsed(),
        metric(&c.b_metrics, LINK_FAILURES)?
    );
    Ok(())
}

/// B relinks and the master lists the same agents at B again (the relink's snapshot),
/// without them having moved; a collection on one of them finishes.
fn check_recovered(c: &Cluster, b_agents: &[String], restored_at: Instant) -> Result<()> {
    let items = wait_frontends(&c.api, "B up again with its agents", |items| {
        items.iter().all(|f| f["up"] == true) && clients_on(items, &c.b_name) == AGENTS_ON_B as u64
    })?;
    eprintln!(
        "B relinked {:.1?} after the restore: {}",
        restored_at.elapsed(),
        summary(&items)
    );
    let (mut relisted, mut expected) = (
        on_frontend(&connected(&c.api)?, &c.b_name),
        b_agents.to_vec(),
    );
    relisted.sort();
    expected.sort();
    assert_eq!(relisted, expected, "the same agents, listed at B again");
    assert_eq!(
        metric(&c.b_metrics, "packhunt_sessions_open")?,
        AGENTS_ON_B as u64
    );
    assert_eq!(metric(&c.api, LINKS_UP)?, 2);
    assert_eq!(metric(&c.b_metrics, LINKS_UP)?, 1);

    let client = &b_agents[0];
    let flow = collect(&c.api, client, "Generic.Client.Info")?;
    let status = wait_flow(&c.api, client, &flow)?;
    eprintln!(
        "collection on B's agent {client}, {:.1?} after the restore: {status}",
        restored_at.elapsed()
    );
    assert_eq!(status["state"], "finished", "{status}");
    assert_eq!(
        status["total_rows"], 1,
        "one Generic.Client.Info row: {status}"
    );
    Ok(())
}

/// One simulated host: a namespace, its address, and the root end of its veth.
#[derive(Clone, Debug)]
struct Host {
    role: &'static str,
    netns: String,
    veth: String,
    address: String,
}

/// The namespaces, bridge and processes of one run; all removed on drop, even when the
/// test fails or panics half-way through building them.
struct Lab {
    dir: tempfile::TempDir,
    bridge: String,
    hosts: Vec<Host>,
    /// Invariant: each was started inside one of `hosts`' namespaces.
    processes: Vec<(String, Child)>,
    /// Set once every check held; otherwise drop shows the processes' logs.
    passed: bool,
}

impl Lab {
    /// Builds the network, or returns None (after saying why) where namespaces can't be
    /// made here.
    fn build() -> Result<Option<Lab>> {
        let pid = std::process::id();
        let subnet = free_subnet()?;
        let host = |role, last_octet: u8| Host {
            role,
            netns: format!("ph{pid}-{role}"),
            veth: format!("ph{pid}{role}"),
            address: format!("{subnet}.{last_octet}"),
        };
        let hosts = vec![host("m", 1), host("a", 2), host("b", 3), host("c", 10)];
        let lab = Lab {
            dir: tempfile::tempdir()?,
            bridge: format!("ph{pid}br"),
            hosts,
            processes: Vec::new(),
            passed: false,
        };
        // Names carry our pid: a leftover with them is from a killed run that had it.
        for h in &lab.hosts {
            let _ = ip(&["netns", "del", &h.netns]);
            let _ = ip(&["link", "del", &h.veth]);
        }
        let _ = ip(&["link", "del", &lab.bridge]);
        if let Err(why) = ip(&["netns", "add", &lab.hosts[0].netns]) {
            eprintln!(
                "skipped: cannot create a network namespace here (needs root, i.e. \
                 CAP_SYS_ADMIN and CAP_NET_ADMIN, and iproute2's `ip`): {why:#}"
            );
            return Ok(None);
        }
        ip(&["link", "add", &lab.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{subnet}.254/24"),
            "dev",
            &lab.bridge,
        ])?;
        ip(&["link", "set", &lab.bridge, "up"])?;
        for (i, h) in lab.hosts.iter().enumerate() {
            if i > 0 {
                ip(&["netns", "add", &h.netns])?;
            }
            ip(&[
                "link", "add", &h.veth, "type", "veth", "peer", "name", "eth0", "netns", &h.netns,
            ])?;
            ip(&["link", "set", &h.veth, "master", &lab.bridge, "up"])?;
            ip(&[
                "-n",
                &h.netns,
                "addr",
                "add",
                &format!("{}/24", h.address),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &h.netns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &h.netns, "link", "set", "lo", "up"])?;
        }
        eprintln!(
            "lab: bridge {} {subnet}.254/24; {}",
            lab.bridge,
            lab.describe()
        );
        Ok(Some(lab))
    }

    fn host(&self, role: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.role == role)
            .expect("every role is built")
    }

    fn describe(&self) -> String {
        self.hosts
            .iter()
            .map(|h| format!("{} {} ({})", h.role, h.address, h.netns))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Starts `packhunt ARGS` inside `host`; its stdout and stderr go to a log file.
    fn spawn(&mut self, host: &Host, label: &str, args: &[&str]) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(self.log_path(label))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &host.netns])
            .arg(env!("CARGO_BIN_EXE_packhunt"))
            .args(args)
            .stdout(log.try_clone()?)
            .stderr(log);
        // Drop can't run if the test is killed (a harness timeout). The death signal, which
        // fires when the spawning thread (this test's) ends and survives the exec that
        // `ip netns exec` makes into packhunt, still stops every process.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn()?;
        self.processes.push((label.to_string(), child));
        Ok(())
    }

    /// Starts a frontend inside `host` and waits for the line saying it is ready.
    fn spawn_frontend(&mut self, host: &Host, args: &[&str]) -> Result<()> {
        let label = format!("frontend-{}", host.role);
        self.spawn(host, &label, args)?;
        let log = self.log_path(&label);
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text
                .lines()
                .any(|l| l.starts_with("packhunt ") && l.contains(" ready: "))
            {
                return Ok(());
            }
            let (_, child) = self.processes.last_mut().expect("just spawned");
            if let Some(status) = child.try_wait()? {
                bail!("{label} exited before it was ready ({status}): {text}");
            }
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "{label} not ready within 30 s: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_path(&self, label: &str) -> PathBuf {
        self.dir.path().join(format!("{label}.log"))
    }

    /// Cuts `x` and `y` off from each other only.
    fn cut(&self, x: &Host, y: &Host) -> Result<()> {
        for (from, to) in [(x, y), (y, x)] {
            ip(&[
                "-n",
                &from.netns,
                "neigh",
                "replace",
                &to.address,
                "lladdr",
                NOWHERE_MAC,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
    }

    /// Heals a `cut`: both ends resolve each other's real MAC again.
    fn restore(&self, x: &Host, y: &Host) -> Result<()> {
        for (from, to) in [(x, y), (y, x)] {
            ip(&[
                "-n",
                &from.netns,
                "neigh",
                "del",
                &to.address,
                "dev",
                "eth0",
            ])?;
        }
        Ok(())
    }

    /// The last lines of every process's log, for a failed run (error or panic).
    fn dump_logs(&self) {
        for (label, _) in &self.processes {
            let text = std::fs::read_to_string(self.log_path(label)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            eprintln!("----- {label} (last 25 lines) -----\n{tail}");
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.passed {
            self.dump_logs();
        }
        // Processes first: a namespace lives on while anything runs inside it.
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting a namespace destroys its end of the veth and with it the root end.
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.netns]);
            let _ = ip(&["link", "del", &h.veth]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Runs `ip ARGS`; the error carries its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip")?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A 10.213.X /24 that no address or route of the root namespace touches, starting from
/// our pid so concurrent runs rarely probe the same one.
fn free_subnet() -> Result<String> {
    let out = Command::new("sh")
        .args(["-c", "ip -4 -o addr show; ip -4 route show table all"])
        .output();
    let taken = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let start = std::process::id() % 250;
    (0..250)
        .map(|i| format!("10.213.{}", (start + i) % 250))
        .find(|net| !taken.contains(&format!("{net}.")))
        .context("every 10.213.X.0/24 is in use")
}

/// Generates the deployment: master at `master`, minions at `minions`, with the GUI/API
/// (and so each minion's /metrics) bound to every address so this test reaches them.
fn generate_config(dir: &Path, master: &str, minions: &[&str]) -> Result<PathBuf> {
    let out = dir.to_str().context("temp dir path")?;
    let status = Command::new(env!("CARGO_BIN_EXE_packhunt"))
        .args(["config", "generate", "--out", out, "--public-host", master])
        .args([
            "--frontend-port",
            &AGENT_PORT.to_string(),
            "--gui-port",
            &GUI_PORT.to_string(),
        ])
        .args([
            "--replication-port",
            &REPLICATION_PORT.to_string(),
            "--admin-password",
            ADMIN_PASSWORD,
        ])
        .stdout(Stdio::null())
        .status()?;
    ensure!(status.success(), "config generate failed");
    let config = dir.join("server.config.toml");
    let text = std::fs::read_to_string(&config)?;
    let gui_loopback = "[gui]\nbind_address = \"127.0.0.1\"";
    ensure!(
        text.matches(gui_loopback).count() == 1,
        "generated [gui] section not as expected:\n{text}"
    );
    std::fs::write(
        &config,
        text.replace(gui_loopback, "[gui]\nbind_address = \"0.0.0.0\""),
    )?;
    for address in minions {
        let status = Command::new(env!("CARGO_BIN_EXE_packhunt"))
            .args([
                "config",
                "frontend",
                "--config",
                path_str(&config)?,
                "--name",
                &frontend_name(address),
            ])
            .args(["--metrics-port", &MINION_METRICS_PORT.to_string()])
            .stdout(Stdio::null())
            .status()?;
        ensure!(status.success(), "config frontend {address} failed");
    }
    Ok(config)
}

/// A client config for agent `i`: its own writeback (so its own client id), talking
/// only to the frontend at `address`.
fn agent_config(dir: &Path, i: usize, address: &str) -> Result<PathBuf> {
    let mut config = packhunt::config::ClientFile::load(&dir.join("client.config.toml"))?;
    config.client.server_urls = vec![format!("https://{}/", frontend_name(address))];
    config.client.writeback_path = dir.join(format!("agent-{i}.writeback.toml"));
    let path = dir.join(format!("agent-{i}.client.config.toml"));
    packhunt::config::write_toml(&path, &config)?;
    Ok(path)
}

fn frontend_name(address: &str) -> String {
    format!("{address}:{AGENT_PORT}")
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("non-UTF-8 temp path")
}

fn frontend<'a>(items: &'a [Value], name: &str) -> &'a Value {
    items
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed in {items:?}"))
}

fn clients_on(items: &[Value], name: &str) -> u64 {
    frontend(items, name)["connected_clients"]
        .as_u64()
        .unwrap_or(0)
}

fn summary(items: &[Value]) -> String {
    items.iter().fold(String::new(), |mut s, f| {
        let _ = write!(
            s,
            "[{} {} up={} clients={}] ",
            f["name"], f["role"], f["up"], f["connected_clients"]
        );
        s
    })
}

/// Polls GET /api/v1/frontends until `ok` holds for its items.
fn wait_frontends(api: &Api, what: &str, ok: impl Fn(&[Value]) -> bool) -> Result<Vec<Value>> {
    let mut last = Value::Null;
    let found = wait_until(what, || {
        let (status, body) = api.get("/api/v1/frontends")?;
        ensure!(status == 200, "frontends answered {status}: {body}");
        last = body;
        Ok(ok(last["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()))
    });
    found.with_context(|| format!("frontends last seen: {last}"))?;
    Ok(last["items"].as_array().cloned().unwrap_or_default())
}

/// Polls `check` every 200 ms until it holds, for at most WAIT_LIMIT.
fn wait_until(what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let started = Instant::now();
    loop {
        if check()? {
            return Ok(());
        }
        if started.elapsed() > WAIT_LIMIT {
            bail!("{what}: not within {WAIT_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (client id, frontend) of every agent the master lists as connected.
fn connected(api: &Api) -> Result<Vec<(String, String)>> {
    let (status, body) = api.get("/api/v1/clients?connected=true&limit=100")?;
    ensure!(status == 200, "clients answered {status}: {body}");
    let items = body["items"].as_array().context("clients: items")?;
    let field = |c: &Value, key: &str| c[key].as_str().unwrap_or_default().to_string();
    Ok(items
        .iter()
        .map(|c| (field(c, "client_id"), field(c, "frontend")))
        .collect())
}

fn on_frontend(connected: &[(String, String)], name: &str) -> Vec<String> {
    connected
        .iter()
        .filter(|(_, f)| f == name)
        .map(|(id, _)| id.clone())
        .collect()
}

fn collect(api: &Api, client: &str, artifact: &str) -> Result<String> {
    let body = serde_json::json!({ "artifacts": [artifact] });
    let (status, reply) = api.post(&format!("/api/v1/clients/{client}/collections"), &body)?;
    ensure!(
        status == 200,
        "collection for {client} refused: {status} {reply}"
    );
    Ok(reply["flow_id"].as_str().context("flow_id")?.to_string())
}

/// Waits for the flow to reach a terminal state; returns its status document.
fn wait_flow(api: &Api, client: &str, flow: &str) -> Result<Value> {
    let mut last = Value::Null;
    wait_until("the collection ends", || {
        last = api
            .get(&format!("/api/v1/clients/{client}/collections/{flow}"))?
            .1;
        Ok(matches!(
            last["state"].as_str(),
            Some("finished" | "error" | "cancelled")
        ))
    })
    .with_context(|| format!("flow {flow} last seen: {last}"))?;
    Ok(last)
}

/// One series' value from the /metrics that `api` serves.
fn metric(api: &Api, series: &str) -> Result<u64> {
    let (status, body) = api.request("GET", "/metrics", None)?;
    ensure!(status == 200, "/metrics answered {status}");
    let text = String::from_utf8(body)?;
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok());
    value.with_context(|| format!("{series} missing from /metrics of {}", api.host))
}

/// A small HTTPS client for one host's GUI/API or /metrics port, pinned to the
/// deployment's CA and logged in as admin.
struct Api {
    host: String,
    port: u16,
    ca_pem: String,
}

impl Api {
    /// A request that takes longer than this is a failure, not a hang.
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

    fn new(host: &str, port: u16, ca_pem: &str) -> Api {
        Api {
            host: host.to_string(),
            port,
            ca_pem: ca_pem.to_string(),
        }
    }

    fn get(&self, path: &str) -> Result<(u16, Value)> {
        let (status, body) = self.request("GET", path, None)?;
        let json = serde_json::from_slice(&body)
            .with_context(|| format!("GET {path}: not JSON: {}", String::from_utf8_lossy(&body)))?;
        Ok((status, json))
    }

    fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let (status, body) = self.request("POST", path, Some(serde_json::to_vec(body)?))?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    fn request(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<(u16, Vec<u8>)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let request = async {
            tokio::time::timeout(
                Self::REQUEST_TIMEOUT,
                self.request_async(method, path, body),
            )
            .await
        };
        rt.block_on(request).with_context(|| {
            format!(
                "{method} https://{}:{}{path} timed out",
                self.host, self.port
            )
        })?
    }

    async fn request_async(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>)> {
        use base64::Engine;
        let config = packhunt::tls::client::api_client_config(&packhunt::tls::pem::certificates(
            &self.ca_pem,
        )?)?;
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_PASSWORD}"));
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("{}:{}", self.host, self.port))
            .header("authorization", format!("Basic {token}"))
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = send.send_request(req).await?;
        let status = resp.status().as_u16();
        Ok((
            status,
            resp.into_body().collect().await?.to_bytes().to_vec(),
        ))
    }
}
