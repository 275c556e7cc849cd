//! `sim serve`: the Globus emulator as a process, for the official tools and for
//! workflows developed without a Globus account.

use std::path::PathBuf;

use clap::Subcommand;

use crate::CliResult;

/// The `sim` subcommands.
#[derive(Subcommand)]
pub enum SimCommand {
    /// Serve the emulator until SIGINT or SIGTERM.
    ///
    /// Prints one JSON line on stdout once it accepts connections:
    /// {"transfer_url": ..., "auth_url": ..., "collections": {NAME: {"id": ..., "root": ...}}}
    /// then logs one line per request to stderr. Point the official tools at it with
    /// GLOBUS_SDK_SERVICE_URL_TRANSFER and GLOBUS_SDK_SERVICE_URL_AUTH set to those URLs.
    Serve(SimServeArgs),
}

/// `sim serve` options.
#[derive(clap::Args)]
pub struct SimServeArgs {
    /// Address to listen on (loopback unless you say otherwise).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// A collection: NAME=DIR (repeatable). DIR must exist.
    #[arg(long = "collection", value_name = "NAME=DIR")]
    collections: Vec<String>,
    /// Let only these identities use collection NAME (repeatable): a username, identity
    /// id or client id. A collection without any may be used by every identity the
    /// emulator authenticates.
    #[arg(long = "allow", value_name = "NAME=IDENTITY")]
    allow: Vec<String>,
    /// A bearer token valid for every scope, for one fixed identity.
    #[arg(long, env = "PS_GLOBUS_SIM_STATIC_TOKEN", hide_env_values = true)]
    static_token: Option<String>,
    /// A confidential client for the client_credentials grant: ID:SECRET (repeatable).
    /// Prefer --config to keep secrets out of the process list.
    #[arg(long = "client", value_name = "ID:SECRET")]
    clients: Vec<String>,
    /// Per-task overhead in milliseconds, spent after a task takes a running slot.
    #[arg(long)]
    task_latency_ms: Option<u64>,
    /// How long each request to a collection's HTTPS origin waits before it is served,
    /// in milliseconds (a wide-area round trip; default 0).
    #[arg(long)]
    https_latency_ms: Option<u64>,
    /// No HTTPS for collection NAME (repeatable): its endpoint document says
    /// `https_server: null`. Every collection has HTTPS otherwise, on a port of its own.
    #[arg(long = "no-https", value_name = "NAME")]
    no_https: Vec<String>,
    /// Copy rate per running task, e.g. 500MB/s or 1GiB/s (default unlimited).
    #[arg(long)]
    bandwidth: Option<String>,
    /// Copy rate shared by every running task (the sites' link), e.g. 1GB/s (default
    /// unlimited).
    #[arg(long)]
    link_bandwidth: Option<String>,
    /// Transfer requests per second per identity, metered over 10 s (default 20, as
    /// Globus documents; 0: unlimited).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Queued and running tasks allowed per identity (default 100, as at Globus).
    #[arg(long)]
    pending_cap: Option<usize>,
    /// Most ids in a task_id: filter (default 50, as at Globus).
    #[arg(long)]
    max_filter_task_ids: Option<usize>,
    /// The largest request body accepted, in bytes; larger is 413 (default 1 MiB: Globus
    /// documents no limit).
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// Seconds a fault stays in a recovered task's nice_status (default 900; 0: none).
    #[arg(long)]
    nice_status_linger_s: Option<u64>,
    /// Accept transfers whose destination paths overlap an unfinished transfer's
    /// (Globus refuses them: 409 Conflict).
    #[arg(long)]
    allow_identical_paths: bool,
    /// Accept bare `label:x` task_list filters (Globus documents only =, ~, ! and !~).
    #[arg(long)]
    bare_label_filters: bool,
    /// Copy a task's files in request order (Globus promises no order; by default the
    /// emulator uses a seeded random one).
    #[arg(long)]
    in_order: bool,
    /// Every real-service rule relaxed at once: no rate limit, no identical-path
    /// conflicts, bare label filters, no lingering nice_status, request order.
    #[arg(long)]
    lenient: bool,
    /// Probability that a Transfer request answers 503 (seeded).
    #[arg(long)]
    fail_rate: Option<f64>,
    /// Seed for injected faults.
    #[arg(long)]
    seed: Option<u64>,
    /// Access-token lifetime in seconds.
    #[arg(long)]
    token_lifetime_s: Option<u64>,
    /// Keep tasks, submission ids and events in FILE across restarts, as Globus does
    /// (created if missing). Without it, a restart forgets every task.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// A TOML file with any of the settings above, plus per-collection and fault options.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// `sim ...`
pub fn run(command: SimCommand) -> CliResult {
    match command {
        SimCommand::Serve(args) => serve(args),
    }
}

fn serve(args: SimServeArgs) -> CliResult {
    use ps_globus_sim::Simulator;
    let config = sim_config(args)?;
    let sim = Simulator::start_with_logging(config, true)?;
    // Handlers go in before the startup line: a supervisor may signal as soon as it reads it.
    use tokio::signal::unix::{SignalKind, signal};
    let (mut terminate, mut interrupt) = ps_globus::block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    println!("{}", sim.startup_line());
    std::io::Write::flush(&mut std::io::stdout())?;
    ps_globus::block_on(async {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    });
    eprintln!("ps-globus sim: shutting down");
    sim.shutdown();
    Ok(())
}

/// The emulator's configuration: the `--config` file's, with the flags over it.
fn sim_config(args: SimServeArgs) -> Result<ps_globus_sim::SimConfig, Box<dyn std::error::Error>> {
    use ps_globus_sim::SimConfig;
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            toml::from_str::<SimConfig>(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => SimConfig::default(),
    };
    add_collections(&mut config, &args)?;
    for spec in &args.allow {
        let (name, identity) = spec
            .split_once('=')
            .ok_or_else(|| format!("--allow {spec:?}: expected NAME=IDENTITY"))?;
        let collection = config.collections.get_mut(name).ok_or_else(|| {
            format!("--allow {spec:?}: no collection {name} (name it with --collection)")
        })?;
        collection
            .allow
            .get_or_insert_with(Vec::new)
            .push(identity.to_owned());
    }
    for spec in &args.clients {
        let (id, secret) = spec
            .split_once(':')
            .ok_or_else(|| "--client: expected ID:SECRET".to_owned())?;
        config.clients.insert(id.to_owned(), secret.to_owned());
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if args.static_token.is_some() {
        config.static_token = args.static_token;
    }
    if let Some(v) = args.task_latency_ms {
        config.task_latency_ms = v;
    }
    if let Some(v) = args.https_latency_ms {
        config.https_latency_ms = v;
    }
    for name in &args.no_https {
        config
            .collections
            .get_mut(name)
            .ok_or_else(|| format!("--no-https {name}: no such collection"))?
            .disable_https = true;
    }
    if args.bandwidth.is_some() {
        config.bandwidth = args.bandwidth;
    }
    if args.link_bandwidth.is_some() {
        config.link_bandwidth = args.link_bandwidth;
    }
    if args.lenient {
        config = config.lenient();
    }
    if args.rate_limit.is_some() {
        config.rate_limit = args.rate_limit;
    }
    if let Some(v) = args.pending_cap {
        config.pending_cap = v;
    }
    if let Some(v) = args.max_filter_task_ids {
        config.max_filter_task_ids = v;
    }
    if let Some(v) = args.max_body_bytes {
        config.max_body_bytes = v;
    }
    if let Some(v) = args.nice_status_linger_s {
        config.nice_status_linger_s = v;
    }
    config.identical_path_conflicts &= !args.allow_identical_paths;
    config.bare_label_filters |= args.bare_label_filters;
    config.ordered_copies |= args.in_order;
    if let Some(v) = args.fail_rate {
        config.fail_rate = v;
    }
    if args.state.is_some() {
        config.state_file = args.state;
    }
    if let Some(v) = args.seed {
        config.seed = v;
    }
    if let Some(v) = args.token_lifetime_s {
        config.token_lifetime_s = v;
    }
    Ok(config)
}

/// The `--collection NAME=DIR` flags, each name once, over the file's collections.
fn add_collections(
    config: &mut ps_globus_sim::SimConfig,
    args: &SimServeArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut named = std::collections::BTreeSet::new();
    for spec in &args.collections {
        let (name, dir) = spec
            .split_once('=')
            .ok_or_else(|| format!("--collection {spec:?}: expected NAME=DIR"))?;
        if !named.insert(name) {
            return Err(format!(
                "--collection {name} is given twice: give each collection its own name"
            )
            .into());
        }
        let entry = config.collections.entry(name.to_owned()).or_default();
        entry.root = PathBuf::from(dir);
    }
    Ok(())
}
