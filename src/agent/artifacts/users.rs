//! `Linux.Sys.Users`: local accounts from /etc/passwd. Also the uid -> name lookup
//! pslist uses. NSS sources (LDAP, sssd) are out of scope: reading them means loading
//! the host's NSS modules into the agent, which a native collector avoids.

use std::collections::HashMap;
use std::fs;
use std::io;

use serde_json::{json, Value};

use super::{io_error, ArtifactError};
use crate::artifacts::USERS;

const PASSWD_PATH: &str = "/etc/passwd";

/// Largest /etc/passwd read. Real ones are kilobytes; directory-backed hosts with tens of
/// thousands of local accounts stay under a few MiB. The cap keeps a hostile or broken
/// file (a symlink to /dev/zero) from exhausting agent memory.
const MAX_PASSWD_BYTES: u64 = 16 * 1024 * 1024;

/// One /etc/passwd line. Invariant: `name` is non-empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub description: String,
    pub home: String,
    pub shell: String,
}

pub(super) fn collect(emit: &mut dyn FnMut(Value)) -> Result<(), ArtifactError> {
    let entries = read_passwd().map_err(|e| io_error(USERS, PASSWD_PATH, e))?;
    for entry in entries {
        emit(json!({
            "name": entry.name,
            "uid": entry.uid,
            "gid": entry.gid,
            "description": entry.description,
            "home": entry.home,
            "shell": entry.shell,
        }));
    }
    Ok(())
}

pub(crate) fn read_passwd() -> io::Result<Vec<PasswdEntry>> {
    use io::Read;
    let mut text = String::new();
    fs::File::open(PASSWD_PATH)?
        .take(MAX_PASSWD_BYTES)
        .read_to_string(&mut text)?;
    Ok(parse_passwd(&text))
}

/// uid -> user name. The first entry for a uid wins, as getpwuid(3) does.
pub(crate) fn uid_names(entries: &[PasswdEntry]) -> HashMap<u32, String> {
    let mut names = HashMap::with_capacity(entries.len());
    for entry in entries {
        names.entry(entry.uid).or_insert_with(|| entry.name.clone());
    }
    names
}

/// Parses passwd(5) text. Comment, blank, NIS (`+`/`-`) and malformed lines are skipped:
/// one broken line must not hide every other account.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<PasswdEntry> {
    if line.is_empty() || line.starts_with(['#', '+', '-']) {
        return None;
    }
    let fields: Vec<&str> = line.splitn(7, ':').collect();
    let [name, _password, uid, gid, description, home, shell] = fields[..] else {
        return None;
    };
    if name.is_empty() {
        return None;
    }
    Some(PasswdEntry {
        name: name.to_string(),
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        description: description.to_string(),
        home: home.to_string(),
        shell: shell.to_string(),
    })
}

#[cfg(test)]
mod tests {
    //! Goal: real accounts are read and malformed lines are skipped, not fatal.
    //! Method: collect on this host (root must be there), and parse crafted text.

    use super::*;

    #[test]
    fn host_users_contain_root_with_uid_0() {
        let mut rows = Vec::new();
        collect(&mut |row| rows.push(row)).unwrap();
        let root = rows
            .iter()
            .find(|r| r["name"] == "root")
            .expect("root in /etc/passwd");
        assert_eq!(root["uid"], 0);
        assert_eq!(root["gid"], 0);
        assert!(root["home"].as_str().unwrap().starts_with('/'));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = "root:x:0:0:root:/root:/bin/bash\n# comment\n\nbad line\n\
                    +nis::::::\nnouid:x:abc:1::/:/bin/sh\n:x:1:1::/:/bin/sh\n\
                    alice:x:1000:1000:Alice A,,,:/home/alice:/bin/zsh\n";
        let entries = parse_passwd(text);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["root", "alice"]);
        assert_eq!(entries[1].description, "Alice A,,,");
        assert_eq!(entries[1].shell, "/bin/zsh");
        assert_eq!(uid_names(&entries)[&1000], "alice");
    }
}
