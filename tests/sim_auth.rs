//! The emulator's Globus Auth: every grant, token expiry and revocation, OIDC.

use crate::support::emulator::Emu;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, StatusCode};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::sha2::{Digest, Sha256, Sha512};
use rsa::signature::Verifier;
use serde_json::{Value, json};

const CLIENT: &str = "cccccccc-0000-0000-0000-000000000001";
const SECRET: &str = "client-secret";
const NATIVE: &str = "dddddddd-0000-0000-0000-000000000002";
const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn emu() -> Emu {
    Emu::with(|c| {
        c.clients.insert(CLIENT.into(), SECRET.into());
    })
}

fn auth(emu: &Emu, path: &str) -> String {
    format!("{}{}", emu.sim.auth_url(), path.trim_start_matches('/'))
}

async fn form(
    emu: &Emu,
    path: &str,
    basic: Option<(&str, &str)>,
    fields: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut request = emu.http.post(auth(emu, path)).form(fields);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Runs `/authorize` for the native client with PKCE and returns the code from the redirect.
async fn authorize(emu: &Emu, verifier: &str, scope: &str) -> String {
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects
        .get(auth(emu, "/v2/oauth2/authorize"))
        .query(&[
            ("client_id", NATIVE),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("state", "xyz"),
            ("response_type", "code"),
            ("access_type", "offline"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(REDIRECT), "{location}");
    assert!(location.contains("state=xyz"), "{location}");
    location
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned()
}

/// Exchanges a PKCE authorization code for tokens as the native client.
async fn exchange(emu: &Emu, code: &str, verifier: &str) -> (StatusCode, Value) {
    let fields = [
        ("client_id", NATIVE),
        ("grant_type", "authorization_code"),
        ("code", code),
        ("code_verifier", verifier),
        ("redirect_uri", REDIRECT),
    ];
    form(emu, "/v2/oauth2/token", None, &fields).await
}

#[tokio::test]
async fn pkce_login_gives_tokens_per_resource_server_and_a_signed_id_token() {
    let emu = emu();
    let verifier = "a-very-long-verifier-string-of-forty-three-c";
    let scope = "openid profile email urn:globus:auth:scope:transfer.api.globus.org:all";
    let code = authorize(&emu, verifier, scope).await;

    let (status, _) = form(
        &emu,
        "/v2/oauth2/token",
        None,
        &[
            ("client_id", NATIVE),
            ("grant_type", "authorization_code"),
            ("code", &code),
            (
                "code_verifier",
                "the-wrong-verifier-the-wrong-verifier-xxxxx",
            ),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a wrong verifier is refused (and burns the code)"
    );

    let code = authorize(&emu, verifier, scope).await;
    let (status, tokens) = exchange(&emu, &code, verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["resource_server"], "auth.globus.org");
    assert_eq!(tokens["state"], "xyz");
    assert_eq!(tokens["expires_in"], 172800);
    assert!(tokens["refresh_token"].is_string(), "access_type=offline");
    let other = tokens["other_tokens"].as_array().unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0]["resource_server"], "transfer.api.globus.org");
    assert_eq!(
        other[0]["scope"],
        "urn:globus:auth:scope:transfer.api.globus.org:all"
    );

    // The code is single-use.
    let (status, body) = form(
        &emu,
        "/v2/oauth2/token",
        None,
        &[
            ("client_id", NATIVE),
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", verifier),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_grant"))
    );

    let claims = verified_id_token_claims(&emu, tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["aud"], NATIVE);
    assert!(claims["sub"].as_str().unwrap().len() == 36);
    assert_eq!(claims["preferred_username"], "user@sim.ps-globus.local");
    tokens_work_where_they_belong(&emu, &tokens, &claims).await;
}

/// The claims of `id_token`, whose signature verifies against the key the emulator
/// publishes (found through its OpenID configuration).
async fn verified_id_token_claims(emu: &Emu, id_token: &str) -> Value {
    let config: Value = emu
        .http
        .get(auth(emu, "/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        config["id_token_signing_alg_values_supported"],
        json!(["RS512"])
    );
    let jwks_uri = config["jwks_uri"].as_str().unwrap();
    assert!(
        jwks_uri.starts_with("http://127.0.0.1:"),
        "absolute: {jwks_uri}"
    );
    let jwk: Value = emu
        .http
        .get(jwks_uri)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwk["keys"][0];
    let n = rsa::BoxedUint::from_be_slice_vartime(
        &URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap(),
    );
    let e = rsa::BoxedUint::from_be_slice_vartime(
        &URL_SAFE_NO_PAD.decode(key["e"].as_str().unwrap()).unwrap(),
    );
    let public = rsa::PublicKey::new(n, e).unwrap();
    let (signed, signature) = id_token.rsplit_once('.').unwrap();
    let signature =
        Signature::try_from(URL_SAFE_NO_PAD.decode(signature).unwrap().as_slice()).unwrap();
    VerifyingKey::<Sha512>::new(public)
        .verify(signed.as_bytes(), &signature)
        .expect("id_token signature");
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(signed.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// The Transfer token of `tokens` works on Transfer, the Auth token on userinfo (which
/// names the id_token's subject).
async fn tokens_work_where_they_belong(emu: &Emu, tokens: &Value, claims: &Value) {
    let other = tokens["other_tokens"].as_array().unwrap();
    let transfer = other[0]["access_token"].as_str().unwrap();
    let (status, _) = emu
        .call_as(transfer, Method::GET, "/v0.10/task_list", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = emu
        .call_as(
            tokens["access_token"].as_str().unwrap(),
            Method::GET,
            "/v0.10/task_list",
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an Auth token is not a Transfer token"
    );
    let info: Value = emu
        .http
        .get(auth(emu, "/v2/oauth2/userinfo"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], claims["sub"]);
}

#[tokio::test]
async fn native_apps_must_use_pkce_and_unknown_clients_are_refused() {
    let emu = emu();
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects
        .get(auth(&emu, "/v2/oauth2/authorize"))
        .query(&[
            ("client_id", NATIVE),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("response_type", "code"),
        ])
        .send()
        .await
        .unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let code = location
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let (status, body) = form(
        &emu,
        "/v2/oauth2/token",
        None,
        &[
            ("client_id", NATIVE),
            ("grant_type", "authorization_code"),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_grant"))
    );
    let (status, body) = form(
        &emu,
        "/v2/oauth2/token",
        None,
        &[("client_id", "not-a-uuid"), ("grant_type", "refresh_token")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let (status, body) = form(
        &emu,
        "/v2/oauth2/token",
        Some((CLIENT, "wrong")),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let (status, body) = form(
        &emu,
        "/v2/oauth2/token",
        Some((CLIENT, SECRET)),
        &[("grant_type", "password")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
}

#[tokio::test]
async fn client_credentials_give_exactly_one_token_for_the_client_identity() {
    let emu = emu();
    let (status, tokens) = form(
        &emu,
        "/v2/oauth2/token",
        Some((CLIENT, SECRET)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "urn:globus:auth:scope:transfer.api.globus.org:all"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tokens["other_tokens"], json!([]));
    assert_eq!(tokens["refresh_token"], Value::Null);
    let token = tokens["access_token"].as_str().unwrap();
    let (introspected_status, intro) = form(
        &emu,
        "/v2/oauth2/token/introspect",
        Some((CLIENT, SECRET)),
        &[("token", token)],
    )
    .await;
    assert_eq!(introspected_status, StatusCode::OK);
    assert_eq!(
        (intro["active"].as_bool(), intro["sub"].as_str()),
        (Some(true), Some(CLIENT))
    );
    assert_eq!(
        intro["username"],
        format!("{CLIENT}@clients.auth.globus.org")
    );
    let (_, valid) = form(
        &emu,
        "/v2/oauth2/token/validate",
        Some((CLIENT, SECRET)),
        &[("token", token)],
    )
    .await;
    assert_eq!(valid["active"], true);
}

#[tokio::test]
async fn refresh_renews_and_revoking_the_refresh_token_kills_its_access_tokens() {
    let emu = emu();
    let verifier = "another-verifier-another-verifier-another-v";
    let code = authorize(
        &emu,
        verifier,
        "urn:globus:auth:scope:transfer.api.globus.org:all",
    )
    .await;
    let (_, tokens) = exchange(&emu, &code, verifier).await;
    assert_eq!(tokens["resource_server"], "transfer.api.globus.org");
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, renewed) = form(
        &emu,
        "/v2/oauth2/token",
        None,
        &[
            ("client_id", NATIVE),
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(renewed["refresh_token"], refresh.as_str());
    let access = renewed["access_token"].as_str().unwrap().to_owned();
    assert_ne!(access, tokens["access_token"].as_str().unwrap());
    assert_eq!(
        emu.call_as(&access, Method::GET, "/v0.10/task_list", None)
            .await
            .0,
        StatusCode::OK
    );

    let (status, revoked) = form(
        &emu,
        "/v2/oauth2/token/revoke",
        None,
        &[("client_id", NATIVE), ("token", &refresh)],
    )
    .await;
    assert_eq!(
        (status, revoked["active"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let (status, body) = emu
        .call_as(&access, Method::GET, "/v0.10/task_list", None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("ClientError.AuthenticationFailed")
        )
    );
    assert!(body["message"].as_str().unwrap().contains("revoked"));
    let (status, body) = form(
        &emu,
        "/v2/oauth2/token",
        None,
        &[
            ("client_id", NATIVE),
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn tokens_expire() {
    let emu = Emu::with(|c| {
        c.clients.insert(CLIENT.into(), SECRET.into());
        c.token_lifetime_s = 0;
    });
    let (_, tokens) = form(
        &emu,
        "/v2/oauth2/token",
        Some((CLIENT, SECRET)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(tokens["expires_in"], 0);
    let (status, body) = emu
        .call_as(
            tokens["access_token"].as_str().unwrap(),
            Method::GET,
            "/v0.10/task_list",
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("ClientError.AuthenticationFailed")
        )
    );
    assert!(body["message"].as_str().unwrap().contains("expired"));
    let (_, valid) = form(
        &emu,
        "/v2/oauth2/token/validate",
        Some((CLIENT, SECRET)),
        &[("token", tokens["access_token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(valid["active"], false);
}

#[tokio::test]
async fn identities_and_consents_are_listed_for_a_service_identity() {
    let emu = emu();
    let consent_scope = format!(
        "openid urn:globus:auth:scope:transfer.api.globus.org:all[*https://auth.globus.org/scopes/{}/data_access]",
        emu.b
    );
    let (_, tokens) = form(
        &emu,
        "/v2/oauth2/token",
        Some((CLIENT, SECRET)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", &consent_scope),
        ],
    )
    .await;
    let auth_token = tokens["access_token"].as_str().unwrap();
    let found: Value = emu
        .http
        .get(auth(&emu, &format!("/v2/api/identities?ids={CLIENT}")))
        .bearer_auth(auth_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        found["identities"][0]["username"],
        format!("{CLIENT}@clients.auth.globus.org")
    );
    let consents: Value = emu
        .http
        .get(auth(&emu, &format!("/v2/api/identities/{CLIENT}/consents")))
        .bearer_auth(auth_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = consents["consents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["scope_name"].as_str().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.ends_with(&format!("{}/data_access", emu.b))),
        "{names:?}"
    );
}

#[tokio::test]
async fn a_client_created_through_the_api_gets_tokens() {
    let emu = emu();
    let created: Value = emu
        .http
        .post(auth(&emu, "/v2/api/clients"))
        .bearer_auth(crate::support::emulator::TOKEN)
        .json(&json!({"client": {"template_id": "95fdeba8-fac2-42bd-a357-e068d82ff78e", "name": "Globus CLI"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["included"]["client_credential"]["client"]
        .as_str()
        .unwrap();
    let secret = created["included"]["client_credential"]["secret"]
        .as_str()
        .unwrap();
    let (status, _) = form(
        &emu,
        "/v2/oauth2/token",
        Some((id, secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the created client works");
}

#[tokio::test]
async fn the_auth_code_page_shows_the_code_and_never_as_markup() {
    let emu = emu();
    let page = emu
        .http
        .get(auth(&emu, "/v2/web/auth-code?code=abc123"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("abc123"));
    let page = emu
        .http
        .get(auth(&emu, "/v2/web/auth-code?code=%3Cscript%3E"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("<script>"),
        "the code is not echoed as markup"
    );
}

/// Regression: the emulator registered any client for anyone (a way to mint credentials
/// with no token at all), and `/__sim/wait` answered for any identity's task without a
/// token. Both need the credentials the real service would ask for (instantiating a
/// public template, as globus-cli does, needs none there either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_clients_and_watching_tasks_need_credentials() {
    let emu = Emu::start();
    let anonymous = emu
        .http
        .post(auth(&emu, "/v2/api/clients"))
        .json(&json!({"client": {"name": "intruder"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    crate::support::emulator::write(emu.root_a(), "watched", b"w");
    let task = emu.submit(&[("/watched", "/watched")], json!({})).await;
    let url = emu.url(&format!("/__sim/wait/{task}?until=final&timeout_ms=10"));
    let no_token = emu.http.get(&url).send().await.unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(emu.wait(&task, "final").await["status"], "SUCCEEDED");
}

/// Defect 3: a collection's access rules are a boundary. A token the emulator mints for
/// a registered client reaches only the collections that allow that client; the
/// identity a rule names keeps its access; a collection without rules stays open.
#[tokio::test]
async fn a_collection_with_access_rules_refuses_other_identities() {
    let emu = Emu::with(|c| {
        c.clients.insert(CLIENT.into(), SECRET.into());
        c.collections.get_mut("b").unwrap().allow = Some(vec!["user@sim.ps-globus.local".into()]);
    });
    let client = emu
        .client_token(
            CLIENT,
            SECRET,
            "urn:globus:auth:scope:transfer.api.globus.org:all",
        )
        .await;
    let ls = |c: &str| format!("/v0.10/operation/endpoint/{c}/ls?path=/");
    let (status, body) = emu.call_as(&client, Method::GET, &ls(&emu.b), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "PermissionDenied");
    let (status, _) = emu.call_as(&client, Method::GET, &ls(&emu.a), None).await;
    assert_eq!(status, StatusCode::OK, "no rules: open");
    let (status, _) = emu.call(Method::GET, &ls(&emu.b), None).await;
    assert_eq!(status, StatusCode::OK, "the identity the rule names");

    let (_, sid) = emu
        .call_as(&client, Method::GET, "/v0.10/submission_id", None)
        .await;
    let mut doc = emu.transfer_doc(&[("/x", "/x")], json!({})).await;
    doc["submission_id"] = sid["value"].clone();
    let (status, body) = emu
        .call_as(&client, Method::POST, "/v0.10/transfer", Some(doc))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(emu.sim.stats().tasks(), 0, "no task for a refused identity");
}
