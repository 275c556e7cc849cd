//! The tests of `state/mod.rs`.
use super::*;

/// A fresh state database for a test, kept while this lives.
pub(crate) struct TestDb {
    pub db: StateDb,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh state database on each engine: SQLite in a temporary directory, and a
/// new database on the test PostgreSQL server ([`pg_test_cluster`]).
pub(crate) async fn engines() -> [TestDb; 2] {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::isolated(dir.path());
    let sqlite = StateDb::open_with(dir.path().join("state.db"), &settings)
        .await
        .unwrap();
    let url = pg_test_cluster::fresh_database().await;
    let postgres = StateDb::open_url(&url, &settings).await.unwrap();
    [
        TestDb {
            db: sqlite,
            _dir: Some(dir),
        },
        TestDb {
            db: postgres,
            _dir: None,
        },
    ]
}

/// Columns in the SQLite schema's tables, for comparing the two engines' schemas.
pub(crate) async fn sqlite_column_count() -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path().join("state.db")).await.unwrap();
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master m, pragma_table_info(m.name) \
         WHERE m.type = 'table' AND m.name NOT LIKE '\\_sqlx%' ESCAPE '\\'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn on_a_network_file_system_the_database_leaves_wal_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let local = StateDb::open_with(dir.path().join("local.db"), &Settings::isolated(dir.path()))
        .await
        .unwrap();
    assert_eq!(local.journal_mode().await.unwrap().as_deref(), Some("wal"));
    assert!(local.warning().is_none());

    let mut settings = Settings::isolated(dir.path());
    settings.assume_network_fs = true;
    let shared = StateDb::open_with(dir.path().join("shared.db"), &settings)
        .await
        .unwrap();
    assert_eq!(
        shared.journal_mode().await.unwrap().as_deref(),
        Some("delete")
    );
    let warning = shared.warning().unwrap();
    assert!(
        warning.contains("WAL") && warning.contains("PS_GLOBUS_HOME"),
        "{warning}"
    );

    // It still works, read-then-write transactions included.
    let mut tx = shared.begin_write().await.unwrap();
    query::query("UPDATE generation SET value = value + 1 WHERE id = 1")
        .execute(&mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Regression: a full disk under the state directory was reported as "disk I/O
/// error (code 4874)". (`max_page_count` makes SQLite meet a full database
/// deterministically.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path().join("state.db")).await.unwrap();
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA max_page_count = {pages}"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let big = "x".repeat(64 * 1024);
    let full = sqlx::query(
        "INSERT INTO refs (name, v, store, key, created_at) VALUES ('r', 1, $1, '{}', 0)",
    )
    .bind(&big)
    .execute(&mut *conn)
    .await
    .unwrap_err();
    let err = db.error(full);
    let text = err.to_string();
    assert!(
        text.contains("full") && text.contains("free space under"),
        "{text}"
    );
    assert!(
        matches!(err, Error::Storage(_)) && std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );
    assert!(means_disk_full(4874) && means_disk_full(13) && !means_disk_full(5));
}

/// A column missing or of another type (a database another version changed) is an
/// error naming the database and the column; it used to panic the caller.
#[tokio::test]
async fn a_column_not_as_expected_is_an_error_naming_it_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path().join("state.db")).await.unwrap();
    let row = query::query("SELECT 'words' AS n")
        .fetch_one(&db)
        .await
        .unwrap();
    for err in [
        row.try_get::<i64, _>("n").unwrap_err(),
        row.try_get::<String, _>("absent").unwrap_err(),
    ] {
        assert!(
            matches!(err, Error::Storage(_)) && std::error::Error::source(&err).is_some(),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("state.db") && text.contains("column"),
            "{text}"
        );
    }
    assert_eq!(row.try_get::<String, _>(0).unwrap(), "words");
}

/// The direct connection's errors are classified as sqlx's are: a full disk says so.
#[tokio::test]
async fn a_full_disk_on_the_direct_connection_is_reported_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path().join("state.db")).await.unwrap();
    let mut direct = db.direct().expect("WAL mode").unwrap();
    let mut pages = 0;
    direct.run("PRAGMA page_count", &[], |n| pages = n).unwrap();
    let limit = format!("PRAGMA max_page_count = {pages}");
    direct.run(&limit, &[], |_| {}).unwrap();
    let big = "x".repeat(64 * 1024);
    let full = direct
        .run(
            "INSERT INTO refs (name, v, store, key, created_at) VALUES ('r', 1, $1, '{}', 0)",
            &[query::Arg::Text(Some(&big))],
            |_| {},
        )
        .unwrap_err();
    let text = db.direct_error("committing", full).to_string();
    assert!(
        text.contains("full") && text.contains("free space under"),
        "{text}"
    );
}

/// Regression (`bench_globus --hosts 4 --producers 4`: producers starting at once on
/// a fresh state directory failed with "database is locked"): opens of a database
/// that does not exist yet, at the same moment, all succeed. Switching a new file to
/// WAL takes an exclusive lock that SQLite does not wait for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_opens_of_a_fresh_database_all_succeed() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { StateDb::open(&path).await.map(|_| ()) })
            })
            .collect();
        for open in opens {
            open.await.unwrap().expect("every first open succeeds");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_immediate_serialises_concurrent_read_then_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path().join("state.db")).await.unwrap();
    assert_eq!(db.journal_mode().await.unwrap().as_deref(), Some("wal"));
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                for _ in 0..30 {
                    let mut tx = db.begin_write().await.unwrap();
                    let value: i64 = query::query("SELECT value FROM generation WHERE id = 1")
                        .fetch_scalar(&mut tx)
                        .await
                        .unwrap();
                    query::query("UPDATE generation SET value = $1 WHERE id = 1")
                        .bind(value + 1)
                        .execute(&mut tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let value: i64 = sqlx::query_scalar("SELECT value FROM generation WHERE id = 1")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(value, 240, "no lost update, no 'database is locked'");
}

#[test]
fn network_file_systems_are_recognised_by_magic() {
    assert_eq!(classify_fs_magic(0x6969), Some("NFS"));
    assert_eq!(classify_fs_magic(0x0BD0_0BD0), Some("Lustre"));
    assert_eq!(classify_fs_magic(0x4750_4653), Some("GPFS"));
    assert_eq!(classify_fs_magic(0xEF53), None, "ext4 is local");
    assert_eq!(classify_fs_magic(0x0102_1994), None, "tmpfs is local");
}

/// Regression (a run of the tests left a directory holding an empty `state.db`): the
/// pool opens connections as it needs them, and one opened after the database was
/// removed created a new, empty one there. Only the first open creates the file now; a
/// removed database is an error, and nothing appears in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_removed_while_open_is_not_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let db = StateDb::open(&path).await.unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    // Hold every connection the pool has, so that it must open another.
    let mut held = Vec::new();
    for _ in 0..4 {
        match db.pool().acquire().await {
            Ok(connection) => held.push(connection),
            Err(_) => break,
        }
    }
    assert!(
        held.len() < 4,
        "a new connection to a removed database failed"
    );
    assert!(!path.exists(), "the removed database was made again");
}
