//! Goal: `packhunt quickstart` on an empty folder generates a deployment, starts a
//! frontend whose API answers with the printed admin password, and starts local agents
//! that connect. Method: run the binary with free ports and poll the API.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Proc;

#[test]
fn quickstart_generates_runs_and_serves_agents() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("packhunt-data");
    let (agent_port, gui_port) = (common::free_port(), common::free_port());
    let api_port = common::free_port();
    let mut child = Proc(
        Command::new(common::packhunt_bin())
            .args([
                "quickstart",
                "--clients",
                "2",
                "--frontend-port",
                &agent_port.to_string(),
                "--gui-port",
                &gui_port.to_string(),
                "--api-port",
                &api_port.to_string(),
                "--dir",
            ])
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("ready"));
    // The master serves the gRPC API on the port asked for (docs/security/grpc-api.md).
    let grpc_api = format!("gRPC API on 127.0.0.1:{api_port}");
    assert!(
        ready.as_ref().is_some_and(|line| line.contains(&grpc_api)),
        "{ready:?}"
    );
    let ready = ready.is_some();
    assert!(ready, "quickstart printed its ready line");
    // Keep reading: the agents share quickstart's stdout.
    std::thread::spawn(move || lines.for_each(drop));
    // The password file and the CA key are their owner's only.
    use std::os::unix::fs::PermissionsExt;
    for secret in ["admin-password.txt", "ca.key.pem"] {
        let mode = std::fs::metadata(data.join(secret))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{secret}");
    }
    let password = std::fs::read_to_string(data.join("admin-password.txt"))?
        .trim()
        .to_string();
    let client: packhunt::config::ClientFile =
        toml::from_str(&std::fs::read_to_string(data.join("client.config.toml"))?)?;
    assert_eq!(
        client.client.server_urls,
        vec![format!("https://127.0.0.1:{agent_port}/")]
    );
    let deployment_api = common::Api::for_port(gui_port, &client.client.ca_certificate)
        .with_auth("admin", &password);
    deployment_api.wait_frontends(
        "two local agents connected",
        Duration::from_secs(30),
        |items| items.first().is_some_and(|f| f["connected_clients"] == 2),
    )?;
    Ok(())
}
