//! The fleet overview: devices, online now, compliance as a chart, failures of the last day by
//! extended result code, active deployments with progress bars.

use std::fmt::Write as _;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;

use super::auth::Session;
use super::html::{Section, compliance_chart, esc, progress, url};
use super::{UiError, UiState, codes, html_page};
use crate::du::console::DeploymentSummary;

/// `GET /ui/`.
pub(super) async fn overview(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
) -> Result<Response, UiError> {
    let o = state.du.overview().await?;
    let mut body = format!(
        "<section class=\"tiles\" aria-label=\"Fleet\">\
         <div class=\"tile\"><span class=\"n\" id=\"devices-registered\">{}</span> devices registered</div>\
         <div class=\"tile\"><span class=\"n\" id=\"devices-online\">{}</span> online now</div>\
         <div class=\"tile\"><span class=\"n\">{}</span> with an update agent</div>\
         <div class=\"tile\"><span class=\"n\">{}</span> active deployments</div></section>\
         <section class=\"card\"><h2>Update compliance</h2>{}</section>",
        o.registered,
        o.online,
        o.compliance.total,
        o.active.len(),
        compliance_chart(&o.compliance)
    );
    body.push_str("<section class=\"card\"><h2>Failures in the last day</h2>");
    if o.recent_failures.is_empty() {
        body.push_str("<p>No device failed in a deployment started in the last day.</p>");
    } else {
        body.push_str(
            "<table><caption>Failed devices by extended result code</caption><thead><tr>\
             <th scope=\"col\">Extended result code</th><th scope=\"col\">Meaning</th>\
             <th scope=\"col\" class=\"num\">Devices</th></tr></thead><tbody>",
        );
        for (code, count) in &o.recent_failures {
            let _ = write!(
                body,
                "<tr><td><code>0x{code}</code></td><td>{}</td><td class=\"num\">{count}</td></tr>",
                esc(&codes::extended_words(*code))
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section><section class=\"card\"><h2>Active deployments</h2>");
    if o.active.is_empty() {
        body.push_str("<p>No deployment is in progress. <a href=\"/ui/deployments\">Create one</a>.</p>");
    } else {
        body.push_str(&deployment_list(&o.active));
    }
    body.push_str("</section>");
    Ok(html_page("Overview", Section::Overview, &session.csrf, &body))
}

/// Deployments as a list of progress bars.
pub(super) fn deployment_list(deployments: &[DeploymentSummary]) -> String {
    let mut out = String::from("<ul class=\"deployments\">");
    for d in deployments {
        let dep = &d.deployment;
        let _ = write!(
            out,
            "<li><a href=\"/ui/deployments/{}/{}\">{}</a> <span class=\"muted\">group {} · update {}</span> {}{}</li>",
            url(&dep.group_id),
            url(&dep.deployment_id),
            esc(&dep.deployment_id),
            esc(&dep.group_id),
            esc(&dep.update.to_string()),
            super::html::badge(d.status.state),
            progress(&d.counts)
        );
    }
    out.push_str("</ul>");
    out
}
