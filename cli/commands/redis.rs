//! `redis add|list|rm`: the configuration file's Redis servers (`[redis.NAME]` tables),
//! edited as `site add` edits sites (the file's comments stay).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use ps_globus::config::Config;
use ps_globus::connector::RedisConfig;

use super::settings;
use crate::CliResult;
use crate::output::Output;

/// The `redis` subcommands.
#[derive(Subcommand)]
pub enum RedisCommand {
    /// Add (or replace) a Redis server that stores and streams may name
    /// (`RedisConnector::named`, `stream tail --redis NAME`).
    Add(RedisAddArgs),
    /// List the configured Redis servers (never a password: the variable that holds it).
    List {
        #[command(flatten)]
        out: Output,
    },
    /// Remove a Redis server from the configuration file.
    Rm { name: String },
}

/// `redis add NAME [--host H --port P | --socket PATH] ...`.
#[derive(Args)]
pub struct RedisAddArgs {
    name: String,
    /// Host name or address of the server.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Its port.
    #[arg(long, default_value_t = 6379)]
    port: u16,
    /// A Unix socket to use instead of --host and --port (an absolute path).
    #[arg(long, conflicts_with_all = ["host", "port"])]
    socket: Option<PathBuf>,
    /// The database number.
    #[arg(long, default_value_t = 0)]
    db: i64,
    /// Talk TLS (rediss://).
    #[arg(long)]
    tls: bool,
    /// A PEM file of the CA that signed the server's certificate (implies --tls).
    #[arg(long)]
    tls_ca_file: Option<PathBuf>,
    /// The Redis ACL user.
    #[arg(long)]
    username: Option<String>,
    /// The environment variable that holds the password in each process that connects
    /// (a password itself is never written to the file).
    #[arg(long, value_name = "VARIABLE")]
    password_env: Option<String>,
    /// Prepended to every object id to make its Redis key.
    #[arg(long)]
    prefix: Option<String>,
    /// Objects expire this many seconds after their put.
    #[arg(long)]
    ttl_s: Option<u64>,
    /// How long one command (or connecting) may take, in milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
}

/// `redis ...`
pub fn run(command: RedisCommand) -> CliResult {
    let path = &settings().config_path;
    match command {
        RedisCommand::Add(args) => {
            let name = args.name.clone();
            let config = redis_config(args);
            ps_globus::internal::save_redis(path, &name, &config)?;
            eprintln!(
                "redis {name} saved in {}; `ps-globus doctor` checks that it answers",
                path.display()
            );
        }
        RedisCommand::List { out } => {
            let servers = Config::load(settings())?.redis;
            if out.machine() {
                return out.emit(&servers);
            }
            super::config::redis_table(&servers);
        }
        RedisCommand::Rm { name } => {
            if !ps_globus::internal::remove_redis(path, &name)? {
                let known: Vec<String> = Config::load_from(path)?.redis.into_keys().collect();
                return Err(crate::Exit(
                    2,
                    format!(
                        "no Redis server {name:?} in {}; configured: {}",
                        path.display(),
                        known.join(", ")
                    ),
                )
                .into());
            }
            eprintln!("redis {name} removed from {}", path.display());
        }
    }
    Ok(())
}

/// The server `args` describe, every other setting at its default.
fn redis_config(args: RedisAddArgs) -> RedisConfig {
    let mut config = RedisConfig::new(args.host, args.port);
    config.socket = args.socket;
    config.db = args.db;
    config.tls = args.tls || args.tls_ca_file.is_some();
    config.tls_ca_file = args.tls_ca_file;
    config.username = args.username;
    config.password_env = args.password_env;
    if let Some(prefix) = args.prefix {
        config.prefix = prefix;
    }
    config.ttl_s = args.ttl_s;
    if let Some(timeout) = args.timeout_ms {
        config.timeout_ms = timeout;
    }
    config
}
