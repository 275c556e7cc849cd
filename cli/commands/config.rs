//! `config init|path` and `site add|list`: the configuration file.

use clap::{Args, Subcommand};
use ps_globus::config::{Config, SiteConfig};

use super::{client, settings};
use crate::CliResult;
use crate::output::{Output, print_table};

/// The `config` subcommands.
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Write a commented starting configuration (and print its path).
    Init {
        #[arg(long)]
        force: bool,
    },
    /// Print where the configuration file is.
    Path,
}

/// The `site` subcommands.
#[derive(Subcommand)]
pub enum SiteCommand {
    /// Add (or replace) a site: looks the collection up and checks the local path.
    Add(SiteAddArgs),
    /// List the configured sites.
    List {
        #[command(flatten)]
        out: Output,
    },
}

/// `site add NAME COLLECTION --collection-path P --local-path L [--host-regex R]`.
#[derive(Args)]
pub struct SiteAddArgs {
    name: String,
    collection: uuid::Uuid,
    /// The collection path that --local-path is.
    #[arg(long)]
    collection_path: String,
    /// Where that path is on this host.
    #[arg(long)]
    local_path: std::path::PathBuf,
    /// Hosts matching this regex are at this site.
    #[arg(long)]
    host_regex: Option<String>,
    /// Do not look the collection up at Globus.
    #[arg(long)]
    no_lookup: bool,
}

/// `config ...`
pub fn config(command: ConfigCommand) -> CliResult {
    match command {
        ConfigCommand::Init { force } => init(force),
        ConfigCommand::Path => {
            println!("{}", settings().config_path.display());
            Ok(())
        }
    }
}

/// `site ...`
pub async fn site(command: SiteCommand) -> CliResult {
    match command {
        SiteCommand::Add(args) => site_add(args).await,
        SiteCommand::List { out } => site_list(&out),
    }
}

/// `config init`: writes a commented starting configuration.
fn init(force: bool) -> CliResult {
    let path = &settings().config_path;
    if path.exists() && !force {
        return Err(format!("{} exists (use --force to overwrite)", path.display()).into());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        path,
        "# ps-globus configuration. See `ps-globus site add --help`.\n\
         # client_id = \"<your native app's client id>\"  # for `ps-globus login`\n\n\
         # [sites.NAME]\n\
         # collection = \"<collection uuid>\"\n\
         # collection_path = \"/projects/x\"\n\
         # local_path = \"/lus/projects/x\"\n\
         # host_regex = \"^login\\\\d+\"\n",
    )?;
    println!("{}", path.display());
    Ok(())
}

fn site_list(out: &Output) -> CliResult {
    let sites = Config::load(settings())?.sites;
    if out.machine() {
        return out.emit(&sites);
    }
    let rows: Vec<Vec<String>> = sites
        .into_iter()
        .map(|(name, s)| {
            vec![
                name,
                s.collection.to_string(),
                s.collection_path,
                s.local_path.display().to_string(),
                s.host_regex.unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "Site",
            "Collection",
            "Collection Path",
            "Local Path",
            "Host Regex",
        ],
        &rows,
    );
    Ok(())
}

/// `site add`.
async fn site_add(args: SiteAddArgs) -> CliResult {
    let SiteAddArgs {
        name,
        collection,
        collection_path,
        local_path,
        host_regex,
        no_lookup,
    } = args;
    let path = &settings().config_path;
    let mut config = Config::load_from(path)?;
    if !local_path.is_dir() {
        return Err(format!(
            "local path {} is not a directory here; give the path the collection path maps to on this host",
            local_path.display()
        )
        .into());
    }
    if !collection_path.starts_with('/') {
        return Err("--collection-path must be absolute on the collection".into());
    }
    if let Some(re) = &host_regex {
        regex_lite::Regex::new(re).map_err(|e| format!("--host-regex: {e}"))?;
    }
    if !no_lookup {
        let endpoint = client()?.endpoint(&collection.to_string()).await?;
        eprintln!(
            "collection {collection}: {}",
            endpoint.display_name.as_deref().unwrap_or("(no name)")
        );
    }
    config.sites.insert(
        name.clone(),
        SiteConfig {
            collection,
            collection_path,
            local_path: local_path.canonicalize()?,
            host_regex,
        },
    );
    config.save_to(path)?;
    eprintln!("site {name} saved in {}", path.display());
    Ok(())
}
