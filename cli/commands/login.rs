//! `login`, `logout`, `whoami`: a user's Globus login and its tokens.

use std::sync::Arc;

use ps_globus::transfer::TransferCollectionLookup;

use super::{CommandError, settings};
use crate::CliResult;
use crate::output::Output;

/// `login` options.
#[derive(clap::Args)]
pub struct LoginArgs {
    /// A collection that needs a data_access consent (repeatable).
    #[arg(long = "collection", value_name = "UUID", value_parser = crate::collection_id)]
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

/// Which credentials requests carry when the environment overrides the stored login:
/// an access token (`PS_GLOBUS_ACCESS_TOKEN`) or a service identity; `None` when the
/// stored login is used. Never the token itself.
fn credentials_in_use() -> Option<String> {
    let settings = settings();
    if settings.access_token.is_some() {
        let identity = ps_globus::auth::default_authorizer(settings)
            .map(|auth| auth.identity())
            .unwrap_or_default();
        return Some(format!(
            "Requests use the access token in PS_GLOBUS_ACCESS_TOKEN ({identity}): sent as \
             given, never refreshed, its owner and expiry known only to Globus. The stored \
             login below is not used while it is set."
        ));
    }
    settings.has_service_identity().then(|| {
        format!(
            "Requests use the service identity PS_GLOBUS_CLIENT_ID={} (client credentials). \
             The stored login below is not used while it is set.",
            settings.client_id.as_deref().unwrap_or("")
        )
    })
}

/// The token store, saying so when the keyring was not usable.
fn token_store() -> Result<std::sync::Arc<dyn ps_globus::auth::TokenStore>, CommandError> {
    let choice = ps_globus::auth::open_token_store(settings())?;
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
                // Never waited on: a text browser (`BROWSER=curl`, `w3m`, `lynx`, the
                // usual choice over SSH) runs in the foreground until its page loads, and
                // the page is our own loopback redirect, which is served only once this
                // returns. Waiting here deadlocked the login.
                let url = url.to_owned();
                std::thread::spawn(move || {
                    if let Err(e) = webbrowser::open(&url) {
                        tracing::info!("could not open a browser: {e}");
                    }
                });
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
        std::io::stdin().read_line(&mut line).map_err(|e| {
            ps_globus::Error::login_required(format!(
                "could not read the code from standard input: {e}"
            ))
        })?;
        Ok(line.trim().to_owned())
    }
}

/// `login`.
pub fn login(args: LoginArgs) -> CliResult {
    use ps_globus::auth::{CodeDelivery, LoginOptions};
    let config = ps_globus::config::Config::load(settings())?;
    let lookup = Arc::new(TransferCollectionLookup::new(&settings().transfer_url));
    let mut options = LoginOptions::from_settings(settings(), &config, lookup)?;
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

/// `logout`.
pub fn logout() -> CliResult {
    let store = token_store()?;
    let auth_url = &settings().auth_url;
    let outcome = ps_globus::block_on(ps_globus::auth::logout(store.as_ref(), auth_url))?;
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

/// `whoami`.
pub fn whoami(out: &Output) -> CliResult {
    let store = token_store()?;
    // What requests actually carry, where the environment overrides the stored login.
    let in_use = credentials_in_use();
    let status = match ps_globus::auth::status(store.as_ref()) {
        Ok(status) => status,
        // Not logged in, but the environment's credentials serve: not an error.
        Err(e) if e.needs_login() && in_use.is_some() => {
            if out.machine() {
                out.emit(&serde_json::json!({"credentials_in_use": in_use, "stored_login": null}))?;
            } else {
                println!("{}\nNo stored login.", in_use.unwrap_or_default());
            }
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if out.machine() {
        let mut doc = serde_json::to_value(&status)?;
        doc["credentials_in_use"] = serde_json::json!(in_use);
        out.emit(&doc)?;
    } else {
        if let Some(note) = &in_use {
            println!("{note}");
        }
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
        eprintln!("warning: {warning}\nhint: run `ps-globus login`");
    }
    Ok(())
}
