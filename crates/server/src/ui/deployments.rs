//! Deployments: the list and the form that creates one (group, update, start time, rollback
//! policy); a deployment's page with per-subgroup progress and the per-device table (paged,
//! filterable by state, result codes in words), cancel and retry per subgroup, and the rollback
//! deployments its policy made; for a phased rollout, its panel (status, waves with bars, gates,
//! history) with Pause, Resume, Promote and Abort. The page's live part is re-rendered on the
//! server and pushed as a server-sent event whenever it changes, so the browser runs no polling
//! loop.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::Uri;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::Stream;
use serde::Deserialize;

use super::auth::{Session, now_unix};
use super::html::{Section, badge, csrf_field, esc, notice, progress, stacked_bar, url};
use super::updates::{id_value, parse_id_value};
use super::{UiError, UiState, codes, html_page, query};
use crate::du::console::{DeploymentDetail, DeploymentDevice, DevicePage};
use crate::du::deploy::DeviceState;
use crate::du::model::{RollbackPolicy, StoredDeployment, valid_deployment_id};
use crate::du::rollout::{Cause, OnFailure, RolloutControl, RolloutStatus, RolloutView, WaveCounts};

const DEVICES_PER_PAGE: usize = 50;
/// How often a live page's stream looks for changes, at the most.
const LIVE_INTERVAL: Duration = Duration::from_secs(1);
/// A stream waits at least this many times as long as rendering took, so that streams of a
/// large fleet (while status is computed from every twin) take at most a tenth of the server.
const LIVE_BACKOFF: u32 = 10;

/// `GET /ui/deployments[?group=]`.
pub(super) async fn deployments(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    uri: Uri,
) -> Result<Response, UiError> {
    let form = CreateForm { group: query(&uri, "group").unwrap_or_default(), ..CreateForm::default() };
    list_page(&state, &session, &form, None).await
}

async fn list_page(
    state: &UiState,
    session: &Session,
    form: &CreateForm,
    error: Option<&str>,
) -> Result<Response, UiError> {
    let groups = state.du.groups().await?;
    let updates = state.du.deployable_updates().await?;
    let all = state.du.deployment_summaries().await?;
    let mut body = error.map(|e| notice("error", e)).unwrap_or_default();
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Create a deployment</h2><form method=\"post\" action=\"/ui/deployments\" \
         class=\"grid\">{}<label for=\"dep-group\">Group</label><select id=\"dep-group\" name=\"group\" required>",
        csrf_field(&session.csrf)
    );
    for (group, _) in &groups {
        let selected = if *group == form.group { " selected" } else { "" };
        let _ = write!(body, "<option value=\"{}\"{selected}>{}</option>", esc(group), esc(group));
    }
    let default_id = if form.id.is_empty() {
        format!("deployment-{}", time::OffsetDateTime::now_utc().unix_timestamp())
    } else {
        form.id.clone()
    };
    let _ = write!(
        body,
        "</select><label for=\"dep-id\">Deployment id</label>\
         <input id=\"dep-id\" name=\"id\" required maxlength=\"73\" value=\"{}\">\
         <label for=\"dep-update\">Update</label><select id=\"dep-update\" name=\"update\" required>",
        esc(&default_id)
    );
    let options = |selected: &str| {
        let mut out = String::new();
        for u in &updates {
            let value = id_value(&u.update_id);
            let mark = if value == selected { " selected" } else { "" };
            let _ = write!(out, "<option value=\"{}\"{mark}>{}</option>", esc(&value), esc(&u.update_id.to_string()));
        }
        out
    };
    let _ = write!(
        body,
        "{}</select><label for=\"dep-start\">Start time (RFC 3339, empty: now)</label>\
         <input id=\"dep-start\" name=\"start\" value=\"{}\" placeholder=\"2026-01-31T12:00:00Z\">\
         <fieldset><legend>Rollback policy (optional)</legend>\
         <label for=\"dep-rollback\">Roll back to</label><select id=\"dep-rollback\" name=\"rollback_update\">\
         <option value=\"\">no rollback policy</option>{}</select>\
         <label for=\"dep-failed-pct\">when at least this percentage of a subgroup failed</label>\
         <input id=\"dep-failed-pct\" name=\"failed_percentage\" type=\"number\" min=\"0\" max=\"100\" step=\"any\" value=\"{}\">\
         <label for=\"dep-failed-count\">and at least this many devices failed</label>\
         <input id=\"dep-failed-count\" name=\"failed_count\" type=\"number\" min=\"0\" step=\"1\" value=\"{}\">\
         </fieldset><button type=\"submit\">Create deployment</button></form></section>",
        options(&form.update),
        esc(&form.start),
        options(&form.rollback_update),
        esc(&form.failed_percentage),
        esc(&form.failed_count)
    );
    body.push_str("<section class=\"card\"><h2>All deployments</h2>");
    if all.is_empty() {
        body.push_str("<p>No deployments yet.</p>");
    } else {
        body.push_str(&super::overview::deployment_list(&all));
    }
    body.push_str("</section>");
    Ok(html_page("Deployments", Section::Deployments, &session.csrf, &body))
}

/// The create form.
#[derive(Debug, Default, Deserialize)]
pub(super) struct CreateForm {
    #[serde(default)]
    group: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    update: String,
    #[serde(default)]
    start: String,
    #[serde(default)]
    rollback_update: String,
    #[serde(default)]
    failed_percentage: String,
    #[serde(default)]
    failed_count: String,
}

/// The deployment a create form asks for, or what is wrong with it.
fn deployment_of(form: &CreateForm) -> Result<StoredDeployment, String> {
    let id = form.id.trim();
    if !valid_deployment_id(id) {
        return Err(
            "a deployment id has 1 to 73 characters, no upper-case letters and none of & ^ [ ] { } | < > / \\ \""
                .into(),
        );
    }
    if form.group.is_empty() {
        return Err("choose a group".into());
    }
    let update = parse_id_value(&form.update).ok_or("choose an update")?;
    let start = if form.start.trim().is_empty() {
        time::OffsetDateTime::now_utc()
    } else {
        time::OffsetDateTime::parse(form.start.trim(), &time::format_description::well_known::Rfc3339)
            .map_err(|_| "the start time must be an RFC 3339 date and time, such as 2026-01-31T12:00:00Z")?
    };
    let rollback_policy = if form.rollback_update.is_empty() {
        None
    } else {
        let update = parse_id_value(&form.rollback_update).ok_or("choose the rollback update")?;
        let percentage: f64 = form
            .failed_percentage
            .trim()
            .parse()
            .ok()
            .filter(|p| (0.0..=100.0).contains(p))
            .ok_or("the failed percentage of the rollback policy must be 0 to 100")?;
        let count: u64 = form
            .failed_count
            .trim()
            .parse()
            .map_err(|_| "the failed device count of the rollback policy must be a count")?;
        Some(RollbackPolicy { update, devices_failed_percentage: percentage, devices_failed_count: count })
    };
    Ok(StoredDeployment {
        deployment_id: id.to_owned(),
        group_id: form.group.clone(),
        start_date_time: crate::ids::rfc3339(start.to_offset(time::UtcOffset::UTC)),
        update,
        rollback_policy,
        is_cloud_initiated_rollback: false,
        download_security: None,
        created_date_time: crate::ids::now_rfc3339(),
        subgroups: BTreeMap::new(),
        excluded_subgroups: Default::default(),
        target_devices: None,
        target_device_class: None,
        rollout: None,
    })
}

/// `POST /ui/deployments`.
pub(super) async fn create(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    Form(form): Form<CreateForm>,
) -> Result<Response, UiError> {
    let deployment = match deployment_of(&form) {
        Ok(deployment) => deployment,
        Err(message) => return list_page(&state, &session, &form, Some(&message)).await,
    };
    if state.du.deployment(&deployment.group_id, &deployment.deployment_id).await?.is_some() {
        let message = format!("group {} already has a deployment {}", deployment.group_id, deployment.deployment_id);
        return list_page(&state, &session, &form, Some(&message)).await;
    }
    let stored = match state.du.put_deployment(deployment).await {
        Ok(stored) => stored,
        Err(crate::du::ServiceError::Invalid(m) | crate::du::ServiceError::Conflict(m)) => {
            return list_page(&state, &session, &form, Some(&m)).await;
        }
        Err(other) => return Err(other.into()),
    };
    if let Err(error) = state.du.reconcile(false).await {
        tracing::warn!(%error, "reconciling after a deployment change failed");
    }
    Ok(Redirect::to(&format!("/ui/deployments/{}/{}", url(&stored.group_id), url(&stored.deployment_id)))
        .into_response())
}

/// The page's view of the device table.
#[derive(Debug, Clone, Default, PartialEq)]
struct TableView {
    state: Option<DeviceState>,
    after: String,
}

impl TableView {
    fn page(&self) -> DevicePage {
        DevicePage { state: self.state, after: self.after.clone(), limit: DEVICES_PER_PAGE }
    }

    fn of(uri: &Uri) -> Self {
        let state = query(uri, "state").and_then(|s| match s.as_str() {
            "Succeeded" => Some(DeviceState::Succeeded),
            "InProgress" => Some(DeviceState::InProgress),
            "Failed" => Some(DeviceState::Failed),
            "Canceled" => Some(DeviceState::Canceled),
            _ => None,
        });
        Self { state, after: query(uri, "after").unwrap_or_default() }
    }

    fn query(&self, after: &str) -> String {
        let mut parts = Vec::new();
        if let Some(state) = self.state {
            parts.push(format!("state={}", state.as_str()));
        }
        if !after.is_empty() {
            parts.push(format!("after={}", url(after)));
        }
        if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
    }
}

/// `GET /ui/deployments/{group}/{id}[?state=&after=]`.
pub(super) async fn deployment(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    Path((group, id)): Path<(String, String)>,
    uri: Uri,
) -> Result<Response, UiError> {
    let view = TableView::of(&uri);
    let detail = state
        .du
        .deployment_detail(&group, &id, &view.page())
        .await?
        .ok_or_else(|| UiError::not_found(format!("deployment {id} of group {group} not found")))?;
    let rollout = state.du.rollout_view(&group, &id).await?;
    let live = live_fragment(&session.csrf, &detail, rollout.as_ref(), &view);
    let dep = &detail.summary.deployment;
    let base = format!("/ui/deployments/{}/{}", url(&group), url(&id));
    let mut body = format!(
        "<dl class=\"facts\"><dt>Group</dt><dd><a href=\"/ui/groups/{}\">{}</a></dd><dt>Update</dt><dd>{}</dd>\
         <dt>Start</dt><dd>{}</dd><dt>Created</dt><dd>{}</dd><dt>Rollback policy</dt><dd>{}</dd></dl>",
        url(&group),
        esc(&group),
        esc(&dep.update.to_string()),
        esc(&dep.start_date_time),
        esc(&dep.created_date_time),
        match &dep.rollback_policy {
            Some(p) => esc(&format!(
                "roll back to {} when {}% and {} devices of a subgroup failed",
                p.update, p.devices_failed_percentage, p.devices_failed_count
            )),
            None if dep.is_cloud_initiated_rollback => "this is a rollback deployment".into(),
            None => "none".into(),
        }
    );
    let _ = write!(
        body,
        "<form method=\"get\" action=\"{}\" class=\"inline\"><label for=\"state-filter\">Show devices</label>\
         <select id=\"state-filter\" name=\"state\"><option value=\"\">in any state</option>",
        esc(&base)
    );
    for s in [DeviceState::InProgress, DeviceState::Succeeded, DeviceState::Failed, DeviceState::Canceled] {
        let selected = if view.state == Some(s) { " selected" } else { "" };
        let _ = write!(body, "<option value=\"{0}\"{selected}>{0}</option>", s.as_str());
    }
    let _ = write!(
        body,
        "</select><button type=\"submit\">Filter</button></form>\
         <div id=\"live\" data-events=\"{}\" aria-live=\"polite\">{live}</div>",
        esc(&format!("{base}/events{}", view.query(&view.after)))
    );
    Ok(html_page(&format!("Deployment {id}"), Section::Deployments, &session.csrf, &body))
}

/// The part of a deployment's page that changes: state, the rollout's panel, per-subgroup
/// progress with cancel and retry, rollbacks, and the device table.
fn live_fragment(csrf: &str, detail: &DeploymentDetail, rollout: Option<&RolloutView>, view: &TableView) -> String {
    let dep = &detail.summary.deployment;
    let (devices, more) = (&detail.devices, detail.more);
    let base = format!("/ui/deployments/{}/{}", url(&dep.group_id), url(&dep.deployment_id));
    let mut out = format!(
        "<p class=\"state\">State: <span id=\"deployment-state\">{}</span></p>{}",
        badge(detail.summary.status.state),
        progress(&detail.summary.counts)
    );
    if let Some(rollout) = rollout {
        out.push_str(&rollout_panel(csrf, &base, rollout));
    }
    out.push_str("<h2>Subgroups</h2>");
    if detail.summary.status.subgroups.is_empty() {
        out.push_str("<p>The deployment has not reached any device class yet.</p>");
    }
    for (class, status) in &detail.summary.status.subgroups {
        let canceled = dep.subgroups.get(class).is_some_and(|s| s.canceled);
        let _ = write!(
            out,
            "<section class=\"subgroup\" data-class=\"{}\"><h3>Device class <code>{}</code> {}</h3>{}",
            esc(class),
            esc(class),
            badge(status.state),
            progress(&status.counts)
        );
        if !canceled {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"{base}/cancel\" class=\"inline confirm\" \
                 data-confirm=\"Cancel the deployment in this device class?\">{}\
                 <input type=\"hidden\" name=\"class\" value=\"{}\"><button type=\"submit\" class=\"danger\">Cancel\
                 </button></form>",
                csrf_field(csrf),
                esc(class)
            );
            if status.counts.failed > 0 {
                let _ = write!(
                    out,
                    "<form method=\"post\" action=\"{base}/retry\" class=\"inline\">{}\
                     <input type=\"hidden\" name=\"class\" value=\"{}\"><button type=\"submit\">Retry failed devices\
                     </button></form>",
                    csrf_field(csrf),
                    esc(class)
                );
            }
        }
        out.push_str("</section>");
    }
    for (class, rollback) in &detail.rollbacks {
        let _ = write!(
            out,
            "<p class=\"notice\">The rollback policy fired in device class <code>{}</code>: \
             <a href=\"/ui/deployments/{}/{}\">rollback deployment {}</a></p>",
            esc(class),
            url(&dep.group_id),
            url(rollback),
            esc(rollback)
        );
    }
    out.push_str(&device_table(devices));
    let first = format!("{base}{}", view.query(""));
    let next = more.then(|| devices.last().map(|d| format!("{base}{}", view.query(&d.device_id)))).flatten();
    out.push_str(&super::html::pager(&first, next, view.after.is_empty()));
    out
}

/// The rollout panel of a deployment page: status, every wave with its bar, the gates with
/// their numbers, the controls that apply now, and the history.
fn rollout_panel(csrf: &str, base: &str, view: &RolloutView) -> String {
    let policy = &view.rollout.policy;
    let state = &view.rollout.state;
    let status = state.status;
    let mut out = format!(
        "<section class=\"rollout\" aria-labelledby=\"rollout-title\"><h2 id=\"rollout-title\">Phased rollout</h2>\
         <p class=\"state\">Rollout: <span id=\"rollout-status\">{}</span>{}</p>",
        rollout_badge(status),
        match state.wave() {
            Some(current) => format!(" wave {} of {}", current + 1, policy.waves.len()),
            None => format!(" {} waves, not started", policy.waves.len()),
        }
    );
    // The controls that apply now (the server refuses the others anyway).
    let last = state.wave().is_some_and(|w| w + 1 >= policy.waves.len());
    let mut controls: Vec<(RolloutControl, &str, bool)> = Vec::new();
    match status {
        RolloutStatus::Paused => controls.push((RolloutControl::Resume, "Resume", false)),
        RolloutStatus::Aborted | RolloutStatus::Completed => {}
        _ => controls.push((RolloutControl::Pause, "Pause", false)),
    }
    if state.wave().is_some() && !last && !matches!(status, RolloutStatus::Aborted | RolloutStatus::Completed) {
        let label = if status == RolloutStatus::AwaitingApproval { "Approve the next wave" } else { "Promote" };
        controls.push((RolloutControl::Promote, label, false));
    }
    if !matches!(status, RolloutStatus::Aborted | RolloutStatus::Completed) {
        controls.push((RolloutControl::Abort, "Abort", true));
    }
    if !controls.is_empty() {
        out.push_str("<div class=\"controls\">");
        for (control, label, danger) in controls {
            let (class, confirm) = if danger {
                (" confirm", " data-confirm=\"Abort the rollout? Every device not finished is cancelled.\"")
            } else {
                ("", "")
            };
            let _ = write!(
                out,
                "<form method=\"post\" action=\"{base}/rollout\" class=\"inline{class}\"{confirm}>{}\
                 <input type=\"hidden\" name=\"action\" value=\"{}\"><button type=\"submit\"{}>{label}</button></form>",
                csrf_field(csrf),
                control.as_str(),
                if danger { " class=\"danger\"" } else { "" }
            );
        }
        out.push_str("</div>");
    }
    // Gates.
    out.push_str("<dl class=\"facts\">");
    if let Some(current) = state.wave() {
        let wave = view.waves.get(current).map(|w| w.counts).unwrap_or_default();
        if last {
            let _ = write!(
                out,
                "<dt>Success gate</dt><dd>wave {} is the last: it completes when every device finished</dd>",
                current + 1
            );
        } else {
            let needed = ((policy.success_percent / 100.0) * wave.devices as f64).ceil() as u64;
            let verdict = if wave.succeeded >= needed { "passed" } else { "not yet" };
            let _ = write!(
                out,
                "<dt>Success gate</dt><dd>wave {}: {} succeeded of {needed} needed ({}% of {} devices): {verdict}</dd>",
                current + 1,
                wave.succeeded,
                policy.success_percent,
                wave.devices
            );
        }
    }
    let executed = view.totals.executed().saturating_sub(state.accepted_executed);
    let failed = view.totals.failed.saturating_sub(state.accepted_failed);
    let verdict = if executed == 0 || executed < policy.min_executed {
        format!("evaluated once {} finished", policy.min_executed.max(1))
    } else if failed as f64 * 100.0 > policy.max_failure_percent * executed as f64 {
        "tripped".to_owned()
    } else {
        "holding".to_owned()
    };
    let _ = write!(
        out,
        "<dt>Failure gate</dt><dd>{failed} failed of {executed} finished{} (it trips above {}% once {} finished, \
         then: {}): {verdict}</dd>",
        if state.accepted_executed > 0 {
            format!(
                " since an operator accepted {} failed of {} finished",
                state.accepted_failed, state.accepted_executed
            )
        } else {
            String::new()
        },
        policy.max_failure_percent,
        policy.min_executed,
        on_failure_words(policy.on_failure)
    );
    let _ = write!(out, "<dt>Bake</dt><dd>{}</dd>", esc(&seconds_words(policy.bake_seconds)));
    if let Some(timeout) = policy.device_timeout_seconds {
        let _ = write!(out, "<dt>Device timeout</dt><dd>{}</dd>", esc(&seconds_words(timeout)));
    }
    if let Some(rate) = policy.rate {
        let _ = write!(
            out,
            "<dt>Rate</dt><dd>{} devices per minute{}</dd>",
            rate.devices_per_minute,
            if rate.double_per_wave { ", doubling with every wave" } else { "" }
        );
    }
    if let Some(window) = policy.window {
        let open = match view.window_open {
            Some(true) => " (open now)",
            Some(false) => " (closed now)",
            None => "",
        };
        let _ = write!(out, "<dt>Window</dt><dd>{} UTC{open}</dd>", esc(&window.to_string()));
    }
    if policy.approve_waves {
        out.push_str("<dt>Approval</dt><dd>every wave after the first waits for an operator</dd>");
    }
    let _ = write!(out, "<dt>Not yet in a wave</dt><dd>{} devices</dd></dl>", view.unassigned);
    // Waves.
    out.push_str("<ol class=\"waves\">");
    for wave in &view.waves {
        let _ = write!(
            out,
            "<li><h3>Wave {} <span class=\"muted\">({} cumulative)</span>",
            wave.index + 1,
            esc(&wave.size.to_string())
        );
        match &wave.started_at {
            Some(at) => {
                let _ = write!(out, " <span class=\"muted\">started {}</span></h3>", esc(at));
                out.push_str(&wave_bar(&wave.counts));
            }
            None => out.push_str(" <span class=\"muted\">not started</span></h3>"),
        }
        out.push_str("</li>");
    }
    out.push_str("</ol>");
    // History, newest first.
    out.push_str(
        "<table class=\"history\"><caption>Rollout history</caption><thead><tr><th scope=\"col\">Time</th>\
         <th scope=\"col\">Event</th><th scope=\"col\">Wave</th><th scope=\"col\">Cause</th>\
         <th scope=\"col\" class=\"num\">Started</th><th scope=\"col\" class=\"num\">Succeeded</th>\
         <th scope=\"col\" class=\"num\">Failed</th><th scope=\"col\">Detail</th></tr></thead><tbody>",
    );
    for event in state.history.iter().rev() {
        let cause = match &event.cause {
            Cause::Schedule => "schedule".to_owned(),
            Cause::SuccessGate => "success gate".to_owned(),
            Cause::FailureGate => "failure gate".to_owned(),
            Cause::Finished => "every device finished".to_owned(),
            Cause::Operator { token } => format!("operator ({token})"),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&event.time),
            esc(&event.event),
            event.wave.map(|w| (w + 1).to_string()).unwrap_or_default(),
            esc(&cause),
            event.counts.started,
            event.counts.succeeded,
            event.counts.failed,
            esc(&event.detail)
        );
    }
    if state.history.is_empty() {
        out.push_str("<tr><td colspan=\"8\">Nothing happened yet.</td></tr>");
    }
    out.push_str("</tbody></table></section>");
    out
}

/// A rollout status as a badge.
fn rollout_badge(status: RolloutStatus) -> String {
    let class = match status {
        RolloutStatus::Completed => "ok",
        RolloutStatus::Running => "busy",
        RolloutStatus::Paused | RolloutStatus::AwaitingApproval => "warn",
        RolloutStatus::Aborted => "bad",
        RolloutStatus::NotStarted => "off",
    };
    format!("<span class=\"badge {class}\">{}</span>", status.as_str())
}

/// A wave's devices by outcome: a bar (devices not yet started are the empty track) and the
/// counts in words.
fn wave_bar(counts: &WaveCounts) -> String {
    let parts = [
        ("ok", "succeeded", counts.succeeded),
        ("warn", "baking", counts.baking),
        ("bad", "failed", counts.failed),
        ("busy", "in progress", counts.in_progress),
        ("off", "canceled", counts.canceled),
    ];
    format!(
        "{}<p class=\"counts\"><span class=\"k ok\">{} succeeded</span> <span class=\"k warn\">{} baking</span> \
         <span class=\"k bad\">{} failed</span> <span class=\"k busy\">{} in progress</span> \
         <span class=\"k off\">{} canceled</span> of {} devices ({} started)</p>",
        stacked_bar(&parts, counts.devices),
        counts.succeeded,
        counts.baking,
        counts.failed,
        counts.in_progress,
        counts.canceled,
        counts.devices,
        counts.started
    )
}

/// What a tripped failure gate does, in words.
fn on_failure_words(on_failure: OnFailure) -> &'static str {
    match on_failure {
        OnFailure::Pause => "pause",
        OnFailure::Abort => "abort (cancel every device not finished)",
        OnFailure::Rollback => "send the rollback update to the failed devices, and pause",
    }
}

/// `seconds` as `1d 2h`, `30m`, `1m 30s`, `0s`.
fn seconds_words(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".into();
    }
    let mut parts = Vec::new();
    let mut rest = seconds;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if rest >= size {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    parts.join(" ")
}

fn device_table(devices: &[DeploymentDevice]) -> String {
    let mut out = String::from(
        "<table id=\"devices\"><caption>Devices</caption><thead><tr><th scope=\"col\">Device</th>\
         <th scope=\"col\">State</th><th scope=\"col\">Result</th><th scope=\"col\">Extended result</th>\
         <th scope=\"col\">Details</th><th scope=\"col\" class=\"num\">Retries</th></tr></thead><tbody>",
    );
    for d in devices {
        let result = d
            .result_code
            .map(|r| format!("{} <span class=\"muted\">({})</span>", esc(&codes::result_words(r)), r.0))
            .unwrap_or_default();
        let extended = d
            .extended_result_code
            .filter(|c| !c.is_none())
            .map(|c| format!("{} <span class=\"muted\">(0x{c})</span>", esc(&codes::extended_words(c))))
            .unwrap_or_default();
        let moved = if d.moved_on { " <span class=\"muted\">(moved on to a newer deployment)</span>" } else { "" };
        let _ = write!(
            out,
            "<tr data-device=\"{}\"><td><a href=\"/ui/devices/{}\">{}</a></td><td>{}{moved}</td><td>{result}</td>\
             <td class=\"erc\">{extended}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            esc(&d.device_id),
            url(&d.device_id),
            esc(&d.device_id),
            badge(d.state.as_str()),
            esc(d.result_details.as_deref().unwrap_or("")),
            d.retry_count
        );
    }
    if devices.is_empty() {
        out.push_str("<tr><td colspan=\"6\">No devices.</td></tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// `GET /ui/deployments/{group}/{id}/events[?state=&after=]`: the live fragment as an `update`
/// event whenever it changes; the stream ends when the session does.
pub(super) async fn events(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    Path((group, id)): Path<(String, String)>,
    uri: Uri,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, UiError> {
    let view = TableView::of(&uri);
    let exists = DevicePage { limit: 0, ..view.page() };
    if state.du.deployment_detail(&group, &id, &exists).await?.is_none() {
        return Err(UiError::not_found(format!("deployment {id} of group {group} not found")));
    }
    let start = Live { state, session, group, id, view, last: String::new(), first: true, cost: Duration::ZERO };
    let stream = futures_util::stream::unfold(start, |mut live| async move {
        loop {
            if !live.first {
                tokio::time::sleep(LIVE_INTERVAL.max(live.cost * LIVE_BACKOFF)).await;
            }
            live.first = false;
            let started = tokio::time::Instant::now();
            match live.state.du.store().ui_session(&live.session.id, now_unix()).await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(%error, "checking a dashboard session failed");
                    continue;
                }
            }
            let fragment = match live.state.du.deployment_detail(&live.group, &live.id, &live.view.page()).await {
                Ok(Some(detail)) => match live.state.du.rollout_view(&live.group, &live.id).await {
                    Ok(rollout) => Ok(live_fragment(&live.session.csrf, &detail, rollout.as_ref(), &live.view)),
                    Err(error) => Err(error),
                },
                Ok(None) => return None,
                Err(error) => Err(error),
            };
            live.cost = started.elapsed();
            match fragment {
                Ok(fragment) if fragment != live.last => {
                    live.last.clone_from(&fragment);
                    return Some((Ok(Event::default().event("update").data(fragment)), live));
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(?error, "rendering a live deployment view failed"),
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

struct Live {
    state: UiState,
    session: Session,
    group: String,
    id: String,
    view: TableView,
    last: String,
    first: bool,
    /// How long the last rendering took.
    cost: Duration,
}

#[derive(Debug, Deserialize)]
pub(super) struct ClassForm {
    #[serde(default)]
    class: String,
}

/// `POST /ui/deployments/{group}/{id}/cancel`.
pub(super) async fn cancel(
    State(state): State<UiState>,
    Path((group, id)): Path<(String, String)>,
    Form(form): Form<ClassForm>,
) -> Result<Response, UiError> {
    state.du.cancel(&group, &form.class, &id).await?;
    Ok(Redirect::to(&format!("/ui/deployments/{}/{}", url(&group), url(&id))).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct RolloutForm {
    #[serde(default)]
    action: String,
}

/// `POST /ui/deployments/{group}/{id}/rollout` (`action` = pause, resume, promote or abort):
/// recorded in the rollout's history with the name of the session's API token.
pub(super) async fn rollout_control(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    Path((group, id)): Path<(String, String)>,
    Form(form): Form<RolloutForm>,
) -> Result<Response, UiError> {
    let control: RolloutControl = form.action.parse().map_err(UiError::bad_request)?;
    let token = if session.token_name.is_empty() { "dashboard" } else { session.token_name.as_str() };
    state.du.control_rollout(&group, &id, control, token).await?;
    Ok(Redirect::to(&format!("/ui/deployments/{}/{}", url(&group), url(&id))).into_response())
}

/// `POST /ui/deployments/{group}/{id}/retry`.
pub(super) async fn retry(
    State(state): State<UiState>,
    Path((group, id)): Path<(String, String)>,
    Form(form): Form<ClassForm>,
) -> Result<Response, UiError> {
    state.du.retry(&group, &form.class, &id).await?;
    Ok(Redirect::to(&format!("/ui/deployments/{}/{}", url(&group), url(&id))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> CreateForm {
        let text = serde_urlencoded::to_string(pairs).expect("form");
        serde_urlencoded::from_str(&text).expect("form")
    }

    #[test]
    fn a_create_form_becomes_a_deployment() {
        let update = id_value(&duhub_proto::update_id::UpdateId::new("c", "n", "1.0"));
        let d = deployment_of(&form(&[
            ("group", "g"),
            ("id", "d1"),
            ("update", &update),
            ("start", "2026-01-31T13:00:00+01:00"),
        ]))
        .expect("valid");
        assert_eq!(d.start_date_time, "2026-01-31T12:00:00Z");
        assert_eq!(d.update.version, "1.0");
        assert!(d.rollback_policy.is_none());
        let d = deployment_of(&form(&[
            ("group", "g"),
            ("id", "d1"),
            ("update", &update),
            ("rollback_update", &update),
            ("failed_percentage", "5"),
            ("failed_count", "2"),
        ]))
        .expect("valid");
        assert_eq!(d.rollback_policy.map(|p| p.devices_failed_count), Some(2));
    }

    fn rollout_view(
        status: RolloutStatus,
        waves_started: usize,
        history: Vec<crate::du::rollout::RolloutEvent>,
    ) -> RolloutView {
        use crate::du::rollout::{Rollout, RolloutPolicy, RolloutState, WaveSize, WaveView};
        let policy: RolloutPolicy = serde_json::from_value(serde_json::json!({
            "waves": ["10%", "50%", "100%"], "bakeSeconds": 1800, "successPercent": 90, "maxFailurePercent": 10,
            "minExecuted": 2, "window": "02:00-05:00", "seed": 1
        }))
        .expect("policy");
        let counts = WaveCounts { devices: 4, started: 4, succeeded: 2, baking: 1, failed: 1, ..WaveCounts::default() };
        let waves = ["10%", "50%", "100%"]
            .iter()
            .enumerate()
            .map(|(index, size)| WaveView {
                index,
                size: size.parse::<WaveSize>().expect("size"),
                started_at: (index < waves_started).then(|| format!("2026-12-07T0{index}:00:00Z")),
                counts: if index < waves_started { counts } else { WaveCounts::default() },
            })
            .collect();
        let state = RolloutState {
            status,
            wave_started: (0..waves_started).map(|i| format!("2026-12-07T0{i}:00:00Z")).collect(),
            history,
            ..RolloutState::default()
        };
        RolloutView {
            group_id: "g".into(),
            deployment_id: "d".into(),
            rollout: Rollout { policy, state },
            waves,
            totals: counts,
            unassigned: 6,
            window_open: Some(false),
        }
    }

    #[test]
    fn a_rollout_panel_shows_waves_gates_history_and_the_controls_that_apply() {
        let event = crate::du::rollout::RolloutEvent {
            time: "2026-12-07T01:00:00Z".into(),
            event: "paused".into(),
            wave: Some(0),
            cause: Cause::Operator { token: "<alice>".into() },
            counts: WaveCounts::default(),
            detail: "paused by an operator".into(),
        };
        let html = rollout_panel("c", "/ui/deployments/g/d", &rollout_view(RolloutStatus::Paused, 1, vec![event]));
        assert!(html.contains("<span class=\"badge warn\">Paused</span></span> wave 1 of 3"), "{html}");
        assert!(html.contains("name=\"action\" value=\"resume\""), "{html}");
        assert!(!html.contains("value=\"pause\""), "{html}");
        assert!(html.contains("value=\"promote\"") && html.contains("value=\"abort\""), "{html}");
        assert!(html.contains("action=\"/ui/deployments/g/d/rollout\" class=\"inline confirm\""), "{html}");
        assert!(html.contains("name=\"csrf\" value=\"c\""), "{html}");
        assert!(html.contains("wave 1: 2 succeeded of 4 needed (90% of 4 devices): not yet"), "{html}");
        assert!(html.contains("1 failed of 3 finished"), "{html}");
        assert!(html.contains("tripped"), "1 of 3 is above 10% once 2 finished: {html}");
        assert!(html.contains("02:00-05:00 UTC (closed now)"), "{html}");
        assert!(
            html.contains("aria-label=\"succeeded 2, baking 1, failed 1, in progress 0, canceled 0 of 4\""),
            "{html}"
        );
        assert!(
            html.contains("Wave 2 <span class=\"muted\">(50% cumulative)</span> <span class=\"muted\">not started"),
            "{html}"
        );
        assert!(html.contains("operator (&lt;alice&gt;)"), "escaped: {html}");
        assert!(!html.contains("style="), "no inline style under the CSP: {html}");
        // In the last wave nothing is promoted; a completed rollout has no controls.
        let html = rollout_panel("c", "/b", &rollout_view(RolloutStatus::Running, 3, Vec::new()));
        assert!(html.contains("value=\"pause\"") && !html.contains("value=\"promote\""), "{html}");
        assert!(html.contains("wave 3 is the last"), "{html}");
        let html = rollout_panel("c", "/b", &rollout_view(RolloutStatus::Completed, 3, Vec::new()));
        assert!(!html.contains("<form"), "{html}");
        let html = rollout_panel("c", "/b", &rollout_view(RolloutStatus::AwaitingApproval, 1, Vec::new()));
        assert!(html.contains("Approve the next wave"), "{html}");
    }

    #[test]
    fn bad_create_forms_say_what_is_wrong() {
        let update = id_value(&duhub_proto::update_id::UpdateId::new("c", "n", "1.0"));
        let check = |pairs: &[(&str, &str)], expect: &str| {
            let error = deployment_of(&form(pairs)).expect_err("invalid");
            assert!(error.contains(expect), "{error}");
        };
        check(&[("group", "g"), ("id", "Upper"), ("update", &update)], "deployment id");
        check(&[("group", ""), ("id", "d"), ("update", &update)], "group");
        check(&[("group", "g"), ("id", "d"), ("update", "x")], "update");
        check(&[("group", "g"), ("id", "d"), ("update", &update), ("start", "tomorrow")], "RFC 3339");
        check(
            &[
                ("group", "g"),
                ("id", "d"),
                ("update", &update),
                ("rollback_update", &update),
                ("failed_percentage", "101"),
            ],
            "percentage",
        );
        check(
            &[
                ("group", "g"),
                ("id", "d"),
                ("update", &update),
                ("rollback_update", &update),
                ("failed_percentage", "1"),
                ("failed_count", "-1"),
            ],
            "count",
        );
    }
}
