//! Goal: with `gui.priority = "executor"` (the default) the GUI/API thread is favoured by
//! the kernel over the agent shards; with "realtime" it runs under SCHED_RR; with "shared"
//! there is no such thread (and the shards' file work is not niced either). The agent
//! shards' blocking pools run at `frontend.file_work_nice`. Method: read the frontend's
//! threads' names, nice values and scheduling policies from /proc.

mod common;

use common::Deployment;

/// (thread name, nice) of every thread of `pid`.
fn threads(pid: u32) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(scheduling(pid)?
        .into_iter()
        .map(|t| (t.name, t.nice))
        .collect())
}

#[derive(Debug)]
struct Thread {
    name: String,
    nice: i64,
    rt_priority: i64,
    policy: i64,
}

fn scheduling(pid: u32) -> anyhow::Result<Vec<Thread>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path();
        let name = std::fs::read_to_string(path.join("comm"))?
            .trim()
            .to_string();
        let stat = std::fs::read_to_string(path.join("stat"))?;
        // Fields after the parenthesised name, counted from state (field 3): nice is field
        // 19, rt_priority 40, policy 41 (proc(5)).
        let after: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        let field = |n: usize| after[n - 3].parse::<i64>();
        out.push(Thread {
            name,
            nice: field(19)?,
            rt_priority: field(40)?,
            policy: field(41)?,
        });
    }
    Ok(out)
}

#[test]
fn the_gui_thread_is_niced_above_the_agent_shards() -> anyhow::Result<()> {
    let deployment = Deployment::start()?;
    let threads = threads(deployment.frontend_pid().expect("frontend runs"))?;
    // Whatever nice the test runs at, the frontend's threads start there.
    let base = threads[0].1;
    let favoured: Vec<_> = threads.iter().filter(|(_, nice)| *nice < base).collect();
    assert!(
        threads.iter().any(|(n, _)| n.starts_with("agent-shard")),
        "{threads:?}"
    );
    // Each agent shard: its executor thread at the base, its blocking pool (which shares
    // its name: the shard's file work) at `frontend.file_work_nice` (an absolute value;
    // raising one's nice needs no privilege).
    let mut shards: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
    for (name, nice) in threads.iter().filter(|(n, _)| n.starts_with("agent-shard")) {
        shards.entry(name).or_default().push(*nice);
    }
    let file_work = i64::from(packhunt::limits::DEFAULT_FILE_WORK_NICE).max(base);
    for (name, nices) in &shards {
        assert_eq!(
            nices.iter().filter(|n| **n == base).count(),
            1,
            "{name}: one executor thread at the base: {threads:?}"
        );
        assert!(
            nices.len() > 1 && nices.iter().all(|n| *n == base || *n == file_work),
            "{name}: its pool at {file_work}: {threads:?}"
        );
    }
    if common::is_root() {
        // The executor thread and its blocking pool (which shares its name: the hub's file
        // work, hunt recruits' writes among it), and nothing else.
        assert!(favoured.len() > 1, "the pool too: {threads:?}");
        assert!(
            favoured
                .iter()
                .all(|(name, nice)| name.starts_with("priority") && *nice == -10),
            "{threads:?}"
        );
        assert_eq!(
            favoured.len(),
            threads
                .iter()
                .filter(|(n, _)| n.starts_with("priority"))
                .count(),
            "{threads:?}"
        );
    } else {
        // Raising priority needs CAP_SYS_NICE; without it the frontend runs unfavoured.
        assert!(favoured.is_empty(), "{threads:?}");
        common::skip(
            "priority::the_gui_thread_is_niced_above_the_agent_shards (the favoured thread)",
            "root (CAP_SYS_NICE) to renice the GUI/API thread",
        );
    }
    Ok(())
}

#[test]
fn the_shared_baseline_has_no_priority_thread() -> anyhow::Result<()> {
    let deployment = Deployment::start_with(|text| {
        *text = text.replace("priority = \"executor\"", "priority = \"shared\"")
    })?;
    let threads = threads(deployment.frontend_pid().expect("frontend runs"))?;
    let base = threads[0].1;
    assert!(
        threads.iter().all(|(n, _)| !n.starts_with("priority")),
        "{threads:?}"
    );
    // Everything scheduled alike: the shards' file work too.
    assert!(threads.iter().all(|(_, nice)| *nice == base), "{threads:?}");
    Ok(())
}

#[test]
fn the_realtime_gui_thread_runs_round_robin_and_the_shards_do_not() -> anyhow::Result<()> {
    let deployment = Deployment::start_with(|text| {
        *text = text.replace("priority = \"executor\"", "priority = \"realtime\"")
    })?;
    let threads = scheduling(deployment.frontend_pid().expect("frontend runs"))?;
    let realtime: Vec<&Thread> = threads
        .iter()
        .filter(|t| t.policy == libc::SCHED_RR as i64)
        .collect();
    assert!(
        threads.iter().any(|t| t.name.starts_with("agent-shard")),
        "{threads:?}"
    );
    if common::is_root() {
        // Only the executor thread; its blocking pool (which shares its name) does file
        // work that may take long, so it is niced, not real-time.
        assert_eq!(realtime.len(), 1, "{threads:?}");
        assert!(
            realtime[0].name.starts_with("priority") && realtime[0].rt_priority == 1,
            "{threads:?}"
        );
        let pool: Vec<&Thread> = threads
            .iter()
            .filter(|t| t.name.starts_with("priority") && t.policy != libc::SCHED_RR as i64)
            .collect();
        assert!(
            !pool.is_empty() && pool.iter().all(|t| t.nice == -10),
            "{threads:?}"
        );
    } else {
        assert!(realtime.is_empty(), "{threads:?}");
        common::skip(
            "priority::the_realtime_gui_thread_runs_round_robin_and_the_shards_do_not \
             (the SCHED_RR thread)",
            "root (CAP_SYS_NICE) for SCHED_RR",
        );
    }
    assert!(
        threads
            .iter()
            .filter(|t| t.policy != libc::SCHED_RR as i64)
            .all(|t| t.policy == libc::SCHED_OTHER as i64),
        "{threads:?}"
    );
    // It still serves: the deployment's API answers.
    let (status, frontends) = deployment.api().get("/api/v1/frontends")?;
    assert_eq!(status, 200, "{frontends}");
    Ok(())
}
