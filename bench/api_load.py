"""Recommendation latency and throughput under concurrent load from loopback, next to a bare
FastAPI route served the same way in the same run. Prints JSON.

    python bench/api_load.py [--requests 400] [--concurrency 8] [--profiles FILE.jsonl.gz]

The store is a temp SQLite file holding the shipped profile grid (or, with none shipped yet,
the advisor's synthetic grid), with an advisor trained on it; both servers are uvicorn
processes with one worker each, measured one after the other by the same asyncio client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BARE_APP = """
from fastapi import FastAPI
app = FastAPI()

@app.post("/bare")
def bare(body: dict) -> dict:
    return {"ok": True, "echo": len(body)}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def _prepare_store(data_dir: Path, profiles: Path | None) -> tuple[str, dict]:
    os.environ["ACCEL_DATA_DIR"] = str(data_dir)
    from advisor.api import train_advisor
    from api.auth import create_api_key
    from profiles.db import default_engine, session_scope
    from profiles.migrate import upgrade
    from profiles.transfer import add_records, import_file, iter_records

    upgrade(default_engine())
    with session_scope() as session:
        if profiles is not None:
            import_file(session, profiles)
            source = profiles.name
        else:
            from advisor.synthetic import synthetic_records

            add_records(session, enumerate(synthetic_records(), start=1))
            source = "advisor.synthetic"
        train_advisor(session, evaluate_splits=())
        key = create_api_key(session, "client", "bench")[1]
        record = next(iter_records(session))
    query = {
        "model": record["model_id"],
        "workload": {k: record["workload"][k] for k in ("batch_size", "prompt_len", "gen_len")},
    }
    return key, {"profiles": source, "query": query}


async def _load(url: str, body: dict, headers: dict, requests: int, concurrency: int) -> dict:
    latencies, errors = [], 0
    async with httpx.AsyncClient(timeout=60) as client:
        await client.post(url, json=body, headers=headers)  # warm-up
        queue = asyncio.Queue()
        for _ in range(requests):
            queue.put_nowait(None)

        async def worker():
            nonlocal errors
            while not queue.empty():
                queue.get_nowait()
                start = time.perf_counter()
                response = await client.post(url, json=body, headers=headers)
                latencies.append(time.perf_counter() - start)
                errors += response.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": requests,
        "concurrency": concurrency,
        "errors": errors,
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
        "throughput_rps": round(requests / wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--profiles", type=Path, default=None)
    args = parser.parse_args()
    shipped = Path(__file__).resolve().parents[1] / "profiles" / "data" / "seed_profiles.jsonl.gz"
    profiles = args.profiles or (shipped if shipped.exists() else None)
    with tempfile.TemporaryDirectory() as tmp:
        key, meta = _prepare_store(Path(tmp) / "data", profiles)
        (Path(tmp) / "bare_app.py").write_text(BARE_APP)
        api_port, bare_port = _free_port(), _free_port()
        env = dict(os.environ, ACCEL_DATA_DIR=str(Path(tmp) / "data"), ACCEL_RETRAIN_EVERY_N="100000000")
        servers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "api.app:create_app",
                    "--factory",
                    "--port",
                    str(api_port),
                    "--log-level",
                    "warning",
                ],
                env=env,
            ),
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bare_app:app",
                    "--port",
                    str(bare_port),
                    "--log-level",
                    "warning",
                    "--app-dir",
                    tmp,
                ],
                env=env,
            ),
        ]
        try:
            _wait(f"http://127.0.0.1:{api_port}/healthz")
            _wait(f"http://127.0.0.1:{bare_port}/docs")
            headers = {"Authorization": f"Bearer {key}"}
            recommend = asyncio.run(
                _load(
                    f"http://127.0.0.1:{api_port}/v1/recommendations",
                    meta["query"],
                    headers,
                    args.requests,
                    args.concurrency,
                )
            )
            bare = asyncio.run(
                _load(f"http://127.0.0.1:{bare_port}/bare", meta["query"], headers, args.requests, args.concurrency)
            )
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=30)
    print(
        json.dumps(
            {
                "benchmark": "api_load",
                **meta,
                "recommendations": recommend,
                "bare_fastapi": bare,
                "cpu_count": os.cpu_count(),
                "loadavg_1m": round(os.getloadavg()[0], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
