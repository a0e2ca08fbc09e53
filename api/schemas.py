"""Request and response bodies of the REST API (one Base/Create/Public family per entity)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Scope = Literal["admin", "client", "worker"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiKeyCreate(StrictModel):
    scope: Scope
    name: str = Field(default="", max_length=200)


class ApiKeyPublic(BaseModel):
    id: str
    name: str
    scope: str
    node_id: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="the secret key; shown only once")


class JoinTokenCreate(StrictModel):
    ttl_hours: float = Field(default=24.0, gt=0, le=24 * 90)
    max_uses: int | None = Field(default=None, ge=1)
    note: str = Field(default="", max_length=200)
    labels: dict[str, str] = Field(default_factory=dict)


class JoinTokenPublic(BaseModel):
    id: str
    note: str
    labels: dict
    max_uses: int | None
    uses: int
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


class JoinTokenCreated(JoinTokenPublic):
    token: str = Field(description="the secret token; shown only once")


class WorkerJoin(StrictModel):
    join_token: str = Field(min_length=1, max_length=200)
    name: str = Field(default="", max_length=200)
    node_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,120}$")
    hardware_class: str = Field(min_length=1, max_length=200)
    device_kind: Literal["cpu", "cuda", "mps", "other"] = "cpu"
    fingerprint: dict[str, Any] = Field(default_factory=dict)
    price_per_hour: float = Field(default=0.0, ge=0)


class WorkerJoined(BaseModel):
    node_id: str
    worker_key: str
    queues: list[str]
    heartbeat_interval_s: float


class Heartbeat(StrictModel):
    current_job: str | None = None


class NodePublic(BaseModel):
    id: str
    name: str
    hardware_class: str
    device_kind: str
    status: str
    last_heartbeat: datetime | None
    price_per_hour: float
    cpu_model: str
    threads: int | None
    gpu_name: str | None
    labels: dict


class Page(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[dict]


Target = Literal["class", "node", "pool"]


class ProfilingJobCreate(StrictModel):
    models: list[str] = Field(min_length=1, max_length=50)
    methods: list[str | dict | list[str | dict]] = Field(
        min_length=1,
        max_length=50,
        description='method ids, config objects {"method","version","params"}, or lists of them (composites)',
    )
    workloads: list[dict[str, Any]] = Field(min_length=1, max_length=200)
    hardware_classes: list[str] | None = Field(default=None, description="default: every class with an online node")
    nodes: list[str] | None = None
    pool: bool = Field(default=False, description="any node may take any item (measured on whichever runs it)")
    reps: int = Field(default=5, ge=5, le=50)


class JobPublic(BaseModel):
    id: str
    kind: str
    state: str
    done: int
    total: int
    failures: int
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    running_on: list[str]
    errors: list[str]


class ItemResult(StrictModel):
    records: list[dict[str, Any]] = Field(default_factory=list, max_length=500)
    outputs: dict[str, Any] | None = None
    error: str | None = Field(default=None, max_length=20_000)


Objective = Literal["latency", "throughput", "memory", "time-to-accuracy"]


class RecommendationRequest(StrictModel):
    model: str = Field(min_length=1, max_length=200)
    workload: dict[str, Any] = Field(description='e.g. {"batch_size": 1, "prompt_len": 256, "gen_len": 128}')
    node: str | None = None
    hardware_class: str | None = None
    objective: Objective = "latency"
    quality_floor: float | None = Field(
        default=None, ge=-1, le=1, description="lowest acceptable relative quality change"
    )
    budget: float | None = Field(default=None, gt=0, description="most a run may cost: predicted runtime × node price")
    top_k: int = Field(default=10, ge=1, le=100)


class RunCreate(StrictModel):
    model: str = Field(min_length=1, max_length=200)
    prompts: list[Annotated[str, Field(min_length=1, max_length=8000)]] = Field(min_length=1, max_length=16)
    method: str | dict | list[str | dict] = Field(
        default="auto", description='"auto", a method id, a config or a composite'
    )
    max_new_tokens: int = Field(default=32, ge=1, le=512)
    sampling: Literal["greedy", "sample"] = "greedy"
    seed: int = Field(default=0, ge=0)
    measure: bool = False
    node: str | None = None
    hardware_class: str | None = None
    objective: Objective = "latency"
    quality_floor: float | None = Field(default=None, ge=-1, le=1)
    budget: float | None = Field(default=None, gt=0)
