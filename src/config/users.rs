//! The API's users: `[[users]]` in server.config.toml, read and changed in place. The
//! `packhunt user` commands and the users API (`api/users.rs`) both go through here, so
//! both apply the same checks and write the file the same way: edited with `toml_edit`
//! (the operator's comments and every other key are kept), checked to still load,
//! then replaced atomically (temp file, fsync, rename, fsync of the folder) with mode
//! 0600, under an exclusive lock on the folder so two editors never lose each other's
//! change.
//!
//! Must not: hash passwords (callers do, off any executor, after `check_password`), or
//! write a file the frontend would refuse to load.

use std::path::Path;
use std::sync::Mutex;

use super::{ConfigError, Role, ServerFile, UserEntry};
use crate::limits::{MAX_PASSWORD_BYTES, MAX_USERS_COUNT, MAX_USER_NAME_CHARS, MIN_PASSWORD_CHARS};

/// Why a user change was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user `{0}` already exists")]
    Duplicate(String),
    #[error("no user `{0}`")]
    UnknownUser(String),
    #[error(
        "`{0}` is the last administrator: add another administrator before removing it \
         or changing its role"
    )]
    LastAdministrator(String),
    #[error("user name `{name}`: {reason}")]
    BadName { name: String, reason: String },
    #[error("unknown role `{0}` (one of: administrator, investigator, reader)")]
    UnknownRole(String),
    #[error("the password is shorter than {MIN_PASSWORD_CHARS} characters")]
    PasswordTooShort,
    #[error("the password is longer than {MAX_PASSWORD_BYTES} bytes")]
    PasswordTooLong,
    #[error("there are already {MAX_USERS_COUNT} users")]
    TooManyUsers,
    #[error("the password must be one line of UTF-8 text")]
    PasswordNotText,
    #[error("nothing to change: give a role, a password or both")]
    NothingToChange,
    /// The file cannot be read, parsed or written, or its users are not valid.
    #[error("{0}")]
    Config(#[from] ConfigError),
}

impl UserError {
    /// Whether the caller asked for something that cannot be done (else the file or the
    /// disk is at fault).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Config(_))
    }
}

/// One change to the users, with any password already hashed.
#[derive(Debug, Clone)]
pub enum UserChange {
    Add {
        name: String,
        role: Role,
        password_hash: String,
    },
    Update {
        name: String,
        role: Option<Role>,
        password_hash: Option<String>,
    },
    Remove {
        name: String,
    },
}

impl UserChange {
    pub fn name(&self) -> &str {
        match self {
            Self::Add { name, .. } | Self::Update { name, .. } | Self::Remove { name } => name,
        }
    }
}

/// The role a CLI argument or an API body names.
pub fn parse_role(name: &str) -> Result<Role, UserError> {
    Role::parse(name).ok_or_else(|| UserError::UnknownRole(name.chars().take(64).collect()))
}

/// A user name is what Basic credentials, URLs and log lines carry without escaping:
/// 1 to `MAX_USER_NAME_CHARS` ASCII letters, digits, `.`, `_`, `-` and `@`, starting with
/// a letter or digit.
pub fn check_name(name: &str) -> Result<(), UserError> {
    let bad = |reason: &str| UserError::BadName {
        name: name.chars().take(MAX_USER_NAME_CHARS).collect(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name.chars().count() > MAX_USER_NAME_CHARS {
        return Err(bad(&format!(
            "is longer than {MAX_USER_NAME_CHARS} characters"
        )));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(bad("must start with a letter or a digit"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if !name.chars().all(allowed) {
        return Err(bad(
            "may hold only ASCII letters, digits, `.`, `_`, `-` and `@`",
        ));
    }
    Ok(())
}

/// At least `MIN_PASSWORD_CHARS` characters, at most `MAX_PASSWORD_BYTES` bytes.
pub fn check_password(password: &str) -> Result<(), UserError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UserError::PasswordTooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(UserError::PasswordTooLong);
    }
    Ok(())
}

/// A password given on standard input or in a file: the text, less one trailing line
/// end; it must be one line of UTF-8 and pass `check_password`.
pub fn password_from_input(input: &[u8]) -> Result<String, UserError> {
    let text = std::str::from_utf8(input).map_err(|_| UserError::PasswordNotText)?;
    let line = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(text);
    if line.contains(['\n', '\r']) {
        return Err(UserError::PasswordNotText);
    }
    check_password(line)?;
    Ok(line.to_string())
}

/// The users of the server config at `path`, checked as the frontend checks them at
/// start (at least one; argon2 PHC hashes; valid, unique names).
pub fn load_users(path: &Path) -> Result<Vec<UserEntry>, UserError> {
    let file = ServerFile::load(path)?;
    check_users(path, &file.users)?;
    Ok(file.users)
}

/// Applies `change` to the server config at `path`, in place.
pub fn apply(path: &Path, change: &UserChange) -> Result<(), UserError> {
    // Only new names must have the shape: a user written by hand before these checks
    // existed can still be changed or removed.
    if let UserChange::Add { name, .. } = change {
        check_name(name)?;
    }
    let _lock = EditLock::take(path)?;
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    // A broken file is reported as such, not as a failed edit.
    let before: ServerFile = parse_file(path, &text)?;
    check_users(path, &before.users)?;
    check_change(&before.users, change)?;
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
    edit(path, &mut doc, change)?;
    let edited = doc.to_string();
    let after: ServerFile = parse_file(path, &edited)?;
    check_users(path, &after.users)?;
    replace_private_file(path, &edited)
}

/// Refuses a change the users as they are cannot take.
fn check_change(users: &[UserEntry], change: &UserChange) -> Result<(), UserError> {
    let find = |name: &str| users.iter().find(|u| u.name == name);
    let administrators = users
        .iter()
        .filter(|u| u.role == Role::Administrator)
        .count();
    let last_administrator = |u: &UserEntry| u.role == Role::Administrator && administrators == 1;
    match change {
        UserChange::Add { name, .. } => {
            if find(name).is_some() {
                return Err(UserError::Duplicate(name.clone()));
            }
            if users.len() >= MAX_USERS_COUNT {
                return Err(UserError::TooManyUsers);
            }
        }
        UserChange::Update {
            name,
            role,
            password_hash,
        } => {
            let user = find(name).ok_or_else(|| unknown(name))?;
            if role.is_none() && password_hash.is_none() {
                return Err(UserError::NothingToChange);
            }
            if role.is_some_and(|r| r != Role::Administrator) && last_administrator(user) {
                return Err(UserError::LastAdministrator(name.clone()));
            }
        }
        UserChange::Remove { name } => {
            let user = find(name).ok_or_else(|| unknown(name))?;
            if last_administrator(user) {
                return Err(UserError::LastAdministrator(name.clone()));
            }
        }
    }
    Ok(())
}

/// An unknown user, named as far as an error line should quote a caller's text.
fn unknown(name: &str) -> UserError {
    UserError::UnknownUser(name.chars().take(MAX_USER_NAME_CHARS).collect())
}

/// Makes `change` in the document (already checked against its users).
fn edit(
    path: &Path,
    doc: &mut toml_edit::DocumentMut,
    change: &UserChange,
) -> Result<(), UserError> {
    let users = doc
        .entry("users")
        .or_insert_with(|| toml_edit::Item::ArrayOfTables(Default::default()));
    let Some(users) = users.as_array_of_tables_mut() else {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            key: "users".into(),
            message: "must be written as [[users]] tables to be edited".into(),
        }
        .into());
    };
    let position = |users: &toml_edit::ArrayOfTables, name: &str| {
        users
            .iter()
            .position(|t| t.get("name").and_then(|v| v.as_str()) == Some(name))
            .ok_or_else(|| unknown(name))
    };
    match change {
        UserChange::Add {
            name,
            role,
            password_hash,
        } => {
            let mut entry = toml_edit::Table::new();
            entry["name"] = toml_edit::value(name.as_str());
            entry["password_hash"] = toml_edit::value(password_hash.as_str());
            entry["role"] = toml_edit::value(role.as_str());
            // Right after the last user, not at the end of the file past other sections.
            if let Some(last) = users.iter().last().and_then(|t| t.position()) {
                entry.set_position(last);
            }
            users.push(entry);
        }
        UserChange::Update {
            name,
            role,
            password_hash,
        } => {
            let i = position(users, name)?;
            let entry = users.get_mut(i).expect("position is within the array");
            if let Some(role) = role {
                entry["role"] = toml_edit::value(role.as_str());
            }
            if let Some(hash) = password_hash {
                entry["password_hash"] = toml_edit::value(hash.as_str());
            }
        }
        UserChange::Remove { name } => {
            let i = position(users, name)?;
            users.remove(i);
        }
    }
    Ok(())
}

fn parse_file(path: &Path, text: &str) -> Result<ServerFile, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The checks the frontend makes at start, plus names that Basic credentials can carry,
/// each listed once.
fn check_users(path: &Path, users: &[UserEntry]) -> Result<(), ConfigError> {
    let invalid = |key: String, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key,
        message,
    };
    if users.is_empty() {
        return Err(invalid(
            "users".into(),
            "at least one user is needed for the API".into(),
        ));
    }
    if users.len() > MAX_USERS_COUNT {
        return Err(invalid(
            "users".into(),
            format!("more than {MAX_USERS_COUNT} users"),
        ));
    }
    for (i, user) in users.iter().enumerate() {
        if user.name.is_empty() || user.name.contains(':') {
            return Err(invalid(
                format!("users[{i}].name"),
                "must not be empty or hold `:` (Basic credentials could not carry it)".into(),
            ));
        }
        if users[..i].iter().any(|u| u.name == user.name) {
            return Err(invalid(
                format!("users[{i}].name"),
                format!("user `{}` is listed twice", user.name),
            ));
        }
        if argon2::PasswordHash::new(&user.password_hash).is_err() {
            return Err(invalid(
                format!("users[{i}].password_hash"),
                format!("user `{}`: not an argon2 PHC string", user.name),
            ));
        }
    }
    Ok(())
}

/// Held while a change is read, made and written: excludes other threads of this process
/// (the API's offloaded edits) and, with `flock` on the config's folder, other processes
/// (`packhunt user` beside a running master).
struct EditLock {
    _folder: std::fs::File,
    _thread: std::sync::MutexGuard<'static, ()>,
}

impl EditLock {
    fn take(path: &Path) -> Result<Self, ConfigError> {
        use std::os::fd::AsRawFd;
        static IN_PROCESS: Mutex<()> = Mutex::new(());
        let thread = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
        let folder_path = super::private_file::folder_of(path);
        let failed = |error: std::io::Error| ConfigError::Write {
            path: path.to_path_buf(),
            error,
        };
        let folder = std::fs::File::open(&folder_path).map_err(failed)?;
        // SAFETY: flock takes a file descriptor we own (open for the call's duration) and
        // plain flags; it touches no memory of ours.
        let locked = unsafe { libc::flock(folder.as_raw_fd(), libc::LOCK_EX) };
        if locked != 0 {
            return Err(failed(std::io::Error::last_os_error()));
        }
        // Closing the folder's descriptor (on drop) releases the lock.
        Ok(Self {
            _folder: folder,
            _thread: thread,
        })
    }
}

/// Replaces `path` with `text`: a temp file beside it (mode 0600), fsync, rename, fsync
/// of the folder. A crash leaves the old file or the new one, never a mix.
fn replace_private_file(path: &Path, text: &str) -> Result<(), UserError> {
    super::private_file::replace(path, text).map_err(UserError::Config)
}

#[cfg(test)]
mod tests {
    //! Goal: changes keep the file's comments and other keys, the file stays 0600 and
    //! loads, and every refusal the CLI and the API rely on happens here.
    //! Method: a small server config written by hand (not a generated one: no keys are
    //! needed to edit users), edited through `apply`.
    use super::*;
    use std::path::PathBuf;

    const FILE: &str = r#"# operator's note: keep this
[frontend]
public_host = "127.0.0.1"
bind_address = "0.0.0.0"
agent_port = 8000
certificate = "x"
private_key = "x"

[gui]
bind_address = "127.0.0.1"
port = 8889 # the GUI's port

[tls]
ca_certificate = "x"
ca_private_key = "x"

[datastore]
location = "datastore"

# the first user
[[users]]
name = "admin"
password_hash = "HASH"
role = "administrator"

[[sinks]]
name = "local"
kind = "file"
path = "events.jsonl"
"#;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("server.config.toml");
        let hash = crate::config::generate::hash_password("correct horse battery");
        std::fs::write(&path, FILE.replace("HASH", &hash)).expect("write");
        (dir, path)
    }

    fn add(path: &Path, name: &str, role: Role) -> Result<(), UserError> {
        let password_hash = crate::config::generate::hash_password("another good one");
        apply(
            path,
            &UserChange::Add {
                name: name.into(),
                role,
                password_hash,
            },
        )
    }

    fn names(path: &Path) -> Vec<(String, Role)> {
        load_users(path)
            .expect("users load")
            .into_iter()
            .map(|u| (u.name, u.role))
            .collect()
    }

    #[test]
    fn add_update_remove_keep_comments_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = setup();
        add(&path, "ana", Role::Investigator).expect("add");
        add(&path, "bo", Role::Reader).expect("add");
        assert_eq!(
            names(&path),
            [
                ("admin".to_string(), Role::Administrator),
                ("ana".to_string(), Role::Investigator),
                ("bo".to_string(), Role::Reader),
            ]
        );
        let text = std::fs::read_to_string(&path).unwrap();
        for kept in [
            "# operator's note: keep this",
            "# the GUI's port",
            "# the first user",
        ] {
            assert!(text.contains(kept), "{kept} lost:\n{text}");
        }
        // New users go with the others, before the sinks.
        assert!(text.find("name = \"bo\"").unwrap() < text.find("[[sinks]]").unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let new_hash = crate::config::generate::hash_password("a brand new password");
        apply(
            &path,
            &UserChange::Update {
                name: "ana".into(),
                role: Some(Role::Administrator),
                password_hash: Some(new_hash.clone()),
            },
        )
        .expect("update");
        let ana = load_users(&path)
            .unwrap()
            .into_iter()
            .find(|u| u.name == "ana");
        let ana = ana.expect("ana is there");
        assert_eq!(
            (ana.role, ana.password_hash),
            (Role::Administrator, new_hash)
        );
        apply(&path, &UserChange::Remove { name: "bo".into() }).expect("remove");
        apply(
            &path,
            &UserChange::Remove {
                name: "admin".into(),
            },
        )
        .expect("remove");
        assert_eq!(names(&path), [("ana".to_string(), Role::Administrator)]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# operator's note: keep this"), "{text}");
        assert!(text.contains("[[sinks]]"), "{text}");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn refusals() {
        let (_dir, path) = setup();
        let before = std::fs::read(&path).unwrap();
        assert!(matches!(
            add(&path, "admin", Role::Reader),
            Err(UserError::Duplicate(_))
        ));
        for bad in ["", "-x", "a b", "a:b", "é", "a/b", &"x".repeat(65)] {
            assert!(
                matches!(
                    add(&path, bad, Role::Reader),
                    Err(UserError::BadName { .. })
                ),
                "{bad}"
            );
        }
        let remove_admin = UserChange::Remove {
            name: "admin".into(),
        };
        assert!(matches!(
            apply(&path, &remove_admin),
            Err(UserError::LastAdministrator(_))
        ));
        let demote = UserChange::Update {
            name: "admin".into(),
            role: Some(Role::Reader),
            password_hash: None,
        };
        assert!(matches!(
            apply(&path, &demote),
            Err(UserError::LastAdministrator(_))
        ));
        assert!(matches!(
            apply(
                &path,
                &UserChange::Remove {
                    name: "nobody".into()
                }
            ),
            Err(UserError::UnknownUser(_))
        ));
        let nothing = UserChange::Update {
            name: "admin".into(),
            role: None,
            password_hash: None,
        };
        assert!(matches!(
            apply(&path, &nothing),
            Err(UserError::NothingToChange)
        ));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "refusals write nothing"
        );
        assert!(matches!(parse_role("root"), Err(UserError::UnknownRole(_))));
        assert_eq!(parse_role("investigator").unwrap(), Role::Investigator);
        assert!(matches!(
            check_password("short"),
            Err(UserError::PasswordTooShort)
        ));
        assert!(matches!(
            check_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(UserError::PasswordTooLong)
        ));
        check_password("twelve chars").expect("12 characters are enough");
        let read = |input: &[u8]| password_from_input(input).map_err(|e| e.to_string());
        assert_eq!(read(b"twelve chars\n").unwrap(), "twelve chars");
        assert_eq!(read(b"twelve chars\r\n").unwrap(), "twelve chars");
        assert_eq!(read(b" spaces kept ").unwrap(), " spaces kept ");
        assert!(read(b"two\nlines here\n").is_err());
        assert!(read(b"\xff\xfe not text at all").is_err());
        assert!(read(b"short\n").is_err());
    }

    #[test]
    fn a_hand_written_name_of_another_shape_can_still_be_changed() {
        let (_dir, path) = setup();
        let text = std::fs::read_to_string(&path).unwrap();
        let hash = crate::config::generate::hash_password("old style password");
        let extra = format!(
            "[[users]]\nname = \"Old Style\"\npassword_hash = \"{hash}\"\nrole = \"reader\"\n\n"
        );
        std::fs::write(
            &path,
            text.replace("[[sinks]]", &format!("{extra}[[sinks]]")),
        )
        .unwrap();
        assert_eq!(load_users(&path).unwrap().len(), 2);
        let promote = UserChange::Update {
            name: "Old Style".into(),
            role: Some(Role::Investigator),
            password_hash: None,
        };
        apply(&path, &promote).expect("role change");
        let remove = UserChange::Remove {
            name: "Old Style".into(),
        };
        apply(&path, &remove).expect("remove");
        assert_eq!(names(&path), [("admin".to_string(), Role::Administrator)]);
    }

    #[test]
    fn a_broken_file_is_reported_and_left_alone() {
        let (_dir, path) = setup();
        std::fs::write(&path, "[frontend\nbroken").unwrap();
        let err = add(&path, "ana", Role::Reader).unwrap_err();
        assert!(!err.is_refusal(), "{err}");
        assert!(err.to_string().contains("server.config.toml"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[frontend\nbroken");
    }
}
