//! Every statement on the `refs` table: named dataset references, stored as JSON text.
//! The proxy layer turns rows into `DatasetRef`s; this file is all it knows of storage.

use crate::error::{Error, Result};
use crate::state::StateDb;
use crate::state::query::query;

/// A reference as stored: its name, format version, and store config and key as JSON.
pub(crate) struct RefRow {
    pub name: String,
    pub v: i64,
    pub store: String,
    pub key: String,
}

/// Saves `row`; an existing reference of that name is replaced only if `replace`, else
/// the save is refused with a typed error naming it.
pub(crate) async fn save(db: &StateDb, row: &RefRow, replace: bool) -> Result<()> {
    let sql = if replace {
        "INSERT INTO refs (name, v, store, key, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (name) DO UPDATE SET v = excluded.v, store = excluded.store, \
         key = excluded.key, created_at = excluded.created_at"
    } else {
        "INSERT INTO refs (name, v, store, key, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (name) DO NOTHING"
    };
    let saved = query(sql)
        .bind(&row.name)
        .bind(row.v)
        .bind(&row.store)
        .bind(&row.key)
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(db)
        .await?;
    if saved == 0 {
        return Err(Error::invalid_config(
            "dataset reference",
            format!(
                "a reference named {:?} already exists; remove it first or replace it",
                row.name
            ),
        ));
    }
    Ok(())
}

/// The reference named `name`, if any.
pub(crate) async fn load(db: &StateDb, name: &str) -> Result<Option<RefRow>> {
    let row: Option<(String, i64, String, String)> =
        query("SELECT name, v, store, key FROM refs WHERE name = $1")
            .bind(name)
            .fetch_optional_as(db)
            .await?;
    Ok(row.map(into_row))
}

/// Every reference, by name.
pub(crate) async fn list(db: &StateDb) -> Result<Vec<RefRow>> {
    let rows: Vec<(String, i64, String, String)> =
        query("SELECT name, v, store, key FROM refs ORDER BY name")
            .fetch_all_as(db)
            .await?;
    Ok(rows.into_iter().map(into_row).collect())
}

/// Forgets the reference named `name`; `false` if there was none.
pub(crate) async fn remove(db: &StateDb, name: &str) -> Result<bool> {
    let removed = query("DELETE FROM refs WHERE name = $1")
        .bind(name)
        .execute(db)
        .await?;
    Ok(removed > 0)
}

fn into_row((name, v, store, key): (String, i64, String, String)) -> RefRow {
    RefRow {
        name,
        v,
        store,
        key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, key: &str) -> RefRow {
        RefRow {
            name: name.into(),
            v: 1,
            store: "{}".into(),
            key: key.into(),
        }
    }

    /// A name is saved once unless replaced, on either engine, and a replace keeps one
    /// row with the new key.
    #[tokio::test]
    async fn a_reference_is_refused_twice_and_replaced_when_asked() {
        for engine in crate::state::tests::engines().await {
            let db = &engine.db;
            save(db, &row("run/input", "k1"), false).await.unwrap();
            let twice = save(db, &row("run/input", "k2"), false).await.unwrap_err();
            assert!(matches!(twice, Error::InvalidInput(_)), "{twice}");
            assert!(twice.to_string().contains("already exists"), "{twice}");
            assert_eq!(load(db, "run/input").await.unwrap().unwrap().key, "k1");
            save(db, &row("run/input", "k2"), true).await.unwrap();
            save(db, &row("a", "k0"), false).await.unwrap();
            let names: Vec<(String, String)> = list(db)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.name, r.key))
                .collect();
            assert_eq!(
                names,
                [("a".into(), "k0".into()), ("run/input".into(), "k2".into())]
            );
            assert!(remove(db, "run/input").await.unwrap());
            assert!(!remove(db, "run/input").await.unwrap());
            assert!(load(db, "run/input").await.unwrap().is_none());
        }
    }
}
