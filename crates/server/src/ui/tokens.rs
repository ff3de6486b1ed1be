//! API tokens: create (the token is shown on that page only), list, revoke. Revoking a token
//! also ends the dashboard sessions opened with it.

use std::fmt::Write as _;

use axum::Extension;
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::Session;
use super::html::{Section, csrf_field, esc, notice};
use super::{UiError, UiState, html_page};

async fn page(state: &UiState, session: &Session, top: &str) -> Result<Response, UiError> {
    let tokens = state.du.store().api_tokens().await?;
    let mut body = format!(
        "{top}<section class=\"card\"><h2>Create a token</h2><form method=\"post\" action=\"/ui/tokens\" class=\"inline\">\
         {}<label for=\"token-name\">Name</label><input id=\"token-name\" name=\"name\" required maxlength=\"128\">\
         <button type=\"submit\">Create token</button></form></section>\
         <section class=\"card\"><h2>Tokens</h2><table><caption>API tokens</caption><thead><tr>\
         <th scope=\"col\">Id</th><th scope=\"col\">Name</th><th scope=\"col\">Created</th><th scope=\"col\">Revoked</th>\
         <th scope=\"col\"><span class=\"sr\">Actions</span></th></tr></thead><tbody>",
        csrf_field(&session.csrf)
    );
    for t in &tokens {
        let action = if t.revoked.is_some() {
            String::new()
        } else {
            format!(
                "<form method=\"post\" action=\"/ui/tokens/revoke\" class=\"confirm\" data-confirm=\"Revoke token {}? \
                 Clients and dashboard sessions using it stop working.\">{}<input type=\"hidden\" name=\"id\" value=\"{}\">\
                 <button type=\"submit\" class=\"danger\">Revoke <span class=\"sr\">{}</span></button></form>",
                esc(&t.name),
                csrf_field(&session.csrf),
                esc(&t.id),
                esc(&t.name)
            )
        };
        let _ = write!(
            body,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            esc(&t.id),
            esc(&t.name),
            esc(&t.created),
            esc(t.revoked.as_deref().unwrap_or(""))
        );
    }
    body.push_str("</tbody></table></section>");
    Ok(html_page("API tokens", Section::Tokens, &session.csrf, &body))
}

/// `GET /ui/tokens`.
pub(super) async fn tokens(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
) -> Result<Response, UiError> {
    page(&state, &session, "").await
}

#[derive(Debug, Deserialize)]
pub(super) struct CreateForm {
    #[serde(default)]
    name: String,
}

/// `POST /ui/tokens`: the new token is on this answer only.
pub(super) async fn create(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    Form(form): Form<CreateForm>,
) -> Result<Response, UiError> {
    let name = form.name.trim();
    if !(1..=128).contains(&name.chars().count()) {
        return page(&state, &session, &notice("error", "a token name has 1 to 128 characters")).await;
    }
    let token = crate::ids::generate_api_token();
    state.du.store().add_api_token(name, &token).await?;
    let top = format!(
        "<section class=\"card created\" role=\"status\"><h2>Token {} created</h2>\
         <p>Copy it now: it is not shown again.</p><p><code id=\"new-token\">{}</code></p></section>",
        esc(name),
        esc(&token)
    );
    page(&state, &session, &top).await
}

#[derive(Debug, Deserialize)]
pub(super) struct RevokeForm {
    #[serde(default)]
    id: String,
}

/// `POST /ui/tokens/revoke`.
pub(super) async fn revoke(
    State(state): State<UiState>,
    Extension(session): Extension<Session>,
    Form(form): Form<RevokeForm>,
) -> Result<Response, UiError> {
    if state.du.store().revoke_api_token(&form.id).await? {
        Ok(Redirect::to("/ui/tokens").into_response())
    } else {
        page(&state, &session, &notice("error", &format!("no active token {}", form.id))).await
    }
}
