"""Soak: the service runs a profiling grid while a driver breaks it, then every planned item is
checked against the store. Loopback only; bounded in time and requests. Prints JSON.

    python bench/soak.py --mode distributed --minutes 20   # Redis + PostgreSQL + 3 workers
    python bench/soak.py --mode embedded --minutes 20      # serve + its local worker on SQLite

Distributed: `serve --no-local-worker` on PostgreSQL (ACCEL_TEST_POSTGRES_URL, else a cluster
of its own) and Redis without persistence, and ``--workers`` joined workers of one hardware
class. Faults, one every 20–60 s (seeded): SIGKILL of a random worker (restarted a few seconds
later under its node id), SIGKILL of Redis (restarted empty: every queued message is gone),
SIGKILL of the API (restarted at once). Embedded: SIGKILL of the local worker (serve restarts
it) or of serve (restarted at once). Meanwhile clients send recommendations, named runs and
status reads, and a new profiling job is submitted every ``--job-every-s`` seconds.

After the time is up the faults stop, the pool is made whole and the jobs drain. Then, per
planned item, the store must hold exactly one record per planned method (and the reference):
``lost`` counts planned records that are missing (items never finished, runs never done),
``duplicated`` counts records beyond one per (item, method). A request the API could not take
because it was down is counted as ``unreachable``, apart from HTTP statuses.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from soak_stack import Postgres, Redis, Service, service_env, wait_for

MODEL = "zoo:lm-tiny"
METHODS = ["baseline", "quant.int8_dynamic"]
FAULT_WINDOW_S = 60.0  # requests this long after a fault count as "during faults"


class Traffic:
    """Client requests, recorded as (start time, latency s, status or 'unreachable')."""

    def __init__(self, url: str, headers: dict, max_requests: int):
        self.url, self.headers, self.max_requests = url, headers, max_requests
        self.log: list[tuple[float, float, str]] = []
        self.runs: list[str] = []
        self.lock = threading.Lock()

    def call(self, method: str, path: str, body: dict | None = None) -> httpx.Response | None:
        start = time.monotonic()
        try:
            response = httpx.request(method, self.url + path, json=body, headers=self.headers, timeout=60)
            status = str(response.status_code)
        except httpx.TransportError:
            response, status = None, "unreachable"
        with self.lock:
            self.log.append((start, time.monotonic() - start, status))
        return response

    def full(self) -> bool:
        return len(self.log) >= self.max_requests

    def client(self, stop: threading.Event, rng: random.Random, job_ids: list[str]) -> None:
        while not stop.is_set() and not self.full():
            roll = rng.random()
            if roll < 0.45:
                workload = {"batch_size": rng.choice([1, 2]), "prompt_len": rng.choice([8, 16, 32]), "gen_len": 8}
                self.call("POST", "/v1/recommendations", {"model": MODEL, "workload": workload})
            elif roll < 0.46:  # a run is a whole model load and generation on the worker: a few per minute
                body = {"model": MODEL, "prompts": ["def f():"], "method": "baseline", "max_new_tokens": 4}
                response = self.call("POST", "/v1/runs", body)
                if response is not None and response.status_code == 202:
                    with self.lock:
                        self.runs.append(response.json()["id"])
            elif roll < 0.80 and job_ids:
                self.call("GET", f"/v1/profiling-jobs/{rng.choice(job_ids)}")
            else:
                self.call("GET", "/healthz")
            stop.wait(rng.uniform(0.05, 0.3))


def _prepare_store(advisor_first: bool) -> tuple[dict, dict, str]:
    """Credentials, and with ``advisor_first`` the shipped grid and an advisor trained on it, so the
    recommendation traffic meets a trained advisor from the first fault on (serve would train one
    in the background, and a restarted API starts that over)."""
    from datetime import timedelta

    from api.auth import create_api_key, create_join_token
    from api.embedded import import_shipped, shipped_profiles
    from profiles.db import default_engine, session_scope
    from profiles.migrate import upgrade

    upgrade(default_engine())
    shipped = shipped_profiles()
    if advisor_first and shipped is not None:
        from advisor.api import train_advisor

        with session_scope() as session:
            import_shipped(session, shipped)
        with session_scope() as session:
            train_advisor(session, evaluate_splits=())
    with session_scope() as session:
        admin = create_api_key(session, "admin", "soak admin")[1]
        client = create_api_key(session, "client", "soak client")[1]
        token = create_join_token(session, timedelta(days=1), max_uses=1000, note="soak")[1]
    return {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {client}"}, token


class Faults:
    def __init__(self, service: Service, redis: Redis | None, workers: list[str], token: str, rng: random.Random):
        self.service, self.redis, self.workers, self.token, self.rng = service, redis, workers, token, rng
        self.counts: Counter = Counter()
        self.times: list[float] = []
        self.pending: list[tuple[float, str]] = []  # (when, worker) restarts due
        self.round: list[str] = []

    def inject(self) -> str:
        if not self.round:  # every kind once per round, in a seeded order: short runs still see each
            self.round = ["worker", "api"] + (["redis"] if self.redis is not None else [])
            self.rng.shuffle(self.round)
        kind = self.round.pop()
        if kind == "worker" and self.workers:
            victim = self.rng.choice([w for w in self.workers if self.service.alive(w)] or self.workers)
            self.service.kill(victim)
            self.pending.append((time.monotonic() + self.rng.uniform(2, 8), victim))
        elif kind == "worker":
            self.service.kill_local_worker()  # serve's supervisor starts a new one
        elif kind == "redis" and self.redis is not None:
            self.redis.kill()
            time.sleep(self.rng.uniform(1, 3))
            self.redis.start()
        else:
            self.service.kill("api")  # its local worker (embedded) exits when it sees its parent gone
            self.service.start_api(local_worker=not self.workers)
        self.counts[kind] += 1
        self.times.append(time.monotonic())
        return kind

    def restart_due(self, everything: bool = False) -> None:
        now = time.monotonic()
        for when, name in list(self.pending):
            if everything or when <= now:
                self.service.start_worker(name, self.token)
                self.pending.remove((when, name))


def _online(service: Service, admin: dict, expected: int) -> list[dict] | None:
    nodes = httpx.get(service.url + "/v1/workers", headers=admin, timeout=10).json()
    online = [n for n in nodes if n["status"] == "online"]
    return online if len(online) >= expected else None


def _submit_job(traffic: Traffic, serial: int, hardware_class: str, items: int) -> str | None:
    # Distinct shapes per job, so nothing is skipped as already measured.
    workloads = [
        {"batch_size": 1, "prompt_len": 8 + 8 * (i % 3), "gen_len": 2 + serial * items + i} for i in range(items)
    ]
    body = {"models": [MODEL], "methods": METHODS, "workloads": workloads, "hardware_classes": [hardware_class]}
    for _ in range(60):  # the API may be down for a restart: a client retries
        response = traffic.call("POST", "/v1/profiling-jobs", body)
        if response is not None and response.status_code == 201:
            return response.json()["id"]
        time.sleep(1)
    return None


def _verify(job_ids: list[str], run_ids: list[str]) -> dict:
    from sqlmodel import select

    from profiles.db import default_engine, session_scope
    from profiles.models import Job, ProfileRun

    default_engine.cache_clear()
    planned = done = failed = retried = lost = duplicated = stored = 0
    with session_scope() as session:
        for job_id in job_ids:
            job = session.get_one(Job, job_id)
            rows = session.exec(select(ProfileRun).where(ProfileRun.job_id == job_id)).all()
            stored += len(rows)
            per_key = Counter((r.workload_id, r.method_id) for r in rows)
            duplicated += sum(n - 1 for n in per_key.values())
            for key, state in job.result["items"].items():
                planned += 1
                done += state["state"] == "done"
                failed += state["state"] == "failed"
                retried += state["attempts"] > 1 or state.get("sends", 0) > 1
                if state["state"] == "done":
                    ids = set(state.get("run_ids", []))
                    present = {r.run_id for r in rows if r.run_id in ids}
                    expected = len(job.spec["items"][int(key)]["methods"])
                    lost += max(expected - len(present), 0) + len(ids - present)
                elif state["state"] != "failed":
                    lost += len(job.spec["items"][int(key)]["methods"])
        runs = [session.get_one(Job, run_id).state for run_id in run_ids]
    runs_done = sum(state == "succeeded" for state in runs)
    runs_lost = sum(state in ("queued", "running") for state in runs)
    return {
        "items": {"planned": planned, "done": done, "failed": failed, "retried": retried},
        "records_stored": stored,
        "runs": {"submitted": len(runs), "succeeded": runs_done, "unfinished": runs_lost},
        "lost": lost + runs_lost,
        "duplicated": duplicated,
    }


def _quantiles(latencies: list[float]) -> dict:
    if not latencies:
        return {"n": 0}
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {"n": len(ordered), "p50_ms": round(1000 * statistics.median(ordered), 1), "p99_ms": round(1000 * p99, 1)}


def _requests_report(traffic: Traffic, fault_times: list[float]) -> dict:
    statuses = Counter(status for _t, _l, status in traffic.log)
    answered = [(t, latency) for t, latency, status in traffic.log if status != "unreachable"]
    during = [latency for t, latency in answered if any(0 <= t - f <= FAULT_WINDOW_S for f in fault_times)]
    return {
        "total": len(traffic.log),
        "by_status": dict(sorted(statuses.items())),
        "5xx": sum(n for status, n in statuses.items() if status.startswith("5")),
        "latency_all": _quantiles([latency for _t, latency in answered]),
        "latency_during_faults": _quantiles(during),
    }


def _drain(traffic: Traffic, job_ids: list[str], minutes: float) -> bool:
    def finished() -> bool:
        for job_id in job_ids + traffic.runs:
            response = traffic.call("GET", f"/v1/jobs/{job_id}")
            if response is None or response.json().get("state") in ("queued", "running"):
                return False
        return True

    try:
        wait_for(finished, minutes * 60, "the jobs to drain", every=3)
        return True
    except RuntimeError:
        return False


def run_soak(args: argparse.Namespace) -> dict:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="accel-soak-"))
    cache_dir = Path(args.cache_dir or workdir / "cache")
    rng = random.Random(args.seed)
    redis = postgres = None
    database_url = broker_url = None
    if args.mode == "distributed":
        redis, postgres = Redis(workdir), Postgres(workdir, args.postgres_url)
        redis.start()
        database_url, broker_url = postgres.start(), redis.url
    env = service_env(workdir, cache_dir, database_url, broker_url)
    os.environ.update({k: v for k, v in env.items() if k.startswith("ACCEL_")})
    from executors.zoo import build
    from profiles.settings import get_settings

    get_settings.cache_clear()
    build(MODEL.split(":")[1], cache_dir)  # once, before any worker wants it
    admin, client, token = _prepare_store(args.advisor_first)
    service = Service(workdir, env)
    workers = [f"soak-w{i}" for i in range(args.workers)] if args.mode == "distributed" else []
    started = time.monotonic()
    try:
        service.start_api(local_worker=not workers)
        for name in workers:
            service.start_worker(name, token)
        pool = wait_for(lambda: _online(service, admin, len(workers) or 1), 300, "the workers to join")
        ready = time.monotonic()
        hardware_class = pool[0]["hardware_class"]
        traffic = Traffic(service.url, client, args.max_requests)
        faults = Faults(service, redis, workers, token, rng)
        stop, job_ids = threading.Event(), list[str]()
        clients = [
            threading.Thread(target=traffic.client, args=(stop, random.Random(args.seed + i + 1), job_ids), daemon=True)
            for i in range(args.clients)
        ]
        for thread in clients:
            thread.start()
        deadline = ready + args.minutes * 60  # faults and traffic, once the pool is up
        next_fault = time.monotonic() + rng.uniform(*args.fault_every_s)
        next_job, serial = time.monotonic(), 0
        while time.monotonic() < deadline and not traffic.full():
            if time.monotonic() >= next_job:
                job_id = _submit_job(traffic, serial, hardware_class, args.items_per_job)
                if job_id:
                    job_ids.append(job_id)
                serial, next_job = serial + 1, time.monotonic() + args.job_every_s
            if time.monotonic() >= next_fault:
                print(f"[{time.monotonic() - started:6.0f} s] fault: {faults.inject()}", file=sys.stderr)
                next_fault = time.monotonic() + rng.uniform(*args.fault_every_s)
            faults.restart_due()
            time.sleep(0.5)
        faults.restart_due(everything=True)
        # Clients stop before the drain: a run submitted after the drain's last look would be
        # counted as unfinished by the check below, though nothing lost it.
        stop.set()
        for thread in clients:
            thread.join(70)
        drained = _drain(traffic, job_ids, args.drain_minutes)
        report = {
            "mode": args.mode,
            "minutes_with_faults": round((deadline - ready) / 60, 1),
            "startup_s": round(ready - started, 1),
            "workers": len(workers) or 1,
            "seed": args.seed,
            "jobs": len(job_ids),
            "drained": drained,
            "faults": dict(faults.counts),
            **_verify(job_ids, list(traffic.runs)),
            "requests": _requests_report(traffic, faults.times),
            "wall_minutes": round((time.monotonic() - started) / 60, 1),
            "loadavg_1m_end": round(os.getloadavg()[0], 2),
        }
    finally:
        service.stop()
        if redis:
            redis.stop()
        if postgres:
            postgres.stop()
    report["logs"] = str(workdir)
    return report


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("distributed", "embedded"), default="distributed")
    parser.add_argument("--minutes", type=float, default=20.0, help="how long faults and traffic run")
    parser.add_argument("--workers", type=int, default=3, help="joined workers (distributed mode)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--items-per-job", type=int, default=6)
    parser.add_argument("--job-every-s", type=float, default=90.0)
    parser.add_argument("--fault-every-s", type=float, nargs=2, default=(20.0, 60.0))
    parser.add_argument("--drain-minutes", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--advisor-first",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="import the shipped grid and train an advisor before the service starts",
    )
    parser.add_argument("--postgres-url", default=os.environ.get("ACCEL_TEST_POSTGRES_URL"))
    parser.add_argument("--workdir", help="logs and data (default: a new temp folder, kept)")
    parser.add_argument("--cache-dir", help="zoo cache to reuse across runs")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    args.fault_every_s = tuple(args.fault_every_s)
    if args.mode == "embedded":
        args.workers = 0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    report = run_soak(args)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    sys.exit(0 if report["lost"] == 0 and report["duplicated"] == 0 and report["requests"]["5xx"] == 0 else 1)


if __name__ == "__main__":
    main()
