//! `config init|path|show` and `site add|list|rm`: the configuration file. Edits keep
//! the file's comments (`toml_edit`).

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
    /// Show the configuration as ps-globus reads it: the file, the client id, the
    /// sites, and which site this process is at (and why).
    Show {
        #[command(flatten)]
        out: Output,
    },
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
    /// Remove a site from the configuration file (the rest of the file, comments
    /// included, stays as it is).
    Rm { name: String },
}

/// `site add NAME COLLECTION --collection-path P --local-path L [--host-regex R]`.
#[derive(Args)]
pub struct SiteAddArgs {
    name: String,
    #[arg(value_parser = crate::collection_id)]
    collection: uuid::Uuid,
    /// The collection path that --local-path is.
    #[arg(long)]
    collection_path: String,
    /// Where that path is on the site's own file system (on this host, unless
    /// --remote).
    #[arg(long)]
    local_path: std::path::PathBuf,
    /// The site is at another facility: its local path exists only there, so it is
    /// not checked here (it must be absolute). Without it, a local path that is not a
    /// directory here is refused.
    #[arg(long)]
    remote: bool,
    /// Hosts matching this regex are at this site.
    #[arg(long)]
    host_regex: Option<String>,
    /// Objects sent to this site go by its collection's HTTPS up to this many bytes, by
    /// Transfer above (0: always Transfer; default 4 MiB where the collection serves
    /// HTTPS).
    #[arg(long, value_name = "BYTES")]
    https_max_size: Option<u64>,
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
        ConfigCommand::Show { out } => show(&out),
    }
}

/// `site ...`
pub async fn site(command: SiteCommand) -> CliResult {
    match command {
        SiteCommand::Add(args) => site_add(args).await,
        SiteCommand::List { out } => site_list(&out),
        SiteCommand::Rm { name } => site_rm(&name),
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
        // Every comment comes before the first key, so that sites added later (appended
        // after it) never land between a comment and what it describes.
        "# ps-globus configuration. See `ps-globus site add --help`.\n\
         # client_id = \"<your native app's client id>\"  # for `ps-globus login`\n\
         #\n\
         # Sites: `ps-globus site add` writes them below (keeping these comments), or by\n\
         # hand:\n\
         # [sites.NAME]\n\
         # collection = \"<collection uuid>\"\n\
         # collection_path = \"/projects/x\"\n\
         # local_path = \"/lus/projects/x\"\n\
         # host_regex = \"^login\\\\d+\"\n\
         version = 1\n",
    )?;
    println!("{}", path.display());
    Ok(())
}

fn site_list(out: &Output) -> CliResult {
    let sites = Config::load(settings())?.sites;
    if out.machine() {
        return out.emit(&sites);
    }
    site_table(sites);
    Ok(())
}

/// `site add`.
async fn site_add(args: SiteAddArgs) -> CliResult {
    let SiteAddArgs {
        name,
        collection,
        collection_path,
        local_path,
        remote,
        host_regex,
        https_max_size,
        no_lookup,
    } = args;
    let path = &settings().config_path;
    let local_path = if remote {
        if !local_path.is_absolute() {
            return Err(format!(
                "--local-path {} must be absolute: it is a path at the other facility",
                local_path.display()
            )
            .into());
        }
        local_path
    } else if local_path.is_dir() {
        local_path.canonicalize()?
    } else {
        return Err(format!(
            "local path {} is not a directory here; give the path the collection path maps \
             to on this host, or add --remote if the site is at another facility",
            local_path.display()
        )
        .into());
    };
    if !collection_path.starts_with('/') {
        return Err("--collection-path must be absolute on the collection".into());
    }
    if let Some(re) = &host_regex {
        regex_lite::Regex::new(re).map_err(|e| format!("--host-regex: {e}"))?;
    }
    if !no_lookup {
        let endpoint = client()?.endpoint(&collection.to_string()).await?;
        let https = match endpoint.https_origin() {
            Some(origin) => format!("HTTPS at {origin}"),
            None => "no HTTPS: its objects go by Transfer".into(),
        };
        eprintln!(
            "collection {collection}: {} ({https})",
            endpoint.display_name.as_deref().unwrap_or("(no name)")
        );
    }
    let site = {
        let mut built = SiteConfig::default();
        built.collection = collection;
        built.collection_path = collection_path;
        built.local_path = local_path;
        built.host_regex = host_regex;
        built.https_max_size = https_max_size;
        built
    };
    ps_globus::internal::save_site(path, &name, &site)?;
    eprintln!("site {name} saved in {}", path.display());
    Ok(())
}

/// `site rm NAME`.
fn site_rm(name: &str) -> CliResult {
    let path = &settings().config_path;
    if !ps_globus::internal::remove_site(path, name)? {
        let known: Vec<String> = Config::load_from(path)?.sites.into_keys().collect();
        return Err(format!(
            "no site {name:?} in {}; configured sites: {}",
            path.display(),
            known.join(", ")
        )
        .into());
    }
    eprintln!("site {name} removed from {}", path.display());
    Ok(())
}

/// `config show`.
fn show(out: &Output) -> CliResult {
    let path = &settings().config_path;
    let config = Config::load_from(path)?;
    let current = ps_globus::config::current_site(&config.sites, settings().site.as_deref());
    if out.machine() {
        return out.emit(&serde_json::json!({
            "path": path,
            "exists": path.exists(),
            "client_id": config.client_id,
            "sites": config.sites,
            "current_site": current.as_ref().ok(),
            "current_site_why": current.as_ref().ok().map(|site| why_site(&config, site)),
            "current_site_error": current.as_ref().err().map(ToString::to_string),
            "redis": config.redis,
        }));
    }
    let missing = if path.exists() {
        ""
    } else {
        " (missing: run `ps-globus config init`)"
    };
    println!("file:          {}{missing}", path.display());
    println!(
        "client id:     {}",
        config.client_id.as_deref().unwrap_or("(none)")
    );
    match &current {
        Ok(name) => println!("current site:  {name} ({})", why_site(&config, name)),
        Err(why) => println!("current site:  (unknown: {why})"),
    }
    println!();
    site_table(config.sites);
    if !config.redis.is_empty() {
        println!();
        redis_table(&config.redis);
    }
    Ok(())
}

/// Why `site` is this process's: `PS_GLOBUS_SITE`, or the host regex the host name
/// matches.
fn why_site(config: &Config, site: &str) -> String {
    if settings().site.is_some() {
        return "PS_GLOBUS_SITE names it".into();
    }
    let host = ps_globus::internal::host_name();
    let regex = config.sites.get(site).and_then(|s| s.host_regex.clone());
    format!(
        "host name {host} matches its host_regex {}",
        regex.unwrap_or_default()
    )
}

/// The Redis servers of the configuration's `[redis.NAME]` tables (never a password:
/// only the variable that holds it).
pub fn redis_table(
    servers: &std::collections::BTreeMap<String, ps_globus::connector::RedisConfig>,
) {
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|(name, r)| {
            let place = match &r.socket {
                Some(socket) => format!("unix:{}", socket.display()),
                None => format!("{}:{}", r.host, r.port),
            };
            vec![
                name.clone(),
                format!("{place}/{}", r.db),
                if r.tls { "yes" } else { "no" }.into(),
                r.username.clone().unwrap_or_default(),
                r.password_env.clone().unwrap_or_default(),
                r.prefix.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "Redis",
            "Server/DB",
            "TLS",
            "User",
            "Password Env",
            "Prefix",
        ],
        &rows,
    );
}

fn site_table(sites: std::collections::BTreeMap<String, SiteConfig>) {
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
}
