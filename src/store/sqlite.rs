//! The embedded SQLite backend: one file, created on first run, for one replica. Several
//! replicas need PostgreSQL: SQLite has no cross-process leases or notifications.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};
use tokio::sync::broadcast;

use super::{Change, Result, StoreError, common::impl_store};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The SQLite store.
pub struct SqliteStore {
    pool: Pool<Sqlite>,
    changes: broadcast::Sender<Change>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite:path`, `sqlite::memory:` or a
    /// plain path) and applies migrations.
    pub async fn open(url: &str) -> Result<Self> {
        let open_error = |source| StoreError::Open {
            url: url.to_owned(),
            source,
        };
        let url_form = if url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            format!("sqlite:{url}")
        };
        let options = SqliteConnectOptions::from_str(&url_form)
            .map_err(open_error)?
            .create_if_missing(true)
            .foreign_keys(true)
            // WAL lets readers run beside the writer; FULL makes a committed spec survive a
            // power cut, not only a process crash.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        // An in-memory database exists per connection; keep exactly one.
        let max_connections = if url.contains(":memory:") { 1 } else { 8 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        let (changes, _) = broadcast::channel(1024);
        Ok(Self { pool, changes })
    }
}

impl SqliteStore {
    /// SQLite's `julianday` keeps milliseconds.
    const DB_NOW_MILLIS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
    /// One writer at a time: a claim's transaction already excludes the others.
    const LOCK_OR_SKIP: &str = "";
    /// A file on one machine: one controller process (see the README).
    const ONE_REPLICA: bool = true;
    /// Takes the write lock at the start, so a read-then-write transaction never meets a
    /// snapshot another writer moved.
    const BEGIN_SERIALIZED: &str = "BEGIN IMMEDIATE";
    /// The write lock taken by [`Self::BEGIN_SERIALIZED`] already serializes every writer.
    const KEY_LOCK: Option<&str> = None;

    /// One process owns a SQLite file, so the in-process channel reaches every subscriber.
    async fn announce(&self, change: Change) {
        // No subscriber is fine: nobody is watching.
        let _ = self.changes.send(change);
    }
}

impl_store!(super::SqliteStore, sqlx::Sqlite);
