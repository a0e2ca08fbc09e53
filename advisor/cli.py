"""`accel-advisor advisor …`: train, evaluate, recommend, list versions."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

advisor_app = typer.Typer(help="The meta-learner: train, evaluate against baselines, recommend.", no_args_is_help=True)
console = Console(stderr=True)
log = logging.getLogger(__name__)
SPLIT_CHOICES = ("model", "hardware", "random", "all")


@advisor_app.command()
def train(
    size: Annotated[str, typer.Option(help="full, or small (fewer trees; for trials)")] = "full",
    seeds: Annotated[int, typer.Option(help="seeds for the stored evaluation")] = 1,
    evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="store an unseen-model evaluation")] = True,
    activate: Annotated[
        bool, typer.Option("--activate/--no-activate", help="activate it if not worse than the active one")
    ] = True,
    force: Annotated[bool, typer.Option("--force", help="activate it even if it is worse on the same folds")] = False,
    text_embedding: Annotated[bool, typer.Option(help="add the MiniLM embedding of task descriptions")] = False,
) -> None:
    """Train on every stored profile; activate it only if not worse than the active one on the same folds."""
    from advisor.versions import train_advisor
    from profiles.db import default_engine, session_scope
    from profiles.migrate import upgrade

    engine = default_engine()
    upgrade(engine)
    with session_scope(engine) as session:
        try:
            version = train_advisor(
                session,
                size=size,
                seeds=seeds,
                activate="force" if force else ("if-not-worse" if activate else "never"),
                evaluate_splits=("model",) if evaluate else (),
                text_embedding=text_embedding,
            )
        except ValueError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from None
        typer.echo(
            json.dumps(
                {
                    "id": version.id,
                    "n_profiles": version.n_profiles,
                    "active": version.active,
                    "artefact_path": version.artefact_path,
                    "gate": version.evaluation.get("gate"),
                }
            )
        )


def _tables(
    scenario: list[Path],
    csv_files: list[Path],
    profiles_files: list[Path],
    synthetic: bool,
    objective: str,
    quality_floor: float | None,
    text_embedding: bool,
) -> list[tuple]:
    """(table, its profile records or None): landmark probes are read from the records."""
    from advisor.external import load_aslib, load_long_csv
    from advisor.table import table_from_records

    tables = [load_aslib(d) for d in scenario] + [load_long_csv(f) for f in csv_files]
    if tables:
        return [(t, None) for t in tables]
    if synthetic:
        from advisor.synthetic import synthetic_records

        generated = list(synthetic_records())
        return [(table_from_records(generated, objective, quality_floor, "synthetic", text_embedding), None)]
    if profiles_files:
        from profiles.transfer import read_records

        # Several files (e.g. the seed grid and a store's export) make one table.
        from_files = [record for path in profiles_files for _, record in read_records(path)]
        name = " + ".join(p.name for p in profiles_files)
        return [(table_from_records(from_files, objective, quality_floor, name, text_embedding), from_files)]
    from profiles.db import default_engine, session_scope
    from profiles.migrate import upgrade
    from profiles.transfer import iter_records

    engine = default_engine()
    upgrade(engine)
    with session_scope(engine) as session:
        records = list(iter_records(session))
    if not records:
        raise ValueError("the store has no profiles: import some, or pass --profiles FILE / --synthetic")
    return [(table_from_records(records, objective, quality_floor, "stored profiles", text_embedding), records)]


@advisor_app.command()
def evaluate(
    split: Annotated[str, typer.Option(help="model | hardware | random | all")] = "all",
    seeds: Annotated[int, typer.Option(min=1, help="repetitions with different fold assignments")] = 3,
    folds: Annotated[int, typer.Option(min=2, help="folds per split")] = 5,
    scenario: Annotated[
        list[Path] | None, typer.Option(exists=True, file_okay=False, help="ASlib scenario dir")
    ] = None,
    csv: Annotated[
        list[Path] | None, typer.Option(exists=True, dir_okay=False, help="long-format performance CSV")
    ] = None,
    profiles: Annotated[
        list[Path] | None,
        typer.Option(exists=True, dir_okay=False, help="profile records file (repeat to pool several)"),
    ] = None,
    synthetic: Annotated[bool, typer.Option(help="use the generated table (advisor.synthetic)")] = False,
    objective: Annotated[str, typer.Option(help="latency | throughput | memory | time-to-accuracy")] = "latency",
    quality_floor: Annotated[
        float | None, typer.Option(help="runs with a lower quality change are unavailable")
    ] = None,
    size: Annotated[str, typer.Option(help="full, or small (faster, fewer trees)")] = "full",
    text_embedding: Annotated[bool, typer.Option(help="add the MiniLM embedding of task descriptions")] = False,
    out: Annotated[Path | None, typer.Option(help="write report.json, report.md, chart.png here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
    probes: Annotated[
        str, typer.Option(help="landmark probe counts for unseen models (profile tables), e.g. 0,1,2,4; '' for none")
    ] = "0,1,2,4",
    jobs: Annotated[int, typer.Option(min=1, help="folds fitted in parallel processes (same figures for any N)")] = 1,
) -> None:
    """Cross-validate the learner and every baseline side by side (and, on profiles, with landmark probes)."""
    from advisor.evaluate import SPLITS, evaluate_table
    from advisor.report import markdown, write_report

    if split not in SPLIT_CHOICES:
        raise typer.BadParameter(f"choose one of {', '.join(SPLIT_CHOICES)}", param_hint="--split")
    try:
        tables = _tables(scenario or [], csv or [], profiles or [], synthetic, objective, quality_floor, text_embedding)
    except (ValueError, OSError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    reports = []
    counts = tuple(int(k) for k in probes.split(",") if k.strip()) if probes else ()
    for table, records in tables:
        splits: tuple[str, ...]
        if table.folds is not None:
            splits = ("scenario",)
        elif split == "all":
            splits = tuple(s for s in SPLITS if s in table.groups)
        else:
            splits = (split,)
        report = evaluate_table(table, splits=splits, seeds=seeds, n_folds=folds, size=size, jobs=jobs)
        if records is not None and "model" in splits and [k for k in counts if k]:
            from advisor.evaluate import evaluate_landmarks

            report["landmarks"] = evaluate_landmarks(
                table,
                records,
                counts=tuple(k for k in counts if k),
                seeds=seeds,
                n_folds=folds,
                size=size,
                jobs=jobs,
            )
        reports.append(report)
    if out is not None:
        for path in write_report(reports, out):
            console.print(f"wrote {path}")
    typer.echo(
        json.dumps(reports if len(reports) > 1 else reports[0], indent=2)
        if as_json
        else "\n\n".join(markdown(r) for r in reports)
    )


@advisor_app.command()
def recommend(
    model: Annotated[str, typer.Option(help="stored model id")],
    workload: Annotated[
        str, typer.Option(help='workload shape as JSON, e.g. {"kind": "lm-generate", "batch_size": 1}')
    ],
    node: Annotated[str | None, typer.Option(help="a stored node id")] = None,
    hardware_class: Annotated[str | None, typer.Option(help="every stored node of this class")] = None,
    quality_floor: Annotated[
        float, typer.Option(help="lowest acceptable predicted quality change (-1 allows any loss)")
    ] = -0.05,
    budget: Annotated[float | None, typer.Option(help="highest predicted cost per run (runtime × price)")] = None,
    objective: Annotated[str, typer.Option(help="latency | throughput | memory | time-to-accuracy")] = "latency",
    top_k: Annotated[int, typer.Option(min=1)] = 5,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rank methods for a model and workload on a node, a hardware class or the whole online pool."""
    from sqlmodel import select

    from advisor.recommend import recommend as run_recommend
    from advisor.versions import active_advisor
    from profiles.db import session_scope
    from profiles.models import ModelSpec, Node, workload_id_for

    try:
        shape = json.loads(workload)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc.msg}", param_hint="--workload") from None
    if not isinstance(shape, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--workload")
    with session_scope() as session:
        found = active_advisor(session)
        version_id = found[0].id if found else None
        spec = session.get(ModelSpec, model)
        spec_record = spec.model_dump(mode="json") if spec else None
        # As the API does: a named node or class may be one known only from imported profiles;
        # the whole pool means the online nodes, else every node measured on.
        if node:
            nodes = list(session.exec(select(Node).where(Node.id == node)))
        elif hardware_class:
            nodes = list(session.exec(select(Node).where(Node.hardware_class == hardware_class)))
        else:
            nodes = list(session.exec(select(Node).where(Node.status == "online"))) or list(session.exec(select(Node)))
        node_records = [n.model_dump(mode="json") for n in nodes]
    if found is None or spec_record is None or not node_records:
        problem = (
            "no active advisor: run `accel-advisor advisor train` first"
            if found is None
            else f"unknown model {model!r}"
            if spec_record is None
            else "no matching node"
        )
        console.print(f"[red]{problem}[/]")
        raise typer.Exit(2)
    try:
        result = run_recommend(
            found[1],
            spec_record,
            {"id": workload_id_for(shape), **shape},
            node_records,
            quality_floor=quality_floor,
            budget=budget,
            objective=objective,
            top_k=top_k,
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    payload = {"advisor_version": version_id, **asdict(result)}
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    for r in result.recommendations:
        typer.echo(
            f"{r.method_id:40s} {r.node_id:24s} ×{r.speedup:.2f} [{r.speedup_interval[0]:.2f}, "
            f"{r.speedup_interval[1]:.2f}] quality {r.quality_delta:+.3f} {r.basis} {'; '.join(r.warnings)}"
        )
    for e in result.excluded:
        typer.echo(f"excluded {e.method_id} on {e.node_id}: {e.reason}")


@advisor_app.command()
def plan(
    n: Annotated[int, typer.Option("--n", min=1, help="how many measurements to propose")] = 10,
    profiles: Annotated[
        list[Path] | None, typer.Option(exists=True, dir_okay=False, help="profile records file (default: the store)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Propose the next (task, method, node class) measurements: the most expected improvement per second."""
    from advisor.planner import plan_next

    try:
        (_, records), *_ = _tables([], [], profiles or [], False, "latency", None, False)
        proposals = plan_next(records, n=n)
    except (ValueError, OSError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(proposals, indent=2))
        return
    for p in proposals:
        typer.echo(
            f"{p['model']:24s} {json.dumps(p['workload'], sort_keys=True):60s} {p['hardware_class']:20s} "
            f"{p['method']:40s} gain/s {p['expected_gain_per_s']:.2e} (~{p['estimated_seconds']:.0f} s)"
        )


@advisor_app.command()
def versions(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List trained advisor versions (newest first) with their scores and gate verdicts."""
    from sqlmodel import col, select

    from advisor.versions import scores
    from profiles.db import session_scope
    from profiles.models import AdvisorVersion

    with session_scope() as session:
        rows: list[dict[str, Any]] = [
            {
                "id": v.id,
                "active": v.active,
                "n_profiles": v.n_profiles,
                "created_at": v.created_at.isoformat(),
                "feature_schema_version": v.feature_schema_version,
                "scores": scores(v),
            }
            for v in session.exec(select(AdvisorVersion).order_by(col(AdvisorVersion.created_at).desc()))
        ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        gap = r["scores"]["splits"].get("model", {}).get("gap_closed")
        gate = r["scores"].get("gate", {}).get("reason", "")
        shown = "" if gap is None else f"  unseen-model gap closed {gap:.3f}"
        typer.echo(f"{'*' if r['active'] else ' '} {r['id']}  {r['n_profiles']} profiles{shown}  {gate}")


def _switch(change) -> None:
    from profiles.db import session_scope

    try:
        with session_scope() as session:
            version = change(session)
            typer.echo(json.dumps({"id": version.id, "active": version.active}))
    except KeyError as exc:
        console.print(f"[red]{exc.args[0]}[/]")
        raise typer.Exit(2) from None


@advisor_app.command()
def activate(version_id: Annotated[str, typer.Argument(help="an id from `advisor versions`")]) -> None:
    """Make a stored advisor version the active one (whatever its gate said)."""
    from advisor.versions import activate_version

    _switch(lambda session: activate_version(session, version_id))


@advisor_app.command()
def rollback() -> None:
    """Re-activate the advisor version that was active before the current one."""
    from advisor.versions import rollback as roll_back

    _switch(roll_back)
