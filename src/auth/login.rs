//! `ps-globus login`, `logout` and `whoami` as library calls.
//!
//! A login is a native-app authorization-code flow with PKCE (S256) and
//! `access_type=offline`, so the tokens come with refresh tokens. The code comes back
//! either to a one-shot HTTP server on loopback (the browser is redirected to it) or by
//! copy-paste from Globus's auth-code page (headless machines, `--no-local-server`).
//!
//! Collections that need a `data_access` consent (GCSv5 mapped, not high-assurance) are
//! found by looking them up with the Transfer token, so a first login that names such
//! collections has two phases: the Transfer token, then the consents. Every login asks
//! for the union of the consents already held and the new ones, because a new Transfer
//! token replaces the old one and would otherwise drop them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use oauth2::{AuthorizationCode, CsrfToken, PkceCodeChallenge, Scope};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use uuid::Uuid;

use super::oauth::{GlobusAuth, token_error, tokens_by_server};
use super::{
    AUTH_RS, LOGIN_BASE_SCOPES, TRANSFER_RS, TokenSet, TokenStore, now, stale_warning,
    transfer_scope,
};
use crate::error::{Error, GlobusApiError, Result};

/// How long a login waits for the browser or the user.
const LOGIN_WAIT: Duration = Duration::from_secs(600);

/// How the authorization code comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeDelivery {
    /// A one-shot server on loopback receives the browser's redirect.
    LocalServer,
    /// The user copies the code from Globus's page and pastes it.
    CopyPaste,
}

impl CodeDelivery {
    /// Copy-paste on headless machines (an SSH session, or no display on Linux),
    /// loopback otherwise, and always where `$BROWSER` names the browser to use.
    ///
    /// ```
    /// use ps_globus::{Settings, auth::CodeDelivery};
    /// let mut settings = Settings::isolated("/tmp/unused");
    /// settings.remote_session = true;
    /// assert_eq!(CodeDelivery::detect(&settings), CodeDelivery::CopyPaste);
    /// settings.browser = true; // BROWSER=w3m, say
    /// assert_eq!(CodeDelivery::detect(&settings), CodeDelivery::LocalServer);
    /// ```
    pub fn detect(settings: &crate::settings::Settings) -> Self {
        let headless = cfg!(target_os = "linux") && !settings.has_display;
        if !settings.browser && (settings.remote_session || headless) {
            CodeDelivery::CopyPaste
        } else {
            CodeDelivery::LocalServer
        }
    }
}

/// The human side of a login: show a URL, read a pasted code.
pub trait LoginPrompt: Send {
    /// Shows the authorization URL (and opens a browser, where that makes sense).
    fn show_url(&mut self, url: &str, delivery: CodeDelivery);

    /// Reads the code the user pasted (copy-paste logins only).
    fn read_code(&mut self) -> Result<String>;
}

/// How a login learns whether a collection needs a `data_access` consent: by looking
/// it up at Globus Transfer with the Transfer token just obtained. Transfer provides it
/// ([`TransferCollectionLookup`](crate::transfer::TransferCollectionLookup)); auth sits
/// below Transfer and takes the lookup as a parameter.
#[async_trait::async_trait]
pub trait CollectionLookup: Send + Sync + std::fmt::Debug {
    /// Whether `collection` needs a `data_access` consent, asked as `authorizer`. A
    /// collection that does not exist is [`GlobusApiError`](crate::error::GlobusApiError) with status 404.
    async fn needs_data_access(
        &self,
        collection: &Uuid,
        authorizer: Arc<dyn super::Authorizer>,
    ) -> Result<bool>;

    /// The scopes a token for `collection`'s HTTPS needs (`https`, plus `data_access`
    /// on a GCSv5 mapped collection that is not high-assurance); empty when the
    /// collection serves no HTTPS. By default: none.
    async fn https_scopes(
        &self,
        _collection: &Uuid,
        _authorizer: Arc<dyn super::Authorizer>,
    ) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// What to log in for.
#[derive(Clone, Debug)]
pub struct LoginOptions {
    /// The Auth service root (`PS_GLOBUS_AUTH_URL`).
    pub auth_url: String,
    /// Looks collections up (at `PS_GLOBUS_TRANSFER_URL`).
    pub lookup: Arc<dyn CollectionLookup>,
    /// The native app's client id.
    pub client_id: String,
    /// Collections to hold `data_access` consents for, where they need one.
    pub collections: Vec<Uuid>,
    /// How the code comes back.
    pub delivery: CodeDelivery,
    /// Log in again even when the stored login already covers everything.
    pub force: bool,
}

impl LoginOptions {
    /// Options from the environment and the config file: `PS_GLOBUS_CLIENT_ID` (else the
    /// config's `client_id`), the service URLs, and every collection of every site.
    pub fn from_settings(
        settings: &crate::settings::Settings,
        config: &crate::config::Config,
        lookup: Arc<dyn CollectionLookup>,
    ) -> Result<Self> {
        if settings.has_service_identity() {
            return Err(Error::invalid_config(
                "login",
                "PS_GLOBUS_CLIENT_ID and PS_GLOBUS_CLIENT_SECRET make this process a \
                          service identity, which needs no login; unset PS_GLOBUS_CLIENT_SECRET \
                          to log in as a user",
            ));
        }
        let client_id = settings
            .client_id
            .clone()
            .or_else(|| config.client_id.clone())
            .ok_or_else(|| Error::invalid_config("login", format!(
                    "no native app client id. Register one at https://app.globus.org/settings/developers \
                     (\"Register a thick client or script that will be installed and run by users\", \
                     i.e. a native app), then set PS_GLOBUS_CLIENT_ID=<its client id> or put \
                     client_id = \"<its client id>\" in {}",
                    settings.config_path.display()
                )))?;
        Ok(LoginOptions {
            auth_url: settings.auth_url.clone(),
            lookup,
            client_id,
            collections: config.collections(),
            delivery: CodeDelivery::detect(settings),
            force: false,
        })
    }
}

/// What a login did.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct LoginOutcome {
    /// The identity (Globus Auth `sub`).
    pub identity: String,
    /// Its user name.
    pub username: Option<String>,
    /// Collections whose `data_access` consent is now held.
    pub consents: BTreeSet<Uuid>,
    /// Collections that were looked up and need no consent.
    pub no_consent_needed: BTreeSet<Uuid>,
    /// Collections whose HTTPS the login now holds a token for (those that serve HTTPS).
    pub https: BTreeSet<Uuid>,
    /// How many browser round trips it took (0: the stored login already sufficed).
    pub flows: u32,
}

/// Logs in (see the module docs) and saves the tokens in `store`.
pub async fn login(
    store: &Arc<dyn TokenStore>,
    options: &LoginOptions,
    prompt: &mut dyn LoginPrompt,
) -> Result<LoginOutcome> {
    let auth = GlobusAuth::new(&options.auth_url, &options.client_id)?;
    let mut held = store.load()?.unwrap_or_default();
    let same_app = held.client_id.as_deref() == Some(options.client_id.as_str());
    let mut flows = 0;
    if options.force || !same_app || !held.tokens.contains_key(TRANSFER_RS) {
        let consents = if same_app {
            held.consents.clone()
        } else {
            BTreeSet::new()
        };
        held = run_flow(
            store.as_ref(),
            &auth,
            options,
            (&consents, &BTreeMap::new()),
            prompt,
        )
        .await?;
        flows += 1;
    }
    // Look the collections up with the Transfer token we now hold.
    let transfer_auth: Arc<dyn super::Authorizer> = Arc::new(super::UserAuthorizer::transfer(
        store.clone(),
        &options.auth_url,
    )?);
    let mut need = held.consents.clone();
    let mut no_consent_needed = BTreeSet::new();
    let mut https = BTreeMap::new();
    for id in &options.collections {
        let missing = |e: Error| match e.downcast_ref::<GlobusApiError>() {
            Some(answer) if answer.status == 404 => Error::invalid_config(
                "login",
                format!("collection {id} does not exist (or is not visible to you); check its id"),
            ),
            _ => e,
        };
        let scopes = options
            .lookup
            .https_scopes(id, transfer_auth.clone())
            .await
            .map_err(missing)?;
        // The HTTPS scopes already say whether Transfer needs a consent (both follow the
        // same document): only a collection without HTTPS is looked up again.
        let from_https =
            (!scopes.is_empty()).then(|| scopes.contains(&super::data_access_scope(id)));
        if !scopes.is_empty() {
            https.insert(*id, scopes);
        }
        if held.consents.contains(id) {
            continue;
        }
        let needs = match from_https {
            Some(needs) => needs,
            None => options
                .lookup
                .needs_data_access(id, transfer_auth.clone())
                .await
                .map_err(missing)?,
        };
        if needs {
            need.insert(*id);
        } else {
            no_consent_needed.insert(*id);
        }
    }
    // HTTPS tokens held before for collections not asked about now are kept.
    let wanted_https: BTreeSet<Uuid> = https.keys().copied().collect();
    if need != held.consents || !wanted_https.is_subset(&held.https) {
        held = run_flow(store.as_ref(), &auth, options, (&need, &https), prompt).await?;
        flows += 1;
    }
    Ok(LoginOutcome {
        identity: held.identity.clone().unwrap_or_default(),
        username: held.username.clone(),
        consents: held.consents.clone(),
        no_consent_needed,
        https: held.https.clone(),
        flows,
    })
}

/// One browser round trip for the base scopes, Transfer with `consents`, and each
/// collection's HTTPS scopes in `https`; saves and returns the new set.
async fn run_flow(
    store: &dyn TokenStore,
    auth: &GlobusAuth,
    options: &LoginOptions,
    (consents, https): (&BTreeSet<Uuid>, &BTreeMap<Uuid, Vec<String>>),
    prompt: &mut dyn LoginPrompt,
) -> Result<TokenSet> {
    let (listener, redirect) = match options.delivery {
        CodeDelivery::LocalServer => {
            let listener = TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(|e| Error::io("listen on", "127.0.0.1", e))?;
            let port = listener
                .local_addr()
                .map_err(|e| Error::io("listen on", "127.0.0.1", e))?
                .port();
            (Some(listener), format!("http://localhost:{port}"))
        }
        CodeDelivery::CopyPaste => (None, auth.auth_code_page()),
    };
    let client = auth.client(&redirect)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge)
        .add_extra_param("access_type", "offline")
        .add_extra_param("prefill_named_grant", hostname());
    for scope in LOGIN_BASE_SCOPES {
        request = request.add_scope(Scope::new((*scope).into()));
    }
    request = request.add_scope(Scope::new(transfer_scope(consents)));
    for scope in https.values().flatten() {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, state) = request.url();
    prompt.show_url(url.as_str(), options.delivery);
    let code = match listener {
        Some(listener) => {
            crate::runtime::timeout(LOGIN_WAIT, receive_redirect(listener, state.secret()))
                .await
                .ok_or_else(|| {
                    Error::login_required(format!("no browser redirect within {LOGIN_WAIT:?}"))
                })??
        }
        None => prompt.read_code()?.trim().to_owned(),
    };
    if code.is_empty() {
        return Err(Error::login_required("no authorization code was entered"));
    }
    let send = auth.oauth_http();
    let response = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&send)
        .await
        .map_err(|e| token_error(&auth.base, e))?;
    let tokens = tokens_by_server(&response, now());
    let auth_token = tokens
        .get(AUTH_RS)
        .ok_or_else(|| Error::unauthorized("Globus Auth issued no auth.globus.org token"))?;
    if !tokens.contains_key(TRANSFER_RS) {
        return Err(Error::unauthorized("Globus Auth issued no Transfer token"));
    }
    let (identity, username) = auth.userinfo(&auth_token.access_token).await?;
    let client_id = options.client_id.clone();
    store.update(&mut |set: &mut TokenSet| {
        if set.identity.as_deref() != Some(identity.as_str()) {
            // Another identity's consents and tokens mean nothing for this one.
            set.consents.clear();
            set.https.clear();
            set.tokens.clear();
        }
        set.identity = Some(identity.clone());
        set.username = username.clone();
        set.client_id = Some(client_id.clone());
        set.consents = consents.clone();
        // A collection's HTTPS token counts only if Globus issued it.
        set.https
            .extend(https.keys().filter(|c| tokens.contains_key(&c.to_string())));
        set.tokens.extend(tokens.clone());
    })
}

/// Serves loopback HTTP until a request carries `code` (and the right `state`).
async fn receive_redirect(listener: TcpListener, state: &str) -> Result<String> {
    loop {
        let (mut socket, _) = listener
            .accept()
            .await
            .map_err(|e| Error::io("accept on", "127.0.0.1", e))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 2048];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let line = String::from_utf8_lossy(&head);
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
        let params: Vec<(String, String)> = url_params(query);
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        // Only a redirect carrying this login's state speaks for it. Anything else on the
        // port (a stale tab, another local process forging a redirect) is answered and
        // ignored: it must not end the login, in success or failure.
        let ours = get("state").as_deref() == Some(state);
        let (status, page, outcome) = match (ours, get("code"), get("error")) {
            (true, Some(code), _) => (
                "200 OK",
                "Login complete: you can close this window.",
                Some(Ok(code)),
            ),
            (true, None, Some(error)) => (
                "200 OK",
                "Login was not completed.",
                Some(Err(Error::login_required(format!(
                    "Globus Auth answered {error}"
                )))),
            ),
            (false, Some(_), _) | (false, None, Some(_)) => {
                tracing::warn!(
                    "ignored a login redirect whose state did not match this login \
                     (a stale or forged redirect)"
                );
                (
                    "400 Bad Request",
                    "Ignored: the state did not match this login.",
                    None,
                )
            }
            // A favicon or a stray request: keep waiting.
            (_, None, None) => ("404 Not Found", "Waiting for the Globus login.", None),
        };
        let body = format!("<!doctype html><html><body><p>{page}</p></body></html>");
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = socket.write_all(reply.as_bytes()).await;
        let _ = socket.shutdown().await;
        if let Some(outcome) = outcome {
            return outcome;
        }
    }
}

fn url_params(query: &str) -> Vec<(String, String)> {
    oauth2::url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn hostname() -> String {
    crate::config::host_name()
}

/// What a logout did.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct LogoutOutcome {
    /// How many tokens Globus Auth revoked.
    pub revoked: usize,
    /// Tokens that could not be revoked (resource server: reason); they were still
    /// deleted locally.
    pub revoke_failed: Vec<String>,
    /// Whether there was a login to remove.
    pub was_logged_in: bool,
}

/// Revokes every stored token at Globus Auth, then deletes them locally (even when
/// revocation failed: the local copy must not outlive a logout).
pub async fn logout(store: &dyn TokenStore, auth_url: &str) -> Result<LogoutOutcome> {
    let Some(set) = store.load()? else {
        return Ok(LogoutOutcome {
            revoked: 0,
            revoke_failed: Vec::new(),
            was_logged_in: false,
        });
    };
    let mut outcome = LogoutOutcome {
        revoked: 0,
        revoke_failed: Vec::new(),
        was_logged_in: !set.tokens.is_empty(),
    };
    if let Some(client_id) = &set.client_id {
        let auth = GlobusAuth::new(auth_url, client_id)?;
        for (rs, token) in &set.tokens {
            // Revoking a refresh token also revokes the access tokens issued from it;
            // the access token goes too, in case there is no refresh token.
            for secret in std::iter::once(&token.access_token).chain(&token.refresh_token) {
                match auth.revoke(secret).await {
                    Ok(()) => outcome.revoked += 1,
                    Err(e) => outcome.revoke_failed.push(format!("{rs}: {e}")),
                }
            }
        }
    }
    store.delete()?;
    Ok(outcome)
}

/// The stored login, as `whoami` reports it (no network).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct LoginStatus {
    /// The identity (Globus Auth `sub`).
    pub identity: Option<String>,
    /// Its user name.
    pub username: Option<String>,
    /// Where the tokens are.
    pub token_store: String,
    /// Per resource server: scopes and expiry.
    pub resource_servers: Vec<ResourceServerStatus>,
    /// Collections whose `data_access` consent is held.
    pub consents: BTreeSet<Uuid>,
    /// A warning when the login is going stale.
    pub warning: Option<String>,
}

/// One resource server's token, without the token.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ResourceServerStatus {
    /// The resource server.
    pub resource_server: String,
    /// The scopes granted.
    pub scope: String,
    /// When the access token expires (RFC 3339).
    pub expires_at: String,
    /// Whether a refresh token is held (so the access token renews itself).
    pub refreshable: bool,
}

/// The stored login in `store`, or [`Error::PermissionDenied`](crate::Error::PermissionDenied).
pub fn status(store: &dyn TokenStore) -> Result<LoginStatus> {
    let set = store
        .load()?
        .filter(|s| !s.tokens.is_empty())
        .ok_or_else(|| Error::login_required(format!("no login in {}", store.describe())))?;
    let time = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string())
            .unwrap_or_default()
    };
    Ok(LoginStatus {
        identity: set.identity.clone(),
        username: set.username.clone(),
        token_store: store.describe(),
        resource_servers: set
            .tokens
            .iter()
            .map(|(rs, t)| ResourceServerStatus {
                resource_server: rs.clone(),
                scope: t.scope.clone(),
                expires_at: time(t.expires_at),
                refreshable: t.refresh_token.is_some(),
            })
            .collect(),
        consents: set.consents.clone(),
        warning: stale_warning(&set, now()),
    })
}
