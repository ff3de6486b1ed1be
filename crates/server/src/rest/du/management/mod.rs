//! Management operations (#12–50 of the swagger), one module per resource: `classes` (device
//! classes), `devices`, `compliance`, `groups`, `subgroups`, `deployments` (of groups and of
//! subgroups, their status and device states), `operations` (device operations, diagnostics),
//! and duhub's API `tokens`. Handlers parse the request (typed bodies), ask `du` (status comes
//! typed from `du::status`) and map the answer to the swagger's JSON.

pub(super) mod classes;
pub(super) mod compliance;
pub(super) mod deployments;
pub(super) mod devices;
pub(super) mod groups;
pub(super) mod operations;
pub(super) mod rollouts;
pub(super) mod subgroups;
pub(super) mod tokens;

use axum::extract::Path;
use axum::http::Uri;
use duhub_proto::update_id::UpdateId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::filter::{Filter, OrderBy};
use super::{DuError, DuState, Keyset, query_param};
use crate::du::Snapshot;
use crate::du::model::update_id_json;
use crate::store::{RecordFilter, RecordRow};

type GroupPath = Path<(String, String)>;
type SubgroupPath = Path<(String, String, String)>;
type DeploymentPath = Path<(String, String, String)>;
type SubgroupDeploymentPath = Path<(String, String, String, String)>;

fn parse_filter(uri: &Uri, known: &[&str]) -> Result<Option<Filter>, DuError> {
    let Some(text) = query_param(uri, "filter") else { return Ok(None) };
    let filter = Filter::parse(&text).map_err(|m| DuError::bad_request(m).with_target("filter"))?;
    filter.only(known).map_err(|m| DuError::bad_request(m).with_target("filter"))?;
    Ok(Some(filter))
}

/// A JSON request body as `T`. A body that is not JSON is a 400; JSON of another shape gives
/// `T::default()`, so the handler's own checks name the member that is missing or wrong.
fn json_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, DuError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| DuError::bad_request(format!("the body is not JSON: {e}")))?;
    Ok(serde_json::from_value(value).unwrap_or_default())
}

/// A body member read as `T`, or `None` when it is absent, `null` or of another type (the
/// handler then reports it by name).
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(deserializer: D) -> Result<Option<T>, D::Error> {
    Ok(serde_json::from_value(Value::deserialize(deserializer)?).ok())
}

/// A body member kept as JSON whenever it is present, `null` included.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// An update id member (`pointer` names it in errors): required, `{provider, name, version}`.
fn update_id_of(id: Option<&Value>, pointer: &str) -> Result<UpdateId, DuError> {
    let id = id.ok_or_else(|| DuError::bad_request(format!("{pointer} is required")).with_target(pointer))?;
    serde_json::from_value(id.clone()).map_err(|e| {
        DuError::bad_request(format!("{pointer} must be {{provider, name, version}}: {e}")).with_target(pointer)
    })
}

/// The REST `UpdateInfo` of an update id: the stored update's, or just the id when it is gone.
fn update_info(snapshot: &Snapshot, id: &UpdateId) -> Value {
    snapshot.update(id).map_or_else(|| json!({"updateId": update_id_json(id)}), |u| u.info())
}

/// Sorts `items` by `orderby` (`field [asc|desc]`), `fields` mapping its names to JSON members.
fn order(uri: &Uri, items: &mut [Value], fields: &[(&str, &str)]) -> Result<(), DuError> {
    let Some(text) = query_param(uri, "orderby") else { return Ok(()) };
    let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    let OrderBy { field, descending } =
        OrderBy::parse(&text, &names).map_err(|m| DuError::bad_request(m).with_target("orderby"))?;
    let Some((_, key)) = fields.get(field) else { return Ok(()) };
    items.sort_by(|a, b| {
        let ordering = match (&a[*key], &b[*key]) {
            (Value::Number(x), Value::Number(y)) => {
                x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(std::cmp::Ordering::Equal)
            }
            (x, y) => x.as_str().unwrap_or_default().cmp(y.as_str().unwrap_or_default()),
        };
        if descending { ordering.reverse() } else { ordering }
    });
    Ok(())
}

/// Most records read per query while a keyset page is filled.
const KEYSET_CHUNK: i64 = 1000;

/// One keyset page of the records matching `filter` (or, with `ids`, of those devices) that
/// `keep` accepts, and whether more follow. Reads from the previous page's last key on, in
/// chunks, until the page is full and one more kept record is seen. The first chunk is the
/// page and one more (what an unfiltered page needs); each further chunk is twice the last, up
/// to [`KEYSET_CHUNK`], so that a filter that keeps few records still reads in large steps.
async fn keyset_records(
    state: &DuState,
    keyset: &Keyset,
    filter: &RecordFilter,
    ids: Option<&[String]>,
    keep: impl Fn(&RecordRow) -> bool,
) -> Result<(Vec<RecordRow>, bool), DuError> {
    let mut page = Vec::new();
    let mut after = keyset.after.clone();
    if let Some(ids) = ids {
        let rows = state.du.store().records_of(ids).await?;
        let mut rows = rows.into_iter().filter(|r| after.as_ref().is_none_or(|a| &r.device_id > a)).filter(|r| keep(r));
        page.extend(rows.by_ref().take(keyset.limit));
        return Ok((page, rows.next().is_some()));
    }
    let mut size = i64::try_from(keyset.limit).unwrap_or(KEYSET_CHUNK).saturating_add(1).min(KEYSET_CHUNK);
    loop {
        let chunk = state.du.store().records(filter, after.as_deref(), size).await?;
        let done = i64::try_from(chunk.len()).unwrap_or(i64::MAX) < size;
        size = size.saturating_mul(2).min(KEYSET_CHUNK);
        after = chunk.last().map(|r| r.device_id.clone()).or(after);
        for row in chunk {
            if keep(&row) {
                if page.len() == keyset.limit {
                    return Ok((page, true));
                }
                page.push(row);
            }
        }
        if done {
            return Ok((page, false));
        }
    }
}

/// A group's snapshot and creation time; 404 for an unknown group.
async fn find_group(state: &DuState, id: &str) -> Result<(Snapshot, String), DuError> {
    let snapshot = state.du.snapshot_of(Some(id)).await?;
    let created = state
        .du
        .groups()
        .await?
        .into_iter()
        .find(|(g, _)| g == id)
        .map(|(_, created)| created)
        .ok_or_else(|| DuError::not_found(format!("group {id} not found")))?;
    Ok((snapshot, created))
}
