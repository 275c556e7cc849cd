//! The Auth HTTP routes: authorize, token (every grant), revoke, introspect, validate, userinfo, OIDC discovery.

use super::*;

// ---- responses ---------------------------------------------------------------------

pub(super) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

pub(super) fn auth_api_error(status: StatusCode, code: &str, detail: &str) -> Response {
    let body = json!({
        "errors": [{"status": status.as_u16().to_string(), "id": Uuid::new_v4(), "code": code,
                    "detail": detail, "title": status.canonical_reason()}],
        "error": code.to_lowercase(), "error_description": detail,
    });
    (status, Json(body)).into_response()
}

/// The client a request authenticates as: Basic credentials, or a public `client_id`.
pub(super) enum ClientAuth {
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

pub(super) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
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

pub(super) fn client_auth(
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

pub(super) fn urlencode(text: &str) -> String {
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
        Some("authorization_code") => code_grant(&sim, &client, &client_id, &form),
        Some("refresh_token") => refresh_grant(&sim, &client_id, &form),
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

/// The `authorization_code` grant of `POST /v2/oauth2/token`: the code's client,
/// redirect and PKCE checked.
fn code_grant(
    sim: &SimState,
    client: &ClientAuth,
    client_id: &str,
    form: &HashMap<String, String>,
) -> Response {
    let (auth, base) = (&sim.auth, &sim.base_url);
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
        client_id,
        &scopes,
        record.offline,
        record.state.as_deref(),
    );
    Json(response).into_response()
}

/// The `refresh_token` grant of `POST /v2/oauth2/token`: a new access token hanging off
/// the same refresh token.
fn refresh_grant(sim: &SimState, client_id: &str, form: &HashMap<String, String>) -> Response {
    let (auth, base) = (&sim.auth, &sim.base_url);
    let presented = form.get("refresh_token").cloned().unwrap_or_default();
    let record = auth.lock().tokens.get(&presented).cloned();
    let Some(record) =
        record.filter(|r| r.refresh_scopes.is_some() && !r.revoked && r.client_id == client_id)
    else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "refresh token is invalid, revoked or not this client's",
        );
    };
    let scopes = record.refresh_scopes.clone().unwrap_or_default();
    let mut response = auth.grant(base, &record.identity, client_id, &scopes, false, None);
    // The refresh token stays the same; the new access token hangs off it.
    response["refresh_token"] = json!(presented);
    if let Some(access) = response["access_token"].as_str()
        && let Some(t) = auth.lock().tokens.get_mut(access)
    {
        t.parent = Some(presented.clone());
    }
    Json(response).into_response()
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

pub(super) fn token_status(sim: &SimState, token: &str) -> Option<TokenRecord> {
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
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    // As at Globus Auth: anyone may instantiate a public (native app) template, which
    // is how globus-cli registers itself; any other registration needs a logged-in
    // identity, or an anonymous request could mint itself credentials.
    let templated = body["client"]["template_id"]
        .as_str()
        .is_some_and(|t| sim.auth.is_native_client(t));
    if !templated && let Err(problem) = sim.auth.check(bearer(&headers), AUTH_RS) {
        return auth_api_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &problem.message());
    }
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
