//! The database's data version: a token that changes whenever any write commits, by this node
//! or another, so that answers computed from the database can be kept until it changes.
//!
//! SQLite: `PRAGMA data_version` on a connection of its own that never writes (its value changes
//! when any *other* connection commits). PostgreSQL: `pg_current_snapshot()`, whose text
//! (`xmin:xmax:in-progress ids`) determines which transactions' writes are visible, so two equal
//! tokens see the same data, whichever node wrote it.
//!
//! A token is read *before* what it keys is computed: the computation then sees at least the
//! writes the token stands for, and any write committed after the token was read changes it.

use sqlx::Connection as _;

use super::{Backend, Store, StoreError};

impl Store {
    /// The current data version. Equal tokens mean that no write committed in between.
    pub async fn data_version(&self) -> Result<String, StoreError> {
        match self.backend {
            Backend::Postgres => {
                let snapshot: String =
                    sqlx::query_scalar("SELECT pg_current_snapshot()::text").fetch_one(&self.pool).await?;
                Ok(snapshot)
            }
            Backend::Sqlite => {
                let mut probe = self.version_probe.lock().await;
                let mut connection = match probe.take() {
                    Some(connection) => connection,
                    None => self.pool.acquire().await?.detach(),
                };
                match sqlx::query_scalar::<_, i64>("PRAGMA data_version").fetch_one(&mut connection).await {
                    Ok(version) => {
                        *probe = Some(connection);
                        Ok(version.to_string())
                    }
                    Err(error) => {
                        // A connection that failed is closed; the next call opens another.
                        let _ = connection.close().await;
                        Err(error.into())
                    }
                }
            }
        }
    }
}
