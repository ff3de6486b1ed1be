//! Device twins: reads, the four kinds of change (desired, reported, tags, replace) as
//! [`TwinEdit`]s applied inside the writer's transaction, and the recorded
//! desired patches other nodes deliver.

use base64::Engine as _;
use duhub_proto::twin::component_patch;
use duhub_proto::twin_doc::{self, Section};
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::sync::Arc;

use super::devices::DeviceStatus;
use super::events::NOTIFY_CHANNEL;
use super::record::DuRecord;
use super::writer::{ChangeError, ROWS_PER_STATEMENT, Twins, Write, Written};
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

    /// Sets the desired `component`.`member` of many devices, each to its own value, as a merge
    /// patch computed in the writer's batch against the twin as it is there: `value` plus a
    /// `null` for every member the old value had and this one lacks (so nothing of a previous
    /// value lingers). Each device's change is an ordinary desired change (its desired patch
    /// recorded, its Device Update record updated, its session told, all in the batch's
    /// transaction); the writes are handed to the lanes ahead of their commits, so batches fill
    /// with them, and no twin is read outside the writer. Returns each device's outcome, in
    /// order.
    pub async fn replace_desired_members(
        &self,
        component: &str,
        member: &str,
        values: Vec<(String, Arc<Value>)>,
    ) -> Vec<Result<(), StoreError>> {
        let component: Arc<str> = component.into();
        let member: Arc<str> = member.into();
        // Enough in flight that each lane has its next batch waiting when it commits one.
        let window = super::writer::BATCH * 2 * self.writer.len();
        let mut outcomes: Vec<Result<(), StoreError>> = Vec::with_capacity(values.len());
        let mut pending = std::collections::VecDeque::with_capacity(window);
        let mut record_changed = false;
        for (device_id, value) in values {
            if pending.len() >= window
                && let Some((index, answer)) = pending.pop_front()
            {
                outcomes[index] = self.finish_member(answer, &mut record_changed).await;
            }
            let edit = TwinEdit::ReplaceMember { component: component.clone(), member: member.clone(), value };
            let change = TwinChange { device_id, if_match: None, edit, answer_twin: false };
            let index = outcomes.len();
            outcomes.push(Ok(()));
            match self.submit(Write::Twin(change)).await {
                Ok(answer) => pending.push_back((index, answer)),
                Err(error) => outcomes[index] = Err(error),
            }
        }
        for (index, answer) in pending {
            outcomes[index] = self.finish_member(answer, &mut record_changed).await;
        }
        if record_changed {
            self.records_changed.notify_one();
        }
        outcomes
    }

    async fn finish_member(
        &self,
        answer: tokio::sync::oneshot::Receiver<super::writer::Outcome>,
        record_changed: &mut bool,
    ) -> Result<(), StoreError> {
        if let Written::Twin(_, changed) = self.finish(answer).await? {
            *record_changed |= changed;
        }
        Ok(())
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
        let request = TwinChange {
            device_id: device_id.to_owned(),
            if_match: if_match.map(str::to_owned),
            edit,
            answer_twin: true,
        };
        match self.write(Write::Twin(request)).await? {
            Written::Twin(Some(twin), record_changed) => {
                if record_changed {
                    self.records_changed.notify_one();
                }
                Ok(*twin)
            }
            Written::Twin(None, _) | Written::Done => Err(StoreError::Corrupt("a twin change wrote no twin".into())),
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
    Replace {
        tags: Option<Value>,
        desired: Option<Value>,
    },
    /// Desired `component`.`member` set to `value` by a patch that nulls what the old value
    /// had and `value` lacks ([`replacement`]).
    ReplaceMember {
        component: Arc<str>,
        member: Arc<str>,
        value: Arc<Value>,
    },
}

/// What applying a [`TwinEdit`] changed.
struct Change {
    desired_patch: Option<Map<String, Value>>,
    reported: bool,
}

impl TwinEdit {
    /// Whether the edit changes desired properties only (so not what the Device Update record
    /// takes from tags and reported properties).
    fn desired_only(&self) -> bool {
        matches!(self, Self::Desired(_) | Self::ReplaceMember { .. })
    }

    /// Applies the edit to `twin`; an edit that is refused leaves it as it was.
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
            Self::ReplaceMember { component, member, value } => {
                let old = twin.desired.get(&**component).and_then(|c| c.get(&**member)).unwrap_or(&Value::Null);
                let patch = component_patch(component, [(member.to_string(), replacement(old, (**value).clone()))]);
                twin.desired = twin_doc::apply_patch(&twin.desired, &patch, Section::Desired)?;
                Ok(Change { desired_patch: Some(strip_version(&patch)), reported: false })
            }
            Self::Replace { tags, desired } => {
                // Both checked before either is applied: a refused edit changes nothing.
                let tags =
                    tags.as_ref().map(|tags| twin_doc::apply_patch(&Map::new(), tags, Section::Tags)).transpose()?;
                let desired =
                    desired.as_ref().map(|d| twin_doc::apply_patch(&Map::new(), d, Section::Desired)).transpose()?;
                if let Some(tags) = tags {
                    twin.tags = tags;
                }
                let mut desired_patch = None;
                if let Some(replacement) = desired {
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
    /// Whether the writer answers with the new twin (a copy); bulk writes do without.
    pub(super) answer_twin: bool,
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
) -> Result<(Option<Twin>, Option<Event>, bool), ChangeError> {
    let device_id = request.device_id.as_str();
    let (current, records) =
        twins.twin_and_records(device_id).ok_or_else(|| StoreError::NotFound(device_id.to_owned()))?;
    if let Some(etag) = request.if_match.as_deref().filter(|e| *e != "*")
        && etag != current.etag()
    {
        return Err(ChangeError::Store(StoreError::PreconditionFailed));
    }
    let previous = DuRecord::of_twin(current);
    // In place: a refused edit leaves the batch's twin as it was.
    let Change { desired_patch, reported } = request.edit.apply(current)?;
    current.version += 1;
    if desired_patch.is_some() {
        current.desired_version += 1;
    }
    if reported {
        current.reported_version += 1;
    }
    let record = match &previous {
        // Tags and reported properties are as they were: only the desired workflow can differ.
        Some(previous) if request.edit.desired_only() => Some(previous.with_desired_of(&current.desired)),
        _ => DuRecord::of_twin(current),
    };
    let record_changed = records.note(device_id, previous, record);
    let twin = request.answer_twin.then(|| current.clone());
    let desired_version = current.desired_version;
    let Some(mut patch) = desired_patch else { return Ok((twin, None, record_changed)) };
    patch.insert("$version".into(), desired_version.into());
    let patch = Value::Object(patch);
    twins.desired_patches.push((device_id.to_owned(), desired_version, patch.to_string()));
    if let Some(node) = notify_node {
        let payload =
            serde_json::json!({"node": &*node, "kind": "desired", "device": device_id, "version": desired_version});
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(payload.to_string())
            .execute(&mut *tx)
            .await?;
    }
    let event = Event::DesiredChanged {
        device_id: device_id.to_owned(),
        version: desired_version,
        patch: Some(Arc::new(patch)),
    };
    Ok((twin, Some(event), record_changed))
}

/// `new` with every member `old` has and `new` lacks set to `null`, recursively into objects
/// both have: a merge patch that replaces `old` by `new`.
fn replacement(old: &Value, new: Value) -> Value {
    match (old, new) {
        (Value::Object(old), Value::Object(mut new)) => {
            for (key, old_value) in old {
                match new.remove(key) {
                    Some(new_value) => {
                        new.insert(key.clone(), replacement(old_value, new_value));
                    }
                    None => {
                        new.insert(key.clone(), Value::Null);
                    }
                }
            }
            Value::Object(new)
        }
        (_, new) => new,
    }
}

/// Records the desired patches of a batch (device, version, patch) inside `tx`, in multi-row
/// statements, and forgets each device's patches older than the last [`DESIRED_PATCHES_KEPT`].
pub(super) async fn store_desired_patches(
    tx: &mut sqlx::AnyConnection,
    patches: &[(String, i64, String)],
) -> Result<(), StoreError> {
    let now = now_rfc3339();
    for chunk in patches.chunks(ROWS_PER_STATEMENT) {
        let rows = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${}, $1)", i * 3 + 2, i * 3 + 3, i * 3 + 4))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("INSERT INTO desired_patches (device_id, version, patch, created_at) VALUES {rows}");
        // Only numbered placeholders are formatted into the text; the values are bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&now);
        for (device_id, version, patch) in chunk {
            query = query.bind(device_id.as_str()).bind(*version).bind(patch.as_str());
        }
        query.execute(&mut *tx).await?;
        // Versions count from 1 and the first patch is version 2: below that there is nothing.
        let old: Vec<(&str, i64)> = chunk
            .iter()
            .map(|(device_id, version, _)| (device_id.as_str(), version - DESIRED_PATCHES_KEPT))
            .filter(|(_, upto)| *upto >= 2)
            .collect();
        if old.is_empty() {
            continue;
        }
        let terms = (0..old.len())
            .map(|i| format!("(device_id = ${} AND version <= ${})", i * 2 + 1, i * 2 + 2))
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!("DELETE FROM desired_patches WHERE {terms}");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (device_id, upto) in old {
            query = query.bind(device_id).bind(upto);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn replacement_nulls_what_the_new_value_lacks() {
        let old =
            json!({"workflow": {"action": 3, "id": "a", "retryTimestamp": "t"}, "fileUrls": {"f1": "u1", "f2": "u2"}});
        let new = json!({"workflow": {"action": 3, "id": "b"}, "fileUrls": {"f3": "u3"}});
        let patch = replacement(&old, new);
        assert_eq!(
            patch,
            json!({"workflow": {"action": 3, "id": "b", "retryTimestamp": null}, "fileUrls": {"f3": "u3", "f1": null, "f2": null}})
        );
        assert_eq!(replacement(&Value::Null, json!({"a": 1})), json!({"a": 1}));
    }
}
