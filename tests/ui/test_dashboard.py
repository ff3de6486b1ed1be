"""The operator dashboard in a real browser (Debian's Chromium, headless) against a real
`duhub serve` and real `duhub-agent`s: sign in, import through the upload form (and see a bad
manifest's JSON-pointer errors), group devices from the UI, deploy, watch the page turn
Succeeded without reloading, see a failing device's decoded error, retry and cancel, manage API
tokens, sign out and see pages and the event stream refuse. No console errors on any page;
every page is photographed into target/ui-screenshots/.

The tests run in file order and share one browser session (module-scoped `page`).
"""

import json
import re

import pytest
from playwright.sync_api import expect

WAIT_MS = 60_000

INSTALL_SH = """#!/bin/sh
# install.sh of the test update: devices whose id contains "bad" fail with errno 28.
while [ $# -gt 0 ]; do
  case "$1" in
    --action-*) action="${1#--action-}" ;;
    --work-folder) work="$2"; shift ;;
    --result-file) result_file="$2"; shift ;;
    --installed-criteria) version="$2"; shift ;;
  esac
  shift
done
answer() { printf '{"resultCode": %s, "extendedResultCode": %s, "resultDetails": "%s"}\\n' "$1" "$2" "$3" > "$result_file"; }
marker="$work/../installed-$version"
case "$action" in
  is-installed) if [ -f "$marker" ]; then answer 900 0 installed; else answer 901 0 "not installed"; fi ;;
  install)
    case "$work" in
      *bad*) answer 0 28 "disk full" ;;
      *) touch "$marker" && answer 600 0 "installed $version" ;;
    esac ;;
  apply) answer 700 0 "$version is running" ;;
  *) answer 0 0 "unknown action $action" ;;
esac
"""

BAD_MANIFEST = {
    "updateId": {"provider": "contoso", "name": "toaster", "version": "not a version!"},
    "isDeployable": True,
    "compatibility": [],
    "instructions": {"steps": [{"handler": "microsoft/script:1", "files": ["missing.sh"]}]},
    "files": [],
    "createdDateTime": "yesterday",
    "manifestVersion": "5.0",
}


@pytest.fixture(scope="module")
def files(fleet):
    """The update's files: install.sh and its import manifest (made by `duhub update init`),
    and a bad manifest."""
    script = fleet.workdir / "install.sh"
    script.write_text(INSTALL_SH)
    manifest = fleet.duhub(
        "update", "init", "v5", "--update-provider", "contoso", "--update-name", "toaster", "--update-version", "1.0",
        "--compat", "manufacturer=contoso", "model=toaster",
        "--step", 'handler=microsoft/script:1', 'properties={"scriptFileName":"install.sh","installedCriteria":"1.0"}',
        "--file", "path=./install.sh",
    )
    manifest_path = fleet.workdir / "contoso.toaster.1.0.importmanifest.json"
    manifest_path.write_text(manifest)
    bad = fleet.workdir / "bad.importmanifest.json"
    bad.write_text(json.dumps(BAD_MANIFEST))
    return {"script": script, "manifest": manifest_path, "bad": bad}


@pytest.fixture(scope="module")
def agents(fleet):
    return {device: fleet.start_agent(device) for device in ("toaster-ok", "toaster-bad")}


@pytest.fixture(scope="module")
def session(browser):
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems = []
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("dialog", lambda dialog: dialog.accept())
    page.set_default_timeout(WAIT_MS)
    yield {"context": context, "page": page, "problems": problems}
    context.close()


def shot(page, screenshots, name):
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def no_problems(session):
    assert session["problems"] == [], "\n".join(session["problems"])


def test_sign_in(fleet, session, screenshots):
    page = session["page"]
    page.goto(f"{fleet.url}/ui/")
    expect(page).to_have_url(re.compile(r"/ui/signin$"))
    shot(page, screenshots, "01-sign-in")
    page.get_by_label("API token").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked")
    page.get_by_label("API token").fill(fleet.admin["apiToken"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    cookie = next(c for c in session["context"].cookies() if c["name"] == "duhub_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict", cookie
    no_problems(session)


def test_a_bad_manifest_shows_its_json_pointer_errors(fleet, session, files, screenshots):
    page = session["page"]
    page.get_by_role("link", name="Updates").click()
    page.get_by_label("Import manifest").set_input_files(str(files["bad"]))
    page.get_by_role("button", name="Import", exact=True).click()
    errors = page.locator("#import-errors")
    expect(errors).to_contain_text("importManifest#/compatibility")
    expect(errors).to_contain_text("importManifest#/createdDateTime")
    expect(page.locator("#import-status")).to_have_text("The import failed.")
    shot(page, screenshots, "02-updates-bad-manifest")
    no_problems(session)


def test_import_through_the_upload_form(fleet, session, files, screenshots):
    page = session["page"]
    page.goto(f"{fleet.url}/ui/updates")
    page.get_by_label("Import manifest").set_input_files(str(files["manifest"]))
    page.get_by_label("Update files").set_input_files(str(files["script"]))
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.locator("#import-status")).to_contain_text("Imported contoso/toaster/1.0")
    expect(page.locator("#import-progress")).to_have_attribute("value", "100")
    expect(page.locator("#catalog")).to_contain_text("contoso/toaster/1.0")
    shot(page, screenshots, "03-updates-catalog")
    no_problems(session)


def test_group_real_agents_from_the_ui(fleet, session, agents, screenshots):
    page = session["page"]
    for device in agents:
        page.goto(f"{fleet.url}/ui/devices")
        page.get_by_label("Device id starts with").fill(device)
        page.get_by_role("button", name="Search").click()
        page.get_by_role("link", name=device, exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Device {device}")
        page.get_by_label("Group", exact=True).fill("lab")
        page.get_by_role("button", name="Set group").click()
        expect(page.locator("#device-group")).to_have_text("lab")
    shot(page, screenshots, "04-device")
    page.get_by_role("link", name="Devices").click()
    expect(page.locator("table")).to_contain_text("toaster-ok")
    shot(page, screenshots, "05-devices")
    page.get_by_role("link", name="Groups").click()
    expect(page.get_by_role("link", name="lab", exact=True)).to_be_visible()
    expect(page.locator("main")).to_contain_text("contoso/toaster/1.0")
    shot(page, screenshots, "06-groups")
    no_problems(session)


def test_deploy_and_watch_it_live(fleet, session, agents, screenshots):
    page = session["page"]
    page.get_by_role("link", name="Deployments").click()
    page.get_by_label("Group", exact=True).select_option("lab")
    page.get_by_label("Deployment id").fill("rollout-1")
    page.get_by_label("Update", exact=True).select_option(label="contoso/toaster/1.0")
    page.get_by_role("button", name="Create deployment").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Deployment rollout-1")
    # Mark this document: if the page reloaded, the mark would be gone.
    page.evaluate("window.__sameDocument = true")
    ok = page.locator('tr[data-device="toaster-ok"]')
    bad = page.locator('tr[data-device="toaster-bad"]')
    expect(ok).to_contain_text("Succeeded", timeout=120_000)
    expect(ok).to_contain_text("apply success")
    expect(bad).to_contain_text("Failed", timeout=120_000)
    expect(bad.locator("td.erc")).to_contain_text("error 28 (no space left on device)")
    expect(bad).to_contain_text("disk full")
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    expect(page.locator("#live")).to_contain_text("1 succeeded")
    shot(page, screenshots, "07-deployment-live")

    # The overview counts the failure under its extended result code.
    page.get_by_role("link", name="Overview").click()
    expect(page.locator("main")).to_contain_text("0x0000001C")
    expect(page.locator("main")).to_contain_text("no space left on device")
    shot(page, screenshots, "10-overview")
    page.goto(f"{fleet.url}/ui/deployments/lab/rollout-1")

    # Filter the device table by state.
    page.get_by_label("Show devices").select_option("Failed")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator('tr[data-device="toaster-bad"]')).to_be_visible()
    expect(page.locator('tr[data-device="toaster-ok"]')).to_have_count(0)
    page.goto(f"{fleet.url}/ui/deployments/lab/rollout-1")

    # Retry the failed device: it fails again, with a retry counted.
    page.get_by_role("button", name="Retry failed devices").click()
    expect(page.locator('tr[data-device="toaster-bad"] td.num')).to_have_text("1", timeout=120_000)
    expect(page.locator('tr[data-device="toaster-bad"]')).to_contain_text("Failed", timeout=120_000)

    # Cancel.
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".subgroup .badge").first).to_have_text("Canceled")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    shot(page, screenshots, "08-deployment-canceled")

    # The same page at phone width.
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, screenshots, "09-deployment-phone")
    page.set_viewport_size({"width": 1280, "height": 800})

    page.get_by_role("link", name="Deployments").click()
    expect(page.locator("main")).to_contain_text("rollout-1")
    shot(page, screenshots, "11-deployments")
    no_problems(session)


def test_api_tokens(fleet, session, screenshots):
    page = session["page"]
    page.get_by_role("link", name="API tokens").click()
    page.get_by_label("Name").fill("night shift")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token").inner_text()
    assert len(token) >= 40
    shot(page, screenshots, "12-tokens")
    page.get_by_role("button", name="Revoke night shift").click()
    expect(page.locator("table")).to_contain_text("night shift")
    expect(page.get_by_role("button", name="Revoke night shift")).to_have_count(0)
    page.goto(f"{fleet.url}/ui/tokens")
    assert token not in page.content(), "a token is shown once"
    no_problems(session)


def test_sign_out_ends_pages_and_the_event_stream(fleet, session, browser):
    page = session["page"]
    old = next(c for c in session["context"].cookies() if c["name"] == "duhub_session")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/ui/signin$"))
    page.goto(f"{fleet.url}/ui/deployments/lab/rollout-1")
    expect(page).to_have_url(re.compile(r"/ui/signin$"))
    no_problems(session)

    # The old cookie, replayed, opens nothing.
    replay = browser.new_context(ignore_https_errors=True)
    try:
        replay.add_cookies([{k: old[k] for k in ("name", "value", "domain", "path", "secure", "httpOnly", "sameSite")}])
        events = replay.request.get(f"{fleet.url}/ui/deployments/lab/rollout-1/events",
                                    headers={"accept": "text/event-stream"}, max_redirects=0)
        assert events.status == 401, events.status
        overview = replay.request.get(f"{fleet.url}/ui/", max_redirects=0)
        assert overview.status == 303 and overview.headers["location"] == "/ui/signin"
    finally:
        replay.close()
