# ruff: noqa: F811  (the fixtures are imported from ui_fixtures: tests/e2e/conftest.py is shared)
"""The admin UI in headless system Chromium against the embedded service (serve + local worker),
each page at 1440×900 and at 390×844: login and logout, the dashboard, a profiling grid followed
on its job page and cancelled, the playground to a finished run and its run page (measured beside
predicted), the leaderboard on the shipped grid (sorted, searched, through its URL), retraining
with live stages, two versions compared (and scored on the same folds) and a roll back, keys and
tokens with confirmations, a model of one's own registered from its folder with its zero-shot advice and "Profile it".
Each test leaves screenshots in test-artifacts/screenshots/."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import statistics
import subprocess
import sys

import httpx
import pytest
from playwright.sync_api import expect
from ui_fixtures import (  # noqa: F401  (fixtures)
    ARTIFACTS,
    TINY,
    browser,
    confirm,
    log_in,
    on_phone,
    on_screen,
    page,
    shot,
    ui_service,
)

pytestmark = pytest.mark.slow
LM_DEFAULT = {"batch_size": 1, "prompt_len": 32, "gen_len": 32}  # the decoder family's cheapest workload
RAW_KEYS = re.compile(r"\b(top1_tol|ndcg3|sbs|isac|lightgbm_rank|gap_closed)\b")


def test_a_stranger_is_sent_to_the_login_page(ui_service, page):
    for path in ("/ui/", "/ui/profiles", "/ui/access", "/ui/jobs/anything"):
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
    on_phone(page, "login")


def test_dashboard_links_and_logout(ui_service, page):
    log_in(page, ui_service)
    cookie = next(c for c in page.context.cookies() if c["name"] == "accel_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert ui_service.admin_key.split("_")[2] not in cookie["value"]  # the secret never leaves the server
    expect(page.locator("#nodes tbody tr", has_text="local")).to_contain_text("online")
    stored = ui_service.get("/v1/profiles", limit=1)["total"]
    expect(page.locator("#profile-count")).to_have_text(str(stored))
    active = ui_service.get("/v1/advisor/evaluation")["advisor_version"]
    expect(page.locator("#advisor-version")).to_have_attribute("data-id", active)
    expect(page.locator("#advisor-tile")).to_contain_text("top-1 within 3 %")  # the figure, named as it is
    first_job = page.locator("table.jobs tbody tr").first
    job_id = first_job.get_attribute("data-job")
    first_job.get_by_role("link").first.click()  # every job row opens its own page
    expect(page).to_have_url(re.compile(rf"/ui/(jobs|runs)/{job_id}$"))
    page.go_back()
    page.keyboard.press("Tab")  # the first stop is the skip link, and it lands on the content
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    on_phone(page, "dashboard")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(ui_service.url + "/ui/login")
    page.goto(ui_service.url + "/ui/")
    expect(page).to_have_url(ui_service.url + "/ui/login")


def test_methods_catalogue_has_every_seed_paper(ui_service, page):
    log_in(page, ui_service)
    page.get_by_role("link", name="Methods").click()
    expect(page.locator("#methods tbody tr")).to_have_count(89)
    int8 = page.locator("#methods tbody tr", has_text="quant.int8_dynamic")
    expect(int8).to_contain_text("implemented")
    local_class = next(n["hardware_class"] for n in ui_service.get("/v1/workers") if n["id"] == ui_service.local_node)
    expect(int8).to_contain_text(local_class)  # profiled on this machine's class by the fixture
    expect(page.locator('#methods tbody tr[data-status="not a method"]').first).to_contain_text("Serves as")
    page.get_by_label("Filter rows").fill("ScaleLong")
    expect(page.locator("#methods tbody tr:visible")).to_have_count(1)
    on_phone(page, "methods")


def test_profiling_grid_on_its_job_page_then_cancelled(ui_service, page):
    log_in(page, ui_service)
    page.get_by_role("link", name="Jobs").click()
    page.get_by_label("Models").select_option([TINY])
    page.get_by_label("Methods").select_option(["baseline", "quant.int8_dynamic"])
    page.get_by_label("Generation lengths").fill("5, 6, 7, 9, 10, 11")
    page.get_by_role("button", name="Start the grid").click()
    expect(page.locator("#status")).to_contain_text("6 items")
    job_id = page.locator("#status").inner_text().split()[1].rstrip(":")
    page.locator(f'#job-list tr[data-job="{job_id}"]').get_by_role("link").first.click()
    expect(page).to_have_url(f"{ui_service.url}/ui/jobs/{job_id}")
    items = page.locator("#items tbody tr[data-item]")
    expect(items).to_have_count(6)
    # Live, without a reload: an item is claimed, says its stage, and finishes with its profiles.
    expect(page.locator('#items tr[data-state="running"] .stage').first).to_be_visible(timeout=60_000)
    done = page.locator('#items tr[data-state="done"]').first
    expect(done).to_be_visible(timeout=120_000)
    expect(done).to_contain_text(ui_service.local_node[:8])
    expect(done.get_by_role("link", name=re.compile(r"\d+ profiles?"))).to_be_visible()
    on_phone(page, "job")
    page.get_by_role("button", name="Cancel this job").click()
    confirm(page, "profiles already stored stay", accept=False)  # "Keep it": nothing happens
    assert ui_service.get(f"/v1/profiling-jobs/{job_id}")["state"] == "running"
    page.get_by_role("button", name="Cancel this job").click()
    confirm(page, "Cancel job")
    expect(page.locator("#job-state")).to_have_text("cancelled")
    job = ui_service.get(f"/v1/profiling-jobs/{job_id}")
    assert job["state"] == "cancelled" and job["done"] < job["total"] == 6
    expect(page.locator("#items tbody")).not_to_contain_text("claimed, starting")  # no stage on a cancelled job
    shot(page, "job_cancelled")
    page.goto(ui_service.url + "/ui/jobs")
    expect(page.locator(f'#job-list tr[data-job="{job_id}"] td[data-label="Running on"]')).to_have_text("–")


def test_playground_run_and_its_page_measured_beside_predicted(ui_service, page):
    log_in(page, ui_service)
    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Model").select_option(TINY)
    page.get_by_label("Node").select_option(ui_service.local_node)
    page.get_by_label("Prompts for the run").fill("def main():\n    import os")
    page.get_by_role("button", name="Recommend").click()
    candidates = page.locator("#candidates tbody tr")
    expect(candidates.first.get_by_role("button")).to_be_enabled()
    assert candidates.count() > 1 and "×" in candidates.first.locator("td").nth(1).inner_text()  # with its interval
    why = page.locator("#candidates").inner_text()
    assert "model.d." not in why and "0.00000" not in why  # reasons in words, no fake-precise zero cost
    on_phone(page, "playground")
    page.set_viewport_size({"width": 390, "height": 844})  # the key columns of a candidate on a phone
    card = candidates.first
    for label in ("Method", "Speed-up", "Quality", "Run"):
        assert on_screen(page, card.locator(f'[data-label="{label}"]')), label
    page.set_viewport_size({"width": 1440, "height": 900})
    method = "quant.int8_dynamic"  # measured on this machine's class, and it runs in seconds
    row = candidates.filter(has=page.get_by_role("rowheader", name=method, exact=True)).first
    row.get_by_role("button", name=f"Run {method}").click()
    expect(page.locator("#run-state")).to_have_text("succeeded", timeout=180_000)
    outputs = page.locator("#run-body pre.generated")
    expect(outputs).to_have_count(2)
    assert not outputs.first.inner_text().startswith('"')  # text, not a JSON-quoted string
    verdicts = page.locator("#verdicts tbody tr")
    expect(verdicts).to_have_count(2)
    speedup = verdicts.filter(has_text="Speed-up")
    expect(speedup.locator('[data-label="Verdict"]')).to_have_text(re.compile(r"^(hit|miss: above|miss: below)$"))
    run_id = page.locator("#run-link").get_attribute("href").rsplit("/", 1)[1]
    run = ui_service.get(f"/v1/runs/{run_id}")
    assert run["method"] == method and len(run["outputs"]["texts"]) == 2 and run["figures"]
    measured = next(f["speedup"] for f in run["figures"] if f["method_id"] == method)  # not its baseline
    expect(speedup.locator('[data-label="Measured"]')).to_have_text(f"{measured:.2f}×")
    page.get_by_role("link", name="open its page").click()
    expect(page).to_have_url(f"{ui_service.url}/ui/runs/{run_id}")
    expect(page.locator("#verdicts")).to_contain_text(f"{measured:.2f}×")
    expect(page.locator("#run-config")).to_contain_text(method)
    assert page.locator("pre.generated").first.inner_text() == run["outputs"]["texts"][0]
    on_phone(page, "run")


def test_a_rest_run_of_a_named_method_shows_the_prediction_beside_the_measurement(ui_service, page):
    method = "quant.int8_dynamic"
    body = {"model": TINY, "prompts": ["def main():"], "method": method, "node": ui_service.local_node}
    run = ui_service.post("/v1/runs", {**body, "measure": True, "max_new_tokens": 8})  # over REST, not the UI
    predicted = run["prediction"]
    assert predicted is not None and predicted["method_id"] == method, run["no_prediction"]
    log_in(page, ui_service)
    page.goto(f"{ui_service.url}/ui/runs/{run['id']}")
    # While it runs (a measured run takes seconds): its stage, and the prediction already on the page.
    expect(page.locator("#run-stage .stage")).to_be_visible()
    expect(page.locator('#verdicts tbody tr[data-key="speedup"] [data-label="Verdict"]')).to_have_text(
        "waiting for the run"
    )
    expect(page.locator("#run-state")).to_have_text("succeeded", timeout=180_000)  # live, without a reload
    expect(page.locator("#predicted-by code").first).to_have_attribute("title", predicted["advisor_version"])
    speedup = page.locator('#verdicts tbody tr[data-key="speedup"]')
    low, high = predicted["speedup_interval"]
    shown = f"{predicted['speedup']:.2f}× ({low:.2f}–{high:.2f}×)"
    expect(speedup.locator('[data-label="Predicted"]')).to_have_text(shown)
    figures = ui_service.get(f"/v1/runs/{run['id']}")["figures"]
    measured = next(f["speedup"] for f in figures if f["method_id"] == method)  # not its baseline
    expect(speedup.locator('[data-label="Measured"]')).to_have_text(f"{measured:.2f}×")
    verdict = "hit" if low <= measured <= high else "miss: above" if measured > high else "miss: below"
    expect(speedup.locator('[data-label="Verdict"]')).to_have_text(verdict)
    quality = page.locator('#verdicts tbody tr[data-key="quality_delta"]')
    expect(quality.locator('[data-label="Predicted"]')).to_contain_text(" %")
    expect(page.locator("#no-prediction")).to_have_count(0)
    on_phone(page, "run_rest")
    # A method the active advisor has no profile of: the page says why there is no prediction.
    unknown = ui_service.post("/v1/runs", {**body, "method": "quant.weight_only_int4", "max_new_tokens": 4})
    assert unknown["prediction"] is None
    page.goto(f"{ui_service.url}/ui/runs/{unknown['id']}")
    expect(page.locator("#no-prediction")).to_contain_text("trained on no profile of quant.weight_only_int4")
    expect(page.locator("#verdicts")).to_have_count(0)
    shot(page, "run_unpredicted")
    ui_service.finished_job(unknown["id"], 180)  # the local worker is free for the tests that follow


def test_retrain_with_stages_then_compare_and_roll_back(ui_service, page):
    log_in(page, ui_service)
    page.get_by_role("link", name="Advisor").click()
    table = page.locator('table.evaluation[data-split="model"]')
    for name in ("Single best method", "Oracle", "This advisor", "Nearest neighbours"):
        expect(table.locator("tbody th", has_text=name).first).to_be_visible()
    assert not RAW_KEYS.search(page.locator("main").inner_text())  # words, not the report's keys
    expect(page.locator("#eval-chart .main-svg").first).to_be_attached()
    tables = json.loads(page.locator("#eval-data").inner_text())["tables"]
    below = [r["gap_closed"] for rows in tables.values() for r in rows if r.get("gap_closed", 0) < -1]
    if below:  # clipped at -1, each such bar labelled with its value
        expect(page.locator("#eval-chart")).to_contain_text(f"{min(below):.2f} ↓")
    expect(page.locator("#importance tbody tr")).not_to_have_count(0)
    before = page.locator("#versions tbody tr").count()
    first = ui_service.get("/v1/advisor/evaluation")["advisor_version"]
    page.get_by_label("activate it even if it is worse").check()  # so the roll back below has a target
    page.get_by_role("button", name="Retrain the advisor").click()
    stage = page.locator("#training-box .stage")
    expect(stage).to_be_visible()  # the stage and the time so far, streamed from the training thread
    expect(page.locator("#training-box")).to_contain_text("so far")
    seen = {stage.inner_text()}
    expect(page.locator("#status")).to_contain_text("Training finished", timeout=300_000)
    seen.add(page.locator("#status").inner_text())
    page.reload()
    expect(page.locator("#versions tbody tr")).to_have_count(before + 1)
    newest = page.locator("#versions tbody tr").first
    expect(newest.locator('[data-label="Same folds"]')).to_contain_text("mean regret")  # scored on the same folds
    on_phone(page, "advisor")
    page.get_by_role("link", name="Compare two versions side by side").click()
    expect(page.locator("#compare-versions tbody tr")).to_have_count(2)
    expect(page.locator("#gate")).to_contain_text("was trained, both it and")  # the gate's comparison
    expect(page.locator("table.side-by-side").first.locator("tbody tr.ours")).to_contain_text("This advisor")
    # Any pair can be scored on today's profiles; the page then shows that result and says when.
    page.get_by_role("button", name="Score both on today's profiles").click()
    expect(page.locator("#gate")).to_contain_text("Scored", timeout=120_000)
    expect(page.locator("#paired tbody tr")).to_have_count(2)
    expect(page.locator("#paired")).to_contain_text("(newer)")
    expect(page.get_by_role("button", name="Score both again")).to_have_count(0)  # nothing stored since
    on_phone(page, "compare")
    page.get_by_role("link", name="← advisor").click()
    rollback = page.get_by_role("button", name=re.compile(r"^Roll back to v\d+$"))
    rollback.click()
    confirm(page, "Every recommendation")
    expect(page.locator("#versions tr.ours")).to_contain_text(first[-10:][:8])
    assert ui_service.get("/v1/advisor/evaluation")["advisor_version"] == first
    assert seen  # at least one stage was on screen while it trained
    # A pair the gate never compared (the newest was trained without a gate): scored on the same folds on request.
    _cli(ui_service, "advisor", "train", "--size", "small", "--no-evaluate", "--no-activate")
    versions = [v["id"] for v in reversed(ui_service.get("/v1/advisor/versions"))]  # oldest first: v1, v2, …
    ungated = versions[-1]
    page.goto(ui_service.url + "/ui/advisor/compare")
    page.get_by_label("First version").select_option(first)
    page.get_by_label("Second version").select_option(ungated)
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(page).to_have_url(re.compile(rf"a={first}&b={ungated}$"))
    expect(page.locator("#unscored")).to_contain_text("Neither version was trained while the other was active")
    page.get_by_role("button", name="Score both on today's profiles").click()
    stored = _stored(ui_service)
    expect(page.locator("#gate")).to_contain_text(f"on the {stored} profiles stored then", timeout=120_000)
    rows = page.locator("#paired tbody tr")
    expect(rows).to_have_count(2)
    for row, version in ((rows.nth(0), ungated), (rows.nth(1), first)):  # newer first
        expect(row).to_have_attribute("data-version-number", str(versions.index(version) + 1))
        regret = float(row.locator('[data-label="Mean regret"]').inner_text())
        assert regret >= 1.0  # a regret ratio: the oracle's choice scores 1
    shot(page, "compare_ungated")


def test_access_confirmations_copy_and_token_states(ui_service, page):
    log_in(page, ui_service)
    page.get_by_role("link", name="Access").click()
    page.get_by_label("Name").fill("ui-made client")
    page.get_by_label("Scope").select_option("client")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("New secret")
    expect(secret).to_have_value(re.compile(r"^ak_"))
    key = secret.input_value()
    page.get_by_role("button", name="Copy", exact=True).click()
    expect(page.locator("#secret-copied")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == key
    row = page.locator("#keys tbody tr", has_text="ui-made client")  # a complete row, without a reload
    expect(row.locator('[data-label="Scope"]')).to_have_text("client")
    expect(row.get_by_role("button", name="Revoke ui-made client")).to_be_visible()
    assert httpx.get(ui_service.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    row.get_by_role("button", name="Revoke ui-made client").click()
    confirm(page, "cannot be undone", accept=False)
    assert httpx.get(ui_service.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    row.get_by_role("button", name="Revoke ui-made client").click()
    confirm(page, "cannot be undone")
    expect(row.locator('[data-label="State"]')).to_contain_text("revoked")
    assert httpx.get(ui_service.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    # Join tokens say when they can no longer be used: expired, used up.
    page.get_by_label("Note").fill("ui-short-lived")
    page.get_by_label("Lifetime (hours)").fill("0.01")  # 36 s, the shortest a token may live; checked last
    page.get_by_role("button", name="Create join token").click()
    expect(secret).to_have_value(re.compile(r"^jt_"))
    once = ui_service.post("/v1/join-tokens", {"note": "ui-one-use", "max_uses": 1})
    joined = httpx.post(
        ui_service.url + "/v1/workers/join",
        json={"join_token": once["token"], "node_id": "ui-token-check", "hardware_class": "cpu-ui-check-t1"},
        timeout=30,
    )
    assert joined.status_code == 201, joined.text
    httpx.post(ui_service.url + "/v1/workers/leave", headers={"Authorization": f"Bearer {joined.json()['worker_key']}"})
    tokens = page.locator("#tokens tbody")
    expect(tokens.locator("tr", has_text="ui-one-use")).to_have_attribute("data-state", "used up", timeout=15_000)
    expect(tokens.locator("tr", has_text="ui-short-lived")).to_have_attribute("data-state", "active")
    on_phone(page, "access")
    # Revoking the key this browser is logged in with warns first, then ends the session.
    second = ui_service.post("/v1/keys", {"scope": "admin", "name": "ui-revoked-while-logged-in"})
    page.context.clear_cookies()
    page.goto(ui_service.url + "/ui/login")
    page.get_by_label("Admin API key").fill(second["key"])
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Access").click()
    page.get_by_role("button", name="Revoke ui-revoked-while-logged-in").click()
    confirm(page, "this browser is logged in with")
    expect(page).to_have_url(ui_service.url + "/ui/login")
    # A forged state change without the session's CSRF token is refused, even with the cookie.
    log_in(page, ui_service)
    forged = page.request.post(
        ui_service.url + "/ui/api/keys",
        data=json.dumps({"scope": "admin"}),
        headers={"Content-Type": "application/json"},
    )
    assert forged.status == 403
    page.get_by_role("link", name="Access").click()
    short_lived = page.locator("#tokens tbody tr", has_text="ui-short-lived")
    expect(short_lived).to_have_attribute("data-state", "expired", timeout=60_000)  # live, without a reload
    expect(short_lived.get_by_role("button", name=re.compile("^Revoke"))).to_have_count(0)  # nothing to revoke


def test_models_register_a_folder_get_zero_shot_advice_and_profile_it(ui_service, page):
    from hf_fixtures import save_decoder

    folder = ui_service.data_dir / "models" / "ui-llama"  # under the service's default model root
    reference = save_decoder("llama", folder)  # a random Llama with its tokenizer.json: never profiled
    model_id = f"local:{folder.resolve()}"
    registered = {m["id"] for m in ui_service.get("/v1/models")}
    log_in(page, ui_service)
    page.get_by_role("link", name="Models", exact=True).click()
    expect(page.get_by_role("alert")).to_have_count(0)  # the empty alert region is not announced
    # A path out of the root: the API's own refusal in the alert region, and nothing registered.
    page.get_by_label("Folder under the model root", exact=True).fill("../etc")
    page.get_by_role("button", name="Register", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("may be registered only from under the model root")
    assert {m["id"] for m in ui_service.get("/v1/models")} == registered
    expect(page.locator("#advice")).to_be_hidden()

    page.get_by_label("Folder under the model root", exact=True).fill("ui-llama")
    page.get_by_role("button", name="Register", exact=True).click()
    # The first registration loads the families' config readers in the service: seconds on a busy machine.
    expect(page.locator("#status")).to_have_text(f"Registered {model_id}.", timeout=60_000)
    expect(page.get_by_role("alert")).to_have_count(0)  # the earlier refusal is cleared
    rows = page.locator("#models tbody tr")
    expect(rows.first).to_have_attribute("data-model", model_id)  # newest first, without a reload
    row = page.locator(f'#models tbody tr[data-model="{model_id}"]')
    expect(row.locator('[data-label="Family"]')).to_have_text("decoder-lm")
    params = sum(p.numel() for p in reference.parameters())
    expect(row.locator('[data-label="Parameters"]')).to_have_attribute("data-value", str(params))
    expect(row.locator('[data-label="Weights"]')).to_have_text("yes")
    expect(row.locator('[data-label="Profiled"]')).to_have_text("not profiled")
    tiny_profiles = ui_service.get("/v1/profiles", model_id=TINY, limit=1)["total"]
    tiny = page.locator(f'#models tbody tr[data-model="{TINY}"]')
    expect(tiny.locator('[data-label="Profiled"]')).to_have_text(f"{tiny_profiles} profiles")

    # Its advice at once, on the family's default workload: the REST answer, flagged zero-shot.
    rest = ui_service.post("/v1/recommendations", {"model": model_id, "workload": LM_DEFAULT, "top_k": 8})
    assert rest["zero_shot"] is True and rest["make_sure"] is not None
    advice = page.locator("#advice")
    expect(advice.locator("#advice-model")).to_have_text("ui-llama", timeout=30_000)
    expect(advice.locator("#zero-shot")).to_be_visible()
    expect(advice.locator("#zero-shot")).to_contain_text("zero-shot: no record of this model")
    expect(advice.locator("#advice-task")).to_contain_text("batch 1 · 32-token prompt · 32 new tokens")
    candidates = advice.locator("#advice-candidates tbody tr")
    expect(candidates).to_have_count(len(rest["candidates"]))
    predicted = next(i for i, c in enumerate(rest["candidates"]) if c["basis"] in ("guarded", "interpolated"))
    shown, expected = candidates.nth(predicted), rest["candidates"][predicted]
    expect(shown.locator("th")).to_contain_text(expected["method_id"])
    expect(shown.locator('[data-label="Speed-up"]')).to_have_text(re.compile(rf"^{expected['speedup']:.2f}× \("))
    expect(shown.locator('[data-label="Basis"]')).to_have_attribute("data-basis", expected["basis"])
    expect(candidates.first.locator("th")).to_contain_text(rest["candidates"][0]["method_id"])  # in the API's order
    expect(page.locator("#make-sure-what")).to_contain_text(", ".join(rest["make_sure"]["measures"]))
    on_phone(page, "models")
    page.set_viewport_size({"width": 390, "height": 844})  # a candidate's key figures on a phone's screen
    for label in ("Method", "Speed-up", "Basis"):
        assert on_screen(page, candidates.first.locator(f'[data-label="{label}"]')), label
    page.set_viewport_size({"width": 1440, "height": 900})

    page.get_by_role("button", name="Profile it").click()
    link = page.locator("#profile-job-link")
    expect(link).to_be_visible(timeout=30_000)  # the job is planned from a fresh recommendation
    job_id = link.get_attribute("title")
    job = ui_service.get(f"/v1/profiling-jobs/{job_id}")
    assert job["kind"] == "profiling" and job["state"] in ("queued", "running") and job["total"] >= 1
    # Cancelled before any item finishes: the local worker is free for what follows, and no retrain starts.
    cancelled = httpx.delete(f"{ui_service.url}/v1/profiling-jobs/{job_id}", headers=ui_service.headers(), timeout=30)
    assert cancelled.status_code == 200, cancelled.text
    link.click()
    expect(page).to_have_url(f"{ui_service.url}/ui/jobs/{job_id}")
    items = page.locator("#items tbody tr[data-item]")
    expect(items).to_have_count(job["total"])
    expect(items.first.locator('[data-label="Task"]')).to_contain_text(model_id)
    methods = items.first.locator('[data-label="Methods"]').inner_text().split(", ")
    assert sorted(methods) == sorted(rest["make_sure"]["measures"])  # the baseline and the offered top candidates

    # A config.json alone: listed without weights, advice zero-shot, and nothing to profile.
    page.goto(ui_service.url + "/ui/models")
    page.get_by_role("radio", name=re.compile("^a config.json")).check()
    expect(page.get_by_label("Folder under the model root", exact=True)).to_be_hidden()
    page.get_by_label("config.json file", exact=True).set_input_files(str(folder / "config.json"))
    page.get_by_label("Name (optional)").fill("ui-config-llama")
    page.get_by_role("button", name="Register", exact=True).click()
    expect(page.locator("#status")).to_have_text("Registered config:ui-config-llama.", timeout=30_000)
    config_row = page.locator('#models tbody tr[data-model="config:ui-config-llama"]')
    expect(config_row.locator('[data-label="Weights"]')).to_have_text("no: config.json only")
    expect(page.locator("#advice-model")).to_have_text("ui-config-llama")
    expect(page.locator("#zero-shot")).to_be_visible()
    expect(page.locator("#advice-candidates tbody tr").first).to_be_visible()
    expect(page.get_by_role("button", name="Profile it")).to_have_count(0)  # no weights: no job to offer
    # A model the advisor was trained on: its advice carries no zero-shot flag.
    listed = [m["id"] for m in ui_service.get("/v1/models")]
    known = next(
        m
        for m in listed
        if m not in (model_id, "config:ui-config-llama")
        and not ui_service.post("/v1/recommendations", {"model": m, "workload": LM_DEFAULT})["zero_shot"]
    )
    known_row = page.locator(f'#models tbody tr[data-model="{known}"]')
    known_row.get_by_role("button", name=re.compile("^Advice for")).click()
    expect(page.locator("#advice")).to_have_attribute("data-model", known)
    expect(page.locator("#advice-candidates tbody tr").first).to_be_visible()
    expect(page.locator("#zero-shot")).to_be_hidden()
    # A file that is not JSON is refused in the alert region, and nothing is registered.
    bad = folder.parent / "not-a-config.json"
    bad.write_text("{not json")
    page.get_by_label("config.json file", exact=True).set_input_files(str(bad))
    page.get_by_label("Name (optional)").fill("ui-broken")
    page.get_by_role("button", name="Register", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("not-a-config.json is not valid JSON")
    assert "config:ui-broken" not in {m["id"] for m in ui_service.get("/v1/models")}


# Last in the module: it imports the shipped grid, which would make the retraining above ten times slower.
def test_leaderboard_on_the_shipped_grid(ui_service, page):
    from api.embedded import shipped_profiles

    shipped = shipped_profiles()
    assert shipped is not None, "the seed grid ships inside profiles/data"
    # Imported here, after the fixture's trainings: the leaderboard is timed on the whole shipped grid.
    _import(ui_service, shipped)
    log_in(page, ui_service)
    task = _first_task(ui_service, "zoo:lm-16m")
    base = f"{ui_service.url}/ui/profiles?model={task['model']}&hardware={task['hardware']}&workload={task['workload']}"
    built = []
    for _ in range(3):  # the page's own marks: navigation start → table and heatmap built
        page.goto(base)
        expect(page.locator("body[data-ready=leaderboard]")).to_be_attached()
        built.append(page.evaluate("performance.getEntriesByName('leaderboard-ready')[0].startTime"))
    _report({"profiles_page_build_ms": built, "median_ms": statistics.median(built), "runs": _stored(ui_service)})
    board = page.locator("#leaderboard")
    expect(board.locator("tbody tr")).to_have_count(task["runs"])
    speedups = [
        float(v)
        for v in board.locator('tbody td[data-col="speedup"]').evaluate_all(
            "cells => cells.map(c => c.dataset.value).filter(v => v !== '')"
        )
    ]
    assert speedups == sorted(speedups, reverse=True)  # sorted by speed-up, best first
    board.get_by_role("button", name=re.compile("^Latency p50")).click()  # sort by a column
    expect(page).to_have_url(re.compile(r"sort=latency&dir=desc"))
    board.get_by_role("button", name=re.compile("^Latency p50")).click()
    expect(page).to_have_url(re.compile(r"sort=latency&dir=asc"))
    latencies = [
        float(v)
        for v in board.locator('tbody td[data-col="latency"]').evaluate_all(
            "cells => cells.map(c => c.dataset.value).filter(v => v !== '')"
        )
    ]
    assert latencies == sorted(latencies)
    # The view is in the URL: a copied link opens the same filtered, sorted table with the same columns.
    shared = f"{base}&q=quant&sort=memory&dir=asc&cols=speedup,quality,memory"
    page.goto(shared)
    visible = board.locator("tbody tr:visible")
    expect(visible.first).to_be_visible()
    assert all("quant" in t for t in visible.locator("th").all_inner_texts())
    assert visible.count() < task["runs"]
    expect(board.locator('thead th[data-col="latency"]')).to_be_hidden()
    expect(board.locator('thead th[data-col="memory"]')).to_be_visible()
    memory = [
        float(v) for v in visible.locator('td[data-col="memory"]').evaluate_all("c => c.map(x => x.dataset.value)")
    ]
    assert memory == sorted(memory)
    assert page.get_by_label("Search methods").input_value() == "quant"
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    assert {(r["model_id"], r["workload_id"], r["hardware_class"]) for r in rows} == {
        (task["model"], task["workload"], task["hardware"])
    }
    _heatmap_fits(page, ui_service)
    front = json.loads(page.locator("#scatter-data").inner_text())["front"]
    assert all(p["speedup"] >= 1 for p in front)  # a slower run is never on the Pareto front
    expect(page.locator("#scatter .main-svg").first).to_be_attached()  # Plotly drew, from the package
    shot(page, "leaderboard", full_page=False)
    page.goto(shared)
    page.set_viewport_size({"width": 390, "height": 844})
    first = board.locator("tbody tr:visible").first
    for column in ("method", "speedup", "quality"):  # the key columns stay on a phone's screen
        assert on_screen(page, first.locator(f'[data-col="{column}"]')), column
    page.set_viewport_size({"width": 1440, "height": 900})
    on_phone(page, "leaderboard")


def _heatmap_fits(page, ui_service) -> None:
    """Every method column inside the heatmap's box, grouped by family (no sideways scroll)."""
    heat = page.locator("#heatmap")
    methods = heat.locator(".heat-method")
    stored = _methods_measured(ui_service)
    assert set(methods.evaluate_all("c => c.map(x => x.dataset.method)")) == stored
    box = heat.bounding_box()
    last = methods.last.bounding_box()
    assert last["x"] + last["width"] <= box["x"] + box["width"] + 1
    assert page.evaluate(
        "document.getElementById('heatmap').scrollWidth <= document.getElementById('heatmap').clientWidth"
    )
    families = heat.locator(".heat-family").all_inner_texts()
    assert "quantization" in families and "combinations" in families and len(families) == len(set(families))
    page.get_by_role("rowheader").filter(has_text="zoo:lm-8m").first.click()  # a row opens that task's board
    expect(page).to_have_url(re.compile(r"model=zoo%3Alm-8m"))


def _import(service, path) -> None:
    _cli(service, "profiles", "import", str(path))


def _cli(service, *args: str) -> None:
    """The project's CLI on the service's own store (beside the running server, as an admin would)."""
    env = {**os.environ, "ACCEL_DATA_DIR": str(service.data_dir)}
    subprocess.run([sys.executable, "-m", "api", *args], env=env, check=True, timeout=300)


def _stored(service) -> int:
    return service.get("/v1/profiles", limit=1)["total"]


def _methods_measured(service) -> set[str]:
    methods, offset = set(), 0
    while True:
        page = service.get("/v1/profiles", status="ok", limit=1000, offset=offset)
        methods |= {r["method_id"] for r in page["items"] if r["speedup"] is not None}
        offset += 1000
        if offset >= page["total"]:
            return methods


def _first_task(service, model: str) -> dict:
    items = service.get("/v1/profiles", model_id=model, limit=1000)["items"]
    key = sorted({(r["workload_id"], r["hardware_class"]) for r in items})[0]
    runs = [r for r in items if (r["workload_id"], r["hardware_class"]) == key]
    return {"model": model, "workload": key[0], "hardware": key[1], "runs": len(runs)}


def _report(figures: dict) -> None:
    """Timings are reported, never asserted: printed and kept beside the screenshots."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "ui_timings.json").write_text(json.dumps(figures, indent=1))
    print("UI timings:", json.dumps(figures))
