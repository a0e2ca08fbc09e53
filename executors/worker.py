"""A worker node: joins the pool with a token, heartbeats, consumes its Celery queues and
reports every result through the API with its own credential (it never holds DB credentials).

The pool is Celery's solo pool by default: one measurement at a time keeps timings honest on
a CPU box, and CUDA does not survive fork on a GPU box.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from executors.celery_app import EXECUTE_ITEM, POOL_QUEUE, celery_app
from profiles.settings import write_secret_file

log = logging.getLogger(__name__)


class Refused(RuntimeError):
    """The API answered with a 4xx: retrying the same call cannot help."""

    def __init__(self, path: str, status: int, detail: str):
        super().__init__(f"{path}: HTTP {status}: {detail}")
        self.status, self.detail = status, detail


@dataclass
class WorkerContext:
    server: str
    key: str
    node: dict  # the Node object that goes into every profile record
    device: str = "cpu"
    current_job: str | None = None
    current_item: str | None = None  # "job id:index" while an item is claimed and not yet reported
    claim: str | None = None  # the claim on current_item, which its progress reports must carry
    bundles: dict = field(default_factory=dict)  # model source → loaded bundle, kept across tasks

    def stage(self, stage: str, detail: str | None = None, fraction: float | None = None) -> None:
        """Tells the API what the current item is doing; a lost report never stops the work."""
        if self.current_item is None or self.claim is None:
            return
        job_id, index = self.current_item.rsplit(":", 1)
        body = {"claim": self.claim, "stage": stage, "detail": detail, "fraction": fraction}
        try:
            self.call(f"/v1/jobs/{job_id}/items/{index}/progress", body, timeout=10)
        except Exception as exc:
            log.warning("%s: progress not reported: %s", self.current_item, exc)

    def call(self, path: str, body: dict | None = None, timeout: float = 120, patience_s: float = 0) -> dict:
        """POSTs with the worker key; retries connection errors and 5xx for ``patience_s`` (an API restart)."""
        deadline = time.monotonic() + patience_s
        pause = 0.5
        while True:
            try:
                response = httpx.post(
                    self.server + path,
                    json=body or {},
                    timeout=timeout,
                    headers={"Authorization": f"Bearer {self.key}"},
                )
                if 400 <= response.status_code < 500:
                    raise Refused(path, response.status_code, _detail(response))
                if response.status_code < 400:
                    return response.json()
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                problem = type(exc).__name__
            if time.monotonic() + pause > deadline:
                raise RuntimeError(f"{path}: {problem}")
            log.warning("%s: %s; retrying in %.1f s", path, problem, pause)
            time.sleep(pause)
            pause = min(pause * 2, 10.0)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))[:500]
    except ValueError:
        return response.text[:200]


CLAIM_PATIENCE_S = 120.0  # an API restarting under us (kill -9 and a supervisor) takes seconds
REPORT_PATIENCE_S = 900.0  # a measured result is worth waiting for: it took minutes to make


_context: WorkerContext | None = None


def _bundle(ctx: WorkerContext, source: str):
    from executors.zoo import load_bundle

    if source not in ctx.bundles:
        ctx.stage("building model", source)
        ctx.bundles[source] = load_bundle(source)
    return ctx.bundles[source]


def _configs(config: dict):
    import executors.methods  # noqa: F401  (importing it registers every method)
    from executors.registry import composite_from_json

    return composite_from_json(config.get("steps", config))


def profile_item(ctx: WorkerContext, item: dict) -> dict:
    """One task of a profiling grid: the reference and every method interleaved, as DESIGN.md §6."""
    import torch

    import executors.methods  # noqa: F401  (registers every method, the references included)
    from executors.families import measure, prepare_reference, reference_of, workload_from_json
    from executors.protocol import measurement_passes, prepare

    bundle, device = _bundle(ctx, item["model"]), torch.device(ctx.device)
    workload = workload_from_json(item["workload"])
    ctx.stage("calibrating", f"{len(item['methods'])} methods")
    baseline = prepare_reference(bundle, workload, device)
    prepared = [prepare(bundle, _configs(c), device) for c in item["methods"] if c["method"] != reference_of(workload)]
    passes, records = measurement_passes(prepared), []
    for number, group in enumerate(passes, start=1):

        def progress(stage: str, detail: dict, number: int = number) -> None:
            where = f"pass {number} of {len(passes)}"
            if "round" in detail:
                done = (number - 1 + (detail["round"] - 1) / detail["rounds"]) / len(passes)
                ctx.stage(stage, f"{where}, round {detail['round']} of {detail['rounds']}", done)
            else:
                ctx.stage(stage, where, (number - 1) / len(passes))

        records += measure(
            bundle, workload, group, ctx.node, device=device, reps=item["reps"], baseline=baseline, progress=progress
        )
    # Each pass measured the reference again; the report keeps one record per run id.
    return {"records": list({r["run_id"]: r for r in records}.values())}


def run_item(ctx: WorkerContext, item: dict) -> dict:
    """A client's run: apply the chosen method, generate for its prompts (or, for a family with a `run`
    hook, run its workload: a training recipe trained to a checkpoint), measure when asked."""
    import torch

    from executors.families import family_hook, get_family, measure, workload_from_json
    from executors.protocol import prepare

    bundle, device = _bundle(ctx, item["model"]), torch.device(ctx.device)
    run_hook = family_hook(bundle, "run")
    if run_hook is None and get_family(bundle.family).runner_protocol != "generate":
        raise RuntimeError(f"a run generates text; {item['model']} is a {bundle.spec.architecture} model")
    ctx.stage("calibrating", item["method"].get("method"))
    prepared = prepare(bundle, _configs(item["method"]), device)
    if prepared.status != "ok":
        raise RuntimeError(f"{prepared.method_id} {prepared.status}: {prepared.reason}")
    if run_hook is not None:
        outputs = run_hook(bundle, prepared.applied_runner, item, ctx.stage)
        records = []
        if item.get("measure"):
            ctx.stage("measuring", "seeds against the reference")
            records = measure(bundle, workload_from_json(item["workload"]), [prepared], ctx.node, device=device, reps=5)
        return {"records": records, "outputs": {**outputs, "method": prepared.method_id}}
    limit = bundle.model.config.max_seq_len - item["max_new_tokens"]
    texts = []
    for number, prompt in enumerate(item["prompts"], start=1):
        ctx.stage("generating", f"prompt {number} of {len(item['prompts'])}", (number - 1) / len(item["prompts"]))
        ids = bundle.tokenizer.encode(prompt)[-limit:]
        generation = prepared.applied_runner.generate(  # type: ignore[attr-defined]  # a generate runner, checked above
            torch.tensor([ids], device=device),
            item["max_new_tokens"],
            sampling=item.get("sampling", "greedy"),
            seed=item.get("seed", 0),
        )
        texts.append(bundle.tokenizer.decode(generation.tokens[0].tolist()))
    records = []
    if item.get("measure"):
        ctx.stage("measuring", "5 rounds against the baseline")
        # Figures come from held-out prompts of the same shape, baseline interleaved in this process.
        records = measure(bundle, workload_from_json(item["workload"]), [prepared], ctx.node, device=device, reps=5)
    return {"records": records, "outputs": {"texts": texts, "method": prepared.method_id}}


def execute_item(job_id: str, index: int) -> str:
    """The Celery task: claim, work, report. Idempotent: the API says whether work remains."""
    ctx = _context
    if ctx is None:  # Celery runs tasks only after run_worker joined, which sets it
        raise RuntimeError("this process has not joined the pool")
    claim = ctx.call(f"/v1/jobs/{job_id}/items/{index}/claim", patience_s=CLAIM_PATIENCE_S)
    if claim["action"] != "run":
        log.info("skip %s[%d]: %s", job_id, index, claim.get("reason"))
        return "skipped"
    ctx.current_job, ctx.current_item, ctx.claim = job_id, f"{job_id}:{index}", claim["claim"]
    try:
        try:
            body = run_item(ctx, claim["item"]) if claim["kind"] == "run" else profile_item(ctx, claim["item"])
        except Exception:  # the API counts the attempt and re-queues or fails the item
            log.exception("%s[%d] failed", job_id, index)
            body = {"error": traceback.format_exc(limit=20)}
        if "error" not in body:
            ctx.stage("storing", f"{len(body.get('records', []))} records")
        answer = _report(ctx, job_id, index, {**body, "claim": claim["claim"]})
    finally:
        ctx.current_job = ctx.current_item = ctx.claim = None
    log.info("%s[%d] reported: %s", job_id, index, answer)
    return "done"


def _report(ctx: WorkerContext, job_id: str, index: int, body: dict) -> dict:
    path = f"/v1/jobs/{job_id}/items/{index}/result"
    try:
        return ctx.call(path, body, patience_s=REPORT_PATIENCE_S)
    except Refused as exc:
        if exc.status in (403, 422) and body.get("error") is None:
            # The store refused what we measured: say so as this attempt's error, so the item is
            # retried or failed instead of waiting for a report that will never be accepted.
            log.error("%s[%d]: report refused: %s", job_id, index, exc.detail)
            return ctx.call(path, {"claim": body["claim"], "error": f"report refused: {exc.detail}"}, patience_s=60)
        log.warning("%s[%d]: report not taken: %s", job_id, index, exc.detail)
        return {"accepted": False, "reason": exc.detail}


def _heartbeat(ctx: WorkerContext, interval_s: float, stop: threading.Event, parent_pid: int | None) -> None:
    while not stop.wait(interval_s):
        if parent_pid is not None and os.getppid() != parent_pid:
            # The `serve` that started us is gone (killed, or ended by uvicorn re-raising a signal,
            # so its own clean-up never ran). Exit now rather than warm: whatever we are measuring
            # can no longer be reported — a restarted serve's worker takes this node over and the
            # store re-queues the item — and finishing it would only steal the machine from it.
            log.warning("parent process %d exited; exiting", parent_pid)
            os._exit(0)
        try:
            ctx.call("/v1/workers/heartbeat", {"current_job": ctx.current_job, "current_item": ctx.current_item})
        except Refused as exc:
            # Our key was revoked (an admin removed the node, or a newer process took it over):
            # this process no longer belongs to the pool.
            log.warning("heartbeat refused (%s); shutting down", exc.detail)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        except Exception as exc:  # a missed beat is retried; the API marks us lost if they keep failing
            log.warning("heartbeat failed: %s", exc)


def _key_file(node_id: str) -> Path:
    from profiles.settings import get_settings

    return get_settings().data_dir / "worker" / f"{node_id}.key"


def _join(url: str, body: dict, patience_s: float = 120.0) -> httpx.Response:
    """Joins, waiting for an API that is still starting (as in `serve` or docker compose)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            response = httpx.post(url, json=body, timeout=60)
            if response.status_code < 500 or time.monotonic() > deadline:
                return response
        except httpx.TransportError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot reach {url}: {exc}") from None
        time.sleep(1.0)


def run_worker(
    server: str,
    join_token: str,
    *,
    threads: int | None = None,
    device: str = "cpu",
    pool: str = "solo",
    name: str = "",
    node_id: str | None = None,
    parent_pid: int | None = None,
) -> None:
    import torch

    from executors.hardware import fingerprint, node_row
    from profiles.settings import get_settings

    global _context
    if threads:
        torch.set_num_threads(threads)
    settings = get_settings()
    settings.ensure_dirs()
    info = fingerprint(device, settings.cache_dir)
    node = node_row(info)
    node_id = node_id or node["id"]
    key_file = _key_file(node_id)
    previous_key = key_file.read_text().strip() if key_file.exists() else None
    body = {
        "join_token": join_token,
        "name": name or node_id,
        "node_id": node_id,
        "hardware_class": node["hardware_class"],
        "device_kind": node["device_kind"],
        "fingerprint": {**info, **{k: node[k] for k in ("mem_bw_gbs", "fp32_gflops", "bf16_gflops")}},
        "previous_key": previous_key,  # lets this process take over its node from a predecessor just killed
    }
    joined = _join(server.rstrip("/") + "/v1/workers/join", body)
    if joined.status_code != 201:
        raise RuntimeError(f"join refused: HTTP {joined.status_code}: {joined.text[:300]}")
    answer = joined.json()
    write_secret_file(_key_file(answer["node_id"]), answer["worker_key"])
    node.update(id=answer["node_id"], name=name or answer["node_id"])
    _context = WorkerContext(server.rstrip("/"), answer["worker_key"], node, device)
    queues = answer["queues"] + [POOL_QUEUE]
    log.info("joined as %s (%s); consuming %s", answer["node_id"], node["hardware_class"], ", ".join(queues))

    stop = threading.Event()
    threading.Thread(
        target=_heartbeat, args=(_context, answer["heartbeat_interval_s"], stop, parent_pid), daemon=True
    ).start()
    app = celery_app()
    app.task(name=EXECUTE_ITEM)(execute_item)
    try:
        app.worker_main(
            [
                "worker",
                "-Q",
                ",".join(queues),
                "-P",
                pool,
                "-c",
                "1",
                "-n",
                f"{answer['node_id']}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ]
        )
    finally:
        stop.set()
        try:
            _context.call("/v1/workers/leave", timeout=5)
        except Exception as exc:
            log.warning("could not leave cleanly: %s", exc)
