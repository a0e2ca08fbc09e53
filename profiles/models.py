"""SQLModel tables for the domain model (DESIGN.md §4).

JSON columns hold what varies by method or model family (config knobs, extra metrics, the
hardware fingerprint); the columns the advisor filters and learns on are typed fields.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json(**kw: Any) -> Any:
    return Field(default_factory=dict, sa_column=Column(JSON, nullable=False), **kw)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def run_id_for(model_id: str, workload_id: str, method_id: str, config: dict, node_id: str) -> str:
    """Same task + method + config + node ⇒ same id, so redelivered results never duplicate."""
    key = canonical_json([model_id, workload_id, method_id, config, node_id])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def workload_id_for(shape: dict) -> str:
    return "wl-" + hashlib.sha256(canonical_json(shape).encode()).hexdigest()[:16]


class Method(SQLModel, table=True):
    """Mirror of the executor registry, for queries; the registry in code is the truth."""

    id: str = Field(primary_key=True, max_length=120)
    family: str = Field(index=True, max_length=60)
    phase: str = Field(default="inference", max_length=30)
    paper_title: str = Field(default="", max_length=400)
    arxiv_id: str | None = Field(default=None, max_length=40)
    catalogue_row: int | None = None
    lossless: bool = False
    config_schema: dict = _json()
    requirements: dict = _json()
    updated_at: datetime = Field(default_factory=utcnow)


class ModelSpec(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=200)
    family: str = Field(index=True, max_length=60)  # decoder-lm, encoder, vit, cnn, diffusion
    params: int = 0
    layers: int | None = None
    width: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    vocab: int | None = None
    context: int | None = None
    source: str = Field(default="", max_length=500)  # zoo:<name> or a local directory
    descriptors: dict = _json()
    created_at: datetime = Field(default_factory=utcnow)


class Workload(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=80)  # workload_id_for(shape)
    kind: str = Field(index=True, max_length=60)  # lm-generate, request-stream, encode, …
    batch_size: int = 1
    prompt_len: int | None = None
    gen_len: int | None = None
    sampling: str = Field(default="greedy", max_length=30)
    image_size: int | None = None
    steps: int | None = None
    guidance: float | None = None
    objective: str = Field(default="latency", max_length=30)
    params: dict = _json()


class Node(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=120)
    name: str = Field(default="", max_length=200)
    hardware_class: str = Field(index=True, max_length=200)
    device_kind: str = Field(default="cpu", max_length=20)
    cpu_model: str = Field(default="", max_length=200)
    cores: int | None = None
    threads: int | None = None
    ram_gb: float | None = None
    gpu_name: str | None = Field(default=None, max_length=200)
    gpu_count: int = 0
    gpu_mem_gb: float | None = None
    mem_bw_gbs: float | None = None
    fp32_gflops: float | None = None
    bf16_gflops: float | None = None
    fingerprint: dict = _json()
    labels: dict = _json()
    price_per_hour: float = 0.0
    # online, lost, left, removed (by an admin), imported (known only from a profile file)
    status: str = Field(default="online", index=True, max_length=20)
    last_heartbeat: datetime | None = None
    # What the node said it was working on at its last heartbeat ("job id:item index"), and when
    # it last joined, claimed or reported: the reconciler compares both with the items' states.
    current_item: str | None = Field(default=None, max_length=120)
    last_work_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ProfileRun(SQLModel, table=True):
    run_id: str = Field(primary_key=True, max_length=64)
    model_id: str = Field(foreign_key="modelspec.id", index=True, max_length=200)
    workload_id: str = Field(foreign_key="workload.id", index=True, max_length=80)
    node_id: str = Field(foreign_key="node.id", index=True, max_length=120)
    hardware_class: str = Field(index=True, max_length=200)
    method_id: str = Field(index=True, max_length=400)  # a composite is "a+b"
    config: dict = _json()
    status: str = Field(index=True, max_length=20)  # ok, failed, not-applicable
    reason: str | None = Field(default=None, max_length=2000)
    speedup: float | None = None  # median of pairwise baseline/method latency ratios
    latency_p50_s: float | None = None
    latency_p10_s: float | None = None
    latency_p90_s: float | None = None
    baseline_latency_p50_s: float | None = None
    throughput: float | None = None  # units per second, unit named in metrics["throughput_unit"]
    baseline_throughput: float | None = None
    peak_mem_mb: float | None = None
    baseline_peak_mem_mb: float | None = None
    quality_metric: str | None = Field(default=None, max_length=60)
    quality_baseline: float | None = None
    quality_value: float | None = None
    quality_delta: float | None = None  # relative change; negative means worse
    setup_s: float | None = None  # calibration / training / compile, never in steady state
    repeats: int = 0
    metrics: dict = _json()  # method-specific figures: acceptance rate, TTFT, …
    environment: dict = _json()
    job_id: str | None = Field(default=None, index=True, max_length=64)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow, index=True)


class Job(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(index=True, max_length=30)  # profiling, run
    state: str = Field(default="queued", index=True, max_length=20)
    spec: dict = _json()
    result: dict = _json()
    error: str | None = Field(default=None, max_length=4000)
    node_id: str | None = Field(default=None, max_length=120)
    attempts: int = 0
    done: int = 0
    total: int = 0
    failures: int = 0
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class AdvisorVersion(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    n_profiles: int = 0
    feature_schema_version: int = 1
    learner: str = Field(default="lightgbm", max_length=60)
    artefact_path: str = Field(default="", max_length=500)
    params: dict = _json()
    evaluation: dict = _json()
    active: bool = Field(default=False, index=True)


class ApiKey(SQLModel, table=True):
    """A scoped API key. Only a hash of the secret is stored; the key is shown once on creation."""

    id: str = Field(primary_key=True, max_length=32)  # public part of the key, used for lookup
    name: str = Field(default="", max_length=200)
    scope: str = Field(index=True, max_length=20)  # admin, client, worker
    key_hash: str = Field(max_length=128)
    node_id: str | None = Field(default=None, index=True, max_length=120)  # worker keys only
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class JoinToken(SQLModel, table=True):
    """An expiring, optionally use-limited token a worker exchanges for its worker key."""

    id: str = Field(primary_key=True, max_length=32)
    token_hash: str = Field(max_length=128)
    note: str = Field(default="", max_length=200)
    labels: dict = _json()  # copied onto the nodes that join with it
    max_uses: int | None = None
    uses: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    revoked_at: datetime | None = None


JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
RUN_STATUSES = ("ok", "failed", "not-applicable")
