//! `Linux.Sys.Pslist`: one row per process from /proc/<pid>. Processes exit during any
//! scan; one that vanishes between listing and reading is skipped, never an error.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::Path;

use serde_json::{json, Value};

use super::client_info::boot_time_s;
use super::users::{read_passwd, uid_names};
use super::{io_error, is_vanished, ArtifactError};
use crate::artifacts::PSLIST;

/// Longest command line kept per process. Linux allows ~2 MiB of arguments (ARG_MAX);
/// a row must fit well inside one 5 MiB upload (docs/architecture.md `max_upload_bytes`) together
/// with its neighbours, and 64 KiB is far beyond any command line an analyst reads.
const MAX_CMDLINE_BYTES: u64 = 64 * 1024;

/// Longest /proc/<pid>/stat or status read; both are well under 4 KiB on every kernel.
const MAX_PROC_FILE_BYTES: u64 = 16 * 1024;

/// Host constants that turn /proc units into bytes and seconds.
pub(crate) struct Units {
    ticks_per_second: u64,
    page_bytes: u64,
    boot_time_s: Option<u64>,
}

/// The fields of /proc/<pid>/stat this artifact uses.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    name: String,
    state: String,
    ppid: u32,
    start_ticks: u64,
    rss_pages: u64,
}

pub(super) fn collect(emit: &mut dyn FnMut(Value)) -> Result<(), ArtifactError> {
    let pids = list_pids().map_err(|e| io_error(PSLIST, "/proc", e))?;
    let units = host_units();
    // Without /etc/passwd, usernames are null but the process list is still worth having.
    let names = read_passwd()
        .map(|entries| uid_names(&entries))
        .unwrap_or_default();
    for pid in pids {
        match process_row(pid, &units, &names) {
            Ok(row) => emit(row),
            Err(e) if is_vanished(&e) => {}
            // Anything else about one process (a torn read, a kernel oddity) loses that
            // row only; the analyst still gets every other process.
            Err(e) => tracing::debug!(pid, error = %e, "pslist: process skipped"),
        }
    }
    Ok(())
}

/// Numeric entries of /proc, ascending, so rows come out in a stable order.
pub(crate) fn list_pids() -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

pub(crate) fn host_units() -> Units {
    // SAFETY: sysconf reads a process-wide constant and has no memory side effects.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    // USER_HZ is 100 and pages are 4 KiB on every Linux we target; the fallbacks only
    // matter if sysconf fails, which it does not for these names.
    Units {
        ticks_per_second: u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100),
        page_bytes: u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096),
        boot_time_s: boot_time_s().ok(),
    }
}

pub(crate) fn process_row(
    pid: u32,
    units: &Units,
    names: &HashMap<u32, String>,
) -> io::Result<Value> {
    let dir = Path::new("/proc").join(pid.to_string());
    let stat = parse_stat(&read_capped(&dir.join("stat"), MAX_PROC_FILE_BYTES)?)?;
    let uid = parse_effective_uid(&read_capped(&dir.join("status"), MAX_PROC_FILE_BYTES)?)?;
    let cmdline = read_capped(&dir.join("cmdline"), MAX_CMDLINE_BYTES)?;
    // Kernel threads have no exe and other users' links need privileges: both are null.
    let exe = fs::read_link(dir.join("exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let start_time = units
        .boot_time_s
        .map(|boot| boot + stat.start_ticks / units.ticks_per_second);
    Ok(json!({
        "pid": pid,
        "ppid": stat.ppid,
        "name": stat.name,
        "exe": exe,
        "cmdline": join_cmdline(&cmdline),
        "username": names.get(&uid),
        "uid": uid,
        "state": stat.state,
        "rss_bytes": stat.rss_pages.saturating_mul(units.page_bytes),
        "start_time": start_time,
    }))
}

/// Parses /proc/<pid>/stat (proc(5)). The name sits in parentheses and may itself hold
/// spaces and `)`, so the fields start after the *last* `)`.
fn parse_stat(bytes: &[u8]) -> io::Result<Stat> {
    let text = String::from_utf8_lossy(bytes);
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/<pid>/stat");
    let open = text.find('(').ok_or_else(invalid)?;
    let close = text.rfind(')').filter(|&c| c > open).ok_or_else(invalid)?;
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After the name: [0]=state (field 3), [1]=ppid (4), [19]=starttime (22), [21]=rss (24).
    let field = |i: usize| fields.get(i).copied().ok_or_else(invalid);
    let number = |i: usize| field(i)?.parse::<u64>().map_err(|_| invalid());
    Ok(Stat {
        name: text[open + 1..close].to_string(),
        state: field(0)?.to_string(),
        ppid: u32::try_from(number(1)?).map_err(|_| invalid())?,
        start_ticks: number(19)?,
        // rss is signed in the kernel's format string; a negative value means "none".
        rss_pages: field(21)?.parse::<i64>().map_err(|_| invalid())?.max(0) as u64,
    })
}

/// The effective uid (second field of `Uid:`), the owner `ps` shows in its USER column.
fn parse_effective_uid(status: &[u8]) -> io::Result<u32> {
    let text = String::from_utf8_lossy(status);
    text.lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Uid: line in status"))
}

/// argv is NUL-separated (and NUL-terminated); analysts read it space-separated.
fn join_cmdline(bytes: &[u8]) -> String {
    let trimmed = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    String::from_utf8_lossy(trimmed).replace('\0', " ")
}

fn read_capped(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(max_bytes)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    //! Goal: the scan sees real processes with correct fields, and the stat parser copes
    //! with hostile process names. Method: find this test process in a live scan.

    use super::*;

    #[test]
    fn scan_finds_this_process_with_its_name_and_exe() {
        let mut rows = Vec::new();
        collect(&mut |row| rows.push(row)).unwrap();
        let me = rows
            .iter()
            .find(|r| r["pid"] == std::process::id())
            .expect("own process in pslist");
        let exe = std::env::current_exe().unwrap();
        // The kernel keeps the first 15 bytes of the executable's name as comm.
        let file_name = exe.file_name().unwrap().to_string_lossy();
        let comm: String = file_name.chars().take(15).collect();
        assert_eq!(me["name"], comm.as_str());
        assert_eq!(me["exe"], &*exe.to_string_lossy());
        assert!(me["cmdline"].as_str().unwrap().contains(&*file_name));
        // SAFETY: geteuid has no preconditions.
        assert_eq!(me["uid"], unsafe { libc::geteuid() });
        assert!(me["rss_bytes"].as_u64().unwrap() > 0);
        assert!(me["start_time"].as_u64().unwrap() > 1_000_000_000);
        assert_eq!(me["ppid"], std::os::unix::process::parent_id());
        assert!(rows.iter().any(|r| r["pid"] == 1));
    }

    #[test]
    fn stat_parser_handles_parentheses_and_spaces_in_names() {
        let line = b"42 (evil) (x y) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                     12345 1000000 -5 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.name, "evil) (x y");
        assert_eq!(stat.state, "S");
        assert_eq!(stat.ppid, 7);
        assert_eq!(stat.start_ticks, 12345);
        assert_eq!(stat.rss_pages, 0);
        assert!(parse_stat(b"42 (truncated").is_err());
        assert!(parse_stat(b"42 (short) S 1 2").is_err());
    }

    #[test]
    fn cmdline_nuls_become_spaces() {
        assert_eq!(
            join_cmdline(b"/bin/sh\0-c\0echo hi\0"),
            "/bin/sh -c echo hi"
        );
        assert_eq!(join_cmdline(b""), "");
    }
}
