//! User logins against the emulator's Auth API, through the library: both PKCE flows,
//! refresh, revocation, consents and the token stores (`login_cli.rs`: the same through
//! the binary, and no secret in any log).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use crate::support::emulator::Emu;
use ps_globus::Error;
use ps_globus::auth::{
    CodeDelivery, FileTokenStore, KeyringTokenStore, LoginOptions, LoginPrompt, TRANSFER_RS,
    TokenSet, TokenStore, UserAuthorizer, choose_token_store,
};
use ps_globus::error::{ConsentRequired, Remedy};
use ps_globus::transfer::{TransferClient, TransferCollectionLookup};

pub(super) const APP: &str = "a0a0a0a0-1111-4222-8333-444444444444";

/// Collections `flagged` need a `data_access` consent. None serves HTTPS: these tests
/// count the flows consents take (`a_login_holds_an_https_token_…` adds HTTPS).
pub(super) fn emu_with_flagged(flagged: &[&str]) -> Emu {
    let flagged: Vec<String> = flagged.iter().map(|s| s.to_string()).collect();
    Emu::with(move |c| {
        for collection in c.collections.values_mut() {
            collection.disable_https = true;
        }
        for name in &flagged {
            c.collections.get_mut(name).unwrap().requires_data_access = true;
        }
    })
}

/// A plain client that does not follow redirects.
pub(super) fn no_redirect() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Plays the browser: GETs the authorize URL on its own thread and runtime (the caller
/// may be blocked in a login). Copy-paste: returns the code from the redirect.
/// Loopback: follows the redirect to the login's server and returns its page.
pub(super) fn browse(url: &str, follow: bool) -> String {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            if follow {
                let http = reqwest::Client::builder().no_proxy().build().unwrap();
                let response = http.get(&url).send().await.unwrap();
                return response.text().await.unwrap();
            }
            let response = no_redirect().get(&url).send().await.unwrap();
            assert_eq!(response.status(), 302, "authorize must redirect");
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            let parsed = oauth2::url::Url::parse(&location).unwrap();
            assert!(parsed.path().ends_with("/v2/web/auth-code"), "{location}");
            parsed
                .query_pairs()
                .find(|(k, _)| k == "code")
                .map(|(_, v)| v.into_owned())
                .expect("a code in the redirect")
        })
    })
    .join()
    .unwrap()
}

/// A library-level prompt that approves every login like a browser would.
#[derive(Default)]
struct Approve {
    code: Option<String>,
    urls: Vec<String>,
    pages: Arc<std::sync::Mutex<Vec<String>>>,
}

impl LoginPrompt for Approve {
    fn show_url(&mut self, url: &str, delivery: CodeDelivery) {
        self.urls.push(url.to_owned());
        match delivery {
            CodeDelivery::CopyPaste => self.code = Some(browse(url, false)),
            CodeDelivery::LocalServer => {
                let (url, pages) = (url.to_owned(), self.pages.clone());
                std::thread::spawn(move || pages.lock().unwrap().push(browse(&url, true)));
            }
        }
    }

    fn read_code(&mut self) -> ps_globus::Result<String> {
        Ok(self.code.take().expect("show_url ran first"))
    }
}

fn options(emu: &Emu, delivery: CodeDelivery, collections: &[&str]) -> LoginOptions {
    LoginOptions {
        auth_url: emu.sim.auth_url().to_owned(),
        lookup: Arc::new(TransferCollectionLookup::new(emu.sim.transfer_url())),
        client_id: APP.into(),
        collections: collections.iter().map(|c| c.parse().unwrap()).collect(),
        delivery,
        force: false,
    }
}

fn file_store(dir: &Path) -> Arc<dyn TokenStore> {
    Arc::new(FileTokenStore::new(dir.join("tokens.json")))
}

/// A copy-paste login into a file store of its own.
async fn logged_in(emu: &Emu) -> (tempfile::TempDir, Arc<dyn TokenStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let opts = options(emu, CodeDelivery::CopyPaste, &[]);
    ps_globus::auth::login(&store, &opts, &mut Approve::default())
        .await
        .unwrap();
    (dir, store)
}

fn stored(store: &Arc<dyn TokenStore>) -> TokenSet {
    store.load().unwrap().expect("a stored login")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_login_stores_refreshable_tokens_for_the_user() {
    let emu = Emu::start();
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let mut prompt = Approve::default();
    let outcome = ps_globus::auth::login(
        &store,
        &options(&emu, CodeDelivery::LocalServer, &[]),
        &mut prompt,
    )
    .await
    .unwrap();
    assert_eq!(outcome.flows, 1);
    assert_eq!(
        outcome.username.as_deref(),
        Some("user@sim.ps-globus.local")
    );
    let url = &prompt.urls[0];
    for part in [
        "code_challenge_method=S256",
        "access_type=offline",
        "redirect_uri=http%3A%2F%2Flocalhost%3A",
        "openid",
    ] {
        assert!(url.contains(part), "{part} missing from {url}");
    }
    // As globus-sdk's local server sends it: `http://localhost:PORT`, no path.
    let redirect = oauth2::url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .unwrap()
        .1
        .into_owned();
    let port = redirect.strip_prefix("http://localhost:").unwrap();
    assert!(port.parse::<u16>().is_ok(), "{redirect}");
    assert!(prompt.pages.lock().unwrap()[0].contains("Login complete"));
    let set = stored(&store);
    assert_eq!(set.client_id.as_deref(), Some(APP));
    let transfer = &set.tokens[TRANSFER_RS];
    assert!(transfer.refresh_token.is_some());
    assert!(set.tokens["auth.globus.org"].refresh_token.is_some());
    // The tokens work: Transfer accepts them as this user.
    let auth = Arc::new(UserAuthorizer::transfer(store.clone(), emu.sim.auth_url()).unwrap());
    assert_eq!(
        ps_globus::auth::Authorizer::identity(auth.as_ref()),
        format!("user:{}", outcome.identity)
    );
    let client = TransferClient::with_base_url(emu.sim.transfer_url(), auth).unwrap();
    client.ls(&emu.a, "/").await.unwrap();
    // A second login with nothing new is a no-op.
    let again = ps_globus::auth::login(
        &store,
        &options(&emu, CodeDelivery::LocalServer, &[]),
        &mut Approve::default(),
    )
    .await
    .unwrap();
    assert_eq!(again.flows, 0);
}

/// Defect 14: a redirect with another state (forged by a local process, or a stale tab)
/// is answered and ignored; it neither ends the login nor has its code exchanged, and the
/// real redirect that follows completes the login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_redirect_is_ignored_and_the_real_one_completes_the_login() {
    /// Forges two redirects, checks they are ignored, then approves as the user would.
    struct ForgerThenUser;
    impl LoginPrompt for ForgerThenUser {
        fn show_url(&mut self, url: &str, _: CodeDelivery) {
            let parsed = oauth2::url::Url::parse(url).unwrap();
            let redirect = parsed
                .query_pairs()
                .find(|(k, _)| k == "redirect_uri")
                .unwrap()
                .1
                .into_owned();
            let url = url.to_owned();
            // The login answers redirects once this returns: browse from another thread.
            std::thread::spawn(move || {
                for forged in [
                    "code=stolen&state=not-the-state",
                    "error=access_denied&state=x",
                ] {
                    let page = browse(&format!("{redirect}?{forged}"), true);
                    assert!(page.contains("Ignored"), "{page}");
                }
                browse(&url, true)
            });
        }
        fn read_code(&mut self) -> ps_globus::Result<String> {
            unreachable!()
        }
    }
    let emu = Emu::start();
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let mut prompt = ForgerThenUser;
    let outcome = ps_globus::auth::login(
        &store,
        &options(&emu, CodeDelivery::LocalServer, &[]),
        &mut prompt,
    )
    .await
    .unwrap();
    assert_eq!(outcome.flows, 1);
    assert!(store.load().unwrap().is_some(), "the real login is stored");
    assert_eq!(
        emu.sim.stats().route("POST /v2/oauth2/token"),
        1,
        "one exchange: the real code"
    );
}

/// Makes the stored Transfer token look due for renewal (as if time had passed).
fn age_transfer_token(store: &Arc<dyn TokenStore>) -> String {
    let mut old = String::new();
    store
        .update(&mut |set| {
            let t = set.tokens.get_mut(TRANSFER_RS).unwrap();
            t.expires_at = chrono::Utc::now().timestamp() - 5;
            old = t.access_token.clone();
        })
        .unwrap();
    old
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_before_expiry_and_after_a_401() {
    let emu = Emu::start();
    let (_dir, store) = logged_in(&emu).await;
    let grants = || emu.sim.stats().route("POST /v2/oauth2/token");
    assert_eq!(grants(), 1);

    // Due for renewal: refreshed before use, saved for other processes.
    let old = age_transfer_token(&store);
    let auth = Arc::new(UserAuthorizer::transfer(store.clone(), emu.sim.auth_url()).unwrap());
    let client = TransferClient::with_base_url(emu.sim.transfer_url(), auth.clone()).unwrap();
    client.ls(&emu.a, "/").await.unwrap();
    assert_eq!(grants(), 2);
    let renewed = stored(&store).tokens[TRANSFER_RS].clone();
    assert_ne!(renewed.access_token, old);
    assert!(renewed.expires_at > chrono::Utc::now().timestamp() + 1000);
    assert!(renewed.refresh_token.is_some(), "the refresh token is kept");

    // Globus forgets the access token (revoked elsewhere): one 401, one refresh, success.
    let current = renewed.access_token.clone();
    let response = no_redirect()
        .post(format!("{}v2/oauth2/token/revoke", emu.sim.auth_url()))
        .form(&[("token", current.as_str()), ("client_id", APP)])
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    client.ls(&emu.a, "/").await.unwrap();
    assert_eq!(grants(), 3);
    assert_ne!(stored(&store).tokens[TRANSFER_RS].access_token, current);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_refresh_token_asks_for_a_new_login_without_hanging() {
    let emu = Emu::start();
    let (_dir, store) = logged_in(&emu).await;
    let refresh = stored(&store).tokens[TRANSFER_RS]
        .refresh_token
        .clone()
        .unwrap();
    no_redirect()
        .post(format!("{}v2/oauth2/token/revoke", emu.sim.auth_url()))
        .form(&[("token", refresh.as_str()), ("client_id", APP)])
        .send()
        .await
        .unwrap();
    age_transfer_token(&store);
    let auth = Arc::new(UserAuthorizer::transfer(store.clone(), emu.sim.auth_url()).unwrap());
    let client = TransferClient::with_base_url(emu.sim.transfer_url(), auth).unwrap();
    let err = client.ls(&emu.a, "/").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err}");
    assert!(err.needs_login());
    assert_eq!(
        err.remedy(),
        Some(&Remedy::Login {
            collections: vec![]
        }),
        "{err}"
    );
    assert!(!err.to_string().contains(refresh.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_required_then_login_with_the_collection_then_success() {
    let emu = emu_with_flagged(&["a", "b"]);
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    ps_globus::auth::login(
        &store,
        &options(&emu, CodeDelivery::CopyPaste, &[]),
        &mut Approve::default(),
    )
    .await
    .unwrap();
    let ls = |store: Arc<dyn TokenStore>, collection: String| {
        let auth_url = emu.sim.auth_url().to_owned();
        let transfer_url = emu.sim.transfer_url().to_owned();
        async move {
            let auth = Arc::new(UserAuthorizer::transfer(store, &auth_url).unwrap());
            let client = TransferClient::with_base_url(&transfer_url, auth).unwrap();
            client.ls(&collection, "/").await
        }
    };
    let err = ls(store.clone(), emu.a.clone()).await.unwrap_err();
    let Some(consent) = err.downcast_ref::<ConsentRequired>() else {
        panic!("expected ConsentRequired, got {err}");
    };
    assert_eq!(consent.collections, vec![emu.a.clone()]);
    assert_eq!(
        err.remedy(),
        Some(&Remedy::Login {
            collections: vec![emu.a.clone()]
        }),
        "{err}"
    );

    // The transfer token exists, so this is one flow: look a up, then consent.
    let mut prompt = Approve::default();
    let outcome = ps_globus::auth::login(
        &store,
        &options(&emu, CodeDelivery::CopyPaste, &[&emu.a]),
        &mut prompt,
    )
    .await
    .unwrap();
    assert_eq!(outcome.flows, 1);
    assert!(prompt.urls[0].contains("data_access"));
    ls(store.clone(), emu.a.clone()).await.unwrap();

    // Asking for b keeps a: the new Transfer token carries the union.
    let outcome = ps_globus::auth::login(
        &store,
        &options(&emu, CodeDelivery::CopyPaste, &[&emu.b]),
        &mut Approve::default(),
    )
    .await
    .unwrap();
    let both: BTreeSet<uuid::Uuid> = [emu.a.parse().unwrap(), emu.b.parse().unwrap()].into();
    assert_eq!(outcome.consents, both);
    ls(store.clone(), emu.a.clone()).await.unwrap();
    ls(store.clone(), emu.b.clone()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_that_need_no_consent_add_no_flow() {
    let emu = emu_with_flagged(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let outcome = ps_globus::auth::login(
        &store,
        &options(&emu, CodeDelivery::CopyPaste, &[&emu.a]),
        &mut Approve::default(),
    )
    .await
    .unwrap();
    assert_eq!(outcome.flows, 1);
    assert!(outcome.consents.is_empty());
    assert!(outcome.no_consent_needed.contains(&emu.a.parse().unwrap()));
    // An unknown collection is a clear error.
    let unknown = "99999999-9999-4999-8999-999999999999";
    let err = ps_globus::auth::login(
        &store,
        &options(&emu, CodeDelivery::CopyPaste, &[unknown]),
        &mut Approve::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains(unknown), "{err}");
}

#[test]
fn the_keyring_is_used_only_when_it_reads_back_and_a_file_choice_sticks() {
    let dir = tempfile::tempdir().unwrap();
    let file = FileTokenStore::new(dir.path().join("tokens.json"));
    let mock = keyring_core::mock::Store::new().unwrap();
    let keyring = KeyringTokenStore::in_store(mock, dir.path().join("keyring.lock"));
    let choice = choose_token_store("", file.clone(), keyring.clone()).unwrap();
    assert!(choice.store.describe().contains("keyring"));
    assert!(choice.fallback_reason.is_none());
    choice
        .store
        .update(&mut |set| set.username = Some("ada".into()))
        .unwrap();
    assert_eq!(
        choice.store.load().unwrap().unwrap().username.as_deref(),
        Some("ada")
    );
    choice.store.delete().unwrap();
    assert!(choice.store.load().unwrap().is_none());

    let forced = choose_token_store("file", file.clone(), keyring.clone()).unwrap();
    assert!(forced.store.describe().contains("tokens.json"));
    forced.store.update(&mut |_| {}).unwrap();
    // A login already in the file keeps being used.
    let sticky = choose_token_store("", file.clone(), keyring.clone()).unwrap();
    assert!(sticky.store.describe().contains("tokens.json"));
    assert!(matches!(
        choose_token_store("vault", file, keyring),
        Err(Error::InvalidInput(_))
    ));
}

/// A login asks, in the same flow as the consents, for the HTTPS scopes of each
/// collection that serves HTTPS (with `data_access` on a mapped one), and the token it
/// gets reads the collection's files; a collection without HTTPS gets none, and a second
/// login that changes nothing takes no flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_holds_an_https_token_for_each_collection_that_serves_https() {
    use ps_globus::transfer::CollectionHttps;
    let emu = Emu::with(|c| {
        c.collections.get_mut("a").unwrap().requires_data_access = true;
        c.collections.get_mut("b").unwrap().disable_https = true;
    });
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let opts = options(&emu, CodeDelivery::CopyPaste, &[&emu.a, &emu.b]);
    let outcome = ps_globus::auth::login(&store, &opts, &mut Approve::default())
        .await
        .unwrap();
    let a: uuid::Uuid = emu.a.parse().unwrap();
    assert_eq!(outcome.https, BTreeSet::from([a]));
    assert_eq!(
        outcome.flows, 2,
        "the login, then consents and HTTPS in one"
    );
    assert_eq!(outcome.consents, BTreeSet::from([a]));
    // One endpoint lookup tells a's HTTPS scopes and consent; b, without HTTPS, two.
    assert_eq!(emu.sim.stats().route("GET /v0.10/endpoint/{id}"), 3);
    assert!(stored(&store).tokens.contains_key(&emu.a));
    assert!(!stored(&store).tokens.contains_key(&emu.b));

    let transfer = TransferClient::with_base_url(
        emu.sim.transfer_url(),
        Arc::new(UserAuthorizer::transfer(store.clone(), emu.sim.auth_url()).unwrap()),
    )
    .unwrap();
    let for_a = Arc::new(UserAuthorizer::new(store.clone(), emu.sim.auth_url(), &emu.a).unwrap());
    let https = CollectionHttps::discover(&transfer, a, for_a)
        .await
        .unwrap();
    std::fs::write(emu.root_a().join("f"), b"over https").unwrap();
    assert_eq!(&https.get("/f").await.unwrap().unwrap()[..], b"over https");

    let again = ps_globus::auth::login(&store, &opts, &mut Approve::default())
        .await
        .unwrap();
    assert_eq!(again.flows, 0);

    // A process of this login asking for b's HTTPS token: a typed consent error naming
    // the scope, whose remedy is a login with the collection.
    let mut settings = ps_globus::Settings::isolated(dir.path());
    settings.token_store = "file".into();
    let b: uuid::Uuid = emu.b.parse().unwrap();
    let scopes = vec![CollectionHttps::scope(&b)];
    let e = ps_globus::auth::https_authorizer(&settings, &b, &scopes).unwrap_err();
    let consent = e
        .downcast_ref::<ConsentRequired>()
        .expect("a consent error");
    assert_eq!(consent.required_scopes, scopes);
    assert_eq!(
        e.remedy(),
        Some(&Remedy::Login {
            collections: vec![emu.b.clone()]
        })
    );
    assert!(e.needs_login());
}
