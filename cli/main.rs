//! The `ps-globus` command line: a thin layer over the library.
//!
//! This file parses the command line, sets up logging and turns outcomes into exit
//! codes; each command group lives in `commands/`, and progress bars and JSON output in
//! `output.rs`. Exit codes follow globus-cli: 0 success, 1 failure, 2 usage, 4 login or
//! consent needed.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

mod commands;
mod hint;
mod output;

use clap::{Parser, Subcommand};
use commands::{
    config, demo, doctor, endpoint, https, job, lease, login, proxy, redis, refs, sim, status,
    stream, task, transfer,
};

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
    Login(login::LoginArgs),
    /// Revoke the stored tokens at Globus Auth and delete them here.
    Logout,
    /// Show who is logged in, the tokens held (never the tokens themselves), their
    /// expiry and consents. Exits 4 when not logged in.
    Whoami {
        #[command(flatten)]
        out: output::Output,
    },
    /// Transfer files or directories between sites or collections (SITE:PATH,
    /// COLLECTION_UUID:PATH, or a local path at the current site), through the
    /// transfer manager: exactly once, coalesced into few Globus tasks, tracked in the
    /// state database. Ctrl-C stops waiting, not the transfer.
    ///
    /// Unlike globus-cli, on purpose: it waits with progress unless --no-wait (prints
    /// each `Task ID:` first); checksums are verified unless --no-verify-checksum; a
    /// source that cannot be read is skipped so the rest arrives, and reported as a
    /// failure (exit 1) everywhere; one command may make several tasks (one per source,
    /// destination and options).
    Transfer(transfer::TransferArgs),
    /// Read one file from a collection over its HTTPS (COLLECTION_UUID:/PATH or
    /// SITE:PATH), without a Transfer task: for small files, now. Resumes an interrupted
    /// get from LOCAL.part.
    Get(https::GetArgs),
    /// Write one file to a collection over its HTTPS, without a Transfer task (not
    /// atomic: a failed put may leave the file cut short; the size is checked after).
    Put(https::PutArgs),
    /// `transfer` into this site: the destination is a local path here.
    StageIn(transfer::TransferArgs),
    /// `transfer` out of this site: the source is a local path here.
    StageOut(transfer::TransferArgs),
    /// Globus tasks: list, show, wait, cancel, events.
    #[command(subcommand)]
    Task(task::TaskCommand),
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Every batch and task the local state database tracks: outcome judged by every
    /// item, work never submitted (`--prune` drops what stopped commands left), live
    /// totals.
    Status(status::StatusArgs),
    /// The configuration file.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Sites in the configuration file.
    #[command(subcommand)]
    Site(config::SiteCommand),
    /// Check the configuration, the current site, credentials and every site's
    /// collection, with a fix for each problem. Exits 1 if anything is wrong.
    Doctor {
        #[command(flatten)]
        out: output::Output,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Run the product end to end on the built-in emulator: a producer at site A
    /// proxies objects, a consumer process at site B resolves and verifies them, and
    /// Globus (emulated) moves the bytes.
    Demo(demo::DemoArgs),
    /// The consumer half of `demo` (reads `INDEX<TAB>PROXY` lines on stdin).
    #[command(hide = true)]
    DemoConsumer {
        #[arg(long)]
        max_size: usize,
    },
    /// Named, persistent dataset references (kept in the state database).
    #[command(subcommand)]
    Ref(refs::RefCommand),
    /// Lease lifetimes (kept in the state database): list, reap the expired, end one.
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Work with serialized proxies (the JSON a proxy serializes to).
    #[command(subcommand)]
    Proxy(proxy::ProxyCommand),
    /// Topics of objects (streams), over Redis or over Globus itself.
    #[command(subcommand)]
    Stream(stream::StreamCommand),
    /// Endpoints: a long-running object store per site that serves ProxyStore's endpoint
    /// REST API and fetches from the endpoints of other sites (a drop-in for
    /// `proxystore-endpoint`).
    #[command(subcommand)]
    Endpoint(endpoint::EndpointCommand),
    /// The relay endpoints register with, find each other through, and tunnel through
    /// when no direct path exists.
    #[command(subcommand)]
    Relay(endpoint::RelayCommand),
    /// Redis servers in the configuration file (`[redis.NAME]`): add, list, remove.
    #[command(subcommand)]
    Redis(redis::RedisCommand),
    /// The local Globus emulator (Transfer + Auth APIs on loopback).
    #[command(subcommand)]
    Sim(sim::SimCommand),
}

fn main() -> ExitCode {
    // Output into a closed pipe (`ps-globus doctor | head -1`) ends the process quietly,
    // as it does for other Unix tools, instead of a panic in `println!`.
    // SAFETY: called first thing, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let logging_in = matches!(cli.command, Command::Login(_));
    match run(cli.command, cli.verbose) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if let Some(Exit(code, message)) = error.downcast_ref::<Exit>() {
                if !message.is_empty() {
                    eprintln!("error: {message}");
                }
                return ExitCode::from(*code);
            }
            let (usage, error) = match error.downcast::<Usage>() {
                Ok(usage) => (true, usage.0),
                Err(error) => (false, error),
            };
            eprintln!("error: {error}");
            let library = error.downcast_ref::<ps_globus::Error>();
            let needs_login = library.is_some_and(ps_globus::Error::needs_login);
            let hint = if logging_in && needs_login {
                // Not "run `ps-globus login`": that is what just failed.
                Some(
                    "the login did not complete: try again, pasting the whole code the page \
                     shows at the end (or with the browser on this machine: `ps-globus login \
                     --local-server`); check PS_GLOBUS_CLIENT_ID names your native app"
                        .to_owned(),
                )
            } else {
                library.and_then(hint::hint)
            };
            if let Some(hint) = hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(match (usage, needs_login) {
                (true, _) => 2,
                (false, true) => 4,
                (false, false) => 1,
            })
        }
    }
}

/// Logs go to stderr, filtered by PS_GLOBUS_LOG (tracing directives) or -v.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("PS_GLOBUS_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::new(directives),
        _ => EnvFilter::new(match verbose {
            // The manager's "failed, will retry" warnings are the commands' to report:
            // they stop with the error and what they leave behind (see commands/stop.rs).
            0 => "warn,ps_globus::transfer::manager::loops=error",
            1 => "ps_globus=info",
            2 => "ps_globus=debug",
            _ => "ps_globus=trace",
        }),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .init();
}

/// What every command returns.
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

/// An error caught before anything was sent (an unknown site, `..` in a path, a bad
/// collection id, a `PS_GLOBUS_SITE` no site has): exit 2, as usage errors do, with the
/// library error's hint.
#[derive(Debug)]
struct Usage(Box<dyn std::error::Error>);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Usage {}

/// A collection id as typed: a UUID, or a usage error that says what one looks like.
fn collection_id(text: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::parse_str(text.trim()).map_err(|_| {
        format!(
            "{text:?} is not a collection id: that is a UUID such as \
             7865988a-aeb3-4e55-b8cd-938c258e7854 (the Globus web app shows it on the \
             collection's page)"
        )
    })
}

fn run(command: Command, verbose: u8) -> CliResult {
    use ps_globus::block_on;
    use transfer::Direction;
    match command {
        Command::Transfer(args) => block_on(transfer::transfer(args, Direction::Any)),
        Command::Get(args) => block_on(https::get(args)),
        Command::Put(args) => block_on(https::put(args)),
        Command::StageIn(args) => block_on(transfer::transfer(args, Direction::In)),
        Command::StageOut(args) => block_on(transfer::transfer(args, Direction::Out)),
        Command::Task(command) => block_on(task::run(command)),
        Command::Job(command) => block_on(job::run(command)),
        Command::Status(args) => block_on(status::status(args)),
        Command::Config(command) => config::config(command),
        Command::Site(command) => block_on(config::site(command)),
        Command::Doctor { out } => block_on(doctor::doctor(out)),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "ps-globus",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Demo(args) => demo::demo(args),
        Command::DemoConsumer { max_size } => demo::consumer(max_size),
        Command::Ref(command) => block_on(refs::run(command)),
        Command::Lease(command) => block_on(lease::run(command)),
        Command::Login(args) => login::login(args),
        Command::Logout => login::logout(),
        Command::Whoami { out } => login::whoami(&out),
        Command::Proxy(command) => proxy::run(command),
        Command::Stream(command) => stream::run(command),
        Command::Redis(command) => redis::run(command),
        Command::Endpoint(command) => endpoint::run(command, verbose),
        Command::Relay(command) => endpoint::relay(command),
        Command::Sim(command) => sim::run(command),
    }
}

/// The text of `file`, or of standard input for `-`.
/// A file that cannot be read is caught before anything is sent: exit 2, naming it.
fn read_input(file: &str) -> Result<String, Exit> {
    let read = if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map(|_| text)
    } else {
        std::fs::read_to_string(file)
    };
    read.map_err(|e| {
        let name = if file == "-" { "standard input" } else { file };
        Exit(2, format!("cannot read {name}: {e}"))
    })
}
