//! A real HAProxy (Debian's package) in TCP mode in front of a deployment's frontends.
//!
//! TCP mode, so mutual TLS still ends at the frontends: the balancer sees bytes, not
//! requests. Each frontend is one server line: agent traffic to its agent port, health
//! checks (`GET /readyz` over TLS, certificate not verified: the check asks nothing
//! secret) to its GUI/API or metrics port, every half second, two failures to go down,
//! one success to come back. A connect that fails is retried and, the last time, sent to
//! another server (`option redispatch`), so an agent that dials the balancer just as a
//! frontend dies is not refused. The process runs in the foreground (`-db`) with its own
//! config and admin socket in a temp dir, on a free loopback port, and is killed on drop.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

/// Where Debian's package installs it.
const HAPROXY_BIN: &str = "/usr/sbin/haproxy";

/// One frontend behind the balancer.
#[derive(Debug, Clone)]
pub struct Backend {
    /// The server's name in the config and in `server_states`.
    pub name: String,
    pub agent_port: u16,
    /// The port `/readyz` is asked on: the master's GUI/API port, a minion's metrics port.
    pub check_port: u16,
}

/// A running haproxy; killed on drop.
pub struct Haproxy {
    /// Agents dial 127.0.0.1 on this port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Haproxy {
    /// Starts haproxy in front of `backends` and waits until it listens. None (the
    /// test's skip is counted) when haproxy is not installed.
    pub fn start(test: &str, backends: &[Backend]) -> Result<Option<Haproxy>> {
        if !Path::new(HAPROXY_BIN).exists() {
            super::skip(test, "haproxy (Debian's package) at /usr/sbin/haproxy");
            return Ok(None);
        }
        let dir = tempfile::tempdir()?;
        let port = super::free_port();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            config_text(port, &admin_socket(dir.path()), backends),
        )?;
        let check = Command::new(HAPROXY_BIN)
            .arg("-c")
            .arg("-f")
            .arg(&config)
            .output()?;
        anyhow::ensure!(
            check.status.success(),
            "haproxy refused its config: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let log = std::fs::File::create(dir.path().join("haproxy.log"))?;
        let child = Command::new(HAPROXY_BIN)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting haproxy")?;
        let mut haproxy = Haproxy {
            port,
            dir,
            child: Some(child),
        };
        super::wait_until(
            "haproxy listening",
            Duration::from_secs(20),
            || {
                if let Some(status) = haproxy.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                    anyhow::bail!("haproxy exited ({status}): {}", haproxy.log());
                }
                Ok(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
            },
            |up| *up,
        )?;
        Ok(Some(haproxy))
    }

    /// Each server's state as the balancer sees it (`UP`, `DOWN`, `UP 1/2`, ...), from
    /// `show stat` on the admin socket.
    pub fn server_states(&self) -> Result<HashMap<String, String>> {
        let csv = self.admin("show stat")?;
        let mut lines = csv.lines();
        let header = lines.next().context("show stat: no header")?;
        let columns: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
        let at = |name: &str| columns.iter().position(|c| *c == name);
        let (proxy, server, status) = (
            at("pxname").context("pxname")?,
            at("svname").context("svname")?,
            at("status").context("status")?,
        );
        Ok(lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|fields| fields.get(proxy) == Some(&"frontends"))
            .filter(|fields| !matches!(fields.get(server), Some(&"BACKEND") | None))
            .map(|fields| (fields[server].to_string(), fields[status].to_string()))
            .collect())
    }

    /// Waits until the balancer shows every server in `up` as UP and every other as not.
    pub fn wait_servers(&self, up: &[&str], limit: Duration) -> Result<()> {
        super::wait_until(
            &format!("haproxy servers up: exactly {up:?}"),
            limit,
            || self.server_states(),
            |states| {
                states
                    .iter()
                    .all(|(name, state)| (state == "UP") == up.contains(&name.as_str()))
            },
        )?;
        Ok(())
    }

    /// One command on the admin socket; its whole answer.
    fn admin(&self, command: &str) -> Result<String> {
        let mut stream = UnixStream::connect(admin_socket(self.dir.path()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// What haproxy logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn admin_socket(dir: &Path) -> PathBuf {
    dir.join("admin.sock")
}

/// The config: what docs/operating.md ("Behind a load balancer") recommends, with short
/// check intervals so a test sees a server go down in about a second.
fn config_text(port: u16, admin: &Path, backends: &[Backend]) -> String {
    let mut text = format!(
        "global
    maxconn 4096
    stats socket {admin} mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout check 2s
    option clitcpka
    clitcpka-idle 60s
    clitcpka-intvl 20s
    clitcpka-cnt 3
    option srvtcpka
    srvtcpka-idle 60s
    srvtcpka-intvl 20s
    srvtcpka-cnt 3
    retries 2
    option redispatch 1

frontend agents
    bind 127.0.0.1:{port}
    default_backend frontends

backend frontends
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 1 check-ssl verify none
",
        admin = admin.display()
    );
    for b in backends {
        text.push_str(&format!(
            "    server {} 127.0.0.1:{} check port {}\n",
            b.name, b.agent_port, b.check_port
        ));
    }
    text
}
