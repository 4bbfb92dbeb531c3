//! The PostgreSQL server a benchmark runs on.
//!
//! Without `DATABASE_URL` a private server is started from the local installation with
//! PostgreSQL's defaults (fsync on, like a production server: the write-path cost depends
//! on the commit path). With `DATABASE_URL` the benchmark creates its databases on that
//! server; the URL's user needs `create database`.

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::embedded_pg::{EmbeddedPg, Options};

/// The server, and how to reach a database on it.
pub struct BenchServer {
    embedded: Option<EmbeddedPg>,
    admin_url: String,
}

impl BenchServer {
    /// The server of `database_url`, or a fresh private one when it is `None`.
    pub fn start(database_url: Option<String>) -> anyhow::Result<BenchServer> {
        match database_url.filter(|u| !u.trim().is_empty()) {
            Some(url) => Ok(BenchServer {
                embedded: None,
                admin_url: url,
            }),
            None => {
                let pg = EmbeddedPg::start(Options { ephemeral: false })
                    .context("start a private PostgreSQL for the benchmark")?;
                Ok(BenchServer {
                    admin_url: pg.url("postgres"),
                    embedded: Some(pg),
                })
            }
        }
    }

    /// "private server (fsync on)" or the target of DATABASE_URL, without credentials.
    pub fn describe(&self) -> String {
        match &self.embedded {
            Some(pg) => format!(
                "private server on 127.0.0.1:{} (PostgreSQL defaults, fsync on)",
                pg.port()
            ),
            None => format!(
                "DATABASE_URL server {}",
                crate::migrate::describe_target(&self.admin_url)
            ),
        }
    }

    /// URL of database `name` on this server.
    pub fn url(&self, name: &str) -> anyhow::Result<String> {
        Ok(match &self.embedded {
            Some(pg) => pg.url(name),
            None => {
                let _: PgConnectOptions = self.admin_url.parse().context("DATABASE_URL parses")?;
                crate::migrate::with_database(&self.admin_url, name)
            }
        })
    }

    /// Whether [`BenchServer::restart`] can restart this server (only the private one).
    pub fn can_restart(&self) -> bool {
        self.embedded.is_some()
    }

    /// Restart the private server in place (fast shutdown, start).
    pub fn restart(&self) -> anyhow::Result<()> {
        match &self.embedded {
            Some(pg) => pg.restart().context("restart the private PostgreSQL"),
            None => anyhow::bail!("a DATABASE_URL server is not restarted by the benchmark"),
        }
    }

    pub async fn admin(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect(&self.admin_url)
            .await
            .context("connect to the benchmark server")
    }

    /// Create (after dropping any leftover) database `name`; returns its URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let mut admin = self.admin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop database if exists {name} with (force)"
        )))
        .execute(&mut admin)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("create database {name}"))?;
        admin.close().await.ok();
        self.url(name)
    }

    pub async fn drop_database(&self, name: &str) {
        if let Ok(mut admin) = self.admin().await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "drop database if exists {name} with (force)"
            )))
            .execute(&mut admin)
            .await;
        }
    }

    /// `select version()`, and the settings that shape commit cost.
    pub async fn describe_settings(&self) -> anyhow::Result<ServerInfo> {
        let mut admin = self.admin().await?;
        let version: String = sqlx::query_scalar("select version()")
            .fetch_one(&mut admin)
            .await?;
        let mut settings = Vec::new();
        for name in [
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
            "shared_buffers",
            "max_wal_size",
        ] {
            let value: String = sqlx::query_scalar("select current_setting($1)")
                .bind(name)
                .fetch_one(&mut admin)
                .await?;
            settings.push(format!("{name}={value}"));
        }
        Ok(ServerInfo {
            version,
            settings: settings.join(" "),
        })
    }
}

/// What the report says about the server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerInfo {
    pub version: String,
    pub settings: String,
}
