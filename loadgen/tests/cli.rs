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
