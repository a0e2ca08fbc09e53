"""Recommendation latency and throughput under concurrent load from loopback, at several pool sizes,
next to a bare FastAPI route served the same way in the same run. Prints JSON.

    python bench/api_load.py [--requests 400] [--concurrency 8] [--pools 1 10 100] [--profiles FILE.jsonl.gz]

The store is a temp SQLite file holding the shipped profile grid (or, with none shipped, the
advisor's synthetic grid) and an advisor trained on it. A pool of N online nodes is N copies of
the profiled nodes, each with its own probe figures (±5 %), so no two nodes share a prediction.
Per pool size the API answers a whole-pool recommendation (every node ranked): ``first_ms`` is
the first answer (nothing cached for that pool yet), then ``requests`` answers of the same
question at ``concurrency`` (the steady state a UI or client polling the same task sees), then
``distinct`` questions (a new workload shape each, so every one is computed). Both servers are
uvicorn processes with one worker each; the bare route is measured between the pool sizes.
Each load also reports ``server_cpu_ms_per_request`` (the server process's CPU time over the
requests, from /proc): on a machine other work keeps busy, wall-clock figures measure the machine,
while CPU per request still measures the route; ``share_of_bare_cpu_per_request`` is the bare
route's over the API's, the throughput share the API would have on a core of its own (the distinct
questions report theirs too: what computing an answer costs, whatever the machine's load). The same
question is also asked one at a time (``repeated_question_one_at_a_time``: latency without queueing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def _prepare_store(data_dir: Path, profiles: Path | None, largest_pool: int) -> tuple[str, dict, list[str]]:
    os.environ["ACCEL_DATA_DIR"] = str(data_dir)
    from sqlmodel import col, select

    from advisor.api import train_advisor
    from api.auth import create_api_key
    from profiles.db import default_engine, session_scope
    from profiles.migrate import upgrade
    from profiles.models import Node, utcnow
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
        record = next(r for r in iter_records(session) if r["workload"].get("kind", "lm-generate") == "lm-generate")
        profiled = [n.model_dump() for n in session.exec(select(Node))]
        rng = random.Random(0)
        pool = []
        for i in range(largest_pool):
            template = profiled[i % len(profiled)]
            jitter = {k: template[k] * rng.uniform(0.95, 1.05) for k in ("mem_bw_gbs", "fp32_gflops") if template[k]}
            node = Node(**{**template, **jitter, "id": f"bench-{i:03d}", "status": "left", "last_heartbeat": utcnow()})
            session.add(node)
            pool.append(node.id)
        for node in session.exec(select(Node).where(col(Node.id).not_in(pool))):
            node.status = "imported"
            session.add(node)
    query = {
        "model": record["model_id"],
        "workload": {k: record["workload"][k] for k in ("batch_size", "prompt_len", "gen_len")},
    }
    return key, {"profiles": source, "query": query}, pool


def _set_pool(pool: list[str], size: int) -> None:
    from sqlmodel import col, select

    from profiles.db import session_scope
    from profiles.models import Node, utcnow

    with session_scope() as session:
        for node in session.exec(select(Node).where(col(Node.id).in_(pool))):
            node.status = "online" if int(node.id.split("-")[1]) < size else "left"
            node.last_heartbeat = utcnow()
            session.add(node)


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux), or None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(url: str, bodies: list[dict], headers: dict, concurrency: int, pid: int | None = None) -> dict:
    """Latency and throughput at ``concurrency``; with ``pid``, also the server's CPU time per request,
    which a loaded machine distorts far less than wall-clock figures (other work takes cores, not cycles)."""
    latencies, errors = [], 0
    cpu_before = _cpu_s(pid) if pid else None
    async with httpx.AsyncClient(timeout=120) as client:
        queue: asyncio.Queue[dict] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)

        async def worker():
            nonlocal errors
            while not queue.empty():
                body = queue.get_nowait()
                start = time.perf_counter()
                try:
                    response = await client.post(url, json=body, headers=headers)
                    errors += response.status_code != 200
                except httpx.TransportError:  # e.g. a keep-alive connection the server closed: counted
                    errors += 1
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    cpu_after = _cpu_s(pid) if pid else None
    latencies.sort()
    result = {
        "requests": len(bodies),
        "concurrency": concurrency,
        "errors": errors,
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
        "throughput_rps": round(len(bodies) / wall, 1),
    }
    if cpu_before is not None and cpu_after is not None:
        result["server_cpu_ms_per_request"] = round(1000 * (cpu_after - cpu_before) / len(bodies), 2)
    return result


async def _first(url: str, body: dict, headers: dict) -> float:
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        response = await client.post(url, json=body, headers=headers)
        response.raise_for_status()
        return round(1000 * (time.perf_counter() - start), 1)


def _cpu_share(bare: dict, api: dict) -> float | None:
    """Bare route's CPU per request over the API's: the throughput share one core would give."""
    if not bare.get("server_cpu_ms_per_request") or not api.get("server_cpu_ms_per_request"):
        return None
    return round(bare["server_cpu_ms_per_request"] / api["server_cpu_ms_per_request"], 3)


def _distinct(query: dict, n: int, pool_size: int) -> list[dict]:
    """New generation lengths: each a workload no earlier request asked about."""
    return [query | {"workload": query["workload"] | {"gen_len": 1000 + 7 * pool_size + i}} for i in range(n)]


def _spawn(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "uvicorn", *args, "--log-level", "warning"], env=env)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pools", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--distinct", type=int, default=20, help="questions never asked before, per pool size")
    parser.add_argument("--profiles", type=Path, default=None)
    args = parser.parse_args()
    shipped = Path(__file__).resolve().parents[1] / "profiles" / "data" / "seed_profiles.jsonl.gz"
    profiles = args.profiles or (shipped if shipped.exists() else None)
    with tempfile.TemporaryDirectory() as tmp:
        key, meta, pool = _prepare_store(Path(tmp) / "data", profiles, max(args.pools))
        (Path(tmp) / "bare_app.py").write_text(BARE_APP)
        api_port, bare_port = _free_port(), _free_port()
        env = dict(
            os.environ,
            ACCEL_DATA_DIR=str(Path(tmp) / "data"),
            ACCEL_RETRAIN_EVERY_N="100000000",
            ACCEL_NODE_LOST_AFTER_S="100000",  # the bench's nodes send no heartbeats
        )
        servers = [
            _spawn(["api.app:create_app", "--factory", "--port", str(api_port)], env),
            _spawn(["bare_app:app", "--port", str(bare_port), "--app-dir", tmp], env),
        ]
        headers = {"Authorization": f"Bearer {key}"}
        url, bare_url = f"http://127.0.0.1:{api_port}/v1/recommendations", f"http://127.0.0.1:{bare_port}/bare"
        results, bare = [], []
        try:
            _wait(f"http://127.0.0.1:{api_port}/healthz")
            _wait(f"http://127.0.0.1:{bare_port}/docs")
            repeated = [meta["query"]] * args.requests
            asyncio.run(_load(bare_url, repeated[:20], headers, 1))  # warm-up
            for size in args.pools:
                _set_pool(pool, size)
                first = asyncio.run(_first(url, meta["query"], headers))
                steady = asyncio.run(_load(url, repeated, headers, args.concurrency, servers[0].pid))
                bare.append(asyncio.run(_load(bare_url, repeated, headers, args.concurrency, servers[1].pid)))
                single = asyncio.run(_load(url, repeated[: args.requests // 4], headers, 1, servers[0].pid))
                never_asked = _distinct(meta["query"], args.distinct, size)
                fresh = asyncio.run(_load(url, never_asked, headers, 1, servers[0].pid))
                results.append(
                    {
                        "pool_size": size,
                        "first_ms": first,
                        "repeated_question": steady,
                        "repeated_question_one_at_a_time": single,
                        "share_of_bare_throughput": round(steady["throughput_rps"] / bare[-1]["throughput_rps"], 3),
                        "share_of_bare_cpu_per_request": _cpu_share(bare[-1], steady),
                        "distinct_questions": fresh,
                    }
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
                "pools": results,
                "bare_fastapi": bare,
                "cpu_count": os.cpu_count(),
                "loadavg_1m": round(os.getloadavg()[0], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
