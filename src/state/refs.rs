//! Every statement on the `refs` table: named dataset references, stored as JSON text.
//! The proxy layer turns rows into `DatasetRef`s; this file is all it knows of storage.

use crate::error::{Error, Result};
use crate::state::{SqlResultExt, StateDb};

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
        "INSERT OR REPLACE INTO refs (name, v, store, key, created_at) VALUES (?, ?, ?, ?, ?)"
    } else {
        "INSERT INTO refs (name, v, store, key, created_at) VALUES (?, ?, ?, ?, ?)"
    };
    let result = sqlx::query(sql)
        .bind(&row.name)
        .bind(row.v)
        .bind(&row.store)
        .bind(&row.key)
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(db.pool())
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::InvalidConfig {
            what: "dataset reference".into(),
            message: format!(
                "a reference named {:?} already exists; remove it first or replace it",
                row.name
            ),
        }),
        Err(e) => Err(db.error(e)),
    }
}

/// The reference named `name`, if any.
pub(crate) async fn load(db: &StateDb, name: &str) -> Result<Option<RefRow>> {
    let row: Option<(String, i64, String, String)> =
        sqlx::query_as("SELECT name, v, store, key FROM refs WHERE name = ?")
            .bind(name)
            .fetch_optional(db.pool())
            .await
            .at(db)?;
    Ok(row.map(into_row))
}

/// Every reference, by name.
pub(crate) async fn list(db: &StateDb) -> Result<Vec<RefRow>> {
    let rows: Vec<(String, i64, String, String)> =
        sqlx::query_as("SELECT name, v, store, key FROM refs ORDER BY name")
            .fetch_all(db.pool())
            .await
            .at(db)?;
    Ok(rows.into_iter().map(into_row).collect())
}

/// Forgets the reference named `name`; `false` if there was none.
pub(crate) async fn remove(db: &StateDb, name: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM refs WHERE name = ?")
        .bind(name)
        .execute(db.pool())
        .await
        .at(db)?;
    Ok(done.rows_affected() > 0)
}

fn into_row((name, v, store, key): (String, i64, String, String)) -> RefRow {
    RefRow {
        name,
        v,
        store,
        key,
    }
}
