"""Fixtures for the browser tests: the embedded service (`serve` with its local worker) on a
store holding generated profiles plus real lm-tiny measurements, and headless system Chromium
at a desktop (1440×900) and a phone (390×844) size."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from e2e_stack import free_port, wait_for

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
TINY = "zoo:lm-tiny"
EMBEDDED_DEFAULTS = ("ACCEL_MODE", "ACCEL_DATABASE_URL", "ACCEL_BROKER_URL", "ACCEL_RESULT_BACKEND", "ACCEL_SECRET_KEY")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@dataclass(frozen=True)
class Service:
    url: str
    admin_key: str
    local_node: str
    data_dir: Path

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def get(self, path: str, **params):
        response = httpx.get(self.url + path, headers=self.headers(), params=params, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: dict):
        response = httpx.post(self.url + path, headers=self.headers(), json=body, timeout=60)
        assert response.status_code in (200, 201, 202), response.text
        return response.json()

    def finished_job(self, job_id: str, timeout: float) -> dict:
        def done():
            job = self.get(f"/v1/jobs/{job_id}")
            return job if job["state"] in ("succeeded", "failed", "cancelled") else None

        return wait_for(done, timeout, f"job {job_id}", every=0.5)


def _generated_profiles(path: Path) -> None:
    """A small generated grid from machines that are not in this pool (so their nodes have left)."""
    from advisor.synthetic import synthetic_records
    from profiles.transfer import write_records

    records = [
        {**r, "node": {**r["node"], "status": "left"}}
        for r in synthetic_records(n_models=4, n_workloads=2, n_hardware=2)
    ]
    with path.open("w") as out:
        write_records(records, out, "jsonl")


def _run_cli(env: dict, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "api", *args], env=env, check=True, capture_output=True, timeout=300)


def _measure_tiny(service: Service) -> None:
    """Real lm-tiny profiles from the local worker, measured while serve trains its first advisor
    (on the generated grid it found at start). The shipped grid is imported by the test that
    times the leaderboard on it, so the advisor trainings here stay small."""
    job = service.post(
        "/v1/profiling-jobs",
        {
            "models": [TINY],
            "methods": ["baseline", "quant.int8_dynamic"],
            "workloads": [{"batch_size": 1, "prompt_len": 16, "gen_len": 8}],
        },
    )
    assert service.finished_job(job["id"], 300)["state"] == "succeeded"

    def trained():
        return any(v["active"] for v in service.get("/v1/advisor/versions"))

    wait_for(trained, 300, "the first advisor", every=1)


@pytest.fixture(scope="module")
def ui_service(tmp_path_factory, zoo_cache):
    root = tmp_path_factory.mktemp("ui-service")
    inherited = {k: v for k, v in os.environ.items() if k not in EMBEDDED_DEFAULTS}  # the embedded default store
    env = dict(
        inherited,
        ACCEL_DATA_DIR=str(root / "data"),
        ACCEL_CACHE_DIR=str(zoo_cache),
        ACCEL_PORT=str(free_port()),
        ACCEL_HEARTBEAT_INTERVAL_S="1",
        ACCEL_RETRAIN_EVERY_N="100000",
        TORCHINDUCTOR_CACHE_DIR=str(zoo_cache / "inductor"),
    )
    grid = root / "generated.jsonl"
    _generated_profiles(grid)
    _run_cli(env, "db", "upgrade")
    _run_cli(env, "profiles", "import", str(grid))  # a store with profiles: serve imports no shipped grid
    log = (root / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{env['ACCEL_PORT']}"
    try:
        key_file = root / "data" / "admin_key"
        wait_for(lambda: proc.poll() is not None or (key_file.exists() and _healthy(url)), 90, "serve")
        assert proc.poll() is None, (root / "serve.log").read_text()[-3000:]
        service = Service(url, key_file.read_text().strip(), "", root / "data")
        nodes = wait_for(
            lambda: [n for n in service.get("/v1/workers") if n["status"] == "online"], 90, "the local worker"
        )
        service = Service(url, service.admin_key, nodes[0]["id"], root / "data")
        wait_for(
            lambda: _consuming(root / "data" / "broker.db", nodes[0]["hardware_class"]),
            60,
            "the local worker to declare its queues",
        )
        _measure_tiny(service)
        yield service
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _consuming(broker_db: Path, hardware_class: str) -> bool:
    """The worker has declared its class queue in the embedded broker. Publishing before that
    races the worker's own declaration of the same queue (kombu's SQLAlchemy transport can then
    fail the API's request with a unique-constraint error)."""
    from api.routes.workers import queue_name

    if not broker_db.exists():
        return False
    with closing(sqlite3.connect(f"file:{broker_db}?mode=ro", uri=True)) as db:
        try:
            names = {row[0] for row in db.execute("SELECT name FROM kombu_queue")}
        except sqlite3.OperationalError:  # the table is not there yet
            return False
    return queue_name("class", hardware_class) in names


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium (.ci/run does)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    """A fresh context (no cookies) at 1440×900 that may use the clipboard; a screenshot named
    after the test when it ends. Scripts that fail on a page fail the test."""
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, f"script errors on the page: {errors}"


def shot(page, name: str, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def on_phone(page, name: str) -> None:
    """The page saved as it is (1440×900), then at 390×844: saved again, and nothing wider than the
    screen (no sideways page scroll)."""
    shot(page, name)
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(100)  # one layout pass
    shot(page, f"{name}_phone")
    width = page.evaluate("document.documentElement.scrollWidth")
    page.set_viewport_size(DESKTOP)
    assert width <= PHONE["width"], f"{name}: the page is {width} px wide on a {PHONE['width']} px phone"


def on_screen(page, locator) -> bool:
    """The element's box lies inside the viewport horizontally (seen without scrolling sideways)."""
    box = locator.bounding_box()
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"] + 0.5


def confirm(page, expect_text: str | None = None, accept: bool = True) -> None:
    """Answers the page's confirmation dialog (after checking what it warns about)."""
    from playwright.sync_api import expect

    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    if expect_text:
        expect(dialog).to_contain_text(expect_text)
    dialog.locator("#confirm-yes" if accept else "button[value=no]").click()
    expect(dialog).to_be_hidden()


def log_in(page, service: Service) -> None:
    page.goto(service.url + "/ui/login")
    page.get_by_label("Admin API key").fill(service.admin_key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(service.url + "/ui/")
