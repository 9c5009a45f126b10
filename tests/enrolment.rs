//! Goal: with an enrolment secret set, an agent without it is refused (403, counted) and
//! never registered, while the real agent and loadgen, configured with it, connect and
//! work. Method: a deployment whose server and client configs carry a secret; a raw
//! agent through the comms client without it; `packhunt client` and loadgen with it.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{spawn_loadgen, wait_until, Deployment};

const SECRET: &str = "enrol-0123456789abcdefghij";

#[test]
fn agents_without_the_secret_are_refused_and_those_with_it_work() -> Result<()> {
    let mut deployment = Deployment::generate_with(|text| {
        *text = text.replacen(
            "[frontend]\n",
            &format!("[frontend]\nenrolment_secret = \"{SECRET}\"\n"),
            1,
        );
    })?;
    let without = deployment.client_config_with("without.client.config.toml", |_| {})?;
    let client_config = deployment.client_config();
    let mut file = packhunt::config::ClientFile::load(&client_config)?;
    file.client.enrolment_secret = Some(SECRET.into());
    file.client.writeback_path = "client.writeback.toml".into();
    packhunt::config::write_toml(&client_config, &file)?;
    let wrong = deployment.client_config_with("wrong.client.config.toml", |c| {
        c.client.enrolment_secret = Some("enrol-0123456789abcdefghiJ".into());
    })?;
    deployment.start_frontend()?;

    for config in [&without, &wrong] {
        let refused = common::RawAgent::connect_with(config);
        let error = format!("{:#}", refused.err().expect("refused"));
        assert!(error.contains("403"), "{error}");
    }
    assert!(deployment.metric("packhunt_enrolment_refused_total")? >= 2);
    let (_, clients) = deployment.api().get("/api/v1/clients")?;
    assert_eq!(
        clients["total"], 0,
        "a refused agent is not registered: {clients}"
    );

    let _agent = common::start_agent(&deployment)?;
    let client = deployment.wait_connected(1, Duration::from_secs(20))?[0].clone();
    let flow = deployment
        .api()
        .collect(&client, &["Generic.Client.Info"])?;
    let statuses = deployment.wait_flows(&[(client, flow)], Duration::from_secs(60))?;
    assert_eq!(statuses[0]["state"], "finished", "{statuses:?}");

    let report = deployment.path().join("loadgen.json");
    let _loadgen = spawn_loadgen(&client_config, 3, 60, &report, &[])?;
    deployment.wait_connected(4, Duration::from_secs(30))?;
    let refused = deployment.metric("packhunt_enrolment_refused_total")?;
    wait_until(
        "no refusal of the configured agents",
        Duration::from_secs(2),
        || deployment.metric("packhunt_enrolment_refused_total"),
        |now| *now == refused,
    )?;
    Ok(())
}
