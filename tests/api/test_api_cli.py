"""The `accel-advisor` command end to end, including a real uvicorn answering /healthz."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
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


def _children(pid: int) -> list[int]:
    out = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(status.parent.name))
    return out


def _serve(port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, ACCEL_PORT=str(port), ACCEL_HEARTBEAT_INTERVAL_S="1", ACCEL_NODE_LOST_AFTER_S="30")
    with log.open("a") as out:  # a log file, as under systemd or docker: never a terminal
        return subprocess.Popen(
            [sys.executable, "-m", "api", "serve"],
            env=env,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except httpx.TransportError:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


@pytest.mark.slow
def test_serve_supervises_its_local_worker_and_keeps_the_admin_key_out_of_the_log(isolated_data_dir, tmp_path):
    """Defects 3 and 8: a killed local worker was never restarted, a restarted serve ran without one
    (409 for the old node id), and the admin key was printed into the log on every start."""
    port, log = _free_port(), tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    server = _serve(port, log)
    try:
        health = _wait(lambda: httpx.get(base + "/healthz", timeout=2).json(), 90, "serve to answer")
        assert health["schema"] == head_revision()
        docs = httpx.get(base + "/openapi.json", timeout=5).json()
        assert "/healthz" in docs["paths"] and "/v1/runs" in docs["paths"]
        assert (isolated_data_dir / "accel.db").exists()  # the embedded default: a SQLite file
        key_file = isolated_data_dir / "admin_key"
        admin_key = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        headers = {"Authorization": f"Bearer {admin_key}"}

        def local_node():
            nodes = httpx.get(base + "/v1/workers", headers=headers, timeout=5).json()
            online = [n for n in nodes if n["name"] == "local" and n["status"] == "online"]
            return online[0] if online else None

        node = _wait(local_node, 120, "the local worker to join")
        methods = httpx.get(base + "/v1/methods", headers=headers, timeout=5).json()
        assert {"baseline", "quant.int8_dynamic"} <= {m["id"] for m in methods}  # registry mirrored

        worker = _wait(lambda: _children(server.pid), 10, "the worker process")[0]
        os.kill(worker, signal.SIGKILL)
        _wait(lambda: [p for p in _children(server.pid) if p != worker], 30, "a new local worker process")
        assert worker not in _children(server.pid)  # reaped, not a zombie
        beat = node["last_heartbeat"]
        again = _wait(lambda: (n := local_node()) and n["last_heartbeat"] != beat and n, 120, "the restart to join")
        assert again["id"] == node["id"]  # it took over its own node: no 409

        os.killpg(server.pid, signal.SIGKILL)  # serve and its worker die at once
        server.wait(timeout=10)
        server = _serve(port, log)  # at once: the old node still counts as online
        _wait(lambda: httpx.get(base + "/healthz", timeout=2).json(), 90, "serve to answer again")
        restarted = _wait(
            lambda: (n := local_node()) and n["last_heartbeat"] > again["last_heartbeat"] and n, 120, "the takeover"
        )
        assert restarted["id"] == node["id"]
        assert httpx.get(base + "/healthz", timeout=5).json().get("local_worker") == "running"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    text = log.read_text()
    assert admin_key not in text and "admin_key" in text  # the log says where the key is, never the key
    assert 'HTTP/1.1" 409' not in text and "join refused" not in text
