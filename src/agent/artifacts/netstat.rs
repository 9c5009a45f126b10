//! `Linux.Network.Netstat`: TCP sockets from /proc/net/tcp and /proc/net/tcp6, with
//! addresses decoded. Mapping sockets to processes (walking every /proc/<pid>/fd) is
//! left out: it costs a readlink per open file on the host; the `inode` joins to it.

use std::fs;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{json, Value};

use super::{io_error, ArtifactError};
use crate::artifacts::NETSTAT;

/// Largest /proc/net/tcp* read. Each socket is a ~150-byte line; 64 MiB is ~400k
/// sockets, beyond any host this agent runs on, and bounds memory on one that isn't.
const MAX_TABLE_BYTES: u64 = 64 * 1024 * 1024;

const TABLES: [(&str, &str); 2] = [("tcp", "/proc/net/tcp"), ("tcp6", "/proc/net/tcp6")];

pub(super) fn collect(emit: &mut dyn FnMut(Value)) -> Result<(), ArtifactError> {
    let mut tables_read = 0;
    let mut last_error = None;
    for (family, path) in TABLES {
        // tcp6 is missing when IPv6 is disabled; only both missing means no answer.
        match read_table(path) {
            Ok(text) => {
                tables_read += 1;
                emit_table(family, &text, emit);
            }
            Err(e) => last_error = Some((path, e)),
        }
    }
    match (tables_read, last_error) {
        (0, Some((path, e))) => Err(io_error(NETSTAT, path, e)),
        _ => Ok(()),
    }
}

fn read_table(path: &str) -> io::Result<String> {
    let mut text = String::new();
    fs::File::open(path)?
        .take(MAX_TABLE_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

fn emit_table(family: &str, text: &str, emit: &mut dyn FnMut(Value)) {
    // The first line is the column header; a line that does not parse (the last one of
    // a capped read) is skipped rather than failing the table.
    for line in text.lines().skip(1) {
        if let Some(row) = parse_line(family, line) {
            emit(row);
        }
    }
}

/// One socket line: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`.
fn parse_line(family: &str, line: &str) -> Option<Value> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 10 {
        return None;
    }
    let (local_addr, local_port) = parse_endpoint(fields[1])?;
    let (remote_addr, remote_port) = parse_endpoint(fields[2])?;
    let state = u8::from_str_radix(fields[3], 16).ok()?;
    Some(json!({
        "family": family,
        "local_addr": local_addr.to_string(),
        "local_port": local_port,
        "remote_addr": remote_addr.to_string(),
        "remote_port": remote_port,
        "state": state_name(state),
        "uid": fields[7].parse::<u32>().ok()?,
        "inode": fields[9].parse::<u64>().ok()?,
    }))
}

/// `ADDR:PORT` in hex. The kernel prints each 32-bit word of the address with `%08X` as a
/// native-endian integer (net/ipv4/tcp_ipv4.c, net/ipv6/tcp_ipv6.c), so each word's
/// bytes are recovered with `to_ne_bytes`. The port is printed in host order.
fn parse_endpoint(field: &str) -> Option<(IpAddr, u16)> {
    let (addr_hex, port_hex) = field.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    if addr_hex.len() % 8 != 0 || !addr_hex.is_ascii() {
        return None;
    }
    for word in addr_hex.as_bytes().chunks(8) {
        let word = std::str::from_utf8(word).ok()?;
        bytes.extend_from_slice(&u32::from_str_radix(word, 16).ok()?.to_ne_bytes());
    }
    let addr = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some((addr, port))
}

/// TCP state numbers from include/net/tcp_states.h.
fn state_name(state: u8) -> &'static str {
    match state {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0A => "LISTEN",
        0x0B => "CLOSING",
        0x0C => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    //! Goal: addresses, ports and states decode as `ss` shows them, and a live listener
    //! appears. Method: parse kernel-format lines, then bind a socket and scan.

    use super::*;

    #[test]
    fn decodes_ipv4_and_ipv6_lines() {
        let v4 = "   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 \
                  00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
        let row = parse_line("tcp", v4).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(row["local_addr"], "127.0.0.1");
        }
        assert_eq!(row["local_port"], 8000);
        assert_eq!(row["remote_addr"], "0.0.0.0");
        assert_eq!(row["state"], "LISTEN");
        assert_eq!(row["inode"], 12345);
        let v6 = "   1: 00000000000000000000000001000000:0016 \
                  00000000000000000000000000000000:0000 01 00000000:00000000 00:00000000 \
                  00000000  1000        0 999 1 0000000000000000 100 0 0 10 0";
        let row = parse_line("tcp6", v6).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(row["local_addr"], "::1");
        }
        assert_eq!(row["local_port"], 22);
        assert_eq!(row["state"], "ESTABLISHED");
        assert_eq!(row["uid"], 1000);
        assert!(parse_line("tcp", "garbage line").is_none());
        assert!(parse_line("tcp", &v4.replace("0100007F", "0100007")).is_none());
    }

    #[test]
    fn live_listener_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut rows = Vec::new();
        collect(&mut |row| rows.push(row)).unwrap();
        let found = rows.iter().any(|r| {
            r["local_port"] == port && r["local_addr"] == "127.0.0.1" && r["state"] == "LISTEN"
        });
        assert!(
            found,
            "listener on 127.0.0.1:{port} not in {} rows",
            rows.len()
        );
    }
}
