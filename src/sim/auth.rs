//! The Globus Auth half of the emulator (SPEC §5): grants, tokens, consents, OIDC.
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

/// The resource server a base scope belongs to (SPEC §5.3).
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

// ---- responses ---------------------------------------------------------------------

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn auth_api_error(status: StatusCode, code: &str, detail: &str) -> Response {
    let body = json!({
        "errors": [{"status": status.as_u16().to_string(), "id": Uuid::new_v4(), "code": code,
                    "detail": detail, "title": status.canonical_reason()}],
        "error": code.to_lowercase(), "error_description": detail,
    });
    (status, Json(body)).into_response()
}

/// The client a request authenticates as: Basic credentials, or a public `client_id`.
enum ClientAuth {
    Confidential(String),
    Native(String),
}

/// Who an Auth request is from, for the stats: the Basic client id, else the bearer
/// token's identity, else `anonymous`. Never the secret or the token.
pub(crate) fn requester(auth: &AuthState, headers: &HeaderMap) -> String {
    if let Some((id, _)) = basic_credentials(headers) {
        return id;
    }
    auth.check(bearer(headers), AUTH_RS)
        .map(|caller| caller.identity.id.to_string())
        .unwrap_or_else(|_| "anonymous".into())
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

fn client_auth(
    auth: &AuthState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<ClientAuth, Box<Response>> {
    let refuse = |why: &str| Box::new(oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why));
    if let Some((id, secret)) = basic_credentials(headers) {
        return if auth.client_secret_ok(&id, &secret) {
            Ok(ClientAuth::Confidential(id))
        } else {
            Err(refuse("unknown client or wrong secret"))
        };
    }
    match form.get("client_id") {
        Some(id) if auth.is_native_client(id) => Ok(ClientAuth::Native(id.clone())),
        Some(_) => Err(refuse("unknown client id")),
        None => Err(refuse("client authentication is required")),
    }
}

// ---- handlers ----------------------------------------------------------------------

#[derive(Deserialize)]
pub(crate) struct AuthorizeQuery {
    client_id: String,
    redirect_uri: String,
    #[serde(default)]
    scope: String,
    state: Option<String>,
    response_type: Option<String>,
    access_type: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// `GET /v2/oauth2/authorize`: approves at once and redirects with a code.
pub(crate) async fn authorize(
    State(sim): State<Arc<SimState>>,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    let auth = &sim.auth;
    let known =
        auth.is_native_client(&q.client_id) || auth.lock().clients.contains_key(&q.client_id);
    if !known {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "unknown client id",
        );
    }
    if q.response_type.as_deref().is_some_and(|t| t != "code") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_response_type",
            "only response_type=code",
        );
    }
    if q.code_challenge.is_some() && q.code_challenge_method.as_deref().unwrap_or("plain") != "S256"
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "only code_challenge_method=S256",
        );
    }
    let code = random_token(24);
    auth.lock().codes.insert(
        code.clone(),
        CodeRecord {
            client_id: q.client_id,
            redirect_uri: q.redirect_uri.clone(),
            scope: q.scope,
            challenge: q.code_challenge,
            offline: q.access_type.as_deref() == Some("offline"),
            state: q.state.clone(),
        },
    );
    let separator = if q.redirect_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut target = format!("{}{separator}code={}", q.redirect_uri, urlencode(&code));
    if let Some(state) = q.state {
        target.push_str(&format!("&state={}", urlencode(&state)));
    }
    // 302 Found, as Globus answers (axum's Redirect::to would say 303).
    (StatusCode::FOUND, [(header::LOCATION, target)]).into_response()
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /v2/web/auth-code`: the page that shows the code for copy-paste.
pub(crate) async fn auth_code_page(Query(q): Query<HashMap<String, String>>) -> Html<String> {
    let code: String = q
        .get("code")
        .map(|c| {
            c.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect()
        })
        .unwrap_or_default();
    Html(format!(
        "<!doctype html><html><head><title>Authorization code</title></head><body>\
         <p>Copy this code into your application:</p><pre id=\"code\">{code}</pre></body></html>"
    ))
}

/// `POST /v2/oauth2/token`.
pub(crate) async fn token(
    State(sim): State<Arc<SimState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let auth = &sim.auth;
    let client = match client_auth(auth, &headers, &form) {
        Ok(client) => client,
        Err(response) => return *response,
    };
    let client_id = match &client {
        ClientAuth::Confidential(id) | ClientAuth::Native(id) => id.clone(),
    };
    let base = &sim.base_url;
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            let ClientAuth::Confidential(id) = &client else {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client_credentials needs a confidential client",
                );
            };
            let scopes = parse_scopes(
                form.get("scope")
                    .map(String::as_str)
                    .unwrap_or(TRANSFER_SCOPE),
            );
            let identity = Identity::client(id);
            Json(auth.grant(base, &identity, id, &scopes, false, None)).into_response()
        }
        Some("authorization_code") => {
            let code = form.get("code").cloned().unwrap_or_default();
            let Some(record) = auth.lock().codes.remove(&code) else {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_grant",
                    "unknown or used authorization code",
                );
            };
            if record.client_id != client_id {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_grant",
                    "the code was issued to another client",
                );
            }
            if form
                .get("redirect_uri")
                .is_some_and(|r| *r != record.redirect_uri)
            {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_grant",
                    "redirect_uri does not match",
                );
            }
            match (&record.challenge, form.get("code_verifier")) {
                (Some(challenge), Some(verifier)) => {
                    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
                    if &computed != challenge {
                        return oauth_error(
                            StatusCode::UNAUTHORIZED,
                            "invalid_grant",
                            "PKCE verification failed",
                        );
                    }
                }
                (Some(_), None) => {
                    return oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_grant",
                        "code_verifier is required",
                    );
                }
                (None, _) if matches!(client, ClientAuth::Native(_)) => {
                    return oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_grant",
                        "native apps must use PKCE",
                    );
                }
                (None, _) => {}
            }
            let scopes = parse_scopes(&record.scope);
            let response = auth.grant(
                base,
                &Identity::user(),
                &client_id,
                &scopes,
                record.offline,
                record.state.as_deref(),
            );
            Json(response).into_response()
        }
        Some("refresh_token") => {
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            let record = auth.lock().tokens.get(&presented).cloned();
            let Some(record) = record
                .filter(|r| r.refresh_scopes.is_some() && !r.revoked && r.client_id == client_id)
            else {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_grant",
                    "refresh token is invalid, revoked or not this client's",
                );
            };
            let scopes = record.refresh_scopes.clone().unwrap_or_default();
            let mut response = auth.grant(base, &record.identity, &client_id, &scopes, false, None);
            // The refresh token stays the same; the new access token hangs off it.
            response["refresh_token"] = json!(presented);
            if let Some(access) = response["access_token"].as_str()
                && let Some(t) = auth.lock().tokens.get_mut(access)
            {
                t.parent = Some(presented.clone());
            }
            Json(response).into_response()
        }
        Some(other) => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant_type {other} is not supported"),
        ),
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is required",
        ),
    }
}

/// `POST /v2/oauth2/token/revoke`: revokes a token (a refresh token with its access tokens).
pub(crate) async fn revoke(
    State(sim): State<Arc<SimState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(response) = client_auth(&sim.auth, &headers, &form) {
        return *response;
    }
    let token = form.get("token").cloned().unwrap_or_default();
    let mut inner = sim.auth.lock();
    if let Some(record) = inner.tokens.get_mut(&token) {
        record.revoked = true;
    }
    for record in inner.tokens.values_mut() {
        if record.parent.as_deref() == Some(token.as_str()) {
            record.revoked = true;
        }
    }
    Json(json!({"active": false})).into_response()
}

fn token_status(sim: &SimState, token: &str) -> Option<TokenRecord> {
    let record = sim.auth.lock().tokens.get(token).cloned()?;
    let live = !record.revoked && record.expires_at.is_none_or(|t| now() < t);
    live.then_some(record)
}

/// `POST /v2/oauth2/token/introspect` (confidential clients only).
pub(crate) async fn introspect(
    State(sim): State<Arc<SimState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    match client_auth(&sim.auth, &headers, &form) {
        Ok(ClientAuth::Confidential(_)) => {}
        Ok(ClientAuth::Native(_)) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "introspection needs a confidential client",
            );
        }
        Err(response) => return *response,
    }
    let token = form.get("token").cloned().unwrap_or_default();
    let Some(record) = token_status(&sim, &token) else {
        return Json(json!({"active": false})).into_response();
    };
    Json(json!({
        "active": true, "token_type": "Bearer", "scope": record.scopes.join(" "),
        "client_id": record.client_id, "username": record.identity.username,
        "name": record.identity.name, "email": record.identity.email,
        "sub": record.identity.id, "aud": [record.resource_server, record.client_id],
        "iss": sim.base_url.trim_end_matches('/'), "exp": record.expires_at,
        "iat": record.issued_at, "nbf": record.issued_at,
        "identity_set": [record.identity.id],
    }))
    .into_response()
}

/// `POST /v2/oauth2/token/validate`.
pub(crate) async fn validate(
    State(sim): State<Arc<SimState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(response) = client_auth(&sim.auth, &headers, &form) {
        return *response;
    }
    let token = form.get("token").cloned().unwrap_or_default();
    Json(json!({"active": token_status(&sim, &token).is_some()})).into_response()
}

/// `GET /v2/oauth2/userinfo`.
pub(crate) async fn userinfo(State(sim): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    let caller = match sim.auth.check(bearer(&headers), AUTH_RS) {
        Ok(caller) => caller,
        Err(problem) => {
            return auth_api_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &problem.message());
        }
    };
    let i = &caller.identity;
    Json(json!({
        "sub": i.id, "preferred_username": i.username, "name": i.name, "email": i.email,
        "organization": "ps-globus emulator",
        "identity_provider": Uuid::new_v5(&Uuid::NAMESPACE_URL, b"ps-globus-sim:idp"),
        "identity_provider_display_name": "ps-globus emulator",
        "last_authentication": now(),
        "identity_set": [identity_json(i)],
    }))
    .into_response()
}

/// `GET /.well-known/openid-configuration`.
pub(crate) async fn openid_configuration(State(sim): State<Arc<SimState>>) -> Response {
    let base = &sim.base_url;
    Json(json!({
        "issuer": base.trim_end_matches('/'),
        "authorization_endpoint": format!("{base}v2/oauth2/authorize"),
        "token_endpoint": format!("{base}v2/oauth2/token"),
        "userinfo_endpoint": format!("{base}v2/oauth2/userinfo"),
        "revocation_endpoint": format!("{base}v2/oauth2/token/revoke"),
        "jwks_uri": format!("{base}jwk.json"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS512"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["at_hash", "aud", "email", "exp", "name", "nonce", "preferred_username", "iat", "iss", "sub"],
    }))
    .into_response()
}

/// `GET /jwk.json`.
pub(crate) async fn jwk() -> Response {
    let keys = keys();
    Json(json!({"keys": [{"kty": "RSA", "alg": "RS512", "use": "sig", "kid": keys.kid, "e": keys.e, "n": keys.n}]})).into_response()
}

/// `GET /v2/api/identities?ids=..|usernames=..`.
pub(crate) async fn identities(
    State(sim): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(problem) = sim.auth.check(bearer(&headers), AUTH_RS) {
        return auth_api_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &problem.message());
    }
    let split = |key: &str| -> Vec<String> {
        q.get(key)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (ids, usernames) = (split("ids"), split("usernames"));
    let inner = sim.auth.lock();
    let found: Vec<Value> = inner
        .identities
        .values()
        .filter(|i| ids.contains(&i.id.to_string()) || usernames.contains(&i.username))
        .map(identity_json)
        .collect();
    Json(json!({"identities": found})).into_response()
}

/// `GET /v2/api/identities/{id}/consents`.
pub(crate) async fn consents(
    State(sim): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    if let Err(problem) = sim.auth.check(bearer(&headers), AUTH_RS) {
        return auth_api_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &problem.message());
    }
    let inner = sim.auth.lock();
    let mut list = Vec::new();
    for ((identity, client), collections) in &inner.consents {
        if *identity != id {
            continue;
        }
        let parent = list.len() as u64 + 1;
        list.push(json!({"id": parent, "scope_name": TRANSFER_SCOPE, "dependency_path": [parent],
                         "status": "approved", "client": client, "allows_refresh": true, "atomically_revocable": false}));
        for collection in collections {
            let child = list.len() as u64 + 1;
            list.push(json!({"id": child, "scope_name": format!("{DATA_ACCESS_PREFIX}{collection}/data_access"),
                             "dependency_path": [parent, child], "status": "approved", "client": client,
                             "allows_refresh": true, "atomically_revocable": false}));
        }
    }
    Json(json!({"consents": list})).into_response()
}

/// `POST /v2/api/clients`: creates a confidential client (what `globus login` does first).
pub(crate) async fn create_client(
    State(sim): State<Arc<SimState>>,
    Json(body): Json<Value>,
) -> Response {
    let name = body["client"]["name"]
        .as_str()
        .unwrap_or("client")
        .to_owned();
    let template = body["client"]["template_id"].clone();
    let id = Uuid::new_v4().to_string();
    let secret = random_token(32);
    sim.auth.lock().clients.insert(id.clone(), secret.clone());
    let response = json!({
        "client": {"id": id, "name": name, "parent_client": template, "public_client": false,
                   "redirect_uris": [], "grant_types": ["authorization_code", "client_credentials", "refresh_token"]},
        "included": {"client_credential": {"name": "Auto-created at client creation", "id": Uuid::new_v4(),
                                            "client": id, "secret": secret}},
    });
    (StatusCode::CREATED, Json(response)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_split_outside_brackets_and_map_to_resource_servers() {
        let text = "openid urn:globus:auth:scope:transfer.api.globus.org:all[*https://auth.globus.org/scopes/c1/data_access https://auth.globus.org/scopes/c2/data_access] https://auth.globus.org/scopes/eec9b274-0c81-4334-bdc2-54e90e689b9a/all";
        let scopes = parse_scopes(text);
        assert_eq!(scopes.len(), 3);
        assert_eq!(scopes[1].base, TRANSFER_SCOPE);
        assert_eq!(scopes[1].deps.len(), 2);
        assert_eq!(resource_server(&scopes[0].base), AUTH_RS);
        assert_eq!(resource_server(&scopes[1].base), TRANSFER_RS);
        assert_eq!(resource_server(&scopes[2].base), "flows.globus.org");
        assert_eq!(
            resource_server("https://auth.globus.org/scopes/abc/data_access"),
            "abc"
        );
        let found: Vec<String> = data_access_collections(&scopes).into_iter().collect();
        assert_eq!(found, vec!["c1", "c2"]);
    }
}
