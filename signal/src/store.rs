//! The durable store: SQLite under the data directory by default (WAL mode, full fsync, so
//! a commit that returns is durable), or PostgreSQL by URL. Both run the same SQL through
//! sqlx's `Any` driver; the schema's migrations are embedded and run at start.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyPool, Executor};

use crate::config::StoreConfig;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store.url {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
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

/// Which database engine the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a store URL names, if it is one we support.
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    node_id: String,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub async fn open(cfg: &StoreConfig) -> Result<Self, StoreError> {
        let url = cfg.effective_url();
        let backend = Backend::of_url(&url).ok_or_else(|| StoreError::Unsupported(url.clone()))?;
        install_default_drivers();
        let open_err = |source| StoreError::Open {
            url: redact(&url),
            source,
        };
        let pool = match backend {
            Backend::Sqlite => {
                if cfg.url.is_none() {
                    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| {
                        StoreError::DataDir {
                            path: cfg.data_dir.display().to_string(),
                            source,
                        }
                    })?;
                }
                let url = if url.contains('?') {
                    url.clone()
                } else {
                    format!("{url}?mode=rwc")
                };
                AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL lets readers run beside the writer; FULL makes every
                            // commit durable before it returns.
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                 PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await
                    .map_err(open_err)?
            }
            Backend::Postgres => AnyPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect(&url)
                .await
                .map_err(open_err)?,
        };
        Migrator::new(Embedded).await?.run(&pool).await?;
        let fresh = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO server_meta (key, value) VALUES ('node_id', $1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(&fresh)
        .execute(&pool)
        .await?;
        let node_id: String =
            sqlx::query_scalar("SELECT value FROM server_meta WHERE key = 'node_id'")
                .fetch_one(&pool)
                .await?;
        Ok(Self {
            pool,
            backend,
            node_id,
        })
    }

    /// A stable id for this server, created on first start.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// A database URL with its password, if any, replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:<redacted>{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The schema's migrations, in the binary: (version, description, SQL). Each file of
/// `migrations/` is one entry (a test checks that the two agree); a migration already
/// applied must never change, as the database keeps each one's checksum.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "server meta",
        include_str!("../migrations/0001_server_meta.sql"),
    ),
    (2, "chat", include_str!("../migrations/0002_chat.sql")),
];

/// [`MIGRATIONS`] as sqlx's migration source. (sqlx's `migrate!` macro embeds a
/// directory the same way, but would build sqlx's macro crate with both database drivers
/// a second time for the compiler.)
#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(std::future::ready(Ok(MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                // sqlx's own rule for a migration that must run outside a transaction.
                let no_tx = sql.starts_with("-- no-transaction");
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    no_tx,
                )
            })
            .collect())))
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
        assert_eq!(a.backend(), Backend::Sqlite);
        let id = a.node_id().to_owned();
        a.close().await;
        let b = Store::open(&cfg).await.unwrap();
        assert_eq!(b.node_id(), id);
        b.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The embedded migrations are the files of `migrations/`, read as sqlx reads a
    /// directory: same versions, descriptions, kinds and checksums, none missing.
    #[tokio::test]
    async fn embedded_migrations_are_the_directorys() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let from_dir = Migrator::new(dir).await.unwrap();
        let embedded = Migrator::new(Embedded).await.unwrap();
        let key = |m: &Migration| {
            (
                m.version,
                m.description.to_string(),
                m.migration_type,
                m.checksum.to_vec(),
                m.no_tx,
            )
        };
        let a: Vec<_> = from_dir.iter().map(key).collect();
        let b: Vec<_> = embedded.iter().map(key).collect();
        assert!(!a.is_empty());
        assert_eq!(a, b);
    }

    #[tokio::test]
    async fn refuses_other_urls() {
        let cfg = StoreConfig {
            data_dir: "./unused".into(),
            url: Some("mysql://localhost/x".into()),
        };
        assert!(matches!(
            Store::open(&cfg).await,
            Err(StoreError::Unsupported(_))
        ));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/h"),
            "postgres://u:<redacted>@db:5432/h"
        );
        assert_eq!(redact("postgres://u@db/h"), "postgres://u@db/h");
        assert_eq!(redact("sqlite://./data/x.db"), "sqlite://./data/x.db");
    }
}
