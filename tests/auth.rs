//! The service identity (client credentials) against the emulator's Auth.

use std::sync::Arc;

use crate::support::emulator::Emu;
use ps_globus::Error;
use ps_globus::auth::{Authorizer, ClientCredentialsAuthorizer, TRANSFER_SCOPE};
use ps_globus::transfer::TransferClient;

const ID: &str = "eeeeeeee-0000-0000-0000-000000000001";
const SECRET: &str = "service-secret-value";

fn emu(lifetime_s: u64) -> Emu {
    Emu::with(|c| {
        c.clients.insert(ID.into(), SECRET.into());
        c.token_lifetime_s = lifetime_s;
    })
}

fn service(emu: &Emu, secret: &str) -> Arc<ClientCredentialsAuthorizer> {
    Arc::new(
        ClientCredentialsAuthorizer::new(emu.sim.auth_url(), ID, secret, TRANSFER_SCOPE).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_identity_fetches_one_token_and_reuses_it() {
    let emu = emu(172_800);
    let auth = service(&emu, SECRET);
    assert_eq!(auth.identity(), format!("client:{ID}"));
    let client = TransferClient::with_base_url(emu.sim.transfer_url(), auth.clone()).unwrap();
    for _ in 0..3 {
        assert_eq!(client.submission_id().await.unwrap().len(), 36);
    }
    assert_eq!(emu.sim.stats().route("POST /v2/oauth2/token"), 1);
    assert_eq!(
        emu.sim.stats().by_identity.get(ID).copied(),
        Some(4),
        "three Transfer calls as the client's own identity, plus its one token request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_renewed_before_they_expire() {
    // A 2 s token is renewed min(60 s, 2 s / 2) = 1 s before it expires. The wait below
    // lets that renewal point pass: time passing is the feature under test.
    let emu = emu(2);
    let client =
        TransferClient::with_base_url(emu.sim.transfer_url(), service(&emu, SECRET)).unwrap();
    client.submission_id().await.unwrap();
    let before = emu.sim.stats().route("POST /v2/oauth2/token");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    client.submission_id().await.unwrap();
    let after = emu.sim.stats().route("POST /v2/oauth2/token");
    assert_eq!(after, before + 1, "renewed once the margin was reached");
    assert_eq!(
        emu.sim.stats().by_status.get(&401),
        None,
        "renewed before use, never after a refusal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_replaced_after_one_401() {
    let emu = emu(172_800);
    let auth = service(&emu, SECRET);
    let client = TransferClient::with_base_url(emu.sim.transfer_url(), auth.clone()).unwrap();
    client.submission_id().await.unwrap();
    let header = auth.authorization().await.unwrap();
    let token = header.strip_prefix("Bearer ").unwrap();
    let revoked = emu
        .http
        .post(format!("{}v2/oauth2/token/revoke", emu.sim.auth_url()))
        .basic_auth(ID, Some(SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success());
    assert_eq!(client.submission_id().await.unwrap().len(), 36);
    let stats = emu.sim.stats();
    assert_eq!(
        (
            stats.route("POST /v2/oauth2/token"),
            stats.by_status.get(&401).copied()
        ),
        (2, Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_a_clear_error_that_never_shows_the_secret() {
    let emu = emu(172_800);
    let auth = service(&emu, "not-the-secret");
    let client = TransferClient::with_base_url(emu.sim.transfer_url(), auth.clone()).unwrap();
    let err = client.submission_id().await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
    let text = format!("{err} {err:?} {auth:?}");
    assert!(
        text.contains(ID) && text.contains("PS_GLOBUS_CLIENT_SECRET"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret"), "{text}");
    assert_eq!(
        emu.sim.stats().route("GET /v0.10/submission_id"),
        0,
        "no request without a token"
    );
}

// ---- the file token store ------------------------------------------------------------

use ps_globus::auth::{FileTokenStore, StoredToken, TokenStore};
use std::os::unix::fs::PermissionsExt;

fn token(access: &str) -> StoredToken {
    StoredToken {
        access_token: access.into(),
        refresh_token: Some(format!("{access}-refresh")),
        expires_at: 1,
        scope: "s".into(),
        issued_at: 0,
    }
}

#[test]
fn the_token_file_is_0600_and_a_looser_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileTokenStore::new(dir.path().join("home/tokens.json"));
    assert_eq!(store.load().unwrap(), None);
    store
        .update(&mut |set| {
            set.tokens
                .insert("transfer.api.globus.org".into(), token("AT-SECRET"));
        })
        .unwrap();
    let mode = std::fs::metadata(store.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(
        loaded.tokens["transfer.api.globus.org"].access_token,
        "AT-SECRET"
    );
    assert!(
        !format!("{loaded:?}").contains("AT-SECRET"),
        "Debug redacts tokens"
    );

    std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = store.load().unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
    assert!(!err.to_string().contains("AT-SECRET"));
    store.delete().unwrap();
    assert_eq!(store.load().unwrap(), None);
    store.delete().unwrap();
}

#[test]
fn concurrent_writers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    std::thread::scope(|scope| {
        for t in 0..8 {
            let path = path.clone();
            scope.spawn(move || {
                // Each writer uses its own store value, as separate processes would.
                let store = FileTokenStore::new(path);
                for i in 0..10 {
                    store
                        .update(&mut |set| {
                            set.tokens
                                .insert(format!("rs-{t}-{i}"), token(&format!("{t}-{i}")));
                        })
                        .unwrap();
                }
            });
        }
    });
    let set = FileTokenStore::new(&path).load().unwrap().unwrap();
    assert_eq!(
        set.tokens.len(),
        80,
        "every read-modify-write kept the others' tokens"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "the file and its lock, no temporary files: {leftovers:?}"
    );
}

/// Regression: a 0644 token file was reported as "Globus refused the credentials" (no
/// request was made), and a truncated one as a "state database". Both name the token
/// file and what to do.
#[test]
fn token_file_problems_say_what_the_file_is() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let store = FileTokenStore::new(&path);
    std::fs::write(&path, b"{\"version\": 1, \"tok").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = store.load().unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("token file") && !text.contains("state database"),
        "{text}"
    );
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert_eq!(err.kind(), ps_globus::ErrorKind::Storage);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = store.load().unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("Globus refused"), "{text}");
    assert!(
        text.contains("token file") && text.contains("chmod 600"),
        "{text}"
    );
}

/// Regression: a manager whose service identity Globus refuses never submitted, and its
/// `flush` (a connector's `close`, the exit hook) waited forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_with_a_refused_service_identity_says_so_instead_of_waiting_forever() {
    use ps_globus::state::StateDb;
    use ps_globus::transfer::{ItemSpec, ManagerConfig, TransferManager};

    let emu = emu(172_800);
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path().join("state.db")).await.unwrap();
    let client =
        TransferClient::with_base_url(emu.sim.transfer_url(), service(&emu, "not-the-secret"))
            .unwrap();
    let manager = TransferManager::start(db, client, ManagerConfig::default())
        .await
        .unwrap();
    crate::support::emulator::write(emu.root_a(), "x", b"x");
    let item = manager
        .enqueue(ItemSpec::new(emu.a.clone(), "/x", emu.b.clone(), "/x"))
        .await
        .unwrap();
    // A hang fails here, after a minute; the answer comes after the client's retries.
    let flushed = tokio::time::timeout(std::time::Duration::from_secs(60), manager.flush())
        .await
        .expect("flush waited for a login that nobody will renew");
    let err = flushed.unwrap_err();
    assert!(err.needs_login(), "{err:?}");
    assert!(!format!("{err:?}").contains("not-the-secret"));
    // The item stays queued, for when the login is renewed.
    let status = manager.item(item.item).await.unwrap();
    assert_eq!(status.state, ps_globus::transfer::ItemState::Pending);
}
