# ruff: noqa: F811  (the fixtures are imported from ui_fixtures: tests/e2e/conftest.py is shared)
"""The admin UI in headless system Chromium against the embedded service (serve + local worker):
login and logout, every page with real data, the playground from form to a finished run, a
profiling grid created and cancelled, keys and join tokens, and the redirect for strangers.
Each test leaves a screenshot in test-artifacts/screenshots/."""

from __future__ import annotations

import csv
import io
import json
import re

import httpx
import pytest
from playwright.sync_api import expect
from ui_fixtures import TINY, browser, log_in, page, shot, ui_service  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


def test_a_stranger_is_sent_to_the_login_page(ui_service, page):
    for path in ("/ui/", "/ui/profiles", "/ui/access"):
        page.goto(ui_service.url + path)
        expect(page).to_have_url(ui_service.url + "/ui/login")
    assert httpx.get(ui_service.url + "/ui/api/dashboard").status_code == 401
    page.get_by_label("Admin API key").fill("ak_nothing_wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not a valid admin key")
    client_key = ui_service.post("/v1/keys", {"scope": "client", "name": "not an admin"})["key"]
    page.get_by_label("Admin API key").fill(client_key)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not a valid admin key")
    # Revoking the admin key a session was opened with ends that session at its next request.
    second = ui_service.post("/v1/keys", {"scope": "admin", "name": "revoked while logged in"})
    page.get_by_label("Admin API key").fill(second["key"])
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(ui_service.url + "/ui/")
    assert httpx.delete(f"{ui_service.url}/v1/keys/{second['id']}", headers=ui_service.headers()).status_code == 200
    page.goto(ui_service.url + "/ui/jobs")
    expect(page).to_have_url(ui_service.url + "/ui/login")


def test_login_dashboard_and_logout(ui_service, page):
    log_in(page, ui_service)
    cookie = next(c for c in page.context.cookies() if c["name"] == "accel_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert ui_service.admin_key.split("_")[2] not in cookie["value"]  # the secret never leaves the server
    nodes = page.locator("#nodes tbody tr", has_text=ui_service.local_node)
    expect(nodes).to_contain_text("online")
    stored = ui_service.get("/v1/profiles", limit=1)["total"]
    expect(page.locator("#profile-count")).to_have_text(str(stored))
    active = ui_service.get("/v1/advisor/evaluation")["advisor_version"]
    expect(page.locator("#advisor-version")).to_have_text(active)
    expect(page.locator("table.jobs progress").first).to_be_visible()
    page.keyboard.press("Tab")  # the first stop is the skip link, and it lands on the content
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    page.set_viewport_size({"width": 390, "height": 800})
    shot(page, "dashboard_narrow")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways page scroll
    page.set_viewport_size({"width": 1280, "height": 800})
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(ui_service.url + "/ui/login")
    page.goto(ui_service.url + "/ui/")
    expect(page).to_have_url(ui_service.url + "/ui/login")


def test_methods_catalogue_has_every_seed_paper(ui_service, page):
    log_in(page, ui_service)
    page.get_by_role("link", name="Methods").click()
    rows = page.locator("#methods tbody tr")
    expect(rows).to_have_count(89)
    int8 = page.locator("#methods tbody tr", has_text="quant.int8_dynamic")
    expect(int8).to_contain_text("implemented")
    hardware = ui_service.get("/v1/workers")
    local_class = next(n["hardware_class"] for n in hardware if n["id"] == ui_service.local_node)
    expect(int8).to_contain_text(local_class)  # profiled on this machine's class by the fixture
    expect(page.locator('#methods tbody tr[data-status="not a method"]').first).to_contain_text("Serves as")
    expect(page.locator("#outside tbody tr", has_text="baseline")).to_contain_text(local_class)  # no paper row
    page.get_by_label("Filter rows").fill("ScaleLong")
    expect(page.locator("#methods tbody tr:visible")).to_have_count(1)


def test_profiles_explorer_filters_charts_and_exports(ui_service, page):
    log_in(page, ui_service)
    page.get_by_role("link", name="Profiles").click()
    expect(page.locator("#heatmap tbody tr").first).to_be_visible()
    tasks = page.locator("#heatmap tbody tr").count()
    assert tasks == page.locator("#heatmap td.best").count()  # one best method marked per task
    expect(page.locator("#scatter .main-svg").first).to_be_attached()  # Plotly drew, from the package
    page.get_by_label("Model").select_option(TINY)
    page.get_by_label("Workload").select_option(label="b1 · p16 · g8 greedy")  # the fixture's lm-tiny task
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#heatmap tbody tr")).to_have_count(1)
    expect(page.locator("#heatmap thead")).to_contain_text("quant.int8_dynamic")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    assert rows and {r["model_id"] for r in rows} == {TINY}
    workload = page.get_by_label("Workload").input_value()
    assert {r["workload_id"] for r in rows} == {workload}
    assert len(rows) == ui_service.get("/v1/profiles", model_id=TINY, workload_id=workload, limit=1)["total"]


def test_advisor_page_and_retrain(ui_service, page):
    log_in(page, ui_service)
    page.get_by_role("link", name="Advisor").click()
    table = page.locator('table.evaluation[data-split="model"]')
    for selector in ("sbs", "vbs", "lightgbm", "knn"):
        expect(table.locator("tbody th", has_text=selector).first).to_be_visible()
    expect(page.locator("#eval-chart .main-svg").first).to_be_attached()
    expect(page.locator("#importance tbody tr")).not_to_have_count(0)
    before = page.locator("#versions tbody tr").count()
    page.get_by_role("button", name="Retrain the advisor").click()
    expect(page.locator("#status")).to_contain_text("Training finished", timeout=240_000)
    page.reload()
    expect(page.locator("#versions tbody tr")).to_have_count(before + 1)


def test_playground_from_form_to_finished_run(ui_service, page):
    log_in(page, ui_service)
    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Model").select_option(TINY)
    page.get_by_label("Node").select_option(ui_service.local_node)
    page.get_by_label("Prompts for the run").fill("def main():\nimport os")
    page.get_by_role("button", name="Recommend").click()
    candidates = page.locator("#candidates tbody tr")
    expect(candidates.first.get_by_role("button")).to_be_enabled()
    assert candidates.count() > 1 and "×" in candidates.first.locator("td").nth(2).inner_text()  # with its interval
    # int8 was measured on this machine's class, and it runs in seconds (compile or pruning would not).
    method = "quant.int8_dynamic"
    candidates.filter(has=page.get_by_role("rowheader", name=method, exact=True)).first.get_by_role(
        "button", name=f"Run {method}"
    ).click()
    expect(page.locator("#run-state")).to_have_text("succeeded", timeout=180_000)
    expect(page.locator("#run-outputs li")).to_have_count(2)
    expect(page.locator("#run-figures tbody tr").first).to_contain_text(ui_service.local_node)
    run_id = page.locator("#run-id").inner_text().split()[0]
    run = ui_service.get(f"/v1/runs/{run_id}")
    assert run["method"] == method and len(run["outputs"]["texts"]) == 2 and run["figures"]


def test_profiling_grid_created_and_cancelled(ui_service, page):
    log_in(page, ui_service)
    page.get_by_role("link", name="Jobs").click()
    page.get_by_label("Models").select_option([TINY])
    page.get_by_label("Methods").select_option(["baseline", "quant.int8_dynamic"])
    page.get_by_label("Generation lengths").fill("5, 6, 7, 9, 10, 11")
    page.get_by_role("button", name="Start the grid").click()
    expect(page.locator("#status")).to_contain_text("6 items")
    job_id = page.locator("#status").inner_text().split()[1].rstrip(":")
    row = page.locator(f'#job-list tr[data-job="{job_id}"]')
    row.get_by_role("button", name=f"Cancel {job_id}").click()
    expect(page.locator("#status")).to_contain_text(f"{job_id} is cancelled")
    expect(row).to_have_attribute("data-state", "cancelled")
    job = ui_service.get(f"/v1/profiling-jobs/{job_id}")
    assert job["state"] == "cancelled" and job["done"] < job["total"] == 6


def test_access_keys_and_join_tokens(ui_service, page):
    log_in(page, ui_service)
    page.get_by_role("link", name="Access").click()
    page.get_by_label("Name").fill("ui-made client")
    page.get_by_label("Scope").select_option("client")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("New secret")
    expect(secret).to_have_value(re.compile(r"^ak_"))
    key = secret.input_value()
    expect(page.locator("#keys tbody tr").first).to_contain_text("ui-made client")
    assert httpx.get(ui_service.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    page.get_by_label("Note").fill("ui-made token")
    page.get_by_role("button", name="Create join token").click()
    expect(secret).to_have_value(re.compile(r"^jt_"))
    page.reload()
    page.get_by_role("button", name="Revoke ui-made client").click()
    expect(page.locator("#status")).to_have_text("Revoked.")
    assert httpx.get(ui_service.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    page.get_by_role("button", name="Revoke ui-made token").click()
    expect(page.locator("#tokens tr", has_text="ui-made token")).to_contain_text("revoked")
    tokens = ui_service.get("/v1/join-tokens")
    assert next(t for t in tokens if t["note"] == "ui-made token")["revoked_at"] is not None
    # A forged state change without the session's CSRF token is refused, even with the cookie.
    forged = page.request.post(
        ui_service.url + "/ui/api/keys",
        data=json.dumps({"scope": "admin"}),
        headers={"Content-Type": "application/json"},
    )
    assert forged.status == 403
