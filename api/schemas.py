"""Request and response bodies of the REST API (one Base/Create/Public family per entity)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.limits import BoundedJson, MethodEntry, WorkloadShape, refuse_nul

Scope = Literal["admin", "client", "worker"]
NodeId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,120}$")]
ClassName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:+-]{1,200}$")]
Label = Annotated[str, StringConstraints(max_length=200)]
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=60)]


class StrictModel(BaseModel):
    """Request bodies: unknown keys, non-finite numbers, NUL characters and type coercion ("5", 1.0 for
    an int, true) refused."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        refuse_nul(data)
        return data


class ErrorBody(BaseModel):
    detail: str = Field(description="what went wrong, in words")
    code: str = Field(description="a machine-readable code: not_found, invalid_request, conflict, …")


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
    ttl_hours: float = Field(default=24.0, ge=0.01, le=24 * 90)
    max_uses: int | None = Field(default=None, ge=1, le=1_000_000)
    note: str = Field(default="", max_length=200)
    labels: dict[LabelKey, Label] = Field(default_factory=dict, max_length=32)


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


Count = Annotated[int, Field(ge=1, le=4096)]
Rate = Annotated[float, Field(ge=0, le=1e7)]
Text = Annotated[str, StringConstraints(max_length=200)]
ProbeValue = Annotated[float, Field(ge=-1e7, le=1e7)] | None  # measured rates


class Fingerprint(BaseModel):
    """What a node is. Known facts are typed and bounded; other facts a newer worker reports must be
    plain values (text of at most 200 characters, finite numbers, booleans), at most 32 of them."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    cpu_model: Text = ""
    cores: Count | None = None
    threads: Count | None = None
    ram_gb: Annotated[float, Field(ge=0, le=1e5)] | None = None
    device_kind: Text | None = None
    gpu_name: Text | None = None
    gpu_count: Annotated[int, Field(ge=0, le=64)] = 0
    gpu_mem_gb: Annotated[float, Field(ge=0, le=1e4)] | None = None
    gpu_sms: Annotated[int, Field(ge=0, le=100_000)] | None = None
    mem_bw_gbs: Rate | None = None
    fp32_gflops: Rate | None = None
    bf16_gflops: Rate | None = None
    bf16_supported: bool | None = None
    probe: dict[LabelKey, ProbeValue] = Field(default_factory=dict, max_length=32)

    @model_validator(mode="after")
    def _plain_extras(self) -> Fingerprint:
        extras = self.model_extra or {}
        if len(extras) > 32:
            raise ValueError("at most 32 further fingerprint facts")
        for key, value in extras.items():
            plain = value is None or isinstance(value, (bool, str, int, float))
            if len(key) > 60 or not plain or (isinstance(value, str) and len(value) > 200):
                raise ValueError(f"fingerprint fact {key[:60]!r} must be a plain value of at most 200 characters")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not abs(value) <= 1e15:
                raise ValueError(f"fingerprint fact {key[:60]!r} must be a finite number of sane size")
        return self


class WorkerJoin(StrictModel):
    join_token: str = Field(min_length=1, max_length=200)
    name: Text = ""
    node_id: NodeId | None = None
    hardware_class: ClassName
    device_kind: Literal["cpu", "cuda", "mps", "other"] = "cpu"
    fingerprint: Fingerprint = Field(default_factory=Fingerprint)
    price_per_hour: float = Field(default=0.0, ge=0, le=10_000)
    previous_key: str | None = Field(
        default=None,
        max_length=200,
        description="this node's last worker key: lets a restarted worker take over its node while the "
        "old process is still counted online (its running items are re-queued, the old key revoked)",
    )


class WorkerJoined(BaseModel):
    node_id: str
    worker_key: str
    queues: list[str]
    heartbeat_interval_s: float


class Heartbeat(StrictModel):
    current_job: str | None = Field(default=None, max_length=64)
    current_item: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_-]{1,64}:[0-9]{1,6}$", description='"<job id>:<item index>"'
    )


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


class NodeRemoved(BaseModel):
    id: str
    status: Literal["removed", "deleted"]
    requeued: int = Field(description="items it was running, back on their queues")
    failed: int = Field(description="queued items addressed to this node alone, now failed")


class Page(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[dict]


Target = Literal["class", "node", "pool"]


class ProfilingJobCreate(StrictModel):
    models: list[Annotated[str, StringConstraints(min_length=1, max_length=500)]] = Field(min_length=1, max_length=50)
    plan: Literal["grid", "auto"] = Field(
        default="grid",
        description='"grid": every method × workload named here; "auto": the profiling planner picks the '
        "max_cells unmeasured (task, method) cells of these models with the highest expected improvement "
        "of the recommendation per second of profiling (methods and workloads, if given, restrict it)",
    )
    methods: list[MethodEntry] = Field(default_factory=list, max_length=50)
    workloads: list[WorkloadShape] = Field(default_factory=list, max_length=200)
    max_cells: int = Field(default=10, ge=1, le=200, description="plan auto: how many cells to measure")
    hardware_classes: list[ClassName] | None = Field(
        default=None,
        max_length=50,
        description="default: every class with an online node; a class no node has ever joined with is refused",
    )
    nodes: list[NodeId] | None = Field(default=None, max_length=100)
    pool: bool = Field(default=False, description="any node may take any item (measured on whichever runs it)")
    reps: int = Field(default=5, ge=5, le=50)

    @model_validator(mode="after")
    def _grid_names_its_cells(self) -> ProfilingJobCreate:
        if self.plan == "grid" and not (self.methods and self.workloads):
            raise ValueError('plan "grid" needs at least one method and one workload (or use plan "auto")')
        return self


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
    waiting_for: list[str] = Field(
        default_factory=list,
        description='targets with queued items that no online worker serves, e.g. "class cpu-x-t1"',
    )


class ItemClaim(BaseModel):
    action: Literal["run", "skip"]
    reason: str | None = None
    claim: str | None = Field(default=None, description="send it back with the result: it proves the claim")
    item: dict | None = None
    attempt: int | None = None
    kind: str | None = None


class ItemResult(StrictModel):
    claim: str = Field(min_length=1, max_length=64, description="the claim id from …/claim")
    records: list[BoundedJson] = Field(default_factory=list, max_length=200)
    outputs: BoundedJson | None = None
    error: str | None = Field(default=None, max_length=20_000)


class ItemProgress(StrictModel):
    claim: str = Field(min_length=1, max_length=64, description="the claim id from …/claim")
    stage: str = Field(min_length=1, max_length=60, description='e.g. "building model", "measuring"')
    detail: str | None = Field(default=None, max_length=200, description='e.g. "pass 2 of 3"')
    fraction: float | None = Field(default=None, ge=0, le=1, description="share of the stage done, where known")


class ItemReport(BaseModel):
    accepted: bool
    reason: str | None = None
    requeued: bool | None = None
    added: int | None = None
    skipped: int | None = None


Objective = Literal["latency", "throughput", "memory", "time-to-accuracy"]
Fraction = Annotated[float, Field(ge=-1, le=1)]
Budget = Annotated[float, Field(gt=0, le=1e9)]


class RecommendationRequest(StrictModel):
    model: str = Field(min_length=1, max_length=500)
    workload: WorkloadShape
    node: NodeId | None = None
    hardware_class: ClassName | None = None
    objective: Objective = "latency"
    quality_floor: Fraction | None = Field(default=None, description="lowest acceptable relative quality change")
    budget: Budget | None = Field(default=None, description="most a run may cost: predicted runtime × node price")
    top_k: int = Field(default=10, ge=1, le=100)


class RunCreate(StrictModel):
    model: str = Field(min_length=1, max_length=500)
    prompts: list[Annotated[str, Field(min_length=1, max_length=8000)]] | None = Field(
        default=None, min_length=1, max_length=16, description="texts to continue (a model that generates text)"
    )
    workload: WorkloadShape | None = Field(
        default=None,
        description="a training workload (kind train-to-target) for a training recipe: the run trains it and "
        "returns the trained checkpoint's id and its figures",
    )
    method: Literal["auto"] | MethodEntry = Field(
        default="auto", description='"auto" (the advisor picks), or a method id, a config or a composite'
    )
    max_new_tokens: int = Field(default=32, ge=1, le=512)
    sampling: Literal["greedy", "sample"] = "greedy"
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    measure: bool = False
    node: NodeId | None = None
    hardware_class: ClassName | None = None
    objective: Objective = "latency"
    quality_floor: Fraction | None = None
    budget: Budget | None = None

    @model_validator(mode="after")
    def _prompts_or_workload(self) -> RunCreate:
        if (self.prompts is None) == (self.workload is None):
            raise ValueError("give either prompts (a model that generates text) or workload (a training recipe)")
        return self


ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]


class ModelRegister(StrictModel):
    """One of: a folder under the model root, or a config.json alone (descriptors only). An uploaded
    folder goes to POST /v1/models/upload as multipart files."""

    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="a Hugging Face checkpoint folder (config.json, *.safetensors) under the configured model root "
        "(ACCEL_MODEL_ROOT), absolute or relative to it; its id is local:<folder>",
    )
    config: BoundedJson | None = Field(
        default=None,
        description="a checkpoint's config.json alone: the model is described (advice) but has no weights to run; "
        "its id is config:<name>",
    )
    name: ModelName | None = Field(
        default=None, description="the name in a config-only model's id (default: its model type and a hash)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelRegister:
        if (self.path is None) == (self.config is None):
            raise ValueError("give either path (a folder under the model root) or config (a config.json alone)")
        if self.name is not None and self.config is None:
            raise ValueError("name is for a config-only model; a folder's id is its path")
        return self


class ModelProfile(StrictModel):
    """The profiling job that turns a registered model's advice from predicted into measured."""

    workload: WorkloadShape | None = Field(
        default=None, description="the task to make sure of (default: the model family's cheapest workload)"
    )
    node: NodeId | None = None
    hardware_class: ClassName | None = None
    top_k: int = Field(default=3, ge=1, le=8, description="how many of the advisor's best candidates to measure")
    reps: int = Field(default=5, ge=5, le=50)


class ModelPublic(BaseModel):
    id: str
    family: str
    params: int
    layers: int | None
    width: int | None
    heads: int | None
    kv_heads: int | None
    vocab: int | None
    context: int | None
    source: str
    descriptors: dict
    created_at: datetime
