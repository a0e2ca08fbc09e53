"""Fixtures for the multi-process tests: the tiny zoo LM, built once, and a real redis-server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from e2e_stack import free_port, wait_for


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory) -> Path:
    """The tiny zoo LM, trained once for every process of every e2e test."""
    from executors.zoo import build

    root = tmp_path_factory.mktemp("e2e-cache")
    build("lm-tiny", root)
    return root


@pytest.fixture
def redis_url(tmp_path):
    server = shutil.which("redis-server")
    if server is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install redis-server (.ci/run does)")
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    wait_for(lambda: _pings(redis.Redis.from_url(url)), 20, "redis-server")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _pings(client) -> bool:
    try:
        return client.ping()
    except Exception:
        return False
