//! Goal: the master sends a notification only to the frontend that holds its agent (to no
//! minion for its own agents), falls back to every minion when presence cannot place the
//! agent, and loses no task while agents move between frontends or a minion restarts.
//! Method: a real master and two minions on loopback sharing one datastore folder;
//! test-driven agents pinned to one frontend each (and a loadgen fleet spread over all
//! three), tasked through the master's API; the master's counters
//! (`packhunt_replication_messages_sent_total`, `packhunt_fleet_notices_*`) read before and
//! after each step, and every task read off the agents' streams.

mod common;

use std::time::Duration;

use anyhow::{bail, Result};
use common::{
    cluster, frontend, run_fleet, wait_frontend_of, wait_frontends, wait_until, Deployment,
    RawAgent,
};

const NOTIFICATIONS_TO_ONE: &str =
    "packhunt_replication_messages_sent_total{kind=\"notification\",to=\"one\"}";
const NOTIFICATIONS_TO_ALL: &str =
    "packhunt_replication_messages_sent_total{kind=\"notification\",to=\"all\"}";
const ROUTED_HERE: &str = "packhunt_fleet_notices_routed_total{to=\"this_frontend\"}";
const ROUTED_ONE: &str = "packhunt_fleet_notices_routed_total{to=\"one_minion\"}";
const ROUTED_ALL: &str = "packhunt_fleet_notices_routed_total{to=\"all_minions\"}";
const HOLDER_UNKNOWN: &str = "packhunt_fleet_notices_broadcast_total{reason=\"holder_unknown\"}";
const RESENT: &str = "packhunt_fleet_notices_resent_total";

/// The master's counters this test reads, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    to_one: u64,
    to_all: u64,
    here: u64,
    routed_one: u64,
    routed_all: u64,
}

impl Counts {
    fn read(deployment: &Deployment) -> Result<Self> {
        Ok(Self {
            to_one: deployment.metric(NOTIFICATIONS_TO_ONE)?,
            to_all: deployment.metric(NOTIFICATIONS_TO_ALL)?,
            here: deployment.metric(ROUTED_HERE)?,
            routed_one: deployment.metric(ROUTED_ONE)?,
            routed_all: deployment.metric(ROUTED_ALL)?,
        })
    }

    fn since(self, before: Self) -> Self {
        Self {
            to_one: self.to_one - before.to_one,
            to_all: self.to_all - before.to_all,
            here: self.here - before.here,
            routed_one: self.routed_one - before.routed_one,
            routed_all: self.routed_all - before.routed_all,
        }
    }
}

/// Reads the agent's stream until the task for `flow` arrives; other tasks (ones still
/// queued from before, pushed again at a connect) and event tables are passed over.
fn expect_flow(agent: &mut RawAgent, flow: &str) -> Result<()> {
    expect_flows(agent, &[flow])
}

/// Reads the agent's stream until a task for each of `flows` has arrived, in any order: a
/// notification and the queue read at a connect race, so a task created just after the
/// connect may come before one queued earlier. Other tasks and event tables are passed
/// over.
fn expect_flows(agent: &mut RawAgent, flows: &[&str]) -> Result<()> {
    use packhunt::protocol::pb::server_message::Kind;
    let mut missing: Vec<&str> = flows.to_vec();
    for _ in 0..64 {
        if let Kind::Task(task) = agent.next_message()? {
            missing.retain(|flow| *flow != task.flow_id);
            if missing.is_empty() {
                return Ok(());
            }
        }
    }
    bail!("no task for {missing:?} among 64 messages")
}

/// A client config whose only URL is the frontend at `port`.
fn pinned(deployment: &Deployment, label: &str, port: u16) -> Result<std::path::PathBuf> {
    deployment.client_config_for(&format!("{label}.client.config.toml"), &[port], None)
}

#[test]
fn each_notification_goes_only_to_the_frontend_that_holds_its_agent() -> Result<()> {
    let (deployment, minions) = cluster(2)?;
    let master = format!("127.0.0.1:{}", deployment.agent_port);
    let places = [
        (master.as_str(), deployment.agent_port),
        (minions[0].name.as_str(), minions[0].agent_port),
        (minions[1].name.as_str(), minions[1].agent_port),
    ];
    let mut agents = Vec::new();
    for (i, (name, port)) in places.iter().enumerate() {
        let config = pinned(&deployment, &format!("frontend-{i}"), *port)?;
        for _ in 0..2 {
            agents.push((*name, RawAgent::connect_with(&config)?));
        }
    }
    deployment.wait_connected(agents.len(), Duration::from_secs(30))?;
    for (name, agent) in &agents {
        wait_frontend_of(&deployment, &agent.client_id, name)?;
    }

    let before = Counts::read(&deployment)?;
    for (_, agent) in &mut agents {
        let flow = deployment
            .api()
            .collect(&agent.client_id, &["Linux.Sys.Users"])?;
        expect_flow(agent, &flow)?;
    }
    let sent = Counts::read(&deployment)?.since(before);
    assert_eq!(
        sent,
        Counts {
            to_one: 4,
            to_all: 0,
            here: 2,
            routed_one: 4,
            routed_all: 0,
        },
        "one message per minion's agent, none for the master's own"
    );
    // Each minion pushed only its own agents' tasks, and the master its own.
    for minion in &minions {
        assert_eq!(
            minion.metric(&deployment, "packhunt_tasks_pushed_total")?,
            2
        );
    }
    assert_eq!(deployment.metric("packhunt_tasks_pushed_total")?, 2);
    assert!(
        deployment.metric("packhunt_replication_messages_sent_total{kind=\"hello\",to=\"one\"}")?
            >= 2,
        "each link counted its Hello"
    );
    Ok(())
}

#[test]
fn a_moving_agent_and_a_restarted_minion_are_still_tasked() -> Result<()> {
    let (deployment, mut minions) = cluster(2)?;
    let to_first = pinned(&deployment, "first", minions[0].agent_port)?;
    let to_second = pinned(&deployment, "second", minions[1].agent_port)?;
    let (first, second) = (minions[0].name.clone(), minions[1].name.clone());
    let mut agent = RawAgent::connect_with(&to_first)?;
    let (client, identity) = (agent.client_id.clone(), agent.identity.clone());
    wait_frontend_of(&deployment, &client, &first)?;
    let api = deployment.api();

    // A task the agent holds but has not started goes with it: when the master hears it
    // is on the other minion, the task (still queued) is sent there again.
    let resent = deployment.metric(RESENT)?;
    let held = api.collect(&client, &["Linux.Sys.Users"])?;
    expect_flow(&mut agent, &held)?;
    drop(agent);
    let mut agent = RawAgent::connect_as(&to_second, identity.clone())?;
    // Tasked at once, before the master may have heard of the move.
    let during = api.collect(&client, &["Linux.Sys.Users"])?;
    expect_flows(&mut agent, &[&held, &during])?;
    wait_frontend_of(&deployment, &client, &second)?;
    wait_until(
        "the held task sent again to where the agent went",
        Duration::from_secs(30),
        || deployment.metric(RESENT),
        |now| *now > resent,
    )?;
    let before = Counts::read(&deployment)?;
    let after_move = api.collect(&client, &["Linux.Sys.Users"])?;
    expect_flow(&mut agent, &after_move)?;
    let sent = Counts::read(&deployment)?.since(before);
    assert_eq!((sent.routed_one, sent.routed_all), (1, 0), "{sent:?}");

    // Between frontends (presence places it nowhere): every minion is told, and the task
    // is read from the queue where the agent lands.
    drop(agent);
    wait_until(
        "the master sees the agent leave",
        Duration::from_secs(30),
        || common::frontend_of(&deployment, &client),
        |on| on.is_none(),
    )?;
    let (before, unknown) = (
        Counts::read(&deployment)?,
        deployment.metric(HOLDER_UNKNOWN)?,
    );
    let away = api.collect(&client, &["Linux.Sys.Users"])?;
    let sent = Counts::read(&deployment)?.since(before);
    assert_eq!((sent.routed_all, sent.routed_one), (1, 0), "{sent:?}");
    assert_eq!(deployment.metric(HOLDER_UNKNOWN)?, unknown + 1);
    wait_until(
        "the notification queued on both links",
        Duration::from_secs(10),
        || Ok(Counts::read(&deployment)?.since(before).to_all),
        |copies| *copies == 2,
    )?;
    let mut agent = RawAgent::connect_as(&to_second, identity.clone())?;
    expect_flow(&mut agent, &away)?;
    wait_frontend_of(&deployment, &client, &second)?;

    // The minion holding it is killed and restarted: the agent comes back to it and is
    // tasked through it again, one message.
    minions[1].kill()?;
    drop(agent);
    wait_frontends(
        &deployment,
        |items| frontend(items, &second)["up"] == false,
        "the killed minion shown down",
    )?;
    deployment.start_minion(&mut minions[1])?;
    wait_frontends(
        &deployment,
        |items| items.iter().all(|f| f["up"] == true),
        "the restarted minion relinked",
    )?;
    let mut agent = RawAgent::connect_as(&to_second, identity)?;
    wait_frontend_of(&deployment, &client, &second)?;
    let before = Counts::read(&deployment)?;
    let restarted = api.collect(&client, &["Linux.Sys.Users"])?;
    expect_flow(&mut agent, &restarted)?;
    let sent = Counts::read(&deployment)?.since(before);
    assert_eq!((sent.routed_one, sent.routed_all), (1, 0), "{sent:?}");
    assert_eq!(
        minions[1].metric(&deployment, "packhunt_replication_links_up")?,
        1
    );
    Ok(())
}

#[test]
fn a_fleet_over_three_frontends_gets_every_task_with_one_message_each() -> Result<()> {
    let (deployment, minions) = cluster(2)?;
    let clients = 60;
    let before = Counts::read(&deployment)?;
    // The generated client config lists all three frontends; each agent picks one.
    run_fleet(
        &deployment,
        clients,
        &deployment.client_config(),
        &[],
        &["Generic.Client.Info"],
        |_| Ok(()),
    )?;
    let sent = Counts::read(&deployment)?.since(before);
    assert_eq!(
        sent.here + sent.routed_one,
        clients as u64,
        "every notification placed: {sent:?}"
    );
    assert_eq!((sent.routed_all, sent.to_all), (0, 0), "{sent:?}");
    assert_eq!(sent.to_one, sent.routed_one, "{sent:?}");
    let on_minions: u64 = minions
        .iter()
        .map(|m| m.metric(&deployment, "packhunt_tasks_pushed_total"))
        .sum::<Result<u64>>()?;
    assert_eq!(on_minions, sent.routed_one, "{sent:?}");
    assert_eq!(deployment.metric("packhunt_tasks_pushed_total")?, sent.here);
    Ok(())
}
