//! The `ps-globus` command line: a thin layer over the library.
//!
//! Exit codes follow globus-cli: 0 success, 1 failure, 2 usage, 4 login or consent
//! needed.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

mod stage;

use clap::{Parser, Subcommand};
use ps_globus::Store;
use ps_globus::proxy::ProxyFactory;

/// Pass-by-reference for distributed workflows, with Globus Transfer moving the bytes.
#[derive(Parser)]
#[command(name = "ps-globus", version, about, long_about = None)]
struct Cli {
    /// Log more to stderr (-v info, -vv debug, -vvv trace). PS_GLOBUS_LOG takes
    /// tracing filter directives instead (e.g. `ps_globus=trace`). Tokens, codes and
    /// secrets are never logged, at any level.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Log in to Globus as a user (a native app with PKCE; tokens kept in the OS keyring,
    /// or a 0600 file where no keyring works).
    ///
    /// Needs the native app's client id in PS_GLOBUS_CLIENT_ID or the config file.
    /// Collections given with --collection, and those of every configured site, get
    /// the data_access consent they need (GCSv5 mapped collections); consents already
    /// held are kept. On a desktop a browser opens and the login returns to a one-shot
    /// loopback server; over SSH or without a display the URL is printed and the code
    /// is pasted back.
    Login(LoginArgs),
    /// Revoke the stored tokens at Globus Auth and delete them here.
    Logout,
    /// Show who is logged in, the tokens held (never the tokens themselves), their
    /// expiry and consents. Exits 4 when not logged in.
    Whoami {
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Transfer files or directories between sites or collections (SITE:PATH,
    /// COLLECTION_UUID:PATH, or a local path at the current site), through the
    /// transfer manager: exactly once, coalesced into few Globus tasks, tracked in the
    /// state database. Waits with progress unless --no-wait; Ctrl-C stops waiting, not
    /// the transfer.
    Transfer(stage::TransferArgs),
    /// `transfer` into this site: the destination is a local path here.
    StageIn(stage::TransferArgs),
    /// `transfer` out of this site: the source is a local path here.
    StageOut(stage::TransferArgs),
    /// Globus tasks: list, show, wait, cancel, events.
    #[command(subcommand)]
    Task(stage::TaskCommand),
    /// Every task the local state database tracks, with live totals.
    Status {
        /// Refresh every second until nothing is in flight (Ctrl-C to stop).
        #[arg(long)]
        watch: bool,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Sites in the configuration file.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Check the configuration, the current site, credentials and every site's
    /// collection, with a fix for each problem. Exits 1 if anything is wrong.
    Doctor {
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Run the product end to end on the built-in emulator: a producer at site A
    /// proxies objects, a consumer process at site B resolves and verifies them, and
    /// Globus (emulated) moves the bytes.
    Demo(DemoArgs),
    /// The consumer half of `demo` (reads `INDEX<TAB>PROXY` lines on stdin).
    #[command(hide = true)]
    DemoConsumer {
        #[arg(long)]
        max_size: usize,
    },
    /// Named, persistent dataset references (kept in the state database).
    #[command(subcommand)]
    Ref(RefCommand),
    /// Work with serialized proxies (the JSON a proxy serializes to).
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// The local Globus emulator (Transfer + Auth APIs on loopback).
    #[command(subcommand)]
    Sim(SimCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Write a commented starting configuration (and print its path).
    Init {
        #[arg(long)]
        force: bool,
    },
    /// Print where the configuration file is.
    Path,
}

#[derive(Subcommand)]
enum SiteCommand {
    /// Add (or replace) a site: looks the collection up and checks the local path.
    Add(stage::SiteAddArgs),
    /// List the configured sites.
    List {
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct DemoArgs {
    /// How many objects to proxy.
    #[arg(long, default_value_t = 100)]
    objects: usize,
    /// The largest object, in bytes (sizes are mixed, from 1 KiB up).
    #[arg(long, default_value_t = 4 << 20)]
    max_size: usize,
    /// Globus's per-task overhead on the emulator, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    task_latency_ms: u64,
}

#[derive(clap::Args)]
struct LoginArgs {
    /// A collection that needs a data_access consent (repeatable).
    #[arg(long = "collection", value_name = "UUID")]
    collections: Vec<uuid::Uuid>,
    /// Print the URL and read the code from standard input (the default over SSH or
    /// without a display).
    #[arg(long, conflicts_with = "local_server")]
    no_local_server: bool,
    /// Receive the code on a loopback server even where copy-paste is the default.
    #[arg(long)]
    local_server: bool,
    /// Log in again even when the stored login already covers everything asked for.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
enum SimCommand {
    /// Serve the emulator until SIGINT or SIGTERM.
    ///
    /// Prints one JSON line on stdout once it accepts connections:
    /// {"transfer_url": ..., "auth_url": ..., "collections": {NAME: {"id": ..., "root": ...}}}
    /// then logs one line per request to stderr. Point the official tools at it with
    /// GLOBUS_SDK_SERVICE_URL_TRANSFER and GLOBUS_SDK_SERVICE_URL_AUTH set to those URLs.
    Serve(SimServeArgs),
}

#[derive(clap::Args)]
struct SimServeArgs {
    /// Address to listen on (loopback unless you say otherwise).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// A collection: NAME=DIR (repeatable). DIR must exist.
    #[arg(long = "collection", value_name = "NAME=DIR")]
    collections: Vec<String>,
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
    /// Copy rate per running task, e.g. 500MB/s or 1GiB/s (default unlimited).
    #[arg(long)]
    bandwidth: Option<String>,
    /// Requests per second per identity, averaged over 10 s (default unlimited).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Probability that a Transfer request answers 503 (seeded).
    #[arg(long)]
    fail_rate: Option<f64>,
    /// Seed for injected faults.
    #[arg(long)]
    seed: Option<u64>,
    /// Access-token lifetime in seconds.
    #[arg(long)]
    token_lifetime_s: Option<u64>,
    /// A TOML file with any of the settings above, plus per-collection and fault options.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum RefCommand {
    /// List the references.
    List {
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show one reference: its store, connector and key.
    Show { name: String },
    /// Wait until the data is at this site, verify it, and print its local path.
    Resolve { name: String },
    /// Forget a reference (the data stays).
    Rm { name: String },
    /// Print a reference's pasteable string form (psgref1....).
    Export { name: String },
    /// Save a reference from its string form.
    Import {
        /// The string form (psgref1....).
        text: String,
        /// Save it under this name instead of its own.
        #[arg(long)]
        name: Option<String>,
        /// Replace a reference of the same name.
        #[arg(long)]
        replace: bool,
    },
    /// Save a reference to the object a serialized proxy names.
    Add {
        name: String,
        /// File holding the proxy's JSON; `-` reads standard input.
        proxy: String,
        /// Replace a reference of the same name.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Subcommand)]
enum ProxyCommand {
    /// Show what a serialized proxy refers to: its store, connector and key.
    Inspect {
        /// File holding the proxy's JSON; `-` or nothing reads standard input.
        #[arg(default_value = "-")]
        file: String,
    },
    /// Write the stored bytes of the object a proxy refers to (as stored: raw byte
    /// payloads as themselves, other values in the store's codec).
    Fetch {
        /// File holding the proxy's JSON; `-` reads standard input.
        #[arg(default_value = "-")]
        file: String,
        /// Where to write the bytes.
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if let Some(Exit(code, message)) = error.downcast_ref::<Exit>() {
                if !message.is_empty() {
                    eprintln!("error: {message}");
                }
                return ExitCode::from(*code);
            }
            eprintln!("error: {error}");
            let needs_login = error
                .downcast_ref::<ps_globus::Error>()
                .is_some_and(ps_globus::Error::needs_login);
            ExitCode::from(if needs_login { 4 } else { 1 })
        }
    }
}

/// Logs go to stderr, filtered by PS_GLOBUS_LOG (tracing directives) or -v.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("PS_GLOBUS_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::new(directives),
        _ => EnvFilter::new(match verbose {
            0 => "warn",
            1 => "ps_globus=info",
            2 => "ps_globus=debug",
            _ => "ps_globus=trace",
        }),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true)
        .init();
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Ends the command with this exit code (and message, if any), as globus-cli does for
/// failed tasks and expired timeouts.
#[derive(Debug)]
struct Exit(u8, String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}

fn run(command: Command) -> CliResult {
    match command {
        Command::Transfer(args) => {
            ps_globus::block_on(stage::transfer(args, stage::Direction::Any))?
        }
        Command::StageIn(args) => ps_globus::block_on(stage::transfer(args, stage::Direction::In))?,
        Command::StageOut(args) => {
            ps_globus::block_on(stage::transfer(args, stage::Direction::Out))?
        }
        Command::Task(command) => ps_globus::block_on(stage::task(command))?,
        Command::Status { watch, json } => ps_globus::block_on(stage::status(watch, json))?,
        Command::Config(ConfigCommand::Init { force }) => stage::config_init(force)?,
        Command::Config(ConfigCommand::Path) => {
            println!("{}", ps_globus::config::Config::default_path().display())
        }
        Command::Site(SiteCommand::Add(args)) => ps_globus::block_on(stage::site_add(args))?,
        Command::Site(SiteCommand::List { json: true }) => {
            let sites = ps_globus::config::Config::load()?.sites;
            println!("{}", serde_json::to_string_pretty(&sites)?);
        }
        Command::Site(SiteCommand::List { json: false }) => {
            for (name, s) in ps_globus::config::Config::load()?.sites {
                println!(
                    "{name}\t{}\t{} = {}\t{}",
                    s.collection,
                    s.collection_path,
                    s.local_path.display(),
                    s.host_regex.unwrap_or_default()
                );
            }
        }
        Command::Doctor { json } => ps_globus::block_on(stage::doctor(json))?,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "ps-globus",
                &mut std::io::stdout(),
            );
        }
        Command::Demo(args) => demo(args)?,
        Command::DemoConsumer { max_size } => demo_consumer(max_size)?,
        Command::Ref(command) => ps_globus::block_on(reference(command))?,
        Command::Login(args) => login(args)?,
        Command::Logout => logout()?,
        Command::Whoami { json } => whoami(json)?,
        Command::Proxy(ProxyCommand::Inspect { file }) => {
            let factory = ProxyFactory::from_json(&read_input(&file)?)?;
            println!("{}", serde_json::to_string_pretty(&factory)?);
        }
        Command::Sim(SimCommand::Serve(args)) => sim_serve(args)?,
        Command::Proxy(ProxyCommand::Fetch { file, output }) => {
            let factory = ProxyFactory::from_json(&read_input(&file)?)?;
            let store = Store::from_config((*factory.store).clone())?;
            let bytes =
                ps_globus::block_on(store.connector().get(&factory.key))?.ok_or_else(|| {
                    format!("object {} is not in store '{}'", factory.key, store.name())
                })?;
            std::fs::write(&output, &bytes)
                .map_err(|e| format!("write {}: {e}", output.display()))?;
            eprintln!("wrote {} bytes to {}", bytes.len(), output.display());
        }
    }
    Ok(())
}

async fn reference(command: RefCommand) -> CliResult {
    use ps_globus::proxy::{DatasetRef, list_refs, load_ref, remove_ref, save_ref};
    let db = ps_globus::state::StateDb::open_default().await?;
    let find = |name: String| {
        let db = db.clone();
        async move {
            let found: Result<DatasetRef, Box<dyn std::error::Error>> =
                match load_ref(&db, &name).await? {
                    Some(r) => Ok(r),
                    None => Err(
                        format!("no reference named {name:?} (see `ps-globus ref list`)").into(),
                    ),
                };
            found
        }
    };
    match command {
        RefCommand::List { json } => {
            let refs = list_refs(&db).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&refs)?);
            }
            for r in refs.iter().filter(|_| !json) {
                println!("{}\t{}\t{}", r.name, r.store.name, r.key.id());
            }
        }
        RefCommand::Show { name } => {
            println!("{}", serde_json::to_string_pretty(&find(name).await?)?);
        }
        RefCommand::Resolve { name } => {
            let r = find(name).await?;
            println!("{}", r.store()?.resolve_path_async(&r.key).await?.display());
        }
        RefCommand::Rm { name } => {
            if !remove_ref(&db, &name).await? {
                return Err(format!("no reference named {name:?}").into());
            }
        }
        RefCommand::Export { name } => println!("{}", find(name).await?.to_string_form()?),
        RefCommand::Import {
            text,
            name,
            replace,
        } => {
            let mut r = DatasetRef::from_string_form(&text)?;
            if let Some(name) = name {
                r.name = name;
            }
            save_ref(&db, &r, replace).await?;
            eprintln!("saved reference {}", r.name);
        }
        RefCommand::Add {
            name,
            proxy,
            replace,
        } => {
            let factory = ProxyFactory::from_json(&read_input(&proxy)?)?;
            let r = DatasetRef::new(name, (*factory.store).clone(), factory.key.clone());
            save_ref(&db, &r, replace).await?;
            eprintln!("saved reference {}", r.name);
        }
    }
    Ok(())
}

fn demo(args: DemoArgs) -> CliResult {
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
    use std::io::{BufRead, Write};
    let started = std::time::Instant::now();
    let sites = ps_globus::demo::TwoSites::start(args.task_latency_ms)?;
    eprintln!(
        "ps-globus demo: emulator at {} with sites a and b (task latency {} ms)",
        sites.sim.transfer_url(),
        args.task_latency_ms
    );
    let store = Store::builder("ps-globus-demo", sites.producer()?).build()?;
    let mut consumer = std::process::Command::new(std::env::current_exe()?)
        .args(["demo-consumer", "--max-size", &args.max_size.to_string()])
        .envs(sites.consumer_env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>22} [{bar:40}] {pos}/{len} {msg}")?
        .progress_chars("=> ");
    let put_bar = bars.add(ProgressBar::new(args.objects as u64));
    put_bar.set_style(style.clone());
    put_bar.set_prefix("proxied at site a");
    let got_bar = bars.add(ProgressBar::new(args.objects as u64));
    got_bar.set_style(style);
    got_bar.set_prefix("resolved at site b");
    let stdout = consumer.stdout.take().expect("piped");
    let reader = {
        let got_bar = got_bar.clone();
        std::thread::spawn(move || {
            let mut summary = None;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let doc: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if doc["resolved"].is_u64() {
                    got_bar.inc(1);
                } else if doc["objects"].is_u64() {
                    summary = Some(doc);
                }
            }
            summary
        })
    };
    let mut stdin = consumer.stdin.take().expect("piped");
    let mut bytes = 0u64;
    for index in 0..args.objects {
        let object = ps_globus::demo::object(index, args.max_size);
        bytes += object.len() as u64;
        let proxy = store.proxy(&object)?;
        writeln!(stdin, "{index}\t{}", serde_json::to_string(&proxy)?)?;
        put_bar.inc(1);
    }
    drop(stdin);
    put_bar.finish_with_message("done");
    let status = consumer.wait()?;
    let summary = reader
        .join()
        .map_err(|_| "the demo's reader thread panicked")?;
    got_bar.finish_with_message("verified");
    let stats = sites.sim.stats();
    if !status.success() {
        return Err(format!("the consumer at site b failed ({status})").into());
    }
    let summary = summary.ok_or("the consumer at site b reported no summary")?;
    println!(
        "{} objects ({:.1} MiB) proxied at site a and resolved, verified, at site b by another process",
        summary["objects"],
        bytes as f64 / (1 << 20) as f64
    );
    println!(
        "Globus tasks: {}   API requests: {}   wall time: {:.2} s",
        stats.route("POST /v0.10/transfer"),
        stats.api_requests,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn demo_consumer(max_size: usize) -> CliResult {
    use std::io::Write;
    let stdin = std::io::stdin();
    let (objects, bytes) = ps_globus::block_on(ps_globus::demo::consume(
        stdin.lock(),
        |index| ps_globus::demo::object(index, max_size),
        |index, len| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{{\"resolved\": {index}, \"bytes\": {len}}}");
            let _ = out.flush();
        },
    ))?;
    println!("{{\"objects\": {objects}, \"bytes\": {bytes}}}");
    Ok(())
}

/// The token store, saying so when the keyring was not usable.
fn token_store()
-> Result<std::sync::Arc<dyn ps_globus::auth::TokenStore>, Box<dyn std::error::Error>> {
    let choice = ps_globus::auth::open_token_store()?;
    if let Some(reason) = &choice.fallback_reason {
        tracing::info!("{reason}");
    }
    Ok(choice.store)
}

/// Shows the login URL on stderr and reads a pasted code from stdin.
struct TerminalPrompt;

impl ps_globus::auth::LoginPrompt for TerminalPrompt {
    fn show_url(&mut self, url: &str, delivery: ps_globus::auth::CodeDelivery) {
        use ps_globus::auth::CodeDelivery;
        match delivery {
            CodeDelivery::LocalServer => {
                eprintln!("Log in to Globus in your browser. If none opened, visit:\n\n  {url}\n");
                if let Err(e) = webbrowser::open(url) {
                    tracing::info!("could not open a browser: {e}");
                }
            }
            CodeDelivery::CopyPaste => {
                eprintln!(
                    "Visit this URL, log in, and paste the authorization code shown at the end:\n\n  {url}\n"
                );
                eprint!("Authorization code: ");
            }
        }
    }

    fn read_code(&mut self) -> ps_globus::Result<String> {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| ps_globus::Error::LoginRequired {
                reason: format!("could not read the code from standard input: {e}"),
            })?;
        Ok(line.trim().to_owned())
    }
}

fn login(args: LoginArgs) -> CliResult {
    use ps_globus::auth::{CodeDelivery, LoginOptions};
    let config = ps_globus::config::Config::load()?;
    let mut options = LoginOptions::from_env(&config)?;
    options.collections.extend(args.collections);
    options.collections.sort();
    options.collections.dedup();
    options.force = args.force;
    if args.no_local_server {
        options.delivery = CodeDelivery::CopyPaste;
    } else if args.local_server {
        options.delivery = CodeDelivery::LocalServer;
    }
    let store = token_store()?;
    let outcome = ps_globus::block_on(ps_globus::auth::login(
        &store,
        &options,
        &mut TerminalPrompt,
    ))?;
    let who = outcome.username.as_deref().unwrap_or(&outcome.identity);
    if outcome.flows == 0 {
        eprintln!("You are already logged in as {who} (use --force to log in again).");
    } else {
        eprintln!(
            "You are logged in as {who}; tokens are in {}.",
            store.describe()
        );
    }
    for id in &outcome.consents {
        eprintln!("  data_access consent held for collection {id}");
    }
    for id in &outcome.no_consent_needed {
        eprintln!("  collection {id} needs no data_access consent");
    }
    Ok(())
}

fn logout() -> CliResult {
    let store = token_store()?;
    let auth_url = std::env::var("PS_GLOBUS_AUTH_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| ps_globus::auth::DEFAULT_AUTH_URL.into());
    let outcome = ps_globus::block_on(ps_globus::auth::logout(store.as_ref(), &auth_url))?;
    if !outcome.was_logged_in {
        eprintln!("You were not logged in.");
        return Ok(());
    }
    for failure in &outcome.revoke_failed {
        eprintln!("warning: could not revoke a token ({failure}); it was deleted here anyway");
    }
    eprintln!(
        "Logged out: {} token(s) revoked at Globus Auth and deleted from {}.",
        outcome.revoked,
        store.describe()
    );
    Ok(())
}

fn whoami(json: bool) -> CliResult {
    let store = token_store()?;
    let status = ps_globus::auth::status(store.as_ref())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!(
            "{}",
            status
                .username
                .as_deref()
                .or(status.identity.as_deref())
                .unwrap_or("(unknown identity)")
        );
        if let Some(id) = &status.identity {
            println!("  identity:    {id}");
        }
        println!("  tokens in:   {}", status.token_store);
        for rs in &status.resource_servers {
            println!(
                "  {:<24} expires {}{}  [{}]",
                rs.resource_server,
                rs.expires_at,
                if rs.refreshable {
                    " (renews itself)"
                } else {
                    ""
                },
                rs.scope
            );
        }
        for id in &status.consents {
            println!("  data_access consent: {id}");
        }
    }
    if let Some(warning) = &status.warning {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

fn sim_serve(args: SimServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    use ps_globus::sim::{CollectionConfig, SimConfig, Simulator};
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            toml::from_str::<SimConfig>(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => SimConfig::default(),
    };
    for spec in &args.collections {
        let (name, dir) = spec
            .split_once('=')
            .ok_or_else(|| format!("--collection {spec:?}: expected NAME=DIR"))?;
        let entry = config
            .collections
            .entry(name.to_owned())
            .or_insert_with(CollectionConfig::default);
        entry.root = PathBuf::from(dir);
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
    if args.bandwidth.is_some() {
        config.bandwidth = args.bandwidth;
    }
    if args.rate_limit.is_some() {
        config.rate_limit = args.rate_limit;
    }
    if let Some(v) = args.fail_rate {
        config.fail_rate = v;
    }
    if let Some(v) = args.seed {
        config.seed = v;
    }
    if let Some(v) = args.token_lifetime_s {
        config.token_lifetime_s = v;
    }
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

pub(crate) fn read_input(file: &str) -> std::io::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}
