//! Device identities: create, update (keys, status), read, page, delete; connection state and
//! persistent MQTT sessions (written through the writer).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::twins::etag_of;
use super::writer::Write;
use super::{Event, Store, StoreError};
use crate::ids::{generate_key, generation_id, now_rfc3339};

/// Whether a device may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// It may.
    Enabled,
    /// It may not.
    Disabled,
}

impl DeviceStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
        }
    }

    pub(super) fn parse(text: &str) -> Self {
        if text.eq_ignore_ascii_case("disabled") { Self::Disabled } else { Self::Enabled }
    }
}

/// A device identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Device id.
    pub device_id: String,
    /// Primary symmetric key (base64).
    pub primary_key: String,
    /// Secondary symmetric key (base64).
    pub secondary_key: String,
    /// Enabled or disabled.
    pub status: DeviceStatus,
    /// Why it is disabled, if given.
    pub status_reason: Option<String>,
    /// Changes with every update of the identity.
    pub etag: String,
    /// Distinguishes identities that reuse a deleted id.
    pub generation_id: String,
    /// `Connected` or `Disconnected`, as last seen by any node.
    pub connection_state: String,
    /// When `connection_state` last changed (RFC 3339).
    pub connection_state_updated: Option<String>,
    /// Last MQTT activity (RFC 3339).
    pub last_activity: Option<String>,
    /// PnP model id announced at the last connect.
    pub model_id: Option<String>,
    /// When the device was created (RFC 3339).
    pub created: String,
    /// The persistent MQTT session (`clean_session=0`), if one exists.
    pub mqtt_session: Option<MqttSession>,
}

/// What an MQTT session with `clean_session=0` keeps between connections: IoT Hub keeps the
/// subscriptions, and Microsoft's SDKs subscribe only once per session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MqttSession {
    /// Subscribed to desired-property patches.
    pub desired: bool,
}

/// What a device identity is created or updated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Device id.
    pub device_id: String,
    /// Primary key (base64); generated when `None`.
    pub primary_key: Option<String>,
    /// Secondary key (base64); generated when `None`.
    pub secondary_key: Option<String>,
    /// Status.
    pub status: DeviceStatus,
    /// Status reason.
    pub status_reason: Option<String>,
}

impl Store {
    // ----- devices -----------------------------------------------------------------------------

    /// Creates a device identity (and its empty twin).
    pub async fn create_device(&self, spec: &DeviceSpec) -> Result<Device, StoreError> {
        validate_device_id(&spec.device_id)?;
        let now = now_rfc3339();
        let primary = spec.primary_key.clone().unwrap_or_else(generate_key);
        let secondary = spec.secondary_key.clone().unwrap_or_else(generate_key);
        check_key(&primary)?;
        check_key(&secondary)?;
        let result = sqlx::query(
            "INSERT INTO devices (device_id, primary_key, secondary_key, status, status_reason, etag, generation_id, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&spec.device_id)
        .bind(&primary)
        .bind(&secondary)
        .bind(spec.status.as_str())
        .bind(spec.status_reason.as_deref())
        .bind(etag_of(1))
        .bind(generation_id())
        .bind(&now)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => self.device(&spec.device_id).await,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::AlreadyExists(spec.device_id.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Updates a device's keys and status; `if_match` is the device etag (`*` or `None`: any).
    pub async fn update_device(&self, spec: &DeviceSpec, if_match: Option<&str>) -> Result<Device, StoreError> {
        let current = self.device(&spec.device_id).await?;
        if let Some(etag) = if_match.filter(|e| *e != "*")
            && etag != current.etag
        {
            return Err(StoreError::PreconditionFailed);
        }
        let primary = spec.primary_key.clone().unwrap_or(current.primary_key.clone());
        let secondary = spec.secondary_key.clone().unwrap_or(current.secondary_key.clone());
        check_key(&primary)?;
        check_key(&secondary)?;
        let next_etag = etag_of(etag_version(&current.etag) + 1);
        let updated = sqlx::query(
            "UPDATE devices SET primary_key = $1, secondary_key = $2, status = $3, status_reason = $4, etag = $5 \
             WHERE device_id = $6 AND etag = $7",
        )
        .bind(&primary)
        .bind(&secondary)
        .bind(spec.status.as_str())
        .bind(spec.status_reason.as_deref())
        .bind(&next_etag)
        .bind(&spec.device_id)
        .bind(&current.etag)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::PreconditionFailed);
        }
        let keys_changed = primary != current.primary_key || secondary != current.secondary_key;
        if spec.status == DeviceStatus::Disabled || keys_changed {
            self.publish(Event::DeviceRevoked { device_id: spec.device_id.clone() }).await?;
        }
        self.device(&spec.device_id).await
    }

    /// A device identity.
    pub async fn device(&self, device_id: &str) -> Result<Device, StoreError> {
        let row = sqlx::query(DEVICE_SELECT_BY_ID).bind(device_id).fetch_optional(&self.pool).await?;
        row.map(|r| device_from_row(&r)).transpose()?.ok_or_else(|| StoreError::NotFound(device_id.to_owned()))
    }

    /// Up to `limit` devices ordered by id, starting after `after`.
    pub async fn devices(&self, after: Option<&str>, limit: i64) -> Result<Vec<Device>, StoreError> {
        let rows = sqlx::query(DEVICE_SELECT_PAGE)
            .bind(after.unwrap_or(""))
            .bind(limit.clamp(1, 10_000))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device_from_row).collect()
    }

    /// Deletes a device and its twin; `if_match` as for updates.
    pub async fn delete_device(&self, device_id: &str, if_match: Option<&str>) -> Result<(), StoreError> {
        let current = self.device(device_id).await?;
        if let Some(etag) = if_match.filter(|e| *e != "*")
            && etag != current.etag
        {
            return Err(StoreError::PreconditionFailed);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM desired_patches WHERE device_id = $1").bind(device_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM du_device WHERE device_id = $1").bind(device_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM devices WHERE device_id = $1").bind(device_id).execute(&mut *tx).await?;
        tx.commit().await?;
        self.publish(Event::DeviceRevoked { device_id: device_id.to_owned() }).await
    }

    /// Records a connection or disconnection (and the model id announced at connect), and
    /// optionally stores (`Some(Some(_))`) or ends (`Some(None)`) the device's persistent MQTT
    /// session in the same write.
    pub async fn set_connection(
        &self,
        device_id: &str,
        connected: bool,
        model_id: Option<&str>,
        session: Option<Option<MqttSession>>,
    ) -> Result<(), StoreError> {
        let job = Write::Connection {
            device_id: device_id.to_owned(),
            connected,
            model_id: model_id.map(str::to_owned),
            session,
            node: self.node_id.clone(),
        };
        self.write(job).await.map(|_| ())
    }

    /// Stores (or with `None` ends) a device's persistent MQTT session.
    pub async fn set_mqtt_session(&self, device_id: &str, session: Option<MqttSession>) -> Result<(), StoreError> {
        self.write(Write::Session { device_id: device_id.to_owned(), session }).await.map(|_| ())
    }
}

/// The device columns, in the order [`device_from_row`] reads them.
macro_rules! device_columns {
    () => {
        "device_id, primary_key, secondary_key, status, status_reason, etag, generation_id, connection_state, \
         connection_state_updated, last_activity, model_id, created_at, mqtt_session"
    };
}

const DEVICE_SELECT_BY_ID: &str = concat!("SELECT ", device_columns!(), " FROM devices WHERE device_id = $1");

const DEVICE_SELECT_PAGE: &str =
    concat!("SELECT ", device_columns!(), " FROM devices WHERE device_id > $1 ORDER BY device_id LIMIT $2");

fn device_from_row(row: &AnyRow) -> Result<Device, StoreError> {
    Ok(Device {
        device_id: row.try_get("device_id")?,
        primary_key: row.try_get("primary_key")?,
        secondary_key: row.try_get("secondary_key")?,
        status: DeviceStatus::parse(&row.try_get::<String, _>("status")?),
        status_reason: row.try_get("status_reason")?,
        etag: row.try_get("etag")?,
        generation_id: row.try_get("generation_id")?,
        connection_state: row.try_get("connection_state")?,
        connection_state_updated: row.try_get("connection_state_updated")?,
        last_activity: row.try_get("last_activity")?,
        model_id: row.try_get("model_id")?,
        created: row.try_get("created_at")?,
        mqtt_session: row
            .try_get::<Option<String>, _>("mqtt_session")?
            .map(|text| serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("mqtt_session: {e}"))))
            .transpose()?,
    })
}

/// IoT Hub device ids: up to 128 characters of `A-Za-z0-9-.%_*?!(),:=@$'` (case-sensitive).
pub fn validate_device_id(id: &str) -> Result<(), StoreError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-.%_*?!(),:=@$'".contains(c);
    if id.is_empty() || id.len() > 128 || !id.chars().all(allowed) {
        return Err(StoreError::Invalid(format!(
            "invalid device id {id:?}: 1 to 128 characters of letters, digits and -.%_*?!(),:=@$'"
        )));
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), StoreError> {
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(bytes) if (16..=64).contains(&bytes.len()) => Ok(()),
        _ => Err(StoreError::Invalid("symmetric keys must be base64 of 16 to 64 bytes".into())),
    }
}

fn etag_version(etag: &str) -> i64 {
    base64::engine::general_purpose::STANDARD
        .decode(etag)
        .ok()
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(i64::from_be_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_big_endian_versions() {
        assert_eq!(etag_of(1), "AAAAAAAAAAE=");
        assert_eq!(etag_version(&etag_of(12345)), 12345);
        assert_eq!(etag_version("garbage"), 0);
    }

    #[test]
    fn device_ids_follow_iot_hub_rules() {
        assert!(validate_device_id("dev-1.a_b:c@d").is_ok());
        assert!(validate_device_id("").is_err());
        assert!(validate_device_id("a/b").is_err());
        assert!(validate_device_id(&"x".repeat(129)).is_err());
    }
}
