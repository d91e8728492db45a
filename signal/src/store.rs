//! The embedded store: an SQLite database under the data directory, opened in WAL mode with
//! full fsync (a write that returns is durable), migrations embedded and run at start.
//! PostgreSQL by URL arrives with the chat history store.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::StoreConfig;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store.url {0:?}: only sqlite:// URLs are supported by this version")]
    Unsupported(String),
    #[error("store.data_dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("store.url {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("store migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store: {0}")]
    Query(#[from] sqlx::Error),
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    node_id: String,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub async fn open(cfg: &StoreConfig) -> Result<Self, StoreError> {
        let url = cfg.effective_url();
        if !url.starts_with("sqlite:") {
            return Err(StoreError::Unsupported(url));
        }
        if cfg.url.is_none() {
            std::fs::create_dir_all(&cfg.data_dir).map_err(|source| StoreError::DataDir {
                path: cfg.data_dir.display().to_string(),
                source,
            })?;
        }
        let opts = SqliteConnectOptions::from_str(&url)
            .map_err(|source| StoreError::Open {
                url: url.clone(),
                source,
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                url: url.clone(),
                source,
            })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let fresh = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT OR IGNORE INTO server_meta (key, value) VALUES ('node_id', ?)")
            .bind(&fresh)
            .execute(&pool)
            .await?;
        let node_id: String =
            sqlx::query_scalar("SELECT value FROM server_meta WHERE key = 'node_id'")
                .fetch_one(&pool)
                .await?;
        Ok(Self { pool, node_id })
    }

    /// A stable id for this server, created on first start.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_migrates_and_keeps_node_id() {
        let dir = std::env::temp_dir().join(format!("huddle-store-{}", uuid::Uuid::new_v4()));
        let cfg = StoreConfig {
            data_dir: dir.clone(),
            url: None,
        };
        let a = Store::open(&cfg).await.unwrap();
        a.ping().await.unwrap();
        let id = a.node_id().to_owned();
        a.close().await;
        let b = Store::open(&cfg).await.unwrap();
        assert_eq!(b.node_id(), id);
        b.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn refuses_other_urls() {
        let cfg = StoreConfig {
            data_dir: "./unused".into(),
            url: Some("postgres://localhost/x".into()),
        };
        assert!(matches!(
            Store::open(&cfg).await,
            Err(StoreError::Unsupported(_))
        ));
    }
}
