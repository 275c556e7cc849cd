//! The state database on a network file system: detected, with a safe fallback.
//! (Its own test binary: it sets an environment variable for the whole process.)

use ps_globus::state::StateDb;

#[tokio::test]
async fn on_a_network_file_system_the_database_leaves_wal_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let local = StateDb::open(dir.path().join("local.db")).await.unwrap();
    assert_eq!(local.journal_mode().await.unwrap(), "wal");
    assert!(local.warning().is_none());

    // SAFETY of set_var: this test binary has no other test and no other thread yet.
    unsafe { std::env::set_var("PS_GLOBUS_ASSUME_NETWORK_FS", "1") };
    let shared = StateDb::open(dir.path().join("shared.db")).await.unwrap();
    assert_eq!(shared.journal_mode().await.unwrap(), "delete");
    let warning = shared.warning().unwrap();
    assert!(
        warning.contains("WAL") && warning.contains("PS_GLOBUS_HOME"),
        "{warning}"
    );

    // It still works, read-then-write transactions included.
    let mut tx = shared.begin_immediate().await.unwrap();
    sqlx::query("UPDATE generation SET value = value + 1 WHERE id = 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}
