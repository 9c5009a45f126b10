//! Goal: SIGTERM drains a frontend. The agents connected to it are told to move (their
//! task stream ends, the connection says GOAWAY) and are on the next frontend while the
//! draining one still finishes an upload in flight, without a failed connect on the way
//! (they went straight to the next URL); the upload is answered and its rows land once;
//! the process exits 0 without waiting for its drain deadline. Method: a master and a
//! minion on loopback; loadgen agents whose client config lists the minion first and the
//! master second, spread over both; a raw agent on the minion holding an upload whose body
//! is half sent when the minion gets SIGTERM, finished once the minion says it drains.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use common::{frontend, set_keys, wait_until, RawAgent};
use packhunt::protocol::framing::{self, FrameDecoder};
use packhunt::protocol::pb;
use serde_json::Value;

/// Far beyond what the test takes: the minion must exit once its connections are done,
/// not at the deadline.
const DRAIN_TIMEOUT_MS: &str = "60000";
/// How long the test waits for the minion to exit once its last upload is answered.
const EXIT_WAIT: Duration = Duration::from_secs(30);
const AGENTS: usize = 40;
const ARTIFACT: &str = "Generic.Client.Info";

/// An upload whose body is sent half at once, then a byte every `TRICKLE_EVERY` (well
/// inside the server's 5 s idle limit between DATA frames, however long the test's waits
/// take on a busy machine), and the rest when told, on its own connection.
struct HalfSentUpload {
    rt: tokio::runtime::Runtime,
    finish: tokio::sync::oneshot::Sender<()>,
    sent: tokio::task::JoinHandle<Result<(), h2::Error>>,
    response: h2::client::ResponseFuture,
}

const TRICKLE_EVERY: Duration = Duration::from_secs(1);

impl HalfSentUpload {
    /// Opens the upload of `upload` to `port` and sends the first half of its body.
    fn start(port: u16, tls: Arc<rustls::ClientConfig>, upload: &pb::Upload) -> Result<Self> {
        // Its own worker thread keeps the connection's I/O going between the halves.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let body = framing::encode(upload);
        let (finish, sent, response) = rt.block_on(async {
            let tls = common::agent_tls_connect(port, tls).await?;
            let (send, conn) = h2::client::handshake(tls).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let request = http::Request::post(format!(
                "https://127.0.0.1:{port}{}",
                packhunt::protocol::UPLOAD_PATH
            ))
            .header("content-type", packhunt::protocol::CONTENT_TYPE)
            .header("content-length", body.len())
            .body(())?;
            let (response, mut stream) = send.ready().await?.send_request(request, false)?;
            let mut first = body.clone();
            let mut rest = first.split_off(body.len() / 2);
            stream.send_data(first, false)?;
            let (finish, mut finish_rx) = tokio::sync::oneshot::channel::<()>();
            let sent = tokio::spawn(async move {
                // One byte at a time while told to wait; one is kept for the end of the
                // stream.
                let mut told = false;
                while !told && rest.len() > 1 {
                    tokio::select! {
                        _ = &mut finish_rx => told = true,
                        _ = tokio::time::sleep(TRICKLE_EVERY) => {
                            stream.send_data(rest.split_to(1), false)?;
                        }
                    }
                }
                if !told {
                    let _ = finish_rx.await;
                }
                stream.send_data(rest, true)
            });
            anyhow::Ok((finish, sent, response))
        })?;
        Ok(Self {
            rt,
            finish,
            sent,
            response,
        })
    }

    /// Sends the rest of the body; returns the status and the ack.
    fn finish(self) -> Result<(u16, pb::UploadAck)> {
        let _ = self.finish.send(());
        self.rt.block_on(async {
            self.sent.await.context("the sending task")??;
            let response = tokio::time::timeout(Duration::from_secs(30), self.response)
                .await
                .context("no answer to the upload")??;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let mut decoder = FrameDecoder::new(64 * 1024);
            while let Some(chunk) = body.data().await {
                decoder.extend(&chunk?);
            }
            let ack = decoder
                .next_message::<pb::UploadAck>()?
                .context("no ack in the answer")?;
            Ok((status, ack))
        })
    }
}

fn batch(flow: &str, rows: u32) -> pb::Upload {
    let jsonl: String = (0..rows).map(|i| format!("{{\"row\":{i}}}\n")).collect();
    pb::Upload {
        kind: Some(pb::upload::Kind::Result(pb::ResultBatch {
            flow_id: flow.into(),
            artifact: ARTIFACT.into(),
            seq: 0,
            jsonl: Bytes::from(jsonl),
            row_count: rows,
        })),
    }
}

#[test]
fn sigterm_moves_agents_at_once_and_finishes_the_upload_in_flight() -> Result<()> {
    let (deployment, mut minions) = common::cluster_with(1, |t| {
        set_keys(
            t,
            &[
                ("drain_timeout_ms", DRAIN_TIMEOUT_MS),
                ("max_connections_per_second", "100000"),
            ],
        )
    })?;
    let minion = &mut minions[0];
    let api = deployment.api();
    // Loadgen agents start on a random URL of the two: some on each frontend.
    let both = deployment.client_config_for(
        "both.client.config.toml",
        &[minion.agent_port, deployment.agent_port],
        None,
    )?;
    let report = deployment.path().join("report.json");
    let mut loadgen = common::spawn_loadgen(&both, AGENTS, 300, &report, &[])?;
    deployment.wait_connected(AGENTS, Duration::from_secs(60))?;
    let on_minion = wait_until(
        "loadgen agents on the minion",
        Duration::from_secs(30),
        || {
            let (_, body) = api.get("/api/v1/frontends")?;
            let items = body["items"].as_array().context("items")?.clone();
            anyhow::Ok(frontend(&items, &minion.name)["connected_clients"].as_u64())
        },
        |n| n.is_some_and(|n| n > 0),
    )?
    .unwrap_or(0);

    // A raw agent on the minion with a flow, and an upload for it half sent.
    let only_minion =
        deployment.client_config_for("minion.client.config.toml", &[minion.agent_port], None)?;
    let mut raw = RawAgent::connect_with(&only_minion)?;
    let flow = raw.tasked(&deployment, &[ARTIFACT])?;
    let client = raw.client_id.clone();
    let upload = HalfSentUpload::start(minion.agent_port, raw.tls.clone(), &batch(&flow, 7))?;
    // The upload is in flight once the minion holds it: on a busy machine the client has
    // sent its half before the minion has accepted the connection, and a SIGTERM then
    // finds nothing to wait for.
    let metrics = minion.metrics_api(&deployment);
    wait_until(
        "the minion holding the upload",
        Duration::from_secs(10),
        || metrics.metric("packhunt_uploads_in_flight"),
        |v| *v == 1,
    )?;

    minion.terminate()?;
    wait_until(
        "the minion draining",
        Duration::from_secs(10),
        || metrics.metric("packhunt_draining"),
        |v| *v == 1,
    )?;
    // Told to move: the raw agent's task stream ends (cleanly, by the server).
    let ended = raw
        .rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), raw.tasks.next()).await });
    assert!(
        matches!(ended, Ok(Ok(None))),
        "the task stream ended by the server, got {ended:?}"
    );
    drop(raw);
    // Every loadgen agent is on the master, and the master heard that the raw agent left
    // the minion, while the minion still holds the upload.
    let master = deployment_name(&deployment);
    api.wait_frontends(
        "every loadgen agent on the master, none left on the minion",
        Duration::from_secs(20),
        |items| {
            frontend(items, &master)["connected_clients"] == AGENTS
                && frontend(items, &minion.name)["connected_clients"] == 0
        },
    )?;
    assert!(
        minion.is_running(),
        "the minion drains until its upload is done"
    );
    assert_eq!(metrics.metric("packhunt_drain_uploads_cut_total")?, 0);

    let (status, ack) = upload.finish()?;
    assert_eq!(status, 200, "the upload in flight is answered");
    assert_eq!(ack.status, pb::upload_ack::Status::Ok as i32, "{ack:?}");
    let exit = minion.wait_exit(EXIT_WAIT)?;
    assert!(exit.success(), "the drained minion exits 0: {exit}");

    let results = common::flow_results(&deployment.datastore(), &client, &flow, ARTIFACT);
    assert_eq!(common::count_lines(&results), 7, "the upload's rows, once");

    // Straight to the next URL: no agent failed a connect on its way to the master.
    stop_loadgen(&mut loadgen)?;
    let report: Value = serde_json::from_slice(&std::fs::read(&report)?)?;
    assert_eq!(report["errors"], 0, "no failed connect: {report}");
    assert!(
        report["reconnects"].as_u64() >= Some(on_minion),
        "each agent of the minion reconnected: {report}"
    );
    Ok(())
}

/// The master's name as `/api/v1/frontends` lists it.
fn deployment_name(deployment: &common::Deployment) -> String {
    format!("{}:{}", deployment.host, deployment.agent_port)
}

/// SIGTERM to loadgen, which then writes its report and exits.
fn stop_loadgen(loadgen: &mut common::Proc) -> Result<()> {
    // SAFETY: kill takes plain integers; the pid is our own child, not yet reaped.
    unsafe { libc::kill(loadgen.0.id() as i32, libc::SIGTERM) };
    let status = loadgen.0.wait()?;
    anyhow::ensure!(status.success(), "loadgen exited with {status}");
    Ok(())
}

// Goal: a master given SIGTERM while collections are being scheduled answers or cuts
// each call whole: it exits 0 with no flow half-written (every flow folder has its
// request and status, and no temporary file), and every collection it answered 200 is
// there. Method: the datastore on an sshfs mount (where a flow's documents take
// milliseconds, as on NFS: on a local disk the stop rarely falls inside one); four
// threads schedule collections on loadgen agents through the API without pause while the
// master gets SIGTERM.
#[test]
fn sigterm_lets_collections_being_scheduled_finish_whole() -> Result<()> {
    const SCHEDULERS: usize = 4;
    let test = "sigterm_lets_collections_being_scheduled_finish_whole";
    let mount_dir = tempfile::tempdir()?;
    let Some(mount) = common::sshfs::SshfsMount::new(test, &mount_dir.path().join("mount")) else {
        return Ok(());
    };
    let location = format!("\"{}\"", mount.path().display());
    let mut deployment = common::Deployment::start_with(|t| {
        set_keys(
            t,
            &[
                ("max_connections_per_second", "100000"),
                ("location", &location),
            ],
        )
    })?;
    let report = deployment.path().join("report.json");
    let _loadgen = common::spawn_loadgen(&deployment.client_config(), AGENTS, 300, &report, &[])?;
    let clients = deployment.wait_connected(AGENTS, Duration::from_secs(60))?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let schedulers: Vec<_> = (0..SCHEDULERS)
        .map(|k| {
            let (api, clients, stop) = (deployment.api(), clients.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut answered = Vec::new();
                for client in clients.iter().cycle().skip(k) {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    // Refused or cut once the master stops: only what it answered counts.
                    match api.collect(client, &[ARTIFACT]) {
                        Ok(flow) => answered.push((client.clone(), flow)),
                        Err(_) => break,
                    }
                }
                answered
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    deployment.terminate_frontend()?;
    let exit = deployment.wait_frontend_exit(EXIT_WAIT)?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(exit.success(), "the master exits 0: {exit}");
    let answered: Vec<(String, String)> = schedulers
        .into_iter()
        .flat_map(|t| t.join().expect("a scheduler thread"))
        .collect();
    assert!(
        !answered.is_empty(),
        "collections were scheduled before the stop"
    );

    let clients_dir = mount.path().join("clients");
    let mut problems = Vec::new();
    for client in std::fs::read_dir(&clients_dir)? {
        let client = client?;
        let Ok(flows) = std::fs::read_dir(client.path().join("collections")) else {
            continue;
        };
        for flow in flows {
            let flow = flow?;
            let at = format!(
                "{}/{}",
                client.file_name().to_string_lossy(),
                flow.file_name().to_string_lossy()
            );
            for document in ["request.json", "status.json"] {
                if !flow.path().join(document).is_file() {
                    problems.push(format!("{at}: no {document}"));
                }
            }
            for file in std::fs::read_dir(flow.path())? {
                let name = file?.file_name().to_string_lossy().to_string();
                if name.contains(".tmp.") {
                    problems.push(format!("{at}: a temporary {name}"));
                }
            }
        }
    }
    for (client, flow) in &answered {
        let status = clients_dir
            .join(client)
            .join("collections")
            .join(flow)
            .join("status.json");
        if !status.is_file() {
            problems.push(format!("{client}/{flow}: answered 200 but not on disk"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} collections answered; {problems:#?}",
        answered.len()
    );
    Ok(())
}
