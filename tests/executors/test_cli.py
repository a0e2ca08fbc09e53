"""The CLI: methods listing, zoo listing, a single profile run with --json, resumability."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from api.cli import app
from executors.families import families_catalogue
from executors.registry import method_ids

runner = CliRunner()


def test_methods_json_lists_the_registry():
    result = runner.invoke(app, ["methods", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(method_ids())
    assert rows["quant.weight_only_int4"]["config_schema"]["group_size"] == {"type": "int", "default": 128}
    assert rows["quant.int8_dynamic"]["arxiv"] == "2402.10787" and rows["baseline"]["lossless"]
    assert rows["quant.int8_dynamic"]["families"] == ["lm", "longctx", "encoder", "vision"]
    assert rows["serve.chunked_prefill"]["families"] == ["stream"] and rows["serve.chunked_prefill"]["changes"] == [
        "schedule"
    ]
    assert rows["lm.spec.medusa"]["config_schema"]["heads"] == {"type": "int", "default": 3, "min": 1, "max": 8}


def test_families_json_lists_kinds_references_harnesses_quality_and_zoo():
    result = runner.invoke(app, ["families", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) >= {"lm", "longctx", "stream", "encoder", "training"}
    assert set(rows) == {family["name"] for family in families_catalogue()}
    kinds = {k["name"]: (family, k) for family, row in rows.items() for k in row["kinds"]}
    ours = ("lm-generate", "lm-longctx", "lm-stream", "encoder-embed")
    assert {name: kinds[name][1]["reference"] for name in ours} == {
        "lm-generate": "baseline", "lm-longctx": "baseline", "lm-stream": "serve.static_batching",
        "encoder-embed": "baseline",
    }  # fmt: skip
    assert all(kind["reference"] and kind["harness"] for _, kind in kinds.values())
    assert kinds["lm-stream"][1]["harness"].endswith("StreamHarness") and kinds["lm-stream"][1]["models"] == ["lm"]
    assert (
        "sampled_tv_distance" in rows["lm"]["quality_metrics"]
        and "retrieval_accuracy" in rows["longctx"]["quality_metrics"]
    )
    assert {e["name"] for e in rows["encoder"]["zoo"]} == {"minilm-l6"} and rows["lm"]["fixture"]
    assert (
        "serve.continuous_batching" in rows["stream"]["methods"]
        and "attn.double_sparsity" in rows["longctx"]["methods"]
    )


def test_zoo_list_json():
    result = runner.invoke(app, ["zoo", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert {row["name"] for row in json.loads(result.stdout)} >= {"lm-tiny", "lm-1m", "lm-8m", "lm-30m", "smollm2-135m"}


def test_profile_one_run_prints_records_and_resumes(zoo_root):
    args = [
        "profile",
        "--model",
        f"local:{zoo_root / 'zoo' / 'lm-tiny'}",
        "--method",
        "quant.int8_dynamic",
        "--config",
        '{"method": "quant.int8_dynamic", "version": 1, "params": {"per_channel": false}}',
        "--workload",
        '{"batch_size": 1, "prompt_len": 16, "gen_len": 4}',
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {r["method_id"] for r in records} == {"baseline", "quant.int8_dynamic"}
    int8 = next(r for r in records if r["method_id"] == "quant.int8_dynamic")
    assert int8["config"]["params"] == {"per_channel": False, "include_head": False} and int8["speedup"] > 0
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "1 already stored" in again.stderr


def test_bad_method_and_workload_are_usage_errors():
    result = runner.invoke(app, ["profile", "--model", "zoo:lm-tiny", "--method", "quant.int9"])
    assert result.exit_code == 2 and "did you mean" in result.output
    result = runner.invoke(app, ["profile", "--model", "zoo:lm-tiny", "--workload", "batch=1 colour=3"])
    assert result.exit_code == 2


def test_two_configs_of_one_method_are_measured_apart(zoo_root, tmp_path):
    from sqlmodel import Session, select

    from executors.families.lm.workloads import LMWorkload
    from executors.grid import run_grid
    from executors.registry import config_from_json
    from profiles.db import make_engine
    from profiles.migrate import upgrade
    from profiles.models import ProfileRun

    engine = make_engine(f"sqlite:///{tmp_path / 'grid.db'}")
    upgrade(engine)
    configs = [
        (config_from_json({"method": "quant.int8_dynamic", "params": {"per_channel": flag}}),) for flag in (True, False)
    ]
    totals = run_grid(
        engine,
        [f"local:{zoo_root / 'zoo' / 'lm-tiny'}"],
        configs,
        [LMWorkload(1, 16, 4)],
        threads=(1,),
        reps=5,
        warmup=1,
    )
    assert totals["added"] == 3  # the baseline once, each config once
    with Session(engine) as session:
        int8 = session.exec(select(ProfileRun).where(ProfileRun.method_id == "quant.int8_dynamic")).all()
    # Records are filed by method id: one pass holding both would pool their timings (10 or 20
    # repeats); apart, each has its own 5, or 10 where the protocol re-measured a noisy ratio.
    assert sorted(r.config["params"]["per_channel"] for r in int8) == [False, True]
    assert [r.repeats for r in int8] == [5 * (1 + r.metrics["remeasured"]) for r in int8]
