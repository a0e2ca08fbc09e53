"""Advisor versions in a real (migrated SQLite) store, and the `accel-advisor advisor` commands."""

import gzip
import json

import pytest
from aslib_scenario import write_scenario
from sqlmodel import select
from typer.testing import CliRunner

from advisor.synthetic import synthetic_records
from advisor.versions import activate_version, active_advisor, train_advisor
from api.cli import app
from profiles.db import default_engine, session_scope
from profiles.migrate import upgrade
from profiles.models import AdvisorVersion
from profiles.transfer import add_records

runner = CliRunner()


@pytest.fixture
def store():
    """The default store of this test's data dir, filled with a small generated profile set."""
    engine = default_engine()
    upgrade(engine)
    records = list(synthetic_records(n_models=5, n_workloads=3, n_hardware=2, seed=4))
    with session_scope(engine) as session:
        add_records(session, enumerate(records, start=1))
    return engine


def test_training_twice_is_reproducible_and_keeps_one_active_version(store, tmp_path):
    with session_scope(store) as session:
        first = train_advisor(session, size="small", evaluate_splits=("model",), artefact_root=tmp_path / "a")
        first_id, first_hash = first.id, first.params["data_hash"]
    with session_scope(store) as session:
        second = train_advisor(session, size="small", evaluate_splits=(), artefact_root=tmp_path / "b")
        second_id, second_hash = second.id, second.params["data_hash"]
    assert first_hash == second_hash
    texts = sorted((tmp_path / "a").glob("*/*.txt"))
    assert texts and all(t.read_text() == (tmp_path / "b" / second_id / t.name).read_text() for t in texts)
    with session_scope(store) as session:
        active = session.exec(select(AdvisorVersion).where(AdvisorVersion.active)).all()
        assert [v.id for v in active] == [second_id]
        stored = session.get(AdvisorVersion, first_id)
        assert stored.n_profiles == 5 * 3 * 2 * 7
        assert {"sbs", "lightgbm_plain", "vbs"} <= set(stored.evaluation["splits"]["model"])
        activate_version(session, first_id)
    with session_scope(store) as session:
        found = active_advisor(session)
        assert found is not None
        version, model = found
        assert version.id == first_id and model.n_profiles == 5 * 3 * 2 * 7


def test_training_an_empty_store_says_what_to_do():
    upgrade(default_engine())
    with session_scope() as session, pytest.raises(ValueError, match="no stored profiles"):
        train_advisor(session)
    with session_scope() as session:
        assert active_advisor(session) is None


def test_cli_train_then_recommend(store):
    trained = runner.invoke(app, ["advisor", "train", "--size", "small", "--no-evaluate"])
    assert trained.exit_code == 0, trained.output
    version_id = json.loads(trained.output.strip().splitlines()[-1])["id"]
    record = next(synthetic_records(n_models=5, n_workloads=3, n_hardware=2, seed=4))
    workload = {k: record["workload"][k] for k in ("kind", "batch_size", "prompt_len", "gen_len")}
    result = runner.invoke(
        app,
        [
            "advisor",
            "recommend",
            "--model",
            record["model_id"],
            "--workload",
            json.dumps(workload),
            "--hardware-class",
            "cpu-8c-avx2",
            "--quality-floor",
            "-0.02",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["advisor_version"] == version_id
    assert payload["recommendations"] and all(r["node_id"] == "node-cpu-8c-avx2" for r in payload["recommendations"])
    assert all(r["quality_delta"] >= -0.02 for r in payload["recommendations"])
    listed = runner.invoke(app, ["advisor", "versions", "--json"])
    assert json.loads(listed.output)[0]["id"] == version_id


def test_cli_recommend_without_a_trained_advisor_fails_cleanly():
    upgrade(default_engine())
    result = runner.invoke(app, ["advisor", "recommend", "--model", "m", "--workload", "{}"])
    assert result.exit_code == 2 and "advisor train" in result.output


@pytest.mark.slow  # every selector, interval coverage and one landmark count: ~45 s on a loaded 2-core box
def test_cli_evaluate_profile_files_writes_json_markdown_and_chart(tmp_path):
    # Two files (a gzipped grid and a plain part, as in profiles/data/) pool into one table.
    path, part = tmp_path / "profiles.jsonl.gz", tmp_path / "part.jsonl"
    records = list(synthetic_records(n_models=6, n_workloads=3, n_hardware=2, seed=5))
    with gzip.open(path, "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records if r["model_id"] != records[0]["model_id"])
    part.write_text("".join(json.dumps(r) + "\n" for r in records if r["model_id"] == records[0]["model_id"]))
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "advisor",
            "evaluate",
            "--profiles",
            str(path),
            "--profiles",
            str(part),
            "--split",
            "model",
            "--seeds",
            "1",
            "--folds",
            "3",
            "--size",
            "small",
            "--json",
            "--out",
            str(out),
            "--probes",
            "0,1",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert set(report["splits"]) == {"model"} and report["n_tasks"] == 6 * 3 * 2
    assert report["landmarks"]["by_count"]["1"]["probes"] == ["baseline_latency"]
    assert set(report["splits"]["model"]["_coverage"]) == {"log_speedup", "quality_delta", "log_memory_ratio"}
    assert {
        "random",
        "sbs",
        "isac",
        "alors",
        "knn",
        "random_forest",
        "gradient_boosting",
        "pairwise",
        "lightgbm",
        "lightgbm_plain",
        "vbs",
    } <= set(report["splits"]["model"])
    assert (out / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert "| lightgbm |" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())[0]["table"] == "profiles.jsonl.gz + part.jsonl"


def test_cli_evaluate_rejects_an_unknown_split():
    result = runner.invoke(app, ["advisor", "evaluate", "--synthetic", "--split", "planet"])
    assert result.exit_code != 0


def test_cli_evaluates_an_aslib_scenario_on_its_own_folds(tmp_path):
    scenario = write_scenario(tmp_path / "mini")
    result = runner.invoke(app, ["advisor", "evaluate", "--scenario", str(scenario), "--size", "small", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["table"] == "aslib:mini" and report["measure"] == "cost" and set(report["splits"]) == {"scenario"}
    assert report["splits"]["scenario"]["lightgbm"]["gap_closed"]["mean"] > 0.9
