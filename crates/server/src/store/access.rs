//! Who may call the server: shared access policies of the IoT Hub service API (their keys) and
//! the Device Update API's Bearer tokens (only their SHA-256 is stored).

use base64::Engine as _;
use sqlx::Row;

use super::{Store, StoreError};
use crate::ids::{generate_key, now_rfc3339};

/// An API token as listed (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Short id: the first 16 hex digits of the token's SHA-256.
    pub id: String,
    /// Name given at creation.
    pub name: String,
    /// Creation time.
    pub created: String,
    /// Revocation time.
    pub revoked: Option<String>,
}

impl Store {
    // ----- service access policies ---------------------------------------------------------------

    /// The key of a shared access policy, creating the policy with a fresh key if it is missing.
    pub async fn ensure_policy(&self, name: &str) -> Result<String, StoreError> {
        if let Some(key) = self.policy_key(name).await? {
            return Ok(key);
        }
        let key = generate_key();
        sqlx::query("INSERT INTO access_policies (name, primary_key, secondary_key) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&key)
            .bind(generate_key())
            .execute(&self.pool)
            .await?;
        Ok(self.policy_key(name).await?.unwrap_or(key))
    }

    /// Primary and secondary keys of a policy.
    pub async fn policy_keys(&self, name: &str) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query("SELECT primary_key, secondary_key FROM access_policies WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("primary_key")?, r.try_get("secondary_key")?))).transpose()
    }

    /// Records an API token (only its SHA-256 is stored).
    pub async fn add_api_token(&self, name: &str, token: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO api_tokens (token_sha256, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (token_sha256) DO NOTHING")
            .bind(token_hash(token))
            .bind(name)
            .bind(now_rfc3339())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether `token` is a recorded, unrevoked API token.
    pub async fn api_token_valid(&self, token: &str) -> Result<bool, StoreError> {
        Ok(self.api_token_name(token).await?.is_some())
    }

    /// The name of an API token that is known and not revoked.
    pub async fn api_token_name(&self, token: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT name FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL")
            .bind(token_hash(token))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("name")).transpose().map_err(StoreError::from)
    }

    async fn policy_key(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.policy_keys(name).await?.map(|(primary, _)| primary))
    }

    // ----- API tokens --------------------------------------------------------------------------

    /// Every API token, oldest first.
    pub async fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let rows = sqlx::query("SELECT token_sha256, name, created_at, revoked_at FROM api_tokens ORDER BY created_at")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiToken {
                    id: token_id(&r.try_get::<String, _>("token_sha256")?),
                    name: r.try_get("name")?,
                    created: r.try_get("created_at")?,
                    revoked: r.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Revokes the token with short id `id`; whether one was revoked.
    pub async fn revoke_api_token(&self, id: &str) -> Result<bool, StoreError> {
        let rows =
            sqlx::query("SELECT token_sha256 FROM api_tokens WHERE revoked_at IS NULL").fetch_all(&self.pool).await?;
        for row in rows {
            let hash: String = row.try_get("token_sha256")?;
            if token_id(&hash) == id {
                sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE token_sha256 = $1")
                    .bind(&hash)
                    .bind(now_rfc3339())
                    .execute(&self.pool)
                    .await?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The short id of `token`.
    pub fn api_token_id(token: &str) -> String {
        token_id(&token_hash(token))
    }
}

pub(super) fn token_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

fn token_id(stored_hash: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD.decode(stored_hash).unwrap_or_default();
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
