//! `endpoint configure|start|stop|list|remove|check|test` and `relay serve`: endpoints
//! (a drop-in for ProxyStore's `proxystore-endpoint`) and the relay they peer through.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use ps_globus::connector::endpoint::config::{EndpointFileConfig, SOCKET_FILE};
use ps_globus_endpoint::manage::{self, LOG_FILE, Status};
use ps_globus_endpoint::relay::auth::{PROXYSTORE_RELAY_AUDIENCE, RelayAuth};
use serde::Serialize;

use super::settings;
use crate::output::Output;
use crate::{CliResult, Exit};

/// The `endpoint` subcommands.
#[derive(Subcommand)]
pub enum EndpointCommand {
    /// Configure a new endpoint NAME in $PROXYSTORE_HOME/NAME/ (ProxyStore's layout, so
    /// ProxyStore's own EndpointConnector finds it).
    Configure(ConfigureArgs),
    /// Start an endpoint (in the background unless --no-detach; its log is
    /// $PROXYSTORE_HOME/NAME/log.txt). Prints its id and address once it answers.
    Start {
        name: String,
        /// Run in the foreground until SIGINT or SIGTERM.
        #[arg(long)]
        no_detach: bool,
    },
    /// Stop an endpoint (SIGTERM; SIGKILL after 10 s). Its objects stay.
    Stop { name: String },
    /// List the configured endpoints: name, status, id.
    List {
        #[command(flatten)]
        out: Output,
    },
    /// Remove a stopped endpoint, its configuration and its objects.
    Remove { name: String },
    /// Show a running endpoint's objects and its peering (relay connected, paths used);
    /// exits 1 when it does not run or its relay is not connected.
    Check {
        name: String,
        #[command(flatten)]
        out: Output,
    },
    /// Talk to an endpoint as a client would: put, get, exists, evict.
    Test(TestArgs),
}

/// `endpoint configure NAME ...`
#[derive(Args)]
pub struct ConfigureArgs {
    name: String,
    /// The REST API's port (default: a free one).
    #[arg(long)]
    port: Option<u16>,
    /// The relay to register with, tls://HOST:PORT (`ps-globus relay serve --tls-cert`),
    /// or tcp://HOST:PORT on loopback or without auth. Without one the endpoint serves
    /// its own objects only.
    #[arg(long)]
    relay_address: Option<String>,
    /// A CA certificate (PEM) to check a tls:// relay's certificate against, instead of
    /// the system's roots.
    #[arg(long)]
    relay_ca_file: Option<PathBuf>,
    /// How the relay checks this endpoint: globus (a token for a service identity,
    /// PS_GLOBUS_CLIENT_ID/SECRET or PROXYSTORE_GLOBUS_CLIENT_ID/SECRET) or none.
    #[arg(long, value_parser = ["globus", "none"])]
    relay_auth: Option<String>,
    /// The scope of the relay token (default: ProxyStore's relay scope).
    #[arg(long)]
    relay_scope: Option<String>,
    /// Where peers connect directly, HOST:PORT (default 0.0.0.0:0).
    #[arg(long)]
    peer_listen: Option<String>,
    /// An address peers are told to dial (repeatable; default: the listening address, or
    /// this host's addresses).
    #[arg(long)]
    peer_advertise: Vec<String>,
    /// How long a request to a peer may take, in seconds (default 30).
    #[arg(long)]
    peer_timeout_s: Option<u64>,
    /// Bytes of objects kept in memory (default 1 GiB); all are also in the database.
    #[arg(long)]
    memory_budget: Option<u64>,
    /// The largest object accepted, in bytes (default 100000000, at most 1000000000).
    #[arg(long)]
    max_object_size: Option<u64>,
    /// Serve REST clients on other hosts too (listening on --rest-host), whose user
    /// cannot be checked: anyone who reaches the port reads and writes every object.
    #[arg(long, requires = "rest_host")]
    allow_remote_clients: bool,
    /// The address the REST API listens on (default 127.0.0.1).
    #[arg(long)]
    rest_host: Option<String>,
}

/// `endpoint test NAME [--remote UUID] OP`.
#[derive(Args)]
pub struct TestArgs {
    name: String,
    /// The endpoint that holds the object (default: this one).
    #[arg(long)]
    remote: Option<uuid::Uuid>,
    #[command(subcommand)]
    op: TestOp,
}

/// One client operation.
#[derive(Subcommand)]
pub enum TestOp {
    /// Store DATA (UTF-8) under a new key; prints the key.
    Put { data: String },
    /// Print the object under KEY.
    Get { key: String },
    /// Whether an object is under KEY.
    Exists { key: String },
    /// Remove the object under KEY.
    Evict { key: String },
}

/// The `relay` subcommands.
#[derive(Subcommand)]
pub enum RelayCommand {
    /// Serve a relay until SIGINT or SIGTERM. Prints {"address": "tcp://HOST:PORT"} once
    /// it accepts connections. With --auth globus (the default) it checks each endpoint's
    /// token by introspection as the confidential client PS_GLOBUS_CLIENT_ID/SECRET at
    /// PS_GLOBUS_AUTH_URL.
    Serve(RelayServeArgs),
}

/// `relay serve` options.
#[derive(Args)]
pub struct RelayServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8700")]
    listen: String,
    /// globus (introspect each token) or none (every endpoint is one identity).
    #[arg(long, default_value = "globus", value_parser = ["globus", "none"])]
    auth: String,
    /// The audience a token must carry (default: ProxyStore's relay resource server).
    #[arg(long, default_value = PROXYSTORE_RELAY_AUDIENCE)]
    audience: String,
    /// Serve TLS with this certificate chain (PEM); endpoints then use tls://. Needed
    /// for tokens to cross a network.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn home() -> PathBuf {
    settings().proxystore_home.clone()
}

fn err(e: impl std::fmt::Display) -> Box<dyn std::error::Error> {
    Box::new(Exit(1, e.to_string()))
}

/// `endpoint ...`
pub fn run(command: EndpointCommand, verbose: u8) -> CliResult {
    let home = home();
    match command {
        EndpointCommand::Configure(args) => configure(&home, args),
        EndpointCommand::Start { name, no_detach } => {
            let (dir, _) = manage::find(&home, &name).map_err(err)?;
            if no_detach {
                foreground(&dir)
            } else {
                detach(&home, &dir, &name, verbose)
            }
        }
        EndpointCommand::Stop { name } => {
            let (dir, _) = manage::find(&home, &name).map_err(err)?;
            let was =
                ps_globus::block_on(manage::stop(&dir, Duration::from_secs(10))).map_err(err)?;
            eprintln!(
                "{}",
                if was {
                    format!("stopped {name}")
                } else {
                    format!("{name} was not running")
                }
            );
            Ok(())
        }
        EndpointCommand::List { out } => list(&home, &out),
        EndpointCommand::Remove { name } => {
            let (dir, _) = manage::find(&home, &name).map_err(err)?;
            manage::remove(&dir).map_err(err)?;
            eprintln!("removed {name} ({})", dir.display());
            Ok(())
        }
        EndpointCommand::Check { name, out } => check(&home, &name, &out),
        EndpointCommand::Test(args) => test(&home, args),
    }
}

fn configure(home: &Path, args: ConfigureArgs) -> CliResult {
    let port = match args.port {
        Some(port) => port,
        None => std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port(),
    };
    let mut config = EndpointFileConfig::new(&args.name, port)?;
    if let Some(size) = args.max_object_size {
        if size == 0 || size > ps_globus_endpoint::storage::SQLITE_MAX_BLOB {
            return Err(Exit(
                2,
                format!(
                    "--max-object-size must be 1 to {}",
                    ps_globus_endpoint::storage::SQLITE_MAX_BLOB
                ),
            )
            .into());
        }
        config.storage.max_object_size = Some(size);
    }
    let ext = &mut config.ps_globus;
    ext.relay_address = args.relay_address;
    ext.relay_auth = args.relay_auth;
    ext.relay_scope = args.relay_scope;
    ext.relay_ca_file = match args.relay_ca_file {
        Some(path) => Some(std::path::absolute(path)?.display().to_string()),
        None => None,
    };
    ext.peer_listen = args.peer_listen;
    ext.peer_advertise = args.peer_advertise;
    ext.peer_timeout_s = args.peer_timeout_s;
    ext.memory_budget = args.memory_budget;
    ext.allow_remote_clients = args.allow_remote_clients;
    ext.rest_host = args.rest_host;
    let dir = manage::configure(home, &config).map_err(err)?;
    println!("{}", config.uuid);
    eprintln!(
        "configured endpoint {} ({}) in {}; start it with `ps-globus endpoint start {}`",
        config.name,
        config.uuid,
        dir.display(),
        config.name
    );
    Ok(())
}

fn foreground(dir: &Path) -> CliResult {
    use tokio::signal::unix::{SignalKind, signal};
    let dir = dir.to_owned();
    ps_globus::block_on(async move {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        };
        ps_globus_endpoint::serve::run(&dir, shutdown)
            .await
            .map_err(err)
    })
}

/// Starts the endpoint in a child of its own session, logging to its directory, and
/// waits until it answers (or says why it could not start).
fn detach(home: &Path, dir: &Path, name: &str, verbose: u8) -> CliResult {
    if let Status::Running(pid) = manage::status(dir) {
        return Err(Exit(1, format!("{name} is already running (pid {pid})")).into());
    }
    let log_path = dir.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .arg(format!("-{}", "v".repeat(usize::from(verbose.max(1)))))
        .args(["endpoint", "start", name, "--no-detach"])
        .env("PROXYSTORE_HOME", home)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            return Err(Exit(
                1,
                format!(
                    "{name} exited at start ({status}); its log says:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ),
            )
            .into());
        }
        let config = EndpointFileConfig::load(dir)?;
        if config.host.is_some() && dir.join(SOCKET_FILE).exists() {
            println!("{}", config.uuid);
            eprintln!(
                "started {name} ({}) at http://{}:{}/ (pid {})",
                config.uuid,
                config.host.unwrap_or_default(),
                config.port,
                child.id()
            );
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Exit(
                1,
                format!(
                    "{name} did not come up within 20 s; see {}",
                    log_path.display()
                ),
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[derive(Serialize)]
struct Listed {
    name: String,
    status: String,
    uuid: String,
    dir: PathBuf,
}

fn list(home: &Path, out: &Output) -> CliResult {
    let mut problems = Vec::new();
    let listed: Vec<Listed> =
        ps_globus::connector::endpoint::config::configs_in(home, &mut problems)
            .into_iter()
            .map(|(dir, config)| Listed {
                name: config.name,
                status: manage::status(&dir).to_string(),
                uuid: config.uuid.to_string(),
                dir,
            })
            .collect();
    for problem in problems {
        eprintln!("skipped: {problem}");
    }
    if out.machine() {
        return out.emit(&listed);
    }
    if listed.is_empty() {
        eprintln!("no endpoint configured in {}", home.display());
        return Ok(());
    }
    println!("{:<24} {:<8} UUID", "NAME", "STATUS");
    for e in listed {
        println!("{:<24} {:<8} {}", e.name, e.status, e.uuid);
    }
    Ok(())
}

/// A client for the endpoint in `dir`, over its Unix socket.
fn socket_client(dir: &Path) -> Result<reqwest::Client, Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .unix_socket(dir.join(SOCKET_FILE))
        .timeout(Duration::from_secs(300))
        .build()?)
}

fn check(home: &Path, name: &str, out: &Output) -> CliResult {
    let (dir, _) = manage::find(home, name).map_err(err)?;
    if manage::status(&dir) == Status::Stopped {
        return Err(Exit(
            1,
            format!("{name} is not running (`ps-globus endpoint start {name}`)"),
        )
        .into());
    }
    let http = socket_client(&dir)?;
    let status: serde_json::Value = ps_globus::block_on(async move {
        http.get("http://endpoint/ps-globus/status")
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    })?;
    if out.machine() {
        out.emit(&status)?;
    } else {
        println!(
            "endpoint   {} ({})",
            status["name"].as_str().unwrap_or(""),
            status["uuid"].as_str().unwrap_or("")
        );
        println!(
            "objects    {} ({} bytes, {} in memory)",
            status["objects"], status["bytes"], status["memory_bytes"]
        );
        match status["peering"].as_object() {
            None => println!("peering    none (no relay configured)"),
            Some(p) => {
                println!(
                    "relay      {} ({})",
                    p["relay"].as_str().unwrap_or(""),
                    if p["connected"] == true {
                        "connected"
                    } else {
                        "NOT connected"
                    }
                );
                if let Some(problem) = p["problem"].as_str() {
                    println!("problem    {problem}");
                }
                println!(
                    "paths      {} direct, {} relayed connections",
                    p["direct_connections"], p["relayed_connections"]
                );
            }
        }
    }
    match status["peering"]["connected"].as_bool() {
        Some(false) => Err(Exit(1, format!("{name} is not connected to its relay")).into()),
        _ => Ok(()),
    }
}

fn test(home: &Path, args: TestArgs) -> CliResult {
    let (dir, config) = manage::find(home, &args.name).map_err(err)?;
    let http = socket_client(&dir)?;
    let endpoint = args.remote.unwrap_or(config.uuid).to_string();
    let (method, route, key, body) = match args.op {
        TestOp::Put { data } => (
            reqwest::Method::POST,
            "set",
            uuid::Uuid::new_v4().to_string(),
            Some(data.into_bytes()),
        ),
        TestOp::Get { key } => (reqwest::Method::GET, "get", key, None),
        TestOp::Exists { key } => (reqwest::Method::GET, "exists", key, None),
        TestOp::Evict { key } => (reqwest::Method::POST, "evict", key, None),
    };
    let query = [("key", key.clone()), ("endpoint", endpoint)];
    let response = ps_globus::block_on(async move {
        let mut request = http
            .request(method, format!("http://endpoint/{route}"))
            .query(&query);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, bytes))
    })?;
    let (status, bytes) = response;
    match (route, status.as_u16()) {
        ("set", 200) => println!("{key}"),
        ("get", 200) => println!("{}", String::from_utf8_lossy(&bytes)),
        ("get", 404) => return Err(Exit(1, format!("no object under {key}")).into()),
        ("exists", 200) => println!("{}", String::from_utf8_lossy(&bytes)),
        ("evict", 200) => eprintln!("evicted {key}"),
        (_, code) => {
            return Err(Exit(
                1,
                format!(
                    "{route} failed ({code}): {}",
                    String::from_utf8_lossy(&bytes)
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// `relay ...`
pub fn relay(command: RelayCommand) -> CliResult {
    let RelayCommand::Serve(args) = command;
    use tokio::signal::unix::{SignalKind, signal};
    let auth = match args.auth.as_str() {
        "none" => RelayAuth::None,
        _ => {
            let s = settings();
            let (Some(id), Some(secret)) = (&s.client_id, &s.client_secret) else {
                return Err(Exit(
                    2,
                    "--auth globus needs the relay's confidential client in PS_GLOBUS_CLIENT_ID and PS_GLOBUS_CLIENT_SECRET (or --auth none)".into(),
                )
                .into());
            };
            RelayAuth::globus(&s.auth_url, id, secret, &args.audience).map_err(err)?
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(ps_globus_endpoint::relay::transport::acceptor(cert, key).map_err(err)?)
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "tls" } else { "tcp" };
    ps_globus::block_on(async move {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let listener = tokio::net::TcpListener::bind(&args.listen).await?;
        println!(
            "{}",
            serde_json::json!({"address": format!("{scheme}://{}", listener.local_addr()?)})
        );
        tokio::select! {
            () = ps_globus_endpoint::relay::server::serve(listener, auth, tls) => {}
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        eprintln!("ps-globus relay: shutting down");
        Ok(())
    })
}
