"""The diffusion methods on the zoo's class-conditional denoisers: the grid, the headline table, the FID proxy at 1 000.

    # the profiling grid (resumable JSON lines; fold into the shipped grid with bench/regrid.py merge)
    nice python bench/executors_diffusion.py grid --models zoo:diff-dit-tiny --res 16 --out var/diffusion/grid.jsonl
    # one JSON line per method: speed-up and quality change at 50 steps with guidance, from grid records
    python bench/executors_diffusion.py headline var/diffusion/grid.jsonl
    # the FID proxy over 1 000 generated images (vs the held-out real ones) per method, with its sampling error
    nice python bench/executors_diffusion.py fid --model zoo:diff-dit-tiny --steps 50 --out var/diffusion/fid.jsonl

`grid` measures each (model, threads, workload) task once through the protocol — the plain
sampler and every method interleaved in one process — and appends the records; `headline` reads
records back (any parts file, or the shipped grid) and prints, per method, the median speed-up,
NFE ratio, FID-proxy change, class-accuracy change and same-seed PSNR over the 50-step guided
records; `fid` generates `--images` images per method through its runner and prints the FID proxy,
its bootstrap error and floor, and the class accuracy.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import statistics
import sys
from pathlib import Path

METHODS = ",".join(
    (
        "diff.guidance.adaptive",
        "diff.guidance.linear_ag",
        "diff.cache.static",
        "diff.cache.harmonica_router",
        "diff.steps.evo_search",
        "quant.ptq.diffusion_timestep_calib",
        "attn.adaspa_block_sparse",
        "diff.distill.speedupnet_adapter",
        "diff.steps.dpm_solver",
        "diff.cache.static+diff.guidance.adaptive",  # the three composites
        "quant.ptq.diffusion_timestep_calib+diff.cache.static",
        "diff.steps.dpm_solver+diff.guidance.adaptive",
    )
)
log = logging.getLogger("bench.diffusion")


def grid(args) -> dict:
    """The regrid runner over the diffusion axes (bench/regrid.py run --add …)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    regrid = importlib.import_module("regrid")  # the sibling script, not a package

    workloads = f"sample batch={args.batch} steps={args.steps} guidance={args.guidance} res={args.res}"
    options = argparse.Namespace(select="", add=args.models, methods=f"baseline,{args.methods}", workloads=workloads,
                                 threads=args.threads, out=args.out)  # fmt: skip
    return regrid.run(options)


def headline(args) -> list[dict]:
    """Per method: medians over the 50-step guided records of the given files."""
    records = [json.loads(line) for part in args.parts for line in Path(part).read_text().splitlines()]
    chosen: dict[str, list[dict]] = {}
    for record in records:
        params = (record.get("workload") or {}).get("params") or {}
        wanted = record["workload"]["kind"] == "diffusion-sample" and params.get("steps") == args.steps
        if wanted and params.get("guided") and record["status"] == "ok" and record["method_id"] != "baseline":
            chosen.setdefault(record["method_id"], []).append(record)
    lines = []
    for method, rows in sorted(chosen.items()):
        metrics = [r["metrics"] for r in rows]

        def median(values) -> float | None:
            present = [v for v in values if v is not None]
            return round(statistics.median(present), 4) if present else None

        lines.append(
            {
                "method": method,
                "records": len(rows),
                "models": sorted({r["model_id"] for r in rows}),
                "speedup_median": median(r["speedup"] for r in rows),
                "nfe_ratio_median": median(m.get("nfe_ratio") for m in metrics),
                "effective_nfe_ratio_median": median(m.get("effective_nfe_ratio") for m in metrics),
                "fid_proxy_change_median": median(r["quality_value"] - r["quality_baseline"] for r in rows),
                "fid_proxy_stderr_median": median(m.get("fid_proxy_stderr") for m in metrics),
                "class_accuracy_change_median": median(m.get("class_accuracy_delta") for m in metrics),
                "psnr_to_reference_median": median(m.get("psnr_to_reference") for m in metrics),
                "noisy_records": sum(bool(m.get("noisy")) for m in metrics),
            }
        )
    for item in lines:
        print(json.dumps(item))
    return lines


def fid(args) -> list[dict]:
    import torch

    import executors.methods  # noqa: F401  (registers every method)
    from executors.families.diffusion.harness import quality_set
    from executors.families.diffusion.quality import pixel_distance
    from executors.families.diffusion.sampler import Settings
    from executors.protocol import prepare
    from executors.registry import composite_from_json, default_config
    from executors.zoo import load_bundle

    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model)
    settings = Settings(args.steps, args.guidance)
    device = torch.device("cpu")
    baseline = prepare(bundle, [default_config("baseline")], device)
    base = quality_set(baseline, bundle, settings, seed=0, images=args.images)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for method in ["baseline", *args.methods.split(",")]:
        configs = composite_from_json([{"method": part} for part in method.split("+")])
        prepared = baseline if method == "baseline" else prepare(bundle, list(configs), device)
        if prepared.status != "ok":
            line = {"model": args.model, "method": method, "status": prepared.status, "reason": prepared.reason}
        else:
            mine = quality_set(prepared, bundle, settings, seed=0, images=args.images)
            line = {
                "model": args.model,
                "method": method,
                "steps": args.steps,
                "guidance_scale": args.guidance,
                "images": mine["fid_proxy_images"],
                "real_images": mine["fid_proxy_real_images"],
                "fid_proxy": round(mine["fid_proxy"], 4),
                "fid_proxy_stderr": round(mine["fid_proxy_stderr"], 4),
                "fid_proxy_floor": round(mine["fid_proxy_floor"], 4),
                "fid_proxy_baseline": round(base["fid_proxy"], 4),
                "class_accuracy": round(mine["class_accuracy"], 4),
                "class_accuracy_baseline": round(base["class_accuracy"], 4),
                "nfe_per_image": round(mine["nfe"], 3),
                "effective_nfe_per_image": round(mine["effective_nfe"], 3),
                **{k: round(v, 4) for k, v in pixel_distance(mine["images"], base["images"]).items()},
            }
        print(json.dumps(line), flush=True)
        with out.open("a") as sink:
            sink.write(json.dumps(line) + "\n")
        lines.append(line)
    return lines


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    runner = commands.add_parser("grid")
    runner.add_argument("--models", default="zoo:diff-dit-tiny")
    runner.add_argument("--methods", default=METHODS)
    runner.add_argument("--batch", default="1,8")
    runner.add_argument("--steps", default="20,50")
    runner.add_argument("--guidance", default="1,1.5")
    runner.add_argument("--res", default="16")
    runner.add_argument("--threads", default="1,2")
    runner.add_argument("--out", required=True)
    table = commands.add_parser("headline")
    table.add_argument("parts", nargs="+")
    table.add_argument("--steps", type=int, default=50)
    quality = commands.add_parser("fid")
    quality.add_argument("--model", default="zoo:diff-dit-tiny")
    quality.add_argument("--methods", default=METHODS)
    quality.add_argument("--steps", type=int, default=50)
    quality.add_argument("--guidance", type=float, default=1.5)
    quality.add_argument("--images", type=int, default=1000)
    quality.add_argument("--threads", type=int, default=1)
    quality.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.command == "grid":
        print(json.dumps(grid(args), indent=2))
    elif args.command == "headline":
        headline(args)
    else:
        fid(args)


if __name__ == "__main__":
    main()
