//! The `ps-globus` command line: a thin layer over the library.
//!
//! Exit codes follow globus-cli: 0 success, 1 failure, 2 usage.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ps_globus::Store;
use ps_globus::proxy::ProxyFactory;

/// Pass-by-reference for distributed workflows, with Globus Transfer moving the bytes.
#[derive(Parser)]
#[command(name = "ps-globus", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with serialized proxies (the JSON a proxy serializes to).
    #[command(subcommand)]
    Proxy(ProxyCommand),
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
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Proxy(ProxyCommand::Inspect { file }) => {
            let factory = ProxyFactory::from_json(&read_input(&file)?)?;
            println!("{}", serde_json::to_string_pretty(&factory)?);
        }
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

fn read_input(file: &str) -> std::io::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}
