//! A real sshfs mount over loopback (sshd and sshfs from Debian's packages) for the
//! datastore: a private sshd on a free 127.0.0.1 port with throwaway host and user keys,
//! exporting a backing folder that sshfs mounts where the test asks. The Rust twin of
//! benches/sshfs.sh (same mount options; that file says why each).
//!
//! Where FUSE, sshfs, sshd or root are missing, [`SshfsMount::new`] records a counted skip
//! and returns None; once they are all there, a mount that fails is a test failure (it
//! panics with sshd's and sshfs's own words), never a skip. Drop unmounts (`fusermount
//! -uz`, lazily, so a frontend still holding files never leaves a hung mount) and stops
//! sshd and its session processes, also when the test panics.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The packhunt mount options (benches/sshfs.sh, SSHFS_DEFAULT_OPTS).
pub const MOUNT_OPTIONS: &str = "dir_cache=no,attr_timeout=0,entry_timeout=0,negative_timeout=0,\
reconnect,ServerAliveInterval=5,ServerAliveCountMax=6,max_conns=4,Compression=no,\
Ciphers=aes128-gcm@openssh.com";

/// How long sshd gets to listen: it starts in milliseconds; the limit only stops a hang.
const SSHD_START_LIMIT: Duration = Duration::from_secs(20);

/// What to mount, beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct SshfsOptions {
    /// Mount read-only (`-o ro`): a mount the datastore cannot write.
    pub read_only: bool,
    /// sftp requests the server refuses (internal-sftp `-P`, names as `sftp-server -Q
    /// requests` lists them), e.g. `posix-rename`: no rename over an existing file.
    pub sftp_denied: Option<String>,
    /// Export this folder instead of a fresh one (a second mount of another mount's
    /// backing: what a second host sees of one NFS export).
    pub backing: Option<PathBuf>,
}

/// A mounted sshfs; unmounted, and its sshd stopped, on drop.
pub struct SshfsMount {
    mountpoint: PathBuf,
    backing: PathBuf,
    state: tempfile::TempDir,
    sshd: Child,
    port: u16,
}

impl SshfsMount {
    /// Mounts a fresh export on `mountpoint` (created if missing); None, with a counted
    /// skip for `test`, where this machine cannot.
    pub fn new(test: &str, mountpoint: &Path) -> Option<Self> {
        Self::with(test, mountpoint, SshfsOptions::default())
    }

    pub fn with(test: &str, mountpoint: &Path, options: SshfsOptions) -> Option<Self> {
        if let Some(needs) = missing() {
            super::skip(test, &needs);
            return None;
        }
        Some(Self::mount(mountpoint, options).unwrap_or_else(|e| panic!("sshfs mount: {e:#}")))
    }

    /// The mounted folder (the datastore goes here).
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The folder behind the mount, on the "server" side.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn mount(mountpoint: &Path, options: SshfsOptions) -> anyhow::Result<Self> {
        let state = tempfile::Builder::new()
            .prefix("packhunt-sshfs.")
            .tempdir()?;
        let backing = match &options.backing {
            Some(b) => b.clone(),
            None => {
                let b = state.path().join("export");
                std::fs::create_dir(&b)?;
                b
            }
        };
        std::fs::create_dir_all(mountpoint)?;
        keygen(&state.path().join("host_key"))?;
        keygen(&state.path().join("user_key"))?;
        std::fs::copy(
            state.path().join("user_key.pub"),
            state.path().join("authorized_keys"),
        )?;
        let port = super::free_port();
        let sshd = start_sshd(state.path(), port, options.sftp_denied.as_deref())?;
        let mut mount = SshfsMount {
            mountpoint: mountpoint.to_path_buf(),
            backing,
            state,
            sshd,
            port,
        };
        mount.wait_listening()?;
        mount.run_sshfs(options.read_only)?;
        Ok(mount)
    }

    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.sshd.try_wait()? {
                anyhow::bail!("sshd exited ({status}): {}", self.log("sshd.log"));
            }
            anyhow::ensure!(
                started.elapsed() < SSHD_START_LIMIT,
                "sshd not listening on 127.0.0.1:{} within {SSHD_START_LIMIT:?}: {}",
                self.port,
                self.log("sshd.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn run_sshfs(&self, read_only: bool) -> anyhow::Result<()> {
        let st = self.state.path();
        let ssh_options = format!(
            "IdentityFile={},IdentitiesOnly=yes,UserKnownHostsFile=/dev/null,\
             StrictHostKeyChecking=no,BatchMode=yes,LogLevel=ERROR",
            st.join("user_key").display()
        );
        let mut command = Command::new("sshfs");
        command
            .arg(format!(
                "{}@127.0.0.1:{}",
                user_name(),
                self.backing.display()
            ))
            .arg(&self.mountpoint)
            .args([
                "-p",
                &self.port.to_string(),
                "-o",
                &ssh_options,
                "-o",
                MOUNT_OPTIONS,
            ]);
        if read_only {
            command.args(["-o", "ro"]);
        }
        let out = command.stdin(Stdio::null()).output()?;
        anyhow::ensure!(
            out.status.success(),
            "sshfs failed ({}): {} | sshd: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            self.log("sshd.log")
        );
        Ok(())
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.path().join(name))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

impl Drop for SshfsMount {
    fn drop(&mut self) {
        for tool in ["fusermount", "fusermount3"] {
            let done = Command::new(tool)
                .arg("-uz")
                .arg(&self.mountpoint)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if done || !is_mounted(&self.mountpoint) {
                break;
            }
        }
        // sshd's session processes (one per sshfs connection) first, then the listener.
        for child in children(self.sshd.id()) {
            // SAFETY: kill takes plain integers; a pid that is gone makes it fail, harmlessly.
            unsafe { libc::kill(child as i32, libc::SIGTERM) };
        }
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}

/// What this machine lacks for an sshfs mount, if anything.
pub fn missing() -> Option<String> {
    let mut lacks = Vec::new();
    if !super::is_root() {
        lacks.push("root (sshd's privilege separation)".to_string());
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        lacks.push("/usr/sbin/sshd (openssh-server)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        lacks.push("/dev/fuse".into());
    }
    for tool in ["sshfs", "ssh-keygen"] {
        if !on_path(tool) {
            lacks.push(tool.into());
        }
    }
    if !on_path("fusermount") && !on_path("fusermount3") {
        lacks.push("fusermount (fuse3)".into());
    }
    (!lacks.is_empty()).then(|| lacks.join(", "))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "ssh-keygen {} failed", path.display());
    Ok(())
}

fn start_sshd(state: &Path, port: u16, sftp_denied: Option<&str>) -> anyhow::Result<Child> {
    // sshd refuses to start without its privilege separation folder (Debian's unit makes it).
    std::fs::create_dir_all("/run/sshd")?;
    let subsystem = match sftp_denied {
        Some(denied) => format!("internal-sftp -P {denied}"),
        None => "internal-sftp".to_string(),
    };
    let config = format!(
        "ListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\nPidFile {pid}\n\
         AuthorizedKeysFile {keys}\nStrictModes no\nPubkeyAuthentication yes\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\nUsePAM no\nAllowUsers {user}\nX11Forwarding no\n\
         AllowTcpForwarding no\nPrintMotd no\nMaxStartups 64\nSubsystem sftp {subsystem}\n",
        host_key = state.join("host_key").display(),
        pid = state.join("sshd.pid").display(),
        keys = state.join("authorized_keys").display(),
        user = user_name(),
    );
    let config_path = state.join("sshd_config");
    std::fs::write(&config_path, config)?;
    let log = std::fs::File::create(state.join("sshd.log"))?;
    Ok(Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

/// The mount is made as root (`missing` requires it), so files on it are root's, as the
/// frontend under test runs.
fn user_name() -> &'static str {
    "root"
}

fn is_mounted(path: &Path) -> bool {
    let shown = path.display().to_string();
    std::fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split(' ').nth(1) == Some(shown.as_str()))
    })
}

/// The pids of `pid`'s children (every thread's list).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}
