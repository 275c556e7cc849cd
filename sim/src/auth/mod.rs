//! The Globus Auth half of the emulator (the `/v2/oauth2/*` API and OIDC discovery):
//! grants, tokens, consents, OIDC.
//!
//! Tokens are random opaque strings that carry an identity, a resource server, the base
//! scopes granted and, for Transfer, the collections whose `data_access` consent was
//! given. They expire, can be revoked, and Transfer checks them on every request.
//! `/v2/oauth2/authorize` approves at once (there is no human to ask) and remembers the
//! scopes and the PKCE challenge for the code it hands out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rsa::pkcs1v15::SigningKey;
use rsa::sha2::Sha512;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::SimState;

mod routes;

#[allow(unused_imports)]
pub(crate) use routes::*;

/// The Transfer resource server.
pub(crate) const TRANSFER_RS: &str = "transfer.api.globus.org";
/// The Auth resource server.
pub(crate) const AUTH_RS: &str = "auth.globus.org";
/// The Transfer scope.
pub(crate) const TRANSFER_SCOPE: &str = "urn:globus:auth:scope:transfer.api.globus.org:all";
const FLOWS_SCOPE_ID: &str = "eec9b274-0c81-4334-bdc2-54e90e689b9a";
const DATA_ACCESS_PREFIX: &str = "https://auth.globus.org/scopes/";

/// A person or client known to the emulator.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Identity {
    pub id: Uuid,
    pub username: String,
    pub name: String,
    pub email: Option<String>,
}

impl Identity {
    /// The one user who "logs in" through `/authorize` (and owns the static token).
    pub(crate) fn user() -> Identity {
        Identity {
            id: Uuid::new_v5(&Uuid::NAMESPACE_URL, b"ps-globus-sim:identity:user"),
            username: "user@sim.ps-globus.local".into(),
            name: "Simulated User".into(),
            email: Some("user@sim.ps-globus.local".into()),
        }
    }

    /// A client acting as itself (client credentials): its id is the client id.
    fn client(client_id: &str) -> Identity {
        Identity {
            id: Uuid::parse_str(client_id)
                .unwrap_or_else(|_| Uuid::new_v5(&Uuid::NAMESPACE_URL, client_id.as_bytes())),
            username: format!("{client_id}@clients.auth.globus.org"),
            name: format!("client {client_id}"),
            email: None,
        }
    }
}

/// Who made a Transfer request, as its token says.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub identity: Identity,
    /// Collections whose `data_access` consent the token carries.
    pub data_access: BTreeSet<String>,
    /// A static token: valid for every scope and consent.
    pub all_consents: bool,
}

impl Caller {
    pub(crate) fn has_data_access(&self, collection: &Uuid) -> bool {
        self.all_consents || self.data_access.contains(&collection.to_string())
    }
}

/// One requested scope, with its dependent scopes (`BASE[DEP DEP]`, `*` = optional).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scope {
    pub base: String,
    pub deps: Vec<Scope>,
}

/// Splits a scope string on spaces outside brackets, recursively.
pub(crate) fn parse_scopes(text: &str) -> Vec<Scope> {
    let mut scopes = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '[' => {
                depth += 1;
                current.push(c);
            }
            ']' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            c if c.is_whitespace() && depth == 0 => {
                if !current.is_empty() {
                    scopes.push(parse_one(&std::mem::take(&mut current)));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        scopes.push(parse_one(&current));
    }
    scopes
}

fn parse_one(text: &str) -> Scope {
    let text = text.trim_start_matches('*');
    match (text.find('['), text.ends_with(']')) {
        (Some(open), true) => Scope {
            base: text[..open].to_owned(),
            deps: parse_scopes(&text[open + 1..text.len() - 1]),
        },
        _ => Scope {
            base: text.to_owned(),
            deps: Vec::new(),
        },
    }
}

/// The resource server a base scope belongs to, as Globus Auth assigns them: the OIDC
/// scopes to `auth.globus.org`, `urn:globus:auth:scope:<rs>:<name>` to `<rs>`, and a
/// URL scope `https://auth.globus.org/scopes/<id>/<name>` to `<id>` (the Flows scope id
/// to `flows.globus.org`).
pub(crate) fn resource_server(base: &str) -> String {
    match base {
        "openid" | "profile" | "email" => return AUTH_RS.into(),
        _ => {}
    }
    if let Some(rest) = base.strip_prefix("urn:globus:auth:scope:") {
        return rest.split(':').next().unwrap_or(rest).to_owned();
    }
    if let Some(rest) = base.strip_prefix(DATA_ACCESS_PREFIX) {
        let id = rest.split('/').next().unwrap_or(rest);
        return if id == FLOWS_SCOPE_ID {
            "flows.globus.org".into()
        } else {
            id.to_owned()
        };
    }
    base.to_owned()
}

/// Collections named by `.../scopes/<C>/data_access` dependencies anywhere in `scopes`.
fn data_access_collections(scopes: &[Scope]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for scope in scopes {
        if let Some(rest) = scope.base.strip_prefix(DATA_ACCESS_PREFIX)
            && let Some(id) = rest.strip_suffix("/data_access")
        {
            found.insert(id.to_owned());
        }
        found.extend(data_access_collections(&scope.deps));
    }
    found
}

/// The scope a token needs for a collection's `data_access` consent.
pub(crate) fn data_access_scope(collection: &Uuid) -> String {
    format!("{TRANSFER_SCOPE}[*{DATA_ACCESS_PREFIX}{collection}/data_access]")
}

#[derive(Clone)]
struct TokenRecord {
    identity: Identity,
    client_id: String,
    resource_server: String,
    scopes: Vec<String>,
    data_access: BTreeSet<String>,
    expires_at: Option<i64>,
    revoked: bool,
    /// For a refresh token: the full scope request it renews.
    refresh_scopes: Option<Vec<Scope>>,
    /// For an access token: the refresh token it came with, if any.
    parent: Option<String>,
    issued_at: i64,
}

struct CodeRecord {
    client_id: String,
    redirect_uri: String,
    scope: String,
    challenge: Option<String>,
    offline: bool,
    state: Option<String>,
}

#[derive(Default)]
struct AuthInner {
    tokens: HashMap<String, TokenRecord>,
    codes: HashMap<String, CodeRecord>,
    /// Confidential clients: id → secret (configured and created through the API).
    clients: BTreeMap<String, String>,
    /// Consents given: (identity, client) → collection ids.
    consents: HashMap<(Uuid, String), BTreeSet<String>>,
    identities: BTreeMap<Uuid, Identity>,
}

pub(crate) struct AuthState {
    inner: Mutex<AuthInner>,
    static_token: Option<String>,
    native_clients: Vec<String>,
    lifetime_s: i64,
}

/// Why a bearer token was refused.
#[derive(Debug)]
pub(crate) enum TokenProblem {
    Missing,
    Unknown,
    Expired,
    Revoked,
    WrongResourceServer(String),
}

impl TokenProblem {
    pub(crate) fn message(&self) -> String {
        match self {
            TokenProblem::Missing => "No Authentication provided.".into(),
            TokenProblem::Unknown => "Token is not valid.".into(),
            TokenProblem::Expired => "Token has expired.".into(),
            TokenProblem::Revoked => "Token has been revoked.".into(),
            TokenProblem::WrongResourceServer(rs) => {
                format!("Token is for {rs}, not this service.")
            }
        }
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

impl AuthState {
    pub(crate) fn new(config: &super::SimConfig) -> Self {
        let mut inner = AuthInner {
            clients: config.clients.clone(),
            ..AuthInner::default()
        };
        let user = Identity::user();
        inner.identities.insert(user.id, user);
        for id in config.clients.keys() {
            let identity = Identity::client(id);
            inner.identities.insert(identity.id, identity);
        }
        AuthState {
            inner: Mutex::new(inner),
            static_token: config.static_token.clone(),
            native_clients: config.native_clients.clone(),
            lifetime_s: config.token_lifetime_s as i64,
        }
    }

    fn lock(&self) -> MutexGuard<'_, AuthInner> {
        self.inner.lock().expect("auth state poisoned")
    }

    /// Checks a bearer token for `resource_server`.
    pub(crate) fn check(
        &self,
        token: Option<&str>,
        resource_server: &str,
    ) -> Result<Caller, TokenProblem> {
        let token = token.ok_or(TokenProblem::Missing)?;
        if self.static_token.as_deref() == Some(token) {
            return Ok(Caller {
                identity: Identity::user(),
                data_access: BTreeSet::new(),
                all_consents: true,
            });
        }
        let inner = self.lock();
        let record = inner.tokens.get(token).ok_or(TokenProblem::Unknown)?;
        if record.revoked {
            return Err(TokenProblem::Revoked);
        }
        if record.refresh_scopes.is_some() {
            return Err(TokenProblem::Unknown); // a refresh token is no bearer token
        }
        if record.expires_at.is_some_and(|t| now() >= t) {
            return Err(TokenProblem::Expired);
        }
        if record.resource_server != resource_server {
            return Err(TokenProblem::WrongResourceServer(
                record.resource_server.clone(),
            ));
        }
        Ok(Caller {
            identity: record.identity.clone(),
            data_access: record.data_access.clone(),
            all_consents: false,
        })
    }

    /// Checks a bearer token for `resource_server` and returns its scopes too (`None`:
    /// the static token, which carries every scope).
    pub(crate) fn check_scoped(
        &self,
        token: Option<&str>,
        resource_server: &str,
    ) -> Result<(Caller, Option<Vec<String>>), TokenProblem> {
        let caller = self.check(token, resource_server)?;
        if caller.all_consents {
            return Ok((caller, None));
        }
        let scopes = token
            .and_then(|t| self.lock().tokens.get(t).map(|r| r.scopes.clone()))
            .unwrap_or_default();
        Ok((caller, Some(scopes)))
    }

    /// Checks confidential-client credentials.
    fn client_secret_ok(&self, id: &str, secret: &str) -> bool {
        self.lock().clients.get(id).is_some_and(|s| s == secret)
    }

    fn is_native_client(&self, id: &str) -> bool {
        if self.native_clients.is_empty() {
            Uuid::parse_str(id).is_ok() && !self.lock().clients.contains_key(id)
        } else {
            self.native_clients.iter().any(|c| c == id)
        }
    }

    /// Issues one token per resource server for `scopes`; returns the token response.
    fn grant(
        &self,
        base_url: &str,
        identity: &Identity,
        client_id: &str,
        scopes: &[Scope],
        offline: bool,
        state: Option<&str>,
    ) -> Value {
        let mut inner = self.lock();
        let consent_key = (identity.id, client_id.to_owned());
        let asked = data_access_collections(scopes);
        let consents = inner.consents.entry(consent_key).or_default();
        consents.extend(asked);
        let consents = consents.clone();
        inner
            .identities
            .entry(identity.id)
            .or_insert_with(|| identity.clone());

        let mut by_rs: BTreeMap<String, Vec<Scope>> = BTreeMap::new();
        for scope in scopes {
            by_rs
                .entry(resource_server(&scope.base))
                .or_default()
                .push(scope.clone());
        }
        let issued_at = now();
        let mut docs = Vec::new();
        for (rs, rs_scopes) in by_rs {
            let access = random_token(32);
            let refresh = offline.then(|| random_token(40));
            let bases: Vec<String> = rs_scopes.iter().map(|s| s.base.clone()).collect();
            let data_access = if rs == TRANSFER_RS {
                consents.clone()
            } else {
                BTreeSet::new()
            };
            let record = TokenRecord {
                identity: identity.clone(),
                client_id: client_id.to_owned(),
                resource_server: rs.clone(),
                scopes: bases.clone(),
                data_access: data_access.clone(),
                expires_at: Some(issued_at + self.lifetime_s),
                revoked: false,
                refresh_scopes: None,
                parent: refresh.clone(),
                issued_at,
            };
            inner.tokens.insert(access.clone(), record.clone());
            if let Some(refresh) = &refresh {
                inner.tokens.insert(
                    refresh.clone(),
                    TokenRecord {
                        expires_at: None,
                        refresh_scopes: Some(rs_scopes.clone()),
                        parent: None,
                        ..record
                    },
                );
            }
            let mut doc = json!({
                "access_token": access,
                "expires_in": self.lifetime_s,
                "resource_server": rs,
                "token_type": "Bearer",
                "scope": bases.join(" "),
                "state": state.unwrap_or("_default"),
                "refresh_token": refresh,
            });
            if rs == AUTH_RS && bases.iter().any(|b| b == "openid") {
                doc["id_token"] = json!(id_token(
                    base_url,
                    identity,
                    client_id,
                    doc["access_token"].as_str().unwrap_or_default(),
                    self.lifetime_s
                ));
            }
            docs.push(doc);
        }
        // The Auth token (with the id_token) leads, as Globus does; the others follow.
        docs.sort_by_key(|d| d["resource_server"] != AUTH_RS);
        let mut first = if docs.is_empty() {
            json!({})
        } else {
            docs.remove(0)
        };
        first["other_tokens"] = Value::Array(docs);
        first
    }
}

/// The signing key for id_tokens: one per process (RSA keygen is slow in debug builds).
struct Keys {
    signing: SigningKey<Sha512>,
    kid: String,
    n: String,
    e: String,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = rsa::PrivateKey::new(&mut rand::rng(), 2048).expect("RSA key generation");
        let strip = |bytes: Box<[u8]>| -> Vec<u8> {
            let first = bytes
                .iter()
                .position(|b| *b != 0)
                .unwrap_or(bytes.len() - 1);
            bytes[first..].to_vec()
        };
        let n = URL_SAFE_NO_PAD.encode(strip(key.n().to_be_bytes()));
        let e = URL_SAFE_NO_PAD.encode(strip(key.e().to_be_bytes()));
        let kid = Sha256::digest(n.as_bytes())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Keys {
            signing: SigningKey::<Sha512>::new(key),
            kid,
            n,
            e,
        }
    })
}

/// Starts key generation early, off the request path.
pub(crate) fn warm_up_keys() {
    std::thread::spawn(|| {
        keys();
    });
}

fn id_token(
    base_url: &str,
    identity: &Identity,
    client_id: &str,
    access_token: &str,
    lifetime: i64,
) -> String {
    let keys = keys();
    let header = json!({"alg": "RS512", "typ": "JWT", "kid": keys.kid});
    let digest = Sha512::digest(access_token.as_bytes());
    let t = now();
    let claims = json!({
        "sub": identity.id,
        "aud": client_id,
        "iss": base_url.trim_end_matches('/'),
        "iat": t,
        "exp": t + lifetime,
        "at_hash": URL_SAFE_NO_PAD.encode(&digest[..32]),
        "name": identity.name,
        "email": identity.email,
        "preferred_username": identity.username,
        "organization": "ps-globus emulator",
        "identity_provider": Uuid::new_v5(&Uuid::NAMESPACE_URL, b"ps-globus-sim:idp"),
        "identity_provider_display_name": "ps-globus emulator",
        "last_authentication": t,
        "identity_set": [identity_json(identity)],
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = keys.signing.sign(signing_input.as_bytes()).to_bytes();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn identity_json(identity: &Identity) -> Value {
    json!({
        "sub": identity.id, "id": identity.id, "username": identity.username,
        "name": identity.name, "email": identity.email,
        "organization": "ps-globus emulator", "status": "used",
        "identity_provider": Uuid::new_v5(&Uuid::NAMESPACE_URL, b"ps-globus-sim:idp"),
        "identity_type": "login",
    })
}
