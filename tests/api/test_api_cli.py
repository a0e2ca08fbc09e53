"""The `accel-advisor` command end to end, including a real uvicorn answering /healthz."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
from typer.testing import CliRunner

from api import __version__
from api.cli import app
from profiles.migrate import head_revision

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("version", "serve", "db", "profiles"):
        assert command in result.output


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == __version__


def test_db_upgrade_then_current_is_head():
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(app, ["db", "current"])
    assert result.exit_code == 0 and f"current={head_revision()} head={head_revision()}" in result.output


def test_profiles_import_export_list_round_trip(tmp_path, record_factory):
    source = tmp_path / "in.jsonl"
    records = [record_factory(i) for i in range(3)]
    source.write_text("".join(json.dumps(r) + "\n" for r in records))

    first = runner.invoke(app, ["profiles", "import", str(source)])
    assert first.exit_code == 0, first.output
    assert "imported 3 runs" in first.output
    again = runner.invoke(app, ["profiles", "import", str(source)])
    assert "imported 0 runs, skipped 3" in again.output

    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["profiles", "export", "--format", "csv", "-o", str(out)])
    assert result.exit_code == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and "run_id" in lines[0]
    assert {r["run_id"] for r in records} <= set(out.read_text().replace(",", " ").split())

    listed = runner.invoke(app, ["profiles", "list", "--limit", "5"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "zoo:lm-0" in listed.output


def test_import_of_a_bad_file_says_which_row_and_writes_nothing(tmp_path, record_factory):
    bad = record_factory(1)
    bad["status"] = "bogus"
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps(record_factory(0)) + "\n" + json.dumps(bad) + "\n")
    result = runner.invoke(app, ["profiles", "import", str(source)])
    assert result.exit_code == 2
    assert "row 2" in result.output and "nothing was written" in result.output
    out = runner.invoke(app, ["profiles", "export", "--format", "jsonl"])
    assert out.stdout.strip() == ""


def test_export_rejects_an_unknown_format():
    result = runner.invoke(app, ["profiles", "export", "--format", "xml"])
    assert result.exit_code == 2 and "jsonl" in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_starts_api_and_local_worker_on_the_embedded_default(isolated_data_dir):
    port = _free_port()
    env = dict(os.environ, ACCEL_PORT=str(port))
    server = subprocess.Popen(
        [sys.executable, "-m", "api", "serve"],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "server did not answer within 60 s"
                time.sleep(0.3)
        assert response.status_code == 200
        assert response.json()["status"] == "ok" and response.json()["schema"] == head_revision()
        docs = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5).json()
        assert "/healthz" in docs["paths"] and "/v1/runs" in docs["paths"]
        assert (isolated_data_dir / "accel.db").exists()  # the embedded default: a SQLite file
        admin_key = (isolated_data_dir / "admin_key").read_text().strip()
        headers = {"Authorization": f"Bearer {admin_key}"}
        while True:  # the local worker joins the pool by itself
            nodes = httpx.get(f"http://127.0.0.1:{port}/v1/workers", headers=headers, timeout=5).json()
            if [n["name"] for n in nodes if n["status"] == "online"] == ["local"]:
                break
            assert time.monotonic() < deadline + 60, nodes
            time.sleep(0.5)
        methods = httpx.get(f"http://127.0.0.1:{port}/v1/methods", headers=headers, timeout=5).json()
        assert {"baseline", "quant.int8_dynamic"} <= {m["id"] for m in methods}  # registry mirrored
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        output = server.communicate(timeout=60)[0]
    assert admin_key in output  # printed for the operator
