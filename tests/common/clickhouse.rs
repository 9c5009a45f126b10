//! A real ClickHouse server for the sink tests: Debian's `clickhouse-server` (18.16) run
//! as a subprocess with its own config, data folder and free loopback ports, stopped and
//! restarted at will, queried over its HTTP interface.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub struct ClickHouse {
    dir: tempfile::TempDir,
    binary: PathBuf,
    pub http_port: u16,
    child: Option<Child>,
}

impl ClickHouse {
    /// The server binary, if this machine has one (`.ci/run` installs Debian's).
    pub fn binary() -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .map(|dir| dir.join("clickhouse-server"))
            .find(|p| p.is_file())
    }

    /// Starts a fresh server; none if the binary is missing.
    pub fn start() -> Result<Option<Self>> {
        let Some(binary) = Self::binary() else {
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        let http_port = super::free_port();
        let tcp_port = super::free_port();
        write_config(dir.path(), http_port, tcp_port)?;
        let mut server = Self {
            dir,
            binary,
            http_port,
            child: None,
        };
        server.restart()?;
        Ok(Some(server))
    }

    /// Starts the server again on the same data and ports; waits until it answers.
    pub fn restart(&mut self) -> Result<()> {
        let config = self.dir.path().join("config.xml");
        let child = Command::new(&self.binary)
            .arg(format!("--config-file={}", config.display()))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        super::wait_until(
            "ClickHouse answers /ping",
            Duration::from_secs(90),
            || Ok(self.get("/ping").unwrap_or_default()),
            |body| body.starts_with("Ok."),
        )
        .map_err(|e| anyhow::anyhow!("{e}; log: {}", self.log_tail()))?;
        Ok(())
    }

    /// Kills the server (as a crash would), keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Runs `sql`; the answer's body (TabSeparated), or an error with ClickHouse's words.
    pub fn query(&self, sql: &str) -> Result<String> {
        let (status, body) = self.http("POST", "/", sql.as_bytes())?;
        if status != 200 {
            bail!("ClickHouse {status}: {body}");
        }
        Ok(body)
    }

    fn get(&self, path: &str) -> Result<String> {
        Ok(self.http("GET", path, b"")?.1)
    }

    fn http(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.http_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no HTTP status")?;
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("err.log")).unwrap_or_default();
        log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The keys of Debian's /etc/clickhouse-server/config.xml that locate a server: ports,
/// loopback only, and every folder inside `dir`; users.xml is Debian's (user `default`,
/// no password).
fn write_config(dir: &Path, http_port: u16, tcp_port: u16) -> Result<()> {
    let d = dir.display();
    let config = format!(
        r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/err.log</errorlog></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
</yandex>
"#
    );
    std::fs::write(dir.join("config.xml"), config)?;
    let users = std::fs::read_to_string("/etc/clickhouse-server/users.xml").unwrap_or_else(|_| {
        r#"<?xml version="1.0"?>
<yandex><profiles><default></default></profiles>
<users><default><password></password><networks><ip>::/0</ip></networks>
<profile>default</profile><quota>default</quota></default></users>
<quotas><default></default></quotas></yandex>
"#
        .to_string()
    });
    std::fs::write(dir.join("users.xml"), users)?;
    Ok(())
}
