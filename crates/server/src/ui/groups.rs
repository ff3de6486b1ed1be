//! Groups and device classes: every group with its compliance and subgroups (device class,
//! devices, best update), a group's members page by page, and putting a device into a group
//! (its `ADUGroup` tag).

use std::fmt::Write as _;

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::Session;
use super::html::{Section, compliance_chart, csrf_field, esc, pager, url};
use super::{UiError, UiState, html_page, query};
use crate::du::fleet::DeviceClass;

const MEMBERS_PER_PAGE: usize = 50;

fn class_words(class: &DeviceClass) -> String {
    let props: Vec<String> = class.compat.iter().map(|(k, v)| format!("{k}={v}")).collect();
    props.join(", ")
}

/// The form that puts a device into a group.
pub(super) fn assign_form(csrf: &str, device: &str, group: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/ui/groups/assign\" class=\"inline\">{}\
         <label for=\"assign-device\">Device id</label>\
         <input id=\"assign-device\" name=\"device\" required value=\"{}\">\
         <label for=\"assign-group\">Group</label>\
         <input id=\"assign-group\" name=\"group\" value=\"{}\" placeholder=\"empty: no group ($default)\">\
         <button type=\"submit\">Set group</button></form>",
        csrf_field(csrf),
        esc(device),
        esc(group)
    )
}

/// `GET /ui/groups`.
pub(super) async fn groups(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
) -> Result<Response, UiError> {
    let groups = state.du.group_overviews().await?;
    let mut body = String::from("<section class=\"card\"><h2>Put a device into a group</h2>");
    body.push_str(&assign_form(&session.csrf, "", ""));
    body.push_str("<p class=\"hint\">Sets the device's <code>ADUGroup</code> tag.</p></section>");
    if groups.is_empty() {
        body.push_str("<p>No groups yet: devices with an update agent appear here.</p>");
    }
    for g in &groups {
        let _ = write!(
            body,
            "<section class=\"card\"><h2><a href=\"/ui/groups/{}\">{}</a> <span class=\"muted\">{} devices</span></h2>{}",
            url(&g.id),
            esc(&g.id),
            g.device_count,
            compliance_chart(&g.compliance)
        );
        body.push_str(
            "<table><caption>Subgroups by device class</caption><thead><tr><th scope=\"col\">Device class</th>\
             <th scope=\"col\">Compatibility</th><th scope=\"col\" class=\"num\">Devices</th>\
             <th scope=\"col\" class=\"num\">On latest</th><th scope=\"col\">Best update</th>\
             <th scope=\"col\" class=\"num\">Devices without it</th></tr></thead><tbody>",
        );
        for s in &g.subgroups {
            let best = s.best_update.as_ref().map_or_else(|| "none".to_owned(), |(id, _)| esc(&id.to_string()));
            let _ = write!(
                body,
                "<tr><td><code title=\"{}\">{}</code></td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td>{best}</td><td class=\"num\">{}</td></tr>",
                esc(&s.class.id),
                esc(s.class.id.get(..12).unwrap_or(&s.class.id)),
                esc(&class_words(&s.class)),
                s.device_count,
                s.compliance.on_latest,
                s.best_update.as_ref().map_or(0, |(_, n)| *n)
            );
        }
        body.push_str("</tbody></table>");
        if !g.deployments.is_empty() {
            body.push_str("<p>Deployments: ");
            for (i, d) in g.deployments.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                let _ = write!(body, "{sep}<a href=\"/ui/deployments/{}/{}\">{}</a>", url(&g.id), url(d), esc(d));
            }
            body.push_str("</p>");
        }
        body.push_str("</section>");
    }
    Ok(html_page("Groups and device classes", Section::Groups, &session.csrf, &body))
}

/// `GET /ui/groups/{group}[?after=]`: the group's members.
pub(super) async fn group(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    Path(group): Path<String>,
    uri: Uri,
) -> Result<Response, UiError> {
    let after = query(&uri, "after").unwrap_or_default();
    let (members, more) = state.du.group_members(&group, &after, MEMBERS_PER_PAGE).await?;
    let mut body = format!(
        "<p><a href=\"/ui/groups\">All groups</a> · <a href=\"/ui/deployments?group={}\">Deploy to this group</a></p>\
         <table><caption>Members</caption><thead><tr><th scope=\"col\">Device</th><th scope=\"col\">Device class</th>\
         </tr></thead><tbody>",
        url(&group)
    );
    for (device, class) in &members {
        let _ = write!(
            body,
            "<tr><td><a href=\"/ui/devices/{}\">{}</a></td><td><code>{}</code></td></tr>",
            url(device),
            esc(device),
            esc(class)
        );
    }
    if members.is_empty() {
        body.push_str("<tr><td colspan=\"2\">No devices.</td></tr>");
    }
    body.push_str("</tbody></table>");
    let base = format!("/ui/groups/{}", url(&group));
    let next = more.then(|| members.last().map(|(d, _)| format!("{base}?after={}", url(d)))).flatten();
    body.push_str(&pager(&base, next, after.is_empty()));
    Ok(html_page(&format!("Group {group}"), Section::Groups, &session.csrf, &body))
}

#[derive(Debug, Deserialize)]
pub(super) struct AssignForm {
    #[serde(default)]
    device: String,
    #[serde(default)]
    group: String,
}

/// `POST /ui/groups/assign`: sets a device's `ADUGroup` tag, then shows the device.
pub(super) async fn assign(State(state): State<UiState>, Form(form): Form<AssignForm>) -> Result<Response, UiError> {
    let device = form.device.trim();
    let group = form.group.trim();
    if device.is_empty() {
        return Err(UiError::bad_request("name the device to put into a group"));
    }
    if group.chars().count() > 255 || group.chars().any(char::is_control) {
        return Err(UiError::bad_request("a group name has at most 255 characters and no control characters"));
    }
    state.du.set_device_group(device, group).await?;
    Ok(Redirect::to(&format!("/ui/devices/{}", url(device))).into_response())
}
