//! The `packhunt` command line: config generation, the frontend, the endpoint agent and
//! the quickstart. The only place (with tests and loadgen) that uses anyhow.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use packhunt::config::{generate, ClientConfig, ClientFile, ServerConfig};

#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "packhunt",
    version,
    about = "Thread-per-core frontend server for endpoint-visibility fleets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or extend a deployment's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run a frontend: the master (agent shards on the agent port, GUI/API on the GUI
    /// port, the replication service for minions) or, with --minion, a minion that serves
    /// agents only and links to the master.
    Frontend {
        /// server.config.toml written by `packhunt config generate` (the same file on
        /// every frontend).
        #[arg(long)]
        config: PathBuf,
        /// Run as a minion; --node names which one.
        #[arg(long, requires = "node")]
        minion: bool,
        /// HOST:PORT of the minion to run, as added with `packhunt config frontend --name`.
        #[arg(long, requires = "minion")]
        node: Option<String>,
    },
    /// Run an endpoint agent (Linux) that connects to the configured frontends.
    Client {
        /// client.config.toml written by `packhunt config generate`.
        #[arg(long)]
        config: PathBuf,
    },
    /// Manage the API's users (`[[users]]` in server.config.toml, edited in place). A
    /// running master takes changes within seconds, without a restart.
    #[command(subcommand)]
    User(UserCommand),
    /// Generate a config under ./packhunt-data if there is none, then start a master
    /// frontend with the GUI and print how to reach it.
    Quickstart {
        /// Where the deployment lives.
        #[arg(long, default_value = "packhunt-data")]
        dir: PathBuf,
        /// Also start this many local agents (separate processes) against the frontend.
        #[arg(long, default_value_t = 0)]
        clients: usize,
        /// Agent port of a newly generated deployment.
        #[arg(long, default_value_t = 8000)]
        frontend_port: u16,
        /// GUI/API port of a newly generated deployment.
        #[arg(long, default_value_t = 8889)]
        gui_port: u16,
        /// gRPC API port of a newly generated deployment.
        #[arg(long, default_value_t = packhunt::limits::DEFAULT_API_PORT)]
        api_port: u16,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Write a CA, the master's certificate, server.config.toml, client.config.toml and
    /// an `admin` user into a new folder.
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// Host agents use to reach the master; goes into its certificate.
        #[arg(long, default_value = "127.0.0.1")]
        public_host: String,
        #[arg(long, default_value_t = 8000)]
        frontend_port: u16,
        #[arg(long, default_value_t = 8889)]
        gui_port: u16,
        /// Port of the master's replication service, which minions connect to.
        #[arg(long, default_value_t = packhunt::config::DEFAULT_REPLICATION_PORT)]
        replication_port: u16,
        /// Port of the master's gRPC API (`[api]`, for scripts with API client certificates).
        #[arg(long, default_value_t = packhunt::limits::DEFAULT_API_PORT)]
        api_port: u16,
        /// Password of the `admin` user; generated and printed once if not given.
        #[arg(long, env = "PACKHUNT_ADMIN_PASSWORD")]
        admin_password: Option<String>,
        /// Generate an enrolment secret: agents must present it (it goes into both
        /// configs), so only agents configured from this deployment's client config enrol.
        #[arg(long)]
        enrolment_secret: bool,
        /// Agents reach the frontends through a load balancer at this name (IP or DNS
        /// name): it goes into the master's certificate (and, through the config, into
        /// every minion's), and client.config.toml lists only the balancer.
        #[arg(long, value_name = "HOST")]
        balancer_name: Option<String>,
        /// The balancer's port for agents (default: --frontend-port).
        #[arg(long, value_name = "PORT", requires = "balancer_name")]
        balancer_port: Option<u16>,
    },
    /// Move the secrets an older server.config.toml embeds to their own files: the CA key
    /// to ca.key.pem (keep it offline), each minion's key to its own minion config.
    SplitSecrets {
        /// The deployment's server.config.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Add a minion frontend: issues its certificate from the deployment CA (ca.key.pem
    /// beside the config), adds it to server.config.toml, writes the minion its own
    /// config (minion-HOST_PORT.config.toml, the only file with its key) and its URL to
    /// client.config.toml next to it. Restart the master so it accepts the new minion's
    /// link; then run the minion with
    /// `packhunt frontend --config minion-HOST_PORT.config.toml --minion --node HOST:PORT`.
    Frontend {
        /// The deployment's server.config.toml.
        #[arg(long)]
        config: PathBuf,
        /// HOST:PORT agents use to reach the minion; HOST goes into its certificate.
        #[arg(long)]
        name: String,
        /// Serve the minion's /metrics on this port (HTTPS, same users as the API).
        #[arg(long)]
        metrics_port: Option<u16>,
        /// A load balancer's name agents dial (IP or DNS name), put into the minion's
        /// certificate besides its own host; `frontend.balancer_names` of the config are
        /// added without it. client.config.toml is then left listing the balancer only.
        #[arg(long, value_name = "HOST")]
        balancer_name: Vec<String>,
    },
    /// Issue a client certificate for the gRPC API from the deployment CA and write the
    /// file a script connects with (api_url, CA, certificate, key; mode 0600). Needs the
    /// CA key (ca.key.pem beside server.config.toml), so run it where the CA key is.
    ApiClient {
        /// The deployment's server.config.toml.
        #[arg(long)]
        config: PathBuf,
        /// The client's name (letters, digits, `._@-`): the user the API and the audit
        /// trail see.
        #[arg(long)]
        name: String,
        /// What it may do: administrator, investigator or reader (as for users).
        #[arg(long)]
        role: String,
        /// Where to write the client's file.
        #[arg(long)]
        out: PathBuf,
        /// Replace `--out` if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user with a role: administrator, investigator or reader.
    Add {
        name: String,
        #[arg(long)]
        role: String,
        #[command(flatten)]
        password: PasswordInput,
        #[command(flatten)]
        config: UsersConfig,
    },
    /// Set a user's password (their browser sessions end).
    Passwd {
        name: String,
        #[command(flatten)]
        password: PasswordInput,
        #[command(flatten)]
        config: UsersConfig,
    },
    /// Change a user's role (their browser sessions end).
    Role {
        name: String,
        #[arg(long)]
        role: String,
        #[command(flatten)]
        config: UsersConfig,
    },
    /// Remove a user (not the last administrator).
    Remove {
        name: String,
        #[command(flatten)]
        config: UsersConfig,
    },
    /// List the users and their roles.
    List {
        #[command(flatten)]
        config: UsersConfig,
    },
}

#[derive(clap::Args)]
struct UsersConfig {
    /// The master's server.config.toml.
    #[arg(long)]
    config: PathBuf,
}

/// Where a new password comes from: never the command line (other users see it in ps
/// and it stays in shell history). Without either flag it is asked for on the terminal.
#[derive(clap::Args)]
struct PasswordInput {
    /// Read the password from standard input (one line).
    #[arg(long, conflicts_with = "password_file")]
    password_stdin: bool,
    /// Read the password from this file (one line).
    #[arg(long)]
    password_file: Option<PathBuf>,
}

fn main() {
    // Errors are for operators: the message chain, no backtrace, exit status 1.
    if let Err(e) = run() {
        eprintln!("packhunt: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PACKHUNT_LOG")
                // gRPC clients (Python's among them) send an IP address as SNI when they
                // connect by address; rustls ignores it as it should, and says so at warn
                // on every connection.
                .unwrap_or_else(|_| "warn,rustls::msgs::handshake=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Config(ConfigCommand::Generate {
            out,
            public_host,
            frontend_port,
            gui_port,
            replication_port,
            api_port,
            admin_password,
            enrolment_secret,
            balancer_name,
            balancer_port,
        }) => {
            let opts = generate::GenerateOptions {
                out_dir: out,
                public_host,
                frontend_port,
                gui_port,
                replication_port,
                api_port,
                admin_password,
                enrolment_secret,
                balancer_name,
                balancer_port,
            };
            let generated = generate::generate(&opts)?;
            print_generated(&generated);
            Ok(())
        }
        Command::Config(ConfigCommand::Frontend {
            config,
            name,
            metrics_port,
            balancer_name,
        }) => {
            let added = packhunt::config::minion::add_minion_behind(
                &config,
                &name,
                metrics_port,
                &balancer_name,
            )?;
            packhunt::say!("added minion {} to {}", added.name, config.display());
            match added.client_config_path {
                Some(client) => packhunt::say!(
                    "agents configured from {} now spread over it too",
                    client.display()
                ),
                None if !added.balancer_names.is_empty() => packhunt::say!(
                    "its certificate also carries {}: add it to the balancer's backends \
                     (agents keep dialling the balancer)",
                    added.balancer_names.join(", ")
                ),
                None => packhunt::say!(
                    "no client.config.toml next to it: add https://{}/ to your agents' server_urls",
                    added.name
                ),
            }
            packhunt::say!(
                "wrote {} (the minion's own config, with its key: copy it to the minion only)",
                added.minion_config_path.display()
            );
            packhunt::say!(
                "run it with: packhunt frontend --config {} --minion --node {}",
                added.minion_config_path.display(),
                added.name
            );
            Ok(())
        }
        Command::Config(ConfigCommand::ApiClient {
            config,
            name,
            role,
            out,
            force,
        }) => {
            let request = packhunt::config::api_client::ApiClientRequest {
                config,
                name,
                role,
                out,
                force,
            };
            let issued = packhunt::config::api_client::issue_api_client(&request)?;
            packhunt::say!(
                "wrote {} for API client `{}` ({}), gRPC API at {}",
                request.out.display(),
                issued.identity.name,
                issued.identity.role,
                issued.api_url
            );
            if !issued.api_enabled {
                packhunt::say!("note: [api] is disabled in the config; set enabled = true and restart the master");
            }
            Ok(())
        }
        Command::Config(ConfigCommand::SplitSecrets { config }) => {
            let split = packhunt::config::secrets::split_secrets(&config)?;
            if let Some(key) = &split.ca_key_path {
                packhunt::say!("moved the CA key to {} (keep it offline)", key.display());
            }
            for minion in &split.minion_configs {
                packhunt::say!("wrote {} (copy it to that minion only)", minion.display());
            }
            packhunt::say!("{} holds no CA or minion key now", config.display());
            Ok(())
        }
        Command::Frontend {
            config,
            minion: _,
            node,
        } => run_frontend(&config, node.as_deref()),
        Command::Client { config } => run_client(&config),
        Command::User(command) => run_user(command),
        Command::Quickstart {
            dir,
            clients,
            frontend_port,
            gui_port,
            api_port,
        } => quickstart(&dir, clients, frontend_port, gui_port, api_port),
    }
}

fn run_user(command: UserCommand) -> Result<()> {
    use packhunt::config::users::{self, UserChange};
    let (path, change) = match command {
        UserCommand::List { config } => {
            let list = users::load_users(&config.config)?;
            let width = list.iter().map(|u| u.name.len()).max().unwrap_or(0);
            for user in list {
                packhunt::say!("{:<width$}  {}", user.name, user.role);
            }
            return Ok(());
        }
        UserCommand::Add {
            name,
            role,
            password,
            config,
        } => {
            users::check_name(&name)?;
            let role = users::parse_role(&role)?;
            let password = read_password(&name, &password)?;
            let password_hash = generate::hash_password(&password);
            let change = UserChange::Add {
                name,
                role,
                password_hash,
            };
            (config.config, change)
        }
        UserCommand::Passwd {
            name,
            password,
            config,
        } => {
            let password = read_password(&name, &password)?;
            let change = UserChange::Update {
                name,
                role: None,
                password_hash: Some(generate::hash_password(&password)),
            };
            (config.config, change)
        }
        UserCommand::Role { name, role, config } => {
            let change = UserChange::Update {
                name,
                role: Some(users::parse_role(&role)?),
                password_hash: None,
            };
            (config.config, change)
        }
        UserCommand::Remove { name, config } => (config.config, UserChange::Remove { name }),
    };
    let applied = users::apply(&path, &change);
    audit_user_change(&path, &change, &applied);
    applied?;
    let done = match &change {
        UserChange::Add { role, .. } => format!("added user `{}` ({role})", change.name()),
        UserChange::Update {
            role: Some(role), ..
        } => format!("user `{}` now has the role {role}", change.name()),
        UserChange::Update { .. } => format!("set the password of `{}`", change.name()),
        UserChange::Remove { .. } => format!("removed user `{}`", change.name()),
    };
    packhunt::say!(
        "{done} in {}; a running master takes it within {} s",
        path.display(),
        packhunt::limits::USERS_RELOAD_INTERVAL.as_secs()
    );
    Ok(())
}

/// Records a `packhunt user` change (or its refusal) in the deployment's audit trail,
/// as the operator's login name via "cli". A datastore this command cannot open (another
/// account's, say) is warned about; the change itself stands.
fn audit_user_change(
    path: &std::path::Path,
    change: &packhunt::config::users::UserChange,
    applied: &Result<(), packhunt::config::users::UserError>,
) {
    use packhunt::audit::{action, outcome, via, AuditEntry, AuditLog};
    use packhunt::config::users::UserChange;
    let datastore = packhunt::config::ServerFile::load(path)
        .map_err(|e| e.to_string())
        .and_then(|file| {
            let location = file.datastore.location;
            packhunt::datastore::Datastore::open(location, file.datastore.fsync_documents)
                .map_err(|e| e.to_string())
        });
    let datastore = match datastore {
        Ok(datastore) => datastore,
        Err(e) => {
            tracing::warn!("not recorded in the audit trail: cannot open the datastore: {e}");
            return;
        }
    };
    let what = match change {
        UserChange::Add { .. } => action::USER_ADD,
        UserChange::Update {
            password_hash: Some(_),
            ..
        } => action::USER_PASSWD,
        UserChange::Update { .. } => action::USER_CHANGE,
        UserChange::Remove { .. } => action::USER_REMOVE,
    };
    let (result, detail) = match applied {
        Ok(()) => (outcome::OK, None),
        Err(e) if e.is_refusal() => (outcome::REFUSED, Some(e.to_string())),
        Err(e) => (outcome::FAILED, Some(e.to_string())),
    };
    let operator = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "(unknown operator)".into());
    let log = AuditLog::open(&datastore);
    log.record(
        AuditEntry::now(&operator, via::CLI, what, change.name(), result).with_detail(detail),
    );
    if !log.flush(std::time::Duration::from_secs(5)) {
        tracing::warn!("the audit entry for this change may not have been written");
    }
}

/// The new password of `name`: from standard input, a file, or asked twice on the
/// terminal (without echo).
fn read_password(name: &str, input: &PasswordInput) -> Result<String> {
    use packhunt::config::users::password_from_input;
    use std::io::{IsTerminal, Read};
    // One byte past the longest password and its line end tells "too long" from "fits".
    let cap = (packhunt::limits::MAX_PASSWORD_BYTES + 3) as u64;
    if input.password_stdin {
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(cap)
            .read_to_end(&mut bytes)
            .context("reading the password from standard input")?;
        return Ok(password_from_input(&bytes)?);
    }
    if let Some(file) = &input.password_file {
        let mut bytes = Vec::new();
        std::fs::File::open(file)
            .and_then(|f| f.take(cap).read_to_end(&mut bytes))
            .with_context(|| format!("reading the password from {}", file.display()))?;
        return password_from_input(&bytes)
            .with_context(|| format!("password file {}", file.display()));
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password: standard input is not a terminal; give --password-stdin or --password-file FILE");
    }
    let first = rpassword::prompt_password(format!("new password for `{name}`: "))
        .context("reading the password from the terminal")?;
    packhunt::config::users::check_password(&first)?;
    let again = rpassword::prompt_password("again: ").context("reading the password again")?;
    if first != again {
        bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

fn print_generated(g: &generate::Generated) {
    packhunt::say!("wrote {}", g.server_config_path.display());
    packhunt::say!("wrote {}", g.client_config_path.display());
    packhunt::say!(
        "wrote {} (the CA key: no frontend needs it; keep it offline and bring it back to add frontends)",
        g.ca_key_path.display()
    );
    if g.password_was_generated {
        packhunt::say!("admin password (shown once): {}", g.admin_password);
    }
}

fn run_frontend(path: &std::path::Path, node: Option<&str>) -> Result<()> {
    let config = ServerConfig::load(path)?;
    let identity = config.identity(node)?;
    packhunt::frontend::run_frontend(Arc::new(config), identity, path.to_path_buf())
        .context("frontend failed")?;
    Ok(())
}

/// Writes a file only its owner may read (mode 0600 from creation, so it is never
/// readable by others even for a moment).
fn write_owner_only(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An older file may have been made with wider bits.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)
}

fn run_client(path: &std::path::Path) -> Result<()> {
    let config = ClientConfig::load(path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(packhunt::agent::service::run_from_config(config))?;
    Ok(())
}

fn quickstart(
    dir: &std::path::Path,
    clients: usize,
    frontend_port: u16,
    gui_port: u16,
    api_port: u16,
) -> Result<()> {
    let server_config = dir.join("server.config.toml");
    if !server_config.exists() {
        let opts = generate::GenerateOptions {
            out_dir: dir.to_path_buf(),
            public_host: "127.0.0.1".into(),
            frontend_port,
            gui_port,
            replication_port: packhunt::config::DEFAULT_REPLICATION_PORT,
            api_port,
            admin_password: None,
            enrolment_secret: false,
            balancer_name: None,
            balancer_port: None,
        };
        let generated = generate::generate(&opts)?;
        print_generated(&generated);
        write_owner_only(
            &dir.join("admin-password.txt"),
            format!("{}\n", generated.admin_password).as_bytes(),
        )
        .context("saving the admin password")?;
    }
    let config = ServerConfig::load(&server_config)?;
    eprintln!(
        "GUI: https://{}/  (user admin, password in {})",
        config.gui.address,
        dir.join("admin-password.txt").display()
    );
    match config.api {
        Some(api) => eprintln!(
            "gRPC API: {} (port {}; client certificates: packhunt config api-client --config {} --name N --role R --out FILE)",
            api.address,
            api.address.port(),
            server_config.display()
        ),
        None => eprintln!("gRPC API: off (no enabled [api] section)"),
    }
    eprintln!(
        "agents: packhunt client --config {}",
        dir.join("client.config.toml").display()
    );
    let mut children = Vec::new();
    for i in 0..clients {
        let client_dir = dir.join(format!("client-{i}"));
        std::fs::create_dir_all(&client_dir)?;
        let client_config = client_dir.join("client.config.toml");
        let mut cc = ClientFile::load(&dir.join("client.config.toml"))?;
        cc.client.writeback_path = PathBuf::from("client.writeback.toml");
        packhunt::config::write_toml(&client_config, &cc)?;
        let exe = std::env::current_exe()?;
        let mut command = std::process::Command::new(exe);
        command.arg("client").arg("--config").arg(&client_config);
        // The local agents live only as long as the quickstart that started them.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        children.push(command.spawn()?);
    }
    if clients > 0 {
        packhunt::say!("started {clients} local agents");
    }
    let identity = config.identity(None)?;
    let result =
        packhunt::frontend::run_frontend(Arc::new(config), identity, server_config.clone());
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    if let Err(e) = result {
        bail!("frontend failed: {e}");
    }
    Ok(())
}
