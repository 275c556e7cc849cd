//! `ref list|show|resolve|rm|export|import|add`: named, persistent dataset references
//! in the state database.

use clap::Subcommand;
use ps_globus::proxy::ProxyFactory;
use ps_globus::state::StateDb;

use super::{CommandError, settings};
use crate::CliResult;
use crate::output::{Output, print_json, print_table};

/// The `ref` subcommands.
#[derive(Subcommand)]
pub enum RefCommand {
    /// List the references.
    List {
        #[command(flatten)]
        out: Output,
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

/// `ref ...`
pub async fn run(command: RefCommand) -> CliResult {
    use ps_globus::proxy::{DatasetRef, list_refs, load_ref, remove_ref, save_ref};
    let db = StateDb::open_default(settings()).await?;
    let find = |name: String| {
        let db = db.clone();
        async move {
            let found: Result<DatasetRef, CommandError> = match load_ref(&db, &name).await? {
                Some(r) => Ok(r),
                None => {
                    Err(format!("no reference named {name:?} (see `ps-globus ref list`)").into())
                }
            };
            found
        }
    };
    match command {
        RefCommand::List { out } => {
            let refs = list_refs(&db).await?;
            if out.machine() {
                return out.emit(&refs);
            }
            let rows: Vec<Vec<String>> = refs
                .iter()
                .map(|r| vec![r.name.clone(), r.store.name.clone(), r.key.id().to_owned()])
                .collect();
            print_table(&["Name", "Store", "Object"], &rows);
        }
        RefCommand::Show { name } => {
            print_json(&find(name).await?)?;
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
            let factory = ProxyFactory::from_json(&crate::read_input(&proxy)?)?;
            let r = DatasetRef::new(name, (*factory.store).clone(), factory.key.clone());
            save_ref(&db, &r, replace).await?;
            eprintln!("saved reference {}", r.name);
        }
    }
    Ok(())
}
