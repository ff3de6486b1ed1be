//! Deployments against the fleet, as pure functions: which deployment governs a device class
//! subgroup, what each device should be told (desired `deviceUpdate.service` workflow), what
//! state each device is in, subgroup and deployment status, and when a rollback policy fires.
//!
//! Status rules (the Azure service documents none; see `protocol-reference.md` §10.6): with
//! workflow id W written to a device — it reported W and state 255: Failed; W and 6:
//! InProgress; W and 0 with result -1: Canceled; its installed update is the deployed one:
//! Succeeded (kept even if an agent re-reports 6 for W after success, defect 6.4-1); nothing
//! reported for W yet: InProgress (or Canceled once the subgroup is cancelled).

use std::collections::BTreeMap;

use duhub_proto::result::ResultCode;
use duhub_proto::twin::{AgentState, UpdateAction};
use serde::Serialize;

use duhub_proto::twin::Workflow;
use duhub_proto::update_id::UpdateId;

use super::model::{StoredDeployment, SubgroupState};

/// What a device reports that its state in a deployment is derived from: a device read from
/// its twin (`fleet::DeviceView`) or the facts its record stores (`store::Facts`).
pub trait Reports {
    /// The reported workflow id.
    fn reported_workflow(&self) -> Option<&str>;
    /// The reported agent state.
    fn reported_state(&self) -> Option<AgentState>;
    /// The reported overall result code.
    fn reported_result(&self) -> Option<ResultCode>;
    /// The installed update.
    fn installed(&self) -> Option<UpdateId>;
}

/// A device's state in a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DeviceState {
    /// Installed the update.
    Succeeded,
    /// Not finished (or not started).
    InProgress,
    /// Cancelled.
    Canceled,
    /// Failed.
    Failed,
}

impl DeviceState {
    /// The REST name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "Succeeded",
            Self::InProgress => "InProgress",
            Self::Canceled => "Canceled",
            Self::Failed => "Failed",
        }
    }
}

/// The workflow a device should have in its desired `deviceUpdate.service`.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment<'a> {
    /// The deployment.
    pub deployment: &'a StoredDeployment,
    /// Its subgroup state for the device's class.
    pub subgroup: &'a SubgroupState,
    /// Process the deployment, or cancel it.
    pub action: UpdateAction,
    /// `retryTimestamp` for this device.
    pub retry_timestamp: Option<&'a str>,
}

impl Assignment<'_> {
    /// Whether the device's desired workflow already says this.
    pub fn is_written(&self, desired: &Workflow) -> bool {
        desired.action == Some(self.action)
            && desired.id.as_deref() == Some(self.subgroup.workflow_id.as_str())
            && desired.retry_timestamp.as_deref() == self.retry_timestamp
    }
}

/// The deployment that governs devices of `class` in `group` at `now`: the latest-starting
/// (then latest-created) deployment of the group that has started, is not a cloud-initiated
/// rollback, and whose update `fits` the class.
pub fn governing<'a>(
    deployments: &'a [StoredDeployment],
    group: &str,
    class: &str,
    now: &str,
    fits: impl Fn(&StoredDeployment) -> bool,
) -> Option<&'a StoredDeployment> {
    deployments
        .iter()
        .filter(|d| d.group_id == group && !d.is_cloud_initiated_rollback && has_started(&d.start_date_time, now))
        .filter(|d| !d.excluded_subgroups.contains(class))
        .filter(|d| d.subgroups.contains_key(class) || fits(d))
        .max_by_key(|d| (instant(&d.start_date_time), instant(&d.created_date_time)))
}

/// Whether a deployment starting at `start` has started at `now` (both RFC 3339).
pub fn has_started(start: &str, now: &str) -> bool {
    instant(start) <= instant(now)
}

/// How long from `now` until `start` (both RFC 3339), if `start` is still to come.
pub fn time_until(start: &str, now: &str) -> Option<std::time::Duration> {
    let nanos = instant(start)?.checked_sub(instant(now)?)?;
    let nanos = u64::try_from(nanos).ok().filter(|n| *n > 0)?;
    Some(std::time::Duration::from_nanos(nanos))
}

/// An RFC 3339 time as nanoseconds since 1970, for comparing: times are written with only the
/// fractional digits they need (`...:15Z`, `...:15.25Z`), so their text does not sort (`.` <
/// `Z`). Unreadable text sorts first.
fn instant(text: &str) -> Option<i128> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp_nanos)
}

/// What device `device_id` of class `class_id` should be told, given the deployment governing
/// its subgroup: the rollback deployment's workflow when the device is one of its targets, else
/// the governing one's. `device_id` `None` stands for any device that is neither a rollback
/// target nor retried (what whole buckets of devices are counted as).
pub fn assignment<'a>(
    governing: &'a StoredDeployment,
    deployments: &'a [StoredDeployment],
    class_id: &str,
    device_id: Option<&str>,
) -> Option<Assignment<'a>> {
    let subgroup = governing.subgroups.get(class_id)?;
    if let Some(device_id) = device_id
        && let Some(rollback) = rollback_of(governing, subgroup, deployments)
        && rollback.target_devices.as_ref().is_some_and(|t| t.iter().any(|d| d == device_id))
        && let Some(rollback_subgroup) = rollback.subgroups.get(class_id)
    {
        return Some(for_subgroup(rollback, rollback_subgroup, Some(device_id)));
    }
    Some(for_subgroup(governing, subgroup, device_id))
}

/// The rollback deployment a subgroup of `governing` started, if it exists.
pub fn rollback_of<'a>(
    governing: &StoredDeployment,
    subgroup: &SubgroupState,
    deployments: &'a [StoredDeployment],
) -> Option<&'a StoredDeployment> {
    let rollback_id = subgroup.rollback_deployment.as_ref()?;
    deployments.iter().find(|d| d.group_id == governing.group_id && &d.deployment_id == rollback_id)
}

fn for_subgroup<'a>(
    deployment: &'a StoredDeployment,
    subgroup: &'a SubgroupState,
    device_id: Option<&str>,
) -> Assignment<'a> {
    let retried = device_id.is_some_and(|id| subgroup.retry_devices.iter().any(|d| d == id));
    Assignment {
        deployment,
        subgroup,
        action: if subgroup.canceled { UpdateAction::Cancel } else { UpdateAction::ProcessDeployment },
        retry_timestamp: if retried { subgroup.retry_timestamp.as_deref() } else { None },
    }
}

/// The state of `device` in `deployment` (whose subgroup state for the device's class is
/// `subgroup`).
pub fn device_state(deployment: &StoredDeployment, subgroup: &SubgroupState, device: &impl Reports) -> DeviceState {
    let workflow = subgroup.workflow_id.as_str();
    let reported_here = device.reported_workflow() == Some(workflow);
    let state = device.reported_state();
    let installed_here = device.installed().is_some_and(|installed| {
        installed.provider.eq_ignore_ascii_case(&deployment.update.provider)
            && installed.name.eq_ignore_ascii_case(&deployment.update.name)
            && installed.version == deployment.update.version
    });
    if reported_here && state == Some(AgentState::Failed) {
        return DeviceState::Failed;
    }
    if installed_here {
        return DeviceState::Succeeded;
    }
    if reported_here {
        match (state, device.reported_result()) {
            (Some(AgentState::DeploymentInProgress), _) => return DeviceState::InProgress,
            (Some(AgentState::Idle), Some(ResultCode::FAILURE_CANCELLED)) => return DeviceState::Canceled,
            (Some(AgentState::Idle), Some(code)) if code.0 > 0 && code != ResultCode::IDLE && !subgroup.canceled => {
                return DeviceState::Failed;
            }
            _ => {}
        }
    }
    if subgroup.canceled { DeviceState::Canceled } else { DeviceState::InProgress }
}

/// Device counts of a subgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Devices.
    pub total: u64,
    /// In progress.
    pub in_progress: u64,
    /// Failed.
    pub failed: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Cancelled.
    pub canceled: u64,
}

impl Counts {
    /// Counts `states`.
    pub fn of(states: impl IntoIterator<Item = DeviceState>) -> Self {
        let mut counts = Self::default();
        for state in states {
            counts.add(state, 1);
        }
        counts
    }

    /// Adds `devices` devices in `state`.
    pub fn add(&mut self, state: DeviceState, devices: u64) {
        self.total += devices;
        match state {
            DeviceState::InProgress => self.in_progress += devices,
            DeviceState::Failed => self.failed += devices,
            DeviceState::Succeeded => self.succeeded += devices,
            DeviceState::Canceled => self.canceled += devices,
        }
    }
}

/// The state name of a subgroup of a deployment (`Active`, `Failed`, `Inactive`, `Canceled`).
pub fn subgroup_state(subgroup: &SubgroupState, governs: bool) -> &'static str {
    if subgroup.canceled {
        "Canceled"
    } else if subgroup.rollback_deployment.is_some() {
        "Failed"
    } else if !governs {
        "Inactive"
    } else {
        "Active"
    }
}

/// The state name of a whole deployment from its subgroups' state names.
pub fn deployment_state(subgroups: &BTreeMap<String, (&'static str, Counts)>, started: bool) -> &'static str {
    if subgroups.is_empty() {
        return if started { "Active" } else { "Inactive" };
    }
    let all = |name: &str| subgroups.values().all(|(state, _)| *state == name);
    if all("Canceled") {
        "Canceled"
    } else if all("Failed") {
        "Failed"
    } else if all("Inactive") {
        "Inactive"
    } else if subgroups.values().any(|(state, counts)| *state == "Failed" || counts.failed > 0) {
        "ActiveWithSubgroupFailures"
    } else {
        "Active"
    }
}

/// Whether a rollback policy fires: at least `count` failed devices and at least `percentage`
/// percent of the subgroup failed.
pub fn rollback_due(counts: Counts, count: u64, percentage: f64) -> bool {
    if counts.total == 0 || counts.failed == 0 {
        return false;
    }
    #[allow(clippy::cast_precision_loss)] // device counts are far below 2^52
    let failed_percentage = counts.failed as f64 * 100.0 / counts.total as f64;
    counts.failed >= count && failed_percentage >= percentage
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use duhub_proto::update_id::UpdateId;
    use serde_json::json;

    use super::*;
    use crate::du::fleet::DeviceView;
    use crate::store::FleetRow;

    fn deployment(id: &str, start: &str) -> StoredDeployment {
        StoredDeployment {
            deployment_id: id.into(),
            group_id: "g".into(),
            start_date_time: start.into(),
            update: UpdateId::new("contoso", "toaster", "2.0"),
            rollback_policy: None,
            is_cloud_initiated_rollback: false,
            download_security: None,
            created_date_time: start.into(),
            subgroups: BTreeMap::new(),
            excluded_subgroups: Default::default(),
            target_devices: None,
            target_device_class: None,
            rollout: None,
        }
    }

    fn subgroup(workflow: &str) -> SubgroupState {
        SubgroupState {
            workflow_id: workflow.into(),
            started: "2026-01-01T00:00:00Z".into(),
            canceled: false,
            retry_timestamp: None,
            retry_count: 0,
            retry_devices: Vec::new(),
            rollback_deployment: None,
        }
    }

    fn device(agent: serde_json::Value) -> DeviceView {
        let mut agent = agent;
        agent["deviceProperties"] = json!({"manufacturer": "contoso", "model": "toaster"});
        let row = FleetRow {
            device_id: "d".into(),
            tags: json!({"ADUGroup": "g"}),
            desired: json!({}),
            reported: json!({"deviceUpdate": {"__t": "c", "agent": agent}}),
            model_id: None,
        };
        DeviceView::from_row(&row).unwrap()
    }

    #[test]
    fn device_states_follow_the_reports() {
        let d = deployment("a", "2026-01-01T00:00:00Z");
        let s = subgroup("w1");
        let installed = "{\"provider\":\"contoso\",\"name\":\"toaster\",\"version\":\"2.0\"}";
        let cases = [
            (json!({}), DeviceState::InProgress),
            (json!({"state": 6, "workflow": {"action": 3, "id": "w1"}}), DeviceState::InProgress),
            (
                json!({"state": 255, "workflow": {"action": 3, "id": "w1"}, "lastInstallResult": {"resultCode": 0}}),
                DeviceState::Failed,
            ),
            (
                json!({"state": 0, "workflow": {"action": 3, "id": "w1"}, "lastInstallResult": {"resultCode": 700}, "installedUpdateId": installed}),
                DeviceState::Succeeded,
            ),
            // Defect 6.4-1 of agent 1.1.0: "in progress" again after success stays Succeeded.
            (
                json!({"state": 6, "workflow": {"action": 3, "id": "w1"}, "installedUpdateId": installed}),
                DeviceState::Succeeded,
            ),
            (
                json!({"state": 0, "workflow": {"action": 255, "id": "w1"}, "lastInstallResult": {"resultCode": -1}}),
                DeviceState::Canceled,
            ),
            // A failure of another workflow is not this deployment's.
            (json!({"state": 255, "workflow": {"action": 3, "id": "other"}}), DeviceState::InProgress),
        ];
        for (agent, expected) in cases {
            assert_eq!(device_state(&d, &s, &device(agent.clone())), expected, "{agent}");
        }
        let canceled = SubgroupState { canceled: true, ..subgroup("w1") };
        assert_eq!(device_state(&d, &canceled, &device(json!({}))), DeviceState::Canceled);
    }

    #[test]
    fn the_latest_started_deployment_governs() {
        let deployments = vec![
            deployment("old", "2026-01-01T00:00:00Z"),
            deployment("new", "2026-02-01T00:00:00Z"),
            deployment("future", "2027-01-01T00:00:00Z"),
        ];
        let now = "2026-06-01T00:00:00Z";
        let chosen = governing(&deployments, "g", "c", now, |_| true).unwrap();
        assert_eq!(chosen.deployment_id, "new");
        assert!(governing(&deployments, "g", "c", now, |_| false).is_none(), "nothing fits the class");
        assert!(governing(&deployments, "other", "c", now, |_| true).is_none());
    }

    /// Found with issue 10: a deployment created at 18:07:15.4 (start written as whole seconds)
    /// waited for the next periodic pass, because `...:15Z` sorted after `...:15.4Z` as text.
    #[test]
    fn start_times_compare_as_times_not_text() {
        let deployments = vec![deployment("now", "2026-12-06T18:07:15Z")];
        let chosen = governing(&deployments, "g", "c", "2026-12-06T18:07:15.400000001Z", |_| true);
        assert_eq!(chosen.map(|d| d.deployment_id.as_str()), Some("now"));
        assert!(governing(&deployments, "g", "c", "2026-12-06T18:07:14.999Z", |_| true).is_none());
        assert!(has_started("2026-12-06T18:07:15Z", "2026-12-06T18:07:15Z"));
        assert!(has_started("2026-12-06T19:07:15+01:00", "2026-12-06T18:07:15.5Z"));
        // The later start governs, whatever its digits.
        let deployments =
            vec![deployment("later", "2026-12-06T18:07:15.5Z"), deployment("earlier", "2026-12-06T18:07:15Z")];
        let chosen = governing(&deployments, "g", "c", "2026-12-06T18:08:00Z", |_| true);
        assert_eq!(chosen.map(|d| d.deployment_id.as_str()), Some("later"));
    }

    #[test]
    fn rollback_needs_both_thresholds() {
        let counts = Counts { total: 10, failed: 3, ..Counts::default() };
        assert!(rollback_due(counts, 3, 30.0));
        assert!(!rollback_due(counts, 4, 10.0), "count not reached");
        assert!(!rollback_due(counts, 1, 31.0), "percentage not reached");
        assert!(!rollback_due(Counts::default(), 0, 0.0), "no failures, no rollback");
    }

    #[test]
    fn deployment_state_aggregates_subgroups() {
        let c = Counts::default();
        let failed = Counts { total: 1, failed: 1, ..Counts::default() };
        let map = |items: &[(&str, &'static str, Counts)]| {
            items.iter().map(|(k, s, c)| ((*k).to_owned(), (*s, *c))).collect::<BTreeMap<_, _>>()
        };
        assert_eq!(deployment_state(&map(&[("a", "Canceled", c), ("b", "Canceled", c)]), true), "Canceled");
        assert_eq!(
            deployment_state(&map(&[("a", "Active", failed), ("b", "Active", c)]), true),
            "ActiveWithSubgroupFailures"
        );
        assert_eq!(deployment_state(&map(&[("a", "Active", c)]), true), "Active");
        assert_eq!(deployment_state(&BTreeMap::new(), false), "Inactive");
    }
}
