"""GPU campaign for one short lease: the kernel benchmark, then the registered methods on the zoo
models through the shared harness on CUDA, written as a profile file and JSON. Prints JSON.

    python bench/gpu_campaign.py --out DIR                  # a CUDA machine, about 8 minutes
    python bench/gpu_campaign.py --check --out DIR          # CPU dry run: tiny models and shapes

Stages, each with its own time cap so the files are written whatever runs long:

1. ``bench/kernels_gpu.py`` in a subprocess (``--check``: its interpreter self-check) →
   ``kernels.json``.
2. Profiling parts, most valuable first: each part is one family's zoo models × a small workload
   grid × every registered method of that family (a method that cannot run on the device is
   recorded not-applicable with its reason, one that breaks is recorded failed). Every task goes
   through ``executors.grid.run_grid`` on the device — the same interleaved, rotated rounds
   against the reference as on a CPU, synchronised around every timed call — into a SQLite store
   of its own. A part past its cap stops after the task in flight; a task that raises is logged
   in the summary and the next one runs. Models whose weights are not in the zoo cache (the
   pip-packaged SmolLM2 and MiniLM where the lease could not carry them) are skipped, and said so.
3. The store exported → ``profiles.jsonl``; ``summary.json`` holds the device, the versions, each
   part's tasks, records by status, seconds, and each method's median speed-up.

The records carry their node's hardware class (``cuda-<gpu>-x1``): imported into the seed grid they
are a hardware class beside the CPU ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a plain checkout (the lease has no install)

log = logging.getLogger("gpu_campaign")


@dataclass(frozen=True)
class Part:
    name: str
    family: str
    models: tuple[str, ...]
    workloads: str  # the CLI grid text (`accel-advisor profile --workloads`)
    cap_s: float  # no new task starts after this many seconds in the part
    exclude: tuple[str, ...] = ()  # method ids left to a later part
    only: tuple[str, ...] = ()  # the part's methods, when not every method of the family


# Ordered by what a short lease must not miss: the decode-bound LMs (where low-bit kernels and
# speculative decoding should pay on a GPU) and the real pretrained one, then vision and
# diffusion, then compilation (its compile time is the slowest setup of all).
# fmt: off
GPU_PARTS = (
    Part("lm", "lm", ("zoo:lm-1m",), "batch=1,16 prompt=32,256 gen=32", 60, exclude=("sys.compile",)),
    # lm-8m's pruned and QAT copies (30 MB each) do not fit the lease's transfer beside the rest.
    Part("lm-8m", "lm", ("zoo:lm-8m",), "batch=1,16 prompt=32,256 gen=32", 60,
         exclude=("sys.compile", "prune.perp", "quant.qat.edgeqat", "prune.struct.adapt_pruner")),
    # SmolLM2's trained methods (Medusa, PPD, EdgeQAT, Adapt-Pruner, PERP) would train on the lease's CPU for
    # minutes (their artefacts for a 135M model are too large to carry): only the methods with no training.
    Part("smollm2", "lm", ("zoo:smollm2-135m",), "batch=1,8 prompt=32 gen=32", 60,
         only=("quant.weight_only_int4", "quant.abq_arbitrary_bit", "quant.int8_outlier", "lm.spec.swift",
               "lm.parallel.jacobi")),
    Part("vision", "vision", ("zoo:vit-mini-digits", "zoo:resnet10-shapes"), "classify batch=1,64 res=32,64", 50,
         exclude=("sys.compile",)),
    Part("vision-hybrid", "vision", ("zoo:mobilevit-xxs-shapes",), "classify batch=1,64 res=64", 20,
         exclude=("sys.compile",)),
    Part("diffusion", "diffusion", ("zoo:diff-dit-digits", "zoo:diff-unet-digits"), "sample batch=8 steps=20", 40),
    Part("encoder", "encoder", ("zoo:minilm-l6",), "embed batch=1,32 seq=128", 20, exclude=("sys.compile",)),
    Part("compile", "lm", ("zoo:lm-8m",), "batch=1 prompt=32 gen=32", 30, only=("sys.compile",)),
)
# fmt: on
CHECK_PARTS = (
    Part("lm", "lm", ("zoo:lm-tiny",), "batch=1 prompt=16 gen=4", 120, exclude=("sys.compile",)),
    Part("vision", "vision", ("zoo:vit-fixture-digits",), "classify batch=2 res=16", 240, exclude=("sys.compile",)),
    Part("diffusion", "diffusion", ("zoo:diff-dit-tiny",), "sample batch=2 steps=4 res=16", 240),
)
# Kernel groups in the order a cut-short benchmark must still cover (INT4/INT8 GEMV first).
KERNEL_ORDER = "lowbit,double_sparsity,block_sparse,anybit"


class OutOfTime(Exception):
    pass


def family_methods(part: Part) -> list[str]:
    import executors.methods  # noqa: F401  (registers every method)
    from executors.registry import get_method, method_ids

    if part.only:
        return list(part.only)
    return [m for m in method_ids() if part.family in get_method(m).families and m not in part.exclude]


def built(source: str, build_missing: bool) -> str | None:
    """None when the model can be loaded here; else why not (weights the lease did not carry).
    The dry run builds its tiny models; a lease never trains (that is CPU time it does not have)."""
    from executors.zoo import build, list_zoo

    name = source.split(":", 1)[1]
    row = next((r for r in list_zoo() if r["name"] == name), None)
    if row is None:
        return f"{name} is not a zoo entry"
    if not row["built"] and build_missing:
        build(name)
        return None
    return None if row["built"] else f"{name} is not built in the zoo cache ({row['path']})"


def run_kernels(out: Path, check: bool, cap_s: float) -> dict:
    """kernels.json from bench/kernels_gpu.py; past the cap, the cases it had printed (one JSON
    line each, as it goes) are kept and marked partial."""
    command = [sys.executable, str(ROOT / "bench" / "kernels_gpu.py"), "--out", str(out / "kernels.json"),
               "--only", KERNEL_ORDER] + (["--check"] if check else [])  # fmt: skip
    started = time.monotonic()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=cap_s)
        status, stderr = result.returncode, result.stderr
    except subprocess.TimeoutExpired as exc:
        status = None
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        cases = [json.loads(line) for line in stderr.splitlines() if line.startswith('{"kernel"')]
        partial = {"mode": "gpu", "partial": f"stopped after its {cap_s:.0f} s cap", "results": cases}
        (out / "kernels.json").write_text(json.dumps(partial, indent=2) + "\n")
    tail = [line for line in stderr.splitlines() if not line.startswith('{"kernel"')][-20:]
    return {"returncode": status, "seconds": round(time.monotonic() - started, 1), "log_tail": tail,
            "written": (out / "kernels.json").exists()}  # fmt: skip


def run_part(engine, part: Part, device: str, reps: int, deadline: float, build: set[str]) -> dict:
    from executors.cli import _composites, parse_workloads
    from executors.grid import run_grid

    started = time.monotonic()
    report: dict = {"models": {}, "tasks": 0, "added": 0, "errors": []}
    composites = _composites(family_methods(part), None)
    workloads = parse_workloads(part.workloads)

    def on_task(done, total, task, added):
        report["tasks"] += 1
        report["added"] += added
        log.info("%s: %s %s (+%d) %.0f s", part.name, task.source, task.workload.id, added, time.monotonic() - started)
        if time.monotonic() - started > part.cap_s or time.monotonic() > deadline:
            raise OutOfTime

    for source in part.models:
        missing = built(source, build_missing=device == "cpu" or source.split(":", 1)[1] in build)
        if missing:
            report["models"][source] = f"skipped: {missing}"
            continue
        report["models"][source] = "profiled"
        for workload in workloads:  # one task per call: a task that raises costs only itself
            if time.monotonic() - started > part.cap_s or time.monotonic() > deadline:
                report["models"][source] = "cut at the part's cap"
                break
            try:
                run_grid(engine, [source], composites, [workload], reps=reps, warmup=1, device=device, on_task=on_task)
            except OutOfTime:
                report["models"][source] = "cut at the part's cap"
                break
            except Exception as exc:  # the summary says what broke; the lease goes on
                report["errors"].append({"model": source, "workload": workload.id, "error": repr(exc)[:500],
                                         "trace": traceback.format_exc()[-1500:]})  # fmt: skip
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def prebuild(parts: tuple[Part, ...]) -> dict:
    """Builds every method's artefacts (trained heads, calibrations, searched schedules) for the
    lease's models on this CPU into the zoo cache, so the lease loads them instead of training on
    its CPU: the same artefacts the CPU records were measured with."""
    import torch

    from executors.cli import _composites
    from executors.protocol import prepare
    from executors.zoo import load_bundle

    report: dict = {}
    for part in parts:
        for source in part.models:
            if built(source, build_missing=False):
                report[source] = "not built here: skipped"
                continue
            bundle, started = load_bundle(source), time.monotonic()
            statuses: Counter[str] = Counter()
            for composite in _composites(family_methods(part), None):
                statuses[prepare(bundle, composite, torch.device("cpu")).status] += 1
            report[source] = {**statuses, "seconds": round(time.monotonic() - started, 1)}
            log.info("prebuilt %s: %s", source, report[source])
    return report


def summarise(records: list[dict]) -> dict:
    status = Counter(r["status"] for r in records)
    speedups: dict[str, list[float]] = defaultdict(list)
    reasons: dict[str, str] = {}
    for record in records:
        method = record["method_id"]
        if record["status"] == "ok" and record.get("speedup"):
            speedups[method].append(record["speedup"])
        elif record["status"] != "ok":
            reasons.setdefault(method, f"{record['status']}: {(record.get('reason') or '')[:300]}")
    return {
        "records": len(records),
        "by_status": dict(status),
        "hardware_classes": dict(Counter(r["node"]["hardware_class"] for r in records)),
        "median_speedup": {m: round(statistics.median(v), 3) for m, v in sorted(speedups.items())},
        "ok_records": {m: len(v) for m, v in sorted(speedups.items())},
        "not_ok": reasons,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--check", action="store_true", help="CPU dry run on tiny models and shapes")
    parser.add_argument("--kernels-s", type=float, default=110.0, help="cap on the kernel benchmark")
    parser.add_argument("--deadline-s", type=float, default=400.0, help="no task starts after this many seconds")
    parser.add_argument("--build", default="", help="zoo entries to build on the lease (conversions, not training)")
    parser.add_argument("--store", type=Path, default=Path("/tmp/accel-gpu-campaign.db"), help="the SQLite store")
    parser.add_argument("--parts", default="", help="comma-separated part names (default: all)")
    parser.add_argument("--no-kernels", action="store_true")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--export-only", action="store_true", help="export the store of a run that was cut off")
    parser.add_argument("--prebuild", action="store_true", help="build the lease's method artefacts here, on the CPU")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.export_only:
        args.store.unlink(missing_ok=True)  # every record in the export is from this run
    os.environ.setdefault("ACCEL_DATABASE_URL", f"sqlite:///{args.store.resolve()}")

    import torch

    wanted = {name for name in args.parts.split(",") if name}
    if args.prebuild:
        print(json.dumps(prebuild(tuple(p for p in GPU_PARTS if not wanted or p.name in wanted)), indent=2))
        return 0
    if args.export_only:
        from profiles.db import default_engine

        records = export(default_engine(), args.out / "profiles.jsonl")
        print(json.dumps({"exported_after_cut": True, **summarise(records)}, indent=2, sort_keys=True))
        return 0
    if not args.check and not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device (use --check for the CPU dry run)"}))
        return 2
    device = "cpu" if args.check else "cuda"
    started = time.monotonic()
    summary: dict = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "check": args.check,
        "parts": {},
    }
    if not args.no_kernels:
        summary["kernels"] = run_kernels(args.out, args.check, args.kernels_s)
    from profiles.db import default_engine
    from profiles.migrate import upgrade
    from profiles.settings import get_settings

    get_settings.cache_clear()
    engine = default_engine()
    upgrade(engine)
    for part in CHECK_PARTS if args.check else GPU_PARTS:
        if wanted and part.name not in wanted:
            continue
        build = {name for name in args.build.split(",") if name}
        summary["parts"][part.name] = run_part(engine, part, device, args.reps, started + args.deadline_s, build)
    records = export(engine, args.out / "profiles.jsonl")
    summary.update(summarise(records), seconds=round(time.monotonic() - started, 1))
    text = json.dumps(summary, indent=2, sort_keys=True)
    (args.out / "summary.json").write_text(text + "\n")
    print(text)
    return 0


def export(engine, path: Path) -> list[dict]:
    from profiles.db import session_scope
    from profiles.transfer import iter_records, write_records

    with session_scope(engine) as session:
        records = list(iter_records(session))
    with path.open("w") as out:
        write_records(records, out, "jsonl")
    return records


if __name__ == "__main__":
    sys.exit(main())
