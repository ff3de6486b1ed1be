//! The per-device Device Update record (`du_device`): for each device with an agent its group,
//! device class, what its agent last reported (state, workflow, result codes, installed update)
//! and what the service last asked of it (desired workflow), plus its connection state.
//!
//! The record is derived from the twin by [`DuRecord::of`] (the only derivation: `du::fleet`
//! builds its `DeviceView` from it too) and written by [`PendingRecords`] in the same transaction
//! as the twin change that alters it, so record and twin never disagree, not even after a
//! kill -9. Status, compliance, groups, classes and device lists read it with indexed queries
//! and `GROUP BY` instead of parsing every twin. A one-time backfill ([`Store::backfill_records`])
//! builds the records of a database created before the table existed.

use std::collections::BTreeMap;

use duhub_proto::result::ResultCode;
use duhub_proto::twin::{AgentProperties, AgentState, UpdateAction, Workflow};
use duhub_proto::update_id::UpdateId;
use serde::Deserialize as _;
use serde_json::{Map, Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::twins::Twin;
use super::writer::ROWS_PER_STATEMENT;
use super::{Store, StoreError};
use crate::ids::now_rfc3339;

/// The twin tag that names a device's group.
pub const GROUP_TAG: &str = "ADUGroup";
/// The group of devices without the tag.
pub const DEFAULT_GROUP: &str = "$default";

/// What Device Update knows of one device, derived from its twin.
#[derive(Debug, Clone, PartialEq)]
pub struct DuRecord {
    /// Group id (tag or [`DEFAULT_GROUP`]).
    pub group_id: String,
    /// Whether the group comes from the tag.
    pub tagged: bool,
    /// Device class id: 40 hex digits of the SHA-256 of `class_body`.
    pub class_id: String,
    /// Compatibility property name -> value (sorted by name).
    pub compat: BTreeMap<String, String>,
    /// Contract model id, when reported.
    pub contract_model: Option<String>,
    /// What the agent reports (`deviceUpdate.agent`).
    pub agent: AgentProperties,
    /// The installed update, parsed.
    pub installed: Option<UpdateId>,
    /// The workflow the service last wrote to `deviceUpdate.service`.
    pub desired: Workflow,
}

/// The canonical JSON a device class id hashes.
pub fn class_body(compat: &BTreeMap<String, String>, contract_model: Option<&str>) -> String {
    json!({"compat": compat, "contractModel": contract_model}).to_string()
}

/// The id of a device class: 40 hex digits of the SHA-256 of its canonical JSON.
pub fn class_id(compat: &BTreeMap<String, String>, contract_model: Option<&str>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, class_body(compat, contract_model).as_bytes());
    digest.as_ref().iter().take(20).map(|b| format!("{b:02x}")).collect()
}

impl DuRecord {
    /// The record of a twin; `None` for devices without a Device Update agent (no reported
    /// `deviceUpdate.agent.deviceProperties`).
    pub fn of(tags: &Map<String, Value>, desired: &Map<String, Value>, reported: &Map<String, Value>) -> Option<Self> {
        let agent_json = reported.get("deviceUpdate")?.get("agent")?;
        let properties = agent_json.get("deviceProperties")?.as_object()?;
        let agent = AgentProperties::deserialize(agent_json).unwrap_or_default();
        let names = agent_json
            .get("compatPropertyNames")
            .and_then(Value::as_str)
            .filter(|names| !names.trim().is_empty())
            .unwrap_or("manufacturer,model");
        let mut compat = BTreeMap::new();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()).take(5) {
            let value = properties
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .and_then(|(_, value)| value.as_str())
                .unwrap_or_default();
            compat.insert(name.to_owned(), value.to_owned());
        }
        let contract_model = properties.get("contractModelId").and_then(Value::as_str).map(str::to_owned);
        let group = tags.get(GROUP_TAG).and_then(Value::as_str).filter(|g| !g.is_empty());
        let installed = agent.installed_update_id.as_deref().and_then(UpdateId::from_installed_update_id);
        let desired = desired_workflow(desired);
        Some(Self {
            group_id: group.unwrap_or(DEFAULT_GROUP).to_owned(),
            tagged: group.is_some(),
            class_id: class_id(&compat, contract_model.as_deref()),
            compat,
            contract_model,
            agent,
            installed,
            desired,
        })
    }

    /// This record with the desired workflow of `desired` (the desired properties): the record
    /// of a twin whose desired properties alone changed.
    pub fn with_desired_of(&self, desired: &Map<String, Value>) -> Self {
        Self { desired: desired_workflow(desired), ..self.clone() }
    }

    /// Whether `other` differs from this record in its desired workflow only.
    fn same_but_desired(&self, other: &Self) -> bool {
        let Self { group_id, tagged, class_id, compat, contract_model, agent, installed, desired: _ } = self;
        *group_id == other.group_id
            && *tagged == other.tagged
            && *class_id == other.class_id
            && *compat == other.compat
            && *contract_model == other.contract_model
            && *agent == other.agent
            && *installed == other.installed
    }

    /// The record of a twin.
    pub fn of_twin(twin: &Twin) -> Option<Self> {
        Self::of(&twin.tags, &twin.desired, &twin.reported)
    }

    /// The reported workflow id.
    pub fn reported_workflow(&self) -> Option<&str> {
        self.agent.workflow.as_ref().and_then(|w| w.id.as_deref())
    }

    fn columns(&self) -> Columns {
        let result = self.agent.last_install_result.as_ref();
        Columns {
            class_body: class_body(&self.compat, self.contract_model.as_deref()),
            agent_state: self.agent.state.map(AgentState::code),
            workflow_id: self.reported_workflow().map(str::to_owned),
            workflow_action: self.agent.workflow.as_ref().and_then(|w| w.action).map(UpdateAction::code),
            result_code: result.map(|r| i64::from(r.result_code.0)),
            extended_result_code: result
                .and_then(duhub_proto::twin::LastInstallResult::extended_result_code)
                .map(|c| i64::from(c.0)),
            installed_update: self.installed.as_ref().map(installed_text),
            desired_workflow_id: self.desired.id.clone(),
            desired_action: self.desired.action.map(UpdateAction::code),
            desired_retry: self.desired.retry_timestamp.clone(),
        }
    }
}

/// The workflow in desired `deviceUpdate.service`.
fn desired_workflow(desired: &Map<String, Value>) -> Workflow {
    let workflow = desired.get("deviceUpdate").and_then(|d| d.get("service")).and_then(|s| s.get("workflow"));
    Workflow {
        action: workflow.and_then(|w| w.get("action")).and_then(Value::as_i64).map(UpdateAction::from_code),
        id: workflow.and_then(|w| w.get("id")).and_then(Value::as_str).map(str::to_owned),
        retry_timestamp: workflow.and_then(|w| w.get("retryTimestamp")).and_then(Value::as_str).map(str::to_owned),
    }
}

/// The stored form of an installed update id (`{"provider","name","version"}`, compact).
fn installed_text(id: &UpdateId) -> String {
    json!({"provider": id.provider, "name": id.name, "version": id.version}).to_string()
}

struct Columns {
    class_body: String,
    agent_state: Option<i64>,
    workflow_id: Option<String>,
    workflow_action: Option<i64>,
    result_code: Option<i64>,
    extended_result_code: Option<i64>,
    installed_update: Option<String>,
    desired_workflow_id: Option<String>,
    desired_action: Option<i64>,
    desired_retry: Option<String>,
}

/// The records a writer batch changes, written together before its commit ([`Self::write`]):
/// a batch of desired writes (a deployment) then updates the desired workflow of all its
/// devices in a few multi-row statements instead of one upsert each.
#[derive(Default)]
pub(super) struct PendingRecords {
    /// Device id -> its record as stored when the batch began, and as the batch leaves it.
    records: BTreeMap<String, (Option<DuRecord>, Option<DuRecord>)>,
}

impl PendingRecords {
    /// Notes that a twin change (in the batch, in order) took a device's record from `previous`
    /// to `record`; returns whether it altered it.
    pub(super) fn note(&mut self, device_id: &str, previous: Option<DuRecord>, record: Option<DuRecord>) -> bool {
        if previous == record {
            return false;
        }
        match self.records.entry(device_id.to_owned()) {
            std::collections::btree_map::Entry::Occupied(mut entry) => entry.get_mut().1 = record,
            // The first change of the device in the batch: `previous` is the record of the twin
            // as read, so the stored one (they are written together).
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert((previous, record));
            }
        }
        true
    }

    /// Writes the records inside `tx`: deleted when the device no longer has an agent, only the
    /// desired workflow when nothing else changed, else upserted. `connection_state` gives a
    /// device's connection state as the batch leaves it (for a new record).
    pub(super) async fn write(
        self,
        tx: &mut sqlx::AnyConnection,
        connection_state: impl Fn(&str) -> String,
    ) -> Result<(), StoreError> {
        let mut desired_only: Vec<(String, DuRecord)> = Vec::new();
        for (device_id, (stored, record)) in self.records {
            match (stored, record) {
                (stored, record) if stored == record => {}
                (_, None) => {
                    sqlx::query("DELETE FROM du_device WHERE device_id = $1")
                        .bind(&device_id)
                        .execute(&mut *tx)
                        .await?;
                }
                (Some(stored), Some(record)) if stored.same_but_desired(&record) => {
                    desired_only.push((device_id, record));
                }
                (_, Some(record)) => {
                    let state = connection_state(&device_id);
                    upsert(tx, &device_id, &record, &state, false).await?;
                }
            }
        }
        let now = now_rfc3339();
        for chunk in desired_only.chunks(ROWS_PER_STATEMENT) {
            let rows = (0..chunk.len())
                .map(|i| format!("(${}, ${}, ${}, ${})", i * 4 + 2, i * 4 + 3, i * 4 + 4, i * 4 + 5))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "WITH v (id, workflow_id, action, retry) AS (VALUES {rows}) \
                 UPDATE du_device SET desired_workflow_id = v.workflow_id, desired_action = v.action, \
                 desired_retry = v.retry, updated_at = $1 FROM v WHERE du_device.device_id = v.id RETURNING device_id"
            );
            // Only numbered placeholders are formatted into the text; the values are bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&now);
            for (device_id, record) in chunk {
                query = query
                    .bind(device_id.as_str())
                    .bind(record.desired.id.as_deref())
                    .bind(record.desired.action.map(UpdateAction::code))
                    .bind(record.desired.retry_timestamp.as_deref());
            }
            let updated = query.fetch_all(&mut *tx).await?;
            if updated.len() != chunk.len() {
                // A record the twin implied but the table lacked (it cannot happen while both
                // are written together): write the missing ones whole.
                let updated: std::collections::BTreeSet<String> =
                    updated.iter().map(|row| row.try_get("device_id")).collect::<Result<_, _>>()?;
                for (device_id, record) in chunk.iter().filter(|(id, _)| !updated.contains(id)) {
                    let state = connection_state(device_id);
                    upsert(tx, device_id, record, &state, false).await?;
                }
            }
        }
        Ok(())
    }
}

async fn upsert(
    tx: &mut sqlx::AnyConnection,
    device_id: &str,
    record: &DuRecord,
    connection_state: &str,
    keep_existing: bool,
) -> Result<(), StoreError> {
    let c = record.columns();
    let conflict = if keep_existing {
        "DO NOTHING"
    } else {
        "DO UPDATE SET group_id = excluded.group_id, class_id = excluded.class_id, class_body = excluded.class_body, \
         agent_state = excluded.agent_state, workflow_id = excluded.workflow_id, \
         workflow_action = excluded.workflow_action, result_code = excluded.result_code, \
         extended_result_code = excluded.extended_result_code, installed_update = excluded.installed_update, \
         desired_workflow_id = excluded.desired_workflow_id, desired_action = excluded.desired_action, \
         desired_retry = excluded.desired_retry, updated_at = excluded.updated_at"
    };
    let sql = format!(
        "INSERT INTO du_device (device_id, group_id, class_id, class_body, agent_state, workflow_id, workflow_action, \
         result_code, extended_result_code, installed_update, desired_workflow_id, desired_action, desired_retry, \
         connection_state, connection_time, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15) \
         ON CONFLICT (device_id) {conflict}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(device_id)
        .bind(&record.group_id)
        .bind(&record.class_id)
        .bind(c.class_body)
        .bind(c.agent_state)
        .bind(c.workflow_id)
        .bind(c.workflow_action)
        .bind(c.result_code)
        .bind(c.extended_result_code)
        .bind(c.installed_update)
        .bind(c.desired_workflow_id)
        .bind(c.desired_action)
        .bind(c.desired_retry)
        .bind(connection_state)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Records the connection state of a device's record (if it has one) inside `tx`.
pub(super) async fn apply_connection(
    tx: &mut sqlx::AnyConnection,
    device_id: &str,
    state: &str,
    at: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE du_device SET connection_state = $1, connection_time = $2 WHERE device_id = $3")
        .bind(state)
        .bind(at)
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// What device status is derived from, as the record stores it: the inputs of
/// `du::deploy::device_state` and of compliance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Facts {
    /// Reported workflow id.
    pub workflow_id: Option<String>,
    /// Reported agent state (wire number).
    pub agent_state: Option<i64>,
    /// Reported overall result code.
    pub result_code: Option<i64>,
    /// Installed update (`{"provider","name","version"}`).
    pub installed_update: Option<String>,
}

impl Facts {
    /// The reported agent state.
    pub fn state(&self) -> Option<AgentState> {
        self.agent_state.map(AgentState::from_code)
    }

    /// The reported result code.
    pub fn result(&self) -> Option<ResultCode> {
        self.result_code.and_then(|c| i32::try_from(c).ok()).map(ResultCode)
    }

    /// The installed update id.
    pub fn installed(&self) -> Option<UpdateId> {
        serde_json::from_str(self.installed_update.as_deref()?).ok()
    }

    pub(super) fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            workflow_id: row.try_get("workflow_id")?,
            agent_state: row.try_get("agent_state")?,
            result_code: row.try_get("result_code")?,
            installed_update: row.try_get("installed_update")?,
        })
    }
}

/// Devices of one group and class with the same [`Facts`].
#[derive(Debug, Clone)]
pub struct RecordBucket {
    /// Group id.
    pub group_id: String,
    /// Device class id.
    pub class_id: String,
    /// The class's canonical JSON (`{"compat", "contractModel"}`).
    pub class_body: String,
    /// What they report.
    pub facts: Facts,
    /// How many devices.
    pub count: u64,
}

/// One device's record as stored.
#[derive(Debug, Clone)]
pub struct RecordRow {
    /// Device id.
    pub device_id: String,
    /// Group id.
    pub group_id: String,
    /// Device class id.
    pub class_id: String,
    /// The class's canonical JSON.
    pub class_body: String,
    /// What it reports.
    pub facts: Facts,
    /// The desired workflow (id, action, retry timestamp).
    pub desired: Workflow,
    /// `Connected` or `Disconnected`.
    pub connection_state: String,
}

/// Which records a device list covers.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    /// Only this group.
    pub group_id: Option<String>,
    /// Only this class.
    pub class_id: Option<String>,
    /// Only devices that reported this workflow id.
    pub workflow_id: Option<String>,
    /// Only devices whose desired workflow differs from (id, action) or has a retry timestamp.
    pub not_desired: Option<(String, i64)>,
    /// Only started members of this rollout deployment (of `group_id`).
    pub started_in: Option<String>,
}

/// A value bound to a query built from the conditions a caller asked for.
enum Bind {
    Text(Option<String>),
    Integer(Option<i64>),
}

/// Adds `bind` to `binds`; its placeholder (`$N`).
fn param(binds: &mut Vec<Bind>, bind: Bind) -> String {
    binds.push(bind);
    format!("${}", binds.len())
}

const ROW_COLUMNS: &str = "device_id, group_id, class_id, class_body, workflow_id, agent_state, result_code, \
     installed_update, desired_workflow_id, desired_action, desired_retry, connection_state";

fn record_row(row: &AnyRow) -> Result<RecordRow, StoreError> {
    Ok(RecordRow {
        device_id: row.try_get("device_id")?,
        group_id: row.try_get("group_id")?,
        class_id: row.try_get("class_id")?,
        class_body: row.try_get("class_body")?,
        facts: Facts::from_row(row)?,
        desired: Workflow {
            action: row.try_get::<Option<i64>, _>("desired_action")?.map(UpdateAction::from_code),
            id: row.try_get("desired_workflow_id")?,
            retry_timestamp: row.try_get("desired_retry")?,
        },
        connection_state: row.try_get("connection_state")?,
    })
}

impl Store {
    /// Notified after a committed twin change altered a device's record (this node's writes):
    /// what the deployment reconciler waits for instead of rescanning the fleet.
    pub fn records_changed(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.records_changed.clone()
    }

    /// Device counts by group, class and [`Facts`], optionally of one group (and class): what
    /// status and compliance are computed from, one row per distinct combination.
    pub async fn record_buckets(
        &self,
        group_id: Option<&str>,
        class_id: Option<&str>,
    ) -> Result<Vec<RecordBucket>, StoreError> {
        // Only the conditions asked for, so that the planner sees a range of the index
        // (`$1 IS NULL OR group_id = $1` would make it read every group's entries).
        let condition = match (group_id, class_id) {
            (None, None) => "",
            (Some(_), None) => "WHERE group_id = $1",
            (None, Some(_)) => "WHERE class_id = $1",
            (Some(_), Some(_)) => "WHERE group_id = $1 AND class_id = $2",
        };
        let sql = format!(
            "SELECT group_id, class_id, class_body, workflow_id, agent_state, result_code, installed_update, \
             COUNT(*) AS devices FROM du_device {condition} \
             GROUP BY group_id, class_id, class_body, workflow_id, agent_state, result_code, installed_update"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in [group_id, class_id].into_iter().flatten() {
            query = query.bind(value);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(RecordBucket {
                    group_id: row.try_get("group_id")?,
                    class_id: row.try_get("class_id")?,
                    class_body: row.try_get("class_body")?,
                    facts: Facts::from_row(row)?,
                    count: u64::try_from(row.try_get::<i64, _>("devices")?).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Records in device id order after `after` (keyset), at most `limit`, matching `filter`.
    pub async fn records(
        &self,
        filter: &RecordFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RecordRow>, StoreError> {
        self.records_reporting(filter, None, after, limit).await
    }

    /// [`Self::records`], with `facts` only those of one of these classes reporting the paired
    /// facts (an empty list matches none): the devices in some deployment state, which status
    /// computes from the [`Facts`] of each class.
    pub async fn records_reporting(
        &self,
        filter: &RecordFilter,
        facts: Option<&[(String, Facts)]>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RecordRow>, StoreError> {
        // Only the conditions asked for: a condition like `$4 IS NULL OR device_id > $4` would
        // hide the keyset range from the planner, and every page would read the list from its
        // start.
        let mut binds: Vec<Bind> = Vec::new();
        let mut conditions: Vec<String> = Vec::new();
        if let Some(group) = &filter.group_id {
            conditions.push(format!("group_id = {}", param(&mut binds, Bind::Text(Some(group.clone())))));
        }
        if let Some(class) = &filter.class_id {
            conditions.push(format!("class_id = {}", param(&mut binds, Bind::Text(Some(class.clone())))));
        }
        if let Some(workflow) = &filter.workflow_id {
            conditions.push(format!("workflow_id = {}", param(&mut binds, Bind::Text(Some(workflow.clone())))));
        }
        if let Some(after) = after {
            conditions.push(format!("device_id > {}", param(&mut binds, Bind::Text(Some(after.to_owned())))));
        }
        if let Some((id, action)) = &filter.not_desired {
            let id = param(&mut binds, Bind::Text(Some(id.clone())));
            let action = param(&mut binds, Bind::Integer(Some(*action)));
            conditions.push(format!(
                "(desired_workflow_id IS NULL OR desired_workflow_id <> {id} \
                  OR desired_action IS NULL OR desired_action <> {action} OR desired_retry IS NOT NULL)"
            ));
        }
        if let Some(deployment) = &filter.started_in {
            let deployment = param(&mut binds, Bind::Text(Some(deployment.clone())));
            conditions.push(format!(
                "EXISTS (SELECT 1 FROM du_rollout_member m WHERE m.group_id = du_device.group_id \
                 AND m.deployment_id = {deployment} AND m.device_id = du_device.device_id AND m.started_ms IS NOT NULL)"
            ));
        }
        if let Some(facts) = facts {
            if facts.is_empty() {
                return Ok(Vec::new());
            }
            // Null-safe equality: `IS` in SQLite, `IS NOT DISTINCT FROM` in PostgreSQL.
            let same = if self.backend == super::Backend::Postgres { "IS NOT DISTINCT FROM" } else { "IS" };
            let mut alternatives = Vec::new();
            for (class, facts) in facts {
                let class = param(&mut binds, Bind::Text(Some(class.clone())));
                let workflow = param(&mut binds, Bind::Text(facts.workflow_id.clone()));
                let state = param(&mut binds, Bind::Integer(facts.agent_state));
                let result = param(&mut binds, Bind::Integer(facts.result_code));
                let installed = param(&mut binds, Bind::Text(facts.installed_update.clone()));
                alternatives.push(format!(
                    "(class_id = {class} AND workflow_id {same} {workflow} AND agent_state {same} {state} \
                     AND result_code {same} {result} AND installed_update {same} {installed})"
                ));
            }
            conditions.push(format!("({})", alternatives.join(" OR ")));
        }
        let clause = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        let limit = param(&mut binds, Bind::Integer(Some(limit)));
        let sql = format!("SELECT {ROW_COLUMNS} FROM du_device {clause} ORDER BY device_id LIMIT {limit}");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            query = match bind {
                Bind::Text(text) => query.bind(text),
                Bind::Integer(number) => query.bind(number),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(record_row).collect()
    }

    /// The records of these devices (those that have one), in device id order.
    pub async fn records_of(&self, device_ids: &[String]) -> Result<Vec<RecordRow>, StoreError> {
        let mut out = Vec::new();
        for chunk in device_ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!("SELECT {ROW_COLUMNS} FROM du_device WHERE device_id IN ({})", placeholders.join(", "));
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                out.push(record_row(&row)?);
            }
        }
        out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(out)
    }

    /// Distinct (group, class, class body) of the records: the subgroups that have devices.
    pub async fn record_subgroups(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT DISTINCT group_id, class_id, class_body FROM du_device ORDER BY group_id, class_id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| Ok((r.try_get("group_id")?, r.try_get("class_id")?, r.try_get("class_body")?))).collect()
    }

    /// Builds the records of every twin once, if the schema step that added the table asked for
    /// it (a database from before the record existed). Twins are read in pages; a record a live
    /// write stored meanwhile is kept.
    pub(super) async fn backfill_records(&self) -> Result<(), StoreError> {
        let pending: Option<i64> =
            sqlx::query_scalar("SELECT MAX(pending) FROM du_record_backfill").fetch_one(&self.pool).await?;
        if pending.is_none() {
            return Ok(());
        }
        let mut after = String::new();
        let mut built = 0u64;
        loop {
            let rows = sqlx::query(
                "SELECT device_id, tags, desired, reported, connection_state FROM devices WHERE device_id > $1 \
                 ORDER BY device_id LIMIT 1000",
            )
            .bind(&after)
            .fetch_all(&self.pool)
            .await?;
            let Some(last) = rows.last() else { break };
            after = last.try_get("device_id")?;
            let mut tx = self.pool.begin().await?;
            for row in &rows {
                let object = |column: &str| -> Result<Map<String, Value>, StoreError> {
                    match serde_json::from_str(&row.try_get::<String, _>(column)?) {
                        Ok(Value::Object(map)) => Ok(map),
                        _ => Err(StoreError::Corrupt(format!("{column} is not a JSON object"))),
                    }
                };
                if let Some(record) = DuRecord::of(&object("tags")?, &object("desired")?, &object("reported")?) {
                    let device_id: String = row.try_get("device_id")?;
                    let connection: String = row.try_get("connection_state")?;
                    upsert(&mut tx, &device_id, &record, &connection, true).await?;
                    built += 1;
                }
            }
            tx.commit().await?;
        }
        sqlx::query("DELETE FROM du_record_backfill").execute(&self.pool).await?;
        if built > 0 {
            tracing::info!(devices = built, "built the Device Update records of existing twins");
        }
        Ok(())
    }
}
