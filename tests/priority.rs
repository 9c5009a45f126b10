//! Goal: with `gui.priority = "executor"` (the default) the GUI/API thread is favoured by
//! the kernel over the agent shards; with "shared" there is no such thread. Method: read
//! the frontend's threads' names and nice values from /proc.

mod common;

use common::Deployment;

/// (thread name, nice) of every thread of `pid`.
fn threads(pid: u32) -> anyhow::Result<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path();
        let name = std::fs::read_to_string(path.join("comm"))?.trim().to_string();
        let stat = std::fs::read_to_string(path.join("stat"))?;
        // Fields after the parenthesised name: state is field 3, nice is field 19.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let nice: i64 = after.split_whitespace().nth(16).unwrap().parse()?;
        out.push((name, nice));
    }
    Ok(out)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn the_gui_thread_is_niced_above_the_agent_shards() -> anyhow::Result<()> {
    let deployment = Deployment::start()?;
    let threads = threads(deployment.frontend_pid().expect("frontend runs"))?;
    // Whatever nice the test runs at, the frontend's threads start there.
    let base = threads[0].1;
    let favoured: Vec<_> = threads.iter().filter(|(_, nice)| *nice != base).collect();
    assert!(threads.iter().any(|(n, _)| n.starts_with("agent-shard")), "{threads:?}");
    assert!(threads.iter().filter(|(n, _)| n.starts_with("agent-shard")).all(|(_, nice)| *nice == base), "{threads:?}");
    if is_root() {
        // Only the executor thread, not its blocking pool (which shares its name).
        assert_eq!(favoured.len(), 1, "{threads:?}");
        assert!(favoured[0].0.starts_with("priority") && favoured[0].1 == -10, "{threads:?}");
    } else {
        // Raising priority needs CAP_SYS_NICE; without it the frontend runs unfavoured.
        assert!(favoured.is_empty(), "{threads:?}");
    }
    Ok(())
}

#[test]
fn the_shared_baseline_has_no_priority_thread() -> anyhow::Result<()> {
    let deployment = Deployment::start_with(|text| *text = text.replace("priority = \"executor\"", "priority = \"shared\""))?;
    let threads = threads(deployment.frontend_pid().expect("frontend runs"))?;
    let base = threads[0].1;
    assert!(threads.iter().all(|(n, _)| !n.starts_with("priority")), "{threads:?}");
    assert!(threads.iter().all(|(_, nice)| *nice == base), "{threads:?}");
    Ok(())
}
