//! Device twins: reads, the four kinds of change (desired, reported, tags, replace) as
//! [`TwinEdit`]s applied inside the writer's transaction, and the recorded
//! desired patches other nodes deliver.

use base64::Engine as _;
use duhub_proto::twin_doc::{self, Section};
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::sync::Arc;

use super::devices::DeviceStatus;
use super::events::NOTIFY_CHANNEL;
use super::writer::{ChangeError, Twins, Write, Written};
use super::{Event, Store, StoreError};
use crate::ids::now_rfc3339;

/// A device twin.
#[derive(Debug, Clone, PartialEq)]
pub struct Twin {
    /// Device id.
    pub device_id: String,
    /// Tags (service-only).
    pub tags: Map<String, Value>,
    /// Desired properties, without `$version`.
    pub desired: Map<String, Value>,
    /// Version of the desired properties.
    pub desired_version: i64,
    /// Reported properties, without `$version`.
    pub reported: Map<String, Value>,
    /// Version of the reported properties.
    pub reported_version: i64,
    /// Version of the whole twin; bumps with every change.
    pub version: i64,
    /// PnP model id.
    pub model_id: Option<String>,
    /// Device status.
    pub status: DeviceStatus,
    /// Connection state.
    pub connection_state: String,
}

impl Twin {
    /// The twin's etag: base64 of the big-endian twin version, as IoT Hub writes it
    /// (`AAAAAAAAAAE=` for version 1).
    pub fn etag(&self) -> String {
        etag_of(self.version)
    }

    /// Desired properties with `$version`, as devices receive them.
    pub fn desired_document(&self) -> Value {
        with_version(&self.desired, self.desired_version)
    }

    /// Reported properties with `$version`.
    pub fn reported_document(&self) -> Value {
        with_version(&self.reported, self.reported_version)
    }
}

fn with_version(section: &Map<String, Value>, version: i64) -> Value {
    let mut document = section.clone();
    document.insert("$version".into(), version.into());
    Value::Object(document)
}

/// The etag of a version number.
pub fn etag_of(version: i64) -> String {
    base64::engine::general_purpose::STANDARD.encode(version.to_be_bytes())
}

impl Store {
    // ----- twins -------------------------------------------------------------------------------

    /// A device's twin.
    pub async fn twin(&self, device_id: &str) -> Result<Twin, StoreError> {
        let row = sqlx::query(TWIN_SELECT).bind(device_id).fetch_optional(&self.pool).await?;
        row.map(|r| twin_from_row(&r)).transpose()?.ok_or_else(|| StoreError::NotFound(device_id.to_owned()))
    }

    /// Applies a desired-properties merge patch; returns the new twin. Devices that subscribed
    /// get the patch with its `$version`.
    pub async fn patch_desired(
        &self,
        device_id: &str,
        patch: &Value,
        if_match: Option<&str>,
    ) -> Result<Twin, StoreError> {
        self.change_twin(device_id, if_match, TwinEdit::Desired(patch.clone())).await
    }

    /// Applies a reported-properties merge patch (from the device); returns the new twin.
    pub async fn patch_reported(&self, device_id: &str, patch: &Value) -> Result<Twin, StoreError> {
        self.change_twin(device_id, None, TwinEdit::Reported(patch.clone())).await
    }

    /// Applies a tags merge patch.
    pub async fn patch_tags(&self, device_id: &str, patch: &Value, if_match: Option<&str>) -> Result<Twin, StoreError> {
        self.change_twin(device_id, if_match, TwinEdit::Tags(patch.clone())).await
    }

    /// Replaces tags and desired properties (IoT Hub's twin PUT); reported properties stay.
    pub async fn replace_twin(
        &self,
        device_id: &str,
        tags: Option<&Value>,
        desired: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Twin, StoreError> {
        let edit = TwinEdit::Replace { tags: tags.cloned(), desired: desired.cloned() };
        self.change_twin(device_id, if_match, edit).await
    }

    /// The desired patch that produced `version`, with `$version`, if still recorded.
    pub async fn desired_patch(&self, device_id: &str, version: i64) -> Result<Option<Value>, StoreError> {
        let row = sqlx::query("SELECT patch FROM desired_patches WHERE device_id = $1 AND version = $2")
            .bind(device_id)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let text: String = r.try_get("patch")?;
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
    }

    async fn change_twin(&self, device_id: &str, if_match: Option<&str>, edit: TwinEdit) -> Result<Twin, StoreError> {
        let request = TwinChange { device_id: device_id.to_owned(), if_match: if_match.map(str::to_owned), edit };
        match self.write(Write::Twin(request)).await? {
            Written::Twin(twin, record_changed) => {
                if record_changed {
                    self.records_changed.notify_one();
                }
                Ok(*twin)
            }
            Written::Done => Err(StoreError::Corrupt("a twin change wrote no twin".into())),
        }
    }
}

/// How many desired patches are kept per device for delivery by other nodes.
const DESIRED_PATCHES_KEPT: i64 = 64;

/// A change to a twin, owned so it can be sent to the writer task.
#[derive(Debug, Clone)]
pub(super) enum TwinEdit {
    Desired(Value),
    Reported(Value),
    Tags(Value),
    Replace { tags: Option<Value>, desired: Option<Value> },
}

/// What applying a [`TwinEdit`] changed.
struct Change {
    desired_patch: Option<Map<String, Value>>,
    reported: bool,
}

impl TwinEdit {
    fn apply(&self, twin: &mut Twin) -> Result<Change, StoreError> {
        match self {
            Self::Desired(patch) => {
                twin.desired = twin_doc::apply_patch(&twin.desired, patch, Section::Desired)?;
                Ok(Change { desired_patch: Some(strip_version(patch)), reported: false })
            }
            Self::Reported(patch) => {
                twin.reported = twin_doc::apply_patch(&twin.reported, patch, Section::Reported)?;
                Ok(Change { desired_patch: None, reported: true })
            }
            Self::Tags(patch) => {
                twin.tags = twin_doc::apply_patch(&twin.tags, patch, Section::Tags)?;
                Ok(Change { desired_patch: None, reported: false })
            }
            Self::Replace { tags, desired } => {
                if let Some(tags) = tags {
                    twin.tags = twin_doc::apply_patch(&Map::new(), tags, Section::Tags)?;
                }
                let mut desired_patch = None;
                if let Some(desired) = desired {
                    let replacement = twin_doc::apply_patch(&Map::new(), desired, Section::Desired)?;
                    // Devices receive the new document plus nulls for the removed members.
                    let mut patch = replacement.clone();
                    for key in twin.desired.keys() {
                        if !replacement.contains_key(key) {
                            patch.insert(key.clone(), Value::Null);
                        }
                    }
                    twin.desired = replacement;
                    desired_patch = Some(patch);
                }
                Ok(Change { desired_patch, reported: false })
            }
        }
    }
}

/// One requested twin change.
#[derive(Debug)]
pub(super) struct TwinChange {
    pub(super) device_id: String,
    pub(super) if_match: Option<String>,
    pub(super) edit: TwinEdit,
}

/// The twin columns, in the order [`twin_from_row`] reads them.
macro_rules! twin_columns {
    () => {
        "device_id, tags, desired, desired_version, reported, reported_version, twin_version, model_id, status, \
         connection_state"
    };
}

/// The twin columns, for the writer's multi-row reads.
pub(super) const TWIN_COLUMNS: &str = twin_columns!();

const TWIN_SELECT: &str = concat!("SELECT ", twin_columns!(), " FROM devices WHERE device_id = $1");

/// Applies one twin change to the batch's twins (read by the writer at the start of its
/// transaction, written back by it before the commit) and records what must go with it inside
/// `tx`: the Device Update record (the bool returned says whether it changed), the desired patch for other nodes and, with `notify_node` set (PostgreSQL), the
/// notification. The caller commits. A change that is refused leaves the twin as it was.
pub(super) async fn apply_change(
    tx: &mut sqlx::AnyConnection,
    twins: &mut Twins,
    request: &TwinChange,
    notify_node: Option<Arc<str>>,
) -> Result<(Twin, Option<Event>, bool), ChangeError> {
    let device_id = request.device_id.as_str();
    let current = twins.get_mut(device_id).ok_or_else(|| StoreError::NotFound(device_id.to_owned()))?;
    if let Some(etag) = request.if_match.as_deref().filter(|e| *e != "*")
        && etag != current.etag()
    {
        return Err(ChangeError::Store(StoreError::PreconditionFailed));
    }
    let mut twin = current.clone();
    let Change { desired_patch, reported } = request.edit.apply(&mut twin)?;
    twin.version += 1;
    if desired_patch.is_some() {
        twin.desired_version += 1;
    }
    if reported {
        twin.reported_version += 1;
    }
    // `current` still holds the twin as it was: the record compares against it.
    let record_changed = super::record::apply_record(tx, Some(current), &twin).await?;
    current.clone_from(&twin);
    let Some(mut patch) = desired_patch else { return Ok((twin, None, record_changed)) };
    patch.insert("$version".into(), twin.desired_version.into());
    let patch = Value::Object(patch);
    sqlx::query("INSERT INTO desired_patches (device_id, version, patch, created_at) VALUES ($1, $2, $3, $4)")
        .bind(device_id)
        .bind(twin.desired_version)
        .bind(patch.to_string())
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM desired_patches WHERE device_id = $1 AND version <= $2")
        .bind(device_id)
        .bind(twin.desired_version - DESIRED_PATCHES_KEPT)
        .execute(&mut *tx)
        .await?;
    if let Some(node) = notify_node {
        let payload = serde_json::json!({"node": &*node, "kind": "desired", "device": device_id, "version": twin.desired_version});
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(payload.to_string())
            .execute(&mut *tx)
            .await?;
    }
    let event =
        Event::DesiredChanged { device_id: device_id.to_owned(), version: twin.desired_version, patch: Some(patch) };
    Ok((twin, Some(event), record_changed))
}

fn strip_version(patch: &Value) -> Map<String, Value> {
    let mut map = patch.as_object().cloned().unwrap_or_default();
    twin_doc::strip_metadata(&mut map);
    map
}

fn json_object(row: &AnyRow, column: &str) -> Result<Map<String, Value>, StoreError> {
    let text: String = row.try_get(column)?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(StoreError::Corrupt(format!("{column} is not a JSON object"))),
    }
}

pub(super) fn twin_from_row(row: &AnyRow) -> Result<Twin, StoreError> {
    Ok(Twin {
        device_id: row.try_get("device_id")?,
        tags: json_object(row, "tags")?,
        desired: json_object(row, "desired")?,
        desired_version: row.try_get("desired_version")?,
        reported: json_object(row, "reported")?,
        reported_version: row.try_get("reported_version")?,
        version: row.try_get("twin_version")?,
        model_id: row.try_get("model_id")?,
        status: DeviceStatus::parse(&row.try_get::<String, _>("status")?),
        connection_state: row.try_get("connection_state")?,
    })
}
