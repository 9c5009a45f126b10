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
//! Deployment, frontends and API client are tests/common's; what is this test's own is
//! the lab (namespaces, veths, the bridge, the cut).
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2: skipped where it is not
//! root, saying so past the harness's capture and counted (see `common::skip`); as root,
//! a namespace that cannot be made fails the test saying why.

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::{frontend, wait_until, Api, Deployment, Ports};
use serde_json::Value;

// Each host has its own port space, so every frontend can use the same well-known ports.
const PORTS: Ports = Ports {
    agent: 8000,
    gui: 8889,
    replication: 8001,
};
const MINION_METRICS_PORT: u16 = 9100;
const AGENTS_ON_B: usize = 3;
/// Keepalive (5 s interval + 5 s timeout) notices the cut in ~10 s, a relink attempt into
/// the cut gives up after its 10 s connect timeout, and backoff waits at most 5 s; 30 s per
/// wait leaves room for a loaded 2-core box.
const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// Requests answer in milliseconds here; one that hangs is caught well inside WAIT_LIMIT.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A locally administered unicast MAC that no interface in the lab carries.
const NOWHERE_MAC: &str = "02:00:5e:ff:ff:01";

const LINK_FAILURES: &str = "packhunt_replication_link_failures_total";
const LINKS_UP: &str = "packhunt_replication_links_up";

#[test]
fn a_minion_cut_off_from_the_master_keeps_serving_and_recovers() -> Result<()> {
    if !common::is_root() {
        common::skip(
            "netns::a_minion_cut_off_from_the_master_keeps_serving_and_recovers",
            "root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and iproute2 for network namespaces",
        );
        return Ok(());
    }
    let mut lab = Lab::build()?;
    exercise(&mut lab)?;
    lab.passed = true;
    Ok(())
}

fn exercise(lab: &mut Lab) -> Result<()> {
    let (master, b) = (lab.host("m").clone(), lab.host("b").clone());
    let cluster = start_cluster(lab)?;
    let b_agents = check_linked(&cluster)?;
    let failures_before = cluster.b_metrics.metric(LINK_FAILURES)?;

    lab.cut(&master, &b)?;
    let cut_at = Instant::now();
    check_cut_off(&cluster, failures_before, cut_at)?;
    // Scheduled while B is unreachable: the notification cannot cross, the task waits on
    // the shared datastore and B finds it when it relinks.
    let during_cut = (
        b_agents[1].clone(),
        cluster
            .api
            .collect(&b_agents[1], &["Generic.Client.Info"])?,
    );

    lab.restore(&master, &b)?;
    check_recovered(&cluster, &b_agents, Instant::now())?;
    let status = wait_flow(&cluster.api, &during_cut)?;
    assert_eq!(
        status["state"], "finished",
        "the collection scheduled during the cut ran after the heal: {status}"
    );
    Ok(())
}

/// The running deployment as this test sees it from the root namespace.
struct Cluster {
    /// Generated config and datastore; its frontends run in `Lab::processes`.
    _deployment: Deployment,
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
    let (master, a, b) = (
        lab.host("m").clone(),
        lab.host("a").clone(),
        lab.host("b").clone(),
    );
    let agents = lab.host("c").clone();
    let deployment = Deployment::generate_on(Some(&master.address), PORTS, gui_on_every_address)?;
    let minion_a = deployment.add_minion_at(&a.address, PORTS.agent, MINION_METRICS_PORT)?;
    let minion_b = deployment.add_minion_at(&b.address, PORTS.agent, MINION_METRICS_PORT)?;
    let config = deployment.path().join("server.config.toml");
    let config = config.to_str().context("non-UTF-8 temp path")?;

    lab.spawn_frontend(&master, &["frontend", "--config", config])?;
    for (host, minion) in [(&a, &minion_a), (&b, &minion_b)] {
        // Each minion runs from its own config, the only one with its key.
        let own = common::secrets::minion_config(deployment.path(), &minion.name);
        let own = own.to_str().context("non-UTF-8 temp path")?;
        let args = [
            "frontend",
            "--config",
            own,
            "--minion",
            "--node",
            &minion.name,
        ];
        lab.spawn_frontend(host, &args)?;
    }
    let targets = std::iter::repeat_n(&minion_b, AGENTS_ON_B).chain([&minion_a]);
    for (i, target) in targets.enumerate() {
        // Its own writeback (so its own client id), talking only to `target`.
        let client_config =
            deployment.client_config_with(&format!("agent-{i}.client.config.toml"), |c| {
                c.client.server_urls = vec![format!("https://{}/", target.name)];
                c.client.writeback_path = lab.dir.path().join(format!("agent-{i}.writeback.toml"));
            })?;
        let client_config = client_config.to_str().context("non-UTF-8 temp path")?;
        lab.spawn(
            &agents,
            &format!("agent-{i}"),
            &["client", "--config", client_config],
        )?;
    }
    let short = |api: Api| api.with_request_timeout(REQUEST_TIMEOUT);
    Ok(Cluster {
        api: short(deployment.api()),
        b_metrics: short(minion_b.metrics_api(&deployment)),
        a_name: minion_a.name.clone(),
        b_name: minion_b.name.clone(),
        _deployment: deployment,
    })
}

/// The GUI/API (and so each minion's /metrics) bound to every address, so this test
/// reaches them from the root namespace.
fn gui_on_every_address(text: &mut String) {
    let gui_loopback = "[gui]\nbind_address = \"127.0.0.1\"";
    assert_eq!(
        text.matches(gui_loopback).count(),
        1,
        "generated [gui] section not as expected:\n{text}"
    );
    *text = text.replace(gui_loopback, "[gui]\nbind_address = \"0.0.0.0\"");
}

/// Every frontend linked and every agent listed where it is; returns B's agents.
fn check_linked(c: &Cluster) -> Result<Vec<String>> {
    let started = Instant::now();
    let items = c
        .api
        .wait_frontends("every frontend up with its agents", WAIT_LIMIT, |items| {
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
    // The client list shows an agent once its facts are in too, which may trail its
    // presence by a facts write on the minion.
    let connected = wait_until(
        "the master lists every agent where it is",
        WAIT_LIMIT,
        || connected(&c.api),
        |listed| {
            on_frontend(listed, &c.b_name).len() == AGENTS_ON_B
                && on_frontend(listed, &c.a_name).len() == 1
        },
    )?;
    let b_agents = on_frontend(&connected, &c.b_name);
    assert_eq!(
        b_agents.len(),
        AGENTS_ON_B,
        "the master lists B's agents at B: {connected:?}"
    );
    assert_eq!(on_frontend(&connected, &c.a_name).len(), 1, "{connected:?}");
    assert_eq!(c.api.metric(LINKS_UP)?, 2);
    assert_eq!(c.b_metrics.metric(LINKS_UP)?, 1);
    Ok(b_agents)
}

/// The master shows B and its agents gone, A untouched; B keeps serving its agents and
/// keeps trying to relink.
fn check_cut_off(c: &Cluster, failures_before: u64, cut_at: Instant) -> Result<()> {
    let items = c
        .api
        .wait_frontends("B shown down, A still up", WAIT_LIMIT, |items| {
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
    let connected_now = wait_until(
        "B's agents no longer listed as connected",
        WAIT_LIMIT,
        || connected(&c.api),
        |now| on_frontend(now, &c.b_name).is_empty(),
    )?;
    assert_eq!(
        connected_now.len(),
        1,
        "only A's agent is listed: {connected_now:?}"
    );
    assert_eq!(c.api.metric(LINKS_UP)?, 1, "only A's link is left");

    // Two failures: the link the keepalive gave up on, then a relink that found no way
    // through the cut.
    wait_until(
        "B fails to relink through the cut",
        WAIT_LIMIT,
        || c.b_metrics.metric(LINK_FAILURES),
        |failures| *failures >= failures_before + 2,
    )?;
    let sessions = c.b_metrics.metric("packhunt_sessions_open")?;
    assert_eq!(sessions, AGENTS_ON_B as u64, "B still serves its agents");
    assert_eq!(c.b_metrics.metric(LINKS_UP)?, 0);
    eprintln!(
        "{:.1?} into the cut: B sessions_open={sessions}, B link failures {failures_before} -> {}",
        cut_at.elapsed(),
        c.b_metrics.metric(LINK_FAILURES)?
    );
    Ok(())
}

/// B relinks and the master lists the same agents at B again (the relink's snapshot),
/// without them having moved; a collection on one of them finishes.
fn check_recovered(c: &Cluster, b_agents: &[String], restored_at: Instant) -> Result<()> {
    let items = c
        .api
        .wait_frontends("B up again with its agents", WAIT_LIMIT, |items| {
            items.iter().all(|f| f["up"] == true)
                && clients_on(items, &c.b_name) == AGENTS_ON_B as u64
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
        c.b_metrics.metric("packhunt_sessions_open")?,
        AGENTS_ON_B as u64
    );
    assert_eq!(c.api.metric(LINKS_UP)?, 2);
    assert_eq!(c.b_metrics.metric(LINKS_UP)?, 1);

    let client = &b_agents[0];
    let flow = c.api.collect(client, &["Generic.Client.Info"])?;
    let status = wait_flow(&c.api, &(client.clone(), flow))?;
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
    /// Builds the network; fails saying why where namespaces can't be made here.
    fn build() -> Result<Lab> {
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
        ip(&["netns", "add", &lab.hosts[0].netns]).context(
            "cannot create a network namespace here (needs root, i.e. CAP_SYS_ADMIN and \
             CAP_NET_ADMIN, and iproute2's `ip`)",
        )?;
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
        Ok(lab)
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
        let log = std::fs::File::create(self.log_path(label))?;
        let mut command = in_namespace(host, args);
        command.stdout(log.try_clone()?).stderr(log);
        let child = command.spawn()?;
        self.processes.push((label.to_string(), child));
        Ok(())
    }

    /// Starts a frontend inside `host` and waits for the line saying it is ready.
    fn spawn_frontend(&mut self, host: &Host, args: &[&str]) -> Result<()> {
        let label = format!("frontend-{}", host.role);
        let mut command = in_namespace(host, args);
        let log = self.log_path(&label);
        let child = common::spawn_until_ready(&mut command, &label, Some(&log))?;
        self.processes.push((label, child));
        Ok(())
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

/// `packhunt ARGS` run inside `host`'s namespace.
fn in_namespace(host: &Host, args: &[&str]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &host.netns])
        .arg(common::packhunt_bin())
        .args(args);
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
    command
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

/// Waits for the flow (client, flow id) to reach a terminal state; returns its status.
fn wait_flow(api: &Api, flow: &(String, String)) -> Result<Value> {
    let mut statuses = api.wait_flows(std::slice::from_ref(flow), WAIT_LIMIT)?;
    Ok(statuses.pop().expect("one status per flow"))
}
