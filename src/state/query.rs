//! One statement, run on whichever engine holds the state: the only place that knows
//! there are two.
//!
//! The manager's and the references' SQL is written once, in the dialect SQLite and
//! PostgreSQL share: `$1`, `$2`, … placeholders (sqlx's SQLite driver binds `$N` to the
//! N-th value, as PostgreSQL does), `ON CONFLICT … DO UPDATE`, `RETURNING`, `CAST(… AS
//! BIGINT)` around sums (PostgreSQL's `SUM` of a `BIGINT` is a `NUMERIC`), `CASE` rather
//! than summing booleans. A [`Statement`] keeps its values in an engine-neutral form and
//! binds them to the engine's own query when it runs; a [`Row`] reads a column as any
//! type both engines decode.
//!
//! Read-then-write transactions ([`StateDb::begin_write`](super::StateDb::begin_write))
//! serialise writers on both engines: SQLite's `BEGIN IMMEDIATE` takes the database's
//! write lock; on PostgreSQL the transaction takes one advisory lock
//! ([`WRITE_LOCK`]), the same single-writer rule across every host. Reads never wait for
//! it.

use sqlx::postgres::{PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteRow};
use std::path::Path;
use std::sync::Arc;

use sqlx::{ColumnIndex, Decode, FromRow, Row as _, Type};

use super::{Pool, StateDb};
use crate::error::Result;

/// The advisory lock every PostgreSQL write transaction of ps-globus holds: a constant
/// of its own (`ps-globs`: the name in eight ASCII bytes), so that other applications' advisory locks on the
/// same database never collide with it.
pub(crate) const WRITE_LOCK: i64 = 0x7073_2d67_6c6f_6273;
const _: () = assert!(WRITE_LOCK == 8102870076793774707, "PG_BEGIN_WRITE names it");

/// A value bound to a statement's `$N`, typed even when null (PostgreSQL must know a
/// parameter's type).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg<'q> {
    Int(Option<i64>),
    Float(Option<f64>),
    Bool(Option<bool>),
    Text(Option<&'q str>),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<f64> for Arg<'_> {
    fn from(v: f64) -> Self {
        Arg::Float(Some(v))
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(Some(v))
    }
}
impl From<Option<bool>> for Arg<'_> {
    fn from(v: Option<bool>) -> Self {
        Arg::Bool(v)
    }
}
impl<'q> From<&'q str> for Arg<'q> {
    fn from(v: &'q str) -> Self {
        Arg::Text(Some(v))
    }
}
impl<'q> From<&'q String> for Arg<'q> {
    fn from(v: &'q String) -> Self {
        Arg::Text(Some(v))
    }
}
impl<'q> From<Option<&'q str>> for Arg<'q> {
    fn from(v: Option<&'q str>) -> Self {
        Arg::Text(v)
    }
}
impl<'q> From<&'q Option<String>> for Arg<'q> {
    fn from(v: &'q Option<String>) -> Self {
        Arg::Text(v.as_deref())
    }
}

/// A column type both engines decode.
pub(crate) trait Column:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}
impl<T> Column for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

/// A row type both engines build (tuples of [`Column`]s).
pub(crate) trait Record:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}
impl<T> Record for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// A column's name or position in both engines' rows.
pub(crate) trait Index:
    ColumnIndex<SqliteRow> + ColumnIndex<PgRow> + std::fmt::Display
{
}
impl<I: ColumnIndex<SqliteRow> + ColumnIndex<PgRow> + std::fmt::Display> Index for I {}

/// One row of a result, from either engine, and the database it came from.
pub(crate) struct Row {
    inner: EngineRow,
    path: Arc<Path>,
}

/// A row of one engine.
enum EngineRow {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl Row {
    /// Column `index` as `T`; an error naming the database and the column if it is
    /// missing or of another type (a database another version of ps-globus changed).
    pub(crate) fn try_get<T: Column, I: Index>(&self, index: I) -> Result<T> {
        let what = index.to_string();
        match &self.inner {
            EngineRow::Sqlite(row) => row.try_get(index),
            EngineRow::Postgres(row) => row.try_get(index),
        }
        .map_err(|e| {
            crate::Error::state(
                &*self.path,
                format!(
                    "column {what} of a row is not what this version of ps-globus expects: \
                     was the database changed by another version?"
                ),
                e,
            )
        })
    }

    fn record<T: Record>(&self) -> std::result::Result<T, sqlx::Error> {
        match &self.inner {
            EngineRow::Sqlite(row) => T::from_row(row),
            EngineRow::Postgres(row) => T::from_row(row),
        }
    }
}

/// A read-then-write transaction on either engine; rolled back if dropped uncommitted.
pub(crate) struct Tx {
    inner: TxInner,
    db: StateDb,
}

enum TxInner {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

/// `BEGIN` and the write lock, in one round trip (a simple query may hold two
/// statements; the lock's key is this crate's constant, not a value from outside).
const PG_BEGIN_WRITE: &str = "BEGIN; SELECT pg_advisory_xact_lock(8102870076793774707)";

impl Tx {
    /// Begins a transaction; with `write_lock`, one that holds the write lock from its
    /// start (see the module). Without it (PostgreSQL only; SQLite always locks), only
    /// for writes that read nothing another writer changes: appends from every host then
    /// run side by side.
    pub(super) async fn begin(db: &StateDb, write_lock: bool) -> Result<Tx> {
        let inner = match &db.pool {
            Pool::Sqlite(pool) => TxInner::Sqlite(
                pool.begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(|e| db.error(e))?,
            ),
            Pool::Postgres(pool) => TxInner::Postgres(
                if write_lock {
                    pool.begin_with(PG_BEGIN_WRITE).await
                } else {
                    pool.begin().await
                }
                .map_err(|e| db.error(e))?,
            ),
        };
        Ok(Tx {
            inner,
            db: db.clone(),
        })
    }

    /// Commits what the transaction wrote.
    pub(crate) async fn commit(self) -> Result<()> {
        let db = self.db;
        match self.inner {
            TxInner::Sqlite(tx) => tx.commit().await,
            TxInner::Postgres(tx) => tx.commit().await,
        }
        .map_err(|e| db.error(e))
    }

    /// The database's clock in Unix milliseconds (see [`StateDb::clock_ms`]).
    pub(crate) async fn clock_ms(&mut self) -> Result<i64> {
        match &self.inner {
            TxInner::Sqlite(_) => Ok(super::local_clock_ms()),
            TxInner::Postgres(_) => query(super::PG_CLOCK_MS).fetch_scalar(&mut *self).await,
        }
    }
}

/// Where a statement runs: on the pool (a connection of its own) or in a transaction.
pub(crate) enum On<'a> {
    Db(&'a StateDb),
    Tx(&'a mut Tx),
}

impl On<'_> {
    /// The same place, for one more statement (a transaction lent again).
    pub(crate) fn reborrow(&mut self) -> On<'_> {
        match self {
            On::Db(db) => On::Db(db),
            On::Tx(tx) => On::Tx(tx),
        }
    }

    /// The database the statement runs on, to name in errors.
    fn path(&self) -> Arc<Path> {
        match self {
            On::Db(db) => db.path.clone(),
            On::Tx(tx) => tx.db.path.clone(),
        }
    }
}

impl<'a> From<&'a StateDb> for On<'a> {
    fn from(db: &'a StateDb) -> Self {
        On::Db(db)
    }
}
impl<'a> From<&'a mut Tx> for On<'a> {
    fn from(tx: &'a mut Tx) -> Self {
        On::Tx(tx)
    }
}

/// A query of sqlx's SQLite driver.
type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>;

/// `q` with `arg` bound to its next parameter.
fn bind_sqlite<'q>(q: SqliteQuery<'q>, arg: Arg<'q>) -> SqliteQuery<'q> {
    match arg {
        Arg::Int(v) => q.bind(v),
        Arg::Float(v) => q.bind(v),
        Arg::Bool(v) => q.bind(v),
        Arg::Text(v) => q.bind(v),
    }
}

/// `count` placeholders from `$first` on, comma-separated: for `IN (…)` lists and
/// multi-row `VALUES`.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A statement in the shared dialect with its values: `query(sql).bind(v)…`.
pub(crate) struct Statement<'q> {
    sql: &'q str,
    args: Vec<Arg<'q>>,
}

/// A statement to run with [`Statement::execute`] or one of the `fetch_` methods.
pub(crate) fn query(sql: &str) -> Statement<'_> {
    Statement {
        sql,
        args: Vec::new(),
    }
}

/// Runs `$run` with `$q` bound to the statement as the engine's own query and `$ex` the
/// executor of `$on`, the same code for each engine; errors name the database.
macro_rules! on_engine {
    ($statement:expr, $on:expr, |$q:ident, $ex:ident| $run:expr) => {{
        let statement = $statement;
        match $on.into() {
            On::Db(db) => {
                let result = match &db.pool {
                    Pool::Sqlite(pool) => {
                        let $q = statement.sqlite();
                        let $ex = pool;
                        $run
                    }
                    Pool::Postgres(pool) => {
                        let $q = statement.postgres();
                        let $ex = pool;
                        $run
                    }
                };
                result.map_err(|e| db.error(e))
            }
            On::Tx(tx) => {
                let result = match &mut tx.inner {
                    TxInner::Sqlite(t) => {
                        let $q = statement.sqlite();
                        let $ex = &mut **t;
                        $run
                    }
                    TxInner::Postgres(t) => {
                        let $q = statement.postgres();
                        let $ex = &mut **t;
                        $run
                    }
                };
                result.map_err(|e| tx.db.error(e))
            }
        }
    }};
}

impl<'q> Statement<'q> {
    /// Binds the next `$N`.
    pub(crate) fn bind(mut self, value: impl Into<Arg<'q>>) -> Self {
        self.args.push(value.into());
        self
    }

    fn sqlite(&self) -> SqliteQuery<'q> {
        let q = sqlx::query(sqlx::AssertSqlSafe(self.sql));
        self.args.iter().fold(q, |q, arg| bind_sqlite(q, *arg))
    }

    fn postgres(&self) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.sql));
        for arg in &self.args {
            q = match *arg {
                Arg::Int(v) => q.bind(v),
                Arg::Float(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
            };
        }
        q
    }

    /// Runs the statement; how many rows it changed.
    pub(crate) async fn execute<'a>(self, on: impl Into<On<'a>>) -> Result<u64> {
        on_engine!(self, on, |q, ex| q
            .execute(ex)
            .await
            .map(|done| done.rows_affected()))
    }

    /// Every row of the result.
    pub(crate) async fn fetch_all<'a>(self, on: impl Into<On<'a>>) -> Result<Vec<Row>> {
        let on = on.into();
        let path = on.path();
        let rows: Vec<EngineRow> = on_engine!(self, on, |q, ex| match q.fetch_all(ex).await {
            Ok(rows) => Ok(rows.into_iter().map(Into::into).collect()),
            Err(e) => Err(e),
        })?;
        Ok(rows
            .into_iter()
            .map(|inner| Row {
                inner,
                path: path.clone(),
            })
            .collect())
    }

    /// The result's one row, or `None`.
    pub(crate) async fn fetch_optional<'a>(self, on: impl Into<On<'a>>) -> Result<Option<Row>> {
        let on = on.into();
        let path = on.path();
        let row: Option<EngineRow> = on_engine!(self, on, |q, ex| q
            .fetch_optional(ex)
            .await
            .map(|row| row.map(Into::into)))?;
        Ok(row.map(|inner| Row { inner, path }))
    }

    /// The result's first row (an error if there is none).
    pub(crate) async fn fetch_one<'a>(self, on: impl Into<On<'a>>) -> Result<Row> {
        let on = on.into();
        let path = on.path();
        let inner: EngineRow = on_engine!(self, on, |q, ex| q.fetch_one(ex).await.map(Into::into))?;
        Ok(Row { inner, path })
    }

    /// The first column of the result's first row.
    pub(crate) async fn fetch_scalar<'a, T: Column>(self, on: impl Into<On<'a>>) -> Result<T> {
        self.fetch_one(on).await?.try_get(0)
    }

    /// The first column of every row.
    pub(crate) async fn fetch_scalars<'a, T: Column>(
        self,
        on: impl Into<On<'a>>,
    ) -> Result<Vec<T>> {
        self.fetch_all(on)
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect()
    }

    /// Every row, as `T` (a tuple of columns).
    pub(crate) async fn fetch_all_as<'a, T: Record>(self, on: impl Into<On<'a>>) -> Result<Vec<T>> {
        let (rows, db) = self.rows_and_db(on).await?;
        rows.iter()
            .map(|row| row.record().map_err(|e| db.error(e)))
            .collect()
    }

    /// The result's one row as `T`, or `None`.
    pub(crate) async fn fetch_optional_as<'a, T: Record>(
        self,
        on: impl Into<On<'a>>,
    ) -> Result<Option<T>> {
        Ok(self.fetch_all_as(on).await?.into_iter().next())
    }

    /// The result's first row as `T` (an error if there is none).
    pub(crate) async fn fetch_one_as<'a, T: Record>(self, on: impl Into<On<'a>>) -> Result<T> {
        let (rows, db) = self.rows_and_db(on).await?;
        match rows.first() {
            Some(row) => row.record().map_err(|e| db.error(e)),
            None => Err(db.error(sqlx::Error::RowNotFound)),
        }
    }

    /// The result's rows, and the database (to name in errors).
    async fn rows_and_db<'a>(self, on: impl Into<On<'a>>) -> Result<(Vec<Row>, StateDb)> {
        let on = on.into();
        let db = match &on {
            On::Db(db) => (*db).clone(),
            On::Tx(tx) => tx.db.clone(),
        };
        Ok((self.fetch_all(on).await?, db))
    }
}

impl From<SqliteRow> for EngineRow {
    fn from(row: SqliteRow) -> Self {
        EngineRow::Sqlite(row)
    }
}
impl From<PgRow> for EngineRow {
    fn from(row: PgRow) -> Self {
        EngineRow::Postgres(row)
    }
}
