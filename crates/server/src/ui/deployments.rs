//! Deployments: the list and the form that creates one (group, update, start time, rollback
//! policy); a deployment's page with per-subgroup progress and the per-device table (paged,
//! filterable by state, result codes in words), cancel and retry per subgroup, and the rollback
//! deployments its policy made. The page's live part is re-rendered on the server and pushed
//! as a server-sent event whenever it changes, so the browser runs no polling loop.

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
use super::html::{Section, badge, csrf_field, esc, notice, progress, url};
use super::updates::{id_value, parse_id_value};
use super::{UiError, UiState, codes, html_page, query};
use crate::du::console::{DeploymentDetail, DeploymentDevice, DevicePage};
use crate::du::deploy::DeviceState;
use crate::du::model::{RollbackPolicy, StoredDeployment, valid_deployment_id};

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
    let live = live_fragment(&session.csrf, &detail, &view);
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

/// The part of a deployment's page that changes: state, per-subgroup progress with cancel and
/// retry, rollbacks, and the device table.
fn live_fragment(csrf: &str, detail: &DeploymentDetail, view: &TableView) -> String {
    let dep = &detail.summary.deployment;
    let (devices, more) = (&detail.devices, detail.more);
    let base = format!("/ui/deployments/{}/{}", url(&dep.group_id), url(&dep.deployment_id));
    let mut out = format!(
        "<p class=\"state\">State: <span id=\"deployment-state\">{}</span></p>{}",
        badge(detail.summary.status.state),
        progress(&detail.summary.counts)
    );
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
                Ok(Some(detail)) => Ok(live_fragment(&live.session.csrf, &detail, &live.view)),
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
