//! Synthetic rows for loadgen: the same fields as the real artifacts, with realistic
//! sizes and plausible values, without reading the host. Deterministic for a seed, so a
//! load run can be repeated and its bytes compared.
//!
//! Uses its own SplitMix64 rather than `rand`'s `StdRng`, whose algorithm may change
//! between rand releases and would silently change "the same" load run.

use serde_json::{json, Value};

use crate::artifacts::{
    CLIENT_INFO, CLIENT_STATS, FILES_GLOB, LOG_TAIL, NETSTAT, PROCESS_START, PSLIST, USERS,
};

/// Rows `artifact` returns on a typical server or workstation, from counts on ordinary
/// Linux hosts: ~300 processes, ~40 passwd entries, ~60 TCP sockets, and 50 matches
/// for the default `/etc/*.conf`. Event artifacts answer one row per event. 0 = unknown.
pub fn synthetic_row_count(artifact: &str) -> usize {
    match artifact {
        CLIENT_INFO => 1,
        PSLIST => 300,
        USERS => 40,
        NETSTAT => 60,
        FILES_GLOB => 50,
        CLIENT_STATS | PROCESS_START | LOG_TAIL => 1,
        _ => 0,
    }
}

/// `count` rows shaped like `artifact`'s; empty for an artifact with no synthetic form.
pub fn synthetic_rows(artifact: &str, count: usize, seed: u64) -> Vec<Value> {
    let row: fn(&mut SplitMix64, usize) -> Value = match artifact {
        CLIENT_INFO => client_info_row,
        PSLIST => pslist_row,
        USERS => users_row,
        NETSTAT => netstat_row,
        FILES_GLOB => glob_row,
        CLIENT_STATS => client_stats_row,
        PROCESS_START => process_start_row,
        LOG_TAIL => log_tail_row,
        _ => return Vec::new(),
    };
    let mut rng = SplitMix64(seed);
    (0..count).map(|index| row(&mut rng, index)).collect()
}

/// A fixed point in time (2024-01-01) so rows do not depend on the clock.
const EPOCH_S: u64 = 1_704_067_200;

const PROCESSES: &[(&str, &str, &str)] = &[
    (
        "systemd",
        "/usr/lib/systemd/systemd",
        "--switched-root --system --deserialize=42 splash",
    ),
    (
        "sshd",
        "/usr/sbin/sshd",
        "-D -o AuthorizedKeysCommand=/usr/bin/sss_ssh_authorizedkeys",
    ),
    (
        "bash",
        "/usr/bin/bash",
        "--login -i -c 'source /etc/profile.d/vte.sh'",
    ),
    (
        "nginx",
        "/usr/sbin/nginx",
        "-g 'daemon on; master_process on;' -c /etc/nginx/nginx.conf",
    ),
    (
        "postgres",
        "/usr/lib/postgresql/16/bin/postgres",
        "-D /var/lib/postgresql/16/main -c config_file=/etc/postgresql/16/main/postgresql.conf",
    ),
    (
        "containerd",
        "/usr/bin/containerd",
        "--config /etc/containerd/config.toml --log-level info",
    ),
    (
        "python3",
        "/usr/bin/python3.12",
        "/opt/app/venv/bin/gunicorn app.wsgi:application --workers 4 --bind 127.0.0.1:8000",
    ),
    (
        "java",
        "/usr/lib/jvm/java-17-openjdk/bin/java",
        "-Xms512m -Xmx2g -jar /opt/service/service.jar --spring.profiles.active=prod",
    ),
    ("kworker/2:1-events", "", ""),
    (
        "rsyslogd",
        "/usr/sbin/rsyslogd",
        "-n -iNONE -f /etc/rsyslog.conf",
    ),
];

const USERNAMES: &[&str] = &[
    "root",
    "daemon",
    "www-data",
    "postgres",
    "systemd-network",
    "alice",
    "bob",
    "nobody",
];
const SHELLS: &[&str] = &["/bin/bash", "/usr/sbin/nologin", "/bin/false", "/bin/zsh"];
const STATES: &[&str] = &["S", "S", "S", "R", "I", "D"];
const TCP_STATES: &[&str] = &[
    "ESTABLISHED",
    "LISTEN",
    "TIME_WAIT",
    "CLOSE_WAIT",
    "SYN_SENT",
];
const CONF_DIRS: &[&str] = &[
    "/etc",
    "/etc/ssh",
    "/etc/nginx/conf.d",
    "/etc/systemd",
    "/etc/security",
];

fn client_info_row(rng: &mut SplitMix64, index: usize) -> Value {
    let hostname = format!("host-{:04x}-{index}", rng.below(0x10000));
    let boot_time = EPOCH_S - rng.below(90 * 86_400);
    let kernel_release = format!(
        "6.{}.{}-{}-generic",
        rng.below(12),
        rng.below(60),
        rng.below(200)
    );
    json!({
        "hostname": hostname,
        "fqdn": format!("{hostname}.corp.example.com"),
        "os": "linux",
        "kernel_release": kernel_release,
        "architecture": "x86_64",
        "boot_time": boot_time,
        "uptime_s": EPOCH_S - boot_time,
        "agent_version": env!("CARGO_PKG_VERSION"),
    })
}

fn pslist_row(rng: &mut SplitMix64, index: usize) -> Value {
    let (name, exe, args) = *rng.pick(PROCESSES);
    let uid = if rng.below(3) == 0 {
        0
    } else {
        1000 + rng.below(5) as u32
    };
    let cmdline = if exe.is_empty() {
        String::new()
    } else {
        format!("{exe} {args}")
    };
    json!({
        "pid": 100 + index as u64 * 7 + rng.below(7),
        "ppid": 1 + rng.below(2000),
        "name": name,
        "exe": (!exe.is_empty()).then_some(exe),
        "cmdline": cmdline,
        "username": if uid == 0 { "root" } else { *rng.pick(USERNAMES) },
        "uid": uid,
        "state": rng.pick(STATES),
        "rss_bytes": rng.below(512) * 1024 * 1024 + rng.below(1024) * 4096,
        "start_time": EPOCH_S - rng.below(30 * 86_400),
    })
}

fn users_row(rng: &mut SplitMix64, index: usize) -> Value {
    let name = format!("{}{index}", rng.pick(USERNAMES));
    let uid = if index == 0 {
        0
    } else {
        100 + index as u64 * 10 + rng.below(10)
    };
    json!({
        "name": name,
        "uid": uid,
        "gid": uid,
        "description": format!("{name} service account,,,"),
        "home": format!("/home/{name}"),
        "shell": rng.pick(SHELLS),
    })
}

fn netstat_row(rng: &mut SplitMix64, _index: usize) -> Value {
    let v6 = rng.below(4) == 0;
    let addr = |rng: &mut SplitMix64| {
        if v6 {
            format!(
                "2001:db8::{:x}:{:x}",
                rng.below(0x10000),
                rng.below(0x10000)
            )
        } else {
            format!(
                "10.{}.{}.{}",
                rng.below(256),
                rng.below(256),
                1 + rng.below(254)
            )
        }
    };
    json!({
        "family": if v6 { "tcp6" } else { "tcp" },
        "local_addr": addr(rng),
        "local_port": 1024 + rng.below(64_000),
        "remote_addr": addr(rng),
        "remote_port": *rng.pick(&[443_u64, 80, 22, 5432, 8080]),
        "state": rng.pick(TCP_STATES),
        "uid": rng.below(1005),
        "inode": 10_000 + rng.below(10_000_000),
    })
}

fn glob_row(rng: &mut SplitMix64, index: usize) -> Value {
    json!({
        "path": format!("{}/service-{index}-{:x}.conf", rng.pick(CONF_DIRS), rng.below(1 << 24)),
        "size": 64 + rng.below(16_384),
        "mode": "100644",
        "mtime": EPOCH_S - rng.below(365 * 86_400),
        "is_dir": false,
    })
}

/// Shape loadgen sends for `Generic.Client.Stats`; the agent's event runner defines it.
fn client_stats_row(rng: &mut SplitMix64, index: usize) -> Value {
    json!({
        "timestamp": EPOCH_S + index as u64 * 10,
        "cpu_percent": rng.below(1000) as f64 / 100.0,
        "rss_bytes": 20 * 1024 * 1024 + rng.below(10 * 1024 * 1024),
        "threads": 4 + rng.below(8),
    })
}

/// A pslist row minus what a just-started process cannot have yet (state, rss).
fn process_start_row(rng: &mut SplitMix64, index: usize) -> Value {
    let mut row = pslist_row(rng, index);
    if let Some(object) = row.as_object_mut() {
        object.remove("state");
        object.remove("rss_bytes");
    }
    row
}

/// An auth.log line as sshd and sudo write them (~150-250 bytes as a row).
fn log_tail_row(rng: &mut SplitMix64, _index: usize) -> Value {
    let user = rng.pick(USERNAMES);
    let line = match rng.below(3) {
        0 => format!(
            "Jan {:2} {:02}:{:02}:{:02} host-{:04x} sshd[{}]: Accepted publickey for {user} from 10.{}.{}.{} port {} ssh2: ED25519 SHA256:{:016x}",
            1 + rng.below(28), rng.below(24), rng.below(60), rng.below(60), rng.below(0x10000),
            1000 + rng.below(60_000), rng.below(256), rng.below(256), 1 + rng.below(254),
            1024 + rng.below(64_000), rng.next()
        ),
        1 => format!(
            "Jan {:2} {:02}:{:02}:{:02} host-{:04x} sudo: {user} : TTY=pts/{} ; PWD=/home/{user} ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx.service",
            1 + rng.below(28), rng.below(24), rng.below(60), rng.below(60), rng.below(0x10000),
            rng.below(8)
        ),
        _ => format!(
            "Jan {:2} {:02}:{:02}:{:02} host-{:04x} sshd[{}]: pam_unix(sshd:session): session opened for user {user}(uid={}) by (uid=0)",
            1 + rng.below(28), rng.below(24), rng.below(60), rng.below(60), rng.below(0x10000),
            1000 + rng.below(60_000), 1000 + rng.below(5)
        ),
    };
    json!({
        "path": "/var/log/auth.log",
        "line": line,
        "truncated": false,
    })
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fixed forever.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound`. Modulo bias is irrelevant for synthetic data.
    fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        self.next() % bound
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    //! Goal: synthetic rows are repeatable, shaped like the real artifacts' rows, and
    //! of realistic size. Method: generate, compare seeds, and diff field names against
    //! rows collected on this host.

    use std::collections::BTreeMap;

    use super::*;
    use crate::artifacts::{catalogue, ArtifactKind};

    fn mean_bytes(rows: &[Value]) -> usize {
        rows.iter().map(|r| r.to_string().len()).sum::<usize>() / rows.len()
    }

    #[test]
    fn same_seed_same_rows_other_seed_other_rows() {
        for def in catalogue() {
            // Its rows describe uploads, so loadgen answers it with a file (loadgen's
            // files scenario), never with rows alone.
            if def.name == crate::artifacts::COLLECTORS_FILE {
                assert!(synthetic_rows(def.name, 5, 7).is_empty());
                continue;
            }
            let count = synthetic_row_count(def.name).max(5);
            let a = synthetic_rows(def.name, count, 7);
            assert_eq!(a.len(), count, "{}", def.name);
            assert_eq!(a, synthetic_rows(def.name, count, 7), "{}", def.name);
            assert_ne!(a, synthetic_rows(def.name, count, 8), "{}", def.name);
            assert!(a.iter().all(Value::is_object));
        }
        assert!(synthetic_rows("Nope", 10, 1).is_empty());
        assert_eq!(synthetic_row_count("Nope"), 0);
    }

    #[test]
    fn counts_and_sizes_are_realistic() {
        assert_eq!(synthetic_row_count(CLIENT_INFO), 1);
        assert_eq!(synthetic_row_count(PSLIST), 300);
        assert_eq!(synthetic_row_count(USERS), 40);
        assert_eq!(synthetic_row_count(NETSTAT), 60);
        assert_eq!(synthetic_row_count(FILES_GLOB), 50);
        let pslist = synthetic_rows(PSLIST, 300, 1);
        let mean = mean_bytes(&pslist);
        assert!((200..=300).contains(&mean), "pslist mean row {mean} bytes");
        for (artifact, low, high) in [(USERS, 80, 200), (NETSTAT, 120, 250), (FILES_GLOB, 80, 200)]
        {
            let mean = mean_bytes(&synthetic_rows(artifact, 100, 1));
            assert!(
                (low..=high).contains(&mean),
                "{artifact} mean row {mean} bytes"
            );
        }
    }

    #[test]
    fn fields_match_the_real_artifacts() {
        let keys = |row: &Value| -> Vec<String> {
            let mut keys: Vec<String> = row.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        for def in catalogue()
            .iter()
            .filter(|d| d.kind == ArtifactKind::Collection)
        {
            // Uploads are answered by loadgen's files scenario, not by synthetic rows.
            if def.name == crate::artifacts::COLLECTORS_FILE {
                continue;
            }
            let params = match def.name {
                FILES_GLOB => BTreeMap::from([("pattern".to_string(), "/etc/*".to_string())]),
                _ => BTreeMap::new(),
            };
            let real = super::super::collect_rows(def.name, &params).unwrap();
            let Some(real_row) = real.iter().find(|r| r.get("error").is_none()) else {
                continue; // e.g. no TCP sockets on this host: nothing to compare against
            };
            let synthetic = synthetic_rows(def.name, 1, 3);
            assert_eq!(keys(&synthetic[0]), keys(real_row), "{}", def.name);
        }
    }
}
