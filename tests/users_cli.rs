//! `packhunt user` against generated configs, the users API, and a running master that
//! takes user changes without a restart: added users get in, removed ones and old
//! passwords are refused (their GUI sessions end), a malformed file keeps the users.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use common::gui_sessions::GuiSession;
use common::users::{call_as, user_command};
use common::{wait_until, wait_until_every, Deployment, ADMIN_PASSWORD};
use serde_json::json;

/// How long a running master may take to see a change: the 2 s reload interval plus a
/// busy machine's slack. A stall (no reload at all) would never meet it.
const RELOAD_LIMIT: Duration = Duration::from_secs(15);

fn server_config(deployment: &Deployment) -> PathBuf {
    deployment.path().join("server.config.toml")
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("config")
        .permissions()
        .mode()
        & 0o777
}

fn listed(config: &Path) -> Result<Vec<(String, String)>> {
    let run = user_command(config, &["list"], None)?;
    anyhow::ensure!(run.ok(), "user list: {run:?}");
    Ok(run
        .stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect())
}

/// Goal: add (stdin and file), list, passwd, role and remove change the file as asked,
/// keep its comments and mode 0600, and never print a hash. Method: the commands on a
/// generated config, the result read back with the library and the password checked.
#[test]
fn add_list_passwd_remove() -> Result<()> {
    let deployment = Deployment::generate_with(|_| {})?;
    let config = server_config(&deployment);
    // An operator's own note, which the edits must keep.
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(&config, format!("{text}\n# kept: the operator's note\n"))?;

    let run = user_command(
        &config,
        &["add", "ana", "--role", "investigator", "--password-stdin"],
        Some("ana-password-1\n"),
    )?;
    assert!(run.ok(), "{run:?}");
    assert!(
        run.stdout.contains("added user `ana` (investigator)"),
        "{run:?}"
    );
    let password_file = deployment.path().join("bo.pw");
    std::fs::write(&password_file, "bo-password-12\n")?;
    let file_arg = password_file.to_str().expect("utf-8 path");
    let run = user_command(
        &config,
        &["add", "bo", "--role", "reader", "--password-file", file_arg],
        None,
    )?;
    assert!(run.ok(), "{run:?}");
    assert_eq!(
        listed(&config)?,
        [
            ("admin".to_string(), "administrator".to_string()),
            ("ana".to_string(), "investigator".to_string()),
            ("bo".to_string(), "reader".to_string()),
        ]
    );
    let list = user_command(&config, &["list"], None)?;
    assert!(!list.stdout.contains("argon2"), "no hashes: {list:?}");

    let users = packhunt::config::users::load_users(&config)?;
    let hash_of = |users: &[packhunt::config::UserEntry], name: &str| {
        users
            .iter()
            .find(|u| u.name == name)
            .map(|u| u.password_hash.clone())
    };
    let verify = packhunt::config::generate::verify_password;
    assert!(verify(&hash_of(&users, "ana").unwrap(), "ana-password-1"));
    assert!(verify(&hash_of(&users, "bo").unwrap(), "bo-password-12"));

    let run = user_command(
        &config,
        &["passwd", "ana", "--password-stdin"],
        Some("ana-password-2"),
    )?;
    assert!(run.ok(), "{run:?}");
    let run = user_command(&config, &["role", "bo", "--role", "administrator"], None)?;
    assert!(run.ok(), "{run:?}");
    let users = packhunt::config::users::load_users(&config)?;
    assert!(verify(&hash_of(&users, "ana").unwrap(), "ana-password-2"));
    assert!(!verify(&hash_of(&users, "ana").unwrap(), "ana-password-1"));
    let run = user_command(&config, &["remove", "admin"], None)?;
    assert!(run.ok(), "another administrator is left: {run:?}");
    assert_eq!(
        listed(&config)?,
        [
            ("ana".to_string(), "investigator".to_string()),
            ("bo".to_string(), "administrator".to_string()),
        ]
    );
    let text = std::fs::read_to_string(&config)?;
    assert!(text.contains("# kept: the operator's note"), "{text}");
    assert!(text.contains("# packhunt server config"), "{text}");
    assert_eq!(mode_of(&config), 0o600);
    // Still a config the frontend loads.
    packhunt::config::ServerConfig::load(&config)?;
    // Each change, and each refusal, is in the audit trail as the CLI's.
    let mut trail = String::new();
    for day in std::fs::read_dir(deployment.datastore().join("audit"))? {
        trail.push_str(&std::fs::read_to_string(day?.path())?);
    }
    let cli: Vec<&str> = trail
        .lines()
        .filter(|l| l.contains("\"via\":\"cli\""))
        .collect();
    for action in ["user.add", "user.passwd", "user.change", "user.remove"] {
        let needle = format!("\"action\":\"{action}\"");
        assert!(
            cli.iter().any(|l| l.contains(&needle)),
            "{action} missing:\n{trail}"
        );
    }
    Ok(())
}

/// Goal: every refusal exits non-zero with a message that says why, and leaves the file
/// as it was. Method: each refused command on a generated config, the bytes compared.
#[test]
fn refusals_change_nothing() -> Result<()> {
    let deployment = Deployment::generate_with(|_| {})?;
    let config = server_config(&deployment);
    let before = std::fs::read(&config)?;
    let cases: [(&[&str], Option<&str>, &str); 9] = [
        (
            &["add", "admin", "--role", "reader", "--password-stdin"],
            Some("long-enough-pw\n"),
            "already exists",
        ),
        (
            &["add", "x", "--role", "root", "--password-stdin"],
            Some("long-enough-pw\n"),
            "unknown role",
        ),
        (
            &["add", "x", "--role", "reader", "--password-stdin"],
            Some("short\n"),
            "shorter than 12",
        ),
        (
            &["add", "x", "--role", "reader", "--password-stdin"],
            Some(""),
            "shorter than 12",
        ),
        (
            &["add", "a b", "--role", "reader", "--password-stdin"],
            Some("long-enough-pw\n"),
            "user name",
        ),
        (
            &["add", "x:y", "--role", "reader", "--password-stdin"],
            Some("long-enough-pw\n"),
            "user name",
        ),
        // Standard input is a pipe, not a terminal, and no flag says where the password is.
        (
            &["add", "x", "--role", "reader"],
            Some("long-enough-pw\n"),
            "not a terminal",
        ),
        (&["remove", "admin"], None, "last administrator"),
        (
            &["passwd", "nobody", "--password-stdin"],
            Some("long-enough-pw\n"),
            "no user `nobody`",
        ),
    ];
    for (args, stdin, why) in cases {
        let run = user_command(&config, args, stdin)?;
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        assert!(
            run.stderr.contains(why),
            "{args:?}: expected `{why}` in {run:?}"
        );
        assert_eq!(std::fs::read(&config)?, before, "{args:?} changed the file");
    }
    // A password on the command line is not even an option.
    let run = user_command(
        &config,
        &["add", "x", "--role", "reader", "--password", "pw-on-argv-1"],
        None,
    )?;
    assert_eq!(run.code, Some(2), "{run:?}");
    let run = user_command(&config, &["role", "admin", "--role", "reader"], None)?;
    assert!(run.stderr.contains("last administrator"), "{run:?}");
    assert_eq!(std::fs::read(&config)?, before);
    Ok(())
}

/// Goal: a running master takes user changes from the file within seconds: a new user
/// gets in; a new password shuts out the old one and ends the user's GUI session; a
/// removed user is refused; a malformed file keeps the users (counted). Method: the
/// CLI edits the live master's config; Basic calls and a GUI session observe.
#[test]
fn a_running_master_takes_changes_without_a_restart() -> Result<()> {
    let mut deployment = Deployment::generate_with(|_| {})?;
    deployment.start_frontend()?;
    let config = server_config(&deployment);
    let ana = ("ana", "ana-password-1");
    let status_as = |who: (&str, &str)| -> Result<u16> {
        Ok(call_as(&deployment, who, "GET", "/api/v1/clients", None)?.status)
    };
    assert_eq!(status_as(ana)?, 401);
    let run = user_command(
        &config,
        &["add", "ana", "--role", "investigator", "--password-stdin"],
        Some("ana-password-1\n"),
    )?;
    assert!(run.ok(), "{run:?}");
    // Looked at twice a second: each refusal counts towards the address's login throttle.
    let every = Duration::from_millis(500);
    wait_until_every(
        "ana gets in",
        RELOAD_LIMIT,
        every,
        || status_as(ana),
        |s| *s == 200,
    )?;
    let session = GuiSession::login(&deployment, ana.0, ana.1)?;
    let in_session = || -> Result<u16> {
        Ok(session
            .request(&deployment, "GET", "/api/v1/clients", None)?
            .status)
    };
    assert_eq!(in_session()?, 200);

    let run = user_command(
        &config,
        &["passwd", "ana", "--password-stdin"],
        Some("ana-password-2\n"),
    )?;
    assert!(run.ok(), "{run:?}");
    wait_until(
        "the old password is refused",
        RELOAD_LIMIT,
        || status_as(ana),
        |s| *s == 401,
    )?;
    assert_eq!(
        in_session()?,
        401,
        "the session ended with the password change"
    );
    let ana = ("ana", "ana-password-2");
    assert_eq!(status_as(ana)?, 200);

    // A typo made by hand: the master keeps the users it has.
    let good = std::fs::read_to_string(&config)?;
    std::fs::write(&config, format!("{good}\n[[users]\nbroken"))?;
    let api = deployment.api();
    wait_until(
        "the malformed file is counted",
        RELOAD_LIMIT,
        || {
            status_as(ana)?;
            api.metric("packhunt_users_reload_failures_total")
        },
        |n| *n >= 1,
    )?;
    assert_eq!(status_as(ana)?, 200, "the old users stay");
    std::fs::write(&config, &good)?;

    let run = user_command(&config, &["remove", "ana"], None)?;
    assert!(run.ok(), "{run:?}");
    wait_until(
        "ana is refused",
        RELOAD_LIMIT,
        || status_as(ana),
        |s| *s == 401,
    )?;
    assert_eq!(status_as(("admin", ADMIN_PASSWORD))?, 200);
    assert!(api.metric("packhunt_users_reloads_total")? >= 3);
    Ok(())
}

/// Goal: the users API lists, adds, changes and removes with the CLI's checks, and a
/// change holds from its answer on. Method: the API as the admin, observed with the new
/// user's own credentials and the CLI's list.
#[test]
fn the_users_api() -> Result<()> {
    let mut deployment = Deployment::generate_with(|_| {})?;
    deployment.start_frontend()?;
    let config = server_config(&deployment);
    let api = deployment.api();
    let (status, body) = api.get("/api/v1/users")?;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({ "items": [{ "name": "admin", "role": "administrator" }] })
    );

    let new = json!({ "name": "ivy", "role": "investigator", "password": "ivy-password-1" });
    let (status, body) = api.post("/api/v1/users", &new)?;
    assert_eq!(
        (status, &body),
        (200, &json!({ "name": "ivy", "role": "investigator" }))
    );
    // No reload interval to wait for: the answer came after the master took the change.
    let ivy = api.with_auth("ivy", "ivy-password-1");
    assert_eq!(ivy.get("/api/v1/clients")?.0, 200);
    assert_eq!(ivy.get("/api/v1/users")?.0, 403);
    assert_eq!(listed(&config)?.len(), 2);
    assert_eq!(mode_of(&config), 0o600);

    let refusals = [
        (
            json!({ "name": "ivy", "role": "reader", "password": "ivy-password-1" }),
            409,
        ),
        (
            json!({ "name": "x y", "role": "reader", "password": "long-enough-pw" }),
            400,
        ),
        (
            json!({ "name": "xy", "role": "root", "password": "long-enough-pw" }),
            400,
        ),
        (
            json!({ "name": "xy", "role": "reader", "password": "short" }),
            400,
        ),
        (json!({ "name": "xy", "role": "reader" }), 400),
        (
            json!({ "name": "xy", "role": "reader", "password": "long-enough-pw", "x": 1 }),
            400,
        ),
    ];
    for (body, expected) in refusals {
        let (status, answer) = api.post("/api/v1/users", &body)?;
        assert_eq!(status, expected, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    assert_eq!(
        api.put("/api/v1/users/admin", &json!({ "role": "reader" }))?
            .0,
        409
    );
    assert_eq!(
        api.put("/api/v1/users/nobody", &json!({ "role": "reader" }))?
            .0,
        404
    );
    assert_eq!(api.put("/api/v1/users/ivy", &json!({}))?.0, 400);
    let (status, _) = api.request("DELETE", "/api/v1/users/admin", None)?;
    assert_eq!(status, 409, "the last administrator stays");

    let change = json!({ "role": "reader", "password": "ivy-password-2" });
    assert_eq!(api.put("/api/v1/users/ivy", &change)?.0, 200);
    assert_eq!(
        ivy.get("/api/v1/clients")?.0,
        401,
        "the old password is refused"
    );
    let ivy = api.with_auth("ivy", "ivy-password-2");
    let (status, _) = ivy.post("/api/v1/hunts", &json!({}))?;
    assert_eq!(status, 403, "a reader now");
    let (status, _) = api.request("DELETE", "/api/v1/users/ivy", None)?;
    assert_eq!(status, 200);
    assert_eq!(ivy.get("/api/v1/clients")?.0, 401);
    assert_eq!(listed(&config)?.len(), 1);
    Ok(())
}
