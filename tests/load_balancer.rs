//! Goal: agents whose client config lists only a load balancer (a real HAProxy in TCP
//! mode, so mutual TLS still ends at the frontends) spread over a master and two minions,
//! are tasked wherever they land, and when a minion is killed they move to the others by
//! themselves and are tasked there; the balancer's health checks (`/readyz`) take a dead
//! or draining frontend out. `/healthz` and `/readyz` answer without credentials and say
//! nothing else, while every other route still needs a user.
//! Method: real frontend processes and a real haproxy on loopback ports, a loadgen fleet
//! dialling the balancer, collections scheduled through the master's API; the balancer's
//! own view read from its admin socket. Counts and states are compared, never timings.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use common::haproxy::{Backend, Haproxy};
use common::{cluster, frontend, wait_frontends, Deployment, Minion};
use serde_json::Value;

/// Generous limits: they only stop a hung test.
const SETTLE: Duration = Duration::from_secs(60);

/// The master and each minion as the balancer's servers: agents to the agent port,
/// `/readyz` asked on the GUI/API or metrics port.
fn backends(deployment: &Deployment, minions: &[Minion]) -> Vec<Backend> {
    let mut all = vec![Backend {
        name: "master".into(),
        agent_port: deployment.agent_port,
        check_port: deployment.gui_port,
    }];
    for (i, m) in minions.iter().enumerate() {
        all.push(Backend {
            name: format!("minion{}", i + 1),
            agent_port: m.agent_port,
            check_port: m.metrics_port,
        });
    }
    all
}

/// Schedules one collection per agent through the master and checks every flow finishes.
fn task_every_agent(deployment: &Deployment, ids: &[String]) -> Result<()> {
    let api = deployment.api();
    let flows = ids
        .iter()
        .map(|id| Ok((id.clone(), api.collect(id, &["Generic.Client.Info"])?)))
        .collect::<Result<Vec<_>>>()?;
    let statuses = deployment.wait_flows(&flows, Duration::from_secs(120))?;
    for status in &statuses {
        assert_eq!(status["state"], "finished", "{status}");
    }
    assert_eq!(statuses.len(), ids.len());
    Ok(())
}

fn connected(items: &[Value], name: &str) -> u64 {
    frontend(items, name)["connected_clients"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn agents_behind_haproxy_spread_and_move_off_a_killed_minion() -> Result<()> {
    let (deployment, mut minions) = cluster(2)?;
    let Some(balancer) = Haproxy::start(
        "load_balancer::agents_behind_haproxy_spread_and_move_off_a_killed_minion",
        &backends(&deployment, &minions),
    )?
    else {
        return Ok(());
    };
    balancer.wait_servers(&["master", "minion1", "minion2"], SETTLE)?;
    // The agents know only the balancer.
    let config = deployment.client_config_for("lb.client.config.toml", &[balancer.port], None)?;
    let clients = 90;
    let report = deployment.path().join("lb-report.json");
    let _fleet = common::spawn_loadgen(&config, clients, 600, &report, &[])?;
    let ids = deployment.wait_connected(clients, Duration::from_secs(120))?;
    assert_eq!(ids.len(), clients);

    let names = [
        format!("127.0.0.1:{}", deployment.agent_port),
        minions[0].name.clone(),
        minions[1].name.clone(),
    ];
    let items = wait_frontends(
        &deployment,
        |items| names.iter().map(|n| connected(items, n)).sum::<u64>() == clients as u64,
        "every agent counted on one frontend",
    )?;
    for name in &names {
        assert!(
            connected(&items, name) > 0,
            "the balancer spread agents over every frontend: {items:?}"
        );
    }
    task_every_agent(&deployment, &ids)?;

    // kill -9 of a minion: its agents lose their connections through the balancer and
    // dial it again; its health check fails and it takes no more.
    let victim = minions[0].name.clone();
    assert!(connected(&items, &victim) > 0);
    minions[0].kill()?;
    balancer.wait_servers(&["master", "minion2"], SETTLE)?;
    let items = wait_frontends(
        &deployment,
        |items| {
            frontend(items, &victim)["up"] == false
                && connected(items, &names[0]) + connected(items, &names[2]) == clients as u64
        },
        "the killed minion's agents on the other two",
    )?;
    assert_eq!(connected(&items, &victim), 0, "{items:?}");
    let ids = deployment.wait_connected(clients, SETTLE)?;
    assert_eq!(ids.len(), clients, "no agent lost");
    task_every_agent(&deployment, &ids)?;
    let states = balancer.server_states()?;
    assert_ne!(states["minion1"], "UP", "{states:?}");
    Ok(())
}

#[test]
fn health_checks_answer_anyone_and_reveal_nothing() -> Result<()> {
    let (deployment, minions) = cluster(1)?;
    let ports = [
        ("master", deployment.api()),
        ("minion", minions[0].metrics_api(&deployment)),
    ];
    for (who, api) in ports {
        let anyone = api.without_auth();
        assert_eq!(anyone.get_text("/healthz")?, (200, "ok\n".into()), "{who}");
        assert_eq!(
            anyone.get_text("/readyz")?,
            (200, "ready\n".into()),
            "{who}"
        );
        // A query changes nothing: no verbose form with details.
        assert_eq!(
            anyone.get_text("/readyz?verbose=1")?,
            (200, "ready\n".into()),
            "{who}"
        );
        // Only GET/HEAD of exactly these paths skip authentication.
        for (method, path) in [
            ("POST", "/healthz"),
            ("GET", "/healthz/details"),
            ("GET", "/metrics"),
        ] {
            let (status, body) = anyone.request(method, path, Some(Vec::new()))?;
            assert_eq!(
                status,
                401,
                "{who}: {method} {path} still needs a user: {}",
                String::from_utf8_lossy(&body)
            );
        }
        // With credentials the probes answer the same, and /metrics counted them.
        assert_eq!(api.get_text("/healthz")?, (200, "ok\n".into()), "{who}");
        assert!(
            api.metric("packhunt_health_ready_answered_total")? >= 2,
            "{who}"
        );
        assert!(
            api.metric("packhunt_health_alive_answered_total")? >= 2,
            "{who}"
        );
    }
    let (status, _) = deployment.api().without_auth().get("/api/v1/clients")?;
    assert_eq!(status, 401, "the API still needs a user");
    Ok(())
}

#[test]
fn a_draining_frontend_is_not_ready_and_the_balancer_moves_agents_off_it() -> Result<()> {
    let (deployment, minions) = cluster(1)?;
    let Some(balancer) = Haproxy::start(
        "load_balancer::a_draining_frontend_is_not_ready_and_the_balancer_moves_agents_off_it",
        &backends(&deployment, &minions),
    )?
    else {
        return Ok(());
    };
    balancer.wait_servers(&["master", "minion1"], SETTLE)?;
    let config = deployment.client_config_for("lb.client.config.toml", &[balancer.port], None)?;
    let clients = 40;
    let report = deployment.path().join("lb-report.json");
    let _fleet = common::spawn_loadgen(&config, clients, 600, &report, &[])?;
    let master = format!("127.0.0.1:{}", deployment.agent_port);
    let minion = minions[0].name.clone();
    wait_frontends(
        &deployment,
        |items| {
            connected(items, &minion) > 0
                && connected(items, &master) + connected(items, &minion) == clients as u64
        },
        "agents on both frontends",
    )?;

    // Probe /readyz on the minion from before SIGTERM until it has exited.
    let probe = minions[0]
        .metrics_api(&deployment)
        .without_auth()
        .with_request_timeout(SETTLE);
    assert_eq!(probe.get_text("/readyz")?.0, 200, "ready before the signal");
    let stop_probing = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = stop_probing.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push(probe.get_text("/readyz").map(|(status, _)| status).ok());
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    let pid = process_of(&minion)?;
    // SAFETY: kill takes plain integers; the pid is this test's child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let exit = wait_exit(pid)?;
    stop_probing.store(true, Ordering::Relaxed);
    let seen = prober.join().expect("the prober does not panic");
    assert!(
        libc::WIFEXITED(exit) && libc::WEXITSTATUS(exit) == 0,
        "the minion drained and exited cleanly: status {exit:#x}"
    );
    // Ready until the signal, then never again: 503 while it still answers, then nothing.
    let first_not_ready = seen
        .iter()
        .position(|s| *s != Some(200))
        .expect("the probe saw the minion stop being ready");
    assert!(
        seen[first_not_ready..]
            .iter()
            .all(|s| matches!(s, None | Some(503))),
        "a draining frontend answers 503 or nothing, never 200 again: {seen:?}"
    );
    balancer.wait_servers(&["master"], SETTLE)?;
    // Every agent dialled the balancer again and is on the master now.
    let items = wait_frontends(
        &deployment,
        |items| {
            frontend(items, &minion)["up"] == false && connected(items, &master) == clients as u64
        },
        "every agent on the master",
    )?;
    assert_eq!(connected(&items, &minion), 0, "{items:?}");
    Ok(())
}

/// The pid of the running minion `name` (a child of this test): its command line names
/// it with `--node`.
fn process_of(name: &str) -> Result<i32> {
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc")? {
        let path = entry?.path();
        let Some(pid) = path
            .file_name()
            .and_then(|n| n.to_str()?.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_it = args
            .windows(2)
            .any(|w| w[0] == b"--node" && w[1] == name.as_bytes());
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // stat: "pid (comm) state ppid ..."; comm may hold spaces, so count from the ')'.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if is_it && parent == Some(me.as_str()) {
            return Ok(pid);
        }
    }
    anyhow::bail!("no process of minion {name} among this test's children")
}

/// Waits (with a generous limit) for child `pid` to exit and reaps it: its wait status.
fn wait_exit(pid: i32) -> Result<i32> {
    common::wait_until(
        "the frontend exited",
        Duration::from_secs(120),
        || {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid pointer; WNOHANG never blocks.
            let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            anyhow::ensure!(reaped >= 0, "waitpid: {}", std::io::Error::last_os_error());
            Ok((reaped == pid).then_some(status))
        },
        |status| status.is_some(),
    )
    .map(|status| status.expect("waited for Some"))
}
