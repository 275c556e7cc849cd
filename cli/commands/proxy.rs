//! `proxy inspect|fetch`: what a serialized proxy refers to, and its stored bytes.

use std::path::PathBuf;

use clap::Subcommand;
use ps_globus::Store;
use ps_globus::proxy::ProxyFactory;

use crate::CliResult;
use crate::output::print_json;

/// The `proxy` subcommands.
#[derive(Subcommand)]
pub enum ProxyCommand {
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

/// `proxy ...`
pub fn run(command: ProxyCommand) -> CliResult {
    match command {
        ProxyCommand::Inspect { file } => {
            let factory = ProxyFactory::from_json(&crate::read_input(&file)?)?;
            print_json(&factory)?;
        }
        ProxyCommand::Fetch { file, output } => {
            let factory = ProxyFactory::from_json(&crate::read_input(&file)?)?;
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
