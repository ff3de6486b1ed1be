//! The operator dashboard over real HTTPS: sessions (cookie attributes, expiry by revocation,
//! sign-out), CSRF tokens and origins on every state-changing request, and pages that show
//! what real MQTT devices report (groups set from the UI, deployments created from the UI,
//! result codes in words). The browser tests in `tests/ui` drive the same pages in Chromium.

use duhub_testkit::{Backend, FileServer, ImportFixture, TestDevice, TestServer};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::support::eventually;

const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// A browser-like client of one server: no redirects followed, the session cookie kept by
/// hand (so the test sees exactly what the server sets).
struct Browser {
    http: Client,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(server: &TestServer) -> Self {
        duhub_testkit::install_crypto_provider();
        let certificates = reqwest::Certificate::from_pem_bundle(&server.ca_pem).unwrap();
        let http = Client::builder()
            .tls_certs_only(certificates)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap();
        Self { http, base: format!("https://localhost:{}", server.https.port()), cookie: None }
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(cookie) = &self.cookie {
            headers.insert("cookie", HeaderValue::from_str(cookie).unwrap());
        }
        headers
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.base)).headers(self.headers()).send().await.unwrap()
    }

    async fn page(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .headers(self.headers())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send().await.unwrap()
    }

    /// Signs in with `token`; returns the `Set-Cookie` header.
    async fn sign_in(&mut self, token: &str) -> String {
        let response = self.post("/ui/signin", &[("token", token)], None).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
        let pair = set_cookie.split(';').next().unwrap().to_owned();
        self.cookie = Some(pair);
        set_cookie
    }

    /// The CSRF token of the current session, read from a page's forms.
    async fn csrf(&self) -> String {
        let page = self.page("/ui/tokens").await;
        let (_, rest) = page.split_once("name=\"csrf\" value=\"").expect("a CSRF field");
        rest.split('"').next().unwrap().to_owned()
    }
}

pub(crate) async fn sessions_csrf_and_origins_guard_every_page(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let mut browser = Browser::new(&server);
    let origin = browser.base.clone();

    // Nothing without a session: pages send the browser to sign in, everything else is 401.
    for path in ["/ui/", "/ui/groups", "/ui/updates", "/ui/deployments", "/ui/devices", "/ui/tokens", "/ui/devices/x"] {
        let response = browser.get(path).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "GET {path}");
        assert_eq!(response.headers()["location"], "/ui/signin");
    }
    let events = browser
        .http
        .get(format!("{}/ui/deployments/g/d/events", browser.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(browser.post("/ui/tokens", &[("name", "x")], None).await.status(), StatusCode::UNAUTHORIZED);
    let sign_in_page = browser.page("/ui/signin").await;
    assert!(sign_in_page.contains("<label for=\"token\">API token</label>"));
    let csp = browser.get("/ui/signin").await.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");

    // A wrong token, or a sign-in posted from another site, opens no session.
    let wrong = browser.post("/ui/signin", &[("token", "not-a-token")], None).await;
    assert_eq!(wrong.status(), StatusCode::OK, "the form again, with the error");
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(wrong.text().await.unwrap().contains("unknown or revoked"));
    let cross = browser.post("/ui/signin", &[("token", &server.admin.api_token)], Some("https://evil.example")).await;
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);

    // The session cookie.
    let set_cookie = browser.sign_in(&server.admin.api_token).await;
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(set_cookie.contains(attribute), "{attribute} missing in {set_cookie}");
    }
    let overview = browser.page("/ui/").await;
    assert!(overview.contains("Update compliance") && overview.contains("Sign out"), "{overview}");
    let csrf = browser.csrf().await;

    // State-changing requests need the CSRF token and, when a browser names one, this origin.
    let forged = browser.post("/ui/tokens", &[("name", "forged")], None).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let wrong_csrf = browser.post("/ui/tokens", &[("name", "forged"), ("csrf", "nope")], None).await;
    assert_eq!(wrong_csrf.status(), StatusCode::FORBIDDEN);
    let other_site =
        browser.post("/ui/tokens", &[("name", "forged"), ("csrf", &csrf)], Some("https://evil.example")).await;
    assert_eq!(other_site.status(), StatusCode::FORBIDDEN);
    let header_only = browser
        .http
        .post(format!("{}/ui/tokens", browser.base))
        .headers(browser.headers())
        .header("x-csrf-token", "nope")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("name", "forged"), ("csrf", csrf.as_str())]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(header_only.status(), StatusCode::FORBIDDEN, "a wrong header is not rescued by the form field");
    let tokens = server.du_service().store().api_tokens().await.unwrap();
    assert!(tokens.iter().all(|t| t.name != "forged"), "a refused request changed nothing");

    // Creating a token shows it once; it opens a second session.
    let created = browser.post("/ui/tokens", &[("name", "operator"), ("csrf", &csrf)], Some(&origin)).await;
    assert_eq!(created.status(), StatusCode::OK);
    let created = created.text().await.unwrap();
    let (_, rest) = created.split_once("<code id=\"new-token\">").expect("the new token");
    let token = rest.split('<').next().unwrap().to_owned();
    assert!(!browser.page("/ui/tokens").await.contains(&token), "the token is shown once");
    let mut second = Browser::new(&server);
    second.sign_in(&token).await;
    second.page("/ui/devices").await;

    // Revoking the token ends the sessions opened with it, and only those.
    let id = duhub_server::store::Store::api_token_id(&token);
    let revoked = browser.post("/ui/tokens/revoke", &[("id", &id), ("csrf", &csrf)], Some(&origin)).await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    assert_eq!(second.get("/ui/devices").await.status(), StatusCode::SEE_OTHER);
    browser.page("/ui/devices").await;

    // Signing out ends the session: pages and the event stream refuse the old cookie.
    let signed_out = browser.post("/ui/signout", &[("csrf", &csrf)], Some(&origin)).await;
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    assert!(signed_out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(browser.get("/ui/").await.status(), StatusCode::SEE_OTHER);
    let events = browser
        .http
        .get(format!("{}/ui/deployments/g/d/events", browser.base))
        .headers(browser.headers())
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::UNAUTHORIZED);
}

fn startup(model: &str) -> Value {
    json!({"deviceUpdate": {"__t": "c", "agent": {
        "deviceProperties": {"manufacturer": "contoso", "model": model,
            "contractModelId": "dtmi:azure:iot:deviceUpdateContractModel;3", "aduVer": "DU;agent/1.1.0"},
        "compatPropertyNames": "manufacturer,model"}}, "deviceInformation": {"__t": "c", "osName": "Debian"}})
}

async fn agent(server: &TestServer, id: &str) -> TestDevice {
    let mut device = server.new_device(id).await;
    device.subscribe_desired().await.unwrap();
    let (status, _) = device.patch_reported(&startup("toaster")).await.unwrap();
    assert_eq!(status, 204);
    device
}

/// The workflow id the service wrote to a device.
async fn workflow_of(device: &mut TestDevice) -> String {
    loop {
        let patch = device.next_desired(WAIT).await.unwrap();
        if let Some(id) = patch.body.pointer("/deviceUpdate/service/workflow/id").and_then(Value::as_str) {
            return id.to_owned();
        }
    }
}

pub(crate) async fn pages_show_groups_deployments_and_decoded_results(backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let files = FileServer::start(dir.path()).await.unwrap();
    let fixture = ImportFixture::new(
        "contoso",
        "toaster",
        "2.0",
        &[("manufacturer", "contoso"), ("model", "toaster")],
        &[("install.sh", b"#!/bin/sh\n")],
    );
    fixture.write(files.dir()).unwrap();
    let operation = server.du().import(&json!([fixture.item(&files)])).await.unwrap();
    assert_eq!(operation["status"], "Succeeded", "{operation}");
    let mut ok = agent(&server, "ui-ok").await;
    let mut bad = agent(&server, "ui-bad").await;

    let mut browser = Browser::new(&server);
    let origin = browser.base.clone();
    browser.sign_in(&server.admin.api_token).await;
    let csrf = browser.csrf().await;

    // Both devices into group "lab" from the UI: the tag is what the hub's twin shows.
    for id in ["ui-ok", "ui-bad"] {
        let response = browser
            .post("/ui/groups/assign", &[("device", id), ("group", "lab"), ("csrf", &csrf)], Some(&origin))
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let twin = server.service().twin(id).await.unwrap();
        assert_eq!(twin["tags"]["ADUGroup"], "lab");
    }
    let groups = eventually("group lab on the groups page", WAIT, || async {
        let page = browser.page("/ui/groups").await;
        if page.contains("href=\"/ui/groups/lab\"") { Ok(page) } else { Err(page) }
    })
    .await;
    assert!(groups.contains("contoso/toaster/2.0"), "the best update is shown: {groups}");
    let members = browser.page("/ui/groups/lab").await;
    assert!(members.contains("ui-ok") && members.contains("ui-bad"));
    let device = browser.page("/ui/devices/ui-ok").await;
    assert!(device.contains("Debian") && device.contains("id=\"device-group\">lab</a>"), "{device}");
    let search = browser.page("/ui/devices?q=ui-b").await;
    assert!(search.contains("ui-bad") && !search.contains("ui-ok"), "prefix search: {search}");

    // A deployment created from the UI; a bad form says what is wrong and creates nothing.
    let update = json!(["contoso", "toaster", "2.0"]).to_string();
    let invalid = browser
        .post(
            "/ui/deployments",
            &[("group", "lab"), ("id", "Bad Id"), ("update", &update), ("csrf", &csrf)],
            Some(&origin),
        )
        .await;
    assert_eq!(invalid.status(), StatusCode::OK);
    assert!(invalid.text().await.unwrap().contains("a deployment id has 1 to 73 characters"));
    let created = browser
        .post("/ui/deployments", &[("group", "lab"), ("id", "d1"), ("update", &update), ("csrf", &csrf)], Some(&origin))
        .await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    assert_eq!(created.headers()["location"], "/ui/deployments/lab/d1");

    // The devices report: one succeeds, one fails with a script exit code.
    let workflow = workflow_of(&mut ok).await;
    let installed = "{\"provider\":\"contoso\",\"name\":\"toaster\",\"version\":\"2.0\"}";
    let success = json!({"deviceUpdate": {"__t": "c", "agent": {"state": 0, "workflow": {"action": 3, "id": workflow},
        "installedUpdateId": installed,
        "lastInstallResult": {"resultCode": 700, "extendedResultCodes": "00000000", "resultDetails": ""}}}});
    assert_eq!(ok.patch_reported(&success).await.unwrap().0, 204);
    let workflow = workflow_of(&mut bad).await;
    let failure = json!({"deviceUpdate": {"__t": "c", "agent": {"state": 255, "workflow": {"action": 3, "id": workflow},
        "lastInstallResult": {"resultCode": 0, "extendedResultCodes": "30501003", "resultDetails": "disk full"}}}});
    assert_eq!(bad.patch_reported(&failure).await.unwrap().0, 204);

    let page = eventually("the deployment page shows both results", WAIT, || async {
        let page = browser.page("/ui/deployments/lab/d1").await;
        if page.contains("1 succeeded") && page.contains("1 failed") { Ok(page) } else { Err(page) }
    })
    .await;
    assert!(page.contains("the install script exited with code 3"), "decoded extended result: {page}");
    assert!(page.contains("apply success") && page.contains("disk full"), "{page}");
    assert!(page.contains("data-events=\"/ui/deployments/lab/d1/events\""));
    let failed_only = browser.page("/ui/deployments/lab/d1?state=Failed").await;
    assert!(failed_only.contains("data-device=\"ui-bad\"") && !failed_only.contains("data-device=\"ui-ok\""));
    let overview = browser.page("/ui/").await;
    assert!(overview.contains("<code>0x30501003</code>"), "failures of the last day by code: {overview}");

    // The event stream sends the live part at once.
    let mut events = browser
        .http
        .get(format!("{}/ui/deployments/lab/d1/events", browser.base))
        .headers(browser.headers())
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        let chunk = tokio::time::timeout(WAIT, events.chunk()).await.unwrap().unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.starts_with("event: update\ndata: "), "{seen}");
    assert!(seen.contains("1 failed"), "{seen}");

    // Retry, then cancel, from the UI.
    let class = page.split("data-class=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let retried =
        browser.post("/ui/deployments/lab/d1/retry", &[("class", &class), ("csrf", &csrf)], Some(&origin)).await;
    assert_eq!(retried.status(), StatusCode::SEE_OTHER);
    let retry = bad.next_desired(WAIT).await.unwrap();
    assert!(retry.body.pointer("/deviceUpdate/service/workflow/retryTimestamp").is_some(), "{:?}", retry.body);
    let canceled =
        browser.post("/ui/deployments/lab/d1/cancel", &[("class", &class), ("csrf", &csrf)], Some(&origin)).await;
    assert_eq!(canceled.status(), StatusCode::SEE_OTHER);
    // The cancel reaches the failed device (after any patch still on its way).
    loop {
        let patch = bad.next_desired(WAIT).await.unwrap();
        if patch.body.pointer("/deviceUpdate/service/workflow/action").and_then(Value::as_i64) == Some(255) {
            break;
        }
    }

    // A phased rollout (issue 15): its panel, and a control recorded with the session's token name.
    // (It starts now, after d1, so that it governs the group.)
    let start = duhub_server::ids::now_rfc3339();
    let rollout = json!({"deploymentId": "d2", "groupId": "lab", "startDateTime": start,
        "update": {"updateId": {"provider": "contoso", "name": "toaster", "version": "2.0"}},
        "rollout": {"waves": ["50%", "100%"], "approveWaves": true}});
    let path = "/management/groups/lab/deployments/d2";
    server.du().expect(reqwest::Method::PUT, path, Some(&rollout), StatusCode::OK).await.unwrap();
    eventually("the rollout's panel", WAIT, || async {
        let page = browser.page("/ui/deployments/lab/d2").await;
        if page.contains("Phased rollout") && page.contains("</span></span> wave 1 of 2") {
            Ok(page)
        } else {
            Err(page)
        }
    })
    .await;
    let control = |action: &'static str, csrf: Option<String>| {
        let (browser, origin) = (&browser, origin.clone());
        async move {
            let mut form = vec![("action", action.to_owned())];
            form.extend(csrf.map(|c| ("csrf", c)));
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            browser.post("/ui/deployments/lab/d2/rollout", &form, Some(&origin)).await.status()
        }
    };
    assert_eq!(control("pause", None).await, StatusCode::FORBIDDEN, "no CSRF token");
    assert_eq!(control("pause", Some(csrf.clone())).await, StatusCode::SEE_OTHER);
    let page = browser.page("/ui/deployments/lab/d2").await;
    assert!(page.contains(">Paused</span>") && page.contains("operator (admin)"), "{page}");
    assert!(page.contains("name=\"action\" value=\"resume\""), "{page}");
    assert_eq!(control("pause", Some(csrf.clone())).await, StatusCode::CONFLICT, "already paused");
    assert_eq!(control("jump", Some(csrf)).await, StatusCode::BAD_REQUEST);
}
