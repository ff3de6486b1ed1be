//! Building HTML safely: [`esc`] for every value that is not our own markup, the page layout
//! (navigation, sign-out form, skip link), and the small components every page uses (stacked
//! progress bars and charts as inline SVG, state badges, pagers, notices).
//!
//! Pages are Rust functions writing into a `String`: no template engine, so a page cannot
//! refer to a value that does not exist, and the one rule to keep is visible at every `{}`:
//! text from the outside world goes through [`esc`].

use std::fmt::Write as _;

use crate::du::deploy::Counts;
use crate::du::status::Compliance;

/// `text` escaped for HTML text and (double-quoted) attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// `text` percent-encoded for one URL path segment or query value.
pub(crate) fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            other => {
                let _ = write!(out, "%{other:02X}");
            }
        }
    }
    out
}

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    /// The overview.
    Overview,
    /// Groups and device classes.
    Groups,
    /// Updates.
    Updates,
    /// Deployments.
    Deployments,
    /// Devices.
    Devices,
    /// API tokens.
    Tokens,
    /// Pages outside the navigation (sign-in, errors).
    None,
}

const NAV: [(Section, &str, &str); 6] = [
    (Section::Overview, "/ui/", "Overview"),
    (Section::Groups, "/ui/groups", "Groups"),
    (Section::Updates, "/ui/updates", "Updates"),
    (Section::Deployments, "/ui/deployments", "Deployments"),
    (Section::Devices, "/ui/devices", "Devices"),
    (Section::Tokens, "/ui/tokens", "API tokens"),
];

/// A whole page: `body` is our markup; `csrf` is the session's token when signed in (the
/// navigation and sign-out form are shown only then).
pub(crate) fn page(title: &str, section: Section, csrf: Option<&str>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · duhub</title><link rel=\"stylesheet\" href=\"/ui/assets/app.css\">\
         <link rel=\"icon\" href=\"data:,\">\
         <script src=\"/ui/assets/app.js\" defer></script></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a><header><span class=\"brand\">duhub</span>",
        esc(title)
    );
    if let Some(csrf) = csrf {
        out.push_str("<nav aria-label=\"Main\"><ul>");
        for (s, href, label) in NAV {
            let current = if s == section { " aria-current=\"page\"" } else { "" };
            let _ = write!(out, "<li><a href=\"{href}\"{current}>{label}</a></li>");
        }
        let _ = write!(
            out,
            "</ul></nav><form method=\"post\" action=\"/ui/signout\" class=\"signout\">{}\
             <button type=\"submit\">Sign out</button></form>",
            csrf_field(csrf)
        );
    }
    let _ = write!(out, "</header><main id=\"main\"><h1>{}</h1>{body}</main></body></html>", esc(title));
    out
}

/// The hidden CSRF field of a form.
pub(crate) fn csrf_field(csrf: &str) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(csrf))
}

/// A notice: `kind` is `error` (announced to screen readers at once) or `ok`.
pub(crate) fn notice(kind: &str, text: &str) -> String {
    let role = if kind == "error" { "alert" } else { "status" };
    format!("<p class=\"notice {kind}\" role=\"{role}\">{}</p>", esc(text))
}

/// A stacked horizontal bar of `parts` (CSS class, count) out of `total`, as inline SVG with a
/// text alternative.
pub(crate) fn stacked_bar(parts: &[(&str, &str, u64)], total: u64) -> String {
    let label: Vec<String> = parts.iter().map(|(_, name, n)| format!("{name} {n}")).collect();
    let mut out = format!(
        "<svg class=\"bar\" viewBox=\"0 0 1000 24\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{}\">\
         <rect class=\"track\" x=\"0\" y=\"0\" width=\"1000\" height=\"24\"/>",
        esc(&format!("{} of {total}", label.join(", ")))
    );
    let mut x = 0u64;
    for (class, _, n) in parts {
        let width = n.saturating_mul(1000).checked_div(total).unwrap_or(0);
        if width > 0 {
            let _ = write!(out, "<rect class=\"{class}\" x=\"{x}\" y=\"0\" width=\"{width}\" height=\"24\"/>");
        }
        x += width;
    }
    out.push_str("</svg>");
    out
}

/// A deployment's progress: the bar and the counts in words.
pub(crate) fn progress(counts: &Counts) -> String {
    let parts = [
        ("ok", "succeeded", counts.succeeded),
        ("bad", "failed", counts.failed),
        ("busy", "in progress", counts.in_progress),
        ("off", "canceled", counts.canceled),
    ];
    format!(
        "{}<p class=\"counts\"><span class=\"k ok\">{} succeeded</span> <span class=\"k bad\">{} failed</span> \
         <span class=\"k busy\">{} in progress</span> <span class=\"k off\">{} canceled</span> of {} devices</p>",
        stacked_bar(&parts, counts.total),
        counts.succeeded,
        counts.failed,
        counts.in_progress,
        counts.canceled,
        counts.total
    )
}

/// Compliance as a chart with a legend.
pub(crate) fn compliance_chart(c: &Compliance) -> String {
    let parts = [
        ("ok", "on latest update", c.on_latest),
        ("warn", "new update available", c.new_updates_available),
        ("busy", "updating", c.updates_in_progress),
    ];
    format!(
        "{}<ul class=\"legend\"><li><span class=\"sw ok\"></span>On latest update: <strong>{}</strong></li>\
         <li><span class=\"sw warn\"></span>New update available: <strong>{}</strong></li>\
         <li><span class=\"sw busy\"></span>Updating: <strong>{}</strong></li></ul>",
        stacked_bar(&parts, c.total),
        c.on_latest,
        c.new_updates_available,
        c.updates_in_progress
    )
}

/// A state badge (`Succeeded`, `Failed`, `Active`...).
pub(crate) fn badge(state: &str) -> String {
    let class = match state {
        "Succeeded" | "Connected" | "Idle" => "ok",
        "Failed" | "ActiveWithSubgroupFailures" => "bad",
        "InProgress" | "Active" | "DeploymentInProgress" => "busy",
        _ => "off",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(state))
}

/// A "next page" link (`href` already built) when `more`, and a link to the first page when
/// not on it.
pub(crate) fn pager(first: &str, next: Option<String>, on_first: bool) -> String {
    let mut out = String::from("<nav class=\"pager\" aria-label=\"Pages\">");
    if !on_first {
        let _ = write!(out, "<a href=\"{}\">First page</a>", esc(first));
    }
    if let Some(next) = next {
        let _ = write!(out, "<a href=\"{}\" rel=\"next\">Next page</a>", esc(&next));
    }
    out.push_str("</nav>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn url_encodes_everything_but_unreserved() {
        assert_eq!(url("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9");
        assert_eq!(url("$default"), "%24default");
    }

    #[test]
    fn bars_have_a_text_alternative_and_scale() {
        let svg = stacked_bar(&[("ok", "done", 1), ("bad", "failed", 3)], 4);
        assert!(svg.contains("aria-label=\"done 1, failed 3 of 4\""), "{svg}");
        assert!(svg.contains("class=\"ok\" x=\"0\" y=\"0\" width=\"250\""), "{svg}");
        assert!(svg.contains("class=\"bad\" x=\"250\" y=\"0\" width=\"750\""), "{svg}");
        assert!(!stacked_bar(&[("ok", "done", 0)], 0).contains("class=\"ok\""));
    }

    #[test]
    fn the_layout_shows_navigation_only_when_signed_in() {
        let signed_in = page("T<", Section::Groups, Some("c\"s"), "<p>x</p>");
        assert!(signed_in.contains("<title>T&lt; · duhub</title>"));
        assert!(signed_in.contains("href=\"/ui/groups\" aria-current=\"page\""));
        assert!(signed_in.contains("name=\"csrf\" value=\"c&quot;s\""));
        let signed_out = page("Sign in", Section::None, None, "");
        assert!(!signed_out.contains("<nav"));
        assert!(!signed_out.contains("csrf"));
    }
}
