//! Storage layer of the dstack server: schema, migrations and typed repository functions.
//!
//! One code path serves SQLite and PostgreSQL through [`sqlx::AnyPool`].
//! The SQL is portable: only TEXT, BIGINT and BOOLEAN columns, `$N` placeholders
//! (SQLite maps them to positional arguments), UUIDs stored as hyphenated TEXT and
//! timestamps stored as BIGINT unix microseconds (UTC).
//! A `LIMIT` parameter is written `LIMIT CAST($N AS BIGINT)`: SQLite re-prepares a statement
//! each time a bare `LIMIT $N` is bound again.
//!
//! **Architecture Invariant:** no business rules live here.
//! Callers decide who may do what and which values are valid; this crate only stores and loads rows.

mod blobs;
mod connect;
mod fleets;
mod gateways;
mod metrics;
mod probes;
mod projects;
mod repos;
mod runs;
mod secrets;
mod users;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use uuid::Uuid;

pub use crate::fleets::{
    FleetPassWrite, FleetRow, FleetUpdate, InstanceRow, InstanceStep, InstanceTransition, InstancesDue,
};
pub use crate::gateways::GatewayRow;
pub use crate::metrics::{MetricsPointRow, MetricsQuery};
pub use crate::probes::{ProbeRow, UnregisteredReplica};
pub use crate::projects::ProjectRow;
pub use crate::repos::RepoRow;
pub use crate::runs::{JobMark, JobRow, LogQuery, LogRow, RunFilter, RunListing, RunRow, SaveJob};
pub use crate::secrets::SecretRow;
pub use crate::users::UserRow;

/// Which database server a [`Db`] talks to.
///
/// Only features that have no portable spelling (advisory locks, `FOR UPDATE SKIP LOCKED`)
/// should ever branch on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// Pools of connections to the server's database, cheap to clone.
///
/// Reads go through `pool`, every write (a statement that changes rows, a write transaction,
/// a lease) through `writer`. On a SQLite file `writer` is one connection: SQLite has one
/// writer at a time, and writers queued in the pool wait their turn in-process, where a
/// second writing connection would sleep in SQLite's busy handler (backing off for up to
/// 100 ms a try) until the lock frees. The read connections are `query_only`, so a write
/// sent through `pool` by mistake fails at once. On PostgreSQL and an in-memory SQLite
/// database both are the same pool.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    writer: AnyPool,
    kind: DbKind,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A unique constraint rejected the write, e.g. a second user with the same name.
    #[error("{what} already exists")]
    Conflict { what: String },
    /// The row the operation refers to does not exist.
    #[error("row not found")]
    NotFound,
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Db {
    /// Leases row `id` with `update` (binds: id, token, expiry, now; it checks the lease is free
    /// and returns the row), or `None` if another holder got it first.
    pub(crate) async fn lease_row(
        &self,
        update: &'static str,
        id: &str,
        token: Uuid,
        now: jiff::Timestamp,
        lease: jiff::SignedDuration,
    ) -> Result<Option<AnyRow>, DbError> {
        Ok(sqlx::query(update)
            .bind(id)
            .bind(uuid_text(token))
            .bind(micros(now.checked_add(lease).unwrap_or(now)))
            .bind(micros(now))
            .fetch_optional(&self.writer)
            .await?)
    }

    /// Connects to `url` and applies the embedded migrations.
    ///
    /// Accepted spellings:
    /// - `sqlite:///abs/path/sqlite.db`, `sqlite://rel.db`, `sqlite::memory:`;
    /// - `postgres://user:pass@host:port/db` (also `postgresql://`);
    /// - dstack's SQLAlchemy spellings `sqlite+aiosqlite:///path` and `postgresql+asyncpg://…`.
    ///
    /// A missing SQLite file (and its parent directory) is created.
    /// SQLite connections use WAL, enforce foreign keys and wait up to 5 s on a locked database.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        crate::connect::connect(url).await
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// Closes every connection; later calls on any clone of this `Db` fail.
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    /// Starts a write transaction.
    ///
    /// On SQLite the write lock is taken up front (`BEGIN IMMEDIATE`), so two concurrent writers
    /// queue on `busy_timeout` instead of one failing with `SQLITE_BUSY` when it upgrades its lock.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, DbError> {
        let tx = match self.kind {
            DbKind::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await?,
            DbKind::Postgres => self.writer.begin().await?,
        };
        Ok(tx)
    }
}

/// Maps a unique violation to [`DbError::Conflict`] and leaves every other error as it is.
///
/// `what` names the thing that already exists (`user name "alice"`).
fn conflict_on_unique(err: sqlx::Error, what: impl FnOnce(&str) -> String) -> DbError {
    match err.as_database_error() {
        Some(db_err) if db_err.is_unique_violation() => DbError::Conflict { what: what(db_err.message()) },
        _ => DbError::Sqlx(err),
    }
}

/// Maps a foreign key violation (a row referring to a missing user or project) to
/// [`DbError::NotFound`].
fn not_found_on_foreign_key(err: sqlx::Error) -> DbError {
    match err.as_database_error() {
        Some(db_err) if db_err.is_foreign_key_violation() => DbError::NotFound,
        _ => DbError::Sqlx(err),
    }
}

fn get_uuid(row: &AnyRow, column: &str) -> Result<Uuid, sqlx::Error> {
    // Borrowed from the row: a UUID costs no allocation.
    let text: &str = row.try_get(column)?;
    parse_uuid(text, column)
}

/// Reads a BOOLEAN column that the query selected as `CAST(col AS INTEGER) AS col`.
///
/// sqlx's Any driver rejects result columns whose SQLite declared type is BOOLEAN
/// ("Any driver does not support the SQLite type Bool"), so every query reads booleans as integers.
/// Writing and comparing (`$1` bound to a `bool`, `deleted = FALSE`) work as they are.
fn get_bool(row: &AnyRow, column: &str) -> Result<bool, sqlx::Error> {
    let value: i64 = row.try_get(column)?;
    Ok(value != 0)
}

fn get_timestamp(row: &AnyRow, column: &str) -> Result<jiff::Timestamp, sqlx::Error> {
    from_micros(row.try_get(column)?, column)
}

/// A nullable timestamp column (unix microseconds).
fn opt_timestamp(row: &AnyRow, column: &str) -> Result<Option<jiff::Timestamp>, sqlx::Error> {
    let micros: Option<i64> = row.try_get(column)?;
    micros.map(|m| from_micros(m, column)).transpose()
}

/// Reads a row's columns one after the other, by position: cheaper than by name, and one row can
/// hold the columns of several tables (a join) under the same names. Debug builds check that each
/// column has the name the reader expects.
pub(crate) struct Cols<'r> {
    row: &'r AnyRow,
    next: usize,
}

impl<'r> Cols<'r> {
    pub(crate) fn new(row: &'r AnyRow) -> Self {
        Cols { row, next: 0 }
    }

    /// The position of the next column.
    pub(crate) fn position(&self) -> usize {
        self.next
    }

    fn index(&mut self, name: &str) -> usize {
        let i = self.next;
        debug_assert_eq!(sqlx::Column::name(sqlx::Row::column(self.row, i)), name, "column {i} of the query");
        self.next += 1;
        i
    }

    pub(crate) fn get<T>(&mut self, name: &str) -> Result<T, sqlx::Error>
    where
        T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        let i = self.index(name);
        self.row.try_get(i)
    }

    pub(crate) fn uuid(&mut self, name: &str) -> Result<Uuid, sqlx::Error> {
        let text: &str = self.get(name)?;
        parse_uuid(text, name)
    }

    pub(crate) fn opt_uuid(&mut self, name: &str) -> Result<Option<Uuid>, sqlx::Error> {
        let text: Option<&str> = self.get(name)?;
        text.map(|t| parse_uuid(t, name)).transpose()
    }

    pub(crate) fn timestamp(&mut self, name: &str) -> Result<jiff::Timestamp, sqlx::Error> {
        let micros: i64 = self.get(name)?;
        from_micros(micros, name)
    }

    pub(crate) fn opt_timestamp(&mut self, name: &str) -> Result<Option<jiff::Timestamp>, sqlx::Error> {
        let micros: Option<i64> = self.get(name)?;
        micros.map(|m| from_micros(m, name)).transpose()
    }

    /// A BOOLEAN column selected as `CAST(col AS INTEGER) AS col` (see [`get_bool`]).
    pub(crate) fn bool(&mut self, name: &str) -> Result<bool, sqlx::Error> {
        let value: i64 = self.get(name)?;
        Ok(value != 0)
    }
}

fn parse_uuid(text: &str, column: &str) -> Result<Uuid, sqlx::Error> {
    Uuid::parse_str(text)
        .map_err(|err| sqlx::Error::ColumnDecode { index: column.to_owned(), source: Box::new(err) })
}

fn from_micros(micros: i64, column: &str) -> Result<jiff::Timestamp, sqlx::Error> {
    jiff::Timestamp::from_microsecond(micros)
        .map_err(|err| sqlx::Error::ColumnDecode { index: column.to_owned(), source: Box::new(err) })
}

/// The stored form of a timestamp: unix microseconds; nanoseconds below a microsecond are dropped.
fn micros(ts: jiff::Timestamp) -> i64 {
    ts.as_microsecond()
}

fn uuid_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

/// The name a soft-deleted user or project is renamed to, so that its name can be taken again
/// (dstack renames to `_deleted_<ts>_<hex>` and keeps `original_name` too).
fn deleted_name() -> String {
    let hex = Uuid::new_v4().simple().to_string();
    format!("_deleted_{}_{}", jiff::Timestamp::now().as_second(), &hex[..8])
}
