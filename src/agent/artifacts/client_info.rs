//! `Generic.Client.Info`: one row of host facts, read from /proc so it works in a
//! container or chroot without /etc/os-release and without resolving DNS.

use std::fs;
use std::io;

use serde_json::{json, Value};

use super::{io_error, ArtifactError};
use crate::artifacts::CLIENT_INFO;

pub(super) fn collect(emit: &mut dyn FnMut(Value)) -> Result<(), ArtifactError> {
    let hostname = read_trimmed("/proc/sys/kernel/hostname")
        .map_err(|e| io_error(CLIENT_INFO, "/proc/sys/kernel/hostname", e))?;
    let kernel_release = read_trimmed("/proc/sys/kernel/osrelease")
        .map_err(|e| io_error(CLIENT_INFO, "/proc/sys/kernel/osrelease", e))?;
    // Boot time and uptime are informative, not essential: a host that hides them still
    // gets a row, with nulls.
    let boot_time = boot_time_s().ok();
    let uptime_s = uptime_s().ok();
    emit(json!({
        "hostname": hostname,
        "fqdn": fqdn(&hostname),
        "os": "linux",
        "kernel_release": kernel_release,
        "architecture": std::env::consts::ARCH,
        "boot_time": boot_time,
        "uptime_s": uptime_s,
        "agent_version": env!("CARGO_PKG_VERSION"),
    }));
    Ok(())
}

/// Boot time in unix seconds, from the `btime` line of /proc/stat. Also used by pslist
/// to turn process start ticks into wall-clock time.
pub(super) fn boot_time_s() -> io::Result<u64> {
    let stat = fs::read_to_string("/proc/stat")?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "/proc/stat has no btime"))
}

/// Whole seconds since boot: the first field of /proc/uptime ("12345.67 23456.78").
fn uptime_s() -> io::Result<u64> {
    let text = fs::read_to_string("/proc/uptime")?;
    let first = text.split_whitespace().next().unwrap_or("");
    let seconds: f64 = first
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "/proc/uptime unparsable"))?;
    Ok(seconds as u64)
}

/// The cheap FQDN: the hostname if it already has a dot, else hostname + the kernel's
/// NIS domain if one is set. A DNS lookup would be more complete but can block for
/// seconds on a broken resolver, which a one-row info artifact must not do.
fn fqdn(hostname: &str) -> String {
    if hostname.contains('.') {
        return hostname.to_string();
    }
    match read_trimmed("/proc/sys/kernel/domainname") {
        Ok(domain) if !domain.is_empty() && domain != "(none)" => format!("{hostname}.{domain}"),
        _ => hostname.to_string(),
    }
}

fn read_trimmed(path: &str) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_string())
}

#[cfg(test)]
mod tests {
    //! Goal: the info row carries real host facts. Method: collect on this host and
    //! compare with what the test can observe independently.

    use super::*;

    #[test]
    fn info_row_has_hostname_kernel_and_plausible_boot_time() {
        let mut rows = Vec::new();
        collect(&mut |row| rows.push(row)).unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert!(!row["hostname"].as_str().unwrap().is_empty());
        assert!(row["fqdn"]
            .as_str()
            .unwrap()
            .starts_with(row["hostname"].as_str().unwrap()));
        assert_eq!(row["os"], "linux");
        assert_eq!(row["architecture"], std::env::consts::ARCH);
        assert!(!row["kernel_release"].as_str().unwrap().is_empty());
        assert_eq!(row["agent_version"], env!("CARGO_PKG_VERSION"));
        let boot = row["boot_time"].as_u64().unwrap();
        let uptime = row["uptime_s"].as_u64().unwrap();
        // The kernel derives both from one clock, so boot + uptime is "now"; the slack
        // covers rounding and a slow test run, not a timing requirement.
        let now = crate::clock::since_epoch().as_secs();
        assert!(boot > 1_000_000_000);
        assert!(
            (boot + uptime).abs_diff(now) <= 60,
            "boot {boot} + uptime {uptime} vs {now}"
        );
    }
}
