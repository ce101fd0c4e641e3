//! The PostgreSQL backend, for production and several replicas sharing one database. Changes
//! are announced with `NOTIFY`, so every replica's watchers and loops wake on any replica's
//! write.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{Pool, Postgres};
use tokio::sync::broadcast;

use super::{Change, Result, StoreError, common::impl_store};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The channel replicas announce shop changes on; the payload is [`Change::encode`].
const CHANNEL: &str = "shop_changes";

/// Connections per replica: `SHOP_CONTROLLER_DATABASE_MAX_CONNECTIONS`, 16 by default. The
/// test command lowers it, since dozens of stores share one local server there.
fn max_connections() -> u32 {
    std::env::var("SHOP_CONTROLLER_DATABASE_MAX_CONNECTIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|n: &u32| *n > 0)
        .unwrap_or(16)
}

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool<Postgres>,
    changes: broadcast::Sender<Change>,
    listener: tokio::task::JoinHandle<()>,
}

impl PostgresStore {
    /// Connects to `url` and applies migrations (under PostgreSQL's advisory lock, so replicas
    /// starting together do not race).
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections())
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|source| StoreError::Open {
                url: redact(url),
                source,
            })?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        let (changes, _) = broadcast::channel(1024);
        let mut listener =
            PgListener::connect_with(&pool)
                .await
                .map_err(|source| StoreError::Open {
                    url: redact(url),
                    source,
                })?;
        listener
            .listen(CHANNEL)
            .await
            .map_err(|source| StoreError::Database {
                operation: "listen for shop changes",
                source,
            })?;
        let listener = tokio::spawn(forward_notifications(listener, changes.clone()));
        Ok(Self {
            pool,
            changes,
            listener,
        })
    }

    /// Tells every replica, this one included, through `NOTIFY`. Sent after the write commits;
    /// a notification lost to a crash in between is made up for by the periodic resync.
    async fn announce(&self, change: Change) {
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(change.encode())
            .execute(&self.pool)
            .await;
        if let Err(error) = sent {
            tracing::warn!(shop = change.shop(), %error, "could not announce a shop change; resync will find it");
        }
    }
}

impl PostgresStore {
    /// `clock_timestamp()`, not `now()`: the time of the statement, not of the transaction.
    const DB_NOW_MILLIS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";
    const LOCK_OR_SKIP: &str = " FOR UPDATE SKIP LOCKED";
    const ONE_REPLICA: bool = false;
    const BEGIN_SERIALIZED: &str = "BEGIN";
    /// Writers of one key wait for each other until commit, whichever replica they run in.
    const KEY_LOCK: Option<&str> = Some("SELECT pg_advisory_xact_lock(hashtext($1))");
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Forwards `NOTIFY`s of every replica to this process's subscribers. `PgListener` reconnects
/// by itself; notifications sent while it was away are lost, which resyncs cover.
async fn forward_notifications(mut listener: PgListener, changes: broadcast::Sender<Change>) {
    loop {
        match listener.recv().await {
            Ok(notification) => match Change::decode(notification.payload()) {
                Some(change) => {
                    let _ = changes.send(change);
                }
                None => tracing::warn!(
                    payload = notification.payload(),
                    "ignored an unknown notification"
                ),
            },
            Err(error) => {
                tracing::warn!(%error, "lost the notification connection; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// A database URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl_store!(super::PostgresStore, sqlx::Postgres);

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
