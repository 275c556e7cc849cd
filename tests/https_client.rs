//! `CollectionHttps`, the library's client of a collection's HTTPS, against the emulator:
//! the file operations, discovery from the endpoint document, a refused token as a typed
//! consent error, and the faults it must ride out.

use std::sync::Arc;
use std::time::Duration;

use crate::support::emulator::{Emu, write};
use crate::support::managers::client;
use ps_globus::ErrorKind;
use ps_globus::auth::ClientCredentialsAuthorizer;
use ps_globus::error::ConsentRequired;
use ps_globus::transfer::{CollectionHttps, RetryConfig};
use ps_globus_sim::{FaultConfig, FaultKind};
use uuid::Uuid;

const CLIENT: &str = "c2c2c2c2-0000-4000-8000-000000000002";
const SECRET: &str = "another-client-secret";

fn emu_with(faults: Vec<FaultConfig>) -> Emu {
    Emu::with(|config| {
        config.clients.insert(CLIENT.into(), SECRET.into());
        config.collections.get_mut("b").unwrap().disable_https = true;
        config.faults = faults;
    })
}

/// A service identity's credentials for `scope`.
fn service(emu: &Emu, scope: &str) -> Arc<ClientCredentialsAuthorizer> {
    Arc::new(ClientCredentialsAuthorizer::new(emu.sim.auth_url(), CLIENT, SECRET, scope).unwrap())
}

async fn collection_a(emu: &Emu, scope: &str) -> CollectionHttps {
    let id: Uuid = emu.a.parse().unwrap();
    let mut fast = RetryConfig::default();
    fast.base = Duration::from_millis(1);
    CollectionHttps::discover(&client(emu), id, service(emu, scope))
        .await
        .unwrap()
        .with_retry(fast)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_go_up_come_back_whole_or_by_range_and_go_away() {
    let emu = emu_with(vec![]);
    let https = collection_a(&emu, &CollectionHttps::scope(&emu.a.parse().unwrap())).await;
    assert!(https.origin().starts_with("http://127.0.0.1:"));
    std::fs::create_dir(emu.root_a().join("store")).unwrap();
    // A name that must be percent-encoded on the way.
    let path = "/store/a name#1";
    https.put(path, "0123456789".into()).await.unwrap();
    assert_eq!(
        std::fs::read(emu.root_a().join("store/a name#1")).unwrap(),
        b"0123456789"
    );
    assert_eq!(&https.get(path).await.unwrap().unwrap()[..], b"0123456789");
    assert_eq!(
        &https.get_range(path, 3, 5).await.unwrap().unwrap()[..],
        b"345"
    );
    assert_eq!(https.size(path).await.unwrap(), Some(10));
    assert!(https.delete(path).await.unwrap());
    assert_eq!(https.get(path).await.unwrap(), None);
    assert_eq!(https.size(path).await.unwrap(), None);
    assert!(!https.delete(path).await.unwrap());
    // A directory that is not there: the PUT fails as NotFound, and says what to do.
    let e = https.put("/nowhere/x", "x".into()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("make it through Transfer"), "{e}");
}

/// A service identity (`PS_GLOBUS_CLIENT_ID` and `PS_GLOBUS_CLIENT_SECRET`) gets its
/// HTTPS token by client credentials, for the scopes the collection's document names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_identity_asks_for_the_collections_https_scopes_itself() {
    let emu = Emu::with(|config| {
        config.clients.insert(CLIENT.into(), SECRET.into());
        config
            .collections
            .get_mut("a")
            .unwrap()
            .requires_data_access = true;
    });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = ps_globus::Settings::isolated(dir.path());
    settings.auth_url = emu.sim.auth_url().into();
    settings.client_id = Some(CLIENT.into());
    settings.client_secret = Some(SECRET.into());
    let a: Uuid = emu.a.parse().unwrap();
    let transfer = client(&emu);
    let endpoint = transfer.endpoint(&emu.a).await.unwrap();
    let scopes = vec![
        CollectionHttps::scope(&a),
        ps_globus::auth::data_access_scope(&a),
    ];
    assert!(endpoint.requires_data_access_scope());
    let auth = ps_globus::auth::https_authorizer(&settings, &a, &scopes).unwrap();
    let https = CollectionHttps::discover(&transfer, a, auth).await.unwrap();
    write(emu.root_a(), "f", b"for a service");
    assert_eq!(
        &https.get("/f").await.unwrap().unwrap()[..],
        b"for a service"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_without_https_and_a_token_without_its_scope_are_typed_refusals() {
    let emu = emu_with(vec![]);
    let b: Uuid = emu.b.parse().unwrap();
    let e = CollectionHttps::discover(&client(&emu), b, service(&emu, &CollectionHttps::scope(&b)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("https_server is null"), "{e}");

    // A Transfer token is no token for the collection: the scope to ask for is named.
    let https = collection_a(&emu, "urn:globus:auth:scope:transfer.api.globus.org:all").await;
    let e = https.get("/x").await.unwrap_err();
    let consent = e
        .downcast_ref::<ConsentRequired>()
        .expect("a consent error");
    assert_eq!(
        consent.required_scopes,
        vec![CollectionHttps::scope(&emu.a.parse().unwrap())]
    );
    assert_eq!(consent.collections, vec![emu.a.clone()]);
    assert!(e.needs_login());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_endpoint_error_is_retried_on_a_fresh_connection_and_5xx_with_backoff() {
    let fault = |kind, route: &str, count| FaultConfig {
        kind,
        path: None,
        route: Some(route.into()),
        probability: 1.0,
        after: 0,
        count: Some(count),
        retry_after: 1,
    };
    let emu = emu_with(vec![
        fault(FaultKind::HttpsEndpointError, "HTTPS GET", 1),
        fault(FaultKind::Http503, "HTTPS PUT", 2),
    ]);
    let https = collection_a(&emu, &CollectionHttps::scope(&emu.a.parse().unwrap())).await;
    write(emu.root_a(), "f", b"survives");
    assert_eq!(&https.get("/f").await.unwrap().unwrap()[..], b"survives");
    https.put("/g", "after two 503s".into()).await.unwrap();
    assert_eq!(
        std::fs::read(emu.root_a().join("g")).unwrap(),
        b"after two 503s"
    );
    let stats = emu.sim.stats();
    assert_eq!(stats.route("HTTPS GET"), 2, "one ENDPOINT_ERROR, one retry");
    assert_eq!(stats.route("HTTPS PUT"), 3, "two 503s, then the write");
}
