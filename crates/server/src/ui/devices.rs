//! Devices: the list searched by device id prefix, page by page (keyset, never an offset), and
//! a device's page: connection, group (settable), class, what its agent reports, its
//! `deviceInformation`, its last result in words, and the timeline of its deployments.

use std::fmt::Write as _;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use serde_json::Value;

use super::auth::Session;
use super::html::{Section, badge, esc, pager, url};
use super::{UiError, UiState, codes, html_page, query};

const DEVICES_PER_PAGE: usize = 50;

/// `GET /ui/devices[?q=&after=]`.
pub(super) async fn devices(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    uri: Uri,
) -> Result<Response, UiError> {
    let prefix = query(&uri, "q").unwrap_or_default();
    let after = query(&uri, "after").unwrap_or_default();
    let (rows, more) = state.du.device_rows(prefix.trim(), &after, DEVICES_PER_PAGE).await?;
    let mut body = format!(
        "<form method=\"get\" action=\"/ui/devices\" class=\"inline\" role=\"search\">\
         <label for=\"device-search\">Device id starts with</label>\
         <input id=\"device-search\" name=\"q\" type=\"search\" value=\"{}\">\
         <button type=\"submit\">Search</button></form>\
         <table><caption>Devices</caption><thead><tr><th scope=\"col\">Device</th><th scope=\"col\">Connection</th>\
         <th scope=\"col\">Last activity</th><th scope=\"col\">Group</th><th scope=\"col\">Installed update</th>\
         <th scope=\"col\">Agent</th></tr></thead><tbody>",
        esc(&prefix)
    );
    for r in &rows {
        let _ = write!(
            body,
            "<tr><td><a href=\"/ui/devices/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            url(&r.device_id),
            esc(&r.device_id),
            badge(&r.connection_state),
            esc(r.last_activity.as_deref().unwrap_or("never")),
            esc(r.group.as_deref().unwrap_or("")),
            esc(&r.installed.as_ref().map(ToString::to_string).unwrap_or_default()),
            r.agent_state.as_deref().map(badge).unwrap_or_else(|| "no update agent".into())
        );
    }
    if rows.is_empty() {
        body.push_str("<tr><td colspan=\"6\">No devices match.</td></tr>");
    }
    body.push_str("</tbody></table>");
    let search = if prefix.is_empty() { String::new() } else { format!("q={}&", url(&prefix)) };
    let first = format!("/ui/devices?{search}");
    let next = more.then(|| rows.last().map(|r| format!("/ui/devices?{search}after={}", url(&r.device_id)))).flatten();
    body.push_str(&pager(&first, next, after.is_empty()));
    Ok(html_page("Devices", Section::Devices, &session.csrf, &body))
}

/// JSON as a definition list (objects nest; arrays and scalars are shown as compact JSON).
fn facts(value: &Value) -> String {
    let Value::Object(map) = value else {
        return if value.is_null() {
            "<p>Not reported.</p>".into()
        } else {
            format!("<code>{}</code>", esc(&value.to_string()))
        };
    };
    let mut out = String::from("<dl class=\"facts\">");
    for (key, value) in map {
        let shown = match value {
            Value::Object(_) => facts(value),
            Value::String(s) => esc(s),
            other => format!("<code>{}</code>", esc(&other.to_string())),
        };
        let _ = write!(out, "<dt>{}</dt><dd>{shown}</dd>", esc(key));
    }
    out.push_str("</dl>");
    out
}

/// `GET /ui/devices/{id}`.
pub(super) async fn device(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let d = state.du.device_detail(&id).await?.ok_or_else(|| UiError::not_found(format!("device {id} not found")))?;
    let mut body = format!(
        "<dl class=\"facts\"><dt>Connection</dt><dd>{} <span class=\"muted\">since {}</span></dd>\
         <dt>Last activity</dt><dd>{}</dd><dt>Group</dt><dd>{}</dd><dt>Device class</dt><dd>{}</dd>\
         <dt>On the latest update</dt><dd>{}</dd></dl>",
        badge(&d.connection_state),
        esc(d.connection_state_updated.as_deref().unwrap_or("never")),
        esc(d.last_activity.as_deref().unwrap_or("never")),
        d.group.as_deref().map_or_else(
            || "no update agent".into(),
            |g| format!("<a href=\"/ui/groups/{}\" id=\"device-group\">{}</a>", url(g), esc(g))
        ),
        d.class.as_ref().map_or_else(
            || "none".into(),
            |c| {
                let compat: Vec<String> = c.compat.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("<code>{}</code> ({})", esc(&c.id), esc(&compat.join(", ")))
            }
        ),
        match d.on_latest {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        }
    );
    let group_value = d.group.as_deref().filter(|g| *g != crate::du::fleet::DEFAULT_GROUP).unwrap_or("");
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Group</h2>{}</section>",
        super::groups::assign_form(&session.csrf, &d.device_id, group_value)
    );
    body.push_str("<section class=\"card\"><h2>Last install result</h2>");
    let last = d.agent.get("lastInstallResult");
    let code = last.and_then(|r| r.get("resultCode")).and_then(Value::as_i64).and_then(|c| i32::try_from(c).ok());
    match code {
        Some(code) => {
            let result: Option<duhub_proto::twin::LastInstallResult> =
                last.and_then(|l| serde_json::from_value(l.clone()).ok());
            let extended = result.as_ref().and_then(|r| r.extended_result_code()).unwrap_or_default();
            let _ = write!(
                body,
                "<p id=\"last-result\">{} ({code}); {} (0x{extended}){}</p>",
                esc(&codes::result_words(duhub_proto::result::ResultCode(code))),
                esc(&codes::extended_words(extended)),
                result
                    .and_then(|r| r.result_details)
                    .filter(|s| !s.is_empty())
                    .map(|s| format!(": {}", esc(&s)))
                    .unwrap_or_default()
            );
        }
        None => body.push_str("<p>None reported.</p>"),
    }
    body.push_str("</section><section class=\"card\"><h2>Timeline</h2>");
    if d.timeline.is_empty() {
        body.push_str("<p>No deployment has reached this device.</p>");
    } else {
        body.push_str("<ol class=\"timeline\">");
        for t in &d.timeline {
            let _ = write!(
                body,
                "<li><time>{}</time> <a href=\"/ui/deployments/{}/{}\">{}</a> of update {}: {}{}</li>",
                esc(&t.started),
                url(&t.group_id),
                url(&t.deployment_id),
                esc(&t.deployment_id),
                esc(&t.update.to_string()),
                badge(t.state.as_str()),
                if t.last_reported { " <span class=\"muted\">(its last report)</span>" } else { "" }
            );
        }
        body.push_str("</ol>");
    }
    let _ = write!(
        body,
        "</section><section class=\"card\"><h2>Update agent</h2>{}</section>\
         <section class=\"card\"><h2>Device information</h2>{}</section>",
        facts(&d.agent),
        facts(&d.device_information)
    );
    Ok(html_page(&format!("Device {}", d.device_id), Section::Devices, &session.csrf, &body))
}
