//! PostgreSQL for tests: which server to use, and one throwaway database per test so that tests
//! run in parallel without seeing each other's devices or notifications.
//!
//! The server: `DUHUB_TEST_DATABASE_URL` if set, else [`DEFAULT_POSTGRES_URL`] if it answers,
//! else none (tests skip). With `DUHUB_REQUIRE_POSTGRES=1` a missing server is a failure, so CI
//! cannot pass by skipping.

use std::time::Duration;

use anyhow::{Context as _, Result};
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

/// The PostgreSQL tried when `DUHUB_TEST_DATABASE_URL` is not set.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The maintenance URL of the PostgreSQL server to test against, or `None` (after printing why)
/// when there is none.
///
/// # Panics
///
/// When there is none and `DUHUB_REQUIRE_POSTGRES=1`.
pub async fn postgres_url() -> Option<String> {
    static PROBED: tokio::sync::OnceCell<Option<String>> = tokio::sync::OnceCell::const_new();
    let url = PROBED.get_or_init(probe).await.clone();
    if url.is_none() {
        let required = std::env::var("DUHUB_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "DUHUB_REQUIRE_POSTGRES=1 but no PostgreSQL: set DUHUB_TEST_DATABASE_URL or start one at \
             {DEFAULT_POSTGRES_URL}"
        );
    }
    url
}

async fn probe() -> Option<String> {
    if let Ok(url) = std::env::var("DUHUB_TEST_DATABASE_URL")
        && !url.is_empty()
    {
        return Some(url);
    }
    match tokio::time::timeout(Duration::from_secs(3), PgConnection::connect(DEFAULT_POSTGRES_URL)).await {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            Some(DEFAULT_POSTGRES_URL.to_owned())
        }
        _ => None,
    }
}

/// A database `duhub_test_<random>` created for one test and dropped afterwards (explicitly
/// with [`TestDatabase::drop_database`], or when dropped, even while a failed test unwinds).
#[derive(Debug)]
pub struct TestDatabase {
    /// The URL of the new database.
    pub url: String,
    name: String,
    maintenance_url: String,
    dropped: bool,
}

impl TestDatabase {
    /// Creates a fresh database on the server of `maintenance_url`.
    pub async fn create(maintenance_url: &str) -> Result<Self> {
        let name = format!("duhub_test_{}", crate::random_hex(8));
        let mut connection = PgConnection::connect(maintenance_url)
            .await
            .with_context(|| format!("connecting to {}", duhub_server::server::redact(maintenance_url)))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut connection)
            .await
            .with_context(|| format!("creating the database {name}"))?;
        let _ = connection.close().await;
        Ok(Self {
            url: with_database(maintenance_url, &name),
            name,
            maintenance_url: maintenance_url.to_owned(),
            dropped: false,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database (closing the connections still open to it).
    pub async fn drop_database(mut self) -> Result<()> {
        self.dropped = true;
        drop_database(&self.maintenance_url, &self.name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Drop cannot await, and may run inside (or outside) a runtime: use a thread with its own.
        let (url, name) = (self.maintenance_url.clone(), self.name.clone());
        let dropping = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(drop_database(&url, &name)).ok()
        });
        if !matches!(dropping.join(), Ok(Some(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

async fn drop_database(maintenance_url: &str, name: &str) -> Result<()> {
    let mut connection = PgConnection::connect(maintenance_url).await.context("connecting to drop the database")?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut connection)
        .await
        .with_context(|| format!("dropping the database {name}"))?;
    let _ = connection.close().await;
    Ok(())
}

/// `url` with its database (path) replaced by `name`, keeping any query.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = match base.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), base),
    };
    let authority = rest.split_once('/').map_or(rest, |(authority, _)| authority);
    match query {
        Some(query) => format!("{scheme}{authority}/{name}?{query}"),
        None => format!("{scheme}{authority}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(with_database("postgres://u:p@h/db?sslmode=disable", "x"), "postgres://u:p@h/x?sslmode=disable");
    }
}
