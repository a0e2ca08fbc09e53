"""The soak's short form: bench/soak.py on Redis + PostgreSQL + 3 workers for one minute of faults
(a worker, Redis and the API each killed with SIGKILL at least once), then every planned item is
checked against the store. The 20-minute runs are quoted in docs/operations.md."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


@pytest.mark.slow
def test_the_short_soak_loses_nothing_duplicates_nothing_and_never_answers_5xx(tmp_path, zoo_cache):
    missing = [name for name in ("redis-server",) if shutil.which(name) is None]
    if missing or not os.environ.get("ACCEL_TEST_POSTGRES_URL"):
        if os.environ.get("CI"):
            pytest.fail("CI must provide redis-server and ACCEL_TEST_POSTGRES_URL (.ci/run does)")
        pytest.skip("needs redis-server and a PostgreSQL server (ACCEL_TEST_POSTGRES_URL)")
    out = tmp_path / "soak.json"
    args = ["--mode", "distributed", "--minutes", "1", "--fault-every-s", "5", "8", "--job-every-s", "20"]
    args += ["--items-per-job", "2", "--drain-minutes", "4", "--no-advisor-first", "--workdir", str(tmp_path / "soak")]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--cache-dir", str(zoo_cache), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.exists(), result.stderr[-3000:]
    report = json.loads(out.read_text())
    shown = json.dumps(report)  # pytest would elide a dict's middle, where the counts are
    assert set(report["faults"]) == {"worker", "redis", "api"}, shown
    assert report["drained"] and report["items"]["planned"] >= 4, shown
    assert report["items"]["done"] + report["items"]["failed"] == report["items"]["planned"], shown
    assert (report["lost"], report["duplicated"], report["requests"]["5xx"]) == (0, 0, 0), shown
    assert report["records_stored"] == 2 * report["items"]["done"], shown  # baseline + int8 per item
    assert result.returncode == 0, result.stderr[-3000:]
