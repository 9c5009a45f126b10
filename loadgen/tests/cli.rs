//! Goal: loadgen explains itself and refuses a fleet this process cannot hold, with a
//! message that says why. (Its fleets are exercised against real frontends in the
//! packhunt crate's tests/fleet.rs.)

use std::process::Command;

#[test]
fn help_names_the_fleet_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--clients",
        "--duration-s",
        "--report",
        "--ramp-per-second",
        "--identity-dir",
        "--events-per-second-per-agent",
        "--event-artifact",
        "--event-buffer-bytes",
        "--watch-artifact",
    ] {
        assert!(text.contains(flag), "{flag} in --help");
    }
}

#[test]
fn refuses_more_agents_than_open_files_allow() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--config",
            "/nonexistent.toml",
            "--clients",
            "100000000",
            "--agents-per-worker",
            "100000000",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8(out.stderr).unwrap();
    assert!(text.contains("open files"), "{text}");
}

#[test]
fn help_names_the_record_and_verify_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in ["--record", "--settle-s", "--window-s", "loadgen verify"] {
        assert!(text.contains(flag), "{flag} in --help");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["verify", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in ["--record", "--datastore", "--report", "Exit status"] {
        assert!(text.contains(flag), "{flag} in verify --help");
    }
}

#[test]
fn verify_without_a_record_says_what_is_missing() {
    // Goal: a verify that cannot check anything fails with exit 1 (not 0, not the 3 of
    // "problems found") and names what to pass. Method: an empty record folder.
    let dir = std::env::temp_dir().join(format!("loadgen-cli-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("verify")
        .arg("--record")
        .arg(&dir)
        .arg("--datastore")
        .arg(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stderr).unwrap();
    assert!(text.contains("--record"), "{text}");
}
